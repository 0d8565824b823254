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
use crate::keys::KeyId;
use crate::luks::{DataArea, REQUIREMENT_INCOMPLETE};
use crate::ops::backup::decide::Mode;
use crate::ops::stream_check::{FrameBytes, StreamCheck};
use crate::ops::{KeyUse, Keys, Observer, Report};
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

/// Restore `stream` onto the LUKS2 volume `dst`, the stream decrypted with
/// `key` (which it needs).
pub fn run(
    stream: &Path,
    dst: &Path,
    key: Option<&KeyId>,
    access: &LuksAccess,
    keys: &dyn Keys,
    obs: &dyn Observer,
) -> Result<Report> {
    let clock = Instant::now();
    let started = Timestamp::now();
    if key.is_none() {
        return Err(Error::access(format!(
            "{} is a LUKS volume: restoring {} onto it decrypts the stream, which needs the stream's volume key",
            dst.display(),
            stream.display()
        ))
        .with_hint("give -k ID with a key of the backed-up volume (its owner or a user)"));
    }
    // The one stream checker, as for an EVFS target: a signature is
    // required (over an existing volume, with -k), judged before writing.
    let mut check = StreamCheck::open(stream, key, keys, keys.policy().requiring(), |_| true)?;
    let header = check.header().clone();
    let name = check.name().to_string();
    if header.base.is_some() {
        return Err(Error::refused(format!(
            "{name} is an incremental stream: it applies onto the EVFS volume it was made from, not onto a LUKS volume"
        ))
        .with_hint("restore the full stream into the LUKS2 volume instead"));
    }
    check.gate(keys)?;
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
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    let checked = crate::ops::watched(obs, "restore", header.expected, |meter| {
        let mut write = |offset: u64, plain: &[u8]| -> Result<()> {
            let whole = (plain.len() as u64).next_multiple_of(ss) as usize;
            if offset + whole as u64 > size || !offset.is_multiple_of(ss) {
                return Err(Error::refused(format!(
                    "the LUKS target {} is too small for the stream's data",
                    dst.display()
                )));
            }
            buf.clear();
            buf.extend_from_slice(plain);
            buf.resize(whole, 0);
            cipher.encrypt(&mut buf, offset / ss).map_err(Error::from)?;
            vol.dev.write_at(&buf, area.offset + offset)
        };
        check.run(keys, Some(&mut write), FrameBytes::Plaintext, &mut |n| {
            meter.add(n)
        })
    })?;
    let trailer = &checked.trailer;
    let digest = checked
        .computed
        .map(|d| d.hash)
        .ok_or_else(|| Error::runtime("internal: a keyed restore without its digest"))?;
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
        stream_bytes: Some(checked.stream_bytes),
        resumed_at: None,
        signed_by: checked.signed_by.clone(),
        chunks: None,
    })
}

/// Whether `path` is a LUKS volume a restore writes into.
pub fn is_target(path: &Path, access: &LuksAccess) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    Ok(LuksVolume::probe(path, access.header.as_deref())?.is_some())
}
