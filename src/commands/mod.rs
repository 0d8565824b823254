//! One file per subcommand. Each takes the parsed flags and a [`Ctx`], returns
//! a `Result`, and never exits the process itself.

mod admin;
mod backup;
mod completions;
mod data;
mod demo;
mod dmtable;
mod hint;
mod info;
mod key;
mod luks;
mod map;
mod progress;
mod report;
mod restore;
mod verify;

use std::io::Write;
use std::path::Path;

use crate::cli::{Cli, Command, EmdCommand, UserCommand};
use crate::error::{Error, Result};
use crate::keys::{KeyId, Keystore, PassphraseSource, PrivateKey, passphrase};

/// What every command may need: global flags and the keystore.
pub struct Ctx {
    pub keystore_flag: Option<std::path::PathBuf>,
    pub quiet: bool,
    pub verbose: u8,
    /// The report a `--json` command had made when it failed (`check`,
    /// `verify`): the failure's JSON object is merged into it.
    report: std::sync::Mutex<Option<serde_json::Value>>,
}

impl Ctx {
    pub fn new(keystore_flag: Option<std::path::PathBuf>, quiet: bool, verbose: u8) -> Ctx {
        Ctx {
            keystore_flag,
            quiet,
            verbose,
            report: std::sync::Mutex::new(None),
        }
    }

    pub fn from_cli(cli: &Cli) -> Ctx {
        Ctx::new(cli.keystore.clone(), cli.quiet, cli.verbose)
    }

    /// Fail with `err`, keeping `report` for the JSON object of the failure.
    pub fn fail_with_report(&self, report: serde_json::Value, err: Error) -> Error {
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        err
    }

    fn take_report(&self) -> Option<serde_json::Value> {
        self.report.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn keystore(&self) -> Result<Keystore> {
        Keystore::resolve(self.keystore_flag.as_deref())
    }

    /// A human message on stderr, unless `--quiet`.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A message on stderr only with `-v`.
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{}", msg.as_ref());
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
    luks: luks::SecretFiles,
    /// LUKS secrets read so far (a file is read once: `-` is standard
    /// input), by purpose.
    luks_read: std::sync::Mutex<Vec<(crate::ops::KeyUse, zeroize::Zeroizing<Vec<u8>>)>>,
}

impl<'a> CliKeys<'a> {
    pub fn new(
        ctx: &'a Ctx,
        volume_file: Option<std::path::PathBuf>,
        target_file: Option<std::path::PathBuf>,
    ) -> CliKeys<'a> {
        CliKeys {
            ctx,
            volume_file,
            target_file,
            luks: luks::SecretFiles::default(),
            luks_read: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Where the LUKS secrets come from (`--luks-…`, `--target-luks-…`).
    pub fn with_luks(mut self, files: luks::SecretFiles) -> Self {
        self.luks = files;
        self
    }
}

impl crate::ops::Keys for CliKeys<'_> {
    fn keystore(&self) -> Result<Keystore> {
        self.ctx.keystore()
    }

    fn unlock(&self, id: &KeyId, purpose: crate::ops::KeyUse) -> Result<PrivateKey> {
        let file = match purpose {
            crate::ops::KeyUse::Volume => self.volume_file.as_deref(),
            crate::ops::KeyUse::Target => self.target_file.as_deref(),
        };
        passphrase::unlock(&self.keystore()?, id, &PassphraseSource::file(file))
    }

