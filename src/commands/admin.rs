//! The administration commands: `create`, `check [-r]`, `enable`,
//! `disable`, `user add|remove`, `owner`, `destroy`, `emd backup|restore`,
//! each resolved and handed to `ops::admin`.

use std::path::Path;

use serde_json::json;

use super::progress::{CliObserver, ProgressMode};
use super::{CliKeys, Ctx, out};
use crate::cli::{CreateArgs, KeyArgs};
use crate::error::Result;
use crate::keys::KeyId;
use crate::ops::admin::{self, check, create, emd_file};

/// The key provider and observer of a command unlocking with `key`.
fn with_key<'a>(ctx: &'a Ctx, key: &KeyArgs) -> Result<(KeyId, CliKeys<'a>, CliObserver<'a>)> {
    Ok((
        KeyId::parse(&key.key)?,
        CliKeys::new(ctx, key.passphrase_file.clone(), None),
        CliObserver::new(ctx, ProgressMode::silent()),
    ))
}

pub fn set_state(ctx: &Ctx, vol: &Path, key: &KeyArgs, enable: bool) -> Result<()> {
    let (id, keys, obs) = with_key(ctx, key)?;
    admin::set_state(&keys, &obs, vol, &id, enable)
}

pub fn user_add(ctx: &Ctx, vol: &Path, user: &str, key: &KeyArgs) -> Result<()> {
    let (id, keys, obs) = with_key(ctx, key)?;
    admin::user_add(&keys, &obs, vol, &KeyId::parse(user)?, &id)
}

pub fn user_remove(ctx: &Ctx, vol: &Path, user: &str, key: &KeyArgs) -> Result<()> {
    let (id, keys, obs) = with_key(ctx, key)?;
    admin::user_remove(&keys, &obs, vol, &KeyId::parse(user)?, &id)
}

pub fn owner(ctx: &Ctx, vol: &Path, new_owner: &str, key: &KeyArgs) -> Result<()> {
    let (id, keys, obs) = with_key(ctx, key)?;
    admin::owner(&keys, &obs, vol, &KeyId::parse(new_owner)?, &id)
}

pub fn sign_emd(ctx: &Ctx, vol: &Path, key: &KeyArgs) -> Result<()> {
    let (id, keys, obs) = with_key(ctx, key)?;
    admin::sign(&keys, &obs, vol, &id)
}

pub fn destroy(ctx: &Ctx, vol: &Path, key: &KeyArgs) -> Result<()> {
    let (id, keys, obs) = with_key(ctx, key)?;
    admin::destroy(&keys, &obs, vol, &id)
}

pub fn create(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    let req = create::CreateRequest {
        vol: args.vol,
        owner: KeyId::parse(&args.owner)?,
        size: args.size,
        cipher: args.cipher.cipher(),
        sector_size: args.sector_size,
        label: args.label,
        recovery: args
            .recovery
            .iter()
            .map(|r| KeyId::parse(r))
            .collect::<Result<_>>()?,
        force: args.force,
        sign_with: args.sign_with.as_deref().map(KeyId::parse).transpose()?,
    };
    let keys = CliKeys::new(ctx, None, None).signer_file(args.passphrase_file);
    create::run(&req, &keys, &CliObserver::new(ctx, ProgressMode::silent()))
}

pub fn emd_backup(ctx: &Ctx, vol: &Path, file: &Path) -> Result<()> {
    emd_file::backup(&CliObserver::new(ctx, ProgressMode::silent()), vol, file)
}

pub fn emd_restore(ctx: &Ctx, vol: &Path, file: &Path, force: bool) -> Result<()> {
    emd_file::restore(
        &CliObserver::new(ctx, ProgressMode::silent()),
        vol,
        file,
        force,
    )
}

/// `check`: the HP-UX lines on stdout (on stderr with `--json`, whose object
/// goes to stdout), exit 6 or 5 when the volume is not clean.
pub fn check(ctx: &Ctx, vol: &Path, reset: bool, json: bool) -> Result<()> {
    if let Some(lv) = crate::volume::luks::LuksVolume::probe(vol, None)? {
        return check_luks(ctx, &lv, vol, reset, json);
    }
    let r = check::run(vol, reset)?;
    let text: String = r.lines.iter().map(|l| format!("{l}\n")).collect();
    if !json {
        out(text)?;
        return r.error().map_or(Ok(()), Err);
    }
    if reset && !text.is_empty() {
        ctx.note(text.trim_end());
    }
    let report = json!({
        "path": vol.display().to_string(),
        "dirty": r.dirty,
        "was_dirty": r.was_dirty,
        "incomplete": r.unfinished.as_ref().map(|c| json!({
            "task": match c.task { crate::emd::Task::Backup => "backup", crate::emd::Task::Restore => "restore" },
            "source_uuid": crate::emd::format::uuid_string(&c.source_uuid),
            "bytes_done": c.bytes_done,
            "total": c.total,
            "percent": check::percent(c),
        })),
        "emd": {
            "primary": if r.copies_ok.0 { "ok" } else { "bad" },
            "backup": if r.copies_ok.1 { "ok" } else { "bad" },
        },
        "repaired": r.repaired,
        "ok": r.ok(),
    });
    match r.error() {
        Some(err) => Err(ctx.fail_with_report(report, err)),
        None => out(format!("{report}\n")),
    }
}

/// `check` on a LUKS volume: its header copies, and whether it holds an
/// unfinished evfs backup (exit 6).
fn check_luks(
    ctx: &Ctx,
    lv: &crate::volume::luks::LuksVolume,
    vol: &Path,
    reset: bool,
    json: bool,
) -> Result<()> {
    if reset {
        return Err(crate::error::Error::usage(format!(
            "{} is a LUKS volume: check -r resets and repairs EVFS volumes",
            vol.display()
        ))
        .with_hint(
            "cryptsetup repairs a damaged LUKS2 header copy (`cryptsetup repair VOL`); an interrupted evfs backup is completed by running it again",
        ));
    }
    let r = crate::ops::luks::check::run(lv, vol)?;
    let text: String = r.lines.iter().map(|l| format!("{l}\n")).collect();
    if !json {
        out(text)?;
        return r.error().map_or(Ok(()), Err);
    }
    let report = json!({
        "path": vol.display().to_string(),
        "format": r.format,
        "incomplete": r.incomplete,
        "header": r.copies.map(|(a, b)| json!({
            "primary": if a { "ok" } else { "bad" },
            "secondary": if b { "ok" } else { "bad" },
        })),
        "ok": r.ok(),
    });
    match r.error() {
        Some(err) => Err(ctx.fail_with_report(report, err)),
        None => out(format!("{report}\n")),
    }
}
