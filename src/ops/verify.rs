//! `evfs verify TARGET [-k ID] [--against SRC]`: restore verification.
//!
//! A volume: both EMD copies valid and clean; with `-k`, the MAC and the
//! plaintext BLAKE3 against the provenance. A stream: every frame, the
//! trailer, and with `-k` the MAC and the plaintext digest. `--against SRC`:
//! the plaintext BLAKE3 of TARGET equals SRC's. Exit 0 only when every check
//! passed; exit 5 on any mismatch, naming where.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

pub use super::findings::Check;
use super::findings::Findings;
use super::luks::LuksAccess;
use super::read::Plaintext;
pub use super::stream_check::Digest;
use super::stream_check::{FrameBytes, StreamCheck};
use super::trust::SignedBy;
use super::{DATA_ROLES, KeyUse, Keys, trust};
use crate::emd::{Copies, State};
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::volume::luks::LuksVolume;
use crate::volume::sniff::{self, Kind};
use crate::volume::{Device, Volume, metadata};

/// What to verify.
#[derive(Clone, Debug)]
pub struct VerifyRequest {
    /// A volume, a plain file, or a stream (`-` for standard input).
    pub target: PathBuf,
    /// Further links of a chain of streams (files) after `target`: the
    /// links must follow each other and restore to the last one's digest.
    pub more: Vec<PathBuf>,
    /// A key of the volume: checks its MAC and its plaintext.
    pub key: Option<KeyId>,
    /// Also compare the plaintext with this source's.
    pub against: Option<PathBuf>,
    /// Worker threads for reading plaintext (see [`super::threads`]).
    pub threads: usize,
    /// How to reach TARGET and SRC where they are LUKS volumes. Their
    /// secrets come from the [`Keys`] provider: [`KeyUse::Volume`] for
    /// SRC, [`KeyUse::Target`] for TARGET; when no target secret nor
    /// target access is given and SRC is no LUKS volume, TARGET takes
    /// SRC's ([`KeyUse::Volume`], `against`).
    pub luks: LuksVerify,
}

/// The keyslots and detached headers of LUKS volumes in a verify.
#[derive(Clone, Debug, Default)]
pub struct LuksVerify {
    /// TARGET's keyslot and detached header.
    pub target: LuksAccess,
    /// SRC's (`against`) keyslot and detached header.
    pub against: LuksAccess,
}

/// What `verify` found: every check, and the plaintext digest it computed or read.
pub struct Verdict {
    findings: Findings,
    /// What the target is.
    pub kind: Kind,
    /// The plaintext digest computed or read, and its length.
    pub plaintext: Option<Digest>,
    /// Who signed the stream, or the volume's EMD.
    pub signed_by: Option<SignedBy>,
}

impl Verdict {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.findings.ok()
    }

    /// The plaintext digest, when there is one.
    pub fn digest(&self) -> Option<blake3::Hash> {
        self.plaintext.map(|d| d.hash)
    }

    /// Every check, in order.
    pub fn checks(&self) -> &[Check] {
        self.findings.checks()
    }

    /// The first check that failed.
    pub fn first_failure(&self) -> Option<&str> {
        self.findings.first_failure()
    }

    /// The report's lines, `ok` or `FAIL` first.
    pub fn lines(&self) -> Vec<String> {
        self.findings
            .checks()
            .iter()
            .map(|c| format!("{}  {}", if c.ok { "ok  " } else { "FAIL" }, c.what))
            .collect()
    }
}

