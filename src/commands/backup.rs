//! `evfs backup SRC DST`: the flags resolved into a [`BackupRequest`], the
//! use-case run, its report printed.

use std::path::Path;

use super::progress::{CliObserver, ProgressMode};
use super::{CliKeys, Ctx, report};
use crate::cli::{BackupArgs, TargetFormatArg};
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::ops::backup::decide::Format;
use crate::ops::backup::luks::LuksBackup;
use crate::ops::backup::{self, BackupRequest, Target};
use crate::ops::luks::LuksKdf;

pub fn run(ctx: &Ctx, args: BackupArgs) -> Result<()> {
    let req = request(&args)?;
    let files = super::luks::SecretFiles::source(&args.luks).with_target(&args.target_luks);
    super::luks::one_stdin(
        &files,
        &[
            (
                "--passphrase-file",
                args.key.passphrase_file.as_deref() == Some(Path::new("-")),
            ),
            (
                "--target-passphrase-file",
                args.target_passphrase_file.as_deref() == Some(Path::new("-")),
            ),
            ("the source", args.src.as_os_str() == "-"),
        ],
    )?;
    // Without -k, --passphrase-file serves the signer (--sign-with, or the
    // owner of a volume made from plain data).
    let keys = CliKeys::new(
        ctx,
        args.key.passphrase_file.clone(),
        args.target_passphrase_file.clone(),
    )
    .signer_file(
        args.key
            .key
            .is_none()
            .then(|| args.key.passphrase_file.clone())
            .flatten(),
    )
    .with_luks(files);
    let obs = CliObserver::new(
        ctx,
        ProgressMode {
            lines: args.progress.then_some(args.progress_interval),
            bar: !ctx.quiet && !args.json,
        },
    );
    let r = backup::run(&req, &keys, &obs)?;
    drop(obs);
    if !args.json {
        ctx.note(report::summary(&r, "backup"));
        return Ok(());
    }
    let text = format!("{}\n", report::json(&r));
    if req.target == Target::Stdout {
        super::to_stderr(&text);
        Ok(())
    } else {
        super::out(text)
    }
}

/// The request the flags describe, after the checks that only the command
/// line can make (what reads standard input).
fn request(args: &BackupArgs) -> Result<BackupRequest> {
    let target = match (&args.dst, &args.stream) {
        (_, Some(f)) => Target::StreamFile(f.clone()),
        (Some(d), None) if d.as_os_str() == "-" => Target::Stdout,
        (Some(d), None) => Target::Path(d.clone()),
        (None, None) => return Err(Error::usage("name a target: DST, - or --stream FILE")),
    };
    let stdin = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(Path::new("-"));
    let pass_stdin = stdin(&args.key.passphrase_file);
    let target_pass_stdin = stdin(&args.target_passphrase_file);
    if pass_stdin && target_pass_stdin {
        return Err(Error::usage(
            "--passphrase-file - and --target-passphrase-file - cannot both read standard input",
        ));
    }
    if args.src.as_os_str() == "-" && (pass_stdin || target_pass_stdin) {
        return Err(Error::usage(
            "the source is standard input, so a passphrase cannot come from it too",
        )
        .with_hint("put the passphrase in a file, or store it with `evfs key store-passphrase`"));
    }
    if args.target_passphrase_file.is_some() && args.target_key.is_none() {
        return Err(Error::usage(
            "--target-passphrase-file serves --target-key, which is not given",
        ));
    }
    let id = |text: &Option<String>| text.as_deref().map(KeyId::parse).transpose();
    Ok(BackupRequest {
        key: id(&args.key.key)?,
        owner: id(&args.owner)?,
        target_key: id(&args.target_key)?,
        sign_with: id(&args.sign_with)?,
        threads: super::threads(args.threads)?,
        raw: args.raw,
        same_key: args.same_key,
        rekey: args.rekey,
        full: args.full,
        since: args.since.clone(),
        manifest: args.manifest.clone(),
        cleartext: args.cleartext,
        sector_size: args.sector_size,
        compress: args.compress,
        sparse: args.sparse,
        resume: args.resume,
        force: args.force,
        direct: args.direct,
        luks: LuksBackup {
            source: super::luks::access(&args.luks),
            target: super::luks::target_access(&args.target_luks),
            target_format: args.target_format.map(|f| match f {
                TargetFormatArg::Evfs => Format::Evfs,
                TargetFormatArg::Luks2 => Format::Luks2,
            }),
            kdf: LuksKdf {
                memory_kib: args
                    .luks_kdf_memory
                    .map(|b| u32::try_from(b / 1024).unwrap_or(u32::MAX)),
                iterations: args.luks_kdf_iterations,
            },
        },
        ..BackupRequest::new(args.src.clone(), target)
    })
}
