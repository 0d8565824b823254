//! The sniffer that decides whether input is a volume, a stream or plain
//! data: no input panics, and input that any parser accepts as an EMD or a
//! stream header is never classified as plain data (which a backup would
//! encrypt as data).
#![no_main]

use evfs::emd::format::Emd;
use evfs::stream::format::Header;
use evfs::volume::sniff::{Kind, sniff};
use libfuzzer_sys::fuzz_target;

#[path = "../seed.rs"]
mod seed;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    seed::fix_emd_checksum(&mut bytes);
    for b in [data, &bytes[..]] {
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
});
