//! A volume's data area as an NBD export (`evfs map`): the plaintext, through
//! the volume key, or the ciphertext as it lies (`--raw`).
//!
//! NBD clients read and write at any byte offset and length; XTS works on
//! whole sectors. A read therefore fetches and decrypts the sectors that
//! cover the range; a write that covers only part of a sector reads that
//! sector, decrypts it, patches the bytes, and encrypts and writes the whole
//! sector back. Sector numbers (the XTS tweak) count from the start of the
//! data area, as everywhere else (see `formats/EMD.md`).
//!
//! Every connection runs on its own thread. One reader-writer lock keeps a
//! read-modify-write atomic against any other request: reads share it,
//! writes take it alone. That is coarse, but a single volume behind one
//! socket is I/O bound and this keeps torn sectors impossible.
//!
//! Trim is not offered: discarding blocks would punch holes that show which
//! parts of the volume are unused (dm-crypt leaves `allow_discards` off for
//! the same reason), and writing encrypted zeros instead gains the client
//! nothing over `NBD_CMD_WRITE_ZEROES`, which is served.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{PoisonError, RwLock};

use crate::crypto::Xts;
use crate::nbd::Export;

/// The sector cipher of a data area.
pub enum ExportCipher {
    /// An EVFS volume's: the tweak is the sector number in the data area.
    Evfs(Xts),
    /// A LUKS volume's, with dm-crypt's IV rule (512-byte units, the
    /// segment's `iv_tweak`).
    Luks(crate::luks::SectorCipher),
}

impl ExportCipher {
    fn run(&self, buf: &mut [u8], sector: usize, first: u64, encrypt: bool) -> io::Result<()> {
        match self {
            ExportCipher::Evfs(x) if encrypt => x.encrypt_sectors(buf, sector, first),
            ExportCipher::Evfs(x) => x.decrypt_sectors(buf, sector, first),
            ExportCipher::Luks(c) => {
                let r = if encrypt {
                    c.encrypt(buf, first)
                } else {
                    c.decrypt(buf, first)
                };
                r.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            }
        }
        Ok(())
    }

    fn decrypt(&self, buf: &mut [u8], sector: usize, first: u64) -> io::Result<()> {
        self.run(buf, sector, first, false)
    }

    fn encrypt(&self, buf: &mut [u8], sector: usize, first: u64) -> io::Result<()> {
        self.run(buf, sector, first, true)
    }
}

/// The data area of one open volume, served to NBD clients.
pub struct VolumeExport {
    file: File,
    /// Byte offset of the data area on the device.
    base: u64,
    /// Bytes in the data area (a multiple of `sector`).
    size: u64,
    sector: u64,
    /// The sector cipher; `None` serves the ciphertext as it lies.
    xts: Option<ExportCipher>,
    read_only: bool,
    /// Shared by reads, taken alone by writes (see the module notes).
    lock: RwLock<()>,
}

impl VolumeExport {
    /// Serve `size` bytes from `base` of `file`, in sectors of `sector`
    /// bytes, decrypted with `xts` (or raw when `None`).
    pub fn new(
        file: File,
        (base, size): (u64, u64),
        sector: u32,
        xts: Option<ExportCipher>,
        read_only: bool,
    ) -> VolumeExport {
        VolumeExport {
            file,
            base,
            size,
            sector: u64::from(sector),
            xts,
            read_only,
            lock: RwLock::new(()),
        }
    }

    /// The whole sectors that cover `len` bytes at `offset`: (start, end).
    fn span(&self, offset: u64, len: usize) -> (u64, u64) {
        let start = offset - offset % self.sector;
        let end = (offset + len as u64).div_ceil(self.sector) * self.sector;
        (start, end)
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "request beyond the end of the data area",
            )),
        }
    }

    /// Read and decrypt the single sector at data offset `at` into `buf`.
    fn read_sector(&self, xts: &ExportCipher, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, self.base + at)?;
        xts.decrypt(buf, buf.len(), at / self.sector)
    }
}

