//! Reading plaintext: the one decrypting reader behind `hash`, `cat`,
//! `verify` and the re-hash of a resumed backup. A volume's data is
//! decrypted in whole sectors through the pipeline, and exactly its data
//! length counts; a plain file is read as it is.

use std::io::Write;
use std::path::Path;

use super::luks::LuksAccess;
use super::{DATA_ROLES, KeyUse, Keys, Observer, trust};
use crate::crypto::VolumeKey;
use crate::emd::Emd;
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::pipeline::digest::TreeMerger;
use crate::pipeline::sink::{NullSink, Sink, WriteSink};
use crate::pipeline::source::FileSource;
use crate::pipeline::{self, Meter, Plan, SectorKey};
use crate::volume::identity::Storage;
use crate::volume::{Device, Volume, metadata};

/// The plaintext of a volume or a plain file: where it lies on a device,
/// how long it is, and the key that decrypts it (none for plain data).
pub struct Plaintext<'a> {
    dev: &'a Device,
    offset: u64,
    len: u64,
    key: Option<SectorKey>,
    /// A LUKS cipher the XTS kernels do not run, applied as chunks are read.
    chunk_cipher: Option<crate::luks::SectorCipher>,
}

impl<'a> Plaintext<'a> {
    /// The data of an unlocked volume, decrypted with `key`.
    pub fn of_volume(v: &'a Volume, key: &VolumeKey) -> Result<Plaintext<'a>> {
        v.require_data_fits()?;
        Ok(Plaintext::of_data(&v.dev, &v.emd, key))
    }

    /// The data that `emd` describes on `dev`, decrypted with `key`.
    pub fn of_data(dev: &'a Device, emd: &Emd, key: &VolumeKey) -> Plaintext<'a> {
        Plaintext {
            dev,
            offset: emd.data_offset,
            len: emd.data_len,
            key: Some(SectorKey::new(key, emd.sector_size)),
            chunk_cipher: None,
        }
    }

    /// The whole data area of an unlocked LUKS volume.
    pub fn of_luks(v: &'a super::luks::Unlocked) -> Result<Plaintext<'a>> {
        Ok(Plaintext {
            dev: &v.vol.dev,
            offset: v.area.offset,
            len: v.data_size(),
            key: super::luks::sector_key(&v.area, &v.opened.key)?,
            chunk_cipher: super::luks::chunk_cipher(&v.area, &v.opened.key)?,
        })
    }

    /// A plain file or device, whole.
    pub fn of_plain(dev: &'a Device) -> Plaintext<'a> {
        Plaintext {
            dev,
            offset: 0,
            len: dev.size(),
            key: None,
            chunk_cipher: None,
        }
    }

    /// The first `len` bytes only (a resumed backup's written prefix).
    pub fn prefix(mut self, len: u64) -> Plaintext<'a> {
        self.len = self.len.min(len);
        self
    }

    /// Bytes of plaintext.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there is no plaintext at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Run the plaintext through the pipeline into `sink` (only the data
    /// bytes of each chunk count), hashing it when `hash`.
    fn run(
        self,
        threads: usize,
        hash: bool,
        sink: &mut dyn Sink,
        meter: &Meter,
    ) -> Result<TreeMerger> {
        // Decryption works on whole sectors; only `len` bytes of plaintext count.
        let read = match &self.key {
            Some(k) => self.len.next_multiple_of(k.sector_size as u64),
            None => self.len,
        };
        if self.offset.saturating_add(read) > self.dev.size() {
            return Err(Error::integrity(format!(
                "{}: the data to read (bytes {} to {}) runs past the end of the device or file ({} bytes): it is truncated",
                self.dev.path().display(),
                self.offset,
                self.offset.saturating_add(read),
                self.dev.size()
            )));
        }
        let plan = Plan::new(threads)
            .decrypt(self.key)
            .hash(hash)
            .plain_len(Some(self.len));
        let file = self
            .dev
            .file()
            .try_clone()
            .map_err(|e| Error::io("reopening", self.dev.path(), e))?;
        let mapped_source = FileSource::new(file, self.dev.path().to_path_buf(), self.offset, read)
            .buffers(pipeline::buffers_for(threads));
        let mut source: Box<dyn pipeline::Source> = match self.chunk_cipher {
            Some(c) => Box::new(super::luks::Decrypting::new(Box::new(mapped_source), c, 0)),
            None => Box::new(mapped_source),
        };
        let (_, tree) = pipeline::run_after(&plan, TreeMerger::new(), &mut *source, sink, meter)?;
        Ok(tree)
    }

    /// The BLAKE3 tree of the plaintext: finished, it is the digest (equal
    /// to `b3sum` of the plaintext); a resumed backup continues it.
    pub fn tree(self, threads: usize) -> Result<TreeMerger> {
        self.run(threads, true, &mut NullSink, &Meter::default())
    }

    /// The BLAKE3 of the plaintext.
    pub fn digest(self, threads: usize) -> Result<blake3::Hash> {
        Ok(self.tree(threads)?.finish())
    }

    /// Write the plaintext to `out`, exactly its bytes.
    pub fn write_to(self, threads: usize, out: &mut dyn Write, meter: &Meter) -> Result<()> {
        let mut sink = WriteSink {
            writer: out,
            name: "standard output".to_string(),
        };
        self.run(threads, false, &mut sink, meter)?;
        sink.flush()
    }
}

/// Open `path` and unlock its volume with `id` to hash its data; `None`
/// when it is plain data (no EMD at all).
fn open_volume(
    path: &Path,
    id: Option<&KeyId>,
    keys: &dyn Keys,
) -> Result<Option<(Volume, VolumeKey)>> {
    let dev = Device::open_read(path)?;
    let copies = metadata::read(&dev)?;
    if copies.current().is_none() {
        if copies.any_magic() {
            return Err(metadata::no_valid_emd(&dev, &copies));
        }
        return Ok(None);
    }
    let v = Volume::from_device(dev)?;
    let Some(id) = id else {
        return Err(Error::access(format!(
            "{} is an EVFS volume: hashing its plaintext needs a key",
            path.display()
        ))
        .with_hint(format!("give -k ID: evfs hash {} -k ID", path.display())));
    };
    let pk = keys.unlock(id, KeyUse::Volume)?;
    let unlocked = trust::unlock(&v.emd, v.path(), &pk, DATA_ROLES, "read its data", keys)?;
    v.require_enabled("decrypted")?;
    Ok(Some((v, unlocked.key)))
}

/// Say so when a volume's data may be incomplete: an unfinished backup or
/// restore into it, or its dirty bit (in use, or not shut down cleanly).
fn note_incomplete(v: &Volume, obs: &dyn Observer, what: &str) {
    let why = match (&v.emd.checkpoint, v.emd.dirty) {
        (Some(_), _) => "holds an unfinished backup or restore",
        (None, true) => "is dirty (in use, or not shut down cleanly)",
        (None, false) => return,
    };
    obs.note(&format!(
        "evfs: note: {} {why}: this {what} is of data that may be incomplete; `evfs check {}` says more",
        v.path().display(),
        v.path().display()
    ));
}

/// `evfs hash`: the BLAKE3 of a volume's plaintext (with `id`) or of a
/// plain file (its bytes as they are).
pub fn hash(
    path: &Path,
    id: Option<&KeyId>,
    luks: &LuksAccess,
    keys: &dyn Keys,
    obs: &dyn Observer,
    threads: usize,
) -> Result<blake3::Hash> {
    if let Some(v) = super::luks::open_unlocked(
        path,
        luks,
        keys,
        KeyUse::Volume,
        id.map(|i| (i, KeyUse::Volume)),
    )? {
        return Plaintext::of_luks(&v)?.digest(threads);
    }
    match open_volume(path, id, keys)? {
        Some((v, key)) => {
            note_incomplete(&v, obs, "digest");
            Plaintext::of_volume(&v, &key)?.digest(threads)
        }
        None => {
            if id.is_some() {
                obs.note(&format!(
                    "{} is not an EVFS volume; hashing it as a plain file (-k is not used)",
                    path.display()
                ));
            }
            let dev = Device::open_read(path)?;
            Plaintext::of_plain(&dev).digest(threads)
        }
    }
}

/// `evfs cat`: a volume's plaintext to `out`, whose storage is `out_storage`
/// (refused when it is the volume itself).
#[allow(clippy::too_many_arguments)]
pub fn cat(
    path: &Path,
    id: Option<&KeyId>,
    luks: &LuksAccess,
    keys: &dyn Keys,
    obs: &dyn Observer,
    threads: usize,
    out: &mut dyn Write,
    out_storage: &Storage,
) -> Result<()> {
    if let Some(v) = super::luks::open_unlocked(
        path,
        luks,
        keys,
        KeyUse::Volume,
        id.map(|i| (i, KeyUse::Volume)),
    )? {
        super::backup::target::not_the_source(out_storage, &v.vol.dev.storage()?)?;
        let plain = Plaintext::of_luks(&v)?;
        return super::watched(obs, "cat", Some(plain.len()), |meter| {
            plain.write_to(threads, out, meter)
        });
    }
    let dev = Device::open_read(path)?;
    let v = Volume::from_device(dev)?;
    super::backup::target::not_the_source(out_storage, &v.dev.storage()?)?;
    let Some(id) = id else {
        return Err(Error::access(format!(
            "{} is an EVFS volume: reading its plaintext needs a key",
            path.display()
        ))
        .with_hint("give -k ID"));
    };
    let pk = keys.unlock(id, KeyUse::Volume)?;
    let unlocked = trust::unlock(&v.emd, v.path(), &pk, DATA_ROLES, "read its data", keys)?;
    v.require_enabled("decrypted")?;
    note_incomplete(&v, obs, "data");
    let plain = Plaintext::of_volume(&v, &unlocked.key)?;
    super::watched(obs, "cat", Some(plain.len()), |meter| {
        plain.write_to(threads, out, meter)
    })
}
