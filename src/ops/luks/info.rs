//! What `evfs info` tells about a LUKS volume: its header's public fields,
//! read without a key, as a typed report the front end prints.

use std::path::Path;

use super::token::{KeyToken, Provenance};
use crate::error::Result;
use crate::keys::KeyId;
use crate::luks::keyslot::Kdf;
use crate::luks::{CopyState, Header};
use crate::volume::luks::LuksVolume;

/// A keyslot's key derivation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KdfInfo {
    /// PBKDF2.
    Pbkdf2 {
        /// The hash's name as stored (`sha256`, ...).
        hash: String,
        /// Iterations.
        iterations: u32,
    },
    /// Argon2 (LUKS2).
    Argon2 {
        /// `argon2i` or `argon2id`.
        variant: &'static str,
        /// Passes (cryptsetup's "time").
        time: u32,
        /// Memory in KiB.
        memory_kib: u32,
        /// Lanes (cryptsetup's "cpus").
        cpus: u32,
    },
    /// A KDF evfs does not know, by name.
    Other(String),
}

impl KdfInfo {
    fn of(kdf: &Kdf) -> KdfInfo {
        match kdf {
            Kdf::Pbkdf2 {
                hash, iterations, ..
            } => KdfInfo::Pbkdf2 {
                hash: hash.clone(),
                iterations: *iterations,
            },
            Kdf::Argon2 {
                variant,
                time,
                memory_kib,
                cpus,
                ..
            } => KdfInfo::Argon2 {
                variant: variant.name(),
                time: *time,
                memory_kib: *memory_kib,
                cpus: *cpus,
            },
            Kdf::Other(name) => KdfInfo::Other(name.clone()),
        }
    }

    /// `pbkdf2`, `argon2id`, ...
    pub fn name(&self) -> &str {
        match self {
            KdfInfo::Pbkdf2 { .. } => "pbkdf2",
            KdfInfo::Argon2 { variant, .. } => variant,
            KdfInfo::Other(name) => name,
        }
    }
}

/// One keyslot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyslotInfo {
    /// The keyslot's number.
    pub id: u32,
    /// `luks2`, `reencrypt`, ...; LUKS1 keyslots are `luks1`.
    pub type_name: String,
    /// LUKS2 priority: 0 ignore, 1 normal, 2 prefer.
    pub priority: Option<i64>,
    /// Bytes of the key it stores.
    pub key_size: u32,
    /// Its key derivation (`None` for a LUKS2 keyslot of another type).
    pub kdf: Option<KdfInfo>,
    /// The area's cipher (LUKS2).
    pub area_cipher: Option<String>,
    /// The evfs key pair enrolled in it, if one is.
    pub enrolled: Option<KeyId>,
}

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInfo {
    /// The token's number.
    pub id: u32,
    /// Its `type` (`evfs-key`, `evfs-provenance`, `systemd-tpm2`, ...).
    pub type_name: String,
    /// The keyslots it serves.
    pub keyslots: Vec<u32>,
}

/// The public fields of a LUKS header.
#[derive(Clone, Debug)]
pub struct LuksInfo {
    /// The data device's path, as given.
    pub path: String,
    /// `luks1` or `luks2`.
    pub format: &'static str,
    /// 1 or 2.
    pub version: u16,
    /// The volume's UUID, as text.
    pub uuid: String,
    /// The LUKS2 label (empty for LUKS1).
    pub label: String,
    /// The LUKS2 subsystem label (empty for LUKS1).
    pub subsystem: String,
    /// The data cipher in dm-crypt's notation.
    pub cipher: String,
    /// Bytes of the volume key.
    pub key_size: Option<u32>,
    /// Bytes per data sector (512 for LUKS1).
    pub sector_size: u32,
    /// IV of the first data sector, in 512-byte units.
    pub iv_tweak: u64,
    /// Byte offset of the data on the data device.
    pub data_offset: u64,
    /// Bytes of data on this device (whole sectors).
    pub data_size: u64,
    /// Bytes of the data device.
    pub device_size: u64,
    /// The detached header file, if the header is in one.
    pub header_file: Option<String>,
    /// LUKS2: bytes of a metadata copy (binary header and JSON area).
    pub metadata_size: Option<u64>,
    /// LUKS2: the sequence number of the header in use.
    pub seqid: Option<u64>,
    /// LUKS2: the state of the primary and the secondary copy, in words.
    pub copies: Option<[String; 2]>,
    /// The keyslots in use.
    pub keyslots: Vec<KeyslotInfo>,
    /// LUKS2: the tokens.
    pub tokens: Vec<TokenInfo>,
    /// LUKS2: `config.requirements.mandatory` (`evfs-incomplete` while evfs
    /// writes the volume).
    pub requirements: Vec<String>,
    /// Why evfs cannot read the data (empty when it can).
    pub unsupported: Vec<String>,
    /// The provenance evfs recorded, if it made this volume's data.
    pub provenance: Option<Provenance>,
}

