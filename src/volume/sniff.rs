//! What a file or stdin holds, from its first bytes. Input that carries EMD or
//! stream magic is never treated as plain data.

use crate::emd::format::MAGIC as EMD_MAGIC;
use crate::stream::MAGIC as STREAM_MAGIC;

/// Bytes needed to tell the kinds apart.
pub const SNIFF_LEN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Starts with EMD magic: an EVFS volume (or a damaged one).
    Volume,
    /// Starts with stream magic: a backup stream.
    Stream,
    /// Anything else.
    Plain,
}

pub fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(EMD_MAGIC) {
        Kind::Volume
    } else if head.starts_with(STREAM_MAGIC) {
        Kind::Stream
    } else {
        Kind::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_decides() {
        assert_eq!(sniff(b"EVFS-EMD\x01\x00"), Kind::Volume);
        assert_eq!(sniff(b"EVFS-STR\x01\x00"), Kind::Stream);
        assert_eq!(sniff(b"EVFS-EM"), Kind::Plain);
        assert_eq!(sniff(b""), Kind::Plain);
        assert_eq!(sniff(&[0u8; 100]), Kind::Plain);
    }
}
