//! Wrapping a volume key to an X25519 public key (one EMD slot).
//!
//! An ephemeral key pair is made per wrap; the shared secret, both public keys
//! and the slot's key ID derive a one-time ChaCha20-Poly1305 key. Because only
//! the recipient's public key is needed, an owner can add a user, and a backup
//! can re-wrap a fresh key for every slot, without anyone's private key.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{Cipher, VolumeKey};
use crate::error::Result;

/// Bytes of a wrapped key: ephemeral public key, the key padded to 64 bytes, tag.
pub const WRAPPED_LEN: usize = 32 + 64 + 16;

const WRAP_CONTEXT: &str = "evfs 2026-11 slot wrap v1";

/// Wrap `key` for the holder of `recipient`'s private key, bound to `slot_id`.
pub fn wrap(key: &VolumeKey, recipient: &[u8; 32], slot_id: &str) -> Result<[u8; WRAPPED_LEN]> {
    let eph = StaticSecret::from(super::random_array::<32>()?);
    let eph_pub = PublicKey::from(&eph);
    let shared = eph.diffie_hellman(&PublicKey::from(*recipient));
    let wrap_key = derive(shared.as_bytes(), eph_pub.as_bytes(), recipient);
    let mut out = [0u8; WRAPPED_LEN];
    out[..32].copy_from_slice(eph_pub.as_bytes());
    let body = &mut out[32..96];
    body[..key.expose().len()].copy_from_slice(key.expose());
    let tag = super::seal(&wrap_key, &[0u8; 12], slot_id.as_bytes(), body);
    out[96..].copy_from_slice(&tag);
    Ok(out)
}

/// Unwrap a slot's key with the recipient's private key; `None` when the key
/// does not open it (another key, or a changed slot).
pub fn unwrap(
    wrapped: &[u8; WRAPPED_LEN],
    secret: &StaticSecret,
    cipher: Cipher,
    slot_id: &str,
) -> Option<VolumeKey> {
    let eph_pub: [u8; 32] = wrapped[..32].try_into().expect("32 bytes");
    let my_pub = PublicKey::from(secret);
    let shared = secret.diffie_hellman(&PublicKey::from(eph_pub));
    if !shared.was_contributory() {
        return None;
    }
    let wrap_key = derive(shared.as_bytes(), &eph_pub, my_pub.as_bytes());
    let mut body = Zeroizing::new([0u8; 64]);
    body.copy_from_slice(&wrapped[32..96]);
    let tag: [u8; 16] = wrapped[96..].try_into().expect("16 bytes");
    if !super::open(
        &wrap_key,
        &[0u8; 12],
        slot_id.as_bytes(),
        body.as_mut(),
        &tag,
    ) {
        return None;
    }
    let len = cipher.key_len();
    if body[len..].iter().any(|&b| b != 0) {
        return None;
    }
    VolumeKey::from_bytes(cipher, &body[..len])
}

fn derive(shared: &[u8; 32], eph_pub: &[u8; 32], recipient: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut material = Zeroizing::new([0u8; 96]);
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(eph_pub);
    material[64..].copy_from_slice(recipient);
    Zeroizing::new(blake3::derive_key(WRAP_CONTEXT, material.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (StaticSecret, [u8; 32]) {
        let s = StaticSecret::from(crate::crypto::random_array::<32>().unwrap());
        let p = PublicKey::from(&s).to_bytes();
        (s, p)
    }

    #[test]
    fn wrap_unwrap_round_trip_for_both_ciphers() {
        for cipher in [Cipher::Aes256Xts, Cipher::Aes128Xts] {
            let (s, p) = pair();
            let key = VolumeKey::generate(cipher).unwrap();
            let w = wrap(&key, &p, "alice.k1").unwrap();
            let back = unwrap(&w, &s, cipher, "alice.k1").unwrap();
            assert_eq!(back.expose(), key.expose());
        }
    }

    #[test]
    fn another_key_or_slot_id_or_a_changed_byte_does_not_unwrap() {
        let (s, p) = pair();
        let (other, _) = pair();
        let key = VolumeKey::generate(Cipher::Aes256Xts).unwrap();
        let w = wrap(&key, &p, "alice.k1").unwrap();
        assert!(unwrap(&w, &other, Cipher::Aes256Xts, "alice.k1").is_none());
        assert!(unwrap(&w, &s, Cipher::Aes256Xts, "bob.k1").is_none());
        for i in [0, 40, 100, WRAPPED_LEN - 1] {
            let mut bad = w;
            bad[i] ^= 0x20;
            assert!(unwrap(&bad, &s, Cipher::Aes256Xts, "alice.k1").is_none());
        }
    }
}
