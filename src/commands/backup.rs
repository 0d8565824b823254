//! `evfs backup SRC DST`: resolve the flags into an opened source, a
//! classified target and unlocked keys; let the configuration table decide;
//! run the pipeline; write the EMD; report.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::data::threads;
use super::{Ctx, DATA_ROLES};
use crate::backup::clone;
use crate::backup::decide::{self, Decision, Flags, Mode, Sizes, Src, Write};
use crate::backup::source::OpenSource;
use crate::backup::target::{self, Classified, Place};
use crate::cli::BackupArgs;
use crate::crypto::{Cipher, VolumeKey};
use crate::emd::{self, Emd, State, Timestamp};
use crate::error::{Error, Result};
use crate::keys::{KeyId, PassphraseSource, passphrase};
use crate::pipeline::progress::{ProgressMode, with_progress};
use crate::pipeline::sink::{DeviceSink, DirectSink, Sink, WriteSink, stdout_file};
use crate::pipeline::{self, Outcome, Plan, SectorKey};
use crate::volume::device::{partial_path, rename_into_place};
use crate::volume::{Device, NewVolume, Volume, layout, lock, unlock_emd};

/// Sector size of volumes made from plain data.
const NEW_SECTOR: u64 = 4096;

/// What a finished backup reports (`--json` and the summary line).
pub struct Report {
    pub mode: Mode,
    pub bytes: u64,
    pub seconds: f64,
    pub digest: Option<blake3::Hash>,
    pub threads: usize,
    pub source: String,
    pub target: String,
    pub source_uuid: Option<[u8; 16]>,
    pub target_uuid: Option<[u8; 16]>,
    /// Bytes written to a stream (headers, frames and trailer), when the target is one.
    pub stream_bytes: Option<u64>,
}

impl Report {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "mode": self.mode.name(),
            "bytes": self.bytes,
            "seconds": self.seconds,
            "plaintext_blake3": self.digest.map(|d| d.to_hex().to_string()),
            "threads": self.threads,
            "source": self.source,
            "target": self.target,
            "source_uuid": self.source_uuid.map(|u| emd::format::uuid_string(&u)),
            "target_uuid": self.target_uuid.map(|u| emd::format::uuid_string(&u)),
            "bytes_per_second": rate(self.bytes, self.seconds),
            "stream_bytes": self.stream_bytes,
        })
    }

    pub fn summary(&self, verb: &str) -> String {
        let mut s = format!(
            "evfs: {verb} ({}) of {} to {}: {} in {:.2} s ({}/s), {} thread{}",
            self.mode.name(),
            self.source,
            self.target,
            crate::size::human(self.bytes),
            self.seconds,
            crate::size::human(rate(self.bytes, self.seconds)),
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        if let Some(n) = self.stream_bytes {
            s.push_str(&format!(", stream {}", crate::size::human(n)));
        }
        if let Some(d) = self.digest {
            s.push_str(&format!("\nevfs: plaintext blake3 {}", d.to_hex()));
        }
        s
    }
}

fn rate(bytes: u64, seconds: f64) -> u64 {
    if seconds > 0.0 {
        (bytes as f64 / seconds) as u64
    } else {
        0
    }
}

pub fn run(ctx: &Ctx, args: BackupArgs) -> Result<()> {
    let place = place(&args)?;
    let report = execute(ctx, &args)?;
    if args.json {
        let text = format!("{}\n", report.json());
        if place == Place::Stdout {
            eprint!("{text}");
            Ok(())
        } else {
            super::out(text)
        }
    } else {
        ctx.note(report.summary("backup"));
        Ok(())
    }
}

fn place(args: &BackupArgs) -> Result<Place> {
    match (&args.dst, &args.stream) {
        (_, Some(f)) => Ok(Place::StreamFile(f.clone())),
        (Some(d), None) if d.as_os_str() == "-" => Ok(Place::Stdout),
        (Some(d), None) => Ok(Place::Path(d.clone())),
        (None, None) => Err(Error::usage("name a target: DST, - or --stream FILE")),
    }
}

/// Everything the write flows need, resolved.
pub(super) struct Job<'a> {
    pub ctx: &'a Ctx,
    pub args: &'a BackupArgs,
    pub decision: Decision,
    pub threads: usize,
    pub started: Timestamp,
    pub clock: Instant,
    pub progress: ProgressMode,
}

