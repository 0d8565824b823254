//! What a file or stdin holds, from its bytes: the one sniffer of evfs.
//!
//! [`sniff`] tells the kinds apart by their first bytes: input that carries
//! EMD or stream magic is never treated as plain data. [`ciphertext`] looks
//! deeper at plain data that is about to be encrypted: the raw data area of
//! a volume (copied out with `map --raw`, `dd` or `qemu-img`), a LUKS
//! volume, or a disk image with an EVFS volume inside must not be encrypted
//! a second time by mistake.

use crate::emd::format::MAGIC as EMD_MAGIC;
use crate::stream::MAGIC as STREAM_MAGIC;

/// Bytes needed to tell the kinds apart.
pub const SNIFF_LEN: usize = 8;
/// First bytes of a LUKS1 or LUKS2 header.
pub const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";

/// What a file holds, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Starts with EMD magic: an EVFS volume (or a damaged one).
    Volume,
    /// Starts with stream magic: a backup stream.
    Stream,
    /// Starts with LUKS magic: a LUKS1 or LUKS2 volume (a LUKS2 volume
    /// whose primary header is gone is found by `crate::luks` instead).
    Luks,
    /// Anything else.
    Plain,
}

impl Kind {
    /// What a file of this kind is, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Volume => "an EVFS volume",
            Kind::Stream => "a backup stream",
            Kind::Luks => "a LUKS volume",
            Kind::Plain => "plain data (no EVFS metadata)",
        }
    }
}

/// What the regular file at `path` holds, from its first bytes.
pub fn kind_of_path(path: &std::path::Path) -> crate::error::Result<Kind> {
    use std::io::Read;
    let mut head = [0u8; SNIFF_LEN];
    let mut file = std::fs::File::open(path).map_err(|e| crate::Error::io("opening", path, e))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(crate::Error::io("reading", path, e)),
        }
    }
    Ok(sniff(&head[..n]))
}

/// What an open device or file holds, from its first bytes.
pub fn kind_of_device(dev: &super::Device) -> crate::error::Result<Kind> {
    let mut head = [0u8; SNIFF_LEN];
    let n = head.len().min(dev.size() as usize);
    dev.read_at(&mut head[..n], 0)?;
    Ok(sniff(&head[..n]))
}

/// What input starting with `head` holds, from its first [`SNIFF_LEN`] bytes
/// (input too short to hold a magic is plain data).
pub fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(EMD_MAGIC) {
        Kind::Volume
    } else if head.starts_with(STREAM_MAGIC) {
        Kind::Stream
    } else if head.starts_with(LUKS_MAGIC) {
        Kind::Luks
    } else {
        Kind::Plain
    }
}

/// Why plain data looks like ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suspect {
    /// A LUKS header at the start.
    Luks,
    /// EVFS EMD magic at this byte offset (not 0): a volume inside a disk
    /// image, after a partition table for instance.
    EmdAt(u64),
    /// Every sector sampled is statistically random, and none is zero or
    /// structured: the raw data area of an encrypted volume.
    Random {
        /// How many sectors were sampled.
        sectors: usize,
    },
}

impl Suspect {
    /// What the data looks like, for messages.
    pub fn describe(self) -> String {
        match self {
            Suspect::Luks => "a LUKS volume (it starts with a LUKS header)".to_string(),
            Suspect::EmdAt(at) => {
                format!("a disk image holding an EVFS volume (EMD magic at byte {at})")
            }
            Suspect::Random { sectors } => format!(
                "ciphertext: all {sectors} sectors sampled are statistically random, none is zero or structured, as in the raw data area of an encrypted volume"
            ),
        }
    }
}

/// Bytes at the start scanned for shifted EMD magic (a first partition
/// commonly starts at 1 MiB).
pub const SCAN_LEN: usize = (2 << 20) + SNIFF_LEN;
/// Bytes at the start whose sectors are all tested.
pub const HEAD_LEN: usize = 1 << 20;
/// Sectors sampled across the rest of the data.
pub const SPREAD: usize = 64;
/// Size of a tested sector.
pub const SECTOR: usize = 4096;
/// Fewest sectors that can call data random: a small file of random bytes
/// (a key, a salt) is not a volume's data area.
const MIN_SECTORS: usize = 16;

