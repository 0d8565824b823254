//! The LUKS2 JSON metadata as typed values, and the checks that decide
//! whether a JSON area is valid: cryptsetup's `LUKS2_hdr_validate`
//! (`lib/luks2/luks2_json_metadata.c`) and its keyslot validation, as far as
//! they decide whether a header copy can be used.
//!
//! The typed values are a read-only view; the `Json` tree stays the
//! source of truth for rewriting, so fields evfs does not know survive.

use base64ct::{Base64, Encoding};

use super::json::Json;
use super::keyslot::{Argon2Variant, Kdf};

/// Size of a binary header; the JSON area follows it.
pub const BIN_HEADER_LEN: u64 = 4096;
/// Metadata sizes (binary header + JSON area) cryptsetup accepts; the
/// secondary header sits at the same offset as the size.
pub const METADATA_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
/// Largest keyslots area (`LUKS2_MAX_KEYSLOTS_SIZE`).
pub const MAX_KEYSLOTS_SIZE: u64 = 128 << 20;
/// Objects per section cryptsetup handles (`LUKS2_OBJECTS_MAX`).
pub const MAX_OBJECTS: u32 = 32;

/// Keyslot priorities (cryptsetup's `crypt_keyslot_priority`).
pub const PRIORITY_IGNORE: i64 = 0;
/// Priority 1: tried in order (the default).
pub const PRIORITY_NORMAL: i64 = 1;
/// Priority 2: tried before the normal ones.
pub const PRIORITY_PREFER: i64 = 2;

/// A keyslot object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyslot {
    /// The keyslot's number (its key in the `keyslots` object).
    pub id: u32,
    /// `type`: `luks2` for passphrase keyslots, `reencrypt` during
    /// reencryption, or another tool's type.
    pub type_name: String,
    /// Bytes of the key stored (the volume key for `luks2` keyslots bound
    /// to the data segment).
    pub key_size: u32,
    /// 0 ignore (only when named), 1 normal, 2 prefer; absent means 1.
    pub priority: i64,
    /// Byte offset and size of its binary area.
    pub area_offset: u64,
    /// Bytes of the binary area.
    pub area_size: u64,
    /// The fields of a `luks2` keyslot.
    pub luks2: Option<Luks2Keyslot>,
}

/// What a `luks2` keyslot adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Luks2Keyslot {
    /// How the passphrase becomes the area key.
    pub kdf: Kdf,
    /// The hash of the anti-forensic splitter.
    pub af_hash: String,
    /// Stripes of the anti-forensic splitter (cryptsetup accepts only 4000).
    pub af_stripes: u32,
    /// The area's cipher in dm-crypt notation, and its key length.
    pub area_encryption: String,
    /// Bytes of the area's key.
    pub area_key_size: u32,
}

/// A digest object: checks a candidate key for the keyslots and segments
/// it lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestEntry {
    /// The digest's number.
    pub id: u32,
    /// `type`: `pbkdf2` for every digest cryptsetup makes.
    pub type_name: String,
    /// The keyslots whose keys it checks.
    pub keyslots: Vec<u32>,
    /// The segments whose key it checks.
    pub segments: Vec<u32>,
    /// The fields of a `pbkdf2` digest, when all are there and decode.
    pub pbkdf2: Option<Pbkdf2Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
/// The fields of a `pbkdf2` digest: the key is right when PBKDF2 of it gives
/// `digest`.
pub struct Pbkdf2Digest {
    /// The PBKDF2 hash's name as stored.
    pub hash: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt, decoded.
    pub salt: Vec<u8>,
    /// The expected PBKDF2 output, decoded.
    pub digest: Vec<u8>,
}

/// A segment object: an area of the device holding data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The segment's number.
    pub id: u32,
    /// `crypt`, or `linear` and others during reencryption.
    pub type_name: String,
    /// Byte offset from the device start.
    pub offset: u64,
    /// Bytes, or `None` for `"dynamic"` (to the end of the device).
    pub size: Option<u64>,
    /// `flags`, such as the `backup-*` of reencryption (see
    /// [`Segment::is_backup`]).
    pub flags: Vec<String>,
    /// The fields of a `crypt` segment.
    pub crypt: Option<CryptSegment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
