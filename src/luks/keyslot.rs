//! The cryptography of a LUKS keyslot, shared by LUKS1 and LUKS2: the KDFs
//! (PBKDF2 with SHA-1/256/512, Argon2i/Argon2id), the anti-forensic
//! splitter (AF, "H1" diffusion of LUKS1 spec 1.2.3, section 2.4), the
//! keyslot area ciphers and the PBKDF2 key digest.
//!
//! Every intermediate that depends on a secret (derived keys, the AF
//! material, decrypted areas, digests of candidate keys) lives in a
//! zeroizing buffer.

use argon2::{Algorithm, Argon2, Params, Version};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use zeroize::{Zeroize, Zeroizing};

use super::error::{Result, invalid, unsupported};
use crate::crypto::Xts;
use crate::crypto::essiv::EssivCbc;

/// Bytes of a LUKS sector (keyslot areas and LUKS1 offsets count in them).
pub const SECTOR: usize = 512;
/// Anti-forensic stripes: the only value cryptsetup accepts (LUKS1 checks
/// every keyslot for it; LUKS2 uses it whatever the JSON says).
pub const STRIPES: usize = 4000;
/// Bytes of every keyslot and digest salt in both versions.
pub const SALT_LEN: usize = 32;
/// Largest volume key evfs handles a keyslot for (4096 bits, far above the
/// 512 of AES-256-XTS); it bounds the AF material to 2 MiB.
pub const MAX_KEY_LEN: usize = 512;
/// cryptsetup's limits for Argon2 (`crypt_pbkdf_get_limits`): 4 GiB of
/// memory and 4 threads at most. A header asking for more is refused
/// rather than followed, so that no header can make evfs allocate more.
pub const ARGON2_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// The most Argon2 lanes (threads) a keyslot may ask for.
pub const ARGON2_MAX_THREADS: u32 = 4;

/// A hash LUKS names for PBKDF2, the AF splitter or a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlg {
    /// SHA-1 (`sha1`), still the default of old LUKS1 headers.
    Sha1,
    /// SHA-256 (`sha256`).
    Sha256,
    /// SHA-512 (`sha512`).
    Sha512,
}

impl HashAlg {
    /// From cryptsetup's name (`sha1`, `sha256`, `sha512`).
    pub fn parse(name: &str) -> Option<HashAlg> {
        match name {
            "sha1" => Some(HashAlg::Sha1),
            "sha256" => Some(HashAlg::Sha256),
            "sha512" => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Like [`HashAlg::parse`], the refusal naming what was asked for.
    pub fn require(name: &str, what: &str) -> Result<HashAlg> {
        HashAlg::parse(name).ok_or_else(|| {
            unsupported(format!(
                "{what} hash {name:?} (evfs supports sha1, sha256 and sha512)"
            ))
        })
    }

    /// cryptsetup's name of the hash.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha512 => 64,
        }
    }

    /// PBKDF2-HMAC with this hash into `out`.
    pub fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        // The crate loops `iterations - 1` times after the first block; 0
        // is refused by every caller before it gets here.
        let rounds = iterations.max(1);
        match self {
            HashAlg::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, rounds, out),
            HashAlg::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, rounds, out),
            HashAlg::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, rounds, out),
        }
    }

    /// The hash of `be32(index) || data`, its first `data.len()` bytes
    /// written back over `data` (`data` is at most one digest long).
    fn diffuse_block(self, index: u32, data: &mut [u8]) {
        fn run<D: Digest>(index: u32, data: &mut [u8]) {
            let mut h = D::new();
            h.update(index.to_be_bytes());
            h.update(&*data);
            let mut out = h.finalize();
            data.copy_from_slice(&out[..data.len()]);
            out.as_mut_slice().zeroize();
        }
        match self {
            HashAlg::Sha1 => run::<Sha1>(index, data),
            HashAlg::Sha256 => run::<Sha256>(index, data),
            HashAlg::Sha512 => run::<Sha512>(index, data),
        }
    }

    /// LUKS's diffusion function H1: each digest-sized block `i` of `buf`
    /// (the last one possibly shorter) replaced by `H(be32(i) || block)`,
    /// cut to the block's length.
    fn diffuse(self, buf: &mut [u8]) {
        for (i, block) in buf.chunks_mut(self.size()).enumerate() {
            // A key is at most MAX_KEY_LEN bytes, so i fits easily.
            self.diffuse_block(i as u32, block);
        }
    }
}

/// Bytes of the AF material for a key: `key_len * stripes` rounded up to
/// whole 512-byte sectors (cryptsetup's `AF_split_sectors`).
pub fn af_size(key_len: usize, stripes: usize) -> usize {
    (key_len * stripes).div_ceil(SECTOR) * SECTOR
}

