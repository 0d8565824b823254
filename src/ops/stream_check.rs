//! The one checker of a backup stream, which `verify` and `restore` both
//! run, so that neither accepts what the other rejects.
//!
//! Without a key: the header's checksum, every frame (BLAKE3, index,
//! offset), the trailer's counts and checksum over the whole stream; the
//! trailer's EMD describes the volume of the header's EMD clone (same UUID,
//! cipher, geometry, slots, label, state, data version); the trailer's
//! flags fit the header's mode (a stream made with a key carries its MAC
//! and plaintext digest, a raw one neither); the trailer's digest equals
//! the final EMD's provenance digest; every signature present is valid, and
//! the stream's signature is judged by the run's [`Policy`].
//!
//! With a key (`-k`): also the header EMD's MAC (when the key unlocks it),
//! the trailer EMD's MAC, the stream MAC (every stream but a raw one), and
//! the plaintext of every frame, whose BLAKE3 must equal the recorded one
//! (for a raw stream, the source's provenance digest when the data has not
//! changed since).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::trust::{self, Policy, SignedBy};
use super::{KeyUse, Keys};
use crate::crypto::VolumeKey;
use crate::emd::Emd;
use crate::error::{Error, IoContext, Result};
use crate::index::ChunkIndex;
use crate::keys::KeyId;
use crate::pipeline::digest::{ChunkHash, TreeMerger, hash_chunk};
use crate::signature;
use crate::stream::decode::FrameDecoder;
use crate::stream::format::{FrameHeader, FrameKind, Header, Trailer, trailer_len};
use crate::stream::reader::{Item, StreamReader};
use crate::volume::{sniff, unlock_emd};

/// Open a stream: a file, or `-` for standard input. Something else than a
/// stream (a volume, plain data) is a wrong kind of argument, named.
pub(crate) fn open_stream(path: &Path) -> Result<(Box<dyn Read + Send>, String)> {
    let (mut input, name): (Box<dyn Read + Send>, String) = if path == Path::new("-") {
        (Box::new(std::io::stdin()), "standard input".to_string())
    } else {
        let f = File::open(path).ctx("opening", path)?;
        (Box::new(f), path.display().to_string())
    };
    // Look at the first bytes, then hand them on with the rest.
    let mut head = Vec::with_capacity(sniff::SNIFF_LEN);
    (&mut input)
        .take(sniff::SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("reading", &name, e))?;
    let kind = sniff::sniff(&head);
    if kind != sniff::Kind::Stream && head.len() == sniff::SNIFF_LEN {
        return Err(Error::usage(format!(
            "{name} is {}, not a backup stream",
            kind.describe()
        ))
        .with_hint(match kind {
            sniff::Kind::Volume => {
                "copy a volume with `evfs backup SRC DST`; check it with `evfs verify VOL`"
            }
            _ => "a backup stream starts with the bytes EVFS-STR (made by `evfs backup SRC -` or `--stream FILE`)",
        }));
    }
    Ok((Box::new(std::io::Cursor::new(head).chain(input)), name))
}

/// Where a restore puts each frame's bytes: the data-area offset and the
/// bytes that go there.
pub type FrameSink<'a> = &'a mut dyn FnMut(u64, &[u8]) -> Result<()>;

/// Which bytes of each frame a [`FrameSink`] receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameBytes {
    /// The ciphertext of the stream's volume, as its data area holds it
    /// (a restore into an EVFS volume).
    Ciphertext,
    /// The plaintext (needs the key): a restore that encrypts under
    /// another key (a LUKS2 target).
    Plaintext,
}

/// The plaintext of a chain of streams, chunk by chunk: the hash of every
/// chunk of the data the links so far restore to, so that an incremental
/// link's digest is checked over the whole data, not only its frames.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    hashes: Vec<ChunkHash>,
    /// Bytes of data the links so far restore to.
    bytes: u64,
}

/// A plaintext digest and how many bytes it covers.
#[derive(Clone, Copy, Debug)]
pub struct Digest {
    /// BLAKE3 of the plaintext.
    pub hash: blake3::Hash,
    /// Bytes of plaintext it covers.
    pub bytes: u64,
}