/// What a `crypt` segment adds.
pub struct CryptSegment {
    /// IV of the segment's first sector, in 512-byte units.
    pub iv_tweak: u64,
    /// dm-crypt cipher notation (`aes-xts-plain64`).
    pub encryption: String,
    /// Bytes per encryption sector, a non-zero multiple of 512.
    pub sector_size: u32,
    /// The integrity type when the segment is authenticated.
    pub integrity: Option<String>,
}

impl Segment {
    /// Segments flagged `backup-*` are reencryption bookkeeping, not data.
    pub fn is_backup(&self) -> bool {
        self.flags.iter().any(|f| f.starts_with("backup-"))
    }
}

/// A token object: `type`, the keyslots it serves, and whatever else its
/// owner stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The token's number.
    pub id: u32,
    /// `type`: `luks2-keyring`, `systemd-tpm2`, evfs's `evfs-provenance` and
    /// `evfs-key`, ...
    pub type_name: String,
    /// The keyslots it serves.
    pub keyslots: Vec<u32>,
    /// The whole object, for the fields of its type.
    pub json: serde_json::Value,
}

/// The config object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes of each JSON area.
    pub json_size: u64,
    /// Bytes of the keyslots area after the second JSON area.
    pub keyslots_size: u64,
    /// `flags`: persistent activation flags (`allow-discards`, ...).
    pub flags: Vec<String>,
    /// `requirements.mandatory`: features an implementation must know to
    /// change the header or activate the device.
    pub requirements: Vec<String>,
}

/// The metadata of a LUKS2 header, in JSON order.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// The keyslots, in JSON order.
    pub keyslots: Vec<Keyslot>,
    /// The tokens, in JSON order.
    pub tokens: Vec<Token>,
    /// The segments, in JSON order.
    pub segments: Vec<Segment>,
    /// The digests, in JSON order.
    pub digests: Vec<DigestEntry>,
    /// The `config` object.
    pub config: Config,
}

impl Metadata {
    /// The keyslot numbered `id`, if there is one.
    pub fn keyslot(&self, id: u32) -> Option<&Keyslot> {
        self.keyslots.iter().find(|k| k.id == id)
    }

    /// The token numbered `id`, if there is one.
    pub fn token(&self, id: u32) -> Option<&Token> {
        self.tokens.iter().find(|t| t.id == id)
    }

    /// The digest that lists keyslot `id` (a valid header has exactly one
    /// for each `luks2` keyslot).
    pub fn digest_of_keyslot(&self, id: u32) -> Option<&DigestEntry> {
        self.digests.iter().find(|d| d.keyslots.contains(&id))
    }

    /// The digest that lists segment `id`.
    pub fn digest_of_segment(&self, id: u32) -> Option<&DigestEntry> {
        self.digests.iter().find(|d| d.segments.contains(&id))
    }

