//! Writing LUKS2 headers, for targets evfs creates: a new header for a
//! volume key and passphrase, and the updates evfs needs later (keyslots,
//! tokens, its own mandatory requirement).
//!
//! Everything is computed in memory and returned as a [`Plan`]: keyslot
//! area writes first, then the primary copy, then the secondary, each copy
//! as cryptsetup's `hdr_write_disk` writes it (binary header with a zero
//! checksum, JSON area, binary header with the checksum), with a sync after
//! each copy, so that one copy is valid at every moment. Every update
//! raises `seqid` by one, as cryptsetup's `LUKS2_disk_hdr_write` does.
//!
//! The JSON evfs writes has the shape and member order of cryptsetup's
//! (`LUKS2_generate_hdr`, `luks2_keyslot_alloc`, `PBKDF2_digest_store`);
//! fields another tool stored are kept as they were.

use zeroize::Zeroizing;

use super::LuksKey;
use super::error::{LuksError, Result, invalid, unsupported};
use super::io::{Plan, Step};
use super::json::Json;
use super::keyslot::{
    ARGON2_MAX_MEMORY_KIB, ARGON2_MAX_THREADS, Argon2Variant, HashAlg, Kdf, SALT_LEN, STRIPES,
    SectorCipherKind, af_split,
};
use super::luks2::{BinHeader, CopyState, HEADER_SALT_LEN, LABEL_LEN, Luks2Header, checksum};
use super::metadata::{
    BIN_HEADER_LEN, MAX_KEYSLOTS_SIZE, MAX_OBJECTS, METADATA_SIZES, Metadata, encode_base64,
};
use super::{REQUIREMENT_INCOMPLETE, support};
use crate::crypto::Passphrase;

/// The data offset cryptsetup uses by default (`LUKS2_DEFAULT_HDR_SIZE`).
pub const DEFAULT_DATA_OFFSET: u64 = 16 << 20;
/// The metadata size (binary header + JSON area) cryptsetup uses.
pub const DEFAULT_METADATA_SIZE: u64 = 16 << 10;
/// PBKDF2 iterations of the volume key digest. cryptsetup benchmarks for
/// 125 ms; the digest checks a random key, so its cost protects nothing and
/// a fixed count near that time on current CPUs is kept instead.
pub const DEFAULT_DIGEST_ITERATIONS: u32 = 100_000;
/// cryptsetup's minimum PBKDF2 iterations (NIST SP 800-132).
pub const MIN_PBKDF2_ITERATIONS: u32 = 1000;
/// cryptsetup's minimum Argon2 time cost when it creates a keyslot.
pub const MIN_ARGON2_TIME: u32 = 4;
/// cryptsetup's hard minimum of Argon2 memory, KiB.
pub const MIN_ARGON2_MEMORY_KIB: u32 = 32;

/// Argon2id cost of a keyslot evfs creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes (LUKS2 "time").
    pub iterations: u32,
    /// Lanes (LUKS2 "cpus").
    pub parallel: u32,
}

impl Argon2Params {
    /// cryptsetup 2.6's compiled-in LUKS2 defaults without its benchmark:
    /// 1 GiB, 4 passes (its minimum), 4 threads.
    pub const CRYPTSETUP_DEFAULT: Argon2Params = Argon2Params {
        memory_kib: 1024 * 1024,
        iterations: 4,
        parallel: 4,
    };

    /// The limits cryptsetup enforces when it creates a keyslot.
    pub fn validate(self) -> Result<Argon2Params> {
        if self.parallel == 0 || self.parallel > ARGON2_MAX_THREADS {
            return Err(invalid(format!(
                "Argon2 threads {} out of range (1 to {ARGON2_MAX_THREADS})",
                self.parallel
            )));
        }
        if self.memory_kib < MIN_ARGON2_MEMORY_KIB
            || self.memory_kib > ARGON2_MAX_MEMORY_KIB
            || self.memory_kib < 8 * self.parallel
        {
            return Err(invalid(format!(
                "Argon2 memory {} KiB out of range ({MIN_ARGON2_MEMORY_KIB} KiB to 4 GiB, 8 KiB per thread)",
                self.memory_kib
            )));
        }
        if self.iterations < MIN_ARGON2_TIME {
            return Err(invalid(format!(
                "Argon2 time cost {} below cryptsetup's minimum {MIN_ARGON2_TIME}",
                self.iterations
            )));
        }
        Ok(self)
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Argon2Params::CRYPTSETUP_DEFAULT
    }
}

