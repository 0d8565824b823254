//! `evfs verify` on a LUKS volume: its header copies, whether evfs finished
//! writing it, and with its secret its data against the `evfs-provenance`
//! token a backup into it recorded.

use std::path::Path;

use super::token::Provenance;
use super::{LuksAccess, Unlocked, open_unlocked, try_unlock};
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::luks::{CopyState, Header, REQUIREMENT_INCOMPLETE};
use crate::ops::findings::Findings;
use crate::ops::read::Plaintext;
use crate::ops::stream_check::Digest;
use crate::ops::trust::{self, SignedBy};
use crate::ops::{KeyUse, Keys};
use crate::volume::luks::LuksVolume;

/// The provenance evfs recorded on `vol`, if any.
fn provenance(vol: &LuksVolume) -> Option<Provenance> {
    match &vol.header {
        Header::Luks2(h) => Provenance::find(h.metadata()).and_then(|(_, p)| p),
        Header::Luks1(_) => None,
    }
}

/// Check the LUKS volume TARGET, reached through `access` with the secret
/// of `purpose` (`key` is `-k`, an enrolled key pair). Returns the digest of the
/// plaintext the provenance covers (the whole data area without one), when
/// it could be read.
pub(crate) fn verify(
    keys: &dyn Keys,
    path: &Path,
    key: Option<&KeyId>,
    (access, purpose): (&LuksAccess, KeyUse),
    (against, threads): (bool, usize),
    f: &mut Findings,
    signed_by: &mut Option<SignedBy>,
) -> Result<Option<Digest>> {
    let vol = LuksVolume::probe(path, access.header.as_deref())?
        .ok_or_else(|| Error::usage(format!("{} is not a LUKS volume", path.display())))?;
    match &vol.header {
        Header::Luks1(_) => f.pass("LUKS1 header (it has no checksum and no second copy)"),
        Header::Luks2(h) => {
            for (name, c) in ["primary", "secondary"].iter().zip(h.copies()) {
                match c {
                    CopyState::Valid { seqid } => {
                        f.pass(format!("LUKS2 {name} header valid (seqid {seqid})"))
                    }
                    CopyState::BadJson(why) | CopyState::Bad(why) => {
                        f.fail(format!("LUKS2 {name} header damaged: {why}"))
                    }
                }
            }
            if h.requirements().iter().any(|r| r == REQUIREMENT_INCOMPLETE) {
                f.fail(format!(
                    "an evfs backup into it did not finish (requirement {REQUIREMENT_INCOMPLETE}): its data is part old, part new"
                ));
                return Ok(None);
            }
        }
    }
    let prov = provenance(&vol);
    if let Some(p) = &prov {
        // The provenance is signed, not sealed with the volume key: its
        // signature is reported, and judged as a stream's is.
        let policy = keys.policy();
        let message = p.signed_message(&vol.header.uuid());
        *signed_by = trust::signed_by(p.signature.as_ref(), &message, keys, &policy)?;
        match trust::judge(signed_by.as_ref(), &policy, "the evfs provenance") {
            Err(e) => f.fail(
                e.to_string()
                    .trim_start_matches("integrity failure: ")
                    .to_string(),
            ),
            Ok(()) => f.pass(match signed_by.as_ref() {
                Some(s) => format!("the evfs provenance is {}", s.describe()),
                None => {
                    "the evfs provenance is not signed: its authenticity is not checked".to_string()
                }
            }),
        }
    }
    let area = vol.data_area()?;
    let Some(opened) = try_unlock(
        &vol,
        access,
        keys,
        purpose,
        key.map(|k| (k, KeyUse::Volume)),
    )?
    else {
        f.pass("data not checked (give the volume's passphrase or key file, or -k ID of an enrolled key)");
        return Ok(None);
    };
    let v = Unlocked { vol, area, opened };
    f.pass(format!("LUKS keyslot {} opened", v.opened.keyslot));
    let size = v.data_size();
    let Some(p) = prov else {
        let hash = Plaintext::of_luks(&v)?.digest(threads)?;
        if against {
            f.pass("no evfs provenance: the whole data area is compared with SRC");
        } else {
            f.fail(
                "the volume has no evfs provenance to check its data against (use --against SRC)",
            );
        }
        return Ok(Some(Digest { hash, bytes: size }));
    };
    if p.bytes > size {
        f.fail(format!(
            "the provenance records {} bytes of data, the data area holds {size}",
            p.bytes
        ));
        return Ok(None);
    }
    let hash = Plaintext::of_luks(&v)?.prefix(p.bytes).digest(threads)?;
    if p.modified {
        f.pass(format!(
            "the volume was written through evfs map since its backup: its data is not compared with the backup's digest; plaintext BLAKE3 of {} bytes: {}",
            p.bytes,
            hash.to_hex()
        ));
    } else {
        f.digest(
            hash,
            p.plaintext_blake3,
            &format!("of {} bytes", p.bytes),
            "the provenance",
        );
    }
    Ok(Some(Digest {
        hash,
        bytes: p.bytes,
    }))
}

/// The plaintext digest of a LUKS volume given as `--against SRC` (its
/// secret is the [`KeyUse::Volume`] one): the bytes its evfs provenance
/// records, else the whole data area.
pub(crate) fn digest(
    keys: &dyn Keys,
    path: &Path,
    key: Option<&KeyId>,
    access: &LuksAccess,
    threads: usize,
) -> Result<Digest> {
    let Some(v) = open_unlocked(
        path,
        access,
        keys,
        KeyUse::Volume,
        key.map(|k| (k, KeyUse::Volume)),
    )?
    else {
        return Err(Error::usage(format!(
            "{} is not a LUKS volume",
            path.display()
        )));
    };
    let bytes = provenance(&v.vol)
        .filter(|p| !p.modified)
        .map_or(v.data_size(), |p| p.bytes.min(v.data_size()));
    Ok(Digest {
        hash: Plaintext::of_luks(&v)?.prefix(bytes).digest(threads)?,
        bytes,
    })
}
