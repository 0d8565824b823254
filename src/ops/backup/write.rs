//! Writing a backup into a volume target: a new EMD clone (or a new volume
//! for plain data) or the refresh of an existing clone, and the backup into
//! a volume with its own key, both with checkpoints for `--resume`.

use std::path::Path;

use super::index::{self, Previous};
use super::resume::{CheckpointSink, ResumePoint};
use super::target::Classified;
use super::{Job, clone};
use crate::crypto::{Cipher, VolumeKey};
use crate::emd::Emd;
use crate::error::{Error, Result};
use crate::index::{ChunkIndex, Tagger};
use crate::keys::KeyId;
use crate::ops::backup::decide::{Mode, Write};
use crate::ops::backup::source::OpenSource;
use crate::ops::{Chunks, DATA_ROLES, KeyUse, Report, trust};
use crate::pipeline::digest::TreeMerger;
use crate::pipeline::sink::{DeviceSink, DirectSink, Sink};
use crate::pipeline::{self, Outcome, Plan, SectorKey};
use crate::signature::Sign;
use crate::volume::transaction::Transaction;
use crate::volume::{Device, NewVolume, Volume, layout};

/// The EMD in force must still be the one the resume was planned on: no
/// other writer may have slipped in between the look and the lock.
fn same_emd_under_lock(dev: &Device, cl: &Classified) -> Result<()> {
    let now = crate::volume::metadata::read(dev)?;
    if now.current() != cl.emd.as_ref() {
        return Err(changed_under_us(dev.path()));
    }
    Ok(())
}

fn changed_under_us(path: &Path) -> Error {
    Error::runtime(format!(
        "the EMD of {} changed while the backup opened it: another writer was at work",
        path.display()
    ))
    .with_hint("run the backup again when no other backup, restore or map uses the target")
}

/// The state ID of the data a run writes: its run ID (kept by a resumed
/// run), or a fresh one.
fn state_of(emd: &Emd) -> Result<[u8; 16]> {
    match &emd.checkpoint {
        Some(c) => Ok(c.run_id),
        None => crate::crypto::random_array::<16>(),
    }
}

/// The data length must match what the source promised (a volume on stdin
/// that ends early is truncated).
fn check_length(outcome: &Outcome, expected: Option<u64>, name: &str) -> Result<()> {
    match expected {
        Some(n) if outcome.bytes != n => Err(Error::runtime(format!(
            "{name} ended after {} of {n} bytes: the source is truncated",
            outcome.bytes
        ))),
        _ => Ok(()),
    }
}

