//! The keystore's directories and files, opened and written the way ssh
//! treats its key files: nothing another user could have put in place is
//! used, and concurrent runs never leave a half-written or silently replaced
//! key file.
//!
//! - Files are opened relative to an opened directory, with `O_NOFOLLOW`,
//!   and checked with `fstat` on the descriptor that is then read, so that
//!   nothing can be swapped between the check and the use.
//! - A secret (`.priv`, `.pass`, `.hostkey`) must be a regular file of the
//!   effective user with no permission for group or others (root, too, uses
//!   only root's). A `.pub` must be a regular file of that user or of root,
//!   writable by no one else.
//! - A directory must belong to that user or to root and must not be
//!   writable by group or others unless its sticky bit is set: others may
//!   then add files but not replace ours, and what they add fails the file
//!   checks.
//! - A file that must not be replaced once made (`.priv`, `.pub`,
//!   `.hostkey`) is written whole under a temporary name, synced, and
//!   `link()`ed into place: the link fails if another process got there
//!   first, and the caller then uses what is on disk. A file that may be
//!   replaced (`.pass`) is renamed into place instead. Either way a reader
//!   never sees a half-written file.
//!
//! Every refusal is exit 4 with a message that names the file and a hint
//! that says how to fix it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use zeroize::Zeroizing;

use crate::error::{CliAdvice, Error, IoContext, Result};

/// Largest keystore file read. A `.pass` holding the longest passphrase is
/// under 9 KiB; anything far larger is not a key file.
const FILE_MAX: u64 = 64 * 1024;

/// Permission bits of group and others.
const GROUP_OTHER: u32 = 0o077;
/// Write bits of group and others.
const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// How much a file must be ours before we use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// `.priv`, `.pass`, `.hostkey`: the effective user's alone.
    Secret,
    /// `.pub`: the effective user's or root's, writable by no one else.
    Public,
}

/// An opened keystore directory that passed the checks. Files are opened
/// and written relative to this descriptor, so a directory renamed or
/// replaced after the check is not the one used.
pub struct Dir {
    fd: File,
    path: PathBuf,
}

impl Dir {
    /// Open and check the directory at `path`; `None` when it does not exist.
    /// A symbolic link to a directory is followed: the directory it leads to
    /// is the one checked and used.
    pub fn open(path: &Path) -> Result<Option<Dir>> {
        open_dir(rustix::fs::CWD, path, path.to_path_buf())
    }

    /// Open and check the directory at `path`, making it (mode 0700) and its
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

    /// Open and check the subdirectory `name`; `None` when it does not exist.
    pub fn subdir(&self, name: &str) -> Result<Option<Dir>> {
        open_dir(&self.fd, name, self.path.join(name))
    }

    /// Open and check the subdirectory `name`, making it (mode 0700) first.
    pub fn create_subdir(&self, name: &str) -> Result<Dir> {
        if let Some(dir) = self.subdir(name)? {
            return Ok(dir);
        }
        make_dir(&self.fd, name, self.path.join(name))
    }

    /// Whether `name` exists; a symbolic link counts, even a dangling one.
    pub fn exists(&self, name: &str) -> Result<bool> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io("reading", self.path.join(name), e.into())),
        }
    }

    /// The whole of the file `name`, after the checks of `trust`; `None`
    /// when it does not exist. The buffer is wiped on drop: it may hold a
    /// sealed secret.
    pub fn read(&self, name: &str, trust: Trust) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let path = self.path.join(name);
        // O_NONBLOCK: a FIFO put in place of a key file must not hang the
        // open; it is refused below as not a regular file.
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let mut file = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) => return Ok(None),
            // With O_NOFOLLOW, ELOOP means that `name` is a symbolic link.
            Err(Errno::LOOP) => return Err(self.symlink_refused(name)),
            Err(e) => return Err(Error::io("opening", &path, e.into())),
        };
        let meta = file.metadata().ctx("reading", &path)?;
        check_file(&meta, &path, trust)?;
        if meta.len() > FILE_MAX {
            return Err(too_large(&path));
        }
        // Room for the whole file and the read that finds its end, so that
        // the buffer never grows and leaves a copy behind in freed memory.
        let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
        (&mut file)
            .take(FILE_MAX + 1)
            .read_to_end(&mut bytes)
            .ctx("reading", &path)?;
        if bytes.len() as u64 > FILE_MAX {
            return Err(too_large(&path));
        }
        Ok(Some(bytes))
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

    fn symlink_refused(&self, name: &str) -> Error {
        let path = self.path.join(name);
        let hint = match rustix::fs::readlinkat(&self.fd, name, Vec::new()) {
            Ok(target) => {
                let target = std::ffi::OsStr::from_bytes(target.as_bytes());
                format!(
                    "replace the symlink with the file itself: `mv {} {}`",
                    self.path.join(target).display(),
                    path.display()
                )
            }
            Err(_) => "replace the symlink with the file itself".to_string(),
        };
        Error::access(format!(
            "{} is a symbolic link; key files are not followed through links",
            path.display()
        ))
        .with_hint(hint)
    }
}