    fn luks_secret(
        &self,
        purpose: crate::ops::KeyUse,
    ) -> Result<Option<crate::crypto::Passphrase>> {
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

/// Where a command's `--json` object goes, when it was asked for one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JsonTo {
    Stdout,
    /// Standard output carries data (`backup ... -`).
    Stderr,
}

fn json_to(cmd: &Command) -> Option<JsonTo> {
    let to = |json: bool| json.then_some(JsonTo::Stdout);
    match cmd {
        Command::Info { json, .. } | Command::Check { json, .. } => to(*json),
        Command::Key(crate::cli::KeyCommand::List { json }) => to(*json),
        Command::Restore(a) => to(a.json),
        Command::Verify(a) => to(a.json),
        Command::Backup(a) if a.json && a.dst.as_deref() == Some(Path::new("-")) => {
            Some(JsonTo::Stderr)
        }
        Command::Backup(a) => to(a.json),
        _ => None,
    }
}

/// The JSON object of a failure: at least `ok`, `exit`, `error` and `hint`,
/// merged into the report the command had made, if any.
pub fn failure_json(err: &Error, report: Option<serde_json::Value>) -> serde_json::Value {
    let mut obj = match report {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    obj.insert("ok".into(), false.into());
    obj.insert("exit".into(), err.exit_code().into());
    obj.insert("error".into(), err.to_string().into());
    obj.insert(
        "hint".into(),
        err.hint()
            .map_or(serde_json::Value::Null, |h| h.to_string().into()),
    );
    serde_json::Value::Object(obj)
}

/// Run the parsed command line. With `--json`, a failure prints its JSON
/// object too (on stdout, or on stderr where stdout carries data), so that
/// a cron job logs one object on every exit.
pub fn run(cli: Cli) -> Result<()> {
    let json = json_to(&cli.command);
    let ctx = Ctx::from_cli(&cli);
    let closed_pipe_is_fine = matches!(cli.command, Command::Cat { .. } | Command::Hash { .. });
    let result = dispatch(&ctx, cli);
    match result {
        // A reader that stops reading (`evfs cat vol | head`) is not an
        // error for the commands that only write data, as for `cat(1)`.
        Err(e) if e.is_broken_pipe() && closed_pipe_is_fine => Ok(()),
        Err(e) => {
            if let Some(to) = json {
                let text = format!("{}\n", failure_json(&e, ctx.take_report()));
                match to {
                    JsonTo::Stdout => {
                        let _ = out(text);
                    }
                    JsonTo::Stderr => eprint!("{text}"),
                }
            }
            Err(e)
        }
        Ok(()) => Ok(()),
    }
}

fn dispatch(ctx: &Ctx, cli: Cli) -> Result<()> {
    if let Err(e) = crate::crypto::secret::protect_process() {
        ctx.detail(format!(
            "evfs: warning: could not keep keys out of core dumps: {e}"
        ));
    }
    if let Err(e) = crate::pipeline::source::install_sigbus_guard() {
        ctx.detail(format!("evfs: warning: no SIGBUS guard: {e}"));
    }
    match cli.command {
        Command::Key(cmd) => key::run(ctx, cmd),
        Command::Create(args) => admin::create(ctx, args),
        Command::Info {
            vol,
            json,
            luks_header,
        } => info::run(ctx, &vol, json, luks_header.as_deref()),
        Command::Enable { vol, key } => admin::set_state(ctx, &vol, &key, true),
        Command::Disable { vol, key } => admin::set_state(ctx, &vol, &key, false),
        Command::Check { vol, reset, json } => admin::check(ctx, &vol, reset, json),
        Command::User(UserCommand::Add { vol, id, key }) => admin::user_add(ctx, &vol, &id, &key),
        Command::User(UserCommand::Remove { vol, id, key }) => {
            admin::user_remove(ctx, &vol, &id, &key)
        }
        Command::Owner { vol, id, key } => admin::owner(ctx, &vol, &id, &key),
        Command::Emd(EmdCommand::Backup { vol, file }) => admin::emd_backup(ctx, &vol, &file),
        Command::Emd(EmdCommand::Restore { vol, file, force }) => {
            admin::emd_restore(ctx, &vol, &file, force)
        }
        Command::Destroy { vol, key } => admin::destroy(ctx, &vol, &key),
        Command::Hash {
            vol,
            key,
            threads,
            luks,
        } => data::hash(ctx, &vol, &key, threads, &luks),
        Command::Cat {
            vol,
            key,
            threads,
            luks,
        } => data::cat(ctx, &vol, &key, threads, &luks),
        Command::Backup(args) => backup::run(ctx, args),
        Command::Demo { dir, size, threads } => demo::run(ctx, dir, size, threads),
        Command::Restore(args) => restore::run(ctx, args),
        Command::Verify(args) => verify::run(ctx, args),
        Command::Map(args) => map::run(ctx, args),
        Command::Dmtable { vol, key, luks } => dmtable::run(ctx, &vol, &key, &luks),
        Command::Luks(cmd) => luks::run(ctx, cmd),
        Command::Completions { shell } => completions::run(shell),
    }
}

pub use crate::ops::DATA_ROLES;
