//! Writing a backup into a LUKS2 target: a new one (a fresh header, UUID
//! and volume key, an Argon2id keyslot for the target's passphrase), or an
//! existing one with its own volume key (its header and keyslots kept).
//!
//! LUKS has no dirty bit: until the data is complete and synced, the header
//! carries evfs's mandatory requirement `evfs-incomplete`, so that
//! cryptsetup refuses to activate a half-written target and `evfs check`
//! reports it (exit 6). A new target has it from its first header write;
//! an existing one gets it before the first data byte. The seal stores the
//! backup's provenance in an `evfs-provenance` token, then removes the
//! requirement. Every header write takes cryptsetup's metadata lock (see
//! `volume::luks`).

use std::path::Path;

use super::decide::{Format, Mode};
use super::source::OpenSource;
use super::target::Classified;
use super::{Job, Report};
use crate::crypto::VolumeKey;
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::luks::{
    DataArea, FormatOptions, LuksKey, REQUIREMENT_INCOMPLETE, SectorCipherKind,
    format_with_requirement,
};
use crate::ops::luks::token::{Provenance, SourceKind};
use crate::ops::luks::{LuksAccess, LuksKdf};
use crate::ops::{KeyUse, luks};
use crate::pipeline::Plan;
use crate::pipeline::sink::DeviceSink;
use crate::volume::Device;
use crate::volume::luks::LuksVolume;

/// Bytes a LUKS2 volume evfs formats keeps before its data.
pub(crate) const LUKS_DATA_OFFSET: u64 = crate::luks::write::DEFAULT_DATA_OFFSET;

/// The LUKS side of a backup request.
#[derive(Clone, Debug, Default)]
pub struct LuksBackup {
    /// The source's keyslot and detached header.
    pub source: LuksAccess,
    /// An existing target's keyslot and detached header.
    pub target: LuksAccess,
    /// `--target-format`.
    pub target_format: Option<Format>,
    /// The Argon2id cost of a new target's keyslot.
    pub kdf: LuksKdf,
}

/// Bytes a new LUKS2 target of `len` bytes of data in `sector_size`
/// sectors needs (at least one sector of data).
pub(crate) fn device_size(len: u64, sector_size: u32) -> u64 {
    let ss = u64::from(sector_size);
    LUKS_DATA_OFFSET + len.next_multiple_of(ss).max(ss)
}

/// The provenance of the data being written, as the token records it.
fn provenance_of(src: &OpenSource) -> (SourceKind, Option<String>, Option<u64>) {
    if let Some(l) = src.luks() {
        return (
            SourceKind::Luks(l.vol.format_name()),
            Some(l.vol.header.uuid()),
            None,
        );
    }
    match &src.emd {
        Some(e) => (
            SourceKind::Evfs,
            Some(e.uuid_string()),
            Some(e.data_version),
        ),
        None => (SourceKind::Plain, None, None),
    }
}

/// The source volume's UUID, for the report.
fn src_uuid(src: &OpenSource) -> Option<[u8; 16]> {
    match src.luks() {
        Some(l) => luks::uuid_bytes(&l.vol.header.uuid()),
        None => src.emd.as_ref().map(|e| e.uuid),
    }
}

