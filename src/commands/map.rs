//! `evfs map`: serve a volume's data area over NBD on a unix socket (EVFS
//! `evfsadm map`, with the kernel's NBD client or qemu in place of the
//! EVFS driver), until SIGINT or SIGTERM.
//!
//! Order matters for the dirty bit: the volume is opened and locked, the key
//! unlocked, the socket bound and the signal handlers installed before the
//! EMD is marked dirty, so that any failure up to there leaves the volume as
//! it was; after a clean stop the data is synced before the EMD is marked
//! clean again. A failure while serving leaves the volume dirty, which is
//! what the bit is for. A volume that was already dirty stays dirty.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{Ctx, DATA_ROLES, quoted};
use crate::cli::{KeyArgs, MapArgs};
use crate::crypto::VolumeKey;
use crate::emd::Copies;
use crate::error::{Error, IoContext, Result};
use crate::nbd::{self, ServeEvent};
use crate::size::human;
use crate::volume::export::VolumeExport;
use crate::volume::{Device, Volume};

pub fn run(ctx: &Ctx, args: MapArgs) -> Result<()> {
    let write = !args.read_only;
    let vol = args.vol.as_path();
    let mut dev = if write {
        Device::open_write(vol)?
    } else {
        Device::open_read(vol)?
    };
    let purpose = if write {
        "map it read-write"
    } else {
        "map it read-only"
    };
    dev.lock(write, purpose)?;
    // Read the EMD only under the lock: a writer that finished just before
    // may have replaced it.
    let mut v = Volume::from_device(dev)?;

    let key = if args.raw {
        if args.key.is_some() {
            ctx.note("evfs map: --raw serves the ciphertext; -k is not used");
        }
        None
    } else {
        let key = KeyArgs {
            key: args.key.clone().ok_or_else(|| {
                Error::usage("name the key that unlocks the volume with -k ID, or map it --raw")
            })?,
            passphrase_file: args.passphrase_file.clone(),
        };
        let pk = ctx.private_key(&key)?;
        let unlocked = v.unlock(&pk, DATA_ROLES, "map its data")?;
        v.require_enabled("served decrypted")?;
        Some(unlocked.key)
    };

    let listener = listen(&args.socket)?;
    let socket = SocketFile(args.socket.clone());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| Error::runtime(format!("cannot install a signal handler: {e}")))?;
    }

    let was_dirty = v.emd.dirty;
    if was_dirty {
        ctx.note(format!(
            "evfs map: warning: {} is dirty (a writer did not shut it down); it stays dirty after this map",
            vol.display()
        ));
    }
    if write {
        // A checkpoint belongs to an interrupted backup into this volume;
        // once the data changes, resuming it would be wrong.
        v.emd.dirty = true;
        v.emd.checkpoint = None;
        // Writes through the map are data writes: the data version moves
        // on now (a crash keeps it moved), and back at a clean stop if
        // nothing was written. A raw map has no key to re-seal it with.
        if let Some(k) = &key {
            v.emd.data_version += 1;
            v.emd.seal(k);
        }
        v.commit()?;
    }

    let file = v.dev.file().try_clone().ctx("reopening", vol)?;
    let export = Arc::new(VolumeExport::new(
        file,
        v.data_range(),
        v.emd.sector_size,
        key.as_ref().map(VolumeKey::xts),
        !write,
    ));
    announce(ctx, &args, &v);

    let on_event = |event: ServeEvent<'_>| match event {
        ServeEvent::Connected { id } => ctx.detail(format!("evfs map: client {id} connected")),
        ServeEvent::Disconnected { id, error: None } => {
            ctx.detail(format!("evfs map: client {id} disconnected"));
        }
        ServeEvent::Disconnected { id, error: Some(e) } => {
            ctx.note(format!("evfs map: client {id} dropped: {e}"))
        }
        // Always shown: a client got EIO, which the administrator must see.
        ServeEvent::ExportError { id, op, error } => eprintln!(
            "evfs map: {op} for client {id} failed on {}: {error} (the client was told EIO)",
            vol.display()
        ),
        ServeEvent::AcceptError { error } => {
            ctx.note(format!("evfs map: could not accept a client: {error}"));
        }
    };
    let served = nbd::serve_with_events(listener, export, &stop, &on_event);
    drop(socket);
    let stats = served.map_err(|e| {
        Error::runtime(format!(
            "serving NBD for {} on {} failed: {e}; the volume is left dirty",
            vol.display(),
            args.socket.display()
        ))
        .with_hint(format!(
            "check the data, then reset the bit with `evfs check -r {}`",
            vol.display()
        ))
    })?;

    if write {
        v.dev.sync()?;
        let unwritten = key.as_ref().filter(|_| stats.bytes_written == 0);
        if !was_dirty || unwritten.is_some() {
            mark_clean(&mut v, !was_dirty, unwritten)?;
        }
    }
    ctx.note(format!(
        "evfs map: stopped; {} connection(s), {} read, {} written; {} is {}",
        stats.connections,
        human(stats.bytes_read),
        human(stats.bytes_written),
        vol.display(),
        if v.emd.dirty { "dirty" } else { "clean" }
    ));
    Ok(())
}

