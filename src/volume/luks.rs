//! LUKS volumes as storage: the LUKS format layer ([`crate::luks`]) reads
//! and writes through a [`Device`], its errors become evfs's exit codes, and
//! every header change honours cryptsetup's metadata lock.
//!
//! A [`LuksVolume`] is a data device and the header that describes it: on
//! the device itself, or in a detached header file (cryptsetup's
//! `--header`). Header changes go through [`LuksVolume::update`], which
//! takes cryptsetup's write lock, reads the header again under it, lets the
//! caller compute the change, checks that the header on disk is still the
//! one the change was made from, and writes it in the format layer's order.
//!
//! ## cryptsetup's metadata lock
//!
//! cryptsetup (`lib/utils_device_locking.c`) serializes LUKS2 metadata
//! access between processes with BSD `flock(2)` locks, shared to read and
//! exclusive to write:
//!
//! * on an **image file**, the lock is taken on the file itself;
//! * on a **block device**, on the file `/run/cryptsetup/L_<major>:<minor>`
//!   (the directory made `0700` and the file `0644` when missing); the last
//!   holder removes the file, so a lock taken on a file that was removed
//!   meanwhile is taken again.
//!
//! evfs does the same, around every header read it bases a change on and
//! every header write ([`MetadataLock`]). cryptsetup waits for the lock
//! without limit; evfs waits at most [`LOCK_WAIT`] and then fails (exit 1)
//! naming the holder's kind. These locks are independent of evfs's own
//! storage locks (`F_OFD_SETLK` byte ranges, see [`super::lock`]), which keep
//! other evfs processes away for the whole run.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use super::device::Device;
use crate::error::{Error, Result};
use crate::luks::{self, DataArea, Header, Luks2Header, LuksError, Plan};

impl luks::ReadAt for Device {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.file().read_exact_at(buf, off)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(Device::size(self))
    }
}

impl luks::WriteAt for Device {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file().write_all_at(buf, off)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file().sync_data()
    }
}

/// A LUKS error without the path it happened on (prefer [`luks_error`]).
impl From<LuksError> for Error {
    fn from(e: LuksError) -> Error {
        convert(None, e)
    }
}

/// A LUKS error on `path`, as evfs's error with its exit code:
///
/// * not LUKS where a LUKS volume is needed: 2 (a wrong kind of argument);
/// * a damaged header: 5;
/// * a LUKS volume or keyslot evfs does not handle: 3, saying why;
/// * no keyslot opened (a wrong passphrase or key file, or a damaged
///   keyslot: the two look the same), or no usable keyslot: 4;
/// * a request that does not fit the header: 2;
/// * I/O: 1.
pub fn luks_error(path: &Path, e: LuksError) -> Error {
    convert(Some(path), e)
}

fn convert(path: Option<&Path>, e: LuksError) -> Error {
    let at = path.map_or_else(String::new, |p| format!("{}: ", p.display()));
    match e {
        LuksError::NotLuks => Error::usage(format!("{at}not a LUKS volume (no LUKS header)")),
        LuksError::Damaged(why) => Error::integrity(format!("{at}damaged LUKS header: {why}"))
            .with_hint(
                "restore a header backup (cryptsetup luksHeaderRestore), or let cryptsetup repair it (cryptsetup repair)",
            ),
        LuksError::Unsupported(why) if why.contains(luks::REQUIREMENT_INCOMPLETE) => {
            Error::refused(format!("{at}unsupported LUKS volume: {why}")).with_hint(
                "an evfs backup into it was interrupted: run it again to complete the volume",
            )
        }
        LuksError::Unsupported(why) => {
            Error::refused(format!("{at}unsupported LUKS volume: {why}")).with_hint(
                "evfs reads LUKS1 and LUKS2 volumes with aes-xts-plain64 (LUKS1 also aes-cbc-essiv:sha256), one data segment, no integrity, and no reencryption in progress",
            )
        }
        LuksError::WrongPassphrase => Error::access(format!(
            "{at}no LUKS keyslot opened: the passphrase or key file is wrong, or the keyslot is damaged (the two cannot be told apart: both fail the key digest)"
        ))
        .with_hint(
            "check the passphrase (a key file is used whole, a trailing newline included); `cryptsetup open --test-passphrase` answers the same; a damaged keyslot area needs a header backup (cryptsetup luksHeaderRestore)",
        ),
        LuksError::NoKeyslot(why) => Error::access(format!("{at}no usable LUKS keyslot: {why}")),
        LuksError::Invalid(why) => Error::usage(format!("{at}{why}")),
        LuksError::Io(e) => match path {
            Some(p) => Error::io("reading or writing the LUKS header of", p, e),
            None => Error::io("reading or writing", "the LUKS device", e),
        },
    }
}

