//! Pipeline tests at 0, 1 sector, exactly one chunk and many chunks, with
//! every transform, several thread counts, and failures on both ends.

use std::io::Cursor;

use super::Meter;
use super::source::ReaderSource;
use super::*;
use crate::crypto::Xts;

struct VecSink {
    data: Vec<u8>,
    zeros: Vec<bool>,
    unchanged: Vec<bool>,
    fail_at: Option<u64>,
}

impl VecSink {
    fn new() -> Self {
        VecSink {
            data: Vec::new(),
            zeros: Vec::new(),
            unchanged: Vec::new(),
            fail_at: None,
        }
    }
}

impl Sink for VecSink {
    fn put(&mut self, c: &ChunkOut) -> Result<()> {
        if self.fail_at == Some(c.index) {
            return Err(Error::runtime("sink failed on purpose"));
        }
        assert_eq!(c.offset as usize, self.data.len(), "chunks arrive in order");
        self.data.extend_from_slice(c.data);
        self.zeros.push(c.zero);
        self.unchanged.push(c.unchanged);
        Ok(())
    }
}

fn key(byte: u8) -> SectorKey {
    SectorKey {
        xts: Xts::new(&[byte; 64]).unwrap(),
        sector_size: 4096,
        tweak_base: 0,
    }
}

fn plan(threads: usize, decrypt: Option<u8>, encrypt: Option<u8>) -> Plan<'static> {
    Plan {
        threads,
        decrypt: decrypt.map(key),
        encrypt: encrypt.map(key),
        hash: true,
        detect_zero: true,
        plain_len: None,
        start: 0,
        framer: None,
        tags: None,
    }
}

fn sample(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if (i / 100_000) % 3 == 0 {
                0
            } else {
                (i * 7 % 253) as u8
            }
        })
        .collect()
}

fn run_vec(p: &Plan, input: Vec<u8>, sink: &mut VecSink) -> Result<Outcome> {
    let len = input.len() as u64;
    let mut src = ReaderSource::new(Cursor::new(input), "test input", Some(len), 4, CHUNK);
    run(p, &mut src, sink, &Meter::default())
}

fn encrypt_all(k: u8, data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    key(k).xts.encrypt_sectors(&mut out, 4096, 0);
    out
}

const SIZES: [usize; 6] = [0, 4096, CHUNK, CHUNK + 4096, 3 * CHUNK, 5 * CHUNK + 8192];

#[test]
fn reencrypt_decrypts_hashes_and_encrypts_every_size() {
    for threads in [1, 2, 4] {
        for len in SIZES {
            let plain = sample(len);
            let mut sink = VecSink::new();
            let o = run_vec(
                &plan(threads, Some(1), Some(2)),
                encrypt_all(1, &plain),
                &mut sink,
            )
            .unwrap();
            assert_eq!(
                sink.data,
                encrypt_all(2, &plain),
                "len {len} threads {threads}"
            );
            assert_eq!(o.digest.unwrap(), blake3::hash(&plain));
            assert_eq!(o.bytes, len as u64);
        }
    }
}

#[test]
fn decrypt_only_and_raw_copy() {
    let plain = sample(2 * CHUNK + 4096);
    let mut sink = VecSink::new();
    let o = run_vec(&plan(3, Some(5), None), encrypt_all(5, &plain), &mut sink).unwrap();
    assert_eq!(sink.data, plain);
    assert_eq!(o.digest.unwrap(), blake3::hash(&plain));
    let cipher = encrypt_all(5, &plain);
    let mut sink = VecSink::new();
    let raw = Plan {
        hash: false,
        ..plan(2, None, None)
    };
    let o = run_vec(&raw, cipher.clone(), &mut sink).unwrap();
    assert_eq!(sink.data, cipher);
    assert!(o.digest.is_none());
}

#[test]
fn plain_input_is_padded_to_a_sector_but_hashed_as_is() {
    let plain = sample(CHUNK + 1000);
    let mut sink = VecSink::new();
    let o = run_vec(&plan(2, None, Some(9)), plain.clone(), &mut sink).unwrap();
    let mut padded = plain.clone();
    padded.resize(CHUNK + 4096, 0);
    assert_eq!(sink.data, encrypt_all(9, &padded));
    assert_eq!(o.digest.unwrap(), blake3::hash(&plain));
    assert_eq!(o.bytes, plain.len() as u64);
}

#[test]
fn zero_chunks_are_flagged() {
    let mut data = vec![0u8; 3 * CHUNK];
    data[CHUNK + 17] = 1;
    let mut sink = VecSink::new();
    run_vec(&plan(2, None, None), data, &mut sink).unwrap();
    assert_eq!(sink.zeros, vec![true, false, true]);
}

