//! Advisory locks that keep two writers off one storage, through whatever
//! names they reach it: a backup or restore target, a mapped volume and a
//! metadata change are locked exclusively; a backup source and a read-only
//! map are locked shared.
//!
//! The locks are open-file-description byte-range locks (`F_OFD_SETLK`)
//! on the storage's bases (see [`super::identity`]): the file itself, the
//! backing file of a loop device, the disk under a partition over the
//! partition's range only, so that unrelated partitions stay independent.
//! They are released when the last descriptor closes, also when the process
//! dies. `/proc/locks` shows no process for such a lock, so a busy message
//! finds the holder in the `lock:` lines of `/proc/*/fdinfo/*`.

// Open-file-description locks are `fcntl` calls through libc.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::identity::{Base, Extent, Storage};
use crate::error::{Error, Result};

/// Locks held on a storage's bases; dropping it releases them.
#[derive(Debug)]
pub struct StorageLock {
    _held: Vec<File>,
}

/// One range to lock: a descriptor of the base, and bytes (`len` 0: to the end).
struct Target {
    file: File,
    start: u64,
    len: u64,
}

/// Lock `storage` (the storage of `own`, the open device called `name`)
/// shared or `exclusive`, or fail with exit 1 naming the holder.
pub fn lock(
    storage: &Storage,
    own: &File,
    own_writable: bool,
    name: &Path,
    exclusive: bool,
    purpose: &str,
) -> Result<StorageLock> {
    let mut held = Vec::new();
    for t in targets(storage, own, own_writable, exclusive)? {
        let mut looks = 0;
        loop {
            match set_lock(&t, exclusive) {
                Ok(true) => {
                    held.push(t.file);
                    break;
                }
                Ok(false) => {
                    // The holder may finish between the refused lock and
                    // the search for it (two short metadata changes
                    // racing): found nowhere, it is gone, and the lock is
                    // free now. One that stays hidden (another PID
                    // namespace, no access to its /proc) is "another
                    // process" after a few looks.
                    looks += 1;
                    let found = holder(&t, exclusive);
                    if found.is_some() || looks == HOLDER_LOOKS {
                        return Err(busy(name, found, purpose));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(Error::io("locking", name, e)),
            }
        }
    }
    Ok(StorageLock { _held: held })
}

/// How often a refused lock is tried again when no holder can be found.
const HOLDER_LOOKS: u32 = 3;

/// Refuse early when another process holds a lock on the storage `path`
/// names (if it exists), with the same message as [`lock`]: a look before
/// reading what a target holds, so that a busy target is reported as busy.
/// No lock is taken.
pub fn probe(path: &Path, purpose: &str) -> Result<()> {
    let Some(storage) = Storage::of_path(path)? else {
        return Ok(());
    };
    if storage.extents().is_empty() {
        // A pipe or a character device: nothing to lock (and opening a
        // FIFO would wait for a writer).
        return Ok(());
    }
    let own = match open_nonblocking(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    for t in targets(&storage, &own, false, false)? {
        for looks in 1..=HOLDER_LOOKS {
            if !conflict(&t, true).map_err(|e| Error::io("locking", path, e))? {
                break;
            }
            // As in [`lock`]: a holder found nowhere has finished.
            let found = holder(&t, true);
            if found.is_some() || looks == HOLDER_LOOKS {
                return Err(busy(path, found, purpose));
            }
        }
    }
    Ok(())
}

fn open_nonblocking(path: &Path, write: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

fn busy(name: &Path, holder: Option<String>, purpose: &str) -> Error {
    let holder = holder.unwrap_or_else(|| "another process".to_string());
    Error::runtime(format!(
        "{} is in use by {holder}; refusing to {purpose} while it runs",
        name.display()
    ))
    .with_hint("wait for it to finish (a backup, restore or map holds the volume), then try again")
}

/// Whether `file` is the base itself.
fn is_base(file: &File, base: Base) -> bool {
    let Ok(m) = file.metadata() else {
        return false;
    };
    match base {
        Base::File { dev, ino } => m.file_type().is_file() && m.dev() == dev && m.ino() == ino,
        Base::Disk { rdev } => m.file_type().is_block_device() && m.rdev() == rdev,
    }
}

/// A descriptor of each base and the range to lock on it. The device's
/// own descriptor serves where it is the base; others are opened by the
/// path identity found (checked to be the base). A base that cannot be
/// opened (a deleted backing file, no permission) is stood in for by the
/// device itself, whole.
fn targets(
    storage: &Storage,
    own: &File,
    own_writable: bool,
    exclusive: bool,
) -> Result<Vec<Target>> {
    let dup = |what: &File| {
        what.try_clone()
            .map_err(|e| Error::io("duplicating the descriptor of", storage.name(), e))
    };
    let mut out = Vec::new();
    let mut stand_in = false;
    for e in storage.extents() {
        let (start, len) = range(e);
        if is_base(own, e.base) && (own_writable || !exclusive) {
            out.push(Target {
                file: dup(own)?,
                start,
                len,
            });
            continue;
        }
        let opened = e
            .open_path()
            .and_then(|p| open_nonblocking(p, exclusive).ok())
            .filter(|f| is_base(f, e.base));
        match opened {
            Some(file) => out.push(Target { file, start, len }),
            None => stand_in = true,
        }
    }
    if stand_in || out.is_empty() {
        out.push(Target {
            file: dup(own)?,
            start: 0,
            len: 0,
        });
    }
    Ok(out)
}

/// An extent's range as `struct flock` takes it (`len` 0: to the end).
fn range(e: &Extent) -> (u64, u64) {
    let max = i64::MAX as u64;
    let start = e.start.min(max);
    let len = e.len.map_or(0, |n| n.clamp(1, max - start));
    (start, len)
}

fn flock(kind: libc::c_int, t: &Target) -> libc::flock {
    // SAFETY: `struct flock` is plain integers; all zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = t.start as libc::off_t;
    fl.l_len = t.len as libc::off_t;
    fl
}

/// `F_OFD_SETLK`: true when taken, false when another lock conflicts.
fn set_lock(t: &Target, exclusive: bool) -> std::io::Result<bool> {
    let mut fl = flock(
        if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        },
        t,
    );
    // SAFETY: F_OFD_SETLK reads one `struct flock` from the pointer, which
    // points at a live, initialized value; the descriptor is open.
    let rc = unsafe { libc::fcntl(t.file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// `F_OFD_GETLK`: whether another lock conflicts with ours.
fn conflict(t: &Target, exclusive: bool) -> std::io::Result<bool> {
    let mut fl = flock(
        if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        },
        t,
    );
    // SAFETY: F_OFD_GETLK reads and rewrites one `struct flock` through the
    // pointer, which points at a live, initialized value; the descriptor is
    // open.
    let rc = unsafe { libc::fcntl(t.file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(libc::c_int::from(fl.l_type) != libc::F_UNLCK)
}

/// The process holding a lock that conflicts with `t`: from the `lock:`
/// lines of every descriptor's fdinfo (where the kernel names OFD locks,
/// which `/proc/locks` shows with pid -1).
fn holder(t: &Target, exclusive: bool) -> Option<String> {
    let m = t.file.metadata().ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(m.dev()),
        rustix::fs::minor(m.dev()),
        m.ino()
    );
    let want_end = (t.len != 0).then(|| t.start + t.len - 1);
    let me = std::process::id();
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(text) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            let hit = text
                .lines()
                .filter_map(|l| l.strip_prefix("lock:"))
                .any(|l| lock_line_conflicts(l, &id, t.start, want_end, exclusive));
            if hit {
                return Some(describe(pid));
            }
        }
    }
    None
}

/// Whether a lock line ("1: OFDLCK ADVISORY WRITE -1 fd:01:5678 0 EOF")
/// holds `id` over a byte of `start..=end` in a way that conflicts.
fn lock_line_conflicts(
    line: &str,
    id: &str,
    start: u64,
    end: Option<u64>,
    exclusive: bool,
) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    let Some(pos) = f.iter().position(|x| *x == id) else {
        return false;
    };
    let write = f.iter().take(pos).any(|x| *x == "WRITE");
    if !(exclusive || write) {
        return false;
    }
    let Some(lo) = f.get(pos + 1).and_then(|s| s.parse::<u64>().ok()) else {
        return false;
    };
    let hi = f.get(pos + 2).and_then(|s| s.parse::<u64>().ok());
    hi.is_none_or(|h| start <= h) && end.is_none_or(|e| lo <= e)
}

/// "process 1234 (evfs map vol.img ...)".
fn describe(pid: u32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    if cmd.is_empty() {
        format!("process {pid}")
    } else {
        format!("process {pid} ({cmd})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_path(p: &Path, write: bool, exclusive: bool) -> Result<(File, StorageLock)> {
        let f = open_nonblocking(p, write).unwrap();
        let s = Storage::of_file(&f, &p.display().to_string())?;
        let l = lock(&s, &f, write, p, exclusive, "write it")?;
        Ok((f, l))
    }

    #[test]
    fn a_second_exclusive_lock_is_refused_and_a_shared_one_coexists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, b"x").unwrap();
        let a = lock_path(&p, false, false).unwrap();
        let b = lock_path(&p, false, false).unwrap();
        let e = lock_path(&p, true, true).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("in use"), "{e}");
        // A hard link is the same file.
        let h = dir.path().join("h");
        std::fs::hard_link(&p, &h).unwrap();
        assert!(lock_path(&h, true, true).is_err());
        drop((a, b));
        let _w = lock_path(&h, true, true).unwrap();
        assert!(lock_path(&p, false, false).is_err());
    }

    #[test]
    fn a_probe_sees_a_held_lock_and_leaves_none_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        probe(&p, "write it").unwrap();
        std::fs::write(&p, b"x").unwrap();
        probe(&p, "write it").unwrap();
        // The probe took no lock: a writer can take it.
        let _w = lock_path(&p, true, true).unwrap();
        let e = probe(&p, "restore into it").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("refusing to restore into it"), "{e}");
        // A FIFO is never opened by a probe.
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from(0o600)).unwrap();
        probe(&fifo, "write it").unwrap();
    }

    #[test]
    fn lock_lines_match_by_inode_range_and_kind() {
        let l = " 1: OFDLCK  ADVISORY  WRITE -1 fd:01:5678 4096 8191";
        assert!(lock_line_conflicts(l, "fd:01:5678", 0, Some(4096), false));
        assert!(!lock_line_conflicts(l, "fd:01:5678", 8192, None, true));
        assert!(!lock_line_conflicts(l, "fd:01:5679", 0, None, true));
        let r = " 2: OFDLCK  ADVISORY  READ -1 fd:01:5678 0 EOF";
        assert!(!lock_line_conflicts(r, "fd:01:5678", 0, None, false));
        assert!(lock_line_conflicts(r, "fd:01:5678", 1 << 40, None, true));
    }

    #[test]
    fn the_kernel_lists_ofd_locks_in_fdinfo() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, b"x").unwrap();
        let (_f, _l) = lock_path(&p, true, true).unwrap();
        let found = std::fs::read_dir("/proc/self/fdinfo")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("OFDLCK")));
        assert!(found, "the holder search relies on these lines");
    }
}
