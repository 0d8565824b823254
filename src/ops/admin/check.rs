//! `evfs check [-r]`: both EMD copies and the dirty bit, with the HP-UX
//! `evfsvol check` messages.
//!
//! A volume holding an unfinished backup or restore (a checkpoint in its
//! EMD) is incomplete, not merely dirty: its data is part old, part new.
//! `check` names the unfinished task and how to finish it, and `check -r`
//! only repairs a bad EMD copy on it, keeping the checkpoint and the dirty
//! bit, so that `--resume` or a re-run can still finish the job.

use std::path::{Path, PathBuf};

use crate::emd::format::uuid_string;
use crate::emd::{Checkpoint, Copies, Task};
use crate::error::{Error, Result};
use crate::volume::{Device, Volume, layout, metadata};

/// What `check` found (and, with `-r`, did).
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The volume checked.
    pub path: PathBuf,
    /// Dirty when the check began.
    pub was_dirty: bool,
    /// Dirty when it ended.
    pub dirty: bool,
    /// Whether each copy (primary, backup) is valid and current at the end.
    pub copies_ok: (bool, bool),
    /// Whether `-r` rewrote the EMD.
    pub repaired: bool,
    /// The unfinished backup or restore the volume holds.
    pub unfinished: Option<Checkpoint>,
    /// The generation of the EMD in force at the end.
    pub generation: u64,
    /// The messages, as the HP-UX tool words them.
    pub lines: Vec<String>,
    /// Why the volume is not clean, if it is not.
    problem: Option<Problem>,
}

#[derive(Clone, Debug)]
enum Problem {
    Unfinished,
    Dirty,
    Copies(String),
}

impl CheckReport {
    /// Whether the volume checked clean.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }

    /// The failure `check` exits with: 6 for a dirty or incomplete volume,
    /// 5 for a bad EMD copy.
    pub fn error(&self) -> Option<Error> {
        let vol = self.path.display();
        Some(match self.problem.as_ref()? {
            Problem::Unfinished => unfinished_error(&self.path, self.unfinished.as_ref()?),
            Problem::Dirty => Error::dirty(format!(
                "{vol} is dirty: a writer did not finish (interrupted map, or a backup or restore of an older evfs)"
            ))
            .with_hint(format!(
                "do not trust its data; finish the job again, or reset the bit with `evfs check -r {vol}`"
            )),
            Problem::Copies(what) => Error::integrity(format!("{vol}: {what}")).with_hint(format!(
                "repair it from the good copy with `evfs check -r {vol}`"
            )),
        })
    }
}

