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
use crate::le::{array, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at, zero};
use crate::signature::{self, Signature};

/// Bytes of one EMD copy.
pub const EMD_SIZE: usize = 16384;
/// First bytes of every copy.
pub const MAGIC: &[u8; 8] = b"EVFS-EMD";
/// The format version this code writes. It reads every version from 1 up.
pub const VERSION: u16 = 2;
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
/// Version 2: the signature block (`formats/SIGNATURE.md`), outside the
/// MAC (a writer without the volume key may sign); all zero when unsigned.
const SIGNATURE_AT: usize = 15872;
const MAC_AT: usize = EMD_SIZE - 64;
const CHECKSUM_AT: usize = EMD_SIZE - 32;
/// Start of the authenticated body; bytes 0..16 (magic, version, size) are authenticated too.
const BODY_AT: usize = 128;

/// Role of a key slot (EVFS permission model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The volume's one owner: reads and writes the data, and manages the
    /// slots.
    Owner,
    /// An authorized user: reads and writes the data.
    User,
    /// A recovery key (pseudo-user `evfs`), at most [`MAX_RECOVERY`] of them.
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

    /// The role's name as `info` shows it: `owner`, `user` or `recovery`.
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
    /// The data area is encrypted with the volume key and may be decrypted.
    Enabled,
    /// The data area is raw ciphertext that evfs does not decrypt (EVFS
    /// `evfsvol disable`).
    Disabled,
}

impl State {
    /// The state's name as `info` shows it: `enabled` or `disabled`.
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
    /// Whole seconds since the Unix epoch.
    pub secs: u64,
    /// Nanoseconds past `secs` (below 1,000,000,000).
    pub nanos: u32,
}

impl Timestamp {
    /// The current system time (the epoch if the clock is set before it).
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
    /// What the key may do.
    pub role: Role,
    /// The key's ID, `user.keyname`.
    pub id: KeyId,
    /// The key's X25519 public key.
    pub public: [u8; 32],
    /// The volume key wrapped to `public` ([`crate::crypto::wrap`]).
    pub wrapped: [u8; WRAPPED_LEN],
}

/// Where the data of the last backup written into this volume came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// What the data was read from.
    pub origin: Origin,
    /// When the backup began.
    pub started: Timestamp,
    /// When the backup's data was complete.
    pub finished: Timestamp,
    /// Bytes of plaintext the backup wrote (the exact data length).
    pub bytes: u64,
    /// BLAKE3 of the plaintext; absent for raw clones, whose plaintext was never seen.
    pub plaintext_blake3: Option<[u8; 32]>,
    /// This volume's data version when the backup had written it; a later
    /// data write (through `map`) moves the volume's own data version past
    /// it: the data was modified since its backup. Zero in version 1.
    pub data_version: u64,
}

/// What a backup's data was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A volume: its UUID, and its data version when the backup read it
    /// (zero in version 1, which did not record it).
    Volume {
        /// The source volume's UUID.
        uuid: [u8; 16],
        /// The source's data version when the backup read it.
        data_version: u64,
    },
    /// Plain data (a file, device or standard input) encrypted into the
    /// volume. Its name is not recorded: anyone may read an EMD.
    Plain,
}

impl Provenance {
    /// The source volume's UUID, if the data came from a volume.
    pub fn source_uuid(&self) -> Option<[u8; 16]> {
        match self.origin {
            Origin::Volume { uuid, .. } => Some(uuid),
            Origin::Plain => None,
        }
    }
}

/// What an unfinished writer was doing when it left its checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// A backup into this volume (`evfs backup --resume` continues it).
    Backup,
    /// A restore of a stream onto this volume (run again to finish it).
    Restore,
}

