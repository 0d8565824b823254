//! The EMD parser: no input panics, a parsed copy writes back to the very
//! same bytes (the encoding is canonical), parse(write(x)) == x, and the
//! layout sums a parsed geometry leads to never overflow.
//!
//! Input: a first byte of 0 means "the rest is a copy as it lies" (its
//! checksum fixed up, so that the fuzzer reaches the field checks); any other
//! first byte means "patches": (offset: u16, value: u8) triples applied to a
//! valid copy, checksum fixed up.
#![no_main]

use evfs::emd::format::{EMD_SIZE, Emd};
use evfs::volume::layout;
use libfuzzer_sys::fuzz_target;

#[path = "../seed.rs"]
mod seed;

fn check(bytes: &[u8]) {
    let Ok(e) = Emd::parse(bytes) else {
        return;
    };
    let enc = e.encode();
    assert_eq!(
        &enc[..],
        &bytes[..EMD_SIZE],
        "the encoding is not canonical"
    );
    assert_eq!(Emd::parse(&enc[..]).as_ref(), Ok(&e));
    // What every command computes from a parsed geometry.
    let device = layout::device_size_for(e.data_size);
    let end = e.data_offset + e.data_size;
    let _ = layout::backup_emd_offset(device.max(end));
    let _ = layout::max_data_size(device, e.sector_size);
    if let Some(c) = &e.checkpoint {
        assert!(c.bytes_done <= c.total);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Emd::parse(data);
    let bytes = match data.split_first() {
        Some((0, rest)) => {
            let mut b = rest.to_vec();
            seed::fix_emd_checksum(&mut b);
            b
        }
        Some((_, patches)) => {
            let mut b = seed::emd_bytes();
            seed::patch(&mut b, patches);
            seed::fix_emd_checksum(&mut b);
            b
        }
        None => return,
    };
    check(&bytes);
});
