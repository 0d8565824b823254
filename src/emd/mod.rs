//! The EMD (encryption metadata) of a volume, as bytes: one copy's layout
//! ([`format`](mod@format)), and the rule that picks the copy in force from two
//! ([`Copies`]): the newer valid one wins. Reading and writing the copies on
//! a device is the volume layer's (`volume::metadata`).

pub mod format;

#[cfg(test)]
pub(crate) mod tests;

pub use format::{
    Checkpoint, EMD_SIZE, Emd, EmdError, IndexRef, Origin, Provenance, Role, Slot, State, Task,
    Timestamp,
};

/// The state of one copy on the media.
#[derive(Clone, Debug)]
pub enum CopyState {
    /// A copy that parsed (it may still be older than the other one).
    Ok(Box<Emd>),
    /// A copy that did not parse, and why.
    Bad(EmdError),
}

impl CopyState {
    /// The parsed copy, if it is valid.
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
    /// The copy at offset 0.
    pub primary: CopyState,
    /// The copy near the end of the device
    /// (`volume::layout::backup_emd_offset`).
    pub backup: CopyState,
}

impl Copies {
    /// Parse the bytes of both copies (`None` where the device is too
    /// small to hold one). Bad contents are a state, never an error.
    pub fn parse(primary: Option<&[u8]>, backup: Option<&[u8]>) -> Copies {
        let state = |b: Option<&[u8]>| match b.map(Emd::parse) {
            Some(Ok(e)) => CopyState::Ok(Box::new(e)),
            Some(Err(e)) => CopyState::Bad(e),
            None => CopyState::Bad(EmdError::NoMagic),
        };
        Copies {
            primary: state(primary),
            backup: state(backup),
        }
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
