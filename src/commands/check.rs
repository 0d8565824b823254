//! `evfs check [-r]`: both EMD copies and the dirty bit, with the HP-UX
//! `evfsvol check` messages.
//!
//! A volume holding an unfinished backup or restore (a checkpoint in its
//! EMD) is incomplete, not merely dirty: its data is part old, part new.
//! `check` names the unfinished task and how to finish it (exit 6), and
//! `check -r` only repairs a bad EMD copy on it, keeping the checkpoint and
//! the dirty bit, so that `--resume` or a re-run can still finish the job.

use std::path::Path;

use serde_json::{Value, json};

use super::{Ctx, out, quoted};
use crate::emd::format::uuid_string;
use crate::emd::{self, Checkpoint, Copies, Task};
use crate::error::{Error, Result};
use crate::volume::{Device, Volume};

pub fn run(ctx: &Ctx, vol: &Path, reset: bool, json: bool) -> Result<()> {
    let dev = if reset {
        let mut dev = Device::open_write(vol)?;
        dev.lock(true, "reset or repair it")?;
        dev
    } else {
        // A writer (backup, restore, map) holds the volume: its dirty bit
        // is that writer's, not the sign of a crash. Name the writer.
        let mut dev = Device::open_read(vol)?;
        dev.lock(false, "check it")?;
        dev
    };
    let mut v = Volume::from_device(dev)?;
    let (primary_ok, backup_ok) = v.copies.health();
    let was_dirty = v.emd.dirty;
    let current = Some(v.emd.generation);
    let unfinished = v.emd.checkpoint.clone();
    let report = |dirty: bool, repaired: bool, copies_ok: (bool, bool)| -> Value {
        json!({
            "path": vol.display().to_string(),
            "dirty": dirty,
            "was_dirty": was_dirty,
            "incomplete": unfinished.as_ref().map(incomplete_json),
            "emd": {
                "primary": if copies_ok.0 { "ok" } else { "bad" },
                "backup": if copies_ok.1 { "ok" } else { "bad" },
            },
            "repaired": repaired,
            "ok": !dirty && copies_ok == (true, true) && unfinished.is_none(),
        })
    };
    let mut text = String::new();

    if !reset {
        if let Some(c) = &unfinished {
            if !json {
                out(format!("{}\n", unfinished_line(vol, c)))?;
            }
            return Err(ctx.fail_with_report(
                report(was_dirty, false, (primary_ok, backup_ok)),
                unfinished_error(vol, c),
            ));
        }
        if was_dirty {
            if !json {
                out(format!(
                    "Encrypted volume {} has not been properly shut down.\n",
                    quoted(vol)
                ))?;
            }
            let err = Error::dirty(format!(
                "{} is dirty: a writer did not finish (interrupted map, or a backup or restore of an older evfs)",
                vol.display()
            ))
            .with_hint(format!(
                "do not trust its data; finish the job again, or reset the bit with `evfs check -r {}`",
                vol.display()
            ));
            return Err(ctx.fail_with_report(report(true, false, (primary_ok, backup_ok)), err));
        }
        if !(primary_ok && backup_ok) {
            let err = Error::integrity(format!(
                "{}: EMD primary copy {}, backup copy {}",
                vol.display(),
                Copies::describe(&v.copies.primary, current),
                Copies::describe(&v.copies.backup, current)
            ))
            .with_hint(format!(
                "repair it from the good copy with `evfs check -r {}`",
                vol.display()
            ));
            return Err(ctx.fail_with_report(report(false, false, (primary_ok, backup_ok)), err));
        }
        if json {
            return out(format!("{}\n", report(false, false, (true, true))));
        }
        return out(format!(
            "Encrypted volume {} is clean (generation {}, both EMD copies ok).\n",
            quoted(vol),
            v.emd.generation
        ));
    }

    // -r: an unfinished task keeps its dirty bit and checkpoint.
    let resets = was_dirty && unfinished.is_none();
    if resets {
        text.push_str(&format!(
            "Encrypted volume {} has not been properly shut down.\nResetting dirty bit...\n",
            quoted(vol)
        ));
        v.emd.dirty = false;
    }
    for (name, ok) in [("primary", primary_ok), ("backup", backup_ok)] {
        if !ok {
            let state = if name == "primary" {
                &v.copies.primary
            } else {
                &v.copies.backup
            };
            text.push_str(&format!(
                "Repairing the {name} EMD copy ({}) from the good copy...\n",
                Copies::describe(state, current)
            ));
        }
    }
    let repaired = resets || !primary_ok || !backup_ok;
    if repaired {
        v.commit()?;
        // Read back what is now on the media, so that success means both copies are good.
        let after = emd::Copies::read(&v.dev)?;
        if after.health() != (true, true) {
            return Err(Error::runtime(format!(
                "{}: the EMD copies did not read back correctly after the repair",
                vol.display()
            )));
        }
    }
    if let Some(c) = &unfinished {
        text.push_str(&format!("{}\n", unfinished_line(vol, c)));
        if !json {
            out(text)?;
        } else {
            ctx.note(text.trim_end());
        }
        return Err(ctx.fail_with_report(
            report(v.emd.dirty, repaired, (true, true)),
            unfinished_error(vol, c),
        ));
    }
    if repaired {
        text.push_str(&format!(
            "Encrypted volume {} has been successfully recovered\n",
            quoted(vol)
        ));
    } else {
        text.push_str(&format!(
            "Encrypted volume {} is clean (generation {}, both EMD copies ok).\n",
            quoted(vol),
            v.emd.generation
        ));
    }
    if json {
        out(format!("{}\n", report(false, repaired, (true, true))))?;
        ctx.note(text.trim_end());
        Ok(())
    } else {
        out(text)
    }
}

fn percent(c: &Checkpoint) -> u64 {
    (c.bytes_done as u128 * 100)
        .checked_div(c.total as u128)
        .map_or(0, |p| p as u64)
}

fn incomplete_json(c: &Checkpoint) -> Value {
    json!({
        "task": match c.task { Task::Backup => "backup", Task::Restore => "restore" },
        "source_uuid": uuid_string(&c.source_uuid),
        "bytes_done": c.bytes_done,
        "total": c.total,
        "percent": percent(c),
    })
}

/// What `check` prints about an unfinished backup or restore.
fn unfinished_line(vol: &Path, c: &Checkpoint) -> String {
    match c.task {
        Task::Backup => format!(
            "Encrypted volume {} holds an unfinished backup from volume {}: {} of {} bytes ({}%) were copied.",
            quoted(vol),
            uuid_string(&c.source_uuid),
            c.bytes_done,
            c.total,
            percent(c)
        ),
        Task::Restore => format!(
            "Encrypted volume {} holds an unfinished restore of a stream of volume {}.",
            quoted(vol),
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
                "finish it by running `evfs restore STREAM {}` again",
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
