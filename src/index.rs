//! The chunk index of a backup target: what a changed-only refresh needs to
//! know of the last backup into a volume, as bytes (`formats/INDEX.md`).
//!
//! Per chunk of [`CHUNK`] bytes of data: a keyed hash of the chunk as the
//! source held it (its ciphertext, or the plaintext of a plain source),
//! and the BLAKE3 chaining value of its plaintext, from which the digest of
//! the whole plaintext is recombined without decrypting unchanged chunks.
//! The index lies in an area of its own right after the data area; its
//! body is sealed with ChaCha20-Poly1305 under a key derived from the
//! volume key, so nothing derived from the plaintext lies in clear, and
//! the EMD records its length and BLAKE3 under the EMD's MAC and
//! signature, so an index of another backup cannot be put in its place.

use zeroize::Zeroizing;

use crate::crypto::VolumeKey;
use crate::le::{array, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at, zero};

/// Bytes of data each entry covers: a power of two, so that the chunks are
/// whole subtrees of BLAKE3's tree (the pipeline's chunk).
pub const CHUNK: u64 = 1 << 20;
/// Identifies an index area.
pub const MAGIC: &[u8; 8] = b"EVFSIDX1";
/// The index format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the clear header: magic, version, counts, nonce, AEAD tag.
pub const HEADER_LEN: usize = 64;
/// Bytes of the sealed body before the entries.
pub const BODY_FIXED: usize = 128;
/// Bytes of one entry: the source tag and the plaintext chaining value.
pub const ENTRY_LEN: usize = 64;

const KEY_CONTEXT: &str = "evfs 2026-11 chunk index key v1";
const TAG_CONTEXT: &str = "evfs 2026-11 chunk index tag v1";
const SOURCE_KEY_CONTEXT: &str = "evfs 2026-11 chunk index source key v1";

/// What the index knows of one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Keyed BLAKE3 of the chunk as read from the source (see [`Tagger`]).
    pub tag: [u8; 32],
    /// BLAKE3 chaining value of the chunk's plaintext, at its offset.
    pub cv: [u8; 32],
}

/// A chunk index, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkIndex {
    /// Bytes of data the index describes (the volume's data length).
    pub data_len: u64,
    /// The target's data version when the index was written: a later data
    /// write (through `map`) leaves the index stale.
    pub data_version: u64,
    /// The sector size of the target's data area.
    pub sector_size: u32,
    /// The state ID of the backup that wrote the index (EMD bytes
    /// 440..456), which the EMD it belongs to holds too.
    pub state_id: [u8; 16],
    /// Which source the tags were taken from (see [`Tagger::source_id`]).
    pub source: [u8; 32],
    /// The BLAKE3 of chunk 0 alone, which is the whole digest when the data
    /// is one chunk long; zeros when there is no data.
    pub root0: [u8; 32],
    /// One entry per chunk, `ceil(data_len / CHUNK)` of them.
    pub entries: Vec<Entry>,
}

/// Why an index area cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    /// Not an index area of a known version, or one whose fields disagree.
    #[error("not a chunk index ({0})")]
    Format(&'static str),
    /// Its seal does not open under this volume's key: changed, or made for
    /// another volume or key.
    #[error("the chunk index does not open with the volume key")]
    Seal,
}

/// Bytes of the area an index of a data area of `data_size` bytes needs
/// (whole 4 KiB blocks).
pub fn area_len(data_size: u64) -> u64 {
    sealed_len(data_size.div_ceil(CHUNK)).next_multiple_of(4096)
}

/// Bytes of a sealed index of `count` entries.
pub fn sealed_len(count: u64) -> u64 {
    (HEADER_LEN + BODY_FIXED) as u64 + count * ENTRY_LEN as u64
}

fn seal_key(key: &VolumeKey, uuid: &[u8; 16], nonce: &[u8; 24]) -> Zeroizing<[u8; 32]> {
    let mut material = Zeroizing::new(Vec::with_capacity(key.expose().len() + 40));
    material.extend_from_slice(key.expose());
    material.extend_from_slice(uuid);
    material.extend_from_slice(nonce);
    Zeroizing::new(blake3::derive_key(KEY_CONTEXT, &material))
}

