//! `evfs info`: the public fields of a volume's EMD; no key needed.

use std::path::Path;

use serde_json::{Value, json};

use super::{Ctx, out};
use crate::emd::{Copies, Emd, Role};
use crate::error::Result;
use crate::volume::{Device, Volume};

pub fn run(_ctx: &Ctx, vol: &Path, json: bool) -> Result<()> {
    let v = Volume::from_device(Device::open_read(vol)?)?;
    if json {
        return out(format!("{}\n", info_json(&v)));
    }
    out(info_text(&v))
}

/// The `info --json` object (also embedded in other commands' JSON).
pub fn info_json(v: &Volume) -> Value {
    let e = &v.emd;
    let (primary, backup) = v.copies.health();
    let ids =
        |role: Role| -> Vec<String> { e.slots_with(role).map(|s| s.id.to_string()).collect() };
    json!({
        "path": v.path().display().to_string(),
        "uuid": e.uuid_string(),
        "label": e.label,
        "cipher": e.cipher.name(),
        "sector_size": e.sector_size,
        "data_offset": e.data_offset,
        "data_size": e.data_size,
        "device_size": v.dev.size(),
        "state": e.state.name(),
        "dirty": e.dirty,
        "generation": e.generation,
        "created": crate::emd::Timestamp { secs: e.created, nanos: 0 }.rfc3339(),
        "owner": e.owner().id.to_string(),
        "users": ids(Role::User),
        "recovery": ids(Role::Recovery),
        "emd": {
            "primary": if primary { "ok" } else { "bad" },
            "backup": if backup { "ok" } else { "bad" },
        },
        "provenance": provenance_json(e),
        "checkpoint": e.checkpoint.as_ref().map(|c| json!({
            "source_uuid": crate::emd::format::uuid_string(&c.source_uuid),
            "bytes_done": c.bytes_done,
            "total": c.total,
            "source_generation": c.source_generation,
        })),
    })
}

pub fn provenance_json(e: &Emd) -> Value {
    match &e.provenance {
        None => Value::Null,
        Some(p) => json!({
            "source_uuid": crate::emd::format::uuid_string(&p.source_uuid),
            "started": p.started.rfc3339(),
            "finished": p.finished.rfc3339(),
            "bytes": p.bytes,
            "plaintext_blake3": p.plaintext_blake3.map(|d| crate::hex::encode(&d)),
        }),
    }
}

fn info_text(v: &Volume) -> String {
    let e = &v.emd;
    let current = Some(e.generation);
    let mut t = String::new();
    let mut line = |k: &str, val: String| t.push_str(&format!("{k:<14}{val}\n"));
    line("volume:", v.path().display().to_string());
    line("uuid:", e.uuid_string());
    line("label:", e.label.clone());
    line("cipher:", e.cipher.name().to_string());
    line("sector size:", e.sector_size.to_string());
    line(
        "data area:",
        format!(
            "{} bytes ({}) at offset {}",
            e.data_size,
            crate::size::human(e.data_size),
            e.data_offset
        ),
    );
    line("state:", e.state.name().to_string());
    line("dirty:", if e.dirty { "yes" } else { "no" }.to_string());
    line("generation:", e.generation.to_string());
    line(
        "created:",
        crate::emd::Timestamp {
            secs: e.created,
            nanos: 0,
        }
        .rfc3339(),
    );
    for s in &e.slots {
        line(
            &format!("{}:", s.role.name()),
            format!(
                "{} ({})",
                s.id,
                crate::keys::keystore::fingerprint(&s.public)
            ),
        );
    }
    line("emd primary:", Copies::describe(&v.copies.primary, current));
    line("emd backup:", Copies::describe(&v.copies.backup, current));
    match &e.provenance {
        None => line("provenance:", "none".to_string()),
        Some(p) => {
            line(
                "provenance:",
                format!(
                    "backup of {} ({} bytes)",
                    crate::emd::format::uuid_string(&p.source_uuid),
                    p.bytes
                ),
            );
            line("  started:", p.started.rfc3339());
            line("  finished:", p.finished.rfc3339());
            line(
                "  blake3:",
                p.plaintext_blake3
                    .map(|d| crate::hex::encode(&d))
                    .unwrap_or_else(|| "(raw clone)".to_string()),
            );
        }
    }
    if let Some(c) = &e.checkpoint {
        line(
            "checkpoint:",
            format!(
                "{} of {} bytes copied and synced (source {} at generation {})",
                c.bytes_done,
                c.total,
                crate::emd::format::uuid_string(&c.source_uuid),
                c.source_generation
            ),
        );
    }
    t
}
