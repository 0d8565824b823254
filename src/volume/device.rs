//! Opening files and block devices, their size, identity and positional I/O.
//!
//! Sizes come from seeking to the end, which works for block devices as well
//! as files (metadata says 0 for a block device). Reads and writes loop over
//! short transfers and retry `Interrupted` (std's `*_exact_at` / `write_all_at`).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::identity::{Storage, kind_name};
use super::lock::{self, StorageLock};
use crate::error::{Error, IoContext, Result};

/// What a path is, as far as the device node or inode goes (see
/// [`super::identity`] for whether two names reach the same storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A regular file.
    File {
        /// The device number of its file system.
        dev: u64,
        /// Its inode number.
        ino: u64,
    },
    /// A block device.
    Block {
        /// Its device number (major and minor).
        rdev: u64,
    },
    /// Anything else (a FIFO, a character device, a socket).
    Other {
        /// The device number of its file system.
        dev: u64,
        /// Its inode number.
        ino: u64,
    },
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

/// An open volume, plain file or block device, and the lock on its
/// storage once [`Device::lock`] took it (held as long as the device).
pub struct Device {
    file: File,
    path: PathBuf,
    /// Bytes; a regular file's size changes through [`Device::resize`],
    /// which a writer may call while sinks hold the device.
    size: AtomicU64,
    block: bool,
    writable: bool,
    identity: Identity,
    /// Where to open it again (`--direct`): the path, or for an unnamed
    /// temporary file its `/proc/self/fd` link.
    reopen: PathBuf,
    lock: Option<StorageLock>,
}

/// Refuse what is not a volume (a FIFO, a character device, a directory,
/// ...) with exit 2, naming what it is.
pub fn not_a_volume(path: &Path, t: std::fs::FileType) -> Error {
    Error::usage(format!(
        "{} is {}, not a volume: a volume is a regular file or a block device",
        path.display(),
        kind_name(t)
    ))
}

/// Check, without opening it, that `path` is a regular file or a block
/// device where it exists: opening a FIFO would wait for a writer forever.
/// Returns whether it exists.
pub fn require_volume_kind(path: &Path) -> Result<bool> {
    Ok(volume_metadata(path)?.is_some())
}

/// The metadata of the regular file or block device at `path`, `None` where
/// nothing is there, exit 2 for anything else.
fn volume_metadata(path: &Path) -> Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_file() || m.file_type().is_block_device() => Ok(Some(m)),
        Ok(m) => Err(not_a_volume(path, m.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading the metadata of", path, e)),
    }
}

impl Device {
    /// Open read-only. The source of a backup is only ever opened this way.
    pub fn open_read(path: &Path) -> Result<Device> {
        Self::open(path, false)
    }

    /// Open for reading and writing.
    pub fn open_write(path: &Path) -> Result<Device> {
        Self::open(path, true)
    }

