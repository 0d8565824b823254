//! What every command needs: the global flags ([`Ctx`]), the key provider
//! of the command line ([`CliKeys`]), and writing results to stdout.

use std::io::Write;

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::keys::{KeyId, Keystore, PassphraseSource, PrivateKey, passphrase};
use crate::ops::KeyUse;
use crate::ops::trust::Policy;

/// What every command may need: global flags and the keystore.
pub struct Ctx {
    pub keystore_flag: Option<std::path::PathBuf>,
    pub quiet: bool,
    pub verbose: u8,
    /// `--allow-unsigned`.
    pub allow_unsigned: bool,
    /// The report a `--json` command had made when it failed (`check`,
    /// `verify`): the failure's JSON object is merged into it.
    report: std::sync::Mutex<Option<serde_json::Value>>,
}

impl Ctx {
    pub fn new(keystore_flag: Option<std::path::PathBuf>, quiet: bool, verbose: u8) -> Ctx {
        Ctx {
            allow_unsigned: false,
            keystore_flag,
            quiet,
            verbose,
            report: std::sync::Mutex::new(None),
        }
    }

    pub fn from_cli(cli: &Cli) -> Ctx {
        Ctx {
            allow_unsigned: cli.allow_unsigned,
            ..Ctx::new(cli.keystore.clone(), cli.quiet, cli.verbose)
        }
    }

    /// Fail with `err`, keeping `report` for the JSON object of the failure.
    pub fn fail_with_report(&self, report: serde_json::Value, err: Error) -> Error {
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        err
    }

    pub(super) fn take_report(&self) -> Option<serde_json::Value> {
        self.report.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn keystore(&self) -> Result<Keystore> {
        Keystore::resolve(self.keystore_flag.as_deref())
    }

    /// A human message on stderr, unless `--quiet`.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            super::to_stderr(&format!("{}\n", msg.as_ref()));
        }
    }

    /// A message on stderr only with `-v`.
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            super::to_stderr(&format!("{}\n", msg.as_ref()));
        }
    }
}

/// The command line's key provider: passphrases from `--passphrase-file`
/// (for `-k`) and `--target-passphrase-file` (for `--target-key`), else the
/// stored passphrase, else a prompt on the terminal.
pub struct CliKeys<'a> {
    ctx: &'a Ctx,
    volume_file: Option<std::path::PathBuf>,
    target_file: Option<std::path::PathBuf>,
    signer_file: Option<std::path::PathBuf>,
    policy: Policy,
    luks: super::luks::SecretFiles,
    /// LUKS secrets read so far (a file is read once: `-` is standard
    /// input), by purpose.
    luks_read: std::sync::Mutex<Vec<(KeyUse, zeroize::Zeroizing<Vec<u8>>)>>,
}

impl<'a> CliKeys<'a> {
    /// Passphrases of `-k` from `volume_file`, of `--target-key` from
    /// `target_file`; a signer's from the stored passphrase or a prompt.
    pub fn new(
        ctx: &'a Ctx,
        volume_file: Option<std::path::PathBuf>,
        target_file: Option<std::path::PathBuf>,
    ) -> CliKeys<'a> {
        CliKeys {
            ctx,
            volume_file,
            target_file,
            signer_file: None,
            policy: Policy {
                allow_unsigned: ctx.allow_unsigned,
                ..Policy::default()
            },
            luks: super::luks::SecretFiles::default(),
            luks_read: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Where the LUKS secrets come from (`--luks-…`, `--target-luks-…`).
    pub fn with_luks(mut self, files: super::luks::SecretFiles) -> Self {
        self.luks = files;
        self
    }

    /// A signer's passphrase from `file` (a command without `-k`, whose
    /// `--passphrase-file` serves the signer).
    pub fn signer_file(mut self, file: Option<std::path::PathBuf>) -> Self {
        self.signer_file = file;
        self
    }

    /// Judge signatures with these run flags (`--trust`, `--require-signature`).
    pub fn with_policy(mut self, trust: Vec<String>, require: bool) -> Self {
        self.policy.trust = trust;
        self.policy.require = require;
        self
    }

    fn source(&self, purpose: KeyUse) -> PassphraseSource {
        PassphraseSource::file(match purpose {
            KeyUse::Volume => self.volume_file.as_deref(),
            KeyUse::Target => self.target_file.as_deref(),
            KeyUse::Signer => self.signer_file.as_deref(),
        })
    }
}

impl crate::ops::Keys for CliKeys<'_> {
    fn keystore(&self) -> Result<Keystore> {
        self.ctx.keystore()
    }

    fn unlock(&self, id: &KeyId, purpose: KeyUse) -> Result<PrivateKey> {
        passphrase::unlock(&self.keystore()?, id, &self.source(purpose))
    }

    fn try_unlock(&self, id: &KeyId, purpose: KeyUse) -> Result<Option<PrivateKey>> {
        let ks = self.keystore()?;
        match passphrase::available(&ks, id, &self.source(purpose))? {
            Some(pass) => ks.unlock(id, &pass).map(Some),
            None => Ok(None),
        }
    }

    fn policy(&self) -> Policy {
        self.policy.clone()
    }

    fn luks_secret(&self, purpose: KeyUse) -> Result<Option<crate::crypto::Passphrase>> {
        let mut read = self.luks_read.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, bytes)) = read.iter().find(|(p, _)| *p == purpose) {
            return Ok(Some(crate::crypto::Passphrase::new(bytes.to_vec())));
        }
        let Some((path, key_file)) = self.luks.of(purpose) else {
            return Ok(None);
        };
        let secret = crate::ops::luks::read_secret_file(path, key_file)?;
        read.push((purpose, zeroize::Zeroizing::new(secret.expose().to_vec())));
        Ok(Some(secret))
    }

    fn luks_prompt(&self, volume: &str, new: bool) -> Result<Option<crate::crypto::Passphrase>> {
        let Some(first) = passphrase::prompt(&format!("Passphrase for LUKS volume {volume}: "))?
        else {
            return Ok(None);
        };
        if new {
            let Some(again) = passphrase::prompt("Type it again: ")? else {
                return Ok(None);
            };
            if first.expose() != again.expose() {
                return Err(Error::usage("the two passphrases differ"));
            }
            if first.expose().is_empty() {
                return Err(Error::usage("an empty passphrase is not allowed"));
            }
        }
        Ok(Some(first))
    }
}

/// `--threads`, defaulting to every core.
pub fn threads(flag: Option<usize>) -> Result<usize> {
    match flag {
        Some(0) => Err(Error::usage("--threads must be at least 1")),
        flag => Ok(crate::ops::threads(flag)),
    }
}

/// Write the command's result to stdout; a closed stdout is an error, not a panic.
pub fn out(text: impl AsRef<str>) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_ref().as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing", "standard output", e))
}
