//! LUKS1: the 592-byte partition header (phdr) of the LUKS1 on-disk format
//! specification 1.2.3, its checks, and keyslot unlock.
//!
//! LUKS1 has no checksum and no second copy: a header is damaged when its
//! fields break the rules cryptsetup enforces on load
//! (`_check_and_convert_hdr` and `LUKS_check_keyslots` in
//! `lib/luks1/keymanage.c`). Keyslot areas are encrypted with the volume's
//! own cipher, keyed by PBKDF2 of the passphrase with the header's hash, in
//! 512-byte sectors numbered from 0 at the area's start.

use zeroize::Zeroizing;

use super::error::{LuksError, Result, damaged, unsupported};
use super::io::ReadAt;
use super::keyslot::{
    HashAlg, MAX_KEY_LEN, SALT_LEN, SECTOR, STRIPES, SectorCipherKind, af_merge, af_size,
    digest_matches,
};
use super::{LuksKey, Unlocked};
use crate::crypto::Passphrase;

/// Magic of a LUKS1 header (and of a LUKS2 primary header).
pub const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// Bytes of the phdr.
pub const PHDR_LEN: usize = 592;
/// Keyslots in a LUKS1 header.
pub const KEYSLOTS: usize = 8;
/// `active` of an enabled keyslot.
pub const KEY_ENABLED: u32 = 0x00AC_71F3;
/// `active` of a disabled keyslot.
pub const KEY_DISABLED: u32 = 0x0000_DEAD;
/// Bytes of the master-key digest (SHA-1 sized, whatever the hash).
pub const DIGEST_LEN: usize = 20;

const KEYSLOTS_AT: usize = 208;
const KEYSLOT_LEN: usize = 48;

/// One of the eight keyslots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Luks1Keyslot {
    /// [`KEY_ENABLED`], [`KEY_DISABLED`] or another (invalid) value.
    pub active: u32,
    /// PBKDF2 iterations of the passphrase.
    pub iterations: u32,
    /// PBKDF2 salt of the passphrase.
    pub salt: [u8; SALT_LEN],
    /// Start of the key material, in 512-byte sectors.
    pub key_material_offset: u32,
    /// Anti-forensic stripes (cryptsetup accepts only 4000).
    pub stripes: u32,
}

