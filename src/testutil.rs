//! Helpers of the unit tests.
//!
//! Worked examples in `formats/*.md` are hex listings that tests parse and
//! compare with what the code writes: `EVFS_UPDATE_FORMATS=1 cargo test`
//! rewrites a stale listing in place (then review and commit the diff);
//! without it a stale listing fails the test.
//!
//! A test that cannot run here (a tool or a kernel feature is missing) calls
//! [`unavailable`]: with `CI` set it fails; elsewhere it says so and skips.

use std::path::PathBuf;

/// A test cannot run here: fail under CI, else say so on stderr (past
/// libtest's capture, so that a skip is never silent).
pub fn unavailable(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test} cannot run: {why} (CI is set, so every tool the tests use must be installed)"
        );
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

const FENCE: &str = "```hexdump\n";

fn doc_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The byte range of the body of the `nth` block that opens with `fence`
/// (a line such as "```hexdump\n") in `doc`.
fn block(doc: &str, fence: &str, nth: usize, rel: &str) -> (usize, usize) {
    let mut at = 0;
    for _ in 0..=nth {
        at += doc[at..]
            .find(fence)
            .unwrap_or_else(|| panic!("{rel} has no block {nth} opened by {fence:?}"))
            + fence.len();
    }
    let end = at + doc[at..].find("```").expect("closing fence");
    (at, end)
}

/// The `nth` (from 0) ```hexdump block of the document `rel` (relative to the crate root).
pub fn listing(rel: &str, nth: usize) -> String {
    fenced(rel, "hexdump", nth)
}

/// The body of the `nth` (from 0) block fenced as ```` ```info ```` in the
/// document `rel`: the exact text between the fences, ending in a newline.
pub fn fenced(rel: &str, info: &str, nth: usize) -> String {
    let doc = std::fs::read_to_string(doc_path(rel)).expect("the format document");
    let (a, b) = block(&doc, &format!("```{info}\n"), nth, rel);
    doc[a..b].to_string()
}

/// Require that block `nth` of `rel` lists `bytes`; rewrite it with
/// `EVFS_UPDATE_FORMATS=1`.
pub fn expect_listing(rel: &str, nth: usize, bytes: &[u8]) {
    expect_block(rel, FENCE, nth, &hexdump(bytes));
}

/// Require that the `nth` ```` ```info ```` block of `rel` holds exactly
/// `text` (a text file shown as it is: every byte, newlines included);
/// rewrite it with `EVFS_UPDATE_FORMATS=1`.
pub fn expect_fenced(rel: &str, info: &str, nth: usize, text: &str) {
    assert!(
        text.ends_with('\n') && !text.contains("```"),
        "a fenced block holds text that ends in a newline and has no fence in it"
    );
    expect_block(rel, &format!("```{info}\n"), nth, text);
}

fn expect_block(rel: &str, fence: &str, nth: usize, fresh: &str) {
    let path = doc_path(rel);
    let doc = std::fs::read_to_string(&path).expect("the format document");
    let (a, b) = block(&doc, fence, nth, rel);
    if doc[a..b] == *fresh {
        return;
    }
    if std::env::var_os("EVFS_UPDATE_FORMATS").is_some() {
        let updated = format!("{}{fresh}{}", &doc[..a], &doc[b..]);
        std::fs::write(&path, updated).expect("rewrite the format document");
        return;
    }
    panic!(
        "{rel}: block {nth} opened by {fence:?} is stale; regenerate it with `EVFS_UPDATE_FORMATS=1 cargo test` and review the diff"
    );
}

/// `hexdump -C` style: offset, 16 bytes, ASCII; repeated lines become `*`.
pub fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut previous: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in bytes.chunks(16).enumerate() {
        if previous == Some(line) {
            if !starred {
                out.push_str("*\n");
                starred = true;
            }
            continue;
        }
        starred = false;
        previous = Some(line);
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = line
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {}  {}  |{}|\n",
            i * 16,
            hex[..8].join(" "),
            hex[8..].join(" "),
            ascii
        ));
    }
    out.push_str(&format!("{:08x}\n", bytes.len()));
    out
}

/// Read a `hexdump -C` listing back into bytes.
pub fn unhexdump(text: &str) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut last: Vec<u8> = Vec::new();
    let mut star = false;
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line == "*" {
            star = true;
            continue;
        }
        let offset = usize::from_str_radix(&line[..8], 16).expect("offset");
        if star {
            while out.len() < offset {
                out.extend_from_slice(&last);
            }
            star = false;
        }
        assert_eq!(out.len(), offset, "listing out of order at {line}");
        let hex_part = line[8..].split('|').next().unwrap_or("");
        let bytes: Vec<u8> = hex_part
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
            .collect();
        if !bytes.is_empty() {
            last = bytes.clone();
        }
        out.extend_from_slice(&bytes);
    }
    out
}

/// Deterministic bytes (splitmix64): test plaintexts and fixed "random"
/// input, from a seed that proptest can generate and shrink.
pub fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}
