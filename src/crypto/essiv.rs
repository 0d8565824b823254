//! AES-CBC with dm-crypt's ESSIV IV (`aes-cbc-essiv:sha256`), on 512-byte
//! sectors: the cipher of old LUKS1 volumes, read so that evfs can back them
//! up.
//!
//! Sector `n` is encrypted with AES-CBC under the data key, with the IV
//! `AES-Enc(sha256(key), le64(n) || 0^8)`: the ESSIV key is the SHA-256 of
//! the data key, so always AES-256, whatever the data key's length (16, 24
//! or 32 bytes). As dm-crypt without `iv_large_sectors`, the sector number
//! counts 512-byte units. Confidentiality only, like every length-preserving
//! disk cipher; CBC also leaks which leading blocks of a sector stayed the
//! same, one more reason evfs only reads this mode.
//!
//! Keys live boxed (one heap address for the object's life) and are wiped on
//! drop by the `aes` crate's `zeroize` feature; the type has no `Debug`,
//! `Clone` or `Copy`.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256, Block};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// The sector size of this mode: LUKS1 and dm-crypt's 512-byte sectors.
pub const SECTOR: usize = 512;
const BLOCK: usize = 16;

/// A key of the wrong length (AES takes 16, 24 or 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EssivKeyError {
    /// The length of the key that was given, in bytes.
    pub len: usize,
}

impl std::fmt::Display for EssivKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid AES-CBC-ESSIV key length {} bytes: expected 16, 24 or 32",
            self.len
        )
    }
}

impl std::error::Error for EssivKeyError {}

enum DataKey {
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
}

struct Keys {
    data: DataKey,
    essiv: Aes256,
}

/// An `aes-cbc-essiv:sha256` key, ready for 512-byte sectors.
pub struct EssivCbc {
    keys: Box<Keys>,
}

impl EssivCbc {
    /// A 16, 24 or 32-byte key (AES-128, -192 or -256 in CBC mode).
    pub fn new(key: &[u8]) -> Result<EssivCbc, EssivKeyError> {
        let err = EssivKeyError { len: key.len() };
        let data = match key.len() {
            16 => DataKey::Aes128(Aes128::new_from_slice(key).map_err(|_| err)?),
            24 => DataKey::Aes192(Aes192::new_from_slice(key).map_err(|_| err)?),
            32 => DataKey::Aes256(Aes256::new_from_slice(key).map_err(|_| err)?),
            _ => return Err(err),
        };
        let mut salt: [u8; 32] = Sha256::digest(key).into();
        let essiv = Aes256::new_from_slice(&salt).map_err(|_| err);
        salt.zeroize();
        Ok(EssivCbc {
            keys: Box::new(Keys {
                data,
                essiv: essiv?,
            }),
        })
    }

    /// Encrypts `data` in place: consecutive 512-byte sectors numbered from
    /// `first_sector`.
    ///
    /// # Panics
    ///
    /// If `data.len()` is not a multiple of 512, or the last sector number
    /// would exceed `u64::MAX`.
    pub fn encrypt_sectors(&self, data: &mut [u8], first_sector: u64) {
        check(data.len(), first_sector);
        let Keys { data: key, essiv } = &*self.keys;
        for (i, sector) in data.chunks_exact_mut(SECTOR).enumerate() {
            let mut chain = iv(essiv, first_sector + i as u64);
            for block in sector.chunks_exact_mut(BLOCK) {
                let mut b = Block::default();
                for ((o, p), c) in b.iter_mut().zip(block.iter()).zip(chain.iter()) {
                    *o = p ^ c;
                }
                key.encrypt(&mut b);
                block.copy_from_slice(&b);
                chain = b;
            }
            chain.zeroize();
        }
    }

    /// Decrypts `data` in place; the inverse of [`EssivCbc::encrypt_sectors`].
    ///
    /// # Panics
    ///
    /// As for [`EssivCbc::encrypt_sectors`].
    pub fn decrypt_sectors(&self, data: &mut [u8], first_sector: u64) {
        check(data.len(), first_sector);
        let Keys { data: key, essiv } = &*self.keys;
        // CBC decryption of a sector is parallel: decrypt all its blocks in
        // one call, then XOR each with the ciphertext block before it.
        let mut blocks = [Block::default(); SECTOR / BLOCK];
        for (i, sector) in data.chunks_exact_mut(SECTOR).enumerate() {
            for (b, c) in blocks.iter_mut().zip(sector.chunks_exact(BLOCK)) {
                b.copy_from_slice(c);
            }
            key.decrypt_blocks(&mut blocks);
            let mut previous = iv(essiv, first_sector + i as u64);
            for (b, plain) in blocks.iter().zip(sector.chunks_exact_mut(BLOCK)) {
                let cipher_block: [u8; BLOCK] =
                    plain.try_into().expect("chunks_exact gives 16-byte blocks");
                for ((o, d), p) in plain.iter_mut().zip(b.iter()).zip(previous.iter()) {
                    *o = d ^ p;
                }
                previous = Block::from(cipher_block);
            }
            previous.zeroize();
        }
        blocks.iter_mut().for_each(|b| b.zeroize());
    }
}