/// A stream, opened and its header checked, ready to be read through.
pub struct StreamCheck {
    name: String,
    /// The stream's file, when it is one (not standard input).
    path: Option<std::path::PathBuf>,
    reader: StreamReader<Box<dyn Read + Send>>,
    key: Option<VolumeKey>,
    policy: Policy,
    /// What passed so far, in the words `verify` prints.
    passed: Vec<String>,
    /// Who signed the stream, once its end is read.
    signed_by: Option<SignedBy>,
}

/// What a stream that checked out holds.
pub struct Checked {
    /// The stream's trailer, checked.
    pub trailer: Box<Trailer>,
    /// The plaintext digest computed from the frames (with a key).
    pub computed: Option<Digest>,
    /// Who signed the stream.
    pub signed_by: Option<SignedBy>,
    /// Bytes of the stream.
    pub stream_bytes: u64,
    /// The sealed chunk index an indexed stream carries, which the final
    /// EMD names (a restore puts it in the volume's index area).
    pub index: Option<Vec<u8>>,
}

impl Checked {
    /// The plaintext digest: computed with a key, else the recorded one.
    pub fn digest(&self) -> Option<Digest> {
        self.computed.or_else(|| {
            self.trailer.plaintext_blake3.map(|h| Digest {
                hash: blake3::Hash::from(h),
                bytes: self.trailer.bytes,
            })
        })
    }
}

impl StreamCheck {
    /// Open the stream at `path` (`-`: standard input) and check its
    /// header; with `id`, unlock its volume key (the header EMD's MAC
    /// verifies with it). `key_required`: the caller cannot go on without
    /// the key (a restore of a compressed or sparse stream).
    pub fn open(
        path: &Path,
        id: Option<&KeyId>,
        keys: &dyn Keys,
        policy: Policy,
        key_required: impl FnOnce(&Header) -> bool,
    ) -> Result<StreamCheck> {
        let (input, name) = open_stream(path)?;
        let mut reader = StreamReader::open(input, &name)?;
        let header = reader.header.clone();
        let key = match id {
            Some(id) => {
                let pk = keys.unlock(id, KeyUse::Volume)?;
                Some(
                    unlock_emd(
                        &header.emd,
                        Path::new(&name),
                        &pk,
                        super::DATA_ROLES,
                        "read it",
                    )?
                    .key,
                )
            }
            None if key_required(&header) => {
                let what = if header.compressed {
                    "compressed"
                } else {
                    "sparse"
                };
                return Err(Error::access(format!(
                    "{name} is a {what} stream: restoring it needs the volume key"
                ))
                .with_hint("give -k ID with a key of the backed-up volume (its owner or a user)"));
            }
            None => None,
        };
        if let Some(k) = &key
            && !header.raw
        {
            reader.set_mac_key(&k.stream_mac_key());
        }
        let mut passed = vec!["stream header checksum".to_string()];
        if key.is_some() {
            passed.push("the header's EMD MAC verified with the volume key".to_string());
        }
        let check = StreamCheck {
            name,
            path: (path != Path::new("-")).then(|| path.to_path_buf()),
            reader,
            key,
            policy,
            passed,
            signed_by: None,
        };
        check.emd_signature(&header.emd, "the header's EMD")?;
        Ok(check)
    }

    /// The stream's header.
    pub fn header(&self) -> &Header {
        &self.reader.header
    }

    /// The stream's name in messages (`standard input` for `-`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The volume key, when `-k` gave one.
    pub fn key(&self) -> Option<&VolumeKey> {
        self.key.as_ref()
    }

    /// What passed so far.
    pub fn passed(&self) -> &[String] {
        &self.passed
    }

    /// Who signed the stream, once [`StreamCheck::run`] read its end (also
    /// when the signature then failed the policy).
    pub fn signed_by(&self) -> Option<&SignedBy> {
        self.signed_by.as_ref()
    }

