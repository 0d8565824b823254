//! The EMD byte layout: one parser and one writer, in a matched pair.
//!
//! The layout is specified in `formats/EMD.md`; the constants below are its
//! offsets. A copy is exactly [`EMD_SIZE`] bytes, little endian, and ends with a
//! MAC (keyed from the volume key, over everything a key holder sets) and a
//! checksum (plain BLAKE3 over everything before it). The parser trusts
//! nothing: every length is bounded by the fixed layout, every reserved byte
//! must be zero, and no input can make it panic or allocate more than a copy.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crypto::wrap::WRAPPED_LEN;
use crate::crypto::{Cipher, VolumeKey};
use crate::keys::KeyId;

/// Bytes of one EMD copy.
pub const EMD_SIZE: usize = 16384;
/// First bytes of every copy.
pub const MAGIC: &[u8; 8] = b"EVFS-EMD";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Key slots in a copy.
pub const MAX_SLOTS: usize = 32;
/// Recovery slots allowed (pseudo-user `evfs`).
pub const MAX_RECOVERY: usize = 2;
/// Longest label, in bytes of UTF-8.
pub const LABEL_MAX: usize = 64;
/// Largest end of the data area (offset + size): far beyond any device, and
/// low enough that the layout's sums (the tail reserve after the data, file
/// offsets, which are signed) can never overflow, whatever a hostile EMD says.
pub const MAX_DATA_END: u64 = 1 << 62;

const SLOT_SIZE: usize = 256;
const SLOTS_AT: usize = 512;
const ID_FIELD: usize = 64;
const MAC_AT: usize = EMD_SIZE - 64;
const CHECKSUM_AT: usize = EMD_SIZE - 32;
/// Start of the authenticated body; bytes 0..16 (magic, version, size) are authenticated too.
const BODY_AT: usize = 128;

/// Role of a key slot (EVFS permission model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    User,
    Recovery,
}

impl Role {
    fn code(self) -> u8 {
        match self {
            Role::Owner => 1,
            Role::User => 2,
            Role::Recovery => 3,
        }
    }

    fn from_code(code: u8) -> Option<Role> {
        match code {
            1 => Some(Role::Owner),
            2 => Some(Role::User),
            3 => Some(Role::Recovery),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::User => "user",
            Role::Recovery => "recovery",
        }
    }
}

/// Whether the data area may be decrypted (EVFS enable/disable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Enabled,
    Disabled,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Enabled => "enabled",
            State::Disabled => "disabled",
        }
    }
}

/// A point in time, seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub secs: u64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    /// RFC 3339 in UTC, with milliseconds.
    pub fn rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::new(self.secs, self.nanos);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// One key slot: who, with which public key, and the volume key wrapped to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub role: Role,
    pub id: KeyId,
    pub public: [u8; 32],
    pub wrapped: [u8; WRAPPED_LEN],
}

/// Where the data of the last backup written into this volume came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    pub source_uuid: [u8; 16],
    pub started: Timestamp,
    pub finished: Timestamp,
    pub bytes: u64,
    /// BLAKE3 of the plaintext; absent for raw clones, whose plaintext was never seen.
    pub plaintext_blake3: Option<[u8; 32]>,
}

/// Progress of a backup into this volume, so that `--resume` can continue it.
/// Outside the MAC: a raw backup, which has no key, must be able to keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the backup run; a resumed run keeps it.
    pub run_id: [u8; 16],
    pub source_uuid: [u8; 16],
    /// Data bytes from offset 0 that are written and synced: a resume starts here.
    pub bytes_done: u64,
    pub total: u64,
    /// The source's EMD generation when the run began: a source written to
    /// since (its generation moved) is not resumed from.
    pub source_generation: u64,
}

/// One parsed EMD copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emd {
    // Mutable header: changed without the volume key (dirty bit reset, repair).
    pub generation: u64,
    pub dirty: bool,
    pub checkpoint: Option<Checkpoint>,
    // Authenticated body: changed only by a key holder, who re-seals the MAC.
    pub uuid: [u8; 16],
    pub created: u64,
    pub cipher: Cipher,
    pub state: State,
    pub sector_size: u32,
    pub data_offset: u64,
    pub data_size: u64,
    pub label: String,
    pub provenance: Option<Provenance>,
    pub slots: Vec<Slot>,
    pub mac: [u8; 32],
}

