//! Writing a backup stream: the header, one frame per chunk (made by
//! [`StreamFramer`], on any thread), and the trailer, in order by
//! [`StreamWriter`].
//!
//! You MUST call [`StreamWriter::finish`]: only it writes the trailer, and a
//! stream without its trailer is refused by every reader, so an interrupted
//! backup never leaves something that looks like a valid stream.

use std::cell::RefCell;
use std::io::Write;

use super::format::{
    FRAME_HEADER_LEN, FrameHeader, FrameKind, Header, TAG_LEN, Trailer, frame_hash, frame_nonce,
    max_payload,
};
use crate::crypto::secret::MacKey;
use crate::emd::Emd;
use crate::error::{Error, Result};
use crate::signature::{self, Signature};

/// Makes a stream's signature of a message (`signature::stream_message`).
pub type Signer<'a> = &'a dyn Fn(&[u8]) -> Signature;

/// Makes the frames of a stream, on the workers.
pub struct StreamFramer {
    /// zstd level and AEAD key when compressing.
    pub compress: Option<(i32, [u8; 32])>,
    /// Send all-zero chunks as zero markers.
    pub sparse: bool,
    /// Bytes of data per frame (the header's chunk size).
    pub chunk_size: usize,
}

impl Drop for StreamFramer {
    fn drop(&mut self) {
        if let Some((_, key)) = self.compress.as_mut() {
            zeroize::Zeroize::zeroize(key);
        }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

impl StreamFramer {
    /// The AEAD key of one stream's compressed frames: the volume key's
    /// stream key, bound to this stream's ID, so that a key kept with
    /// `--same-key` never sees a nonce twice.
    pub fn aead_key(stream_key: &MacKey, stream_id: &[u8; 16]) -> [u8; 32] {
        *stream_key.mac(stream_id).as_bytes()
    }

    fn compress(level: i32, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        COMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                let c = zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::runtime(format!("zstd: {e}")))?;
                *slot = Some((level, c));
            }
            let (_, c) = slot.as_mut().expect("just set");
            c.compress_to_buffer(src, dst)
                .map_err(|e| Error::runtime(format!("zstd compression failed: {e}")))
        })
    }
}

/// What a frame's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The chunk's data itself.
    Data,
    /// No payload (a zero marker).
    Empty,
    /// The first bytes of the scratch buffer (a compressed, sealed payload).
    Scratch(usize),
}

/// A frame: its fixed header, where its payload is, and the BLAKE3 of both.
pub struct FrameParts {
    /// The frame header's bytes.
    pub header: [u8; FRAME_HEADER_LEN],
    /// Where the payload is.
    pub payload: Payload,
    /// BLAKE3 of the frame header and payload.
    pub hash: [u8; 32],
}

impl StreamFramer {
    /// Bytes of scratch space each frame needs (compressed payloads), if any.
    pub fn scratch_len(&self) -> Option<usize> {
        self.compress.map(|_| max_payload(self.chunk_size, true))
    }

    /// The frame of chunk `index` at data offset `offset` holding `data`
    /// (the target's ciphertext, or the plaintext when compressing); `zero`
    /// says its plaintext was all zeros. A compressed payload is written
    /// into `scratch` ([`Self::scratch_len`] bytes).
    pub fn frame(
        &self,
        index: u64,
        offset: u64,
        data: &[u8],
        zero: bool,
        scratch: Option<&mut [u8]>,
    ) -> Result<FrameParts> {
        let plain_len = data.len() as u32;
        let mut header = FrameHeader {
            kind: FrameKind::Data,
            index,
            offset,
            plain_len,
            payload_len: plain_len,
        };
        if self.sparse && zero {
            header.kind = FrameKind::Zero;
            header.payload_len = 0;
            let h = header.encode();
            return Ok(FrameParts {
                hash: frame_hash(&h, &[]),
                header: h,
                payload: Payload::Empty,
            });
        }
        if let Some((level, key)) = &self.compress {
            let buf = scratch.ok_or_else(|| Error::runtime("internal: no scratch buffer"))?;
            let cap = buf.len() - TAG_LEN;
            let n = Self::compress(*level, data, &mut buf[..cap])?;
            header.kind = FrameKind::Compressed;
            header.payload_len = (n + TAG_LEN) as u32;
            let h = header.encode();
            let tag = crate::crypto::seal(key, &frame_nonce(index), &h, &mut buf[..n]);
            buf[n..n + TAG_LEN].copy_from_slice(&tag);
            return Ok(FrameParts {
                hash: frame_hash(&h, &buf[..n + TAG_LEN]),
                header: h,
                payload: Payload::Scratch(n + TAG_LEN),
            });
        }
        let h = header.encode();
        Ok(FrameParts {
            hash: frame_hash(&h, data),
            header: h,
            payload: Payload::Data,
        })
    }
}

