//! Signatures made with a key pair's X25519 key.
//!
//! An evfs key pair is one X25519 key. It signs as XEdDSA does: the private
//! scalar `k` gives the Edwards point `E = k·B`; the signing scalar is `a =
//! k` when `E`'s sign bit is 0 and `a = −k` otherwise, so that the public
//! point `A = a·B` has sign bit 0 and is exactly the Edwards form of the
//! X25519 public key `u`: `y = (u − 1)/(u + 1)`, sign bit 0. A signature is
//! then an Ed25519 signature (RFC 8032: `R ‖ S`, 64 bytes) by `a` under `A`,
//! and anyone who holds the X25519 public key verifies it with a standard
//! Ed25519 verifier after that conversion. The nonce is deterministic, as in
//! Ed25519: its hash prefix is derived from the private key.
//!
//! No new public key has to travel: a keystore that holds someone's `.pub`
//! (or a slot that carries it) can check their signatures.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{Signature, VerifyingKey};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// Bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// Domain-separation context of the nonce prefix.
const NONCE_CONTEXT: &str = "evfs 2026-11 XEdDSA nonce prefix v1";

/// The Ed25519 public key (the Edwards form, sign bit 0) of an X25519
/// public key; `None` for a point that has none (not on the curve's twist
/// check, or the point of order dividing 8).
pub fn edwards_public(x25519_public: &[u8; 32]) -> Option<VerifyingKey> {
    let point = MontgomeryPoint(*x25519_public).to_edwards(0)?;
    if point.is_small_order() {
        return None;
    }
    VerifyingKey::from_bytes(&point.compress().to_bytes()).ok()
}

/// Sign `message` with the X25519 private key `secret`.
pub fn sign(secret: &StaticSecret, message: &[u8]) -> [u8; SIGNATURE_LEN] {
    let bytes = Zeroizing::new(secret.to_bytes());
    let k = Scalar::from_bytes_mod_order(clamp_integer(*bytes));
    let e = (&k * ED25519_BASEPOINT_TABLE).compress();
    let a = if e.to_bytes()[31] >> 7 == 1 { -k } else { k };
    let public = (&a * ED25519_BASEPOINT_TABLE).compress();
    let verifying = VerifyingKey::from_bytes(&public.to_bytes())
        .expect("a multiple of the base point is a valid public key");
    let esk = ExpandedSecretKey {
        scalar: a,
        hash_prefix: blake3::derive_key(NONCE_CONTEXT, bytes.as_ref()),
    };
    raw_sign::<sha2::Sha512>(&esk, message, &verifying).to_bytes()
}

/// Whether `signature` is a valid signature of `message` by the holder of
/// the X25519 private key whose public key is `x25519_public` (strict
/// Ed25519 verification: no malleable or small-order encodings).
pub fn verify(x25519_public: &[u8; 32], message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let Some(key) = edwards_public(x25519_public) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// Short, stable fingerprint of a public key.
pub fn fingerprint(public: &[u8; 32]) -> String {
    let h = blake3::hash(public);
    let hx = crate::hex::encode(&h.as_bytes()[..8]);
    format!("b3:{}", hx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use x25519_dalek::PublicKey;

    fn pair(seed: u8) -> (StaticSecret, [u8; 32]) {
        let s = StaticSecret::from([seed; 32]);
        let p = PublicKey::from(&s).to_bytes();
        (s, p)
    }

    #[test]
    fn a_signature_verifies_under_the_x25519_public_key_only() {
        for seed in 1u8..40 {
            let (s, p) = pair(seed);
            let sig = sign(&s, b"the EMD of a volume");
            assert!(verify(&p, b"the EMD of a volume", &sig), "seed {seed}");
            assert!(!verify(&p, b"the EMD of a volumf", &sig));
            let (_, other) = pair(seed.wrapping_add(100));
            assert!(!verify(&other, b"the EMD of a volume", &sig));
            let mut bad = sig;
            bad[seed as usize % 64] ^= 1;
            assert!(!verify(&p, b"the EMD of a volume", &bad));
        }
    }

    #[test]
    fn signatures_are_deterministic_and_plain_ed25519_under_the_converted_key() {
        let (s, p) = pair(7);
        assert_eq!(sign(&s, b"m"), sign(&s, b"m"));
        assert_ne!(sign(&s, b"m"), sign(&s, b"n"));
        // Any Ed25519 verifier checks it after the documented conversion.
        let y = MontgomeryPoint(p)
            .to_edwards(0)
            .unwrap()
            .compress()
            .to_bytes();
        let key = VerifyingKey::from_bytes(&y).unwrap();
        assert!(
            key.verify_strict(b"m", &Signature::from_bytes(&sign(&s, b"m")))
                .is_ok()
        );
    }

    #[test]
    fn keys_of_small_order_never_verify() {
        assert!(!verify(&[0u8; 32], b"m", &[0u8; 64]));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(!verify(&one, b"m", &[0u8; 64]));
    }

    proptest! {
        #[test]
        fn random_secrets_sign_and_verify(secret in any::<[u8; 32]>(), msg in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = StaticSecret::from(secret);
            let p = PublicKey::from(&s).to_bytes();
            prop_assert!(verify(&p, &msg, &sign(&s, &msg)));
        }
    }
}
