//! Stream format tests: writer and reader in a round trip, the worked example
//! of `formats/STREAM.md`, and damaged or hostile streams.

use proptest::prelude::*;

use super::format::*;
use super::reader::{Item, StreamReader};
use super::writer::{Payload, StreamFramer, StreamWriter};
use crate::emd::tests::{example, example_key, example_signer};
use crate::signature::Sign;
use crate::testutil::{expect_listing, listing, unhexdump};

const CHUNK: usize = 64 << 10;

fn header(sparse: bool, compressed: bool, expected: u64) -> Header {
    Header {
        version: VERSION,
        mode: StreamMode::Reencrypt,
        raw: false,
        compressed,
        sparse,
        chunk_size: CHUNK as u32,
        stream_id: [0x5e; 16],
        expected: Some(expected),
        source_uuid: [0x11; 16],
        source_data_version: 5,
        emd: example(),
        base: None,
    }
}

/// An incremental header names its base (flag 8, bytes 72..128) and parses
/// back; a raw stream cannot be incremental.
#[test]
fn an_incremental_header_round_trips_and_a_raw_one_cannot_be_incremental() {
    use super::format::Base;
    let h = Header {
        base: Some(Base {
            state_id: [7; 16],
            data_version: 9,
            digest: [8; 32],
        }),
        ..header(false, false, CHUNK as u64)
    };
    let b = h.encode();
    assert_eq!(u16::from_le_bytes([b[10], b[11]]) & 8, 8);
    assert_eq!(&b[72..88], &[7; 16]);
    assert_eq!(Header::parse(&b).unwrap(), h);
    let mut raw = h.clone();
    raw.raw = true;
    raw.mode = StreamMode::Raw;
    assert!(Header::parse(&raw.encode()).is_err());
}

/// A stream of `chunks` (data of each chunk), made the way a backup makes
/// one: frames by the framer, written in order, MAC keyed from the volume key.
fn make(h: &Header, chunks: &[Vec<u8>]) -> Vec<u8> {
    let key = example_key();
    let framer = StreamFramer {
        compress: h.compressed.then(|| {
            (
                3,
                StreamFramer::aead_key(&key.stream_aead_key(), &h.stream_id),
            )
        }),
        sparse: h.sparse,
        chunk_size: CHUNK,
    };
    let mut scratch = vec![0u8; framer.scratch_len().unwrap_or(0)];
    let mut w = StreamWriter::start(Vec::new(), "test", h, Some(&key.stream_mac_key())).unwrap();
    let mut offset = 0u64;
    for (i, data) in chunks.iter().enumerate() {
        let zero = data.iter().all(|&b| b == 0);
        let f = framer
            .frame(
                i as u64,
                offset,
                data,
                zero,
                h.compressed.then_some(&mut scratch[..]),
            )
            .unwrap();
        let payload = match f.payload {
            Payload::Data => &data[..],
            Payload::Empty => &[],
            Payload::Scratch(n) => &scratch[..n],
        };
        w.write_frame(&f.header, payload, &f.hash).unwrap();
        offset += data.len() as u64;
    }
    let mut fin = h.emd.clone();
    fin.seal(&key);
    let (out, len) = w
        .finish(offset, Some([0x42; 32].into()), &fin, None)
        .unwrap();
    assert_eq!(out.len() as u64, len);
    out
}

/// Read a whole stream; the number of frames or the first error.
fn read_all(bytes: &[u8], with_key: bool) -> crate::error::Result<u64> {
    let mut r = StreamReader::open(bytes, "s")?;
    if with_key {
        r.set_mac_key(&example_key().stream_mac_key());
    }
    let mut n = 0;
    loop {
        match r.next_item()? {
            Item::Frame(..) => n += 1,
            Item::End(t) => {
                assert_eq!(t.frames, n);
                return Ok(n);
            }
        }
    }
}

fn sample(chunks: usize) -> Vec<Vec<u8>> {
    (0..chunks)
        .map(|i| {
            if i % 2 == 1 {
                vec![0u8; CHUNK]
            } else {
                (0..CHUNK).map(|j| (j * 7 + i) as u8).collect()
            }
        })
        .collect()
}

