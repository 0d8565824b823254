//! Reading a backup stream, checking as it goes: the header's checksum,
//! every frame's BLAKE3, index and offset, the trailer's counts and the
//! manifest checksum, and, when the volume key is known, the MAC.
//!
//! No length read from the stream is trusted: a frame's payload length is
//! checked against the limits the header allows before anything is read, and
//! the one payload buffer is allocated once, at its maximum size.

use std::io::Read;

use super::format::{
    FRAME_HASH_LEN, FRAME_HEADER_LEN, FrameHeader, Header, INDEX_MAGIC, StreamError,
    TRAILER_MAC_AT, TRAILER_MAGIC, Trailer, frame_hash, header_len, parse_index_section_header,
    trailer_len,
};
use crate::crypto::secret::MacKey;
use crate::error::{Error, Result};

/// One item of a stream, in order.
pub enum Item<'a> {
    /// A frame whose BLAKE3, index and offset checked: its parsed header, its
    /// payload, and its header's bytes.
    Frame(FrameHeader, &'a [u8], [u8; FRAME_HEADER_LEN]),
    /// The sealed chunk index of an indexed stream, after its last frame:
    /// its section's BLAKE3 and length checked. The trailer checks that the
    /// final EMD names it.
    Index(&'a [u8]),
    /// The trailer, its checksum, counts and (with a MAC key) MAC checked, and
    /// nothing after it; its signature is judged by the caller.
    End(Box<Trailer>),
}

/// Reads a backup stream part by part, checking each part as it comes
/// ([`StreamReader::next_item`]).
pub struct StreamReader<R: Read> {
    input: R,
    name: String,
    /// The stream's header, read and checked by [`StreamReader::open`].
    pub header: Header,
    header_bytes: Vec<u8>,
    manifest: blake3::Hasher,
    mac: Option<zeroize::Zeroizing<blake3::Hasher>>,
    next_index: u64,
    next_offset: u64,
    /// A short frame was seen: only the trailer may follow.
    short_seen: bool,
    /// Frames read (an incremental stream skips indexes).
    frames_seen: u64,
    position: u64,
    payload: Vec<u8>,
    /// The index section's sealed bytes, once read.
    index: Option<Vec<u8>>,
    ended: bool,
}

impl<R: Read> StreamReader<R> {
    /// Read and check the header.
    pub fn open(mut input: R, name: &str) -> Result<Self> {
        let invalid =
            |e: StreamError| Error::integrity(format!("{name}: the stream header is invalid: {e}"));
        let mut head = vec![0u8; 10];
        let n = read_full(&mut input, &mut head).map_err(|e| Error::io("reading", name, e))?;
        let truncated = |at: usize| {
            Error::integrity(format!(
                "{name}: the stream is truncated inside its header (at byte {at})"
            ))
        };
        if n < 8 && super::MAGIC.starts_with(&head[..n]) {
            return Err(truncated(n));
        }
        if &head[..8] != super::MAGIC {
            return Err(Error::usage(format!(
                "{name} is not a backup stream (it does not start with EVFS-STR)"
            )));
        }
        if n < head.len() {
            return Err(truncated(n));
        }
        let len = header_len(Header::version_of(&head).map_err(invalid)?);
        head.resize(len, 0);
        let n =
            read_full(&mut input, &mut head[10..]).map_err(|e| Error::io("reading", name, e))?;
        if 10 + n < len {
            return Err(truncated(10 + n));
        }
        let header = Header::parse(&head).map_err(invalid)?;
        let mut manifest = blake3::Hasher::new();
        manifest.update(&head);
        let payload = vec![0u8; header.max_payload()];
        Ok(StreamReader {
            input,
            name: name.to_string(),
            header,
            header_bytes: head,
            manifest,
            mac: None,
            next_index: 0,
            next_offset: 0,
            frames_seen: 0,
            short_seen: false,
            position: len as u64,
            payload,
            index: None,
            ended: false,
        })
    }

    /// Check the MAC too, with the target volume key's stream MAC key.
    /// Must be called before the first frame is read.
    pub fn set_mac_key(&mut self, key: &MacKey) {
        debug_assert_eq!(
            self.next_index, 0,
            "the MAC key must be set before any frame"
        );
        let mut h = key.hasher();
        h.update(&self.header_bytes);
        self.mac = Some(h);
    }

    /// Bytes of the stream read so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn fail(&self, what: String) -> Error {
        Error::integrity(format!("{}: {what}", self.name))
    }

    /// Read the payload of the part `what` that starts at byte `start`.
    fn read_payload(&mut self, buf_len: usize, what: &str, start: u64) -> Result<()> {
        let n = read_full(&mut self.input, &mut self.payload[..buf_len])
            .map_err(|e| Error::io("reading", &self.name, e))?;
        self.position += n as u64;
        if n < buf_len {
            return Err(self.fail(format!(
                "the stream is truncated at byte {} (inside {what} starting at byte {start})",
                self.position
            )));
        }
        Ok(())
    }

    fn read_array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let start = self.position;
        let mut b = [0u8; N];
        let n =
            read_full(&mut self.input, &mut b).map_err(|e| Error::io("reading", &self.name, e))?;
        self.position += n as u64;
        if n < N {
            return Err(self.fail(format!(
                "the stream is truncated at byte {} (inside {what} starting at byte {start})",
                self.position
            )));
        }
        Ok(b)
    }

    /// The next frame or the trailer. After the trailer, nothing may follow.
    pub fn next_item(&mut self) -> Result<Item<'_>> {
        if self.ended {
            return Err(Error::runtime("internal: read past the stream's trailer"));
        }
        let frame_at = self.position;
        let head: [u8; FRAME_HEADER_LEN] =
            self.read_array(&format!("frame {} or the trailer", self.next_index))?;
        if head.starts_with(TRAILER_MAGIC) {
            return self.trailer(head, frame_at).map(|t| Item::End(Box::new(t)));
        }
        if head.starts_with(INDEX_MAGIC) {
            return self.index_section(&head, frame_at).map(Item::Index);
        }
        if self.index.is_some() {
            return Err(self.fail(format!(
                "the chunk index is followed at byte {frame_at} by something other than the trailer"
            )));
        }
        let index = self.next_index;
        let f = FrameHeader::parse(&head, &self.header).map_err(|e| {
            self.fail(format!(
                "frame {index} at byte {frame_at} is invalid: {}",
                match e {
                    StreamError::NoMagic =>
                        "no frame magic (the stream is damaged or frames are missing)".to_string(),
                    other => other.to_string(),
                }
            ))
        })?;
        // An incremental stream carries the changed chunks only: its
        // frames skip indexes, in order, each at its chunk's offset.
        let incremental = self.header.base.is_some();
        let in_place = f.index.checked_mul(u64::from(self.header.chunk_size)) == Some(f.offset);
        let follows = if incremental {
            f.index >= index && in_place
        } else {
            f.index == index && f.offset == self.next_offset
        };
        if !follows {
            return Err(self.fail(format!(
                "frame at byte {frame_at} is frame {} for data offset {}, expected frame {index} at data offset {}: frames are missing, repeated or out of order",
                f.index, f.offset, self.next_offset
            )));
        }
        let index = f.index;
        if self.short_seen {
            return Err(self.fail(format!(
                "frame {index} at byte {frame_at} follows a short frame: only the last frame may be short"
            )));
        }
        let end = f.offset.checked_add(u64::from(f.plain_len));
        let bound = self
            .header
            .expected
            .map(|e| e.next_multiple_of(u64::from(self.header.emd.sector_size)));
        if end.is_none()
            || bound.is_some_and(|b| end.is_some_and(|e| e > b))
            || (incremental && bound.is_none())
        {
            let expected = self.header.expected.unwrap_or(0);
            return Err(self.fail(format!(
                "frame {index} at byte {frame_at} runs past the {expected} bytes the header announced"
            )));
        }
        let len = f.payload_len as usize;
        self.read_payload(len, &format!("frame {index}"), frame_at)?;
        let hash: [u8; FRAME_HASH_LEN] =
            self.read_array(&format!("the checksum of frame {index}"))?;
        let expect = frame_hash(&head, &self.payload[..len]);
        if blake3::Hash::from(hash) != blake3::Hash::from(expect) {
            return Err(self.fail(format!(
                "frame {index} at byte {frame_at} (data offset {}) fails its BLAKE3 check: it was altered or damaged",
                f.offset
            )));
        }
        self.manifest.update(&hash);
        if let Some(m) = self.mac.as_mut() {
            m.update(&hash);
        }
        if f.plain_len < self.header.chunk_size {
            self.short_seen = true;
        }
        self.next_index = index + 1;
        self.next_offset = f.offset + u64::from(f.plain_len);
        self.frames_seen += 1;
        Ok(Item::Frame(f, &self.payload[..len], head))
    }

    /// The index section: exactly as long as the data the header announces
    /// needs, and only once, after the last frame.
    fn index_section(&mut self, head: &[u8; FRAME_HEADER_LEN], at: u64) -> Result<&[u8]> {
        let Some(expect) = self.header.index_len() else {
            return Err(self.fail(format!(
                "a chunk index at byte {at} in a stream whose header announces none"
            )));
        };
        if self.index.is_some() {
            return Err(self.fail(format!("a second chunk index at byte {at}")));
        }
        let len = parse_index_section_header(head)
            .map_err(|e| self.fail(format!("the chunk index at byte {at} is invalid: {e}")))?;
        if len != expect {
            return Err(self.fail(format!(
                "the chunk index at byte {at} holds {len} bytes; the data the header announces needs {expect}"
            )));
        }
        // Grown as bytes arrive: a header that lies about the length of a
        // cut stream costs no more memory than the stream holds.
        let mut bytes = Vec::new();
        let n = (&mut self.input)
            .take(len)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("reading", &self.name, e))?;
        self.position += n as u64;
        if (n as u64) < len {
            return Err(self.fail(format!(
                "the stream is truncated at byte {} (inside the chunk index starting at byte {at})",
                self.position
            )));
        }
        let hash: [u8; FRAME_HASH_LEN] = self.read_array("the checksum of the chunk index")?;
        if blake3::Hash::from(hash) != blake3::Hash::from(frame_hash(head, &bytes)) {
            return Err(self.fail(format!(
                "the chunk index at byte {at} fails its BLAKE3 check: it was altered or damaged"
            )));
        }
        self.manifest.update(&hash);
        if let Some(m) = self.mac.as_mut() {
            m.update(&hash);
        }
        Ok(self.index.insert(bytes).as_slice())
    }

    fn trailer(&mut self, head: [u8; FRAME_HEADER_LEN], at: u64) -> Result<Trailer> {
        let len = trailer_len(self.header.version);
        let mut b = vec![0u8; len];
        b[..FRAME_HEADER_LEN].copy_from_slice(&head);
        let n = read_full(&mut self.input, &mut b[FRAME_HEADER_LEN..])
            .map_err(|e| Error::io("reading", &self.name, e))?;
        self.position += n as u64;
        if n < len - FRAME_HEADER_LEN {
            return Err(self.fail(format!(
                "the stream is truncated at byte {} (inside the trailer starting at byte {at})",
                self.position
            )));
        }
        let t = Trailer::parse(&b, self.header.version)
            .map_err(|e| self.fail(format!("the trailer at byte {at} is invalid: {e}")))?;
        self.manifest.update(&b[..TRAILER_MAC_AT]);
        self.manifest
            .update(&b[TRAILER_MAC_AT..TRAILER_MAC_AT + 32]);
        if self.manifest.finalize() != blake3::Hash::from(t.checksum) {
            return Err(self.fail(format!(
                "the trailer at byte {at} fails its checksum: the header, a frame or the trailer was altered"
            )));
        }
        if t.frames != self.frames_seen {
            return Err(self.fail(format!(
                "the trailer counts {} frames, the stream has {}",
                t.frames, self.frames_seen
            )));
        }
        let sector = u64::from(self.header.emd.sector_size);
        // An incremental stream may end before the data does (its last
        // chunks unchanged), but a short frame only at the data's end.
        let covered = if self.header.base.is_some() && !self.short_seen {
            self.next_offset.max(t.bytes)
        } else {
            self.next_offset
        };
        let past_end =
            self.header.base.is_some() && self.next_offset > t.bytes.next_multiple_of(sector);
        // Only the last sector may be padding (a plain source's tail).
        if past_end || t.bytes > covered || covered - t.bytes >= sector {
            return Err(self.fail(format!(
                "the trailer counts {} bytes, the frames cover {}",
                t.bytes, self.next_offset
            )));
        }
        if self.header.expected.is_some_and(|e| e != t.bytes) {
            return Err(self.fail(format!(
                "the stream holds {} bytes, its header announced {}",
                t.bytes,
                self.header.expected.unwrap_or(0)
            )));
        }
        if t.emd.data_size < self.next_offset {
            return Err(self.fail("the final EMD's data area is smaller than the data".to_string()));
        }
        // The final EMD names the index the stream carries, as a volume's
        // EMD names its index area; a stream without one names none. A raw
        // stream's EMD is its source's, which may name an index area the
        // stream could not carry (damaged at the source).
        if self.header.version >= 3 && (self.header.indexed || !self.header.raw) {
            let carried = self.index.as_deref().map(crate::emd::IndexRef::of);
            let named = t.emd.index;
            if self.header.indexed && carried.is_none() {
                return Err(
                    self.fail("the stream lacks the chunk index its header announces".to_string())
                );
            }
            if carried != named {
                return Err(self.fail(
                    "the final EMD does not name the chunk index the stream carries".to_string(),
                ));
            }
        }
        if let Some(m) = self.mac.as_mut() {
            m.update(&b[..TRAILER_MAC_AT]);
            let ok = t
                .mac
                .is_some_and(|mac| m.finalize() == blake3::Hash::from(mac));
            if !ok {
                return Err(self.fail(
                    "the stream's MAC does not verify with the volume key: it was tampered with"
                        .to_string(),
                ));
            }
        }
        let mut extra = [0u8; 1];
        let more = read_full(&mut self.input, &mut extra)
            .map_err(|e| Error::io("reading", &self.name, e))?;
        if more != 0 {
            return Err(self.fail(format!(
                "bytes follow the trailer at byte {}",
                self.position
            )));
        }
        self.ended = true;
        Ok(t)
    }
}

/// Read until `buf` is full or the input ends; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