impl ChunkIndex {
    /// The index as it lies in its area, sealed under `key` for the volume
    /// `uuid`.
    pub fn seal(&self, key: &VolumeKey, uuid: &[u8; 16]) -> crate::error::Result<Vec<u8>> {
        let nonce = crate::crypto::random_array::<24>()?;
        Ok(self.seal_with_nonce(key, uuid, &nonce))
    }

    /// [`ChunkIndex::seal`] with a given nonce (worked examples).
    pub(crate) fn seal_with_nonce(
        &self,
        key: &VolumeKey,
        uuid: &[u8; 16],
        nonce: &[u8; 24],
    ) -> Vec<u8> {
        let count = self.entries.len();
        let mut out = vec![0u8; sealed_len(count as u64) as usize];
        out[..8].copy_from_slice(MAGIC);
        put_u16(&mut out, 8, VERSION);
        put_u32(&mut out, 12, CHUNK as u32);
        put_u64(&mut out, 16, count as u64);
        out[24..48].copy_from_slice(nonce);
        let (head, body) = out.split_at_mut(HEADER_LEN);
        put_u64(body, 0, self.data_len);
        put_u64(body, 8, self.data_version);
        put_u32(body, 16, self.sector_size);
        body[32..64].copy_from_slice(&self.source);
        body[64..96].copy_from_slice(&self.root0);
        body[96..112].copy_from_slice(&self.state_id);
        for (i, e) in self.entries.iter().enumerate() {
            let at = BODY_FIXED + i * ENTRY_LEN;
            body[at..at + 32].copy_from_slice(&e.tag);
            body[at + 32..at + 64].copy_from_slice(&e.cv);
        }
        let k = seal_key(key, uuid, nonce);
        let tag = crate::crypto::seal(&k, &[0; 12], &head[..48], body);
        head[48..64].copy_from_slice(&tag);
        out
    }

    /// Open an index (exactly its [`sealed_len`] bytes) with the volume
    /// key of the volume `uuid`.
    pub fn open(area: &[u8], key: &VolumeKey, uuid: &[u8; 16]) -> Result<ChunkIndex, IndexError> {
        let count = Self::count(area)?;
        let len = sealed_len(count) as usize;
        if area.len() != len {
            return Err(IndexError::Format("its length is not that of its entries"));
        }
        let mut body = Zeroizing::new(area[HEADER_LEN..len].to_vec());
        let nonce: [u8; 24] = array(area, 24);
        let tag: [u8; 16] = array(area, 48);
        let k = seal_key(key, uuid, &nonce);
        if !crate::crypto::open(&k, &[0; 12], &area[..48], &mut body, &tag) {
            return Err(IndexError::Seal);
        }
        if !zero(&body, 20..32) || !zero(&body, 112..128) {
            return Err(IndexError::Format("reserved bytes are set"));
        }
        let data_len = u64_at(&body, 0);
        if data_len.div_ceil(CHUNK) != count {
            return Err(IndexError::Format(
                "its entries do not cover its data length",
            ));
        }
        let entries = (0..count as usize)
            .map(|i| {
                let at = BODY_FIXED + i * ENTRY_LEN;
                Entry {
                    tag: array(&body, at),
                    cv: array(&body, at + 32),
                }
            })
            .collect();
        Ok(ChunkIndex {
            data_len,
            data_version: u64_at(&body, 8),
            sector_size: u32_at(&body, 16),
            source: array(&body, 32),
            root0: array(&body, 64),
            state_id: array(&body, 96),
            entries,
        })
    }

