//! `evfs map`: the flags resolved into a [`MapRequest`], SIGINT and SIGTERM
//! turned into the stop flag, and the use-case served until then.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::progress::{CliObserver, ProgressMode};
use super::{CliKeys, Ctx};
use crate::cli::MapArgs;
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::ops::map::{self, MapRequest};

pub fn run(ctx: &Ctx, args: MapArgs) -> Result<()> {
    let req = MapRequest {
        volume: args.vol.clone(),
        socket: args.socket.clone(),
        key: args.key.as_deref().map(KeyId::parse).transpose()?,
        raw: args.raw,
        read_only: args.read_only,
        luks: super::luks::access(&args.luks),
    };
    // Installed before the volume is marked dirty: a signal never finds it
    // dirty without a handler to clean it up.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| Error::runtime(format!("cannot install a signal handler: {e}")))?;
    }
    let files = super::luks::SecretFiles::source(&args.luks);
    super::luks::one_stdin(
        &files,
        &[(
            "--passphrase-file",
            args.passphrase_file.as_deref() == Some(std::path::Path::new("-")),
        )],
    )?;
    let keys = CliKeys::new(ctx, args.passphrase_file.clone(), None).with_luks(files);
    let obs = CliObserver::new(ctx, ProgressMode::silent());
    map::serve(&req, &keys, &obs, &stop)?;
    Ok(())
}