impl Job<'_> {
    /// The sink of a file or device target: through O_DIRECT with `--direct`.
    pub(super) fn device_sink<'d>(
        &self,
        dev: &'d Device,
        sink: DeviceSink<'d>,
    ) -> Result<Box<dyn Sink + 'd>> {
        if !self.req.direct {
            return Ok(Box::new(sink));
        }
        let direct = dev.reopen_direct().map_err(|e| match e {
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::EINVAL) => {
                Error::runtime(format!(
                    "{} cannot be opened with O_DIRECT: its file system does not support it",
                    dev.path().display()
                ))
                .with_hint("leave out --direct")
            }
            other => other,
        })?;
        Ok(Box::new(DirectSink::new(sink, Box::new(direct))?))
    }

    pub(super) fn run_pipeline(
        &self,
        plan: &Plan,
        src: OpenSource,
        sink: &mut dyn Sink,
    ) -> Result<(Outcome, String)> {
        self.run_pipeline_after(plan, TreeMerger::new(), src, sink)
    }

    /// [`Self::run_pipeline`] from `plan.start`, after `tree`: the chunk
    /// hashes of the data before it (see [`pipeline::run_after`]).
    fn run_pipeline_after(
        &self,
        plan: &Plan,
        tree: TreeMerger,
        src: OpenSource,
        sink: &mut dyn Sink,
    ) -> Result<(Outcome, String)> {
        let total = src.len();
        let name = src.name.clone();
        let mut source =
            src.pipeline_source(plan.start, crate::pipeline::buffers_for(self.req.threads))?;
        let rest = total.map(|t| t.saturating_sub(plan.start));
        let (outcome, _) = crate::ops::watched(self.obs, "backup", rest, |meter| {
            pipeline::run_after(plan, tree, &mut *source, sink, meter)
        })?;
        check_length(&outcome, rest, &name)?;
        Ok((outcome, name))
    }

    /// The chunk hashes of the first `start` bytes of plaintext already in
    /// the target, decrypted with `key`, so that a resumed run's digest
    /// covers them (see `backup/resume.rs`).
    fn written_prefix(
        &self,
        dev: &Device,
        emd: &Emd,
        key: Option<&VolumeKey>,
        start: u64,
    ) -> Result<TreeMerger> {
        let Some(key) = key.filter(|_| start > 0) else {
            return Ok(TreeMerger::new());
        };
        self.obs.detail(&format!(
            "evfs: re-hashing the {} already in {} for the digest",
            crate::size::human(start),
            dev.path().display()
        ));
        crate::ops::read::Plaintext::of_data(dev, emd, key)
            .prefix(start)
            .tree(self.req.threads)
    }

    /// The target's EMD and key for a resumed clone: the EMD the interrupted
    /// run left, and the key it wraps, opened with the `-k` key (the clone
    /// has the source's slots), or none for a raw clone.
    fn resumed_emd(
        &self,
        r: &ResumePoint,
        path: &Path,
        src_key: Option<&VolumeKey>,
    ) -> Result<(Emd, Option<VolumeKey>)> {
        if self.decision.mode == Mode::Raw {
            return Ok((r.emd.clone(), None));
        }
        let pk = self
            .k_pk
            .as_ref()
            .ok_or_else(|| Error::runtime("internal: resuming a clone without the source key"))?;
        let key = trust::unlock_data(&r.emd, path, pk, "resume a backup into it", self.keys)?;
        let same = src_key.is_some_and(|k| crate::crypto::ct_eq(k.expose(), key.expose()));
        if same != self.req.same_key {
            return Err(Error::refused(format!(
                "the interrupted run into {} {} the source's key: resume it with the options it was started with",
                path.display(),
                if same { "kept (--same-key)" } else { "did not keep (no --same-key)" }
            ))
            .with_hint("add or leave out --same-key as the first run did, or start over without --resume"));
        }
        Ok((r.emd.clone(), Some(key)))
    }

    /// The EMD a target gets, and the key it is encrypted with: a new clone
    /// with a fresh key (or the source's with `--same-key`); the refreshed
    /// EMD of an existing clone, with its own key (fresh with `--rekey`); a
    /// new volume for a plain source; or the source's EMD as it is for a
    /// raw clone.
    pub(super) fn target_emd(
        &self,
        src: &OpenSource,
        src_key: Option<&VolumeKey>,
        path: Option<&Path>,
    ) -> Result<(Emd, Option<VolumeKey>)> {
        let (mut emd, key) = self.unsigned_target_emd(src, src_key, path)?;
        // A raw clone keeps the source's EMD, signature and all; a new EMD
        // is signed by this backup's signer.
        if key.is_some()
            && let Some(pk) = self.signer()
        {
            emd.sign(|m| pk.sign(m));
        }
        Ok((emd, key))
    }

    fn unsigned_target_emd(
        &self,
        src: &OpenSource,
        src_key: Option<&VolumeKey>,
        path: Option<&Path>,
    ) -> Result<(Emd, Option<VolumeKey>)> {
        let args = self.req;
        match (self.decision.mode, &src.emd) {
            (Mode::Reencrypt, Some(se)) if self.decision.write == Write::Refresh => {
                let t = self
                    .target
                    .as_ref()
                    .ok_or_else(|| Error::runtime("internal: a refresh without a target"))?;
                let name = path.map_or_else(String::new, |p| p.display().to_string());
                let key = match (src_key, args.same_key, args.rekey) {
                    (Some(k), true, _) => k.duplicate(),
                    (_, _, true) => VolumeKey::generate(se.cipher)?,
                    _ => match self.k_pk.as_ref().filter(|pk| t.slot(pk.id()).is_some()) {
                        Some(pk) => {
                            trust::unlock_data(t, Path::new(&name), pk, "refresh it", self.keys)?
                        }
                        None => {
                            self.obs.note(&format!(
                                "evfs: -k has no slot in the clone {name}: it gets a fresh volume key"
                            ));
                            VolumeKey::generate(se.cipher)?
                        }
                    },
                };
                let keeps = !(args.rekey || args.same_key);
                let ss =
                    args.sector_size
                        .unwrap_or(if keeps { t.sector_size } else { se.sector_size });
                if !t.data_size.is_multiple_of(u64::from(ss)) || t.data_size < se.data_len {
                    return Err(Error::refused(format!(
                        "the clone {name} has a data area of {} bytes, which cannot hold the source's {} bytes in {ss}-byte sectors",
                        t.data_size, se.data_len
                    ))
                    .with_hint("use --force to replace it with a new clone"));
                }
                Ok((clone::refresh_emd(se, t, &key, ss)?, Some(key)))
            }
            (Mode::Reencrypt, Some(se)) => {
                let key = match (src_key, args.same_key) {
                    (Some(k), true) => k.duplicate(),
                    _ => VolumeKey::generate(se.cipher)?,
                };
                let ss = args.new_sector_size(Some(se));
                Ok((clone::clone_emd(se, &key, ss)?, Some(key)))
            }
            // Plain data, or a LUKS source: a new volume of --owner.
            (Mode::Encrypt | Mode::Reencrypt, None) => {
                let owner = args
                    .owner
                    .clone()
                    .ok_or_else(|| Error::usage("a new volume from plain data needs --owner ID"))?;
                if owner.is_recovery() {
                    return Err(Error::usage(format!(
                        "{owner} is a recovery key; a recovery key cannot own a volume"
                    )));
                }
                let public = self.keys.keystore()?.public(&owner)?;
                let ss = args.new_sector_size(None);
                let (mut emd, key) = NewVolume {
                    cipher: Cipher::Aes256Xts,
                    sector_size: ss,
                    data_size: args.new_data_size(src).unwrap_or(u64::from(ss)),
                    data_len: src.len().unwrap_or(0),
                    label: "",
                    owner: (&owner, public),
                    recovery: vec![],
                }
                .build()?;
                emd.data_version = 1;
                emd.seal(&key);
                Ok((emd, Some(key)))
            }
            (Mode::Raw, Some(se)) => Ok((se.clone(), None)),
            _ => Err(Error::runtime("internal: no EMD for this target")),
        }
    }

    /// A fresh EMD clone (or new volume) and the data, into a new file, a
    /// blank one, an existing clone of the source (refreshed), or a replaced
    /// one (`--force`); or the rest of an interrupted one (`--resume`).
    pub(super) fn new_clone(
        &self,
        src: OpenSource,
        path: &Path,
        cl: &Classified,
        src_key: Option<VolumeKey>,
    ) -> Result<Report> {
        let mode = self.decision.mode;
        let src_emd = src.emd.clone();
        let resume = self.resume.as_ref();
        let (mut emd, tkey) = match resume {
            Some(r) => self.resumed_emd(r, path, src_key.as_ref())?,
            None => self.target_emd(&src, src_key.as_ref(), Some(path))?,
        };
        let known_len = src.len();
        let needed = layout::device_size_for(emd.data_size);
        let start = resume.map_or(0, |r| r.start);

        let mut dev = if path.exists() {
            Device::open_write(path)?
        } else {
            Device::create_file(path, needed)?
        };
        dev.lock(true, "write a backup into it")?;
        if resume.is_some() {
            same_emd_under_lock(&dev, cl)?;
        }
        if !dev.is_block() {
            dev.grow_to(needed)?;
        }
        if resume.is_none() {
            emd.checkpoint = Some(clone::checkpoint(
                src_emd.as_ref().map_or([0; 16], |e| e.uuid),
                src_emd.as_ref().map_or(0, |e| e.generation),
                known_len.unwrap_or(0),
            )?);
        }
        // Newer than anything the target or the source held.
        let floor = [cl.emd.as_ref(), src_emd.as_ref()]
            .into_iter()
            .flatten()
            .map(|e| e.generation + 1)
            .max()
            .unwrap_or(0);
        // The chunk index: what the target's last backup wrote, read
        // before the target is marked dirty; a resumed run makes none.
        let tagger = match &tkey {
            Some(k) if start == 0 => index::tagger(&src, src_key.as_ref(), k),
            _ => None,
        };
        let previous = match (&tagger, &tkey) {
            (Some(t), Some(k)) if resume.is_none() => {
                let now = crate::volume::metadata::read(&dev)?;
                index::previous(
                    &dev,
                    now.current(),
                    k,
                    &emd.uuid,
                    emd.sector_size,
                    t,
                    self.req.full,
                )?
            }
            _ => Previous::none(None),
        };
        self.why_full(&previous, path);
        let tags = tagger.as_ref().map(|t| previous.tags(t));
        let raw_index = match mode {
            Mode::Raw if start == 0 => index::raw_copy(&src, self.obs)?,
            _ => None,
        };
        let mut txn = Transaction::begin(&dev, emd, floor)?;
        let tree = self.written_prefix(&dev, txn.emd(), tkey.as_ref(), start)?;
        let origin = src.origin();
        let plan = Plan::new(self.req.threads)
            .decrypt(src.decrypt_key(src_key.as_ref())?)
            .encrypt(
                tkey.as_ref()
                    .map(|k| SectorKey::new(k, txn.emd().sector_size)),
            )
            .hash(mode != Mode::Raw)
            .plain_len(known_len)
            .start(start)
            .tags(tags.as_ref());
        let (data_offset, data_size, ss) = {
            let e = txn.emd();
            (e.data_offset, e.data_size, e.sector_size)
        };
        let limit = match known_len {
            Some(_) => data_size,
            None if dev.is_block() => layout::max_data_size(dev.size(), ss),
            None => u64::MAX - data_offset,
        };
        let (outcome, src_name) = {
            let inner = self.device_sink(
                &dev,
                DeviceSink {
                    dev: &dev,
                    base: data_offset,
                    limit,
                    exact: false,
                },
            )?;
            let mut sink = CheckpointSink::new(inner, &mut txn)?;
            self.run_pipeline_after(&plan, tree, src, &mut sink)?
        };
        let bytes = start + outcome.bytes;
        if tkey.is_some() {
            self.note_unsigned("the target's EMD", Some(path));
        }
        // Data of a length learnt only now: the data area fits it. A new
        // data state: its ID is the run's.
        let mut fin = txn.emd().clone();
        fin.state_id = Some(state_of(&fin)?);
        if known_len.is_none() {
            let ss = u64::from(fin.sector_size);
            fin.data_size = bytes.next_multiple_of(ss).max(ss);
            fin.data_len = bytes;
            if !dev.is_block() {
                dev.resize(layout::device_size_for(fin.data_size))?;
            }
        }
        let index_ref = match &tkey {
            Some(k) => self.write_index(&dev, &fin, k, tagger.as_ref(), &outcome, bytes)?,
            None => None,
        };
        if let Some(b) = &raw_index {
            index::raw_paste(&dev, &fin, b)?;
        }
        let emd = txn.commit(tkey.as_ref(), tkey.as_ref().and(self.signer()), |emd| {
            emd.data_size = fin.data_size;
            emd.data_len = fin.data_len;
            if tkey.is_some() {
                emd.index = index_ref;
                emd.state_id = fin.state_id;
                emd.provenance = Some(clone::provenance(
                    origin,
                    self.started,
                    bytes,
                    outcome.digest,
                    emd.data_version,
                ));
            }
            Ok(())
        })?;
        Ok(Report {
            digest: outcome.digest,
            target_uuid: Some(emd.uuid),
            resumed_at: resume.map(|r| r.start),
            chunks: Some(Chunks::written(&outcome)),
            ..self.report(src_name, src_emd.map(|e| e.uuid), path.display(), bytes)
        })
    }

    /// Say why a run into `path` writes every chunk, when it had an index
    /// it cannot use.
    fn why_full(&self, previous: &Previous, path: &Path) {
        if let Some(why) = &previous.why_full {
            self.obs.detail(&format!(
                "evfs: writing every chunk of {}: {why}",
                path.display()
            ));
        }
    }

    /// Write the chunk index of a finished run into the area after `emd`'s
    /// data area: `None` when the run made none (a resumed run, a LUKS
    /// source) or the device has no room for one.
    fn write_index(
        &self,
        dev: &Device,
        emd: &Emd,
        key: &VolumeKey,
        tagger: Option<&Tagger>,
        outcome: &Outcome,
        bytes: u64,
    ) -> Result<Option<crate::emd::IndexRef>> {
        let (Some(t), Some((entries, root0))) = (tagger, &outcome.index) else {
            return Ok(None);
        };
        let index = ChunkIndex {
            data_len: bytes,
            data_version: emd.data_version,
            sector_size: emd.sector_size,
            source: t.source_id(),
            root0: *root0,
            state_id: emd.state_id.unwrap_or_default(),
            entries: entries.clone(),
        };
        let written = index::write(dev, emd, key, &index)?;
        if written.is_none() {
            self.obs.note(&format!(
                "evfs: {} has no room for a chunk index after its data area: its next backup rewrites every chunk",
                dev.path().display()
            ));
        }
        Ok(written)
    }

    /// Re-encrypt (or encrypt) into an existing volume with its own key,
    /// keeping its EMD; or the rest of an interrupted run (`--resume`).
    pub(super) fn to_volume(
        &self,
        src: OpenSource,
        path: &Path,
        id: &KeyId,
        purpose: KeyUse,
        src_key: Option<VolumeKey>,
    ) -> Result<Report> {
        let mut dev = Device::open_write(path)?;
        dev.lock(true, "write a backup into it")?;
        let tv = Volume::from_device(dev)?;
        let resume = self.resume.as_ref();
        if let Some(r) = resume
            && tv.emd != r.emd
        {
            return Err(changed_under_us(path));
        }
        // The key that unlocked the source, or a plain source's -k, is not
        // asked for again when it is also the target's.
        let fresh;
        let pk = match &self.k_pk {
            Some(pk) if pk.id() == id => pk,
            _ => {
                fresh = self.keys.unlock(id, purpose)?;
                &fresh
            }
        };
        let unlocked = trust::unlock(
            &tv.emd,
            tv.path(),
            pk,
            DATA_ROLES,
            "write data into it",
            self.keys,
        )?;
        tv.require_enabled("written with decrypted data")?;
        let len = src.len();
        if let Some(n) = len
            && n > tv.emd.data_size
        {
            return Err(Error::refused(format!(
                "the target is too small: its data area has {} bytes, the backup needs {n}",
                tv.emd.data_size
            ))
            .with_hint("choose a larger target, or a new file"));
        }
        let src_emd: Option<Emd> = src.emd.clone();
        let start = resume.map_or(0, |r| r.start);
        let mut emd = tv.emd.clone();
        if resume.is_none() {
            emd.checkpoint = Some(clone::checkpoint(
                src_emd.as_ref().map_or([0; 16], |e| e.uuid),
                src_emd.as_ref().map_or(0, |e| e.generation),
                len.unwrap_or(0),
            )?);
            // A data write: the volume's data version moves on, and it no
            // longer holds a clone of any source.
            emd.data_version += 1;
            emd.clone_of = None;
            // Until this run's index is written, the volume has none: the
            // old one no longer describes it once data is written.
            emd.index = None;
            emd.state_id = None;
            trust::seal(&mut emd, &unlocked.key, self.signer().or(Some(pk)));
        }
        let tagger = (start == 0)
            .then(|| index::tagger(&src, src_key.as_ref(), &unlocked.key))
            .flatten();
        let previous = match &tagger {
            Some(t) if resume.is_none() => index::previous(
                &tv.dev,
                Some(&tv.emd),
                &unlocked.key,
                &tv.emd.uuid,
                tv.emd.sector_size,
                t,
                self.req.full,
            )?,
            _ => Previous::none(None),
        };
        self.why_full(&previous, path);
        let tags = tagger.as_ref().map(|t| previous.tags(t));
        let mut txn = Transaction::begin(&tv.dev, emd, tv.emd.generation + 1)?;
        let tree = self.written_prefix(&tv.dev, txn.emd(), Some(&unlocked.key), start)?;
        let origin = src.origin();
        let plan = Plan::new(self.req.threads)
            .decrypt(src.decrypt_key(src_key.as_ref())?)
            .encrypt(Some(SectorKey::new(&unlocked.key, tv.emd.sector_size)))
            .hash(true)
            .plain_len(len)
            .start(start)
            .tags(tags.as_ref());
        let (outcome, src_name) = {
            let inner = self.device_sink(
                &tv.dev,
                DeviceSink {
                    dev: &tv.dev,
                    base: tv.emd.data_offset,
                    limit: tv.emd.data_size,
                    exact: false,
                },
            )?;
            let mut sink = CheckpointSink::new(inner, &mut txn)?;
            self.run_pipeline_after(&plan, tree, src, &mut sink)?
        };
        let bytes = start + outcome.bytes;
        let mut fin = txn.emd().clone();
        fin.state_id = Some(state_of(&fin)?);
        let index_ref = self.write_index(
            &tv.dev,
            &fin,
            &unlocked.key,
            tagger.as_ref(),
            &outcome,
            bytes,
        )?;
        let emd = txn.commit(Some(&unlocked.key), self.signer().or(Some(pk)), |emd| {
            emd.data_len = bytes;
            emd.index = index_ref;
            emd.state_id = fin.state_id;
            emd.provenance = Some(clone::provenance(
                origin,
                self.started,
                bytes,
                outcome.digest,
                emd.data_version,
            ));
            Ok(())
        })?;
        Ok(Report {
            digest: outcome.digest,
            target_uuid: Some(emd.uuid),
            resumed_at: resume.map(|r| r.start),
            chunks: Some(Chunks::written(&outcome)),
            ..self.report(src_name, src_emd.map(|e| e.uuid), path.display(), bytes)
        })
    }
}
