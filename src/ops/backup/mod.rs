//! `evfs backup SRC DST` as a use-case: open and sniff the source
//! (`source`), classify the target (`target`), let the configuration
//! table decide (`decide`), refuse rollbacks (`rollback`), unlock only
//! the keys the decision needs, and write: into a volume (`write`), as a
//! cleartext export (`export`) or as a backup stream (`stream`). The EMD
//! clone and provenance come from `clone`, checkpoints for `--resume` from
//! `resume`.

pub(crate) mod clone;
pub(crate) mod decide;
mod export;
pub(crate) mod index;
pub mod luks;
pub(crate) mod resume;
pub(crate) mod rollback;
mod since;
pub(crate) mod source;
mod stream;
pub(crate) mod target;
mod write;

use std::path::{Path, PathBuf};
use std::time::Instant;

use decide::{Decision, Dst, Flags, Sizes, Src, TargetKey, Write};
pub use decide::{Format, Mode};
use resume::{ResumePoint, RunKind};
use rollback::Lineage;
use source::OpenSource;
pub use target::Target;

use super::{KeyUse, Keys, Observer, Report};
use crate::crypto::VolumeKey;
use crate::emd::{Emd, State, Timestamp};
use crate::error::{Error, Result};
use crate::keys::{KeyId, PrivateKey};
use crate::volume::{layout, lock};

/// Sector size of volumes made from plain data, unless asked otherwise.
const NEW_SECTOR: u32 = 4096;

/// A backup, as resolved options. Keys are named here and unlocked through
/// the [`Keys`] provider only when the decision needs them.
#[derive(Clone, Debug)]
pub struct BackupRequest {
    /// A volume, a plain file or block device, or `-` for standard input.
    pub source: PathBuf,
    /// Where the backup goes.
    pub target: Target,
    /// The key that decrypts the source (`-k`); with a plain source, the
    /// key of the target volume.
    pub key: Option<KeyId>,
    /// The owner of a new volume made from plain data.
    pub owner: Option<KeyId>,
    /// The key of an existing target volume, written with its own key.
    pub target_key: Option<KeyId>,
    /// Worker threads (see [`super::threads`]).
    pub threads: usize,
    /// Copy the ciphertext as it lies, with the source's EMD.
    pub raw: bool,
    /// A new clone keeps the source's volume key.
    pub same_key: bool,
    /// A refreshed clone gets a fresh volume key.
    pub rekey: bool,
    /// Rewrite every chunk of the target, changed or not (a backup into a
    /// target with a chunk index otherwise writes only the changed ones).
    pub full: bool,
    /// Stream only: an incremental stream of the chunks changed since this
    /// base (a manifest, or a volume made from the source by a backup).
    pub since: Option<PathBuf>,
    /// Stream only: write a manifest of the stream here.
    pub manifest: Option<PathBuf>,
    /// Export the plaintext.
    pub cleartext: bool,
    /// Sector size of a new target.
    pub sector_size: Option<u32>,
    /// Stream only: zstd level of compressed frames.
    pub compress: Option<i32>,
    /// Stream only: all-zero chunks as markers.
    pub sparse: bool,
    /// Continue an interrupted backup from its checkpoint.
    pub resume: bool,
    /// Overwrite foreign data, replace an own EMD, roll back, encrypt data
    /// that looks like ciphertext.
    pub force: bool,
    /// Write a file or device target with O_DIRECT.
    pub direct: bool,
    /// Sign the target's EMD and the stream with this key (default: the key
    /// that unlocks the source, else the owner's when it can be unlocked).
    pub sign_with: Option<KeyId>,
    /// LUKS sources and targets: keyslots, detached headers, the target's
    /// format, the KDF of a new LUKS2 keyslot. Their secrets come from the
    /// [`Keys`] provider ([`KeyUse::Volume`]: the source's,
    /// [`KeyUse::Target`]: the target's).
    pub luks: luks::LuksBackup,
}

impl BackupRequest {
    /// A request with every option off: from `source` to `target`.
    pub fn new(source: impl Into<PathBuf>, target: Target) -> BackupRequest {
        BackupRequest {
            source: source.into(),
            target,
            key: None,
            owner: None,
            target_key: None,
            threads: super::threads(None),
            raw: false,
            same_key: false,
            rekey: false,
            full: false,
            since: None,
            manifest: None,
            cleartext: false,
            sector_size: None,
            compress: None,
            sparse: false,
            resume: false,
            force: false,
            direct: false,
            sign_with: None,
            luks: luks::LuksBackup::default(),
        }
    }

