//! Writing the keystore's files so that concurrent runs and crashes never
//! leave a half-written or silently replaced key file.
//!
//! Files are written relative to an opened directory. A file that must not
//! be replaced once made (`.priv`, `.pub`, `.hostkey`) is written whole
//! under a temporary name, synced, and `link()`ed into place: the link fails
//! if another process got there first, and the caller then uses what is on
//! disk. A file that may be replaced (`.pass`) is renamed into place
//! instead. Either way a reader never sees a half-written file.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// An opened keystore directory. Files are written relative to this
/// descriptor, so a directory renamed after it was opened is not written
/// into by mistake.
pub struct Dir {
    fd: File,
    path: PathBuf,
}

impl Dir {
    /// Open the directory at `path`; `None` when it does not exist.
    pub fn open(path: &Path) -> Result<Option<Dir>> {
        open_dir(rustix::fs::CWD, path, path.to_path_buf())
    }

    /// Open the directory at `path`, making it (mode 0700) and its
    /// missing parents first.
    pub fn create(path: &Path) -> Result<Dir> {
        if let Some(dir) = Dir::open(path)? {
            return Ok(dir);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .ctx("creating", parent)?;
        }
        make_dir(rustix::fs::CWD, path, path.to_path_buf())
    }

    /// Open the subdirectory `name`; `None` when it does not exist.
    pub fn subdir(&self, name: &str) -> Result<Option<Dir>> {
        open_dir(&self.fd, name, self.path.join(name))
    }

    /// Open the subdirectory `name`, making it (mode 0700) first.
    pub fn create_subdir(&self, name: &str) -> Result<Dir> {
        if let Some(dir) = self.subdir(name)? {
            return Ok(dir);
        }
        make_dir(&self.fd, name, self.path.join(name))
    }

    /// Write `data` as `name` with exactly `mode`, replacing any old file.
    pub fn replace(&self, name: &str, data: &[u8], mode: u32) -> Result<()> {
        let tmp = self.write_temp(name, data, mode)?;
        let renamed = rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)
            .map_err(|e| Error::io("renaming into place", self.path.join(name), e.into()));
        if renamed.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
        }
        renamed?;
        self.sync()
    }

    /// Write `data` as `name` with exactly `mode` unless `name` exists.
    /// `false` when it existed (another process may have just made it): the
    /// caller then reads what is there instead of what it meant to write.
    pub fn create_new(&self, name: &str, data: &[u8], mode: u32) -> Result<bool> {
        let tmp = self.write_temp(name, data, mode)?;
        let linked =
            match rustix::fs::linkat(&self.fd, tmp.as_str(), &self.fd, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(Errno::EXIST) => Ok(false),
                Err(e) => Err(Error::io(
                    "linking into place",
                    self.path.join(name),
                    e.into(),
                )),
            };
        let removed = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty())
            .map_err(|e| Error::io("removing", self.path.join(&tmp), e.into()));
        let linked = linked?;
        removed?;
        self.sync()?;
        Ok(linked)
    }

    /// Remove `name`; `false` when there was nothing to remove.
    pub fn remove(&self, name: &str) -> Result<bool> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => self.sync().map(|()| true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io("removing", self.path.join(name), e.into())),
        }
    }

    /// A new file holding `data` with exactly `mode` (the umask may have
    /// narrowed or, at 000, not narrowed the mode given to open), synced.
    /// The name is unique per process and call, so that threads and
    /// processes writing the same file never share a temporary.
    fn write_temp(&self, name: &str, data: &[u8], mode: u32) -> Result<String> {
        let tag = crate::hex::encode(&crate::crypto::random_array::<6>()?);
        let tmp = format!("{name}.{}-{tag}.tmp", std::process::id());
        let path = self.path.join(&tmp);
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, tmp.as_str(), flags, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io("creating", &path, e.into()))?;
        let mut file = File::from(fd);
        let written = rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io("setting the mode of", &path, e.into()))
            .and_then(|()| file.write_all(data).ctx("writing", &path))
            .and_then(|()| file.sync_all().ctx("syncing", &path));
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        Ok(tmp)
    }

    /// Make a new or removed name survive a crash.
    fn sync(&self) -> Result<()> {
        self.fd.sync_all().ctx("syncing", &self.path)
    }
}

/// Open the directory `name` (relative to `at`).
fn open_dir(
    at: impl rustix::fd::AsFd,
    name: impl AsRef<Path>,
    path: PathBuf,
) -> Result<Option<Dir>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(at, name.as_ref(), flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(Error::io("opening the keystore directory", &path, e.into())),
    };
    Ok(Some(Dir { fd, path }))
}

/// Make the directory `name` (relative to `at`) with mode 0700, or find the
/// one another process made at the same moment, and open it.
fn make_dir(at: impl rustix::fd::AsFd, name: impl AsRef<Path>, path: PathBuf) -> Result<Dir> {
    let at = at.as_fd();
    let made = match rustix::fs::mkdirat(at, name.as_ref(), Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(Error::io("creating", &path, e.into())),
    };
    let dir = open_dir(at, name, path.clone())?.ok_or_else(|| {
        Error::runtime(format!(
            "the keystore directory {} vanished while it was being made",
            path.display()
        ))
    })?;
    if made {
        // A strict umask may have taken our own access away; 0700 exactly.
        rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(0o700))
            .map_err(|e| Error::io("setting the mode of", &path, e.into()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn create_new_links_once_keeps_the_first_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::create(&tmp.path().join("a/b")).unwrap();
        assert!(dir.create_new("k.priv", b"first", 0o600).unwrap());
        assert!(!dir.create_new("k.priv", b"second", 0o600).unwrap());
        let path = tmp.path().join("a/b/k.priv");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(names(&tmp.path().join("a/b")), ["k.priv"]);
        let mode = std::fs::metadata(tmp.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn create_new_from_many_threads_at_once_has_one_winner() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ks");
        let barrier = std::sync::Barrier::new(8);
        let wins: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let (root, barrier) = (&root, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let dir = Dir::create(root).unwrap().create_subdir("u").unwrap();
                        dir.create_new(".hostkey", &[i; 32], 0o600).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
        let winner = wins.iter().position(|w| *w).unwrap() as u8;
        assert_eq!(
            std::fs::read(root.join("u/.hostkey")).unwrap(),
            [winner; 32]
        );
        assert_eq!(names(&root.join("u")), [".hostkey"]);
    }

    #[test]
    fn replace_swaps_the_whole_file_with_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::create(tmp.path()).unwrap();
        dir.replace("k.pass", b"old", 0o600).unwrap();
        dir.replace("k.pass", b"new", 0o644).unwrap();
        let path = tmp.path().join("k.pass");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(dir.remove("k.pass").unwrap());
        assert!(!dir.remove("k.pass").unwrap());
        assert!(names(tmp.path()).is_empty());
    }
}
