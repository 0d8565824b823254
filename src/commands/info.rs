//! `evfs info`: the public fields of a volume's EMD; no key needed.

use std::path::Path;

use serde_json::{Value, json};

use super::{CliKeys, Ctx, out};
use crate::emd::format::uuid_string;
use crate::emd::{Copies, Emd, Origin, Role, Task, Timestamp};
use crate::error::Result;
use crate::ops::Keys;
use crate::ops::trust;
use crate::text::printable;
use crate::volume::{Device, Volume};

pub fn run(ctx: &Ctx, vol: &Path, json: bool, luks_header: Option<&Path>) -> Result<()> {
    if super::luks_info::info(vol, luks_header, json)? {
        return Ok(());
    }
    let v = Volume::from_device(Device::open_read(vol)?)?;
    let keys = CliKeys::new(ctx, None, None);
    let signed = trust::signed_by(
        v.emd.signature.as_ref(),
        &v.emd.signed_message(),
        &keys,
        &Keys::policy(&keys),
    )?;
    if json {
        let mut doc = info_json(&v);
        doc["signed_by"] = super::report::signed_json(signed.as_ref());
        return out(format!("{doc}\n"));
    }
    let mut text = info_text(&v);
    text.push_str(&format!(
        "{:<14}{}\n",
        "signature:",
        match &signed {
            Some(s) => s.describe().trim_start_matches("signed by ").to_string(),
            None => "none (unsigned)".to_string(),
        }
    ));
    out(text)
}

/// The `info --json` object (also embedded in other commands' JSON).
pub fn info_json(v: &Volume) -> Value {
    let e = &v.emd;
    let (primary, backup) = v.copies.health();
    let ids =
        |role: Role| -> Vec<String> { e.slots_with(role).map(|s| s.id.to_string()).collect() };
    json!({
        "path": v.path().display().to_string(),
        "format": "evfs",
        "format_version": e.version,
        "uuid": e.uuid_string(),
        "label": e.label,
        "cipher": e.cipher.name(),
        "sector_size": e.sector_size,
        "data_offset": e.data_offset,
        "data_size": e.data_size,
        "data_length": e.data_len,
        "device_size": v.dev.size(),
        "state": e.state.name(),
        "dirty": e.dirty,
        "generation": e.generation,
        "data_version": e.data_version,
        "clone_of": e.clone_of.map(|u| uuid_string(&u)),
        "modified_since_backup": e.modified_since_backup(),
        "created": Timestamp { secs: e.created, nanos: 0 }.rfc3339(),
        "owner": e.owner().id.to_string(),
        "users": ids(Role::User),
        "recovery": ids(Role::Recovery),
        "emd": {
            "primary": if primary { "ok" } else { "bad" },
            "backup": if backup { "ok" } else { "bad" },
        },
        "provenance": provenance_json(e),
        "checkpoint": e.checkpoint.as_ref().map(|c| json!({
            "task": task_name(c.task),
            "source_uuid": uuid_string(&c.source_uuid),
            "bytes_done": c.bytes_done,
            "total": c.total,
            "source_generation": c.source_generation,
        })),
    })
}

fn task_name(task: Task) -> &'static str {
    match task {
        Task::Backup => "backup",
        Task::Restore => "restore",
    }
}

pub fn provenance_json(e: &Emd) -> Value {
    match &e.provenance {
        None => Value::Null,
        Some(p) => {
            let (source, source_uuid, source_data_version) = match p.origin {
                Origin::Volume { uuid, data_version } => {
                    ("volume", Some(uuid_string(&uuid)), Some(data_version))
                }
                Origin::Plain => ("plain", None, None),
            };
            json!({
                "source": source,
                "source_uuid": source_uuid,
                "source_data_version": source_data_version,
                "started": p.started.rfc3339(),
                "finished": p.finished.rfc3339(),
                "bytes": p.bytes,
                "plaintext_blake3": p.plaintext_blake3.map(|d| crate::hex::encode(&d)),
                "data_version": p.data_version,
            })
        }
    }
}

/// One line on where a volume's data came from, for humans.
pub fn provenance_line(e: &Emd) -> String {
    match e.provenance.as_ref().map(|p| (p, p.origin)) {
        None => "none".to_string(),
        Some((p, Origin::Volume { uuid, data_version })) => format!(
            "backup of volume {} at its data version {data_version} ({} bytes)",
            uuid_string(&uuid),
            p.bytes
        ),
        Some((p, Origin::Plain)) => {
            format!("encrypted from plain data of {} bytes", p.bytes)
        }
    }
}

fn info_text(v: &Volume) -> String {
    let e = &v.emd;
    let current = Some(e.generation);
    let mut t = String::new();
    let mut line = |k: &str, val: String| t.push_str(&format!("{k:<14}{val}\n"));
    line("volume:", v.path().display().to_string());
    line("uuid:", e.uuid_string());
    line("label:", printable(&e.label));
    line("cipher:", e.cipher.name().to_string());
    line("sector size:", e.sector_size.to_string());
    line(
        "data area:",
        format!(
            "{} bytes ({}) at offset {}, holding {} bytes of data",
            e.data_size,
            crate::size::human(e.data_size),
            e.data_offset,
            e.data_len
        ),
    );
    line("state:", e.state.name().to_string());
    line("dirty:", if e.dirty { "yes" } else { "no" }.to_string());
    line("generation:", e.generation.to_string());
    line(
        "data version:",
        if e.modified_since_backup() {
            format!("{} (modified since its last backup)", e.data_version)
        } else {
            e.data_version.to_string()
        },
    );
    if let Some(u) = &e.clone_of {
        line("clone of:", uuid_string(u));
    }
    line(
        "created:",
        Timestamp {
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
    line("provenance:", provenance_line(e));
    if let Some(p) = &e.provenance {
        line("  started:", p.started.rfc3339());
        line("  finished:", p.finished.rfc3339());
        line(
            "  blake3:",
            p.plaintext_blake3
                .map(|d| crate::hex::encode(&d))
                .unwrap_or_else(|| "(raw clone)".to_string()),
        );
    }
    if let Some(c) = &e.checkpoint {
        line(
            "checkpoint:",
            format!(
                "unfinished {} from volume {}: {} of {} bytes copied and synced (source generation {})",
                task_name(c.task),
                uuid_string(&c.source_uuid),
                c.bytes_done,
                c.total,
                c.source_generation
            ),
        );
    }
    t
}