    /// Option combinations that make no sense whatever the source and target.
    fn check_flags(&self) -> Result<()> {
        if let Some(ss) = self.sector_size {
            super::check_sector_size(ss)?;
        }
        let stream = matches!(self.target, Target::Stdout | Target::StreamFile(_));
        if (self.compress.is_some() || self.sparse) && (!stream || self.cleartext) {
            return Err(Error::usage(
                "--compress and --sparse apply to backup streams (DST - or --stream FILE)",
            ));
        }
        if self.direct && stream {
            return Err(Error::usage(
                "--direct writes a file or block device target, not a stream",
            ));
        }
        if self.resume && (!matches!(self.target, Target::Path(_)) || self.cleartext) {
            return Err(Error::usage(
                "--resume continues a backup into a volume; a stream or a cleartext export is written again from the start",
            ));
        }
        if self.same_key && self.rekey {
            return Err(Error::usage(
                "--same-key keeps the source's key, --rekey makes a fresh one: choose one",
            ));
        }
        Ok(())
    }

    /// Options that apply only to some decisions.
    fn check_mode_flags(&self, d: Decision) -> Result<()> {
        let luks_write = matches!(d.write, Write::NewLuks | Write::IntoLuks);
        if self.same_key
            && !(d.mode == Mode::Reencrypt && d.write != Write::IntoVolume && !luks_write)
        {
            return Err(Error::usage(
                "--same-key keeps the source's key in a re-encrypted clone; it does not apply here",
            ));
        }
        if d.mode == Mode::Raw && self.compress.is_some() {
            return Err(Error::usage(
                "a raw stream carries ciphertext as it lies: it cannot be compressed without the key",
            )
            .with_hint("leave out --raw and give -k ID to make a compressed stream"));
        }
        if d.mode == Mode::Raw && self.sparse {
            return Err(Error::usage(
                "--sparse finds all-zero plaintext, which a raw (keyless) stream never sees",
            ));
        }
        let keyed_target = matches!(d.mode, Mode::Reencrypt | Mode::Encrypt);
        if self.rekey && !(keyed_target && d.write != Write::IntoVolume && !luks_write) {
            return Err(Error::usage(
                "--rekey gives a re-encrypted clone a fresh volume key; it does not apply here",
            )
            .with_hint(
                "a volume written with its own key keeps it; a raw clone has the source's key",
            ));
        }
        if self.full && !(keyed_target && d.write != Write::Stream && !luks_write) {
            return Err(Error::usage(
                "--full rewrites a refreshed target volume in full; it does not apply here",
            ));
        }
        if self.since.is_some() && !(keyed_target && d.write == Write::Stream) {
            return Err(Error::usage(
                "--since makes an incremental backup stream; it does not apply here",
            )
            .with_hint("a backup into a volume writes only the changed chunks by itself"));
        }
        if self.since.is_some() && (self.rekey || self.same_key) {
            return Err(Error::usage(
                "an incremental stream keeps the volume key of its base; leave out --rekey and --same-key",
            )
            .with_hint("make a full stream (without --since) for a new volume key"));
        }
        if self.since.is_some() && self.sector_size.is_some() {
            return Err(Error::usage(
                "an incremental stream keeps the sectors of its base; leave out --sector-size",
            ));
        }
        if self.manifest.is_some() && !(keyed_target && d.write == Write::Stream) {
            return Err(Error::usage(
                "--manifest describes a backup stream made with a key; it does not apply here",
            )
            .with_hint("a volume made by a backup is itself a BASE for --since"));
        }
        if self.sector_size.is_some()
            && !(keyed_target
                && matches!(
                    d.write,
                    Write::NewClone | Write::Refresh | Write::Stream | Write::NewLuks
                ))
        {
            return Err(Error::usage(
                "--sector-size sets the sectors of a new target; it does not apply here",
            )
            .with_hint(
                "a volume written with its own key keeps its sectors; a raw clone has the source's",
            ));
        }
        if self.resume && luks_write {
            return Err(Error::usage(
                "--resume continues a backup into an EVFS volume; a LUKS2 target is written again in full (run the backup again)",
            ));
        }
        if self.luks.kdf != crate::ops::luks::LuksKdf::default() && d.write != Write::NewLuks {
            return Err(Error::usage(
                "--luks-kdf-memory and --luks-kdf-iterations set the keyslot of a new LUKS2 target; they do not apply here",
            ));
        }
        if self.luks.target != crate::ops::luks::LuksAccess::default() && !luks_write {
            return Err(Error::usage(
                "--target-luks-slot and --target-luks-header apply to a LUKS2 target; this target is not one",
            ));
        }
        Ok(())
    }