/// Open the directory `name` (relative to `at`) and check it.
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
    let meta = fd.metadata().ctx("reading", &path)?;
    check_dir(&meta, &path)?;
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

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// What may be wrong with a keystore directory or file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// Owned by someone the rules do not trust.
    Owner,
    /// Permissions that let group or others in.
    Mode,
}

/// The rule for directories: ours or root's, and not writable by group or
/// others unless sticky.
fn dir_flaw(owner: u32, mode: u32, me: u32) -> Option<Flaw> {
    if owner != me && owner != 0 {
        Some(Flaw::Owner)
    } else if mode & GROUP_OTHER_WRITE != 0 && mode & STICKY == 0 {
        Some(Flaw::Mode)
    } else {
        None
    }
}

/// The rule for regular files: a secret is ours alone; a public key is ours
/// or root's and writable by no one else.
fn file_flaw(owner: u32, mode: u32, me: u32, trust: Trust) -> Option<Flaw> {
    let (owner_ok, loose) = match trust {
        Trust::Secret => (owner == me, GROUP_OTHER),
        Trust::Public => (owner == me || owner == 0, GROUP_OTHER_WRITE),
    };
    if !owner_ok {
        Some(Flaw::Owner)
    } else if mode & loose != 0 {
        Some(Flaw::Mode)
    } else {
        None
    }
}

fn check_dir(meta: &std::fs::Metadata, path: &Path) -> Result<()> {
    let (owner, mode, me) = (meta.uid(), meta.mode(), euid());
    match dir_flaw(owner, mode, me) {
        None => Ok(()),
        Some(Flaw::Owner) => Err(Error::access(format!(
            "the keystore directory {} is owned by uid {owner}, {}; refusing to use it",
            path.display(),
            not_runner_nor_root(me)
        ))
        .with_hint(CliAdvice::OwnKeystore {
            me,
            path: path.display().to_string(),
        })),
        Some(Flaw::Mode) => Err(Error::access(format!(
            "the keystore directory {} is writable by group or others (mode {:o}), so they could swap its key files; refusing to use it",
            path.display(),
            mode & 0o7777
        ))
        .with_hint(format!("run `chmod 700 {}`", path.display()))),
    }
}

fn check_file(meta: &std::fs::Metadata, path: &Path, trust: Trust) -> Result<()> {
    if !meta.file_type().is_file() {
        return Err(Error::access(format!(
            "{} is not a regular file; refusing to use it as a key file",
            path.display()
        ))
        .with_hint(format!(
            "remove {} and put the key file back in its place",
            path.display()
        )));
    }
    let (owner, mode, me) = (meta.uid(), meta.mode(), euid());
    let path = path.display();
    match (file_flaw(owner, mode, me, trust), trust) {
        (None, _) => Ok(()),
        (Some(Flaw::Owner), Trust::Secret) => Err(Error::access(format!(
            "{path} is owned by uid {owner}, not by uid {me}, who runs evfs; refusing to use it"
        ))
        .with_hint(CliAdvice::OwnKeystore {
            me,
            path: path.to_string(),
        })),
        (Some(Flaw::Owner), Trust::Public) => Err(Error::access(format!(
            "{path} is owned by uid {owner}, {}; refusing to trust it",
            not_runner_nor_root(me)
        ))
        .with_hint(format!(
            "if the key is right, run `chown {me} {path}` as root; otherwise remove it and import the key again"
        ))),
        (Some(Flaw::Mode), Trust::Secret) => Err(Error::access(format!(
            "{path} is accessible by group or others (mode {:o}); refusing to use it",
            mode & 0o7777
        ))
        .with_hint(format!("run `chmod 600 {path}`"))),
        (Some(Flaw::Mode), Trust::Public) => Err(Error::access(format!(
            "{path} is writable by group or others (mode {:o}), so they could have replaced the key; refusing to trust it",
            mode & 0o7777
        ))
        .with_hint(format!("run `chmod 644 {path}`"))),
    }
}

/// Who else might own a directory or public key that we trust.
fn not_runner_nor_root(me: u32) -> String {
    match me {
        0 => "not by root, who runs evfs".to_string(),
        _ => format!("neither by uid {me}, who runs evfs, nor by root"),
    }
}

