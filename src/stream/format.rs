//! The byte layout of a backup stream (`formats/STREAM.md`): header, frames,
//! trailer, each with its parser and writer side by side.
//!
//! Integrity without a key: the header and every frame carry a BLAKE3; the
//! trailer carries a BLAKE3 of the stream's *manifest* (the header, every
//! frame's BLAKE3 in order, and the trailer itself), so a changed, missing,
//! duplicated or reordered byte anywhere is found. With the key: a MAC over
//! the same manifest, keyed from the target volume key.

use crate::emd::{EMD_SIZE, Emd, EmdError};
use crate::le::{array, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at, zero};
use crate::signature::{self, Signature};

use super::MAGIC;

/// The format version this code writes. It reads every version from 1 up.
pub const VERSION: u16 = 3;
/// Bytes of the header's fixed part before the EMD, by version.
const fn fixed_len(version: u16) -> usize {
    if version == 1 { 64 } else { 128 }
}
/// Bytes of a version-1 header.
pub const HEADER_LEN_V1: usize = 64 + EMD_SIZE + 32;
/// Bytes of the header this code writes.
pub const HEADER_LEN: usize = fixed_len(VERSION) + EMD_SIZE + 32;
/// Bytes of the header of a stream of `version`.
pub const fn header_len(version: u16) -> usize {
    fixed_len(version) + EMD_SIZE + 32
}
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 32;
/// Bytes of a frame's trailing BLAKE3.
pub const FRAME_HASH_LEN: usize = 32;
/// First bytes of a frame.
pub const FRAME_MAGIC: &[u8; 4] = b"EVFR";
/// First bytes of the trailer.
pub const TRAILER_MAGIC: &[u8; 8] = b"EVFS-END";
/// Bytes of a version-1 trailer (no signature block).
pub const TRAILER_LEN_V1: usize = 64 + EMD_SIZE + 32 + 32;
/// Bytes of the trailer this code writes: version 1's, then the signature
/// block (`formats/SIGNATURE.md`).
pub const TRAILER_LEN: usize = TRAILER_LEN_V1 + signature::BLOCK_LEN;
/// Bytes of the trailer of a stream of `version`.
pub const fn trailer_len(version: u16) -> usize {
    if version == 1 {
        TRAILER_LEN_V1
    } else {
        TRAILER_LEN
    }
}
/// Largest chunk size a reader accepts (and so the largest frame it allocates for).
pub const MAX_CHUNK: u32 = 16 << 20;
/// Smallest chunk size a reader accepts.
pub const MIN_CHUNK: u32 = 64 << 10;
/// The AEAD tag at the end of a compressed frame's payload.
pub const TAG_LEN: usize = 16;

const FLAG_RAW: u16 = 1;
const FLAG_COMPRESSED: u16 = 2;
const FLAG_SPARSE: u16 = 4;
/// Flag 8: an incremental stream, whose frames carry only the chunks that
/// changed since the state it names (version 2).
pub const FLAG_INCREMENTAL: u16 = 8;
/// Flag 16: the stream carries the chunk index of its data in an index
/// section after the last frame (version 3).
pub const FLAG_INDEXED: u16 = 16;
/// First bytes of the index section.
pub const INDEX_MAGIC: &[u8; 8] = b"EVFS-IDX";
/// Bytes of the index section's header (magic, length, reserved).
pub const INDEX_HEADER_LEN: usize = 32;

/// Why bytes are not a valid stream part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The bytes do not start with the part's magic.
    NoMagic,
    /// A version newer than this build reads.
    Newer(u16),
    /// Version 0: never written by any evfs.
    Version(u16),
    /// The checksum does not match: damaged or truncated.
    Checksum,
    /// A field out of its allowed range, with the field's name.
    Field(&'static str),
    /// The EMD the part carries is invalid.
    Emd(EmdError),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::NoMagic => write!(f, "no magic"),
            StreamError::Newer(v) => write!(
                f,
                "stream format version {v} is a newer format than this evfs reads (versions 1 to {VERSION}): upgrade evfs"
            ),
            StreamError::Version(v) => write!(f, "stream format version {v} does not exist"),
            StreamError::Checksum => write!(f, "checksum mismatch"),
            StreamError::Field(name) => write!(f, "invalid field {name}"),
            StreamError::Emd(e) => write!(f, "its EMD is invalid ({e})"),
        }
    }
}

