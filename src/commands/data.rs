//! `evfs hash` and `evfs cat`: a volume's plaintext (or a plain file's
//! bytes), through the one decrypting reader of `ops::read`.

use std::path::Path;

use super::progress::{CliObserver, ProgressMode};
use super::{CliKeys, Ctx, out, threads};
use crate::cli::{KeyArgs, OptKeyArgs};
use crate::error::Result;
use crate::keys::KeyId;
use crate::ops::read;
use crate::pipeline::sink::stdout_file;
use crate::volume::identity::Storage;

pub fn hash(ctx: &Ctx, vol: &Path, key: &OptKeyArgs, threads_flag: Option<usize>) -> Result<()> {
    let threads = threads(threads_flag)?;
    let id = key.key.as_deref().map(KeyId::parse).transpose()?;
    let keys = CliKeys::new(ctx, key.passphrase_file.clone(), None);
    let obs = CliObserver::new(ctx, ProgressMode::silent());
    let digest = read::hash(vol, id.as_ref(), &keys, &obs, threads)?;
    out(format!("{}  {}\n", digest.to_hex(), vol.display()))
}

pub fn cat(ctx: &Ctx, vol: &Path, key: &KeyArgs, threads_flag: Option<usize>) -> Result<()> {
    let threads = threads(threads_flag)?;
    let id = KeyId::parse(&key.key)?;
    let keys = CliKeys::new(ctx, key.passphrase_file.clone(), None);
    let obs = CliObserver::new(ctx, ProgressMode::silent());
    let mut stdout = stdout_file()?;
    read::cat(
        vol,
        &id,
        &keys,
        &obs,
        threads,
        &mut stdout,
        &Storage::of_stdout()?,
    )
}
