//! `evfs emd backup|restore`: the EMD saved to a file and written back.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::emd::{EMD_SIZE, Emd};
use crate::error::{Error, IoContext, Result};
use crate::ops::Observer;
use crate::volume::{Device, Volume, layout};

/// Save the EMD in force of `vol` to a new file.
pub fn backup(obs: &dyn Observer, vol: &Path, file: &Path) -> Result<()> {
    let v = Volume::open(vol, false)?;
    let bytes = v.emd.encode();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::usage(format!("{} already exists", file.display()))
                    .with_hint("choose a new file name; an EMD backup is never overwritten")
            } else {
                Error::io("creating", file, e)
            }
        })?;
    f.write_all(&bytes[..]).ctx("writing", file)?;
    f.sync_all().ctx("syncing", file)?;
    obs.note(&format!(
        "saved the EMD of {} (uuid {}, generation {}) to {}",
        vol.display(),
        v.emd.uuid_string(),
        v.emd.generation,
        file.display()
    ));
    Ok(())
}

/// Write a saved EMD back to both copies of `vol`.
pub fn restore(obs: &dyn Observer, vol: &Path, file: &Path, force: bool) -> Result<()> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .ctx("opening", file)?
        .take(EMD_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .ctx("reading", file)?;
    if bytes.len() != EMD_SIZE {
        return Err(Error::integrity(format!(
            "{} is not a saved EMD ({} bytes, expected {EMD_SIZE})",
            file.display(),
            bytes.len()
        )));
    }
    let mut saved = Emd::parse(&bytes).map_err(|e| {
        Error::integrity(format!("{} is not a valid saved EMD: {e}", file.display()))
    })?;
    let mut dev = Device::open_write(vol)?;
    dev.lock(true, "restore its EMD")?;
    let end = saved.data_offset + saved.data_size;
    if layout::backup_emd_offset(dev.size()).is_none_or(|b| end > b) {
        return Err(Error::refused(format!(
            "the saved EMD describes a data area ending at byte {end}, beyond what {} ({} bytes) holds",
            vol.display(),
            dev.size()
        )));
    }
    let copies = crate::volume::metadata::read(&dev)?;
    if let Some(current) = copies.current() {
        if current.uuid != saved.uuid && !force {
            return Err(Error::refused(format!(
                "{} holds the valid EMD of another volume (uuid {}; the file is for {})",
                vol.display(),
                current.uuid_string(),
                saved.uuid_string()
            ))
            .with_hint("use --force to replace it"));
        }
        saved.generation = saved.generation.max(current.generation);
    }
    saved.generation += 1;
    crate::volume::metadata::write_both(&dev, &saved)?;
    let check = Volume::from_device(dev)?;
    if check.copies.health() != (true, true) {
        return Err(Error::runtime(format!(
            "{}: the restored EMD did not read back correctly",
            vol.display()
        )));
    }
    obs.note(&format!(
        "restored the EMD of {} (uuid {}) from {}",
        vol.display(),
        saved.uuid_string(),
        file.display()
    ));
    Ok(())
}
