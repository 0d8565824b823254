//! LUKS volumes in the use-cases: opening and unlocking them, reading their
//! plaintext through the pipeline, the tokens evfs keeps in LUKS2 headers,
//! `info` and `check` on them, and `luks enroll` / `luks unenroll`.
//!
//! A LUKS volume opens with, first found wins: the passphrase or key file
//! the caller gave ([`Keys::luks_secret`]); an evfs key pair (`-k ID`)
//! enrolled in it ([`enroll`]); a passphrase asked for on a terminal
//! ([`Keys::luks_prompt`]). The data is decrypted by the same XTS kernels
//! as an EVFS volume's, with dm-crypt's IV rule (tweaks in 512-byte units
//! from the segment's `iv_tweak`); old LUKS1 volumes in
//! `aes-cbc-essiv:sha256` are decrypted chunk by chunk as the pipeline
//! reads them (`Decrypting`).

pub mod check;
pub mod enroll;
pub mod info;
pub(crate) mod restore;
pub mod token;
pub(crate) mod verify;

use std::path::{Path, PathBuf};

use super::{KeyUse, Keys};
use crate::crypto::Passphrase;
use crate::error::{CliAdvice, Error, Result};
use crate::keys::{KeyId, PrivateKey};
use crate::luks::{self, DataArea, LuksKey, SectorCipher, SectorCipherKind};
use crate::pipeline::{Input, SectorKey, Source};
use crate::volume::luks::LuksVolume;

/// How to reach a LUKS volume besides its secret: the keyslot to try and
/// a detached header. All `None`: every keyslot, the header on the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LuksAccess {
    /// Try only this keyslot (cryptsetup's `--key-slot`).
    pub slot: Option<u32>,
    /// The header is in this file (cryptsetup's `--header`).
    pub header: Option<PathBuf>,
}

/// The Argon2id cost of keyslots evfs creates; `None` fields take
/// cryptsetup's compiled-in defaults (1 GiB, 4 passes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LuksKdf {
    /// Argon2id memory in KiB (`--luks-kdf-memory`).
    pub memory_kib: Option<u32>,
    /// Argon2id passes (`--luks-kdf-iterations`).
    pub iterations: Option<u32>,
}

impl LuksKdf {
    /// The parameters, checked against what cryptsetup would create (exit 2).
    pub fn params(self) -> Result<luks::Argon2Params> {
        let d = luks::Argon2Params::CRYPTSETUP_DEFAULT;
        let memory_kib = self.memory_kib.unwrap_or(d.memory_kib);
        luks::Argon2Params {
            memory_kib,
            iterations: self.iterations.unwrap_or(d.iterations),
            // cryptsetup's rule: at least 8 KiB of memory per lane.
            parallel: d.parallel.min(memory_kib / 8).max(1),
        }
        .validate()
        .map_err(|e| Error::usage(format!("--luks-kdf-memory/--luks-kdf-iterations: {e}")))
    }
}

/// What opened a LUKS volume.
pub struct Opened {
    /// The volume key.
    pub key: LuksKey,
    /// The keyslot that opened.
    pub keyslot: u32,
    /// The evfs key pair whose token opened it (`-k`).
    pub by_key: Option<PrivateKey>,
}

/// An evfs key pair that may open a LUKS volume through its token, and
/// whose passphrase it is (`-k` or `--target-key`).
pub type KeyPair<'a> = Option<(&'a KeyId, KeyUse)>;

/// Unlock `vol` for `purpose`: the secret the caller gave, else the token
/// of the key pair `key`, else a passphrase asked for. Exit 4 when none
/// is there or none opens a keyslot.
pub fn unlock(
    vol: &LuksVolume,
    access: &LuksAccess,
    keys: &dyn Keys,
    purpose: KeyUse,
    key: KeyPair<'_>,
) -> Result<Opened> {
    try_unlock(vol, access, keys, purpose, key)?.ok_or_else(|| no_secret(vol.path(), purpose))
}