impl Job<'_> {
    /// The sector size of a new target: asked for, else the source's, else
    /// 4096.
    fn luks_sector_size(&self, src: &OpenSource) -> u32 {
        self.req
            .sector_size
            .or(src.sector_size())
            .unwrap_or(super::NEW_SECTOR)
    }

    /// The data, encrypted under `key` for `area`, into `dev`; synced.
    fn write_luks_data(
        &self,
        src: OpenSource,
        src_key: Option<&VolumeKey>,
        dev: &Device,
        area: &DataArea,
        key: &LuksKey,
        limit: u64,
    ) -> Result<(crate::pipeline::Outcome, String)> {
        let enc = luks::sector_key(area, key)?
            .ok_or_else(|| Error::runtime("internal: a LUKS2 target that is not AES-XTS"))?;
        let known = src.len();
        let plan = Plan::new(self.req.threads)
            .decrypt(src.decrypt_key(src_key)?)
            .encrypt(Some(enc))
            .hash(true)
            .plain_len(known);
        let result = {
            let inner = DeviceSink {
                dev,
                base: area.offset,
                limit,
                exact: false,
            };
            let mut sink = self.device_sink(dev, inner)?;
            self.run_pipeline(&plan, src, &mut *sink)?
        };
        dev.sync()?;
        Ok(result)
    }

    /// Store the provenance and remove the requirement: the target is
    /// complete.
    fn seal_luks(
        &self,
        vol: &mut LuksVolume,
        source: (SourceKind, Option<String>, Option<u64>),
        outcome: &crate::pipeline::Outcome,
    ) -> Result<()> {
        let digest = outcome
            .digest
            .ok_or_else(|| Error::runtime("internal: a LUKS2 backup without a digest"))?;
        let (kind, uuid, version) = source;
        let mut p =
            Provenance::of_backup(&kind, uuid, version, self.started, outcome.bytes, digest);
        match self.signer() {
            Some(pk) => p.sign(&vol.header.uuid(), pk),
            None => self.note_unsigned("the target's provenance", None),
        }
        vol.update(|h| {
            let id = Provenance::find(h.metadata()).map(|(id, _)| id);
            h.set_token(id, &p.to_json())
        })?;
        vol.update(|h| Ok(((), h.remove_requirement(REQUIREMENT_INCOMPLETE)?)))?;
        Ok(())
    }

    /// A fresh LUKS2 volume on `path`: a new UUID and volume key, one
    /// Argon2id keyslot for the target's passphrase, the data encrypted
    /// under the new key.
    pub(super) fn new_luks(
        &self,
        src: OpenSource,
        path: &Path,
        cl: &Classified,
        src_key: Option<VolumeKey>,
    ) -> Result<Report> {
        let name = path.display().to_string();
        if self.req.luks.target.header.is_some() {
            return Err(Error::usage(
                "evfs makes new LUKS2 targets with their header on the target; --target-luks-header names the header of an existing one",
            ));
        }
        let kdf = self.req.luks.kdf.params()?;
        let secret = match self.keys.luks_secret(KeyUse::Target)? {
            Some(s) => s,
            None => self
                .keys
                .luks_prompt(&name, true)?
                .ok_or_else(|| luks::no_secret(path, KeyUse::Target))?,
        };
        let ss = self.luks_sector_size(&src);
        let known = src.len();
        let needed = device_size(known.unwrap_or(0), ss);
        let mut dev = if path.exists() {
            Device::open_write(path)?
        } else {
            Device::create_file(path, needed)?
        };
        dev.lock(true, "write a backup into it")?;
        if dev.is_block() {
            if cl.emd.is_some() {
                // An EVFS volume replaced (--force): its EMD copies must not
                // outlive it, the backup copy at the end least of all.
                crate::volume::metadata::wipe_both(&dev)?;
            }
        } else {
            // What the file held goes (a foreign file, a replaced volume).
            dev.resize(0)?;
            dev.resize(needed)?;
        }
        let key = LuksKey::generate(64).map_err(Error::from)?;
        let opts = FormatOptions {
            sector_size: ss,
            kdf,
            ..FormatOptions::default()
        };
        let (header, plan) = format_with_requirement(&key, &secret, &opts, REQUIREMENT_INCOMPLETE)
            .map_err(|e| crate::volume::luks::luks_error(path, e))?;
        drop(secret);
        LuksVolume::write_new(&mut dev, &plan)?;
        self.obs.detail(&format!(
            "evfs: {name}: LUKS2 header written (UUID {}), marked {REQUIREMENT_INCOMPLETE} until the data is complete",
            header.uuid()
        ));
        let area = DataArea {
            cipher: SectorCipherKind::AesXtsPlain64,
            offset: opts.data_offset,
            size: None,
            sector_size: ss,
            iv_tweak: 0,
        };
        let limit = match known {
            Some(n) => n.next_multiple_of(u64::from(ss)),
            None if dev.is_block() => dev.size().saturating_sub(area.offset),
            None => u64::MAX - area.offset,
        };
        let source = provenance_of(&src);
        let source_uuid = src_uuid(&src);
        let mode = self.decision.mode;
        let (outcome, src_name) =
            self.write_luks_data(src, src_key.as_ref(), &dev, &area, &key, limit)?;
        if known.is_none() && !dev.is_block() {
            dev.resize(device_size(outcome.bytes, ss))?;
            dev.sync()?;
        }
        let mut vol = match LuksVolume::from_device(dev, None, true)? {
            Ok(v) => v,
            Err(_) => {
                return Err(Error::runtime(format!(
                    "{name}: the LUKS2 header evfs wrote is gone"
                )));
            }
        };
        self.seal_luks(&mut vol, source, &outcome)?;
        debug_assert_ne!(mode, Mode::Raw);
        Ok(Report {
            digest: outcome.digest,
            target_uuid: luks::uuid_bytes(&vol.header.uuid()),
            chunks: Some(crate::ops::Chunks::written(&outcome)),
            ..self.report(src_name, source_uuid, &name, outcome.bytes)
        })
    }

    /// Into an existing LUKS2 volume on `path`, under its own volume key
    /// (opened with the target's secret, or the key pair `target_key`
    /// enrolled in it); its header and keyslots stay.
    pub(super) fn write_into_luks(
        &self,
        src: OpenSource,
        path: &Path,
        src_key: Option<VolumeKey>,
        target_key: Option<(&KeyId, KeyUse)>,
    ) -> Result<Report> {
        let name = path.display().to_string();
        if self.req.luks.kdf != LuksKdf::default() {
            return Err(Error::usage(
                "--luks-kdf-memory and --luks-kdf-iterations set the keyslot of a new LUKS2 target; this one keeps its keyslots",
            ));
        }
        let access = &self.req.luks.target;
        let mut vol = LuksVolume::open(path, access.header.as_deref(), true)?;
        vol.lock(true, "write a backup into it")?;
        vol.reread()?;
        let area = luks::restore::writable_area(&vol)?;
        let size = vol.data_size(&area);
        if let Some(n) = src.len()
            && n > size
        {
            return Err(Error::refused(format!(
                "the LUKS target {name} is too small: its data area has {size} bytes, the backup needs {n}"
            ))
            .with_hint("choose a larger target, or a new file with --target-format luks2"));
        }
        let opened = luks::unlock(&vol, access, self.keys, KeyUse::Target, target_key)?;
        self.obs.detail(&format!(
            "evfs: {name}: LUKS keyslot {} opened; marking it {REQUIREMENT_INCOMPLETE}",
            opened.keyslot
        ));
        vol.update(|h| Ok(((), h.add_requirement(REQUIREMENT_INCOMPLETE)?)))?;
        let source = provenance_of(&src);
        let source_uuid = src_uuid(&src);
        let (outcome, src_name) =
            self.write_luks_data(src, src_key.as_ref(), &vol.dev, &area, &opened.key, size)?;
        drop(opened);
        self.seal_luks(&mut vol, source, &outcome)?;
        Ok(Report {
            digest: outcome.digest,
            target_uuid: luks::uuid_bytes(&vol.header.uuid()),
            chunks: Some(crate::ops::Chunks::written(&outcome)),
            ..self.report(src_name, source_uuid, &name, outcome.bytes)
        })
    }
}
