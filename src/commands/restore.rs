//! `evfs restore STREAM DST`: a backup stream back onto a volume. The target
//! is marked dirty before the first data byte and gets the stream's final EMD
//! (clean) only after every frame and the trailer checked out and the data is
//! synced; any failure leaves it dirty.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use super::backup::Report;
use super::{Ctx, DATA_ROLES};
use crate::backup::decide::Mode;
use crate::backup::rollback::{self, Lineage};
use crate::backup::target::is_blank;
use crate::cli::{KeyArgs, RestoreArgs};
use crate::crypto::VolumeKey;
use crate::emd::{self, Checkpoint, Copies, Emd, Task};
use crate::error::{Error, IoContext, Result};
use crate::pipeline::progress::{ProgressMode, with_progress};
use crate::stream::decode::FrameDecoder;
use crate::stream::format::Header;
use crate::stream::reader::{Item, StreamReader};
use crate::volume::device::require_volume_kind;
use crate::volume::identity::Storage;
use crate::volume::{Device, layout, lock, unlock_emd};

pub fn run(ctx: &Ctx, args: RestoreArgs) -> Result<()> {
    let report = execute(ctx, &args)?;
    if args.json {
        super::out(format!("{}\n", report.json()))
    } else {
        ctx.note(report.summary("restore"));
        Ok(())
    }
}

/// Open the stream named on the command line.
pub fn open_stream(path: &Path) -> Result<(Box<dyn Read + Send>, String)> {
    if path == Path::new("-") {
        Ok((Box::new(std::io::stdin()), "standard input".to_string()))
    } else {
        let f = File::open(path).ctx("opening", path)?;
        Ok((Box::new(f), path.display().to_string()))
    }
}

/// The stream's target volume key from `-k`, when given. Required when the
/// stream holds frames that only the key can turn into ciphertext.
pub fn stream_key(
    ctx: &Ctx,
    key: &crate::cli::OptKeyArgs,
    header: &Header,
    name: &str,
    required: bool,
) -> Result<Option<VolumeKey>> {
    let Some(id) = &key.key else {
        if required {
            let what = if header.compressed {
                "compressed"
            } else {
                "sparse"
            };
            return Err(Error::access(format!(
                "{name} is a {what} stream: restoring it needs the volume key"
            ))
            .with_hint("give -k ID with a key of the backed-up volume (its owner or a user)"));
        }
        return Ok(None);
    };
    let pk = ctx.private_key(&KeyArgs {
        key: id.clone(),
        passphrase_file: key.passphrase_file.clone(),
    })?;
    Ok(Some(
        unlock_emd(&header.emd, Path::new(name), &pk, DATA_ROLES, "read it")?.key,
    ))
}

