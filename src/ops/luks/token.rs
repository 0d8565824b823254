//! The LUKS2 tokens evfs stores (specified in `formats/LUKS.md`, "What
//! evfs adds"):
//!
//! * `evfs-provenance`: where a LUKS2 target's data came from, the LUKS
//!   counterpart of an EMD's provenance, so that `verify` can check the
//!   data of a LUKS2 copy. It is not sealed with a key derived from the
//!   volume key, so that it stays valid when `cryptsetup reencrypt` gives
//!   the volume a new key; its authenticity is for a signature to give
//!   (the `signature` member, `null` until evfs signs provenance).
//! * `evfs-key`: a keyslot's random passphrase wrapped for an evfs key pair
//!   (`evfs luks enroll`), as systemd-cryptenroll wraps one for a TPM2 chip
//!   or a FIDO2 key.

use base64ct::{Base64, Encoding};
use serde_json::{Value, json};

use crate::crypto::wrap::WRAPPED_LEN;
use crate::emd::Timestamp;
use crate::keys::KeyId;
use crate::luks::metadata::Metadata;
use crate::signature::Sign;

/// The token type of an enrolled evfs key pair.
pub const TOKEN_KEY: &str = "evfs-key";
/// The token type of provenance (the format layer's name).
pub const TOKEN_PROVENANCE: &str = crate::luks::TOKEN_PROVENANCE;
/// Layout version of both token types.
pub const TOKEN_VERSION: u64 = 1;

/// Where the data of a backup came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// An EVFS volume.
    Evfs,
    /// A LUKS volume, `"luks1"` or `"luks2"`.
    Luks(&'static str),
    /// Plain data.
    Plain,
    /// A backup stream (a restore).
    Stream,
}

impl SourceKind {
    /// The kind as the token stores it: `evfs`, `luks1`, `luks2`, `plain`,
    /// `stream`.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Evfs => "evfs",
            SourceKind::Luks(v) => v,
            SourceKind::Plain => "plain",
            SourceKind::Stream => "stream",
        }
    }
}

/// The provenance of a LUKS2 target: the `evfs-provenance` token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// What the data was read from ([`SourceKind::name`]).
    pub source: String,
    /// The source's UUID as text (an EVFS volume's, a LUKS volume's).
    pub source_uuid: Option<String>,
    /// An EVFS source's data version when it was read.
    pub source_data_version: Option<u64>,
    /// When the backup began, RFC 3339 in UTC.
    pub started: String,
    /// When its data was complete, RFC 3339 in UTC.
    pub finished: String,
    /// Bytes of plaintext written, from the start of the data area.
    pub bytes: u64,
    /// BLAKE3 of those bytes.
    pub plaintext_blake3: [u8; 32],
    /// Data was written through `evfs map` since the backup (not signed:
    /// a map that writes may hold no key pair).
    pub modified: bool,
    /// Who signed the other members, for the volume's UUID.
    pub signature: Option<crate::signature::Signature>,
}

/// Prefix of a LUKS provenance token's signed message.
pub const PROVENANCE_CONTEXT: &[u8] = b"evfs LUKS2 provenance signature v1\0";

impl Provenance {
    /// The provenance of a backup that began at `started` and wrote
    /// `bytes` of plaintext with digest `digest`.
    pub fn of_backup(
        source: &SourceKind,
        source_uuid: Option<String>,
        source_data_version: Option<u64>,
        started: Timestamp,
        bytes: u64,
        digest: blake3::Hash,
    ) -> Provenance {
        Provenance {
            source: source.name().to_string(),
            source_uuid,
            source_data_version,
            started: started.rfc3339(),
            finished: Timestamp::now().rfc3339(),
            bytes,
            plaintext_blake3: *digest.as_bytes(),
            modified: false,
            signature: None,
        }
    }

