//! The LUKS header reader: no input panics; whatever it accepts, evfs can
//! describe (reasons, data area) without panicking; and a LUKS2 header it
//! accepts, written back as evfs would write it, reads back to the same
//! header (parse(write(x)) == x). Keyslots are never unlocked here: their
//! KDF cost is the header's to choose.
//!
//! Input: a first byte of 0 means "the rest as it lies"; 1 means patches
//! ((offset: u16, value) triples) on a valid LUKS2 image, both checksums
//! fixed up, so that mutations reach the JSON checks; 2 the same without
//! the fix-up (copy selection); anything else patches on a LUKS1 phdr.
#![no_main]

use evfs::luks::Header;
use libfuzzer_sys::fuzz_target;

#[path = "../seed.rs"]
mod seed;

fn check(b: &[u8]) {
    let Ok(h) = Header::read(b) else {
        return;
    };
    let _ = h.unsupported();
    let _ = h.uuid();
    if let Ok(area) = h.data_area() {
        let _ = area.data_size(b.len() as u64);
        let _ = area.iv_of(u64::MAX);
    }
    if let Header::Luks2(h) = &h {
        let _ = h.unlock_order();
        // The JSON may not fit its area once rewritten compactly (a number
        // written as 1e2 comes back as 100.0): then there is nothing to
        // compare.
        let Ok([primary, secondary]) = h.encode_copies() else {
            return;
        };
        let md = h.metadata_size() as usize;
        let mut img = b.to_vec();
        img[..md].copy_from_slice(&primary);
        img[md..2 * md].copy_from_slice(&secondary);
        let again = match Header::read(&img) {
            Ok(Header::Luks2(again)) => again,
            other => panic!("a header evfs writes does not read back: {:?}", other.err()),
        };
        assert_eq!(again.json_text(), h.json_text());
        assert_eq!(again.metadata(), h.metadata());
        assert_eq!(again.seqid(), h.seqid());
        assert_eq!(again.uuid(), h.uuid());
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => check(rest),
        Some((1, patches)) => {
            let mut b = seed::luks2_bytes();
            seed::patch(&mut b, patches);
            seed::fix_luks2_checksums(&mut b);
            check(&b);
        }
        Some((2, patches)) => {
            let mut b = seed::luks2_bytes();
            seed::patch(&mut b, patches);
            check(&b);
        }
        Some((_, patches)) => {
            let mut b = seed::luks1_bytes();
            seed::patch(&mut b, patches);
            check(&b);
        }
        None => {}
    }
});