impl DataKey {
    fn encrypt(&self, b: &mut Block) {
        match self {
            DataKey::Aes128(k) => k.encrypt_block(b),
            DataKey::Aes192(k) => k.encrypt_block(b),
            DataKey::Aes256(k) => k.encrypt_block(b),
        }
    }

    fn decrypt_blocks(&self, b: &mut [Block]) {
        match self {
            DataKey::Aes128(k) => k.decrypt_blocks(b),
            DataKey::Aes192(k) => k.decrypt_blocks(b),
            DataKey::Aes256(k) => k.decrypt_blocks(b),
        }
    }
}

/// ESSIV: the sector number (64-bit little endian, zero-extended to a
/// block) encrypted under the hash of the data key.
fn iv(essiv: &Aes256, sector: u64) -> Block {
    let mut b = Block::default();
    b[..8].copy_from_slice(&sector.to_le_bytes());
    essiv.encrypt_block(&mut b);
    b
}

fn check(len: usize, first_sector: u64) {
    assert!(
        len.is_multiple_of(SECTOR),
        "essiv: data length {len} is not a multiple of {SECTOR}"
    );
    let sectors = (len / SECTOR) as u64;
    assert!(
        sectors == 0 || first_sector.checked_add(sectors - 1).is_some(),
        "essiv: {sectors} sectors from sector {first_sector} overflow the 64-bit sector number"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CBC by hand, block by block, from the definition (no shared code with
    /// the implementation beyond the AES block function).
    fn reference(key: &[u8], data: &[u8], first: u64) -> Vec<u8> {
        let salt: [u8; 32] = Sha256::digest(key).into();
        let essiv = Aes256::new_from_slice(&salt).unwrap();
        let mut out = data.to_vec();
        for (i, sector) in out.chunks_exact_mut(SECTOR).enumerate() {
            let mut ivb = Block::default();
            ivb[..8].copy_from_slice(&(first + i as u64).to_le_bytes());
            essiv.encrypt_block(&mut ivb);
            let mut chain = ivb.to_vec();
            for block in sector.chunks_exact_mut(16) {
                let mut b = Block::default();
                for j in 0..16 {
                    b[j] = block[j] ^ chain[j];
                }
                match key.len() {
                    16 => Aes128::new_from_slice(key).unwrap().encrypt_block(&mut b),
                    24 => Aes192::new_from_slice(key).unwrap().encrypt_block(&mut b),
                    _ => Aes256::new_from_slice(key).unwrap().encrypt_block(&mut b),
                }
                block.copy_from_slice(&b);
                chain = b.to_vec();
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_and_round_trips() {
        for key_len in [16, 24, 32] {
            let key: Vec<u8> = (0..key_len as u8).map(|b| b.wrapping_mul(37)).collect();
            let c = EssivCbc::new(&key).unwrap();
            let data: Vec<u8> = (0..SECTOR * 5).map(|i| (i * 7 + 3) as u8).collect();
            for first in [0, 1, 4095, u64::MAX - 4] {
                let mut buf = data.clone();
                c.encrypt_sectors(&mut buf, first);
                assert_eq!(
                    buf,
                    reference(&key, &data, first),
                    "key {key_len} first {first}"
                );
                c.decrypt_sectors(&mut buf, first);
                assert_eq!(buf, data);
            }
        }
    }

    #[test]
    fn sectors_depend_on_their_number() {
        let c = EssivCbc::new(&[1; 32]).unwrap();
        let mut a = vec![0u8; SECTOR];
        let mut b = vec![0u8; SECTOR];
        c.encrypt_sectors(&mut a, 7);
        c.encrypt_sectors(&mut b, 8);
        assert_ne!(a, b);
        // One call over two sectors equals two calls.
        let mut two = vec![0u8; 2 * SECTOR];
        c.encrypt_sectors(&mut two, 7);
        assert_eq!(&two[..SECTOR], &a[..]);
        assert_eq!(&two[SECTOR..], &b[..]);
    }

    #[test]
    fn key_lengths() {
        for len in [0, 8, 15, 17, 31, 33, 64] {
            assert_eq!(
                EssivCbc::new(&vec![0; len]).err(),
                Some(EssivKeyError { len })
            );
        }
    }

    #[test]
    #[should_panic(expected = "multiple of 512")]
    fn rejects_partial_sectors() {
        EssivCbc::new(&[0; 16])
            .unwrap()
            .decrypt_sectors(&mut [0; 100], 0);
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn rejects_sector_number_overflow() {
        EssivCbc::new(&[0; 16])
            .unwrap()
            .encrypt_sectors(&mut [0; 1024], u64::MAX);
    }
}
