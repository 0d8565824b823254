//! The AES-NI back end: eight blocks in flight in 128-bit registers, for
//! x86-64 CPUs without VAES. Also the parts every hardware back end
//! shares: the round keys ([`HwKeys`]) and their schedule, and the
//! encryption of the sectors' initial tweaks.

// `core::arch` intrinsics and raw-pointer loads and stores are `unsafe`;
// each use says why its CPU features and pointers are sound.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use std::arch::is_x86_feature_detected;

use zeroize::Zeroize;

use super::{BLOCK, Tweaks};

/// Round keys needed by the largest variant (AES-256: 14 rounds + 1).
pub(super) const MAX_RK: usize = 15;

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
    pub(super) tweak: [[u8; BLOCK]; MAX_RK],
    /// Round keys in use: 11 (AES-128) or 15 (AES-256).
    pub(super) nrk: usize,
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

    /// The data-key schedule for the given direction.
    pub(super) fn data_keys(&self, decrypt: bool) -> &[[u8; BLOCK]; MAX_RK] {
        if decrypt { &self.dec } else { &self.enc }
    }
}

// ----- small helpers --------------------------------------------------

#[inline]
#[target_feature(enable = "sse2")]
pub(super) fn load(b: &[u8; BLOCK]) -> __m128i {
    // SAFETY: `b` is a valid reference to 16 bytes; loadu has no
    // alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "sse2")]
pub(super) fn load_u128(t: &u128) -> __m128i {
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

/// Tweak times alpha on one 128-bit lane (see `portable::mul_alpha`).
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
pub(super) const NI_PAR: usize = 8;

/// Encrypts the tweak numbers of the first `count` sectors of `t` (`count`
/// in 1..=NI_PAR) with the tweak key into `out[..count]`, with the work
/// rounded up to a power of two rather than always NI_PAR blocks: a call
/// with one 512-byte sector would otherwise spend a fifth of its AES
/// rounds on unused tweaks.
#[inline]
#[target_feature(enable = "aes,sse2")]
pub(super) fn initial_tweaks<const NRK: usize>(
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
pub(super) unsafe fn sectors<const NRK: usize, const DEC: bool>(
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
        initial_tweaks::<NRK>(&keys.tweak, tweaks.skip(s), batch, &mut initial);
        for (i, t0) in initial[..batch].iter().enumerate() {
            let off = (s + i) * sector_size;
            // SAFETY: sector `s + i` < `sectors`, so `off + sector_size`
            // bytes are within both buffers (caller's contract).
            unsafe {
                sector::<NRK, DEC>(&rk, load_u128(t0), src.add(off), dst.add(off), blocks);
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
unsafe fn sector<const NRK: usize, const DEC: bool>(
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
