//! The VAES + AVX-512 back end: four tweaks per 512-bit register, four
//! registers (16 blocks) per loop iteration, round keys held in registers.

// `core::arch` intrinsics and raw-pointer loads and stores are `unsafe`;
// each use says why its CPU features and pointers are sound.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use zeroize::Zeroize;

use super::aesni::{HwKeys, MAX_RK, load, load_u128};
use super::{BLOCK, Tweaks};

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
pub(super) unsafe fn sectors<const NRK: usize, const DEC: bool>(
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
#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq")]
unsafe fn sector<const NRK: usize, const DEC: bool>(
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
