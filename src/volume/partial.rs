//! Files that take their name only when complete (a stream file, a
//! cleartext export): written into an unnamed temporary file (`O_TMPFILE`)
//! in the target's directory, linked under a temporary name once finished,
//! renamed into place, and the directory synced. A run killed half-way
//! leaves nothing behind: the kernel frees a file that was never linked.
//!
//! Where the file system has no `O_TMPFILE`, the file is written under the
//! name `.NAME.partial-PID` beside the target and removed on failure; one
//! left by a process that died (killed, or a machine crash) is removed by
//! the next run into that name.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// A file being written that becomes `path` on [`Partial::commit`], and
/// nothing otherwise.
pub struct Partial {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    name: String,
    /// The temporary name, where the file system has no `O_TMPFILE`.
    named: Option<PathBuf>,
    done: bool,
}

/// The directory of `path` and its file name.
fn split(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::usage(format!("{} does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// `.NAME.partial-PID` in `dir`.
fn partial_name(dir: &Path, name: &str, pid: u32) -> PathBuf {
    dir.join(format!(".{name}.partial-{pid}"))
}

/// Remove `.NAME.partial-PID` files in `dir` whose process is gone.
fn remove_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 0 || pid as u32 == me {
            continue;
        }
        let dead = rustix::process::Pid::from_raw(pid)
            .is_some_and(|p| rustix::process::test_kill_process(p) == Err(Errno::SRCH));
        if dead {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Partial {
    /// Start the file that becomes `path`. Stale partial files of dead
    /// processes beside it are removed first.
    pub fn create(path: &Path) -> Result<Partial> {
        let (dir, name) = split(path)?;
        remove_stale(&dir, &name);
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::openat(CWD, &dir, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => Ok(Partial {
                file: File::from(fd),
                path: path.to_path_buf(),
                dir,
                name,
                named: None,
                done: false,
            }),
            // No O_TMPFILE on this file system (or kernel).
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => {
                Self::create_named(path, dir, name)
            }
            Err(e) => Err(Error::io("creating a temporary file in", &dir, e.into())),
        }
    }

    /// The fallback: a named partial file.
    fn create_named(path: &Path, dir: PathBuf, name: String) -> Result<Partial> {
        let tmp = partial_name(&dir, &name, std::process::id());
        // One of this pid is left by a dead process that had it before.
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .ctx("creating", &tmp)?;
        Ok(Partial {
            file,
            path: path.to_path_buf(),
            dir,
            name,
            named: Some(tmp),
            done: false,
        })
    }

    /// The file being written (unnamed, or under its temporary name).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The name the file takes when complete.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path that opens this file again (for O_DIRECT).
    pub fn reopen_path(&self) -> PathBuf {
        match &self.named {
            Some(p) => p.clone(),
            None => PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())),
        }
    }

    /// Sync the data, give the file its name (replacing what had it), and
    /// sync the directory so that the name survives a crash.
    pub fn commit(mut self) -> Result<()> {
        self.file.sync_all().ctx("syncing", &self.path)?;
        let tmp = match &self.named {
            Some(p) => p.clone(),
            None => {
                let tmp = partial_name(&self.dir, &self.name, std::process::id());
                let _ = std::fs::remove_file(&tmp);
                self.link(&tmp)?;
                self.named = Some(tmp.clone());
                tmp
            }
        };
        std::fs::rename(&tmp, &self.path).ctx("renaming into place", &self.path)?;
        self.done = true;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Link the unnamed file as `tmp`: through `/proc/self/fd` (any user),
    /// else by descriptor (`AT_EMPTY_PATH`, which needs privilege).
    fn link(&self, tmp: &Path) -> Result<()> {
        let proc = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let by_proc = rustix::fs::linkat(CWD, proc.as_str(), CWD, tmp, AtFlags::SYMLINK_FOLLOW);
        let linked =
            by_proc.or_else(|_| rustix::fs::linkat(&self.file, "", CWD, tmp, AtFlags::EMPTY_PATH));
        linked.map_err(|e| Error::io("giving a name to the finished file", &self.path, e.into()))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done
            && let Some(p) = &self.named
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_file_takes_its_name_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        std::fs::write(&p, b"old").unwrap();
        let part = Partial::create(&p).unwrap();
        (&part.file).write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["out"], "nothing named meanwhile");
        part.commit().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["out"]);
        // Dropped unfinished: nothing changes.
        let part = Partial::create(&p).unwrap();
        (&part.file).write_all(b"cut").unwrap();
        drop(part);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["out"]);
    }

    #[test]
    fn the_named_fallback_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        let (d, n) = split(&p).unwrap();
        let part = Partial::create_named(&p, d.clone(), n.clone()).unwrap();
        let tmp = part.reopen_path();
        assert!(tmp.exists());
        drop(part);
        assert!(!tmp.exists());
        let part = Partial::create_named(&p, d, n).unwrap();
        (&part.file).write_all(b"x").unwrap();
        part.commit().unwrap();
        assert_eq!(names(dir.path()), ["out"]);
    }

    #[test]
    fn stale_partials_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let live = format!(".x.partial-{}", std::process::id());
        for n in [
            ".x.partial-99999999",
            ".x.partial-1",
            ".y.partial-99999999",
            live.as_str(),
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        drop(Partial::create(&p).unwrap());
        // pid 1 lives; another name's partial is not ours to touch; our own
        // pid's is left for create_named to reuse.
        assert_eq!(
            names(dir.path()),
            [".x.partial-1", live.as_str(), ".y.partial-99999999"]
        );
    }
}
