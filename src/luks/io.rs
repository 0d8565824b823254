//! The module's only contact with storage: positional reads through
//! [`ReadAt`], and writes described as a [`Plan`] of steps that a caller runs
//! through [`WriteAt`]. Nothing here opens devices or decides on paths, so
//! the format code works the same on a block device, an image file or a
//! buffer in a test.
//!
//! Also the key-file reader, with cryptsetup's semantics.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::error::{LuksError, Result};
use crate::crypto::Passphrase;

/// Positional reads of a device, an image file or a buffer.
pub trait ReadAt {
    /// Fill `buf` from byte offset `off`; a short read is an error
    /// (`UnexpectedEof`).
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Size in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        // `read_exact_at` loops on short reads and retries `Interrupted`.
        self.read_exact_at(buf, off)
    }

    fn size(&self) -> io::Result<u64> {
        // Seeking to the end works for block devices too, whose metadata
        // length is 0; positional reads do not use the file position.
        use std::io::{Seek, SeekFrom};
        let mut f = self;
        f.seek(SeekFrom::End(0))
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let start = usize::try_from(off).ok();
        let src = start
            .and_then(|s| s.checked_add(buf.len()).map(|e| (s, e)))
            .and_then(|(s, e)| self.get(s..e))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read beyond the end of the buffer",
                )
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.as_slice().read_at(buf, off)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// Positional writes, for running a [`Plan`].
pub trait WriteAt {
    /// Write all of `buf` at byte offset `off`.
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Make what was written durable before the next step.
    fn sync(&mut self) -> io::Result<()>;
}

impl WriteAt for File {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.write_all_at(buf, off)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

impl WriteAt for Vec<u8> {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        let start = usize::try_from(off)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        if self.len() < end {
            self.resize(end, 0);
        }
        self[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One step of a [`Plan`].
pub enum Step {
    /// Write these bytes at this offset.
    Write {
        /// Byte offset from the start of the device.
        offset: u64,
        /// The bytes to write.
        bytes: Vec<u8>,
    },
    /// Overwrite `len` bytes at `offset` with random data: old key material
    /// in a keyslot area is destroyed this way, as cryptsetup does.
    Random {
        /// Byte offset from the start of the device.
        offset: u64,
        /// Bytes to overwrite.
        len: u64,
    },
    /// Make everything written so far durable before going on (the order of
    /// header copies is what keeps one of them valid at every moment).
    Sync,
}

/// The writes of one header change, in the order they must happen: run the
/// steps one after another, each to completion, syncing where told.
#[must_use = "a plan does nothing until it is applied"]
pub struct Plan {
    steps: Vec<Step>,
    /// The LUKS2 header (UUID, seqid) the plan was made from, when it
    /// updates one: see [`Plan::check`].
    made_from: Option<(String, u64)>,
}

/// Random data is produced and written in chunks of this size.
const RANDOM_CHUNK: usize = 1 << 20;

impl Plan {
    pub(crate) fn new() -> Plan {
        Plan {
            steps: Vec::new(),
            made_from: None,
        }
    }

    pub(crate) fn made_from(&mut self, uuid: &str, seqid: u64) {
        self.made_from = Some((uuid.to_string(), seqid));
    }

    /// The header this update was computed from: its UUID and seqid.
    pub(crate) fn base(&self) -> Option<&(String, u64)> {
        self.made_from.as_ref()
    }

    pub(crate) fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The steps, taken out.
    pub(crate) fn into_steps(self) -> Vec<Step> {
        self.steps
    }

    /// The byte range `[start, end)` the plan touches (`None` if it writes
    /// nothing): the device must be at least `end` bytes.
    pub fn extent(&self) -> Option<(u64, u64)> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Write { offset, bytes } => Some((*offset, offset + bytes.len() as u64)),
                Step::Random { offset, len } => Some((*offset, offset + len)),
                Step::Sync => None,
            })
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }

    /// Run every step on `dev`, random data from the operating system's
    /// CSPRNG in bounded chunks.
    pub fn apply(&self, dev: &mut (impl WriteAt + ?Sized)) -> Result<()> {
        for step in &self.steps {
            match step {
                Step::Write { offset, bytes } => dev.write_at(bytes, *offset)?,
                Step::Random { offset, len } => {
                    let mut chunk = vec![0u8; RANDOM_CHUNK.min(*len as usize)];
                    let mut done = 0u64;
                    while done < *len {
                        let n = (*len - done).min(chunk.len() as u64) as usize;
                        getrandom::fill(&mut chunk[..n]).map_err(|e| {
                            LuksError::Io(io::Error::other(format!("no randomness: {e}")))
                        })?;
                        dev.write_at(&chunk[..n], offset + done)?;
                        done += n as u64;
                    }
                }
                Step::Sync => dev.sync()?,
            }
        }
        Ok(())
    }
}

/// Largest key file read whole: cryptsetup's compiled-in default
/// (`Maximum keyfile size: 8192kB` without `--keyfile-size`).
pub const KEY_FILE_MAX: usize = 8192 * 1024;

/// Read a key file the way cryptsetup does without `--keyfile-size` and
/// `--keyfile-offset`: the whole file is the key, a trailing newline
/// included, and a file larger than [`KEY_FILE_MAX`] is refused.
pub fn read_key_file(path: &Path) -> Result<Passphrase> {
    let file = File::open(path)?;
    read_key(file)
}

/// [`read_key_file`] for an already open source (a pipe, standard input).
pub fn read_key(mut source: impl Read) -> Result<Passphrase> {
    // Grow by copying into a fresh zeroizing buffer rather than letting a
    // `Vec` reallocate, which would leave copies of the key in freed memory.
    let mut key = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let n = match source.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if key.len() + n > KEY_FILE_MAX {
            return Err(LuksError::Invalid(format!(
                "the key file is larger than {} KiB, cryptsetup's limit for a whole-file key",
                KEY_FILE_MAX / 1024
            )));
        }
        if key.len() + n > key.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (key.capacity() * 2).max(key.len() + n).min(KEY_FILE_MAX),
            ));
            bigger.extend_from_slice(&key);
            key = bigger;
        }
        key.extend_from_slice(&chunk[..n]);
    }
    Ok(Passphrase::new(std::mem::take(&mut *key)))
}
