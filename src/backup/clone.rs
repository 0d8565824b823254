//! The EMD clone a backup writes into a new target: a new UUID, the source's
//! label, cipher, sector size and slots, and a volume key re-wrapped to every
//! slot's public key (no private key needed).

use crate::crypto::{VolumeKey, wrap};
use crate::emd::format::new_uuid;
use crate::emd::{Checkpoint, Emd, Provenance, State, Timestamp};
use crate::error::Result;
use crate::volume::layout::DATA_OFFSET;

/// A clone of `src` for a new target encrypted with `key`, sealed, clean,
/// without provenance (filled in when the data is complete).
pub fn clone_emd(src: &Emd, key: &VolumeKey) -> Result<Emd> {
    let mut e = src.clone();
    e.uuid = new_uuid()?;
    e.created = Timestamp::now().secs;
    e.generation = 0;
    e.dirty = false;
    e.checkpoint = None;
    e.provenance = None;
    e.state = State::Enabled;
    e.cipher = key.cipher();
    e.data_offset = DATA_OFFSET;
    for slot in &mut e.slots {
        slot.wrapped = wrap::wrap(key, &slot.public, slot.id.as_str())?;
    }
    e.seal(key);
    Ok(e)
}

/// A fresh checkpoint for a backup of `total` bytes from the source volume
/// `source_uuid` at EMD generation `source_generation` (zeros for plain data).
pub fn checkpoint(source_uuid: [u8; 16], source_generation: u64, total: u64) -> Result<Checkpoint> {
    Ok(Checkpoint {
        run_id: crate::crypto::random_array::<16>()?,
        source_uuid,
        bytes_done: 0,
        total,
        source_generation,
    })
}

/// The provenance of a finished backup.
pub fn provenance(
    source_uuid: [u8; 16],
    started: Timestamp,
    bytes: u64,
    digest: Option<blake3::Hash>,
) -> Provenance {
    Provenance {
        source_uuid,
        started,
        finished: Timestamp::now(),
        bytes,
        plaintext_blake3: digest.map(|d| *d.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Cipher;
    use crate::emd::{Role, Slot};
    use crate::keys::KeyId;
    use x25519_dalek::{PublicKey, StaticSecret};

    #[test]
    fn clone_has_a_new_uuid_and_a_key_every_slot_unwraps() {
        let secrets: Vec<StaticSecret> = (1u8..=3).map(|i| StaticSecret::from([i; 32])).collect();
        let ids = ["alice.k1", "bob.bob", "evfs.r1"];
        let roles = [Role::Owner, Role::User, Role::Recovery];
        let old = VolumeKey::generate(Cipher::Aes256Xts).unwrap();
        let mut src = crate::volume::NewVolume {
            cipher: Cipher::Aes256Xts,
            sector_size: 4096,
            data_size: 1 << 20,
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
        let new = VolumeKey::generate(Cipher::Aes256Xts).unwrap();
        let c = clone_emd(&src, &new).unwrap();
        assert_ne!(c.uuid, src.uuid);
        assert_eq!(c.label, "lab");
        assert_eq!(c.state, State::Enabled);
        assert!(c.mac_ok(&new));
        for (i, slot) in c.slots.iter().enumerate() {
            assert_eq!(slot.role, roles[i]);
            let k = wrap::unwrap(&slot.wrapped, &secrets[i], Cipher::Aes256Xts, ids[i]).unwrap();
            assert_eq!(k.expose(), new.expose());
        }
    }
}
