//! The VAES + AVX2 back end: two tweaks per 256-bit register, eight
//! registers (16 blocks) per loop iteration, for CPUs with VAES but
//! without AVX-512.

// `core::arch` intrinsics and raw-pointer loads and stores are `unsafe`;
// each use says why its CPU features and pointers are sound.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use zeroize::Zeroize;

use super::aesni::{HwKeys, NI_PAR, initial_tweaks, load, load_u128};
use super::{BLOCK, Tweaks};

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

/// `vaes512::mul_alpha_bytes_512` on 256-bit vectors.
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

/// Forces round `r` of all eight registers to be issued before round
/// `r + 1` of any, as `aesni::round_barrier_xmm` does for the AES-NI kernel.
/// Without it LLVM, short of ymm registers for eight data and eight tweak
/// vectors, runs five registers' rounds interleaved and the other three one
/// after the other, each a chain of dependent `vaesenc`s: latency-bound.
/// Emits no instructions.
#[inline]
#[target_feature(enable = "avx2")]
fn round_barrier_ymm(x: &mut [__m256i; Y_PAR]) {
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *x;
    // SAFETY: the template is empty: it only states that the eight values
    // are read and rewritten in registers here. No memory, stack or flags
    // are touched.
    unsafe {
        core::arch::asm!(
            "/* {0} {1} {2} {3} {4} {5} {6} {7} */",
            inout(ymm_reg) a,
            inout(ymm_reg) b,
            inout(ymm_reg) c,
            inout(ymm_reg) d,
            inout(ymm_reg) e,
            inout(ymm_reg) f,
            inout(ymm_reg) g,
            inout(ymm_reg) h,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    *x = [a, b, c, d, e, f, g, h];
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
pub(super) unsafe fn sectors<const NRK: usize, const DEC: bool>(
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
        initial_tweaks::<NRK>(&keys.tweak, tweaks.skip(s), batch, &mut initial);
        for (i, t0) in initial[..batch].iter().enumerate() {
            let off = (s + i) * sector_size;
            // SAFETY: sector `s + i` < `sectors`, so `off + sector_size`
            // bytes are within both buffers (caller's contract).
            unsafe {
                sector::<NRK, DEC>(&rk, poly, load_u128(t0), src.add(off), dst.add(off), blocks);
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
unsafe fn sector<const NRK: usize, const DEC: bool>(
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
            round_barrier_ymm(&mut x);
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