/// Why bytes are not a valid EMD copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmdError {
    /// Not an EMD at all (no magic).
    NoMagic,
    /// An EMD of a version this build does not read.
    Version(u16),
    /// The checksum does not match: damaged or partly written.
    Checksum,
    /// A field out of its allowed range, with the field's name.
    Field(&'static str),
}

impl fmt::Display for EmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmdError::NoMagic => write!(f, "no EMD magic"),
            EmdError::Version(v) => write!(f, "EMD format version {v} is not supported"),
            EmdError::Checksum => write!(f, "checksum mismatch"),
            EmdError::Field(name) => write!(f, "invalid field {name}"),
        }
    }
}

impl Emd {
    /// Encode this copy, MAC as stored and a fresh checksum.
    pub fn encode(&self) -> Box<[u8; EMD_SIZE]> {
        let mut b = self.encode_unsealed();
        b[MAC_AT..CHECKSUM_AT].copy_from_slice(&self.mac);
        let sum = blake3::hash(&b[..CHECKSUM_AT]);
        b[CHECKSUM_AT..].copy_from_slice(sum.as_bytes());
        b
    }

    /// Recompute the MAC with `key`; call after any change to the body.
    pub fn seal(&mut self, key: &VolumeKey) {
        self.mac = self.compute_mac(key);
    }

    /// Whether the stored MAC matches `key` (constant time).
    pub fn mac_ok(&self, key: &VolumeKey) -> bool {
        blake3::Hash::from(self.compute_mac(key)) == blake3::Hash::from(self.mac)
    }

    fn compute_mac(&self, key: &VolumeKey) -> [u8; 32] {
        let b = self.encode_unsealed();
        let mut h = key.emd_mac_key().hasher();
        h.update(&b[..16]);
        h.update(&b[BODY_AT..MAC_AT]);
        *h.finalize().as_bytes()
    }

    fn encode_unsealed(&self) -> Box<[u8; EMD_SIZE]> {
        let mut b = Box::new([0u8; EMD_SIZE]);
        b[0..8].copy_from_slice(MAGIC);
        put16(&mut b[..], 8, VERSION);
        put32(&mut b[..], 12, EMD_SIZE as u32);
        put64(&mut b[..], 16, self.generation);
        b[24] = u8::from(self.dirty);
        if let Some(c) = &self.checkpoint {
            b[32] = 1;
            b[40..56].copy_from_slice(&c.run_id);
            b[56..72].copy_from_slice(&c.source_uuid);
            put64(&mut b[..], 72, c.bytes_done);
            put64(&mut b[..], 80, c.total);
            put64(&mut b[..], 88, c.source_generation);
        }
        b[128..144].copy_from_slice(&self.uuid);
        put64(&mut b[..], 144, self.created);
        b[152] = self.cipher.code();
        b[153] = match self.state {
            State::Disabled => 0,
            State::Enabled => 1,
        };
        put32(&mut b[..], 156, self.sector_size);
        put64(&mut b[..], 160, self.data_offset);
        put64(&mut b[..], 168, self.data_size);
        let label = self.label.as_bytes();
        let n = label.len().min(LABEL_MAX);
        b[176..176 + n].copy_from_slice(&label[..n]);
        if let Some(p) = &self.provenance {
            b[256] = 1;
            b[257] = u8::from(p.plaintext_blake3.is_some());
            b[264..280].copy_from_slice(&p.source_uuid);
            put64(&mut b[..], 280, p.started.secs);
            put32(&mut b[..], 288, p.started.nanos);
            put64(&mut b[..], 296, p.finished.secs);
            put32(&mut b[..], 304, p.finished.nanos);
            put64(&mut b[..], 312, p.bytes);
            if let Some(d) = &p.plaintext_blake3 {
                b[320..352].copy_from_slice(d);
            }
        }
        for (i, s) in self.slots.iter().take(MAX_SLOTS).enumerate() {
            let at = SLOTS_AT + i * SLOT_SIZE;
            let id = s.id.as_str().as_bytes();
            b[at] = s.role.code();
            b[at + 1] = id.len() as u8;
            b[at + 2..at + 2 + id.len()].copy_from_slice(id);
            b[at + 66..at + 98].copy_from_slice(&s.public);
            b[at + 98..at + 98 + WRAPPED_LEN].copy_from_slice(&s.wrapped);
        }
        b
    }