/// Run a backup and return its report (also used by `demo`).
pub fn execute(ctx: &Ctx, args: &BackupArgs) -> Result<Report> {
    let threads = threads(args.threads)?;
    let place = place(args)?;
    check_flag_combinations(args, &place)?;

    let src = OpenSource::open(&args.src)?;
    let src_uuid = src.emd.as_ref().map(|e| e.uuid);
    let classified = target::classify(&place, src.identity(), src_uuid)?;
    let src_kind = match &src.emd {
        None => Src::Plain,
        Some(e) if e.state == State::Enabled => Src::Enabled,
        Some(_) => Src::Disabled,
    };
    // With a plain source, -k can only mean the key of the target volume.
    let target_key = args.target_key.clone().or_else(|| {
        (src_kind == Src::Plain)
            .then(|| args.key.key.clone())
            .flatten()
    });
    let flags = Flags {
        raw: args.raw,
        cleartext: args.cleartext,
        owner: args.owner.is_some(),
        target_key: target_key.is_some(),
        force: args.force,
    };
    let clone_data = match &src.emd {
        Some(e) => Some(e.data_size),
        None => src.len().map(|n| n.div_ceil(NEW_SECTOR) * NEW_SECTOR),
    };
    let sizes = Sizes {
        clone_device: clone_data.map(layout::device_size_for),
        plaintext: src.len(),
    };
    let decision = decide::decide(src_kind, classified.dst, classified.room, sizes, flags)?;
    check_mode_flags(args, decision)?;
    ctx.detail(format!(
        "evfs: source {} ({src_kind:?}), target {:?}: {} via {:?}",
        src.name,
        classified.dst,
        decision.mode.name(),
        decision.write
    ));
    if let Some(e) = &src.emd
        && e.dirty
    {
        ctx.note(format!(
            "evfs: warning: the source {} is marked dirty (a writer did not shut it down); the copy gets a clean EMD",
            src.name
        ));
    }
    let src_key = match decision.mode {
        Mode::Reencrypt | Mode::Cleartext => Some(unlock_source(ctx, args, &src)?),
        Mode::Encrypt | Mode::Raw => None,
    };
    let job = Job {
        ctx,
        args,
        decision,
        threads,
        started: Timestamp::now(),
        clock: Instant::now(),
        progress: ProgressMode {
            lines: args.progress.then_some(args.progress_interval),
            bar: !ctx.quiet && !args.json,
        },
    };
    match (decision.write, &place) {
        (Write::NewClone, Place::Path(p)) => job.new_clone(src, p, &classified, src_key),
        (Write::IntoVolume, Place::Path(p)) => {
            let id = target_key.expect("the table chose IntoVolume because a target key was given");
            job.to_volume(src, p, &id, src_key)
        }
        (Write::Plain, _) => job.plain(src, &place, src_key),
        (Write::Stream, _) => super::stream_out::write(&job, src, &place, src_key),
        (write, place) => Err(Error::runtime(format!(
            "internal: the table chose {write:?} for {place:?}"
        ))),
    }
}

fn check_flag_combinations(args: &BackupArgs, place: &Place) -> Result<()> {
    let stdin = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(Path::new("-"));
    let pass_stdin = stdin(&args.key.passphrase_file);
    let target_pass_stdin = stdin(&args.target_passphrase_file);
    if pass_stdin && target_pass_stdin {
        return Err(Error::usage(
            "--passphrase-file - and --target-passphrase-file - cannot both read standard input",
        ));
    }
    if args.src.as_os_str() == "-" && (pass_stdin || target_pass_stdin) {
        return Err(Error::usage(
            "the source is standard input, so a passphrase cannot come from it too",
        )
        .with_hint("put the passphrase in a file, or store it with `evfs key store-passphrase`"));
    }
    let stream = matches!(place, Place::Stdout | Place::StreamFile(_));
    if (args.compress.is_some() || args.sparse) && (!stream || args.cleartext) {
        return Err(Error::usage(
            "--compress and --sparse apply to backup streams (DST - or --stream FILE)",
        ));
    }
    if args.direct && stream {
        return Err(Error::usage(
            "--direct writes a file or block device target, not a stream",
        ));
    }
    if args.target_passphrase_file.is_some() && args.target_key.is_none() {
        return Err(Error::usage(
            "--target-passphrase-file serves --target-key, which is not given",
        ));
    }
    Ok(())
}

