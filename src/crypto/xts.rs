//! AES-XTS (IEEE Std 1619, "XTS-AES") for disk sectors, with the dm-crypt
//! `plain64` tweak.
//!
//! # What this computes
//!
//! A key is `key1 || key2`: `key1` encrypts the data, `key2` encrypts the tweak.
//! Both halves are 16 bytes (AES-128-XTS, a 32-byte key) or 32 bytes
//! (AES-256-XTS, a 64-byte key).
//!
//! Data is a run of equal-sized sectors (data units). Sector `i` of a call gets
//! the sector number `first_sector + i`; its initial tweak is
//! `T = AES-Enc(key2, n)`, where `n` is the sector number as a 64-bit
//! little-endian integer zero-extended to 16 bytes (dm-crypt's `plain64` IV).
//! Block `j` of the sector is then `C_j = AES-Enc(key1, P_j ^ T_j) ^ T_j` with
//! `T_j = T * alpha^j` in GF(2^128), exactly as in IEEE Std 1619-2007.
//! Sector sizes are multiples of 16 bytes, so ciphertext stealing never
//! happens and is not implemented.
//!
//! dm-crypt counts that IV in 512-byte units whatever the sector size, unless
//! a mapping sets `iv_large_sectors` (cryptsetup does for BitLocker and, on
//! request, plain mappings; never for LUKS). So sector `n` of a LUKS volume
//! with 4096-byte sectors has tweak number `8 * n`. For that,
//! [`Xts::with_tweak_step`] sets a step `s`: sector `i` of a call then gets
//! tweak number `first_sector + i * s` (the default step 1 is the rule above).
//!
//! # Back ends
//!
//! [`Xts::new`] picks the fastest implementation the CPU supports, once
//! (in the order of [`Backend::ALL`]):
//!
//! * `vaes-avx512`: VAES + VPCLMULQDQ + AVX-512F/BW. Four tweaks per 512-bit
//!   register, four registers (16 blocks) per loop iteration, round keys held
//!   in registers. Tweaks never leave the registers: each iteration advances
//!   them by alpha^16, which is a two-byte shift plus one `vpclmulqdq` to
//!   reduce the bytes shifted out. The initial tweaks of 16 sectors are
//!   encrypted together.
//! * `vaes-avx2`: the same on 256-bit registers (8 registers, 16 blocks per
//!   iteration), for CPUs with VAES but without AVX-512.
//! * `aes-ni`: AES-NI + PCLMULQDQ, eight blocks in flight in 128-bit
//!   registers, for older x86-64 CPUs.
//! * `portable`: the [`aes`] crate's multi-block API (which itself picks
//!   AES-NI, VAES or a constant-time software AES), with the tweaks computed
//!   per chunk of up to 64 blocks and XORed in and out around it.
//!
//! No global target features are needed: the x86 kernels are compiled with
//! `#[target_feature]` and only run after `is_x86_feature_detected!` confirmed
//! the features. [`Xts::with_backend`] forces a given back end, for tests and
//! benchmarks.
//!
//! Performance on the machine this was tuned on (Sapphire Rapids-class Xeon
//! at about 4 GHz, one thread, AES-256-XTS, 4096-byte sectors hot in L1):
//! `vaes-avx512` ~18 GB/s, `vaes-avx2` ~13.7, `aes-ni` ~8.3, `portable` ~4.6;
//! OpenSSL 3.0 measured 8.1 there. `examples/speed.rs` reproduces this.
//!
//! # Security notes
//!
//! * XTS gives confidentiality only: no integrity, no protection against
//!   replay of old sector contents.
//! * IEEE Std 1619-2018 and NIST SP 800-38E require `key1 != key2`; this
//!   module does not check it (IEEE 1619-2007 test vector 1 has equal halves,
//!   and dm-crypt accepts them too). Generate the two halves independently.
//! * Round keys are zeroized when an [`Xts`] is dropped (for the portable back
//!   end this relies on the `aes` crate's `zeroize` feature), and tweak
//!   buffers at the end of each call. Copies the compiler makes on the stack
//!   or leaves in vector registers (spilled round keys, the `aes` crate's
//!   ciphers built by value before being boxed) are not, and cannot portably
//!   be, wiped.

// The AES-NI and VAES kernels are `core::arch` intrinsics, which are
// `unsafe` to call; each use says why its CPU feature and pointers are sound.
#![allow(unsafe_code)]
#![warn(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

use core::fmt;

use aes::cipher::consts::U16;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use aes::{Aes128, Aes256};
use zeroize::Zeroize;

/// The smallest unit XTS works on: one AES block.
const BLOCK: usize = 16;

/// Error returned by [`Xts::new`] for a key that is neither 32 bytes
/// (AES-128-XTS) nor 64 bytes (AES-256-XTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XtsKeyError {
    /// Length of the rejected key, in bytes.
    pub len: usize,
}

impl fmt::Display for XtsKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid AES-XTS key length {} bytes: expected 32 (AES-128-XTS) or 64 (AES-256-XTS)",
            self.len
        )
    }
}

impl std::error::Error for XtsKeyError {}

/// An implementation of the XTS transform. [`Xts::new`] picks the best one
/// available; [`Xts::with_backend`] forces one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// x86-64 with VAES, VPCLMULQDQ, AVX-512F and AVX-512BW: 16 blocks in flight
    /// in 512-bit registers.
    VaesAvx512,
    /// x86-64 with VAES, VPCLMULQDQ and AVX2: 16 blocks in flight in 256-bit
    /// registers.
    VaesAvx2,
    /// x86-64 with AES-NI and PCLMULQDQ: 8 blocks in flight in 128-bit
    /// registers.
    AesNi,
    /// The `aes` crate's block API; runs everywhere.
    Portable,
}

impl Backend {
    /// Every back end, fastest first (the order [`Xts::new`] tries them in).
    pub const ALL: [Backend; 4] = [
        Backend::VaesAvx512,
        Backend::VaesAvx2,
        Backend::AesNi,
        Backend::Portable,
    ];

    /// Short stable name, as returned by [`Xts::backend`].
    pub fn name(self) -> &'static str {
        match self {
            Backend::VaesAvx512 => "vaes-avx512",
            Backend::VaesAvx2 => "vaes-avx2",
            Backend::AesNi => "aes-ni",
            Backend::Portable => "portable",
        }
    }

    /// Whether this CPU (and OS, for the AVX-512 register state) can run it.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::AesNi => x86::Kernel::AesNi.is_available(),
            #[cfg(target_arch = "x86_64")]
            Backend::VaesAvx2 => x86::Kernel::VaesAvx2.is_available(),
            #[cfg(target_arch = "x86_64")]
            Backend::VaesAvx512 => x86::Kernel::VaesAvx512.is_available(),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::AesNi | Backend::VaesAvx2 | Backend::VaesAvx512 => false,
        }
    }

    /// The fastest back end available on this CPU.
    pub fn best() -> Backend {
        Backend::ALL
            .into_iter()
            .find(|b| b.is_available())
            .unwrap_or(Backend::Portable)
    }
}

/// An AES-XTS key, ready to encrypt and decrypt sectors. Which AES-XTS
/// variant a key is for is decided by key length: 32 bytes = AES-128-XTS,
/// 64 = AES-256-XTS.
///
/// Holds the expanded round keys of both key halves (zeroized on drop) and
/// the back end chosen at construction. Deliberately neither `Debug`, `Clone`
/// nor `Copy`, so key material is not printed or duplicated by accident.
pub struct Xts {
    imp: Imp,
    /// Tweak numbers between consecutive sectors of a call (1 unless
    /// [`Xts::with_tweak_step`] changed it).
    tweak_step: u64,
}

/// The tweak numbers of one call: sector `i` gets `first + i * step`. Public
/// data (sector numbers), so freely copied.
#[derive(Clone, Copy)]
struct Tweaks {
    first: u64,
    step: u64,
}

impl Tweaks {
    /// Tweak number of sector `i`. Wrapping, because the kernels also compute
    /// lanes past the last sector, whose tweaks they never use; those of real
    /// sectors were checked not to overflow (`check_layout`).
    #[inline(always)]
    fn nth(self, i: usize) -> u64 {
        self.first.wrapping_add((i as u64).wrapping_mul(self.step))
    }

    /// The tweak numbers from sector `i` on.
    #[inline(always)]
    fn skip(self, i: usize) -> Tweaks {
        Tweaks {
            first: self.nth(i),
            step: self.step,
        }
    }
}

/// Key schedule plus the code that uses it. Boxed so the round keys stay at
/// one heap address for the object's life (moving an `Xts` moves a pointer,
/// not key material that would be left behind on the stack).
enum Imp {
    Portable(Box<PortableKeys>),
    #[cfg(target_arch = "x86_64")]
    Hw {
        keys: Box<x86::HwKeys>,
        kernel: x86::Kernel,
    },
}

/// Direction of the transform.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Encrypt,
    Decrypt,
}

/// Where the input comes from and the output goes.
enum Io<'a> {
    InPlace(&'a mut [u8]),
    Copy { src: &'a [u8], dst: &'a mut [u8] },
}

impl Io<'_> {
    fn len(&self) -> usize {
        match self {
            Io::InPlace(d) => d.len(),
            Io::Copy { src, .. } => src.len(),
        }
    }

    fn output(&mut self, r: core::ops::Range<usize>) -> &mut [u8] {
        match self {
            Io::InPlace(d) => &mut d[r],
            Io::Copy { dst, .. } => &mut dst[r],
        }
    }
}

impl Xts {
    /// Builds an XTS context from `key = key1 || key2` (data key, tweak key),
    /// using the fastest back end this CPU supports.
    ///
    /// A 32-byte key selects AES-128-XTS, a 64-byte key AES-256-XTS; any
    /// other length is an error.
    pub fn new(key: &[u8]) -> Result<Xts, XtsKeyError> {
        let xts = Xts::with_backend(key, Backend::best())?;
        // `best()` only returns available back ends, and Portable always is.
        Ok(xts.expect("the best back end is always available"))
    }