/// How the backup that made a stream made its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMode {
    /// Decrypted with the source's key, encrypted with the target's.
    Reencrypt,
    /// Plain data encrypted into a new volume.
    Encrypt,
    /// The source's ciphertext as it lies (no key).
    Raw,
}

impl StreamMode {
    /// The mode's name as `verify` and `restore` report it.
    pub fn name(self) -> &'static str {
        match self {
            StreamMode::Reencrypt => "reencrypt",
            StreamMode::Encrypt => "encrypt",
            StreamMode::Raw => "raw",
        }
    }
}

/// The stream header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The layout version, which sets the header's length.
    pub version: u16,
    /// How the backup made its data: re-encrypted, encrypted, or raw.
    pub mode: StreamMode,
    /// Flag 1: the frames carry the source's ciphertext as it lies (mode raw).
    pub raw: bool,
    /// Flag 2: frames carry zstd-compressed plaintext sealed with an AEAD
    /// (`--compress`).
    pub compressed: bool,
    /// Flag 4: all-zero chunks are sent as zero markers (`--sparse`).
    pub sparse: bool,
    /// Bytes of data per frame: a power of two from [`MIN_CHUNK`] to
    /// [`MAX_CHUNK`], a multiple of the EMD's sector size.
    pub chunk_size: u32,
    /// A random ID of this stream (a compressed frame's AEAD key is bound to
    /// it).
    pub stream_id: [u8; 16],
    /// Data bytes the writer expected, `None` when it did not know (stdin).
    pub expected: Option<u64>,
    /// UUID of the backup's source volume (zero for a plain source).
    pub source_uuid: [u8; 16],
    /// The source volume's data version when the backup read it (version 2;
    /// zero in version 1): a restore onto that volume written since is a rollback.
    pub source_data_version: u64,
    /// The EMD clone the target gets before its data (the final one is in the trailer).
    pub emd: Emd,
    /// Flag 8: the state an incremental stream applies onto.
    pub base: Option<Base>,
    /// Flag 16: an index section after the last frame carries the chunk
    /// index of the data (version 3).
    pub indexed: bool,
}

/// The state an incremental stream was made from, and applies onto: a
/// volume of the header EMD's UUID whose EMD holds this state ID, data
/// version and plaintext digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base {
    /// The state ID (EMD bytes 440..456) of the base.
    pub state_id: [u8; 16],
    /// The base's data version.
    pub data_version: u64,
    /// The BLAKE3 of the base's plaintext.
    pub digest: [u8; 32],
}

impl Header {
    /// Bytes of this header.
    pub fn encoded_len(&self) -> usize {
        header_len(self.version)
    }

