//! The backup stream: a self-describing, pipe-friendly form of a backup
//! (`formats/STREAM.md`). Frames carry the target's XTS ciphertext, so
//! restoring and checking integrity need no key; compressed frames carry
//! zstd-compressed plaintext sealed with an AEAD and need the key.

pub mod decode;
pub mod format;
pub mod manifest;
pub mod reader;
pub mod writer;

#[cfg(test)]
mod tests;

/// First bytes of every backup stream.
pub const MAGIC: &[u8; 8] = b"EVFS-STR";