    /// The members a signature covers: every member of the token but
    /// `keyslots`, `modified` and `signature`, as one JSON object with its
    /// members sorted by name and no whitespace.
    fn signed_members(&self) -> String {
        let mut v = self.to_json();
        if let Some(m) = v.as_object_mut() {
            for k in ["keyslots", "modified", "signature"] {
                m.remove(k);
            }
        }
        v.to_string()
    }

    /// The message a signature of this provenance signs: the context, the
    /// LUKS2 volume's UUID (as the header holds it) and a NUL byte, then the
    /// signed members. Binding the UUID keeps a token from being copied
    /// onto another volume.
    pub fn signed_message(&self, volume_uuid: &str) -> Vec<u8> {
        let mut m = PROVENANCE_CONTEXT.to_vec();
        m.extend_from_slice(volume_uuid.as_bytes());
        m.push(0);
        m.extend_from_slice(self.signed_members().as_bytes());
        m
    }

    /// Sign for the volume `volume_uuid` with `pk`.
    pub fn sign(&mut self, volume_uuid: &str, pk: &crate::keys::PrivateKey) {
        self.signature = Some(pk.sign(&self.signed_message(volume_uuid)));
    }

    /// The token object. Numbers that may exceed 53 bits are decimal
    /// strings, as LUKS2 stores 64-bit values.
    pub fn to_json(&self) -> Value {
        json!({
            "type": TOKEN_PROVENANCE,
            "keyslots": [],
            "evfs_version": TOKEN_VERSION,
            "source": self.source,
            "source_uuid": self.source_uuid,
            "source_data_version": self.source_data_version.map(|v| v.to_string()),
            "started": self.started,
            "finished": self.finished,
            "bytes": self.bytes.to_string(),
            "plaintext_blake3": crate::hex::encode(&self.plaintext_blake3),
            "modified": self.modified,
            "signature": self
                .signature
                .as_ref()
                .map(|s| Base64::encode_string(&s.encode())),
        })
    }

    /// Read a token object; `None` when it is not a provenance token evfs
    /// can read (another version, a field missing or malformed).
    pub fn from_json(v: &Value) -> Option<Provenance> {
        if v.get("type")?.as_str()? != TOKEN_PROVENANCE
            || v.get("evfs_version")?.as_u64()? != TOKEN_VERSION
        {
            return None;
        }
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let digest = crate::hex::decode(v.get("plaintext_blake3")?.as_str()?)?;
        Some(Provenance {
            source: text("source")?,
            source_uuid: text("source_uuid"),
            source_data_version: text("source_data_version").and_then(|s| s.parse().ok()),
            started: text("started")?,
            finished: text("finished")?,
            bytes: text("bytes")?.parse().ok()?,
            plaintext_blake3: digest.try_into().ok()?,
            modified: v.get("modified").and_then(Value::as_bool).unwrap_or(false),
            signature: match v.get("signature") {
                None | Some(Value::Null) => None,
                Some(s) => {
                    let bytes = Base64::decode_vec(s.as_str()?).ok()?;
                    crate::signature::Signature::parse(&bytes).ok()?
                }
            },
        })
    }

    /// The provenance token of a header, and its id.
    pub fn find(meta: &Metadata) -> Option<(u32, Option<Provenance>)> {
        meta.tokens
            .iter()
            .find(|t| t.type_name == TOKEN_PROVENANCE)
            .map(|t| (t.id, Provenance::from_json(&t.json)))
    }
}

/// An enrolled key pair: the `evfs-key` token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyToken {
    /// The keyslot the wrapped passphrase opens.
    pub keyslot: u32,
    /// The enrolled key pair's ID.
    pub key: KeyId,
    /// Its X25519 public key.
    pub public: [u8; 32],
    /// The keyslot's passphrase wrapped to `public` (bound to the key ID).
    pub wrapped: [u8; WRAPPED_LEN],
}

impl KeyToken {
    /// The token object as LUKS2 stores it.
    pub fn to_json(&self) -> Value {
        json!({
            "type": TOKEN_KEY,
            "keyslots": [self.keyslot.to_string()],
            "evfs_version": TOKEN_VERSION,
            "evfs_key": self.key.to_string(),
            "public_key": Base64::encode_string(&self.public),
            "wrapped_passphrase": Base64::encode_string(&self.wrapped),
        })
    }