/// Clear the dirty bit (when `clean`), and put the data version back when
/// nothing was written (`unwritten` holds the key to re-seal with), in the
/// EMD as it is on the media now, not as it was when the map started: what
/// administration commands changed meanwhile must survive. The dirty bit
/// lies outside the MAC, so clearing it needs no key.
fn mark_clean(v: &mut Volume, clean: bool, unwritten: Option<&VolumeKey>) -> Result<()> {
    let copies = Copies::read(&v.dev)?;
    let Some(current) = copies.current().cloned() else {
        return Err(crate::emd::no_valid_emd(&v.dev, &copies)
            .with_hint("the EMD was destroyed or damaged while the volume was mapped; restore a saved one with `evfs emd restore`"));
    };
    v.emd = current;
    v.copies = copies;
    if clean {
        v.emd.dirty = false;
    }
    if let Some(k) = unwritten
        && v.emd.mac_ok(k)
        && v.emd.data_version > 0
    {
        v.emd.data_version -= 1;
        v.emd.seal(k);
    }
    v.commit()
}

/// Tell where the export listens and how to reach it.
fn announce(ctx: &Ctx, args: &MapArgs, v: &Volume) {
    let socket = std::path::absolute(&args.socket).unwrap_or_else(|_| args.socket.clone());
    let what = if args.raw {
        "raw ciphertext"
    } else {
        "decrypted data area"
    };
    let mode = if args.read_only {
        "read-only"
    } else {
        "read-write"
    };
    let ro = if args.read_only { " -readonly" } else { "" };
    ctx.note(format!(
        "evfs map: serving the {what} of {} ({}, {mode}) over NBD on {}\n  \
         qemu-img info 'nbd+unix:///?socket={}'\n  \
         nbd-client -unix {} /dev/nbd0 -b {}{ro}    (kernel NBD; then mount /dev/nbd0)\n\
         evfs map: stop with Ctrl-C or `kill {}`{}",
        quoted(&args.vol),
        human(v.emd.data_size),
        socket.display(),
        socket.display(),
        socket.display(),
        v.emd.sector_size,
        std::process::id(),
        if args.read_only {
            ""
        } else {
            "; the volume is marked dirty until then"
        },
    ));
}

/// Bind the socket, readable and writable by its owner only (the export is
/// the volume's plaintext). A socket file left by a map that died is
/// replaced; a live one, or any other file, is not.
fn listen(path: &Path) -> Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::runtime(format!(
                    "{} is in use: a server is listening on it",
                    path.display()
                ))
                .with_hint("stop that server, or choose another --socket PATH"));
            }
            std::fs::remove_file(path).ctx("removing the stale socket", path)?;
        }
        Ok(_) => {
            return Err(Error::usage(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ))
            .with_hint("choose a --socket PATH that does not exist"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading the metadata of", path, e)),
    }
    // The umask is process-wide; no other thread runs yet, and setting it
    // around bind (rather than chmod after) leaves no window in which
    // another user could connect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    bound.ctx("listening on", path)
}

/// Removes the socket file when the server is done (or on an error path).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