    /// Data segments: those not flagged as reencryption backups.
    pub fn data_segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| !s.is_backup())
    }

    /// Bytes from the device start to the end of the keyslots area.
    pub fn areas_end(&self) -> u64 {
        2 * (self.config.json_size + BIN_HEADER_LEN) + self.config.keyslots_size
    }

    /// Parse and validate the JSON of a header copy whose metadata size
    /// (binary header + JSON area) is `metadata_size`.
    pub(crate) fn from_json(doc: &Json, metadata_size: u64) -> Result<Metadata, String> {
        if doc.as_object().is_none() {
            return Err("the JSON area is not an object".into());
        }
        let section = |name: &str| -> Result<&[(String, Json)], String> {
            doc.get(name)
                .and_then(Json::as_object)
                .ok_or_else(|| format!("no {name} object"))
        };
        let keyslots_json = section("keyslots")?;
        let tokens_json = section("tokens")?;
        let segments_json = section("segments")?;
        let digests_json = section("digests")?;
        // cryptsetup never writes more than 32 objects of a kind (and uses
        // ids 0 to 31); the bound also keeps the pairwise checks below cheap
        // whatever a hostile JSON area holds.
        for (name, members) in [
            ("keyslots", keyslots_json),
            ("tokens", tokens_json),
            ("segments", segments_json),
            ("digests", digests_json),
        ] {
            if members.len() > MAX_OBJECTS as usize {
                return Err(format!("more than {MAX_OBJECTS} {name}"));
            }
            let mut ids = Vec::with_capacity(members.len());
            for (key, _) in members {
                let id = number_key(name, key)?;
                if ids.contains(&id) {
                    return Err(format!("{name} {id} appears twice"));
                }
                ids.push(id);
            }
        }
        let config = parse_config(
            doc.get("config")
                .ok_or_else(|| "no config object".to_string())?,
        )?;

        let mut keyslots = Vec::new();
        for (key, v) in keyslots_json {
            keyslots.push(parse_keyslot(number_key("keyslot", key)?, v)?);
        }
        let mut segments = Vec::new();
        for (key, v) in segments_json {
            segments.push(parse_segment(number_key("segment", key)?, v)?);
        }
        let keyslot_ids: Vec<u32> = keyslots.iter().map(|k| k.id).collect();
        let segment_ids: Vec<u32> = segments.iter().map(|s| s.id).collect();
        let mut digests = Vec::new();
        for (key, v) in digests_json {
            digests.push(parse_digest(
                number_key("digest", key)?,
                v,
                &keyslot_ids,
                &segment_ids,
            )?);
        }
        let mut tokens = Vec::new();
        for (key, v) in tokens_json {
            let id = number_key("token", key)?;
            let type_name = nonempty_str(v, "type").ok_or(format!("token {id} has no type"))?;
            let keyslots = id_list(v.get("keyslots"), &keyslot_ids)
                .ok_or(format!("token {id} has a bad keyslots list"))?;
            tokens.push(Token {
                id,
                type_name,
                keyslots,
                json: serde_json::Value::from(v),
            });
        }
        let meta = Metadata {
            keyslots,
            tokens,
            segments,
            digests,
            config,
        };
        meta.validate(metadata_size)?;
        Ok(meta)
    }

    /// The checks across objects.
    fn validate(&self, metadata_size: u64) -> Result<(), String> {
        let c = &self.config;
        if c.json_size.checked_add(BIN_HEADER_LEN) != Some(metadata_size) {
            return Err("config json_size does not match the binary header".into());
        }
        if !METADATA_SIZES.contains(&metadata_size) {
            return Err(format!(
                "metadata size {metadata_size} is not one LUKS2 allows"
            ));
        }
        if !c.keyslots_size.is_multiple_of(4096) || c.keyslots_size > MAX_KEYSLOTS_SIZE {
            return Err(format!("keyslots_size {} is invalid", c.keyslots_size));
        }
        let online = c
            .requirements
            .iter()
            .filter(|r| is_online_reencrypt(r))
            .count();
        if online > 1 {
            return Err("more than one online reencryption requirement".into());
        }

        // Segments: at least one, ids 0..n without gaps, regular ones
        // before backups, crypt ones bound to a digest, regular ones not
        // overlapping, only the last dynamic.
        if self.segments.is_empty() {
            return Err("no segments".into());
        }
        let count = self.segments.len() as u32;
        for id in 0..count {
            if !self.segments.iter().any(|s| s.id == id) {
                return Err(format!("gap at segment {id}"));
            }
        }
        let mut by_id: Vec<&Segment> = self.segments.iter().collect();
        by_id.sort_by_key(|s| s.id);
        let first_backup = by_id.iter().position(|s| s.is_backup());
        if first_backup == Some(0) {
            return Err("no regular segment".into());
        }
        if let Some(b) = first_backup
            && by_id[b..].iter().any(|s| !s.is_backup())
        {
            return Err("a regular segment after a backup segment".into());
        }
        let regular = &by_id[..first_backup.unwrap_or(by_id.len())];
        for (i, s) in regular.iter().enumerate() {
            if s.size.is_none() && i + 1 != regular.len() {
                return Err("only the last segment may have dynamic size".into());
            }
            for t in regular.iter().filter(|t| t.id != s.id) {
                let t_end = t.size.map(|n| t.offset.checked_add(n));
                if t_end == Some(None) {
                    return Err("segment end overflows".into());
                }
                let inside = s.offset >= t.offset && t_end.flatten().is_none_or(|e| s.offset < e);
                if inside {
                    return Err(format!("segments {} and {} overlap", s.id, t.id));
                }
            }
        }
        for s in &self.segments {
            if s.crypt.is_some() && self.digest_of_segment(s.id).is_none() {
                return Err(format!("crypt segment {} has no digest", s.id));
            }
        }
        // The keyslots area fits between the two metadata copies and the
        // first data segment (unless the header is detached: offset 0).
        let min_offset = self.segments.iter().map(|s| s.offset).min().unwrap_or(0);
        if min_offset != 0
            && (min_offset < c.keyslots_size || min_offset - c.keyslots_size < 2 * metadata_size)
        {
            return Err("keyslots_size reaches into the data".into());
        }

        // Keyslot areas: inside the keyslots area, non-empty, not
        // overlapping; luks2 keyslots in exactly one digest.
        let end = self.areas_end();
        let mut areas = Vec::with_capacity(self.keyslots.len());
        for k in &self.keyslots {
            if k.area_offset < 2 * metadata_size {
                return Err(format!("keyslot {} area starts in the metadata", k.id));
            }
            if k.area_size == 0 {
                return Err(format!("keyslot {} area is empty", k.id));
            }
            let k_end = k
                .area_offset
                .checked_add(k.area_size)
                .ok_or(format!("keyslot {} area overflows", k.id))?;
            if k_end > end {
                return Err(format!(
                    "keyslot {} area ends beyond the keyslots area",
                    k.id
                ));
            }
            areas.push((k.id, k.area_offset, k_end));
        }
        for &(id, start, _) in &areas {
            if let Some(&(other, ..)) = areas
                .iter()
                .find(|&&(o, o_start, o_end)| o != id && start >= o_start && start < o_end)
            {
                return Err(format!("keyslots {id} and {other} overlap"));
            }
        }
        for k in &self.keyslots {
            if k.type_name == "luks2"
                && self
                    .digests
                    .iter()
                    .filter(|d| d.keyslots.contains(&k.id))
                    .count()
                    != 1
            {
                return Err(format!("keyslot {} is not in exactly one digest", k.id));
            }
        }
        let reencrypt = self
            .keyslots
            .iter()
            .filter(|k| k.type_name == "reencrypt")
            .count();
        if reencrypt > 1 {
            return Err("more than one reencrypt keyslot".into());
        }
        if reencrypt > 0 && online == 0 {
            return Err("a reencrypt keyslot without its requirement".into());
        }
        Ok(())
    }
}

