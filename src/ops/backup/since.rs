//! `backup --since BASE`: the state an incremental stream is made from. BASE
//! is a manifest (`--manifest` of an earlier stream) or a volume a backup
//! made from the source; either holds the EMD of that state and its chunk
//! index, which the stream's chunks are compared with.

use std::io::Read;
use std::path::Path;

use super::Job;
use super::source::OpenSource;
use crate::crypto::VolumeKey;
use crate::emd::{Emd, Origin};
use crate::error::{Error, IoContext, Result};
use crate::index::ChunkIndex;
use crate::stream::format::Base;
use crate::stream::manifest::{self, Manifest};
use crate::volume::{Device, metadata};

/// The most bytes a manifest may hold: the index of a data area of 64 TiB.
const MANIFEST_MAX: u64 = manifest::INDEX_AT as u64 + (64 << 20) * 64 + 4096;

/// A base, opened with the key.
pub(super) struct SinceBase {
    /// The base's EMD: the final EMD of the stream a manifest describes, or
    /// the volume's.
    pub emd: Emd,
    /// Its volume key, which the incremental stream keeps.
    pub key: VolumeKey,
    /// Its chunk index.
    pub index: ChunkIndex,
}

impl SinceBase {
    /// What the stream's header says it applies onto.
    pub fn base(&self) -> Base {
        Base {
            state_id: self.emd.state_id.unwrap_or_default(),
            data_version: self.emd.data_version,
            digest: self
                .emd
                .provenance
                .as_ref()
                .and_then(|p| p.plaintext_blake3)
                .unwrap_or_default(),
        }
    }
}

fn refused(path: &Path, what: &str) -> Error {
    Error::refused(format!("--since {}: {what}", path.display()))
}

/// Open BASE for a stream of `src`: its EMD and index, checked with the
/// `-k` key.
pub(super) fn load(job: &Job, path: &Path, src: &OpenSource) -> Result<SinceBase> {
    if src.emd.is_none() {
        return Err(Error::usage(
            "--since makes an incremental stream of an EVFS volume; plain data and LUKS volumes are streamed in full",
        ));
    }
    let (emd, sealed) = read_base(path)?;
    let name = path.display();
    if emd.dirty {
        return Err(refused(
            path,
            "the backup it describes did not finish (it is dirty)",
        ));
    }
    let digest = emd.provenance.as_ref().and_then(|p| p.plaintext_blake3);
    if emd.state_id.is_none() || digest.is_none() {
        return Err(refused(
            path,
            "it records no backup state (made before incremental backups, or not by a backup)",
        )
        .with_hint(
            "make a full stream with --manifest FILE, and use that FILE as BASE next time",
        ));
    }
    // A base of another source makes an increment of the wrong data.
    if let Some(se) = &src.emd {
        let from = emd.provenance.as_ref().map(|p| p.origin);
        let of_src = emd.clone_of == Some(se.uuid)
            || matches!(from, Some(Origin::Volume { uuid, .. }) if uuid == se.uuid);
        if !of_src {
            return Err(refused(
                path,
                &format!("it is not a backup of {}", src.name),
            ));
        }
    }
    let pk = job.k_pk.as_ref().ok_or_else(|| {
        Error::usage("--since needs -k ID, a key with a slot in BASE, to open its chunk index")
    })?;
    let key = crate::ops::trust::unlock_data(
        &emd,
        path,
        pk,
        "make an incremental stream of it",
        job.keys,
    )?;
    let index = ChunkIndex::open(&sealed, &key, &emd.uuid)
        .map_err(|e| Error::integrity(format!("{name}: its chunk index cannot be used: {e}")))?;
    if Some(index.state_id) != emd.state_id || index.data_version != emd.data_version {
        return Err(Error::integrity(format!(
            "{name}: its chunk index belongs to another state of the volume than its EMD"
        )));
    }
    Ok(SinceBase { emd, key, index })
}

/// The EMD and the sealed index of a manifest or a volume.
fn read_base(path: &Path) -> Result<(Emd, Vec<u8>)> {
    let name = path.display();
    let mut file = std::fs::File::open(path).ctx("opening", path)?;
    let mut head = [0u8; 8];
    let n = file.read(&mut head).ctx("reading", path)?;
    if Manifest::sniff(&head[..n]) {
        let mut bytes = head[..n].to_vec();
        (&mut file)
            .take(MANIFEST_MAX)
            .read_to_end(&mut bytes)
            .ctx("reading", path)?;
        let m = Manifest::parse(&bytes).map_err(|e| Error::integrity(format!("{name}: {e}")))?;
        return Ok((m.emd, m.sealed_index));
    }
    drop(file);
    let mut dev = Device::open_read(path)?;
    dev.lock(false, "read it as the base of an incremental stream")?;
    let copies = metadata::read(&dev)?;
    let Some(emd) = copies.current().cloned() else {
        return Err(Error::usage(format!(
            "--since {name}: neither a manifest nor an EVFS volume"
        ))
        .with_hint("BASE is a manifest written by backup --manifest beside a stream (a stream itself carries no chunk index), or a volume made from SRC by a backup"));
    };
    // An unfinished backup is what it is before its index means anything.
    if emd.dirty {
        return Err(refused(
            path,
            "the backup it describes did not finish (it is dirty)",
        ));
    }
    let sealed = match super::index::read_sealed(&dev, &emd)? {
        Ok(b) => b,
        Err(e) if emd.index.is_none() => return Err(refused(path, e)),
        Err(e) => return Err(Error::integrity(format!("{name}: {e}"))),
    };
    Ok((emd, sealed))
}

/// The EMD an incremental stream of `src` carries: BASE's volume (UUID,
/// key, geometry), with the source's slots and label, one data version on.
pub(super) fn next_emd(src: &OpenSource, base: &SinceBase) -> Result<Emd> {
    let b = &base.emd;
    let len = src.len().unwrap_or(0);
    if src.len().is_none() || len > b.data_size {
        return Err(Error::refused(format!(
            "the source holds {} bytes, more than the {} of the data area of the base: make a full stream",
            src.len()
                .map_or("an unknown number of".to_string(), |n| n.to_string()),
            b.data_size
        )));
    }
    let mut e = match &src.emd {
        Some(se) => super::clone::refresh_emd(se, b, &base.key, b.sector_size)?,
        None => {
            let mut e = b.clone();
            e.data_version = b.data_version + 1;
            e.dirty = false;
            e.checkpoint = None;
            e.provenance = None;
            e.index = None;
            e.state_id = None;
            e
        }
    };
    e.data_len = len;
    e.seal(&base.key);
    Ok(e)
}