#[test]
fn round_trip_plain_sparse_and_compressed() {
    for (sparse, compressed) in [(false, false), (true, false), (false, true), (true, true)] {
        let chunks = sample(4);
        let s = make(&header(sparse, compressed, (4 * CHUNK) as u64), &chunks);
        assert_eq!(read_all(&s, true).unwrap(), 4);
        assert_eq!(read_all(&s, false).unwrap(), 4);
        if sparse {
            assert!(
                s.len() < 3 * CHUNK + 40_000,
                "zero chunks travel as markers"
            );
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let s = make(&header(true, false, (3 * CHUNK) as u64), &sample(3));
    let cuts = [
        0,
        7,
        100,
        4096,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 31,
        s.len() / 2,
        s.len() - 33,
        s.len() - 1,
    ];
    for cut in cuts {
        let e = read_all(&s[..cut], false).unwrap_err();
        assert_eq!(e.exit_code(), 5, "cut at {cut}: {e}");
    }
    let mut longer = s.clone();
    longer.push(0);
    assert_eq!(read_all(&longer, false).unwrap_err().exit_code(), 5);
}

#[test]
fn every_changed_byte_is_detected_without_the_key() {
    let s = make(&header(true, true, (3 * CHUNK) as u64), &sample(3));
    // Every byte of a stream this small, one at a time.
    for i in (0..s.len()).step_by(7).chain([s.len() - 1]) {
        let mut bad = s.clone();
        bad[i] ^= 0x10;
        assert!(read_all(&bad, false).is_err(), "byte {i} changed unnoticed");
    }
}

#[test]
fn reordered_or_dropped_frames_are_detected() {
    let chunks = sample(3);
    let s = make(&header(false, false, (3 * CHUNK) as u64), &chunks);
    let frame_len = FRAME_HEADER_LEN + CHUNK + FRAME_HASH_LEN;
    let f = |i: usize| HEADER_LEN + i * frame_len..HEADER_LEN + (i + 1) * frame_len;
    let mut swapped = s[..HEADER_LEN].to_vec();
    swapped.extend_from_slice(&s[f(1)]);
    swapped.extend_from_slice(&s[f(0)]);
    swapped.extend_from_slice(&s[f(2).start..]);
    let e = read_all(&swapped, false).unwrap_err();
    assert!(e.to_string().contains("out of order"), "{e}");
    let mut dropped = s[..HEADER_LEN].to_vec();
    dropped.extend_from_slice(&s[f(1).start..]);
    assert_eq!(read_all(&dropped, false).unwrap_err().exit_code(), 5);
}

#[test]
fn a_forged_stream_with_fixed_checksums_fails_the_mac() {
    // Rebuild the stream with other data but the same header: every keyless
    // check passes, the MAC (keyed from another key) does not.
    let h = header(false, false, CHUNK as u64);
    let s = make(&h, &sample(1));
    let other =
        crate::crypto::VolumeKey::from_bytes(crate::crypto::Cipher::Aes256Xts, &[9; 64]).unwrap();
    let mut w =
        StreamWriter::start(Vec::new(), "forged", &h, Some(&other.stream_mac_key())).unwrap();
    let data = vec![0xee; CHUNK];
    let framer = StreamFramer {
        compress: None,
        sparse: false,
        chunk_size: CHUNK,
    };
    let f = framer.frame(0, 0, &data, false, None).unwrap();
    w.write_frame(&f.header, &data, &f.hash).unwrap();
    let (forged, _) = w
        .finish(CHUNK as u64, Some([0x42; 32].into()), &h.emd, None)
        .unwrap();
    assert_ne!(forged, s);
    assert!(read_all(&forged, false).is_ok(), "keyless checks pass");
    let e = read_all(&forged, true).unwrap_err();
    assert!(e.to_string().contains("MAC"), "{e}");
}

/// The EMD clone of the worked example: `formats/EMD.md`'s volume as a
/// fresh clone with a 64 KiB data area, no provenance yet, signed.
fn example_clone() -> crate::emd::Emd {
    let mut e = example();
    e.data_size = CHUNK as u64;
    e.data_len = CHUNK as u64;
    e.data_version = 1;
    e.provenance = None;
    crate::ops::trust::seal(&mut e, &example_key(), Some(&example_signer()));
    e
}

/// The worked example: one zero chunk of 64 KiB in a sparse stream, signed
/// by `backup.cron`, with the final EMD's provenance filled in.
fn worked_example() -> Vec<u8> {
    use crate::emd::{Origin, Provenance, Timestamp};
    let key = example_key();
    let signer = example_signer();
    let h = Header {
        emd: example_clone(),
        ..header(true, false, CHUNK as u64)
    };
    let framer = StreamFramer {
        compress: None,
        sparse: true,
        chunk_size: CHUNK,
    };
    let zeros = vec![0u8; CHUNK];
    let f = framer.frame(0, 0, &zeros, true, None).unwrap();
    let mut w =
        StreamWriter::start(Vec::new(), "example", &h, Some(&key.stream_mac_key())).unwrap();
    w.write_frame(&f.header, &[], &f.hash).unwrap();
    let digest = blake3::hash(&zeros);
    let mut fin = h.emd.clone();
    fin.provenance = Some(Provenance {
        origin: Origin::Volume {
            uuid: [0x11; 16],
            data_version: 5,
        },
        started: Timestamp {
            secs: 1_795_000_100,
            nanos: 250_000_000,
        },
        finished: Timestamp {
            secs: 1_795_000_160,
            nanos: 0,
        },
        bytes: CHUNK as u64,
        plaintext_blake3: Some(*digest.as_bytes()),
        data_version: 1,
    });
    crate::ops::trust::seal(&mut fin, &key, Some(&signer));
    let sign = |m: &[u8]| signer.sign(m);
    let (out, _) = w
        .finish(CHUNK as u64, Some(digest), &fin, Some(&sign))
        .unwrap();
    out
}

#[test]
fn the_worked_example_in_formats_stream_md_reads_back() {
    expect_listing("formats/STREAM.md", 0, &worked_example());
    let listing = listing("formats/STREAM.md", 0);
    let bytes = unhexdump(&listing);
    let mut r = StreamReader::open(&bytes[..], "example").unwrap();
    r.set_mac_key(&example_key().stream_mac_key());
    assert!(r.header.sparse && !r.header.compressed && !r.header.raw);
    assert_eq!(r.header.chunk_size, 64 << 10);
    assert_eq!(r.header.emd.data_size, 64 << 10, "the clone's data area");
    assert!(r.header.emd.provenance.is_none(), "a fresh clone");
    assert!(r.header.emd.mac_ok(&example_key()));
    assert_eq!(r.header.emd.signature_valid(), Some(true));
    match r.next_item().unwrap() {
        Item::Frame(f, payload, _) => {
            assert_eq!(f.kind, FrameKind::Zero);
            assert_eq!((f.index, f.offset, f.plain_len), (0, 0, 65536));
            assert!(payload.is_empty());
        }
        Item::End(_) => panic!("the example has a frame"),
    }
    let zeros = blake3::hash(&[0u8; 65536]);
    match r.next_item().unwrap() {
        Item::End(t) => {
            assert_eq!((t.frames, t.bytes), (1, 65536));
            assert_eq!(t.plaintext_blake3, Some(*zeros.as_bytes()));
            let p = t
                .emd
                .provenance
                .as_ref()
                .expect("the final EMD's provenance");
            assert_eq!(p.plaintext_blake3, t.plaintext_blake3);
            assert!(t.emd.mac_ok(&example_key()));
            assert_eq!(t.emd.signature_valid(), Some(true));
            let sig = t.signature.as_ref().expect("signed");
            assert_eq!(sig.id.as_str(), "backup.cron");
            assert_eq!(sig.public, example_signer().public());
            assert!(sig.valid(&crate::signature::stream_message(&t.checksum)));
        }
        Item::Frame(..) => panic!("one frame only"),
    }
}

/// Found by the `stream` fuzz target: `ciphertext()` of a zero marker
/// without the key panicked (its plaintext needs no key, so the key check
/// was skipped). Restore asks for the key of a sparse stream first, but the
/// decoder must not rely on its callers for that.
#[test]
fn a_zero_marker_without_the_key_is_an_access_error_not_a_panic() {
    let h = header(true, false, (3 * CHUNK) as u64);
    let s = make(&h, &sample(3));
    let mut r = StreamReader::open(&s[..], "s").unwrap();
    let mut d = super::decode::FrameDecoder::new(&h, None);
    let mut zeros = 0;
    while let Item::Frame(f, payload, fh) = r.next_item().unwrap() {
        if f.kind == FrameKind::Zero {
            zeros += 1;
            let e = crate::error::expect_err(d.ciphertext(&f, payload, &fh).map(|_| ()));
            assert_eq!(e.exit_code(), 4, "{e}");
        } else {
            assert_eq!(d.ciphertext(&f, payload, &fh).unwrap(), payload);
        }
    }
    assert_eq!(zeros, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..40_000)) {
        let _ = read_all(&bytes, false);
    }

    #[test]
    fn flipped_bits_anywhere_are_errors_not_panics(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let s = make(&header(true, false, (2 * CHUNK) as u64), &sample(2));
        let mut bad = s.clone();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(read_all(&bad, false).is_err());
    }

    #[test]
    fn absurd_lengths_in_a_valid_header_are_refused(payload_len in any::<u32>(), plain_len in any::<u32>()) {
        let h = header(false, false, CHUNK as u64);
        let f = FrameHeader { kind: FrameKind::Data, index: 0, offset: 0, plain_len, payload_len };
        let ok = FrameHeader::parse(&f.encode(), &h).is_ok();
        prop_assert_eq!(ok, payload_len == plain_len && plain_len > 0 && plain_len as usize <= CHUNK);
    }
}
