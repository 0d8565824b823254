//! Key pairs, key IDs, the keystore on disk and where passphrases come from.

#[cfg(test)]
mod examples;
mod files;
pub mod id;
pub mod keystore;
pub mod passphrase;

pub use id::KeyId;
pub use keystore::{Keystore, PrivateKey};
pub use passphrase::PassphraseSource;
