//! `evfs dmtable`: the device-mapper table line with which the stock kernel
//! (dm-crypt) maps a volume's data area, so that the data can be reached
//! without evfs: `evfs dmtable VOL -k ID | dmsetup create NAME`.
//!
//! The data area is AES-XTS with the `plain64` tweak counted in volume
//! sectors from the start of the data area, which is dm-crypt's
//! `aes-xts-plain64` with `iv_offset` 0 and, for 4096-byte sectors,
//! `sector_size:4096 iv_large_sectors`. A LUKS volume's line is the one
//! cryptsetup loads when it opens the volume (IVs in 512-byte units from the
//! segment's `iv_tweak`, no `iv_large_sectors`). The line carries the volume
//! key in hex, as every dm-crypt table does.

use std::path::Path;

use zeroize::Zeroizing;

use super::{Ctx, DATA_ROLES, out};
use crate::cli::{LuksArgs, OptKeyArgs};
use crate::crypto::VolumeKey;
use crate::emd::Emd;
use crate::error::{Error, Result};
use crate::hex;
use crate::keys::KeyId;
use crate::luks::DataArea;
use crate::ops::KeyUse;
use crate::volume::{Device, Identity, Volume};

/// Bytes per device-mapper sector: table lengths and offsets count in these.
const DM_SECTOR: u64 = 512;

pub fn run(ctx: &Ctx, vol: &Path, key: &OptKeyArgs, luks: &LuksArgs) -> Result<()> {
    let id = key.key.as_deref().map(KeyId::parse).transpose()?;
    let files = super::luks::SecretFiles::source(luks);
    super::luks::one_stdin(
        &files,
        &[(
            "--passphrase-file",
            key.passphrase_file.as_deref() == Some(Path::new("-")),
        )],
    )?;
    let keys = super::CliKeys::new(ctx, key.passphrase_file.clone(), None).with_luks(files);
    if let Some(u) = crate::ops::luks::open_unlocked(
        vol,
        &super::luks::access(luks),
        &keys,
        KeyUse::Volume,
        id.as_ref().map(|i| (i, KeyUse::Volume)),
    )? {
        if u.vol.is_detached() {
            ctx.note(format!(
                "evfs dmtable: the header of {} is detached; the line maps the data device only",
                vol.display()
            ));
        }
        let device = dm_device(&u.vol.dev, vol)?;
        note_file(ctx, &u.vol.dev, vol);
        let line = luks_table_line(&u, &device);
        warn_key(vol);
        return out(line.as_str());
    }
    let v = Volume::open(vol, false)?;
    let Some(id) = id else {
        return Err(Error::access(format!(
            "{} is an EVFS volume: its table line needs its key",
            vol.display()
        ))
        .with_hint("give -k ID"));
    };
    let pk = crate::keys::passphrase::unlock(
        &ctx.keystore()?,
        &id,
        &crate::keys::PassphraseSource::file(key.passphrase_file.as_deref()),
    )?;
    let unlocked = v.unlock(&pk, DATA_ROLES, "map its data")?;
    v.require_enabled("mapped decrypted")?;
    if v.emd.dirty {
        ctx.note(format!(
            "evfs dmtable: warning: {} is dirty (a writer did not shut it down); check it with `evfs check`",
            vol.display()
        ));
    }
    let device = dm_device(&v.dev, vol)?;
    note_file(ctx, &v.dev, vol);
    let line = table_line(&v.emd, &unlocked.key, &device);
    warn_key(vol);
    out(line.as_str())
}

/// dm-crypt needs a block device: say how to get one for a file.
fn note_file(ctx: &Ctx, dev: &Device, vol: &Path) {
    if !dev.is_block() {
        ctx.note(format!(
            "evfs dmtable: {} is a regular file; dm-crypt needs a block device: attach it with \
             `losetup --find --show {}` and run dmtable on the loop device",
            vol.display(),
            vol.display()
        ));
    }
}

/// A warning, not a note: it must reach whoever runs this, even with -q.
fn warn_key(vol: &Path) {
    super::to_stderr(&format!(
        "evfs dmtable: warning: the table line holds the volume key of {} in the clear; \
         anyone who sees it can decrypt the volume for as long as the key is unchanged. \
         Pipe it into dmsetup; keep it out of logs, files and shell history.\n",
        vol.display()
    ));
}

/// The device as the table names it: the absolute path (the kernel resolves
/// it when the table is loaded, from any directory), or `major:minor` for a
/// block device whose path a whitespace-separated table cannot hold.
fn dm_device(dev: &Device, vol: &Path) -> Result<String> {
    let path = std::path::absolute(vol).unwrap_or_else(|_| vol.to_path_buf());
    if let Some(text) = path.to_str()
        && !text.chars().any(char::is_whitespace)
    {
        return Ok(text.to_string());
    }
    match dev.identity() {
        Identity::Block { rdev } => Ok(format!(
            "{}:{}",
            rustix::fs::major(rdev),
            rustix::fs::minor(rdev)
        )),
        _ => Err(Error::usage(format!(
            "{} cannot be named in a device-mapper table (whitespace or non-UTF-8 in the path)",
            vol.display()
        ))
        .with_hint("attach it with losetup and run dmtable on the loop device")),
    }
}