    /// The sector size of a new target: asked for, else the source's, else
    /// 4096 for plain data.
    fn new_sector_size(&self, src: Option<&Emd>) -> u32 {
        self.sector_size
            .or(src.map(|e| e.sector_size))
            .unwrap_or(NEW_SECTOR)
    }

    /// The data area a new target gets: a clone's is the source's (in whole
    /// target sectors); plain data's is its length in whole sectors, at
    /// least one. Unknown for plain data on stdin.
    fn new_data_size(&self, src: &OpenSource) -> Option<u64> {
        let ss = u64::from(self.new_sector_size(src.emd.as_ref()));
        match &src.emd {
            Some(e) => Some(e.data_size.next_multiple_of(ss)),
            None => src.len().map(|n| n.next_multiple_of(ss).max(ss)),
        }
    }
}

/// Everything the write flows need, resolved.
struct Job<'a> {
    req: &'a BackupRequest,
    keys: &'a dyn Keys,
    obs: &'a dyn Observer,
    decision: Decision,
    started: Timestamp,
    clock: Instant,
    /// The unlocked `-k` key (of a decrypted source, or of the target of a
    /// plain source): it also opens a clone's key or a target volume with a
    /// slot for it, without asking for its passphrase again.
    k_pk: Option<PrivateKey>,
    /// The key that signs what this backup writes, when it is not `k_pk`.
    signer: Option<PrivateKey>,
    /// Where `--resume` continues, when it does.
    resume: Option<ResumePoint>,
    /// The target's EMD as classified (an existing volume).
    target: Option<Emd>,
}