#[test]
fn a_failing_sink_stops_the_pipeline_without_hanging() {
    for threads in [1, 4] {
        let mut sink = VecSink::new();
        sink.fail_at = Some(2);
        let e = run_vec(&plan(threads, None, Some(1)), sample(20 * CHUNK), &mut sink).unwrap_err();
        assert!(e.to_string().contains("on purpose"));
        assert_eq!(sink.data.len(), 2 * CHUNK);
    }
}

struct FailingReader {
    left: usize,
}

impl std::io::Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.left).min(100_000);
        buf[..n].fill(3);
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn a_failing_source_is_reported_after_what_was_read() {
    let mut src = ReaderSource::new(
        FailingReader {
            left: 3 * CHUNK + 5,
        },
        "flaky",
        None,
        4,
        CHUNK,
    );
    let mut sink = VecSink::new();
    let e = run(&plan(2, None, None), &mut src, &mut sink, &Meter::default()).unwrap_err();
    assert!(e.to_string().contains("disk on fire"), "{e}");
    assert_eq!(e.exit_code(), 1);
}

#[test]
fn is_zero_checks_every_byte() {
    let mut v = vec![0u8; 1000];
    assert!(is_zero(&v));
    for i in [0, 63, 64, 999] {
        v[i] = 1;
        assert!(!is_zero(&v), "{i}");
        v[i] = 0;
    }
    assert!(is_zero(&[]));
}

/// A reader that hands out at most `max` bytes per call, with an
/// `Interrupted` error now and then: what pipes and signals do.
struct ShortReader {
    data: Vec<u8>,
    at: usize,
    max: usize,
    calls: usize,
}

impl std::io::Read for ShortReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(7) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = buf
            .len()
            .min(self.max - self.calls % 3)
            .min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A writer that takes at most `max` bytes per call, is interrupted now and
/// then, and fails with `fail` once `limit` bytes are in.
struct FaultyWriter {
    out: Vec<u8>,
    max: usize,
    calls: usize,
    limit: usize,
    /// The errno of the failure.
    fail: i32,
}

impl std::io::Write for FaultyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(5) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        if self.out.len() >= self.limit {
            return Err(std::io::Error::from_raw_os_error(self.fail));
        }
        let n = buf.len().min(self.max).min(self.limit - self.out.len());
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn faulty(limit: usize, fail: i32) -> sink::WriteSink<FaultyWriter> {
    sink::WriteSink {
        writer: FaultyWriter {
            out: Vec::new(),
            max: 10_007,
            calls: 0,
            limit,
            fail,
        },
        name: "the test output".to_string(),
    }
}

fn run_reader(p: &Plan, reader: ShortReader, sink: &mut dyn Sink) -> Result<Outcome> {
    let mut src = ReaderSource::new(reader, "short reads", None, 4, CHUNK);
    run(p, &mut src, sink, &Meter::default())
}

#[test]
fn short_and_interrupted_reads_and_writes_lose_nothing() {
    let data = sample(3 * CHUNK + 12_345);
    let reader = ShortReader {
        data: data.clone(),
        at: 0,
        max: 4099,
        calls: 0,
    };
    let mut sink = faulty(usize::MAX, libc::EIO);
    let o = run_reader(&plan(2, None, None), reader, &mut sink).unwrap();
    sink.flush().unwrap();
    assert_eq!(o.bytes, data.len() as u64);
    assert_eq!(o.digest.unwrap(), blake3::hash(&data));
    assert!(sink.writer.out == data, "the output differs from the input");
}

#[test]
fn a_full_target_or_a_closed_pipe_stops_the_run_with_exit_1() {
    for (errno, words) in [
        (libc::ENOSPC, "No space left on device"),
        (libc::EPIPE, "broken pipe"),
        (libc::EIO, "writing the test output: Input/output error"),
    ] {
        let reader = ShortReader {
            data: sample(6 * CHUNK),
            at: 0,
            max: 1 << 20,
            calls: 0,
        };
        let mut sink = faulty(2 * CHUNK + 100, errno);
        let e = run_reader(&plan(2, None, Some(3)), reader, &mut sink).unwrap_err();
        assert_eq!(e.exit_code(), 1, "{e}");
        let text = e.to_string();
        assert!(text.contains(words), "{errno}: {text}");
        if errno == libc::ENOSPC {
            assert!(
                e.hint()
                    .is_some_and(|h| h.to_string().contains("free space")),
                "{e:?}"
            );
        }
        assert_eq!(sink.writer.out.len(), 2 * CHUNK + 100);
    }
}

/// A source that fails with an I/O error at chunk `at`, as a disk with a bad
/// sector does.
struct FailingSource {
    inner: ReaderSource<Cursor<Vec<u8>>>,
    at: u64,
    served: u64,
}

impl Source for FailingSource {
    fn total(&self) -> Option<u64> {
        self.inner.total()
    }

