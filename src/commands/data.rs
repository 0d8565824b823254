//! `evfs hash` and `evfs cat`: a volume's plaintext (or a plain file's
//! bytes), through the one decrypting reader of `ops::read`.

use std::path::Path;

use super::luks::{SecretFiles, access, one_stdin};
use super::progress::{CliObserver, ProgressMode};
use super::{CliKeys, Ctx, out, threads};
use crate::cli::{LuksArgs, OptKeyArgs};
use crate::error::Result;
use crate::keys::KeyId;
use crate::ops::read;
use crate::pipeline::sink::stdout_file;
use crate::volume::identity::Storage;

/// The key provider of a command reading one volume: `-k`'s passphrase
/// file and the LUKS secret, not both from standard input.
fn keys<'a>(ctx: &'a Ctx, key: &OptKeyArgs, luks: &LuksArgs) -> Result<CliKeys<'a>> {
    let files = SecretFiles::source(luks);
    one_stdin(
        &files,
        &[(
            "--passphrase-file",
            key.passphrase_file.as_deref() == Some(Path::new("-")),
        )],
    )?;
    Ok(CliKeys::new(ctx, key.passphrase_file.clone(), None).with_luks(files))
}

pub fn hash(
    ctx: &Ctx,
    vol: &Path,
    key: &OptKeyArgs,
    threads_flag: Option<usize>,
    luks: &LuksArgs,
) -> Result<()> {
    let threads = threads(threads_flag)?;
    let id = key.key.as_deref().map(KeyId::parse).transpose()?;
    let keys = keys(ctx, key, luks)?;
    let obs = CliObserver::new(ctx, ProgressMode::silent());
    let digest = read::hash(vol, id.as_ref(), &access(luks), &keys, &obs, threads)?;
    out(format!("{}  {}\n", digest.to_hex(), vol.display()))
}

pub fn cat(
    ctx: &Ctx,
    vol: &Path,
    key: &OptKeyArgs,
    threads_flag: Option<usize>,
    luks: &LuksArgs,
) -> Result<()> {
    let threads = threads(threads_flag)?;
    let id = key.key.as_deref().map(KeyId::parse).transpose()?;
    let keys = keys(ctx, key, luks)?;
    let obs = CliObserver::new(ctx, ProgressMode::silent());
    let mut stdout = stdout_file()?;
    read::cat(
        vol,
        id.as_ref(),
        &access(luks),
        &keys,
        &obs,
        threads,
        &mut stdout,
        &Storage::of_stdout()?,
    )
}
