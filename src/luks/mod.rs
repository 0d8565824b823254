//! LUKS1 and LUKS2 headers, bytes only: read them, say what evfs refuses,
//! unlock a keyslot, describe the data area's cipher, and write LUKS2
//! headers for targets evfs creates.
//!
//! The format is specified in `formats/LUKS.md` (from the LUKS1 on-disk
//! format specification 1.2.3, Milan Brož's LUKS2 on-disk format
//! specification, and cryptsetup's sources). The module touches storage
//! only through [`ReadAt`] and returns writes as a [`Plan`]; it knows
//! nothing of paths, devices, the CLI or the backup pipeline.
//!
//! * [`Header::read`] finds a LUKS1 or LUKS2 header (for LUKS2 the valid
//!   copy with the higher seqid, as cryptsetup picks it).
//! * [`Header::unsupported`] says why evfs cannot read a volume's data.
//! * [`Header::unlock`] opens a keyslot with a passphrase or key file
//!   ([`read_key_file`]) and returns the volume key as a [`LuksKey`].
//! * [`Header::data_area`] and [`DataArea::cipher`] decrypt data sectors
//!   with dm-crypt's IV rule (512-byte IV units).
//! * [`format()`] and the update methods of [`Luks2Header`] write LUKS2: each
//!   returns a [`Plan`]; run [`Plan::check`] (the header on the device is
//!   still the one the update was made from) then [`Plan::apply`].
//!
//! Secrets (keys, derived keys, AF material) live in zeroizing buffers and
//! types without `Debug` or `Clone`. No input makes this module panic; it
//! allocates at most two LUKS2 metadata copies (4 MiB each) with their
//! parsed JSON (at most 65536 values each), 2 MiB of keyslot material, and
//! the Argon2 memory a keyslot asks for, within cryptsetup's 4 GiB limit.

pub mod data;
pub mod error;
pub mod io;
pub(crate) mod json;
pub mod keyslot;
pub mod luks1;
pub mod luks2;
pub mod metadata;
mod support;
pub mod write;

#[cfg(test)]
mod tests;

use zeroize::Zeroizing;

pub use data::{DataArea, SectorCipher};
pub use error::{LuksError, Result};
pub use io::{KEY_FILE_MAX, Plan, ReadAt, Step, WriteAt, read_key, read_key_file};
pub use keyslot::SectorCipherKind;
pub use luks1::Luks1Header;
pub use luks2::{CopyState, Luks2Header};
pub use write::{Argon2Params, FormatOptions, format, format_with_requirement};

use crate::crypto::{Cipher, Passphrase, SecretBytes, VolumeKey};
use error::unsupported;

/// The mandatory requirement evfs sets on a LUKS2 target while it writes
/// it: cryptsetup refuses to activate the volume (or change its header)
/// until evfs removes it.
pub const REQUIREMENT_INCOMPLETE: &str = "evfs-incomplete";
/// The token type evfs stores provenance under.
pub const TOKEN_PROVENANCE: &str = "evfs-provenance";

/// A LUKS volume key: no `Debug`, no `Clone`, wiped on drop.
pub struct LuksKey(SecretBytes);

impl LuksKey {
    /// Wrap key bytes (taken, not copied).
    pub fn new(bytes: Vec<u8>) -> LuksKey {
        LuksKey(SecretBytes::new(bytes))
    }

    pub(crate) fn from_zeroizing(mut bytes: Zeroizing<Vec<u8>>) -> LuksKey {
        LuksKey::new(std::mem::take(&mut *bytes))
    }

    /// A fresh random key of `len` bytes.
    pub fn generate(len: usize) -> Result<LuksKey> {
        let mut bytes = vec![0u8; len];
        getrandom::fill(&mut bytes)
            .map_err(|e| LuksError::Io(std::io::Error::other(format!("no randomness: {e}"))))?;
        Ok(LuksKey::new(bytes))
    }

    /// The same bytes as an evfs volume key (AES-XTS keys only: 32 or 64
    /// bytes).
    pub fn from_volume_key(key: &VolumeKey) -> LuksKey {
        LuksKey::new(key.expose().to_vec())
    }

    /// As an evfs [`VolumeKey`], when it is an AES-XTS key (32 or 64 bytes).
    pub fn to_volume_key(&self) -> Option<VolumeKey> {
        let cipher = match self.len() {
            64 => Cipher::Aes256Xts,
            32 => Cipher::Aes128Xts,
            _ => return None,
        };
        VolumeKey::from_bytes(cipher, self.expose())
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }

    /// Length of the key in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What an unlock yields: the volume key and the keyslot that opened.
pub struct Unlocked {
    /// The volume key.
    pub key: LuksKey,
    /// The number of the keyslot that opened.
    pub keyslot: u32,
}

/// A LUKS header of either version.
#[derive(Clone, Debug)]
pub enum Header {
    /// A LUKS1 header.
    Luks1(Box<Luks1Header>),
    /// A LUKS2 header (the copy in force).
    Luks2(Box<Luks2Header>),
}

impl Header {
    /// Read the header at the start of `dev`.
    ///
    /// `NotLuks` when there is no LUKS magic (nor a LUKS2 secondary
    /// header); `Damaged` when cryptsetup would refuse it as well;
    /// `Unsupported` for a version other than 1 and 2.
    pub fn read(dev: &(impl ReadAt + ?Sized)) -> Result<Header> {
        let mut b = vec![0u8; luks1::PHDR_LEN];
        // An unreadable start may still be LUKS2 with a readable secondary
        // header: the LUKS2 reader reports the I/O error if nothing is.
        let have = dev.size()? >= b.len() as u64 && dev.read_at(&mut b, 0).is_ok();
        if have && &b[..6] == luks1::MAGIC {
            match u16::from_be_bytes([b[6], b[7]]) {
                1 => return Ok(Header::Luks1(Box::new(Luks1Header::parse(&b)?))),
                2 => {}
                v => return Err(unsupported(format!("LUKS version {v}"))),
            }
        }
        // LUKS2, or a device whose primary header is gone: cryptsetup then
        // looks for a secondary LUKS2 header too.
        Ok(Header::Luks2(Box::new(Luks2Header::read(dev)?)))
    }

