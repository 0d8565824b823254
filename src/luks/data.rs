//! The data area of a LUKS volume, described for the code that will read or
//! write it: where it lies, its sector size, its cipher, and the IV rule.
//!
//! The IV rule is dm-crypt's, which cryptsetup sets up for LUKS: the IV
//! (for `plain64` and `essiv` alike) is a sector number counted in 512-byte
//! units whatever the sector size, plus the segment's `iv_tweak` (LUKS2;
//! 0 for LUKS1). Data sector `n` (counted in sectors of the volume's size
//! from the start of the data area) therefore has IV
//! `n * sector_size / 512 + iv_tweak`: sector 1 of a volume with
//! 4096-byte sectors is decrypted with IV 8.

use super::LuksKey;
use super::error::{Result, invalid, unsupported};
use super::keyslot::SectorCipherKind;
use crate::crypto::Xts;
use crate::crypto::essiv::EssivCbc;

/// Where and how a LUKS volume's data is encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataArea {
    /// The sector cipher.
    pub cipher: SectorCipherKind,
    /// Byte offset of the data from the start of the device.
    pub offset: u64,
    /// Bytes of data, or `None` when the data runs to the end of the device
    /// (LUKS1 always; LUKS2 `"size": "dynamic"`).
    pub size: Option<u64>,
    /// 512 for LUKS1; 512, 1024, 2048 or 4096 for LUKS2.
    pub sector_size: u32,
    /// IV of the first data sector, in 512-byte units.
    pub iv_tweak: u64,
}

impl DataArea {
    /// IV units per sector: `sector_size / 512`.
    pub fn iv_step(&self) -> u64 {
        u64::from(self.sector_size / 512)
    }

    /// The IV (XTS tweak, ESSIV sector number) of data sector `n`; `None`
    /// if it does not fit in 64 bits.
    pub fn iv_of(&self, n: u64) -> Option<u64> {
        n.checked_mul(self.iv_step())?.checked_add(self.iv_tweak)
    }

    /// Bytes of data on a device of `device_size` bytes (whole sectors).
    pub fn data_size(&self, device_size: u64) -> u64 {
        let avail = device_size.saturating_sub(self.offset);
        let size = self.size.map_or(avail, |s| s.min(avail));
        size - size % u64::from(self.sector_size)
    }

    /// The sector cipher keyed with `key` (from this volume's unlock).
    pub fn cipher(&self, key: &LuksKey) -> Result<SectorCipher> {
        if !self.cipher.key_len_ok(key.len()) {
            return Err(invalid(format!(
                "a {}-byte key does not fit {}",
                key.len(),
                self.cipher.name()
            )));
        }
        let imp = match self.cipher {
            SectorCipherKind::AesXtsPlain64 => Imp::Xts(
                Xts::new(key.expose())
                    .map_err(|e| unsupported(e.to_string()))?
                    .with_tweak_step(self.iv_step()),
            ),
            SectorCipherKind::AesCbcEssivSha256 => {
                if self.sector_size != 512 {
                    return Err(unsupported(
                        "aes-cbc-essiv:sha256 with sectors larger than 512 bytes",
                    ));
                }
                Imp::Essiv(EssivCbc::new(key.expose()).map_err(|e| unsupported(e.to_string()))?)
            }
        };
        Ok(SectorCipher {
            imp,
            area: self.clone(),
        })
    }
}

enum Imp {
    Xts(Xts),
    Essiv(EssivCbc),
}

/// A LUKS data area's cipher, keyed: decrypts and encrypts whole sectors
/// given their number in the data area, applying the IV rule. Holds key
/// material: no `Debug`, no `Clone`; wiped on drop by the ciphers.
pub struct SectorCipher {
    imp: Imp,
    area: DataArea,
}

impl SectorCipher {
    /// Bytes of a sector.
    pub fn sector_size(&self) -> usize {
        self.area.sector_size as usize
    }

    /// Decrypt `data` (whole sectors) in place; its first sector is data
    /// sector `first_sector`.
    pub fn decrypt(&self, data: &mut [u8], first_sector: u64) -> Result<()> {
        self.run(data, first_sector, false)
    }

    /// Encrypt `data` (whole sectors) in place; its first sector is data
    /// sector `first_sector`.
    pub fn encrypt(&self, data: &mut [u8], first_sector: u64) -> Result<()> {
        self.run(data, first_sector, true)
    }

    fn run(&self, data: &mut [u8], first_sector: u64, encrypt: bool) -> Result<()> {
        let ss = self.sector_size();
        if !data.len().is_multiple_of(ss) {
            return Err(invalid(format!(
                "{} bytes are not whole {ss}-byte sectors",
                data.len()
            )));
        }
        let sectors = (data.len() / ss) as u64;
        if sectors == 0 {
            return Ok(());
        }
        // The IV of the last sector must fit in 64 bits, or the ciphers
        // would refuse (panic) on it.
        let first_iv = self.area.iv_of(first_sector);
        let last_iv = first_sector
            .checked_add(sectors - 1)
            .and_then(|n| self.area.iv_of(n));
        let (Some(first_iv), Some(_)) = (first_iv, last_iv) else {
            return Err(invalid("sector number out of range for a 64-bit IV"));
        };
        match &self.imp {
            Imp::Xts(x) if encrypt => x.encrypt_sectors(data, ss, first_iv),
            Imp::Xts(x) => x.decrypt_sectors(data, ss, first_iv),
            Imp::Essiv(c) if encrypt => c.encrypt_sectors(data, first_iv),
            Imp::Essiv(c) => c.decrypt_sectors(data, first_iv),
        }
        Ok(())
    }
}
