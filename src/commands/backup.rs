//! `evfs backup SRC DST`: resolve the flags into an opened source, a
//! classified target and unlocked keys; let the configuration table decide;
//! run the pipeline; write the EMD; report.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::data::threads;
use super::{Ctx, DATA_ROLES};
use crate::backup::clone;
use crate::backup::decide::{self, Decision, Dst, Flags, Mode, Sizes, Src, TargetKey, Write};
use crate::backup::resume::{self, CheckpointSink, ResumePoint, RunKind};
use crate::backup::rollback::{self, Lineage};
use crate::backup::source::OpenSource;
use crate::backup::target::{self, Classified, Place};
use crate::cli::BackupArgs;
use crate::crypto::{Cipher, VolumeKey};
use crate::emd::{self, Emd, State, Timestamp};
use crate::error::{Error, Result};
use crate::keys::{KeyId, PassphraseSource, PrivateKey, passphrase};
use crate::pipeline::digest::TreeMerger;
use crate::pipeline::progress::{ProgressMode, with_progress};
use crate::pipeline::sink::{DeviceSink, DirectSink, Sink, WriteSink, stdout_file};
use crate::pipeline::{self, Outcome, Plan, SectorKey};
use crate::volume::partial::Partial;
use crate::volume::{Device, NewVolume, Volume, layout, lock, unlock_emd};

/// Sector size of volumes made from plain data, unless `--sector-size`.
const NEW_SECTOR: u32 = 4096;

/// What a finished backup reports (`--json` and the summary line).
pub struct Report {
    pub mode: Mode,
    /// What a restored stream was made as (a restore only).
    pub stream_mode: Option<Mode>,
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
    /// Data offset a resumed backup continued from (`--resume`).
    pub resumed_at: Option<u64>,
}

