//! Pipeline tests at 0, 1 sector, exactly one chunk and many chunks, with
//! every transform, several thread counts, and failures on both ends.

use std::io::Cursor;

use super::progress::{ProgressMode, with_progress};
use super::source::ReaderSource;
use super::*;
use crate::crypto::Xts;

struct VecSink {
    data: Vec<u8>,
    zeros: Vec<bool>,
    fail_at: Option<u64>,
}

impl VecSink {
    fn new() -> Self {
        VecSink {
            data: Vec::new(),
            zeros: Vec::new(),
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
        Ok(())
    }
}

fn key(byte: u8) -> SectorKey {
    SectorKey {
        xts: Xts::new(&[byte; 64]).unwrap(),
        sector_size: 4096,
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
    with_progress(&ProgressMode::silent(), "test", Some(len), |m| {
        run(p, &mut src, sink, m)
    })
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
            assert_eq!(o.chunks, len.div_ceil(CHUNK) as u64);
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
    let e = with_progress(&ProgressMode::silent(), "t", None, |m| {
        run(&plan(2, None, None), &mut src, &mut sink, m)
    })
    .unwrap_err();
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
