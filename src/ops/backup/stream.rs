//! `evfs backup SRC -` and `--stream FILE`: the same pipeline as a volume
//! target, with the workers making stream frames and the collector writing
//! them in order.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::decide::Mode;
use super::source::OpenSource;
use super::{Job, Target, clone};
use crate::crypto::VolumeKey;
use crate::error::{Error, IoContext, Result};
use crate::ops::Report;
use crate::pipeline::SectorKey;
use crate::pipeline::pool::PooledBuf;
use crate::pipeline::sink::stdout_file;
use crate::pipeline::{CHUNK, Plan};
use crate::pipeline::{ChunkOut, Frame, FrameInput, FramePayload, Framer, Sink};
use crate::signature::Sign;
use crate::stream::format::{Header, StreamMode};
use crate::stream::manifest::Manifest;
use crate::stream::writer::{Payload, StreamFramer, StreamWriter};
use crate::volume::identity::Storage;
use crate::volume::partial::Partial;
use crate::volume::sniff;

/// Writes through large buffers: frame headers and hashes are small writes.
const OUT_BUFFER: usize = 4 << 20;

impl Job<'_> {
    /// Write the backup of `src` as a stream (standard output or a file).
    pub(super) fn stream(&self, src: OpenSource, src_key: Option<VolumeKey>) -> Result<Report> {
        write(self, src, &self.req.target, src_key)
    }
}