    fn next(&mut self, max: usize) -> Result<Option<Input>> {
        if self.served == self.at {
            return Err(Error::io(
                "reading",
                "/dev/bad-disk",
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        self.served += 1;
        self.inner.next(max)
    }
}

#[test]
fn a_read_error_names_the_source_and_nothing_after_it_is_written() {
    for threads in [1, 3] {
        let data = sample(8 * CHUNK);
        let len = data.len() as u64;
        let mut src = FailingSource {
            inner: ReaderSource::new(Cursor::new(data.clone()), "t", Some(len), 4, CHUNK),
            at: 5,
            served: 0,
        };
        let mut sink = VecSink::new();
        let e = run(
            &plan(threads, None, Some(4)),
            &mut src,
            &mut sink,
            &Meter::default(),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let text = e.to_string();
        assert!(
            text.contains("/dev/bad-disk") && text.contains("Input/output error"),
            "{text}"
        );
        assert!(
            sink.data.len() <= 5 * CHUNK,
            "data after the failure was written"
        );
        assert_eq!(sink.data, encrypt_all(4, &data[..sink.data.len()]));
    }
}

/// A LUKS data area counts tweaks in 512-byte units from its `iv_tweak`:
/// 4096-byte sector n has tweak 8n + base, in the workers as in one call.
#[test]
fn a_stepped_key_with_a_base_decrypts_what_luks_encrypted() {
    let plain = sample(3 * CHUNK + 4096);
    let mut cipher = plain.clone();
    let luks = Xts::new(&[9; 64]).unwrap().with_tweak_step(8);
    luks.encrypt_sectors(&mut cipher, 4096, 5);
    let stepped = SectorKey {
        xts: Xts::new(&[9; 64]).unwrap().with_tweak_step(8),
        sector_size: 4096,
        tweak_base: 5,
    };
    let p = Plan::new(2).decrypt(Some(stepped)).hash(true);
    let mut sink = VecSink::new();
    let out = run_vec(&p, cipher, &mut sink).unwrap();
    assert!(sink.data == plain);
    assert_eq!(out.digest, Some(blake3::hash(&plain)));
}

fn file_with(data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, std::fs::File) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("volume");
    std::fs::write(&path, data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    (dir, path, file)
}

#[test]
fn a_file_source_reads_exactly_its_range_into_aligned_buffers() {
    use super::source::FileSource;
    let data = sample(4096 + 3 * CHUNK + 12345 + 777);
    let len = (3 * CHUNK + 12345) as u64;
    let (_dir, path, file) = file_with(&data);
    for skip in [0, CHUNK as u64] {
        let mut src = FileSource::new(file.try_clone().unwrap(), path.clone(), 4096, len)
            .buffers(buffers_for(1));
        src.skip(skip);
        assert_eq!(src.total(), Some(len));
        let mut got = Vec::new();
        // Held, so that the source must cycle through its buffers.
        let mut held = std::collections::VecDeque::new();
        while let Some(input) = src.next(CHUNK).unwrap() {
            assert!(input.len() <= CHUNK && input.len() > 0);
            assert_eq!(input.buffer().len(), CHUNK, "room for the padding");
            assert_eq!(input.bytes().as_ptr() as usize % pool::ALIGN, 0);
            got.extend_from_slice(input.bytes());
            held.push_back(input);
            if held.len() == buffers_for(1) {
                held.pop_front();
            }
        }
        assert!(
            got == data[4096 + skip as usize..4096 + len as usize],
            "skip {skip}"
        );
    }
}

#[test]
fn a_file_that_ends_before_its_range_is_an_error_that_says_so() {
    use super::source::FileSource;
    let data = sample(2 * CHUNK + 100);
    let (_dir, path, file) = file_with(&data);
    let mut src = FileSource::new(file, path, 0, 3 * CHUNK as u64);
    assert!(src.next(CHUNK).unwrap().is_some());
    assert!(src.next(CHUNK).unwrap().is_some());
    let e = src.next(CHUNK).err().expect("the third chunk is short");
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("shrank"), "{e}");
}

/// Decrypted, hashed and re-encrypted in the chunk's own buffer: a source
/// of 512-byte sectors whose data ends mid-way through a 4096-byte target
/// sector, so the last sector is padded after decryption.
#[test]
fn smaller_source_sectors_are_decrypted_in_place_and_padded_for_the_target() {
    use super::source::FileSource;
    let small = |byte: u8| SectorKey {
        xts: Xts::new(&[byte; 64]).unwrap(),
        sector_size: 512,
        tweak_base: 0,
    };
    let plain = sample(2 * CHUNK + 3 * 512);
    let mut cipher = plain.clone();
    small(3).xts.encrypt_sectors(&mut cipher, 512, 0);
    let (_dir, path, file) = file_with(&cipher);
    for threads in [1, 2] {
        let p = Plan::new(threads)
            .decrypt(Some(small(3)))
            .encrypt(Some(key(6)))
            .hash(true);
        let mut src = FileSource::new(
            file.try_clone().unwrap(),
            path.clone(),
            0,
            cipher.len() as u64,
        );
        let mut sink = VecSink::new();
        let o = run(&p, &mut src, &mut sink, &Meter::default()).unwrap();
        let mut padded = plain.clone();
        padded.resize(2 * CHUNK + 4096, 0);
        assert!(sink.data == encrypt_all(6, &padded), "threads {threads}");
        assert_eq!(o.digest.unwrap(), blake3::hash(&plain));
        assert_eq!(o.bytes, plain.len() as u64);
    }
}

/// With tags, a run lists each chunk's tag and plaintext chaining value; a
/// second run over the same data passes over every chunk, one over data
/// with one chunk changed re-encrypts only that one, and both digests are
/// the BLAKE3 of their whole input.
#[test]
fn tagged_runs_pass_over_unchanged_chunks_and_keep_the_digest_exact() {
    use crate::index::{SourceKind, Tagger};
    let vk =
        crate::crypto::VolumeKey::from_bytes(crate::crypto::Cipher::Aes256Xts, &[7; 64]).unwrap();
    let tagger = Tagger::new(&vk, SourceKind::Plain);
    for len in [100, 4096, CHUNK, CHUNK + 1, 3 * CHUNK + 4096] {
        let mut data = sample(len);
        let chunks = len.div_ceil(CHUNK);
        let run_with = |old: &[Entry], root0: [u8; 32], data: &[u8]| {
            let tags = ChunkTags {
                tagger: &tagger,
                old,
                old_root0: root0,
            };
            let p = Plan::new(2)
                .encrypt(Some(key(6)))
                .hash(true)
                .tags(Some(&tags));
            let mut sink = VecSink::new();
            let o = run_vec(&p, data.to_vec(), &mut sink).unwrap();
            (o, sink)
        };
        let (first, sink) = run_with(&[], [0; 32], &data);
        assert_eq!((first.chunks, first.unchanged), (chunks as u64, 0));
        assert_eq!(first.written, len as u64);
        assert!(sink.unchanged.iter().all(|&u| !u));
        assert_eq!(first.digest, Some(blake3::hash(&data)));
        let (entries, root0) = first.index.clone().unwrap();
        assert_eq!(entries.len(), chunks);

        let (same, sink) = run_with(&entries, root0, &data);
        assert_eq!((same.unchanged, same.written), (chunks as u64, 0), "{len}");
        assert!(sink.unchanged.iter().all(|&u| u));
        assert_eq!(same.digest, Some(blake3::hash(&data)), "{len}");
        assert_eq!(same.index.as_ref().unwrap().0, entries);

        let last = chunks - 1;
        data[last * CHUNK] ^= 1;
        let (next, sink) = run_with(&entries, root0, &data);
        assert_eq!(next.unchanged, last as u64, "{len}");
        assert_eq!(next.written, (len - last * CHUNK) as u64);
        assert_eq!(next.digest, Some(blake3::hash(&data)), "{len}");
        let mut padded = data.clone();
        padded.resize(len.next_multiple_of(4096), 0);
        let want = encrypt_all(6, &padded);
        assert!(sink.data[last * CHUNK..] == want[last * CHUNK..], "{len}");
        assert_eq!(next.index.unwrap().0[..last], entries[..last]);
    }
}

/// The meter a progress display reads counts the chunks passed over.
#[test]
fn the_meter_counts_unchanged_chunks() {
    use crate::index::{SourceKind, Tagger};
    let vk =
        crate::crypto::VolumeKey::from_bytes(crate::crypto::Cipher::Aes256Xts, &[7; 64]).unwrap();
    let tagger = Tagger::new(&vk, SourceKind::Plain);
    let data = sample(3 * CHUNK);
    let fresh = ChunkTags {
        tagger: &tagger,
        old: &[],
        old_root0: [0; 32],
    };
    let p = Plan::new(2).hash(true).tags(Some(&fresh));
    let first = run_vec(&p, data.clone(), &mut VecSink::new()).unwrap();
    let (entries, root0) = first.index.unwrap();
    let mut old = entries.clone();
    old[1].tag[0] ^= 1;
    let tags = ChunkTags {
        tagger: &tagger,
        old: &old,
        old_root0: root0,
    };
    let p = Plan::new(2).hash(true).tags(Some(&tags));
    let meter = Meter::default();
    let mut src = ReaderSource::new(Cursor::new(data.clone()), "test", None, 4, CHUNK);
    run(&p, &mut src, &mut VecSink::new(), &meter).unwrap();
    assert_eq!((meter.chunks(), meter.unchanged()), (3, 2));
    assert_eq!(meter.done(), data.len() as u64);
}
