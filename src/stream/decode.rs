//! Turning frames back into data: the plaintext of a frame (for `verify -k`)
//! or the target's ciphertext (for `restore`). Data frames already hold the
//! ciphertext and need no key; zero markers and compressed frames do.

use super::format::{FRAME_HEADER_LEN, FrameHeader, FrameKind, Header, TAG_LEN, frame_nonce};
use super::writer::StreamFramer;
use crate::crypto::{VolumeKey, Xts};
use crate::error::{Error, Result};

/// Turns the frames of one stream into plaintext or target ciphertext, with one
/// reused buffer.
pub struct FrameDecoder {
    xts: Option<Xts>,
    aead_key: Option<[u8; 32]>,
    sector_size: usize,
    buf: Vec<u8>,
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        if let Some(key) = self.aead_key.as_mut() {
            zeroize::Zeroize::zeroize(key);
        }
        // Plaintext of the last frame decoded.
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

impl FrameDecoder {
    /// `key` is the stream's target volume key, when known.
    pub fn new(header: &Header, key: Option<&VolumeKey>) -> FrameDecoder {
        FrameDecoder {
            xts: key.map(VolumeKey::xts),
            aead_key: key.map(|k| StreamFramer::aead_key(&k.stream_aead_key(), &header.stream_id)),
            sector_size: header.emd.sector_size as usize,
            buf: vec![0u8; header.chunk_size as usize],
        }
    }

    fn need_key(&self, f: &FrameHeader) -> Result<&Xts> {
        self.xts.as_ref().ok_or_else(|| missing_key(f))
    }

    /// The frame's plaintext, padded to whole sectors (`f.plain_len` bytes
    /// rounded up). Needs the key for every kind but raw data frames.
    pub fn plaintext(
        &mut self,
        f: &FrameHeader,
        payload: &[u8],
        fh: &[u8; FRAME_HEADER_LEN],
    ) -> Result<&[u8]> {
        let len = f.plain_len as usize;
        let padded = len.div_ceil(self.sector_size) * self.sector_size;
        if padded > self.buf.len() {
            return Err(Error::integrity(format!(
                "frame {} is longer than a chunk",
                f.index
            )));
        }
        match f.kind {
            FrameKind::Data => {
                self.need_key(f)?;
                if !len.is_multiple_of(self.sector_size) {
                    return Err(Error::integrity(format!(
                        "frame {} is not a whole number of sectors",
                        f.index
                    )));
                }
                let xts = self.xts.as_ref().expect("need_key checked it");
                let first = f.offset / self.sector_size as u64;
                xts.decrypt_sectors_to(payload, &mut self.buf[..len], self.sector_size, first);
            }
            FrameKind::Zero => self.buf[..padded].fill(0),
            FrameKind::Compressed => {
                self.need_key(f)?;
                let key = self.aead_key.as_ref().expect("set with the key");
                let (body, tag) = payload.split_at(payload.len() - TAG_LEN);
                let mut sealed = body.to_vec();
                let tag: [u8; 16] = tag.try_into().expect("16 bytes");
                if !crate::crypto::open(key, &frame_nonce(f.index), fh, &mut sealed, &tag) {
                    return Err(Error::integrity(format!(
                        "compressed frame {} (data offset {}) fails its authentication: altered, or another volume's key",
                        f.index, f.offset
                    )));
                }
                let n = zstd::bulk::decompress_to_buffer(&sealed, &mut self.buf[..len]).map_err(
                    |e| {
                        Error::integrity(format!(
                            "compressed frame {} does not decompress: {e}",
                            f.index
                        ))
                    },
                )?;
                if n != len {
                    return Err(Error::integrity(format!(
                        "compressed frame {} holds {n} bytes, its header says {len}",
                        f.index
                    )));
                }
                self.buf[len..padded].fill(0);
            }
        }
        Ok(&self.buf[..padded])
    }

    /// The ciphertext of the frame whose plaintext [`FrameDecoder::plaintext`]
    /// just decoded, encrypted in place (a zero marker or a compressed frame).
    pub fn encrypt_decoded(&mut self, f: &FrameHeader) -> Result<&[u8]> {
        let padded = (f.plain_len as usize).div_ceil(self.sector_size) * self.sector_size;
        let sector = f.offset / self.sector_size as u64;
        let xts = self.xts.as_ref().ok_or_else(|| missing_key(f))?;
        xts.encrypt_sectors(&mut self.buf[..padded], self.sector_size, sector);
        Ok(&self.buf[..padded])
    }

    /// The bytes to write into the target's data area at `f.offset`.
    pub fn ciphertext<'a>(
        &'a mut self,
        f: &FrameHeader,
        payload: &'a [u8],
        fh: &[u8; FRAME_HEADER_LEN],
    ) -> Result<&'a [u8]> {
        if f.kind == FrameKind::Data {
            return Ok(payload);
        }
        let padded = self.plaintext(f, payload, fh)?.len();
        let sector = f.offset / self.sector_size as u64;
        let FrameDecoder {
            xts,
            buf,
            sector_size,
            ..
        } = self;
        // A zero marker's plaintext needs no key, but its ciphertext does.
        let xts = xts.as_ref().ok_or_else(|| missing_key(f))?;
        xts.encrypt_sectors(&mut buf[..padded], *sector_size, sector);
        Ok(&self.buf[..padded])
    }
}

fn missing_key(f: &FrameHeader) -> Error {
    Error::access(format!(
        "frame {} is {}: restoring or checking it needs the volume key",
        f.index,
        match f.kind {
            FrameKind::Zero => "a sparse zero marker",
            _ => "compressed",
        }
    ))
    .with_hint("give -k ID with a key of the backed-up volume")
}
