//! `evfs restore STREAM DST`: a backup stream back onto a volume. The target
//! is marked dirty before the first data byte and gets the stream's final EMD
//! (clean) only after every frame and the trailer checked out and the data is
//! synced; any failure leaves it dirty.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::backup::decide::Mode;
use super::backup::rollback::{self, Lineage};
use super::backup::target::is_blank;
use super::stream_check::{FrameBytes, StreamCheck, open_stream};
use super::{Keys, Observer, Report};
use crate::emd::{Checkpoint, Emd, Task};
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::stream::format::Header;
use crate::volume::device::require_volume_kind;
use crate::volume::identity::Storage;
use crate::volume::transaction::Transaction;
use crate::volume::{Device, layout, lock, metadata};

/// A restore: a stream (a file, or `-` for standard input) onto a volume.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// The stream: a file, or `-` for standard input.
    pub stream: PathBuf,
    /// Further links of a chain (incremental streams, files), applied
    /// after `stream` in order.
    pub more: Vec<PathBuf>,
    /// The volume (EVFS, or an existing LUKS2 one) or file to write.
    pub target: PathBuf,
    /// A key of the backed-up volume: needed for compressed and sparse
    /// streams, and checks the stream's MAC.
    pub key: Option<KeyId>,
    /// Overwrite foreign data or another volume; roll back.
    pub force: bool,
    /// A LUKS2 target's keyslot and detached header (its secret is the
    /// [`Keys`] provider's [`KeyUse::Target`](super::KeyUse::Target) one).
    pub luks: super::luks::LuksAccess,
}

/// Restore a stream onto a volume: refuse what would destroy data (the
/// stream itself, a foreign target, a rollback), then write every frame and,
/// only after the trailer checked out and the data is synced, the stream's
/// final EMD. Any failure leaves the target dirty and incomplete.
pub fn run(args: &RestoreRequest, keys: &dyn Keys, obs: &dyn Observer) -> Result<Report> {
    if args.more.is_empty() {
        return run_one(args, keys, obs, None);
    }
    // A chain: its links must follow each other, which their headers say,
    // before anything is written.
    let mut links = vec![args.stream.clone()];
    links.extend(args.more.iter().cloned());
    check_chain(&links)?;
    // What can be known of every link before the first is written: it is
    // whole, its signature passes, and its key is there if it needs one.
    let existed =
        args.target.exists() && metadata::read(&Device::open_read(&args.target)?)?.any_magic();
    for (i, link) in links.iter().enumerate() {
        let strict = i > 0 || existed || args.key.is_some();
        let policy = if strict {
            keys.policy().requiring()
        } else {
            keys.policy()
        };
        let check = StreamCheck::open(link, None, keys, policy, |h| {
            args.key.is_none() && (h.compressed || h.sparse)
        })?;
        check.ends_whole()?;
        check.gate(keys)?;
    }
    let mut last = None;
    for (i, link) in links.iter().enumerate() {
        let one = RestoreRequest {
            stream: link.clone(),
            more: vec![],
            ..args.clone()
        };
        match run_one(&one, keys, obs, Some(i)) {
            Ok(report) => last = Some(report),
            Err(e) => {
                if i > 0 {
                    obs.note(&applied_note(&args.target, &links, i));
                }
                return Err(e);
            }
        }
    }
    last.ok_or_else(|| Error::runtime("internal: an empty chain"))
}

/// What a chain restore that failed at link `i + 1` (0-based `i`) leaves:
/// the state link `i` ends at when the failing link wrote nothing, else an
/// unfinished restore of it.
fn applied_note(dst: &Path, links: &[PathBuf], i: usize) -> String {
    let name = dst.display();
    let unfinished = Device::open_read(dst)
        .and_then(|d| metadata::read(&d))
        .map(|c| c.current().is_none_or(|e| e.dirty));
    match unfinished {
        Ok(false) => format!(
            "evfs restore: links 1 to {i} were applied: {name} holds the state {} ends at; the links after it can be restored onto it",
            links[i - 1].display()
        ),
        _ => format!(
            "evfs restore: links 1 to {i} were applied, then link {} ({}) failed while it was written: {name} holds an unfinished restore of it (`evfs check {name}`)",
            i + 1,
            links[i].display()
        ),
    }
}

