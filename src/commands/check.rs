//! `evfs check [-r]`: both EMD copies and the dirty bit, with the HP-UX
//! `evfsvol check` messages.

use std::path::Path;

use serde_json::json;

use super::{Ctx, out, quoted};
use crate::emd::{self, Copies};
use crate::error::{Error, Result};
use crate::volume::{Device, Volume};

pub fn run(ctx: &Ctx, vol: &Path, reset: bool, json: bool) -> Result<()> {
    let dev = if reset {
        let mut dev = Device::open_write(vol)?;
        dev.lock(true, "reset or repair it")?;
        dev
    } else {
        Device::open_read(vol)?
    };
    let mut v = Volume::from_device(dev)?;
    let (primary_ok, backup_ok) = v.copies.health();
    let was_dirty = v.emd.dirty;
    let current = Some(v.emd.generation);
    let mut text = String::new();

    if !reset {
        if json {
            out(format!(
                "{}\n",
                json!({
                    "path": vol.display().to_string(),
                    "dirty": was_dirty,
                    "emd": {
                        "primary": if primary_ok { "ok" } else { "bad" },
                        "backup": if backup_ok { "ok" } else { "bad" },
                    },
                    "repaired": false,
                    "ok": !was_dirty && primary_ok && backup_ok,
                })
            ))?;
        }
        if was_dirty {
            if !json {
                out(format!(
                    "Encrypted volume {} has not been properly shut down.\n",
                    quoted(vol)
                ))?;
            }
            return Err(Error::dirty(format!(
                "{} is dirty: a writer did not finish (interrupted backup, restore or map)",
                vol.display()
            ))
            .with_hint(format!(
                "do not trust its data; finish the job again, or reset the bit with `evfs check -r {}`",
                vol.display()
            )));
        }
        if !(primary_ok && backup_ok) {
            return Err(Error::integrity(format!(
                "{}: EMD primary copy {}, backup copy {}",
                vol.display(),
                Copies::describe(&v.copies.primary, current),
                Copies::describe(&v.copies.backup, current)
            ))
            .with_hint(format!(
                "repair it from the good copy with `evfs check -r {}`",
                vol.display()
            )));
        }
        if !json {
            out(format!(
                "Encrypted volume {} is clean (generation {}, both EMD copies ok).\n",
                quoted(vol),
                v.emd.generation
            ))?;
        }
        return Ok(());
    }

    if was_dirty {
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
    let repaired = was_dirty || !primary_ok || !backup_ok;
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
        out(format!(
            "{}\n",
            json!({
                "path": vol.display().to_string(),
                "dirty": false,
                "was_dirty": was_dirty,
                "emd": {"primary": "ok", "backup": "ok"},
                "repaired": repaired,
                "ok": true,
            })
        ))?;
        ctx.note(text.trim_end());
        Ok(())
    } else {
        out(text)
    }
}
