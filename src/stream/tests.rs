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
        indexed: false,
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
            Item::Index(_) => {}
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

/// The chunk of the worked example: 1 MiB, the size of a chunk index's
/// chunks (an indexed stream's chunk size).
const ONE: usize = 1 << 20;

/// The EMD clone of the worked example: `formats/EMD.md`'s volume as a
/// fresh clone with a 1 MiB data area, no provenance yet, signed.
fn example_clone() -> crate::emd::Emd {
    let mut e = example();
    e.data_size = ONE as u64;
    e.data_len = ONE as u64;
    e.data_version = 1;
    e.provenance = None;
    crate::ops::trust::seal(&mut e, &example_key(), Some(&example_signer()));
    e
}

/// The source volume of the worked example (`11 11 …`): its volume key is
/// `40 41 … 7f`.
fn example_source_key() -> crate::crypto::VolumeKey {
    let k: Vec<u8> = (0x40..0x80).collect();
    crate::crypto::VolumeKey::from_bytes(crate::crypto::Cipher::Aes256Xts, &k).unwrap()
}

/// The sealed chunk index of the worked example: one chunk of zeros, its
/// tag taken of the source's ciphertext of zeros, sealed with the nonce
/// `c0 c1 … d7`.
fn example_index(state_id: [u8; 16], uuid: &[u8; 16]) -> Vec<u8> {
    use crate::index::{ChunkIndex, Entry, SourceKind, Tagger};
    let src_key = example_source_key();
    let tagger = Tagger::new(
        &example_key(),
        SourceKind::Encrypted {
            uuid: &[0x11; 16],
            sector_size: 4096,
            key: &src_key,
        },
    );
    let mut source_bytes = vec![0u8; ONE];
    src_key.xts().encrypt_sectors(&mut source_bytes, 4096, 0);
    let zeros = vec![0u8; ONE];
    let index = ChunkIndex {
        data_len: ONE as u64,
        data_version: 1,
        sector_size: 4096,
        state_id,
        source: tagger.source_id(),
        root0: *blake3::hash(&zeros).as_bytes(),
        entries: vec![Entry {
            tag: tagger.tag(0, ONE as u64, &source_bytes),
            cv: crate::pipeline::digest::hash_chunk(0, &zeros).cv,
        }],
    };
    let nonce: [u8; 24] = std::array::from_fn(|i| 0xc0 + i as u8);
    index.seal_with_nonce(&example_key(), uuid, &nonce)
}

/// The worked example: one zero chunk of 1 MiB in a sparse, indexed
/// stream, signed by `backup.cron`, with the final EMD's provenance, state
/// ID and chunk index filled in.
fn worked_example() -> Vec<u8> {
    use crate::emd::{IndexRef, Origin, Provenance, Timestamp};
    let key = example_key();
    let signer = example_signer();
    let h = Header {
        emd: example_clone(),
        chunk_size: ONE as u32,
        indexed: true,
        ..header(true, false, ONE as u64)
    };
    let framer = StreamFramer {
        compress: None,
        sparse: true,
        chunk_size: ONE,
    };
    let zeros = vec![0u8; ONE];
    let f = framer.frame(0, 0, &zeros, true, None).unwrap();
    let mut w =
        StreamWriter::start(Vec::new(), "example", &h, Some(&key.stream_mac_key())).unwrap();
    w.write_frame(&f.header, &[], &f.hash).unwrap();
    let sealed = example_index(h.stream_id, &h.emd.uuid);
    w.write_index(&sealed).unwrap();
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
        bytes: ONE as u64,
        plaintext_blake3: Some(*digest.as_bytes()),
        data_version: 1,
    });
    fin.state_id = Some(h.stream_id);
    fin.index = Some(IndexRef {
        len: sealed.len() as u64,
        blake3: *blake3::hash(&sealed).as_bytes(),
    });
    crate::ops::trust::seal(&mut fin, &key, Some(&signer));
    let sign = |m: &[u8]| signer.sign(m);
    let (out, _) = w
        .finish(ONE as u64, Some(digest), &fin, Some(&sign))
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
    assert!(r.header.indexed && r.header.version == 3);
    assert_eq!(r.header.chunk_size, 1 << 20);
    assert_eq!(r.header.emd.data_size, 1 << 20, "the clone's data area");
    assert!(r.header.emd.provenance.is_none(), "a fresh clone");
    assert!(r.header.emd.mac_ok(&example_key()));
    assert_eq!(r.header.emd.signature_valid(), Some(true));
    match r.next_item().unwrap() {
        Item::Frame(f, payload, _) => {
            assert_eq!(f.kind, FrameKind::Zero);
            assert_eq!((f.index, f.offset, f.plain_len), (0, 0, 1 << 20));
            assert!(payload.is_empty());
        }
        _ => panic!("the example has a frame first"),
    }
    let zeros = blake3::hash(&[0u8; 1 << 20]);
    let sealed = match r.next_item().unwrap() {
        Item::Index(b) => b.to_vec(),
        _ => panic!("the chunk index follows the frame"),
    };
    let ix = crate::index::ChunkIndex::open(&sealed, &example_key(), &r.header.emd.uuid).unwrap();
    assert_eq!(ix.state_id, [0x5e; 16], "the stream ID");
    assert_eq!(ix.root0, *zeros.as_bytes());
    assert_eq!(ix.entries.len(), 1);
    match r.next_item().unwrap() {
        Item::End(t) => {
            assert_eq!((t.frames, t.bytes), (1, 1 << 20));
            assert_eq!(t.plaintext_blake3, Some(*zeros.as_bytes()));
            let p = t
                .emd
                .provenance
                .as_ref()
                .expect("the final EMD's provenance");
            assert_eq!(p.plaintext_blake3, t.plaintext_blake3);
            assert_eq!(t.emd.state_id, Some([0x5e; 16]));
            let r = t.emd.index.expect("the final EMD names the index");
            assert_eq!(
                (r.len, r.blake3),
                (sealed.len() as u64, *blake3::hash(&sealed).as_bytes())
            );
            assert!(t.emd.mac_ok(&example_key()));
            assert_eq!(t.emd.signature_valid(), Some(true));
            let sig = t.signature.as_ref().expect("signed");
            assert_eq!(sig.id.as_str(), "backup.cron");
            assert_eq!(sig.public, example_signer().public());
            assert!(sig.valid(&crate::signature::stream_message(&t.checksum)));
        }
        _ => panic!("the trailer ends the example"),
    }
}