/// Run a backup: decide, refuse or write, and report.
pub fn run(req: &BackupRequest, keys: &dyn Keys, obs: &dyn Observer) -> Result<Report> {
    req.check_flags()?;
    let mut src = OpenSource::open(&req.source, req.luks.source.header.as_deref())?;
    let src_uuid = src.emd.as_ref().map(|e| e.uuid);
    let classified = target::classify(
        &req.target,
        &src.storage()?,
        src_uuid,
        req.key.as_ref(),
        req.luks.target.header.as_deref(),
    )?;
    if let Target::Path(p) = &req.target
        && classified.dst != Dst::Source
    {
        // Before the table looks at the target: a target that another backup,
        // restore or map is writing is refused as busy (naming who), not as
        // foreign because of the dirty EMD that writer put there.
        lock::probe(p, "write a backup into it")?;
    }
    let src_kind = match &src.emd {
        None if src.is_luks() => Src::Luks,
        None => Src::Plain,
        Some(e) if e.state == State::Enabled => Src::Enabled,
        Some(_) => Src::Disabled,
    };
    if src_kind != Src::Luks
        && (req.luks.source != crate::ops::luks::LuksAccess::default()
            || keys.luks_secret(KeyUse::Volume)?.is_some())
    {
        return Err(Error::usage(format!(
            "the --luks-… flags open a LUKS source; {} is not one",
            src.name
        )));
    }
    if src_kind == Src::Luks && (req.same_key || req.resume) {
        return Err(Error::usage(
            "the source is a LUKS volume: --same-key and --resume apply to EVFS sources",
        ));
    }
    // With a plain source, -k can only mean the key of the target volume.
    let target_key: Option<(KeyId, TargetKey)> = match (&req.target_key, &req.key) {
        (Some(t), _) => Some((t.clone(), TargetKey::Flag)),
        (None, Some(k)) if src_kind == Src::Plain => Some((k.clone(), TargetKey::K)),
        _ => None,
    };
    let flags = Flags {
        raw: req.raw,
        cleartext: req.cleartext,
        owner: req.owner.is_some(),
        target_key: target_key.as_ref().map(|(_, by)| *by),
        force: req.force,
        target_format: req.luks.target_format,
    };
    let resume = match (&req.target, req.resume) {
        (Target::Path(p), true) => resume::inspect(
            &p.display().to_string(),
            classified.emd.as_ref(),
            src.emd.as_ref(),
            RunKind {
                raw: req.raw,
                into_volume: target_key.is_some(),
            },
        )?,
        _ => None,
    };
    // The table sees a target being resumed as what it was when the
    // interrupted run began: blank for a new clone, the volume itself for a
    // backup into it with its own key.
    let dst = match &resume {
        Some(r) if target_key.is_none() && r.emd.clone_of.is_none() => Dst::Blank,
        _ => classified.dst,
    };
    let sizes = Sizes {
        clone_device: req.new_data_size(&src).map(layout::device_size_for),
        plaintext: src.len(),
        luks_device: src.len().map(|n| {
            luks::device_size(
                n,
                req.sector_size.or(src.sector_size()).unwrap_or(NEW_SECTOR),
            )
        }),
    };
    let decision = decide::decide(src_kind, dst, classified.room, sizes, flags)?;
    req.check_mode_flags(decision)?;
    if !matches!(decision.write, Write::NewLuks | Write::IntoLuks)
        && keys.luks_secret(KeyUse::Target)?.is_some()
    {
        return Err(Error::usage(
            "--target-luks-passphrase-file and --target-luks-key-file open a LUKS2 target; this target is not one",
        )
        .with_hint("add --target-format luks2 to make a new LUKS2 target"));
    }
    if decision.mode == Mode::Encrypt
        && !req.force
        && let Some(suspect) = src.suspect()?
    {
        return Err(Error::refused(format!(
            "{} looks like {}: encrypting it as plain data would encrypt it twice",
            src.name,
            suspect.describe()
        ))
        .with_hint(
            "back up the volume itself (or clone it with --raw); add --force only if the data really is random or compressed bytes",
        ));
    }
    if let (Some(t), Some(s), Target::Path(p)) = (&classified.emd, &src.emd, &req.target)
        && matches!(
            decision.write,
            Write::NewClone | Write::Refresh | Write::IntoVolume
        )
    {
        rollback::check(
            &Lineage::of(s),
            &src.name,
            t,
            &p.display().to_string(),
            req.force,
        )?;
    }
    obs.detail(&format!(
        "evfs: source {} ({src_kind:?}), target {:?}: {} via {:?}",
        src.name,
        classified.dst,
        decision.mode.name(),
        decision.write
    ));
    // A source holding an unfinished backup or restore is a mix of two
    // states: a copy of it, raw or decrypted, would end clean and be
    // neither.
    if let Some(c) = src.emd.as_ref().and_then(|e| e.checkpoint.as_ref()) {
        return Err(Error::refused(format!(
            "the source {} holds an unfinished {} ({:.0} % done): its data is part old, part new",
            src.name,
            match c.task {
                crate::emd::Task::Backup => "backup",
                crate::emd::Task::Restore => "restore",
            },
            c.bytes_done as f64 * 100.0 / c.total.max(1) as f64
        ))
        .with_hint(format!(
            "finish it first (`evfs check {}` says how), then back it up",
            src.name
        )));
    }
    if let Some(e) = &src.emd
        && e.dirty
    {
        obs.note(&format!(
            "evfs: warning: the source {} is marked dirty (a writer did not shut it down); the copy gets a clean EMD",
            src.name
        ));
    }
    if let (Some(r), Target::Path(p)) = (&resume, &req.target) {
        let c = r.checkpoint();
        obs.note(&format!(
            "evfs: resuming the interrupted backup into {} at byte {} of {} (run {})",
            p.display(),
            r.start,
            c.total,
            crate::hex::encode(&c.run_id)
        ));
    } else if req.resume {
        obs.detail("evfs: --resume: nothing to resume, running a full backup");
    }
    let (src_key, k_pk) = match decision.mode {
        Mode::Reencrypt | Mode::Cleartext if src.is_luks() => {
            let pk = src.unlock_luks(&req.luks.source, keys, req.key.as_ref())?;
            (None, pk)
        }
        Mode::Reencrypt | Mode::Cleartext => {
            let (key, pk) = unlock_source(req, keys, &src)?;
            (Some(key), Some(pk))
        }
        Mode::Encrypt | Mode::Raw => (None, None),
    };
    // Who signs: --sign-with; else the key that unlocked the source (or the
    // target: see `to_volume`); else the owner's, when it can be had.
    let signer = match (&req.sign_with, &k_pk) {
        (Some(id), Some(pk)) if pk.id() == id => None,
        (Some(_), _) => super::trust::signer(keys, req.sign_with.as_ref(), None)?,
        (None, Some(_)) => None,
        (None, None) if decision.mode == Mode::Cleartext => None,
        (None, None) => {
            let owner = match &src.emd {
                Some(e) => Some(e.owner().id.clone()),
                None => req.owner.clone(),
            };
            super::trust::signer(keys, None, owner.as_ref())?
        }
    };
    let job = Job {
        req,
        keys,
        obs,
        decision,
        started: Timestamp::now(),
        clock: Instant::now(),
        k_pk,
        signer,
        resume,
        target: classified.emd.clone(),
    };
    match (decision.write, &req.target) {
        (Write::NewClone | Write::Refresh, Target::Path(p)) => {
            job.new_clone(src, p, &classified, src_key)
        }
        (Write::IntoVolume, Target::Path(p)) => {
            let (id, purpose) = match target_key {
                Some((id, TargetKey::Flag)) => (id, KeyUse::Target),
                Some((id, TargetKey::K)) => (id, KeyUse::Volume),
                // A volume the source's -k key has a slot in.
                None => (
                    req.key
                        .clone()
                        .ok_or_else(|| Error::runtime("internal: into a volume without a key"))?,
                    KeyUse::Volume,
                ),
            };
            job.to_volume(src, p, &id, purpose, src_key)
        }
        (Write::NewLuks, Target::Path(p)) => job.new_luks(src, p, &classified, src_key),
        (Write::IntoLuks, Target::Path(p)) => {
            let by = target_key.as_ref().map(|(id, by)| {
                (
                    id,
                    match by {
                        TargetKey::Flag => KeyUse::Target,
                        TargetKey::K => KeyUse::Volume,
                    },
                )
            });
            job.write_into_luks(src, p, src_key, by)
        }
        (Write::Plain, _) => job.export(src, src_key),
        (Write::Stream, _) => job.stream(src, src_key),
        (write, target) => Err(Error::runtime(format!(
            "internal: the table chose {write:?} for {target:?}"
        ))),
    }
}

