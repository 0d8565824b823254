//! LUKS2: the binary header (parser and writer), the choice between the two
//! header copies, and keyslot unlock.
//!
//! Reading follows cryptsetup's `LUKS2_disk_hdr_read`
//! (`lib/luks2/luks2_disk_metadata.c`): the primary copy at offset 0; the
//! secondary at the primary's `hdr_size`, or, when the primary's binary
//! header or checksum is bad, at the first of the nine known offsets where a
//! sane secondary with a good checksum lies. A copy whose checksum is good
//! but whose JSON does not validate is obsolete. Of two good copies the one
//! with the higher `seqid` wins (the primary on a tie). Unlike cryptsetup,
//! reading never repairs: evfs only reads sources, and a writer rewrites
//! both copies anyway.

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use super::error::{LuksError, Result, damaged, unsupported};
use super::io::{Plan, ReadAt};
use super::json::Json;
use super::keyslot::{
    HashAlg, MAX_KEY_LEN, SALT_LEN, STRIPES, SectorCipherKind, af_merge, af_size, digest_matches,
};
use super::metadata::{
    BIN_HEADER_LEN, Keyslot, METADATA_SIZES, Metadata, PRIORITY_NORMAL, PRIORITY_PREFER,
};
use super::{LuksKey, Unlocked};
use crate::crypto::Passphrase;

/// Magic of the primary header (the same as LUKS1's).
pub const MAGIC_PRIMARY: &[u8; 6] = b"LUKS\xba\xbe";
/// Magic of the secondary header.
pub const MAGIC_SECONDARY: &[u8; 6] = b"SKUL\xba\xbe";

// Offsets in the binary header (all integers big endian).
const VERSION_AT: usize = 6;
const HDR_SIZE_AT: usize = 8;
const SEQID_AT: usize = 16;
const LABEL_AT: usize = 24;
/// Bytes of the label and subsystem fields, their terminating zero included.
pub(crate) const LABEL_LEN: usize = 48;
const CSUM_ALG_AT: usize = 72;
const CSUM_ALG_LEN: usize = 32;
const SALT_AT: usize = 104;
/// Bytes of a binary header's salt.
pub(crate) const HEADER_SALT_LEN: usize = 64;
const UUID_AT: usize = 168;
const UUID_LEN: usize = 40;
const SUBSYSTEM_AT: usize = 208;
const HDR_OFFSET_AT: usize = 256;
const CSUM_AT: usize = 448;
const CSUM_LEN: usize = 64;
const BIN_LEN: usize = BIN_HEADER_LEN as usize;

/// The fields of one binary header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinHeader {
    /// Whether this is the secondary copy (magic `SKUL\xba\xbe`).
    pub secondary: bool,
    /// Bytes of the binary header plus the JSON area.
    pub hdr_size: u64,
    /// Sequence number, raised by every header update: of two valid copies the
    /// higher wins.
    pub seqid: u64,
    /// Strings as stored, up to their terminating zero.
    pub label: Vec<u8>,
    /// The checksum's hash, `sha256` as cryptsetup writes it.
    pub checksum_alg: String,
    /// A random salt of this copy (each copy its own).
    pub salt: [u8; HEADER_SALT_LEN],
    /// The UUID as stored, up to its terminating zero.
    pub uuid: Vec<u8>,
    /// The subsystem label as stored, up to its terminating zero.
    pub subsystem: Vec<u8>,
    /// Where this copy says it lies; must be where it was read.
    pub hdr_offset: u64,
}

