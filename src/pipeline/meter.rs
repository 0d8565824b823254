//! The counter a running pipeline bumps as chunks are written, for whoever
//! shows progress.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes and chunks done so far; shared with an observer thread.
#[derive(Debug, Default)]
pub struct Meter {
    done: AtomicU64,
    chunks: AtomicU64,
    unchanged: AtomicU64,
}

impl Meter {
    /// Count one more chunk of `bytes`.
    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.chunks.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one more chunk of `bytes` that a chunk index showed unchanged
    /// (read, not written).
    pub fn add_unchanged(&self, bytes: u64) {
        self.add(bytes);
        self.unchanged.fetch_add(1, Ordering::Relaxed);
    }

    /// Chunks passed over as unchanged so far.
    pub fn unchanged(&self) -> u64 {
        self.unchanged.load(Ordering::Relaxed)
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
