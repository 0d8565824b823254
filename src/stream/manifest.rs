//! The manifest of a backup stream (`formats/INDEX.md`): the stream's final
//! EMD and the chunk index of its data, in a small file that a later
//! `backup --since` reads instead of the stream itself.
//!
//! ```text
//! 0      8      magic "EVFSMNF1"
//! 8      2      version: 1
//! 10     6      reserved, zero
//! 16     16384  the final EMD of the stream (formats/EMD.md)
//! 16400  ...    the sealed chunk index (formats/INDEX.md), to the end
//! ```
//!
//! Both halves are authenticated by the volume key (the EMD's MAC, the
//! index's seal) and bound to each other by the state ID and data version
//! both carry; a reader checks them with the key.

use crate::emd::{EMD_SIZE, Emd, EmdError};
use crate::le::{put_u16, u16_at, zero};

/// First bytes of a manifest.
pub const MAGIC: &[u8; 8] = b"EVFSMNF1";
/// The manifest version this code writes and reads.
pub const VERSION: u16 = 1;
/// Where the sealed index starts.
pub const INDEX_AT: usize = 16 + EMD_SIZE;

/// A manifest, its parts parsed or still sealed.
pub struct Manifest {
    /// The final EMD of the stream the manifest describes.
    pub emd: Emd,
    /// The sealed chunk index (open it with the EMD's volume key).
    pub sealed_index: Vec<u8>,
}

/// Why bytes are not a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// No magic, another version, or reserved bytes set.
    #[error("not an evfs manifest ({0})")]
    Format(&'static str),
    /// The EMD in it does not parse.
    #[error("its EMD is invalid: {0}")]
    Emd(EmdError),
}

impl Manifest {
    /// The manifest's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; INDEX_AT];
        b[..8].copy_from_slice(MAGIC);
        put_u16(&mut b, 8, VERSION);
        b[16..INDEX_AT].copy_from_slice(&self.emd.encode()[..]);
        b.extend_from_slice(&self.sealed_index);
        b
    }

    /// Parse a manifest (the EMD's MAC and the index's seal are checked by
    /// whoever has the key).
    pub fn parse(b: &[u8]) -> Result<Manifest, ManifestError> {
        if b.len() < 8 || &b[..8] != MAGIC {
            return Err(ManifestError::Format("no manifest magic"));
        }
        if b.len() < INDEX_AT {
            return Err(ManifestError::Format("it is truncated"));
        }
        if u16_at(b, 8) != VERSION || !zero(b, 10..16) {
            return Err(ManifestError::Format("an unknown version"));
        }
        let emd = Emd::parse(&b[16..INDEX_AT]).map_err(ManifestError::Emd)?;
        Ok(Manifest {
            emd,
            sealed_index: b[INDEX_AT..].to_vec(),
        })
    }

    /// Whether `b` starts like a manifest.
    pub fn sniff(b: &[u8]) -> bool {
        b.starts_with(MAGIC)
    }
}