/// Check `vol`; with `reset`, reset the dirty bit (unless a task is
/// unfinished) and rewrite a bad or stale copy from the good one.
pub fn run(vol: &Path, reset: bool) -> Result<CheckReport> {
    let mut dev = if reset {
        Device::open_write(vol)?
    } else {
        Device::open_read(vol)?
    };
    // A writer (backup, restore, map) holding the volume: its dirty bit is
    // that writer's, not the sign of a crash. The lock names the writer.
    if reset {
        dev.lock(true, "reset or repair it")?;
    } else {
        dev.lock(false, "check it")?;
    }
    let mut v = Volume::from_device(dev)?;
    // A volume cut short: its backup copy's place lies inside the data
    // area, and a repair would write the EMD over data.
    let data_end = v.emd.data_offset.saturating_add(v.emd.data_size);
    if layout::backup_emd_offset(v.dev.size()).is_none_or(|at| at < data_end) {
        return Err(Error::integrity(format!(
            "{}: the volume is shorter than its EMD says: its data area ends at byte {data_end}, the {} has {} bytes (cut short?)",
            vol.display(),
            if v.dev.is_block() { "device" } else { "file" },
            v.dev.size()
        ))
        .with_hint("nothing was written; put the missing end back (or restore the volume from a backup) before any repair"));
    }
    let (primary_ok, backup_ok) = v.copies.health();
    let was_dirty = v.emd.dirty;
    let current = Some(v.emd.generation);
    let unfinished = v.emd.checkpoint.clone();
    let quoted = format!("\"{}\"", vol.display());
    let mut report = CheckReport {
        path: vol.to_path_buf(),
        was_dirty,
        dirty: was_dirty,
        copies_ok: (primary_ok, backup_ok),
        repaired: false,
        unfinished: unfinished.clone(),
        generation: v.emd.generation,
        lines: Vec::new(),
        problem: None,
    };
    let clean_line = |generation: u64| {
        format!("Encrypted volume {quoted} is clean (generation {generation}, both EMD copies ok).")
    };

    if !reset {
        report.problem = if let Some(c) = &unfinished {
            report.lines.push(unfinished_line(vol, c));
            Some(Problem::Unfinished)
        } else if was_dirty {
            report.lines.push(format!(
                "Encrypted volume {quoted} has not been properly shut down."
            ));
            Some(Problem::Dirty)
        } else if !(primary_ok && backup_ok) {
            Some(Problem::Copies(format!(
                "EMD primary copy {}, backup copy {}",
                Copies::describe(&v.copies.primary, current),
                Copies::describe(&v.copies.backup, current)
            )))
        } else {
            report.lines.push(clean_line(v.emd.generation));
            None
        };
        // A bad copy beside an unfinished task or the dirty bit (whose
        // exit 6 comes first) is still named, as `-r` names it.
        if matches!(report.problem, Some(Problem::Unfinished | Problem::Dirty))
            && !(primary_ok && backup_ok)
        {
            report.lines.push(format!(
                "EMD primary copy {}, backup copy {}: `evfs check -r {}` repairs it from the good copy.",
                Copies::describe(&v.copies.primary, current),
                Copies::describe(&v.copies.backup, current),
                vol.display()
            ));
        }
        return Ok(report);
    }

    // -r: an unfinished task keeps its dirty bit and checkpoint.
    let resets = was_dirty && unfinished.is_none();
    if resets {
        report.lines.push(format!(
            "Encrypted volume {quoted} has not been properly shut down."
        ));
        report.lines.push("Resetting dirty bit...".to_string());
        v.emd.dirty = false;
    }
    for (name, ok, state) in [
        ("primary", primary_ok, &v.copies.primary),
        ("backup", backup_ok, &v.copies.backup),
    ] {
        if !ok {
            report.lines.push(format!(
                "Repairing the {name} EMD copy ({}) from the good copy...",
                Copies::describe(state, current)
            ));
        }
    }
    report.repaired = resets || !primary_ok || !backup_ok;
    if report.repaired {
        v.commit()?;
        // Read back what is now on the media, so that success means both copies are good.
        if metadata::read(&v.dev)?.health() != (true, true) {
            return Err(Error::runtime(format!(
                "{}: the EMD copies did not read back correctly after the repair",
                vol.display()
            )));
        }
    }
    report.copies_ok = (true, true);
    report.dirty = v.emd.dirty;
    report.generation = v.emd.generation;
    if let Some(c) = &unfinished {
        report.lines.push(unfinished_line(vol, c));
        report.problem = Some(Problem::Unfinished);
    } else if report.repaired {
        report.lines.push(format!(
            "Encrypted volume {quoted} has been successfully recovered"
        ));
    } else {
        report.lines.push(clean_line(v.emd.generation));
    }
    Ok(report)
}

/// The share of an unfinished task done, in percent.
pub(crate) fn percent(c: &Checkpoint) -> u64 {
    (c.bytes_done as u128 * 100)
        .checked_div(c.total as u128)
        .map_or(0, |p| p as u64)
}

/// What `check` says about an unfinished backup or restore.
fn unfinished_line(vol: &Path, c: &Checkpoint) -> String {
    match c.task {
        Task::Backup => format!(
            "Encrypted volume \"{}\" holds an unfinished backup from volume {}: {} of {} bytes ({}%) were copied.",
            vol.display(),
            uuid_string(&c.source_uuid),
            c.bytes_done,
            c.total,
            percent(c)
        ),
        Task::Restore => format!(
            "Encrypted volume \"{}\" holds an unfinished restore of a stream of volume {}.",
            vol.display(),
            uuid_string(&c.source_uuid)
        ),
    }
}

/// Exit 6 with how to finish the unfinished task.
fn unfinished_error(vol: &Path, c: &Checkpoint) -> Error {
    let (what, hint) = match c.task {
        Task::Backup => (
            "an interrupted backup",
            format!(
                "finish it with `evfs backup SRC {} --resume`, SRC being the volume with UUID {} (or run the backup again)",
                vol.display(),
                uuid_string(&c.source_uuid)
            ),
        ),
        Task::Restore => (
            "an interrupted restore",
            format!(
                "finish it by running `evfs restore STREAM {}` again (with -k ID for an incremental stream)",
                vol.display()
            ),
        ),
    };
    Error::dirty(format!(
        "{} is incomplete: {what} left it part old, part new, so it never checks clean",
        vol.display()
    ))
    .with_hint(hint)
}
