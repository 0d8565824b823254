//! The data pipeline: a reader, a pool of workers and an ordered collector,
//! joined by bounded channels with reused buffers.
//!
//! ```text
//!   reader ──work──▶ worker × N ──done──▶ collector (this thread) ──▶ sink
//!   (reads into a    (decrypt, hash,      (reorders, merges the BLAKE3
//!    pooled buffer)   encrypt in place)    tree, writes in order)
//! ```
//!
//! Each chunk is read into a page-aligned buffer of its own, which the
//! workers transform in place: one copy of the data in memory, still in the
//! cache from the read when it is decrypted, hashed and encrypted. Memory is
//! bounded by the number of buffers (about 3 × threads chunks), whatever the
//! volume size. The reader takes each chunk's buffers before dispatching it,
//! in order, so a chunk that the collector waits for always holds its
//! buffers and can never be starved by later chunks.

pub mod digest;
pub mod meter;
pub mod pool;
pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::crypto::Xts;
use crate::error::{Error, Result};
use crate::index::{Entry, Tagger};
pub use meter::Meter;
use pool::{Pool, PooledBuf};
pub use sink::Sink;
pub use source::buffers_for;
pub use source::{Input, Source};

/// Bytes per chunk, the chunk index's: a power of two (the BLAKE3 tree merge needs it) and a
/// multiple of every sector size.
pub const CHUNK: usize = crate::index::CHUNK as usize;
/// Bytes a worker processes per step, so that what it decrypts, hashes and
/// encrypts stays in the core's cache between the steps.
const PIECE: usize = 64 << 10;

/// An XTS key and the sector size it runs at.
pub struct SectorKey {
    pub xts: Xts,
    pub sector_size: usize,
    /// Tweak of data sector 0; sector `n` gets `tweak_base + n * step`,
    /// the step being the [`Xts::tweak_step`] (EVFS: 0 and 1; LUKS: the
    /// segment's `iv_tweak` and `sector_size / 512`).
    pub tweak_base: u64,
}

impl SectorKey {
    /// The sector cipher of `key` at `sector_size`.
    pub fn new(key: &crate::crypto::VolumeKey, sector_size: u32) -> SectorKey {
        SectorKey {
            xts: key.xts(),
            sector_size: sector_size as usize,
            tweak_base: 0,
        }
    }

    /// The tweak of the sector at data offset `offset`.
    fn tweak_of(&self, offset: u64) -> u64 {
        sector_of(offset, self.sector_size) * self.xts.tweak_step() + self.tweak_base
    }
}

/// Turns a finished chunk into a unit of a backup stream, on a worker thread
/// (so that hashing and compressing frames runs in parallel too).
pub trait Framer: Sync {
    /// Bytes of scratch space each frame needs (compressed payloads), if any.
    fn scratch(&self) -> Option<usize>;
    /// Make the frame of one chunk.
    fn frame(&self, input: FrameInput, scratch: Option<PooledBuf>) -> Result<Frame>;
}

/// What a [`Framer`] sees of a chunk.
pub struct FrameInput<'a> {
    pub index: u64,
    pub offset: u64,
    /// The chunk's final bytes: ciphertext, or plaintext when nothing encrypts.
    pub data: &'a [u8],
    /// The plaintext was all zeros (when the plan detects zeros).
    pub zero: bool,
}

/// A frame: a fixed header, a payload, and the BLAKE3 of both.
pub struct Frame {
    pub header: [u8; 32],
    pub payload: FramePayload,
    pub hash: [u8; 32],
}

/// Where a frame's payload is.
pub enum FramePayload {
    /// The chunk's data itself.
    Data,
    /// No payload.
    Empty,
    /// The first bytes of a scratch buffer.
    Scratch(PooledBuf, usize),
}

/// What the workers do to each chunk.
pub struct Plan<'a> {
    pub threads: usize,
    /// Decrypt the input with this key (an EVFS source).
    pub decrypt: Option<SectorKey>,
    /// Encrypt the plaintext with this key (an EVFS target).
    pub encrypt: Option<SectorKey>,
    /// Compute the BLAKE3 of the plaintext.
    pub hash: bool,
    /// Flag all-zero plaintext chunks (for sparse streams).
    pub detect_zero: bool,
    /// Plaintext bytes that count (for the digest and the zero check), when
    /// the input ends in sector padding that is not part of the data.
    pub plain_len: Option<u64>,
    /// Data offset of the first chunk (non-zero when resuming); a multiple of [`CHUNK`].
    pub start: u64,
    /// Make stream frames of the chunks.
    pub framer: Option<&'a dyn Framer>,
    /// Tag the chunks for a chunk index, and pass over those unchanged
    /// since the previous one.
    pub tags: Option<&'a ChunkTags<'a>>,
}

