//! `evfs luks enroll VOL ID` and `evfs luks unenroll VOL ID`: a LUKS2
//! keyslot for an evfs key pair, as systemd-cryptenroll makes one for a
//! TPM2 chip or a FIDO2 key.
//!
//! Enrolling makes a random passphrase (32 bytes from the operating
//! system, as base64 text), adds a keyslot that opens with it, and stores
//! the passphrase wrapped for the key pair's public key (the EMD slot wrap,
//! bound to the key ID) in an `evfs-key` token naming that keyslot. Then
//! `-k ID`, with the key's passphrase from a file, the keystore's stored
//! passphrase or a prompt, opens the volume: no LUKS key file lies around
//! in clear for cron. The keyslot's own KDF is cryptsetup's minimum
//! (Argon2id, 32 KiB, 4 passes): its passphrase has 256 random bits, which
//! no KDF cost makes harder to guess (systemd-cryptenroll does the same).

use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};
use zeroize::Zeroizing;

use super::token::KeyToken;
use super::{LuksAccess, Opened};
use crate::crypto::{Cipher, Passphrase, VolumeKey, wrap};
use crate::error::{CliAdvice, Error, Result};
use crate::keys::KeyId;
use crate::luks::{Argon2Params, Header};
use crate::ops::{KeyUse, Keys, Observer};
use crate::volume::luks::LuksVolume;

/// The KDF of an enrolled keyslot (see the module notes).
const ENROLL_KDF: Argon2Params = Argon2Params {
    memory_kib: 32,
    iterations: 4,
    parallel: 1,
};

/// Enroll or unenroll: which volume, which key pair.
#[derive(Clone, Debug)]
pub struct EnrollRequest {
    /// The LUKS2 volume.
    pub volume: PathBuf,
    /// The key pair to enroll or unenroll (only its public key is needed to
    /// enroll).
    pub key: KeyId,
    /// The keyslot and detached header of the volume's own secret.
    pub access: LuksAccess,
}

/// What enrolling made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enrolled {
    /// The new keyslot, opened by a random passphrase wrapped to the key pair.
    pub keyslot: u32,
    /// The new `evfs-key` token that holds the wrapped passphrase.
    pub token: u32,
}

fn open_for_change(req: &EnrollRequest, purpose: &str) -> Result<LuksVolume> {
    let mut vol = LuksVolume::open(&req.volume, req.access.header.as_deref(), true)?;
    vol.lock(true, purpose)?;
    vol.luks2()?;
    Ok(vol)
}

fn tokens_of(vol: &LuksVolume, key: &KeyId) -> Result<Vec<(u32, KeyToken)>> {
    Ok(KeyToken::all(vol.luks2()?.metadata())
        .into_iter()
        .filter(|(_, t)| t.key == *key)
        .collect())
}

/// Enroll the key pair `req.key` (only its public key is needed) in a
/// LUKS2 volume opened with its passphrase or key file.
pub fn enroll(req: &EnrollRequest, keys: &dyn Keys, obs: &dyn Observer) -> Result<Enrolled> {
    let mut vol = open_for_change(req, "enroll a key in it")?;
    if !tokens_of(&vol, &req.key)?.is_empty() {
        return Err(Error::usage(format!(
            "{} is enrolled in {} already",
            req.key,
            req.volume.display()
        ))
        .with_hint("unenroll it first to enroll it again"));
    }
    let public = keys.keystore()?.public(&req.key)?;
    // The volume's own secret, never a token: enrolling proves access
    // with what opens the volume today.
    let opened = open_with_secret(&vol, &req.access, keys)?;
    let seed = Zeroizing::new(crate::crypto::random_array::<32>()?);
    let passphrase = Passphrase::new(Base64::encode_string(seed.as_ref()).into_bytes());
    let wrapped = {
        let as_key = VolumeKey::from_bytes(Cipher::Aes128Xts, seed.as_ref())
            .ok_or_else(|| Error::runtime("internal: a 32-byte seed"))?;
        wrap::wrap(&as_key, &public, &KeyToken::binding(&req.key))?
    };
    let keyslot = vol.update(|h| h.add_keyslot(&opened.key, &passphrase, &ENROLL_KDF, None))?;
    let token = KeyToken {
        keyslot,
        key: req.key.clone(),
        public,
        wrapped,
    };
    let stored = vol.update(|h| h.set_token(None, &token.to_json()));
    let token = match stored {
        Ok(id) => id,
        Err(e) => {
            // A keyslot nobody can open any more is of no use: take it back.
            let _ = vol.update(|h| Ok(((), h.remove_keyslot(keyslot)?)));
            return Err(e);
        }
    };
    obs.note(&format!(
        "enrolled {} in {}: keyslot {keyslot}, token {token}; `-k {}` opens it",
        req.key,
        req.volume.display(),
        req.key
    ));
    Ok(Enrolled { keyslot, token })
}

