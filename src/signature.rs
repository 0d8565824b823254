//! The signature block: who signed (key ID and X25519 public key) and the
//! signature, in the 448 bytes that an EMD copy and a stream trailer keep
//! for it (`formats/SIGNATURE.md`). A block of zeros is "unsigned".
//!
//! What is signed is a message of its own per kind, with a domain
//! separation prefix: an EMD's authenticated bytes (the ones its MAC
//! covers, so that a raw clone or a dirty-bit reset keeps the signature
//! valid), or a stream's checksum (which commits to every byte before it).
//! Whether the signer is trusted is not the format's business: see
//! `keys` (trusted key pairs) and `ops` (the policy).

use std::fmt;

use crate::crypto::sign::{SIGNATURE_LEN, verify};
use crate::keys::KeyId;
use crate::le::zero;

/// Bytes of a signature block.
pub const BLOCK_LEN: usize = 448;
/// First bytes of a present block.
pub const MAGIC: &[u8; 4] = b"EVSG";
/// The block layout version.
pub const VERSION: u8 = 1;
/// Prefix of an EMD's signed message.
pub const EMD_CONTEXT: &[u8] = b"evfs EMD signature v1\0";
/// Prefix of a stream's signed message.
pub const STREAM_CONTEXT: &[u8] = b"evfs stream signature v1\0";

/// A signature and its signer.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signer's key ID.
    pub id: KeyId,
    /// The signer's X25519 public key.
    pub public: [u8; 32],
    /// Ed25519 `R ‖ S` under the Edwards form of `public`.
    pub bytes: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({} {})", self.id, self.fingerprint())
    }
}

/// Why bytes are not a valid signature block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockError(pub &'static str);

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid signature block ({})", self.0)
    }
}

/// Signing with a key pair of the keystore: the signature block of a
/// message (here rather than in `keys`, which this module's blocks name).
pub trait Sign {
    /// The signature block of `message`.
    fn sign(&self, message: &[u8]) -> Signature;
}

impl Sign for crate::keys::PrivateKey {
    fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            id: self.id().clone(),
            public: self.public(),
            bytes: self.signature_of(message),
        }
    }
}

impl Signature {
    /// The signer's fingerprint (`b3:` and 16 hex digits).
    pub fn fingerprint(&self) -> String {
        crate::crypto::sign::fingerprint(&self.public)
    }

    /// Whether the signature is valid for `message` (not whether the signer
    /// is trusted).
    pub fn valid(&self, message: &[u8]) -> bool {
        verify(&self.public, message, &self.bytes)
    }

    /// The block's bytes.
    pub fn encode(&self) -> [u8; BLOCK_LEN] {
        let mut b = [0u8; BLOCK_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        let id = self.id.as_str().as_bytes();
        b[5] = id.len() as u8;
        b[8..8 + id.len()].copy_from_slice(id);
        b[72..104].copy_from_slice(&self.public);
        b[104..168].copy_from_slice(&self.bytes);
        b
    }

    /// Parse a block: `None` when it is all zeros (unsigned).
    pub fn parse(b: &[u8]) -> Result<Option<Signature>, BlockError> {
        if b.len() < BLOCK_LEN {
            return Err(BlockError("short"));
        }
        let b = &b[..BLOCK_LEN];
        if zero(b, 0..BLOCK_LEN) {
            return Ok(None);
        }
        if &b[0..4] != MAGIC {
            return Err(BlockError("magic"));
        }
        if b[4] != VERSION {
            return Err(BlockError("version"));
        }
        let len = usize::from(b[5]);
        if len == 0 || len > 63 || !zero(b, 6..8) || !zero(b, 8 + len..72) {
            return Err(BlockError("key ID"));
        }
        let id = std::str::from_utf8(&b[8..8 + len])
            .ok()
            .and_then(|t| KeyId::parse(t).ok())
            .filter(|id| id.as_str().len() == len)
            .ok_or(BlockError("key ID"))?;
        if !zero(b, 168..BLOCK_LEN) {
            return Err(BlockError("reserved"));
        }
        Ok(Some(Signature {
            id,
            public: crate::le::array(b, 72),
            bytes: crate::le::array(b, 104),
        }))
    }
}

/// The message a stream's signature signs: its checksum, which commits to
/// the header (flags and mode included), every frame and the trailer.
pub fn stream_message(checksum: &[u8; 32]) -> Vec<u8> {
    let mut m = STREAM_CONTEXT.to_vec();
    m.extend_from_slice(checksum);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use x25519_dalek::{PublicKey, StaticSecret};

    fn signed(message: &[u8]) -> Signature {
        let secret = StaticSecret::from([3u8; 32]);
        Signature {
            id: KeyId::parse("backup.cron").unwrap(),
            public: PublicKey::from(&secret).to_bytes(),
            bytes: crate::crypto::sign::sign(&secret, message),
        }
    }

    #[test]
    fn blocks_round_trip_and_zeros_are_unsigned() {
        let s = signed(b"m");
        assert_eq!(Signature::parse(&s.encode()).unwrap(), Some(s.clone()));
        assert_eq!(Signature::parse(&[0u8; BLOCK_LEN]).unwrap(), None);
        assert!(s.valid(b"m") && !s.valid(b"n"));
        assert!(s.fingerprint().starts_with("b3:"));
    }

    #[test]
    fn the_worked_example_in_formats_signature_md_verifies() {
        use crate::testutil::{expect_listing, listing, unhexdump};
        let signer = crate::emd::tests::example_signer();
        let public = signer.public();
        let edwards = crate::crypto::sign::edwards_public(&public).unwrap();
        let keys = [&public[..], &edwards.to_bytes()[..]].concat();
        expect_listing("formats/SIGNATURE.md", 0, &keys);
        let mut emd = crate::emd::tests::example();
        emd.sign(|m| signer.sign(m));
        let block = emd.signature.as_ref().unwrap().encode();
        expect_listing("formats/SIGNATURE.md", 1, &block);

        // Read back from the document alone.
        let doc_keys = unhexdump(&listing("formats/SIGNATURE.md", 0));
        let doc_block = unhexdump(&listing("formats/SIGNATURE.md", 1));
        let sig = Signature::parse(&doc_block).unwrap().unwrap();
        assert_eq!(sig.id.as_str(), "backup.cron");
        assert_eq!(&sig.public[..], &doc_keys[..32]);
        let mut message = b"evfs EMD signature v1\0".to_vec();
        let body = crate::emd::tests::example().encode();
        message.extend_from_slice(&body[..16]);
        message.extend_from_slice(&body[128..15872]);
        assert_eq!(message, emd.signed_message());
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&doc_keys[32..].try_into().unwrap()).unwrap();
        let s = ed25519_dalek::Signature::from_bytes(&sig.bytes);
        assert!(key.verify_strict(&message, &s).is_ok());
        assert!(sig.valid(&message));
    }

    #[test]
    fn damaged_blocks_are_refused() {
        let good = signed(b"m").encode();
        for (at, what) in [
            (0, "magic"),
            (4, "version"),
            (5, "key ID"),
            (300, "reserved"),
        ] {
            let mut b = good;
            b[at] ^= 0x40;
            assert_eq!(Signature::parse(&b), Err(BlockError(what)), "byte {at}");
        }
    }
}
