//! The stream reader and frame decoder, as `restore` and `verify -k` drive
//! them: no input panics, reading stops at the first error, memory stays
//! within one payload buffer, and the sizes a restore derives from a parsed
//! header never overflow.
//!
//! Input: a first byte of 0 means "the rest is a stream as it lies"; any
//! other first byte means "patches" ((offset: u16, value) triples) on a
//! valid stream of three frames, whose header checksum (and that of the EMD
//! inside it) is fixed up afterwards, so that the fuzzer reaches the frame
//! and trailer checks.
#![no_main]

use evfs::stream::decode::FrameDecoder;
use evfs::stream::format::HEADER_LEN;
use evfs::stream::reader::{Item, StreamReader};
use evfs::volume::layout;
use libfuzzer_sys::fuzz_target;

#[path = "../seed.rs"]
mod seed;

fn read(bytes: &[u8], with_key: bool) {
    let Ok(mut r) = StreamReader::open(bytes, "fuzz") else {
        return;
    };
    let header = r.header.clone();
    let _ = layout::device_size_for(header.emd.data_size);
    let _ = layout::max_data_size(u64::MAX, header.emd.sector_size);
    let key = seed::key();
    if with_key && !header.raw {
        r.set_mac_key(&key.stream_mac_key());
    }
    let mut decoder = FrameDecoder::new(&header, with_key.then_some(&key));
    let mut frames = 0u64;
    loop {
        match r.next_item() {
            Ok(Item::Frame(f, payload, fh)) => {
                frames += 1;
                assert!(frames <= bytes.len() as u64, "more frames than bytes");
                let _ = decoder.plaintext(&f, payload, &fh).map(|p| p.len());
                let _ = decoder.ciphertext(&f, payload, &fh).map(|c| c.len());
            }
            Ok(Item::End(t)) => {
                assert_eq!(t.frames, frames);
                return;
            }
            Err(e) => {
                assert!(matches!(e.exit_code(), 1 | 4 | 5), "{e}");
                return;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        Some((0, rest)) => rest.to_vec(),
        Some((_, patches)) => {
            let mut b = seed::stream();
            seed::patch(&mut b, patches);
            seed::fix_stream_header(&mut b);
            b
        }
        None => return,
    };
    if bytes.len() >= HEADER_LEN || data.first() == Some(&0) {
        read(&bytes, false);
        read(&bytes, true);
    }
});