fn check_mode_flags(args: &BackupArgs, d: Decision) -> Result<()> {
    if args.same_key && !(d.mode == Mode::Reencrypt && d.write != Write::IntoVolume) {
        return Err(Error::usage(
            "--same-key keeps the source's key in a re-encrypted clone; it does not apply here",
        ));
    }
    if d.mode == Mode::Raw && args.compress.is_some() {
        return Err(Error::usage(
            "a raw stream carries ciphertext as it lies: it cannot be compressed without the key",
        )
        .with_hint("leave out --raw and give -k ID to make a compressed stream"));
    }
    if d.mode == Mode::Raw && args.sparse {
        return Err(Error::usage(
            "--sparse finds all-zero plaintext, which a raw (keyless) stream never sees",
        ));
    }
    Ok(())
}

/// Unlock the source volume with `-k` (owner or authorized user).
fn unlock_source(ctx: &Ctx, args: &BackupArgs, src: &OpenSource) -> Result<VolumeKey> {
    let emd = src.emd.as_ref().expect("only volume sources are decrypted");
    let Some(id) = &args.key.key else {
        return Err(Error::access(format!(
            "the source {} is an EVFS volume: decrypting it needs a key",
            src.name
        ))
        .with_hint("give -k ID (or --raw to copy the ciphertext without a key)"));
    };
    let id = KeyId::parse(id)?;
    let pk = passphrase::unlock(
        &ctx.keystore()?,
        &id,
        &PassphraseSource::file(args.key.passphrase_file.as_deref()),
    )?;
    Ok(unlock_emd(emd, Path::new(&src.name), &pk, DATA_ROLES, "read its data")?.key)
}