/// `0 <sectors> crypt aes-xts-plain64 <key> 0 <device> <offset> [<#opts> <opts>]`,
/// newline-terminated, in a buffer wiped when dropped.
fn table_line(emd: &Emd, key: &VolumeKey, device: &str) -> Zeroizing<String> {
    let key_hex = Zeroizing::new(hex::encode(key.expose()));
    let opts = match emd.sector_size {
        512 => String::new(),
        size => format!(" 2 sector_size:{size} iv_large_sectors"),
    };
    Zeroizing::new(format!(
        "0 {} crypt aes-xts-plain64 {} 0 {device} {}{opts}\n",
        emd.data_size / DM_SECTOR,
        key_hex.as_str(),
        emd.data_offset / DM_SECTOR,
    ))
}

/// The line cryptsetup's activation of a LUKS volume loads:
/// `0 <sectors> crypt <cipher> <key> <iv_offset> <device> <offset> [1 sector_size:N]`.
/// LUKS counts IVs in 512-byte units whatever the sector size, so there is
/// no `iv_large_sectors`; the IV offset is the segment's `iv_tweak`.
fn luks_table_line(u: &crate::ops::luks::Unlocked, device: &str) -> Zeroizing<String> {
    luks_line(&u.area, u.data_size(), u.opened.key.expose(), device)
}

fn luks_line(area: &DataArea, data_size: u64, key: &[u8], device: &str) -> Zeroizing<String> {
    let key_hex = Zeroizing::new(hex::encode(key));
    let opts = match area.sector_size {
        512 => String::new(),
        size => format!(" 1 sector_size:{size}"),
    };
    Zeroizing::new(format!(
        "0 {} crypt {} {} {} {device} {}{opts}\n",
        data_size / DM_SECTOR,
        area.cipher.name(),
        key_hex.as_str(),
        area.iv_tweak,
        area.offset / DM_SECTOR,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Cipher;

    fn emd(sector_size: u32) -> Emd {
        let mut e = crate::emd::tests::example();
        e.sector_size = sector_size;
        e.data_offset = 1 << 20;
        e.data_size = 62 << 20;
        e
    }

    #[test]
    fn lines_count_in_512_byte_units_and_name_large_sectors() {
        let key = VolumeKey::from_bytes(Cipher::Aes256Xts, &[0xab; 64]).unwrap();
        let line = table_line(&emd(4096), &key, "/dev/loop7");
        let want = format!(
            "0 126976 crypt aes-xts-plain64 {} 0 /dev/loop7 2048 2 sector_size:4096 iv_large_sectors\n",
            "ab".repeat(64)
        );
        assert_eq!(line.as_str(), want);
        let key = VolumeKey::from_bytes(Cipher::Aes128Xts, &[0x01; 32]).unwrap();
        let line = table_line(&emd(512), &key, "/dev/sdb1");
        let want = format!(
            "0 126976 crypt aes-xts-plain64 {} 0 /dev/sdb1 2048\n",
            "01".repeat(32)
        );
        assert_eq!(line.as_str(), want);
    }
}

#[cfg(test)]
mod luks_tests {
    use super::*;
    use crate::luks::SectorCipherKind;

    #[test]
    fn luks_lines_count_ivs_in_512_byte_units_from_the_iv_tweak() {
        let area = DataArea {
            cipher: SectorCipherKind::AesXtsPlain64,
            offset: 16 << 20,
            size: None,
            sector_size: 4096,
            iv_tweak: 8,
        };
        let line = luks_line(&area, 64 << 20, &[0xab; 64], "/dev/loop3");
        let want = format!(
            "0 131072 crypt aes-xts-plain64 {} 8 /dev/loop3 32768 1 sector_size:4096\n",
            "ab".repeat(64)
        );
        assert_eq!(line.as_str(), want);
        assert!(!line.contains("iv_large_sectors"));
        let essiv = DataArea {
            cipher: SectorCipherKind::AesCbcEssivSha256,
            offset: 2 << 20,
            size: None,
            sector_size: 512,
            iv_tweak: 0,
        };
        let line = luks_line(&essiv, 1 << 20, &[1; 32], "/dev/sdb");
        assert_eq!(
            line.as_str(),
            format!(
                "0 2048 crypt aes-cbc-essiv:sha256 {} 0 /dev/sdb 4096\n",
                "01".repeat(32)
            )
        );
    }
}
