//! Opening a backup source: an EVFS volume, a LUKS volume, a plain file or
//! device, or stdin, told apart by their first bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::crypto::VolumeKey;
use crate::emd::{EMD_SIZE, Emd, Origin};
use crate::error::{Error, IoContext, Result};
use crate::keys::{KeyId, PrivateKey};
use crate::luks::{DataArea, LuksKey};
use crate::ops::luks::LuksAccess;
use crate::ops::{KeyUse, Keys};
use crate::pipeline::SectorKey;
use crate::pipeline::source::{FileSource, ReaderSource};
use crate::pipeline::{CHUNK, Input, Source};
use crate::volume::device::Device;
use crate::volume::identity::Storage;
use crate::volume::luks::LuksVolume;
use crate::volume::sniff::{self, Kind};

/// Where the source's bytes come from.
pub enum Data {
    /// A file or block device, opened read-only.
    Device(Device),
    /// Standard input; `head` holds what was read while sniffing (plain
    /// sources), and for a volume the stream is positioned at its data area.
    Stdin { head: Vec<u8> },
    /// A LUKS volume, opened read-only (and locked, as a device is).
    Luks(Box<LuksSource>),
}

/// A LUKS source: the volume, its data area, and once unlocked its key.
pub struct LuksSource {
    pub vol: LuksVolume,
    pub area: DataArea,
    /// Set by [`OpenSource::unlock_luks`].
    key: Option<LuksKey>,
}

/// An opened, sniffed source.
pub struct OpenSource {
    pub name: String,
    pub data: Data,
    /// The EMD in force, for an EVFS volume.
    pub emd: Option<Emd>,
}

impl OpenSource {
    /// Open `path` (`-` for stdin) read-only and find out what it is. Stream
    /// input is refused with a hint; a volume whose EMD copies are both
    /// damaged fails with exit 5 rather than being read as plain data.
    pub fn open(path: &Path, luks_header: Option<&Path>) -> Result<OpenSource> {
        if path == Path::new("-") {
            if luks_header.is_some() {
                return Err(Error::usage(
                    "--luks-header names the header of a LUKS source on a file or device, not standard input",
                ));
            }
            return Self::open_stdin();
        }
        let mut dev = Device::open_read(path)?;
        dev.lock(false, "read it as a backup source")?;
        let copies = crate::volume::metadata::read(&dev)?;
        // A LUKS volume (its header at the start, in the secondary copy, or
        // in a detached header file) is a LUKS source, never plain data.
        let dev = if copies.primary.has_magic() && luks_header.is_none() {
            dev
        } else {
            let found = LuksVolume::from_device(dev, luks_header, false).map_err(|e| {
                if e.exit_code() != 5 {
                    return e;
                }
                // A LUKS image evfs cannot read is refused as a source:
                // neither decrypted nor encrypted as plain data.
                Error::refused(format!(
                    "{} is a LUKS volume that cannot be read ({}): evfs neither decrypts it nor encrypts it as plain data, which would encrypt it twice",
                    path.display(),
                    e.to_string().trim_start_matches("integrity failure: ")
                ))
                .with_hint(
                    "restore its header (cryptsetup luksHeaderRestore) or let cryptsetup repair it, then back it up with its passphrase",
                )
            })?;
            match found {
                Ok(mut vol) => {
                    vol.lock_header(false, "read it as a backup source")?;
                    let area = vol.data_area()?;
                    return Ok(OpenSource {
                        name: path.display().to_string(),
                        emd: None,
                        data: Data::Luks(Box::new(LuksSource {
                            vol,
                            area,
                            key: None,
                        })),
                    });
                }
                Err(dev) => dev,
            }
        };
        if let Some(current) = copies.current() {
            if !copies.primary.has_magic() {
                // Only the copy at the end is there: a volume whose first
                // MiB was wiped, or a disk image holding a volume further
                // in (whose backup copy is the image's last 16 KiB). The
                // latter's data area is not where this EMD says.
                let mut head = vec![0u8; (sniff::SCAN_LEN as u64).min(dev.size()) as usize];
                dev.read_at(&mut head, 0)?;
                if let Some(s @ sniff::Suspect::EmdAt(_)) = sniff::ciphertext(&head, &[]) {
                    return Err(Error::refused(format!(
                        "{} looks like {}, not a volume: its primary EMD copy is missing and its last 16 KiB are that volume's backup copy",
                        path.display(),
                        s.describe()
                    ))
                    .with_hint("back up the volume itself (a partition or loop device with an offset), not the disk image"));
                }
            }
            crate::volume::data_fits(&dev, current)?;
            return Ok(OpenSource {
                name: path.display().to_string(),
                emd: Some(current.clone()),
                data: Data::Device(dev),
            });
        }
        if copies.any_magic() {
            return Err(crate::volume::metadata::no_valid_emd(&dev, &copies));
        }
        let mut head = [0u8; sniff::SNIFF_LEN];
        let n = head.len().min(dev.size() as usize);
        dev.read_at(&mut head[..n], 0)?;
        if sniff::sniff(&head[..n]) == Kind::Stream {
            return Err(stream_source(path));
        }
        Ok(OpenSource {
            name: path.display().to_string(),
            emd: None,
            data: Data::Device(dev),
        })
    }