    /// The header's bytes, its checksum filled in ([`Header::encoded_len`] of
    /// them).
    pub fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let fixed = fixed_len(self.version);
        let mut b = vec![0u8; len];
        b[0..8].copy_from_slice(MAGIC);
        put_u16(&mut b, 8, self.version);
        let flags = (u16::from(self.raw) * FLAG_RAW)
            | (u16::from(self.compressed) * FLAG_COMPRESSED)
            | (u16::from(self.sparse) * FLAG_SPARSE)
            | (u16::from(self.base.is_some()) * FLAG_INCREMENTAL)
            | (u16::from(self.indexed) * FLAG_INDEXED);
        put_u16(&mut b, 10, flags);
        put_u32(&mut b, 12, self.chunk_size);
        b[16..32].copy_from_slice(&self.stream_id);
        put_u64(&mut b, 32, self.expected.unwrap_or(u64::MAX));
        b[40] = match self.mode {
            StreamMode::Reencrypt => 1,
            StreamMode::Encrypt => 2,
            StreamMode::Raw => 3,
        };
        b[48..64].copy_from_slice(&self.source_uuid);
        if self.version >= 2 {
            put_u64(&mut b, 64, self.source_data_version);
            if let Some(base) = &self.base {
                b[72..88].copy_from_slice(&base.state_id);
                put_u64(&mut b, 88, base.data_version);
                b[96..128].copy_from_slice(&base.digest);
            }
        }
        b[fixed..fixed + EMD_SIZE].copy_from_slice(&self.emd.encode()[..]);
        let sum = blake3::hash(&b[..len - 32]);
        b[len - 32..].copy_from_slice(sum.as_bytes());
        b
    }

    /// The version of the header `b` starts, once its first 10 bytes are
    /// there: it says how long the header is.
    pub fn version_of(b: &[u8]) -> Result<u16, StreamError> {
        if b.len() < 10 || &b[0..8] != MAGIC {
            return Err(StreamError::NoMagic);
        }
        match u16_at(b, 8) {
            0 => Err(StreamError::Version(0)),
            v if v > VERSION => Err(StreamError::Newer(v)),
            v => Ok(v),
        }
    }

    /// Parse and check a header (at least [`header_len`] bytes of its version);
    /// the EMD in it is parsed too.
    pub fn parse(b: &[u8]) -> Result<Header, StreamError> {
        let version = Self::version_of(b)?;
        let len = header_len(version);
        let fixed = fixed_len(version);
        if b.len() < len {
            return Err(StreamError::Field("header length"));
        }
        let b = &b[..len];
        if blake3::hash(&b[..len - 32]) != blake3::Hash::from(array::<32>(b, len - 32)) {
            return Err(StreamError::Checksum);
        }
        let flags = u16_at(b, 10);
        let known = FLAG_RAW | FLAG_COMPRESSED | FLAG_SPARSE | FLAG_INCREMENTAL | FLAG_INDEXED;
        if flags & !known != 0 {
            return Err(StreamError::Field("flags"));
        }
        let indexed = flags & FLAG_INDEXED != 0;
        if indexed && version < 3 {
            return Err(StreamError::Field("flags"));
        }
        let incremental = flags & FLAG_INCREMENTAL != 0;
        if incremental && (version < 2 || flags & FLAG_RAW != 0) {
            return Err(StreamError::Field("flags"));
        }
        let raw = flags & FLAG_RAW != 0;
        let compressed = flags & FLAG_COMPRESSED != 0;
        let sparse = flags & FLAG_SPARSE != 0;
        if raw && (compressed || sparse) {
            return Err(StreamError::Field("flags"));
        }
        let chunk_size = u32_at(b, 12);
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(StreamError::Field("chunk size"));
        }
        let base_end = if incremental { 128 } else { 72 };
        if !zero(b, 41..48) || !zero(b, base_end.min(fixed)..fixed) {
            return Err(StreamError::Field("reserved"));
        }
        let base = incremental.then(|| Base {
            state_id: array(b, 72),
            data_version: u64_at(b, 88),
            digest: array(b, 96),
        });
        let mode = match b[40] {
            1 => StreamMode::Reencrypt,
            2 => StreamMode::Encrypt,
            3 => StreamMode::Raw,
            _ => return Err(StreamError::Field("mode")),
        };
        if raw != (mode == StreamMode::Raw) {
            return Err(StreamError::Field("mode"));
        }
        let expected = match u64_at(b, 32) {
            u64::MAX => None,
            n => Some(n),
        };
        let emd = Emd::parse(&b[fixed..fixed + EMD_SIZE]).map_err(StreamError::Emd)?;
        if !chunk_size.is_multiple_of(emd.sector_size) {
            return Err(StreamError::Field("chunk size"));
        }
        if expected.is_some_and(|n| n > emd.data_size) {
            return Err(StreamError::Field("expected bytes"));
        }
        // An index describes chunks of its own size, of a known length; a
        // raw stream carries the index its source's EMD names.
        let fits = if raw {
            emd.index
                .is_some_and(|r| r.len <= crate::index::area_len(emd.data_size))
        } else {
            u64::from(chunk_size) == crate::index::CHUNK && expected.is_some()
        };
        if indexed && !fits {
            return Err(StreamError::Field("flags"));
        }
        Ok(Header {
            version,
            mode,
            raw,
            compressed,
            sparse,
            chunk_size,
            stream_id: array(b, 16),
            expected,
            source_uuid: array(b, 48),
            source_data_version: if version >= 2 { u64_at(b, 64) } else { 0 },
            emd,
            base,
            indexed,
        })
    }

    /// Bytes of the sealed chunk index an indexed stream carries: its
    /// length follows from the data bytes the header announces, or for a
    /// raw stream is the one its EMD (the source's) names.
    pub fn index_len(&self) -> Option<u64> {
        match (self.indexed, self.raw, self.expected) {
            (false, ..) => None,
            (true, true, _) => self.emd.index.map(|r| r.len),
            (true, false, n) => {
                n.map(|n| crate::index::sealed_len(n.div_ceil(crate::index::CHUNK)))
            }
        }
    }

    /// The largest payload a frame of this stream may carry.
    pub fn max_payload(&self) -> usize {
        max_payload(self.chunk_size as usize, self.compressed)
    }
}