/// A C string field: the bytes before the first zero, the last byte of the
/// field never part of it (cryptsetup forces it to zero).
fn c_string(field: &[u8]) -> Vec<u8> {
    let field = &field[..field.len() - 1];
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    field[..end].to_vec()
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl BinHeader {
    /// Parse a 4096-byte binary header; `None` without either magic or
    /// version 2. Sizes and offsets are checked by `read_copy`.
    pub fn parse(b: &[u8]) -> Option<BinHeader> {
        if b.len() < BIN_LEN {
            return None;
        }
        let secondary = match &b[..6] {
            m if m == MAGIC_PRIMARY => false,
            m if m == MAGIC_SECONDARY => true,
            _ => return None,
        };
        if be16(b, VERSION_AT) != 2 {
            return None;
        }
        let mut salt = [0u8; HEADER_SALT_LEN];
        salt.copy_from_slice(&b[SALT_AT..SALT_AT + HEADER_SALT_LEN]);
        Some(BinHeader {
            secondary,
            hdr_size: be64(b, HDR_SIZE_AT),
            seqid: be64(b, SEQID_AT),
            label: c_string(&b[LABEL_AT..LABEL_AT + LABEL_LEN]),
            checksum_alg: String::from_utf8_lossy(&c_string(
                &b[CSUM_ALG_AT..CSUM_ALG_AT + CSUM_ALG_LEN],
            ))
            .into_owned(),
            salt,
            uuid: c_string(&b[UUID_AT..UUID_AT + UUID_LEN]),
            subsystem: c_string(&b[SUBSYSTEM_AT..SUBSYSTEM_AT + LABEL_LEN]),
            hdr_offset: be64(b, HDR_OFFSET_AT),
        })
    }

    /// The 4096 bytes of this header with a zero checksum field (strings cut
    /// to leave their terminating zero, as cryptsetup's `hdr_to_disk`).
    pub fn encode(&self) -> Box<[u8; BIN_LEN]> {
        let mut b = Box::new([0u8; BIN_LEN]);
        b[..6].copy_from_slice(if self.secondary {
            MAGIC_SECONDARY
        } else {
            MAGIC_PRIMARY
        });
        b[VERSION_AT..VERSION_AT + 2].copy_from_slice(&2u16.to_be_bytes());
        b[HDR_SIZE_AT..HDR_SIZE_AT + 8].copy_from_slice(&self.hdr_size.to_be_bytes());
        b[SEQID_AT..SEQID_AT + 8].copy_from_slice(&self.seqid.to_be_bytes());
        put_c_string(&mut b[LABEL_AT..LABEL_AT + LABEL_LEN], &self.label);
        put_c_string(
            &mut b[CSUM_ALG_AT..CSUM_ALG_AT + CSUM_ALG_LEN],
            self.checksum_alg.as_bytes(),
        );
        b[SALT_AT..SALT_AT + HEADER_SALT_LEN].copy_from_slice(&self.salt);
        put_c_string(&mut b[UUID_AT..UUID_AT + UUID_LEN], &self.uuid);
        put_c_string(
            &mut b[SUBSYSTEM_AT..SUBSYSTEM_AT + LABEL_LEN],
            &self.subsystem,
        );
        b[HDR_OFFSET_AT..HDR_OFFSET_AT + 8].copy_from_slice(&self.hdr_offset.to_be_bytes());
        b
    }
}

fn put_c_string(field: &mut [u8], s: &[u8]) {
    let n = s.len().min(field.len() - 1);
    field[..n].copy_from_slice(&s[..n]);
}

/// The checksum of a copy: the named hash over the binary header with its
/// checksum field zeroed, then the whole JSON area. `None` for a hash evfs
/// does not implement.
pub fn checksum(alg: &str, bin_zero_csum: &[u8], json_area: &[u8]) -> Option<Vec<u8>> {
    fn run<D: Digest>(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut h = D::new();
        h.update(a);
        h.update(b);
        h.finalize().to_vec()
    }
    Some(match HashAlg::parse(alg)? {
        HashAlg::Sha1 => run::<Sha1>(bin_zero_csum, json_area),
        HashAlg::Sha256 => run::<Sha256>(bin_zero_csum, json_area),
        HashAlg::Sha512 => run::<Sha512>(bin_zero_csum, json_area),
    })
}

/// What became of one header copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyState {
    /// Valid.
    Valid {
        /// The copy's sequence number.
        seqid: u64,
    },
    /// Checksum good, but the JSON does not validate (cryptsetup's
    /// "obsolete" copy): the reason.
    BadJson(String),
    /// Not usable: no magic, bad sizes or checksum, unreadable: the reason.
    Bad(String),
}

impl CopyState {
    /// Whether the copy is valid.
    pub fn is_valid(&self) -> bool {
        matches!(self, CopyState::Valid { .. })
    }
}

/// A copy whose binary header and checksum are good.
struct RawCopy {
    bin: BinHeader,
    area: Vec<u8>,
}

enum CopyRead {
    /// Binary header and checksum good.
    Good(RawCopy),
    /// Magic found but something else wrong.
    Bad(String),
    /// No magic (or unreadable).
    Absent(String),
}

