//! The chunk index of a volume target (`formats/INDEX.md`): reading the
//! previous one, when a changed-only refresh can trust it, and writing the
//! new one beside the data it describes.

use crate::crypto::VolumeKey;
use crate::emd::{Emd, IndexRef};
use crate::error::Result;
use crate::index::{ChunkIndex, SourceKind, Tagger};
use crate::ops::Observer;
use crate::ops::backup::source::{Data, OpenSource};
use crate::pipeline::ChunkTags;
use crate::volume::{Device, layout};

/// What a run knows of the target's previous index.
pub(super) struct Previous {
    /// The index, when the chunks it lists can be passed over.
    pub index: Option<ChunkIndex>,
    /// Why every chunk is written, when none can be passed over.
    pub why_full: Option<String>,
}

impl Previous {
    /// No previous index: every chunk is written, for `why`.
    pub fn none(why: Option<String>) -> Previous {
        Previous {
            index: None,
            why_full: why,
        }
    }

    /// The pipeline's side of the index, tagging with `tagger`.
    pub fn tags<'a>(&'a self, tagger: &'a Tagger) -> ChunkTags<'a> {
        match &self.index {
            Some(i) => ChunkTags {
                tagger,
                old: &i.entries,
                old_root0: i.root0,
            },
            None => ChunkTags {
                tagger,
                old: &[],
                old_root0: [0; 32],
            },
        }
    }
}

/// The tagger of a backup from `src` into a target encrypted with
/// `target_key`; `None` where the chunks are not tagged (a LUKS source:
/// refreshed in full).
pub(super) fn tagger(
    src: &OpenSource,
    src_key: Option<&VolumeKey>,
    target_key: &VolumeKey,
) -> Option<Tagger> {
    if matches!(src.data, Data::Luks(_)) {
        return None;
    }
    let kind = match (&src.emd, src_key) {
        (Some(e), Some(key)) => SourceKind::Encrypted {
            uuid: &e.uuid,
            sector_size: e.sector_size,
            key,
        },
        (None, _) => SourceKind::Plain,
        (Some(_), None) => return None,
    };
    Some(Tagger::new(target_key, kind))
}

/// Where the index area of a volume lies, when the device has room for it
/// before the backup EMD copy.
fn area(dev: &Device, emd: &Emd) -> Option<(u64, u64)> {
    let at = emd.data_offset.checked_add(emd.data_size)?;
    let len = crate::index::area_len(emd.data_size);
    let end = layout::backup_emd_offset(dev.size())?;
    (at.checked_add(len)? <= end).then_some((at, len))
}

/// The sealed index that `emd` names, read from `dev` and checked against
/// the BLAKE3 the EMD records; `Err` says why there is none to use.
pub(crate) fn read_sealed(
    dev: &Device,
    emd: &Emd,
) -> Result<std::result::Result<Vec<u8>, &'static str>> {
    let Some(r) = emd.index else {
        return Ok(Err("it has no chunk index of the backup that made it"));
    };
    let Some((at, _)) = area(dev, emd).filter(|&(_, room)| r.len <= room) else {
        return Ok(Err("its chunk index does not fit its device"));
    };
    let mut bytes = vec![0u8; r.len as usize];
    dev.read_at(&mut bytes, at)?;
    if !r.names(&bytes) {
        return Ok(Err("its chunk index is damaged or was changed"));
    }
    Ok(Ok(bytes))
}

/// The previous index of the target `dev`, whose EMD in force is `emd`
/// (`None` for a new target), for a run that writes it with `key` from the
/// source `tagger` tags, at `sector_size`. Any doubt means a full write,
/// and says why.
pub(super) fn previous(
    dev: &Device,
    emd: Option<&Emd>,
    key: &VolumeKey,
    new_uuid: &[u8; 16],
    sector_size: u32,
    tagger: &Tagger,
    full: bool,
) -> Result<Previous> {
    let Some(emd) = emd.filter(|e| &e.uuid == new_uuid) else {
        return Ok(Previous::none(None));
    };
    let why = |s: &str| Ok(Previous::none(Some(s.to_string())));
    if full {
        return why("--full");
    }
    if emd.dirty {
        return why("the target's last backup did not finish");
    }
    let bytes = match read_sealed(dev, emd)? {
        Ok(b) => b,
        Err(e) => return why(e),
    };
    let index = match ChunkIndex::open(&bytes, key, &emd.uuid) {
        Ok(i) => i,
        Err(_) => return why("the target's chunk index does not open with its key"),
    };
    if Some(index.state_id) != emd.state_id || index.data_version != emd.data_version {
        return why("the target was written since its last backup (its data version moved on)");
    }
    if index.sector_size != sector_size {
        return why("the target's sector size changes");
    }
    if index.source != tagger.source_id() {
        return why("the last backup into the target came from another source or source key");
    }
    Ok(Previous {
        index: Some(index),
        why_full: None,
    })
}

/// The index area of a raw clone's source, as it lies (sealed under the
/// source's key and UUID, which the clone keeps): copied with the data, so
/// that the clone is the base its EMD says it is. `None` when the source
/// has none (or is no device); one its EMD names but that cannot be read
/// is said through `obs`, since the copy's EMD names it too.
pub(super) fn raw_copy(src: &OpenSource, obs: &dyn Observer) -> Result<Option<Vec<u8>>> {
    let (Data::Device(dev), Some(emd)) = (&src.data, &src.emd) else {
        return Ok(None);
    };
    match read_sealed(dev, emd)? {
        Ok(bytes) => Ok(Some(bytes)),
        Err(why) => {
            if emd.index.is_some() {
                obs.note(&format!(
                    "evfs: note: {}: {why}; the raw copy carries none, and the next backup into it writes every chunk",
                    src.name
                ));
            }
            Ok(None)
        }
    }
}

/// Put a raw clone's copy of its source's index area in place.
pub(super) fn raw_paste(dev: &Device, emd: &Emd, bytes: &[u8]) -> Result<()> {
    match area(dev, emd) {
        Some((at, room)) if bytes.len() as u64 <= room => dev.write_at(bytes, at),
        _ => Ok(()),
    }
}

/// Put the sealed index a restored stream carries in the index area of
/// `emd`'s volume (the final EMD names it). The layout always leaves room
/// for an index of the data; one that does not fit is forged (exit 5).
pub(crate) fn paste(dev: &Device, emd: &Emd, bytes: &[u8]) -> Result<()> {
    match area(dev, emd) {
        Some((at, room)) if bytes.len() as u64 <= room => dev.write_at(bytes, at),
        _ => Err(crate::error::Error::integrity(format!(
            "the stream's chunk index does not fit the index area of {} after its data",
            dev.path().display()
        ))),
    }
}

/// Write the index of a finished run into the area after `emd`'s data
/// area and return the EMD's reference to it; `None` when the device has
/// no room for one (a volume laid out before indexes: its next backup is
/// written in full).
pub(super) fn write(
    dev: &Device,
    emd: &Emd,
    key: &VolumeKey,
    index: &ChunkIndex,
) -> Result<Option<IndexRef>> {
    let Some((at, _)) = area(dev, emd) else {
        return Ok(None);
    };
    let sealed = index.seal(key, &emd.uuid)?;
    dev.write_at(&sealed, at)?;
    Ok(Some(IndexRef::of(&sealed)))
}
