//! Checkpoints and `evfs backup --resume`.
//!
//! While a backup writes into a volume, the target's EMD is dirty and holds
//! a [`Checkpoint`]: which source (UUID, size, EMD generation) the run
//! copies, and how many bytes from offset 0 are written *and synced*. The
//! [`CheckpointSink`] moves it forward every so often through the volume's
//! [`Transaction`]: `fsync` the data, then write both EMD copies; so a
//! checkpoint never claims bytes that a crash could still take back.
//!
//! A resumed run ([`inspect`]) continues from the checkpoint, rounded down
//! to a chunk, with the key the target already holds. Its plaintext digest
//! must equal an uninterrupted run's, so the part already written is
//! re-hashed by decrypting it from the target (one read of the prefix, in
//! parallel through the pipeline) and the run's chunks are merged into that
//! tree. This keeps the EMD format small (no hash state in it) and makes the
//! recorded digest describe what the target really holds.

use std::time::{Duration, Instant};

use crate::emd::{Checkpoint, Emd};
use crate::error::{Error, Result};
use crate::pipeline::{CHUNK, ChunkOut, Sink};
use crate::volume::transaction::Transaction;

/// Fewest bytes between two checkpoints.
pub const CHECKPOINT_MIN: u64 = 16 << 20;
/// Most bytes between two checkpoints.
pub const CHECKPOINT_MAX: u64 = 1 << 30;
/// Longest time between two checkpoints while data flows.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// Bytes between checkpoints for a backup of `total` bytes: about a
/// sixteenth of the work, so that a crash loses little of it, but never so
/// often that the syncs slow the copy down. A multiple of the chunk size.
pub fn checkpoint_every(total: u64) -> u64 {
    let every = (total / 16).clamp(CHECKPOINT_MIN, CHECKPOINT_MAX);
    every - every % CHUNK as u64
}

/// Writes data through an inner device sink (buffered or O_DIRECT) and moves
/// the target's checkpoint forward through its [`Transaction`].
pub struct CheckpointSink<'a, 't> {
    /// Writes the data (buffered or O_DIRECT) into the target.
    inner: Box<dyn Sink + 'a>,
    /// The write in progress, whose EMD holds the run's checkpoint.
    txn: &'a mut Transaction<'t>,
    every: u64,
    last_bytes: u64,
    last_time: Instant,
}

impl<'a, 't> CheckpointSink<'a, 't> {
    /// `txn`'s EMD must hold the run's checkpoint; `inner` writes the data.
    pub fn new(inner: Box<dyn Sink + 'a>, txn: &'a mut Transaction<'t>) -> Result<Self> {
        let Some(c) = &txn.emd().checkpoint else {
            return Err(Error::runtime(
                "internal: a checkpointing write without a checkpoint",
            ));
        };
        Ok(CheckpointSink {
            every: checkpoint_every(c.total),
            last_bytes: c.bytes_done,
            last_time: Instant::now(),
            inner,
            txn,
        })
    }
}

impl Sink for CheckpointSink<'_, '_> {
    fn put(&mut self, chunk: &ChunkOut) -> Result<()> {
        self.inner.put(chunk)?;
        let done = chunk.offset + chunk.plain_len as u64;
        // Only whole chunks: a resumed pipeline starts on a chunk boundary.
        let total = self.txn.emd().checkpoint.as_ref().map_or(0, |c| c.total);
        let due = done - self.last_bytes.min(done) >= self.every
            || self.last_time.elapsed() >= CHECKPOINT_INTERVAL;
        // A source of unknown length (plain stdin) has no checkpoints: it
        // cannot be resumed, and its target grows past where the backup
        // EMD copy would be written.
        if due && done.is_multiple_of(CHUNK as u64) && total > 0 && done < total {
            self.txn.checkpoint(done)?;
            self.last_bytes = done;
            self.last_time = Instant::now();
        }
        Ok(())
    }
}

/// The run flags that decide what an interrupted run must have been.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunKind {
    /// `--raw`: the target's EMD is the source's, byte for byte in its body.
    pub raw: bool,
    /// `--target-key`: the target keeps its own EMD.
    pub into_volume: bool,
}

