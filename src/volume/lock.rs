//! Advisory locks that keep two writers off one volume: a backup or restore
//! target and a mapped volume are locked exclusively; a backup source is
//! locked shared, so it cannot be mapped read-write while it is read.
//!
//! The lock is an `flock` on the open device, released when it is closed
//! (also when the process dies). When a lock is busy, `/proc/locks` names the
//! holder's process, so the message can say who has it.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::error::{Error, Result};

/// Take the lock on `file` (the open volume at `path`) or fail with exit 1.
pub fn lock(file: &File, path: &Path, exclusive: bool, purpose: &str) -> Result<()> {
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match rustix::fs::flock(file, op) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = holder(file).unwrap_or_else(|| "another process".to_string());
            Err(Error::runtime(format!(
                "{} is in use by {holder}; refusing to {purpose} while it runs",
                path.display()
            ))
            .with_hint(
                "wait for it to finish (a backup, restore or map holds the volume), then try again",
            ))
        }
        Err(e) => Err(Error::io("locking", path, e.into())),
    }
}

/// Refuse early when another process holds a lock on `path` (if it exists),
/// with the same message as [`lock`]: a look before reading what the
/// target holds, so that a busy target is reported as busy. The real lock
/// is taken later on the descriptor that writes; this one is released.
pub fn probe(path: &Path, purpose: &str) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    lock(&file, path, true, purpose)
}

/// The process holding an flock on the same file, from `/proc/locks`.
fn holder(file: &File) -> Option<String> {
    let meta = file.metadata().ok()?;
    let dev = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(meta.dev()),
        rustix::fs::minor(meta.dev()),
        meta.ino()
    );
    let me = std::process::id();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        if fields.len() >= 6 && fields[1] == "FLOCK" && fields[5] == dev {
            let pid: u32 = fields[4].parse().ok()?;
            if pid == me {
                continue;
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    c.split(|&b| b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            return Some(if cmd.is_empty() {
                format!("process {pid}")
            } else {
                format!("process {pid} ({cmd})")
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_lock_is_refused_and_a_shared_one_coexists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, b"x").unwrap();
        let a = File::open(&p).unwrap();
        let b = File::open(&p).unwrap();
        lock(&a, &p, false, "read it").unwrap();
        lock(&b, &p, false, "read it").unwrap();
        let c = File::open(&p).unwrap();
        let e = lock(&c, &p, true, "write it").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("in use"), "{e}");
        drop((a, b));
        lock(&c, &p, true, "write it").unwrap();
    }

    #[test]
    fn a_probe_sees_a_held_lock_and_leaves_none_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        probe(&p, "write it").unwrap();
        std::fs::write(&p, b"x").unwrap();
        probe(&p, "write it").unwrap();
        // The probe released its lock: a writer can take it.
        let w = File::open(&p).unwrap();
        lock(&w, &p, true, "write it").unwrap();
        let e = probe(&p, "restore into it").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("refusing to restore into it"), "{e}");
    }
}
