//! One file per subcommand. Each takes the parsed flags and a [`Ctx`], returns
//! a `Result`, and never exits the process itself.

mod admin;
mod backup;
mod completions;
mod ctx;
mod data;
mod demo;
mod dmtable;
mod hint;
mod info;
mod key;
mod luks;
mod luks_info;
mod map;
mod progress;
mod report;
mod restore;
mod verify;

use std::path::Path;

use crate::cli::{Cli, Command, EmdCommand, UserCommand};
use crate::error::{Error, Result};
pub(crate) use ctx::{CliKeys, Ctx, out, threads};

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
pub(crate) fn failure_json(err: &Error, report: Option<serde_json::Value>) -> serde_json::Value {
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
                    JsonTo::Stderr => to_stderr(&text),
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
        Command::Emd(EmdCommand::Sign { vol, key }) => admin::sign_emd(ctx, &vol, &key),
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

pub(crate) use crate::ops::DATA_ROLES;

/// Write `text` to standard error as it is. A closed or full standard
/// error is not a reason to fail (or panic, as `eprint!` does): the exit
/// status still says how the command ended.
pub(crate) fn to_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