/// Read the copy at `offset` (cryptsetup's `hdr_read_disk` with its
/// `hdr_disk_sanity_check_pre`): at most 4 MiB.
fn read_copy(dev: &(impl ReadAt + ?Sized), offset: u64, secondary: bool) -> Result<CopyRead> {
    let size = dev.size()?;
    if offset.checked_add(BIN_HEADER_LEN).is_none_or(|e| e > size) {
        return Ok(CopyRead::Absent("beyond the end of the device".into()));
    }
    let mut b = vec![0u8; BIN_LEN];
    dev.read_at(&mut b, offset)?;
    let Some(bin) = BinHeader::parse(&b) else {
        return Ok(CopyRead::Absent("no LUKS2 magic and version".into()));
    };
    if bin.secondary != secondary {
        return Ok(CopyRead::Absent(format!(
            "the {} header's magic",
            if bin.secondary {
                "secondary"
            } else {
                "primary"
            }
        )));
    }
    if bin.hdr_offset != offset {
        return Ok(CopyRead::Bad(format!(
            "header at {offset} says it lies at {}",
            bin.hdr_offset
        )));
    }
    if !(METADATA_SIZES[0]..=METADATA_SIZES[8]).contains(&bin.hdr_size) {
        return Ok(CopyRead::Bad(format!(
            "header size {} is invalid",
            bin.hdr_size
        )));
    }
    if secondary && offset != bin.hdr_size {
        return Ok(CopyRead::Bad(format!(
            "secondary header at {offset} has size {}",
            bin.hdr_size
        )));
    }
    let area_len = bin.hdr_size - BIN_HEADER_LEN;
    if (offset + BIN_HEADER_LEN)
        .checked_add(area_len)
        .is_none_or(|e| e > size)
    {
        return Ok(CopyRead::Bad(
            "JSON area beyond the end of the device".into(),
        ));
    }
    let mut area = vec![0u8; area_len as usize];
    dev.read_at(&mut area, offset + BIN_HEADER_LEN)?;
    let stored = b[CSUM_AT..CSUM_AT + CSUM_LEN].to_vec();
    b[CSUM_AT..CSUM_AT + CSUM_LEN].fill(0);
    let Some(sum) = checksum(&bin.checksum_alg, &b, &area) else {
        return Ok(CopyRead::Bad(format!(
            "checksum algorithm {:?} is not supported",
            bin.checksum_alg
        )));
    };
    if stored[..sum.len()] != sum[..] {
        return Ok(CopyRead::Bad("checksum mismatch".into()));
    }
    Ok(CopyRead::Good(RawCopy { bin, area }))
}

/// The JSON text of an area: it must start with `{`, end with its closing
/// `}` right before the first zero byte, and only zeros may follow
/// (cryptsetup's `validate_json_area`).
fn parse_area(area: &[u8]) -> std::result::Result<Json, String> {
    let end = area
        .iter()
        .position(|&b| b == 0)
        .ok_or("the JSON area has no terminating zero")?;
    if area[end..].iter().any(|&b| b != 0) {
        return Err("bytes other than zero after the JSON text".into());
    }
    let text = &area[..end];
    if text.first() != Some(&b'{') || text.last() != Some(&b'}') {
        return Err("the JSON text is not one object".into());
    }
    Json::parse(text)
}

/// A parsed LUKS2 header: the copy in use, its JSON, the typed view.
#[derive(Clone, Debug)]
pub struct Luks2Header {
    pub(crate) bin: BinHeader,
    /// Salts of the primary and the secondary binary header (a copy that
    /// could not be read gets a fresh one when rewritten).
    pub(crate) salts: [Option<[u8; HEADER_SALT_LEN]>; 2],
    pub(crate) json: Json,
    pub(crate) meta: Metadata,
    pub(crate) copies: [CopyState; 2],
}

/// What a copy turned out to be once its JSON was checked.
struct Checked {
    raw: RawCopy,
    parsed: std::result::Result<(Json, Metadata), String>,
}

fn check(raw: RawCopy) -> Checked {
    let parsed = parse_area(&raw.area).and_then(|json| {
        let meta = Metadata::from_json(&json, raw.bin.hdr_size)?;
        Ok((json, meta))
    });
    Checked { raw, parsed }
}

