//! Valid inputs the fuzz targets mutate, and the fix-ups that let mutated
//! bytes past the checksums to the checks behind them.
#![allow(dead_code)]

use evfs::crypto::wrap::WRAPPED_LEN;
use evfs::crypto::{Cipher, VolumeKey};
use evfs::emd::format::EMD_SIZE;
use evfs::emd::{Checkpoint, Emd, Provenance, Role, Slot, State, Timestamp};
use evfs::keys::KeyId;

/// A fixed volume key.
pub fn key() -> VolumeKey {
    let bytes: Vec<u8> = (0u8..64).collect();
    VolumeKey::from_bytes(Cipher::Aes256Xts, &bytes).expect("64 bytes")
}

/// The bytes of [`emd`] (made once per process).
pub fn emd_bytes() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| emd().encode().to_vec()).clone()
}

/// A valid, sealed EMD with every optional part present.
pub fn emd() -> Emd {
    let mut e = Emd {
        generation: 3,
        dirty: true,
        checkpoint: Some(Checkpoint {
            run_id: [9; 16],
            source_uuid: [0x11; 16],
            bytes_done: 1 << 20,
            total: 4 << 20,
            source_generation: 2,
        }),
        uuid: [0x6b; 16],
        created: 1_795_000_000,
        cipher: Cipher::Aes256Xts,
        state: State::Enabled,
        sector_size: 4096,
        data_offset: 1 << 20,
        data_size: 4 << 20,
        label: "fuzz".to_string(),
        provenance: Some(Provenance {
            source_uuid: [0x11; 16],
            started: Timestamp { secs: 1, nanos: 2 },
            finished: Timestamp { secs: 3, nanos: 4 },
            bytes: 4 << 20,
            plaintext_blake3: Some([0xab; 32]),
        }),
        slots: vec![
            Slot {
                role: Role::Owner,
                id: KeyId::parse("alice.k1").expect("valid ID"),
                public: [0xa1; 32],
                wrapped: [0xa2; WRAPPED_LEN],
            },
            Slot {
                role: Role::Recovery,
                id: KeyId::parse("evfs.r1").expect("valid ID"),
                public: [0xb1; 32],
                wrapped: [0xb2; WRAPPED_LEN],
            },
        ],
        mac: [0; 32],
    };
    e.seal(&key());
    e
}

/// Apply (offset: u16 little endian, value) triples, offsets wrapped to `b`.
pub fn patch(b: &mut [u8], patches: &[u8]) {
    if b.is_empty() {
        return;
    }
    for p in patches.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([p[0], p[1]]));
        let len = b.len();
        b[at % len] = p[2];
    }
}

/// Recompute the checksum at the end of an EMD copy at the start of `b`.
pub fn fix_emd_checksum(b: &mut [u8]) {
    if b.len() >= EMD_SIZE {
        let sum = blake3::hash(&b[..EMD_SIZE - 32]);
        b[EMD_SIZE - 32..EMD_SIZE].copy_from_slice(sum.as_bytes());
    }
}

/// A valid stream (sparse, with a MAC) of two full 64 KiB frames, a zero
/// marker and a short last frame (made once per process).
pub fn stream() -> Vec<u8> {
    static STREAM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    STREAM.get_or_init(make_stream).clone()
}

fn make_stream() -> Vec<u8> {
    use evfs::backup::decide::Mode;
    use evfs::pipeline::{ChunkOut, FrameInput, Framer, Sink};
    use evfs::stream::format::Header;
    use evfs::stream::writer::{StreamFramer, StreamWriter};

    const CHUNK: usize = 64 << 10;
    let key = key();
    let mut emd = emd();
    emd.checkpoint = None;
    emd.dirty = false;
    let lens = [CHUNK, CHUNK, CHUNK, 8192];
    let total: usize = lens.iter().sum();
    let h = Header {
        mode: Mode::Reencrypt,
        raw: false,
        compressed: false,
        sparse: true,
        chunk_size: CHUNK as u32,
        stream_id: [0x5e; 16],
        expected: Some(total as u64),
        source_uuid: [0x11; 16],
        emd: emd.clone(),
    };
    let framer = StreamFramer {
        compress: None,
        sparse: true,
        chunk_size: CHUNK,
    };
    let mut w = StreamWriter::start(Vec::new(), "seed", &h, Some(&key.stream_mac_key()))
        .expect("writing to memory");
    let mut offset = 0u64;
    for (i, len) in lens.iter().enumerate() {
        let data: Vec<u8> = if i == 2 {
            vec![0; *len]
        } else {
            (0..*len).map(|j| (j * 7 + i) as u8).collect()
        };
        let zero = i == 2;
        let frame = framer
            .frame(
                FrameInput {
                    index: i as u64,
                    offset,
                    data: &data,
                    zero,
                },
                None,
            )
            .expect("framing");
        w.put(&ChunkOut {
            index: i as u64,
            offset,
            data: &data,
            plain_len: data.len(),
            zero,
            frame: Some(&frame),
        })
        .expect("writing to memory");
        offset += *len as u64;
    }
    emd.seal(&key);
    let (out, _) = w
        .finish(offset, Some([0x42; 32].into()), &emd)
        .expect("writing to memory");
    out
}

/// Fix the checksums of the EMD inside a stream header and of the header.
pub fn fix_stream_header(b: &mut [u8]) {
    use evfs::stream::format::HEADER_LEN;
    if b.len() >= HEADER_LEN {
        fix_emd_checksum(&mut b[64..]);
        let sum = blake3::hash(&b[..HEADER_LEN - 32]);
        b[HEADER_LEN - 32..HEADER_LEN].copy_from_slice(sum.as_bytes());
    }
}
