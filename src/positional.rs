//! Positional writes, the one thing the data pipeline needs of a target:
//! the pipeline writes through this trait, and the volume layer's devices
//! (and plain files) implement it, so neither knows the other.

use std::path::Path;

use crate::error::Result;

/// Something written at byte offsets: a file or a block device.
pub trait WriteAt {
    /// Write all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Its name in messages.
    fn name(&self) -> &Path;
}

/// A plain file and its name.
#[cfg(test)]
pub struct NamedFile<'a> {
    pub file: &'a std::fs::File,
    pub name: &'a Path,
}

#[cfg(test)]
impl WriteAt for NamedFile<'_> {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        use crate::error::IoContext;
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(buf, offset)
            .ctx("writing", self.name)
    }

    fn name(&self) -> &Path {
        self.name
    }
}
