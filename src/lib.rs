//! evfs: EVFS-style encrypted volumes on Linux, and the tools to back them up.
//!
//! The binary's commands live in [`commands`]; everything they build on is a
//! module of its own: the sector cipher and key wrapping ([`crypto`]), the
//! metadata format ([`emd`]), key pairs and the keystore ([`keys`]), devices
//! and volumes ([`volume`]), and the data pipeline ([`pipeline`]). LUKS1 and
//! LUKS2 headers, for volumes made by cryptsetup, are in [`luks`].

pub mod cli;
pub mod commands;
pub mod crypto;
pub mod emd;
pub mod error;
pub mod hex;
pub mod keys;
pub mod le;
pub mod luks;
pub mod nbd;
pub mod ops;
pub mod pipeline;
pub mod positional;
pub mod size;
pub mod stream;
pub mod text;
pub mod volume;

#[cfg(test)]
mod testutil;

pub use error::{CliAdvice, Error, Hint, Result};