    /// The number of entries the clear header of an area announces, after
    /// checking the magic, version and chunk size.
    pub fn count(area: &[u8]) -> Result<u64, IndexError> {
        if area.len() < HEADER_LEN + BODY_FIXED || &area[..8] != MAGIC {
            return Err(IndexError::Format("no index magic"));
        }
        if u16_at(area, 8) != VERSION || !zero(area, 10..12) {
            return Err(IndexError::Format("an unknown version"));
        }
        if u64::from(u32_at(area, 12)) != CHUNK {
            return Err(IndexError::Format("another chunk size"));
        }
        let count = u64_at(area, 16);
        match sealed_len_checked(count) {
            Some(len) if len <= area.len() as u64 => Ok(count),
            _ => Err(IndexError::Format("more entries than its area holds")),
        }
    }
}

fn sealed_len_checked(count: u64) -> Option<u64> {
    count
        .checked_mul(ENTRY_LEN as u64)?
        .checked_add((HEADER_LEN + BODY_FIXED) as u64)
}

/// Computes the tags of chunks for the index of one target volume: a
/// BLAKE3 keyed with a key derived from that volume's key, over the
/// source's identity, the chunk's place and its bytes as read.
#[derive(Clone)]
pub struct Tagger {
    key: Zeroizing<[u8; 32]>,
    source: [u8; 32],
}

impl Tagger {
    /// Tags for the target whose volume key is `target_key`, of chunks read
    /// from `source` (see [`Tagger::source_id`]).
    pub fn new(target_key: &VolumeKey, source: SourceKind) -> Tagger {
        let key = Zeroizing::new(blake3::derive_key(TAG_CONTEXT, target_key.expose()));
        let mut h = blake3::Hasher::new_keyed(&key);
        match source {
            SourceKind::Plain => {
                h.update(b"plain");
            }
            SourceKind::Encrypted {
                uuid,
                sector_size,
                key: sk,
            } => {
                // The source's key enters only through a one-way derivation:
                // one volume copied under two keys reads as two sources.
                let fp = Zeroizing::new(blake3::derive_key(SOURCE_KEY_CONTEXT, sk.expose()));
                h.update(b"encrypted");
                h.update(uuid);
                h.update(&sector_size.to_le_bytes());
                h.update(fp.as_ref());
            }
        }
        Tagger {
            source: *h.finalize().as_bytes(),
            key,
        }
    }

    /// The identity of the source the tags are taken from, as recorded in
    /// the index.
    pub fn source_id(&self) -> [u8; 32] {
        self.source
    }

    /// The tag of the chunk at data offset `offset` that holds `data_len`
    /// bytes of data, `bytes` as read (whole sectors of an encrypted
    /// source: its last one may hold padding, so the data length counts
    /// on its own).
    pub fn tag(&self, offset: u64, data_len: u64, bytes: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&self.source);
        h.update(&offset.to_le_bytes());
        h.update(&data_len.to_le_bytes());
        h.update(bytes);
        *h.finalize().as_bytes()
    }
}