    /// Read a token object; `None` when it is not one evfs can use.
    pub fn from_json(v: &Value) -> Option<KeyToken> {
        if v.get("type")?.as_str()? != TOKEN_KEY
            || v.get("evfs_version")?.as_u64()? != TOKEN_VERSION
        {
            return None;
        }
        let slots = v.get("keyslots")?.as_array()?;
        let [slot] = slots.as_slice() else {
            return None;
        };
        let bytes = |k: &str| Base64::decode_vec(v.get(k)?.as_str()?).ok();
        Some(KeyToken {
            keyslot: slot.as_str()?.parse().ok()?,
            key: KeyId::parse(v.get("evfs_key")?.as_str()?).ok()?,
            public: bytes("public_key")?.try_into().ok()?,
            wrapped: bytes("wrapped_passphrase")?.try_into().ok()?,
        })
    }

    /// Every usable `evfs-key` token of a header, with its id.
    pub fn all(meta: &Metadata) -> Vec<(u32, KeyToken)> {
        meta.tokens
            .iter()
            .filter(|t| t.type_name == TOKEN_KEY)
            .filter_map(|t| KeyToken::from_json(&t.json).map(|k| (t.id, k)))
            .collect()
    }

    /// What the wrap is bound to (its associated data): the key ID, so
    /// that a token copied under another key's name does not open.
    pub fn binding(key: &KeyId) -> String {
        format!("evfs luks token v1 {key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_json() {
        let p = Provenance::of_backup(
            &SourceKind::Luks("luks2"),
            Some("0a7c5e2e-6f3b-4d1a-9c4e-2b8d7f6a1e03".into()),
            None,
            Timestamp::now(),
            u64::MAX - 1,
            blake3::hash(b"data"),
        );
        let v = p.to_json();
        assert_eq!(v["bytes"], Value::String((u64::MAX - 1).to_string()));
        assert_eq!(v["signature"], Value::Null);
        assert_eq!(Provenance::from_json(&v), Some(p.clone()));
        let mut other = v.clone();
        other["evfs_version"] = json!(2);
        assert_eq!(Provenance::from_json(&other), None);

        // Signed: the block travels in Base64 and verifies for this volume
        // only; `modified` is outside the signature, every other member in.
        let uuid = "0a7c5e2e-6f3b-4d1a-9c4e-2b8d7f6a1e03";
        let signer = crate::emd::tests::example_signer();
        let mut signed = p.clone();
        signed.sign(uuid, &signer);
        let back = Provenance::from_json(&signed.to_json()).unwrap();
        assert_eq!(back, signed);
        let sig = back.signature.clone().unwrap();
        assert!(sig.valid(&back.signed_message(uuid)));
        assert!(!sig.valid(&back.signed_message("another-uuid")));
        let mut written = back.clone();
        written.modified = true;
        assert!(sig.valid(&written.signed_message(uuid)));
        let mut changed = back.clone();
        changed.bytes -= 1;
        assert!(!sig.valid(&changed.signed_message(uuid)));
        // Members sorted by name, no whitespace: what a reimplementation
        // serializes.
        let m = String::from_utf8(back.signed_message(uuid)).unwrap();
        let json = &m[m.find('{').unwrap()..];
        assert!(json.starts_with("{\"bytes\":"), "{json}");
        assert!(!json.contains(' ') && !json.contains("modified"), "{json}");

        let k = KeyToken {
            keyslot: 3,
            key: KeyId::parse("backup.cron").unwrap(),
            public: [7; 32],
            wrapped: [9; WRAPPED_LEN],
        };
        let v = k.to_json();
        assert_eq!(v["keyslots"], json!(["3"]));
        assert_eq!(KeyToken::from_json(&v), Some(k));
        assert_eq!(KeyToken::from_json(&json!({"type": "evfs-key"})), None);
    }
}
