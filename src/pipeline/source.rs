//! Where a pipeline's input comes from: a mapped file or block device (in
//! windows, so that what was read leaves memory again), or any reader such as
//! stdin (large reads into pooled buffers).

// Memory maps of the source and the SIGBUS handler that guards them need
// `unsafe`; each use says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use memmap2::{Advice, Mmap, MmapOptions};

use super::pool::{Pool, PooledBuf};
use crate::error::{Error, Result};

/// Bytes mapped at a time. Chunks hold the window alive; it is unmapped when
/// the last chunk of it has been written, which bounds what a whole-volume
/// read adds to the resident set.
const WINDOW: usize = 16 << 20;

/// One chunk of input.
pub enum Input {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Owned {
        buf: PooledBuf,
        len: usize,
    },
}

impl Input {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Input::Mapped { map, start, len } => &map[*start..*start + *len],
            Input::Owned { buf, len } => &buf[..*len],
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Input::Mapped { len, .. } | Input::Owned { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A source of chunks, driven by the pipeline's reader thread.
pub trait Source: Send {
    /// Total bytes, when known in advance.
    fn total(&self) -> Option<u64>;
    /// The next chunk of at most `max` bytes, or `None` at the end.
    fn next(&mut self, max: usize) -> Result<Option<Input>>;
}

/// A byte range of a file or block device, read through memory maps.
pub struct MappedSource {
    file: File,
    path: PathBuf,
    start: u64,
    len: u64,
    pos: u64,
    window: Option<(Arc<Mmap>, u64)>,
}

impl MappedSource {
    /// Read `len` bytes from `start` (a multiple of the page size) of `file`.
    pub fn new(file: File, path: PathBuf, start: u64, len: u64) -> Self {
        MappedSource {
            file,
            path,
            start,
            len,
            pos: 0,
            window: None,
        }
    }

    /// Skip the first `bytes` (a multiple of the window alignment) without reading them.
    pub fn skip(&mut self, bytes: u64) {
        self.pos = bytes.min(self.len);
        self.window = None;
    }

    fn map_window(&mut self) -> Result<(Arc<Mmap>, u64)> {
        let at = self.pos - self.pos % WINDOW as u64;
        let len = (self.len - at).min(WINDOW as u64) as usize;
        // SAFETY: the mapping is read-only and private to this process. Another
        // process writing the file while we read it changes what we read
        // (as with read(2)), but cannot break memory safety for plain bytes.
        let map = unsafe {
            MmapOptions::new()
                .offset(self.start + at)
                .len(len)
                .populate()
                .map(&self.file)
        }
        .map_err(|e| Error::io("mapping", &self.path, e))?;
        // Fault the window in now: a page that cannot be read (an I/O error,
        // or a file that shrank since it was opened) is then an error here
        // instead of a SIGBUS when a worker touches it. Kernels before 5.14
        // answer EINVAL and leave it to the SIGBUS guard.
        match map.advise(Advice::PopulateRead) {
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                return Err(Error::io(
                    "reading",
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "it ends before the range being read (it shrank, or is truncated)",
                    ),
                ));
            }
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                return Err(Error::io("reading", &self.path, e));
            }
            _ => {}
        }
        let _ = map.advise(Advice::Sequential);
        Ok((Arc::new(map), at))
    }
}

impl Source for MappedSource {
    fn total(&self) -> Option<u64> {
        Some(self.len)
    }

    fn next(&mut self, max: usize) -> Result<Option<Input>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let (map, at) = match &self.window {
            Some((map, at)) if self.pos < at + map.len() as u64 => (map.clone(), *at),
            _ => {
                let w = self.map_window()?;
                self.window = Some((w.0.clone(), w.1));
                w
            }
        };
        let start = (self.pos - at) as usize;
        let len = (map.len() - start).min(max);
        self.pos += len as u64;
        Ok(Some(Input::Mapped { map, start, len }))
    }
}

/// Make a SIGBUS (a mapped page that cannot be read any more: the file shrank
/// after the window was faulted in, or an I/O error on a page that was
/// evicted) end the process with a message and exit 1 instead of killing it
/// without a word. A target being written stays dirty, as after any crash.
/// The handler makes only async-signal-safe calls (write, _exit).
pub fn install_sigbus_guard() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
    // the handler is an `extern "C" fn(c_int)` that only calls
    // async-signal-safe functions, and sigaction gets valid pointers.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

extern "C" fn on_sigbus(_signal: libc::c_int) {
    const MESSAGE: &[u8] = b"evfs: a mapped input could not be read (an I/O error, or the file shrank while it was read); stopped\nhint: a target being written is left dirty; check the source, then run the job again\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; MESSAGE is static.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(1);
    }
}

/// Any reader (stdin, a pipe), read in large pieces into pooled buffers.
pub struct ReaderSource<R: Read + Send> {
    reader: R,
    name: String,
    total: Option<u64>,
    pool: Pool,
    done: bool,
}

impl<R: Read + Send> ReaderSource<R> {
    /// `buffers` buffers of `size` bytes are allocated once and reused.
    pub fn new(reader: R, name: &str, total: Option<u64>, buffers: usize, size: usize) -> Self {
        ReaderSource {
            reader,
            name: name.to_string(),
            total,
            pool: Pool::new(buffers, size),
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
        Ok(Some(Input::Owned { buf, len }))
    }
}
