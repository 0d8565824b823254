//! The one error type of the library, and the one place where failures become
//! the exit codes of the command line (`evfs(1)`, EXIT STATUS).
//!
//! Every variant carries a message that names what failed (and on which path);
//! most carry a [`Hint`] that tells the user what to do next: advice in
//! words, or a [`CliAdvice`] that names commands of the evfs command line,
//! which the front end renders in its own syntax (no layer below it writes
//! command lines). `main` prints `evfs: <message>` and, on the next line,
//! `hint: <hint>`.

use std::io;
use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the user can do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Advice in plain words.
    Text(String),
    /// Advice that names commands or flags of the command line.
    Cli(CliAdvice),
}

/// Advice that the command line renders as its own commands and flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CliAdvice {
    /// The ways to give the passphrase of key `id` (`None`: a new key).
    PassphraseSources {
        /// The key pair whose passphrase is wanted, `user.keyname`.
        id: Option<String>,
    },
    /// Where a keystore is when no home directory is known.
    KeystoreLocation,
    /// `path`, owned by another user, is not used; uid `me` runs evfs.
    OwnKeystore {
        /// The uid evfs runs as.
        me: u32,
        /// The keystore directory or file owned by another user.
        path: String,
    },
    /// No public key `id`: list the keys, or import it.
    ImportKey {
        /// The key ID that was not found, `user.keyname`.
        id: String,
    },
    /// No private key: make one, or point at the right keystore.
    GenerateKey,
    /// A wrong passphrase (a stored one can be replaced).
    WrongPassphrase,
    /// A stored passphrase that does not open: store it again.
    StorePassphrase {
        /// The key pair whose stored passphrase failed, if known.
        id: Option<String>,
    },
    /// Restore a saved EMD; `distrust`: the EMD in force was tampered with.
    EmdRestore {
        /// The EMD in force was altered outside evfs (its MAC fails), not
        /// merely damaged.
        distrust: bool,
    },
    /// A file that is not a volume: what to do with a stream or plain data.
    NotAVolume {
        /// The file is a backup stream (else: plain data or unknown).
        stream: bool,
    },
    /// Enable the disabled volume `volume`.
    Enable {
        /// The volume's path, as given.
        volume: String,
    },
    /// The owner can give key `id` a slot on `volume`.
    UserAdd {
        /// The volume's path, as given.
        volume: String,
        /// The key ID without a slot, `user.keyname`.
        id: String,
    },
    /// The ways to give the secret of a LUKS volume (`target`: a backup's
    /// or restore's target).
    LuksSecret {
        /// The secret wanted is the target's (else the volume the command
        /// reads).
        target: bool,
    },
    /// Enroll key pair `id` in the LUKS2 volume `volume`.
    LuksEnroll {
        /// The LUKS2 volume's path, as given.
        volume: String,
        /// The key pair to enroll, `user.keyname`.
        id: String,
    },
}

impl From<String> for Hint {
    fn from(text: String) -> Hint {
        Hint::Text(text)
    }
}

impl From<&str> for Hint {
    fn from(text: &str) -> Hint {
        Hint::Text(text.to_string())
    }
}

impl From<CliAdvice> for Hint {
    fn from(advice: CliAdvice) -> Hint {
        Hint::Cli(advice)
    }
}

/// A failure, classified by the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Exit 2: the command line does not make sense.
    #[error("{msg}")]
    Usage {
        /// The message: what failed, and where.
        msg: String,
        /// What the user can do next, if anything.
        hint: Option<Hint>,
    },

    /// Exit 1: an I/O call failed on a path.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done: "reading", "opening", ...
        what: &'static str,
        /// The path, or a name such as "standard input", it was done on.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },

    /// Exit 1: a runtime failure that is not a plain I/O error (lock held, ...).
    #[error("{msg}")]
    Runtime {
        /// The message: what failed, and where.
        msg: String,
        /// What the user can do next, if anything.
        hint: Option<Hint>,
    },

    /// Exit 1: stdout was closed before all data was written.
    #[error("broken pipe: the reader of standard output went away before the data was complete")]
    BrokenPipe,

    /// Exit 3: a configuration evfs refuses (double encryption, cleartext on
    /// encrypted media, target is source, target too small, foreign target).
    #[error("refused: {msg}")]
    Refused {
        /// The message: what failed, and where.
        msg: String,
        /// What the user can do next, if anything.
        hint: Option<Hint>,
    },

    /// Exit 4: wrong passphrase, key in no slot, role not allowed, no passphrase source.
    #[error("access denied: {msg}")]
    Access {
        /// The message: what failed, and where.
        msg: String,
        /// What the user can do next, if anything.
        hint: Option<Hint>,
    },

    /// Exit 5: verification mismatch, corrupt or tampered metadata or stream.
    #[error("integrity failure: {msg}")]
    Integrity {
        /// The message: what failed, and where.
        msg: String,
        /// What the user can do next, if anything.
        hint: Option<Hint>,
    },

    /// Exit 6: `check` found the volume dirty.
    #[error("{msg}")]
    Dirty {
        /// The message: what failed, and where.
        msg: String,
        /// What the user can do next, if anything.
        hint: Option<Hint>,
    },
}