/// An unfinished backup or restore into this volume: while it is present the
/// volume is incomplete, never clean. Outside the MAC: a raw backup, which
/// has no key, must be able to keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Whether a backup or a restore left it.
    pub task: Task,
    /// Names the run (a restore: the stream's ID); a resumed run keeps it.
    pub run_id: [u8; 16],
    /// The source volume (a restore: the stream's volume).
    pub source_uuid: [u8; 16],
    /// Data bytes from offset 0 that are written and synced: a resume starts here.
    pub bytes_done: u64,
    /// Data bytes the run writes in all.
    pub total: u64,
    /// The source's EMD generation when the run began: a source written to
    /// since (its generation moved) is not resumed from.
    pub source_generation: u64,
}

/// One parsed EMD copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emd {
    /// The layout version this copy was read in, and is written in: a copy
    /// is re-encoded in its own version until a key holder re-seals it, which
    /// moves it to [`VERSION`] (the MAC covers the layout).
    pub version: u16,
    // Mutable header: changed without the volume key (dirty bit reset, repair).
    /// Bumped by every write of the EMD; of two valid copies the higher
    /// generation is in force.
    pub generation: u64,
    /// Set while a writer changes the data area, cleared when it has synced and
    /// sealed.
    pub dirty: bool,
    /// An unfinished backup or restore into this volume, if any.
    pub checkpoint: Option<Checkpoint>,
    // Authenticated body: changed only by a key holder, who re-seals the MAC.
    /// The volume's random (version 4) UUID.
    pub uuid: [u8; 16],
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// The cipher of the data area.
    pub cipher: Cipher,
    /// Whether the data may be decrypted (enabled) or is raw (disabled).
    pub state: State,
    /// Bytes per data sector: 512 or 4096.
    pub sector_size: u32,
    /// Byte offset of the data area on the device: a multiple of the sector
    /// size, at least [`EMD_SIZE`].
    pub data_offset: u64,
    /// Bytes of the data area: whole sectors.
    pub data_size: u64,
    /// Bytes of plaintext the data area holds, at most `data_size`: what
    /// `hash`, `cat` and exports cover (the rest of the last sector is padding).
    pub data_len: u64,
    /// Bumped by every write of data into the volume (a backup or restore
    /// into it, a write through `map`) and copied by a raw clone, so that
    /// a copy with an older data version is never written back over it
    /// unasked (a rollback).
    pub data_version: u64,
    /// The UUID of the source volume this volume is an EMD clone of (made by
    /// `backup`); `None` for a volume with an EMD of its own (made by
    /// `create`, or by a backup into it with its own key).
    pub clone_of: Option<[u8; 16]>,
    /// The chunk index of the last backup into this volume, in the area
    /// right after the data area (version 2; see `formats/INDEX.md`).
    pub index: Option<IndexRef>,
    /// Which backup the data is (version 2): a random ID set by every
    /// backup or stream that writes a whole data state, copied by a restore;
    /// an incremental stream applies only onto the state it was made from.
    /// `None` (zero) for a volume no backup has written.
    pub state_id: Option<[u8; 16]>,
    /// A label for people, at most [`LABEL_MAX`] bytes of UTF-8.
    pub label: String,
    /// Where the data of the last backup into this volume came from, if one
    /// wrote it.
    pub provenance: Option<Provenance>,
    /// The key slots in use (at most [`MAX_SLOTS`]; exactly one owner).
    pub slots: Vec<Slot>,
    /// Keyed BLAKE3 (from the volume key) over the authenticated bytes, as
    /// stored.
    pub mac: [u8; 32],
    /// Who signed the authenticated bytes (version 2), outside the MAC so
    /// that a writer without the volume key can sign; `None`: unsigned.
    pub signature: Option<Signature>,
}

/// Where an EMD points at its chunk index: the index area starts right
/// after the data area; these are the length of the sealed index in it and
/// its BLAKE3, so that no other index can be put in its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexRef {
    /// Bytes of the sealed index (not zero).
    pub len: u64,
    /// BLAKE3 of those bytes.
    pub blake3: [u8; 32],
}

