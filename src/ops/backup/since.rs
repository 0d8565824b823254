//! `backup --since BASE`: the state an incremental stream is made from. BASE
//! is an earlier stream of the source, its manifest (`--manifest`), or a
//! volume a backup or restore made from the source; each holds the EMD of
//! that state and its chunk index, which the stream's chunks are compared
//! with.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Job;
use super::source::OpenSource;
use crate::crypto::VolumeKey;
use crate::emd::{Emd, Origin};
use crate::error::{Error, IoContext, Result};
use crate::index::ChunkIndex;
use crate::stream::format::{
    Base, Header, INDEX_HEADER_LEN, Trailer, frame_hash, header_len, parse_index_section_header,
    trailer_len,
};
use crate::stream::manifest::{self, Manifest};
use crate::stream::reader::{Item, StreamReader};
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
    let Some(se) = &src.emd else {
        return Err(Error::usage(
            "--since makes an incremental stream of an EVFS volume; plain data and LUKS volumes are streamed in full",
        ));
    };
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
    let from = emd.provenance.as_ref().map(|p| p.origin);
    let of_src = emd.clone_of == Some(se.uuid)
        || matches!(from, Some(Origin::Volume { uuid, .. }) if uuid == se.uuid);
    if !of_src {
        return Err(refused(
            path,
            &format!("it is not a backup of {}", src.name),
        ));
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
    // The first bytes, however a pipe delivers them.
    let mut first = Vec::with_capacity(8);
    (&mut file)
        .take(8)
        .read_to_end(&mut first)
        .ctx("reading", path)?;
    let n = first.len();
    let mut head = [0u8; 8];
    head[..n].copy_from_slice(&first);
    if Manifest::sniff(&head[..n]) {
        let mut bytes = head[..n].to_vec();
        (&mut file)
            .take(MANIFEST_MAX)
            .read_to_end(&mut bytes)
            .ctx("reading", path)?;
        let m = Manifest::parse(&bytes).map_err(|e| Error::integrity(format!("{name}: {e}")))?;
        if m.emd.index.is_some_and(|r| !r.names(&m.sealed_index)) {
            return Err(Error::integrity(format!(
                "{name}: its chunk index is not the one its EMD names"
            )));
        }
        return Ok((m.emd, m.sealed_index));
    }
    if head[..n].starts_with(crate::stream::MAGIC) {
        return stream_base(path, file, &head[..n]);
    }
    let kind = file.metadata().ctx("reading", path)?.file_type();
    if !kind.is_file() && !std::os::unix::fs::FileTypeExt::is_block_device(&kind) {
        return Err(Error::usage(format!(
            "--since {name}: from a pipe or a device, BASE is a stream or a manifest, and this {}",
            if n == 0 {
                "one is empty".to_string()
            } else {
                "one starts with neither".to_string()
            }
        )));
    }
    drop(file);
    let mut dev = Device::open_read(path)?;
    dev.lock(false, "read it as the base of an incremental stream")?;
    let copies = metadata::read(&dev)?;
    let Some(emd) = copies.current().cloned() else {
        return Err(Error::usage(format!(
            "--since {name}: neither a manifest nor an EVFS volume"
        ))
        .with_hint("BASE is an earlier stream of SRC, the manifest written beside one (backup --manifest FILE), or a volume made from SRC by a backup or a restore"));
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

/// The final EMD and the sealed index of the stream `file` (whose first
/// bytes, `head`, are read already): read from its end when it is a
/// regular file, else read through (a pipe).
fn stream_base(path: &Path, file: std::fs::File, head: &[u8]) -> Result<(Emd, Vec<u8>)> {
    let name = path.display().to_string();
    let regular = file.metadata().ctx("reading", path)?.is_file();
    let not_indexed = || {
        refused(
            path,
            "this stream carries no chunk index (a stream of plain data or of a LUKS volume, a raw stream of a volume without one, or one older than stream format version 3)",
        )
        .with_hint("use the stream's manifest (backup --manifest FILE) as BASE if it has one, or make a full stream now: streams of EVFS volumes carry their chunk index")
    };
    if !regular {
        let input = std::io::Cursor::new(head.to_vec()).chain(file);
        let mut reader = StreamReader::open(input, &name)?;
        if !reader.header.indexed {
            return Err(not_indexed());
        }
        let mut index = None;
        loop {
            match reader.next_item()? {
                Item::Frame(..) => {}
                Item::Index(b) => index = Some(b.to_vec()),
                Item::End(t) => {
                    let index = index.ok_or_else(|| Error::runtime("internal: no index"))?;
                    return Ok((t.emd, index));
                }
            }
        }
    }
    let damaged = |what: &str| Error::integrity(format!("{name}: {what}"));
    let mut hb = vec![0u8; 10];
    file.read_exact_at(&mut hb, 0)
        .map_err(|_| damaged("the stream is truncated inside its header"))?;
    let version = Header::version_of(&hb)
        .map_err(|e| damaged(&format!("the stream header is invalid: {e}")))?;
    hb.resize(header_len(version), 0);
    file.read_exact_at(&mut hb, 0)
        .map_err(|_| damaged("the stream is truncated inside its header"))?;
    let header =
        Header::parse(&hb).map_err(|e| damaged(&format!("the stream header is invalid: {e}")))?;
    let Some(len) = header.index_len() else {
        return Err(not_indexed());
    };
    let size = file.metadata().ctx("reading", path)?.len();
    let tlen = trailer_len(version) as u64;
    let section = len.checked_add(INDEX_HEADER_LEN as u64 + 32);
    let Some((section, at)) = section
        .and_then(|s| Some((s, size.checked_sub(s.checked_add(tlen)?)?)))
        .filter(|&(_, at)| at >= hb.len() as u64)
    else {
        return Err(damaged(
            "the stream is too short to hold its chunk index and trailer",
        ));
    };
    let mut tail = vec![0u8; (section + tlen) as usize];
    file.read_exact_at(&mut tail, at).ctx("reading", path)?;
    let (sec, trailer) = tail.split_at(section as usize);
    let trailer = Trailer::parse(trailer, version).map_err(|e| {
        damaged(&format!(
            "the stream's trailer is invalid or missing (is the stream cut short?): {e}"
        ))
    })?;
    let sec_head: [u8; INDEX_HEADER_LEN] = sec[..INDEX_HEADER_LEN].try_into().expect("length");
    let sealed = &sec[INDEX_HEADER_LEN..INDEX_HEADER_LEN + len as usize];
    let hash = &sec[INDEX_HEADER_LEN + len as usize..];
    if parse_index_section_header(&sec_head) != Ok(len)
        || hash != frame_hash(&sec_head, sealed)
        || !trailer.emd.index.is_some_and(|r| r.names(sealed))
        || trailer.emd.uuid != header.emd.uuid
    {
        return Err(damaged(
            "its chunk index, before its trailer, is damaged or not the one its final EMD names",
        ));
    }
    Ok((trailer.emd, sealed.to_vec()))
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
    // `load` took only EVFS sources.
    let se = src
        .emd
        .as_ref()
        .ok_or_else(|| Error::runtime("internal: an incremental stream of plain data"))?;
    let mut e = super::clone::refresh_emd(se, b, &base.key, b.sector_size)?;
    e.data_len = len;
    e.seal(&base.key);
    Ok(e)
}