/// Writes the parts of a stream in order and keeps its manifest and MAC.
pub struct StreamWriter<W: Write> {
    out: W,
    name: String,
    manifest: blake3::Hasher,
    mac: Option<zeroize::Zeroizing<blake3::Hasher>>,
    frames: u64,
    written: u64,
}

impl<W: Write> StreamWriter<W> {
    /// Write the header. `mac_key` is the target volume key's stream MAC key
    /// (absent for raw streams, which are made without a key).
    pub fn start(
        mut out: W,
        name: &str,
        header: &Header,
        mac_key: Option<&MacKey>,
    ) -> Result<Self> {
        let bytes = header.encode();
        out.write_all(&bytes)
            .map_err(|e| Error::io("writing", name, e))?;
        let mut manifest = blake3::Hasher::new();
        manifest.update(&bytes);
        let mut mac = mac_key.map(MacKey::hasher);
        if let Some(m) = mac.as_mut() {
            m.update(&bytes);
        }
        Ok(StreamWriter {
            out,
            name: name.to_string(),
            manifest,
            mac,
            frames: 0,
            written: bytes.len() as u64,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("writing", &self.name, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Write the next frame: its header, payload and hash, in order.
    pub fn write_frame(
        &mut self,
        header: &[u8; FRAME_HEADER_LEN],
        payload: &[u8],
        hash: &[u8; 32],
    ) -> Result<()> {
        self.write(header)?;
        self.write(payload)?;
        self.write(hash)?;
        self.manifest.update(hash);
        if let Some(m) = self.mac.as_mut() {
            m.update(hash);
        }
        self.frames += 1;
        Ok(())
    }

    /// Write the index section (after the last frame, before the trailer)
    /// of an indexed stream: the sealed chunk index of its data.
    pub fn write_index(&mut self, sealed: &[u8]) -> Result<()> {
        let header = super::format::index_section_header(sealed.len() as u64);
        let hash = frame_hash(&header, sealed);
        self.write(&header)?;
        self.write(sealed)?;
        self.write(&hash)?;
        self.manifest.update(&hash);
        if let Some(m) = self.mac.as_mut() {
            m.update(&hash);
        }
        Ok(())
    }

    /// Write the trailer, signed with `sign` when there is a signer, and
    /// flush; returns the stream's length in bytes.
    pub fn finish(
        mut self,
        bytes: u64,
        digest: Option<blake3::Hash>,
        final_emd: &Emd,
        sign: Option<Signer>,
    ) -> Result<(W, u64)> {
        let body = Trailer::encode_body(
            self.frames,
            bytes,
            digest.map(|d| *d.as_bytes()),
            final_emd,
            self.mac.is_some(),
        );
        self.manifest.update(&body);
        let mac = match self.mac.as_mut() {
            Some(m) => {
                m.update(&body);
                *m.finalize().as_bytes()
            }
            None => [0u8; 32],
        };
        self.manifest.update(&mac);
        let checksum = *self.manifest.finalize().as_bytes();
        self.write(&body)?;
        self.write(&mac)?;
        self.write(&checksum)?;
        let block = match sign {
            Some(sign) => sign(&signature::stream_message(&checksum)).encode(),
            None => [0u8; signature::BLOCK_LEN],
        };
        self.write(&block)?;
        self.out
            .flush()
            .map_err(|e| Error::io("writing", &self.name, e))?;
        Ok((self.out, self.written))
    }
}