    /// Before anything is written from the stream: when a signature is
    /// required, the header's EMD clone must carry a valid, trusted one, so
    /// a forged stream is refused before it touches the target (the
    /// stream's own signature, at its end, is checked again there).
    pub fn gate(&self, keys: &dyn Keys) -> Result<()> {
        if !self.policy.strict() {
            return Ok(());
        }
        // A stream in a regular file: its own signature, at its end, is
        // judged now (over the checksum it claims, which the read through
        // then checks).
        if let Some(t) = self.peek_trailer()? {
            let signed = trust::signed_by(
                t.signature.as_ref(),
                &signature::stream_message(&t.checksum),
                keys,
                &self.policy,
            )?;
            return trust::judge(
                signed.as_ref(),
                &self.policy,
                &format!("{}: the stream", self.name),
            );
        }
        let emd = &self.reader.header.emd;
        trust::check_emd(
            emd,
            keys,
            &self.policy,
            &format!("{}: the stream's EMD clone", self.name),
        )
        .map(|_| ())
    }

    /// Before anything is written from a stream in a regular file: it ends
    /// with its trailer, so it was neither cut short nor added to (a pipe is
    /// judged as it is read).
    pub fn ends_whole(&self) -> Result<()> {
        let regular = self
            .path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_file());
        if regular && self.peek_trailer()?.is_none() {
            return Err(self.fail(
                "the stream does not end with its trailer: it was cut short, or bytes were added after it",
            ));
        }
        Ok(())
    }

    /// The trailer of a stream in a regular file, read from its end; `None`
    /// for a pipe or device, or when the end holds no trailer (the read
    /// through says what is wrong).
    fn peek_trailer(&self) -> Result<Option<Trailer>> {
        use std::io::{Seek, SeekFrom};
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let Ok(mut f) = std::fs::File::open(path) else {
            return Ok(None);
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return Ok(None);
        }
        let version = self.reader.header.version;
        let len = trailer_len(version);
        let mut b = vec![0u8; len];
        let read = f
            .seek(SeekFrom::End(-(len as i64)))
            .and_then(|_| f.read_exact(&mut b));
        Ok(read.ok().and_then(|_| Trailer::parse(&b, version).ok()))
    }

    fn fail(&self, what: impl std::fmt::Display) -> Error {
        Error::integrity(format!("{}: {what}", self.name))
    }

    /// A signature on `emd`, when present, must be valid.
    fn emd_signature(&self, emd: &Emd, what: &str) -> Result<()> {
        if emd.signature_valid() == Some(false) {
            let s = emd.signature.as_ref().expect("valid() said it is there");
            return Err(self.fail(format!(
                "{what} carries a broken signature of {} ({}): it was altered after it was signed",
                s.id,
                s.fingerprint()
            )));
        }
        Ok(())
    }

    /// Read the whole stream, checking everything. `write` receives each
    /// frame's data-area offset and the bytes that go there (a restore);
    /// `progress` the plaintext bytes each frame covers.
    pub fn run(
        &mut self,
        keys: &dyn Keys,
        write: Option<FrameSink>,
        bytes: FrameBytes,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Checked> {
        self.run_linked(keys, write, bytes, progress, None)
    }

    /// [`Self::run`] for a link of a chain: with the key, `chain` holds
    /// the chunk hashes of what the links before restore to (empty before
    /// the first); the frames of this link replace theirs, and the digest
    /// is checked over the whole. Without `chain`, an incremental stream's
    /// digest cannot be computed from its frames, and is not.
    pub fn run_linked(
        &mut self,
        keys: &dyn Keys,
        mut write: Option<FrameSink>,
        bytes: FrameBytes,
        progress: &mut dyn FnMut(u64),
        chain: Option<&mut Chain>,
    ) -> Result<Checked> {
        if bytes == FrameBytes::Plaintext && self.key.is_none() {
            return Err(Error::runtime(
                "internal: the plaintext of a stream without its key",
            ));
        }
        let header = self.reader.header.clone();
        let mut decoder = FrameDecoder::new(&header, self.key.as_ref());
        let hashing = self.key.is_some();
        let chunk = u64::from(header.chunk_size);
        // The hash of each chunk the frames carry, by chunk index.
        let mut hashes: Vec<(u64, ChunkHash)> = Vec::new();
        // The last frame may end in padding that the digest does not cover,
        // so each frame is hashed when the next item shows how much counts.
        let mut held: Option<(u64, Vec<u8>)> = None;
        let mut index: Option<Vec<u8>> = None;
        let trailer = loop {
            match self.reader.next_item()? {
                Item::Index(sealed) => index = Some(sealed.to_vec()),
                Item::Frame(f, payload, raw) => {
                    if hashing {
                        let plain = decoder.plaintext(&f, payload, &raw)?;
                        if let Some((off, data)) = held.take() {
                            hashes.push((off / chunk, hash_chunk(off, &data)));
                        }
                        let plain = &plain[..f.plain_len as usize];
                        held = Some((f.offset, plain.to_vec()));
                        if bytes == FrameBytes::Plaintext
                            && let Some(w) = write.as_mut()
                        {
                            w(f.offset, plain)?;
                        }
                    }
                    if bytes == FrameBytes::Ciphertext
                        && let Some(w) = write.as_mut()
                    {
                        let data = ciphertext(&mut decoder, &f, payload, &raw, hashing)?;
                        w(f.offset, data)?;
                    }
                    progress(u64::from(f.plain_len));
                }
                Item::End(t) => break t,
            }
        };
        let frames = trailer.frames;
        self.passed.push(format!(
            "{frames} frames, each with a valid BLAKE3, in order"
        ));
        self.passed.push(format!(
            "trailer: {} bytes, checksum over the whole stream",
            trailer.bytes
        ));
        self.trailer_fits(&header, &trailer)?;
        if let Some(sealed) = &index {
            self.passed.push(format!(
                "chunk index: {} bytes, named by the final EMD",
                sealed.len()
            ));
        }
        let computed = if hashing {
            if let Some((off, mut data)) = held.take() {
                data.truncate(trailer.bytes.saturating_sub(off) as usize);
                if !data.is_empty() {
                    hashes.push((off / chunk, hash_chunk(off, &data)));
                }
            }
            // A raw stream carries its source's index area as it lies,
            // which vouches for the source's last backup only.
            if let Some(sealed) = index.as_ref().filter(|_| !header.raw) {
                self.index_fits(sealed, &trailer, &hashes)?;
            }
            let chunks = trailer.bytes.div_ceil(chunk) as usize;
            let whole: Option<Vec<ChunkHash>> = match (header.base.is_some(), chain) {
                (false, chain) => {
                    let all: Vec<ChunkHash> = hashes.into_iter().map(|(_, h)| h).collect();
                    if let Some(c) = chain {
                        c.hashes = all.clone();
                        c.bytes = trailer.bytes;
                    }
                    Some(all)
                }
                (true, Some(c)) if !c.hashes.is_empty() || c.bytes > 0 => {
                    // Where the data length changed, the chunk it ends in
                    // and every chunk after the shorter end are new.
                    if c.bytes != trailer.bytes {
                        let from = c.bytes.min(trailer.bytes) / chunk;
                        for i in from..chunks as u64 {
                            if !hashes.iter().any(|(j, _)| *j == i) {
                                return Err(self.fail(format!(
                                    "the data length changes from {} to {} bytes, but chunk {i} is not in the stream",
                                    c.bytes, trailer.bytes
                                )));
                            }
                        }
                    }
                    c.hashes.resize(
                        chunks.max(c.hashes.len()),
                        ChunkHash {
                            cv: [0; 32],
                            root: None,
                        },
                    );
                    for (i, h) in hashes {
                        c.hashes[i as usize] = h;
                    }
                    c.hashes.truncate(chunks);
                    c.bytes = trailer.bytes;
                    Some(c.hashes.clone())
                }
                (true, _) => None,
            };
            match whole {
                Some(all) => {
                    let mut merger = TreeMerger::new();
                    for h in all {
                        merger.push(h);
                    }
                    let d = Digest {
                        hash: merger.finish(),
                        bytes: trailer.bytes,
                    };
                    self.keyed_checks(&header, &trailer, d)?;
                    Some(d)
                }
                None => {
                    self.keyed_checks_without_digest(&trailer)?;
                    None
                }
            }
        } else {
            self.passed
                .push("MAC and plaintext not checked (give -k ID)".to_string());
            None
        };
        let signed_by = trust::signed_by(
            trailer.signature.as_ref(),
            &signature::stream_message(&trailer.checksum),
            keys,
            &self.policy,
        )?;
        self.signed_by = signed_by.clone();
        trust::judge(
            signed_by.as_ref(),
            &self.policy,
            &format!("{}: the stream", self.name),
        )?;
        self.passed.push(match &signed_by {
            Some(s) => s.describe(),
            None => "the stream is not signed: its authenticity is not checked".to_string(),
        });
        Ok(Checked {
            trailer,
            computed,
            signed_by,
            stream_bytes: self.reader.position(),
            index,
        })
    }

    /// With the key: the chunk index opens under the volume key, belongs
    /// to the final EMD's state, and holds the plaintext chaining value of
    /// every chunk the frames carry.
    fn index_fits(
        &mut self,
        sealed: &[u8],
        t: &Trailer,
        carried: &[(u64, ChunkHash)],
    ) -> Result<()> {
        let key = self.key.as_ref().expect("index checks with a key");
        let ix = ChunkIndex::open(sealed, key, &t.emd.uuid)
            .map_err(|e| self.fail(format!("its chunk index cannot be used: {e}")))?;
        let same_state = Some(ix.state_id) == t.emd.state_id
            && ix.data_version == t.emd.data_version
            && ix.data_len == t.bytes
            && ix.sector_size == t.emd.sector_size;
        if !same_state {
            return Err(self
                .fail("its chunk index describes another state of the volume than the final EMD"));
        }
        for (i, h) in carried {
            let root_ok = *i != 0 || h.root.is_none_or(|r| *r.as_bytes() == ix.root0);
            if ix.entries.get(*i as usize).is_none_or(|e| e.cv != h.cv) || !root_ok {
                return Err(self.fail(format!(
                    "its chunk index does not hold the plaintext of chunk {i}"
                )));
            }
        }
        let n = ix.entries.len();
        self.passed.push(format!(
            "chunk index opened with the volume key: {n} chunk{}, those in the stream match their plaintext",
            if n == 1 { "" } else { "s" }
        ));
        Ok(())
    }

    /// What the trailer must agree with, key or no key.
    fn trailer_fits(&mut self, header: &Header, t: &Trailer) -> Result<()> {
        same_volume(header, &t.emd).map_err(|what| {
            self.fail(format!(
                "the trailer's EMD does not describe the volume of the header ({what} differs)"
            ))
        })?;
        // A stream made with a key carries its MAC and plaintext digest; a
        // raw one neither, and its EMD is the source's, as it was.
        if header.raw {
            if t.mac.is_some() || t.plaintext_blake3.is_some() {
                return Err(self.fail("a raw stream's trailer carries a MAC or a plaintext digest"));
            }
            if t.emd.signed_message() != header.emd.signed_message() {
                return Err(self.fail(
                    "the trailer's EMD of a raw stream differs from the source's EMD in its header",
                ));
            }
            // A raw stream carries a finished volume's EMD: a clone gets its
            // provenance when its backup ends, so a clone's EMD without one
            // is the header of a re-encrypting stream, relabelled.
            if t.emd.clone_of.is_some() && t.emd.provenance.is_none() {
                return Err(self.fail(
                    "a raw stream carries the EMD of an unfinished clone (no provenance): a re-encrypted stream relabelled raw",
                ));
            }
        } else if t.mac.is_none() || t.plaintext_blake3.is_none() {
            return Err(self.fail(format!(
                "the trailer of a {} stream lacks its MAC or plaintext digest: it was stripped",
                header.mode.name()
            )));
        }
        if !header.raw {
            let p = t.emd.provenance.as_ref().ok_or_else(|| {
                self.fail("the trailer's EMD has no provenance for the backup it ends")
            })?;
            let digest_ok =
                p.plaintext_blake3.is_some() && p.plaintext_blake3 == t.plaintext_blake3;
            if !digest_ok || p.bytes != t.bytes || p.data_version != t.emd.data_version {
                return Err(self.fail(
                    "the trailer's plaintext digest and length differ from the final EMD's provenance",
                ));
            }
            self.passed
                .push("the trailer's digest is the final EMD's provenance digest".to_string());
        }
        self.emd_signature(&t.emd, "the trailer's EMD")?;
        self.passed
            .push("the trailer's EMD describes the volume of the header".to_string());
        Ok(())
    }

    /// With the key, of an incremental stream checked alone: the trailer
    /// EMD's MAC and the stream MAC (checked by the reader); the digest of
    /// the whole data needs the links before it.
    fn keyed_checks_without_digest(&mut self, t: &Trailer) -> Result<()> {
        let key = self.key.as_ref().expect("keyed checks with a key");
        if !t.emd.mac_ok(key) {
            return Err(self.fail("the final EMD fails its MAC check"));
        }
        self.passed
            .push("the trailer's EMD MAC verified with the volume key".to_string());
        self.passed
            .push("stream MAC verified with the volume key".to_string());
        self.passed.push(
            "an incremental stream: the plaintext digest of the whole data is checked with the links before it (verify FULL INCR...)"
                .to_string(),
        );
        Ok(())
    }

    /// With the key: the trailer EMD's MAC, the stream MAC (checked by the
    /// reader), and the plaintext against the recorded digest.
    fn keyed_checks(&mut self, header: &Header, t: &Trailer, d: Digest) -> Result<()> {
        let key = self.key.as_ref().expect("keyed checks with a key");
        if !t.emd.mac_ok(key) {
            return Err(self.fail("the final EMD fails its MAC check"));
        }
        self.passed
            .push("the trailer's EMD MAC verified with the volume key".to_string());
        if header.raw {
            self.passed
                .push("raw stream: made without a key, it carries no stream MAC".to_string());
        } else {
            self.passed
                .push("stream MAC verified with the volume key".to_string());
        }
        let recorded = match (t.plaintext_blake3, t.emd.provenance.as_ref()) {
            (Some(h), _) => Some(h),
            // A raw stream: the source's last backup recorded its plaintext,
            // which still holds when the data has not changed since.
            (None, Some(p)) if p.bytes == d.bytes && p.data_version == t.emd.data_version => {
                p.plaintext_blake3
            }
            _ => None,
        };
        match recorded {
            Some(h) if blake3::Hash::from(h) == d.hash => self.passed.push(format!(
                "plaintext BLAKE3 of the frames matches the recorded digest: {}",
                d.hash.to_hex()
            )),
            Some(_) => {
                return Err(self.fail(format!(
                    "plaintext BLAKE3 of the frames does NOT match the recorded digest: {}",
                    d.hash.to_hex()
                )));
            }
            None => self.passed.push(format!(
                "plaintext BLAKE3 {} (no digest recorded to compare)",
                d.hash.to_hex()
            )),
        }
        Ok(())
    }
}

