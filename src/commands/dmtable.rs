//! `evfs dmtable`: the device-mapper table line with which the stock kernel
//! (dm-crypt) maps a volume's data area, so that the data can be reached
//! without evfs: `evfs dmtable VOL -k ID | dmsetup create NAME`.
//!
//! The data area is AES-XTS with the `plain64` tweak counted in volume
//! sectors from the start of the data area, which is dm-crypt's
//! `aes-xts-plain64` with `iv_offset` 0 and, for 4096-byte sectors,
//! `sector_size:4096 iv_large_sectors`. The line carries the volume key in
//! hex, as every dm-crypt table does.

use std::path::Path;

use zeroize::Zeroizing;

use super::{Ctx, DATA_ROLES, out};
use crate::cli::KeyArgs;
use crate::crypto::VolumeKey;
use crate::emd::Emd;
use crate::error::{Error, Result};
use crate::hex;
use crate::volume::{Identity, Volume};

/// Bytes per device-mapper sector: table lengths and offsets count in these.
const DM_SECTOR: u64 = 512;

pub fn run(ctx: &Ctx, vol: &Path, key: &KeyArgs) -> Result<()> {
    let v = Volume::open(vol, false)?;
    let pk = ctx.private_key(key)?;
    let unlocked = v.unlock(&pk, DATA_ROLES, "map its data")?;
    v.require_enabled("mapped decrypted")?;
    if v.emd.dirty {
        ctx.note(format!(
            "evfs dmtable: warning: {} is dirty (a writer did not shut it down); check it with `evfs check`",
            vol.display()
        ));
    }
    let device = dm_device(&v, vol)?;
    if !v.dev.is_block() {
        ctx.note(format!(
            "evfs dmtable: {} is a regular file; dm-crypt needs a block device: attach it with \
             `losetup --find --show {}` and run dmtable on the loop device",
            vol.display(),
            vol.display()
        ));
    }
    let line = table_line(&v.emd, &unlocked.key, &device);
    // A warning, not a note: it must reach whoever runs this, even with -q.
    eprintln!(
        "evfs dmtable: warning: the table line holds the volume key of {} in the clear; \
         anyone who sees it can decrypt the volume for as long as the key is unchanged. \
         Pipe it into dmsetup; keep it out of logs, files and shell history.",
        vol.display()
    );
    out(line.as_str())
}

/// The device as the table names it: the absolute path (the kernel resolves
/// it when the table is loaded, from any directory), or `major:minor` for a
/// block device whose path a whitespace-separated table cannot hold.
fn dm_device(v: &Volume, vol: &Path) -> Result<String> {
    let path = std::path::absolute(vol).unwrap_or_else(|_| vol.to_path_buf());
    if let Some(text) = path.to_str()
        && !text.chars().any(char::is_whitespace)
    {
        return Ok(text.to_string());
    }
    match v.dev.identity() {
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
