//! `evfs restore STREAM TARGET` onto an existing LUKS2 volume: the stream's
//! frames are decrypted with the stream's volume key (`-k`) and written
//! under the target's own volume key (opened with its passphrase), keeping
//! its header and keyslots. The target is marked `evfs-incomplete` before
//! the first frame and gets its provenance, without the requirement, only
//! after the trailer checked out, the plaintext digest matched and the data
//! is synced; any failure leaves it marked.

use std::path::Path;
use std::time::Instant;

use super::token::{Provenance, SourceKind};
use super::{LuksAccess, unlock};
use crate::emd::Timestamp;
use crate::emd::format::uuid_string;
use crate::error::{Error, Result};
use crate::luks::{DataArea, REQUIREMENT_INCOMPLETE};
use crate::ops::backup::decide::Mode;
use crate::ops::restore::{RestoreRequest, open_stream, stream_key};
use crate::ops::{KeyUse, Keys, Observer, Report};
use crate::pipeline::digest::{TreeMerger, hash_chunk};
use crate::stream::decode::FrameDecoder;
use crate::stream::reader::{Item, StreamReader};
use crate::volume::luks::LuksVolume;

/// The data area of a LUKS2 target evfs may write into: only its own
/// requirement (an interrupted run) may stand in the way.
pub fn writable_area(vol: &LuksVolume) -> Result<DataArea> {
    vol.luks2()?;
    let own = format!("requirement {REQUIREMENT_INCOMPLETE}");
    let reasons: Vec<String> = vol
        .header
        .unsupported_reasons()
        .into_iter()
        .filter(|r| !r.starts_with(&own))
        .collect();
    if !reasons.is_empty() {
        return Err(Error::refused(format!(
            "{}: evfs cannot write this LUKS2 volume: {}",
            vol.path().display(),
            reasons.join("; ")
        )));
    }
    vol.header.data_area_unchecked().map_err(Error::from)
}

/// Restore `args.stream` onto the LUKS2 volume `args.target`.
pub fn run(
    args: &RestoreRequest,
    access: &LuksAccess,
    keys: &dyn Keys,
    obs: &dyn Observer,
) -> Result<Report> {
    let clock = Instant::now();
    let started = Timestamp::now();
    let dst = &args.target;
    let (input, name) = open_stream(&args.stream)?;
    let mut reader = StreamReader::open(input, &name)?;
    let header = reader.header.clone();
    if args.key.is_none() {
        return Err(Error::access(format!(
            "{} is a LUKS volume: restoring {name} onto it decrypts the stream, which needs the stream's volume key",
            dst.display()
        ))
        .with_hint("give -k ID with a key of the backed-up volume (its owner or a user)"));
    }
    let key = stream_key(keys, args.key.as_ref(), &header, &name, true)?
        .ok_or_else(|| Error::runtime("internal: a stream key was required"))?;
    if !header.raw {
        reader.set_mac_key(&key.stream_mac_key());
    }
    let mut vol = LuksVolume::open(dst, access.header.as_deref(), true)?;
    vol.lock(true, "restore into it")?;
    vol.reread()?;
    let area = writable_area(&vol)?;
    let size = vol.data_size(&area);
    if let Some(n) = header.expected
        && n > size
    {
        return Err(Error::refused(format!(
            "the LUKS target {} is too small: its data area has {size} bytes, the stream holds {n}",
            dst.display()
        )));
    }
    let opened = unlock(&vol, access, keys, KeyUse::Target, None)?;
    let cipher = area.cipher(&opened.key).map_err(Error::from)?;
    drop(opened);
    vol.update(|h| Ok(((), h.add_requirement(REQUIREMENT_INCOMPLETE)?)))?;

    let ss = u64::from(area.sector_size);
    let mut decoder = FrameDecoder::new(&header, Some(&key));
    let mut merger = TreeMerger::new();
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    let trailer = crate::ops::watched(obs, "restore", header.expected, |meter| -> Result<_> {
        loop {
            match reader.next_item()? {
                Item::Frame(f, payload, fh) => {
                    let plain = decoder.plaintext(&f, payload, &fh)?;
                    let len = f.plain_len as usize;
                    merger.push(hash_chunk(f.offset, &plain[..len]));
                    let whole = (len as u64).next_multiple_of(ss) as usize;
                    if f.offset + whole as u64 > size || !f.offset.is_multiple_of(ss) {
                        return Err(Error::refused(format!(
                            "the LUKS target {} is too small for the stream's data",
                            dst.display()
                        )));
                    }
                    buf.clear();
                    buf.extend_from_slice(&plain[..len]);
                    buf.resize(whole, 0);
                    cipher
                        .encrypt(&mut buf, f.offset / ss)
                        .map_err(Error::from)?;
                    vol.dev.write_at(&buf, area.offset + f.offset)?;
                    meter.add(u64::from(f.plain_len));
                }
                Item::End(t) => return Ok(t),
            }
        }
    })?;
    let digest = merger.finish();
    if let Some(recorded) = trailer.plaintext_blake3
        && blake3::Hash::from(recorded) != digest
    {
        return Err(Error::integrity(format!(
            "{name}: the plaintext does not match the digest its trailer records; {} stays marked {REQUIREMENT_INCOMPLETE}",
            dst.display()
        )));
    }
    vol.dev.sync()?;
    let p = Provenance::of_backup(
        &SourceKind::Stream,
        Some(uuid_string(&header.emd.uuid)),
        Some(header.emd.data_version),
        started,
        trailer.bytes,
        digest,
    );
    vol.update(|h| {
        let id = Provenance::find(h.metadata()).map(|(id, _)| id);
        h.set_token(id, &p.to_json())
    })?;
    vol.update(|h| Ok(((), h.remove_requirement(REQUIREMENT_INCOMPLETE)?)))?;
    Ok(Report {
        mode: Mode::Reencrypt,
        stream_mode: Some(header.mode),
        bytes: trailer.bytes,
        seconds: clock.elapsed().as_secs_f64(),
        digest: Some(digest),
        threads: 1,
        source: name,
        target: dst.display().to_string(),
        source_uuid: (header.source_uuid != [0; 16]).then_some(header.source_uuid),
        target_uuid: super::uuid_bytes(&vol.header.uuid()),
        stream_bytes: Some(reader.position()),
        resumed_at: None,
    })
}

/// Whether `path` is a LUKS volume a restore writes into.
pub fn is_target(path: &Path, access: &LuksAccess) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    Ok(LuksVolume::probe(path, access.header.as_deref())?.is_some())
}