/// The bytes a frame puts into the data area: a data frame's payload as it
/// is; the key's ciphertext of a zero marker or a compressed frame, whose
/// plaintext `decoded` says the decoder holds already.
fn ciphertext<'a>(
    decoder: &'a mut FrameDecoder,
    f: &FrameHeader,
    payload: &'a [u8],
    raw: &[u8; crate::stream::format::FRAME_HEADER_LEN],
    decoded: bool,
) -> Result<&'a [u8]> {
    if f.kind == FrameKind::Data {
        return Ok(payload);
    }
    if decoded {
        return decoder.encrypt_decoded(f);
    }
    decoder.ciphertext(f, payload, raw)
}

/// The field in which the trailer's EMD differs from the header's clone,
/// if any: both describe one volume.
fn same_volume(header: &Header, fin: &Emd) -> std::result::Result<(), &'static str> {
    let h = &header.emd;
    let checks: [(bool, &'static str); 10] = [
        (fin.uuid == h.uuid, "the UUID"),
        (fin.cipher == h.cipher, "the cipher"),
        (fin.sector_size == h.sector_size, "the sector size"),
        (fin.data_offset == h.data_offset, "the data offset"),
        (fin.slots == h.slots, "the slot table"),
        (fin.label == h.label, "the label"),
        (fin.state == h.state, "the state"),
        (fin.clone_of == h.clone_of, "the source of the clone"),
        (fin.data_version == h.data_version, "the data version"),
        (
            header.expected.is_none() || fin.data_size == h.data_size,
            "the data size",
        ),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, what)) => Err(what),
        None => Ok(()),
    }
}