/// AF merge: the key of `key_len` bytes from its split `material`
/// (`key_len * stripes` bytes or more; the padding is ignored).
pub fn af_merge(
    material: &[u8],
    key_len: usize,
    stripes: usize,
    hash: HashAlg,
) -> Zeroizing<Vec<u8>> {
    debug_assert!(stripes >= 1 && material.len() >= key_len * stripes);
    let mut d = Zeroizing::new(vec![0u8; key_len]);
    for stripe in material.chunks_exact(key_len).take(stripes - 1) {
        d.iter_mut().zip(stripe).for_each(|(a, b)| *a ^= b);
        hash.diffuse(&mut d);
    }
    let last = &material[(stripes - 1) * key_len..stripes * key_len];
    d.iter_mut().zip(last).for_each(|(a, b)| *a ^= b);
    d
}

/// AF split: `key` spread over `stripes` stripes, the first `stripes - 1`
/// random (from `random`), padded with zeros to [`af_size`] as cryptsetup
/// writes it.
pub fn af_split(
    key: &[u8],
    stripes: usize,
    hash: HashAlg,
    random: &mut dyn FnMut(&mut [u8]) -> Result<()>,
) -> Result<Zeroizing<Vec<u8>>> {
    let n = key.len();
    let mut out = Zeroizing::new(vec![0u8; af_size(n, stripes)]);
    random(&mut out[..n * (stripes - 1)])?;
    let mut d = Zeroizing::new(vec![0u8; n]);
    for stripe in out[..n * (stripes - 1)].chunks_exact(n) {
        d.iter_mut().zip(stripe).for_each(|(a, b)| *a ^= b);
        hash.diffuse(&mut d);
    }
    let last = &mut out[(stripes - 1) * n..stripes * n];
    for ((o, a), k) in last.iter_mut().zip(d.iter()).zip(key) {
        *o = a ^ k;
    }
    Ok(out)
}

/// The two Argon2 variants LUKS2 keyslots use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Argon2Variant {
    /// Argon2i (`argon2i`).
    Argon2i,
    /// Argon2id (`argon2id`).
    Argon2id,
}

impl Argon2Variant {
    /// cryptsetup's name of the variant.
    pub fn name(self) -> &'static str {
        match self {
            Argon2Variant::Argon2i => "argon2i",
            Argon2Variant::Argon2id => "argon2id",
        }
    }
}

/// A keyslot's key derivation, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2 (`pbkdf2`), the KDF of every LUKS1 keyslot.
    Pbkdf2 {
        /// Hash name as stored (checked when used).
        hash: String,
        /// Iterations.
        iterations: u32,
        /// The salt, decoded.
        salt: Vec<u8>,
    },
    /// Argon2 (`argon2i` or `argon2id`), LUKS2 only.
    Argon2 {
        /// Which Argon2.
        variant: Argon2Variant,
        /// Passes (cryptsetup's "time").
        time: u32,
        /// Memory in KiB.
        memory_kib: u32,
        /// Lanes (cryptsetup's "cpus").
        cpus: u32,
        /// The salt, decoded.
        salt: Vec<u8>,
    },
    /// A KDF type evfs does not know, by name.
    Other(String),
}

impl Kdf {
    /// Why this KDF cannot be run, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        match self {
            Kdf::Pbkdf2 {
                hash, iterations, ..
            } => {
                if HashAlg::parse(hash).is_none() {
                    Some(format!("PBKDF2 hash {hash:?}"))
                } else if *iterations == 0 {
                    Some("PBKDF2 with 0 iterations".to_string())
                } else {
                    None
                }
            }
            Kdf::Argon2 {
                time,
                memory_kib,
                cpus,
                ..
            } => {
                if *cpus == 0 || *cpus > ARGON2_MAX_THREADS {
                    Some(format!(
                        "Argon2 with {cpus} threads (cryptsetup allows 1 to {ARGON2_MAX_THREADS})"
                    ))
                } else if *memory_kib > ARGON2_MAX_MEMORY_KIB {
                    Some(format!(
                        "Argon2 with {memory_kib} KiB of memory (cryptsetup's limit is 4 GiB)"
                    ))
                } else if *memory_kib < 8 * cpus {
                    Some(format!(
                        "Argon2 with {memory_kib} KiB of memory for {cpus} threads (at least 8 KiB per thread)"
                    ))
                } else if *time == 0 {
                    Some("Argon2 with time cost 0".to_string())
                } else {
                    None
                }
            }
            Kdf::Other(name) => Some(format!("keyslot KDF {name:?}")),
        }
    }

    /// Derive `out.len()` bytes from `secret`.
    pub fn derive(&self, secret: &[u8], out: &mut [u8]) -> Result<()> {
        if let Some(why) = self.unsupported() {
            return Err(unsupported(why));
        }
        match self {
            Kdf::Pbkdf2 {
                hash,
                iterations,
                salt,
            } => {
                HashAlg::require(hash, "PBKDF2")?.pbkdf2(secret, salt, *iterations, out);
                Ok(())
            }
            Kdf::Argon2 {
                variant,
                time,
                memory_kib,
                cpus,
                salt,
            } => argon2(*variant, secret, salt, *time, *memory_kib, *cpus, out),
            Kdf::Other(name) => Err(unsupported(format!("keyslot KDF {name:?}"))),
        }
    }
}

