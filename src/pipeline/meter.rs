//! The counter a running pipeline bumps as chunks are written, for whoever
//! shows progress.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes and chunks done so far; shared with an observer thread.
#[derive(Debug, Default)]
pub struct Meter {
    done: AtomicU64,
    chunks: AtomicU64,
}

impl Meter {
    /// Count one more chunk of `bytes`.
    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.chunks.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes done.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Chunks done.
    pub fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::Relaxed)
    }
}