/// A raw stream carries the index its source's EMD names, of a length that
/// fits the index area of its data: a forged length is refused with the
/// header, before any length arithmetic.
#[test]
fn a_raw_streams_index_length_is_bounded_by_its_data_size() {
    use crate::emd::IndexRef;
    let mut emd = example_clone();
    let h = |len: u64, emd: &mut crate::emd::Emd| {
        emd.index = Some(IndexRef {
            len,
            blake3: [7; 32],
        });
        Header {
            raw: true,
            mode: StreamMode::Raw,
            indexed: true,
            emd: emd.clone(),
            ..header(false, false, ONE as u64)
        }
    };
    let fits = crate::index::area_len(emd.data_size);
    assert!(Header::parse(&h(fits, &mut emd).encode()).is_ok());
    for len in [fits + 1, u64::MAX - 40, u64::MAX] {
        assert!(Header::parse(&h(len, &mut emd).encode()).is_err(), "{len}");
    }
}

/// An indexed stream (flag 16) carries the index section after its last
/// frame, and the final EMD names it: every way of getting that wrong is
/// refused, with a key and without.
#[test]
fn an_indexed_stream_carries_exactly_the_index_its_final_emd_names() {
    use crate::emd::IndexRef;
    let key = example_key();
    let h = Header {
        emd: example_clone(),
        chunk_size: ONE as u32,
        indexed: true,
        ..header(false, false, ONE as u64)
    };
    let sealed = example_index(h.stream_id, &h.emd.uuid);
    let framer = StreamFramer {
        compress: None,
        sparse: false,
        chunk_size: ONE,
    };
    let data: Vec<u8> = (0..ONE).map(|i| (i % 253) as u8).collect();
    let f = framer.frame(0, 0, &data, false, None).unwrap();
    // index: what the index section holds (None: no section); name: what
    // the final EMD names; frame_after: a frame follows the index.
    let build = |h: &Header, index: Option<&[u8]>, name: Option<&[u8]>, frame_after: bool| {
        let mut w = StreamWriter::start(Vec::new(), "t", h, Some(&key.stream_mac_key())).unwrap();
        if !frame_after {
            w.write_frame(&f.header, &data, &f.hash).unwrap();
        }
        if let Some(b) = index {
            w.write_index(b).unwrap();
        }
        if frame_after {
            w.write_frame(&f.header, &data, &f.hash).unwrap();
        }
        let mut fin = h.emd.clone();
        fin.index = name.map(|b| IndexRef {
            len: b.len() as u64,
            blake3: *blake3::hash(b).as_bytes(),
        });
        fin.seal(&key);
        w.finish(ONE as u64, Some([0x42; 32].into()), &fin, None)
            .unwrap()
            .0
    };
    let good = build(&h, Some(&sealed), Some(&sealed), false);
    assert_eq!(read_all(&good, true).unwrap(), 1);
    assert_eq!(read_all(&good, false).unwrap(), 1);
    let mut other = sealed.clone();
    other[100] ^= 1;
    let short = &sealed[..sealed.len() - 64];
    let unindexed = Header {
        indexed: false,
        ..h.clone()
    };
    let bad: [(&str, Vec<u8>); 6] = [
        ("lacks", build(&h, None, None, false)),
        ("does not name", build(&h, Some(&sealed), None, false)),
        (
            "does not name",
            build(&h, Some(&sealed), Some(&other), false),
        ),
        (
            "announces none",
            build(&unindexed, Some(&sealed), Some(&sealed), false),
        ),
        ("needs", build(&h, Some(short), Some(short), false)),
        (
            "other than the trailer",
            build(&h, Some(&sealed), Some(&sealed), true),
        ),
    ];
    for (why, s) in bad {
        for with_key in [false, true] {
            let e = read_all(&s, with_key).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
            assert_eq!(e.exit_code(), 5, "{e}");
        }
    }
    // A byte of the section changed: its BLAKE3 says so.
    let at = good.len() - TRAILER_LEN - 32 - 10;
    let mut flipped = good.clone();
    flipped[at] ^= 1;
    let e = read_all(&flipped, false).unwrap_err();
    assert!(e.to_string().contains("chunk index"), "{e}");
    // Flag 16 needs version 3, a known length and 1 MiB chunks.
    for h2 in [
        Header {
            version: 2,
            ..h.clone()
        },
        Header {
            expected: None,
            ..h.clone()
        },
        Header {
            chunk_size: CHUNK as u32,
            ..h.clone()
        },
    ] {
        assert!(Header::parse(&h2.encode()).is_err());
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