pub fn execute(ctx: &Ctx, args: &RestoreArgs) -> Result<Report> {
    let clock = Instant::now();
    if args.stream.as_os_str() == "-" && args.key.passphrase_file.as_deref() == Some(Path::new("-"))
    {
        return Err(Error::usage(
            "the stream is standard input, so a passphrase cannot come from it too",
        ));
    }
    if args.dst.as_os_str() == "-" {
        return Err(Error::usage(
            "restore writes a volume: name a file or block device as DST",
        ));
    }
    let dst = &args.dst;
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
    let (input, name) = open_stream(&args.stream)?;
    let mut reader = StreamReader::open(input, &name)?;
    let header = reader.header.clone();
    let key = stream_key(
        ctx,
        &args.key,
        &header,
        &name,
        header.compressed || header.sparse,
    )?;
    if let Some(k) = &key
        && !header.raw
    {
        reader.set_mac_key(&k.stream_mac_key());
    }

    // Busy before foreign: a target another writer holds is reported as such.
    lock::probe(dst, "restore into it")?;
    let existing = check_target(dst, &header, args.force)?;
    if let Some(e) = &existing {
        let mut lineage = Lineage::of(&header.emd);
        if header.source_uuid != [0; 16] {
            lineage = lineage.with(header.source_uuid, header.source_data_version);
        }
        rollback::check(&lineage, &name, e, &dst.display().to_string(), args.force)?;
    }
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
    initial.dirty = true;
    initial.checkpoint = Some(Checkpoint {
        task: Task::Restore,
        run_id: header.stream_id,
        source_uuid: header.emd.uuid,
        bytes_done: 0,
        total: header.expected.unwrap_or(0),
        source_generation: 0,
    });
    initial.generation = existing.as_ref().map_or(initial.generation, |e| {
        e.generation.max(initial.generation) + 1
    });
    emd::write_both(&dev, &initial)?;

    let limit = if dev.is_block() {
        layout::max_data_size(dev.size(), initial.sector_size)
    } else {
        u64::MAX - initial.data_offset
    };
    let mut decoder = FrameDecoder::new(&header, key.as_ref());
    let progress = ProgressMode {
        lines: args.progress.then_some(args.progress_interval),
        bar: !ctx.quiet && !args.json,
    };
    let trailer = with_progress(
        &progress,
        "restore",
        header.expected,
        |meter| -> Result<_> {
            loop {
                match reader.next_item()? {
                    Item::Frame(f, payload, fh) => {
                        let data = decoder.ciphertext(&f, payload, &fh)?;
                        if f.offset + data.len() as u64 > limit {
                            return Err(Error::refused(format!(
                                "the target {} is too small for the stream's data",
                                dst.display()
                            )));
                        }
                        dev.write_at(data, initial.data_offset + f.offset)?;
                        meter.add(u64::from(f.plain_len));
                    }
                    Item::End(t) => return Ok(t),
                }
            }
        },
    )?;
    let mut fin: Emd = trailer.emd.clone();
    same_volume(&header, &fin, &name)?;
    if let Some(k) = &key
        && !fin.mac_ok(k)
    {
        return Err(Error::integrity(format!(
            "{name}: the final EMD fails its MAC check"
        )));
    }
    if !dev.is_block() {
        let size = layout::device_size_for(fin.data_size);
        if created || dev.size() < size {
            dev.resize(size)?;
        }
    }
    dev.sync()?;
    fin.dirty = false;
    fin.checkpoint = None;
    fin.generation = initial.generation + 1;
    emd::write_both(&dev, &fin)?;
    // Frames carry the target's ciphertext, written as it lies; only a key
    // turns compressed frames and zero markers into ciphertext.
    let mode = match &key {
        Some(_) if header.compressed || header.sparse => Mode::Encrypt,
        _ => Mode::Raw,
    };
    Ok(Report {
        mode,
        stream_mode: Some(header.mode),
        bytes: trailer.bytes,
        seconds: clock.elapsed().as_secs_f64(),
        digest: trailer.plaintext_blake3.map(blake3::Hash::from),
        threads: 1,
        source: name,
        target: dst.display().to_string(),
        source_uuid: (header.source_uuid != [0; 16]).then_some(header.source_uuid),
        target_uuid: Some(fin.uuid),
        stream_bytes: Some(reader.position()),
        resumed_at: None,
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
    let copies = Copies::read(&dev)?;
    if let Some(e) = copies.current() {
        // The stream's own volume (restored before), or its source, or
        // another copy of that source.
        let source = Some(header.source_uuid).filter(|u| *u != [0; 16]);
        let ours = e.uuid == header.emd.uuid
            || source.is_some_and(|u| {
                e.uuid == u
                    || e.clone_of == Some(u)
                    || e.provenance.as_ref().and_then(|p| p.source_uuid()) == Some(u)
            });
        if ours || force {
            return Ok(Some(e.clone()));
        }
        return Err(Error::refused(format!(
            "the target {} is an EVFS volume of another lineage (uuid {})",
            dst.display(),
            e.uuid_string()
        ))
        .with_hint("use --force to overwrite it"));
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

/// The trailer's EMD must describe the volume the header announced.
fn same_volume(header: &Header, fin: &Emd, name: &str) -> Result<()> {
    let h = &header.emd;
    let same = fin.uuid == h.uuid
        && fin.cipher == h.cipher
        && fin.sector_size == h.sector_size
        && fin.data_offset == h.data_offset
        && fin.slots == h.slots
        && fin.label == h.label
        && fin.state == h.state
        && fin.clone_of == h.clone_of
        && fin.data_version == h.data_version
        && (header.expected.is_none() || fin.data_size == h.data_size);
    if !same {
        return Err(Error::integrity(format!(
            "{name}: the trailer's EMD does not describe the volume of the header"
        )));
    }
    Ok(())
}
