//! `evfs demo`: the main job end to end on an embedded default, with no
//! terminal and no input. A keystore with an owner key (passphrase stored),
//! a sample source volume of mixed text, zeros and random data, a re-keyed
//! backup to a second volume and to a stream, the stream restored, and all
//! three verified against the source. It calls the use-cases as any program
//! embedding evfs would.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::backup::{self, BackupRequest, Target};
use super::restore::{self, RestoreRequest};
use super::verify::{self, VerifyRequest};
use super::{KeyUse, Keys, Observer, Silent};
use crate::crypto::Passphrase;
use crate::crypto::kdf::KdfParams;
use crate::error::{Error, IoContext, Result};
use crate::keys::{KeyId, Keystore, PrivateKey, passphrase};
use crate::size::human;

const OWNER: &str = "demo.owner";

/// The demo's keys: its keystore, every passphrase stored.
struct StoredKeys(Keystore);

impl Keys for StoredKeys {
    fn keystore(&self) -> Result<Keystore> {
        Ok(Keystore::at(self.0.root()))
    }

    fn unlock(&self, id: &KeyId, _purpose: KeyUse) -> Result<PrivateKey> {
        passphrase::unlock(&self.0, id, &passphrase::PassphraseSource::default())
    }
}

/// Run the demo in `dir` (kept) or a temporary directory (removed after
/// success), on `size` bytes of sample data; `line` hears each line of the
/// summary, `obs` where files were kept after a failure. Fails (exit 5)
/// when a verification failed.
pub fn run(
    dir: Option<PathBuf>,
    size: u64,
    threads: Option<usize>,
    line: &dyn Fn(&str),
    obs: &dyn Observer,
) -> Result<()> {
    if size == 0 || !size.is_multiple_of(4096) {
        return Err(Error::usage("--size must be a positive multiple of 4 KiB"));
    }
    let (dir, temporary) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).ctx("creating", &d)?;
            (d, false)
        }
        None => (make_temp_dir()?, true),
    };
    let result = steps(&dir, size, super::threads(threads), line);
    match (&result, temporary) {
        (Ok(()), true) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        (Err(_), true) => obs.warn(&format!(
            "evfs: demo: files kept for inspection in {}",
            dir.display()
        )),
        _ => {}
    }
    result
}