    /// Parse one copy. Checks magic, version, checksum and every field; the MAC
    /// needs the volume key and is checked at unlock ([`Emd::mac_ok`]).
    pub fn parse(b: &[u8]) -> Result<Emd, EmdError> {
        if b.len() < EMD_SIZE || &b[0..8] != MAGIC {
            return Err(EmdError::NoMagic);
        }
        let b = &b[..EMD_SIZE];
        let version = get16(b, 8);
        if version != VERSION {
            return Err(EmdError::Version(version));
        }
        if blake3::hash(&b[..CHECKSUM_AT]) != blake3::Hash::from(array32(b, CHECKSUM_AT)) {
            return Err(EmdError::Checksum);
        }
        zero(b, 10..12, "reserved")?;
        if get32(b, 12) as usize != EMD_SIZE {
            return Err(EmdError::Field("size"));
        }
        let dirty = match b[24] {
            0 => false,
            1 => true,
            _ => return Err(EmdError::Field("dirty")),
        };
        zero(b, 25..32, "reserved")?;
        let checkpoint = match b[32] {
            0 => {
                zero(b, 33..96, "checkpoint")?;
                None
            }
            1 => {
                zero(b, 33..40, "checkpoint")?;
                let c = Checkpoint {
                    run_id: array16(b, 40),
                    source_uuid: array16(b, 56),
                    bytes_done: get64(b, 72),
                    total: get64(b, 80),
                    source_generation: get64(b, 88),
                };
                if c.bytes_done > c.total {
                    return Err(EmdError::Field("checkpoint"));
                }
                Some(c)
            }
            _ => return Err(EmdError::Field("checkpoint")),
        };
        zero(b, 96..128, "reserved")?;

        let cipher = Cipher::from_code(b[152]).ok_or(EmdError::Field("cipher"))?;
        let state = match b[153] {
            0 => State::Disabled,
            1 => State::Enabled,
            _ => return Err(EmdError::Field("state")),
        };
        zero(b, 154..156, "reserved")?;
        let sector_size = get32(b, 156);
        if sector_size != 512 && sector_size != 4096 {
            return Err(EmdError::Field("sector_size"));
        }
        let data_offset = get64(b, 160);
        let data_size = get64(b, 168);
        let ss = u64::from(sector_size);
        if data_offset < EMD_SIZE as u64 || !data_offset.is_multiple_of(ss) {
            return Err(EmdError::Field("data_offset"));
        }
        if data_size == 0
            || !data_size.is_multiple_of(ss)
            || data_offset
                .checked_add(data_size)
                .is_none_or(|end| end > MAX_DATA_END)
        {
            return Err(EmdError::Field("data_size"));
        }
        let label_field = &b[176..176 + LABEL_MAX];
        let label_len = label_field
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(LABEL_MAX);
        zero(b, 176 + label_len..176 + LABEL_MAX, "label")?;
        let label = std::str::from_utf8(&label_field[..label_len])
            .map_err(|_| EmdError::Field("label"))?
            .to_string();
        zero(b, 240..256, "reserved")?;

        let provenance = match b[256] {
            0 => {
                zero(b, 257..384, "provenance")?;
                None
            }
            1 => {
                zero(b, 258..264, "provenance")?;
                zero(b, 292..296, "provenance")?;
                zero(b, 308..312, "provenance")?;
                zero(b, 352..384, "provenance")?;
                let started = timestamp(b, 280)?;
                let finished = timestamp(b, 296)?;
                let plaintext_blake3 = match b[257] {
                    0 => {
                        zero(b, 320..352, "provenance")?;
                        None
                    }
                    1 => Some(array32(b, 320)),
                    _ => return Err(EmdError::Field("provenance")),
                };
                Some(Provenance {
                    source_uuid: array16(b, 264),
                    started,
                    finished,
                    bytes: get64(b, 312),
                    plaintext_blake3,
                })
            }
            _ => return Err(EmdError::Field("provenance")),
        };
        zero(b, 384..SLOTS_AT, "reserved")?;

        let mut slots = Vec::new();
        let mut ended = false;
        for i in 0..MAX_SLOTS {
            let at = SLOTS_AT + i * SLOT_SIZE;
            let s = &b[at..at + SLOT_SIZE];
            if s[0] == 0 {
                zero(s, 0..SLOT_SIZE, "empty slot")?;
                ended = true;
                continue;
            }
            if ended {
                return Err(EmdError::Field("slots"));
            }
            let role = Role::from_code(s[0]).ok_or(EmdError::Field("slot role"))?;
            let id_len = usize::from(s[1]);
            if id_len == 0 || id_len > ID_FIELD {
                return Err(EmdError::Field("slot key ID"));
            }
            zero(s, 2 + id_len..66, "slot key ID")?;
            let id = std::str::from_utf8(&s[2..2 + id_len])
                .ok()
                .and_then(|t| KeyId::parse(t).ok())
                .filter(|id| id.as_str().len() == id_len)
                .ok_or(EmdError::Field("slot key ID"))?;
            zero(s, 66 + 32 + WRAPPED_LEN..SLOT_SIZE, "slot")?;
            slots.push(Slot {
                role,
                id,
                public: array32(s, 66),
                wrapped: s[98..98 + WRAPPED_LEN].try_into().expect("fixed width"),
            });
        }
        zero(b, SLOTS_AT + MAX_SLOTS * SLOT_SIZE..MAC_AT, "reserved")?;
        validate_slots(&slots)?;

        Ok(Emd {
            generation: get64(b, 16),
            dirty,
            checkpoint,
            uuid: array16(b, 128),
            created: get64(b, 144),
            cipher,
            state,
            sector_size,
            data_offset,
            data_size,
            label,
            provenance,
            slots,
            mac: array32(b, MAC_AT),
        })
    }