fn write(
    job: &Job,
    src: OpenSource,
    target: &Target,
    src_key: Option<VolumeKey>,
) -> Result<Report> {
    let mode = job.decision.mode;
    let stream_mode = match mode {
        Mode::Reencrypt => StreamMode::Reencrypt,
        Mode::Encrypt => StreamMode::Encrypt,
        Mode::Raw => StreamMode::Raw,
        Mode::Cleartext => return Err(Error::runtime("internal: cleartext into a stream")),
    };
    let args = job.req;
    check_outputs(
        &src,
        target,
        args.manifest.as_deref(),
        args.since.as_deref(),
        args.force,
    )?;
    let since = match &args.since {
        Some(path) => Some(super::since::load(job, path, &src)?),
        None => None,
    };
    let (mut emd, tkey) = match &since {
        Some(base) => {
            let mut emd = super::since::next_emd(&src, base)?;
            if let Some(pk) = job.signer() {
                emd.sign(|m| pk.sign(m));
            }
            (emd, Some(base.key.duplicate()))
        }
        None => job.target_emd(&src, src_key.as_ref(), None)?,
    };
    let src_emd = src.emd.clone();
    let origin = src.origin();
    let src_uuid = src_emd.as_ref().map_or([0; 16], |e| e.uuid);
    emd.dirty = false;
    emd.checkpoint = None;
    let stream_id = crate::crypto::random_array::<16>()?;
    let header = Header {
        version: crate::stream::format::VERSION,
        mode: stream_mode,
        raw: mode == Mode::Raw,
        compressed: args.compress.is_some(),
        sparse: args.sparse,
        chunk_size: CHUNK as u32,
        stream_id,
        expected: src.len(),
        source_uuid: src_uuid,
        source_data_version: src_emd.as_ref().map_or(0, |e| e.data_version),
        emd: emd.clone(),
        base: since.as_ref().map(super::since::SinceBase::base),
        indexed: false,
    };
    // The chunk index of the stream's data: carried by the stream of an
    // EVFS volume (so that the stream can be the base of the next
    // incremental one), compared with the base's (an incremental stream),
    // and kept in the manifest.
    let tagger = match &tkey {
        Some(k) if src_emd.is_some() || since.is_some() || args.manifest.is_some() => {
            super::index::tagger(&src, src_key.as_ref(), k)
        }
        _ => None,
    };
    // A raw stream carries its source's index area as it lies (sealed
    // under the source's key, which the restored copy keeps).
    let raw_index = match mode {
        Mode::Raw => super::index::raw_copy(&src, job.obs)?,
        _ => None,
    };
    let header = Header {
        indexed: raw_index.is_some() || (tagger.is_some() && header.expected.is_some()),
        ..header
    };
    if (since.is_some() || args.manifest.is_some()) && tagger.is_none() {
        return Err(Error::usage(
            "a stream of a LUKS volume has no chunk index: --since and --manifest apply to streams of EVFS volumes",
        ));
    }
    // The base's index, taken (not copied): the stream is compared with it.
    let why = |s: &str| super::index::Previous::none(Some(s.to_string()));
    let previous = match (since, &tagger) {
        (Some(b), Some(t)) if b.index.source != t.source_id() => {
            why("the base was made from another source or source key")
        }
        (Some(b), Some(_)) if b.index.sector_size != emd.sector_size => {
            why("the base's chunk index is of another sector size")
        }
        (Some(b), Some(_)) => super::index::Previous {
            index: Some(b.index),
            why_full: None,
        },
        _ => super::index::Previous::none(None),
    };
    if let Some(why) = &previous.why_full {
        job.obs.note(&format!(
            "evfs: the incremental stream carries every chunk: {why}"
        ));
    }
    let tags = tagger.as_ref().map(|t| previous.tags(t));
    let framer = StreamFramer {
        compress: match (args.compress, &tkey) {
            (Some(level), Some(k)) => Some((
                level,
                StreamFramer::aead_key(&k.stream_aead_key(), &stream_id),
            )),
            (Some(_), None) => {
                return Err(Error::usage("a stream without a key cannot be compressed"));
            }
            (None, _) => None,
        },
        sparse: args.sparse,
        chunk_size: CHUNK,
    };
    let framing = Framing(&framer);
    let plan = Plan::new(args.threads)
        .decrypt(src.decrypt_key(src_key.as_ref())?)
        // Compressed frames carry plaintext (sealed); the others the target's ciphertext.
        .encrypt(match (&tkey, args.compress) {
            (Some(k), None) => Some(SectorKey::new(k, emd.sector_size)),
            _ => None,
        })
        .hash(mode != Mode::Raw)
        .detect_zero(args.sparse)
        .plain_len(src.len())
        .framer(&framing)
        .tags(tags.as_ref());
    let mac_key = tkey.as_ref().map(VolumeKey::stream_mac_key);

    // The manifest's file is made first: a place it cannot go fails the
    // backup before the stream is written.
    let manifest = match &args.manifest {
        Some(path) => Some((path.as_path(), Partial::create(path)?)),
        None => None,
    };
    let (out, target_name, partial) = open_output(target, args.force)?;
    // On failure the partial file is dropped: nothing takes the name.
    (|| {
        let mut writer = Writing(StreamWriter::start(
            BufWriter::with_capacity(OUT_BUFFER, out),
            &target_name,
            &header,
            mac_key.as_ref(),
        )?);
        let (outcome, src_name) = job.run_pipeline(&plan, src, &mut writer)?;
        let mut writer = writer.0;
        let mut final_emd = emd.clone();
        // The index is sealed once: the stream and the manifest carry the
        // same bytes, which the final EMD names.
        let sealed = match (&tkey, &tagger) {
            (Some(k), Some(t)) => Some(seal_index(&final_emd, stream_id, k, t, &outcome)?),
            _ => None,
        };
        if let Some(area) = &raw_index {
            writer.write_index(area)?;
        } else if header.indexed {
            let sealed = sealed
                .as_ref()
                .ok_or_else(|| Error::runtime("internal: an indexed stream without its index"))?;
            writer.write_index(sealed)?;
            final_emd.index = Some(crate::emd::IndexRef::of(sealed));
        }
        if let Some(k) = &tkey {
            if header.expected.is_none() {
                let ss = u64::from(final_emd.sector_size);
                final_emd.data_size = outcome.bytes.next_multiple_of(ss).max(ss);
                final_emd.data_len = outcome.bytes;
            }
            final_emd.provenance = Some(clone::provenance(
                origin,
                job.started,
                outcome.bytes,
                outcome.digest,
                final_emd.data_version,
            ));
            final_emd.state_id = Some(stream_id);
            crate::ops::trust::seal(&mut final_emd, k, job.signer());
        }
        job.note_unsigned("the stream", None);
        let sign = job.signer().map(|pk| move |m: &[u8]| pk.sign(m));
        let (buffered, stream_bytes) = writer.finish(
            outcome.bytes,
            outcome.digest,
            &final_emd,
            sign.as_ref().map(|f| f as &dyn Fn(&[u8]) -> _),
        )?;
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io("writing", &target_name, e.into_error()))?;
        drop(file);
        if let Some(partial) = partial {
            partial.commit()?;
        }
        if let (Some((path, file)), Some(sealed)) = (manifest, &sealed) {
            write_manifest(path, file, &final_emd, sealed)?;
        }
        Ok(Report {
            digest: outcome.digest,
            target_uuid: Some(emd.uuid),
            stream_bytes: Some(stream_bytes),
            chunks: Some(crate::ops::Chunks::sent(&outcome, stream_bytes)),
            ..job.report(
                src_name,
                src_emd.as_ref().map(|e| e.uuid),
                &target_name,
                outcome.bytes,
            )
        })
    })()
}