    /// Like [`Xts::new`] but forces `backend`. Returns `Ok(None)` if this CPU
    /// cannot run it. Meant for tests and benchmarks; production code should
    /// use [`Xts::new`].
    pub fn with_backend(key: &[u8], backend: Backend) -> Result<Option<Xts>, XtsKeyError> {
        if key.len() != 32 && key.len() != 64 {
            return Err(XtsKeyError { len: key.len() });
        }
        if !backend.is_available() {
            return Ok(None);
        }
        let (key1, key2) = key.split_at(key.len() / 2);
        let imp = match backend {
            Backend::Portable => Imp::Portable(PortableKeys::new(key1, key2)),
            #[cfg(target_arch = "x86_64")]
            Backend::AesNi => Imp::Hw {
                keys: x86::HwKeys::new(key1, key2),
                kernel: x86::Kernel::AesNi,
            },
            #[cfg(target_arch = "x86_64")]
            Backend::VaesAvx2 => Imp::Hw {
                keys: x86::HwKeys::new(key1, key2),
                kernel: x86::Kernel::VaesAvx2,
            },
            #[cfg(target_arch = "x86_64")]
            Backend::VaesAvx512 => Imp::Hw {
                keys: x86::HwKeys::new(key1, key2),
                kernel: x86::Kernel::VaesAvx512,
            },
            #[cfg(not(target_arch = "x86_64"))]
            Backend::AesNi | Backend::VaesAvx2 | Backend::VaesAvx512 => {
                unreachable!("not available on this target")
            }
        };
        Ok(Some(Xts { imp, tweak_step: 1 }))
    }

    /// The same key with tweak step `step`: from now on sector `i` of a call
    /// gets tweak number `first_sector + i * step` instead of
    /// `first_sector + i`, so `first_sector` is the tweak number of the
    /// call's first sector.
    ///
    /// This is how dm-crypt numbers larger sectors: its `plain64` IV counts
    /// 512-byte units, so a LUKS volume with 4096-byte sectors uses step 8
    /// (and passes `8 * n` plus the segment's `iv_tweak` for sector `n`).
    ///
    /// # Panics
    ///
    /// If `step` is 0 (every sector would get the same tweak).
    pub fn with_tweak_step(mut self, step: u64) -> Xts {
        assert!(step > 0, "xts: the tweak step must be at least 1");
        self.tweak_step = step;
        self
    }

    /// The tweak step (1 unless [`Xts::with_tweak_step`] set another).
    pub fn tweak_step(&self) -> u64 {
        self.tweak_step
    }

    /// Name of the back end in use: `"vaes-avx512"`, `"vaes-avx2"`, `"aes-ni"`
    /// or `"portable"` (see [`Backend::name`]).
    pub fn backend(&self) -> &'static str {
        match &self.imp {
            Imp::Portable(_) => Backend::Portable.name(),
            #[cfg(target_arch = "x86_64")]
            Imp::Hw { kernel, .. } => kernel.backend().name(),
        }
    }

    /// Encrypts `data` in place: consecutive sectors of `sector_size` bytes
    /// numbered from `first_sector` (in steps of [`Xts::tweak_step`]).
    ///
    /// # Panics
    ///
    /// If `sector_size` is not a non-zero multiple of 16, if `data.len()` is
    /// not a multiple of `sector_size`, or if the last sector's tweak number
    /// would exceed `u64::MAX`. Empty `data` is a no-op.
    pub fn encrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_sector: u64) {
        self.run(Dir::Encrypt, Io::InPlace(data), sector_size, first_sector);
    }

    /// Decrypts `data` in place; the inverse of [`Xts::encrypt_sectors`].
    ///
    /// # Panics
    ///
    /// As for [`Xts::encrypt_sectors`].
    pub fn decrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_sector: u64) {
        self.run(Dir::Decrypt, Io::InPlace(data), sector_size, first_sector);
    }

    /// Encrypts `src` into `dst` (for a read-only source such as a memory map).
    ///
    /// # Panics
    ///
    /// If `src.len() != dst.len()`, and as for [`Xts::encrypt_sectors`].
    pub fn encrypt_sectors_to(
        &self,
        src: &[u8],
        dst: &mut [u8],
        sector_size: usize,
        first_sector: u64,
    ) {
        check_same_len(src, dst);
        self.run(
            Dir::Encrypt,
            Io::Copy { src, dst },
            sector_size,
            first_sector,
        );
    }

    /// Decrypts `src` into `dst`; the inverse of [`Xts::encrypt_sectors_to`].
    ///
    /// # Panics
    ///
    /// If `src.len() != dst.len()`, and as for [`Xts::encrypt_sectors`].
    pub fn decrypt_sectors_to(
        &self,
        src: &[u8],
        dst: &mut [u8],
        sector_size: usize,
        first_sector: u64,
    ) {
        check_same_len(src, dst);
        self.run(
            Dir::Decrypt,
            Io::Copy { src, dst },
            sector_size,
            first_sector,
        );
    }

    fn run(&self, dir: Dir, io: Io<'_>, sector_size: usize, first_sector: u64) {
        let tweaks = Tweaks {
            first: first_sector,
            step: self.tweak_step,
        };
        let sectors = check_layout(io.len(), sector_size, tweaks);
        if sectors == 0 {
            return;
        }
        match &self.imp {
            Imp::Portable(keys) => keys.run(dir, io, sector_size, tweaks),
            #[cfg(target_arch = "x86_64")]
            Imp::Hw { keys, kernel } => {
                let (src, dst) = match io {
                    Io::InPlace(d) => {
                        let p = d.as_mut_ptr();
                        (p.cast_const(), p)
                    }
                    Io::Copy { src, dst } => (src.as_ptr(), dst.as_mut_ptr()),
                };
                // SAFETY: `kernel` was only stored after `is_available()`
                // confirmed the CPU features it needs (see `with_backend`).
                // `src` and `dst` each cover `sectors * sector_size` bytes
                // (`check_layout`, `check_same_len`), and are either the same
                // pointer (in place) or come from a `&[u8]` and a `&mut [u8]`,
                // which cannot overlap.
                unsafe {
                    keys.run(*kernel, dir, src, dst, sectors, sector_size, tweaks);
                }
            }
        }
    }
}

/// Validates the caller's layout guarantees and returns the sector count.
fn check_layout(len: usize, sector_size: usize, tweaks: Tweaks) -> usize {
    assert!(
        sector_size >= BLOCK && sector_size.is_multiple_of(BLOCK),
        "xts: sector_size must be a non-zero multiple of 16 bytes, got {sector_size}"
    );
    assert!(
        len.is_multiple_of(sector_size),
        "xts: data length {len} is not a multiple of sector_size {sector_size}"
    );
    let sectors = len / sector_size;
    if sectors > 0 {
        // Wrapping would reuse tweaks of sector 0, 1, ..., silently breaking
        // XTS's security, so refuse instead.
        let last = u64::try_from(sectors - 1)
            .ok()
            .and_then(|n| n.checked_mul(tweaks.step))
            .and_then(|n| tweaks.first.checked_add(n));
        assert!(
            last.is_some(),
            "xts: {sectors} sectors starting at sector {} (tweak step {}) overflow the 64-bit sector number",
            tweaks.first,
            tweaks.step
        );
    }
    sectors
}

fn check_same_len(src: &[u8], dst: &[u8]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "xts: source and destination lengths differ"
    );
}

/// Multiplies a tweak by alpha (x) in GF(2^128) with the XTS polynomial
/// x^128 + x^7 + x^2 + x + 1, the tweak read as a little-endian integer.
#[inline]
fn mul_alpha(t: u128) -> u128 {
    // Branch-free: the carry mask is all ones iff the top bit is set.
    let carry = ((t as i128) >> 127) as u128;
    (t << 1) ^ (carry & 0x87)
}

// ---------------------------------------------------------------------------
// Portable back end (the `aes` crate)
// ---------------------------------------------------------------------------

/// Blocks handed to the `aes` crate per call; large enough for its widest
/// parallel path, small enough to stay on the stack and in L1.
const PORTABLE_CHUNK: usize = 64;

// Always boxed as a whole (one per `Xts`), so the 256-byte difference
// between the variants costs nothing worth an extra indirection.
#[allow(clippy::large_enum_variant)]
enum PortableKeys {
    Aes128 { data: Aes128, tweak: Aes128 },
    Aes256 { data: Aes256, tweak: Aes256 },
}