impl Report {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "ok": true,
            "mode": self.mode.name(),
            "stream_mode": self.stream_mode.map(Mode::name),
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
            "resumed_at": self.resumed_at,
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
        if let Some(m) = self.stream_mode {
            s.push_str(&format!(", a {} stream", m.name()));
        }
        if let Some(n) = self.stream_bytes {
            s.push_str(&format!(", stream {}", crate::size::human(n)));
        }
        if let Some(n) = self.resumed_at {
            s.push_str(&format!(
                ", resumed at {} (the rest was copied before)",
                crate::size::human(n)
            ));
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
    /// The unlocked `-k` key (of a decrypted source, or of the target of a
    /// plain source): it also opens a clone's key or a target volume with a
    /// slot for it, without asking for its passphrase again.
    pub k_pk: Option<PrivateKey>,
    /// Where `--resume` continues, when it does.
    pub resume: Option<ResumePoint>,
    /// The target's EMD as classified (an existing volume).
    pub target: Option<Emd>,
}

/// Run a backup and return its report (also used by `demo`).
pub fn execute(ctx: &Ctx, args: &BackupArgs) -> Result<Report> {
    let threads = threads(args.threads)?;
    let place = place(args)?;
    check_flag_combinations(args, &place)?;

    let src = OpenSource::open(&args.src)?;
    let src_uuid = src.emd.as_ref().map(|e| e.uuid);
    let k_id = args.key.key.as_deref().map(KeyId::parse).transpose()?;
    let classified = target::classify(&place, &src.storage()?, src_uuid, k_id.as_ref())?;
    if let Place::Path(p) = &place
        && classified.dst != Dst::Source
    {
        // Before the table looks at the target: a target that another backup,
        // restore or map is writing is refused as busy (naming who), not as
        // foreign because of the dirty EMD that writer put there.
        lock::probe(p, "write a backup into it")?;
    }
    let src_kind = match &src.emd {
        None => Src::Plain,
        Some(e) if e.state == State::Enabled => Src::Enabled,
        Some(_) => Src::Disabled,
    };
    // With a plain source, -k can only mean the key of the target volume.
    let target_key: Option<(KeyId, TargetKey)> = match (&args.target_key, &k_id) {
        (Some(t), _) => Some((KeyId::parse(t)?, TargetKey::Flag)),
        (None, Some(k)) if src_kind == Src::Plain => Some((k.clone(), TargetKey::K)),
        _ => None,
    };
    let flags = Flags {
        raw: args.raw,
        cleartext: args.cleartext,
        owner: args.owner.is_some(),
        target_key: target_key.as_ref().map(|(_, by)| *by),
        force: args.force,
    };
    let resume = match (&place, args.resume) {
        (Place::Path(p), true) => resume::inspect(
            &p.display().to_string(),
            classified.emd.as_ref(),
            src.emd.as_ref(),
            RunKind {
                raw: args.raw,
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
        clone_device: new_data_size(args, &src).map(layout::device_size_for),
        plaintext: src.len(),
    };
    let decision = decide::decide(src_kind, dst, classified.room, sizes, flags)?;
    check_mode_flags(args, decision)?;
    if decision.mode == Mode::Encrypt
        && !args.force
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
    if let (Some(t), Some(s), Place::Path(p)) = (&classified.emd, &src.emd, &place)
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
            args.force,
        )?;
    }
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
    if let (Some(r), Place::Path(p)) = (&resume, &place) {
        let c = r.checkpoint();
        ctx.note(format!(
            "evfs: resuming the interrupted backup into {} at byte {} of {} (run {})",
            p.display(),
            r.start,
            c.total,
            crate::hex::encode(&c.run_id)
        ));
    } else if args.resume {
        ctx.detail("evfs: --resume: nothing to resume, running a full backup");
    }
    let (src_key, k_pk) = match decision.mode {
        Mode::Reencrypt | Mode::Cleartext => {
            let (key, pk) = unlock_source(ctx, args, &src)?;
            (Some(key), Some(pk))
        }
        Mode::Encrypt | Mode::Raw => (None, None),
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
        k_pk,
        resume,
        target: classified.emd.clone(),
    };
    match (decision.write, &place) {
        (Write::NewClone | Write::Refresh, Place::Path(p)) => {
            job.new_clone(src, p, &classified, src_key)
        }
        (Write::IntoVolume, Place::Path(p)) => {
            let id = match target_key {
                Some((id, _)) => id,
                // A volume the source's -k key has a slot in.
                None => {
                    k_id.ok_or_else(|| Error::runtime("internal: into a volume without a key"))?
                }
            };
            job.to_volume(src, p, &id, src_key)
        }
        (Write::Plain, _) => job.plain(src, &place, src_key),
        (Write::Stream, _) => super::stream_out::write(&job, src, &place, src_key),
        (write, place) => Err(Error::runtime(format!(
            "internal: the table chose {write:?} for {place:?}"
        ))),
    }
}

/// The sector size of a new target: `--sector-size`, else the source's,
/// else 4096 for plain data.
fn new_sector_size(args: &BackupArgs, src: Option<&Emd>) -> u32 {
    args.sector_size
        .or(src.map(|e| e.sector_size))
        .unwrap_or(NEW_SECTOR)
}

/// The data area a new target gets: a clone's is the source's (in whole
/// target sectors); plain data's is its length in whole sectors, at least
/// one. Unknown for plain data on stdin.
fn new_data_size(args: &BackupArgs, src: &OpenSource) -> Option<u64> {
    let ss = u64::from(new_sector_size(args, src.emd.as_ref()));
    match &src.emd {
        Some(e) => Some(e.data_size.next_multiple_of(ss)),
        None => src.len().map(|n| n.next_multiple_of(ss).max(ss)),
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
    if args.resume && (!matches!(place, Place::Path(_)) || args.cleartext) {
        return Err(Error::usage(
            "--resume continues a backup into a volume; a stream or a cleartext export is written again from the start",
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
    let keyed_target = matches!(d.mode, Mode::Reencrypt | Mode::Encrypt);
    if args.rekey && !(keyed_target && d.write != Write::IntoVolume) {
        return Err(Error::usage(
            "--rekey gives a re-encrypted clone a fresh volume key; it does not apply here",
        )
        .with_hint(
            "a volume written with its own key keeps it; a raw clone has the source's key",
        ));
    }
    if args.full && !(keyed_target && d.write != Write::Stream) {
        return Err(Error::usage(
            "--full rewrites a refreshed target volume in full; it does not apply here",
        ));
    }
    if args.sector_size.is_some()
        && !(keyed_target && matches!(d.write, Write::NewClone | Write::Refresh | Write::Stream))
    {
        return Err(Error::usage(
            "--sector-size sets the sectors of a new target; it does not apply here",
        )
        .with_hint(
            "a volume written with its own key keeps its sectors; a raw clone has the source's",
        ));
    }
    Ok(())
}

/// Unlock the source volume with `-k` (owner or authorized user): its volume
/// key, and the private key that opened it.
fn unlock_source(
    ctx: &Ctx,
    args: &BackupArgs,
    src: &OpenSource,
) -> Result<(VolumeKey, PrivateKey)> {
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
    let key = unlock_emd(emd, Path::new(&src.name), &pk, DATA_ROLES, "read its data")?.key;
    Ok((key, pk))
}

pub(super) fn sector_key(key: &VolumeKey, sector_size: u32) -> SectorKey {
    SectorKey {
        xts: key.xts(),
        sector_size: sector_size as usize,
    }
}

/// The EMD in force must still be the one the resume was planned on: no
/// other writer may have slipped in between the look and the lock.
fn same_emd_under_lock(dev: &Device, cl: &Classified) -> Result<()> {
    let now = emd::Copies::read(dev)?;
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
        let mut source = src.pipeline_source(plan.start, self.threads * 2 + 2)?;
        let rest = total.map(|t| t.saturating_sub(plan.start));
        let (outcome, _) = with_progress(&self.progress, "backup", rest, |meter| {
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
        self.ctx.detail(format!(
            "evfs: re-hashing the {} already in {} for the digest",
            crate::size::human(start),
            dev.path().display()
        ));
        super::data::plaintext_tree(
            dev,
            (emd.data_offset, start),
            Some(sector_key(key, emd.sector_size)),
            self.threads,
        )
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
        let key = unlock_emd(&r.emd, path, pk, DATA_ROLES, "resume a backup into it")?.key;
        let same = src_key.is_some_and(|k| crate::crypto::ct_eq(k.expose(), key.expose()));
        if same != self.args.same_key {
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
        let args = self.args;
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
                            unlock_emd(t, Path::new(&name), pk, DATA_ROLES, "refresh it")?.key
                        }
                        None => {
                            self.ctx.note(format!(
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
                let ss = new_sector_size(args, Some(se));
                Ok((clone::clone_emd(se, &key, ss)?, Some(key)))
            }
            (Mode::Encrypt, None) => {
                let owner = KeyId::parse(args.owner.as_deref().unwrap_or_default())?;
                if owner.is_recovery() {
                    return Err(Error::usage(format!(
                        "{owner} is a recovery key; a recovery key cannot own a volume"
                    )));
                }
                let public = self.ctx.keystore()?.public(&owner)?;
                let ss = new_sector_size(args, None);
                let (mut emd, key) = NewVolume {
                    cipher: Cipher::Aes256Xts,
                    sector_size: ss,
                    data_size: new_data_size(args, src).unwrap_or(u64::from(ss)),
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
    fn new_clone(
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
        let src_uuid = src_emd.as_ref().map_or([0; 16], |e| e.uuid);
        let src_generation = src_emd.as_ref().map_or(0, |e| e.generation);
        let known_len = src.len();
        let needed = layout::device_size_for(emd.data_size);
        let start = resume.map_or(0, |r| r.start);

        let created = !path.exists();
        let mut dev = if created {
            Device::create_file(path, needed)?
        } else {
            Device::open_write(path)?
        };
        dev.lock(true, "write a backup into it")?;
        if resume.is_some() {
            same_emd_under_lock(&dev, cl)?;
        }
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
        if resume.is_none() {
            emd.checkpoint = Some(clone::checkpoint(
                src_uuid,
                src_generation,
                known_len.unwrap_or(0),
            )?);
        }
        emd::write_both(&dev, &emd)?;
        let tree = self.written_prefix(&dev, &emd, tkey.as_ref(), start)?;

        let plan = Plan {
            threads: self.threads,
            decrypt: src_key
                .as_ref()
                .zip(src_emd.as_ref())
                .map(|(k, e)| sector_key(k, e.sector_size)),
            encrypt: tkey.as_ref().map(|k| sector_key(k, emd.sector_size)),
            hash: mode != Mode::Raw,
            detect_zero: false,
            plain_len: known_len,
            start,
            framer: None,
        };
        let limit = match known_len {
            Some(_) => emd.data_size,
            None if dev.is_block() => layout::max_data_size(dev.size(), emd.sector_size),
            None => u64::MAX - emd.data_offset,
        };
        let (outcome, src_name) = {
            let inner = self.device_sink(DeviceSink {
                dev: &dev,
                base: emd.data_offset,
                limit,
                exact: false,
            })?;
            let mut sink = CheckpointSink::new(inner, &dev, &mut emd)?;
            self.run_pipeline_after(&plan, tree, src, &mut sink)?
        };
        let bytes = start + outcome.bytes;
        if known_len.is_none() {
            let ss = u64::from(emd.sector_size);
            emd.data_size = bytes.next_multiple_of(ss).max(ss);
            emd.data_len = bytes;
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
                clone::origin(src_emd.as_ref()),
                self.started,
                bytes,
                outcome.digest,
                emd.data_version,
            ));
            emd.seal(k);
        }
        emd.generation += 1;
        emd::write_both(&dev, &emd)?;
        Ok(Report {
            mode,
            stream_mode: None,
            bytes,
            seconds: self.clock.elapsed().as_secs_f64(),
            digest: outcome.digest,
            threads: self.threads,
            source: src_name,
            target: path.display().to_string(),
            source_uuid: src_emd.map(|e| e.uuid),
            target_uuid: Some(emd.uuid),
            stream_bytes: None,
            resumed_at: resume.map(|r| r.start),
        })
    }

    /// Re-encrypt (or encrypt) into an existing volume with its own key,
    /// keeping its EMD; or the rest of an interrupted run (`--resume`).
    fn to_volume(
        &self,
        src: OpenSource,
        path: &Path,
        id: &KeyId,
        src_key: Option<VolumeKey>,
    ) -> Result<Report> {
        let mut dev = Device::open_write(path)?;
        dev.lock(true, "write a backup into it")?;
        let mut tv = Volume::from_device(dev)?;
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
                // A plain source's -k names the target's key, and its
                // passphrase file serves it.
                let pass_file = self.args.target_passphrase_file.as_deref().or(
                    if self.args.target_key.is_none() {
                        self.args.key.passphrase_file.as_deref()
                    } else {
                        None
                    },
                );
                fresh = passphrase::unlock(
                    &self.ctx.keystore()?,
                    id,
                    &PassphraseSource::file(pass_file),
                )?;
                &fresh
            }
        };
        let unlocked = tv.unlock(pk, DATA_ROLES, "write data into it")?;
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
        let src_uuid = src_emd.as_ref().map_or([0; 16], |e| e.uuid);
        let src_generation = src_emd.as_ref().map_or(0, |e| e.generation);
        let start = resume.map_or(0, |r| r.start);
        tv.emd.dirty = true;
        if resume.is_none() {
            tv.emd.checkpoint = Some(clone::checkpoint(
                src_uuid,
                src_generation,
                len.unwrap_or(0),
            )?);
            // A data write: the volume's data version moves on, and it no
            // longer holds a clone of any source.
            tv.emd.data_version += 1;
            tv.emd.clone_of = None;
            tv.emd.seal(&unlocked.key);
        }
        tv.commit()?;
        let tree = self.written_prefix(&tv.dev, &tv.emd, Some(&unlocked.key), start)?;
        let plan = Plan {
            threads: self.threads,
            decrypt: src_key
                .as_ref()
                .zip(src_emd.as_ref())
                .map(|(k, e)| sector_key(k, e.sector_size)),
            encrypt: Some(sector_key(&unlocked.key, tv.emd.sector_size)),
            hash: true,
            detect_zero: false,
            plain_len: len,
            start,
            framer: None,
        };
        let (outcome, src_name) = {
            let inner = self.device_sink(DeviceSink {
                dev: &tv.dev,
                base: tv.emd.data_offset,
                limit: tv.emd.data_size,
                exact: false,
            })?;
            let mut sink = CheckpointSink::new(inner, &tv.dev, &mut tv.emd)?;
            self.run_pipeline_after(&plan, tree, src, &mut sink)?
        };
        let bytes = start + outcome.bytes;
        tv.dev.sync()?;
        tv.emd.dirty = false;
        tv.emd.checkpoint = None;
        tv.emd.data_len = bytes;
        tv.emd.provenance = Some(clone::provenance(
            clone::origin(src_emd.as_ref()),
            self.started,
            bytes,
            outcome.digest,
            tv.emd.data_version,
        ));
        tv.emd.seal(&unlocked.key);
        tv.commit()?;
        Ok(Report {
            mode: self.decision.mode,
            stream_mode: None,
            bytes,
            seconds: self.clock.elapsed().as_secs_f64(),
            digest: outcome.digest,
            threads: self.threads,
            source: src_name,
            target: path.display().to_string(),
            source_uuid: src_emd.map(|e| e.uuid),
            target_uuid: Some(tv.emd.uuid),
            stream_bytes: None,
            resumed_at: resume.map(|r| r.start),
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
            plain_len: Some(src_emd.data_len),
            start: 0,
            framer: None,
        };
        let len = src_emd.data_len;
        let (outcome, target) = match place {
            Place::Stdout => {
                let mut sink = WriteSink {
                    writer: stdout_file()?,
                    name: "standard output".to_string(),
                };
                let (outcome, _) = self.run_pipeline(&plan, src, &mut sink)?;
                sink.flush()?;
                (outcome, "standard output".to_string())
            }
            Place::Path(path) => {
                // A file is written unnamed and takes its name when
                // complete: a cut-off export never looks like a whole one,
                // leaves no plaintext behind, and an old file stays as it
                // was until then. A block device is written in place.
                let block = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
                let (mut dev, partial) = if block {
                    (Device::open_write(path)?, None)
                } else {
                    let partial = Partial::create(path)?;
                    partial
                        .file()
                        .set_len(len)
                        .map_err(|e| Error::io("setting the size of", path, e))?;
                    (Device::over_partial(&partial)?, Some(partial))
                };
                dev.lock(true, "write a backup into it")?;
                let limit = if dev.is_block() { dev.size() } else { len };
                let outcome = {
                    let mut sink = self.device_sink(DeviceSink {
                        dev: &dev,
                        base: 0,
                        limit,
                        exact: true,
                    })?;
                    self.run_pipeline(&plan, src, &mut *sink)?.0
                };
                if !dev.is_block() {
                    dev.file()
                        .set_len(len)
                        .map_err(|e| Error::io("setting the size of", dev.path(), e))?;
                }
                dev.sync()?;
                if let Some(partial) = partial {
                    partial.commit()?;
                }
                (outcome, path.display().to_string())
            }
            Place::StreamFile(_) => {
                return Err(Error::runtime("internal: cleartext into a stream"));
            }
        };
        Ok(Report {
            mode: Mode::Cleartext,
            stream_mode: None,
            bytes: outcome.bytes,
            seconds: self.clock.elapsed().as_secs_f64(),
            digest: outcome.digest,
            threads: self.threads,
            source: src_name,
            target,
            source_uuid: Some(src_emd.uuid),
            target_uuid: None,
            stream_bytes: None,
            resumed_at: None,
        })
    }
}