/// Everything a new LUKS2 header can be told; [`FormatOptions::default`] is
/// cryptsetup's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatOptions {
    /// 512, 1024, 2048 or 4096.
    pub sector_size: u32,
    /// Byte offset of the data (a multiple of 4096 and of the sector size).
    pub data_offset: u64,
    /// Bytes of each metadata copy, one of the sizes LUKS2 allows.
    pub metadata_size: u64,
    /// At most 47 bytes each.
    pub label: String,
    /// At most 47 bytes, as the label.
    pub subsystem: String,
    /// The volume UUID; random (version 4) when `None`.
    pub uuid: Option<[u8; 16]>,
    /// The Argon2id parameters of keyslot 0.
    pub kdf: Argon2Params,
    /// PBKDF2 iterations of the volume key digest (at least cryptsetup's
    /// minimum, 1000).
    pub digest_iterations: u32,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            sector_size: 4096,
            data_offset: DEFAULT_DATA_OFFSET,
            metadata_size: DEFAULT_METADATA_SIZE,
            label: String::new(),
            subsystem: String::new(),
            uuid: None,
            kdf: Argon2Params::CRYPTSETUP_DEFAULT,
            digest_iterations: DEFAULT_DIGEST_ITERATIONS,
        }
    }
}

/// A source of random bytes (the OS's, or a fixed one for worked examples).
pub(crate) type Rng<'a> = &'a mut dyn FnMut(&mut [u8]) -> Result<()>;

fn os_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf)
        .map_err(|e| LuksError::Io(std::io::Error::other(format!("no randomness: {e}"))))
}

/// Bytes a keyslot area takes for a key (`get_area_size`: AF material
/// rounded up to 4096).
fn area_size(key_len: usize) -> u64 {
    ((key_len * STRIPES) as u64).div_ceil(4096) * 4096
}

fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn check_text(what: &str, s: &str) -> Result<()> {
    if s.len() >= LABEL_LEN || s.bytes().any(|b| b == 0) {
        return Err(invalid(format!(
            "the {what} must be at most {} bytes without zero bytes",
            LABEL_LEN - 1
        )));
    }
    Ok(())
}

/// A new LUKS2 header for `key` (32 or 64 bytes, AES-XTS) with one
/// passphrase keyslot (0), and the plan that writes it: the keyslots area
/// filled with random data, the keyslot, both header copies.
pub fn format(
    key: &LuksKey,
    secret: &Passphrase,
    opts: &FormatOptions,
) -> Result<(Luks2Header, Plan)> {
    format_with(key, secret, opts, &mut os_random)
}

/// [`format()`] with a mandatory requirement of evfs's own (such as
/// [`REQUIREMENT_INCOMPLETE`]) in both header copies from their first
/// write: the keyslots area and keyslot first, then the header copies with
/// the requirement (seqid 2), so that no moment shows the new header
/// without it.
pub fn format_with_requirement(
    key: &LuksKey,
    secret: &Passphrase,
    opts: &FormatOptions,
    requirement: &str,
) -> Result<(Luks2Header, Plan)> {
    let (mut header, first) = format(key, secret, opts)?;
    let second = header.add_requirement(requirement)?;
    let copies_end = 2 * opts.metadata_size;
    let mut plan = Plan::new();
    for step in first.into_steps() {
        let keep = match &step {
            Step::Write { offset, .. } | Step::Random { offset, .. } => *offset >= copies_end,
            Step::Sync => true,
        };
        if keep {
            plan.push(step);
        }
    }
    for step in second.into_steps() {
        plan.push(step);
    }
    Ok((header, plan))
}