impl Luks2Header {
    /// Read both copies and pick one as cryptsetup does. `NotLuks` when
    /// neither copy has its magic; `Damaged` when one does but none is
    /// valid.
    pub fn read(dev: &(impl ReadAt + ?Sized)) -> Result<Luks2Header> {
        // An I/O error on one copy makes that copy bad, as in cryptsetup:
        // the other may still be readable.
        let mut io_error: Option<std::io::Error> = None;
        let mut read = |offset: u64, secondary: bool| match read_copy(dev, offset, secondary) {
            Err(LuksError::Io(e)) => {
                let why = format!("I/O error at byte {offset}: {e}");
                io_error.get_or_insert(e);
                Ok(CopyRead::Bad(why))
            }
            other => other,
        };
        let primary = read(0, false)?;
        let mut seen_magic = !matches!(primary, CopyRead::Absent(_));
        let (primary, primary_state) = match primary {
            CopyRead::Good(raw) => (Some(check(raw)), None),
            CopyRead::Bad(why) | CopyRead::Absent(why) => (None, Some(CopyState::Bad(why))),
        };
        let secondary_read = match &primary {
            Some(p) => read(p.raw.bin.hdr_size, true)?,
            None => {
                // No usable primary binary header: scan the offsets a
                // secondary may lie at.
                let mut found = CopyRead::Absent("no secondary header found".into());
                for off in METADATA_SIZES {
                    match read(off, true)? {
                        CopyRead::Good(raw) => {
                            found = CopyRead::Good(raw);
                            break;
                        }
                        CopyRead::Bad(why) => {
                            seen_magic = true;
                            if matches!(found, CopyRead::Absent(_)) {
                                found = CopyRead::Bad(why);
                            }
                        }
                        CopyRead::Absent(_) => {}
                    }
                }
                found
            }
        };
        seen_magic |= !matches!(secondary_read, CopyRead::Absent(_));
        let (secondary, secondary_state) = match secondary_read {
            CopyRead::Good(raw) => (Some(check(raw)), None),
            CopyRead::Bad(why) | CopyRead::Absent(why) => (None, Some(CopyState::Bad(why))),
        };

        let state_of = |c: &Option<Checked>, fallback: Option<CopyState>| match c {
            Some(Checked { raw, parsed: Ok(_) }) => CopyState::Valid {
                seqid: raw.bin.seqid,
            },
            Some(Checked {
                parsed: Err(why), ..
            }) => CopyState::BadJson(why.clone()),
            None => fallback.unwrap_or(CopyState::Bad("unreadable".into())),
        };
        let copies = [
            state_of(&primary, primary_state),
            state_of(&secondary, secondary_state),
        ];
        let salts = [
            primary.as_ref().map(|c| c.raw.bin.salt),
            secondary.as_ref().map(|c| c.raw.bin.salt),
        ];
        let use_secondary = match (&copies[0], &copies[1]) {
            (CopyState::Valid { seqid: a }, CopyState::Valid { seqid: b }) => b > a,
            (CopyState::Valid { .. }, _) => false,
            (_, CopyState::Valid { .. }) => true,
            _ => {
                if let Some(e) = io_error {
                    return Err(LuksError::Io(e));
                }
                if !seen_magic {
                    return Err(LuksError::NotLuks);
                }
                return Err(damaged(format!(
                    "no valid LUKS2 header copy (primary: {}; secondary: {})",
                    describe(&copies[0]),
                    describe(&copies[1])
                )));
            }
        };
        let chosen = if use_secondary { secondary } else { primary };
        let Some(Checked {
            raw,
            parsed: Ok((json, meta)),
        }) = chosen
        else {
            return Err(damaged("no valid LUKS2 header copy"));
        };
        // Like cryptsetup's device size check: the header and its keyslots
        // area must fit the device (a header backup file holds exactly
        // that).
        if meta.areas_end() > dev.size()? {
            return Err(damaged(format!(
                "the device ({} bytes) is smaller than its LUKS2 metadata and keyslots area ({} bytes)",
                dev.size()?,
                meta.areas_end()
            )));
        }
        Ok(Luks2Header {
            bin: raw.bin,
            salts,
            json,
            meta,
            copies,
        })
    }

    /// The typed metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The JSON of the header in use, as compact text.
    pub fn json_text(&self) -> String {
        self.json.to_text()
    }

    /// The state of the primary (`[0]`) and secondary (`[1]`) copy as read.
    pub fn copies(&self) -> &[CopyState; 2] {
        &self.copies
    }

    /// Whether the header in use is the secondary copy.
    pub fn uses_secondary(&self) -> bool {
        self.bin.secondary
    }

    /// The sequence number of the header in use.
    pub fn seqid(&self) -> u64 {
        self.bin.seqid
    }

    /// Bytes of one metadata copy (binary header + JSON area).
    pub fn metadata_size(&self) -> u64 {
        self.bin.hdr_size
    }

