//! Classifying a backup target for the configuration table.

use std::path::{Path, PathBuf};

use super::decide::{Dst, Relation, Room};
use crate::emd::Emd;
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::volume::device::{Device, require_volume_kind};
use crate::volume::identity::Storage;
use crate::volume::luks::LuksVolume;

/// Where the backup goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A backup stream on standard output (`DST` is `-`).
    Stdout,
    /// A backup stream into this file (`--stream FILE`).
    StreamFile(PathBuf),
    /// A file or block device: a volume, a LUKS2 volume, or a cleartext
    /// export.
    Path(PathBuf),
}

/// A target as the table sees it, with the EMD of an existing volume.
pub struct Classified {
    /// What the target is.
    pub dst: Dst,
    /// How much it can hold.
    pub room: Room,
    /// The EMD in force of a target volume.
    pub emd: Option<Emd>,
}

/// Classify `place`. `source` is the storage the source is read from;
/// `source_uuid` is the source volume's UUID (none for plain sources);
/// `key` is the key ID of `-k`, whose slot in a target volume lets it be
/// written with its own key. A target that is the same storage as the
/// source, by any name (a link, a loop device over it, a partition of it,
/// standard output redirected onto it), is refused here with exit 3,
/// saying how the two are one.
pub fn classify(
    place: &Target,
    source: &Storage,
    source_uuid: Option<[u8; 16]>,
    key: Option<&KeyId>,
    luks_header: Option<&Path>,
) -> Result<Classified> {
    let path = match place {
        Target::Stdout => {
            not_the_source(&Storage::of_stdout()?, source)?;
            return Ok(Classified {
                dst: Dst::Stdout,
                room: Room::Grows,
                emd: None,
            });
        }
        Target::StreamFile(p) => {
            if let Some(target) = Storage::of_path(p)? {
                not_the_source(&target, source)?;
            }
            return Ok(Classified {
                dst: Dst::StreamFile,
                room: Room::Grows,
                emd: None,
            });
        }
        Target::Path(p) => p,
    };
    if !require_volume_kind(path)? {
        return Ok(Classified {
            dst: Dst::Blank,
            room: Room::Grows,
            emd: None,
        });
    }
    if let Some(target) = Storage::of_path(path)? {
        not_the_source(&target, source)?;
    }
    let dev = Device::open_read(path)?;
    let room = if dev.is_block() {
        Room::Bytes(dev.size())
    } else {
        Room::Grows
    };
    let copies = crate::volume::metadata::read(&dev)?;
    // A LUKS volume (its header first, or detached), unless an EMD is at
    // the start.
    let dev = if copies.primary.has_magic() && luks_header.is_none() {
        dev
    } else {
        match LuksVolume::from_device(dev, luks_header, false)? {
            Ok(v) => {
                let data_size = v
                    .header
                    .data_area_unchecked()
                    .map_or(0, |a| v.data_size(&a));
                return Ok(Classified {
                    dst: Dst::Luks {
                        version: v.header.version(),
                        data_size,
                    },
                    room,
                    emd: None,
                });
            }
            Err(dev) => dev,
        }
    };
    if let Some(e) = copies.current() {
        let relation = relation(e, source_uuid, key);
        return Ok(Classified {
            dst: Dst::Volume {
                state: e.state,
                data_size: e.data_size,
                relation,
            },
            room,
            emd: Some(e.clone()),
        });
    }
    let dst = if !copies.any_magic() && is_blank(&dev)? {
        Dst::Blank
    } else {
        Dst::Foreign
    };
    Ok(Classified {
        dst,
        room,
        emd: None,
    })
}

/// Exit 3 when `target` and `source` are one storage, saying how.
pub fn not_the_source(target: &Storage, source: &Storage) -> Result<()> {
    match target.overlap(source) {
        None => Ok(()),
        Some(why) => Err(
            Error::refused(format!("the target is the source itself: {why}")).with_hint(
                "choose a target on other storage: writing a volume over itself destroys it",
            ),
        ),
    }
}

/// How the volume whose EMD is `target` relates to a backup of the volume
/// `source` (`None`: plain data) with the key `key`. An interrupted clone
/// of the source carries the clone's EMD too, so running the backup again
/// after a crash refreshes it.
pub fn relation(target: &Emd, source: Option<[u8; 16]>, key: Option<&KeyId>) -> Relation {
    match source {
        Some(u) if target.uuid == u => Relation::Same,
        Some(u) if target.clone_of == Some(u) => Relation::Clone,
        _ => Relation::Own {
            key_slot: key.is_some_and(|id| target.slot(id).is_some()),
        },
    }
}

/// Whether a file or device reads as zeros where data would be: all of it up
/// to 96 MiB; beyond that the first and last 16 MiB and 64 samples between.
pub fn is_blank(dev: &Device) -> Result<bool> {
    const PIECE: u64 = 1 << 20;
    let size = dev.size();
    let edge = 16 * PIECE;
    let mut offsets: Vec<u64> = Vec::new();
    if size <= 2 * edge + 64 * PIECE {
        offsets.extend((0..size.div_ceil(PIECE)).map(|i| i * PIECE));
    } else {
        offsets.extend((0..16).map(|i| i * PIECE));
        offsets.extend((0..16).map(|i| size - edge + i * PIECE));
        let step = (size - 2 * edge) / 64;
        offsets.extend((0..64).map(|i| (edge + i * step) & !4095));
    }
    let mut buf = vec![0u8; PIECE as usize];
    for off in offsets {
        let len = PIECE.min(size - off) as usize;
        dev.read_at(&mut buf[..len], off)?;
        if !crate::pipeline::is_zero(&buf[..len]) {
            return Ok(false);
        }
    }
    Ok(true)
}
