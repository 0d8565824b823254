//! `evfs demo`: the main job end to end on an embedded default, with no
//! terminal and no input. A keystore with an owner key (passphrase stored),
//! a sample source volume of mixed text, zeros and random data, a re-keyed
//! backup to a second volume and to a stream, the stream restored, and all
//! three verified against the source. Exit 0 only when every check passed.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;

use super::Ctx;
use crate::cli::{BackupArgs, Cli, Command, RestoreArgs, VerifyArgs};
use crate::crypto::Passphrase;
use crate::crypto::kdf::KdfParams;
use crate::error::{Error, IoContext, Result};
use crate::keys::{KeyId, Keystore};
use crate::size::human;

const OWNER: &str = "demo.owner";

pub fn run(ctx: &Ctx, dir: Option<PathBuf>, size: u64, threads: Option<usize>) -> Result<()> {
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
    let result = steps(ctx, &dir, size, threads);
    match (&result, temporary) {
        (Ok(()), true) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        (Err(_), true) => eprintln!("evfs: demo: files kept for inspection in {}", dir.display()),
        _ => {}
    }
    result
}

fn steps(parent: &Ctx, dir: &Path, size: u64, threads: Option<usize>) -> Result<()> {
    let ks_dir = dir.join("keystore");
    let ctx = Ctx::new(Some(ks_dir.clone()), true, 0);
    let line = |text: String| {
        if !parent.quiet {
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    };
    line(format!("evfs demo in {}", dir.display()));

    // A keystore with an owner key whose passphrase is stored, so nothing asks.
    let ks = Keystore::at(&ks_dir);
    let id = KeyId::parse(OWNER)?;
    if ks.pub_path(&id).exists() {
        line(format!(
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
        line(format!(
            "  key {OWNER}: generated, passphrase stored with the host key"
        ));
    }

    let p = |name: &str| dir.join(name).display().to_string();
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
    write_sample(Path::new(&image), size)?;
    line(format!(
        "  sample data: {} of text, zeros and random bytes",
        human(size)
    ));
    let threads_arg = threads.map(|n| n.to_string());
    let with_threads = |v: Vec<&str>| -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(String::from).collect();
        if let Some(t) = &threads_arg {
            v.extend(["--threads".to_string(), t.clone()]);
        }
        v
    };

    let steps: [(&str, Vec<String>); 3] = [
        (
            "source volume (encrypt)",
            with_threads(vec![&image, &source, "--owner", OWNER]),
        ),
        (
            "re-keyed copy (reencrypt)",
            with_threads(vec![&source, &copy, "-k", OWNER]),
        ),
        (
            "backup stream",
            with_threads(vec![&source, "--stream", &stream, "-k", OWNER]),
        ),
    ];
    let mut source_digest = None;
    for (what, argv) in steps {
        let r = super::backup::execute(&ctx, &backup_args(&argv)?)?;
        source_digest = source_digest.or(r.digest);
        line(format!(
            "  {what:<28} {} in {:.2} s, {}/s{}",
            human(r.bytes),
            r.seconds,
            human((r.bytes as f64 / r.seconds.max(1e-9)) as u64),
            r.stream_bytes
                .map(|n| format!(" (stream {})", human(n)))
                .unwrap_or_default()
        ));
    }
    let r = super::restore::execute(&ctx, &restore_args(&[&stream, &restored])?)?;
    line(format!(
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
        let v = super::verify::check(
            &ctx,
            &verify_args(&[target, "-k", OWNER, "--against", &source])?,
        )?;
        all_ok &= v.ok();
        line(format!(
            "  verify {what:<10} {}  {}",
            if v.ok() { "ok  " } else { "FAIL" },
            v.digest()
                .map(|d| d.to_hex().to_string())
                .unwrap_or_default()
        ));
        if !v.ok() {
            for l in v.lines() {
                line(format!("      {l}"));
            }
        }
    }
    let digest = source_digest
        .map(|d| d.to_hex().to_string())
        .unwrap_or_default();
    line(format!("  source plaintext blake3  {digest}"));
    if !all_ok {
        return Err(Error::integrity("demo: a verification failed (see above)"));
    }
    line("demo: every verification passed".to_string());
    Ok(())
}

fn parse(argv: Vec<String>) -> Result<Command> {
    Cli::try_parse_from(argv)
        .map(|c| c.command)
        .map_err(|e| Error::runtime(format!("internal: demo arguments: {e}")))
}

fn backup_args(rest: &[String]) -> Result<BackupArgs> {
    let argv = ["evfs", "backup"]
        .iter()
        .map(|s| s.to_string())
        .chain(rest.iter().cloned())
        .collect();
    match parse(argv)? {
        Command::Backup(a) => Ok(a),
        _ => Err(Error::runtime("internal: not a backup")),
    }
}

fn restore_args(rest: &[&str]) -> Result<RestoreArgs> {
    let argv = ["evfs", "restore"]
        .iter()
        .chain(rest)
        .map(|s| s.to_string())
        .collect();
    match parse(argv)? {
        Command::Restore(a) => Ok(a),
        _ => Err(Error::runtime("internal: not a restore")),
    }
}

fn verify_args(rest: &[&str]) -> Result<VerifyArgs> {
    let argv = ["evfs", "verify"]
        .iter()
        .chain(rest)
        .map(|s| s.to_string())
        .collect();
    match parse(argv)? {
        Command::Verify(a) => Ok(a),
        _ => Err(Error::runtime("internal: not a verify")),
    }
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