/// Argon2 version 1.3 (what libargon2 and cryptsetup use), its memory
/// blocks held in a buffer that is wiped when dropped.
fn argon2(
    variant: Argon2Variant,
    secret: &[u8],
    salt: &[u8],
    time: u32,
    memory_kib: u32,
    cpus: u32,
    out: &mut [u8],
) -> Result<()> {
    let params = Params::new(memory_kib, time, cpus, Some(out.len()))
        .map_err(|e| unsupported(format!("Argon2 parameters: {e}")))?;
    let algorithm = match variant {
        Argon2Variant::Argon2i => Algorithm::Argon2i,
        Argon2Variant::Argon2id => Algorithm::Argon2id,
    };
    let mut blocks = Zeroizing::new(vec![argon2::Block::default(); params.block_count()]);
    Argon2::new(algorithm, Version::V0x13, params)
        .hash_password_into_with_memory(secret, salt, out, &mut blocks[..])
        .map_err(|e| unsupported(format!("Argon2 refused the input: {e}")))
}

/// The ciphers of keyslot areas (and of data areas, which use the same
/// names) that evfs implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectorCipherKind {
    /// `aes-xts-plain64`: AES-XTS, the 64-bit sector number as tweak.
    AesXtsPlain64,
    /// `aes-cbc-essiv:sha256`: AES-CBC, ESSIV with SHA-256.
    AesCbcEssivSha256,
}

impl SectorCipherKind {
    /// From dm-crypt's notation, `cipher-mode-iv` (as LUKS2 stores it).
    pub fn parse(spec: &str) -> Option<SectorCipherKind> {
        match spec {
            "aes-xts-plain64" => Some(SectorCipherKind::AesXtsPlain64),
            "aes-cbc-essiv:sha256" => Some(SectorCipherKind::AesCbcEssivSha256),
            _ => None,
        }
    }

    /// dm-crypt's name of the cipher.
    pub fn name(self) -> &'static str {
        match self {
            SectorCipherKind::AesXtsPlain64 => "aes-xts-plain64",
            SectorCipherKind::AesCbcEssivSha256 => "aes-cbc-essiv:sha256",
        }
    }

    /// Whether `len` bytes is a key length of this cipher.
    pub fn key_len_ok(self, len: usize) -> bool {
        match self {
            SectorCipherKind::AesXtsPlain64 => len == 32 || len == 64,
            SectorCipherKind::AesCbcEssivSha256 => matches!(len, 16 | 24 | 32),
        }
    }

    /// Decrypt a keyslot area in place: 512-byte sectors numbered from 0
    /// at the area's start (cryptsetup's storage wrapper with IV offset 0).
    pub fn decrypt_area(self, key: &[u8], data: &mut [u8]) -> Result<()> {
        self.run(key, data, false)
    }

    /// Encrypt a keyslot area in place (inverse of
    /// [`SectorCipherKind::decrypt_area`]).
    pub fn encrypt_area(self, key: &[u8], data: &mut [u8]) -> Result<()> {
        self.run(key, data, true)
    }

    fn run(self, key: &[u8], data: &mut [u8], encrypt: bool) -> Result<()> {
        if !data.len().is_multiple_of(SECTOR) {
            return Err(invalid("keyslot area is not whole sectors"));
        }
        match self {
            SectorCipherKind::AesXtsPlain64 => {
                let xts = Xts::new(key).map_err(|e| unsupported(e.to_string()))?;
                if encrypt {
                    xts.encrypt_sectors(data, SECTOR, 0);
                } else {
                    xts.decrypt_sectors(data, SECTOR, 0);
                }
            }
            SectorCipherKind::AesCbcEssivSha256 => {
                let c = EssivCbc::new(key).map_err(|e| unsupported(e.to_string()))?;
                if encrypt {
                    c.encrypt_sectors(data, 0);
                } else {
                    c.decrypt_sectors(data, 0);
                }
            }
        }
        Ok(())
    }
}

/// PBKDF2 digest of a candidate volume key compared with `expected` in
/// constant time (LUKS1 mk-digest, LUKS2 `pbkdf2` digests).
pub fn digest_matches(
    hash: HashAlg,
    key: &[u8],
    salt: &[u8],
    iterations: u32,
    expected: &[u8],
) -> bool {
    let mut got = Zeroizing::new(vec![0u8; expected.len()]);
    hash.pbkdf2(key, salt, iterations, &mut got);
    crate::crypto::ct_eq(&got, expected)
}