impl PortableKeys {
    fn new(key1: &[u8], key2: &[u8]) -> Box<PortableKeys> {
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

    fn run(&self, dir: Dir, io: Io<'_>, sector_size: usize, tweaks: Tweaks) {
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

// ---------------------------------------------------------------------------
// x86-64 kernels
// ---------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, Backend, Dir, Tweaks};
    use core::arch::x86_64::*;
    use std::arch::is_x86_feature_detected;
    use zeroize::Zeroize;

    /// Round keys needed by the largest variant (AES-256: 14 rounds + 1).
    const MAX_RK: usize = 15;

    /// Which hand-written kernel to run.
    #[derive(Clone, Copy)]
    pub(super) enum Kernel {
        AesNi,
        VaesAvx2,
        VaesAvx512,
    }

    impl Kernel {
        pub(super) fn is_available(self) -> bool {
            // Every kernel needs AES-NI for the key schedule and the sector
            // tweaks, and PCLMULQDQ for tweak updates (both present on every
            // CPU with AES-NI since 2010). SSE2 is part of the x86-64
            // baseline. The std macro caches CPUID, so repeated calls are cheap.
            let aes = is_x86_feature_detected!("aes") && is_x86_feature_detected!("pclmulqdq");
            match self {
                Kernel::AesNi => aes,
                Kernel::VaesAvx2 => {
                    aes && is_x86_feature_detected!("avx2")
                        && is_x86_feature_detected!("vaes")
                        && is_x86_feature_detected!("vpclmulqdq")
                }
                Kernel::VaesAvx512 => {
                    aes && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("vaes")
                        && is_x86_feature_detected!("vpclmulqdq")
                }
            }
        }

        pub(super) fn backend(self) -> Backend {
            match self {
                Kernel::AesNi => Backend::AesNi,
                Kernel::VaesAvx2 => Backend::VaesAvx2,
                Kernel::VaesAvx512 => Backend::VaesAvx512,
            }
        }
    }

    /// Expanded keys for the hand-written kernels. 64-byte aligned so each
    /// schedule starts on a cache line.
    #[repr(C, align(64))]
    pub(super) struct HwKeys {
        /// Encryption round keys of key1 (the data key).
        enc: [[u8; BLOCK]; MAX_RK],
        /// Decryption round keys of key1 for the "equivalent inverse cipher"
        /// that `aesdec` implements: reversed, middle ones through InvMixColumns.
        dec: [[u8; BLOCK]; MAX_RK],
        /// Encryption round keys of key2 (the tweak key).
        tweak: [[u8; BLOCK]; MAX_RK],
        /// Round keys in use: 11 (AES-128) or 15 (AES-256).
        nrk: usize,
    }

    impl Drop for HwKeys {
        fn drop(&mut self) {
            self.enc.zeroize();
            self.dec.zeroize();
            self.tweak.zeroize();
        }
    }

    impl HwKeys {
        /// Expands both key halves (16 or 32 bytes each) directly into a heap
        /// allocation, so no stack copy of the schedule outlives this call.
        pub(super) fn new(key1: &[u8], key2: &[u8]) -> Box<HwKeys> {
            let mut keys = Box::new(HwKeys {
                enc: [[0; BLOCK]; MAX_RK],
                dec: [[0; BLOCK]; MAX_RK],
                tweak: [[0; BLOCK]; MAX_RK],
                nrk: 0,
            });
            assert!(
                is_x86_feature_detected!("aes"),
                "AES-NI kernels constructed on a CPU without AES-NI"
            );
            // SAFETY: AES-NI (and SSE2, baseline on x86-64) was just checked.
            unsafe { expand(key1, key2, &mut keys) };
            keys
        }

        /// Runs `kernel` over `sectors` sectors.
        ///
        /// # Safety
        ///
        /// * The CPU supports `kernel` (`kernel.is_available()` returned true).
        /// * `src` is readable and `dst` writable for `sectors * sector_size`
        ///   bytes, and the two ranges are either identical or disjoint.
        /// * `sector_size` is a non-zero multiple of 16 and the tweak numbers
        ///   of the `sectors` sectors do not overflow.
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn run(
            &self,
            kernel: Kernel,
            dir: Dir,
            src: *const u8,
            dst: *mut u8,
            sectors: usize,
            sector_size: usize,
            tweaks: Tweaks,
        ) {
            // Monomorphize on (round count, direction) so the round loops
            // unroll and the direction costs nothing inside the loop.
            macro_rules! go {
                ($f:ident) => {
                    match (self.nrk, dir) {
                        (11, Dir::Encrypt) => {
                            $f::<11, false>(self, src, dst, sectors, sector_size, tweaks)
                        }
                        (11, Dir::Decrypt) => {
                            $f::<11, true>(self, src, dst, sectors, sector_size, tweaks)
                        }
                        (15, Dir::Encrypt) => {
                            $f::<15, false>(self, src, dst, sectors, sector_size, tweaks)
                        }
                        (15, Dir::Decrypt) => {
                            $f::<15, true>(self, src, dst, sectors, sector_size, tweaks)
                        }
                        _ => unreachable!("round key count is 11 or 15"),
                    }
                };
            }
            // SAFETY: forwarded from this function's contract: features
            // present, pointers valid for the whole run, layout checked.
            unsafe {
                match kernel {
                    Kernel::AesNi => go!(aesni_sectors),
                    Kernel::VaesAvx2 => go!(vaes256_sectors),
                    Kernel::VaesAvx512 => go!(vaes512_sectors),
                }
            }
        }

        /// The data-key schedule for the given direction.
        fn data_keys(&self, decrypt: bool) -> &[[u8; BLOCK]; MAX_RK] {
            if decrypt { &self.dec } else { &self.enc }
        }
    }

    // ----- small helpers --------------------------------------------------

    #[inline]
    #[target_feature(enable = "sse2")]
    fn load(b: &[u8; BLOCK]) -> __m128i {
        // SAFETY: `b` is a valid reference to 16 bytes; loadu has no
        // alignment requirement.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn load_u128(t: &u128) -> __m128i {
        // SAFETY: `t` is a valid reference to 16 bytes; loadu has no
        // alignment requirement. x86 is little-endian, so the bytes are the
        // little-endian tweak.
        unsafe { _mm_loadu_si128((t as *const u128).cast()) }
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn store(b: &mut [u8; BLOCK], v: __m128i) {
        // SAFETY: `b` is a valid, exclusive reference to 16 bytes; storeu has
        // no alignment requirement.
        unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
    }

    /// Tweak times alpha on one 128-bit lane (see `super::mul_alpha`).
    #[inline]
    #[target_feature(enable = "sse2")]
    fn mul_alpha128(t: __m128i) -> __m128i {
        // Arithmetic shift turns the top bit of each dword into a mask; we
        // need bit 127 (dword 3) -> 0x87 into dword 0, and bit 63 (dword 1) ->
        // carry 1 into dword 2. Shuffle 0x13 moves dword 3 to 0 and 1 to 2.
        let m = _mm_srai_epi32::<31>(t);
        let m = _mm_shuffle_epi32::<0x13>(m);
        let m = _mm_and_si128(m, _mm_set_epi32(0, 1, 0, 0x87));
        // add_epi64(t, t) shifts each 64-bit half left by one.
        _mm_xor_si128(_mm_add_epi64(t, t), m)
    }

    /// Forces round `r` of all blocks in flight to be issued before round
    /// `r + 1` of any. Without it LLVM's scheduler, short of xmm registers,
    /// regroups the code to run several blocks' 10-14 dependent rounds back
    /// to back, which makes the kernel latency-bound again (measured 7.3
    /// instead of 8.0 GB/s for AES-256). Emits no instructions.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn round_barrier_xmm(x: &mut [__m128i; NI_PAR]) {
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *x;
        // SAFETY: the template is empty: it only states that the eight values
        // are read and rewritten in registers here. No memory, stack or flags
        // are touched.
        unsafe {
            core::arch::asm!(
                "/* {0} {1} {2} {3} {4} {5} {6} {7} */",
                inout(xmm_reg) a,
                inout(xmm_reg) b,
                inout(xmm_reg) c,
                inout(xmm_reg) d,
                inout(xmm_reg) e,
                inout(xmm_reg) f,
                inout(xmm_reg) g,
                inout(xmm_reg) h,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        *x = [a, b, c, d, e, f, g, h];
    }

    /// Tweak times alpha^8 on one 128-bit lane: a one-byte shift, with the
    /// byte shifted out reduced by a carry-less multiply with 0x87. Cheaper
    /// than eight doublings, and mostly off the ports AES rounds run on.
    #[inline]
    #[target_feature(enable = "sse2,pclmulqdq")]
    fn mul_alpha8_128(t: __m128i, poly: __m128i) -> __m128i {
        let top = _mm_srli_si128::<15>(t);
        _mm_xor_si128(
            _mm_slli_si128::<1>(t),
            _mm_clmulepi64_si128::<0x00>(top, poly),
        )
    }

    // ----- key schedule ---------------------------------------------------

    /// One key-expansion step: `k` with its words prefix-xored, xor `t`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn expand_step(k: __m128i, t: __m128i) -> __m128i {
        let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        _mm_xor_si128(k, t)
    }

    #[target_feature(enable = "aes")]
    fn expand128(key: &[u8; 16], out: &mut [[u8; BLOCK]; MAX_RK]) {
        let mut k = load(key);
        store(&mut out[0], k);
        macro_rules! round {
            ($i:literal, $rcon:literal) => {
                let a = _mm_aeskeygenassist_si128::<$rcon>(k);
                k = expand_step(k, _mm_shuffle_epi32::<0xff>(a));
                store(&mut out[$i], k);
            };
        }
        round!(1, 0x01);
        round!(2, 0x02);
        round!(3, 0x04);
        round!(4, 0x08);
        round!(5, 0x10);
        round!(6, 0x20);
        round!(7, 0x40);
        round!(8, 0x80);
        round!(9, 0x1b);
        round!(10, 0x36);
    }

    #[target_feature(enable = "aes")]
    fn expand256(key: &[u8; 32], out: &mut [[u8; BLOCK]; MAX_RK]) {
        let (lo, hi) = key.split_at(16);
        let mut a = load(lo.try_into().expect("16 bytes"));
        let mut b = load(hi.try_into().expect("16 bytes"));
        store(&mut out[0], a);
        store(&mut out[1], b);
        // Even round keys use RotWord+SubWord+Rcon of the previous odd one
        // (shuffle 0xff); odd ones use SubWord only (shuffle 0xaa, rcon 0).
        macro_rules! pair {
            ($i:literal, $rcon:literal) => {
                let t = _mm_aeskeygenassist_si128::<$rcon>(b);
                a = expand_step(a, _mm_shuffle_epi32::<0xff>(t));
                store(&mut out[$i], a);
                let t = _mm_aeskeygenassist_si128::<0x00>(a);
                b = expand_step(b, _mm_shuffle_epi32::<0xaa>(t));
                store(&mut out[$i + 1], b);
            };
        }
        pair!(2, 0x01);
        pair!(4, 0x02);
        pair!(6, 0x04);
        pair!(8, 0x08);
        pair!(10, 0x10);
        pair!(12, 0x20);
        let t = _mm_aeskeygenassist_si128::<0x40>(b);
        a = expand_step(a, _mm_shuffle_epi32::<0xff>(t));
        store(&mut out[14], a);
    }

    #[target_feature(enable = "aes")]
    fn expand(key1: &[u8], key2: &[u8], keys: &mut HwKeys) {
        keys.nrk = match key1.len() {
            16 => {
                expand128(key1.try_into().expect("16"), &mut keys.enc);
                expand128(key2.try_into().expect("16"), &mut keys.tweak);
                11
            }
            32 => {
                expand256(key1.try_into().expect("32"), &mut keys.enc);
                expand256(key2.try_into().expect("32"), &mut keys.tweak);
                15
            }
            _ => unreachable!("key length checked in Xts::with_backend"),
        };
        let last = keys.nrk - 1;
        keys.dec[0] = keys.enc[last];
        for i in 1..last {
            store(
                &mut keys.dec[i],
                _mm_aesimc_si128(load(&keys.enc[last - i])),
            );
        }
        keys.dec[last] = keys.enc[0];
    }

    // ----- AES-NI kernel: 8 blocks in flight in xmm registers -------------

    /// Blocks in flight; AES-NI latency is about 4 cycles at up to two
    /// instructions per cycle, so 8 independent blocks keep the units busy.
    const NI_PAR: usize = 8;

    /// Encrypts the tweak numbers of the first `count` sectors of `t` (`count`
    /// in 1..=NI_PAR) with the tweak key into `out[..count]`, with the work
    /// rounded up to a power of two rather than always NI_PAR blocks: a call
    /// with one 512-byte sector would otherwise spend a fifth of its AES
    /// rounds on unused tweaks.
    #[inline]
    #[target_feature(enable = "aes,sse2")]
    fn aesni_initial_tweaks<const NRK: usize>(
        tk: &[[u8; BLOCK]; MAX_RK],
        t: Tweaks,
        count: usize,
        out: &mut [u128; NI_PAR],
    ) {
        match count {
            1 => aesni_encrypt_sector_numbers::<NRK, 1>(tk, t, out),
            2 => aesni_encrypt_sector_numbers::<NRK, 2>(tk, t, out),
            3 | 4 => aesni_encrypt_sector_numbers::<NRK, 4>(tk, t, out),
            _ => aesni_encrypt_sector_numbers::<NRK, NI_PAR>(tk, t, out),
        }
    }

    /// `out[..W]` = AES-Enc(key2, plain64(t.nth(i))), W blocks interleaved.
    #[inline]
    #[target_feature(enable = "aes,sse2")]
    fn aesni_encrypt_sector_numbers<const NRK: usize, const W: usize>(
        tk: &[[u8; BLOCK]; MAX_RK],
        t: Tweaks,
        out: &mut [u128; NI_PAR],
    ) {
        let k0 = load(&tk[0]);
        let mut x = [_mm_setzero_si128(); W];
        for (i, xi) in x.iter_mut().enumerate() {
            // plain64: low 64 bits = sector number, high 64 bits = 0. Lanes
            // past the last sector may wrap; their tweaks are never used.
            let n = t.nth(i);
            *xi = _mm_xor_si128(_mm_set_epi64x(0, n as i64), k0);
        }
        for k in &tk[1..NRK - 1] {
            let k = load(k);
            for xi in x.iter_mut() {
                *xi = _mm_aesenc_si128(*xi, k);
            }
        }
        let kl = load(&tk[NRK - 1]);
        for (o, xi) in out.iter_mut().zip(x) {
            let y = _mm_aesenclast_si128(xi, kl);
            // SAFETY: `o` is a valid, exclusive reference to 16 bytes.
            unsafe { _mm_storeu_si128((o as *mut u128).cast(), y) };
        }
    }

    /// One block through XTS: input tweak and round key 0, rounds 1..NRK-1,
    /// then the last round with the output tweak folded into its key
    /// (`aesenclast(x, k ^ t) == aesenclast(x, k) ^ t`, saving an XOR).
    #[inline]
    #[target_feature(enable = "aes,sse2")]
    fn aesni_block<const NRK: usize, const DEC: bool>(
        rk: &[__m128i; NRK],
        x: __m128i,
        t: __m128i,
    ) -> __m128i {
        let mut x = _mm_xor_si128(_mm_xor_si128(x, t), rk[0]);
        for &k in &rk[1..NRK - 1] {
            x = if DEC {
                _mm_aesdec_si128(x, k)
            } else {
                _mm_aesenc_si128(x, k)
            };
        }
        let kl = _mm_xor_si128(rk[NRK - 1], t);
        if DEC {
            _mm_aesdeclast_si128(x, kl)
        } else {
            _mm_aesenclast_si128(x, kl)
        }
    }

    /// # Safety
    ///
    /// CPU has AES-NI and PCLMULQDQ; `src`/`dst` valid for `sectors * sector_size` bytes,
    /// identical or disjoint; tweak numbers do not overflow.
    #[target_feature(enable = "aes,sse2,pclmulqdq")]
    unsafe fn aesni_sectors<const NRK: usize, const DEC: bool>(
        keys: &HwKeys,
        src: *const u8,
        dst: *mut u8,
        sectors: usize,
        sector_size: usize,
        tweaks: Tweaks,
    ) {
        let data_keys = keys.data_keys(DEC);
        let mut rk = [_mm_setzero_si128(); NRK];
        for (r, k) in rk.iter_mut().zip(data_keys) {
            *r = load(k);
        }
        let blocks = sector_size / BLOCK;
        // u128 rather than bytes so the final volatile wipe is 8 stores.
        let mut initial = [0u128; NI_PAR];
        let mut s = 0;
        while s < sectors {
            let batch = (sectors - s).min(NI_PAR);
            aesni_initial_tweaks::<NRK>(&keys.tweak, tweaks.skip(s), batch, &mut initial);
            for (i, t0) in initial[..batch].iter().enumerate() {
                let off = (s + i) * sector_size;
                // SAFETY: sector `s + i` < `sectors`, so `off + sector_size`
                // bytes are within both buffers (caller's contract).
                unsafe {
                    aesni_sector::<NRK, DEC>(
                        &rk,
                        load_u128(t0),
                        src.add(off),
                        dst.add(off),
                        blocks,
                    );
                }
            }
            s += batch;
        }
        initial.zeroize();
    }

    /// # Safety
    ///
    /// `src`/`dst` valid for `blocks * 16` bytes, identical or disjoint.
    #[inline]
    #[target_feature(enable = "aes,sse2,pclmulqdq")]
    unsafe fn aesni_sector<const NRK: usize, const DEC: bool>(
        rk: &[__m128i; NRK],
        t0: __m128i,
        src: *const u8,
        dst: *mut u8,
        blocks: usize,
    ) {
        // tw[i] is the tweak of block i of the current group of NI_PAR; each
        // group advances all of them by alpha^NI_PAR, independently.
        let poly = _mm_set_epi64x(0, 0x87);
        let mut tw = [t0; NI_PAR];
        for i in 1..NI_PAR {
            tw[i] = mul_alpha128(tw[i - 1]);
        }
        let mut off = 0;
        for _ in 0..blocks / NI_PAR {
            let mut x = [_mm_setzero_si128(); NI_PAR];
            for (i, xi) in x.iter_mut().enumerate() {
                // SAFETY: `off + 16 * NI_PAR <= blocks * 16` inside this loop.
                let d = unsafe { _mm_loadu_si128(src.add(off + i * BLOCK).cast()) };
                *xi = _mm_xor_si128(_mm_xor_si128(d, tw[i]), rk[0]);
            }
            for &k in &rk[1..NRK - 1] {
                for xi in x.iter_mut() {
                    *xi = if DEC {
                        _mm_aesdec_si128(*xi, k)
                    } else {
                        _mm_aesenc_si128(*xi, k)
                    };
                }
                round_barrier_xmm(&mut x);
            }
            for (i, xi) in x.into_iter().enumerate() {
                let kl = _mm_xor_si128(rk[NRK - 1], tw[i]);
                let y = if DEC {
                    _mm_aesdeclast_si128(xi, kl)
                } else {
                    _mm_aesenclast_si128(xi, kl)
                };
                // SAFETY: same range as the load above; every load of this
                // group happened before, so in-place operation is fine.
                unsafe { _mm_storeu_si128(dst.add(off + i * BLOCK).cast(), y) };
            }
            for t in tw.iter_mut() {
                *t = mul_alpha8_128(*t, poly);
            }
            off += NI_PAR * BLOCK;
        }
        // Fewer than NI_PAR blocks left (sectors that are not a multiple of
        // 128 bytes): one at a time, with the tweaks already in `tw`.
        for &t in &tw[..blocks % NI_PAR] {
            // SAFETY: `off + 16 <= blocks * 16` for each remaining block.
            let d = unsafe { _mm_loadu_si128(src.add(off).cast()) };
            let y = aesni_block::<NRK, DEC>(rk, d, t);
            // SAFETY: as for the load.
            unsafe { _mm_storeu_si128(dst.add(off).cast(), y) };
            off += BLOCK;
        }
    }

    // ----- VAES + AVX-512 kernel: 4 zmm x 4 blocks in flight ----------------

    /// zmm registers in flight (4 blocks each). Eight measured no faster than
    /// four on the Sapphire Rapids-class core this was tuned on: the kernel is
    /// bound by `vaesenc` throughput (about one zmm per cycle), not latency.
    const Z_PAR: usize = 4;
    /// Blocks processed per main-loop iteration; a multiple of 8 so the
    /// tweak advance is a whole-byte shift.
    const Z_GROUP: usize = 4 * Z_PAR;
    const Z_GROUP_BYTES: i32 = {
        assert!(Z_GROUP.is_multiple_of(8));
        (Z_GROUP / 8) as i32
    };

    /// Multiplies each 128-bit lane by alpha^S (`R` must be `64 - S`; stable
    /// Rust cannot compute it from `S`). Valid for S <= 56 so that the top S
    /// bits times 0x87 still fit in 64 bits.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
    fn mul_alpha_pow_512<const S: u32, const R: u32>(v: __m512i, poly: __m512i) -> __m512i {
        const { assert!(S + R == 64 && S >= 1 && S <= 56) };
        // Top S bits of each 64-bit half.
        let carry = _mm512_srli_epi64::<R>(v);
        let shifted = _mm512_slli_epi64::<S>(v);
        // Low half's carry moves into the high half ...
        let into_high = _mm512_bslli_epi128::<8>(carry);
        // ... and the high half's carry is reduced: (bits * 0x87) into the low half.
        let reduced = _mm512_clmulepi64_epi128::<0x01>(carry, poly);
        _mm512_ternarylogic_epi64::<0x96>(shifted, into_high, reduced)
    }

    /// Multiplies each 128-bit lane by alpha^(8*B) (`R` must be `16 - B`):
    /// whole-byte shifts plus one carry-less multiply. Used for the per-group
    /// advance because byte shuffles and `vpclmulqdq` do not compete with
    /// `vaesenc` for execution ports the way bit shifts do on Intel cores
    /// (13.3 -> 14.6 GB/s for AES-256 here). Valid for B <= 7, so the top bytes
    /// times 0x87 fit in 64 bits.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
    fn mul_alpha_bytes_512<const B: i32, const R: i32>(v: __m512i, poly: __m512i) -> __m512i {
        const { assert!(B + R == 16 && B >= 1 && B <= 7) };
        let top = _mm512_bsrli_epi128::<R>(v);
        let shifted = _mm512_bslli_epi128::<B>(v);
        _mm512_xor_si512(shifted, _mm512_clmulepi64_epi128::<0x00>(top, poly))
    }

    /// `[t, t*a, t*a^2, t*a^3]` from one tweak `t`, using per-lane shifts.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
    fn first_tweak_vec(t: __m128i, poly: __m512i) -> __m512i {
        let b = _mm512_broadcast_i32x4(t);
        // Lane i is shifted left by i; a right shift by 64 (lane 0) gives 0.
        let shifted = _mm512_sllv_epi64(b, _mm512_set_epi64(3, 3, 2, 2, 1, 1, 0, 0));
        let carry = _mm512_srlv_epi64(b, _mm512_set_epi64(61, 61, 62, 62, 63, 63, 64, 64));
        let into_high = _mm512_bslli_epi128::<8>(carry);
        let reduced = _mm512_clmulepi64_epi128::<0x01>(carry, poly);
        _mm512_ternarylogic_epi64::<0x96>(shifted, into_high, reduced)
    }

    /// One zmm of four blocks through the full cipher with tweak vector `t`.
    #[inline]
    #[target_feature(enable = "avx512f,vaes")]
    fn vaes512_vec<const NRK: usize, const DEC: bool>(
        rk: &[__m512i; NRK],
        x: __m512i,
        t: __m512i,
    ) -> __m512i {
        let mut x = _mm512_ternarylogic_epi64::<0x96>(x, t, rk[0]);
        for &k in &rk[1..NRK - 1] {
            x = if DEC {
                _mm512_aesdec_epi128(x, k)
            } else {
                _mm512_aesenc_epi128(x, k)
            };
        }
        let kl = _mm512_xor_si512(rk[NRK - 1], t);
        if DEC {
            _mm512_aesdeclast_epi128(x, kl)
        } else {
            _mm512_aesenclast_epi128(x, kl)
        }
    }

    /// Sectors whose initial tweaks are computed together (four per zmm).
    const Z_TWEAK_BATCH: usize = 16;

    /// Encrypts the tweak numbers of the first `count` sectors of `t` (`count`
    /// in 1..=Z_TWEAK_BATCH) with the tweak key into `out[..count]`, using only
    /// as many zmm registers as needed (rounded up to a power of two).
    #[inline]
    #[target_feature(enable = "avx512f,vaes")]
    fn vaes512_initial_tweaks<const NRK: usize>(
        tk: &[[u8; BLOCK]; MAX_RK],
        t: Tweaks,
        count: usize,
        out: &mut [u128; Z_TWEAK_BATCH],
    ) {
        match count.div_ceil(4) {
            1 => vaes512_encrypt_sector_numbers::<NRK, 1>(tk, t, out),
            2 => vaes512_encrypt_sector_numbers::<NRK, 2>(tk, t, out),
            _ => vaes512_encrypt_sector_numbers::<NRK, 4>(tk, t, out),
        }
    }

    /// `out[..4 * V]` = AES-Enc(key2, plain64(t.nth(i))), four per zmm.
    #[inline]
    #[target_feature(enable = "avx512f,vaes")]
    fn vaes512_encrypt_sector_numbers<const NRK: usize, const V: usize>(
        tk: &[[u8; BLOCK]; MAX_RK],
        t: Tweaks,
        out: &mut [u128; Z_TWEAK_BATCH],
    ) {
        const { assert!(4 * V <= Z_TWEAK_BATCH) };
        let mut x = [_mm512_setzero_si512(); V];
        for (q, xq) in x.iter_mut().enumerate() {
            // Lanes past the last sector may wrap; their tweaks are unused.
            let n = |i: usize| t.nth(4 * q + i) as i64;
            *xq = _mm512_set_epi64(0, n(3), 0, n(2), 0, n(1), 0, n(0));
        }
        let k0 = _mm512_broadcast_i32x4(load(&tk[0]));
        for xq in x.iter_mut() {
            *xq = _mm512_xor_si512(*xq, k0);
        }
        for k in &tk[1..NRK - 1] {
            let k = _mm512_broadcast_i32x4(load(k));
            for xq in x.iter_mut() {
                *xq = _mm512_aesenc_epi128(*xq, k);
            }
        }
        let kl = _mm512_broadcast_i32x4(load(&tk[NRK - 1]));
        for (q, xq) in x.into_iter().enumerate() {
            let y = _mm512_aesenclast_epi128(xq, kl);
            // SAFETY: `out[4q..4q+4]` is 64 contiguous bytes of an exclusive
            // borrow (4q + 4 <= 4V <= Z_TWEAK_BATCH).
            unsafe { _mm512_storeu_si512(out[4 * q..4 * q + 4].as_mut_ptr().cast(), y) };
        }
    }

    /// # Safety
    ///
    /// CPU has AVX-512F/BW, VAES, VPCLMULQDQ; `src`/`dst` valid for
    /// `sectors * sector_size` bytes, identical or disjoint; tweak numbers
    /// do not overflow.
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq")]
    unsafe fn vaes512_sectors<const NRK: usize, const DEC: bool>(
        keys: &HwKeys,
        src: *const u8,
        dst: *mut u8,
        sectors: usize,
        sector_size: usize,
        tweaks: Tweaks,
    ) {
        let data_keys = keys.data_keys(DEC);
        let mut rk = [_mm512_setzero_si512(); NRK];
        for (r, k) in rk.iter_mut().zip(data_keys) {
            *r = _mm512_broadcast_i32x4(load(k));
        }
        // x^7 + x^2 + x + 1 in the low 64 bits of every lane.
        let poly = _mm512_set_epi64(0, 0x87, 0, 0x87, 0, 0x87, 0, 0x87);
        let blocks = sector_size / BLOCK;
        // u128 rather than bytes so the final volatile wipe is 16 stores.
        let mut initial = [0u128; Z_TWEAK_BATCH];
        let mut s = 0;
        while s < sectors {
            let batch = (sectors - s).min(Z_TWEAK_BATCH);
            vaes512_initial_tweaks::<NRK>(&keys.tweak, tweaks.skip(s), batch, &mut initial);
            for (i, t0) in initial[..batch].iter().enumerate() {
                let off = (s + i) * sector_size;
                // SAFETY: sector `s + i` < `sectors`, so `off + sector_size`
                // bytes are within both buffers (caller's contract).
                unsafe {
                    vaes512_sector::<NRK, DEC>(
                        &rk,
                        poly,
                        load_u128(t0),
                        src.add(off),
                        dst.add(off),
                        blocks,
                    );
                }
            }
            s += batch;
        }
        initial.zeroize();
    }

    /// # Safety
    ///
    /// `src`/`dst` valid for `blocks * 16` bytes, identical or disjoint.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq")]
    unsafe fn vaes512_sector<const NRK: usize, const DEC: bool>(
        rk: &[__m512i; NRK],
        poly: __m512i,
        t0: __m128i,
        src: *const u8,
        dst: *mut u8,
        blocks: usize,
    ) {
        // tw[k] holds the tweaks of blocks 4k .. 4k+3 of the current group.
        let mut tw = [_mm512_setzero_si512(); Z_PAR];
        tw[0] = first_tweak_vec(t0, poly);
        for k in 1..Z_PAR {
            tw[k] = mul_alpha_pow_512::<4, 60>(tw[k - 1], poly);
        }
        let mut off = 0;
        for _ in 0..blocks / Z_GROUP {
            let mut x = [_mm512_setzero_si512(); Z_PAR];
            for (k, xk) in x.iter_mut().enumerate() {
                // SAFETY: `off + 64 * Z_PAR <= blocks * 16` inside this loop.
                let d = unsafe { _mm512_loadu_si512(src.add(off + 64 * k).cast()) };
                *xk = _mm512_ternarylogic_epi64::<0x96>(d, tw[k], rk[0]);
            }
            for &key in &rk[1..NRK - 1] {
                for xk in x.iter_mut() {
                    *xk = if DEC {
                        _mm512_aesdec_epi128(*xk, key)
                    } else {
                        _mm512_aesenc_epi128(*xk, key)
                    };
                }
            }
            for (k, xk) in x.into_iter().enumerate() {
                let kl = _mm512_xor_si512(rk[NRK - 1], tw[k]);
                let y = if DEC {
                    _mm512_aesdeclast_epi128(xk, kl)
                } else {
                    _mm512_aesenclast_epi128(xk, kl)
                };
                // SAFETY: same range as the loads above, all of which
                // happened first, so in-place operation is fine.
                unsafe { _mm512_storeu_si512(dst.add(off + 64 * k).cast(), y) };
            }
            for t in tw.iter_mut() {
                *t = mul_alpha_bytes_512::<Z_GROUP_BYTES, { 16 - Z_GROUP_BYTES }>(*t, poly);
            }
            off += 64 * Z_PAR;
        }

        // Fewer than Z_GROUP blocks left (only for sectors that are not a
        // multiple of 256 bytes): whole zmm registers, then a masked one.
        let rem = blocks % Z_GROUP;
        for &t in &tw[..rem / 4] {
            // SAFETY: 64 bytes at `off` are within the sector (rem / 4 whole
            // vectors remain).
            let d = unsafe { _mm512_loadu_si512(src.add(off).cast()) };
            let y = vaes512_vec::<NRK, DEC>(rk, d, t);
            // SAFETY: as for the load.
            unsafe { _mm512_storeu_si512(dst.add(off).cast(), y) };
            off += 64;
        }
        let part = rem % 4;
        if part > 0 {
            // One mask bit per 32-bit element, four per block.
            let mask: __mmask16 = (1u16 << (4 * part)) - 1;
            // SAFETY: the mask covers exactly the `part * 16` bytes left in the
            // sector; masked-off elements are neither read nor written and
            // cannot fault.
            let d = unsafe { _mm512_maskz_loadu_epi32(mask, src.add(off).cast()) };
            let y = vaes512_vec::<NRK, DEC>(rk, d, tw[rem / 4]);
            // SAFETY: as for the masked load.
            unsafe { _mm512_mask_storeu_epi32(dst.add(off).cast(), mask, y) };
        }
    }

    // ----- VAES + AVX2 kernel: 2 blocks per ymm register --------------------

    /// ymm registers in flight (2 blocks each). With only 16 ymm registers,
    /// 8 data + 8 tweak vectors fill the register file and round keys come
    /// from memory (L1, one load per `vaesenc`, which is cheap).
    const Y_PAR: usize = 8;
    /// Blocks processed per main-loop iteration (a multiple of 8, see Z_GROUP).
    const Y_GROUP: usize = 2 * Y_PAR;
    const Y_GROUP_BYTES: i32 = {
        assert!(Y_GROUP.is_multiple_of(8));
        (Y_GROUP / 8) as i32
    };

    /// Multiplies each 128-bit lane by alpha^S (`R` must be `64 - S`).
    #[inline]
    #[target_feature(enable = "avx2,vpclmulqdq")]
    fn mul_alpha_pow_256<const S: i32, const R: i32>(v: __m256i, poly: __m256i) -> __m256i {
        const { assert!(S + R == 64 && S >= 1 && S <= 56) };
        let carry = _mm256_srli_epi64::<R>(v);
        let shifted = _mm256_slli_epi64::<S>(v);
        let into_high = _mm256_bslli_epi128::<8>(carry);
        let reduced = _mm256_clmulepi64_epi128::<0x01>(carry, poly);
        _mm256_xor_si256(_mm256_xor_si256(shifted, into_high), reduced)
    }

    /// [`mul_alpha_bytes_512`] on 256-bit vectors.
    #[inline]
    #[target_feature(enable = "avx2,vpclmulqdq")]
    fn mul_alpha_bytes_256<const B: i32, const R: i32>(v: __m256i, poly: __m256i) -> __m256i {
        const { assert!(B + R == 16 && B >= 1 && B <= 7) };
        let top = _mm256_bsrli_epi128::<R>(v);
        let shifted = _mm256_bslli_epi128::<B>(v);
        _mm256_xor_si256(shifted, _mm256_clmulepi64_epi128::<0x00>(top, poly))
    }

    /// `[t, t*a]` from one tweak `t`.
    #[inline]
    #[target_feature(enable = "avx2,vpclmulqdq")]
    fn first_tweak_vec256(t: __m128i, poly: __m256i) -> __m256i {
        let b = _mm256_broadcastsi128_si256(t);
        let shifted = _mm256_sllv_epi64(b, _mm256_set_epi64x(1, 1, 0, 0));
        let carry = _mm256_srlv_epi64(b, _mm256_set_epi64x(63, 63, 64, 64));
        let into_high = _mm256_bslli_epi128::<8>(carry);
        let reduced = _mm256_clmulepi64_epi128::<0x01>(carry, poly);
        _mm256_xor_si256(_mm256_xor_si256(shifted, into_high), reduced)
    }

    /// One ymm of two blocks through the full cipher with tweak vector `t`.
    #[inline]
    #[target_feature(enable = "avx2,vaes")]
    fn vaes256_vec<const NRK: usize, const DEC: bool>(
        rk: &[__m256i; NRK],
        x: __m256i,
        t: __m256i,
    ) -> __m256i {
        let mut x = _mm256_xor_si256(_mm256_xor_si256(x, t), rk[0]);
        for &k in &rk[1..NRK - 1] {
            x = if DEC {
                _mm256_aesdec_epi128(x, k)
            } else {
                _mm256_aesenc_epi128(x, k)
            };
        }
        let kl = _mm256_xor_si256(rk[NRK - 1], t);
        if DEC {
            _mm256_aesdeclast_epi128(x, kl)
        } else {
            _mm256_aesenclast_epi128(x, kl)
        }
    }

    /// # Safety
    ///
    /// CPU has AVX2, VAES, VPCLMULQDQ, AES-NI; `src`/`dst` valid for
    /// `sectors * sector_size` bytes, identical or disjoint; tweak numbers
    /// do not overflow.
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes")]
    unsafe fn vaes256_sectors<const NRK: usize, const DEC: bool>(
        keys: &HwKeys,
        src: *const u8,
        dst: *mut u8,
        sectors: usize,
        sector_size: usize,
        tweaks: Tweaks,
    ) {
        let data_keys = keys.data_keys(DEC);
        let mut rk = [_mm256_setzero_si256(); NRK];
        for (r, k) in rk.iter_mut().zip(data_keys) {
            *r = _mm256_broadcastsi128_si256(load(k));
        }
        let poly = _mm256_set_epi64x(0, 0x87, 0, 0x87);
        let blocks = sector_size / BLOCK;
        // Initial tweaks: the AES-NI helper already does 8 at a time.
        // u128 rather than bytes so the final volatile wipe is 8 stores.
        let mut initial = [0u128; NI_PAR];
        let mut s = 0;
        while s < sectors {
            let batch = (sectors - s).min(NI_PAR);
            aesni_initial_tweaks::<NRK>(&keys.tweak, tweaks.skip(s), batch, &mut initial);
            for (i, t0) in initial[..batch].iter().enumerate() {
                let off = (s + i) * sector_size;
                // SAFETY: sector `s + i` < `sectors`, so `off + sector_size`
                // bytes are within both buffers (caller's contract).
                unsafe {
                    vaes256_sector::<NRK, DEC>(
                        &rk,
                        poly,
                        load_u128(t0),
                        src.add(off),
                        dst.add(off),
                        blocks,
                    );
                }
            }
            s += batch;
        }
        initial.zeroize();
    }

    /// # Safety
    ///
    /// `src`/`dst` valid for `blocks * 16` bytes, identical or disjoint.
    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq")]
    unsafe fn vaes256_sector<const NRK: usize, const DEC: bool>(
        rk: &[__m256i; NRK],
        poly: __m256i,
        t0: __m128i,
        src: *const u8,
        dst: *mut u8,
        blocks: usize,
    ) {
        let mut tw = [_mm256_setzero_si256(); Y_PAR];
        tw[0] = first_tweak_vec256(t0, poly);
        for k in 1..Y_PAR {
            tw[k] = mul_alpha_pow_256::<2, 62>(tw[k - 1], poly);
        }
        let mut off = 0;
        for _ in 0..blocks / Y_GROUP {
            let mut x = [_mm256_setzero_si256(); Y_PAR];
            for (k, xk) in x.iter_mut().enumerate() {
                // SAFETY: `off + 32 * Y_PAR <= blocks * 16` inside this loop.
                let d = unsafe { _mm256_loadu_si256(src.add(off + 32 * k).cast()) };
                *xk = _mm256_xor_si256(_mm256_xor_si256(d, tw[k]), rk[0]);
            }
            for &key in &rk[1..NRK - 1] {
                for xk in x.iter_mut() {
                    *xk = if DEC {
                        _mm256_aesdec_epi128(*xk, key)
                    } else {
                        _mm256_aesenc_epi128(*xk, key)
                    };
                }
            }
            for (k, xk) in x.into_iter().enumerate() {
                let kl = _mm256_xor_si256(rk[NRK - 1], tw[k]);
                let y = if DEC {
                    _mm256_aesdeclast_epi128(xk, kl)
                } else {
                    _mm256_aesenclast_epi128(xk, kl)
                };
                // SAFETY: same range as the loads above, all of which
                // happened first, so in-place operation is fine.
                unsafe { _mm256_storeu_si256(dst.add(off + 32 * k).cast(), y) };
            }
            for t in tw.iter_mut() {
                *t = mul_alpha_bytes_256::<Y_GROUP_BYTES, { 16 - Y_GROUP_BYTES }>(*t, poly);
            }
            off += 32 * Y_PAR;
        }

        // Fewer than Y_GROUP blocks left: whole ymm registers, then at most
        // one block through a masked load/store of the low 128 bits.
        let rem = blocks % Y_GROUP;
        for &t in &tw[..rem / 2] {
            // SAFETY: 32 bytes at `off` are within the sector.
            let d = unsafe { _mm256_loadu_si256(src.add(off).cast()) };
            let y = vaes256_vec::<NRK, DEC>(rk, d, t);
            // SAFETY: as for the load.
            unsafe { _mm256_storeu_si256(dst.add(off).cast(), y) };
            off += 32;
        }
        if rem % 2 == 1 {
            let mask = _mm256_set_epi64x(0, 0, -1, -1);
            // SAFETY: the mask selects exactly the 16 bytes left in the
            // sector; masked-off elements are neither accessed nor fault.
            let d = unsafe { _mm256_maskload_epi64(src.add(off).cast(), mask) };
            let y = vaes256_vec::<NRK, DEC>(rk, d, tw[rem / 2]);
            // SAFETY: as for the masked load.
            unsafe { _mm256_maskstore_epi64(dst.add(off).cast(), mask, y) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xts_mode::{Xts128, get_tweak_default};

    /// Sector sizes the project uses plus the smallest ones.
    const SECTOR_SIZES: [usize; 4] = [16, 32, 512, 4096];

    fn available() -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|b| b.is_available())
            .collect()
    }

    fn xts_for(key: &[u8], backend: Backend) -> Xts {
        Xts::with_backend(key, backend)
            .expect("valid key length")
            .expect("backend is available")
    }

    /// Deterministic filler (splitmix64), so proptest only has to generate
    /// and shrink a seed rather than kilobytes of data.
    fn fill(seed: u64, len: usize) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Reference result from the `xts-mode` crate.
    fn reference(key: &[u8], data: &[u8], sector_size: usize, first: u64, dir: Dir) -> Vec<u8> {
        reference_stepped(key, data, sector_size, first, 1, dir)
    }

    /// Reference result from the `xts-mode` crate, sector `i` with tweak
    /// number `first + i * step` (its tweak function gets the index `i`).
    fn reference_stepped(
        key: &[u8],
        data: &[u8],
        sector_size: usize,
        first: u64,
        step: u64,
        dir: Dir,
    ) -> Vec<u8> {
        let tweak = |i: u128| get_tweak_default(u128::from(first) + i * u128::from(step));
        let mut buf = data.to_vec();
        let (k1, k2) = key.split_at(key.len() / 2);
        macro_rules! with {
            ($c:ty) => {{
                let x = Xts128::<$c>::new(
                    <$c>::new_from_slice(k1).unwrap(),
                    <$c>::new_from_slice(k2).unwrap(),
                );
                match dir {
                    Dir::Encrypt => x.encrypt_area(&mut buf, sector_size, 0, tweak),
                    Dir::Decrypt => x.decrypt_area(&mut buf, sector_size, 0, tweak),
                }
            }};
        }
        match key.len() {
            32 => with!(Aes128),
            64 => with!(Aes256),
            _ => unreachable!(),
        }
        buf
    }

    /// Checks all four entry points of every available back end against the
    /// reference, in both directions.
    fn check_all(key: &[u8], data: &[u8], sector_size: usize, first: u64) {
        check_all_stepped(key, data, sector_size, first, 1);
    }

    /// [`check_all`] with tweak step `step` (the default step when it is 1).
    fn check_all_stepped(key: &[u8], data: &[u8], sector_size: usize, first: u64, step: u64) {
        let want_ct = reference_stepped(key, data, sector_size, first, step, Dir::Encrypt);
        let want_pt = reference_stepped(key, data, sector_size, first, step, Dir::Decrypt);
        for backend in available() {
            let x = xts_for(key, backend);
            let x = if step == 1 {
                x
            } else {
                x.with_tweak_step(step)
            };
            assert_eq!(x.tweak_step(), step);
            let ctx = format!(
                "backend {} key {} bytes sector_size {sector_size} sectors {} first {first} step {step}",
                backend.name(),
                key.len(),
                data.len() / sector_size
            );

            let mut buf = data.to_vec();
            x.encrypt_sectors(&mut buf, sector_size, first);
            assert!(buf == want_ct, "encrypt in place: {ctx}");
            x.decrypt_sectors(&mut buf, sector_size, first);
            assert!(buf == data, "decrypt in place round trip: {ctx}");

            let mut buf = data.to_vec();
            x.decrypt_sectors(&mut buf, sector_size, first);
            assert!(buf == want_pt, "decrypt in place: {ctx}");

            let mut out = vec![0xa5; data.len()];
            x.encrypt_sectors_to(data, &mut out, sector_size, first);
            assert!(out == want_ct, "encrypt_to: {ctx}");
            let mut back = vec![0x5a; data.len()];
            x.decrypt_sectors_to(&out, &mut back, sector_size, first);
            assert!(back == data, "decrypt_to round trip: {ctx}");
            x.decrypt_sectors_to(data, &mut out, sector_size, first);
            assert!(out == want_pt, "decrypt_to: {ctx}");
        }
    }

    // ----- IEEE 1619-2007 Annex B known-answer vectors ---------------------

    struct Vector {
        number: u32,
        key: Vec<u8>,
        dus: u64,
        pt: Vec<u8>,
        ct: Vec<u8>,
    }

    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    /// Parses the vector file; format documented at its top.
    fn parse_vectors(text: &str) -> Vec<Vector> {
        #[derive(Default)]
        struct Raw {
            number: u32,
            key1: String,
            key2: String,
            dus: Option<u64>,
            pt: String,
            ct: String,
        }
        let mut raws: Vec<Raw> = Vec::new();
        for (lineno, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("line {}: expected `name = value`", lineno + 1));
            let (name, value) = (name.trim(), value.trim());
            if name == "vector" {
                raws.push(Raw {
                    number: value.parse().expect("vector number"),
                    ..Raw::default()
                });
                continue;
            }
            let raw = raws
                .last_mut()
                .unwrap_or_else(|| panic!("line {}: field before `vector =`", lineno + 1));
            match name {
                "key1" => raw.key1.push_str(value),
                "key2" => raw.key2.push_str(value),
                "pt" => raw.pt.push_str(value),
                "ct" => raw.ct.push_str(value),
                "dus" => {
                    let n = match value.strip_prefix("0x") {
                        Some(h) => u64::from_str_radix(h, 16),
                        None => value.parse(),
                    };
                    raw.dus = Some(n.expect("dus fits in u64"));
                }
                other => panic!("line {}: unknown field `{other}`", lineno + 1),
            }
        }
        raws.into_iter()
            .map(|r| {
                let mut key = hex(&r.key1);
                key.extend(hex(&r.key2));
                let v = Vector {
                    number: r.number,
                    key,
                    dus: r.dus.expect("dus present"),
                    pt: hex(&r.pt),
                    ct: hex(&r.ct),
                };
                assert_eq!(v.pt.len(), v.ct.len(), "vector {}", v.number);
                assert!(!v.pt.is_empty(), "vector {}", v.number);
                v
            })
            .collect()
    }

    /// Path relative to this file; adjust when moving the data file.
    const VECTOR_FILE: &str = include_str!("../../formats/xts-vectors.txt");

    #[test]
    fn ieee_1619_vectors() {
        let vectors = parse_vectors(VECTOR_FILE);
        let numbers: Vec<u32> = vectors.iter().map(|v| v.number).collect();
        assert_eq!(
            numbers,
            (1..=14).collect::<Vec<_>>(),
            "vectors 1-14, in order"
        );

        for v in &vectors {
            let size = v.pt.len();
            // The reference implementation must agree with the file too, so a
            // typo in the file cannot hide behind a matching bug here.
            assert_eq!(
                reference(&v.key, &v.pt, size, v.dus, Dir::Encrypt),
                v.ct,
                "xts-mode vs vector {}",
                v.number
            );
            for backend in available() {
                let x = xts_for(&v.key, backend);
                let ctx = format!("vector {} backend {}", v.number, backend.name());
                let mut buf = v.pt.clone();
                x.encrypt_sectors(&mut buf, size, v.dus);
                assert_eq!(buf, v.ct, "encrypt: {ctx}");
                x.decrypt_sectors(&mut buf, size, v.dus);
                assert_eq!(buf, v.pt, "decrypt: {ctx}");
                let mut out = vec![0; size];
                x.encrypt_sectors_to(&v.pt, &mut out, size, v.dus);
                assert_eq!(out, v.ct, "encrypt_to: {ctx}");
                x.decrypt_sectors_to(&v.ct, &mut out, size, v.dus);
                assert_eq!(out, v.pt, "decrypt_to: {ctx}");
                // The first sector of a call has tweak `first_sector`
                // whatever the step: the stepped path meets the standard.
                let x = x.with_tweak_step(8);
                let mut buf = v.pt.clone();
                x.encrypt_sectors(&mut buf, size, v.dus);
                assert_eq!(buf, v.ct, "encrypt with tweak step 8: {ctx}");
                x.decrypt_sectors(&mut buf, size, v.dus);
                assert_eq!(buf, v.pt, "decrypt with tweak step 8: {ctx}");
            }
        }
    }

    /// Vectors 4-6 and 7-9 are consecutive data units under one key, so they
    /// also check multi-sector calls against the standard.
    #[test]
    fn ieee_1619_vectors_as_multi_sector_runs() {
        let vectors = parse_vectors(VECTOR_FILE);
        for run in [3..6, 6..9] {
            let vs = &vectors[run];
            let pt: Vec<u8> = vs.iter().flat_map(|v| v.pt.clone()).collect();
            let ct: Vec<u8> = vs.iter().flat_map(|v| v.ct.clone()).collect();
            let size = vs[0].pt.len();
            for backend in available() {
                let x = xts_for(&vs[0].key, backend);
                let mut buf = pt.clone();
                x.encrypt_sectors(&mut buf, size, vs[0].dus);
                assert_eq!(buf, ct, "backend {}", backend.name());
                x.decrypt_sectors(&mut buf, size, vs[0].dus);
                assert_eq!(buf, pt, "backend {}", backend.name());
            }
        }
    }

    /// Vectors 4 and 6 (data units 0 and 2) and 7 and 9 (0xfd and 0xff) are
    /// consecutive sectors of a call with tweak step 2: a known answer for
    /// the stepped path.
    #[test]
    fn ieee_1619_vectors_as_stepped_runs() {
        let vectors = parse_vectors(VECTOR_FILE);
        for (a, b) in [(3, 5), (6, 8)] {
            let (va, vb) = (&vectors[a], &vectors[b]);
            assert_eq!(vb.dus, va.dus + 2);
            let pt = [va.pt.clone(), vb.pt.clone()].concat();
            let ct = [va.ct.clone(), vb.ct.clone()].concat();
            let size = va.pt.len();
            for backend in available() {
                let x = xts_for(&va.key, backend).with_tweak_step(2);
                let mut buf = pt.clone();
                x.encrypt_sectors(&mut buf, size, va.dus);
                assert_eq!(buf, ct, "backend {}", backend.name());
                let mut out = vec![0; buf.len()];
                x.decrypt_sectors_to(&buf, &mut out, size, va.dus);
                assert_eq!(out, pt, "backend {}", backend.name());
            }
        }
    }

    // ----- comparison with xts-mode ---------------------------------------

    /// Every block count from 1 to 80 per sector, so each kernel's main loop,
    /// whole-vector tail and masked tail all run, for both key sizes.
    #[test]
    fn all_small_sector_sizes() {
        for key_len in [32, 64] {
            let key = fill(key_len as u64, key_len);
            for blocks in 1..=80 {
                let size = blocks * BLOCK;
                for sectors in [1, 3] {
                    let data = fill(blocks as u64 * 31 + sectors as u64, size * sectors);
                    check_all(&key, &data, size, 1000 + blocks as u64);
                }
            }
        }
    }

    /// Every sector count from 1 to 20: the kernels size their batch of
    /// initial-tweak encryptions by it (1, 2, 4, 8 or 16 at a time).
    #[test]
    fn every_sector_count() {
        for key_len in [32, 64] {
            let key = fill(11 + key_len as u64, key_len);
            for sectors in 1..=20 {
                let data = fill(sectors as u64, 512 * sectors);
                check_all(&key, &data, 512, 77 * sectors as u64);
            }
        }
    }

    /// More sectors than one tweak batch of any back end (8, 16 or 64).
    #[test]
    fn many_sectors() {
        for key_len in [32, 64] {
            let key = fill(7 + key_len as u64, key_len);
            for size in SECTOR_SIZES {
                let data = fill(size as u64, size * 37);
                check_all(&key, &data, size, 0xfedc_ba98_7654_3210);
            }
        }
    }

    #[test]
    fn sector_numbers_at_u64_max() {
        let key = fill(99, 64);
        let data = fill(5, 512 * 20);
        check_all(&key, &data, 512, u64::MAX - 19);
        check_all(&key, &data[..512], 512, u64::MAX);
    }

    #[test]
    fn backends_agree_on_large_buffer() {
        let key = fill(3, 64);
        let data = fill(4, 1 << 20);
        let want = reference(&key, &data, 4096, 12345, Dir::Encrypt);
        for backend in available() {
            let mut buf = data.clone();
            xts_for(&key, backend).encrypt_sectors(&mut buf, 4096, 12345);
            assert!(buf == want, "backend {}", backend.name());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_xts_mode(
            wide_key in any::<bool>(),
            key_seed in any::<u64>(),
            data_seed in any::<u64>(),
            size_idx in 0..SECTOR_SIZES.len(),
            sectors in 1usize..=9,
            first in prop_oneof![
                any::<u64>(),
                (0u64..64).prop_map(|d| u64::MAX - d),
                0u64..64,
            ],
        ) {
            let key = fill(key_seed, if wide_key { 64 } else { 32 });
            let size = SECTOR_SIZES[size_idx];
            // Keep the last sector number within u64 (wrapping is rejected).
            let first = first.min(u64::MAX - (sectors as u64 - 1));
            let data = fill(data_seed, size * sectors);
            check_all(&key, &data, size, first);
        }

        #[test]
        fn stepped_matches_xts_mode(
            key_seed in any::<u64>(),
            data_seed in any::<u64>(),
            size_idx in 0..SECTOR_SIZES.len(),
            sectors in 1usize..=9,
            step in prop_oneof![Just(8u64), 1u64..=16, any::<u64>()],
            first in any::<u64>(),
        ) {
            let key = fill(key_seed, 64);
            let size = SECTOR_SIZES[size_idx];
            // Keep the last tweak number within u64 (wrapping is rejected).
            let step = step.clamp(1, u64::MAX / sectors as u64);
            let first = first.min(u64::MAX - (sectors as u64 - 1) * step);
            let data = fill(data_seed, size * sectors);
            check_all_stepped(&key, &data, size, first, step);
        }
    }

    // ----- tweak steps (dm-crypt's 512-byte IV units) ----------------------

    /// LUKS with 4096-byte sectors: sector n has tweak 8n (+ iv_tweak). Every
    /// sector count from 1 to 20 (each kernel's tweak batches) and the sector
    /// sizes in use, for both key sizes and a few steps.
    #[test]
    fn tweak_steps_match_xts_mode() {
        for key_len in [32, 64] {
            let key = fill(21 + key_len as u64, key_len);
            for step in [2, 8, 1000, 1 << 40] {
                for sectors in 1..=20 {
                    for size in [512, 4096] {
                        let data = fill(sectors as u64 ^ step, size * sectors);
                        check_all_stepped(&key, &data, size, 8 * 12345 + 3, step);
                    }
                }
                let data = fill(step, 64 * 37);
                check_all_stepped(&key, &data, 64, 0, step);
            }
        }
    }

    /// Step 8 over n sectors equals n one-sector calls with tweak 8k: the
    /// rule the LUKS data area relies on, checked on the default API.
    #[test]
    fn tweak_step_equals_one_call_per_sector() {
        let key = fill(77, 64);
        let data = fill(78, 4096 * 19);
        for backend in available() {
            let mut stepped = data.clone();
            xts_for(&key, backend)
                .with_tweak_step(8)
                .encrypt_sectors(&mut stepped, 4096, 800);
            let mut single = data.clone();
            let plain = xts_for(&key, backend);
            for (k, sector) in single.chunks_exact_mut(4096).enumerate() {
                plain.encrypt_sectors(sector, 4096, 800 + 8 * k as u64);
            }
            assert!(stepped == single, "backend {}", backend.name());
        }
    }

    #[test]
    fn tweak_step_up_to_u64_max() {
        let key = fill(5, 32);
        let data = fill(6, 512 * 3);
        check_all_stepped(&key, &data, 512, u64::MAX - 16, 8);
        check_all_stepped(&key, &data[..512], 512, u64::MAX, u64::MAX);
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn rejects_tweak_overflow_with_step() {
        Xts::new(&[0; 32])
            .unwrap()
            .with_tweak_step(8)
            .encrypt_sectors(&mut [0; 1024], 512, u64::MAX - 7);
    }

    #[test]
    #[should_panic(expected = "at least 1")]
    fn rejects_tweak_step_zero() {
        let _ = Xts::new(&[0; 32]).unwrap().with_tweak_step(0);
    }

    // ----- API edge cases --------------------------------------------------

    #[test]
    fn zero_length_is_a_no_op() {
        for backend in available() {
            for key_len in [32, 64] {
                let x = xts_for(&fill(1, key_len), backend);
                let mut empty: [u8; 0] = [];
                x.encrypt_sectors(&mut empty, 512, u64::MAX);
                x.decrypt_sectors(&mut empty, 4096, 0);
                x.encrypt_sectors_to(&[], &mut [], 512, 7);
                x.decrypt_sectors_to(&[], &mut [], 16, 7);
            }
        }
    }

    #[test]
    fn key_lengths() {
        for len in [0, 1, 16, 31, 33, 48, 63, 65, 128] {
            let err = Xts::new(&vec![0u8; len]).err().expect("rejected");
            assert_eq!(err, XtsKeyError { len });
            assert!(err.to_string().contains(&len.to_string()));
        }
        assert!(Xts::new(&[1u8; 32]).is_ok());
        assert!(Xts::new(&[1u8; 64]).is_ok());
        assert_eq!(
            Xts::with_backend(&[0; 10], Backend::Portable).err(),
            Some(XtsKeyError { len: 10 })
        );
    }

    #[test]
    fn new_picks_best_backend() {
        let x = Xts::new(&[7u8; 64]).unwrap();
        assert_eq!(x.backend(), Backend::best().name());
        assert!(Backend::Portable.is_available());
        for b in Backend::ALL {
            let got = Xts::with_backend(&[7u8; 64], b).unwrap();
            assert_eq!(got.is_some(), b.is_available());
            if let Some(x) = got {
                assert_eq!(x.backend(), b.name());
            }
        }
    }

    #[test]
    #[should_panic(expected = "multiple of 16")]
    fn rejects_sector_size_not_multiple_of_16() {
        Xts::new(&[0; 32])
            .unwrap()
            .encrypt_sectors(&mut [0; 48], 24, 0);
    }

    #[test]
    #[should_panic(expected = "multiple of 16")]
    fn rejects_zero_sector_size() {
        Xts::new(&[0; 32]).unwrap().encrypt_sectors(&mut [], 0, 0);
    }

    #[test]
    #[should_panic(expected = "not a multiple of sector_size")]
    fn rejects_partial_sector() {
        Xts::new(&[0; 32])
            .unwrap()
            .decrypt_sectors(&mut [0; 528], 512, 0);
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn rejects_length_mismatch() {
        Xts::new(&[0; 32])
            .unwrap()
            .encrypt_sectors_to(&[0; 512], &mut [0; 1024], 512, 0);
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn rejects_sector_number_overflow() {
        Xts::new(&[0; 32])
            .unwrap()
            .encrypt_sectors(&mut [0; 1024], 512, u64::MAX);
    }
}