pub(crate) fn format_with(
    key: &LuksKey,
    secret: &Passphrase,
    opts: &FormatOptions,
    rng: Rng<'_>,
) -> Result<(Luks2Header, Plan)> {
    let cipher = SectorCipherKind::AesXtsPlain64;
    if !cipher.key_len_ok(key.len()) {
        return Err(invalid(format!(
            "a {}-byte volume key: aes-xts-plain64 takes 32 or 64 bytes",
            key.len()
        )));
    }
    if !matches!(opts.sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(invalid(format!(
            "sector size {} (512, 1024, 2048 or 4096)",
            opts.sector_size
        )));
    }
    let md = opts.metadata_size;
    if !METADATA_SIZES.contains(&md) {
        return Err(invalid(format!(
            "metadata size {md} is not one LUKS2 allows"
        )));
    }
    check_text("label", &opts.label)?;
    check_text("subsystem", &opts.subsystem)?;
    let kdf = opts.kdf.validate()?;
    if opts.digest_iterations < MIN_PBKDF2_ITERATIONS {
        return Err(invalid(format!(
            "digest iterations {} below {MIN_PBKDF2_ITERATIONS}",
            opts.digest_iterations
        )));
    }
    let first_area = 2 * md;
    let needed = first_area + area_size(key.len());
    if !opts.data_offset.is_multiple_of(4096)
        || !opts.data_offset.is_multiple_of(u64::from(opts.sector_size))
        || opts.data_offset < needed
    {
        return Err(invalid(format!(
            "data offset {} must be a multiple of 4096 and of the sector size, and at least {needed}",
            opts.data_offset
        )));
    }
    // cryptsetup's LUKS2_set_keyslots_size: everything up to the data,
    // at most 128 MiB.
    let keyslots_size = (opts.data_offset - first_area).min(MAX_KEYSLOTS_SIZE);

    let uuid = match opts.uuid {
        Some(u) => u,
        None => {
            let mut u = [0u8; 16];
            rng(&mut u)?;
            u[6] = (u[6] & 0x0f) | 0x40;
            u[8] = (u[8] & 0x3f) | 0x80;
            u
        }
    };
    let mut salts = [[0u8; HEADER_SALT_LEN]; 2];
    rng(&mut salts[0])?;
    rng(&mut salts[1])?;

    let (slot_json, material) = new_keyslot(key, secret, &kdf, first_area, rng)?;
    let digest = new_digest(key, opts.digest_iterations, 0, 0, rng)?;
    let segment = Json::Object(vec![
        ("type".into(), Json::str("crypt")),
        ("offset".into(), Json::u64_string(opts.data_offset)),
        ("size".into(), Json::str("dynamic")),
        ("iv_tweak".into(), Json::u64_string(0)),
        ("encryption".into(), Json::str(cipher.name())),
        ("sector_size".into(), Json::u64(opts.sector_size.into())),
    ]);
    let json = Json::Object(vec![
        (
            "keyslots".into(),
            Json::Object(vec![("0".into(), slot_json)]),
        ),
        ("tokens".into(), Json::Object(vec![])),
        ("segments".into(), Json::Object(vec![("0".into(), segment)])),
        ("digests".into(), Json::Object(vec![("0".into(), digest)])),
        (
            "config".into(),
            Json::Object(vec![
                ("json_size".into(), Json::u64_string(md - BIN_HEADER_LEN)),
                ("keyslots_size".into(), Json::u64_string(keyslots_size)),
            ]),
        ),
    ]);
    let meta = Metadata::from_json(&json, md)
        .map_err(|e| invalid(format!("internal: the new header does not validate: {e}")))?;
    let mut header = Luks2Header {
        bin: BinHeader {
            secondary: false,
            hdr_size: md,
            // The first write raises it to 1.
            seqid: 0,
            label: opts.label.as_bytes().to_vec(),
            checksum_alg: "sha256".into(),
            salt: salts[0],
            uuid: uuid_text(&uuid).into_bytes(),
            subsystem: opts.subsystem.as_bytes().to_vec(),
            hdr_offset: 0,
        },
        salts: [Some(salts[0]), Some(salts[1])],
        json: json.clone(),
        meta,
        copies: [
            CopyState::Bad("not written yet".into()),
            CopyState::Bad("not written yet".into()),
        ],
    };
    let mut plan = Plan::new();
    plan.push(Step::Random {
        offset: first_area,
        len: keyslots_size,
    });
    plan.push(Step::Write {
        offset: first_area,
        bytes: material.to_vec(),
    });
    plan.push(Step::Sync);
    let plan = header.commit(json, plan, rng)?;
    Ok((header, plan))
}