/// What the chunks of a source are, for [`Tagger::new`].
pub enum SourceKind<'a> {
    /// Plain data: the tags are taken of the plaintext.
    Plain,
    /// An encrypted volume: the tags are taken of the ciphertext, which is
    /// the same for the same plaintext only under the same key.
    Encrypted {
        /// The source volume's UUID.
        uuid: &'a [u8; 16],
        /// The sector size its data is encrypted in.
        sector_size: u32,
        /// The source's volume key.
        key: &'a VolumeKey,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Cipher;

    fn key(byte: u8) -> VolumeKey {
        VolumeKey::from_bytes(Cipher::Aes256Xts, &[byte; 64]).unwrap()
    }

    fn sample(count: usize) -> ChunkIndex {
        ChunkIndex {
            data_len: (count as u64 - 1) * CHUNK + 12345,
            data_version: 7,
            sector_size: 4096,
            source: [3; 32],
            root0: [4; 32],
            state_id: [5; 16],
            entries: (0..count)
                .map(|i| Entry {
                    tag: [i as u8; 32],
                    cv: [i as u8 ^ 0xff; 32],
                })
                .collect(),
        }
    }

    #[test]
    fn a_sealed_index_opens_with_its_key_and_volume_only() {
        let idx = sample(3);
        let sealed = idx.seal(&key(1), &[9; 16]).unwrap();
        assert_eq!(sealed.len() as u64, sealed_len(3));
        assert!(sealed.len() as u64 <= area_len(3 * CHUNK));
        let area = sealed.clone();
        assert_eq!(ChunkIndex::open(&area, &key(1), &[9; 16]).unwrap(), idx);
        // Longer than its entries: not the index its EMD names.
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(ChunkIndex::open(&longer, &key(1), &[9; 16]).is_err());
        assert_eq!(
            ChunkIndex::open(&area, &key(2), &[9; 16]),
            Err(IndexError::Seal)
        );
        assert_eq!(
            ChunkIndex::open(&area, &key(1), &[8; 16]),
            Err(IndexError::Seal)
        );
        // Nothing of the entries lies in clear.
        assert!(
            !sealed
                .windows(32)
                .any(|w| w == [4u8; 32] || w == [0xfe; 32])
        );
        for at in [0, 9, 17, 30, 50, 70, sealed.len() - 1] {
            let mut bad = area.clone();
            bad[at] ^= 1;
            assert!(ChunkIndex::open(&bad, &key(1), &[9; 16]).is_err(), "{at}");
        }
    }

    #[test]
    fn a_header_announcing_more_than_its_area_is_refused_before_opening() {
        let mut sealed = sample(2).seal(&key(1), &[9; 16]).unwrap();
        put_u64(&mut sealed, 16, u64::MAX / 2);
        assert!(matches!(
            ChunkIndex::count(&sealed),
            Err(IndexError::Format(_))
        ));
        assert!(ChunkIndex::count(&sealed[..100]).is_err());
    }

    #[test]
    fn tags_depend_on_the_target_key_the_source_and_the_place() {
        let plain = Tagger::new(&key(1), SourceKind::Plain);
        let other_target = Tagger::new(&key(2), SourceKind::Plain);
        let sk = key(5);
        let enc = Tagger::new(
            &key(1),
            SourceKind::Encrypted {
                uuid: &[1; 16],
                sector_size: 4096,
                key: &sk,
            },
        );
        let sk2 = key(6);
        let enc2 = Tagger::new(
            &key(1),
            SourceKind::Encrypted {
                uuid: &[1; 16],
                sector_size: 4096,
                key: &sk2,
            },
        );
        let t = plain.tag(0, 4, b"data");
        assert_eq!(t, plain.tag(0, 4, b"data"));
        assert_ne!(t, plain.tag(CHUNK, 4, b"data"));
        assert_ne!(t, plain.tag(0, 4, b"datb"));
        // The same bytes read holding less data (padding after it).
        assert_ne!(t, plain.tag(0, 3, b"data"));
        assert_ne!(t, other_target.tag(0, 4, b"data"));
        assert_ne!(t, enc.tag(0, 4, b"data"));
        assert_ne!(enc.tag(0, 4, b"data"), enc2.tag(0, 4, b"data"));
        assert_ne!(enc.source_id(), enc2.source_id());
        assert_ne!(t, *blake3::hash(b"data").as_bytes());
    }

    /// The worked example of `formats/INDEX.md`: three chunks of a plain
    /// source (2 MiB + 100 bytes), the volume key `00 01 02 … 3f`, the UUID
    /// `a0 a1 … af` and the nonce `c0 c1 … d7`.
    fn example() -> (VolumeKey, [u8; 16], [u8; 24], Vec<u8>) {
        let key: Vec<u8> = (0..64).collect();
        let uuid: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
        let nonce: [u8; 24] = std::array::from_fn(|i| 0xc0 + i as u8);
        let data: Vec<u8> = (0..2 * CHUNK as usize + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        (
            VolumeKey::from_bytes(Cipher::Aes256Xts, &key).unwrap(),
            uuid,
            nonce,
            data,
        )
    }

    #[test]
    fn the_worked_example_in_formats_index_md_is_what_evfs_writes_and_reads() {
        use crate::testutil::{expect_listing, listing, unhexdump};
        use blake3::hazmat::HasherExt;
        let (vk, uuid, nonce, data) = example();
        let tagger = Tagger::new(&vk, SourceKind::Plain);
        // What the pipeline computes, chunk by chunk.
        let entries: Vec<Entry> = data
            .chunks(CHUNK as usize)
            .enumerate()
            .map(|(i, c)| {
                let offset = i as u64 * CHUNK;
                Entry {
                    tag: tagger.tag(offset, c.len() as u64, c),
                    cv: crate::pipeline::digest::hash_chunk(offset, c).cv,
                }
            })
            .collect();
        let index = ChunkIndex {
            data_len: data.len() as u64,
            data_version: 2,
            sector_size: 4096,
            source: tagger.source_id(),
            root0: *blake3::hash(&data[..CHUNK as usize]).as_bytes(),
            state_id: std::array::from_fn(|i| 0xe0 + i as u8),
            entries,
        };
        let sealed = index.seal_with_nonce(&vk, &uuid, &nonce);
        let doc = "formats/INDEX.md";
        let mut keys = blake3::derive_key(TAG_CONTEXT, vk.expose()).to_vec();
        let mut material = vk.expose().to_vec();
        material.extend_from_slice(&uuid);
        material.extend_from_slice(&nonce);
        keys.extend_from_slice(&blake3::derive_key(KEY_CONTEXT, &material));
        expect_listing(doc, 0, &keys);
        let mut body = sealed[HEADER_LEN..].to_vec();
        let key = seal_key(&vk, &uuid, &nonce);
        assert!(crate::crypto::open(
            &key,
            &[0; 12],
            &sealed[..48],
            &mut body,
            &array(&sealed, 48)
        ));
        expect_listing(doc, 1, &body);
        expect_listing(doc, 2, &sealed);

        // A reader that follows the document alone: the keys, the body,
        // and every field of it, from the listings and the rules there.
        let doc_keys = unhexdump(&listing(doc, 0));
        let doc_body = unhexdump(&listing(doc, 1));
        let doc_sealed = unhexdump(&listing(doc, 2));
        let tag_key: [u8; 32] = doc_keys[..32].try_into().unwrap();
        let seal: [u8; 32] = doc_keys[32..].try_into().unwrap();
        let mut opened = doc_sealed[64..].to_vec();
        let tag: [u8; 16] = doc_sealed[48..64].try_into().unwrap();
        assert!(crate::crypto::open(
            &seal,
            &[0; 12],
            &doc_sealed[..48],
            &mut opened,
            &tag
        ));
        assert_eq!(opened, doc_body);
        let source = *blake3::keyed_hash(&tag_key, b"plain").as_bytes();
        assert_eq!(doc_body[32..64], source);
        for (i, c) in data.chunks(CHUNK as usize).enumerate() {
            let offset = i as u64 * CHUNK;
            let mut h = blake3::Hasher::new_keyed(&tag_key);
            h.update(&source);
            h.update(&offset.to_le_bytes());
            h.update(&(c.len() as u64).to_le_bytes());
            h.update(c);
            let at = BODY_FIXED + i * ENTRY_LEN;
            assert_eq!(doc_body[at..at + 32], *h.finalize().as_bytes(), "tag {i}");
            let mut h = blake3::Hasher::new();
            h.set_input_offset(offset);
            h.update(c);
            assert_eq!(doc_body[at + 32..at + 64], h.finalize_non_root(), "cv {i}");
        }
        // The digest recombined from the chaining values as the document
        // says: chunks 0 and 1 make a parent, which merges with chunk 2 as
        // the root.
        use blake3::hazmat::{Mode, merge_subtrees_non_root, merge_subtrees_root};
        let cv = |i: usize| -> [u8; 32] {
            let at = BODY_FIXED + i * ENTRY_LEN + 32;
            doc_body[at..at + 32].try_into().unwrap()
        };
        let left = merge_subtrees_non_root(&cv(0), &cv(1), Mode::Hash);
        assert_eq!(
            merge_subtrees_root(&left, &cv(2), Mode::Hash),
            blake3::hash(&data)
        );
        assert_eq!(ChunkIndex::open(&doc_sealed, &vk, &uuid).unwrap(), index);
    }
}