/// The largest payload of a frame for chunks of `chunk` bytes.
pub fn max_payload(chunk: usize, compressed: bool) -> usize {
    if compressed {
        zstd::zstd_safe::compress_bound(chunk) + TAG_LEN
    } else {
        chunk
    }
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The target's XTS ciphertext of the chunk (or the raw ciphertext).
    Data,
    /// An all-zero plaintext chunk, sent as a marker without payload.
    Zero,
    /// zstd-compressed plaintext sealed with ChaCha20-Poly1305.
    Compressed,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Data => 1,
            FrameKind::Zero => 2,
            FrameKind::Compressed => 3,
        }
    }

    fn from_code(c: u8) -> Option<FrameKind> {
        match c {
            1 => Some(FrameKind::Data),
            2 => Some(FrameKind::Zero),
            3 => Some(FrameKind::Compressed),
            _ => None,
        }
    }
}

/// The fixed part of a frame, before its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame carries.
    pub kind: FrameKind,
    /// The frame's number, from 0, in order.
    pub index: u64,
    /// Offset of the chunk in the data area.
    pub offset: u64,
    /// Bytes of data the chunk covers.
    pub plain_len: u32,
    /// Bytes of payload that follow.
    pub payload_len: u32,
}

impl FrameHeader {
    /// The frame header's bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(FRAME_MAGIC);
        b[4] = self.kind.code();
        b[8..16].copy_from_slice(&self.index.to_le_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.plain_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Parse and check against the stream's limits; a hostile length is
    /// refused here, before anything is allocated for it.
    pub fn parse(b: &[u8; FRAME_HEADER_LEN], header: &Header) -> Result<FrameHeader, StreamError> {
        if &b[0..4] != FRAME_MAGIC {
            return Err(StreamError::NoMagic);
        }
        let kind = FrameKind::from_code(b[4]).ok_or(StreamError::Field("frame kind"))?;
        if b[5..8].iter().any(|&c| c != 0) {
            return Err(StreamError::Field("reserved"));
        }
        let f = FrameHeader {
            kind,
            index: u64_at(b, 8),
            offset: u64_at(b, 16),
            plain_len: u32_at(b, 24),
            payload_len: u32_at(b, 28),
        };
        let payload = f.payload_len as usize;
        let ok = match kind {
            FrameKind::Data => !header.compressed && payload == f.plain_len as usize,
            FrameKind::Zero => !header.raw && header.sparse && payload == 0,
            FrameKind::Compressed => {
                header.compressed && payload >= TAG_LEN && payload <= header.max_payload()
            }
        };
        if !ok || f.plain_len == 0 || f.plain_len > header.chunk_size {
            return Err(StreamError::Field("frame length"));
        }
        Ok(f)
    }
}

/// BLAKE3 of a frame: its header then its payload.
pub fn frame_hash(header: &[u8; FRAME_HEADER_LEN], payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(payload);
    *h.finalize().as_bytes()
}

/// The stream trailer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Frames in the stream.
    pub frames: u64,
    /// Bytes of plaintext data (the frames may cover up to one sector more).
    pub bytes: u64,
    /// BLAKE3 of the plaintext; `None` for a raw stream, which never saw it.
    pub plaintext_blake3: Option<[u8; 32]>,
    /// The target's final EMD: clean, with provenance, sealed with its key.
    pub emd: Emd,
    /// Keyed BLAKE3 of the manifest; `None` for a raw stream, made without a
    /// key.
    pub mac: Option<[u8; 32]>,
    /// BLAKE3 of the manifest and the MAC: covers every byte of the stream.
    pub checksum: [u8; 32],
    /// Who signed the checksum (version 2); `None`: unsigned.
    pub signature: Option<Signature>,
}

