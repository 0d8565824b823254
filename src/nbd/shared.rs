//! What the accept loop and the connections share: the serving state and
//! the events a caller hears.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Export;

/// Something that happened while serving, for callers that want to log.
///
/// Borrowed errors are only valid during the callback.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeEvent<'a> {
    /// A client connected; ids count up from 1 in accept order.
    Connected { id: u64 },
    /// A connection ended. `error` is `None` for an orderly end: `NBD_CMD_DISC`,
    /// `NBD_OPT_ABORT`, the client closing between messages, or a server stop.
    Disconnected {
        id: u64,
        error: Option<&'a io::Error>,
    },
    /// The export failed an operation (`op` is e.g. `"read"`, `"flush"`); the
    /// client was answered with `NBD_EIO` and the connection carries on.
    ExportError {
        id: u64,
        op: &'static str,
        error: &'a io::Error,
    },
    /// `accept()` failed transiently, or no thread could be started for a new
    /// connection (which is then dropped); the server keeps running.
    AcceptError { error: &'a io::Error },
}

/// State shared by the accept loop and all connection threads.
pub(super) struct Shared<'a> {
    pub(super) stop: &'a AtomicBool,
    /// Set when the accept loop fails, so connections close as on `stop`.
    pub(super) abort: AtomicBool,
    pub(super) export: &'a dyn Export,
    pub(super) on_event: &'a (dyn Fn(ServeEvent<'_>) + Sync),
    pub(super) connections: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) bytes_written: AtomicU64,
}

impl Shared<'_> {
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.abort.load(Ordering::Acquire)
    }
}
