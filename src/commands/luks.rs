//! LUKS on the command line: the `--luks-…` and `--target-luks-…` flags
//! resolved into where secrets come from and how volumes are reached, and
//! `evfs luks enroll|unenroll`; `evfs info` on a LUKS volume is in
//! `luks_info.rs`.

use std::path::{Path, PathBuf};

use super::progress::{CliObserver, ProgressMode};
use super::{CliKeys, Ctx};
use crate::cli::{LuksArgs, LuksCommand, TargetLuksArgs};
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::ops::KeyUse;
use crate::ops::luks::LuksAccess;
use crate::ops::luks::enroll::{self, EnrollRequest};

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