/// Run every check `args` asks for; failures are findings, not errors.
pub fn check(args: &VerifyRequest, keys: &dyn Keys) -> Result<Verdict> {
    let threads = args.threads;
    let mut f = Findings::default();
    if !args.more.is_empty() {
        if args.against.is_some() {
            return Err(Error::usage(
                "--against compares one TARGET with its source; a chain of streams is verified alone",
            ));
        }
        let mut links = vec![args.target.clone()];
        links.extend(args.more.iter().cloned());
        let (plaintext, signed_by) = verify_chain(keys, &links, args.key.as_ref(), &mut f)?;
        return Ok(Verdict {
            findings: f,
            kind: Kind::Stream,
            plaintext,
            signed_by,
        });
    }
    let kind = match args.luks.target.header {
        Some(_) => Kind::Luks,
        None => kind_of(&args.target)?,
    };
    let mut signed_by = None;
    let target_digest = match kind {
        Kind::Luks => {
            let (access, purpose) = luks_target(args, keys)?;
            super::luks::verify::verify(
                keys,
                &args.target,
                args.key.as_ref(),
                (&access, purpose),
                (args.against.is_some(), threads),
                &mut f,
                &mut signed_by,
            )?
        }
        Kind::Stream => {
            let (d, s) = verify_stream(keys, &args.target, args.key.as_ref(), &mut f)?;
            signed_by = s;
            d
        }
        Kind::Volume => {
            let (d, s) = verify_volume(keys, &args.target, args.key.as_ref(), threads, &mut f)?;
            signed_by = s;
            d
        }
        Kind::Plain => {
            if args.against.is_none() {
                return Err(Error::usage(format!(
                    "{} is plain data (no EVFS metadata), neither an EVFS volume nor a backup stream: there is nothing in it to verify",
                    args.target.display()
                ))
                .with_hint("compare it with its source: evfs verify TARGET --against SRC"));
            }
            None
        }
    };
    let mut reported = target_digest;
    if let Some(src) = &args.against {
        let src_digest = digest_of(keys, src, args.key.as_ref(), &args.luks.against, threads)?;
        let target = match target_digest {
            Some(d) => Some(d),
            None if kind == Kind::Luks => None,
            None => match digest_of(
                keys,
                &args.target,
                args.key.as_ref(),
                &args.luks.target,
                threads,
            ) {
                Ok(d) => Some(d),
                Err(e) if e.exit_code() == 5 => {
                    f.fail(
                        e.to_string()
                            .trim_start_matches("integrity failure: ")
                            .to_string(),
                    );
                    None
                }
                Err(e) => return Err(e),
            },
        };
        match target {
            Some(t) => {
                let same = t.hash == src_digest.hash && t.bytes == src_digest.bytes;
                let how = if same {
                    "equals"
                } else if t.bytes != src_digest.bytes {
                    "differs in length from"
                } else {
                    "differs from"
                };
                f.check(
                    same,
                    format!(
                        "plaintext BLAKE3 of {} ({} bytes) {how} that of {} ({} bytes)",
                        args.target.display(),
                        t.bytes,
                        src.display(),
                        src_digest.bytes
                    ),
                );
                reported = Some(t);
            }
            None if f.ok() => f.fail(format!(
                "the plaintext of {} could not be read to compare it with {} (give -k ID)",
                args.target.display(),
                src.display()
            )),
            None => {}
        }
    }
    Ok(Verdict {
        findings: f,
        kind,
        plaintext: reported,
        signed_by,
    })
}

/// How TARGET, a LUKS volume, is opened: with the target's secret and
/// access, or where none is given and SRC is no LUKS volume (or there is
/// no SRC), with the only LUKS secret given.
fn luks_target(args: &VerifyRequest, keys: &dyn Keys) -> Result<(LuksAccess, KeyUse)> {
    let own =
        args.luks.target != LuksAccess::default() || keys.luks_secret(KeyUse::Target)?.is_some();
    let src_luks = match &args.against {
        None => false,
        Some(p) => args.luks.against.header.is_some() || kind_of(p)? == Kind::Luks,
    };
    Ok(if own || src_luks {
        (args.luks.target.clone(), KeyUse::Target)
    } else {
        (args.luks.against.clone(), KeyUse::Volume)
    })
}

fn kind_of(path: &Path) -> Result<Kind> {
    if path == Path::new("-") {
        return Ok(Kind::Stream);
    }
    // A FIFO or character device (`<(ssh ...)`, a tape) can only be a
    // stream; it is never opened as a volume.
    if std::fs::metadata(path)
        .is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_char_device())
    {
        return Ok(Kind::Stream);
    }
    let dev = Device::open_read(path)?;
    Ok(match sniff::kind_of_device(&dev)? {
        Kind::Plain if metadata::read(&dev)?.any_magic() => Kind::Volume,
        // A LUKS2 volume whose primary header is gone.
        Kind::Plain if LuksVolume::probe(path, None)?.is_some() => Kind::Luks,
        k => k,
    })
}

