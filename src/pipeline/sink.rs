//! Where a pipeline's output goes: a volume's data area (positional writes),
//! a byte stream such as stdout (in order), or nowhere (hash only).

use std::fs::File;
use std::io::Write;

use super::ChunkOut;
use crate::error::{Error, Result};
use crate::positional::WriteAt;

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
    pub dev: &'a dyn WriteAt,
    pub base: u64,
    pub limit: u64,
    /// Write only the data bytes of each chunk, not the padding of its last
    /// sector (a cleartext export is exactly as long as the data).
    pub exact: bool,
}

impl DeviceSink<'_> {
    fn bytes<'c>(&self, chunk: &'c ChunkOut) -> &'c [u8] {
        if self.exact {
            &chunk.data[..chunk.plain_len]
        } else {
            chunk.data
        }
    }
}

impl Sink for DeviceSink<'_> {
    fn put(&mut self, chunk: &ChunkOut) -> Result<()> {
        let data = self.bytes(chunk);
        let end = chunk.offset + data.len() as u64;
        if end > self.limit {
            return Err(Error::refused(format!(
                "the target is too small: the source has more than the {} bytes that fit into {}",
                self.limit,
                self.dev.name().display()
            )));
        }
        if chunk.unchanged {
            return Ok(());
        }
        self.dev.write_at(data, self.base + chunk.offset)
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

/// Alignment of O_DIRECT buffers, offsets and lengths: the largest logical
/// block size Linux devices and file systems use.
const DIRECT_ALIGN: usize = 4096;

/// A [`DeviceSink`] whose writes bypass the page cache (`--direct`): a second
/// descriptor, opened by the caller with O_DIRECT, takes the aligned part of
/// each chunk, straight from the chunk when it starts on an aligned address
/// (the pipeline's own buffers do), else through an aligned bounce buffer;
/// a tail shorter than the alignment goes through the ordinary descriptor.
/// The caller's sync of the device covers both.
pub struct DirectSink<'a> {
    inner: DeviceSink<'a>,
    direct: Box<dyn WriteAt + 'a>,
    /// `DIRECT_ALIGN` more than needed, so that an aligned window fits.
    bounce: Vec<u8>,
    /// Where the aligned window of `bounce` starts.
    start: usize,
}

impl<'a> DirectSink<'a> {
    /// Write `inner`'s aligned pieces through `direct`, the same device
    /// opened a second time with O_DIRECT.
    pub fn new(inner: DeviceSink<'a>, direct: Box<dyn WriteAt + 'a>) -> Result<DirectSink<'a>> {
        if !inner.base.is_multiple_of(DIRECT_ALIGN as u64) {
            return Err(Error::runtime(format!(
                "the data area of {} is not aligned for O_DIRECT",
                inner.dev.name().display()
            )));
        }
        let bounce = vec![0u8; super::CHUNK + DIRECT_ALIGN];
        let start = bounce.as_ptr().align_offset(DIRECT_ALIGN);
        if start >= DIRECT_ALIGN {
            return Err(Error::runtime("cannot align a buffer for O_DIRECT"));
        }
        Ok(DirectSink {
            inner,
            direct,
            bounce,
            start,
        })
    }
}

impl Sink for DirectSink<'_> {
    fn put(&mut self, chunk: &ChunkOut) -> Result<()> {
        let mut data = self.inner.bytes(chunk);
        let end = chunk.offset + data.len() as u64;
        if end > self.inner.limit {
            // The same refusal as the buffered sink.
            return self.inner.put(chunk);
        }
        if chunk.unchanged {
            return Ok(());
        }
        let window = self.bounce.len() - DIRECT_ALIGN;
        let mut at = self.inner.base + chunk.offset;
        // Chunks start aligned (CHUNK is a multiple of DIRECT_ALIGN); only
        // the last one of a run may end unaligned.
        if !at.is_multiple_of(DIRECT_ALIGN as u64) {
            return self.inner.dev.write_at(data, at);
        }
        if data.as_ptr().align_offset(DIRECT_ALIGN) == 0 && data.len() >= DIRECT_ALIGN {
            let n = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
            self.direct.write_at(&data[..n], at)?;
            at += n as u64;
            data = &data[n..];
        }
        while data.len() >= DIRECT_ALIGN {
            let n = data.len().min(window) / DIRECT_ALIGN * DIRECT_ALIGN;
            let buf = &mut self.bounce[self.start..self.start + n];
            buf.copy_from_slice(&data[..n]);
            self.direct.write_at(buf, at)?;
            at += n as u64;
            data = &data[n..];
        }
        if !data.is_empty() {
            self.inner.dev.write_at(data, at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positional::NamedFile;

    fn chunk(offset: u64, data: &[u8]) -> ChunkOut<'_> {
        ChunkOut {
            index: offset / super::super::CHUNK as u64,
            offset,
            data,
            plain_len: data.len(),
            zero: false,
            frame: None,
            unchanged: false,
        }
    }

    #[test]
    fn direct_writes_land_like_buffered_ones_with_unaligned_tails() {
        // In the crate, not /tmp: a tmpfs /tmp refuses O_DIRECT.
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("v");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(4 << 20).unwrap();
        let direct_file = match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                crate::testutil::unavailable("direct sink", &format!("O_DIRECT: {e}"));
                return;
            }
        };
        let dev = NamedFile {
            file: &file,
            name: &path,
        };
        let direct = NamedFile {
            file: &direct_file,
            name: &path,
        };
        let inner = DeviceSink {
            dev: &dev,
            base: 1 << 20,
            limit: 2 << 20,
            exact: false,
        };
        let mut sink = DirectSink::new(inner, Box::new(direct)).unwrap();
        let full: Vec<u8> = (0..super::super::CHUNK).map(|i| (i % 251) as u8).collect();
        let tail: Vec<u8> = (0..4096 * 3 + 512).map(|i| (i % 13) as u8).collect();
        sink.put(&chunk(0, &full)).unwrap();
        sink.put(&chunk(1 << 20, &tail)).unwrap();
        // The pipeline's own buffers are aligned: written without the bounce
        // buffer, the aligned tail as well as the whole chunk.
        let mut aligned = super::super::pool::Aligned::new(super::super::CHUNK);
        aligned.copy_from_slice(&full);
        sink.put(&chunk(0, &aligned)).unwrap();
        aligned[..tail.len()].copy_from_slice(&tail);
        sink.put(&chunk(1 << 20, &aligned[..tail.len()])).unwrap();
        let too_far = sink.put(&chunk((2 << 20) - 512, &tail)).err().unwrap();
        assert_eq!(too_far.exit_code(), 3);
        drop(sink);
        file.sync_all().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[1 << 20..2 << 20] == full[..]);
        assert!(bytes[2 << 20..(2 << 20) + tail.len()] == tail[..]);
        assert!(bytes[..1 << 20].iter().all(|&b| b == 0));
        assert!(bytes[(2 << 20) + tail.len()..].iter().all(|&b| b == 0));
    }
}