/// The headers of a chain of streams (files), and that each link after the
/// first is an incremental stream made from the state the link before it
/// ends at: a gap, a repeated or a reordered link is an integrity failure
/// (exit 5) naming the link.
pub(crate) fn check_chain(links: &[PathBuf]) -> Result<Vec<Header>> {
    if links.iter().any(|l| l.as_os_str() == "-") {
        return Err(Error::usage(
            "the links of a chain are files; standard input carries one stream only",
        ));
    }
    // Each link is opened twice (its header first): pipes cannot be.
    if let Some(l) = links
        .iter()
        .find(|l| !std::fs::metadata(l).is_ok_and(|m| m.is_file()))
    {
        return Err(Error::usage(format!(
            "{}: the links of a chain are regular files (each is read twice: its header first); restore a stream from a pipe on its own",
            l.display()
        )));
    }
    let mut headers: Vec<Header> = Vec::with_capacity(links.len());
    for (i, path) in links.iter().enumerate() {
        let (input, name) = open_stream(path)?;
        let h = crate::stream::reader::StreamReader::open(input, &name)?
            .header
            .clone();
        if let Some(prev) = headers.last() {
            let follows = h.base.is_some_and(|b| {
                b.state_id == prev.stream_id && b.data_version == prev.emd.data_version
            }) && h.emd.uuid == prev.emd.uuid;
            if !follows {
                let what = match &h.base {
                    None => "it is a full stream, not an incremental one".to_string(),
                    Some(_) if headers.iter().any(|x| x.stream_id == h.stream_id) => {
                        "it is repeated".to_string()
                    }
                    Some(b) => match headers.iter().position(|x| x.stream_id == b.state_id) {
                        Some(j) => format!(
                            "it applies onto link {} ({}), not onto the link before it",
                            j + 1,
                            links[j].display()
                        ),
                        None => format!(
                            "it applies onto state {}, which no link before it ends at (a link is missing)",
                            crate::hex::encode(&b.state_id)
                        ),
                    },
                };
                return Err(Error::integrity(format!(
                    "link {} of the chain ({}) does not follow link {} ({}): {what}",
                    i + 1,
                    name,
                    i,
                    links[i - 1].display()
                )));
            }
        }
        headers.push(h);
    }
    Ok(headers)
}