/// Check a volume's metadata, and with a key its MAC and data against the
/// provenance. Returns the plaintext digest when it was computed.
fn verify_volume(
    keys: &dyn Keys,
    path: &Path,
    key: Option<&KeyId>,
    threads: usize,
    f: &mut Findings,
) -> Result<(Option<Digest>, Option<SignedBy>)> {
    let v = Volume::from_device(Device::open_read(path)?)?;
    let current = Some(v.emd.generation);
    let (primary, backup) = v.copies.health();
    f.check(
        primary,
        format!(
            "EMD primary copy {}",
            Copies::describe(&v.copies.primary, current)
        ),
    );
    f.check(
        backup,
        format!(
            "EMD backup copy {}",
            Copies::describe(&v.copies.backup, current)
        ),
    );
    f.check(
        !v.emd.dirty,
        if v.emd.dirty {
            "the volume is dirty: a writer did not finish, its data is not trustworthy".to_string()
        } else {
            "the volume is clean".to_string()
        },
    );
    // The chunk index, when the EMD names one: what the next backup into
    // the volume compares with. Not the data (checked below, with -k): an
    // index that is not there (a raw copy made without it) or was changed
    // costs a full rewrite next time, and is said, not failed.
    if let Some(r) = v.emd.index.filter(|_| !v.emd.dirty) {
        match super::backup::index::read_sealed(&v.dev, &v.emd)? {
            Ok(_) => f.pass(format!(
                "chunk index: {} bytes, its BLAKE3 as the EMD names it",
                r.len
            )),
            Err(why) => f.pass(format!(
                "{why} (a raw copy made without it, or its area was written outside evfs): the data is not affected; the next backup into the volume writes every chunk"
            )),
        }
    }
    // Keyless: the signature's status is reported, and only a broken one
    // fails; with -k, unlocking requires a trusted one.
    let policy = keys.policy();
    let signed = trust::signed_by(
        v.emd.signature.as_ref(),
        &v.emd.signed_message(),
        keys,
        &policy,
    )?;
    match (&signed, trust::judge(signed.as_ref(), &policy, "the EMD")) {
        (_, Err(e)) => f.fail(
            e.to_string()
                .trim_start_matches("integrity failure: ")
                .to_string(),
        ),
        (Some(s), Ok(())) => f.pass(format!("the EMD is {}", s.describe())),
        (None, Ok(())) => f.pass("the EMD is not signed: its authenticity is not checked"),
    }
    let Some(id) = key else {
        f.pass("data not checked (give -k ID to check the plaintext against the provenance)");
        return Ok((None, signed));
    };
    let pk = keys.unlock(id, KeyUse::Volume)?;
    let unlocked = trust::unlock(&v.emd, v.path(), &pk, DATA_ROLES, "read its data", keys)?;
    f.pass(format!("EMD MAC verified with {}", pk.id()));
    if v.emd.state == State::Disabled {
        f.fail(
            "the volume is disabled: its plaintext cannot be read (enable it to verify the data)",
        );
        return Ok((None, signed));
    }
    let bytes = v.emd.data_len;
    let hash = Plaintext::of_volume(&v, &unlocked.key)?.digest(threads)?;
    match v.emd.provenance.as_ref() {
        // Case 12: data written through `map` since the backup is not a
        // tamper alarm; the mark is under the MAC, which just verified.
        Some(p) if v.emd.modified_since_backup() => f.pass(format!(
            "the volume was modified since its backup (data version {} now, {} when the backup wrote it): its data is not compared with the backup's digest; plaintext BLAKE3 of {bytes} bytes: {}",
            v.emd.data_version,
            p.data_version,
            hash.to_hex()
        )),
        Some(p) => match p.plaintext_blake3 {
            Some(expected) if p.bytes == bytes => f.digest(
                hash,
                expected,
                &format!("of {bytes} bytes"),
                "the provenance",
            ),
            Some(_) => f.fail(format!(
                "the provenance records {} bytes of data, the volume holds {bytes}",
                p.bytes
            )),
            None => f.pass(
                "a raw clone: its provenance has no plaintext digest to compare (use --against SRC)",
            ),
        },
        None => f.fail(
            "the volume has no provenance digest to check its data against (use --against SRC)",
        ),
    }
    Ok((Some(Digest { hash, bytes }), signed))
}

/// Read a whole stream through the one stream checker (which `restore`
/// runs too); with a key, also the MACs and the plaintext digest.
fn verify_stream(
    keys: &dyn Keys,
    path: &Path,
    key: Option<&KeyId>,
    f: &mut Findings,
) -> Result<(Option<Digest>, Option<SignedBy>)> {
    let policy = match key {
        Some(_) => keys.policy().requiring(),
        None => keys.policy(),
    };
    let mut check = StreamCheck::open(path, key, keys, policy, |_| false)?;
    let result = check.run(keys, None, FrameBytes::Ciphertext, &mut |_| {});
    for line in check.passed() {
        f.pass(line.clone());
    }
    let signed = check.signed_by().cloned();
    match result {
        Ok(c) => Ok((c.digest(), signed)),
        Err(e) if e.exit_code() == 5 => {
            let text = e.to_string();
            let text = text.trim_start_matches("integrity failure: ");
            f.fail(
                text.strip_prefix(&format!("{}: ", check.name()))
                    .unwrap_or(text)
                    .to_string(),
            );
            Ok((None, signed))
        }
        Err(e) => Err(e),
    }
}

