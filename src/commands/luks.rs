//! LUKS on the command line: the `--luks-…` and `--target-luks-…` flags
//! resolved into where secrets come from and how volumes are reached,
//! `evfs luks enroll|unenroll`, and `evfs info` on a LUKS volume.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::progress::{CliObserver, ProgressMode};
use super::{CliKeys, Ctx, out};
use crate::cli::{LuksArgs, LuksCommand, TargetLuksArgs};
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::ops::KeyUse;
use crate::ops::luks::LuksAccess;
use crate::ops::luks::enroll::{self, EnrollRequest};
use crate::ops::luks::info::{KdfInfo, LuksInfo};
use crate::text::printable;

/// The files LUKS secrets are read from: (path, whether it is a key file).
#[derive(Clone, Debug, Default)]
pub struct SecretFiles {
    pub volume: Option<(PathBuf, bool)>,
    pub target: Option<(PathBuf, bool)>,
}

impl SecretFiles {
    /// The file for `purpose`.
    pub fn of(&self, purpose: KeyUse) -> Option<(&Path, bool)> {
        let f = match purpose {
            KeyUse::Volume => &self.volume,
            KeyUse::Target => &self.target,
            KeyUse::Signer => return None,
        };
        f.as_ref().map(|(p, k)| (p.as_path(), *k))
    }

    /// `--luks-passphrase-file` / `--luks-key-file`.
    pub fn source(args: &LuksArgs) -> SecretFiles {
        SecretFiles {
            volume: file(&args.luks_passphrase_file, &args.luks_key_file),
            target: None,
        }
    }

    /// And `--target-luks-passphrase-file` / `--target-luks-key-file`.
    pub fn with_target(mut self, args: &TargetLuksArgs) -> SecretFiles {
        self.target = file(
            &args.target_luks_passphrase_file,
            &args.target_luks_key_file,
        );
        self
    }

    /// The paths read from standard input (`-`), with their flags.
    fn stdin_users(&self) -> Vec<&'static str> {
        let mut users = Vec::new();
        for (f, names) in [
            (&self.volume, ["--luks-passphrase-file", "--luks-key-file"]),
            (
                &self.target,
                ["--target-luks-passphrase-file", "--target-luks-key-file"],
            ),
        ] {
            if let Some((p, key)) = f
                && p.as_os_str() == "-"
            {
                users.push(names[usize::from(*key)]);
            }
        }
        users
    }
}

fn file(pass: &Option<PathBuf>, key: &Option<PathBuf>) -> Option<(PathBuf, bool)> {
    match (pass, key) {
        (Some(p), _) => Some((p.clone(), false)),
        (None, Some(k)) => Some((k.clone(), true)),
        (None, None) => None,
    }
}

/// The keyslot and detached header of `--luks-slot` / `--luks-header`.
pub fn access(args: &LuksArgs) -> LuksAccess {
    LuksAccess {
        slot: args.luks_slot,
        header: args.luks_header.clone(),
    }
}

/// The same for `--target-luks-slot` / `--target-luks-header`.
pub fn target_access(args: &TargetLuksArgs) -> LuksAccess {
    LuksAccess {
        slot: args.target_luks_slot,
        header: args.target_luks_header.clone(),
    }
}

/// Exit 2 when more than one secret would be read from standard input, or
/// one of them and data too (`stdin_data`: what else reads it).
pub fn one_stdin(files: &SecretFiles, others: &[(&str, bool)]) -> Result<()> {
    let mut users: Vec<&str> = files.stdin_users();
    users.extend(others.iter().filter(|(_, uses)| *uses).map(|(n, _)| *n));
    if users.len() > 1 {
        return Err(Error::usage(format!(
            "{} cannot all read standard input",
            users.join(" and ")
        ))
        .with_hint("put the passphrases in files"));
    }
    Ok(())
}

pub fn run(ctx: &Ctx, cmd: LuksCommand) -> Result<()> {
    let obs = CliObserver::new(ctx, ProgressMode::silent());
    match cmd {
        LuksCommand::Enroll { vol, id, luks } => {
            let files = SecretFiles::source(&luks);
            one_stdin(&files, &[])?;
            let keys = CliKeys::new(ctx, None, None).with_luks(files);
            let req = EnrollRequest {
                volume: vol,
                key: KeyId::parse(&id)?,
                access: access(&luks),
            };
            enroll::enroll(&req, &keys, &obs)?;
            Ok(())
        }
        LuksCommand::Unenroll {
            vol,
            id,
            luks,
            passphrase_file,
        } => {
            let files = SecretFiles::source(&luks);
            one_stdin(
                &files,
                &[(
                    "--passphrase-file",
                    passphrase_file.as_deref() == Some(Path::new("-")),
                )],
            )?;
            let keys = CliKeys::new(ctx, passphrase_file, None).with_luks(files);
            let req = EnrollRequest {
                volume: vol,
                key: KeyId::parse(&id)?,
                access: access(&luks),
            };
            enroll::unenroll(&req, &keys, &obs)?;
            Ok(())
        }
    }
}

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
