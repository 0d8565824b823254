//! Authenticity: who signed an EMD or a stream, whether that signer is
//! trusted, and what a run does about a missing, untrusted or broken
//! signature.
//!
//! Trusted signers are the keystore's own key pairs and the public keys
//! imported with trust (`keys::Keystore::is_trusted`), plus the
//! fingerprints a run names (`--trust`). A broken signature (present, not
//! valid for what it signs) always fails with exit 5. A missing or
//! untrusted one fails only when the run requires a signature (a volume
//! unlocked with `-k`, `--trust`, `--require-signature`) and does not allow
//! unsigned data (`--allow-unsigned`).

use std::path::Path;

use super::{DATA_ROLES, Keys};
use crate::crypto::VolumeKey;
use crate::emd::{Emd, Role};
use crate::error::{Error, Result};
use crate::keys::{KeyId, PrivateKey};
use crate::signature::Sign;
use crate::signature::Signature;
use crate::volume::{Unlocked, unlock_emd};

/// How a run judges signatures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Fingerprints trusted for this run only (`--trust`).
    pub trust: Vec<String>,
    /// A missing or untrusted signature fails (`--require-signature`).
    pub require: bool,
    /// ... unless unsigned data is allowed (`--allow-unsigned`).
    pub allow_unsigned: bool,
}

impl Policy {
    /// This policy when a signature is required (a volume unlocked with a
    /// key, or `--trust` given).
    pub fn requiring(&self) -> Policy {
        Policy {
            require: true,
            ..self.clone()
        }
    }

    /// Whether a missing or untrusted signature fails.
    pub fn strict(&self) -> bool {
        (self.require || !self.trust.is_empty()) && !self.allow_unsigned
    }
}

/// Who signed, as `verify`, `restore` and `info` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedBy {
    /// The signer's key ID, as the signature block names it.
    pub id: KeyId,
    /// The fingerprint of the signer's public key (`b3:` and 16 hex digits).
    pub fingerprint: String,
    /// The signer is a trusted one here.
    pub trusted: bool,
    /// The signature is valid for what it signs.
    pub valid: bool,
}

impl SignedBy {
    /// `signed by ID (b3:...), trusted` and the like.
    pub fn describe(&self) -> String {
        format!(
            "signed by {} ({}), {}",
            self.id,
            self.fingerprint,
            match (self.valid, self.trusted) {
                (false, _) => "but the signature is BROKEN",
                (true, true) => "trusted",
                (true, false) => "not a trusted signer here",
            }
        )
    }
}

/// Who signed `message` with `sig`, judged against the keystore's trusted
/// signers and `policy`'s extra ones; no failure here.
pub(crate) fn signed_by(
    sig: Option<&Signature>,
    message: &[u8],
    keys: &dyn Keys,
    policy: &Policy,
) -> Result<Option<SignedBy>> {
    let Some(sig) = sig else {
        return Ok(None);
    };
    let fingerprint = sig.fingerprint();
    let trusted = policy.trust.iter().any(|t| t == &fingerprint)
        || keys.keystore()?.is_trusted(&sig.id, &sig.public)?;
    Ok(Some(SignedBy {
        id: sig.id.clone(),
        fingerprint,
        trusted,
        valid: sig.valid(message),
    }))
}

/// Judge the signature of `what`: exit 5 when it is broken, or when
/// `policy` is strict and it is missing or untrusted.
pub(crate) fn judge(signed: Option<&SignedBy>, policy: &Policy, what: &str) -> Result<()> {
    let allow = "add --allow-unsigned to accept it all the same, or sign it with a trusted key";
    match signed {
        Some(s) if !s.valid => Err(Error::integrity(format!(
            "{what} carries a broken signature of {} ({}): it was altered after it was signed",
            s.id, s.fingerprint
        ))
        .with_hint("do not trust it; restore a genuine copy")),
        Some(s) if !s.trusted && policy.strict() => Err(Error::integrity(format!(
            "{what} is signed by {} ({}), who is not a trusted signer here",
            s.id, s.fingerprint
        ))
        .with_hint(
            "if the key is genuine, trust it with `evfs key import ID FILE --trust` (or --trust FINGERPRINT for this run); else do not use it",
        )),
        None if policy.strict() => {
            Err(Error::integrity(format!("{what} is not signed")).with_hint(allow))
        }
        _ => Ok(()),
    }
}

/// The signature of an EMD, judged: what `verify` reports, after failing
/// as [`judge`] says.
pub(crate) fn check_emd(
    emd: &Emd,
    keys: &dyn Keys,
    policy: &Policy,
    what: &str,
) -> Result<Option<SignedBy>> {
    let signed = signed_by(emd.signature.as_ref(), &emd.signed_message(), keys, policy)?;
    judge(signed.as_ref(), policy, what)?;
    Ok(signed)
}

/// Unlock a volume's EMD with `pk` for `roles` to `action`, and check its
/// signature as unlocking requires: a substituted or unsigned EMD is
/// refused (exit 5) unless `--allow-unsigned`.
pub(crate) fn unlock(
    emd: &Emd,
    path: &Path,
    pk: &PrivateKey,
    roles: &[Role],
    action: &str,
    keys: &dyn Keys,
) -> Result<Unlocked> {
    let unlocked = unlock_emd(emd, path, pk, roles, action)?;
    let what = format!("the EMD of {}", path.display());
    check_emd(emd, keys, &keys.policy().requiring(), &what).map_err(|e| {
        if emd.signature.is_none() && emd.version < 2 {
            e.with_hint(format!(
                "a volume of an older evfs has no signature: sign it with `evfs emd sign {} -k ID`, or add --allow-unsigned",
                path.display()
            ))
        } else if emd.signature.is_none() {
            e.with_hint(format!(
                "sign it with `evfs emd sign {} -k ID` if you trust its content, or add --allow-unsigned",
                path.display()
            ))
        } else {
            e
        }
    })?;
    Ok(unlocked)
}

/// [`unlock`] for reading or writing data.
pub(crate) fn unlock_data(
    emd: &Emd,
    path: &Path,
    pk: &PrivateKey,
    action: &str,
    keys: &dyn Keys,
) -> Result<VolumeKey> {
    Ok(unlock(emd, path, pk, DATA_ROLES, action, keys)?.key)
}

/// Seal `emd` with `key` after a change, and sign it with `signer` when
/// there is one: the last step of every change a key holder makes.
pub(crate) fn seal(emd: &mut Emd, key: &VolumeKey, signer: Option<&PrivateKey>) {
    emd.seal(key);
    if let Some(pk) = signer {
        emd.sign(|m| pk.sign(m));
    }
}

/// The signer of what a command writes without unlocking a key pair
/// (`create --owner`, a plain-source backup, a raw clone): the key named
/// with `--sign-with` (which must unlock), else by default the owner's key
/// when its private half is in the keystore, readable, and its passphrase
/// can be had; `None` when there is none, and the result goes out unsigned.
pub(crate) fn signer(
    keys: &dyn Keys,
    sign_with: Option<&KeyId>,
    owner: Option<&KeyId>,
) -> Result<Option<PrivateKey>> {
    if let Some(id) = sign_with {
        return keys.unlock(id, super::KeyUse::Signer).map(Some);
    }
    let Some(id) = owner else {
        return Ok(None);
    };
    if !keys.keystore()?.has_private(id) {
        return Ok(None);
    }
    // A key this user may not read (another user's keystore) does not
    // sign by default; a wrong passphrase given for it is still an error.
    match keys.try_unlock(id, super::KeyUse::Signer) {
        Err(e) if e.exit_code() == 1 => Ok(None),
        other => other,
    }
}
