//! Where a pipeline's input comes from: a byte range of a file or block
//! device (positional reads), or any reader such as stdin (large reads).
//! Either way the bytes land in page-aligned pooled buffers, which the
//! workers then transform in place.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::pool::{Aligned, Pool, PooledBuf};
use crate::error::{Error, Result};

/// One chunk of input: the first `len` bytes of a pooled, page-aligned
/// buffer that the chunk owns, so that the workers can transform it in
/// place (the buffer is [`CHUNK`](super::CHUNK) bytes, room for the
/// padding of a last sector).
pub struct Input {
    buf: PooledBuf<Aligned>,
    len: usize,
}

impl Input {
    /// The chunk's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The whole buffer, for transforming the chunk in place.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The whole buffer.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }
}

/// A source of chunks, driven by the pipeline's reader thread.
pub trait Source: Send {
    /// Total bytes, when known in advance.
    #[allow(
        dead_code,
        reason = "read only by the unit tests (found when its users became pub(crate))"
    )]
    fn total(&self) -> Option<u64>;
    /// The next chunk of at most `max` bytes, or `None` at the end.
    fn next(&mut self, max: usize) -> Result<Option<Input>>;
}

/// Buffers a source of `threads` workers needs so that none of them waits
/// for one: twice the workers in the queue, one per worker, and two more
/// (the one being filled and the one being written), as the pipeline's own
/// bound.
pub fn buffers_for(threads: usize) -> usize {
    threads.max(1) * 3 + 2
}

/// A byte range of a file or block device, read in order with positional
/// reads into pooled buffers; exactly `len` bytes, or an error.
///
/// Reading beats mapping here: faulting pages into a map and unmapping them
/// costs the kernel as much as copying them, and the copy lands in a buffer
/// the workers may write (decrypt in place, no second buffer) and that is
/// still in the cache when they do. A file that shrinks while it is read is
/// an error, never a SIGBUS.
pub struct FileSource {
    file: File,
    path: PathBuf,
    start: u64,
    len: u64,
    pos: u64,
    buffers: usize,
    pool: Option<Pool<Aligned>>,
}

impl FileSource {
    /// Read `len` bytes from `start` of `file`, with buffers for as many
    /// workers as this machine has cores.
    pub fn new(file: File, path: PathBuf, start: u64, len: u64) -> Self {
        // The kernel reads ahead twice as far for a file read in order.
        let _ = rustix::fs::fadvise(
            &file,
            start,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::Sequential,
        );
        FileSource {
            file,
            path,
            start,
            len,
            pos: 0,
            buffers: buffers_for(super::Plan::default_threads()),
            pool: None,
        }
    }

    /// Hold `count` buffers (at least one) instead: see [`buffers_for`].
    pub fn buffers(mut self, count: usize) -> Self {
        self.buffers = count.max(1);
        self
    }

    /// Skip the first `bytes` without reading them.
    pub fn skip(&mut self, bytes: u64) {
        self.pos = bytes.min(self.len);
    }
}

impl Source for FileSource {
    fn total(&self) -> Option<u64> {
        Some(self.len)
    }

    fn next(&mut self, max: usize) -> Result<Option<Input>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let pool = self
            .pool
            .get_or_insert_with(|| Pool::aligned(self.buffers, super::CHUNK));
        let mut buf = pool.take()?;
        let len = (self.len - self.pos).min(max.min(buf.len()) as u64) as usize;
        self.file
            .read_exact_at(&mut buf[..len], self.start + self.pos)
            .map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => Error::io(
                    "reading",
                    &self.path,
                    std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "it ends before the range being read (it shrank, or is truncated)",
                    ),
                ),
                _ => Error::io("reading", &self.path, e),
            })?;
        self.pos += len as u64;
        Ok(Some(Input { buf, len }))
    }
}

/// Any reader (stdin, a pipe), read in large pieces into pooled buffers.
pub struct ReaderSource<R: Read + Send> {
    reader: R,
    name: String,
    #[allow(
        dead_code,
        reason = "read only by the unit tests (found when its users became pub(crate))"
    )]
    total: Option<u64>,
    pool: Pool<Aligned>,
    done: bool,
}

impl<R: Read + Send> ReaderSource<R> {
    /// `buffers` buffers of `size` bytes are allocated once and reused.
    pub fn new(reader: R, name: &str, total: Option<u64>, buffers: usize, size: usize) -> Self {
        ReaderSource {
            reader,
            name: name.to_string(),
            total,
            pool: Pool::aligned(buffers, size),
            done: false,
        }
    }
}

impl<R: Read + Send> Source for ReaderSource<R> {
    fn total(&self) -> Option<u64> {
        self.total
    }

    fn next(&mut self, max: usize) -> Result<Option<Input>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = self.pool.take()?;
        let want = max.min(buf.len());
        let mut len = 0;
        while len < want {
            match self.reader.read(&mut buf[len..want]) {
                Ok(0) => {
                    self.done = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading", &self.name, e)),
            }
        }
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(Input { buf, len }))
    }
}
