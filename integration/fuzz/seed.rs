//! Valid inputs the fuzz targets mutate, and the fix-ups that let mutated
//! bytes past the checksums to the checks behind them.
#![allow(dead_code)]

use evfs::crypto::wrap::WRAPPED_LEN;
use evfs::crypto::{Cipher, VolumeKey};
use evfs::emd::format::EMD_SIZE;
use evfs::emd::{Checkpoint, Emd, Origin, Provenance, Role, Slot, State, Task, Timestamp};
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
        version: evfs::emd::format::VERSION,
        generation: 3,
        dirty: true,
        checkpoint: Some(Checkpoint {
            task: Task::Backup,
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
        data_len: (4 << 20) - 100,
        data_version: 3,
        clone_of: Some([0x11; 16]),
        label: "fuzz".to_string(),
        provenance: Some(Provenance {
            origin: Origin::Volume {
                uuid: [0x11; 16],
                data_version: 7,
            },
            started: Timestamp { secs: 1, nanos: 2 },
            finished: Timestamp { secs: 3, nanos: 4 },
            bytes: (4 << 20) - 100,
            plaintext_blake3: Some([0xab; 32]),
            data_version: 3,
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
        signature: None,
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
    use evfs::stream::format::{Header, StreamMode, VERSION};
    use evfs::stream::writer::{Payload, StreamFramer, StreamWriter};

    const CHUNK: usize = 64 << 10;
    let key = key();
    let mut emd = emd();
    emd.checkpoint = None;
    emd.dirty = false;
    let lens = [CHUNK, CHUNK, CHUNK, 8192];
    let total: usize = lens.iter().sum();
    let h = Header {
        version: VERSION,
        mode: StreamMode::Reencrypt,
        raw: false,
        compressed: false,
        sparse: true,
        chunk_size: CHUNK as u32,
        stream_id: [0x5e; 16],
        expected: Some(total as u64),
        source_uuid: [0x11; 16],
        source_data_version: 7,
        emd: emd.clone(),
        base: None,
        indexed: false,
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
        let f = framer
            .frame(i as u64, offset, &data, zero, None)
            .expect("framing");
        let payload = match f.payload {
            Payload::Data => &data[..],
            _ => &[][..],
        };
        w.write_frame(&f.header, payload, &f.hash)
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
        fix_emd_checksum(&mut b[HEADER_LEN - 32 - EMD_SIZE..]);
        let sum = blake3::hash(&b[..HEADER_LEN - 32]);
        b[HEADER_LEN - 32..HEADER_LEN].copy_from_slice(sum.as_bytes());
    }
}

/// The JSON of the LUKS2 seed: the header of formats/LUKS.md's worked
/// example with a token and a config flag added, and a keyslots area
/// shrunk to 256 KiB so that the whole image stays small.
pub const LUKS2_JSON: &str = concat!(
    r#"{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"#,
    r#""area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},"#,
    r#""kdf":{"type":"argon2id","time":4,"memory":1024,"cpus":1,"salt":"EfGGJn88a5Wnevw31g+Ano8q5uPAWH0NAlCxb2lb9Tw="}}},"#,
    r#""tokens":{"0":{"type":"evfs-provenance","keyslots":["0"],"n":1}},"#,
    r#""segments":{"0":{"type":"crypt","offset":"294912","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},"#,
    r#""digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256","iterations":1000,"#,
    r#""salt":"jY061cswheWzkGNWLQxDgXUArA4vB3ANIegrekT/CRs=","digest":"K6nVXBNmZ5bpPibG/7WLST7sIKEyAA5dsacYxyQgp0Q="}},"#,
    r#""config":{"json_size":"12288","keyslots_size":"262144","flags":["allow-discards"]}}"#
);

/// Bytes of one LUKS2 metadata copy in the seed.
pub const LUKS2_MD: usize = 16384;

/// A valid LUKS2 image: both copies of [`LUKS2_JSON`] (seqid 3), a zero
/// keyslots area and one data sector.
pub fn luks2_bytes() -> Vec<u8> {
    use evfs::luks::luks2::BinHeader;
    let mut img = vec![0u8; 294912 + 4096];
    for (i, secondary) in [false, true].into_iter().enumerate() {
        let bin = BinHeader {
            secondary,
            hdr_size: LUKS2_MD as u64,
            seqid: 3,
            label: b"fuzz".to_vec(),
            checksum_alg: "sha256".into(),
            salt: [0x5a + i as u8; 64],
            uuid: b"3e9a6c51-0d7b-4f28-9e14-62a0c583d71f".to_vec(),
            subsystem: Vec::new(),
            hdr_offset: (i * LUKS2_MD) as u64,
        };
        let at = i * LUKS2_MD;
        img[at..at + 4096].copy_from_slice(&bin.encode()[..]);
        img[at + 4096..at + 4096 + LUKS2_JSON.len()].copy_from_slice(LUKS2_JSON.as_bytes());
    }
    fix_luks2_checksums(&mut img);
    img
}

/// Recompute the SHA-256 checksums of both LUKS2 copies of the seed layout.
pub fn fix_luks2_checksums(b: &mut [u8]) {
    for at in [0, LUKS2_MD] {
        if b.len() < at + LUKS2_MD {
            return;
        }
        b[at + 448..at + 512].fill(0);
        let (bin, area) = b[at..at + LUKS2_MD].split_at(4096);
        let sum = evfs::luks::luks2::checksum("sha256", bin, area).expect("sha256 is supported");
        b[at + 448..at + 448 + 32].copy_from_slice(&sum);
    }
}

/// A valid LUKS1 phdr (aes-xts-plain64, sha256, a 32-byte key, keyslot 0
/// enabled) followed by zeros up to its payload offset.
pub fn luks1_bytes() -> Vec<u8> {
    let mut b = vec![0u8; 2056 * 512];
    b[..6].copy_from_slice(b"LUKS\xba\xbe");
    b[6..8].copy_from_slice(&1u16.to_be_bytes());
    b[8..11].copy_from_slice(b"aes");
    b[40..51].copy_from_slice(b"xts-plain64");
    b[72..78].copy_from_slice(b"sha256");
    b[104..108].copy_from_slice(&2056u32.to_be_bytes());
    b[108..112].copy_from_slice(&32u32.to_be_bytes());
    b[112..164].fill(0x3c);
    b[164..168].copy_from_slice(&1000u32.to_be_bytes());
    b[168..204].copy_from_slice(b"0a7c5e2e-6f3b-4d1a-9c4e-2b8d7f6a1e03");
    for i in 0..8usize {
        let at = 208 + 48 * i;
        let active: u32 = if i == 0 { 0x00AC_71F3 } else { 0x0000_DEAD };
        b[at..at + 4].copy_from_slice(&active.to_be_bytes());
        b[at + 4..at + 8].copy_from_slice(&1000u32.to_be_bytes());
        b[at + 8..at + 40].fill(0x11 * i as u8);
        b[at + 40..at + 44].copy_from_slice(&(8 + 256 * i as u32).to_be_bytes());
        b[at + 44..at + 48].copy_from_slice(&4000u32.to_be_bytes());
    }
    b
}