/// `online-reencrypt` or `online-reencrypt-vN` (cryptsetup's
/// `reencrypt_candidate_flag`).
pub fn is_online_reencrypt(flag: &str) -> bool {
    flag == "online-reencrypt"
        || flag
            .strip_prefix("online-reencrypt-v")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// An object key that names a number ("0", "1", …): digits only, as
/// cryptsetup's `numbered()`, and within `u32`.
fn number_key(what: &str, key: &str) -> Result<u32, String> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} name {key:?} is not a number"));
    }
    key.parse()
        .map_err(|_| format!("{what} number {key:?} is too large"))
}

/// A `string-uint64`: decimal digits only (`strtoull` with nothing left).
pub(crate) fn parse_u64_string(v: Option<&Json>) -> Option<u64> {
    let s = v?.as_str()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn nonempty_str(v: &Json, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn string_list(v: Option<&Json>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// An array of numbered strings, each naming one of `known`.
fn id_list(v: Option<&Json>, known: &[u32]) -> Option<Vec<u32>> {
    v?.as_array()?
        .iter()
        .map(|s| {
            let id = number_key("", s.as_str()?).ok()?;
            known.contains(&id).then_some(id)
        })
        .collect()
}

/// Standard Base64 (with padding) as LUKS2 stores binary values; `None` when
/// it does not decode.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    Base64::decode_vec(s).ok()
}

/// `b` in standard Base64 with padding, as LUKS2 stores binary values.
pub(crate) fn encode_base64(b: &[u8]) -> String {
    Base64::encode_string(b)
}

fn parse_config(v: &Json) -> Result<Config, String> {
    if v.as_object().is_none() {
        return Err("config is not an object".into());
    }
    let json_size = parse_u64_string(v.get("json_size")).ok_or("config json_size is invalid")?;
    let keyslots_size =
        parse_u64_string(v.get("keyslots_size")).ok_or("config keyslots_size is invalid")?;
    let flags = match v.get("flags") {
        None => Vec::new(),
        Some(f) => string_list(Some(f)).ok_or("config flags is not an array of strings")?,
    };
    let requirements = match v.get("requirements") {
        None => Vec::new(),
        Some(r) => {
            if r.as_object().is_none() {
                return Err("config requirements is not an object".into());
            }
            match r.get("mandatory") {
                None => Vec::new(),
                Some(m) => string_list(Some(m))
                    .ok_or("config requirements.mandatory is not an array of strings")?,
            }
        }
    };
    Ok(Config {
        json_size,
        keyslots_size,
        flags,
        requirements,
    })
}

fn parse_keyslot(id: u32, v: &Json) -> Result<Keyslot, String> {
    let bad = |what: &str| format!("keyslot {id}: {what}");
    let type_name = nonempty_str(v, "type").ok_or_else(|| bad("no type"))?;
    let key_size = v
        .get("key_size")
        .and_then(Json::as_u32)
        .ok_or_else(|| bad("key_size is not a 32-bit unsigned integer"))?;
    let priority = match v.get("priority") {
        None => PRIORITY_NORMAL,
        Some(p) => p
            .as_i64()
            .ok_or_else(|| bad("priority is not an integer"))?,
    };
    let area = v
        .get("area")
        .filter(|a| a.as_object().is_some())
        .ok_or_else(|| bad("no area object"))?;
    let area_type = nonempty_str(area, "type").ok_or_else(|| bad("area has no type"))?;
    let area_offset =
        parse_u64_string(area.get("offset")).ok_or_else(|| bad("area offset is invalid"))?;
    let area_size =
        parse_u64_string(area.get("size")).ok_or_else(|| bad("area size is invalid"))?;

    // cryptsetup validates keyslots of the types it knows (`luks2` here;
    // `reencrypt` is left as another type) and ignores the others.
    let luks2 = if type_name == "luks2" {
        let kdf_json = v
            .get("kdf")
            .filter(|k| k.as_object().is_some())
            .ok_or_else(|| bad("no kdf object"))?;
        let af = v
            .get("af")
            .filter(|a| a.as_object().is_some())
            .ok_or_else(|| bad("no af object"))?;
        if af.get("type").and_then(Json::as_str) != Some("luks1") {
            return Err(bad("af type is not luks1"));
        }
        let af_hash = nonempty_str(af, "hash").ok_or_else(|| bad("af has no hash"))?;
        let af_stripes = af
            .get("stripes")
            .and_then(Json::as_u32)
            .ok_or_else(|| bad("af stripes is invalid"))?;
        if area_type != "raw" {
            return Err(bad("area type is not raw"));
        }
        let area_encryption =
            nonempty_str(area, "encryption").ok_or_else(|| bad("area has no encryption"))?;
        let area_key_size = area
            .get("key_size")
            .and_then(Json::as_u32)
            .ok_or_else(|| bad("area key_size is invalid"))?;
        Some(Luks2Keyslot {
            kdf: parse_kdf(kdf_json).map_err(|w| bad(&w))?,
            af_hash,
            af_stripes,
            area_encryption,
            area_key_size,
        })
    } else {
        None
    };
    Ok(Keyslot {
        id,
        type_name,
        key_size,
        priority,
        area_offset,
        area_size,
        luks2,
    })
}

fn parse_kdf(v: &Json) -> Result<Kdf, String> {
    let members = v.as_object().map_or(0, <[_]>::len);
    let kdf_type = nonempty_str(v, "type").ok_or("kdf has no type")?;
    let salt = || {
        v.get("salt")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("kdf has no salt".to_string())
            .and_then(|s| decode_base64(s).ok_or("kdf salt is not base64".to_string()))
    };
    // The member counts are cryptsetup's: leftovers of another KDF type
    // make the keyslot invalid.
    match kdf_type.as_str() {
        "pbkdf2" => {
            let hash = nonempty_str(v, "hash").ok_or("pbkdf2 has no hash")?;
            let iterations = v
                .get("iterations")
                .and_then(Json::as_u32)
                .ok_or("pbkdf2 iterations is invalid")?;
            if members != 4 {
                return Err(
                    "pbkdf2 kdf has other members than type, hash, iterations, salt".into(),
                );
            }
            Ok(Kdf::Pbkdf2 {
                hash,
                iterations,
                salt: salt()?,
            })
        }
        "argon2i" | "argon2id" => {
            let get = |k: &str| {
                v.get(k)
                    .and_then(Json::as_u32)
                    .ok_or(format!("{kdf_type} {k} is invalid"))
            };
            let (time, memory_kib, cpus) = (get("time")?, get("memory")?, get("cpus")?);
            if members != 5 {
                return Err(format!(
                    "{kdf_type} kdf has other members than type, time, memory, cpus, salt"
                ));
            }
            Ok(Kdf::Argon2 {
                variant: if kdf_type == "argon2i" {
                    Argon2Variant::Argon2i
                } else {
                    Argon2Variant::Argon2id
                },
                time,
                memory_kib,
                cpus,
                salt: salt()?,
            })
        }
        _ => Ok(Kdf::Other(kdf_type)),
    }
}

fn parse_digest(
    id: u32,
    v: &Json,
    keyslot_ids: &[u32],
    segment_ids: &[u32],
) -> Result<DigestEntry, String> {
    let type_name = nonempty_str(v, "type").ok_or(format!("digest {id} has no type"))?;
    let keyslots = id_list(v.get("keyslots"), keyslot_ids)
        .ok_or(format!("digest {id} has a bad keyslots list"))?;
    let segments = id_list(v.get("segments"), segment_ids)
        .ok_or(format!("digest {id} has a bad segments list"))?;
    // Checked when the digest is used, as cryptsetup does; a digest with
    // missing or undecodable fields verifies nothing.
    let pbkdf2 = (type_name == "pbkdf2")
        .then(|| {
            Some(Pbkdf2Digest {
                hash: nonempty_str(v, "hash")?,
                iterations: v.get("iterations").and_then(Json::as_u32)?,
                salt: decode_base64(v.get("salt")?.as_str()?)?,
                digest: decode_base64(v.get("digest")?.as_str()?)?,
            })
        })
        .flatten();
    Ok(DigestEntry {
        id,
        type_name,
        keyslots,
        segments,
        pbkdf2,
    })
}

fn parse_segment(id: u32, v: &Json) -> Result<Segment, String> {
    let bad = |what: &str| format!("segment {id}: {what}");
    let type_name = nonempty_str(v, "type").ok_or_else(|| bad("no type"))?;
    let offset = parse_u64_string(v.get("offset")).ok_or_else(|| bad("offset is invalid"))?;
    let size = match v.get("size").and_then(Json::as_str) {
        Some("dynamic") => None,
        Some(_) => Some(
            parse_u64_string(v.get("size"))
                .filter(|&n| n > 0)
                .ok_or_else(|| bad("size is invalid"))?,
        ),
        None => return Err(bad("no size")),
    };
    if !offset.is_multiple_of(512) || !size.unwrap_or(0).is_multiple_of(512) {
        return Err(bad("offset or size is not a multiple of 512"));
    }
    let flags = match v.get("flags") {
        None => Vec::new(),
        Some(f) => string_list(Some(f)).ok_or_else(|| bad("flags is not an array of strings"))?,
    };
    let crypt = if type_name == "crypt" {
        let iv_tweak =
            parse_u64_string(v.get("iv_tweak")).ok_or_else(|| bad("iv_tweak is invalid"))?;
        let encryption = nonempty_str(v, "encryption").ok_or_else(|| bad("no encryption"))?;
        let sector_size = v
            .get("sector_size")
            .and_then(Json::as_u32)
            .filter(|&s| s != 0 && s.is_multiple_of(512))
            .ok_or_else(|| bad("sector_size is invalid"))?;
        if !size.unwrap_or(0).is_multiple_of(u64::from(sector_size)) {
            return Err(bad("size is not a multiple of the sector size"));
        }
        let integrity = match v.get("integrity") {
            None => None,
            Some(i) => {
                let field = |k: &str| nonempty_str(i, k);
                let kind = field("type");
                if i.as_object().is_none()
                    || kind.is_none()
                    || field("journal_encryption").is_none()
                    || field("journal_integrity").is_none()
                {
                    return Err(bad("integrity object is invalid"));
                }
                kind
            }
        };
        Some(CryptSegment {
            iv_tweak,
            encryption,
            sector_size,
            integrity,
        })
    } else {
        None
    };
    Ok(Segment {
        id,
        type_name,
        offset,
        size,
        flags,
        crypt,
    })
}
