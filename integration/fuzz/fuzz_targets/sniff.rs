//! The sniffer that decides whether input is a volume, a stream or plain
//! data: no input panics, and input that any parser accepts as an EMD or a
//! stream header is never classified as plain data (which a backup would
//! encrypt as data).
//!
//! Input: a first byte of 1 or 2 means "patches" ((offset: u16, value)
//! triples) on a valid EMD or stream header (checksums fixed up), so that
//! parsers accept some of them; anything else is sniffed as it is.
#![no_main]

use evfs::emd::format::Emd;
use evfs::stream::format::{HEADER_LEN, Header};
use evfs::volume::sniff::{Kind, sniff};
use libfuzzer_sys::fuzz_target;

#[path = "../seed.rs"]
mod seed;

fn check(b: &[u8]) {
    let kind = sniff(b);
    assert_eq!(kind == Kind::Volume, b.starts_with(b"EVFS-EMD"));
    assert_eq!(kind == Kind::Stream, b.starts_with(b"EVFS-STR"));
    if Emd::parse(b).is_ok() {
        assert_eq!(kind, Kind::Volume);
    }
    if Header::parse(b).is_ok() {
        assert_eq!(kind, Kind::Stream);
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((1, patches)) => {
            let mut b = seed::emd_bytes();
            seed::patch(&mut b, patches);
            seed::fix_emd_checksum(&mut b);
            check(&b);
        }
        Some((2, patches)) => {
            let mut b = seed::stream()[..HEADER_LEN].to_vec();
            seed::patch(&mut b, patches);
            seed::fix_stream_header(&mut b);
            check(&b);
        }
        _ => {
            check(data);
            let mut b = data.to_vec();
            seed::fix_emd_checksum(&mut b);
            check(&b);
        }
    }
});
