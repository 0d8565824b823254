//! AES-XTS over disk sectors with the dm-crypt `plain64` tweak.
//!
//! The tweak of a sector is its number, little endian, zero-extended to 16
//! bytes and encrypted with the second half of the key. Whole sectors are
//! processed per call: the tweaks of a sector are computed first, then the
//! cipher's multi-block call encrypts all its blocks at once.

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256};

/// Largest sector handled by the on-stack tweak buffer.
const MAX_SECTOR: usize = 4096;

/// A key of the wrong length for AES-XTS (32 or 64 bytes).
#[derive(Debug)]
pub struct XtsKeyError {
    pub len: usize,
}

impl std::fmt::Display for XtsKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an AES-XTS key is 32 or 64 bytes, not {} bytes",
            self.len
        )
    }
}

impl std::error::Error for XtsKeyError {}

enum Ciphers {
    Aes128(Box<Aes128>, Box<Aes128>),
    Aes256(Box<Aes256>, Box<Aes256>),
}

/// An AES-XTS sector cipher. Holds expanded keys: no `Debug`, no `Clone`.
pub struct Xts {
    ciphers: Ciphers,
}

impl Xts {
    /// `key` is key1 || key2 (data key, tweak key): 32 bytes for AES-128-XTS,
    /// 64 bytes for AES-256-XTS.
    pub fn new(key: &[u8]) -> Result<Xts, XtsKeyError> {
        let ciphers = match key.len() {
            32 => {
                let (k1, k2) = key.split_at(16);
                Ciphers::Aes128(
                    Box::new(Aes128::new(&Array::try_from(k1).expect("16 bytes"))),
                    Box::new(Aes128::new(&Array::try_from(k2).expect("16 bytes"))),
                )
            }
            64 => {
                let (k1, k2) = key.split_at(32);
                Ciphers::Aes256(
                    Box::new(Aes256::new(&Array::try_from(k1).expect("32 bytes"))),
                    Box::new(Aes256::new(&Array::try_from(k2).expect("32 bytes"))),
                )
            }
            len => return Err(XtsKeyError { len }),
        };
        Ok(Xts { ciphers })
    }

    /// Which implementation runs on this CPU.
    pub fn backend(&self) -> &'static str {
        "portable"
    }

    pub fn encrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_sector: u64) {
        self.run(data, sector_size, first_sector, true);
    }

    pub fn decrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_sector: u64) {
        self.run(data, sector_size, first_sector, false);
    }

    pub fn encrypt_sectors_to(
        &self,
        src: &[u8],
        dst: &mut [u8],
        sector_size: usize,
        first_sector: u64,
    ) {
        dst.copy_from_slice(src);
        self.encrypt_sectors(dst, sector_size, first_sector);
    }

    pub fn decrypt_sectors_to(
        &self,
        src: &[u8],
        dst: &mut [u8],
        sector_size: usize,
        first_sector: u64,
    ) {
        dst.copy_from_slice(src);
        self.decrypt_sectors(dst, sector_size, first_sector);
    }

    fn run(&self, data: &mut [u8], sector_size: usize, first_sector: u64, encrypt: bool) {
        assert!(
            sector_size >= 16 && sector_size.is_multiple_of(16) && sector_size <= MAX_SECTOR,
            "XTS sector size must be a multiple of 16 between 16 and {MAX_SECTOR}, not {sector_size}"
        );
        assert!(
            data.len().is_multiple_of(sector_size),
            "XTS data length {} is not a multiple of the sector size {sector_size}",
            data.len()
        );
        let mut tweaks = [0u128; MAX_SECTOR / 16];
        for (i, sector) in data.chunks_exact_mut(sector_size).enumerate() {
            let number = first_sector.wrapping_add(i as u64);
            let mut t = Array::from((number as u128).to_le_bytes());
            match &self.ciphers {
                Ciphers::Aes128(_, c2) => c2.encrypt_block(&mut t),
                Ciphers::Aes256(_, c2) => c2.encrypt_block(&mut t),
            }
            let mut tweak = u128::from_le_bytes(t.0);
            let blocks = sector_size / 16;
            for slot in tweaks.iter_mut().take(blocks) {
                *slot = tweak;
                tweak = gf_double(tweak);
            }
            xor_tweaks(sector, &tweaks[..blocks]);
            let (chunks, _) = Array::slice_as_chunks_mut(sector);
            match (&self.ciphers, encrypt) {
                (Ciphers::Aes128(c1, _), true) => c1.encrypt_blocks(chunks),
                (Ciphers::Aes128(c1, _), false) => c1.decrypt_blocks(chunks),
                (Ciphers::Aes256(c1, _), true) => c1.encrypt_blocks(chunks),
                (Ciphers::Aes256(c1, _), false) => c1.decrypt_blocks(chunks),
            }
            xor_tweaks(sector, &tweaks[..blocks]);
        }
    }
}

/// Multiplication by alpha in GF(2^128) with the XTS (little-endian) convention.
#[inline(always)]
fn gf_double(t: u128) -> u128 {
    let carry = (t >> 127) as u8;
    (t << 1) ^ u128::from(0x87 * carry)
}

#[inline(always)]
fn xor_tweaks(sector: &mut [u8], tweaks: &[u128]) {
    for (block, t) in sector.chunks_exact_mut(16).zip(tweaks) {
        let v = u128::from_le_bytes(block.try_into().expect("16-byte block")) ^ t;
        block.copy_from_slice(&v.to_le_bytes());
    }
}