/// What a stream run writes (the stream, the manifest) is none of what it
/// reads (the source, BASE), nor the one the other; a manifest replaces a
/// manifest only, unless `force`. Exit 3 (usage: 2) before anything is
/// read or written.
fn check_outputs(
    src: &OpenSource,
    target: &Target,
    manifest: Option<&Path>,
    since: Option<&Path>,
    force: bool,
) -> Result<()> {
    let source = src.storage()?;
    let stream = match target {
        Target::StreamFile(p) => Storage::of_path(p)?,
        Target::Stdout => Some(Storage::of_stdout()?),
        Target::Path(_) => None,
    };
    let base = match since {
        Some(p) => Storage::of_path(p)?,
        None => None,
    };
    if let (Some(s), Some(b)) = (&stream, &base)
        && let Some(why) = s.overlap(b)
    {
        return Err(Error::refused(format!(
            "the stream would replace BASE, the state it is made from: {why}"
        ))
        .with_hint("write the incremental stream to a new file: BASE is a link of the chain"));
    }
    let Some(path) = manifest else {
        return Ok(());
    };
    let name = path.display();
    if path == Path::new("-") {
        return Err(Error::usage(
            "--manifest writes a file: name one (standard output is for the stream, `-` as DST)",
        ));
    }
    if let Target::StreamFile(p) = target
        && resolved(p).is_some()
        && resolved(p) == resolved(path)
    {
        return Err(Error::usage(format!(
            "--manifest {name} is the stream's own file: name another"
        )));
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() {
        return Err(Error::usage(format!(
            "--manifest {name} is a directory: name a file"
        )));
    }
    let own = Storage::of_path(path)?;
    for (other, what) in [
        (Some(source), "the source"),
        (stream, "the stream"),
        (base, "BASE"),
    ] {
        if let (Some(m), Some(o)) = (&own, &other)
            && let Some(why) = m.overlap(o)
        {
            return Err(
                Error::refused(format!("--manifest {name} is {what}: {why}"))
                    .with_hint("name a new file for the manifest"),
            );
        }
    }
    if !meta.is_file() {
        return Err(Error::usage(format!(
            "--manifest {name} is neither a regular file nor absent"
        )));
    }
    let mut head = [0u8; 8];
    let n = File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .ctx("reading", path)?;
    if !force && !Manifest::sniff(&head[..n]) {
        return Err(Error::refused(format!(
            "{name} exists and is not a manifest; refusing to replace it"
        ))
        .with_hint("use --force to replace it, or name a new file for the manifest"));
    }
    Ok(())
}

/// Where `path` puts its file: its directory resolved (`..`, symlinks),
/// and its name; `None` when the directory cannot be resolved.
fn resolved(path: &Path) -> Option<std::path::PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(path.file_name()?))
}

/// An output file, its name for messages, and for a regular `--stream FILE`
/// the file that takes that name when the stream is complete (dropped on
/// failure: nothing is left behind).
type Output = (File, String, Option<Partial>);

