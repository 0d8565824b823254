//! Volumes: a device with a valid EMD, unlocked with a key pair, checked by role.

pub mod device;
pub mod identity;
pub mod layout;
pub mod lock;
pub mod luks;
pub mod metadata;
pub mod partial;
pub mod sniff;
pub mod transaction;

use std::path::Path;

use crate::crypto::{VolumeKey, wrap};
use crate::emd::{self, Copies, Emd, Role, State};
use crate::error::{CliAdvice, Error, Result};
use crate::keys::PrivateKey;

pub use device::{Device, Identity};

/// An open EVFS volume: its device and the EMD copy in force.
pub struct Volume {
    /// The open device.
    pub dev: Device,
    /// The EMD copy in force (the valid one with the higher generation).
    pub emd: Emd,
    /// Both copies as read, for reporting and repair.
    pub copies: Copies,
}

impl Volume {
    /// Open `path` (read-only unless `write`) and read its EMD; exit 5 when
    /// there is no valid copy. Opened for writing, the volume is locked
    /// exclusively first, so that no backup, restore or map runs while its
    /// metadata changes (and the EMD read is the one in force).
    pub fn open(path: &Path, write: bool) -> Result<Volume> {
        let dev = if write {
            let mut dev = Device::open_write(path)?;
            dev.lock(true, "change its metadata")?;
            dev
        } else {
            Device::open_read(path)?
        };
        Volume::from_device(dev)
    }

    /// Read the EMD of an open device; exit 5 when EMD magic is there but no
    /// copy is valid, exit 2 when the device holds something else.
    pub fn from_device(dev: Device) -> Result<Volume> {
        let copies = crate::volume::metadata::read(&dev)?;
        let emd = copies
            .current()
            .cloned()
            .ok_or_else(|| crate::volume::metadata::no_valid_emd(&dev, &copies))?;
        Ok(Volume { dev, emd, copies })
    }

    /// The path the volume was opened by.
    pub fn path(&self) -> &Path {
        self.dev.path()
    }

    /// Write the EMD to both copies with the next generation.
    pub fn commit(&mut self) -> Result<()> {
        self.emd.generation += 1;
        crate::volume::metadata::write_both(&self.dev, &self.emd)?;
        self.copies = Copies {
            primary: emd::CopyState::Ok(Box::new(self.emd.clone())),
            backup: emd::CopyState::Ok(Box::new(self.emd.clone())),
        };
        Ok(())
    }

    /// Unlock with `key`, allowing only the `allowed` roles to `action`.
    pub fn unlock(&self, key: &PrivateKey, allowed: &[Role], action: &str) -> Result<Unlocked> {
        unlock_emd(&self.emd, self.path(), key, allowed, action)
    }

    /// Refuse to work on the plaintext of a disabled volume.
    pub fn require_enabled(&self, action: &str) -> Result<()> {
        if self.emd.state == State::Disabled {
            return Err(Error::refused(format!(
                "{} is disabled: its data is raw ciphertext and cannot be {action}",
                self.path().display()
            ))
            .with_hint(CliAdvice::Enable {
                volume: self.path().display().to_string(),
            }));
        }
        Ok(())
    }

    /// Refuse a volume whose data area runs past the end of its device (a
    /// truncated copy): reading it would fail half-way.
    pub fn require_data_fits(&self) -> Result<()> {
        data_fits(&self.dev, &self.emd)
    }

    /// The byte range of the data area on the device.
    pub fn data_range(&self) -> (u64, u64) {
        (self.emd.data_offset, self.emd.data_size)
    }
}

/// Exit 5 when `emd`'s data area does not lie within `dev`.
pub fn data_fits(dev: &Device, emd: &Emd) -> Result<()> {
    let end = emd.data_offset.saturating_add(emd.data_size);
    if end > dev.size() {
        return Err(Error::integrity(format!(
            "{}: the data area (bytes {} to {end}) runs past the end of the device or file ({} bytes): it is truncated",
            dev.path().display(),
            emd.data_offset,
            dev.size()
        ))
        .with_hint("check that the whole volume was copied, or restore it from a backup"));
    }
    Ok(())
}

/// A volume key and the role through which it was obtained.
pub struct Unlocked {
    /// The volume key.
    pub key: VolumeKey,
    /// The role of the slot that opened it.
    pub role: Role,
}

