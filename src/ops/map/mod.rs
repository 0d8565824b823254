//! `evfs map` as a use-case: serve a volume's data area over NBD on a unix
//! socket (EVFS `evfsadm map`, with the kernel's NBD client or qemu in
//! place of the EVFS driver) until the caller's stop flag is raised.
//!
//! Order matters for the dirty bit: the volume is opened and locked, the key
//! unlocked and the socket bound before the EMD is marked dirty, so that any
//! failure up to there leaves the volume as it was; after a clean stop the
//! data is synced before the EMD is marked clean again. A failure while
//! serving leaves the volume dirty, which is what the bit is for. A volume
//! that was already dirty stays dirty.

mod export;
mod luks;

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{DATA_ROLES, KeyUse, Keys, Observer, trust};
use crate::error::{Error, IoContext, Result};
use crate::keys::KeyId;
use crate::nbd::{self, ServeEvent, ServeStats};
use crate::size::human;
use crate::volume::transaction::Transaction;
use crate::volume::{Device, Volume};
pub(crate) use export::{ExportCipher, VolumeExport};

/// A map: which volume, on which socket, how.
#[derive(Clone, Debug)]
pub struct MapRequest {
    /// The EVFS or LUKS volume to serve.
    pub volume: PathBuf,
    /// The Unix socket to listen on (a stale one is replaced).
    pub socket: PathBuf,
    /// The key that unlocks the volume (not needed with `raw`).
    pub key: Option<KeyId>,
    /// Serve the ciphertext as it lies.
    pub raw: bool,
    /// Refuse writes; the volume is opened read-only and its dirty bit left alone.
    pub read_only: bool,
    /// The keyslot and detached header of a LUKS volume.
    pub luks: super::luks::LuksAccess,
}

/// Serve until `stop` is raised; the statistics of the run.
pub fn serve(
    req: &MapRequest,
    keys: &dyn Keys,
    obs: &dyn Observer,
    stop: &Arc<AtomicBool>,
) -> Result<ServeStats> {
    let write = !req.read_only;
    let vol = req.volume.as_path();
    if crate::volume::luks::LuksVolume::probe(vol, req.luks.header.as_deref())?.is_some() {
        return luks::serve(req, keys, obs, stop);
    }
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
    let v = Volume::from_device(dev)?;

    let key = if req.raw {
        if req.key.is_some() {
            obs.note("evfs map: --raw serves the ciphertext; -k is not used");
        }
        None
    } else {
        let id = req.key.as_ref().ok_or_else(|| {
            Error::usage("name the key that unlocks the volume with -k ID, or map it --raw")
        })?;
        let pk = keys.unlock(id, KeyUse::Volume)?;
        let unlocked = trust::unlock(&v.emd, v.path(), &pk, DATA_ROLES, "map its data", keys)?;
        v.require_enabled("served decrypted")?;
        Some((unlocked.key, pk))
    };
    // The key that seals and signs the EMD after writes; a raw map has none.
    let (key, pk) = match key {
        Some((k, pk)) => (Some(k), Some(pk)),
        None => (None, None),
    };

    let listener = listen(&req.socket)?;
    let socket = SocketFile(req.socket.clone());
    let was_dirty = v.emd.dirty;
    if was_dirty {
        obs.note(&format!(
            "evfs map: warning: {} is dirty (a writer did not shut it down); it stays dirty after this map",
            vol.display()
        ));
    }
    let txn = if write {
        // A checkpoint belongs to an interrupted backup into this volume;
        // once the data changes, resuming it would be wrong. Writes through
        // the map are data writes: the data version moves on now (a crash
        // keeps it moved), and back at a clean stop if nothing was written.
        // A raw map has no key to re-seal it with.
        let mut emd = v.emd.clone();
        emd.checkpoint = None;
        if let Some(k) = &key {
            emd.data_version += 1;
            trust::seal(&mut emd, k, pk.as_ref());
        }
        Some(Transaction::begin(&v.dev, emd, v.emd.generation + 1)?)
    } else {
        None
    };

    let file = v.dev.file().try_clone().ctx("reopening", vol)?;
    let export = Arc::new(VolumeExport::new(
        file,
        v.data_range(),
        v.emd.sector_size,
        key.as_ref().map(|k| ExportCipher::Evfs(k.xts())),
        !write,
    ));
    announce(obs, req, v.emd.data_size, v.emd.sector_size);

    let on_event = |event: ServeEvent<'_>| report_event(obs, vol, event);
    let served = nbd::serve_with_events(listener, export, stop, &on_event);
    drop(socket);
    let stats = served.map_err(|e| {
        Error::runtime(format!(
            "serving NBD for {} on {} failed: {e}; the volume is left dirty",
            vol.display(),
            req.socket.display()
        ))
        .with_hint(format!(
            "check the data, then reset the bit with `evfs check -r {}`",
            vol.display()
        ))
    })?;

    let mut dirty = was_dirty;
    if let Some(txn) = txn {
        if was_dirty {
            v.dev.sync()?;
        } else {
            let unwritten = stats.bytes_written == 0;
            txn.commit(key.as_ref(), pk.as_ref(), |emd| {
                if unwritten && key.is_some() {
                    emd.data_version -= 1;
                }
                Ok(())
            })?;
        }
    } else {
        dirty = v.emd.dirty;
    }
    obs.note(&format!(
        "evfs map: stopped; {} connection(s), {} read, {} written; {} is {}",
        stats.connections,
        human(stats.bytes_read),
        human(stats.bytes_written),
        vol.display(),
        if dirty { "dirty" } else { "clean" }
    ));
    Ok(stats)
}

/// What the server tells while it serves.
fn report_event(obs: &dyn Observer, vol: &Path, event: ServeEvent<'_>) {
    match event {
        ServeEvent::Connected { id } => obs.detail(&format!("evfs map: client {id} connected")),
        ServeEvent::Disconnected { id, error: None } => {
            obs.detail(&format!("evfs map: client {id} disconnected"));
        }
        ServeEvent::Disconnected { id, error: Some(e) } => {
            obs.note(&format!("evfs map: client {id} dropped: {e}"))
        }
        // A client got EIO, which the administrator must see.
        ServeEvent::ExportError { id, op, error } => obs.warn(&format!(
            "evfs map: {op} for client {id} failed on {}: {error} (the client was told EIO)",
            vol.display()
        )),
        ServeEvent::AcceptError { error } => {
            obs.note(&format!("evfs map: could not accept a client: {error}"));
        }
    }
}

/// Tell where the export listens and how to reach it.
fn announce(obs: &dyn Observer, req: &MapRequest, data_size: u64, sector_size: u32) {
    let socket = std::path::absolute(&req.socket).unwrap_or_else(|_| req.socket.clone());
    let what = if req.raw {
        "raw ciphertext"
    } else {
        "decrypted data area"
    };
    let mode = if req.read_only {
        "read-only"
    } else {
        "read-write"
    };
    let ro = if req.read_only { " -readonly" } else { "" };
    obs.note(&format!(
        "evfs map: serving the {what} of \"{}\" ({}, {mode}) over NBD on {}\n  \
         qemu-img info 'nbd+unix:///?socket={}'\n  \
         nbd-client -unix {} /dev/nbd0 -b {}{ro}    (kernel NBD; then mount /dev/nbd0)\n\
         evfs map: stop with Ctrl-C or `kill {}`{}",
        req.volume.display(),
        human(data_size),
        socket.display(),
        socket.display(),
        socket.display(),
        sector_size,
        std::process::id(),
        if req.read_only {
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
