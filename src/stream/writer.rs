//! Writing a backup stream: the header, one frame per chunk (made in parallel
//! by [`StreamFramer`] on the pipeline's workers), and the trailer.
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
use crate::pipeline::pool::PooledBuf;
use crate::pipeline::{ChunkOut, Frame, FrameInput, FramePayload, Framer, Sink};

/// Makes the frames of a stream, on the workers.
pub struct StreamFramer {
    /// zstd level and AEAD key when compressing.
    pub compress: Option<(i32, [u8; 32])>,
    pub sparse: bool,
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

impl Framer for StreamFramer {
    fn scratch(&self) -> Option<usize> {
        self.compress.map(|_| max_payload(self.chunk_size, true))
    }

    fn frame(&self, input: FrameInput, scratch: Option<PooledBuf>) -> Result<Frame> {
        let plain_len = input.data.len() as u32;
        let mut header = FrameHeader {
            kind: FrameKind::Data,
            index: input.index,
            offset: input.offset,
            plain_len,
            payload_len: plain_len,
        };
        if self.sparse && input.zero {
            header.kind = FrameKind::Zero;
            header.payload_len = 0;
            let h = header.encode();
            return Ok(Frame {
                hash: frame_hash(&h, &[]),
                header: h,
                payload: FramePayload::Empty,
            });
        }
        if let Some((level, key)) = &self.compress {
            let mut buf = scratch.ok_or_else(|| Error::runtime("internal: no scratch buffer"))?;
            let cap = buf.len() - TAG_LEN;
            let n = Self::compress(*level, input.data, &mut buf[..cap])?;
            header.kind = FrameKind::Compressed;
            header.payload_len = (n + TAG_LEN) as u32;
            let h = header.encode();
            let tag = crate::crypto::seal(key, &frame_nonce(input.index), &h, &mut buf[..n]);
            buf[n..n + TAG_LEN].copy_from_slice(&tag);
            return Ok(Frame {
                hash: frame_hash(&h, &buf[..n + TAG_LEN]),
                header: h,
                payload: FramePayload::Scratch(buf, n + TAG_LEN),
            });
        }
        let h = header.encode();
        Ok(Frame {
            hash: frame_hash(&h, input.data),
            header: h,
            payload: FramePayload::Data,
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

    /// Write the trailer and flush; returns the stream's length in bytes.
    pub fn finish(
        mut self,
        bytes: u64,
        digest: Option<blake3::Hash>,
        final_emd: &Emd,
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
        self.out
            .flush()
            .map_err(|e| Error::io("writing", &self.name, e))?;
        Ok((self.out, self.written))
    }
}

impl<W: Write> Sink for StreamWriter<W> {
    fn put(&mut self, chunk: &ChunkOut) -> Result<()> {
        let frame = chunk
            .frame
            .ok_or_else(|| Error::runtime("internal: a stream chunk without a frame"))?;
        debug_assert_eq!(frame.header.len(), FRAME_HEADER_LEN);
        self.write(&frame.header)?;
        match &frame.payload {
            FramePayload::Data => self.write(chunk.data)?,
            FramePayload::Empty => {}
            FramePayload::Scratch(buf, n) => {
                let n = *n;
                self.out
                    .write_all(&buf[..n])
                    .map_err(|e| Error::io("writing", &self.name, e))?;
                self.written += n as u64;
            }
        }
        self.write(&frame.hash)?;
        self.manifest.update(&frame.hash);
        if let Some(m) = self.mac.as_mut() {
            m.update(&frame.hash);
        }
        self.frames += 1;
        Ok(())
    }
}