/// A parsed LUKS1 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Luks1Header {
    /// The cipher, `aes` for every volume evfs reads.
    pub cipher_name: String,
    /// The mode and IV, `xts-plain64` or `cbc-essiv:sha256` for the volumes
    /// evfs reads.
    pub cipher_mode: String,
    /// The hash of PBKDF2, the AF splitter and the digest (`sha1`, `sha256`,
    /// ...).
    pub hash_spec: String,
    /// Start of the data, in 512-byte sectors (0 with a detached header).
    pub payload_offset: u32,
    /// Bytes of the volume key.
    pub key_bytes: u32,
    /// PBKDF2 of the volume key, to check a candidate key.
    pub mk_digest: [u8; DIGEST_LEN],
    /// The salt of `mk_digest`.
    pub mk_digest_salt: [u8; SALT_LEN],
    /// The iterations of `mk_digest`.
    pub mk_digest_iterations: u32,
    /// The UUID as stored (text, as cryptsetup shows it).
    pub uuid: String,
    /// The eight keyslots.
    pub keyslots: [Luks1Keyslot; KEYSLOTS],
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A `char[]` field: up to the first zero, its last byte never included.
fn c_string(field: &[u8]) -> String {
    let field = &field[..field.len() - 1];
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

impl Luks1Header {
    /// Parse and check a phdr. `NotLuks` without the magic; `Unsupported`
    /// for another version; `Damaged` when cryptsetup would refuse it.
    pub fn parse(b: &[u8]) -> Result<Luks1Header> {
        if b.len() < PHDR_LEN || &b[..6] != MAGIC {
            return Err(LuksError::NotLuks);
        }
        let version = u16::from_be_bytes([b[6], b[7]]);
        if version != 1 {
            return Err(unsupported(format!("LUKS version {version}")));
        }
        let mut keyslots = Vec::with_capacity(KEYSLOTS);
        for i in 0..KEYSLOTS {
            let at = KEYSLOTS_AT + i * KEYSLOT_LEN;
            let mut salt = [0u8; SALT_LEN];
            salt.copy_from_slice(&b[at + 8..at + 8 + SALT_LEN]);
            keyslots.push(Luks1Keyslot {
                active: be32(b, at),
                iterations: be32(b, at + 4),
                salt,
                key_material_offset: be32(b, at + 40),
                stripes: be32(b, at + 44),
            });
        }
        let mut mk_digest = [0u8; DIGEST_LEN];
        mk_digest.copy_from_slice(&b[112..132]);
        let mut mk_digest_salt = [0u8; SALT_LEN];
        mk_digest_salt.copy_from_slice(&b[132..164]);
        let h = Luks1Header {
            cipher_name: c_string(&b[8..40]),
            cipher_mode: c_string(&b[40..72]),
            hash_spec: c_string(&b[72..104]),
            payload_offset: be32(b, 104),
            key_bytes: be32(b, 108),
            mk_digest,
            mk_digest_salt,
            mk_digest_iterations: be32(b, 164),
            uuid: c_string(&b[168..208]),
            keyslots: keyslots.try_into().map_err(|_| damaged("keyslot table"))?,
        };
        h.check()?;
        Ok(h)
    }

    /// cryptsetup's load-time checks that decide "damaged".
    fn check(&self) -> Result<()> {
        let key_len = self.key_bytes as usize;
        if key_len == 0 {
            return Err(damaged("key size 0"));
        }
        if key_len > MAX_KEY_LEN {
            return Err(unsupported(format!("volume key of {key_len} bytes")));
        }
        let sectors = (af_size(key_len, STRIPES) / SECTOR) as u64;
        for (i, k) in self.keyslots.iter().enumerate() {
            if k.stripes as usize != STRIPES {
                return Err(damaged(format!(
                    "keyslot {i} has {} stripes (LUKS1 uses {STRIPES})",
                    k.stripes
                )));
            }
            // The first sector is the header itself.
            if (k.key_material_offset as usize) * SECTOR < PHDR_LEN {
                return Err(damaged(format!("keyslot {i} area overlaps the header")));
            }
            // A detached header (payload offset 0) has no data to collide with.
            if self.payload_offset != 0 {
                let start = u64::from(k.key_material_offset);
                if u64::from(self.payload_offset) <= start
                    || u64::from(self.payload_offset) < start + sectors
                {
                    return Err(damaged(format!("keyslot {i} area reaches into the data")));
                }
            }
        }
        let mut starts: Vec<u64> = self
            .keyslots
            .iter()
            .map(|k| u64::from(k.key_material_offset))
            .collect();
        starts.sort_unstable();
        if starts.windows(2).any(|w| w[1] < w[0] + sectors) {
            return Err(damaged("keyslot areas overlap"));
        }
        Ok(())
    }

    /// `cipher_name-cipher_mode`, dm-crypt's notation.
    pub fn cipher_spec(&self) -> String {
        format!("{}-{}", self.cipher_name, self.cipher_mode)
    }

    /// Why evfs cannot read this volume's data, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        let spec = self.cipher_spec();
        let Some(cipher) = SectorCipherKind::parse(&spec) else {
            return Some(format!(
                "cipher {spec} (evfs reads LUKS1 volumes with aes-xts-plain64 or aes-cbc-essiv:sha256)"
            ));
        };
        if !cipher.key_len_ok(self.key_bytes as usize) {
            return Some(format!("a {}-byte key for {spec}", self.key_bytes));
        }
        if HashAlg::parse(&self.hash_spec).is_none() {
            return Some(format!(
                "LUKS1 hash {:?} (evfs supports sha1, sha256 and sha512)",
                self.hash_spec
            ));
        }
        None
    }

    /// Ids of the enabled keyslots, in order.
    pub fn active_keyslots(&self) -> Vec<u32> {
        (0..KEYSLOTS as u32)
            .filter(|&i| self.keyslots[i as usize].active == KEY_ENABLED)
            .collect()
    }

    /// Try the enabled keyslots in slot order (or only `keyslot`).
    pub fn unlock(
        &self,
        dev: &(impl ReadAt + ?Sized),
        secret: &Passphrase,
        keyslot: Option<u32>,
    ) -> Result<Unlocked> {
        if let Some(why) = self.unsupported() {
            return Err(unsupported(why));
        }
        let candidates = match keyslot {
            Some(id) => {
                if !self.active_keyslots().contains(&id) {
                    return Err(LuksError::NoKeyslot(format!("keyslot {id} is not active")));
                }
                vec![id]
            }
            None => self.active_keyslots(),
        };
        super::try_in_order(&candidates, |id| self.try_keyslot(dev, id, secret))
    }

    fn try_keyslot(
        &self,
        dev: &(impl ReadAt + ?Sized),
        id: u32,
        secret: &Passphrase,
    ) -> Result<Option<LuksKey>> {
        let k = &self.keyslots[id as usize];
        let hash = HashAlg::require(&self.hash_spec, "LUKS1")?;
        let cipher = SectorCipherKind::parse(&self.cipher_spec())
            .ok_or_else(|| unsupported(format!("cipher {}", self.cipher_spec())))?;
        if k.iterations == 0 || self.mk_digest_iterations == 0 {
            return Err(damaged(format!("keyslot {id} has 0 iterations")));
        }
        let key_len = self.key_bytes as usize;
        let material_len = af_size(key_len, STRIPES);
        let offset = u64::from(k.key_material_offset) * SECTOR as u64;
        if offset + material_len as u64 > dev.size()? {
            return Err(damaged(format!("keyslot {id} area lies beyond the device")));
        }
        let mut derived = Zeroizing::new(vec![0u8; key_len]);
        hash.pbkdf2(secret.expose(), &k.salt, k.iterations, &mut derived);
        let mut material = Zeroizing::new(vec![0u8; material_len]);
        dev.read_at(&mut material, offset)?;
        cipher.decrypt_area(&derived, &mut material)?;
        let candidate = af_merge(&material, key_len, STRIPES, hash);
        if digest_matches(
            hash,
            &candidate,
            &self.mk_digest_salt,
            self.mk_digest_iterations,
            &self.mk_digest,
        ) {
            Ok(Some(LuksKey::from_zeroizing(candidate)))
        } else {
            Ok(None)
        }
    }

    /// Whether `key` is this volume's key (the mk-digest).
    pub fn verify_key(&self, key: &LuksKey) -> Result<bool> {
        let hash = HashAlg::require(&self.hash_spec, "LUKS1")?;
        Ok(key.len() == self.key_bytes as usize
            && digest_matches(
                hash,
                key.expose(),
                &self.mk_digest_salt,
                self.mk_digest_iterations.max(1),
                &self.mk_digest,
            ))
    }
}