impl IndexRef {
    /// The reference an EMD records for the sealed index `sealed`.
    pub fn of(sealed: &[u8]) -> IndexRef {
        IndexRef {
            len: sealed.len() as u64,
            blake3: *blake3::hash(sealed).as_bytes(),
        }
    }

    /// Whether `sealed` is the index this reference names.
    pub fn names(&self, sealed: &[u8]) -> bool {
        *self == IndexRef::of(sealed)
    }
}

/// Why bytes are not a valid EMD copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmdError {
    /// Not an EMD at all (no magic).
    NoMagic,
    /// An EMD of a newer version than this build reads.
    Newer(u16),
    /// Version 0: never written by any evfs.
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
            EmdError::Newer(v) => write!(
                f,
                "EMD format version {v} is a newer format than this evfs reads (versions 1 to {VERSION}): upgrade evfs"
            ),
            EmdError::Version(v) => write!(f, "EMD format version {v} does not exist"),
            EmdError::Checksum => write!(f, "checksum mismatch"),
            EmdError::Field(name) => write!(f, "invalid field {name}"),
        }
    }
}

impl Emd {
    /// Encode this copy in its version, MAC as stored and a fresh checksum.
    pub fn encode(&self) -> Box<[u8; EMD_SIZE]> {
        let mut b = self.encode_unsealed();
        b[MAC_AT..CHECKSUM_AT].copy_from_slice(&self.mac);
        let sum = blake3::hash(&b[..CHECKSUM_AT]);
        b[CHECKSUM_AT..].copy_from_slice(sum.as_bytes());
        b
    }

    /// Recompute the MAC with `key`, in the current format version; call
    /// after any change to the body. The body changed, so a signature of
    /// the old one is dropped: sign again with [`Emd::sign`].
    pub fn seal(&mut self, key: &VolumeKey) {
        self.version = VERSION;
        self.signature = None;
        self.mac = self.compute_mac(key);
    }

    /// The message an EMD signature signs: a context, then the bytes the MAC
    /// covers (magic, version and size; the authenticated body up to the
    /// signature block).
    pub fn signed_message(&self) -> Vec<u8> {
        let b = self.encode_unsealed();
        let mut m = signature::EMD_CONTEXT.to_vec();
        m.extend_from_slice(&b[..16]);
        m.extend_from_slice(&b[BODY_AT..SIGNATURE_AT]);
        m
    }

    /// Sign with `sign`, which makes the signature of a message; a copy of
    /// version 1 has no room for one (re-seal it first).
    pub fn sign(&mut self, sign: impl FnOnce(&[u8]) -> Signature) {
        if self.version >= 2 {
            self.signature = Some(sign(&self.signed_message()));
        }
    }

    /// Whether the signature (if any) is valid for this EMD: `None` when
    /// unsigned.
    pub fn signature_valid(&self) -> Option<bool> {
        self.signature
            .as_ref()
            .map(|s| s.valid(&self.signed_message()))
    }

    /// Whether the stored MAC matches `key` (constant time).
    pub fn mac_ok(&self, key: &VolumeKey) -> bool {
        blake3::Hash::from(self.compute_mac(key)) == blake3::Hash::from(self.mac)
    }

    fn compute_mac(&self, key: &VolumeKey) -> [u8; 32] {
        let b = self.encode_unsealed();
        let end = if self.version == 1 {
            MAC_AT
        } else {
            SIGNATURE_AT
        };
        let mut h = key.emd_mac_key().hasher();
        h.update(&b[..16]);
        h.update(&b[BODY_AT..end]);
        *h.finalize().as_bytes()
    }