    fn open_stdin() -> Result<OpenSource> {
        let mut stdin = std::io::stdin().lock();
        let mut head = Vec::with_capacity(EMD_SIZE);
        (&mut stdin)
            .take(EMD_SIZE as u64)
            .read_to_end(&mut head)
            .ctx("reading", "standard input")?;
        match sniff::sniff(&head) {
            Kind::Stream => Err(stream_source(Path::new("-"))),
            Kind::Luks => Err(Error::usage(
                "standard input holds a LUKS volume: evfs reads LUKS volumes from a file or block device (their keyslots are read out of order)",
            )
            .with_hint("save it to a file first, or give its path")),
            Kind::Plain => {
                // Enough of the start for the ciphertext check.
                (&mut stdin)
                    .take((sniff::SCAN_LEN - head.len()) as u64)
                    .read_to_end(&mut head)
                    .ctx("reading", "standard input")?;
                Ok(OpenSource {
                    name: "standard input".to_string(),
                    emd: None,
                    data: Data::Stdin { head },
                })
            }
            Kind::Volume => {
                let emd = Emd::parse(&head).map_err(|e| {
                    Error::integrity(format!(
                        "standard input starts with EMD magic but its EMD is invalid ({e})"
                    ))
                })?;
                // Skip the rest of the metadata area up to the data.
                let skip = emd.data_offset - EMD_SIZE as u64;
                let skipped = std::io::copy(&mut (&mut stdin).take(skip), &mut std::io::sink())
                    .ctx("reading", "standard input")?;
                if skipped != skip {
                    return Err(Error::integrity(
                        "standard input ended inside the volume's metadata area",
                    ));
                }
                Ok(OpenSource {
                    name: "standard input".to_string(),
                    emd: Some(emd),
                    data: Data::Stdin { head: Vec::new() },
                })
            }
        }
    }

    /// The storage the source is read from (standard input's, by `fstat`).
    pub fn storage(&self) -> Result<Storage> {
        match &self.data {
            Data::Device(d) => d.storage(),
            Data::Stdin { .. } => Storage::of_stdin(),
            Data::Luks(l) => l.vol.dev.storage(),
        }
    }

    /// The LUKS source, if this is one.
    pub fn luks(&self) -> Option<&LuksSource> {
        match &self.data {
            Data::Luks(l) => Some(l),
            _ => None,
        }
    }