/// Judge plain data from `head` (its first bytes, up to [`SCAN_LEN`]) and
/// `spread` (sectors sampled across the rest). `None`: nothing suspicious.
pub fn ciphertext(head: &[u8], spread: &[&[u8]]) -> Option<Suspect> {
    if head.starts_with(LUKS_MAGIC) {
        return Some(Suspect::Luks);
    }
    let scan = &head[..head.len().min(SCAN_LEN)];
    let mut at = 512;
    while at + SNIFF_LEN <= scan.len() {
        if scan[at..].starts_with(EMD_MAGIC) {
            return Some(Suspect::EmdAt(at as u64));
        }
        at += 512;
    }
    let first = &head[..head.len().min(HEAD_LEN)];
    let sectors: Vec<&[u8]> = first
        .chunks_exact(SECTOR)
        .chain(spread.iter().copied().filter(|s| s.len() == SECTOR))
        .collect();
    if sectors.len() >= MIN_SECTORS && sectors.iter().all(|s| random(s)) {
        return Some(Suspect::Random {
            sectors: sectors.len(),
        });
    }
    None
}

/// Whether a 4096-byte sector's byte histogram fits uniform random bytes:
/// Pearson's chi-square over the 256 byte values (255 degrees of freedom:
/// mean 255, standard deviation 22.6) below 255 + 7 standard deviations.
/// Text, tables, zeros and padding score in the thousands; compressed data
/// scores like random data, which is why one structured or zero sector
/// anywhere in the sample clears the data.
fn random(sector: &[u8]) -> bool {
    let mut counts = [0u32; 256];
    for &b in sector {
        counts[usize::from(b)] += 1;
    }
    let expected = sector.len() as f64 / 256.0;
    let chi2: f64 = counts
        .iter()
        .map(|&c| {
            let d = f64::from(c) - expected;
            d * d / expected
        })
        .sum();
    chi2 < 255.0 + 7.0 * 22.6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fill;

    #[test]
    fn magic_decides() {
        assert_eq!(sniff(b"EVFS-EMD\x01\x00"), Kind::Volume);
        assert_eq!(sniff(b"EVFS-STR\x01\x00"), Kind::Stream);
        assert_eq!(sniff(b"LUKS\xba\xbe\x00\x02"), Kind::Luks);
        assert_eq!(sniff(b"EVFS-EM"), Kind::Plain);
        assert_eq!(sniff(b""), Kind::Plain);
        assert_eq!(sniff(&[0u8; 100]), Kind::Plain);
    }

    #[test]
    fn random_sectors_everywhere_are_ciphertext() {
        let head = fill(1, HEAD_LEN);
        let tail = fill(2, SPREAD * SECTOR);
        let spread: Vec<&[u8]> = tail.chunks(SECTOR).collect();
        assert_eq!(
            ciphertext(&head, &spread),
            Some(Suspect::Random {
                sectors: 256 + SPREAD
            })
        );
    }

    #[test]
    fn one_zero_or_structured_sector_clears_the_data() {
        let mut head = fill(3, HEAD_LEN);
        head[8192..12288].fill(0);
        assert_eq!(ciphertext(&head, &[]), None);
        let head = fill(4, HEAD_LEN);
        let text = b"a directory entry, an inode table, a superblock".repeat(90);
        assert_eq!(ciphertext(&head, &[&text[..SECTOR]]), None);
    }

    #[test]
    fn small_random_data_is_not_judged() {
        assert_eq!(ciphertext(&fill(5, 15 * SECTOR), &[]), None);
        assert!(ciphertext(&fill(5, 16 * SECTOR), &[]).is_some());
    }

    #[test]
    fn luks_headers_and_shifted_emds_are_found() {
        let mut head = vec![0u8; SCAN_LEN];
        head[..6].copy_from_slice(LUKS_MAGIC);
        assert_eq!(ciphertext(&head, &[]), Some(Suspect::Luks));
        let mut head = vec![0u8; SCAN_LEN];
        head[1 << 20..(1 << 20) + 8].copy_from_slice(EMD_MAGIC);
        assert_eq!(ciphertext(&head, &[]), Some(Suspect::EmdAt(1 << 20)));
    }

    #[test]
    fn the_random_test_has_no_false_alarm_on_random_sectors_and_catches_structure() {
        for seed in 0..200 {
            assert!(random(&fill(seed * 7 + 11, SECTOR)), "seed {seed}");
        }
        let mut skewed = fill(9, SECTOR);
        for b in skewed.iter_mut().step_by(3) {
            *b &= 0x7f;
        }
        assert!(!random(&skewed));
        assert!(!random(&[0u8; SECTOR]));
    }
}