/// A `luks2` keyslot object for `key` with an area at `area_offset`, and
/// the encrypted AF material to write there.
fn new_keyslot(
    key: &LuksKey,
    secret: &Passphrase,
    kdf: &Argon2Params,
    area_offset: u64,
    rng: Rng<'_>,
) -> Result<(Json, Zeroizing<Vec<u8>>)> {
    let cipher = SectorCipherKind::AesXtsPlain64;
    let af_hash = HashAlg::Sha256;
    let mut salt = [0u8; SALT_LEN];
    rng(&mut salt)?;
    let spec = Kdf::Argon2 {
        variant: Argon2Variant::Argon2id,
        time: kdf.iterations,
        memory_kib: kdf.memory_kib,
        cpus: kdf.parallel,
        salt: salt.to_vec(),
    };
    // The area key has the volume key's length, as cryptsetup picks for
    // aes-xts-plain64 keyslots of an aes-xts-plain64 volume.
    let mut derived = Zeroizing::new(vec![0u8; key.len()]);
    spec.derive(secret.expose(), &mut derived)?;
    let mut material = af_split(key.expose(), STRIPES, af_hash, rng)?;
    cipher.encrypt_area(&derived, &mut material)?;
    let key_size = Json::u64(key.len() as u64);
    let slot = Json::Object(vec![
        ("type".into(), Json::str("luks2")),
        ("key_size".into(), key_size.clone()),
        (
            "af".into(),
            Json::Object(vec![
                ("type".into(), Json::str("luks1")),
                ("stripes".into(), Json::u64(STRIPES as u64)),
                ("hash".into(), Json::str(af_hash.name())),
            ]),
        ),
        (
            "area".into(),
            Json::Object(vec![
                ("type".into(), Json::str("raw")),
                ("offset".into(), Json::u64_string(area_offset)),
                ("size".into(), Json::u64_string(area_size(key.len()))),
                ("encryption".into(), Json::str(cipher.name())),
                ("key_size".into(), key_size),
            ]),
        ),
        (
            "kdf".into(),
            Json::Object(vec![
                ("type".into(), Json::str(Argon2Variant::Argon2id.name())),
                ("time".into(), Json::u64(kdf.iterations.into())),
                ("memory".into(), Json::u64(kdf.memory_kib.into())),
                ("cpus".into(), Json::u64(kdf.parallel.into())),
                ("salt".into(), Json::str(encode_base64(&salt))),
            ]),
        ),
    ]);
    Ok((slot, material))
}

/// A `pbkdf2` (SHA-256) digest of `key` for keyslot `slot` and segment
/// `segment`.
fn new_digest(
    key: &LuksKey,
    iterations: u32,
    slot: u32,
    segment: u32,
    rng: Rng<'_>,
) -> Result<Json> {
    let mut salt = [0u8; SALT_LEN];
    rng(&mut salt)?;
    let hash = HashAlg::Sha256;
    let mut digest = Zeroizing::new(vec![0u8; hash.size()]);
    hash.pbkdf2(key.expose(), &salt, iterations, &mut digest);
    Ok(Json::Object(vec![
        ("type".into(), Json::str("pbkdf2")),
        (
            "keyslots".into(),
            Json::Array(vec![Json::str(slot.to_string())]),
        ),
        (
            "segments".into(),
            Json::Array(vec![Json::str(segment.to_string())]),
        ),
        ("hash".into(), Json::str(hash.name())),
        ("iterations".into(), Json::u64(iterations.into())),
        ("salt".into(), Json::str(encode_base64(&salt))),
        ("digest".into(), Json::str(encode_base64(&digest))),
    ]))
}