/// The chunk index side of a plan: each chunk's tag is taken of its bytes
/// as read; a chunk whose tag equals the previous index's entry is not
/// transformed or written (the sink sees it as [`ChunkOut::unchanged`]),
/// and its plaintext chaining value is taken from that entry, so that the
/// digest still covers the whole data.
pub struct ChunkTags<'a> {
    pub tagger: &'a Tagger,
    /// The previous index's entries, by chunk number (empty: every chunk
    /// is new).
    pub old: &'a [Entry],
    /// The BLAKE3 of the previous data's chunk 0 alone.
    pub old_root0: [u8; 32],
}

impl<'a> Plan<'a> {
    /// A plan that only reads: no cipher, no hash, no frames, from offset 0.
    pub fn new(threads: usize) -> Plan<'a> {
        Plan {
            threads,
            decrypt: None,
            encrypt: None,
            hash: false,
            detect_zero: false,
            plain_len: None,
            start: 0,
            framer: None,
            tags: None,
        }
    }

    /// Decrypt the input with this key (an EVFS source).
    pub fn decrypt(mut self, key: Option<SectorKey>) -> Self {
        self.decrypt = key;
        self
    }

    /// Encrypt the plaintext with this key (an EVFS target).
    pub fn encrypt(mut self, key: Option<SectorKey>) -> Self {
        self.encrypt = key;
        self
    }

    /// Compute the BLAKE3 of the plaintext.
    pub fn hash(mut self, on: bool) -> Self {
        self.hash = on;
        self
    }

    /// Flag all-zero plaintext chunks.
    pub fn detect_zero(mut self, on: bool) -> Self {
        self.detect_zero = on;
        self
    }

    /// Only the first `len` bytes of plaintext count (see [`Plan::plain_len`]).
    pub fn plain_len(mut self, len: Option<u64>) -> Self {
        self.plain_len = len;
        self
    }

    /// Start at this data offset (a multiple of [`CHUNK`]).
    pub fn start(mut self, start: u64) -> Self {
        self.start = start;
        self
    }

    /// Make stream frames of the chunks.
    pub fn framer(mut self, framer: &'a dyn Framer) -> Self {
        self.framer = Some(framer);
        self
    }

    /// Tag the chunks for a chunk index (see [`ChunkTags`]); only for a
    /// hashing plan that starts at offset 0. An unchanged chunk gets no
    /// frame.
    pub fn tags(mut self, tags: Option<&'a ChunkTags<'a>>) -> Self {
        self.tags = tags;
        self
    }

    /// Default worker count: every core.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// One chunk as the sink sees it, in order.
pub struct ChunkOut<'a> {
    /// The chunk's number, from 0 at the plan's start.
    #[allow(
        dead_code,
        reason = "read only by the unit tests (found when its users became pub(crate))"
    )]
    pub index: u64,
    /// Offset in the data (plaintext) stream.
    pub offset: u64,
    /// What to write: ciphertext for an encrypting plan, else the input bytes.
    pub data: &'a [u8],
    /// Bytes of `data` that are data (see [`Plan::plain_len`]): `data` may be
    /// longer, by the padding of the last sector. Cleartext sinks write
    /// only these.
    pub plain_len: usize,
    /// The plaintext was all zeros (only when the plan detects zeros).
    #[allow(
        dead_code,
        reason = "read only by the unit tests (found when its users became pub(crate))"
    )]
    pub zero: bool,
    /// The chunk's stream frame, when the plan makes frames.
    pub frame: Option<&'a Frame>,
    /// The chunk is the same as the previous index says the target holds:
    /// `data` is not transformed and must not be written.
    pub unchanged: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Plaintext (input) bytes processed, not counting a resumed prefix.
    pub bytes: u64,
    /// BLAKE3 of all the plaintext from offset 0, when the plan hashes.
    pub digest: Option<blake3::Hash>,
    /// Chunks processed.
    pub chunks: u64,
    /// Chunks passed over as unchanged (with [`Plan::tags`]).
    pub unchanged: u64,
    /// Bytes of data in the chunks handed to the sink to write (all but
    /// the unchanged ones).
    pub written: u64,
    /// The new chunk index's entries and chunk 0's root (with [`Plan::tags`]).
    pub index: Option<(Vec<Entry>, [u8; 32])>,
}

struct Work {
    index: u64,
    offset: u64,
    /// The chunk, transformed in place by the worker.
    input: Input,
    scratch: Option<PooledBuf>,
}

struct Done {
    index: u64,
    offset: u64,
    /// The chunk's final bytes are the first `out_len` of its buffer.
    input: Input,
    out_len: usize,
    hash: Option<digest::ChunkHash>,
    zero: bool,
    frame: Option<Frame>,
    /// Bytes of this chunk that count as data (see [`Plan::plain_len`]).
    counted: usize,
    /// The chunk's tag (with [`Plan::tags`]).
    tag: Option<[u8; 32]>,
    unchanged: bool,
}