/// [`unlock`], or `None` when there is nothing to open `vol` with (no
/// secret given, no key pair, nobody to ask).
pub fn try_unlock(
    vol: &LuksVolume,
    access: &LuksAccess,
    keys: &dyn Keys,
    purpose: KeyUse,
    key: KeyPair<'_>,
) -> Result<Option<Opened>> {
    let opened = |u: luks::Unlocked| Opened {
        key: u.key,
        keyslot: u.keyslot,
        by_key: None,
    };
    if let Some(secret) = keys.luks_secret(purpose)? {
        return Ok(Some(opened(vol.unlock(&secret, access.slot)?)));
    }
    if let Some((id, key_use)) = key {
        return enroll::unlock_with_key(vol, keys, key_use, id).map(Some);
    }
    match keys.luks_prompt(&vol.path().display().to_string(), false)? {
        Some(secret) => Ok(Some(opened(vol.unlock(&secret, access.slot)?))),
        None => Ok(None),
    }
}

/// A LUKS volume, unlocked, and the data area it is read through.
pub struct Unlocked {
    /// The open volume.
    pub vol: LuksVolume,
    /// Where and how its data is encrypted.
    pub area: DataArea,
    /// The key and what opened it.
    pub opened: Opened,
}

impl Unlocked {
    /// Bytes of data (whole sectors) on the device.
    pub fn data_size(&self) -> u64 {
        self.vol.data_size(&self.area)
    }
}

/// The LUKS volume at `path` (or described by `access.header`), unlocked
/// for `purpose`; `None` when `path` is no LUKS volume. A volume evfs
/// cannot read is refused (exit 3) before any secret is asked for.
pub fn open_unlocked(
    path: &Path,
    access: &LuksAccess,
    keys: &dyn Keys,
    purpose: KeyUse,
    key: KeyPair<'_>,
) -> Result<Option<Unlocked>> {
    let Some(vol) = LuksVolume::probe(path, access.header.as_deref())? else {
        return Ok(None);
    };
    let area = vol.data_area()?;
    let opened = unlock(&vol, access, keys, purpose, key)?;
    Ok(Some(Unlocked { vol, area, opened }))
}

/// A LUKS UUID (`0a7c5e2e-6f3b-…`) as 16 bytes, when it is one.
pub(crate) fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if text.len() != 36 {
        return None;
    }
    crate::hex::decode_array(&hex)
}

/// Exit 4: a LUKS volume and nothing to open it with.
pub(crate) fn no_secret(path: &Path, purpose: KeyUse) -> Error {
    Error::access(format!(
        "{} is a LUKS volume: opening it needs its passphrase or key file (none was given, and there is no terminal to ask on)",
        path.display()
    ))
    .with_hint(CliAdvice::LuksSecret {
        target: purpose == KeyUse::Target,
    })
}

/// The pipeline key of a data area in `aes-xts-plain64` (tweak step and
/// base as dm-crypt counts them); `None` for `aes-cbc-essiv:sha256`, which
/// [`Decrypting`] handles.
pub(crate) fn sector_key(area: &DataArea, key: &LuksKey) -> Result<Option<SectorKey>> {
    if area.cipher != SectorCipherKind::AesXtsPlain64 {
        return Ok(None);
    }
    // Every sector any device can hold gets a 64-bit IV (a hostile
    // `iv_tweak` near 2^64 would otherwise wrap).
    if area
        .iv_of(u64::MAX / u64::from(area.sector_size.max(512)))
        .is_none()
    {
        return Err(Error::refused(format!(
            "unsupported LUKS volume: IV offset {} leaves no room for 64-bit sector IVs",
            area.iv_tweak
        )));
    }
    let xts = crate::crypto::Xts::new(key.expose())
        .map_err(|e| Error::refused(format!("unsupported LUKS volume key: {e}")))?
        .with_tweak_step(area.iv_step());
    Ok(Some(SectorKey {
        xts,
        sector_size: area.sector_size as usize,
        tweak_base: area.iv_tweak,
    }))
}

/// The cipher of a data area for [`Decrypting`], when the pipeline's XTS
/// kernels cannot run it.
pub(crate) fn chunk_cipher(area: &DataArea, key: &LuksKey) -> Result<Option<SectorCipher>> {
    if area.cipher == SectorCipherKind::AesXtsPlain64 {
        return Ok(None);
    }
    Ok(Some(area.cipher(key).map_err(Error::from)?))
}

/// A source of ciphertext turned into plaintext chunk by chunk in the
/// reader thread, for data areas the pipeline's XTS kernels cannot decrypt
/// (LUKS1 `aes-cbc-essiv:sha256`). Chunks start on sector boundaries (the
/// pipeline reads whole chunks, a multiple of every sector size).
pub(crate) struct Decrypting {
    inner: Box<dyn Source>,
    cipher: SectorCipher,
    /// Data offset of the next chunk.
    offset: u64,
}