fn steps(dir: &Path, size: u64, threads: usize, line: &dyn Fn(&str)) -> Result<()> {
    let ks_dir = dir.join("keystore");
    line(&format!("evfs demo in {}", dir.display()));

    // A keystore with an owner key whose passphrase is stored, so nothing asks.
    let ks = Keystore::at(&ks_dir);
    let id = KeyId::parse(OWNER)?;
    if ks.pub_path(&id).exists() {
        line(&format!(
            "  key {OWNER}: reusing the one in {}",
            ks_dir.display()
        ));
    } else {
        let mut secret = [0u8; 24];
        crate::crypto::random_bytes(&mut secret)?;
        let pass = Passphrase::new(crate::hex::encode(&secret).into_bytes());
        zeroize::Zeroize::zeroize(&mut secret);
        ks.generate(&id, &pass, KdfParams::DEFAULT)?;
        ks.store_passphrase(&id, &pass)?;
        line(&format!(
            "  key {OWNER}: generated, passphrase stored with the host key"
        ));
    }
    let keys = StoredKeys(ks);

    let p = |name: &str| dir.join(name);
    let (image, source, copy, stream, restored) = (
        p("sample.img"),
        p("source.evfs"),
        p("copy.evfs"),
        p("source.evfs-stream"),
        p("restored.evfs"),
    );
    for f in [&image, &source, &copy, &stream, &restored] {
        let _ = std::fs::remove_file(f);
    }
    write_sample(&image, size)?;
    line(&format!(
        "  sample data: {} of text, zeros and random bytes",
        human(size)
    ));
    let request = |src: &Path, target: Target| BackupRequest {
        key: Some(id.clone()),
        threads,
        ..BackupRequest::new(src, target)
    };
    let steps: [(&str, BackupRequest); 3] = [
        (
            "source volume (encrypt)",
            BackupRequest {
                key: None,
                owner: Some(id.clone()),
                ..request(&image, Target::Path(source.clone()))
            },
        ),
        (
            "re-keyed copy (reencrypt)",
            request(&source, Target::Path(copy.clone())),
        ),
        (
            "backup stream",
            request(&source, Target::StreamFile(stream.clone())),
        ),
    ];
    let mut source_digest = None;
    for (what, req) in steps {
        let r = backup::run(&req, &keys, &Silent)?;
        source_digest = source_digest.or(r.digest);
        line(&format!(
            "  {what:<28} {} in {:.2} s, {}/s{}",
            human(r.bytes),
            r.seconds,
            human((r.bytes as f64 / r.seconds.max(1e-9)) as u64),
            r.stream_bytes
                .map(|n| format!(" (stream {})", human(n)))
                .unwrap_or_default()
        ));
    }
    let r = restore::run(
        &RestoreRequest {
            stream: stream.clone(),
            more: vec![],
            target: restored.clone(),
            key: None,
            force: false,
            luks: Default::default(),
        },
        &keys,
        &Silent,
    )?;
    line(&format!(
        "  {:<28} {} in {:.2} s, {}/s",
        "stream restored",
        human(r.bytes),
        r.seconds,
        human((r.bytes as f64 / r.seconds.max(1e-9)) as u64)
    ));

    let mut all_ok = true;
    for (what, target) in [
        ("copy", &copy),
        ("stream", &stream),
        ("restored", &restored),
    ] {
        let v = verify::check(
            &VerifyRequest {
                target: target.clone(),
                more: vec![],
                key: Some(id.clone()),
                against: Some(source.clone()),
                threads,
                luks: Default::default(),
            },
            &keys,
        )?;
        all_ok &= v.ok();
        line(&format!(
            "  verify {what:<10} {}  {}",
            if v.ok() { "ok  " } else { "FAIL" },
            v.digest()
                .map(|d| d.to_hex().to_string())
                .unwrap_or_default()
        ));
        if !v.ok() {
            for l in v.lines() {
                line(&format!("      {l}"));
            }
        }
    }
    let digest = source_digest
        .map(|d| d.to_hex().to_string())
        .unwrap_or_default();
    line(&format!("  source plaintext blake3  {digest}"));
    if !all_ok {
        return Err(Error::integrity("demo: a verification failed (see above)"));
    }
    line("demo: every verification passed");
    Ok(())
}

/// Mixed sample data, written in 1 MiB pieces: text, zeros, and random
/// bytes (a xorshift stream: fast, and as incompressible as real random).
fn write_sample(path: &Path, size: u64) -> Result<()> {
    const PIECE: usize = 1 << 20;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).ctx("creating", path)?);
    let text =
        b"EVFS demo: encrypted volumes backed up, re-keyed, streamed, restored and verified. ";
    let mut state = u64::from_le_bytes(crate::crypto::random_array::<8>()?) | 1;
    let mut buf = vec![0u8; PIECE];
    let mut written = 0u64;
    let mut piece = 0u64;
    while written < size {
        let n = (size - written).min(PIECE as u64) as usize;
        match piece % 3 {
            0 => {
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = text[i % text.len()];
                }
            }
            1 => buf[..n].fill(0),
            _ => {
                for word in buf[..n].chunks_mut(8) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let bytes = state.to_le_bytes();
                    word.copy_from_slice(&bytes[..word.len()]);
                }
            }
        }
        f.write_all(&buf[..n]).ctx("writing", path)?;
        written += n as u64;
        piece += 1;
    }
    f.flush().ctx("writing", path)
}

fn make_temp_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    let suffix = crate::hex::encode(&crate::crypto::random_array::<6>()?);
    let dir = base.join(format!("evfs-demo-{suffix}"));
    std::fs::DirBuilder::new()
        .create(&dir)
        .ctx("creating", &dir)?;
    Ok(dir)
}
