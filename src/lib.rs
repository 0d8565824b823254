//! evfs: EVFS-style encrypted volumes on Linux, and the tools to back them up.
//!
//! A program embedding evfs starts from the use-cases in [`ops`]: back up
//! ([`ops::backup`]), restore ([`ops::restore`]), verify ([`ops::verify`]),
//! read plaintext ([`ops::read`]), map over NBD ([`ops::map`]) and
//! administer volumes ([`ops::admin`]). Each takes a typed request, a
//! [`ops::Keys`] provider and an [`ops::Observer`], and returns a report or
//! an [`Error`], whose exit code and [`Hint`] the command line shows.
//!
//! Below them, from the bottom: the primitives ([`crypto`]); the formats as
//! bytes ([`emd`], [`stream`], [`luks`]) and the keystore ([`keys`]);
//! volume I/O ([`volume`]: devices, storage identity, locks, the EMD
//! copies, the write transaction). The data pipeline and the NBD server are
//! internal. `ARCHITECTURE.md` draws the map.
//!
//! The command line itself is [`cli`] (its clap definitions, from which the
//! manual pages are generated) and [`commands::run`] (what the `evfs` binary calls).

#![deny(unsafe_code)]
#![deny(missing_docs)]

// The clap definitions document themselves as help texts; a field without
// one (a positional VOL) is named in the usage line.
#[allow(missing_docs)]
pub mod cli;
pub mod commands;
pub mod crypto;
pub mod emd;
pub mod error;
mod hex;
pub mod index;
pub mod keys;
mod le;
pub mod luks;
mod nbd;
pub mod ops;
mod pipeline;
mod positional;
pub mod signature;
mod size;
pub mod stream;
mod text;
pub mod volume;

#[cfg(test)]
mod testutil;

pub use error::{CliAdvice, Error, Hint, Result};
