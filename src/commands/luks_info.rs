//! `evfs info` on a LUKS volume: what `ops::luks::info` describes, as text
//! or as the JSON object of `info --json`.

use std::path::Path;

use serde_json::{Value, json};

use super::out;
use crate::error::Result;
use crate::ops::luks::info::{KdfInfo, LuksInfo};
use crate::text::printable;

fn kdf_json(k: &KdfInfo) -> Value {
    match k {
        KdfInfo::Pbkdf2 { hash, iterations } => {
            json!({"type": "pbkdf2", "hash": hash, "iterations": iterations})
        }
        KdfInfo::Argon2 {
            variant,
            time,
            memory_kib,
            cpus,
        } => json!({"type": variant, "time": time, "memory": memory_kib, "cpus": cpus}),
        KdfInfo::Other(name) => json!({"type": name}),
    }
}

fn kdf_text(k: &KdfInfo) -> String {
    match k {
        KdfInfo::Pbkdf2 { hash, iterations } => format!("pbkdf2 ({hash}, {iterations} iterations)"),
        KdfInfo::Argon2 {
            variant,
            time,
            memory_kib,
            cpus,
        } => format!("{variant} (time {time}, memory {memory_kib} KiB, {cpus} thread(s))"),
        KdfInfo::Other(name) => format!("{name} (not supported)"),
    }
}

/// The provenance token as JSON (the same names as an EVFS volume's).
fn provenance_json(i: &LuksInfo) -> Value {
    match &i.provenance {
        None => Value::Null,
        Some(p) => json!({
            "source": p.source,
            "source_uuid": p.source_uuid,
            "source_data_version": p.source_data_version,
            "started": p.started,
            "finished": p.finished,
            "bytes": p.bytes,
            "plaintext_blake3": crate::hex::encode(&p.plaintext_blake3),
            "modified_since_backup": p.modified,
        }),
    }
}

/// The `info --json` object of a LUKS volume.
pub fn info_json(i: &LuksInfo) -> Value {
    json!({
        "path": i.path,
        "format": i.format,
        "version": i.version,
        "uuid": i.uuid,
        "label": i.label,
        "subsystem": i.subsystem,
        "cipher": i.cipher,
        "key_size": i.key_size,
        "sector_size": i.sector_size,
        "iv_tweak": i.iv_tweak,
        "data_offset": i.data_offset,
        "data_size": i.data_size,
        "device_size": i.device_size,
        "header_file": i.header_file,
        "metadata_size": i.metadata_size,
        "seqid": i.seqid,
        "header": i.copies.as_ref().map(|c| json!({"primary": c[0], "secondary": c[1]})),
        "keyslots": i.keyslots.iter().map(|k| json!({
            "id": k.id,
            "type": k.type_name,
            "priority": k.priority,
            "key_size": k.key_size,
            "kdf": k.kdf.as_ref().map(kdf_json),
            "area_cipher": k.area_cipher,
            "enrolled": k.enrolled.as_ref().map(ToString::to_string),
        })).collect::<Vec<_>>(),
        "tokens": i.tokens.iter().map(|t| json!({
            "id": t.id,
            "type": t.type_name,
            "keyslots": t.keyslots,
        })).collect::<Vec<_>>(),
        "requirements": i.requirements,
        "incomplete": i.incomplete(),
        "supported": i.unsupported.is_empty(),
        "unsupported": i.unsupported,
        "provenance": provenance_json(i),
    })
}

/// `info` on a LUKS volume, for humans.
pub fn info_text(i: &LuksInfo) -> String {
    let mut t = String::new();
    let mut line = |k: &str, val: String| t.push_str(&format!("{k:<14}{val}\n"));
    line("volume:", i.path.clone());
    line("format:", i.format.to_uppercase());
    line("uuid:", printable(&i.uuid));
    if i.version == 2 {
        line("label:", printable(&i.label));
        if !i.subsystem.is_empty() {
            line("subsystem:", printable(&i.subsystem));
        }
    }
    line(
        "cipher:",
        match i.key_size {
            Some(k) => format!("{} ({}-bit key)", printable(&i.cipher), k * 8),
            None => printable(&i.cipher),
        },
    );
    line("sector size:", i.sector_size.to_string());
    line(
        "data area:",
        format!(
            "{} bytes ({}) at offset {}{}",
            i.data_size,
            crate::size::human(i.data_size),
            i.data_offset,
            if i.iv_tweak != 0 {
                format!(", IV offset {}", i.iv_tweak)
            } else {
                String::new()
            }
        ),
    );
    if let Some(h) = &i.header_file {
        line("header file:", h.clone());
    }
    if let Some(c) = &i.copies {
        line("header:", format!("primary {}, secondary {}", c[0], c[1]));
    }
    for k in &i.keyslots {
        let mut what = printable(&k.type_name);
        if let Some(kdf) = &k.kdf {
            what.push_str(&format!(", {}", kdf_text(kdf)));
        }
        match k.priority {
            Some(0) => what.push_str(", priority ignore"),
            Some(2) => what.push_str(", priority prefer"),
            _ => {}
        }
        if let Some(id) = &k.enrolled {
            what.push_str(&format!(", enrolled for {id}"));
        }
        line(&format!("keyslot {}:", k.id), what);
    }
    for tk in &i.tokens {
        let slots: Vec<String> = tk.keyslots.iter().map(u32::to_string).collect();
        line(
            &format!("token {}:", tk.id),
            if slots.is_empty() {
                printable(&tk.type_name)
            } else {
                format!(
                    "{} (keyslot {})",
                    printable(&tk.type_name),
                    slots.join(", ")
                )
            },
        );
    }
    if !i.requirements.is_empty() {
        let req: Vec<String> = i.requirements.iter().map(|r| printable(r)).collect();
        line("requirements:", req.join(", "));
    }
    if i.incomplete() {
        line(
            "state:",
            "incomplete: an evfs backup into it did not finish".to_string(),
        );
    }
    if !i.unsupported.is_empty() {
        line("unsupported:", i.unsupported.join("; "));
    }
    match &i.provenance {
        None => line("provenance:", "none".to_string()),
        Some(p) => {
            line(
                "provenance:",
                format!(
                    "{} {}({} bytes){}",
                    match p.source.as_str() {
                        "plain" => "backup of plain data".to_string(),
                        "stream" => "restore of a stream of volume".to_string(),
                        "evfs" => "backup of EVFS volume".to_string(),
                        other => format!("backup of {} volume", other.to_uppercase()),
                    },
                    p.source_uuid
                        .as_ref()
                        .map_or_else(String::new, |u| format!("{} ", printable(u))),
                    p.bytes,
                    if p.modified {
                        ", modified since through evfs map"
                    } else {
                        ""
                    }
                ),
            );
            line("  started:", printable(&p.started));
            line("  finished:", printable(&p.finished));
            line("  blake3:", crate::hex::encode(&p.plaintext_blake3));
        }
    }
    t
}

/// `evfs info` on a LUKS volume; `false` when `vol` is none.
pub fn info(vol: &Path, header: Option<&Path>, json: bool) -> Result<bool> {
    let Some(v) = crate::volume::luks::LuksVolume::probe(vol, header)? else {
        return Ok(false);
    };
    let i = crate::ops::luks::info::describe(&v, header)?;
    if json {
        out(format!("{}\n", info_json(&i)))?;
    } else {
        out(info_text(&i))?;
    }
    Ok(true)
}
