//! Positional writes, the one thing the data pipeline needs of a target:
//! the pipeline writes through this trait, and the volume layer's devices
//! (and plain files) implement it, so neither knows the other.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Something written at byte offsets: a file or a block device.
pub trait WriteAt {
    /// Write all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Its name in messages.
    fn name(&self) -> &Path;
}

/// A plain file and its name.
pub struct NamedFile<'a> {
    pub file: &'a File,
    pub name: &'a Path,
}

impl WriteAt for NamedFile<'_> {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .ctx("writing", self.name)
    }

    fn name(&self) -> &Path {
        self.name
    }
}
