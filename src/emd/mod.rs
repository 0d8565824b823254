//! The EMD (encryption metadata) of a volume: two copies far apart, the newer
//! valid one wins, every update rewrites both with a sync between.

pub mod format;

#[cfg(test)]
pub(crate) mod tests;

use crate::error::{Error, Result};
use crate::volume::device::Device;
use crate::volume::{layout, sniff};

pub use format::{
    Checkpoint, EMD_SIZE, Emd, EmdError, Origin, Provenance, Role, Slot, State, Task, Timestamp,
};

/// The state of one copy on the media.
#[derive(Clone, Debug)]
pub enum CopyState {
    Ok(Box<Emd>),
    Bad(EmdError),
}

impl CopyState {
    pub fn emd(&self) -> Option<&Emd> {
        match self {
            CopyState::Ok(e) => Some(e),
            CopyState::Bad(_) => None,
        }
    }

    /// Whether the copy at least carries the EMD magic.
    pub fn has_magic(&self) -> bool {
        !matches!(self, CopyState::Bad(EmdError::NoMagic))
    }
}

/// Both copies as read from a device.
#[derive(Clone, Debug)]
pub struct Copies {
    pub primary: CopyState,
    pub backup: CopyState,
}

impl Copies {
    /// Read both copies of `dev`. I/O errors fail; bad contents do not.
    pub fn read(dev: &Device) -> Result<Copies> {
        let mut buf = vec![0u8; EMD_SIZE];
        let primary = if dev.size() >= EMD_SIZE as u64 {
            dev.read_at(&mut buf, 0)?;
            parse_state(&buf)
        } else {
            CopyState::Bad(EmdError::NoMagic)
        };
        let backup = match layout::backup_emd_offset(dev.size()) {
            Some(off) => {
                dev.read_at(&mut buf, off)?;
                parse_state(&buf)
            }
            None => CopyState::Bad(EmdError::NoMagic),
        };
        Ok(Copies { primary, backup })
    }

    /// The copy in force: the valid one with the higher generation.
    pub fn current(&self) -> Option<&Emd> {
        match (self.primary.emd(), self.backup.emd()) {
            (Some(p), Some(b)) if b.generation > p.generation => Some(b),
            (Some(p), _) => Some(p),
            (None, b) => b,
        }
    }

    /// Whether each copy is valid and up to date: `(primary, backup)`.
    /// A valid copy older than the other one is stale, which counts as bad.
    pub fn health(&self) -> (bool, bool) {
        let current = self.current().map(|e| e.generation);
        let fresh = |c: &CopyState| c.emd().is_some_and(|e| Some(e.generation) == current);
        (fresh(&self.primary), fresh(&self.backup))
    }

    /// Whether either copy at least carries the EMD magic.
    pub fn any_magic(&self) -> bool {
        self.primary.has_magic() || self.backup.has_magic()
    }

    /// A description of a bad copy, for messages.
    pub fn describe(state: &CopyState, current: Option<u64>) -> String {
        match state {
            CopyState::Ok(e) if Some(e.generation) != current => format!(
                "stale (generation {} < {})",
                e.generation,
                current.unwrap_or(0)
            ),
            CopyState::Ok(_) => "ok".to_string(),
            CopyState::Bad(err) => format!("bad ({err})"),
        }
    }
}

fn parse_state(buf: &[u8]) -> CopyState {
    match Emd::parse(buf) {
        Ok(e) => CopyState::Ok(Box::new(e)),
        Err(e) => CopyState::Bad(e),
    }
}

/// The error for a path that holds no valid EMD: exit 5 when EMD magic is
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
        .with_hint("restore a saved EMD with `evfs emd restore VOL FILE`");
    }
    let mut head = [0u8; sniff::SNIFF_LEN];
    let n = head.len().min(dev.size() as usize);
    let kind = match dev.read_at(&mut head[..n], 0) {
        Ok(()) => sniff::sniff(&head[..n]),
        Err(e) => return e,
    };
    let hint = match kind {
        sniff::Kind::Stream => {
            "check it with `evfs verify STREAM`, or write it onto a volume with `evfs restore STREAM DST`"
        }
        _ => {
            "make a volume of its data with `evfs backup FILE VOL --owner ID`, or make it a new volume with `evfs create`"
        }
    };
    Error::usage(format!("{path} is {}, not an EVFS volume", kind.describe())).with_hint(hint)
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
