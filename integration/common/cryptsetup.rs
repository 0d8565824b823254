//! cryptsetup for the LUKS tests: images of known plaintext made by
//! cryptsetup itself, and what cryptsetup says about images evfs made.
//!
//! cryptsetup 2.6 works on image files without device-mapper for
//! `luksFormat`, `luksDump` (with `--dump-volume-key`), `open
//! --test-passphrase`, `reencrypt --encrypt` (a plain image encrypted in
//! place) and `reencrypt --force-offline-reencrypt`, `convert`, `token`,
//! `luksAddKey`. Tests call [`super::tools::have_tools`] with `cryptsetup`
//! first: under `CI` a missing cryptsetup fails them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Fast keyslots: cryptsetup's minimum Argon2id cost.
pub const ARGON2: &[&str] = &[
    "--pbkdf",
    "argon2id",
    "--pbkdf-memory",
    "32",
    "--pbkdf-force-iterations",
    "4",
    "--pbkdf-parallel",
    "1",
];
/// Fast PBKDF2 keyslots.
pub const PBKDF2: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// Run cryptsetup with `stdin` (a `--key-file -` is read from it whole).
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("cryptsetup")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cryptsetup runs");
    let mut input = child.stdin.take().expect("stdin");
    // A command that reads nothing may close its stdin early.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("cryptsetup finishes")
}

/// Run cryptsetup, require success, return stdout.
pub fn ok(args: &[&str], stdin: &[u8]) -> String {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "cryptsetup {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run cryptsetup, require failure, return stderr.
pub fn fails(args: &[&str], stdin: &[u8]) -> String {
    let out = run(args, stdin);
    assert!(
        !out.status.success(),
        "cryptsetup {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `luksDump` of an image.
pub fn dump(img: &Path) -> String {
    ok(&["luksDump", img.to_str().unwrap()], b"")
}

/// A `Name:  \tvalue` line of `luksDump`.
pub fn field<'a>(dump: &'a str, name: &str) -> &'a str {
    dump.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map_or("", str::trim)
}

/// Where the data starts, as cryptsetup reports it.
pub fn data_offset(img: &Path) -> u64 {
    let d = dump(img);
    if let Some(sectors) = d.lines().find_map(|l| l.strip_prefix("Payload offset:")) {
        return sectors.trim().parse::<u64>().unwrap() * 512;
    }
    d.lines()
        .find_map(|l| l.trim().strip_prefix("offset: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no data offset in {d}"))
}

/// The volume key, from `luksDump --dump-volume-key`.
pub fn volume_key(img: &Path, secret: &[u8]) -> Vec<u8> {
    let out = ok(
        &[
            "luksDump",
            "--dump-volume-key",
            "-q",
            "--key-file",
            "-",
            img.to_str().unwrap(),
        ],
        secret,
    );
    let mut hex = String::new();
    let mut inside = false;
    for line in out.lines() {
        if let Some(rest) = line
            .strip_prefix("MK dump:")
            .or_else(|| line.strip_prefix("Volume key:"))
        {
            inside = true;
            hex.push_str(rest);
        } else if inside && line.starts_with(char::is_whitespace) {
            hex.push_str(line);
        } else {
            inside = false;
        }
    }
    let key: Vec<u8> = hex
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        .collect();
    assert!(!key.is_empty(), "no key in {out}");
    key
}

/// Whether cryptsetup opens `img` with `secret` (`open --test-passphrase`).
pub fn opens(img: &Path, secret: &[u8]) -> bool {
    run(
        &[
            "open",
            "--test-passphrase",
            "--key-file",
            "-",
            img.to_str().unwrap(),
        ],
        secret,
    )
    .status
    .success()
}

/// How cryptsetup makes an image.
#[derive(Clone, Copy, Debug)]
pub struct Make<'a> {
    /// LUKS1: encrypted as LUKS2 with 512-byte sectors and PBKDF2, then
    /// `convert --type luks1` (LUKS1 encryption in place needs
    /// device-mapper).
    pub luks1: bool,
    pub sector_size: u32,
    /// `ARGON2` or `PBKDF2`.
    pub kdf: &'a [&'a str],
    /// `--cipher` and `--key-size`, when not cryptsetup's default.
    pub cipher: Option<(&'a str, &'a str)>,
    /// A detached header file (`--header`): the data area is then the
    /// whole image.
    pub header: Option<&'a Path>,
}

impl Default for Make<'_> {
    fn default() -> Self {
        Make {
            luks1: false,
            sector_size: 4096,
            kdf: ARGON2,
            cipher: None,
            header: None,
        }
    }
}

/// A LUKS image at `img` whose data area is exactly `plain` (a multiple of
/// the sector size): cryptsetup encrypts it in place (`reencrypt
/// --encrypt`, which shifts it behind the header into room made by
/// `--reduce-device-size`), and the file is cut where the plaintext ends.
pub fn image(img: &Path, plain: &[u8], secret: &[u8], make: Make<'_>) {
    let mut content = plain.to_vec();
    if make.header.is_none() {
        content.resize(plain.len() + (16 << 20), 0);
    }
    std::fs::write(img, &content).unwrap();
    let sector = make.sector_size.to_string();
    let mut args = vec![
        "reencrypt",
        "-q",
        "--encrypt",
        "--type",
        "luks2",
        "--sector-size",
        &sector,
        "--key-file",
        "-",
    ];
    let header;
    match make.header {
        Some(h) => {
            header = h.to_str().unwrap().to_string();
            args.extend(["--header", &header]);
        }
        None => args.extend(["--reduce-device-size", "16M"]),
    }
    if let Some((cipher, bits)) = make.cipher {
        args.extend(["--cipher", cipher, "--key-size", bits]);
    }
    args.extend_from_slice(if make.luks1 { PBKDF2 } else { make.kdf });
    args.push(img.to_str().unwrap());
    ok(&args, secret);
    if make.luks1 {
        ok(
            &["convert", "-q", "--type", "luks1", img.to_str().unwrap()],
            b"",
        );
    }
    if make.header.is_none() {
        let end = data_offset(img) + plain.len() as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(img)
            .unwrap()
            .set_len(end)
            .unwrap();
    }
}