    /// Open a regular file or block device, after checking its kind (a
    /// FIFO or character device is refused at once, not opened). A block
    /// device opened for writing is opened with O_EXCL, so that the kernel
    /// refuses one that is mounted or held by another program.
    /// O_NONBLOCK covers the race of a FIFO put in its place after the
    /// check; it is cleared once the file is known to be a volume.
    fn open(path: &Path, write: bool) -> Result<Device> {
        let block = volume_metadata(path)?.is_some_and(|m| m.file_type().is_block_device());
        let mut flags = libc::O_NONBLOCK;
        if write && block {
            flags |= libc::O_EXCL;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => busy_device(path),
                _ => Error::io("opening", path, e),
            })?;
        let dev = Self::from_file(file, path, write, path.to_path_buf())?;
        let status = rustix::fs::fcntl_getfl(&dev.file)
            .and_then(|f| rustix::fs::fcntl_setfl(&dev.file, f - rustix::fs::OFlags::NONBLOCK));
        status.map_err(|e| Error::io("opening", path, e.into()))?;
        Ok(dev)
    }

    /// A device over an open file, named `path` in messages and opened
    /// again through `reopen`.
    fn from_file(mut file: File, path: &Path, write: bool, reopen: PathBuf) -> Result<Device> {
        let meta = file.metadata().ctx("reading the metadata of", path)?;
        let t = meta.file_type();
        if !(t.is_file() || t.is_block_device()) {
            return Err(not_a_volume(path, t));
        }
        let size = file
            .seek(SeekFrom::End(0))
            .ctx("finding the size of", path)?;
        Ok(Device {
            path: path.to_path_buf(),
            size: AtomicU64::new(size),
            block: t.is_block_device(),
            writable: write,
            identity: identity(&meta),
            reopen,
            lock: None,
            file,
        })
    }

    /// A device over the temporary file of a [`super::partial::Partial`],
    /// named after the file it becomes.
    pub fn over_partial(partial: &super::partial::Partial) -> Result<Device> {
        let file = partial
            .file()
            .try_clone()
            .ctx("duplicating the descriptor of", partial.path())?;
        Self::from_file(file, partial.path(), true, partial.reopen_path())
    }

    /// The same file or device opened a second time for writing with
    /// O_DIRECT (`--direct`). Not with O_EXCL: this descriptor is a second
    /// one of the process that holds the device.
    pub fn reopen_direct(&self) -> Result<Device> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.reopen)
            .ctx("opening", &self.path)?;
        let dev = Self::from_file(file, &self.path, true, self.reopen.clone())?;
        if dev.identity != self.identity {
            return Err(Error::runtime(format!(
                "{} changed while it was opened",
                self.path.display()
            )));
        }
        Ok(dev)
    }

    /// The storage this device reaches (see [`super::identity`]).
    pub fn storage(&self) -> Result<Storage> {
        Storage::of_file(&self.file, &self.path.display().to_string())
    }

    /// Lock the storage shared (readers) or `exclusive` (writers), for as
    /// long as this device is open; exit 1 naming the holder when another
    /// process holds a conflicting lock through any name.
    pub fn lock(&mut self, exclusive: bool, purpose: &str) -> Result<()> {
        let storage = self.storage()?;
        self.lock = Some(lock::lock(
            &storage,
            &self.file,
            self.writable,
            &self.path,
            exclusive,
            purpose,
        )?);
        Ok(())
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
        if let Err(e) = file.set_len(size) {
            // Nothing of a file that could not get its size stays behind.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(Error::io("setting the size of", path, e));
        }
        Self::from_file(file, path, true, path.to_path_buf())
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Whether it is a block device (else a regular file).
    pub fn is_block(&self) -> bool {
        self.block
    }

    /// Whether it was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// What it is, by device and inode number.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The open file, for positional I/O of its own.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A path that opens this file or device again (the path, or for an
    /// unnamed temporary file its `/proc/self/fd` link).
    pub fn file_path(&self) -> &Path {
        &self.reopen
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
    pub fn resize(&self, size: u64) -> Result<()> {
        if self.block {
            return Err(Error::runtime(format!(
                "internal: {} is a block device and cannot be resized",
                self.path.display()
            )));
        }
        self.file
            .set_len(size)
            .ctx("setting the size of", &self.path)?;
        self.size.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// Grow a regular file to `size` (a block device cannot grow).
    pub fn grow_to(&self, size: u64) -> Result<()> {
        if self.size() >= size {
            return Ok(());
        }
        if self.block {
            return Err(Error::refused(format!(
                "{} is a block device of {} bytes; {} are needed",
                self.path.display(),
                self.size(),
                size
            )));
        }
        self.file.set_len(size).ctx("growing", &self.path)?;
        self.size.store(size, Ordering::Relaxed);
        Ok(())
    }
}

/// The kernel refused exclusive access to a block device: an evfs that
/// holds it is named; otherwise it is mounted or held by another program.
fn busy_device(path: &Path) -> Error {
    if let Err(e) = lock::probe(path, "write it") {
        return e;
    }
    Error::runtime(format!(
        "{} is mounted or in use by another program (the kernel refused exclusive access)",
        path.display()
    ))
    .with_hint("unmount it, or stop what holds it (a file system, a mapping, a loop device, another writer), then try again")
}

impl crate::positional::WriteAt for Device {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        Device::write_at(self, buf, offset)
    }

    fn name(&self) -> &Path {
        &self.path
    }
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
    fn fifos_and_character_devices_are_refused_without_opening_them() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from(0o600)).unwrap();
        // Opening it would block: the kind is checked first.
        for write in [false, true] {
            let e = Device::open(&fifo, write).err().unwrap();
            assert_eq!(e.exit_code(), 2);
            assert!(
                e.to_string()
                    .contains("is a FIFO (named pipe), not a volume"),
                "{e}"
            );
        }
        let e = Device::open_read(Path::new("/dev/null")).err().unwrap();
        assert!(
            e.to_string()
                .contains("/dev/null is a character device, not a volume"),
            "{e}"
        );
        let e = Device::open_read(dir.path()).err().unwrap();
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert!(!require_volume_kind(&dir.path().join("none")).unwrap());
    }

    #[test]
    fn a_file_that_cannot_get_its_size_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge");
        // Past what any file system takes (i64::MAX is the limit of off_t).
        assert!(Device::create_file(&p, u64::MAX).is_err());
        assert!(!p.exists());
    }

    #[test]
    fn a_lock_lives_as_long_as_its_device() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        let mut d = Device::create_file(&p, 4096).unwrap();
        d.lock(true, "write it").unwrap();
        let mut r = Device::open_read(&p).unwrap();
        assert_eq!(r.lock(false, "read it").err().unwrap().exit_code(), 1);
        drop(d);
        // Another test of this process that forks a child while `d` is
        // open shares its open file description until the child's exec
        // closes it (O_CLOEXEC): the lock goes with the last reference.
        let mut tries = 0;
        while let Err(e) = r.lock(false, "read it") {
            tries += 1;
            assert!(tries < 200, "the lock outlived its device: {e}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
