//! `evfs restore STREAM DST`: the flags resolved into a [`RestoreRequest`],
//! the use-case run, its report printed.

use std::path::Path;

use super::progress::{CliObserver, ProgressMode};
use super::{CliKeys, Ctx, report};
use crate::cli::RestoreArgs;
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::ops::restore::{self, RestoreRequest};

pub fn run(ctx: &Ctx, args: RestoreArgs) -> Result<()> {
    let stream = args.streams[0].clone();
    if stream.as_os_str() == "-" && args.key.passphrase_file.as_deref() == Some(Path::new("-")) {
        return Err(Error::usage(
            "the stream is standard input, so a passphrase cannot come from it too",
        ));
    }
    let req = RestoreRequest {
        stream: stream.clone(),
        more: args.streams[1..].to_vec(),
        target: args.dst.clone(),
        key: args.key.key.as_deref().map(KeyId::parse).transpose()?,
        force: args.force,
        luks: super::luks::target_access(&args.target_luks),
    };
    let files = super::luks::SecretFiles::default().with_target(&args.target_luks);
    super::luks::one_stdin(
        &files,
        &[
            (
                "--passphrase-file",
                args.key.passphrase_file.as_deref() == Some(Path::new("-")),
            ),
            ("the stream", stream.as_os_str() == "-"),
        ],
    )?;
    let keys = CliKeys::new(ctx, args.key.passphrase_file.clone(), None)
        .with_luks(files)
        .with_policy(
            report::fingerprints(&args.trust.trust)?,
            args.trust.require_signature,
        );
    let obs = CliObserver::new(
        ctx,
        ProgressMode {
            lines: args.progress.then_some(args.progress_interval),
            bar: !ctx.quiet && !args.json,
        },
    );
    let r = restore::run(&req, &keys, &obs)?;
    drop(obs);
    if args.json {
        let mut doc = report::json(&r);
        doc["signed_by"] = report::signed_json(r.signed_by.as_ref());
        super::out(format!("{doc}\n"))
    } else {
        ctx.note(report::summary(&r, "restore"));
        if let Some(s) = &r.signed_by {
            ctx.note(format!("evfs: {}", s.describe()));
        }
        Ok(())
    }
}