/// Requirements cryptsetup knows: evfs never sets or clears them.
fn cryptsetup_requirement(name: &str) -> bool {
    super::metadata::is_online_reencrypt(name)
        || name.starts_with("online-reencrypt")
        || matches!(
            name,
            "offline-reencrypt" | "opal" | "opal-v2" | "inline-hw-tags"
        )
}

impl Luks2Header {
    /// The two copies (primary, secondary) as the next write would store
    /// them, checksums included; for inspection and worked examples.
    pub fn encode_copies(&self) -> Result<[Vec<u8>; 2]> {
        let [p, s] = self.copy_parts(self.bin.seqid, &self.salts_or_zero())?;
        Ok([[&p.1[..], &p.2[..]].concat(), [&s.1[..], &s.2[..]].concat()])
    }

    fn salts_or_zero(&self) -> [[u8; HEADER_SALT_LEN]; 2] {
        [
            self.salts[0].unwrap_or([0; HEADER_SALT_LEN]),
            self.salts[1].unwrap_or([0; HEADER_SALT_LEN]),
        ]
    }

    /// For each copy: (binary header with zero checksum, binary header with
    /// checksum, JSON area).
    #[allow(clippy::type_complexity)]
    fn copy_parts(
        &self,
        seqid: u64,
        salts: &[[u8; HEADER_SALT_LEN]; 2],
    ) -> Result<[(Vec<u8>, Vec<u8>, Vec<u8>); 2]> {
        let text = self.json.to_text();
        let area_len = (self.bin.hdr_size - BIN_HEADER_LEN) as usize;
        // The JSON is stored as a C string: one zero byte at least.
        if text.len() >= area_len {
            return Err(invalid(format!(
                "the header's JSON ({} bytes) does not fit its {area_len}-byte area",
                text.len()
            )));
        }
        let mut area = vec![0u8; area_len];
        area[..text.len()].copy_from_slice(text.as_bytes());
        let make = |secondary: bool| -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
            let bin = BinHeader {
                secondary,
                seqid,
                salt: salts[usize::from(secondary)],
                hdr_offset: if secondary { self.bin.hdr_size } else { 0 },
                ..self.bin.clone()
            };
            let zero = bin.encode();
            let sum = checksum(&bin.checksum_alg, &zero[..], &area)
                .ok_or_else(|| unsupported(format!("checksum algorithm {:?}", bin.checksum_alg)))?;
            let mut with = zero.clone();
            with[448..448 + sum.len()].copy_from_slice(&sum);
            Ok((zero.to_vec(), with.to_vec(), area.clone()))
        };
        Ok([make(false)?, make(true)?])
    }

    /// Make `json` the header's metadata with the next seqid, and append
    /// the header writes to `plan`.
    fn commit(&mut self, json: Json, mut plan: Plan, rng: Rng<'_>) -> Result<Plan> {
        let meta = Metadata::from_json(&json, self.bin.hdr_size)
            .map_err(|e| invalid(format!("the updated header would not be valid: {e}")))?;
        let mut salts = [[0u8; HEADER_SALT_LEN]; 2];
        for (i, s) in self.salts.iter().enumerate() {
            match s {
                Some(v) => salts[i] = *v,
                // A copy that was unreadable gets a fresh salt, as
                // cryptsetup's recovery does.
                None => rng(&mut salts[i])?,
            }
        }
        let seqid = self
            .bin
            .seqid
            .checked_add(1)
            .ok_or_else(|| invalid("seqid overflow"))?;
        let next = Luks2Header {
            bin: BinHeader {
                secondary: false,
                seqid,
                salt: salts[0],
                hdr_offset: 0,
                ..self.bin.clone()
            },
            salts: [Some(salts[0]), Some(salts[1])],
            json,
            meta,
            copies: [CopyState::Valid { seqid }, CopyState::Valid { seqid }],
        };
        let parts = next.copy_parts(seqid, &salts)?;
        if self.copies.iter().any(CopyState::is_valid) {
            plan.made_from(&self.uuid(), self.bin.seqid);
        }
        for (i, (zero, with, area)) in parts.into_iter().enumerate() {
            let offset = if i == 0 { 0 } else { next.bin.hdr_size };
            plan.push(Step::Write {
                offset,
                bytes: zero,
            });
            plan.push(Step::Write {
                offset: offset + BIN_HEADER_LEN,
                bytes: area,
            });
            plan.push(Step::Write {
                offset,
                bytes: with,
            });
            plan.push(Step::Sync);
        }
        *self = next;
        Ok(plan)
    }

    /// Test hook: commit `json` (and the binary header as changed).
    #[cfg(test)]
    pub(crate) fn commit_for_test(&mut self, json: Json) -> Plan {
        self.commit(json, Plan::new(), &mut os_random)
            .expect("a valid test update")
    }

    /// Updates are refused on headers with requirements evfs does not own
    /// (cryptsetup treats those as read-only too).
    fn check_writable(&self) -> Result<()> {
        let foreign: Vec<&str> = self
            .requirements()
            .iter()
            .map(String::as_str)
            .filter(|r| *r != REQUIREMENT_INCOMPLETE)
            .collect();
        if !foreign.is_empty() {
            return Err(unsupported(format!(
                "the header has mandatory requirement(s) {} and is read-only",
                foreign.join(", ")
            )));
        }
        Ok(())
    }

    fn section_mut<'a>(json: &'a mut Json, name: &str) -> Result<&'a mut Vec<(String, Json)>> {
        match json.get_mut(name) {
            Some(Json::Object(m)) => Ok(m),
            _ => Err(invalid(format!("the header has no {name} object"))),
        }
    }

    fn free_id(taken: &[u32], wanted: Option<u32>, what: &str) -> Result<u32> {
        match wanted {
            Some(id) if id >= MAX_OBJECTS => Err(invalid(format!(
                "{what} {id} out of range (0 to {})",
                MAX_OBJECTS - 1
            ))),
            Some(id) => Ok(id),
            None => (0..MAX_OBJECTS)
                .find(|i| !taken.contains(i))
                .ok_or_else(|| invalid(format!("no free {what} (at most {MAX_OBJECTS})"))),
        }
    }

    /// Add a keyslot opening with `secret` for `key` (which must be this
    /// volume's key), Argon2id with `kdf`, at `keyslot` or the lowest free
    /// id. Returns the keyslot id and the plan (area first, then headers).
    pub fn add_keyslot(
        &mut self,
        key: &LuksKey,
        secret: &Passphrase,
        kdf: &Argon2Params,
        keyslot: Option<u32>,
    ) -> Result<(u32, Plan)> {
        self.add_keyslot_with(key, secret, kdf, keyslot, &mut os_random)
    }

    pub(crate) fn add_keyslot_with(
        &mut self,
        key: &LuksKey,
        secret: &Passphrase,
        kdf: &Argon2Params,
        keyslot: Option<u32>,
        rng: Rng<'_>,
    ) -> Result<(u32, Plan)> {
        self.check_writable()?;
        let kdf = kdf.validate()?;
        if !self.verify_key(key)? {
            return Err(invalid("this key is not the volume key of this header"));
        }
        let ids: Vec<u32> = self.meta.keyslots.iter().map(|k| k.id).collect();
        let id = Self::free_id(&ids, keyslot, "keyslot")?;
        if ids.contains(&id) {
            return Err(invalid(format!("keyslot {id} is in use")));
        }
        let offset = self.find_area_gap(area_size(key.len()))?;
        let (slot_json, material) = new_keyslot(key, secret, &kdf, offset, rng)?;

        let mut json = self.json.clone();
        Self::section_mut(&mut json, "keyslots")?.push((id.to_string(), slot_json));
        // Bind it to the digest of the data segment, as cryptsetup's
        // LUKS2_digest_assign does.
        let digest_id = self
            .meta
            .digests
            .iter()
            .find(|d| !d.segments.is_empty() && d.pbkdf2.is_some())
            .map(|d| d.id)
            .ok_or_else(|| unsupported("no pbkdf2 digest of the data segment"))?;
        let digest = Self::section_mut(&mut json, "digests")?
            .iter_mut()
            .find(|(k, _)| *k == digest_id.to_string())
            .map(|(_, v)| v)
            .ok_or_else(|| invalid("digest vanished"))?;
        if let Some(Json::Array(list)) = digest.get_mut("keyslots") {
            list.push(Json::str(id.to_string()));
        }
        let mut plan = Plan::new();
        plan.push(Step::Write {
            offset,
            bytes: material.to_vec(),
        });
        plan.push(Step::Sync);
        let plan = self.commit(json, plan, rng)?;
        Ok((id, plan))
    }

    /// cryptsetup's `LUKS2_find_area_gap`: the first gap, from the end of
    /// the second metadata copy, between the areas in use.
    fn find_area_gap(&self, length: u64) -> Result<u64> {
        let mut areas: Vec<(u64, u64)> = self
            .meta
            .keyslots
            .iter()
            .map(|k| (k.area_offset, k.area_size))
            .collect();
        areas.sort_unstable();
        let mut offset = 2 * self.bin.hdr_size;
        for (start, size) in areas {
            if offset < start && offset + length <= start {
                break;
            }
            offset = offset.max(start + size);
        }
        if offset + length > self.meta.areas_end() {
            return Err(invalid("no space left in the keyslots area"));
        }
        Ok(offset)
    }

    /// Remove a keyslot: its area overwritten with random data, then the
    /// keyslot and every reference to it dropped from the JSON.
    pub fn remove_keyslot(&mut self, keyslot: u32) -> Result<Plan> {
        self.check_writable()?;
        let k = self
            .meta
            .keyslot(keyslot)
            .ok_or_else(|| LuksError::NoKeyslot(format!("keyslot {keyslot} is not active")))?
            .clone();
        let name = keyslot.to_string();
        let mut json = self.json.clone();
        Self::section_mut(&mut json, "keyslots")?.retain(|(id, _)| *id != name);
        for section in ["digests", "tokens"] {
            for (_, obj) in Self::section_mut(&mut json, section)?.iter_mut() {
                if let Some(Json::Array(list)) = obj.get_mut("keyslots") {
                    list.retain(|v| v.as_str() != Some(name.as_str()));
                }
            }
        }
        let mut plan = Plan::new();
        plan.push(Step::Random {
            offset: k.area_offset,
            len: k.area_size,
        });
        plan.push(Step::Sync);
        let plan = self.commit(json, plan, &mut os_random)?;
        Ok(plan)
    }

    /// Add or replace a token: `value` is a JSON object with a `type` of
    /// its own (not `luks2-…`, which cryptsetup reserves) and optionally
    /// `keyslots` (names of existing keyslots; `[]` when absent). At
    /// `token`, or the lowest free id. Returns the id and the plan.
    pub fn set_token(
        &mut self,
        token: Option<u32>,
        value: &serde_json::Value,
    ) -> Result<(u32, Plan)> {
        self.check_writable()?;
        let Some(obj) = value.as_object() else {
            return Err(invalid("a token must be a JSON object"));
        };
        match obj.get("type").and_then(|t| t.as_str()) {
            Some(t) if !t.is_empty() && !t.starts_with("luks2-") => {}
            _ => {
                return Err(invalid(
                    "a token needs a non-empty \"type\" that does not start with luks2-",
                ));
            }
        }
        let mut tree = Json::from(value);
        if tree.get("keyslots").is_none() {
            tree.set("keyslots", Json::Array(vec![]));
        }
        let ids: Vec<u32> = self.meta.tokens.iter().map(|t| t.id).collect();
        let id = Self::free_id(&ids, token, "token")?;
        let name = id.to_string();
        let mut json = self.json.clone();
        let tokens = Self::section_mut(&mut json, "tokens")?;
        match tokens.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = tree,
            None => tokens.push((name, tree)),
        }
        let plan = self.commit(json, Plan::new(), &mut os_random)?;
        Ok((id, plan))
    }

    /// Remove a token.
    pub fn remove_token(&mut self, token: u32) -> Result<Plan> {
        self.check_writable()?;
        if self.meta.token(token).is_none() {
            return Err(invalid(format!("token {token} does not exist")));
        }
        let name = token.to_string();
        let mut json = self.json.clone();
        Self::section_mut(&mut json, "tokens")?.retain(|(k, _)| *k != name);
        let plan = self.commit(json, Plan::new(), &mut os_random)?;
        Ok(plan)
    }

    /// Add a mandatory requirement of evfs's own (such as
    /// [`REQUIREMENT_INCOMPLETE`]): cryptsetup then refuses to activate the
    /// volume or change its header. An empty plan when it is already there.
    pub fn add_requirement(&mut self, name: &str) -> Result<Plan> {
        self.check_writable()?;
        check_requirement_name(name)?;
        if self.requirements().iter().any(|r| r == name) {
            return Ok(Plan::new());
        }
        let mut json = self.json.clone();
        let config = json
            .get_mut("config")
            .ok_or_else(|| invalid("the header has no config object"))?;
        if config.get("requirements").is_none() {
            config.set("requirements", Json::Object(vec![]));
        }
        let reqs = config
            .get_mut("requirements")
            .ok_or_else(|| invalid("requirements vanished"))?;
        if reqs.get("mandatory").is_none() {
            reqs.set("mandatory", Json::Array(vec![]));
        }
        if let Some(Json::Array(list)) = reqs.get_mut("mandatory") {
            list.push(Json::str(name));
        }
        let plan = self.commit(json, Plan::new(), &mut os_random)?;
        Ok(plan)
    }

    /// Remove a requirement added by [`Luks2Header::add_requirement`]; the
    /// `requirements` object goes when it is empty, as cryptsetup does. An
    /// empty plan when it was not there.
    pub fn remove_requirement(&mut self, name: &str) -> Result<Plan> {
        check_requirement_name(name)?;
        if !self.requirements().iter().any(|r| r == name) {
            return Ok(Plan::new());
        }
        // Only this requirement may stand between evfs and the header.
        let others: Vec<&String> = self
            .requirements()
            .iter()
            .filter(|r| *r != name && *r != REQUIREMENT_INCOMPLETE)
            .collect();
        if !others.is_empty() {
            return Err(unsupported(format!(
                "the header has other mandatory requirements ({}) and is read-only",
                others
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut json = self.json.clone();
        let config = json
            .get_mut("config")
            .ok_or_else(|| invalid("the header has no config object"))?;
        let mut empty = false;
        if let Some(reqs) = config.get_mut("requirements")
            && let Some(Json::Array(list)) = reqs.get_mut("mandatory")
        {
            list.retain(|v| v.as_str() != Some(name));
            empty = list.is_empty();
        }
        if empty {
            config.remove("requirements");
        }
        let plan = self.commit(json, Plan::new(), &mut os_random)?;
        Ok(plan)
    }

    /// Why evfs cannot read this volume's data (empty when it can).
    pub fn unsupported_reasons(&self) -> Vec<String> {
        support::luks2_reasons(self)
    }
}

fn check_requirement_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!("requirement name {name:?}")));
    }
    if cryptsetup_requirement(name) {
        return Err(invalid(format!(
            "{name} is cryptsetup's requirement; evfs only sets its own"
        )));
    }
    Ok(())
}