fn run_one(
    args: &RestoreRequest,
    keys: &dyn Keys,
    obs: &dyn Observer,
    link: Option<usize>,
) -> Result<Report> {
    let clock = Instant::now();
    if args.target.as_os_str() == "-" {
        return Err(Error::usage(
            "restore writes a volume: name a file or block device as DST",
        ));
    }
    let dst = &args.target;
    // Before a byte of the stream is read: a target that is no volume (a
    // FIFO would hang) or that is the stream itself (by any name, or as
    // standard input) is refused.
    require_volume_kind(dst)?;
    if let Some(target) = Storage::of_path(dst)? {
        let stream = if args.stream.as_os_str() == "-" {
            Some(Storage::of_stdin()?)
        } else {
            Storage::of_path(&args.stream)?
        };
        if let Some(why) = stream.and_then(|s| target.overlap(&s)) {
            return Err(
                Error::refused(format!("the target is the stream itself: {why}"))
                    .with_hint("restore onto other storage: writing over the stream destroys it"),
            );
        }
    }
    if super::luks::restore::is_target(dst, &args.luks)? {
        return super::luks::restore::run(
            &args.stream,
            dst,
            args.key.as_ref(),
            &args.luks,
            keys,
            obs,
        );
    }
    // A signature is required with -k, and over an existing volume (see
    // below); a restore into a new target on a fresh host may go on
    // without one, and says so.
    let policy = keys.policy();
    let existed = dst.exists() && metadata::read(&Device::open_read(dst)?)?.any_magic();
    let strict = args.key.is_some() || existed;
    let policy = if strict { policy.requiring() } else { policy };
    let mut check =
        StreamCheck::open(&args.stream, args.key.as_ref(), keys, policy.clone(), |h| {
            h.compressed || h.sparse
        })?;
    let header = check.header().clone();
    let name = check.name().to_string();

    // Busy before foreign: a target another writer holds is reported as such.
    lock::probe(dst, "restore into it")?;
    let existing = check_target(dst, &header, args.force)?;
    // Completing an interrupted restore of an incremental stream: the
    // volume is read back whole before it is called clean, since what the
    // interrupted run wrote is not known.
    let mut completing = false;
    if let Some(base) = &header.base {
        completing = check_base(&name, dst, base, &header, existing.as_ref(), link)?;
        if completing && check.key().is_none() {
            return Err(Error::access(format!(
                "{} holds an interrupted restore of {name}: completing it reads the whole volume back, which needs its key",
                dst.display()
            ))
            .with_hint("give -k ID with a key of the backed-up volume"));
        }
    } else if let Some(e) = &existing {
        let mut lineage = Lineage::of(&header.emd);
        if header.source_uuid != [0; 16] {
            lineage = lineage.with(header.source_uuid, header.source_data_version);
        }
        rollback::check(&lineage, &name, e, &dst.display().to_string(), args.force)?;
    }
    // Nothing is written from a stream in a file that does not end with
    // its trailer, or whose EMD clone is not signed by a trusted signer
    // where a signature is required.
    check.ends_whole()?;
    check.gate(keys)?;
    let needed = layout::device_size_for(header.emd.data_size);
    let created = !dst.exists();
    let mut dev = if created {
        Device::create_file(dst, needed)?
    } else {
        Device::open_write(dst)?
    };
    dev.lock(true, "restore into it")?;
    if !dev.is_block() {
        dev.grow_to(needed)?;
    }

    // Incomplete until the trailer checked out: `check` never calls it clean.
    let mut initial = header.emd.clone();
    initial.checkpoint = Some(Checkpoint {
        task: Task::Restore,
        run_id: header.stream_id,
        source_uuid: header.emd.uuid,
        bytes_done: 0,
        total: header.expected.unwrap_or(0),
        source_generation: 0,
    });
    let floor = existing.as_ref().map_or(0, |e| e.generation + 1);
    let data_offset = initial.data_offset;
    let limit = if dev.is_block() {
        layout::max_data_size(dev.size(), initial.sector_size)
    } else {
        u64::MAX - data_offset
    };
    let txn = Transaction::begin(&dev, initial, floor)?;
    let checked = super::watched(obs, "restore", header.expected, |meter| {
        let mut write = |offset: u64, data: &[u8]| -> Result<()> {
            let end = offset.checked_add(data.len() as u64);
            if end.is_none_or(|end| end > limit) || data_offset.checked_add(offset).is_none() {
                return Err(Error::refused(format!(
                    "the target {} is too small for the stream's data",
                    dst.display()
                )));
            }
            dev.write_at(data, data_offset + offset)
        };
        check.run(keys, Some(&mut write), FrameBytes::Ciphertext, &mut |n| {
            meter.add(n)
        })
    })?;
    let trailer = &checked.trailer;
    if completing && let Some(key) = check.key() {
        dev.sync()?;
        let whole = super::read::Plaintext::of_data(&dev, &trailer.emd, key)
            .tree(super::threads(None))?
            .finish();
        if trailer.plaintext_blake3 != Some(*whole.as_bytes()) {
            return Err(Error::integrity(format!(
                "{}: after completing the interrupted restore of {name}, the volume's plaintext (blake3 {}) is not the stream's: an earlier attempt wrote other data",
                dst.display(),
                whole.to_hex()
            ))
            .with_hint("restore the chain again from its full stream"));
        }
    }
    if checked.signed_by.as_ref().is_none_or(|s| !s.trusted) {
        obs.note(&format!(
            "evfs restore: note: {}: its authenticity was not checked ({})",
            name,
            match &checked.signed_by {
                Some(s) => s.describe(),
                None => "the stream is not signed".to_string(),
            }
        ));
    }
    // The chunk index the stream carries goes where the final EMD says it
    // lies, so that the volume is a base for the next backup of its source.
    if let Some(sealed) = &checked.index {
        super::backup::index::paste(&dev, &trailer.emd, sealed)?;
    }
    let fin: Emd = trailer.emd.clone();
    let fin = txn.commit(None, None, |e| {
        *e = fin;
        if !dev.is_block() {
            let size = layout::device_size_for(e.data_size);
            if created || dev.size() < size {
                dev.resize(size)?;
            }
        }
        Ok(())
    })?;
    // Frames carry the target's ciphertext, written as it lies; only a key
    // turns compressed frames and zero markers into ciphertext.
    let mode = match check.key() {
        Some(_) if header.compressed || header.sparse => Mode::Encrypt,
        _ => Mode::Raw,
    };
    Ok(Report {
        mode,
        stream_mode: Some(header.mode),
        bytes: trailer.bytes,
        seconds: clock.elapsed().as_secs_f64(),
        digest: checked.digest().map(|d| d.hash),
        threads: 1,
        source: name,
        target: dst.display().to_string(),
        source_uuid: (header.source_uuid != [0; 16]).then_some(header.source_uuid),
        target_uuid: Some(fin.uuid),
        stream_bytes: Some(checked.stream_bytes),
        resumed_at: None,
        signed_by: checked.signed_by.clone(),
        chunks: None,
    })
}

