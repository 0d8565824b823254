//! The EMDs a backup writes: a new target's EMD clone (a new UUID, the
//! source's label, cipher, sector size and slots, and a volume key
//! re-wrapped to every slot's public key: no private key needed), the
//! refreshed EMD of an existing clone (its own UUID and key kept), and the
//! checkpoint and provenance records.

use crate::crypto::{VolumeKey, wrap};
use crate::emd::format::new_uuid;
use crate::emd::{Checkpoint, Emd, Origin, Provenance, State, Task, Timestamp};
use crate::error::Result;
use crate::volume::layout::DATA_OFFSET;

/// A clone of `src` for a new target encrypted with `key` in sectors of
/// `sector_size` bytes: sealed, clean, without provenance (filled in when
/// the data is complete), at data version 1.
pub fn clone_emd(src: &Emd, key: &VolumeKey, sector_size: u32) -> Result<Emd> {
    let mut e = src.clone();
    e.uuid = new_uuid()?;
    e.created = Timestamp::now().secs;
    e.generation = 0;
    e.data_version = 1;
    e.sector_size = sector_size;
    e.data_size = src.data_size.next_multiple_of(u64::from(sector_size));
    e.data_offset = DATA_OFFSET;
    e.cipher = key.cipher();
    adopt(&mut e, src, key)?;
    Ok(e)
}

/// The refreshed EMD of `target`, an EMD clone of `src`: it keeps its UUID,
/// creation time, geometry and data-area size, and is encrypted with `key`
/// (its own volume key, or a fresh one with `--rekey`); its owner, users,
/// recovery keys and label follow the source's. Its data version moves on.
pub fn refresh_emd(src: &Emd, target: &Emd, key: &VolumeKey, sector_size: u32) -> Result<Emd> {
    let mut e = src.clone();
    e.uuid = target.uuid;
    e.created = target.created;
    e.generation = target.generation;
    e.data_version = target.data_version + 1;
    e.sector_size = sector_size;
    e.data_offset = target.data_offset;
    e.data_size = target.data_size;
    e.cipher = key.cipher();
    adopt(&mut e, src, key)?;
    Ok(e)
}

/// What a clone takes from its source, whatever its identity: enabled,
/// clean, the source's slots re-wrapped to `key`, marked a clone of it.
fn adopt(e: &mut Emd, src: &Emd, key: &VolumeKey) -> Result<()> {
    e.dirty = false;
    e.checkpoint = None;
    e.provenance = None;
    e.state = State::Enabled;
    e.data_len = src.data_len;
    e.clone_of = Some(src.uuid);
    // The source's index and state describe the source's last backup, not
    // this one.
    e.index = None;
    e.state_id = None;
    for slot in &mut e.slots {
        slot.wrapped = wrap::wrap(key, &slot.public, slot.id.as_str())?;
    }
    e.seal(key);
    Ok(())
}

/// A fresh checkpoint of a backup of `total` bytes from the source volume
/// `source_uuid` at EMD generation `source_generation` (zeros for plain data).
pub fn checkpoint(source_uuid: [u8; 16], source_generation: u64, total: u64) -> Result<Checkpoint> {
    Ok(Checkpoint {
        task: Task::Backup,
        run_id: crate::crypto::random_array::<16>()?,
        source_uuid,
        bytes_done: 0,
        total,
        source_generation,
    })
}

/// Where a backup's data comes from: the source volume's UUID and data
/// version, or plain data.
pub fn origin(src: Option<&Emd>) -> Origin {
    match src {
        Some(e) => Origin::Volume {
            uuid: e.uuid,
            data_version: e.data_version,
        },
        None => Origin::Plain,
    }
}

/// The provenance of a finished backup from `origin` that wrote `bytes`
/// of plaintext and left the target at `data_version`.
pub fn provenance(
    origin: Origin,
    started: Timestamp,
    bytes: u64,
    digest: Option<blake3::Hash>,
    data_version: u64,
) -> Provenance {
    Provenance {
        origin,
        started,
        finished: Timestamp::now(),
        bytes,
        plaintext_blake3: digest.map(|d| *d.as_bytes()),
        data_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Cipher;
    use crate::emd::{Role, Slot};
    use crate::keys::KeyId;
    use x25519_dalek::{PublicKey, StaticSecret};

    fn source(secrets: &[StaticSecret]) -> Emd {
        let ids = ["alice.k1", "bob.bob", "evfs.r1"];
        let roles = [Role::Owner, Role::User, Role::Recovery];
        let old = VolumeKey::generate(Cipher::Aes256Xts).unwrap();
        let mut src = crate::volume::NewVolume {
            cipher: Cipher::Aes256Xts,
            sector_size: 4096,
            data_size: 1 << 20,
            data_len: (1 << 20) - 5,
            label: "lab",
            owner: (&KeyId::parse("x.y").unwrap(), [0; 32]),
            recovery: vec![],
        }
        .build()
        .unwrap()
        .0;
        src.slots = (0..3)
            .map(|i| Slot {
                role: roles[i],
                id: KeyId::parse(ids[i]).unwrap(),
                public: PublicKey::from(&secrets[i]).to_bytes(),
                wrapped: wrap::wrap(&old, &PublicKey::from(&secrets[i]).to_bytes(), ids[i])
                    .unwrap(),
            })
            .collect();
        src.state = State::Disabled;
        src.data_version = 7;
        src
    }

    fn unwraps_everywhere(e: &Emd, secrets: &[StaticSecret], key: &VolumeKey) {
        assert!(e.mac_ok(key));
        for (i, slot) in e.slots.iter().enumerate() {
            let k = wrap::unwrap(&slot.wrapped, &secrets[i], e.cipher, slot.id.as_str()).unwrap();
            assert_eq!(k.expose(), key.expose());
        }
    }

    #[test]
    fn a_clone_has_a_new_uuid_marks_its_source_and_a_key_every_slot_unwraps() {
        let secrets: Vec<StaticSecret> = (1u8..=3).map(|i| StaticSecret::from([i; 32])).collect();
        let src = source(&secrets);
        let new = VolumeKey::generate(Cipher::Aes256Xts).unwrap();
        let c = clone_emd(&src, &new, 512).unwrap();
        assert_ne!(c.uuid, src.uuid);
        assert_eq!(c.clone_of, Some(src.uuid));
        assert_eq!((c.label.as_str(), c.state), ("lab", State::Enabled));
        assert_eq!(
            (c.sector_size, c.data_len, c.data_version),
            (512, src.data_len, 1)
        );
        assert_eq!(c.slots.len(), 3);
        unwraps_everywhere(&c, &secrets, &new);
    }

    #[test]
    fn a_refresh_keeps_the_targets_identity_and_follows_the_sources_users_and_label() {
        let secrets: Vec<StaticSecret> = (1u8..=3).map(|i| StaticSecret::from([i; 32])).collect();
        let mut src = source(&secrets);
        let key = VolumeKey::generate(Cipher::Aes256Xts).unwrap();
        let mut target = clone_emd(&src, &key, 4096).unwrap();
        target.data_version = 4;
        target.generation = 9;
        src.label = "renamed".to_string();
        src.slots.pop();
        let r = refresh_emd(&src, &target, &key, 4096).unwrap();
        assert_eq!((r.uuid, r.created), (target.uuid, target.created));
        assert_eq!((r.label.as_str(), r.slots.len()), ("renamed", 2));
        assert_eq!((r.data_version, r.clone_of), (5, Some(src.uuid)));
        unwraps_everywhere(&r, &secrets, &key);
    }
}