    /// Unlock a LUKS source for the backup (its secret is the
    /// [`KeyUse::Volume`] one, `key` an enrolled key pair); returns the key
    /// pair that opened it, if one did.
    pub fn unlock_luks(
        &mut self,
        access: &LuksAccess,
        keys: &dyn Keys,
        key: Option<&KeyId>,
    ) -> Result<Option<PrivateKey>> {
        let Data::Luks(l) = &mut self.data else {
            return Err(Error::runtime(
                "internal: unlocking a source that is not LUKS",
            ));
        };
        let opened = crate::ops::luks::unlock(
            &l.vol,
            access,
            keys,
            KeyUse::Volume,
            key.map(|k| (k, KeyUse::Volume)),
        )?;
        l.key = Some(opened.key);
        Ok(opened.by_key)
    }

    /// The pipeline key that decrypts the source: an EVFS volume's with
    /// `key`, an unlocked LUKS source's (none where its cipher is applied as
    /// chunks are read), none for plain data.
    pub fn decrypt_key(&self, key: Option<&VolumeKey>) -> Result<Option<SectorKey>> {
        match (&self.data, &self.emd) {
            (Data::Luks(l), _) => match &l.key {
                Some(k) => crate::ops::luks::sector_key(&l.area, k),
                None => Ok(None),
            },
            (_, Some(e)) => Ok(key.map(|k| SectorKey::new(k, e.sector_size))),
            (_, None) => Ok(None),
        }
    }

    /// The sector size of a volume source.
    pub fn sector_size(&self) -> Option<u32> {
        match (&self.data, &self.emd) {
            (Data::Luks(l), _) => Some(l.area.sector_size),
            (_, e) => e.as_ref().map(|e| e.sector_size),
        }
    }

    /// Where the data comes from, for an EMD's provenance: a LUKS source
    /// counts as a volume by its UUID (LUKS has no data version).
    pub fn origin(&self) -> Origin {
        match (&self.data, &self.emd) {
            (Data::Luks(l), _) => {
                crate::ops::luks::uuid_bytes(&l.vol.header.uuid()).map_or(Origin::Plain, |uuid| {
                    Origin::Volume {
                        uuid,
                        data_version: 0,
                    }
                })
            }
            (_, e) => super::clone::origin(e.as_ref()),
        }
    }

    /// Whether the source is a LUKS volume.
    pub fn is_luks(&self) -> bool {
        matches!(self.data, Data::Luks(_))
    }

