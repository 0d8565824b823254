//! The portable back end: the `aes` crate's multi-block API (which itself
//! picks AES-NI, VAES or a constant-time software AES), with the tweaks
//! computed per chunk of up to 64 blocks and XORed in and out around it.

use aes::cipher::consts::U16;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use aes::{Aes128, Aes256};
use zeroize::Zeroize;

use super::{BLOCK, Dir, Io, Tweaks};

/// Multiplies a tweak by alpha (x) in GF(2^128) with the XTS polynomial
/// x^128 + x^7 + x^2 + x + 1, the tweak read as a little-endian integer.
#[inline]
pub(super) fn mul_alpha(t: u128) -> u128 {
    // Branch-free: the carry mask is all ones iff the top bit is set.
    let carry = ((t as i128) >> 127) as u128;
    (t << 1) ^ (carry & 0x87)
}

/// Blocks handed to the `aes` crate per call; large enough for its widest
/// parallel path, small enough to stay on the stack and in L1.
const PORTABLE_CHUNK: usize = 64;

// Always boxed as a whole (one per `Xts`), so the 256-byte difference
// between the variants costs nothing worth an extra indirection.
#[allow(clippy::large_enum_variant)]
pub(super) enum PortableKeys {
    Aes128 { data: Aes128, tweak: Aes128 },
    Aes256 { data: Aes256, tweak: Aes256 },
}

impl PortableKeys {
    pub(super) fn new(key1: &[u8], key2: &[u8]) -> Box<PortableKeys> {
        const MSG: &str = "key halves have the length the variant needs";
        Box::new(match key1.len() {
            16 => PortableKeys::Aes128 {
                data: Aes128::new_from_slice(key1).expect(MSG),
                tweak: Aes128::new_from_slice(key2).expect(MSG),
            },
            32 => PortableKeys::Aes256 {
                data: Aes256::new_from_slice(key1).expect(MSG),
                tweak: Aes256::new_from_slice(key2).expect(MSG),
            },
            _ => unreachable!("key length checked in Xts::with_backend"),
        })
    }

    pub(super) fn run(&self, dir: Dir, io: Io<'_>, sector_size: usize, tweaks: Tweaks) {
        match self {
            PortableKeys::Aes128 { data, tweak } => {
                portable_run(data, tweak, dir, io, sector_size, tweaks)
            }
            PortableKeys::Aes256 { data, tweak } => {
                portable_run(data, tweak, dir, io, sector_size, tweaks)
            }
        }
    }
}

fn portable_run<C>(
    data_cipher: &C,
    tweak_cipher: &C,
    dir: Dir,
    mut io: Io<'_>,
    sector_size: usize,
    numbering: Tweaks,
) where
    C: BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16>,
{
    let sectors = io.len() / sector_size;
    let blocks_per_sector = sector_size / BLOCK;
    // Initial tweaks of a batch of sectors, then the tweaks of one chunk of
    // blocks. Secret (they are encryptions under key2): wiped on return.
    let mut initial = [Array::<u8, U16>::default(); PORTABLE_CHUNK];
    let mut tweaks = [0u128; PORTABLE_CHUNK];

    let mut sector = 0;
    while sector < sectors {
        // Initial tweaks of up to PORTABLE_CHUNK sectors in one multi-block call.
        let batch = (sectors - sector).min(PORTABLE_CHUNK);
        for (i, t) in initial[..batch].iter_mut().enumerate() {
            // `check_layout` ruled out overflow of the sector number.
            let n = numbering.nth(sector + i);
            *t = Array(u128::from(n).to_le_bytes());
        }
        tweak_cipher.encrypt_blocks(&mut initial[..batch]);

        for (i, t0) in initial[..batch].iter().enumerate() {
            let base = (sector + i) * sector_size;
            let mut t = u128::from_le_bytes(t0.0);
            let mut done = 0;
            while done < blocks_per_sector {
                let n = (blocks_per_sector - done).min(PORTABLE_CHUNK);
                let range = base + done * BLOCK..base + (done + n) * BLOCK;
                for tw in &mut tweaks[..n] {
                    *tw = t;
                    t = mul_alpha(t);
                }
                // XOR the tweaks in on the way into the output buffer, run
                // the block cipher there, XOR them again: no bounce buffer.
                match &mut io {
                    Io::InPlace(d) => xor_tweaks(&mut d[range.clone()], &tweaks[..n]),
                    Io::Copy { src, dst } => {
                        xor_tweaks_into(&src[range.clone()], &mut dst[range.clone()], &tweaks[..n])
                    }
                }
                let out = io.output(range);
                let (blocks, rest) = Array::<u8, U16>::slice_as_chunks_mut(out);
                debug_assert!(rest.is_empty());
                match dir {
                    Dir::Encrypt => data_cipher.encrypt_blocks(blocks),
                    Dir::Decrypt => data_cipher.decrypt_blocks(blocks),
                }
                xor_tweaks(Array::slice_as_flattened_mut(blocks), &tweaks[..n]);
                done += n;
            }
        }
        sector += batch;
    }
    // Only the leading entries were ever written; volatile zeroing is
    // per element, so skipping the untouched tail keeps small calls cheap.
    let used = sectors.min(PORTABLE_CHUNK);
    initial[..used].iter_mut().for_each(|b| b.0.zeroize());
    tweaks[..blocks_per_sector.min(PORTABLE_CHUNK)].zeroize();
}

/// XORs `tweaks[i]` (little-endian) into the i-th 16-byte block of `data`.
#[inline]
fn xor_tweaks(data: &mut [u8], tweaks: &[u128]) {
    debug_assert_eq!(data.len(), tweaks.len() * BLOCK);
    for (block, t) in data.chunks_exact_mut(BLOCK).zip(tweaks) {
        let mut b = [0u8; BLOCK];
        b.copy_from_slice(block);
        block.copy_from_slice(&(u128::from_le_bytes(b) ^ t).to_le_bytes());
    }
}

/// Writes block i of `src` XOR `tweaks[i]` (little-endian) to `dst`.
#[inline]
fn xor_tweaks_into(src: &[u8], dst: &mut [u8], tweaks: &[u128]) {
    debug_assert_eq!(src.len(), tweaks.len() * BLOCK);
    debug_assert_eq!(dst.len(), src.len());
    for ((s, d), t) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(BLOCK))
        .zip(tweaks)
    {
        let mut b = [0u8; BLOCK];
        b.copy_from_slice(s);
        d.copy_from_slice(&(u128::from_le_bytes(b) ^ t).to_le_bytes());
    }
}