    /// The UUID as text (bytes that are not UTF-8 shown as U+FFFD; the
    /// header keeps them as they were).
    pub fn uuid(&self) -> String {
        String::from_utf8_lossy(&self.bin.uuid).into_owned()
    }

    /// The label (bytes that are not UTF-8 shown as U+FFFD).
    pub fn label(&self) -> String {
        String::from_utf8_lossy(&self.bin.label).into_owned()
    }

    /// The subsystem label (bytes that are not UTF-8 shown as U+FFFD).
    pub fn subsystem(&self) -> String {
        String::from_utf8_lossy(&self.bin.subsystem).into_owned()
    }

    /// `config.requirements.mandatory`.
    pub fn requirements(&self) -> &[String] {
        &self.meta.config.requirements
    }

    /// The data segment keys are unlocked for: the first crypt segment that
    /// is not a reencryption backup.
    fn data_segment_id(&self) -> Option<u32> {
        let mut segs: Vec<_> = self
            .meta
            .data_segments()
            .filter(|s| s.crypt.is_some())
            .collect();
        segs.sort_by_key(|s| s.id);
        segs.first().map(|s| s.id)
    }

    /// Keyslot ids in the order an unnamed unlock tries them: priority
    /// "prefer" first, then "normal", each in JSON order; "ignore" never.
    pub fn unlock_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = Vec::new();
        for priority in [PRIORITY_PREFER, PRIORITY_NORMAL] {
            order.extend(
                self.meta
                    .keyslots
                    .iter()
                    .filter(|k| k.priority == priority)
                    .map(|k| k.id),
            );
        }
        order
    }

    /// Try the keyslots (or only `keyslot`) with `secret`.
    pub fn unlock(
        &self,
        dev: &(impl ReadAt + ?Sized),
        secret: &Passphrase,
        keyslot: Option<u32>,
    ) -> Result<Unlocked> {
        let candidates = match keyslot {
            Some(id) => {
                if self.meta.keyslot(id).is_none() {
                    return Err(LuksError::NoKeyslot(format!("keyslot {id} is not active")));
                }
                vec![id]
            }
            None => self.unlock_order(),
        };
        let segment = self.data_segment_id();
        super::try_in_order(&candidates, |id| {
            let k = self
                .meta
                .keyslot(id)
                .ok_or_else(|| damaged(format!("keyslot {id} vanished")))?;
            self.try_keyslot(dev, k, segment, secret)
        })
    }

    /// One keyslot: KDF, area decrypt, AF merge, digest. `Ok(None)` when the
    /// digest does not match.
    fn try_keyslot(
        &self,
        dev: &(impl ReadAt + ?Sized),
        k: &Keyslot,
        segment: Option<u32>,
        secret: &Passphrase,
    ) -> Result<Option<LuksKey>> {
        let id = k.id;
        // cryptsetup's LUKS2_keyslot_for_segment comes first: a keyslot
        // whose digest does not cover the data segment (an unbound key, the
        // reencrypt keyslot) is skipped, whatever its type.
        let digest = self
            .meta
            .digest_of_keyslot(id)
            .filter(|d| segment.is_some_and(|s| d.segments.contains(&s)))
            .ok_or_else(|| {
                LuksError::NoKeyslot(format!(
                    "keyslot {id} does not hold the key of the data segment"
                ))
            })?;
        let Some(ks) = &k.luks2 else {
            return Err(unsupported(format!(
                "keyslot {id} has type {:?} (evfs opens luks2 keyslots)",
                k.type_name
            )));
        };
        let Some(d) = &digest.pbkdf2 else {
            return Err(unsupported(format!(
                "digest {} of type {:?} (or with fields missing)",
                digest.id, digest.type_name
            )));
        };
        let d_hash = HashAlg::require(&d.hash, "digest")?;
        if d.salt.len() != SALT_LEN
            || d.digest.len() < 20
            || d.digest.len() > 64
            || (d.digest.len() != 20 && d.digest.len() != d_hash.size())
            || d.iterations == 0
        {
            return Err(damaged(format!("digest {} is malformed", digest.id)));
        }
        let key_len = k.key_size as usize;
        if key_len == 0 || key_len > MAX_KEY_LEN {
            return Err(unsupported(format!("keyslot {id} key size {key_len}")));
        }
        let cipher = SectorCipherKind::parse(&ks.area_encryption).ok_or_else(|| {
            unsupported(format!(
                "keyslot {id} area cipher {:?} (evfs supports aes-xts-plain64 and aes-cbc-essiv:sha256)",
                ks.area_encryption
            ))
        })?;
        let area_key_len = ks.area_key_size as usize;
        if !cipher.key_len_ok(area_key_len) {
            return Err(unsupported(format!(
                "keyslot {id} area key size {area_key_len} for {}",
                cipher.name()
            )));
        }
        let af_hash = HashAlg::require(&ks.af_hash, "AF")?;
        if let Some(why) = ks.kdf.unsupported() {
            return Err(unsupported(format!("keyslot {id}: {why}")));
        }
        if let super::keyslot::Kdf::Pbkdf2 { salt, .. } | super::keyslot::Kdf::Argon2 { salt, .. } =
            &ks.kdf
            && salt.len() != SALT_LEN
        {
            return Err(damaged(format!(
                "keyslot {id} salt is not {SALT_LEN} bytes"
            )));
        }
        // cryptsetup always splits into 4000 stripes, whatever the JSON says.
        let material_len = af_size(key_len, STRIPES);
        if material_len as u64 > k.area_size {
            return Err(damaged(format!(
                "keyslot {id} area is too small for its key"
            )));
        }
        let device_size = dev.size()?;
        if k.area_offset
            .checked_add(material_len as u64)
            .is_none_or(|e| e > device_size)
        {
            return Err(damaged(format!("keyslot {id} area lies beyond the device")));
        }

        let mut derived = Zeroizing::new(vec![0u8; area_key_len]);
        ks.kdf.derive(secret.expose(), &mut derived)?;
        let mut material = Zeroizing::new(vec![0u8; material_len]);
        dev.read_at(&mut material, k.area_offset)?;
        cipher.decrypt_area(&derived, &mut material)?;
        let candidate = af_merge(&material, key_len, STRIPES, af_hash);
        if digest_matches(d_hash, &candidate, &d.salt, d.iterations, &d.digest) {
            Ok(Some(LuksKey::from_zeroizing(candidate)))
        } else {
            Ok(None)
        }
    }

    /// Whether `key` is this volume's key (the data segment's digest).
    pub fn verify_key(&self, key: &LuksKey) -> Result<bool> {
        let seg = self
            .data_segment_id()
            .ok_or_else(|| unsupported("no crypt data segment"))?;
        let digest = self
            .meta
            .digest_of_segment(seg)
            .and_then(|d| d.pbkdf2.as_ref())
            .ok_or_else(|| unsupported("the data segment has no pbkdf2 digest"))?;
        let hash = HashAlg::require(&digest.hash, "digest")?;
        if digest.digest.len() < 20 || digest.digest.len() > 64 || digest.iterations == 0 {
            return Err(damaged("the data segment's digest is malformed"));
        }
        Ok(digest_matches(
            hash,
            key.expose(),
            &digest.salt,
            digest.iterations,
            &digest.digest,
        ))
    }
}

