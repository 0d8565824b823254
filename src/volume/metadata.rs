//! A volume's two EMD copies on its device: read both, write both (primary,
//! sync, backup, sync), wipe both, and the error for a device that holds
//! none. The byte layout is `emd::format`'s.

use super::device::Device;
use super::{layout, sniff};
use crate::emd::{Copies, EMD_SIZE, Emd};
use crate::error::{CliAdvice, Error, Result};

/// Read both copies of `dev`. I/O errors fail; bad contents do not.
pub fn read(dev: &Device) -> Result<Copies> {
    let mut primary = vec![0u8; EMD_SIZE];
    let mut backup = vec![0u8; EMD_SIZE];
    let has_primary = dev.size() >= EMD_SIZE as u64;
    if has_primary {
        dev.read_at(&mut primary, 0)?;
    }
    let backup_at = layout::backup_emd_offset(dev.size());
    if let Some(off) = backup_at {
        dev.read_at(&mut backup, off)?;
    }
    Ok(Copies::parse(
        has_primary.then_some(&primary[..]),
        backup_at.map(|_| &backup[..]),
    ))
}

/// Write `emd` to both copies of `dev`: primary, sync, backup, sync.
pub fn write_both(dev: &Device, emd: &Emd) -> Result<()> {
    let bytes = emd.encode();
    let backup = layout::backup_emd_offset(dev.size()).ok_or_else(|| {
        Error::refused(format!(
            "{} is too small to hold an EVFS volume",
            dev.path().display()
        ))
    })?;
    dev.write_at(&bytes[..], 0)?;
    dev.sync()?;
    dev.write_at(&bytes[..], backup)?;
    dev.sync()
}

/// Overwrite both copies with zeros (destroy).
pub fn wipe_both(dev: &Device) -> Result<()> {
    let zeros = vec![0u8; EMD_SIZE];
    dev.write_at(&zeros, 0)?;
    if let Some(backup) = layout::backup_emd_offset(dev.size()) {
        dev.write_at(&zeros, backup)?;
    }
    dev.sync()
}

/// The error for a device that holds no valid EMD: exit 5 when EMD magic is
/// there but both copies are damaged; exit 2 (a wrong kind of argument)
/// when it holds something else, saying what.
pub fn no_valid_emd(dev: &Device, copies: &Copies) -> Error {
    let path = dev.path().display();
    if copies.any_magic() {
        return Error::integrity(format!(
            "{path}: both EMD copies are damaged (primary {}, backup {})",
            Copies::describe(&copies.primary, None),
            Copies::describe(&copies.backup, None)
        ))
        .with_hint(CliAdvice::EmdRestore { distrust: false });
    }
    let kind = match sniff::kind_of_device(dev) {
        Ok(k) => k,
        Err(e) => return e,
    };
    if kind == sniff::Kind::Luks {
        return Error::usage(format!("{path} is a LUKS volume, not an EVFS volume")).with_hint(
            "evfs reads LUKS volumes (info, hash, cat, verify, map, dmtable, backup) and enrolls keys in them (luks enroll); cryptsetup manages them",
        );
    }
    let hint = CliAdvice::NotAVolume {
        stream: kind == sniff::Kind::Stream,
    };
    Error::usage(format!("{path} is {}, not an EVFS volume", kind.describe())).with_hint(hint)
}