/// Longest wait for cryptsetup's metadata lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Where cryptsetup keeps the lock files of block devices.
const LOCK_DIR: &str = "/run/cryptsetup";

/// cryptsetup's metadata lock on a LUKS device (see the module notes), held
/// until dropped.
pub struct MetadataLock {
    file: File,
    /// The lock file of a block device, removed on release when no one
    /// else holds it (as cryptsetup does).
    lock_file: Option<PathBuf>,
}

impl MetadataLock {
    /// Take the lock of `dev` shared (to read) or `exclusive` (to write).
    pub fn take(dev: &Device, exclusive: bool) -> Result<MetadataLock> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let (file, lock_file) = if dev.is_block() {
                let rdev = dev
                    .file()
                    .metadata()
                    .map_err(|e| Error::io("reading the metadata of", dev.path(), e))?
                    .rdev();
                let path = PathBuf::from(format!(
                    "{LOCK_DIR}/L_{}:{}",
                    rustix::fs::major(rdev),
                    rustix::fs::minor(rdev)
                ));
                (open_lock_file(&path)?, Some(path))
            } else {
                // A descriptor of its own: flock locks belong to the open
                // file description, and the device's may be shared.
                let file = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(dev.file_path())
                    .map_err(|e| Error::io("opening", dev.path(), e))?;
                (file, None)
            };
            let op = if exclusive {
                FlockOperation::NonBlockingLockExclusive
            } else {
                FlockOperation::NonBlockingLockShared
            };
            match rustix::fs::flock(&file, op) {
                Ok(()) => {
                    let lock = MetadataLock { file, lock_file };
                    // The last holder of a block device's lock removes its
                    // file: a lock on a removed file locks nothing.
                    if lock.still_current() {
                        return Ok(lock);
                    }
                    continue;
                }
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(Error::runtime(format!(
                        "{}: its LUKS metadata is locked by another program (cryptsetup, or another LUKS tool) for more than {} s",
                        dev.path().display(),
                        LOCK_WAIT.as_secs()
                    ))
                    .with_hint("wait for that program to finish, then try again"));
                }
                Err(e) => return Err(Error::io("locking", dev.path(), e.into())),
            }
        }
    }

    fn still_current(&self) -> bool {
        let Some(path) = &self.lock_file else {
            return true;
        };
        match (self.file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

impl Drop for MetadataLock {
    fn drop(&mut self) {
        // As cryptsetup's release_lock_handle: whoever can take the lock
        // alone removes the block device's lock file.
        if self.lock_file.is_some()
            && rustix::fs::flock(&self.file, FlockOperation::NonBlockingLockExclusive).is_ok()
            && self.still_current()
            && let Some(path) = &self.lock_file
        {
            let _ = std::fs::remove_file(path);
        }
        let _ = rustix::fs::flock(&self.file, FlockOperation::Unlock);
    }
}

/// Open (creating) a block device's lock file under [`LOCK_DIR`].
fn open_lock_file(path: &Path) -> Result<File> {
    let dir = Path::new(LOCK_DIR);
    if !dir.is_dir() {
        let made = std::fs::DirBuilder::new().mode(0o700).create(dir);
        if let Err(e) = made
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(Error::io("creating cryptsetup's lock directory", dir, e));
        }
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("opening cryptsetup's lock file", path, e))
}

/// An open LUKS volume: its data device, a detached header file if it has
/// one, and the header as read.
pub struct LuksVolume {
    /// The device holding the data (and the header, unless detached).
    pub dev: Device,
    /// A detached header (`--luks-header FILE`).
    detached: Option<Device>,
    /// The LUKS header as read.
    pub header: Header,
}

impl LuksVolume {
    /// Open `path` (read-only unless `write`) and read its LUKS header, or
    /// the one in `header` (a detached header file). Exit 2 when there is
    /// none; 5 when it is damaged.
    pub fn open(path: &Path, header: Option<&Path>, write: bool) -> Result<LuksVolume> {
        let dev = if write {
            Device::open_write(path)?
        } else {
            Device::open_read(path)?
        };
        match Self::from_device(dev, header, write)? {
            Ok(v) => Ok(v),
            Err(dev) => Err(Error::usage(format!(
                "{} is not a LUKS volume (no LUKS header)",
                dev.path().display()
            ))),
        }
    }

    /// The LUKS volume on `dev` (or described by the detached `header`
    /// file), or the device back when it holds no LUKS header. A detached
    /// header that is not LUKS is an error.
    pub fn from_device(
        dev: Device,
        header: Option<&Path>,
        write: bool,
    ) -> Result<std::result::Result<LuksVolume, Device>> {
        let detached = match header {
            Some(h) => Some(if write {
                Device::open_write(h)?
            } else {
                Device::open_read(h)?
            }),
            None => None,
        };
        let read = {
            let hdev = detached.as_ref().unwrap_or(&dev);
            let _shared = MetadataLock::take(hdev, false)?;
            Header::read(hdev)
        };
        match read {
            Ok(header) => Ok(Ok(LuksVolume {
                dev,
                detached,
                header,
            })),
            Err(LuksError::NotLuks) if detached.is_none() => Ok(Err(dev)),
            Err(e) => {
                let p = detached.as_ref().map_or(dev.path(), |d| d.path());
                Err(luks_error(p, e))
            }
        }
    }

    /// The LUKS volume at `path` (read-only), or `None` when `path` holds
    /// something else: an EVFS volume (EMD magic at its start), a stream,
    /// plain data. With a detached `header`, the volume must be LUKS.
    pub fn probe(path: &Path, header: Option<&Path>) -> Result<Option<LuksVolume>> {
        let dev = Device::open_read(path)?;
        if header.is_none()
            && matches!(
                super::sniff::kind_of_device(&dev)?,
                super::sniff::Kind::Volume | super::sniff::Kind::Stream
            )
        {
            return Ok(None);
        }
        Ok(Self::from_device(dev, header, false)?.ok())
    }

    /// The path of the data device, as given.
    pub fn path(&self) -> &Path {
        self.dev.path()
    }

    /// The device the header lives on (the detached header file, or the
    /// data device).
    pub fn header_device(&self) -> &Device {
        self.detached.as_ref().unwrap_or(&self.dev)
    }

    /// Whether the header is in a file of its own.
    pub fn is_detached(&self) -> bool {
        self.detached.is_some()
    }

    /// `"luks1"` or `"luks2"`.
    pub fn format_name(&self) -> &'static str {
        match self.header {
            Header::Luks1(_) => "luks1",
            Header::Luks2(_) => "luks2",
        }
    }

    /// The data area, or exit 3 saying why evfs cannot read it.
    pub fn data_area(&self) -> Result<DataArea> {
        self.header
            .data_area()
            .map_err(|e| luks_error(self.path(), e))
    }

    /// Bytes of data (whole sectors) the data area holds on this device.
    pub fn data_size(&self, area: &DataArea) -> u64 {
        area.data_size(self.dev.size())
    }

    /// Lock the storage of the data device (and of a detached header) as
    /// [`Device::lock`] does.
    pub fn lock(&mut self, exclusive: bool, purpose: &str) -> Result<()> {
        self.dev.lock(exclusive, purpose)?;
        self.lock_header(exclusive, purpose)
    }

    /// Lock a detached header's storage only (the data device is locked
    /// already).
    pub fn lock_header(&mut self, exclusive: bool, purpose: &str) -> Result<()> {
        if let Some(h) = &mut self.detached {
            h.lock(exclusive, purpose)?;
        }
        Ok(())
    }

    /// Read the header again (after taking evfs's lock, say).
    pub fn reread(&mut self) -> Result<()> {
        let hdev = self.header_device();
        let _shared = MetadataLock::take(hdev, false)?;
        self.header = Header::read(hdev).map_err(|e| luks_error(hdev.path(), e))?;
        Ok(())
    }

    /// Open a keyslot with `secret` (only `keyslot` when given).
    pub fn unlock(
        &self,
        secret: &crate::crypto::Passphrase,
        keyslot: Option<u32>,
    ) -> Result<luks::Unlocked> {
        let hdev = self.header_device();
        self.header
            .unlock(hdev, secret, keyslot)
            .map_err(|e| luks_error(hdev.path(), e))
    }

    /// The LUKS2 header, or exit 3 for LUKS1 (evfs changes LUKS2 headers
    /// only).
    pub fn luks2(&self) -> Result<&Luks2Header> {
        match &self.header {
            Header::Luks2(h) => Ok(h),
            Header::Luks1(_) => Err(Error::refused(format!(
                "{} is a LUKS1 volume; evfs changes LUKS2 headers only",
                self.path().display()
            ))
            .with_hint("convert it with `cryptsetup convert --type luks2` first")),
        }
    }

    /// Change the LUKS2 header: under cryptsetup's write lock, read it
    /// again, let `change` compute the update from it, check that the disk
    /// still holds the header the update was made from, and write it.
    /// Returns what `change` returned besides the plan.
    pub fn update<T>(
        &mut self,
        change: impl FnOnce(&mut Luks2Header) -> luks::Result<(T, Plan)>,
    ) -> Result<T> {
        self.luks2()?;
        let name = self.header_device().path().to_path_buf();
        let hdev = self.detached.as_mut().unwrap_or(&mut self.dev);
        let _lock = MetadataLock::take(hdev, true)?;
        let mut current = match Header::read(&*hdev).map_err(|e| luks_error(&name, e))? {
            Header::Luks2(h) => h,
            Header::Luks1(_) => {
                return Err(Error::runtime(format!(
                    "{}: the LUKS2 header was replaced by a LUKS1 header meanwhile",
                    name.display()
                )));
            }
        };
        let (value, plan) = change(&mut current).map_err(|e| luks_error(&name, e))?;
        if let Some((_, end)) = plan.extent()
            && end > hdev.size()
        {
            return Err(Error::refused(format!(
                "{} is too small for its LUKS2 header ({end} bytes)",
                name.display()
            )));
        }
        plan.check(&*hdev).map_err(|e| match e {
            LuksError::Invalid(why) => Error::runtime(format!(
                "{}: {why}: another program changed the header meanwhile",
                name.display()
            )),
            e => luks_error(&name, e),
        })?;
        plan.apply(hdev).map_err(|e| luks_error(&name, e))?;
        self.header = Header::Luks2(current);
        Ok(value)
    }

    /// Write a plan that makes a new header (a format: there is no header
    /// to have changed meanwhile), under cryptsetup's write lock.
    pub fn write_new(dev: &mut Device, plan: &Plan) -> Result<()> {
        let name = dev.path().to_path_buf();
        let _lock = MetadataLock::take(dev, true)?;
        plan.apply(dev).map_err(|e| luks_error(&name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Passphrase;
    use crate::luks::{Argon2Params, FormatOptions, LuksKey};

    fn fast() -> FormatOptions {
        FormatOptions {
            kdf: Argon2Params {
                memory_kib: 32,
                iterations: 4,
                parallel: 1,
            },
            digest_iterations: 1000,
            ..FormatOptions::default()
        }
    }

    fn image(dir: &Path) -> PathBuf {
        let p = dir.join("luks.img");
        let mut dev = Device::create_file(&p, 20 << 20).unwrap();
        let key = LuksKey::generate(64).unwrap();
        let (_, plan) = luks::format(&key, &Passphrase::new(b"pw".to_vec()), &fast()).unwrap();
        LuksVolume::write_new(&mut dev, &plan).unwrap();
        p
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let p = Path::new("/x");
        let code = |e| luks_error(p, e).exit_code();
        assert_eq!(code(LuksError::NotLuks), 2);
        assert_eq!(code(LuksError::Damaged("x".into())), 5);
        assert_eq!(code(LuksError::Unsupported("x".into())), 3);
        assert_eq!(code(LuksError::WrongPassphrase), 4);
        assert_eq!(code(LuksError::NoKeyslot("x".into())), 4);
        assert_eq!(code(LuksError::Invalid("x".into())), 2);
        assert_eq!(code(LuksError::Io(io::Error::other("x"))), 1);
        let text = luks_error(p, LuksError::WrongPassphrase).to_string();
        assert!(
            text.contains("/x") && text.contains("wrong") && text.contains("damaged"),
            "{text}"
        );
        assert_eq!(Error::from(LuksError::WrongPassphrase).exit_code(), 4);
    }

    #[test]
    fn a_volume_opens_unlocks_and_updates_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = image(dir.path());
        let mut v = LuksVolume::open(&p, None, true).unwrap();
        assert_eq!(v.format_name(), "luks2");
        let u = v.unlock(&Passphrase::new(b"pw".to_vec()), None).unwrap();
        assert_eq!(u.keyslot, 0);
        let bad = expect_err(v.unlock(&Passphrase::new(b"no".to_vec()), None));
        assert_eq!(bad.exit_code(), 4);
        let seq = v.luks2().unwrap().seqid();
        v.update(|h| Ok(((), h.add_requirement(luks::REQUIREMENT_INCOMPLETE)?)))
            .unwrap();
        assert_eq!(v.luks2().unwrap().seqid(), seq + 1);
        let again = LuksVolume::open(&p, None, false).unwrap();
        assert_eq!(
            again.luks2().unwrap().requirements(),
            [luks::REQUIREMENT_INCOMPLETE.to_string()]
        );
        // Not LUKS: the device comes back.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
        let dev = Device::open_read(&plain).unwrap();
        assert!(LuksVolume::from_device(dev, None, false).unwrap().is_err());
        assert_eq!(
            expect_err(LuksVolume::open(&plain, None, false)).exit_code(),
            2
        );
        // A detached header that is not LUKS is an error.
        let dev = Device::open_read(&p).unwrap();
        assert!(LuksVolume::from_device(dev, Some(&plain), false).is_err());
    }

    #[test]
    fn the_metadata_lock_excludes_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = image(dir.path());
        let dev = Device::open_read(&p).unwrap();
        let held = MetadataLock::take(&dev, true).unwrap();
        let other = File::open(&p).unwrap();
        assert!(rustix::fs::flock(&other, FlockOperation::NonBlockingLockShared).is_err());
        drop(held);
        rustix::fs::flock(&other, FlockOperation::NonBlockingLockShared).unwrap();
        // Readers share it.
        let shared = MetadataLock::take(&dev, false).unwrap();
        drop(shared);
    }

    fn expect_err<T>(r: Result<T>) -> Error {
        crate::error::expect_err(r)
    }
}
