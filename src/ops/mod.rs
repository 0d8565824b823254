//! The use-cases of evfs as a library API: back up, restore, verify, read
//! (hash and cat), map, and administer volumes.
//!
//! Each takes a typed request built from resolved options, a [`Keys`]
//! provider that unlocks key pairs when the use-case needs them (and only
//! then: a refused backup never asks for a passphrase), and an [`Observer`]
//! that hears notes and watches progress. Each returns a report or an
//! [`Error`](crate::Error). None parses flags or touches a terminal: the
//! command-line front end (`commands/`), the demo and the tests call them
//! alike.

pub mod admin;
pub mod backup;
pub mod demo;
mod findings;
pub mod luks;
pub mod map;
pub mod read;
pub mod restore;
pub(crate) mod stream_check;
pub mod trust;
pub mod verify;

use std::sync::Arc;

use crate::crypto::Passphrase;
use crate::emd::Role;
use crate::error::{Error, Result};
use crate::keys::{KeyId, Keystore, PrivateKey};
use crate::pipeline::Meter;

pub use backup::{BackupRequest, Target};
pub use restore::RestoreRequest;
pub use verify::{Verdict, VerifyRequest};

/// The roles that may read and write a volume's data.
pub const DATA_ROLES: &[Role] = &[Role::Owner, Role::User];

/// Which key a use-case asks for, so that the provider knows where its
/// passphrase comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUse {
    /// The key that unlocks the volume a command works on (`-k`).
    Volume,
    /// The key of a backup's target volume (`--target-key`).
    Target,
    /// A key that signs what a keyless command writes (`--sign-with`, or
    /// the owner's by default).
    Signer,
}

/// Unlocks key pairs for a use-case, and reads public keys.
pub trait Keys {
    /// The keystore public keys are read from.
    fn keystore(&self) -> Result<Keystore>;
    /// The private key of `id`, unlocked with its passphrase.
    fn unlock(&self, id: &KeyId, purpose: KeyUse) -> Result<PrivateKey>;
    /// [`Keys::unlock`], or `None` when no passphrase of `id` can be had
    /// without asking where nobody can answer (for a signer by default).
    fn try_unlock(&self, id: &KeyId, purpose: KeyUse) -> Result<Option<PrivateKey>> {
        self.unlock(id, purpose).map(Some)
    }
    /// How this run judges signatures.
    fn policy(&self) -> trust::Policy {
        trust::Policy::default()
    }
    /// The passphrase or key file given for the LUKS volume `purpose`
    /// names (the volume a command works on, or a backup's target), if one
    /// was given; nobody is asked. `None` by default.
    fn luks_secret(&self, _purpose: KeyUse) -> Result<Option<Passphrase>> {
        Ok(None)
    }
    /// Ask a person for the passphrase of the LUKS volume `volume` (twice
    /// when `new`: it will open a new keyslot); `None` where nobody can be
    /// asked. `None` by default.
    fn luks_prompt(&self, _volume: &str, _new: bool) -> Result<Option<Passphrase>> {
        Ok(None)
    }
}

/// What a use-case tells its caller while it runs. Every method has a
/// default that ignores it.
pub trait Observer: Sync {
    /// A message for the user: a warning, what is being resumed.
    fn note(&self, _msg: &str) {}
    /// A message only for a verbose run.
    fn detail(&self, _msg: &str) {}
    /// A warning that must be seen even by a quiet run (a client told EIO).
    fn warn(&self, msg: &str) {
        self.note(msg);
    }
    /// A long task (`what`: "backup", "restore", ...) of `total` bytes, if
    /// known, starts; `meter` counts the bytes done until [`Self::finished`].
    fn started(&self, _what: &str, _total: Option<u64>, _meter: Arc<Meter>) {}
    /// The task [`Self::started`] last is over.
    fn finished(&self) {}
}

/// An observer that hears nothing.
pub struct Silent;

impl Observer for Silent {}

/// Run `f` with a fresh meter that `obs` watches as task `what`.
pub fn watched<T>(
    obs: &dyn Observer,
    what: &str,
    total: Option<u64>,
    f: impl FnOnce(&Meter) -> T,
) -> T {
    struct Finish<'a>(&'a dyn Observer);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            self.0.finished();
        }
    }
    let meter = Arc::new(Meter::default());
    obs.started(what, total, meter.clone());
    let _finish = Finish(obs);
    f(&meter)
}