    /// 1 or 2.
    pub fn version(&self) -> u16 {
        match self {
            Header::Luks1(_) => 1,
            Header::Luks2(_) => 2,
        }
    }

    /// The volume's UUID, as text.
    pub fn uuid(&self) -> String {
        match self {
            Header::Luks1(h) => h.uuid.clone(),
            Header::Luks2(h) => h.uuid(),
        }
    }

    /// Every reason evfs cannot read this volume's data (empty when it
    /// can): ciphers, integrity, reencryption, requirements.
    pub fn unsupported_reasons(&self) -> Vec<String> {
        match self {
            Header::Luks1(h) => h.unsupported().into_iter().collect(),
            Header::Luks2(h) => h.unsupported_reasons(),
        }
    }

    /// The reasons of [`Header::unsupported_reasons`] in one sentence, or
    /// `None` when evfs can read the volume.
    pub fn unsupported(&self) -> Option<String> {
        let reasons = self.unsupported_reasons();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// `Err(Unsupported)` with the reasons, or `Ok`.
    pub fn check_supported(&self) -> Result<()> {
        match self.unsupported() {
            Some(why) => Err(LuksError::Unsupported(why)),
            None => Ok(()),
        }
    }

    /// Open a keyslot with `secret` (a passphrase, or a whole key file):
    /// only `keyslot` when given (whatever its priority), else LUKS2
    /// keyslots of priority "prefer" then "normal" in header order, or
    /// LUKS1 keyslots in slot order.
    pub fn unlock(
        &self,
        dev: &(impl ReadAt + ?Sized),
        secret: &Passphrase,
        keyslot: Option<u32>,
    ) -> Result<Unlocked> {
        match self {
            Header::Luks1(h) => h.unlock(dev, secret, keyslot),
            Header::Luks2(h) => h.unlock(dev, secret, keyslot),
        }
    }

    /// Whether `key` is this volume's key.
    pub fn verify_key(&self, key: &LuksKey) -> Result<bool> {
        match self {
            Header::Luks1(h) => h.verify_key(key),
            Header::Luks2(h) => h.verify_key(key),
        }
    }

    /// The data area, for a volume evfs supports (else `Unsupported`).
    pub fn data_area(&self) -> Result<DataArea> {
        self.check_supported()?;
        self.data_area_unchecked()
    }

    /// The data area whatever [`Header::unsupported`] says (`Unsupported`
    /// only when it cannot be described at all): for evfs's own target,
    /// whose only reason is [`REQUIREMENT_INCOMPLETE`] while it writes it.
    pub fn data_area_unchecked(&self) -> Result<DataArea> {
        match self {
            Header::Luks1(h) => Ok(DataArea {
                cipher: SectorCipherKind::parse(&h.cipher_spec())
                    .ok_or_else(|| unsupported(format!("cipher {}", h.cipher_spec())))?,
                offset: u64::from(h.payload_offset) * keyslot::SECTOR as u64,
                size: None,
                sector_size: keyslot::SECTOR as u32,
                iv_tweak: 0,
            }),
            Header::Luks2(h) => {
                let seg = h
                    .metadata()
                    .data_segments()
                    .next()
                    .ok_or_else(|| unsupported("no data segment"))?;
                let c = seg
                    .crypt
                    .as_ref()
                    .ok_or_else(|| unsupported("no crypt segment"))?;
                Ok(DataArea {
                    cipher: SectorCipherKind::parse(&c.encryption)
                        .ok_or_else(|| unsupported(format!("cipher {}", c.encryption)))?,
                    offset: seg.offset,
                    size: seg.size,
                    sector_size: c.sector_size,
                    iv_tweak: c.iv_tweak,
                })
            }
        }
    }
}

/// Try keyslots in order until one opens. A digest mismatch goes on to the
/// next; an I/O error stops; other errors (an unsupported or malformed
/// keyslot) are remembered and reported when none opens, since the right
/// passphrase may belong to that keyslot.
pub(crate) fn try_in_order(
    ids: &[u32],
    mut attempt: impl FnMut(u32) -> Result<Option<LuksKey>>,
) -> Result<Unlocked> {
    let mut mismatch = false;
    let mut skipped: Option<LuksError> = None;
    let mut problem: Option<LuksError> = None;
    for &id in ids {
        match attempt(id) {
            Ok(Some(key)) => return Ok(Unlocked { key, keyslot: id }),
            Ok(None) => mismatch = true,
            Err(e @ LuksError::Io(_)) => return Err(e),
            Err(e @ LuksError::NoKeyslot(_)) => {
                skipped.get_or_insert(e);
            }
            Err(e) => {
                problem.get_or_insert(e);
            }
        }
    }
    if let Some(e) = problem {
        return Err(e);
    }
    if mismatch {
        return Err(LuksError::WrongPassphrase);
    }
    Err(skipped.unwrap_or_else(|| LuksError::NoKeyslot("no active keyslot".into())))
}