    fn encode_unsealed(&self) -> Box<[u8; EMD_SIZE]> {
        let v2 = self.version >= 2;
        let mut b = Box::new([0u8; EMD_SIZE]);
        b[0..8].copy_from_slice(MAGIC);
        put_u16(&mut b[..], 8, self.version);
        put_u32(&mut b[..], 12, EMD_SIZE as u32);
        put_u64(&mut b[..], 16, self.generation);
        b[24] = u8::from(self.dirty);
        if let Some(c) = &self.checkpoint {
            b[32] = 1;
            if v2 {
                b[33] = match c.task {
                    Task::Backup => 1,
                    Task::Restore => 2,
                };
            }
            b[40..56].copy_from_slice(&c.run_id);
            b[56..72].copy_from_slice(&c.source_uuid);
            put_u64(&mut b[..], 72, c.bytes_done);
            put_u64(&mut b[..], 80, c.total);
            put_u64(&mut b[..], 88, c.source_generation);
        }
        b[128..144].copy_from_slice(&self.uuid);
        put_u64(&mut b[..], 144, self.created);
        b[152] = self.cipher.code();
        b[153] = match self.state {
            State::Disabled => 0,
            State::Enabled => 1,
        };
        put_u32(&mut b[..], 156, self.sector_size);
        put_u64(&mut b[..], 160, self.data_offset);
        put_u64(&mut b[..], 168, self.data_size);
        let label = self.label.as_bytes();
        let n = label.len().min(LABEL_MAX);
        b[176..176 + n].copy_from_slice(&label[..n]);
        if v2 {
            put_u64(&mut b[..], 240, self.data_len);
            put_u64(&mut b[..], 248, self.data_version);
            if let Some(u) = &self.clone_of {
                b[154] = 1;
                b[384..400].copy_from_slice(u);
            }
            if let Some(i) = &self.index {
                put_u64(&mut b[..], 400, i.len);
                b[408..440].copy_from_slice(&i.blake3);
            }
            if let Some(s) = &self.state_id {
                b[440..456].copy_from_slice(s);
            }
            if let Some(sig) = &self.signature {
                b[SIGNATURE_AT..MAC_AT].copy_from_slice(&sig.encode());
            }
        }
        if let Some(p) = &self.provenance {
            b[256] = 1;
            b[257] = u8::from(p.plaintext_blake3.is_some());
            match p.origin {
                Origin::Volume { uuid, data_version } => {
                    b[264..280].copy_from_slice(&uuid);
                    if v2 {
                        b[258] = 1;
                        put_u64(&mut b[..], 352, data_version);
                    }
                }
                // Version 1 wrote a zero UUID for plain data.
                Origin::Plain if v2 => b[258] = 2,
                Origin::Plain => {}
            }
            put_u64(&mut b[..], 280, p.started.secs);
            put_u32(&mut b[..], 288, p.started.nanos);
            put_u64(&mut b[..], 296, p.finished.secs);
            put_u32(&mut b[..], 304, p.finished.nanos);
            put_u64(&mut b[..], 312, p.bytes);
            if let Some(d) = &p.plaintext_blake3 {
                b[320..352].copy_from_slice(d);
            }
            if v2 {
                put_u64(&mut b[..], 360, p.data_version);
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

    /// Parse one copy of any version this build reads. Checks magic,
    /// version, checksum and every field; the MAC needs the volume key and
    /// is checked at unlock ([`Emd::mac_ok`]).
    pub fn parse(b: &[u8]) -> Result<Emd, EmdError> {
        if b.len() < EMD_SIZE || &b[0..8] != MAGIC {
            return Err(EmdError::NoMagic);
        }
        let b = &b[..EMD_SIZE];
        let version = u16_at(b, 8);
        match version {
            0 => return Err(EmdError::Version(0)),
            v if v > VERSION => return Err(EmdError::Newer(v)),
            _ => {}
        }
        let v2 = version >= 2;
        if blake3::hash(&b[..CHECKSUM_AT]) != blake3::Hash::from(array::<32>(b, CHECKSUM_AT)) {
            return Err(EmdError::Checksum);
        }
        reserved(b, 10..12, "reserved")?;
        if u32_at(b, 12) as usize != EMD_SIZE {
            return Err(EmdError::Field("size"));
        }
        let dirty = match b[24] {
            0 => false,
            1 => true,
            _ => return Err(EmdError::Field("dirty")),
        };
        reserved(b, 25..32, "reserved")?;
        let checkpoint = match b[32] {
            0 => {
                reserved(b, 33..96, "checkpoint")?;
                None
            }
            1 => {
                let task = match (v2, b[33]) {
                    (false, 0) | (true, 1) => Task::Backup,
                    (true, 2) => Task::Restore,
                    _ => return Err(EmdError::Field("checkpoint")),
                };
                reserved(b, 34..40, "checkpoint")?;
                let c = Checkpoint {
                    task,
                    run_id: array(b, 40),
                    source_uuid: array(b, 56),
                    bytes_done: u64_at(b, 72),
                    total: u64_at(b, 80),
                    source_generation: u64_at(b, 88),
                };
                if c.bytes_done > c.total {
                    return Err(EmdError::Field("checkpoint"));
                }
                Some(c)
            }
            _ => return Err(EmdError::Field("checkpoint")),
        };
        reserved(b, 96..128, "reserved")?;

        let cipher = Cipher::from_code(b[152]).ok_or(EmdError::Field("cipher"))?;
        let state = match b[153] {
            0 => State::Disabled,
            1 => State::Enabled,
            _ => return Err(EmdError::Field("state")),
        };
        let clone_of = match (v2, b[154]) {
            (_, 0) => {
                reserved(b, 384..400, "clone")?;
                None
            }
            (true, 1) => Some(array::<16>(b, 384)),
            _ => return Err(EmdError::Field("clone")),
        };
        reserved(b, 155..156, "reserved")?;
        let sector_size = u32_at(b, 156);
        if sector_size != 512 && sector_size != 4096 {
            return Err(EmdError::Field("sector_size"));
        }
        let data_offset = u64_at(b, 160);
        let data_size = u64_at(b, 168);
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
        reserved(b, 176 + label_len..176 + LABEL_MAX, "label")?;
        let label = std::str::from_utf8(&label_field[..label_len])
            .map_err(|_| EmdError::Field("label"))?
            .to_string();
        let provenance = match b[256] {
            0 => {
                reserved(b, 257..384, "provenance")?;
                None
            }
            1 => Some(provenance(b, v2)?),
            _ => return Err(EmdError::Field("provenance")),
        };
        let (data_len, data_version) = if v2 {
            (u64_at(b, 240), u64_at(b, 248))
        } else {
            // Version 1 recorded no length, but its provenance counts the
            // bytes the last backup wrote (a plain source's exact size).
            reserved(b, 240..256, "reserved")?;
            let written = provenance.as_ref().map(|p| p.bytes);
            (written.filter(|&n| n <= data_size).unwrap_or(data_size), 0)
        };
        if data_len > data_size {
            return Err(EmdError::Field("data_len"));
        }
        let index = match u64_at(b, 400) {
            0 => {
                reserved(b, 400..440, "index")?;
                None
            }
            _ if !v2 => return Err(EmdError::Field("reserved")),
            len => Some(IndexRef {
                len,
                blake3: array(b, 408),
            }),
        };
        let state_id = match array::<16>(b, 440) {
            s if s == [0; 16] => None,
            _ if !v2 => return Err(EmdError::Field("reserved")),
            s => Some(s),
        };
        reserved(b, 456..SLOTS_AT, "reserved")?;

        let mut slots = Vec::new();
        let mut ended = false;
        for i in 0..MAX_SLOTS {
            let at = SLOTS_AT + i * SLOT_SIZE;
            let s = &b[at..at + SLOT_SIZE];
            if s[0] == 0 {
                reserved(s, 0..SLOT_SIZE, "empty slot")?;
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
            reserved(s, 2 + id_len..66, "slot key ID")?;
            let id = std::str::from_utf8(&s[2..2 + id_len])
                .ok()
                .and_then(|t| KeyId::parse(t).ok())
                .filter(|id| id.as_str().len() == id_len)
                .ok_or(EmdError::Field("slot key ID"))?;
            reserved(s, 66 + 32 + WRAPPED_LEN..SLOT_SIZE, "slot")?;
            slots.push(Slot {
                role,
                id,
                public: array(s, 66),
                wrapped: array(s, 98),
            });
        }
        let signature = if v2 {
            reserved(
                b,
                SLOTS_AT + MAX_SLOTS * SLOT_SIZE..SIGNATURE_AT,
                "reserved",
            )?;
            Signature::parse(&b[SIGNATURE_AT..MAC_AT]).map_err(|_| EmdError::Field("signature"))?
        } else {
            reserved(b, SLOTS_AT + MAX_SLOTS * SLOT_SIZE..MAC_AT, "reserved")?;
            None
        };
        validate_slots(&slots)?;

        Ok(Emd {
            version,
            generation: u64_at(b, 16),
            dirty,
            checkpoint,
            uuid: array(b, 128),
            created: u64_at(b, 144),
            cipher,
            state,
            sector_size,
            data_offset,
            data_size,
            data_len,
            data_version,
            clone_of,
            index,
            state_id,
            label,
            provenance,
            slots,
            mac: array(b, MAC_AT),
            signature,
        })
    }

    /// Whether data was written into the volume since its last backup (its
    /// data version moved past the one the backup recorded).
    pub fn modified_since_backup(&self) -> bool {
        self.provenance
            .as_ref()
            .is_some_and(|p| self.data_version > p.data_version)
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

/// The provenance block (bytes 256..384) of a copy whose byte 256 says present.
fn provenance(b: &[u8], v2: bool) -> Result<Provenance, EmdError> {
    reserved(b, 259..264, "provenance")?;
    reserved(b, 292..296, "provenance")?;
    reserved(b, 308..312, "provenance")?;
    reserved(b, 368..384, "provenance")?;
    let uuid = array::<16>(b, 264);
    let origin = match (v2, b[258]) {
        (false, 0) if uuid == [0; 16] => Origin::Plain,
        (false, 0) => Origin::Volume {
            uuid,
            data_version: 0,
        },
        (true, 1) => Origin::Volume {
            uuid,
            data_version: u64_at(b, 352),
        },
        (true, 2) if uuid == [0; 16] && u64_at(b, 352) == 0 => Origin::Plain,
        _ => return Err(EmdError::Field("provenance")),
    };
    if !v2 {
        reserved(b, 352..368, "provenance")?;
    }
    let plaintext_blake3 = match b[257] {
        0 => {
            reserved(b, 320..352, "provenance")?;
            None
        }
        1 => Some(array(b, 320)),
        _ => return Err(EmdError::Field("provenance")),
    };
    Ok(Provenance {
        origin,
        started: timestamp(b, 280)?,
        finished: timestamp(b, 296)?,
        bytes: u64_at(b, 312),
        plaintext_blake3,
        data_version: if v2 { u64_at(b, 360) } else { 0 },
    })
}

fn timestamp(b: &[u8], at: usize) -> Result<Timestamp, EmdError> {
    let t = Timestamp {
        secs: u64_at(b, at),
        nanos: u32_at(b, at + 8),
    };
    // Far beyond any real clock, and beyond what SystemTime formats.
    if t.nanos >= 1_000_000_000 || t.secs > 253_402_300_799 {
        return Err(EmdError::Field("timestamp"));
    }
    Ok(t)
}

fn reserved(b: &[u8], range: std::ops::Range<usize>, name: &'static str) -> Result<(), EmdError> {
    if zero(b, range) {
        Ok(())
    } else {
        Err(EmdError::Field(name))
    }
}