/// A chain of streams: the links follow each other (their headers, then
/// each link's base digest is the digest the link before it ends at), and
/// each link passes the one stream checker; with a key, the plaintext the
/// chain restores to is recombined chunk by chunk and checked against
/// every link's digest.
fn verify_chain(
    keys: &dyn Keys,
    links: &[PathBuf],
    key: Option<&KeyId>,
    f: &mut Findings,
) -> Result<(Option<Digest>, Option<SignedBy>)> {
    let fail = |f: &mut Findings, e: &Error| {
        f.fail(
            e.to_string()
                .trim_start_matches("integrity failure: ")
                .to_string(),
        );
    };
    let headers = match super::restore::check_chain(links) {
        Ok(h) => h,
        Err(e) if e.exit_code() == 5 => {
            fail(f, &e);
            return Ok((None, None));
        }
        Err(e) => return Err(e),
    };
    f.pass(format!(
        "{} links, each made from the state the link before it ends at",
        links.len()
    ));
    let policy = match key {
        Some(_) => keys.policy().requiring(),
        None => keys.policy(),
    };
    let mut chain = super::stream_check::Chain::default();
    let mut ends_at: Option<[u8; 32]> = None;
    let mut last = None;
    let mut recomputed = false;
    let mut signed = None;
    for (i, path) in links.iter().enumerate() {
        let mut check = StreamCheck::open(path, key, keys, policy.clone(), |_| false)?;
        let result = check.run_linked(
            keys,
            None,
            FrameBytes::Ciphertext,
            &mut |_| {},
            key.map(|_| &mut chain),
        );
        for line in check.passed() {
            f.pass(format!("link {} ({}): {line}", i + 1, path.display()));
        }
        signed = check.signed_by().cloned();
        let c = match result {
            Ok(c) => c,
            Err(e) if e.exit_code() == 5 => {
                fail(f, &e);
                return Ok((None, signed));
            }
            Err(e) => return Err(e),
        };
        if let (Some(base), Some(prev)) = (headers[i].base, ends_at)
            && base.digest != prev
        {
            f.fail(format!(
                "link {} ({}) applies onto plaintext blake3 {}, link {} ends at {}",
                i + 1,
                path.display(),
                crate::hex::encode(&base.digest),
                i,
                crate::hex::encode(&prev)
            ));
            return Ok((None, signed));
        }
        ends_at = c.trailer.plaintext_blake3;
        last = c.digest();
        recomputed = c.computed.is_some();
    }
    // Recombined from the frames only with the key, from a full stream on.
    match &last {
        Some(d) if recomputed && headers[0].base.is_none() => f.pass(format!(
            "the chain restores to plaintext BLAKE3 {}",
            d.hash.to_hex()
        )),
        Some(d) => f.pass(format!(
            "the last link records plaintext BLAKE3 {} (not recomputed: that takes -k ID and a chain from its full stream)",
            d.hash.to_hex()
        )),
        None => {}
    }
    Ok((last, signed))
}

/// The plaintext digest of a volume, plain file or stream: all its data.
fn digest_of(
    keys: &dyn Keys,
    path: &Path,
    key: Option<&KeyId>,
    luks: &LuksAccess,
    threads: usize,
) -> Result<Digest> {
    let kind = match luks.header {
        Some(_) => Kind::Luks,
        None => kind_of(path)?,
    };
    match kind {
        Kind::Luks => super::luks::verify::digest(keys, path, key, luks, threads),
        Kind::Stream => {
            let mut scratch = Findings::default();
            let (d, _) = verify_stream(keys, path, key, &mut scratch)?;
            match (d, scratch.first_failure()) {
                (_, Some(what)) => Err(Error::integrity(format!("{}: {what}", path.display()))),
                (Some(d), None) => Ok(d),
                (None, None) => Err(Error::access(format!(
                    "the plaintext digest of {} needs its key",
                    path.display()
                ))
                .with_hint("give -k ID")),
            }
        }
        Kind::Volume => {
            let v = Volume::from_device(Device::open_read(path)?)?;
            let Some(id) = key else {
                return Err(Error::access(format!(
                    "{} is an EVFS volume: reading its plaintext needs a key",
                    path.display()
                ))
                .with_hint("give -k ID"));
            };
            let pk = keys.unlock(id, KeyUse::Volume)?;
            let unlocked = trust::unlock(&v.emd, v.path(), &pk, DATA_ROLES, "read its data", keys)?;
            v.require_enabled("decrypted")?;
            let plain = Plaintext::of_volume(&v, &unlocked.key)?;
            let bytes = plain.len();
            Ok(Digest {
                hash: plain.digest(threads)?,
                bytes,
            })
        }
        Kind::Plain => {
            let dev = Device::open_read(path)?;
            Ok(Digest {
                hash: Plaintext::of_plain(&dev).digest(threads)?,
                bytes: dev.size(),
            })
        }
    }
}