/// Unlock the source volume with `-k` (owner or authorized user): its volume
/// key, and the private key that opened it.
fn unlock_source(
    req: &BackupRequest,
    keys: &dyn Keys,
    src: &OpenSource,
) -> Result<(VolumeKey, PrivateKey)> {
    let emd = src
        .emd
        .as_ref()
        .ok_or_else(|| Error::runtime("internal: only volume sources are decrypted"))?;
    let Some(id) = &req.key else {
        return Err(Error::access(format!(
            "the source {} is an EVFS volume: decrypting it needs a key",
            src.name
        ))
        .with_hint("give -k ID (or --raw to copy the ciphertext without a key)"));
    };
    let pk = keys.unlock(id, KeyUse::Volume)?;
    let key = super::trust::unlock_data(emd, Path::new(&src.name), &pk, "read its data", keys)?;
    Ok((key, pk))
}

impl Job<'_> {
    /// The key that signs what this backup writes, if any.
    fn signer(&self) -> Option<&PrivateKey> {
        self.signer.as_ref().or(self.k_pk.as_ref())
    }

    /// Say that `what` goes out unsigned, when nobody signs it; `later`
    /// names the volume that `emd sign` can still sign.
    fn note_unsigned(&self, what: &str, later: Option<&Path>) {
        if self.signer().is_none() {
            let how = match later {
                Some(p) => format!(
                    "give --sign-with ID, or sign it later with `evfs emd sign {} -k ID`",
                    p.display()
                ),
                None => "give --sign-with ID, or -k or --passphrase-file for the owner's key"
                    .to_string(),
            };
            self.obs.note(&format!(
                "evfs: note: {what} is not signed: no key pair was unlocked to sign it ({how})"
            ));
        }
    }

    /// The report of a finished run of `bytes` from `source` to `target`;
    /// the flows fill in what they know besides.
    fn report(
        &self,
        source: String,
        source_uuid: Option<[u8; 16]>,
        target: impl std::fmt::Display,
        bytes: u64,
    ) -> Report {
        Report {
            mode: self.decision.mode,
            stream_mode: None,
            bytes,
            seconds: self.clock.elapsed().as_secs_f64(),
            digest: None,
            threads: self.req.threads,
            source,
            target: target.to_string(),
            source_uuid,
            target_uuid: None,
            stream_bytes: None,
            resumed_at: None,
            signed_by: None,
            chunks: None,
        }
    }
}
