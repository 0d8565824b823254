//! The back ends against the IEEE 1619 vectors, the `xts-mode` crate and
//! each other.

use aes::cipher::KeyInit;
use aes::{Aes128, Aes256};

use super::*;
use crate::testutil::fill;
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
const VECTOR_FILE: &str = include_str!("../../../formats/xts-vectors.txt");

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
