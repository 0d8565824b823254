//! `evfs map` of a LUKS volume: its data area decrypted with dm-crypt's IV
//! rule (or `--raw`, the ciphertext), served like an EVFS volume's.
//!
//! LUKS has no dirty bit. A read-write map holds evfs's write lock for as
//! long as it serves; when it wrote data into a volume whose data evfs
//! recorded (an `evfs-provenance` token), the token is marked modified at
//! the stop, so that `verify` says the volume changed since its backup
//! rather than failing its digest. A volume marked `evfs-incomplete` (an
//! unfinished backup into it) is refused, as a source is.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{ExportCipher, MapRequest, SocketFile, VolumeExport, announce, listen, report_event};
use crate::error::{Error, IoContext, Result};
use crate::luks::Header;
use crate::nbd::{self, ServeStats};
use crate::ops::luks::token::Provenance;
use crate::ops::{KeyUse, Keys, Observer};
use crate::size::human;
use crate::volume::luks::LuksVolume;

pub(super) fn serve(
    req: &MapRequest,
    keys: &dyn Keys,
    obs: &dyn Observer,
    stop: &Arc<AtomicBool>,
) -> Result<ServeStats> {
    let write = !req.read_only;
    let vol = req.volume.as_path();
    let mut lv = LuksVolume::open(vol, req.luks.header.as_deref(), write)?;
    lv.lock(
        write,
        if write {
            "map it read-write"
        } else {
            "map it read-only"
        },
    )?;
    // The header as it is under the lock.
    lv.reread()?;
    let area = lv.data_area()?;
    let cipher = if req.raw {
        if req.key.is_some() {
            obs.note("evfs map: --raw serves the ciphertext; -k is not used");
        }
        None
    } else {
        let opened = crate::ops::luks::unlock(
            &lv,
            &req.luks,
            keys,
            KeyUse::Volume,
            req.key.as_ref().map(|k| (k, KeyUse::Volume)),
        )?;
        Some(ExportCipher::Luks(
            area.cipher(&opened.key).map_err(Error::from)?,
        ))
    };
    let size = lv.data_size(&area);
    let listener = listen(&req.socket)?;
    let socket = SocketFile(req.socket.clone());
    let file = lv.dev.file().try_clone().ctx("reopening", vol)?;
    let export = Arc::new(VolumeExport::new(
        file,
        (area.offset, size),
        area.sector_size,
        cipher,
        !write,
    ));
    announce(obs, req, size, area.sector_size);
    let on_event = |event: crate::nbd::ServeEvent<'_>| report_event(obs, vol, event);
    let served = nbd::serve_with_events(listener, export, stop, &on_event);
    drop(socket);
    let stats = served.map_err(|e| {
        Error::runtime(format!(
            "serving NBD for {} on {} failed: {e}",
            vol.display(),
            req.socket.display()
        ))
    })?;
    if write {
        lv.dev.sync()?;
        if stats.bytes_written > 0 {
            mark_modified(&mut lv, vol)?;
        }
    }
    obs.note(&format!(
        "evfs map: stopped; {} connection(s), {} read, {} written",
        stats.connections,
        human(stats.bytes_read),
        human(stats.bytes_written),
    ));
    Ok(stats)
}

/// Data was written through the map: the provenance no longer describes
/// the data.
fn mark_modified(lv: &mut LuksVolume, vol: &Path) -> Result<()> {
    let Header::Luks2(h) = &lv.header else {
        return Ok(());
    };
    let Some((_, Some(p))) = Provenance::find(h.metadata()) else {
        return Ok(());
    };
    if p.modified {
        return Ok(());
    }
    lv.update(|h| {
        let Some((id, Some(mut p))) = Provenance::find(h.metadata()) else {
            return Ok(((), crate::luks::Plan::new()));
        };
        p.modified = true;
        h.set_token(Some(id), &p.to_json()).map(|(_, plan)| ((), plan))
    })
    .map_err(|e| {
        Error::runtime(format!(
            "{}: data was written through the map, but its evfs provenance could not be marked modified: {e}",
            vol.display()
        ))
    })
}
