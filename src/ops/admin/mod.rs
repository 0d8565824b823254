//! Volume administration: make a volume ([`create`]), check and repair it
//! ([`check`]), save and restore its EMD ([`emd_file`]), and the changes to
//! its EMD that a key holder makes here: enable, disable, user add and
//! remove, owner, destroy. Each unlocks with the caller's key, checks the
//! role, re-seals the MAC with the volume key and commits both copies.

pub mod check;
pub mod create;
pub mod emd_file;

use std::path::Path;

use super::{DATA_ROLES, KeyUse, Keys, Observer, trust};
use crate::crypto::wrap;
use crate::emd::{self, Role, Slot, State};
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::volume::{Volume, metadata, unlock_emd};

/// `enable` / `disable`: set the state of `vol` (only the EMD changes, the
/// data is not rewritten), unlocked with `key` as owner or user. Enabling a
/// dirty volume warns through `obs`; a volume already in the state is left
/// as it is.
pub fn set_state(
    keys: &dyn Keys,
    obs: &dyn Observer,
    vol: &Path,
    key: &KeyId,
    enable: bool,
) -> Result<()> {
    let mut v = Volume::open(vol, true)?;
    let pk = keys.unlock(key, KeyUse::Volume)?;
    let action = if enable { "enable it" } else { "disable it" };
    let unlocked = trust::unlock(&v.emd, v.path(), &pk, DATA_ROLES, action, keys)?;
    let state = if enable {
        State::Enabled
    } else {
        State::Disabled
    };
    if enable && v.emd.dirty {
        let why = if v.emd.checkpoint.is_some() {
            "holds an unfinished backup or restore"
        } else {
            "is dirty: a writer did not shut it down"
        };
        obs.note(&format!(
            "evfs: warning: {} {why}; its data may be inconsistent: check it with `evfs check {}`",
            vol.display(),
            vol.display()
        ));
    }
    if v.emd.state == state {
        obs.note(&format!("{} is already {}", vol.display(), state.name()));
        return Ok(());
    }
    v.emd.state = state;
    trust::seal(&mut v.emd, &unlocked.key, Some(&pk));
    v.commit()?;
    obs.note(&format!("{} is now {}", vol.display(), state.name()));
    Ok(())
}

/// `user add`: give key pair `id` (its public key from the keystore) a slot
/// on `vol`, as an authorized user (as a recovery key when `id` is `evfs.*`);
/// `key` must be the owner's. Exit 2 when `id` has a slot or no slot is free.
pub fn user_add(
    keys: &dyn Keys,
    obs: &dyn Observer,
    vol: &Path,
    id: &KeyId,
    key: &KeyId,
) -> Result<()> {
    let new_id = id.clone();
    let mut v = Volume::open(vol, true)?;
    let pk = keys.unlock(key, KeyUse::Volume)?;
    let unlocked = trust::unlock(&v.emd, v.path(), &pk, &[Role::Owner], "add users", keys)?;
    if let Some(slot) = v.emd.slot(&new_id) {
        return Err(Error::usage(format!(
            "{new_id} already has a slot on {} (as {})",
            vol.display(),
            slot.role.name()
        )));
    }
    let public = keys.keystore()?.public(&new_id)?;
    let role = if new_id.is_recovery() {
        Role::Recovery
    } else {
        Role::User
    };
    v.emd.slots.push(Slot {
        role,
        wrapped: wrap::wrap(&unlocked.key, &public, new_id.as_str())?,
        id: new_id.clone(),
        public,
    });
    emd::format::validate_slots(&v.emd.slots).map_err(|_| {
        Error::usage(format!(
            "{} has no room for {new_id}: at most {} slots and {} recovery keys",
            vol.display(),
            emd::format::MAX_SLOTS,
            emd::format::MAX_RECOVERY
        ))
    })?;
    trust::seal(&mut v.emd, &unlocked.key, Some(&pk));
    v.commit()?;
    obs.note(&format!(
        "added {new_id} to {} as {}",
        vol.display(),
        role.name()
    ));
    Ok(())
}

/// `user remove`: drop the slot of `id` from `vol`; `key` must be the
/// owner's. Exit 2 for the owner's own slot or an ID without one. The volume
/// key stays the same.
pub fn user_remove(
    keys: &dyn Keys,
    obs: &dyn Observer,
    vol: &Path,
    id: &KeyId,
    key: &KeyId,
) -> Result<()> {
    let gone = id.clone();
    let mut v = Volume::open(vol, true)?;
    let pk = keys.unlock(key, KeyUse::Volume)?;
    let unlocked = trust::unlock(&v.emd, v.path(), &pk, &[Role::Owner], "remove users", keys)?;
    let Some(slot) = v.emd.slot(&gone) else {
        return Err(Error::usage(format!(
            "{gone} has no slot on {}",
            vol.display()
        )));
    };
    if slot.role == Role::Owner {
        return Err(Error::usage(format!(
            "{gone} is the owner of {}; make another key the owner first",
            vol.display()
        ))
        .with_hint("evfs owner VOL NEW_OWNER -k OWNER"));
    }
    v.emd.slots.retain(|s| s.id != gone);
    trust::seal(&mut v.emd, &unlocked.key, Some(&pk));
    v.commit()?;
    obs.note(&format!("removed {gone} from {}", vol.display()));
    Ok(())
}