/// Standard output; a character device or FIFO (`/dev/null`, a named pipe)
/// written as it is; or for a regular file, an unnamed file in its
/// directory that takes its name once the stream is complete, so an old
/// stream is kept until a new one has replaced it whole.
fn open_output(place: &Target, force: bool) -> Result<Output> {
    let path = match place {
        Target::Stdout => return Ok((stdout_file()?, "standard output".to_string(), None)),
        Target::StreamFile(path) => path,
        Target::Path(_) => return Err(Error::runtime("internal: a stream into a volume path")),
    };
    let name = path.display().to_string();
    if let Ok(meta) = std::fs::metadata(path) {
        let kind = meta.file_type();
        if kind.is_char_device() || kind.is_fifo() {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .ctx("opening", path)?;
            return Ok((file, name, None));
        }
        if kind.is_block_device() {
            if !force {
                return Err(Error::refused(format!(
                    "{name} is a block device; refusing to write a stream over it"
                ))
                .with_hint("use --force to write the stream onto the device"));
            }
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .ctx("opening", path)?;
            return Ok((file, name, None));
        }
        if !kind.is_file() {
            return Err(Error::usage(format!(
                "{name} is neither a regular file nor a device"
            )));
        }
        if !force && sniff::kind_of_path(path)? != sniff::Kind::Stream {
            return Err(Error::refused(format!(
                "{name} exists and is not a backup stream; refusing to replace it"
            ))
            .with_hint("use --force to replace it, or choose a new file"));
        }
    }
    let partial = Partial::create(path)?;
    let file = partial
        .file()
        .try_clone()
        .ctx("duplicating the descriptor of", path)?;
    Ok((file, name, Some(partial)))
}

/// The stream's framer on the pipeline's workers.
struct Framing<'a>(&'a StreamFramer);

impl Framer for Framing<'_> {
    fn scratch(&self) -> Option<usize> {
        self.0.scratch_len()
    }

    fn frame(&self, input: FrameInput, mut scratch: Option<PooledBuf>) -> Result<Frame> {
        let parts = self.0.frame(
            input.index,
            input.offset,
            input.data,
            input.zero,
            scratch.as_deref_mut().map(Vec::as_mut_slice),
        )?;
        let payload = match (parts.payload, scratch) {
            (Payload::Data, _) => FramePayload::Data,
            (Payload::Empty, _) => FramePayload::Empty,
            (Payload::Scratch(n), Some(buf)) => FramePayload::Scratch(buf, n),
            (Payload::Scratch(_), None) => {
                return Err(Error::runtime(
                    "internal: a compressed frame without scratch",
                ));
            }
        };
        Ok(Frame {
            header: parts.header,
            payload,
            hash: parts.hash,
        })
    }
}

/// The stream writer as the pipeline's ordered sink.
struct Writing<W: std::io::Write>(StreamWriter<W>);

impl<W: std::io::Write> Sink for Writing<W> {
    fn put(&mut self, chunk: &ChunkOut) -> Result<()> {
        // An incremental stream carries the changed chunks only.
        if chunk.unchanged {
            return Ok(());
        }
        let frame = chunk
            .frame
            .ok_or_else(|| Error::runtime("internal: a stream chunk without a frame"))?;
        let payload = match &frame.payload {
            FramePayload::Data => chunk.data,
            FramePayload::Empty => &[][..],
            FramePayload::Scratch(buf, n) => &buf[..*n],
        };
        self.0.write_frame(&frame.header, payload, &frame.hash)
    }
}

/// The sealed chunk index of a stream's data: the final EMD's state
/// (`stream_id`, its data version, sector size and UUID) and the
/// pipeline's entries.
fn seal_index(
    fin: &crate::emd::Emd,
    stream_id: [u8; 16],
    key: &VolumeKey,
    tagger: &crate::index::Tagger,
    outcome: &crate::pipeline::Outcome,
) -> Result<Vec<u8>> {
    let (entries, root0) = outcome
        .index
        .clone()
        .ok_or_else(|| Error::runtime("internal: a tagged stream without a chunk index"))?;
    crate::index::ChunkIndex {
        data_len: outcome.bytes,
        data_version: fin.data_version,
        sector_size: fin.sector_size,
        source: tagger.source_id(),
        root0,
        state_id: stream_id,
        entries,
    }
    .seal(key, &fin.uuid)
}

/// Write the manifest of a finished stream: its final EMD and the sealed
/// chunk index of its data, to a new file that takes `path`'s name when
/// whole.
fn write_manifest(
    path: &std::path::Path,
    partial: Partial,
    fin: &crate::emd::Emd,
    sealed: &[u8],
) -> Result<()> {
    let bytes = crate::stream::manifest::Manifest {
        emd: fin.clone(),
        sealed_index: sealed.to_vec(),
    }
    .encode();
    let mut file = partial.file();
    std::io::Write::write_all(&mut file, &bytes).ctx("writing", path)?;
    partial.commit()
}
