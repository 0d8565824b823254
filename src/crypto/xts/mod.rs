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
//! * `vaes-avx512` (`vaes512.rs`): VAES + VPCLMULQDQ + AVX-512F/BW. Four tweaks per 512-bit
//!   register, four registers (16 blocks) per loop iteration, round keys held
//!   in registers. Tweaks never leave the registers: each iteration advances
//!   them by alpha^16, which is a two-byte shift plus one `vpclmulqdq` to
//!   reduce the bytes shifted out. The initial tweaks of 16 sectors are
//!   encrypted together.
//! * `vaes-avx2` (`vaes256.rs`): the same on 256-bit registers (8 registers, 16 blocks per
//!   iteration), for CPUs with VAES but without AVX-512.
//! * `aes-ni` (`aesni.rs`): AES-NI + PCLMULQDQ, eight blocks in flight in
//!   128-bit registers, for older x86-64 CPUs. Its file also holds what every
//!   hardware back end shares: the key schedule and the initial tweaks.
//! * `portable` (`portable.rs`): the [`aes`] crate's multi-block API (which itself picks
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
//! OpenSSL 3.0 measured 8.1 there. `cargo bench --bench xts` reproduces this.
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

// The crate denies `unsafe_code`. The x86 kernels' files allow it; here only
// the two functions that hand them raw pointers do (`Xts::run`,
// `Kernel::run`), so that the portable back end and the tests stay denied.
#![warn(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

use core::fmt;

#[cfg(target_arch = "x86_64")]
use std::arch::is_x86_feature_detected;

#[cfg(target_arch = "x86_64")]
mod aesni;
mod portable;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod vaes256;
#[cfg(target_arch = "x86_64")]
mod vaes512;

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
            Backend::AesNi => Kernel::AesNi.is_available(),
            #[cfg(target_arch = "x86_64")]
            Backend::VaesAvx2 => Kernel::VaesAvx2.is_available(),
            #[cfg(target_arch = "x86_64")]
            Backend::VaesAvx512 => Kernel::VaesAvx512.is_available(),
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
    Portable(Box<portable::PortableKeys>),
    #[cfg(target_arch = "x86_64")]
    Hw {
        keys: Box<aesni::HwKeys>,
        kernel: Kernel,
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
            Backend::Portable => Imp::Portable(portable::PortableKeys::new(key1, key2)),
            #[cfg(target_arch = "x86_64")]
            Backend::AesNi => Imp::Hw {
                keys: aesni::HwKeys::new(key1, key2),
                kernel: Kernel::AesNi,
            },
            #[cfg(target_arch = "x86_64")]
            Backend::VaesAvx2 => Imp::Hw {
                keys: aesni::HwKeys::new(key1, key2),
                kernel: Kernel::VaesAvx2,
            },
            #[cfg(target_arch = "x86_64")]
            Backend::VaesAvx512 => Imp::Hw {
                keys: aesni::HwKeys::new(key1, key2),
                kernel: Kernel::VaesAvx512,
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

    // Hands the x86 kernels raw pointers: see the SAFETY note below.
    #[allow(unsafe_code)]
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
                    kernel.run(keys, dir, src, dst, sectors, sector_size, tweaks);
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

/// Which hand-written x86-64 kernel to run.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum Kernel {
    AesNi,
    VaesAvx2,
    VaesAvx512,
}

#[cfg(target_arch = "x86_64")]
impl Kernel {
    fn is_available(self) -> bool {
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

    fn backend(self) -> Backend {
        match self {
            Kernel::AesNi => Backend::AesNi,
            Kernel::VaesAvx2 => Backend::VaesAvx2,
            Kernel::VaesAvx512 => Backend::VaesAvx512,
        }
    }

    /// Runs this kernel with `keys` over `sectors` sectors.
    ///
    /// # Safety
    ///
    /// * The CPU supports the kernel (`self.is_available()` returned true).
    /// * `src` is readable and `dst` writable for `sectors * sector_size`
    ///   bytes, and the two ranges are either identical or disjoint.
    /// * `sector_size` is a non-zero multiple of 16 and the tweak numbers
    ///   of the `sectors` sectors do not overflow.
    // Calls the kernels' `unsafe` entry points, under this function's contract.
    #[allow(unsafe_code, clippy::too_many_arguments)]
    unsafe fn run(
        self,
        keys: &aesni::HwKeys,
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
            ($kernel:ident) => {
                match (keys.nrk, dir) {
                    (11, Dir::Encrypt) => {
                        $kernel::sectors::<11, false>(keys, src, dst, sectors, sector_size, tweaks)
                    }
                    (11, Dir::Decrypt) => {
                        $kernel::sectors::<11, true>(keys, src, dst, sectors, sector_size, tweaks)
                    }
                    (15, Dir::Encrypt) => {
                        $kernel::sectors::<15, false>(keys, src, dst, sectors, sector_size, tweaks)
                    }
                    (15, Dir::Decrypt) => {
                        $kernel::sectors::<15, true>(keys, src, dst, sectors, sector_size, tweaks)
                    }
                    _ => unreachable!("round key count is 11 or 15"),
                }
            };
        }
        // SAFETY: forwarded from this function's contract: features
        // present, pointers valid for the whole run, layout checked.
        unsafe {
            match self {
                Kernel::AesNi => go!(aesni),
                Kernel::VaesAvx2 => go!(vaes256),
                Kernel::VaesAvx512 => go!(vaes512),
            }
        }
    }
}