    /// The slot of a key ID, if any.
    pub fn slot(&self, id: &KeyId) -> Option<&Slot> {
        self.slots.iter().find(|s| &s.id == id)
    }

    /// The owner's slot (the parser guarantees exactly one).
    pub fn owner(&self) -> &Slot {
        self.slots
            .iter()
            .find(|s| s.role == Role::Owner)
            .expect("a parsed or built EMD has exactly one owner")
    }

    /// Slots of one role, in order.
    pub fn slots_with(&self, role: Role) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(move |s| s.role == role)
    }

    /// The UUID in its canonical text form.
    pub fn uuid_string(&self) -> String {
        uuid_string(&self.uuid)
    }
}

/// Check the slot table: one owner, at most [`MAX_RECOVERY`] recovery keys of
/// user `evfs`, no key ID twice, at most [`MAX_SLOTS`].
pub fn validate_slots(slots: &[Slot]) -> Result<(), EmdError> {
    if slots.len() > MAX_SLOTS {
        return Err(EmdError::Field("slots"));
    }
    if slots.iter().filter(|s| s.role == Role::Owner).count() != 1 {
        return Err(EmdError::Field("owner"));
    }
    let recovery: Vec<_> = slots.iter().filter(|s| s.role == Role::Recovery).collect();
    if recovery.len() > MAX_RECOVERY || recovery.iter().any(|s| !s.id.is_recovery()) {
        return Err(EmdError::Field("recovery"));
    }
    for (i, s) in slots.iter().enumerate() {
        if slots[..i].iter().any(|t| t.id == s.id) {
            return Err(EmdError::Field("slots"));
        }
    }
    Ok(())
}

/// Canonical 8-4-4-4-12 hex form of a UUID.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = crate::hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random (version 4) UUID.
pub fn new_uuid() -> crate::error::Result<[u8; 16]> {
    let mut u = crate::crypto::random_array::<16>()?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

fn timestamp(b: &[u8], at: usize) -> Result<Timestamp, EmdError> {
    let t = Timestamp {
        secs: get64(b, at),
        nanos: get32(b, at + 8),
    };
    // Far beyond any real clock, and beyond what SystemTime formats.
    if t.nanos >= 1_000_000_000 || t.secs > 253_402_300_799 {
        return Err(EmdError::Field("timestamp"));
    }
    Ok(t)
}

fn zero(b: &[u8], range: std::ops::Range<usize>, name: &'static str) -> Result<(), EmdError> {
    if b[range].iter().all(|&c| c == 0) {
        Ok(())
    } else {
        Err(EmdError::Field(name))
    }
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn array16(b: &[u8], at: usize) -> [u8; 16] {
    b[at..at + 16].try_into().expect("16 bytes")
}

fn array32(b: &[u8], at: usize) -> [u8; 32] {
    b[at..at + 32].try_into().expect("32 bytes")
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