/// Where a resumed run starts, and the target's EMD it continues with.
pub struct ResumePoint {
    /// Data offset to continue from: the checkpoint rounded down to a chunk.
    pub start: u64,
    /// The target's EMD in force (dirty, with the run's checkpoint).
    pub emd: Emd,
}

impl ResumePoint {
    pub fn checkpoint(&self) -> &Checkpoint {
        self.emd
            .checkpoint
            .as_ref()
            .expect("inspect only resumes a target with a checkpoint")
    }
}

/// Decide what `--resume` does with the target whose EMD in force is
/// `target` (`None`: absent, blank or not a volume), for a backup of
/// `source` (`None`: plain data). `Ok(None)`: a full backup (no target, or
/// a finished one). `Ok(Some)`: continue. Exit 3 when the checkpoint
/// belongs to another source or another kind of run.
pub fn inspect(
    target_name: &str,
    target: Option<&Emd>,
    source: Option<&Emd>,
    kind: RunKind,
) -> Result<Option<ResumePoint>> {
    let Some(t) = target else {
        return Ok(None);
    };
    if !t.dirty {
        return Ok(None);
    }
    let start_over = format!(
        "run the backup without --resume to start over (add --force if the target is refused as another lineage), or choose another target than {target_name}"
    );
    let Some(c) = &t.checkpoint else {
        return Err(Error::refused(format!(
            "{target_name} is dirty but holds no checkpoint: a restore or another writer left it, not an interrupted backup, so there is nothing to resume"
        ))
        .with_hint(start_over));
    };
    let Some(s) = source else {
        return Err(Error::refused(format!(
            "{target_name} holds a checkpoint, but the source is plain data: a checkpoint names its source by volume UUID, and plain data has none to match"
        ))
        .with_hint(start_over));
    };
    let uuid = crate::emd::format::uuid_string;
    if c.source_uuid != s.uuid {
        return Err(Error::refused(format!(
            "the checkpoint of {target_name} is from another source (volume {}), not from {}: resuming would mix two volumes",
            uuid(&c.source_uuid),
            uuid(&s.uuid)
        ))
        .with_hint(start_over));
    }
    if c.total != s.data_size {
        return Err(Error::refused(format!(
            "the checkpoint of {target_name} is from a run over {} bytes; the source now has {}",
            c.total, s.data_size
        ))
        .with_hint(start_over));
    }
    if c.source_generation != s.generation {
        return Err(Error::refused(format!(
            "the source changed since the interrupted run (EMD generation {} then, {} now): the part already copied may no longer match it",
            c.source_generation, s.generation
        ))
        .with_hint(start_over));
    }
    let raw_clone = t.uuid == s.uuid;
    let shaped = if kind.raw {
        raw_clone && t.mac == s.mac
    } else if kind.into_volume {
        !raw_clone
    } else {
        !raw_clone
            && t.cipher == s.cipher
            && t.sector_size == s.sector_size
            && t.data_size == s.data_size
            && t.label == s.label
            && t.slots.len() == s.slots.len()
            && t.slots
                .iter()
                .zip(&s.slots)
                .all(|(a, b)| a.role == b.role && a.id == b.id && a.public == b.public)
    };
    if !shaped {
        let what = if kind.raw {
            "not a raw clone (--raw)"
        } else if kind.into_volume {
            "a raw clone, not a backup into a volume with its own key (--target-key)"
        } else if raw_clone {
            "a raw clone (--raw), not a re-encrypted one"
        } else {
            "not this source's re-encrypted clone (other slots or geometry)"
        };
        return Err(Error::refused(format!(
            "the interrupted run into {target_name} was {what}: resume it with the options it was started with"
        ))
        .with_hint(start_over));
    }
    let start = c.bytes_done - c.bytes_done % CHUNK as u64;
    if start > t.data_size {
        return Err(Error::integrity(format!(
            "the checkpoint of {target_name} claims {} bytes, more than its data area of {}",
            c.bytes_done, t.data_size
        )));
    }
    Ok(Some(ResumePoint {
        start,
        emd: t.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emd::tests::example;

    fn source() -> Emd {
        let mut s = example();
        s.uuid = [0x11; 16];
        s.generation = 4;
        s
    }

    fn interrupted(s: &Emd, done: u64) -> Emd {
        let mut t = s.clone();
        t.uuid = [0x22; 16];
        t.mac = [0x33; 32];
        t.dirty = true;
        t.checkpoint = Some(Checkpoint {
            task: crate::emd::Task::Backup,
            run_id: [1; 16],
            source_uuid: s.uuid,
            bytes_done: done,
            total: s.data_size,
            source_generation: s.generation,
        });
        t
    }

    fn refused(target: &Emd, source: Option<&Emd>, kind: RunKind) -> String {
        match inspect("T", Some(target), source, kind) {
            Err(e) => {
                assert_eq!(e.exit_code(), 3, "{e}");
                e.to_string()
            }
            Ok(r) => panic!("resumed at {:?}", r.map(|r| r.start)),
        }
    }

    #[test]
    fn no_target_or_a_finished_one_means_a_full_backup() {
        let s = source();
        assert!(
            inspect("T", None, Some(&s), RunKind::default())
                .unwrap()
                .is_none()
        );
        let mut done = interrupted(&s, 0);
        done.dirty = false;
        done.checkpoint = None;
        assert!(
            inspect("T", Some(&done), Some(&s), RunKind::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_matching_checkpoint_resumes_at_a_chunk_boundary() {
        let s = source();
        let t = interrupted(&s, 5 * CHUNK as u64 + 4096);
        let r = inspect("T", Some(&t), Some(&s), RunKind::default())
            .unwrap()
            .unwrap();
        assert_eq!(r.start, 5 * CHUNK as u64);
        assert_eq!(r.checkpoint().run_id, [1; 16]);
        let into = RunKind {
            into_volume: true,
            ..RunKind::default()
        };
        assert!(inspect("T", Some(&t), Some(&s), into).unwrap().is_some());
    }

    #[test]
    fn another_source_or_run_is_refused() {
        let s = source();
        let t = interrupted(&s, CHUNK as u64);
        let mut other = s.clone();
        other.uuid = [0x44; 16];
        assert!(refused(&t, Some(&other), RunKind::default()).contains("another source"));
        assert!(refused(&t, None, RunKind::default()).contains("plain data"));
        let mut changed = s.clone();
        changed.generation += 2;
        assert!(refused(&t, Some(&changed), RunKind::default()).contains("changed"));
        let mut resized = s.clone();
        resized.data_size += 4096;
        assert!(refused(&t, Some(&resized), RunKind::default()).contains("bytes"));
        let raw = RunKind {
            raw: true,
            ..RunKind::default()
        };
        assert!(refused(&t, Some(&s), raw).contains("not a raw clone"));
        let mut reslotted = t.clone();
        reslotted.slots.pop();
        assert!(refused(&reslotted, Some(&s), RunKind::default()).contains("slots"));
        let mut no_checkpoint = t.clone();
        no_checkpoint.checkpoint = None;
        assert!(refused(&no_checkpoint, Some(&s), RunKind::default()).contains("no checkpoint"));
    }

    #[test]
    fn a_raw_clone_resumes_only_as_a_raw_clone() {
        let s = source();
        let mut t = s.clone();
        t.dirty = true;
        t.checkpoint = interrupted(&s, 0).checkpoint;
        let raw = RunKind {
            raw: true,
            ..RunKind::default()
        };
        assert_eq!(
            inspect("T", Some(&t), Some(&s), raw)
                .unwrap()
                .unwrap()
                .start,
            0
        );
        assert!(refused(&t, Some(&s), RunKind::default()).contains("raw clone"));
    }

    #[test]
    fn checkpoints_come_every_sixteenth_within_bounds() {
        assert_eq!(checkpoint_every(0), CHECKPOINT_MIN);
        assert_eq!(checkpoint_every(64 << 30), 1 << 30);
        assert_eq!(checkpoint_every(1 << 30), 64 << 20);
        assert!(checkpoint_every((1 << 30) + 12345).is_multiple_of(CHUNK as u64));
    }
}