/// Find `key`'s slot in `emd`, unwrap the volume key, and check the MAC.
/// Exit 4 for a key in no slot or a role not allowed; exit 5 when the EMD
/// was tampered with.
pub fn unlock_emd(
    emd: &Emd,
    path: &Path,
    key: &PrivateKey,
    allowed: &[Role],
    action: &str,
) -> Result<Unlocked> {
    let path_text = path.display();
    let slot = emd.slot(key.id()).ok_or_else(|| {
        Error::access(format!("key {} has no slot on {path_text}", key.id())).with_hint(
            CliAdvice::UserAdd {
                volume: path_text.to_string(),
                id: key.id().to_string(),
            },
        )
    })?;
    if slot.public != key.public() {
        return Err(Error::access(format!(
            "the slot of {} on {path_text} holds another public key than this keystore's {}",
            key.id(),
            key.id()
        ))
        .with_hint("use the keystore that holds the key this volume was given"));
    }
    if !allowed.contains(&slot.role) {
        let names: Vec<_> = allowed.iter().map(|r| r.name()).collect();
        return Err(Error::access(format!(
            "key {} is {} of {path_text}; only {} may {action}",
            key.id(),
            role_article(slot.role),
            names.join(" or "),
        )));
    }
    let volume_key = wrap::unwrap(&slot.wrapped, key.secret(), emd.cipher, key.id().as_str())
        .ok_or_else(|| tampered(path))?;
    if !emd.mac_ok(&volume_key) {
        return Err(tampered(path));
    }
    Ok(Unlocked {
        key: volume_key,
        role: slot.role,
    })
}

fn tampered(path: &Path) -> Error {
    Error::integrity(format!(
        "the EMD of {} fails its MAC check: it was altered outside evfs",
        path.display()
    ))
    .with_hint(CliAdvice::EmdRestore { distrust: true })
}

fn role_article(role: Role) -> &'static str {
    match role {
        Role::Owner => "the owner",
        Role::User => "an authorized user",
        Role::Recovery => "a recovery key",
    }
}

/// Build the EMD of a new volume with a fresh key, owned by `owner`.
pub struct NewVolume<'a> {
    /// The data area's cipher.
    pub cipher: crate::crypto::Cipher,
    /// Bytes per sector: 512 or 4096.
    pub sector_size: u32,
    /// Bytes of the data area: whole sectors.
    pub data_size: u64,
    /// Bytes of plaintext it will hold (at most `data_size`).
    pub data_len: u64,
    /// The label, at most 64 bytes of UTF-8.
    pub label: &'a str,
    /// The owner's key ID and X25519 public key.
    pub owner: (&'a crate::keys::KeyId, [u8; 32]),
    /// The recovery keys (pseudo-user `evfs`, at most two): IDs and public
    /// keys.
    pub recovery: Vec<(crate::keys::KeyId, [u8; 32])>,
}

impl NewVolume<'_> {
    /// The sealed EMD and the volume key it wraps.
    pub fn build(&self) -> Result<(Emd, VolumeKey)> {
        let key = VolumeKey::generate(self.cipher)?;
        let mut slots = vec![emd::Slot {
            role: Role::Owner,
            id: self.owner.0.clone(),
            public: self.owner.1,
            wrapped: wrap::wrap(&key, &self.owner.1, self.owner.0.as_str())?,
        }];
        for (id, public) in &self.recovery {
            slots.push(emd::Slot {
                role: Role::Recovery,
                id: id.clone(),
                public: *public,
                wrapped: wrap::wrap(&key, public, id.as_str())?,
            });
        }
        emd::format::validate_slots(&slots)
            .map_err(|e| Error::usage(format!("these keys do not make a valid slot table: {e}")))?;
        let mut emd = Emd {
            version: emd::format::VERSION,
            generation: 0,
            dirty: false,
            checkpoint: None,
            uuid: emd::format::new_uuid()?,
            created: emd::Timestamp::now().secs,
            cipher: self.cipher,
            state: State::Enabled,
            sector_size: self.sector_size,
            data_offset: layout::DATA_OFFSET,
            data_size: self.data_size,
            data_len: self.data_len,
            data_version: 0,
            clone_of: None,
            index: None,
            state_id: None,
            label: self.label.to_string(),
            provenance: None,
            slots,
            mac: [0; 32],
            signature: None,
        };
        emd.seal(&key);
        Ok((emd, key))
    }
}
