//! Secret values as types: no `Debug`, no `Clone`, no `Copy`, wiped on drop.

use zeroize::{Zeroize, Zeroizing};

use super::{Cipher, Xts};
use crate::error::Result;

/// Domain-separation context for the EMD MAC key.
const EMD_MAC_CONTEXT: &str = "evfs 2026-11 EMD MAC key v1";
/// Domain-separation context for the backup stream MAC key.
const STREAM_MAC_CONTEXT: &str = "evfs 2026-11 stream MAC key v1";
/// Domain-separation context for the compressed-stream AEAD key.
const STREAM_AEAD_CONTEXT: &str = "evfs 2026-11 stream compressed-frame key v1";

/// Bytes that must not outlive their use.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Take ownership of `bytes`; they are wiped when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The secret bytes, for the one call that needs them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A passphrase as typed or read; never printed, never in argv.
pub struct Passphrase(SecretBytes);

impl Passphrase {
    /// Take ownership of the passphrase's bytes (not UTF-8 checked); wiped on
    /// drop.
    pub fn new(bytes: Vec<u8>) -> Self {
        Passphrase(SecretBytes::new(bytes))
    }

    /// The passphrase's bytes, for the KDF that needs them.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
}

/// The random AES-XTS key of a volume (both halves).
pub struct VolumeKey {
    cipher: Cipher,
    bytes: SecretBytes,
}

impl VolumeKey {
    /// A fresh random key for `cipher`.
    pub fn generate(cipher: Cipher) -> Result<Self> {
        let mut bytes = vec![0u8; cipher.key_len()];
        super::random_bytes(&mut bytes)?;
        Ok(VolumeKey {
            cipher,
            bytes: SecretBytes::new(bytes),
        })
    }

    /// Wrap existing key bytes; `None` if the length does not fit the cipher.
    pub fn from_bytes(cipher: Cipher, bytes: &[u8]) -> Option<Self> {
        (bytes.len() == cipher.key_len()).then(|| VolumeKey {
            cipher,
            bytes: SecretBytes::new(bytes.to_vec()),
        })
    }

    /// The cipher this key is for.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The key bytes (both XTS halves, [`Cipher::key_len`] bytes).
    pub fn expose(&self) -> &[u8] {
        self.bytes.expose()
    }

    /// The sector cipher keyed with this key.
    pub fn xts(&self) -> Xts {
        Xts::new(self.expose()).expect("a volume key always has an XTS key length")
    }

    /// A copy of this key (explicit, so that copies of secrets are visible in the code).
    pub fn duplicate(&self) -> VolumeKey {
        VolumeKey {
            cipher: self.cipher,
            bytes: SecretBytes::new(self.expose().to_vec()),
        }
    }

    /// Key of the EMD MAC, derived so that the MAC never reveals the data key.
    pub fn emd_mac_key(&self) -> MacKey {
        MacKey(blake3::derive_key(EMD_MAC_CONTEXT, self.expose()))
    }

    /// Key of the backup stream's trailer MAC.
    pub fn stream_mac_key(&self) -> MacKey {
        MacKey(blake3::derive_key(STREAM_MAC_CONTEXT, self.expose()))
    }

    /// Key of the AEAD that seals compressed stream frames.
    pub fn stream_aead_key(&self) -> MacKey {
        MacKey(blake3::derive_key(STREAM_AEAD_CONTEXT, self.expose()))
    }
}

/// A 32-byte derived key (MAC or AEAD).
pub struct MacKey([u8; 32]);

impl MacKey {
    /// The 32 key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Keyed BLAKE3 of `data`.
    pub fn mac(&self, data: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.0, data)
    }

    /// A keyed BLAKE3 hasher, for MACs over data that arrives in pieces.
    /// It holds the key, so it is wiped on drop too.
    pub fn hasher(&self) -> Zeroizing<blake3::Hasher> {
        Zeroizing::new(blake3::Hasher::new_keyed(&self.0))
    }
}

impl Drop for MacKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Keep secrets out of core dumps and away from other processes of the same
/// user: no core file (`RLIMIT_CORE` 0, hard limit too) and not dumpable
/// (`PR_SET_DUMPABLE` 0, which also refuses `ptrace` attaches and makes
/// `/proc/PID/mem` root's). Called once, before any key is loaded.
pub fn protect_process() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_cipher_length_and_differ() {
        let a = VolumeKey::generate(Cipher::Aes256Xts).unwrap();
        let b = VolumeKey::generate(Cipher::Aes256Xts).unwrap();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(
            VolumeKey::generate(Cipher::Aes128Xts)
                .unwrap()
                .expose()
                .len(),
            32
        );
        assert!(VolumeKey::from_bytes(Cipher::Aes256Xts, &[0; 32]).is_none());
    }

    #[test]
    fn protected_processes_dump_no_core() {
        use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};
        protect_process().unwrap();
        assert_eq!(getrlimit(Resource::Core).current, Some(0));
        assert_eq!(getrlimit(Resource::Core).maximum, Some(0));
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
    }

    #[test]
    fn derived_keys_are_separated_by_purpose() {
        let k = VolumeKey::from_bytes(Cipher::Aes256Xts, &[9; 64]).unwrap();
        let a = *k.emd_mac_key().expose();
        let b = *k.stream_mac_key().expose();
        let c = *k.stream_aead_key().expose();
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_ne!(&a[..], &k.expose()[..32]);
    }
}
