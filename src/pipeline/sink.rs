//! Where a pipeline's output goes: a volume's data area (positional writes),
//! a byte stream such as stdout (in order), or nowhere (hash only).

use std::fs::File;
use std::io::Write;

use super::ChunkOut;
use crate::error::{Error, Result};
use crate::volume::Device;

/// Receives chunks in order.
pub trait Sink {
    fn put(&mut self, chunk: &ChunkOut) -> Result<()>;
}

/// Discards the data (for hashing).
pub struct NullSink;

impl Sink for NullSink {
    fn put(&mut self, _chunk: &ChunkOut) -> Result<()> {
        Ok(())
    }
}

/// Writes each chunk at `base + offset` of a device, never past `base + limit`
/// (so that a source longer than expected cannot overwrite what follows the
/// data area, such as the backup EMD copy).
pub struct DeviceSink<'a> {
    pub dev: &'a Device,
    pub base: u64,
    pub limit: u64,
}

impl Sink for DeviceSink<'_> {
    fn put(&mut self, chunk: &ChunkOut) -> Result<()> {
        let end = chunk.offset + chunk.data.len() as u64;
        if end > self.limit {
            return Err(Error::refused(format!(
                "the target is too small: the source has more than the {} bytes that fit into {}",
                self.limit,
                self.dev.path().display()
            )));
        }
        self.dev.write_at(chunk.data, self.base + chunk.offset)
    }
}

/// Writes the real bytes of each chunk to a stream, in order.
pub struct WriteSink<W: Write> {
    pub writer: W,
    pub name: String,
}

impl<W: Write> Sink for WriteSink<W> {
    fn put(&mut self, chunk: &ChunkOut) -> Result<()> {
        self.writer
            .write_all(&chunk.data[..chunk.plain_len])
            .map_err(|e| Error::io("writing", &self.name, e))
    }
}

impl<W: Write> WriteSink<W> {
    pub fn flush(&mut self) -> Result<()> {
        self.writer
            .flush()
            .map_err(|e| Error::io("writing", &self.name, e))
    }
}

/// Standard output as an unbuffered file: large writes go straight to the
/// pipe instead of through std's line buffer.
pub fn stdout_file() -> Result<File> {
    let fd = rustix::io::dup(rustix::stdio::stdout())
        .map_err(|e| Error::io("duplicating", "standard output", e.into()))?;
    Ok(File::from(fd))
}