/// Refuse a target holding foreign data or another volume unless `--force`;
/// returns the EMD the target held, if any.
fn check_target(dst: &Path, header: &Header, force: bool) -> Result<Option<Emd>> {
    if !dst.exists() {
        return Ok(None);
    }
    let dev = Device::open_read(dst)?;
    if dev.is_block() && dev.size() < layout::device_size_for(header.emd.data_size) {
        return Err(Error::refused(format!(
            "the target {} is too small: it has {} bytes, the volume needs {}",
            dst.display(),
            dev.size(),
            layout::device_size_for(header.emd.data_size)
        )));
    }
    let copies = metadata::read(&dev)?;
    if let Some(e) = copies.current() {
        // The stream's own volume (restored before) or its source: the
        // rollback check decides. Another copy of the source (a clone of
        // its own, or a volume with its own EMD filled from it) would lose
        // its UUID, keys and newer data: only with --force.
        let source = Some(header.source_uuid).filter(|u| *u != [0; 16]);
        let ours = e.uuid == header.emd.uuid || source == Some(e.uuid);
        if ours || force {
            return Ok(Some(e.clone()));
        }
        let sibling = source.is_some_and(|u| {
            e.clone_of == Some(u) || e.provenance.as_ref().and_then(|p| p.source_uuid()) == Some(u)
        });
        return Err(Error::refused(if sibling {
            format!(
                "the target {} is another copy of the stream's source (uuid {}), not the volume this stream restores: restoring would replace its UUID, keys and data",
                dst.display(),
                e.uuid_string()
            )
        } else {
            format!(
                "the target {} is an EVFS volume of another lineage (uuid {})",
                dst.display(),
                e.uuid_string()
            )
        })
        .with_hint("restore into a new file, or use --force to replace it"));
    }
    if !force && (copies.any_magic() || !is_blank(&dev)?) {
        return Err(Error::refused(format!(
            "the target {} holds data that is not this volume; refusing to overwrite it",
            dst.display()
        ))
        .with_hint("use --force to overwrite it"));
    }
    Ok(None)
}

/// An incremental stream applies only onto the exact state it was made
/// from: a volume of its UUID, clean, at the base's state ID, data version
/// and digest. Otherwise nothing is written: exit 3 naming what it expected
/// and what it found (exit 5 inside a chain, whose links said they follow).
fn check_base(
    name: &str,
    dst: &Path,
    base: &crate::stream::format::Base,
    header: &Header,
    existing: Option<&Emd>,
    link: Option<usize>,
) -> Result<bool> {
    let short = |b: &[u8]| crate::hex::encode(&b[..8]);
    let expected = format!(
        "state {} (data version {}, plaintext blake3 {}…) of volume {}",
        short(&base.state_id),
        base.data_version,
        short(&base.digest),
        crate::emd::format::uuid_string(&header.emd.uuid)
    );
    let found = match existing {
        None => "no volume".to_string(),
        Some(e) if e.uuid != header.emd.uuid => format!("volume {}", e.uuid_string()),
        Some(e) => format!(
            "state {} (data version {}, plaintext blake3 {}…){}",
            e.state_id.map_or("none".to_string(), |s| short(&s)),
            e.data_version,
            e.provenance
                .as_ref()
                .and_then(|p| p.plaintext_blake3)
                .map_or("none".to_string(), |d| short(&d)),
            if e.dirty { ", dirty" } else { "" }
        ),
    };
    let at_base = existing.is_some_and(|e| {
        e.uuid == header.emd.uuid
            && !e.dirty
            && e.state_id == Some(base.state_id)
            && e.data_version == base.data_version
            && e.provenance.as_ref().and_then(|p| p.plaintext_blake3) == Some(base.digest)
    });
    // A restore of this very stream that was interrupted: its frames
    // rewrite whole chunks, so applying them again completes it.
    let interrupted = existing.is_some_and(|e| {
        e.uuid == header.emd.uuid
            && e.dirty
            && e.checkpoint.as_ref().is_some_and(|c| {
                c.task == crate::emd::Task::Restore && c.run_id == header.stream_id
            })
    });
    if at_base || interrupted {
        return Ok(interrupted);
    }
    let msg = format!(
        "{name} is an incremental stream that applies onto {expected}; {} holds {found}",
        dst.display()
    );
    Err(match link {
        Some(i) if i > 0 => Error::integrity(msg),
        _ => Error::refused(msg).with_hint(
            "restore the full stream and the incremental ones before this one first (evfs restore FULL INCR... DST)",
        ),
    })
}
