//! Cryptography: the sector cipher, volume keys, key wrapping, the passphrase
//! KDF and the small AEAD helpers everything else seals secrets with; also
//! the AES-CBC-ESSIV sector cipher of old LUKS1 volumes, read only.
//!
//! Secrets are newtypes without `Debug`, `Clone` or `Copy`, wiped on drop.

pub mod essiv;
pub mod kdf;
pub mod secret;
pub mod sign;
pub mod wrap;
pub mod xts;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

use crate::error::{Error, Result};

pub use secret::{Passphrase, SecretBytes, VolumeKey};
pub use xts::Xts;

/// The data-area ciphers a volume may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256 in XTS mode: a 64-byte volume key (two 32-byte halves); EMD code
    /// 1.
    Aes256Xts,
    /// AES-128 in XTS mode: a 32-byte volume key (two 16-byte halves); EMD code
    /// 2.
    Aes128Xts,
}

impl Cipher {
    /// Name as on the command line and in `info` (and dm-crypt's key size follows from it).
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Xts => "aes-256-xts",
            Cipher::Aes128Xts => "aes-128-xts",
        }
    }

    /// Volume key length in bytes (both XTS halves).
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes256Xts => 64,
            Cipher::Aes128Xts => 32,
        }
    }

    /// The byte stored in the EMD.
    pub fn code(self) -> u8 {
        match self {
            Cipher::Aes256Xts => 1,
            Cipher::Aes128Xts => 2,
        }
    }

    /// The cipher of an EMD's cipher byte; `None` for a code evfs does not
    /// know.
    pub fn from_code(code: u8) -> Option<Cipher> {
        match code {
            1 => Some(Cipher::Aes256Xts),
            2 => Some(Cipher::Aes128Xts),
            _ => None,
        }
    }

    /// The cipher named `name` (`aes-256-xts` or `aes-128-xts`); exit 2 for any
    /// other name.
    pub fn parse(name: &str) -> Result<Cipher> {
        match name {
            "aes-256-xts" => Ok(Cipher::Aes256Xts),
            "aes-128-xts" => Ok(Cipher::Aes128Xts),
            other => Err(Error::usage(format!(
                "unknown cipher {other:?}: use aes-256-xts or aes-128-xts"
            ))),
        }
    }
}

/// Fill `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::runtime(format!("no randomness available: {e}")))
}

/// Fresh random bytes in a fixed-size array.
pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    random_bytes(&mut out)?;
    Ok(out)
}

/// ChaCha20-Poly1305 seal of `data` in place; returns the 16-byte tag.
pub fn seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
    let aead = ChaCha20Poly1305::new(&(*key).into());
    let tag = aead
        .encrypt_inout_detached(&(*nonce).into(), aad, data.into())
        .expect("ChaCha20-Poly1305 seals messages of any length below 256 GiB");
    tag.into()
}

/// ChaCha20-Poly1305 open in place; `false` when the tag does not verify
/// (the data is then left in an unspecified state and must be discarded).
#[must_use]
pub fn open(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8; 16]) -> bool {
    let aead = ChaCha20Poly1305::new(&(*key).into());
    aead.decrypt_inout_detached(&(*nonce).into(), aad, data.into(), &(*tag).into())
        .is_ok()
}

/// Constant-time equality of two byte strings of the same length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_detects_changes() {
        let key = [7u8; 32];
        let nonce = [1u8; 12];
        let mut msg = *b"the volume key, in a wrapped form";
        let tag = seal(&key, &nonce, b"aad", &mut msg);
        assert_ne!(&msg, b"the volume key, in a wrapped form");
        let mut copy = msg;
        assert!(open(&key, &nonce, b"aad", &mut copy, &tag));
        assert_eq!(&copy, b"the volume key, in a wrapped form");
        let mut copy = msg;
        assert!(!open(&key, &nonce, b"other", &mut copy, &tag));
        let mut copy = msg;
        copy[0] ^= 1;
        assert!(!open(&key, &nonce, b"aad", &mut copy, &tag));
    }

    #[test]
    fn cipher_codes_round_trip() {
        for c in [Cipher::Aes256Xts, Cipher::Aes128Xts] {
            assert_eq!(Cipher::from_code(c.code()), Some(c));
            assert_eq!(Cipher::parse(c.name()).unwrap(), c);
        }
        assert!(Cipher::from_code(0).is_none());
        assert_eq!(Cipher::parse("aes-cbc").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn ct_eq_compares_contents() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