/// Bytes of the trailer that the MAC covers (everything before it).
pub const TRAILER_MAC_AT: usize = 64 + EMD_SIZE;

impl Trailer {
    /// Encode the part before the MAC.
    pub fn encode_body(
        frames: u64,
        bytes: u64,
        digest: Option<[u8; 32]>,
        emd: &Emd,
        has_mac: bool,
    ) -> Vec<u8> {
        let mut b = vec![0u8; TRAILER_MAC_AT];
        b[0..8].copy_from_slice(TRAILER_MAGIC);
        b[8..16].copy_from_slice(&frames.to_le_bytes());
        b[16..24].copy_from_slice(&bytes.to_le_bytes());
        b[24] = u8::from(digest.is_some()) | (u8::from(has_mac) << 1);
        if let Some(d) = digest {
            b[32..64].copy_from_slice(&d);
        }
        b[64..64 + EMD_SIZE].copy_from_slice(&emd.encode()[..]);
        b
    }

    /// Parse a whole trailer of a stream of `version`. The checksum, MAC
    /// and signature need the manifest and are checked by the reader.
    pub fn parse(b: &[u8], version: u16) -> Result<Trailer, StreamError> {
        if b.len() < trailer_len(version) || &b[0..8] != TRAILER_MAGIC {
            return Err(StreamError::NoMagic);
        }
        let flags = b[24];
        if flags & !3 != 0 || b[25..32].iter().any(|&c| c != 0) {
            return Err(StreamError::Field("trailer flags"));
        }
        let digest = array::<32>(b, 32);
        let plaintext_blake3 = if flags & 1 != 0 {
            Some(digest)
        } else if digest.iter().any(|&c| c != 0) {
            return Err(StreamError::Field("trailer digest"));
        } else {
            None
        };
        let mac = array::<32>(b, TRAILER_MAC_AT);
        let mac = if flags & 2 != 0 {
            Some(mac)
        } else if mac.iter().any(|&c| c != 0) {
            return Err(StreamError::Field("trailer MAC"));
        } else {
            None
        };
        Ok(Trailer {
            frames: u64_at(b, 8),
            bytes: u64_at(b, 16),
            plaintext_blake3,
            emd: Emd::parse(&b[64..64 + EMD_SIZE]).map_err(StreamError::Emd)?,
            mac,
            checksum: array::<32>(b, TRAILER_MAC_AT + 32),
            signature: if version == 1 {
                None
            } else {
                Signature::parse(&b[TRAILER_LEN_V1..TRAILER_LEN])
                    .map_err(|_| StreamError::Field("trailer signature"))?
            },
        })
    }
}

/// The header of the index section that carries `len` bytes of sealed
/// chunk index.
pub fn index_section_header(len: u64) -> [u8; INDEX_HEADER_LEN] {
    let mut b = [0u8; INDEX_HEADER_LEN];
    b[..8].copy_from_slice(INDEX_MAGIC);
    put_u64(&mut b, 8, len);
    b
}

/// The length an index section's header announces.
pub fn parse_index_section_header(b: &[u8; INDEX_HEADER_LEN]) -> Result<u64, StreamError> {
    if &b[..8] != INDEX_MAGIC {
        return Err(StreamError::NoMagic);
    }
    if !zero(b, 16..INDEX_HEADER_LEN) {
        return Err(StreamError::Field("reserved"));
    }
    Ok(u64_at(b, 8))
}

/// The nonce of a compressed frame: its index, little endian.
pub fn frame_nonce(index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_le_bytes());
    n
}