/// What a finished backup or restore reports.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was done with the data; a restore reports `Raw` when it wrote
    /// the frames as they lie, `Encrypt` when it encrypted compressed frames
    /// or zero markers with the key.
    pub mode: backup::Mode,
    /// What a restored stream was made as (a restore only).
    pub stream_mode: Option<crate::stream::format::StreamMode>,
    /// Bytes of plaintext copied.
    pub bytes: u64,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
    /// BLAKE3 of the plaintext (none for a raw clone, which never sees it).
    pub digest: Option<blake3::Hash>,
    /// Worker threads used (1 for a restore).
    pub threads: usize,
    /// The source as named in messages (a path, "standard input").
    pub source: String,
    /// The target as named in messages.
    pub target: String,
    /// UUID of the source volume, if the data came from one.
    pub source_uuid: Option<[u8; 16]>,
    /// UUID of the target volume (of a stream: the volume it restores), if
    /// the target is one.
    pub target_uuid: Option<[u8; 16]>,
    /// Bytes written to a stream (header, frames, trailer), when the target is one.
    pub stream_bytes: Option<u64>,
    /// Data offset a resumed backup continued from (`--resume`).
    pub resumed_at: Option<u64>,
    /// Who signed the restored stream (a restore only).
    pub signed_by: Option<trust::SignedBy>,
    /// What was read, passed over and written, chunk by chunk.
    pub chunks: Option<Chunks>,
}

/// The chunk counts of a report: of the chunks read from the source, how
/// many were unchanged since the target's last backup (not written), and
/// the bytes read, written into a volume and sent into a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chunks {
    /// Chunks of [`crate::index::CHUNK`] bytes read from the source.
    pub total: u64,
    /// Chunks that the target's chunk index showed unchanged: not written.
    pub unchanged: u64,
    /// Bytes of data read from the source.
    pub bytes_read: u64,
    /// Bytes of data written into a volume target's data area.
    pub bytes_written: u64,
    /// Bytes written into a stream (header, frames, trailer).
    pub bytes_sent: u64,
}

impl Chunks {
    /// The counts of a pipeline run into a volume.
    pub fn written(outcome: &crate::pipeline::Outcome) -> Chunks {
        Chunks {
            total: outcome.chunks,
            unchanged: outcome.unchanged,
            bytes_read: outcome.bytes,
            bytes_written: outcome.written,
            bytes_sent: 0,
        }
    }

    /// The counts of a pipeline run into a stream of `sent` bytes.
    pub fn sent(outcome: &crate::pipeline::Outcome, sent: u64) -> Chunks {
        Chunks {
            bytes_written: 0,
            bytes_sent: sent,
            ..Chunks::written(outcome)
        }
    }

    /// Chunks written (all but the unchanged ones).
    pub fn rewritten(&self) -> u64 {
        self.total - self.unchanged
    }
}

/// A sector size of a data area: 512 or 4096 bytes (the command line's
/// parser says the same; a program embedding evfs gets this error).
pub fn check_sector_size(sector_size: u32) -> Result<()> {
    match sector_size {
        512 | 4096 => Ok(()),
        other => Err(Error::usage(format!(
            "the sector size is 4096 or 512, not {other}"
        ))),
    }
}

/// The number of worker threads: `requested`, or every core.
pub fn threads(requested: Option<usize>) -> usize {
    requested
        .filter(|&n| n > 0)
        .map_or_else(crate::pipeline::Plan::default_threads, |n| n.min(1024))
}

#[cfg(test)]
mod tests {
    /// A program embedding evfs, unlike the command line, can pass any
    /// number: 0 used to divide by zero, 1000 to write an EMD no reader
    /// accepts. Both are usage errors before anything is opened.
    #[test]
    fn only_512_and_4096_byte_sectors_pass() {
        for ss in [512, 4096] {
            assert!(super::check_sector_size(ss).is_ok());
        }
        for ss in [0, 1, 1000, 1024, 8192] {
            let e = super::check_sector_size(ss).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{ss}");
        }
        struct NoKeys;
        impl super::Keys for NoKeys {
            fn keystore(&self) -> crate::error::Result<crate::keys::Keystore> {
                panic!("a usage error asks for no keystore")
            }
            fn unlock(
                &self,
                _: &crate::keys::KeyId,
                _: super::KeyUse,
            ) -> crate::error::Result<crate::keys::PrivateKey> {
                panic!("a usage error asks for no key")
            }
        }
        let mut req =
            super::backup::BackupRequest::new("/nonexistent/source", super::backup::Target::Stdout);
        req.sector_size = Some(0);
        let e = super::backup::run(&req, &NoKeys, &super::Silent).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("sector size"), "{e}");
    }
}