    /// Bytes of plaintext the backup copies: a volume's data length, a plain
    /// file's size, or unknown for plain stdin.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> Option<u64> {
        match (&self.emd, &self.data) {
            (Some(e), _) => Some(e.data_len),
            (None, Data::Device(d)) => Some(d.size()),
            (None, Data::Stdin { .. }) => None,
            (None, Data::Luks(l)) => Some(l.vol.data_size(&l.area)),
        }
    }

    /// Bytes the backup reads: a volume's data length in whole sectors (the
    /// cipher works on sectors), else [`Self::len`].
    pub fn read_len(&self) -> Option<u64> {
        match &self.emd {
            Some(e) => Some(e.data_len.next_multiple_of(u64::from(e.sector_size))),
            None => self.len(),
        }
    }

    /// Whether plain data looks like something that must not be encrypted
    /// as plain data: ciphertext, a LUKS volume, a disk image holding an
    /// EVFS volume (see [`sniff::ciphertext`]). `None` for volumes.
    pub fn suspect(&self) -> Result<Option<sniff::Suspect>> {
        if self.emd.is_some() {
            return Ok(None);
        }
        match &self.data {
            Data::Luks(_) => Ok(None),
            Data::Stdin { head } => Ok(sniff::ciphertext(head, &[])),
            Data::Device(dev) => {
                let size = dev.size();
                let mut head = vec![0u8; (sniff::SCAN_LEN as u64).min(size) as usize];
                dev.read_at(&mut head, 0)?;
                let sector = sniff::SECTOR as u64;
                let rest = size.saturating_sub(sniff::HEAD_LEN as u64) / sector;
                let mut spread = Vec::new();
                if rest > 0 {
                    for i in 0..sniff::SPREAD as u64 {
                        let at =
                            sniff::HEAD_LEN as u64 + (i * rest / sniff::SPREAD as u64) * sector;
                        let mut buf = vec![0u8; sniff::SECTOR];
                        if at + sector <= size {
                            dev.read_at(&mut buf, at)?;
                            spread.push(buf);
                        }
                    }
                }
                let spread: Vec<&[u8]> = spread.iter().map(Vec::as_slice).collect();
                Ok(sniff::ciphertext(&head, &spread))
            }
        }
    }

    /// The pipeline source over the data, from `start` (a multiple of the chunk size).
    pub fn pipeline_source(self, start: u64, buffers: usize) -> Result<Box<dyn Source>> {
        let len = self.read_len();
        match self.data {
            Data::Device(dev) => {
                let (offset, size) = match &self.emd {
                    Some(e) => (e.data_offset, len.unwrap_or(0)),
                    None => (0, dev.size()),
                };
                let path: PathBuf = dev.path().to_path_buf();
                let file = dev
                    .file()
                    .try_clone()
                    .map_err(|e| Error::io("reopening", &path, e))?;
                let mut source = FileSource::new(file, path, offset, size).buffers(buffers);
                source.skip(start);
                Ok(Box::new(Held { source, _keep: dev }))
            }
            Data::Luks(l) => {
                let LuksSource { vol, area, key } = *l;
                let size = len.unwrap_or(0);
                let path: PathBuf = vol.dev.path().to_path_buf();
                let file = vol
                    .dev
                    .file()
                    .try_clone()
                    .map_err(|e| Error::io("reopening", &path, e))?;
                let mut source = FileSource::new(file, path, area.offset, size).buffers(buffers);
                source.skip(start);
                let chunk = match &key {
                    Some(k) => crate::ops::luks::chunk_cipher(&area, k)?,
                    None => None,
                };
                let held = Held { source, _keep: vol };
                Ok(match chunk {
                    Some(c) => {
                        Box::new(crate::ops::luks::Decrypting::new(Box::new(held), c, start))
                    }
                    None => Box::new(held),
                })
            }
            Data::Stdin { head } => {
                let reader = std::io::Cursor::new(head).chain(std::io::stdin());
                let mut reader: Box<dyn Read + Send> = match len {
                    Some(n) => Box::new(reader.take(n)),
                    None => Box::new(reader),
                };
                if start > 0 {
                    let skipped =
                        std::io::copy(&mut (&mut reader).take(start), &mut std::io::sink())
                            .ctx("reading", "standard input")?;
                    if skipped != start {
                        return Err(Error::runtime(
                            "standard input ended before the resume point",
                        ));
                    }
                }
                Ok(Box::new(ReaderSource::new(
                    reader,
                    "standard input",
                    len.map(|n| n - start),
                    buffers,
                    CHUNK,
                )))
            }
        }
    }
}

/// A mapped source that keeps its device (or LUKS volume) open, and with it
/// the shared lock on the source's storage, until the pipeline is done
/// reading.
struct Held<K: Send> {
    source: FileSource,
    _keep: K,
}

impl<K: Send> Source for Held<K> {
    fn total(&self) -> Option<u64> {
        self.source.total()
    }

    fn next(&mut self, max: usize) -> Result<Option<Input>> {
        self.source.next(max)
    }
}

fn stream_source(path: &Path) -> Error {
    Error::refused(format!(
        "{} is a backup stream, not a volume or plain data",
        if path == Path::new("-") {
            "standard input".to_string()
        } else {
            path.display().to_string()
        }
    ))
    .with_hint("restore it with `evfs restore STREAM DST`; check it with `evfs verify STREAM`")
}
