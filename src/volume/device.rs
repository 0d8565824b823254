//! Opening files and block devices, their size, identity and positional I/O.
//!
//! Sizes come from seeking to the end, which works for block devices as well
//! as files (metadata says 0 for a block device). Reads and writes loop over
//! short transfers and retry `Interrupted` (std's `*_exact_at` / `write_all_at`).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// What a path is, as far as identity goes: two paths name the same storage
/// when their identities are equal (hard links, symlinks, device nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    File { dev: u64, ino: u64 },
    Block { rdev: u64 },
    Other { dev: u64, ino: u64 },
}

/// The identity of `path` if it exists.
pub fn identity_of(path: &Path) -> Result<Option<Identity>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(identity(&m))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading the metadata of", path, e)),
    }
}

fn identity(m: &std::fs::Metadata) -> Identity {
    let t = m.file_type();
    if t.is_block_device() {
        Identity::Block { rdev: m.rdev() }
    } else if t.is_file() {
        Identity::File {
            dev: m.dev(),
            ino: m.ino(),
        }
    } else {
        Identity::Other {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// An open volume, plain file or block device.
pub struct Device {
    file: File,
    path: PathBuf,
    size: u64,
    block: bool,
    writable: bool,
    identity: Identity,
}

impl Device {
    /// Open read-only. The source of a backup is only ever opened this way.
    pub fn open_read(path: &Path) -> Result<Device> {
        Self::open(path, false, false)
    }

    /// Open for reading and writing.
    pub fn open_write(path: &Path) -> Result<Device> {
        Self::open(path, true, false)
    }

    /// Open for reading and writing with O_DIRECT where `direct` asks for it.
    pub fn open_write_direct(path: &Path, direct: bool) -> Result<Device> {
        Self::open(path, true, direct)
    }

    fn open(path: &Path, write: bool, direct: bool) -> Result<Device> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(write);
        if direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let mut file = opts.open(path).ctx("opening", path)?;
        let meta = file.metadata().ctx("reading the metadata of", path)?;
        let t = meta.file_type();
        if !(t.is_file() || t.is_block_device()) {
            return Err(Error::usage(format!(
                "{} is neither a regular file nor a block device",
                path.display()
            )));
        }
        let size = file
            .seek(SeekFrom::End(0))
            .ctx("finding the size of", path)?;
        Ok(Device {
            path: path.to_path_buf(),
            size,
            block: t.is_block_device(),
            writable: write,
            identity: identity(&meta),
            file,
        })
    }

    /// Create a new regular file of `size` bytes (sparse) and open it.
    /// Fails if the path exists.
    pub fn create_file(path: &Path, size: u64) -> Result<Device> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .ctx("creating", path)?;
        file.set_len(size).ctx("setting the size of", path)?;
        drop(file);
        Self::open_write(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_block(&self) -> bool {
        self.block
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub fn identity(&self) -> Identity {
        self.identity
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Read exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .ctx("reading", &self.path)
    }

    /// Write all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        debug_assert!(self.writable, "write to a device opened read-only");
        self.file
            .write_all_at(buf, offset)
            .ctx("writing", &self.path)
    }

    /// Flush data and metadata to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().ctx("syncing", &self.path)
    }

    /// Set a regular file's size exactly (grow or shrink).
    pub fn resize(&mut self, size: u64) -> Result<()> {
        if self.block {
            return Err(Error::runtime(format!(
                "internal: {} is a block device and cannot be resized",
                self.path.display()
            )));
        }
        self.file
            .set_len(size)
            .ctx("setting the size of", &self.path)?;
        self.size = size;
        Ok(())
    }

    /// Grow a regular file to `size` (a block device cannot grow).
    pub fn grow_to(&mut self, size: u64) -> Result<()> {
        if self.size >= size {
            return Ok(());
        }
        if self.block {
            return Err(Error::refused(format!(
                "{} is a block device of {} bytes; {} are needed",
                self.path.display(),
                self.size,
                size
            )));
        }
        self.file.set_len(size).ctx("growing", &self.path)?;
        self.size = size;
        Ok(())
    }
}

/// A temporary name beside `path` for a file that is renamed into place only
/// once complete, so that a half-written file never takes the real name.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "evfs".to_string());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Rename a finished temporary file into place and sync the directory, so
/// the rename itself survives a crash.
pub fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).ctx("renaming into place", path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_by_seek_and_positional_io() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        let d = Device::create_file(&p, 1 << 20).unwrap();
        assert_eq!(d.size(), 1 << 20);
        d.write_at(b"hello", 4096).unwrap();
        let mut buf = [0u8; 5];
        d.read_at(&mut buf, 4096).unwrap();
        assert_eq!(&buf, b"hello");
        let mut past = [0u8; 8];
        assert!(d.read_at(&mut past, (1 << 20) - 4).is_err());
        assert!(Device::create_file(&p, 1).is_err());
    }

    #[test]
    fn hard_links_and_symlinks_have_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, b"x").unwrap();
        std::fs::hard_link(&p, dir.path().join("h")).unwrap();
        std::os::unix::fs::symlink(&p, dir.path().join("s")).unwrap();
        let id = identity_of(&p).unwrap();
        assert_eq!(identity_of(&dir.path().join("h")).unwrap(), id);
        assert_eq!(identity_of(&dir.path().join("s")).unwrap(), id);
        assert_eq!(identity_of(&dir.path().join("none")).unwrap(), None);
    }
}