pub(super) fn sector_key(key: &VolumeKey, sector_size: u32) -> SectorKey {
    SectorKey {
        xts: key.xts(),
        sector_size: sector_size as usize,
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
    fn device_sink<'d>(&self, sink: DeviceSink<'d>) -> Result<Box<dyn Sink + 'd>> {
        if self.args.direct {
            Ok(Box::new(DirectSink::new(sink)?))
        } else {
            Ok(Box::new(sink))
        }
    }

    pub(super) fn run_pipeline(
        &self,
        plan: &Plan,
        src: OpenSource,
        sink: &mut dyn Sink,
    ) -> Result<(Outcome, Option<u64>, String)> {
        let total = src.len();
        let name = src.name.clone();
        let mut source = src.pipeline_source(plan.start, self.threads * 2 + 2)?;
        let outcome = with_progress(&self.progress, "backup", total, |meter| {
            pipeline::run(plan, &mut *source, sink, meter)
        })?;
        check_length(&outcome, total.map(|t| t - plan.start), &name)?;
        Ok((outcome, total, name))
    }

    /// The EMD a new target gets, and the key it is encrypted with: a clone
    /// with a fresh key (or the source's with `--same-key`), a new volume for
    /// a plain source, or the source's EMD as it is for a raw clone.
    pub(super) fn target_emd(
        &self,
        src: &OpenSource,
        src_key: Option<&VolumeKey>,
    ) -> Result<(Emd, Option<VolumeKey>)> {
        match (self.decision.mode, &src.emd) {
            (Mode::Reencrypt, Some(se)) => {
                let key = match (src_key, self.args.same_key) {
                    (Some(k), true) => k.duplicate(),
                    _ => VolumeKey::generate(se.cipher)?,
                };
                Ok((clone::clone_emd(se, &key)?, Some(key)))
            }
            (Mode::Encrypt, None) => {
                let owner = KeyId::parse(self.args.owner.as_deref().unwrap_or_default())?;
                if owner.is_recovery() {
                    return Err(Error::usage(format!(
                        "{owner} is a recovery key; a recovery key cannot own a volume"
                    )));
                }
                let public = self.ctx.keystore()?.public(&owner)?;
                let data_size = src
                    .len()
                    .map_or(NEW_SECTOR, |n| n.div_ceil(NEW_SECTOR) * NEW_SECTOR)
                    .max(NEW_SECTOR);
                let (emd, key) = NewVolume {
                    cipher: Cipher::Aes256Xts,
                    sector_size: NEW_SECTOR as u32,
                    data_size,
                    label: "",
                    owner: (&owner, public),
                    recovery: vec![],
                }
                .build()?;
                Ok((emd, Some(key)))
            }
            (Mode::Raw, Some(se)) => Ok((se.clone(), None)),
            _ => Err(Error::runtime("internal: no EMD for this target")),
        }
    }

    /// A fresh EMD clone (or new volume) and the data, into a new file, a
    /// blank one, a same-lineage volume, or a replaced one (`--force`).
    fn new_clone(
        &self,
        src: OpenSource,
        path: &Path,
        cl: &Classified,
        src_key: Option<VolumeKey>,
    ) -> Result<Report> {
        let mode = self.decision.mode;
        let src_emd = src.emd.clone();
        let (mut emd, tkey) = self.target_emd(&src, src_key.as_ref())?;
        let src_uuid = src_emd.as_ref().map_or([0; 16], |e| e.uuid);
        let known_len = src.len();
        let needed = layout::device_size_for(emd.data_size);

        let created = !path.exists();
        let mut dev = if created {
            Device::create_file(path, needed)?
        } else {
            Device::open_write(path)?
        };
        lock::lock(dev.file(), path, true, "write a backup into it")?;
        if !dev.is_block() {
            dev.grow_to(needed)?;
        }
        // Newer than anything the target held, so that a crash between the
        // two copies can never leave an old, valid EMD in force.
        let floor = [cl.emd.as_ref(), src_emd.as_ref()]
            .into_iter()
            .flatten()
            .map(|e| e.generation + 1)
            .max()
            .unwrap_or(0);
        emd.generation = emd.generation.max(floor);
        emd.dirty = true;
        emd.checkpoint = Some(clone::checkpoint(src_uuid, known_len.unwrap_or(0))?);
        emd::write_both(&dev, &emd)?;

        let plan = Plan {
            threads: self.threads,
            decrypt: src_key
                .as_ref()
                .zip(src_emd.as_ref())
                .map(|(k, e)| sector_key(k, e.sector_size)),
            encrypt: tkey.as_ref().map(|k| sector_key(k, emd.sector_size)),
            hash: mode != Mode::Raw,
            detect_zero: false,
            plain_len: None,
            start: 0,
            framer: None,
        };
        let limit = match known_len {
            Some(_) => emd.data_size,
            None if dev.is_block() => layout::max_data_size(dev.size(), emd.sector_size),
            None => u64::MAX - emd.data_offset,
        };
        let (outcome, _, src_name) = {
            let mut sink = self.device_sink(DeviceSink {
                dev: &dev,
                base: emd.data_offset,
                limit,
            })?;
            self.run_pipeline(&plan, src, &mut *sink)?
        };
        if known_len.is_none() {
            if outcome.bytes == 0 {
                return Err(Error::refused(
                    "the source is empty: there is nothing to put in a volume",
                ));
            }
            emd.data_size = outcome.bytes.div_ceil(NEW_SECTOR) * NEW_SECTOR;
            if !dev.is_block() {
                let size = layout::device_size_for(emd.data_size);
                dev.resize(size)?;
            }
        }
        dev.sync()?;
        emd.dirty = false;
        emd.checkpoint = None;
        if let Some(k) = &tkey {
            emd.provenance = Some(clone::provenance(
                src_uuid,
                self.started,
                outcome.bytes,
                outcome.digest,
            ));
            emd.seal(k);
        }
        emd.generation += 1;
        emd::write_both(&dev, &emd)?;
        Ok(Report {
            mode,
            bytes: outcome.bytes,
            seconds: self.clock.elapsed().as_secs_f64(),
            digest: outcome.digest,
            threads: self.threads,
            source: src_name,
            target: path.display().to_string(),
            source_uuid: src_emd.map(|e| e.uuid),
            target_uuid: Some(emd.uuid),
            stream_bytes: None,
        })
    }

    /// Re-encrypt (or encrypt) into an existing volume with its own key,
    /// keeping its EMD.
    fn to_volume(
        &self,
        src: OpenSource,
        path: &Path,
        target_key: &str,
        src_key: Option<VolumeKey>,
    ) -> Result<Report> {
        let dev = Device::open_write(path)?;
        lock::lock(dev.file(), path, true, "write a backup into it")?;
        let mut tv = Volume::from_device(dev)?;
        let id = KeyId::parse(target_key)?;
        // A plain source's -k names the target's key, and its passphrase file serves it.
        let pass_file =
            self.args
                .target_passphrase_file
                .as_deref()
                .or(if self.args.target_key.is_none() {
                    self.args.key.passphrase_file.as_deref()
                } else {
                    None
                });
        let pk = passphrase::unlock(
            &self.ctx.keystore()?,
            &id,
            &PassphraseSource::file(pass_file),
        )?;
        let unlocked = tv.unlock(&pk, DATA_ROLES, "write data into it")?;
        tv.require_enabled("written with decrypted data")?;
        let src_emd: Option<Emd> = src.emd.clone();
        let src_uuid = src_emd.as_ref().map_or([0; 16], |e| e.uuid);
        tv.emd.dirty = true;
        tv.emd.checkpoint = Some(clone::checkpoint(src_uuid, src.len().unwrap_or(0))?);
        tv.commit()?;
        let plan = Plan {
            threads: self.threads,
            decrypt: src_key
                .as_ref()
                .zip(src_emd.as_ref())
                .map(|(k, e)| sector_key(k, e.sector_size)),
            encrypt: Some(sector_key(&unlocked.key, tv.emd.sector_size)),
            hash: true,
            detect_zero: false,
            plain_len: None,
            start: 0,
            framer: None,
        };
        let (outcome, _, src_name) = {
            let mut sink = self.device_sink(DeviceSink {
                dev: &tv.dev,
                base: tv.emd.data_offset,
                limit: tv.emd.data_size,
            })?;
            self.run_pipeline(&plan, src, &mut *sink)?
        };
        tv.dev.sync()?;
        tv.emd.dirty = false;
        tv.emd.checkpoint = None;
        tv.emd.provenance = Some(clone::provenance(
            src_uuid,
            self.started,
            outcome.bytes,
            outcome.digest,
        ));
        tv.emd.seal(&unlocked.key);
        tv.commit()?;
        Ok(Report {
            mode: self.decision.mode,
            bytes: outcome.bytes,
            seconds: self.clock.elapsed().as_secs_f64(),
            digest: outcome.digest,
            threads: self.threads,
            source: src_name,
            target: path.display().to_string(),
            source_uuid: src_emd.map(|e| e.uuid),
            target_uuid: Some(tv.emd.uuid),
            stream_bytes: None,
        })
    }

    /// Cleartext export to a plain file, a device or stdout.
    fn plain(&self, src: OpenSource, place: &Place, src_key: Option<VolumeKey>) -> Result<Report> {
        let src_emd = src.emd.clone().expect("cleartext exports a volume");
        let src_name = src.name.clone();
        let key = src_key.expect("cleartext needs the source key");
        let plan = Plan {
            threads: self.threads,
            decrypt: Some(sector_key(&key, src_emd.sector_size)),
            encrypt: None,
            hash: true,
            detect_zero: false,
            plain_len: None,
            start: 0,
            framer: None,
        };
        let len = src_emd.data_size;
        let (outcome, target) = match place {
            Place::Stdout => {
                let mut sink = WriteSink {
                    writer: stdout_file()?,
                    name: "standard output".to_string(),
                };
                let (outcome, _, _) = self.run_pipeline(&plan, src, &mut sink)?;
                sink.flush()?;
                (outcome, "standard output".to_string())
            }
            Place::Path(path) => {
                // A new file is written under a temporary name and renamed
                // when complete: a cut-off export never looks like a whole one.
                let tmp = (!path.exists()).then(|| partial_path(path));
                let dev = match &tmp {
                    None => Device::open_write(path)?,
                    Some(tmp) => Device::create_file(tmp, len)?,
                };
                lock::lock(dev.file(), path, true, "write a backup into it")?;
                let limit = if dev.is_block() { dev.size() } else { len };
                let written = (|| {
                    let outcome = {
                        let mut sink = self.device_sink(DeviceSink {
                            dev: &dev,
                            base: 0,
                            limit,
                        })?;
                        self.run_pipeline(&plan, src, &mut *sink)?.0
                    };
                    if !dev.is_block() {
                        dev.file()
                            .set_len(len)
                            .map_err(|e| Error::io("setting the size of", dev.path(), e))?;
                    }
                    dev.sync()?;
                    if let Some(tmp) = &tmp {
                        rename_into_place(tmp, path)?;
                    }
                    Ok(outcome)
                })();
                if written.is_err()
                    && let Some(tmp) = &tmp
                {
                    let _ = std::fs::remove_file(tmp);
                }
                (written?, path.display().to_string())
            }
            Place::StreamFile(_) => {
                return Err(Error::runtime("internal: cleartext into a stream"));
            }
        };
        Ok(Report {
            mode: Mode::Cleartext,
            bytes: outcome.bytes,
            seconds: self.clock.elapsed().as_secs_f64(),
            digest: outcome.digest,
            threads: self.threads,
            source: src_name,
            target,
            source_uuid: Some(src_emd.uuid),
            target_uuid: None,
            stream_bytes: None,
        })
    }
}