impl LuksInfo {
    /// Whether evfs is still writing it (or was interrupted).
    pub fn incomplete(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| r == crate::luks::REQUIREMENT_INCOMPLETE)
    }
}

fn copy_text(c: &CopyState) -> String {
    match c {
        CopyState::Valid { seqid } => format!("ok (seqid {seqid})"),
        CopyState::BadJson(why) => format!("bad JSON: {why}"),
        CopyState::Bad(why) => format!("bad: {why}"),
    }
}

/// The report of `vol`.
pub fn describe(vol: &LuksVolume, header_file: Option<&Path>) -> Result<LuksInfo> {
    let device_size = vol.dev.size();
    let unsupported = vol.header.unsupported_reasons();
    let floor = |n: u64, s: u32| n - n % u64::from(s.max(1));
    let info = match &vol.header {
        Header::Luks1(h) => {
            let offset = u64::from(h.payload_offset) * 512;
            LuksInfo {
                path: vol.path().display().to_string(),
                format: "luks1",
                version: 1,
                uuid: h.uuid.clone(),
                label: String::new(),
                subsystem: String::new(),
                cipher: h.cipher_spec(),
                key_size: Some(h.key_bytes),
                sector_size: 512,
                iv_tweak: 0,
                data_offset: offset,
                data_size: floor(device_size.saturating_sub(offset), 512),
                device_size,
                header_file: header_file.map(|p| p.display().to_string()),
                metadata_size: None,
                seqid: None,
                copies: None,
                keyslots: h
                    .active_keyslots()
                    .into_iter()
                    .map(|id| {
                        let k = &h.keyslots[id as usize];
                        KeyslotInfo {
                            id,
                            type_name: "luks1".to_string(),
                            priority: None,
                            key_size: h.key_bytes,
                            kdf: Some(KdfInfo::Pbkdf2 {
                                hash: h.hash_spec.clone(),
                                iterations: k.iterations,
                            }),
                            area_cipher: None,
                            enrolled: None,
                        }
                    })
                    .collect(),
                tokens: vec![],
                requirements: vec![],
                unsupported,
                provenance: None,
            }
        }
        Header::Luks2(h) => {
            let meta = h.metadata();
            let mut segs: Vec<_> = meta.data_segments().collect();
            segs.sort_by_key(|s| s.id);
            let seg = segs.first();
            let crypt = seg.and_then(|s| s.crypt.as_ref());
            let sector_size = crypt.map_or(512, |c| c.sector_size);
            let offset = seg.map_or(0, |s| s.offset);
            let avail = device_size.saturating_sub(offset);
            let data_size = floor(
                seg.and_then(|s| s.size).map_or(avail, |s| s.min(avail)),
                sector_size,
            );
            let enrolled = KeyToken::all(meta);
            let key_size = meta
                .keyslots
                .iter()
                .find(|k| k.luks2.is_some())
                .map(|k| k.key_size);
            LuksInfo {
                path: vol.path().display().to_string(),
                format: "luks2",
                version: 2,
                uuid: h.uuid(),
                label: h.label(),
                subsystem: h.subsystem(),
                cipher: crypt.map_or_else(|| "none".to_string(), |c| c.encryption.clone()),
                key_size,
                sector_size,
                iv_tweak: crypt.map_or(0, |c| c.iv_tweak),
                data_offset: offset,
                data_size,
                device_size,
                header_file: header_file.map(|p| p.display().to_string()),
                metadata_size: Some(h.metadata_size()),
                seqid: Some(h.seqid()),
                copies: Some([copy_text(&h.copies()[0]), copy_text(&h.copies()[1])]),
                keyslots: meta
                    .keyslots
                    .iter()
                    .map(|k| KeyslotInfo {
                        id: k.id,
                        type_name: k.type_name.clone(),
                        priority: Some(k.priority),
                        key_size: k.key_size,
                        kdf: k.luks2.as_ref().map(|l| KdfInfo::of(&l.kdf)),
                        area_cipher: k.luks2.as_ref().map(|l| l.area_encryption.clone()),
                        enrolled: enrolled
                            .iter()
                            .find(|(_, t)| t.keyslot == k.id)
                            .map(|(_, t)| t.key.clone()),
                    })
                    .collect(),
                tokens: meta
                    .tokens
                    .iter()
                    .map(|t| TokenInfo {
                        id: t.id,
                        type_name: t.type_name.clone(),
                        keyslots: t.keyslots.clone(),
                    })
                    .collect(),
                requirements: h.requirements().to_vec(),
                unsupported,
                provenance: Provenance::find(meta).and_then(|(_, p)| p),
            }
        }
    };
    Ok(info)
}