/// Run `plan` from `source` into `sink`, reporting bytes to `meter`.
#[cfg(test)]
pub fn run(
    plan: &Plan,
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    meter: &Meter,
) -> Result<Outcome> {
    run_after(plan, digest::TreeMerger::new(), source, sink, meter).map(|(outcome, _)| outcome)
}

/// [`run`] for data that continues earlier data: `tree` holds the hashes of
/// the chunks before `plan.start` (a resumed backup re-hashes the part it
/// had written), so that the digest covers everything from offset 0. Also
/// returns the tree with this run's chunks added.
pub fn run_after(
    plan: &Plan,
    tree: digest::TreeMerger,
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    meter: &Meter,
) -> Result<(Outcome, digest::TreeMerger)> {
    if !plan.start.is_multiple_of(CHUNK as u64) {
        return Err(Error::runtime(
            "a resumed pipeline must start on a chunk boundary",
        ));
    }
    if plan.tags.is_some() && (plan.start != 0 || !plan.hash) {
        return Err(Error::runtime(
            "internal: a chunk index is made only by a hashing run from offset 0",
        ));
    }
    let threads = plan.threads.max(1);
    let depth = threads * 2;
    let buffers = buffers_for(threads);
    let scratch_pool = plan
        .framer
        .and_then(|f| f.scratch())
        .map(|size| Pool::new(buffers, size));
    let (work_tx, work_rx) = crossbeam_channel::bounded::<Work>(depth);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Result<Done>>(depth + threads);
    let abort = AtomicBool::new(false);

    std::thread::scope(|s| {
        let reader_done = done_tx.clone();
        let (abort_ref, scratch_pool) = (&abort, scratch_pool.as_ref());
        let take = |pool: Option<&Pool>| pool.map(Pool::take).transpose();
        s.spawn(move || {
            let mut index = plan.start / CHUNK as u64;
            let mut offset = plan.start;
            while !abort_ref.load(Ordering::Relaxed) {
                // Buffers are taken here, in chunk order: see the module doc.
                let next = source.next(CHUNK).and_then(|input| match input {
                    Some(input) => Ok(Some((input, take(scratch_pool)?))),
                    None => Ok(None),
                });
                match next {
                    Ok(Some((input, scratch))) => {
                        let len = input.len() as u64;
                        let work = Work {
                            index,
                            offset,
                            input,
                            scratch,
                        };
                        if work_tx.send(work).is_err() {
                            break;
                        }
                        index += 1;
                        offset += len;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = reader_done.send(Err(e));
                        break;
                    }
                }
            }
        });
        for _ in 0..threads {
            let (rx, tx, abort_ref) = (work_rx.clone(), done_tx.clone(), &abort);
            s.spawn(move || {
                for work in rx {
                    if abort_ref.load(Ordering::Relaxed) {
                        continue;
                    }
                    if tx.send(process(plan, work)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((work_rx, done_tx));

        let result = collect(plan, tree, &done_rx, sink, meter);
        if result.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        // Let the other threads finish: buffers held here go home, the rest is drained.
        for _ in done_rx.iter() {}
        result
    })
}

/// The ordered end of the pipeline: reorder, merge hashes, write.
fn collect(
    plan: &Plan,
    mut merger: digest::TreeMerger,
    done_rx: &crossbeam_channel::Receiver<Result<Done>>,
    sink: &mut dyn Sink,
    meter: &Meter,
) -> Result<(Outcome, digest::TreeMerger)> {
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = plan.start / CHUNK as u64;
    let first = next;
    // The digest covers the data from offset 0 only when the tree holds every chunk before the start.
    let whole = merger.chunks() == first;
    let mut bytes = 0u64;
    let (mut chunks, mut unchanged, mut written) = (0u64, 0u64, 0u64);
    let mut index = plan.tags.map(|_| (Vec::new(), [0u8; 32]));
    for result in done_rx.iter() {
        let done = result?;
        pending.insert(done.index, done);
        while let Some(done) = pending.remove(&next) {
            sink.put(&ChunkOut {
                index: done.index,
                offset: done.offset,
                data: &done.input.buffer()[..done.out_len],
                plain_len: done.counted,
                zero: done.zero,
                frame: done.frame.as_ref(),
                unchanged: done.unchanged,
            })?;
            if let (Some((entries, root0)), Some(tag)) = (index.as_mut(), done.tag) {
                let h = done.hash.as_ref();
                entries.push(Entry {
                    tag,
                    cv: h.map_or([0; 32], |h| h.cv),
                });
                if let Some(root) = h.and_then(|h| h.root) {
                    *root0 = *root.as_bytes();
                }
            }
            if let Some(h) = done.hash {
                merger.push(h);
            }
            chunks += 1;
            unchanged += u64::from(done.unchanged);
            if !done.unchanged {
                written += done.counted as u64;
            }
            bytes += done.counted as u64;
            if done.unchanged {
                meter.add_unchanged(done.counted as u64);
            } else {
                meter.add(done.counted as u64);
            }
            next += 1;
        }
    }
    if !pending.is_empty() {
        return Err(Error::runtime(format!(
            "the pipeline lost chunk {next}; {} later chunks were left unwritten",
            pending.len()
        )));
    }
    let digest = (plan.hash && whole).then(|| merger.digest());
    let outcome = Outcome {
        bytes,
        digest,
        chunks,
        unchanged,
        written,
        index,
    };
    Ok((outcome, merger))
}

/// The work of one chunk, on a worker thread: decrypt, look at the
/// plaintext (hash, zero check) and encrypt, in place, one piece at a time
/// so that each piece stays in the cache between the steps.
fn process(plan: &Plan, work: Work) -> Result<Done> {
    let Work {
        index,
        offset,
        mut input,
        scratch,
    } = work;
    let len = input.len();
    let mut hasher = plan.hash.then(|| digest::chunk_hasher(offset));
    let mut zero = plan.detect_zero;
    // Only bytes before `plain_len` count; whole sectors are still processed.
    let counted = plan
        .plain_len
        .map_or(len, |n| n.saturating_sub(offset).min(len as u64) as usize);
    let mut seen = 0usize;
    let tag = plan
        .tags
        .map(|t| t.tagger.tag(offset, counted as u64, input.bytes()));
    if let (Some(t), Some(tag)) = (plan.tags, tag)
        && t.old
            .get(index as usize)
            .is_some_and(|old| crate::crypto::ct_eq(&old.tag, &tag))
    {
        let old = &t.old[index as usize];
        return Ok(Done {
            index,
            offset,
            input,
            out_len: len,
            hash: (counted > 0).then(|| digest::ChunkHash {
                cv: old.cv,
                root: (offset == 0).then(|| blake3::Hash::from(t.old_root0)),
            }),
            zero: false,
            frame: None,
            counted,
            tag: Some(tag),
            unchanged: true,
        });
    }
    let mut look = |plain: &[u8]| {
        let plain = &plain[..plain.len().min(counted - seen.min(counted))];
        seen += plain.len();
        if plain.is_empty() {
            return;
        }
        if let Some(h) = hasher.as_mut() {
            h.update(plain);
        }
        if zero {
            zero = is_zero(plain);
        }
    };
    // The input's last sector is padded with zeros to be encrypted (a plain
    // input ending mid-sector, or a source whose sectors are smaller than
    // the target's).
    let out_len = match &plan.encrypt {
        Some(enc) => len.div_ceil(enc.sector_size) * enc.sector_size,
        None => len,
    };
    let buf = input.buffer_mut();
    if out_len > buf.len() {
        return Err(Error::runtime(format!(
            "internal: a chunk of {len} bytes does not fit its padding into a buffer of {}",
            buf.len()
        )));
    }
    buf[len..out_len].fill(0);
    let mut at = 0;
    while at < out_len {
        let end = (at + PIECE).min(out_len);
        let piece = &mut buf[at..end];
        if let Some(dec) = &plan.decrypt {
            // The padding, if any, is added after decryption: zeros as plaintext.
            let real = end.min(len) - at;
            dec.xts.decrypt_sectors(
                &mut piece[..real],
                dec.sector_size,
                dec.tweak_of(offset + at as u64),
            );
        }
        look(&piece[..end.min(len) - at]);
        if let Some(enc) = &plan.encrypt {
            enc.xts
                .encrypt_sectors(piece, enc.sector_size, enc.tweak_of(offset + at as u64));
        }
        at = end;
    }
    let hash = hasher
        .filter(|_| counted > 0)
        .map(|h| digest::finish_chunk(offset, &h));
    let frame = match plan.framer {
        Some(framer) => Some(framer.frame(
            FrameInput {
                index,
                offset,
                data: &input.buffer()[..out_len],
                zero,
            },
            scratch,
        )?),
        None => None,
    };
    Ok(Done {
        index,
        offset,
        input,
        out_len,
        hash,
        zero,
        frame,
        counted,
        tag,
        unchanged: false,
    })
}

fn sector_of(offset: u64, sector_size: usize) -> u64 {
    offset / sector_size as u64
}

/// Whether every byte is zero (vectorizes well, unlike a byte-wise `all`).
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(64);
    let body = chunks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0);
    body && chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests;
