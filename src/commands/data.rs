//! `evfs hash` and `evfs cat`: the plaintext of a volume (or a plain file),
//! through the same pipeline as backups.

use std::path::Path;

use super::{Ctx, DATA_ROLES, out};
use crate::cli::{KeyArgs, OptKeyArgs};
use crate::emd::Copies;
use crate::error::{Error, Result};
use crate::pipeline::digest::TreeMerger;
use crate::pipeline::progress::{ProgressMode, with_progress};
use crate::pipeline::sink::{NullSink, WriteSink, stdout_file};
use crate::pipeline::source::MappedSource;
use crate::pipeline::{self, Plan, SectorKey};
use crate::volume::identity::Storage;
use crate::volume::{Device, Volume};

/// `--threads`, defaulting to every core.
pub fn threads(flag: Option<usize>) -> Result<usize> {
    match flag {
        Some(0) => Err(Error::usage("--threads must be at least 1")),
        Some(n) => Ok(n.min(1024)),
        None => Ok(Plan::default_threads()),
    }
}

/// A mapped source over the data of an open volume: its data length in
/// whole sectors.
pub fn data_source(v: &Volume) -> Result<MappedSource> {
    v.require_data_fits()?;
    let file = v
        .dev
        .file()
        .try_clone()
        .map_err(|e| Error::io("reopening", v.path(), e))?;
    Ok(MappedSource::new(
        file,
        v.path().to_path_buf(),
        v.emd.data_offset,
        v.emd
            .data_len
            .next_multiple_of(u64::from(v.emd.sector_size)),
    ))
}

/// The decrypting key of an unlocked volume.
pub fn sector_key(v: &Volume, key: &crate::crypto::VolumeKey) -> SectorKey {
    SectorKey {
        xts: key.xts(),
        sector_size: v.emd.sector_size as usize,
    }
}

/// BLAKE3 of the first `len` bytes of plaintext of a volume (decrypted with
/// `key`) or of a plain file (`key` = `None`, `data_offset` = 0).
pub fn plaintext_digest(
    dev: &Device,
    range: (u64, u64),
    decrypt: Option<SectorKey>,
    threads: usize,
) -> Result<blake3::Hash> {
    Ok(plaintext_tree(dev, range, decrypt, threads)?.finish())
}

/// The BLAKE3 tree of the first `range.1` bytes of plaintext from
/// `range.0` on: finished, it is their digest; a resumed backup continues it.
pub fn plaintext_tree(
    dev: &Device,
    range: (u64, u64),
    decrypt: Option<SectorKey>,
    threads: usize,
) -> Result<TreeMerger> {
    let (offset, bytes) = range;
    // Decryption works on whole sectors; only `bytes` of plaintext count.
    let mapped = match &decrypt {
        Some(k) => bytes.div_ceil(k.sector_size as u64) * k.sector_size as u64,
        None => bytes,
    };
    if offset.saturating_add(mapped) > dev.size() {
        return Err(Error::integrity(format!(
            "{}: the data to hash (bytes {offset} to {}) runs past the end of the device or file ({} bytes): it is truncated",
            dev.path().display(),
            offset.saturating_add(mapped),
            dev.size()
        )));
    }
    let plan = Plan {
        threads,
        decrypt,
        encrypt: None,
        hash: true,
        detect_zero: false,
        plain_len: Some(bytes),
        start: 0,
        framer: None,
    };
    let file = dev
        .file()
        .try_clone()
        .map_err(|e| Error::io("reopening", dev.path(), e))?;
    let mut source = MappedSource::new(file, dev.path().to_path_buf(), offset, mapped);
    let (_, tree) = with_progress(&ProgressMode::silent(), "hash", None, |meter| {
        pipeline::run_after(&plan, TreeMerger::new(), &mut source, &mut NullSink, meter)
    })?;
    Ok(tree)
}

pub fn hash(ctx: &Ctx, vol: &Path, key: &OptKeyArgs, threads_flag: Option<usize>) -> Result<()> {
    let threads = threads(threads_flag)?;
    let dev = Device::open_read(vol)?;
    let copies = Copies::read(&dev)?;
    let digest = if copies.current().is_some() {
        let v = Volume::from_device(dev)?;
        let Some(id) = &key.key else {
            return Err(Error::access(format!(
                "{} is an EVFS volume: hashing its plaintext needs a key",
                vol.display()
            ))
            .with_hint(format!("give -k ID: evfs hash {} -k ID", vol.display())));
        };
        let pk = ctx.private_key(&KeyArgs {
            key: id.clone(),
            passphrase_file: key.passphrase_file.clone(),
        })?;
        let unlocked = v.unlock(&pk, DATA_ROLES, "read its data")?;
        v.require_enabled("decrypted")?;
        plaintext_digest(
            &v.dev,
            (v.emd.data_offset, v.emd.data_len),
            Some(sector_key(&v, &unlocked.key)),
            threads,
        )?
    } else if copies.any_magic() {
        return Err(crate::emd::no_valid_emd(&dev, &copies));
    } else {
        if key.key.is_some() {
            ctx.note(format!(
                "{} is not an EVFS volume; hashing it as a plain file (-k is not used)",
                vol.display()
            ));
        }
        plaintext_digest(&dev, (0, dev.size()), None, threads)?
    };
    out(format!("{}  {}\n", digest.to_hex(), vol.display()))
}

pub fn cat(ctx: &Ctx, vol: &Path, key: &KeyArgs, threads_flag: Option<usize>) -> Result<()> {
    let threads = threads(threads_flag)?;
    let v = Volume::open(vol, false)?;
    crate::backup::target::not_the_source(&Storage::of_stdout()?, &v.dev.storage()?)?;
    let pk = ctx.private_key(key)?;
    let unlocked = v.unlock(&pk, DATA_ROLES, "read its data")?;
    v.require_enabled("decrypted")?;
    let plan = Plan {
        threads,
        decrypt: Some(sector_key(&v, &unlocked.key)),
        encrypt: None,
        hash: false,
        detect_zero: false,
        plain_len: Some(v.emd.data_len),
        start: 0,
        framer: None,
    };
    let mut source = data_source(&v)?;
    let mut sink = WriteSink {
        writer: stdout_file()?,
        name: "standard output".to_string(),
    };
    with_progress(&ProgressMode::silent(), "cat", None, |meter| {
        pipeline::run(&plan, &mut source, &mut sink, meter)
    })?;
    sink.flush()
}