fn describe(s: &CopyState) -> String {
    match s {
        CopyState::Valid { seqid } => format!("valid, seqid {seqid}"),
        CopyState::BadJson(why) => format!("invalid JSON: {why}"),
        CopyState::Bad(why) => why.clone(),
    }
}
// Here rather than in `io.rs`: checking a plan reads a LUKS2 header,
// which `io.rs`, below this file, knows nothing of.
impl Plan {
    /// Check that `dev` still holds the header this update was computed
    /// from (same UUID and seqid), as cryptsetup checks the sequence id
    /// before it writes: a header changed meanwhile (by cryptsetup, or an
    /// earlier plan) must be read again and the update made anew. A device
    /// without a valid LUKS2 header passes (there is nothing to overwrite
    /// by mistake); a plan that formats always passes.
    pub fn check(&self, dev: &(impl ReadAt + ?Sized)) -> Result<()> {
        let Some((uuid, seqid)) = self.base() else {
            return Ok(());
        };
        match Luks2Header::read(dev) {
            Err(LuksError::Io(e)) => Err(LuksError::Io(e)),
            Err(_) => Ok(()),
            Ok(h) if h.uuid() != *uuid => Err(LuksError::Invalid(format!(
                "the device holds another LUKS2 volume ({}), not {uuid}",
                h.uuid()
            ))),
            Ok(h) if h.seqid() != *seqid => Err(LuksError::Invalid(format!(
                "the LUKS2 header changed since it was read (seqid {} on disk, {seqid} expected): read it again",
                h.seqid()
            ))),
            Ok(_) => Ok(()),
        }
    }
}