impl Decrypting {
    /// Decrypt what `inner` yields from data offset `start`.
    pub(crate) fn new(inner: Box<dyn Source>, cipher: SectorCipher, start: u64) -> Self {
        Decrypting {
            inner,
            cipher,
            offset: start,
        }
    }
}

impl Source for Decrypting {
    fn total(&self) -> Option<u64> {
        self.inner.total()
    }

    fn next(&mut self, max: usize) -> Result<Option<Input>> {
        let Some(mut input) = self.inner.next(max.min(crate::pipeline::CHUNK))? else {
            return Ok(None);
        };
        // In the chunk's own buffer (a whole chunk long): the last sector
        // is padded with zeros to be decrypted whole.
        let len = input.len();
        let ss = self.cipher.sector_size();
        let whole = len.next_multiple_of(ss);
        let buf = input.buffer_mut();
        buf[len..whole].fill(0);
        let sector = self.offset / ss as u64;
        self.cipher
            .decrypt(&mut buf[..whole], sector)
            .map_err(Error::from)?;
        self.offset += len as u64;
        Ok(Some(input))
    }
}

/// Read the secret file given for a LUKS volume: a passphrase file (one
/// trailing newline stripped, as a passphrase typed or piped to cryptsetup
/// is) or a key file (cryptsetup's `--key-file`: all of it, a trailing
/// newline included). `-` is standard input.
pub fn read_secret_file(path: &Path, key_file: bool) -> Result<Passphrase> {
    let secret = if path == Path::new("-") {
        luks::read_key(std::io::stdin().lock())
    } else {
        luks::read_key_file(path)
    }
    .map_err(|e| match e {
        luks::LuksError::Io(io) => Error::io("reading", path, io),
        e => crate::volume::luks::luks_error(path, e),
    })?;
    if key_file {
        if secret.expose().is_empty() {
            return Err(Error::usage(format!(
                "the key file {} is empty",
                path.display()
            )));
        }
        return Ok(secret);
    }
    let mut bytes = secret.expose();
    if let Some(rest) = bytes.strip_suffix(b"\n") {
        bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    if bytes.is_empty() {
        return Err(Error::usage(format!(
            "the passphrase file {} is empty",
            path.display()
        )));
    }
    Ok(Passphrase::new(bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_files_lose_one_newline_key_files_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, b"secret\n").unwrap();
        assert_eq!(read_secret_file(&p, false).unwrap().expose(), b"secret");
        assert_eq!(read_secret_file(&p, true).unwrap().expose(), b"secret\n");
        std::fs::write(&p, b"two\n\n").unwrap();
        assert_eq!(read_secret_file(&p, false).unwrap().expose(), b"two\n");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(
            crate::error::expect_err(read_secret_file(&p, true)).exit_code(),
            2
        );
        assert_eq!(
            crate::error::expect_err(read_secret_file(&dir.path().join("none"), true)).exit_code(),
            1
        );
    }

    #[test]
    fn an_iv_offset_that_would_wrap_is_refused() {
        let mut area = DataArea {
            cipher: SectorCipherKind::AesXtsPlain64,
            offset: 0,
            size: None,
            sector_size: 4096,
            iv_tweak: u64::MAX - 10,
        };
        let key = LuksKey::new(vec![7; 64]);
        let e = crate::error::expect_err(sector_key(&area, &key).map(|_| ()));
        assert_eq!(e.exit_code(), 3);
        area.iv_tweak = 24;
        let k = sector_key(&area, &key).unwrap().unwrap();
        assert_eq!(
            (k.tweak_base, k.sector_size, k.xts.tweak_step()),
            (24, 4096, 8)
        );
    }

    #[test]
    fn kdf_defaults_are_cryptsetups_and_limits_are_checked() {
        assert_eq!(
            LuksKdf::default().params().unwrap(),
            luks::Argon2Params::CRYPTSETUP_DEFAULT
        );
        let small = LuksKdf {
            memory_kib: Some(32),
            iterations: Some(4),
        }
        .params()
        .unwrap();
        assert_eq!((small.memory_kib, small.parallel), (32, 4));
        let bad = LuksKdf {
            memory_kib: Some(16),
            iterations: None,
        };
        assert_eq!(crate::error::expect_err(bad.params()).exit_code(), 2);
        let few = LuksKdf {
            memory_kib: None,
            iterations: Some(3),
        };
        assert_eq!(crate::error::expect_err(few.params()).exit_code(), 2);
    }
}
