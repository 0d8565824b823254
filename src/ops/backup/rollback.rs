//! Rollback protection. Every data write into a volume bumps its data
//! version (kept in the EMD under the MAC), and a copy records the data
//! version of what it was made from. Writing a copy back onto the volume it
//! came from is a rollback when that volume has been written since: the
//! writes since would be lost. Such a backup or restore is refused (exit 3)
//! unless `--force`.

use crate::emd::format::uuid_string;
use crate::emd::{Emd, Origin};
use crate::error::{Error, Result};

/// The volumes (UUID and data version) whose data a copy holds: itself,
/// and the volume its last backup was made from, unless it was written to
/// since that backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineage(Vec<([u8; 16], u64)>);

impl Lineage {
    /// The lineage of the data of a volume (or of a stream's final EMD).
    pub fn of(emd: &Emd) -> Lineage {
        let mut l = Lineage(vec![(emd.uuid, emd.data_version)]);
        if let Some(p) = &emd.provenance
            && let Origin::Volume { uuid, data_version } = p.origin
            && !emd.modified_since_backup()
        {
            l.0.push((uuid, data_version));
        }
        l
    }

    /// Add a volume the data is known to equal.
    pub fn with(mut self, uuid: [u8; 16], data_version: u64) -> Lineage {
        self.0.push((uuid, data_version));
        self
    }
}

/// Refuse writing data of `lineage` (named `source` in messages) onto the
/// volume whose EMD is `target` (named `target_name`) when that volume is
/// one the data came from and has a newer data version, unless `force`.
pub fn check(
    lineage: &Lineage,
    source: &str,
    target: &Emd,
    target_name: &str,
    force: bool,
) -> Result<()> {
    let Some(&(_, then)) = lineage
        .0
        .iter()
        .filter(|(uuid, _)| *uuid == target.uuid)
        .min_by_key(|(_, v)| *v)
    else {
        return Ok(());
    };
    if target.data_version <= then || force {
        return Ok(());
    }
    let later = target.data_version - then;
    Err(Error::refused(format!(
        "{target_name} (volume {}) was written to since {source} was made from it: its data version is {}, {source} holds its data as of version {then}; writing it back would roll {target_name} back and lose {later} later data write{}",
        uuid_string(&target.uuid),
        target.data_version,
        if later == 1 { "" } else { "s" },
    ))
    .with_hint(
        "if rolling back is what you want, add --force; to keep both, back up or restore into a new target",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emd::tests::example;

    fn volume(uuid: u8, data_version: u64) -> Emd {
        let mut e = example();
        e.uuid = [uuid; 16];
        e.data_version = data_version;
        e.provenance = None;
        e
    }

    #[test]
    fn a_mirror_onto_its_original_written_since_is_a_rollback() {
        let mirror = volume(1, 4);
        let original = volume(1, 6);
        let e = check(&Lineage::of(&mirror), "m", &original, "o", false).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("lose 2 later data writes"), "{e}");
        assert!(check(&Lineage::of(&mirror), "m", &original, "o", true).is_ok());
        assert!(check(&Lineage::of(&mirror), "m", &volume(1, 4), "o", false).is_ok());
        assert!(check(&Lineage::of(&mirror), "m", &volume(2, 9), "o", false).is_ok());
    }

    #[test]
    fn a_copy_onto_the_volume_it_was_made_from_compares_the_recorded_version() {
        let mut copy = volume(2, 1);
        copy.provenance.clone_from(&example().provenance);
        if let Some(p) = copy.provenance.as_mut() {
            p.origin = Origin::Volume {
                uuid: [1; 16],
                data_version: 5,
            };
            p.data_version = 1;
        }
        assert!(check(&Lineage::of(&copy), "c", &volume(1, 5), "o", false).is_ok());
        assert!(check(&Lineage::of(&copy), "c", &volume(1, 6), "o", false).is_err());
        // A copy written to since its backup no longer holds the source's data.
        copy.data_version = 2;
        assert!(check(&Lineage::of(&copy), "c", &volume(1, 6), "o", false).is_ok());
    }
}