/// Remove the keyslot and token of `req.key`. Allowed to whoever can open
/// the volume: with its passphrase or key file, or with the enrolled key
/// pair itself. The last keyslot of a volume is never removed.
pub fn unenroll(req: &EnrollRequest, keys: &dyn Keys, obs: &dyn Observer) -> Result<u32> {
    let mut vol = open_for_change(req, "unenroll a key from it")?;
    let found = tokens_of(&vol, &req.key)?;
    let Some((_, token)) = found.first().cloned() else {
        return Err(Error::usage(format!(
            "{} is not enrolled in {}",
            req.key,
            req.volume.display()
        )));
    };
    match keys.luks_secret(KeyUse::Volume)? {
        Some(secret) => {
            vol.unlock(&secret, req.access.slot)?;
        }
        None => {
            unlock_with_key(&vol, keys, KeyUse::Volume, &req.key)?;
        }
    }
    let others = vol
        .luks2()?
        .metadata()
        .keyslots
        .iter()
        .filter(|k| k.id != token.keyslot)
        .count();
    if others == 0 {
        return Err(Error::refused(format!(
            "keyslot {} of {} is its only keyslot: removing it would leave no way to open the volume",
            token.keyslot,
            req.volume.display()
        ))
        .with_hint("add a passphrase first (cryptsetup luksAddKey)"));
    }
    // The keyslot first: its material is destroyed before the token goes.
    vol.update(|h| Ok(((), h.remove_keyslot(token.keyslot)?)))?;
    for (id, _) in tokens_of(&vol, &req.key)? {
        vol.update(|h| Ok(((), h.remove_token(id)?)))?;
    }
    // A token the keyslot removal left without keyslots is the same one.
    let stale: Vec<u32> = vol
        .luks2()?
        .metadata()
        .tokens
        .iter()
        .filter(|t| {
            t.type_name == super::token::TOKEN_KEY
                && t.keyslots.is_empty()
                && t.json.get("evfs_key").and_then(|v| v.as_str()) == Some(req.key.as_str())
        })
        .map(|t| t.id)
        .collect();
    for id in stale {
        vol.update(|h| Ok(((), h.remove_token(id)?)))?;
    }
    obs.note(&format!(
        "unenrolled {} from {}: keyslot {} removed",
        req.key,
        req.volume.display(),
        token.keyslot
    ));
    Ok(token.keyslot)
}

/// The secret given for the volume, or one asked for; exit 4 without.
fn open_with_secret(vol: &LuksVolume, access: &LuksAccess, keys: &dyn Keys) -> Result<Opened> {
    let secret = match keys.luks_secret(KeyUse::Volume)? {
        Some(s) => s,
        None => keys
            .luks_prompt(&vol.path().display().to_string(), false)?
            .ok_or_else(|| super::no_secret(vol.path(), KeyUse::Volume))?,
    };
    let u = vol.unlock(&secret, access.slot)?;
    Ok(Opened {
        key: u.key,
        keyslot: u.keyslot,
        by_key: None,
    })
}

/// Open `vol` through the `evfs-key` token of `id`: the key pair unwraps
/// the keyslot's passphrase.
pub(crate) fn unlock_with_key(
    vol: &LuksVolume,
    keys: &dyn Keys,
    purpose: KeyUse,
    id: &KeyId,
) -> Result<Opened> {
    let path = vol.path();
    let Header::Luks2(h) = &vol.header else {
        return Err(not_enrolled(path, id, "LUKS1 volumes have no tokens"));
    };
    let tokens: Vec<KeyToken> = KeyToken::all(h.metadata())
        .into_iter()
        .filter(|(_, t)| t.key == *id)
        .map(|(_, t)| t)
        .collect();
    if tokens.is_empty() {
        return Err(not_enrolled(path, id, "it has no evfs-key token for it"));
    }
    let pk = keys.unlock(id, purpose)?;
    let mut last = None;
    for t in tokens {
        if t.public != pk.public() {
            last = Some(Error::access(format!(
                "the evfs-key token of {id} on {} was made for another public key than this keystore's {id}",
                path.display()
            )));
            continue;
        }
        let Some(seed) = wrap::unwrap(
            &t.wrapped,
            pk.secret(),
            Cipher::Aes128Xts,
            &KeyToken::binding(id),
        ) else {
            last = Some(Error::integrity(format!(
                "the evfs-key token of {id} on {} does not open with its key pair: it was altered",
                path.display()
            )));
            continue;
        };
        let passphrase = Passphrase::new(Base64::encode_string(seed.expose()).into_bytes());
        match vol.unlock(&passphrase, Some(t.keyslot)) {
            Ok(u) => {
                return Ok(Opened {
                    key: u.key,
                    keyslot: u.keyslot,
                    by_key: Some(pk),
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| not_enrolled(path, id, "no token opened")))
}

fn not_enrolled(path: &Path, id: &KeyId, why: &str) -> Error {
    Error::access(format!(
        "-k {id} cannot open the LUKS volume {}: {why}",
        path.display()
    ))
    .with_hint(CliAdvice::LuksEnroll {
        volume: path.display().to_string(),
        id: id.to_string(),
    })
}