impl Error {
    /// The process exit code for this error (`evfs(1)`, EXIT STATUS).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe => 1,
            Error::Io { .. } | Error::Runtime { .. } | Error::BrokenPipe => 1,
            Error::Usage { .. } => 2,
            Error::Refused { .. } => 3,
            Error::Access { .. } => 4,
            Error::Integrity { .. } => 5,
            Error::Dirty { .. } => 6,
        }
    }

    /// What the user can do about it, if there is something to say.
    pub fn hint(&self) -> Option<Hint> {
        match self {
            Error::Usage { hint, .. }
            | Error::Runtime { hint, .. }
            | Error::Refused { hint, .. }
            | Error::Access { hint, .. }
            | Error::Integrity { hint, .. }
            | Error::Dirty { hint, .. } => hint.clone(),
            Error::Io { source, .. } => io_hint(source).map(Hint::from),
            Error::BrokenPipe => None,
        }
    }

    /// Attach or replace the hint: advice in words, or [`CliAdvice`].
    pub fn with_hint(mut self, hint: impl Into<Hint>) -> Self {
        let text = Some(hint.into());
        match &mut self {
            Error::Usage { hint, .. }
            | Error::Runtime { hint, .. }
            | Error::Refused { hint, .. }
            | Error::Access { hint, .. }
            | Error::Integrity { hint, .. }
            | Error::Dirty { hint, .. } => *hint = text,
            Error::Io { .. } | Error::BrokenPipe => {}
        }
        self
    }

    /// An exit-2 error: the command line does not make sense.
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage {
            msg: msg.into(),
            hint: None,
        }
    }

    /// An exit-1 failure that is not a plain I/O error (a lock held, no
    /// randomness).
    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime {
            msg: msg.into(),
            hint: None,
        }
    }

    /// An exit-3 refusal of a configuration evfs will not run.
    pub fn refused(msg: impl Into<String>) -> Self {
        Error::Refused {
            msg: msg.into(),
            hint: None,
        }
    }

    /// An exit-4 denial: a wrong passphrase, a key in no slot, a role not
    /// allowed.
    pub fn access(msg: impl Into<String>) -> Self {
        Error::Access {
            msg: msg.into(),
            hint: None,
        }
    }

    /// An exit-5 integrity failure: a mismatch, or corrupt or tampered data.
    pub fn integrity(msg: impl Into<String>) -> Self {
        Error::Integrity {
            msg: msg.into(),
            hint: None,
        }
    }

    /// An exit-6 report that a volume is dirty (an unfinished write).
    pub fn dirty(msg: impl Into<String>) -> Self {
        Error::Dirty {
            msg: msg.into(),
            hint: None,
        }
    }

    /// An I/O failure while doing `what` ("reading", "opening", ...) on `path`.
    /// A broken pipe keeps its own variant so that its message is plain.
    pub fn io(what: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::BrokenPipe {
            return Error::BrokenPipe;
        }
        Error::Io {
            what,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// True when the failure is the reader of our stdout going away.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::BrokenPipe)
    }
}

fn io_hint(err: &io::Error) -> Option<&'static str> {
    match err.kind() {
        io::ErrorKind::NotFound => Some("check the path"),
        io::ErrorKind::PermissionDenied => {
            Some("check the file's permissions, or run as a user who may access it")
        }
        io::ErrorKind::StorageFull => Some("free space on the target's file system"),
        io::ErrorKind::UnexpectedEof => {
            Some("the input ended early: it may be truncated or still being written")
        }
        _ => None,
    }
}

/// Shorthand for mapping `io::Result` into our `Result` with a path and a verb.
pub trait IoContext<T> {
    /// Map the error into [`Error::io`] for doing `what` on `path`.
    fn ctx(self, what: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}

/// The error of a result whose success type has no `Debug` (secrets).
#[cfg(test)]
pub(crate) fn expect_err<T>(r: Result<T>) -> Error {
    match r {
        Err(e) => e,
        Ok(_) => panic!("expected an error, got success"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_spec_table() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::runtime("x").exit_code(), 1);
        assert_eq!(Error::BrokenPipe.exit_code(), 1);
        assert_eq!(Error::refused("x").exit_code(), 3);
        assert_eq!(Error::access("x").exit_code(), 4);
        assert_eq!(Error::integrity("x").exit_code(), 5);
        assert_eq!(Error::dirty("x").exit_code(), 6);
        let io = Error::io("reading", "/x", io::Error::other("boom"));
        assert_eq!(io.exit_code(), 1);
        assert!(io.to_string().contains("/x"));
    }

    #[test]
    fn broken_pipe_io_errors_become_the_broken_pipe_variant() {
        let e = Error::io("writing", "-", io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(e.is_broken_pipe());
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn hints_attach_to_messages() {
        let e = Error::refused("no").with_hint("do this");
        assert_eq!(e.hint(), Some(Hint::Text("do this".to_string())));
        assert_eq!(e.to_string(), "refused: no");
    }
}