fn too_large(path: &Path) -> Error {
    Error::integrity(format!(
        "{} is damaged: larger than {FILE_MAX} bytes, too large for a key file",
        path.display()
    ))
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

    #[test]
    fn directory_rule_row_by_row() {
        const ME: u32 = 1000;
        const OTHER: u32 = 2000;
        for (owner, mode, want) in [
            (ME, 0o700, None),
            (ME, 0o750, None),
            (ME, 0o755, None),
            (0, 0o755, None),
            (0, 0o1777, None),
            (ME, 0o1777, None),
            (ME, 0o770, Some(Flaw::Mode)),
            (ME, 0o707, Some(Flaw::Mode)),
            (ME, 0o777, Some(Flaw::Mode)),
            (0, 0o777, Some(Flaw::Mode)),
            (OTHER, 0o700, Some(Flaw::Owner)),
            (OTHER, 0o1777, Some(Flaw::Owner)),
        ] {
            assert_eq!(
                dir_flaw(owner, mode, ME),
                want,
                "owner {owner} mode {mode:o}"
            );
        }
        // Root is held to the same rule: another user's directory is not
        // trusted, root's own is.
        assert_eq!(dir_flaw(ME, 0o700, 0), Some(Flaw::Owner));
        assert_eq!(dir_flaw(0, 0o700, 0), None);
    }

    #[test]
    fn file_rule_row_by_row() {
        const ME: u32 = 1000;
        const OTHER: u32 = 2000;
        use Trust::{Public, Secret};
        for (owner, mode, me, trust, want) in [
            (ME, 0o600, ME, Secret, None),
            (ME, 0o400, ME, Secret, None),
            (ME, 0o640, ME, Secret, Some(Flaw::Mode)),
            (ME, 0o620, ME, Secret, Some(Flaw::Mode)),
            (ME, 0o604, ME, Secret, Some(Flaw::Mode)),
            (ME, 0o602, ME, Secret, Some(Flaw::Mode)),
            (ME, 0o610, ME, Secret, Some(Flaw::Mode)),
            (OTHER, 0o600, ME, Secret, Some(Flaw::Owner)),
            // Root may use root's secrets only; a user may not use root's.
            (0, 0o600, 0, Secret, None),
            (ME, 0o600, 0, Secret, Some(Flaw::Owner)),
            (0, 0o600, ME, Secret, Some(Flaw::Owner)),
            (ME, 0o644, ME, Public, None),
            (ME, 0o444, ME, Public, None),
            (0, 0o644, ME, Public, None),
            (ME, 0o664, ME, Public, Some(Flaw::Mode)),
            (ME, 0o646, ME, Public, Some(Flaw::Mode)),
            (OTHER, 0o644, ME, Public, Some(Flaw::Owner)),
            (OTHER, 0o644, 0, Public, Some(Flaw::Owner)),
        ] {
            assert_eq!(
                file_flaw(owner, mode, me, trust),
                want,
                "owner {owner} mode {mode:o} me {me} {trust:?}"
            );
        }
    }

    #[test]
    fn read_refuses_links_and_loose_files_and_returns_none_when_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::create(tmp.path()).unwrap();
        assert!(dir.read("k.priv", Trust::Secret).unwrap().is_none());
        assert!(!dir.exists("k.priv").unwrap());
        dir.create_new("k.priv", b"secret", 0o600).unwrap();
        assert_eq!(
            dir.read("k.priv", Trust::Secret)
                .unwrap()
                .unwrap()
                .as_slice(),
            b"secret"
        );
        std::os::unix::fs::symlink("k.priv", tmp.path().join("l.priv")).unwrap();
        assert!(dir.exists("l.priv").unwrap());
        let e = crate::error::expect_err(dir.read("l.priv", Trust::Secret));
        assert_eq!(e.exit_code(), 4);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(e.hint().unwrap().to_string().contains("mv "), "{e:?}");
        // A dangling link is refused too, not taken for a missing file.
        std::os::unix::fs::symlink("nowhere", tmp.path().join("d.pass")).unwrap();
        assert_eq!(
            crate::error::expect_err(dir.read("d.pass", Trust::Secret)).exit_code(),
            4
        );
        std::fs::create_dir(tmp.path().join("x.priv")).unwrap();
        let e = crate::error::expect_err(dir.read("x.priv", Trust::Secret));
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::set_permissions(
            tmp.path().join("k.priv"),
            std::fs::Permissions::from_mode(0o604),
        )
        .unwrap();
        let e = crate::error::expect_err(dir.read("k.priv", Trust::Secret));
        assert!(e.hint().unwrap().to_string().contains("chmod 600"), "{e:?}");
        // The same mode is fine for a public key.
        assert!(dir.read("k.priv", Trust::Public).unwrap().is_some());
    }

    #[test]
    fn a_loose_directory_is_refused_when_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ks");
        Dir::create(&path).unwrap().create_subdir("u").unwrap();
        std::fs::set_permissions(path.join("u"), std::fs::Permissions::from_mode(0o775)).unwrap();
        let root = Dir::open(&path).unwrap().unwrap();
        let e = crate::error::expect_err(root.subdir("u"));
        assert_eq!(e.exit_code(), 4);
        assert!(e.hint().unwrap().to_string().contains("chmod 700"), "{e:?}");
        assert!(root.subdir("missing").unwrap().is_none());
    }
}