impl Export for VolumeExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn block_size(&self) -> u32 {
        // Set from a u32 in `new`.
        self.sector as u32
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let _shared = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        let Some(xts) = &self.xts else {
            return self.file.read_exact_at(buf, self.base + offset);
        };
        let sector = self.sector as usize;
        let (start, end) = self.span(offset, buf.len());
        if (start, end) == (offset, offset + buf.len() as u64) {
            self.file.read_exact_at(buf, self.base + offset)?;
            return xts.decrypt(buf, sector, start / self.sector);
        }
        let mut whole = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut whole, self.base + start)?;
        xts.decrypt(&mut whole, sector, start / self.sector)?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&whole[at..at + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the volume is mapped read-only",
            ));
        }
        self.check(offset, buf.len())?;
        let _alone = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let Some(xts) = &self.xts else {
            return self.file.write_all_at(buf, self.base + offset);
        };
        let sector = self.sector as usize;
        let (start, end) = self.span(offset, buf.len());
        let mut whole = vec![0u8; (end - start) as usize];
        let head_partial = offset != start;
        let tail_partial = offset + buf.len() as u64 != end;
        if head_partial {
            self.read_sector(xts, &mut whole[..sector], start)?;
        }
        // One sector that is partial at both ends was read just above.
        if tail_partial && !(head_partial && whole.len() == sector) {
            let last = whole.len() - sector;
            self.read_sector(xts, &mut whole[last..], end - self.sector)?;
        }
        let at = (offset - start) as usize;
        whole[at..at + buf.len()].copy_from_slice(buf);
        xts.encrypt(&mut whole, sector, start / self.sector)?;
        self.file.write_all_at(&whole, self.base + start)
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn trim(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "trim is not offered on an encrypted volume",
        ))
    }

    fn supports_trim(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fill;
    use std::sync::Arc;

    const BASE: u64 = 8192;

    fn key() -> Vec<u8> {
        (0u8..64)
            .map(|b| b.wrapping_mul(37).wrapping_add(11))
            .collect()
    }

    /// A file with `BASE` bytes of header, then `plain` encrypted, then a
    /// trailer; and an export of its data area.
    fn setup(plain: &[u8], sector: u32, raw: bool) -> (tempfile::NamedTempFile, VolumeExport) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut ct = plain.to_vec();
        Xts::new(&key())
            .unwrap()
            .encrypt_sectors(&mut ct, sector as usize, 0);
        let mut image = vec![0xee; BASE as usize];
        image.extend_from_slice(&ct);
        image.extend_from_slice(&[0xdd; 4096]);
        std::fs::write(tmp.path(), &image).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp.path())
            .unwrap();
        let xts = (!raw).then(|| ExportCipher::Evfs(Xts::new(&key()).unwrap()));
        let export = VolumeExport::new(file, (BASE, plain.len() as u64), sector, xts, false);
        (tmp, export)
    }

    /// The plaintext of the data area as it lies in the file now.
    fn decrypted(tmp: &tempfile::NamedTempFile, len: usize, sector: usize) -> Vec<u8> {
        let image = std::fs::read(tmp.path()).unwrap();
        assert_eq!(&image[..BASE as usize], &[0xee; BASE as usize][..]);
        assert_eq!(&image[BASE as usize + len..], &[0xdd; 4096][..]);
        let mut data = image[BASE as usize..BASE as usize + len].to_vec();
        Xts::new(&key())
            .unwrap()
            .decrypt_sectors(&mut data, sector, 0);
        data
    }

    #[test]
    fn reads_at_any_offset_and_length_return_the_plaintext() {
        for sector in [512u32, 4096] {
            let plain = fill(u64::from(sector), 6 * 4096);
            let (_tmp, export) = setup(&plain, sector, false);
            assert_eq!(export.block_size(), sector);
            for (off, len) in [
                (0, 0),
                (0, 1),
                (0, 4096),
                (1, 4095),
                (511, 2),
                (4095, 2),
                (1000, 3333),
                (0, 6 * 4096),
                (6 * 4096 - 1, 1),
                (4096, 8192),
            ] {
                let mut buf = vec![0u8; len];
                export.read_at(&mut buf, off as u64).unwrap();
                assert_eq!(
                    buf,
                    &plain[off..off + len],
                    "sector {sector} at {off}+{len}"
                );
            }
            let mut past = [0u8; 2];
            assert!(export.read_at(&mut past, 6 * 4096 - 1).is_err());
        }
    }

    #[test]
    fn writes_at_any_offset_land_encrypted_and_leave_the_rest_alone() {
        for sector in [512u32, 4096] {
            let mut model = fill(7, 8 * 4096);
            let (tmp, export) = setup(&model, sector, false);
            for (i, (off, len)) in [
                (0usize, 1usize),
                (1000, 3333),
                (4095, 2),
                (4096, 4096),
                (8191, 8194),
                (100, 10),
                (8 * 4096 - 3, 3),
                (512, 512),
                (0, 8 * 4096),
                (30000, 1),
            ]
            .into_iter()
            .enumerate()
            {
                let data = fill(100 + i as u64, len);
                export.write_at(&data, off as u64).unwrap();
                model[off..off + len].copy_from_slice(&data);
                assert_eq!(
                    decrypted(&tmp, model.len(), sector as usize),
                    model,
                    "sector {sector}, after writing {off}+{len}"
                );
                let mut back = vec![0u8; len];
                export.read_at(&mut back, off as u64).unwrap();
                assert_eq!(back, data);
            }
            export.flush().unwrap();
            assert!(export.write_at(&[1, 2], 8 * 4096 - 1).is_err());
        }
    }

    #[test]
    fn raw_exports_serve_the_ciphertext_as_it_lies() {
        let plain = fill(3, 4 * 4096);
        let (tmp, export) = setup(&plain, 4096, true);
        let image = std::fs::read(tmp.path()).unwrap();
        let mut buf = vec![0u8; 5000];
        export.read_at(&mut buf, 77).unwrap();
        assert_eq!(buf, &image[BASE as usize + 77..BASE as usize + 5077]);
        export.write_at(b"ciphertext", 4093).unwrap();
        let image = std::fs::read(tmp.path()).unwrap();
        assert_eq!(
            &image[BASE as usize + 4093..BASE as usize + 4103],
            b"ciphertext"
        );
    }

    #[test]
    fn read_only_exports_refuse_writes_and_offer_no_trim() {
        let plain = fill(1, 4096);
        let (tmp, _) = setup(&plain, 4096, false);
        let file = File::open(tmp.path()).unwrap();
        let export = VolumeExport::new(
            file,
            (BASE, 4096),
            4096,
            Xts::new(&key()).ok().map(ExportCipher::Evfs),
            true,
        );
        assert!(export.read_only());
        let e = export.write_at(b"x", 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(!export.supports_trim());
        assert!(export.trim(0, 4096).is_err());
        export.flush().unwrap();
    }

    /// Regression guard for the lock: concurrent partial writes into the
    /// same sectors must not lose each other's bytes (an unguarded
    /// read-modify-write would).
    #[test]
    fn concurrent_partial_writes_to_one_sector_all_land() {
        let plain = vec![0u8; 2 * 4096];
        let (tmp, export) = setup(&plain, 4096, false);
        let export = Arc::new(export);
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let export = export.clone();
                std::thread::spawn(move || {
                    for round in 0..50u64 {
                        // Byte t of every 8 belongs to thread t.
                        let off = u64::from(t) + 8 * ((round * 131) % 1024);
                        export.write_at(&[t + 1], off).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let data = decrypted(&tmp, plain.len(), 4096);
        for t in 0..8u8 {
            for round in 0..50u64 {
                let off = (u64::from(t) + 8 * ((round * 131) % 1024)) as usize;
                assert_eq!(data[off], t + 1, "thread {t} round {round}");
            }
        }
    }

    /// A LUKS data area: 4096-byte sectors with IVs in 512-byte units from
    /// an `iv_tweak`, read and written through the export.
    #[test]
    fn a_luks_data_area_is_served_with_dm_cryptss_iv_rule() {
        use crate::luks::{DataArea, LuksKey, SectorCipherKind};
        let area = DataArea {
            cipher: SectorCipherKind::AesXtsPlain64,
            offset: BASE,
            size: None,
            sector_size: 4096,
            iv_tweak: 24,
        };
        let plain = fill(5, 4 * 4096);
        let mut ct = plain.clone();
        Xts::new(&key())
            .unwrap()
            .with_tweak_step(8)
            .encrypt_sectors(&mut ct, 4096, 24);
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut image = vec![0xee; BASE as usize];
        image.extend_from_slice(&ct);
        std::fs::write(tmp.path(), &image).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp.path())
            .unwrap();
        let cipher = area.cipher(&LuksKey::new(key())).unwrap();
        let export = VolumeExport::new(
            file,
            (BASE, plain.len() as u64),
            4096,
            Some(ExportCipher::Luks(cipher)),
            false,
        );
        let mut buf = vec![0u8; 5000];
        export.read_at(&mut buf, 4000).unwrap();
        assert_eq!(buf, &plain[4000..9000]);
        export.write_at(b"luks", 8190).unwrap();
        let mut expect = plain.clone();
        expect[8190..8194].copy_from_slice(b"luks");
        let mut data = std::fs::read(tmp.path()).unwrap()[BASE as usize..].to_vec();
        Xts::new(&key())
            .unwrap()
            .with_tweak_step(8)
            .decrypt_sectors(&mut data, 4096, 24);
        assert_eq!(data, expect);
    }
}