/// `owner`: make `id` the owner of `vol`, unlocked with `key` as owner or
/// recovery key; the previous owner stays an authorized user. Exit 2 for a
/// recovery key as the new owner.
pub fn owner(
    keys: &dyn Keys,
    obs: &dyn Observer,
    vol: &Path,
    id: &KeyId,
    key: &KeyId,
) -> Result<()> {
    let new_owner = id.clone();
    if new_owner.is_recovery() {
        return Err(Error::usage(format!(
            "{new_owner} is a recovery key; a recovery key cannot own a volume"
        )));
    }
    let mut v = Volume::open(vol, true)?;
    let pk = keys.unlock(key, KeyUse::Volume)?;
    let unlocked = trust::unlock(
        &v.emd,
        v.path(),
        &pk,
        &[Role::Owner, Role::Recovery],
        "change the owner",
        keys,
    )?;
    if v.emd.owner().id == new_owner {
        obs.note(&format!("{new_owner} already owns {}", vol.display()));
        return Ok(());
    }
    for s in v.emd.slots.iter_mut() {
        if s.role == Role::Owner {
            s.role = Role::User;
        }
    }
    if let Some(s) = v.emd.slots.iter_mut().find(|s| s.id == new_owner) {
        s.role = Role::Owner;
    } else {
        let public = keys.keystore()?.public(&new_owner)?;
        v.emd.slots.push(Slot {
            role: Role::Owner,
            wrapped: wrap::wrap(&unlocked.key, &public, new_owner.as_str())?,
            id: new_owner.clone(),
            public,
        });
    }
    // The owner's slot first, so that `info` lists it first.
    v.emd.slots.sort_by_key(|s| s.role != Role::Owner);
    emd::format::validate_slots(&v.emd.slots).map_err(|_| {
        Error::usage(format!(
            "{} has no free slot for {new_owner}",
            vol.display()
        ))
    })?;
    trust::seal(&mut v.emd, &unlocked.key, Some(&pk));
    v.commit()?;
    obs.note(&format!(
        "{new_owner} now owns {}; the previous owner stays an authorized user",
        vol.display()
    ));
    Ok(())
}

/// `emd sign`: sign the volume's EMD with `key`, which must unlock it
/// (its MAC verifies); an EMD of version 1 is rewritten as version 2.
pub fn sign(keys: &dyn Keys, obs: &dyn Observer, vol: &Path, key: &KeyId) -> Result<()> {
    let mut v = Volume::open(vol, true)?;
    let pk = keys.unlock(key, KeyUse::Volume)?;
    let roles = [Role::Owner, Role::User, Role::Recovery];
    let unlocked = unlock_emd(&v.emd, v.path(), &pk, &roles, "sign its EMD")?;
    let before = trust::signed_by(
        v.emd.signature.as_ref(),
        &v.emd.signed_message(),
        keys,
        &trust::Policy::default(),
    )?;
    trust::seal(&mut v.emd, &unlocked.key, Some(&pk));
    v.commit()?;
    obs.note(&format!(
        "signed the EMD of {} with {} ({}){}",
        vol.display(),
        pk.id(),
        crate::keys::keystore::fingerprint(&pk.public()),
        match before {
            Some(s) => format!("; it was {}", s.describe()),
            None => String::new(),
        }
    ));
    Ok(())
}

/// `destroy`: wipe both EMD copies of `vol`, unlocked with the owner's `key`;
/// without a saved EMD its data can never be decrypted again.
pub fn destroy(keys: &dyn Keys, obs: &dyn Observer, vol: &Path, key: &KeyId) -> Result<()> {
    let v = Volume::open(vol, true)?;
    let pk = keys.unlock(key, KeyUse::Volume)?;
    trust::unlock(&v.emd, v.path(), &pk, &[Role::Owner], "destroy it", keys)?;
    metadata::wipe_both(&v.dev)?;
    obs.note(&format!(
        "destroyed the EMD of {} (uuid {}): its data cannot be decrypted without a saved EMD",
        vol.display(),
        v.emd.uuid_string()
    ));
    Ok(())
}
