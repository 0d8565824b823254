//! Tests of the LUKS module.
//!
//! Most of them check evfs against cryptsetup itself: images made by
//! `cryptsetup` in a temporary directory are read, unlocked and decrypted,
//! and headers evfs writes are handed to `cryptsetup` to dump, test, add
//! keys to and reencrypt. cryptsetup works on image files without
//! device-mapper for everything used here. Without cryptsetup those tests
//! call [`unavailable`] (a failure under `CI`, a notice elsewhere).
//!
//! The others need nothing: hostile and damaged headers never panic, the
//! writer round-trips, and the worked examples of `formats/LUKS.md` parse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use proptest::prelude::*;

use super::json::Json;
use super::keyslot::{HashAlg, af_merge, af_size, af_split};
use super::luks2::{BinHeader, checksum};
use super::write::format_with;
use super::*;
use crate::crypto::Passphrase;
use crate::testutil::{expect_listing, fill, hexdump, listing, unavailable, unhexdump};

const DOC: &str = "formats/LUKS.md";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.as_bytes().to_vec())
}

/// A fixed source of "random" bytes for deterministic headers.
fn fixed_rng(seed: u64) -> impl FnMut(&mut [u8]) -> Result<()> {
    let mut n = seed;
    move |buf: &mut [u8]| {
        n += 1;
        buf.copy_from_slice(&fill(n, buf.len()));
        Ok(())
    }
}

/// Argon2id parameters small enough for tests (cryptsetup's minimums).
const FAST_KDF: Argon2Params = Argon2Params {
    memory_kib: 32,
    iterations: 4,
    parallel: 1,
};

fn fast_options() -> FormatOptions {
    FormatOptions {
        kdf: FAST_KDF,
        digest_iterations: 1000,
        ..FormatOptions::default()
    }
}

/// cryptsetup arguments for fast keyslots.
const CS_ARGON: &[&str] = &[
    "--pbkdf",
    "argon2id",
    "--pbkdf-memory",
    "32",
    "--pbkdf-force-iterations",
    "4",
    "--pbkdf-parallel",
    "1",
];
const CS_PBKDF2: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// cryptsetup in a temporary directory.
struct Cs {
    dir: tempfile::TempDir,
}

/// `None` (after saying so, or failing under CI) without cryptsetup.
fn cryptsetup(test: &str) -> Option<Cs> {
    let found = Command::new("cryptsetup")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        unavailable(
            test,
            "cryptsetup is not installed (apt-get install cryptsetup-bin)",
        );
        return None;
    }
    Some(Cs {
        dir: tempfile::tempdir().expect("a temporary directory"),
    })
}

impl Cs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file of `size` bytes: zeros, or `content` at its start.
    fn image(&self, name: &str, size: u64, content: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(size).unwrap();
        p
    }

    /// Run cryptsetup with `stdin` (a key file given as `--key-file -` is
    /// read whole from it, as a file would be).
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("cryptsetup")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cryptsetup runs");
        let mut input = child.stdin.take().unwrap();
        // A command that reads nothing may close its stdin early.
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "cryptsetup {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The command fails; its stderr.
    fn fails(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "cryptsetup {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn luks_format(&self, img: &Path, secret: &str, extra: &[&str]) {
        let mut args = vec!["luksFormat", "-q", "--key-file", "-"];
        args.extend_from_slice(extra);
        args.push(img.to_str().unwrap());
        self.ok(&args, secret.as_bytes());
    }

    /// Add `new` (a key file's content) with `old`, fast KDF.
    fn add_key(&self, img: &Path, old: &str, new: &[u8], extra: &[&str]) {
        let key = self.path("new-key");
        std::fs::write(&key, new).unwrap();
        let mut args = vec!["luksAddKey", "-q", "--key-file", "-"];
        args.extend_from_slice(extra);
        args.push(img.to_str().unwrap());
        args.push(key.to_str().unwrap());
        self.ok(&args, old.as_bytes());
    }

    /// The volume key as `luksDump --dump-volume-key` prints it.
    fn dump_volume_key(&self, img: &Path, secret: &[u8]) -> Vec<u8> {
        let out = self.ok(
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
            .map(|h| u8::from_str_radix(h, 16).expect("hex byte in the key dump"))
            .collect();
        assert!(!key.is_empty(), "no key in: {out}");
        key
    }

    /// The keyslot cryptsetup opens with `secret` (`Key slot N unlocked.`).
    fn test_passphrase(&self, img: &Path, secret: &[u8], slot: Option<u32>) -> Option<u32> {
        let slot_arg;
        let mut args = vec!["open", "--test-passphrase", "-v", "--key-file", "-"];
        if let Some(s) = slot {
            slot_arg = s.to_string();
            args.extend(["--key-slot", &slot_arg]);
        }
        args.push(img.to_str().unwrap());
        let out = self.run(&args, secret);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return None;
        }
        text.lines().find_map(|l| {
            l.strip_prefix("Key slot ")?
                .strip_suffix(" unlocked.")?
                .parse()
                .ok()
        })
    }
}

/// A `Name:  \tvalue` line of `luksDump`.
fn dump_field<'a>(dump: &'a str, name: &str) -> &'a str {
    dump.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map_or("", str::trim)
}

fn open(img: &Path) -> std::fs::File {
    std::fs::File::open(img).unwrap()
}

fn read_header(img: &Path) -> Header {
    Header::read(&open(img)).unwrap_or_else(|e| panic!("{}: {e}", img.display()))
}

fn unlock(img: &Path, secret: &[u8], slot: Option<u32>) -> Result<Unlocked> {
    let f = open(img);
    Header::read(&f)?.unlock(&f, &Passphrase::new(secret.to_vec()), slot)
}

/// The whole data area of `img`, decrypted with `key`.
fn decrypt_data(img: &Path, key: &LuksKey) -> Vec<u8> {
    let f = open(img);
    let area = Header::read(&f).unwrap().data_area().unwrap();
    let len = area.data_size(f.size().unwrap());
    let mut data = vec![0u8; len as usize];
    f.read_at(&mut data, area.offset).unwrap();
    area.cipher(key).unwrap().decrypt(&mut data, 0).unwrap();
    data
}

/// Write `plan` to the file at `img`.
fn apply(img: &Path, plan: &Plan) {
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    plan.apply(&mut f).unwrap();
}

fn luks2(h: &Header) -> &Luks2Header {
    match h {
        Header::Luks2(h) => h,
        Header::Luks1(_) => panic!("expected LUKS2"),
    }
}

// ---------------------------------------------------------------------------
// Reading and unlocking what cryptsetup makes
// ---------------------------------------------------------------------------

#[test]
fn luks2_keyslots_unlock_with_cryptsetups_volume_key() {
    let Some(cs) = cryptsetup("luks2_keyslots_unlock_with_cryptsetups_volume_key") else {
        return;
    };
    let img = cs.image("l2.img", 20 << 20, &[]);
    let mut format_args = vec!["--type", "luks2", "--sector-size", "4096"];
    format_args.extend_from_slice(CS_ARGON);
    cs.luks_format(&img, "first", &format_args);
    // Slot 1: PBKDF2; slot 2: Argon2i; slot 3: a key file ending in a
    // newline, which belongs to the key.
    cs.add_key(&img, "first", b"second", CS_PBKDF2);
    let mut argon2i = CS_ARGON.to_vec();
    argon2i[1] = "argon2i";
    cs.add_key(&img, "first", b"third", &argon2i);
    cs.add_key(&img, "first", b"key file\n", CS_ARGON);

    let h = read_header(&img);
    assert_eq!(h.version(), 2);
    assert!(h.unsupported().is_none(), "{:?}", h.unsupported());
    let want = cs.dump_volume_key(&img, b"first");
    assert_eq!(want.len(), 64);
    for (secret, slot) in [
        (&b"first"[..], 0),
        (b"second", 1),
        (b"third", 2),
        (b"key file\n", 3),
    ] {
        let u = unlock(&img, secret, None).unwrap();
        assert_eq!(u.keyslot, slot);
        assert_eq!(u.key.expose(), &want[..]);
        assert_eq!(cs.test_passphrase(&img, secret, None), Some(slot));
        // Named, too.
        assert_eq!(unlock(&img, secret, Some(slot)).unwrap().keyslot, slot);
    }
    let kf = cs.path("keyfile");
    std::fs::write(&kf, b"key file\n").unwrap();
    let k = read_key_file(&kf).unwrap();
    assert_eq!(k.expose(), b"key file\n", "the newline is part of the key");
    assert_eq!(h.unlock(&open(&img), &k, None).unwrap().keyslot, 3);

    for wrong in [&b"key file"[..], b"First", b""] {
        assert!(matches!(
            unlock(&img, wrong, None),
            Err(LuksError::WrongPassphrase)
        ));
        assert_eq!(cs.test_passphrase(&img, wrong, None), None);
    }
    // Another slot's passphrase with a slot named, and a slot not in use.
    assert!(matches!(
        unlock(&img, b"second", Some(0)),
        Err(LuksError::WrongPassphrase)
    ));
    assert!(matches!(
        unlock(&img, b"second", Some(7)),
        Err(LuksError::NoKeyslot(_))
    ));
}

#[test]
fn luks2_priorities_order_the_keyslots_as_cryptsetup_does() {
    let Some(cs) = cryptsetup("luks2_priorities_order_the_keyslots_as_cryptsetup_does") else {
        return;
    };
    let img = cs.image("prio.img", 20 << 20, &[]);
    let mut args = vec!["--type", "luks2"];
    args.extend_from_slice(CS_ARGON);
    cs.luks_format(&img, "shared", &args);
    cs.add_key(&img, "shared", b"shared", CS_ARGON); // slot 1, same passphrase
    cs.add_key(&img, "shared", b"rescue", CS_ARGON); // slot 2
    assert_eq!(unlock(&img, b"shared", None).unwrap().keyslot, 0);

    let img_s = img.to_str().unwrap();
    cs.ok(
        &["config", "--priority", "prefer", "--key-slot", "1", img_s],
        b"",
    );
    cs.ok(
        &["config", "--priority", "ignore", "--key-slot", "2", img_s],
        b"",
    );
    let h = read_header(&img);
    assert_eq!(luks2(&h).unlock_order(), vec![1, 0]);
    // Preferred first, as cryptsetup.
    assert_eq!(unlock(&img, b"shared", None).unwrap().keyslot, 1);
    assert_eq!(cs.test_passphrase(&img, b"shared", None), Some(1));
    // An ignored keyslot opens only when named.
    assert!(matches!(
        unlock(&img, b"rescue", None),
        Err(LuksError::WrongPassphrase)
    ));
    assert_eq!(cs.test_passphrase(&img, b"rescue", None), None);
    assert_eq!(unlock(&img, b"rescue", Some(2)).unwrap().keyslot, 2);
    assert_eq!(cs.test_passphrase(&img, b"rescue", Some(2)), Some(2));
}

/// cryptsetup encrypts a plain image in place (`reencrypt --encrypt`), so
/// the plaintext of the data area is known; both sector sizes. With
/// 4096-byte sectors this checks the IV rule: sector n has IV 8n.
#[test]
fn luks2_data_decrypts_to_the_plaintext_cryptsetup_encrypted() {
    let Some(cs) = cryptsetup("luks2_data_decrypts_to_the_plaintext_cryptsetup_encrypted") else {
        return;
    };
    let plain = fill(42, 24 << 20);
    for sector in ["512", "4096"] {
        let img = cs.image(&format!("enc{sector}.img"), plain.len() as u64, &plain);
        let mut args = vec![
            "reencrypt",
            "-q",
            "--encrypt",
            "--type",
            "luks2",
            "--reduce-device-size",
            "16M",
            "--sector-size",
            sector,
            "--key-file",
            "-",
        ];
        args.extend_from_slice(CS_ARGON);
        args.push(img.to_str().unwrap());
        cs.ok(&args, b"pw");

        let h = read_header(&img);
        let area = h.data_area().unwrap();
        assert_eq!(area.sector_size.to_string(), sector);
        assert_eq!(area.cipher, SectorCipherKind::AesXtsPlain64);
        let u = unlock(&img, b"pw", None).unwrap();
        assert_eq!(u.key.expose(), &cs.dump_volume_key(&img, b"pw")[..]);
        let data = decrypt_data(&img, &u.key);
        // `--reduce-device-size 16M` tells cryptsetup the last 16 MiB are
        // free: it keeps the plaintext before them, shifted behind the
        // header.
        let kept = plain.len() - (16 << 20);
        assert!(data.len() >= kept);
        assert!(
            data[..kept] == plain[..kept],
            "sector size {sector}: the data area decrypts to the original plaintext"
        );

        if sector == "4096" {
            // Sector numbers as tweaks (not 512-byte units) do not decrypt.
            let f = open(&img);
            let mut s1 = vec![0u8; 4096];
            f.read_at(&mut s1, area.offset + 4096).unwrap();
            let mut wrong = s1.clone();
            crate::crypto::Xts::new(u.key.expose())
                .unwrap()
                .decrypt_sectors(&mut wrong, 4096, 1);
            assert_ne!(&wrong[..], &plain[4096..8192]);
            crate::crypto::Xts::new(u.key.expose())
                .unwrap()
                .decrypt_sectors(&mut s1, 4096, 8);
            assert_eq!(&s1[..], &plain[4096..8192], "sector 1 has tweak 8");
        }
    }
}

/// LUKS1 with known plaintext: cryptsetup encrypts in place as LUKS2 (its
/// LUKS1 encryption needs device-mapper), then converts to LUKS1.
#[test]
fn luks1_xts_and_cbc_essiv_data_decrypts() {
    let Some(cs) = cryptsetup("luks1_xts_and_cbc_essiv_data_decrypts") else {
        return;
    };
    let plain = fill(7, 12 << 20);
    for (cipher, key_size, hash, key_len) in [
        ("aes-xts-plain64", "512", "sha256", 64),
        ("aes-xts-plain64", "256", "sha1", 32),
        ("aes-cbc-essiv:sha256", "256", "sha512", 32),
        ("aes-cbc-essiv:sha256", "128", "sha256", 16),
    ] {
        let ctx = format!("{cipher} {key_size} {hash}");
        let img = cs.image("l1.img", plain.len() as u64, &plain);
        let img_s = img.to_str().unwrap();
        cs.ok(
            &[
                "reencrypt",
                "-q",
                "--encrypt",
                "--type",
                "luks2",
                "--cipher",
                cipher,
                "--key-size",
                key_size,
                "--hash",
                hash,
                "--sector-size",
                "512",
                "--reduce-device-size",
                "4M",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                "-",
                img_s,
            ],
            b"old volume",
        );
        cs.ok(&["convert", "-q", "--type", "luks1", img_s], b"");
        cs.add_key(&img, "old volume", b"slot one", CS_PBKDF2);

        let h = read_header(&img);
        let Header::Luks1(l1) = &h else {
            panic!("{ctx}: expected LUKS1");
        };
        assert_eq!(l1.cipher_spec(), cipher, "{ctx}");
        assert_eq!(l1.hash_spec, hash, "{ctx}");
        assert_eq!(l1.key_bytes, key_len, "{ctx}");
        assert!(h.unsupported().is_none(), "{ctx}: {:?}", h.unsupported());
        let want = cs.dump_volume_key(&img, b"old volume");
        let u = unlock(&img, b"old volume", None).unwrap();
        assert_eq!((u.keyslot, u.key.expose()), (0, &want[..]), "{ctx}");
        let u1 = unlock(&img, b"slot one", None).unwrap();
        assert_eq!((u1.keyslot, u1.key.expose()), (1, &want[..]), "{ctx}");
        assert!(matches!(
            unlock(&img, b"slot one", Some(0)),
            Err(LuksError::WrongPassphrase)
        ));
        assert!(matches!(
            unlock(&img, b"nope", None),
            Err(LuksError::WrongPassphrase)
        ));
        let data = decrypt_data(&img, &u.key);
        let kept = plain.len() - (4 << 20);
        assert!(data[..kept] == plain[..kept], "{ctx}: plaintext");
    }
}

#[test]
fn luks1_made_by_luks_format_unlocks_with_each_hash() {
    let Some(cs) = cryptsetup("luks1_made_by_luks_format_unlocks_with_each_hash") else {
        return;
    };
    for hash in ["sha1", "sha256", "sha512"] {
        let img = cs.image("f1.img", 4 << 20, &[]);
        cs.luks_format(
            &img,
            "luks one",
            &[
                "--type",
                "luks1",
                "--hash",
                hash,
                "--pbkdf-force-iterations",
                "1000",
            ],
        );
        let want = cs.dump_volume_key(&img, b"luks one");
        let u = unlock(&img, b"luks one", None).unwrap();
        assert_eq!(u.key.expose(), &want[..], "{hash}");
        assert!(read_header(&img).verify_key(&u.key).unwrap());
        assert!(
            !read_header(&img)
                .verify_key(&LuksKey::new(vec![0; want.len()]))
                .unwrap()
        );
    }
}

#[test]
fn refused_volumes_say_why() {
    let Some(cs) = cryptsetup("refused_volumes_say_why") else {
        return;
    };
    // LUKS1 with a cipher evfs does not read (cryptsetup needs the
    // kernel's cipher to format it, so the name is patched in).
    let img = cs.image("tf.img", 4 << 20, &[]);
    cs.luks_format(
        &img,
        "x",
        &["--type", "luks1", "--pbkdf-force-iterations", "1000"],
    );
    let mut b = std::fs::read(&img).unwrap();
    b[8..40].fill(0);
    b[8..15].copy_from_slice(b"twofish");
    std::fs::write(&img, &b).unwrap();
    assert!(
        cs.ok(&["luksDump", img.to_str().unwrap()], b"")
            .contains("twofish")
    );
    let h = read_header(&img);
    let why = h.unsupported().unwrap();
    assert!(why.contains("twofish-xts-plain64"), "{why}");
    assert!(matches!(h.data_area(), Err(LuksError::Unsupported(_))));
    assert!(matches!(
        unlock(&img, b"x", None),
        Err(LuksError::Unsupported(_))
    ));
    // LUKS2 with cbc-essiv data (evfs reads it only in LUKS1).
    let img = cs.image("cbc2.img", 20 << 20, &[]);
    let mut args = vec![
        "--type",
        "luks2",
        "--cipher",
        "aes-cbc-essiv:sha256",
        "--key-size",
        "256",
    ];
    args.extend_from_slice(CS_ARGON);
    cs.luks_format(&img, "x", &args);
    let why = read_header(&img).unsupported().unwrap();
    assert!(why.contains("aes-cbc-essiv:sha256"), "{why}");
    // Its keyslots still open (their area cipher is the segment's).
    assert!(unlock(&img, b"x", None).is_ok());
}

// ---------------------------------------------------------------------------
// Damaged headers
// ---------------------------------------------------------------------------

fn flip(img: &Path, at: u64) {
    let mut b = std::fs::read(img).unwrap();
    b[at as usize] ^= 0x01;
    std::fs::write(img, b).unwrap();
}

#[test]
fn a_damaged_copy_falls_back_to_the_other_as_cryptsetup_does() {
    let Some(cs) = cryptsetup("a_damaged_copy_falls_back_to_the_other_as_cryptsetup_does") else {
        return;
    };
    let base = cs.image("d.img", 20 << 20, &[]);
    let mut args = vec!["--type", "luks2"];
    args.extend_from_slice(CS_ARGON);
    cs.luks_format(&base, "pw", &args);
    let fresh = |name: &str| {
        let p = cs.path(name);
        std::fs::copy(&base, &p).unwrap();
        p
    };
    let h = read_header(&base);
    assert!(luks2(&h).copies().iter().all(CopyState::is_valid));
    let md = luks2(&h).metadata_size();

    // A byte of the primary binary header (its label): checksum mismatch.
    let img = fresh("p.img");
    flip(&img, 30);
    let h = read_header(&img);
    assert!(matches!(&luks2(&h).copies()[0], CopyState::Bad(w) if w.contains("checksum")));
    assert!(luks2(&h).uses_secondary());
    assert!(unlock(&img, b"pw", None).is_ok());
    assert_eq!(cs.test_passphrase(&img, b"pw", None), Some(0));

    // A byte of the primary JSON area: that copy is bad too.
    let img = fresh("j.img");
    flip(&img, 4096 + 20);
    let h = read_header(&img);
    assert!(!luks2(&h).copies()[0].is_valid());
    assert!(luks2(&h).uses_secondary());

    // Only the secondary damaged: the primary is used.
    let img = fresh("s.img");
    flip(&img, md + 30);
    let h = read_header(&img);
    assert!(luks2(&h).copies()[0].is_valid());
    assert!(!luks2(&h).copies()[1].is_valid());
    assert!(!luks2(&h).uses_secondary());

    // Both: damaged, for cryptsetup as well.
    let img = fresh("b.img");
    flip(&img, 30);
    flip(&img, md + 4096 + 20);
    assert!(matches!(
        Header::read(&open(&img)),
        Err(LuksError::Damaged(_))
    ));
    cs.fails(&["luksDump", img.to_str().unwrap()], b"");

    // The primary binary header wiped entirely: the secondary is found by
    // scanning the known offsets.
    let img = fresh("w.img");
    let mut b = std::fs::read(&img).unwrap();
    b[..4096].fill(0);
    std::fs::write(&img, &b).unwrap();
    let h = read_header(&img);
    assert!(luks2(&h).uses_secondary());
    assert!(unlock(&img, b"pw", None).is_ok());

    // Nothing at all: not LUKS.
    let img = cs.image("zero.img", 1 << 20, &[]);
    assert!(matches!(Header::read(&open(&img)), Err(LuksError::NotLuks)));
    cs.fails(&["isLuks", img.to_str().unwrap()], b"");
}

/// An update interrupted between the two copies: the copy with the higher
/// seqid wins, in evfs and in cryptsetup.
#[test]
fn the_copy_with_the_higher_seqid_wins() {
    let Some(cs) = cryptsetup("the_copy_with_the_higher_seqid_wins") else {
        return;
    };
    let key = LuksKey::new(fill(1, 64));
    let (h, plan) = format(&key, &pass("pw"), &fast_options()).unwrap();
    let md = h.metadata_size();
    for (name, keep_primary) in [("primary-newer.img", true), ("secondary-newer.img", false)] {
        let img = cs.image(name, 20 << 20, &[]);
        apply(&img, &plan);
        let mut h2 = h.clone();
        let update = h2.set_label_for_test("newer");
        // Run only the writes of one copy.
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        for step in update.steps() {
            if let Step::Write { offset, bytes } = step
                && ((*offset < md) == keep_primary)
            {
                f.write_at(bytes, *offset).unwrap();
            }
        }
        drop(f);
        let read = read_header(&img);
        let r = luks2(&read);
        assert_eq!(r.seqid(), 2, "{name}");
        assert_eq!(r.label(), "newer", "{name}");
        assert_eq!(r.uses_secondary(), !keep_primary, "{name}");
        // cryptsetup picks the same copy (on a copy of the image: luksDump
        // may repair the older one).
        let probe = cs.path("probe.img");
        std::fs::copy(&img, &probe).unwrap();
        let dump = cs.ok(&["luksDump", probe.to_str().unwrap()], b"");
        assert_eq!(dump_field(&dump, "Epoch"), "2", "{name}: {dump}");
        assert!(dump.contains("newer"), "{name}: {dump}");
    }
}

#[test]
fn a_copy_with_valid_checksum_but_invalid_json_is_not_used() {
    let key = LuksKey::new(fill(2, 64));
    let (h, plan) = format(&key, &pass("pw"), &fast_options()).unwrap();
    let mut img = vec![0u8; 17 << 20];
    plan.apply(&mut img).unwrap();
    // Rewrite the primary with JSON that parses but breaks a rule (a
    // keyslot area inside the metadata), checksum made good.
    let mut json = h.json.clone();
    if let Some(Json::Object(slots)) = json.get_mut("keyslots")
        && let Some(area) = slots[0].1.get_mut("area")
    {
        area.set("offset", Json::u64_string(4096));
    }
    let primary = raw_copy(&json.to_text(), h.metadata_size(), 9, false);
    img[..primary.len()].copy_from_slice(&primary);
    let read = Header::read(&img).unwrap();
    let r = luks2(&read);
    assert!(matches!(&r.copies()[0], CopyState::BadJson(w) if w.contains("metadata")));
    assert!(r.uses_secondary());
    assert_eq!(
        r.seqid(),
        1,
        "the valid older copy, not the invalid newer one"
    );
}

/// A device whose reads fail in `bad` (a failing disk).
struct Failing<'a> {
    bytes: &'a [u8],
    bad: std::ops::Range<u64>,
}

impl ReadAt for Failing<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        if off < self.bad.end && off + buf.len() as u64 > self.bad.start {
            return Err(std::io::Error::other("bad sector"));
        }
        self.bytes.read_at(buf, off)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
}

#[test]
fn an_unreadable_copy_is_a_bad_copy_and_two_are_an_io_error() {
    let (_, img) = sample_luks2();
    let r = Header::read(&Failing {
        bytes: &img,
        bad: 0..512,
    })
    .unwrap();
    assert!(matches!(&luks2(&r).copies()[0], CopyState::Bad(w) if w.contains("I/O")));
    assert!(luks2(&r).uses_secondary());
    let r = Header::read(&Failing {
        bytes: &img,
        bad: 20000..20001,
    })
    .unwrap();
    assert!(!luks2(&r).uses_secondary());
    assert!(matches!(
        Header::read(&Failing {
            bytes: &img,
            bad: 600..20000,
        }),
        Err(LuksError::Io(_))
    ));
}

/// A copy built from JSON text, with a good checksum.
fn raw_copy(json: &str, md: u64, seqid: u64, secondary: bool) -> Vec<u8> {
    let bin = BinHeader {
        secondary,
        hdr_size: md,
        seqid,
        label: b"raw".to_vec(),
        checksum_alg: "sha256".into(),
        salt: [7; 64],
        uuid: b"5f8e3c1a-0b2d-4e6f-8a9b-1c2d3e4f5a6b".to_vec(),
        subsystem: vec![],
        hdr_offset: if secondary { md } else { 0 },
    };
    let mut area = vec![0u8; (md - 4096) as usize];
    area[..json.len()].copy_from_slice(json.as_bytes());
    let mut b = bin.encode().to_vec();
    let sum = checksum("sha256", &b, &area).unwrap();
    b[448..448 + 32].copy_from_slice(&sum);
    b.extend_from_slice(&area);
    b
}

/// A device whose two copies hold `json` (no keyslot data).
fn raw_image(json: &str) -> Vec<u8> {
    let md = 16384;
    let mut img = raw_copy(json, md, 1, false);
    img.extend(raw_copy(json, md, 1, true));
    img.resize(17 << 20, 0);
    img
}

// ---------------------------------------------------------------------------
// Writing: cryptsetup accepts what evfs writes
// ---------------------------------------------------------------------------

#[test]
fn cryptsetup_accepts_the_headers_evfs_formats() {
    let Some(cs) = cryptsetup("cryptsetup_accepts_the_headers_evfs_formats") else {
        return;
    };
    for (sector, key_len) in [(4096u32, 64usize), (512, 32)] {
        let ctx = format!("sector {sector} key {key_len}");
        let key = LuksKey::generate(key_len).unwrap();
        let opts = FormatOptions {
            sector_size: sector,
            label: "evfs target".into(),
            ..fast_options()
        };
        let (h, plan) = format(&key, &pass("target pass"), &opts).unwrap();
        let (start, end) = plan.extent().unwrap();
        assert_eq!((start, end), (0, 32768 + 16744448), "{ctx}");
        let img = cs.image("t.img", 24 << 20, &[]);
        apply(&img, &plan);
        let img_s = img.to_str().unwrap();

        cs.ok(&["isLuks", img_s], b"");
        let dump = cs.ok(&["luksDump", img_s], b"");
        assert_eq!(dump_field(&dump, "Label"), "evfs target", "{ctx}: {dump}");
        assert!(
            dump.contains(&format!("sector: {sector} [bytes]")),
            "{ctx}: {dump}"
        );
        assert!(dump.contains("offset: 16777216 [bytes]"), "{ctx}: {dump}");
        assert!(dump.contains(&h.uuid()), "{ctx}: {dump}");
        assert!(dump.contains("PBKDF:      argon2id"), "{ctx}: {dump}");
        assert_eq!(cs.test_passphrase(&img, b"target pass", None), Some(0));
        assert_eq!(cs.test_passphrase(&img, b"other", None), None);
        assert_eq!(cs.dump_volume_key(&img, b"target pass"), key.expose());
        let u = unlock(&img, b"target pass", None).unwrap();
        assert_eq!(u.key.expose(), key.expose());
        let r = read_header(&img);
        assert_eq!(luks2(&r).seqid(), 1);
        assert!(luks2(&r).copies().iter().all(CopyState::is_valid));
    }
}

#[test]
fn keyslots_added_and_removed_by_evfs_work_in_cryptsetup() {
    let Some(cs) = cryptsetup("keyslots_added_and_removed_by_evfs_work_in_cryptsetup") else {
        return;
    };
    let key = LuksKey::generate(64).unwrap();
    let (mut h, plan) = format(&key, &pass("zero"), &fast_options()).unwrap();
    let img = cs.image("k.img", 20 << 20, &[]);
    apply(&img, &plan);

    let (id, plan) = h.add_keyslot(&key, &pass("one"), &FAST_KDF, None).unwrap();
    assert_eq!(id, 1);
    apply(&img, &plan);
    assert_eq!(h.seqid(), 2);
    assert_eq!(cs.test_passphrase(&img, b"one", None), Some(1));
    assert_eq!(cs.test_passphrase(&img, b"one", Some(1)), Some(1));
    // cryptsetup adds one after evfs's; evfs opens it.
    cs.add_key(&img, "one", b"two", CS_ARGON);
    assert_eq!(unlock(&img, b"two", None).unwrap().keyslot, 2);
    // A wrong key is refused.
    let mut h = luks2(&read_header(&img)).clone();
    assert!(matches!(
        h.add_keyslot(&LuksKey::new(vec![1; 64]), &pass("x"), &FAST_KDF, None),
        Err(LuksError::Invalid(_))
    ));
    assert!(matches!(
        h.add_keyslot(&key, &pass("x"), &FAST_KDF, Some(2)),
        Err(LuksError::Invalid(_))
    ));
    // Remove keyslot 1: its area is overwritten, cryptsetup no longer
    // opens it, the others still do.
    let area = h.metadata().keyslot(1).unwrap().area_offset;
    let before = std::fs::read(&img).unwrap()[area as usize..area as usize + 4096].to_vec();
    let plan = h.remove_keyslot(1).unwrap();
    apply(&img, &plan);
    let after = std::fs::read(&img).unwrap()[area as usize..area as usize + 4096].to_vec();
    assert_ne!(before, after, "the keyslot area is wiped");
    assert_eq!(cs.test_passphrase(&img, b"one", None), None);
    assert_eq!(cs.test_passphrase(&img, b"zero", None), Some(0));
    assert_eq!(cs.test_passphrase(&img, b"two", None), Some(2));
    let dump = cs.ok(&["luksDump", img.to_str().unwrap()], b"");
    assert!(!dump.contains("\n  1: luks2"), "{dump}");
    // The freed area is the one the next keyslot gets.
    let (id, plan) = h
        .add_keyslot(&key, &pass("again"), &FAST_KDF, None)
        .unwrap();
    apply(&img, &plan);
    assert_eq!(id, 1);
    assert_eq!(h.metadata().keyslot(1).unwrap().area_offset, area);
    assert_eq!(cs.test_passphrase(&img, b"again", None), Some(1));
}

#[test]
fn tokens_survive_cryptsetup_operations() {
    let Some(cs) = cryptsetup("tokens_survive_cryptsetup_operations") else {
        return;
    };
    let key = LuksKey::generate(64).unwrap();
    let (mut h, plan) = format(&key, &pass("pw"), &fast_options()).unwrap();
    let img = cs.image("tok.img", 20 << 20, &[]);
    let img_s = img.to_str().unwrap();
    apply(&img, &plan);
    let token = serde_json::json!({
        "type": TOKEN_PROVENANCE,
        "keyslots": ["0"],
        "source_uuid": "11111111-2222-4333-8444-555555555555",
        "bytes": 12345,
        "nested": {"list": [1, "two", null, true]},
    });
    let (id, plan) = h.set_token(None, &token).unwrap();
    assert_eq!(id, 0);
    apply(&img, &plan);
    let exported = |cs: &Cs| -> serde_json::Value {
        serde_json::from_str(&cs.ok(&["token", "export", "--token-id", "0", img_s], b"")).unwrap()
    };
    assert_eq!(exported(&cs), token);
    // Header rewrites by cryptsetup keep it.
    cs.add_key(&img, "pw", b"more", CS_ARGON);
    cs.ok(&["config", "--label", "relabelled", img_s], b"");
    assert_eq!(exported(&cs), token);
    let r = read_header(&img);
    assert_eq!(luks2(&r).metadata().token(0).unwrap().json, token);
    assert_eq!(luks2(&r).label(), "relabelled");
    // A token cryptsetup imports is read by evfs; replacing and removing.
    let t = cs.path("t.json");
    std::fs::write(&t, r#"{"type":"other-tool","keyslots":[],"x":"y"}"#).unwrap();
    cs.ok(
        &["token", "import", "--json-file", t.to_str().unwrap(), img_s],
        b"",
    );
    let mut h = luks2(&read_header(&img)).clone();
    assert_eq!(h.metadata().token(1).unwrap().type_name, "other-tool");
    let replaced = serde_json::json!({"type": TOKEN_PROVENANCE, "v": 2});
    let (_, plan) = h.set_token(Some(0), &replaced).unwrap();
    apply(&img, &plan);
    let mut with_keyslots = replaced.clone();
    with_keyslots["keyslots"] = serde_json::json!([]);
    assert_eq!(exported(&cs), with_keyslots);
    apply(&img, &h.remove_token(0).unwrap());
    cs.fails(&["token", "export", "--token-id", "0", img_s], b"");
    assert!(
        cs.ok(&["token", "export", "--token-id", "1", img_s], b"")
            .contains("other-tool")
    );
    // Removing a keyslot drops it from the tokens that named it.
    let (_, plan) = h
        .set_token(
            None,
            &serde_json::json!({"type": "evfs-x", "keyslots": ["1"]}),
        )
        .unwrap();
    apply(&img, &plan);
    apply(&img, &h.remove_keyslot(1).unwrap());
    let r = read_header(&img);
    assert!(
        luks2(&r)
            .metadata()
            .tokens
            .iter()
            .all(|t| t.keyslots.is_empty())
    );
    // Reserved and malformed tokens are refused.
    for bad in [
        serde_json::json!({"type": "luks2-keyring"}),
        serde_json::json!({"keyslots": []}),
        serde_json::json!({"type": "x", "keyslots": ["9"]}),
        serde_json::json!([1]),
    ] {
        assert!(h.set_token(None, &bad).is_err(), "{bad}");
    }
}

/// A target formatted with the requirement never shows a header without
/// it: the keyslot is written first, then both copies carry the
/// requirement; cryptsetup sees it and still opens the keyslot.
#[test]
fn format_with_requirement_writes_it_from_the_first_header_copy() {
    let key = LuksKey::generate(64).unwrap();
    let (h, plan) = crate::luks::format_with_requirement(
        &key,
        &pass("pw"),
        &fast_options(),
        REQUIREMENT_INCOMPLETE,
    )
    .unwrap();
    assert_eq!(h.seqid(), 2);
    // Every write below the keyslots area is a header copy of seqid 2.
    for step in plan.steps() {
        if let crate::luks::Step::Write { offset, bytes } = step
            && *offset < 2 * super::write::DEFAULT_METADATA_SIZE
            && bytes.len() == 4096
            && bytes[..6] == *b"LUKS\xba\xbe"
        {
            assert_eq!(u64::from_be_bytes(bytes[16..24].try_into().unwrap()), 2);
        }
    }
    let mut img = vec![0u8; 20 << 20];
    plan.apply(&mut img).unwrap();
    let read = luks2(&Header::read(&img).unwrap()).clone();
    assert_eq!(read.requirements(), [REQUIREMENT_INCOMPLETE.to_string()]);
    assert!(read.copies().iter().all(CopyState::is_valid));
    let u = Header::read(&img)
        .unwrap()
        .unlock(&img, &pass("pw"), None)
        .unwrap();
    assert_eq!(u.key.expose(), key.expose());
    let Some(cs) = cryptsetup("format_with_requirement_writes_it_from_the_first_header_copy")
    else {
        return;
    };
    let p = cs.image("fr.img", 20 << 20, &img);
    let dump = cs.ok(&["luksDump", p.to_str().unwrap()], b"");
    assert_eq!(dump_field(&dump, "Requirements"), "evfs-incomplete");
    assert_eq!(cs.test_passphrase(&p, b"pw", None), Some(0));
}

/// What cryptsetup 2.6 does with a header carrying a mandatory requirement
/// it does not know (formats/LUKS.md, "The evfs requirement"): it reads and
/// dumps it, tests passphrases and prints the volume key, but refuses to
/// change keys, tokens, labels, UUID, to reencrypt or convert, and (by its
/// source, `LUKS2_activate`) to activate it.
#[test]
fn the_evfs_requirement_makes_cryptsetup_leave_the_volume_alone() {
    let Some(cs) = cryptsetup("the_evfs_requirement_makes_cryptsetup_leave_the_volume_alone")
    else {
        return;
    };
    let key = LuksKey::generate(64).unwrap();
    let (mut h, plan) = format(&key, &pass("pw"), &fast_options()).unwrap();
    let img = cs.image("req.img", 20 << 20, &[]);
    let img_s = img.to_str().unwrap();
    apply(&img, &plan);
    apply(&img, &h.add_requirement(REQUIREMENT_INCOMPLETE).unwrap());
    assert!(
        h.add_requirement(REQUIREMENT_INCOMPLETE)
            .unwrap()
            .steps()
            .is_empty()
    );

    let dump = cs.ok(&["luksDump", img_s], b"");
    assert_eq!(
        dump_field(&dump, "Requirements"),
        "evfs-incomplete",
        "{dump}"
    );
    assert_eq!(cs.test_passphrase(&img, b"pw", None), Some(0));
    assert_eq!(cs.dump_volume_key(&img, b"pw"), key.expose());
    let new_key = cs.path("nk");
    std::fs::write(&new_key, b"new").unwrap();
    let nk = new_key.to_str().unwrap();
    let t = cs.path("t.json");
    std::fs::write(&t, r#"{"type":"x","keyslots":[]}"#).unwrap();
    let refused: Vec<Vec<&str>> = vec![
        vec!["luksAddKey", "--key-file", "-", img_s, nk],
        vec!["luksChangeKey", "--key-file", "-", img_s, nk],
        vec!["config", "--label", "x", img_s],
        vec!["config", "--priority", "prefer", "--key-slot", "0", img_s],
        vec!["token", "import", "--json-file", t.to_str().unwrap(), img_s],
        vec![
            "luksUUID",
            "-q",
            "--uuid",
            "11111111-2222-4333-8444-555555555555",
            img_s,
        ],
        vec![
            "reencrypt",
            "-q",
            "--force-offline-reencrypt",
            "--key-file",
            "-",
            img_s,
        ],
        vec!["convert", "-q", "--type", "luks1", img_s],
    ];
    for args in &refused {
        let err = cs.fails(args, b"pw");
        assert!(err.contains("Unmet LUKS2 requirements"), "{args:?}: {err}");
    }
    // Activation: refused by LUKS2_activate, which needs device-mapper to
    // be reached; where it is missing the refusal comes earlier.
    let out = cs.run(&["open", "--key-file", "-", img_s, "evfs-req-test"], b"pw");
    if out.status.success() {
        // Do not leave the mapping behind before failing.
        cs.run(&["close", "evfs-req-test"], b"");
        panic!("cryptsetup activated a volume marked {REQUIREMENT_INCOMPLETE}");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unmet LUKS2 requirements") || err.contains("device-mapper"),
        "{err}"
    );
    // Still readable by evfs, which names the reason.
    let r = read_header(&img);
    assert!(r.unsupported().unwrap().contains("evfs-incomplete"));
    assert!(unlock(&img, b"pw", None).is_ok());
    // evfs may still change its own half-written target...
    let (_, plan) = h
        .set_token(None, &serde_json::json!({"type": TOKEN_PROVENANCE}))
        .unwrap();
    apply(&img, &plan);
    // ...and once the requirement is gone, cryptsetup may too.
    apply(&img, &h.remove_requirement(REQUIREMENT_INCOMPLETE).unwrap());
    assert!(!cs.ok(&["luksDump", img_s], b"").contains("Requirements"));
    assert!(read_header(&img).unsupported().is_none());
    cs.add_key(&img, "pw", b"new", CS_ARGON);
    assert_eq!(cs.test_passphrase(&img, b"new", None), Some(1));
    // Keyslot removal is not guarded by cryptsetup 2.6 (observed):
    // luksKillSlot succeeds on a header with an unknown requirement. (The
    // header is read again first: cryptsetup changed it since `h`, and a
    // plan made from a stale header says so.)
    assert!(matches!(
        h.add_requirement(REQUIREMENT_INCOMPLETE)
            .unwrap()
            .check(&open(&img)),
        Err(LuksError::Invalid(_))
    ));
    let mut h = luks2(&read_header(&img)).clone();
    let plan = h.add_requirement(REQUIREMENT_INCOMPLETE).unwrap();
    plan.check(&open(&img)).unwrap();
    apply(&img, &plan);
    let mut h2 = luks2(&read_header(&img)).clone();
    assert_eq!(h2.requirements(), [REQUIREMENT_INCOMPLETE]);
    cs.ok(&["luksKillSlot", "-q", img_s, "1"], b"");
    assert!(matches!(
        unlock(&img, b"new", None),
        Err(LuksError::WrongPassphrase)
    ));
    // cryptsetup kept the requirement when it rewrote the header.
    assert_eq!(
        luks2(&read_header(&img)).requirements(),
        [REQUIREMENT_INCOMPLETE]
    );
    // A header backup carries it, and cryptsetup will not restore that.
    let backup = cs.path("hdr.backup");
    let backup_s = backup.to_str().unwrap();
    cs.ok(
        &["luksHeaderBackup", img_s, "--header-backup-file", backup_s],
        b"",
    );
    let other = cs.image("other.img", 20 << 20, &[]);
    let mut args = vec!["--type", "luks2"];
    args.extend_from_slice(CS_ARGON);
    cs.luks_format(&other, "x", &args);
    let err = cs.fails(
        &[
            "luksHeaderRestore",
            "-q",
            other.to_str().unwrap(),
            "--header-backup-file",
            backup_s,
        ],
        b"",
    );
    assert!(err.contains("Forbidden LUKS2 requirements"), "{err}");
    // isLuks and erase work too (erase on a copy: it wipes the keyslots).
    cs.ok(&["isLuks", img_s], b"");
    let copy = cs.path("erase.img");
    std::fs::copy(&img, &copy).unwrap();
    cs.ok(&["erase", "-q", copy.to_str().unwrap()], b"");
    assert!(matches!(
        unlock(&copy, b"pw", None),
        Err(LuksError::NoKeyslot(_))
    ));
    // luksRemoveKey is not guarded either.
    cs.ok(&["luksRemoveKey", "--key-file", "-", img_s], b"pw");
    assert!(matches!(
        unlock(&img, b"pw", None),
        Err(LuksError::NoKeyslot(_))
    ));
    // evfs refuses to set cryptsetup's own requirements, and to write
    // headers with requirements it does not own.
    assert!(h2.add_requirement("online-reencrypt-v2").is_err());
    assert!(h2.add_requirement("").is_err());
}

#[test]
fn evfs_formatted_targets_survive_cryptsetup_reencryption() {
    let Some(cs) = cryptsetup("evfs_formatted_targets_survive_cryptsetup_reencryption") else {
        return;
    };
    for sector in [4096u32, 512] {
        let key = LuksKey::generate(64).unwrap();
        let opts = FormatOptions {
            sector_size: sector,
            ..fast_options()
        };
        let (mut h, plan) = format(&key, &pass("pw"), &opts).unwrap();
        let img = cs.image("re.img", 20 << 20, &[]);
        apply(&img, &plan);
        let token = serde_json::json!({"type": TOKEN_PROVENANCE, "keyslots": ["0"], "n": 1});
        apply(&img, &h.set_token(None, &token).unwrap().1);
        // evfs writes the data, as a backup into a LUKS2 target would.
        let plain = fill(u64::from(sector), 4 << 20);
        let area = read_header(&img).data_area().unwrap();
        let mut ct = plain.clone();
        area.cipher(&key).unwrap().encrypt(&mut ct, 0).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_at(&ct, area.offset).unwrap();
        drop(f);

        let mut args = vec![
            "reencrypt",
            "-q",
            "--force-offline-reencrypt",
            "--key-file",
            "-",
        ];
        args.extend_from_slice(CS_ARGON);
        args.push(img.to_str().unwrap());
        cs.ok(&args, b"pw");

        let u = unlock(&img, b"pw", None).unwrap();
        assert_ne!(u.key.expose(), key.expose(), "reencryption changes the key");
        let r = read_header(&img);
        assert!(r.unsupported().is_none(), "{:?}", r.unsupported());
        assert_eq!(r.data_area().unwrap().sector_size, sector);
        let data = decrypt_data(&img, &u.key);
        assert!(data == plain, "sector {sector}: the plaintext evfs wrote");
        assert_eq!(
            luks2(&r)
                .metadata()
                .tokens
                .first()
                .map(|t| &t.type_name[..]),
            Some(TOKEN_PROVENANCE)
        );
    }
}

// ---------------------------------------------------------------------------
// Without cryptsetup
// ---------------------------------------------------------------------------

impl Luks2Header {
    /// Test helper: an update that only changes the label.
    fn set_label_for_test(&mut self, label: &str) -> Plan {
        self.bin.label = label.as_bytes().to_vec();
        let json = self.json.clone();
        self.commit_for_test(json)
    }
}

#[test]
fn the_writer_round_trips_and_counts_seqids() {
    let key = LuksKey::new(fill(3, 64));
    let opts = FormatOptions {
        label: "round trip".into(),
        subsystem: "evfs".into(),
        uuid: Some([0x42; 16]),
        ..fast_options()
    };
    let (mut h, plan) = format(&key, &pass("pw"), &opts).unwrap();
    let mut img = Vec::new();
    plan.apply(&mut img).unwrap();
    assert_eq!(
        img.len(),
        16 << 20,
        "the plan fills exactly the metadata and keyslots"
    );
    img.resize(17 << 20, 0);

    let r = Header::read(&img).unwrap();
    let r2 = luks2(&r);
    assert_eq!(r2.uuid(), "42424242-4242-4242-4242-424242424242");
    assert_eq!(r2.label(), "round trip");
    assert_eq!(r2.subsystem(), "evfs");
    assert_eq!(r2.seqid(), 1);
    assert_eq!(r2.json_text(), h.json_text());
    assert_eq!(r2.metadata(), h.metadata());
    let u = r.unlock(&img, &pass("pw"), None).unwrap();
    assert_eq!((u.keyslot, u.key.expose()), (0, key.expose()));
    let area = r.data_area().unwrap();
    assert_eq!(
        (area.offset, area.size, area.sector_size, area.iv_tweak),
        (16 << 20, None, 4096, 0)
    );
    // What is on disk is what encode_copies says.
    let [p, s] = h.encode_copies().unwrap();
    assert!(img[..16384] == p[..] && img[16384..32768] == s[..]);

    // Each update: seqid + 1, both copies valid, the rest unchanged.
    for (i, step) in ["token", "requirement", "keyslot", "unrequire", "untoken"]
        .iter()
        .enumerate()
    {
        let plan = match *step {
            "token" => {
                h.set_token(None, &serde_json::json!({"type": "t"}))
                    .unwrap()
                    .1
            }
            "requirement" => h.add_requirement(REQUIREMENT_INCOMPLETE).unwrap(),
            "keyslot" => {
                h.add_keyslot(&key, &pass("two"), &FAST_KDF, None)
                    .unwrap()
                    .1
            }
            "unrequire" => h.remove_requirement(REQUIREMENT_INCOMPLETE).unwrap(),
            _ => h.remove_token(0).unwrap(),
        };
        plan.apply(&mut img).unwrap();
        let r = Header::read(&img).unwrap();
        let r2 = luks2(&r);
        assert_eq!(r2.seqid(), 2 + i as u64, "{step}");
        assert!(r2.copies().iter().all(CopyState::is_valid), "{step}");
        assert_eq!(r2.json_text(), h.json_text(), "{step}");
    }
    assert_eq!(
        Header::read(&img)
            .unwrap()
            .unlock(&img, &pass("two"), None)
            .unwrap()
            .keyslot,
        1
    );
    assert!(!h.json_text().contains("requirements"));
}

#[test]
fn format_refuses_what_cryptsetup_would_not_write() {
    let key = LuksKey::new(fill(4, 64));
    let p = pass("pw");
    let bad = [
        FormatOptions {
            sector_size: 8192,
            ..fast_options()
        },
        FormatOptions {
            data_offset: 16 << 10,
            ..fast_options()
        },
        FormatOptions {
            data_offset: (16 << 20) + 512,
            ..fast_options()
        },
        FormatOptions {
            metadata_size: 12345,
            ..fast_options()
        },
        FormatOptions {
            label: "x".repeat(48),
            ..fast_options()
        },
        FormatOptions {
            kdf: Argon2Params {
                iterations: 3,
                ..FAST_KDF
            },
            ..fast_options()
        },
        FormatOptions {
            kdf: Argon2Params {
                parallel: 5,
                memory_kib: 1024,
                ..FAST_KDF
            },
            ..fast_options()
        },
        FormatOptions {
            digest_iterations: 999,
            ..fast_options()
        },
    ];
    for opts in &bad {
        assert!(
            matches!(format(&key, &p, opts), Err(LuksError::Invalid(_))),
            "{opts:?}"
        );
    }
    assert!(format(&LuksKey::new(vec![0; 48]), &p, &fast_options()).is_err());
    // The largest metadata and a data offset past 128 MiB of keyslots.
    let opts = FormatOptions {
        metadata_size: 4 << 20,
        data_offset: 256 << 20,
        ..fast_options()
    };
    let (h, _) = format(&key, &p, &opts).unwrap();
    assert_eq!(h.metadata().config.keyslots_size, 128 << 20);
}

#[test]
fn unsupported_luks2_features_are_named() {
    let key = LuksKey::new(fill(5, 64));
    let (h, _) = format_with(&key, &pass("pw"), &fast_options(), &mut fixed_rng(5)).unwrap();
    let edit = |f: &dyn Fn(&mut Json)| -> String {
        let mut json = h.json.clone();
        f(&mut json);
        let img = raw_image(&json.to_text());
        let r = Header::read(&img).unwrap_or_else(|e| panic!("{e}: {}", json.to_text()));
        r.unsupported().unwrap_or_default()
    };
    fn segment(j: &mut Json) -> &mut Json {
        match j.get_mut("segments") {
            Some(Json::Object(s)) => &mut s[0].1,
            _ => unreachable!("the header has segments"),
        }
    }
    let requirement = |name: &'static str| {
        move |j: &mut Json| {
            j.get_mut("config").unwrap().set(
                "requirements",
                Json::Object(vec![(
                    "mandatory".into(),
                    Json::Array(vec![Json::str(name)]),
                )]),
            )
        }
    };
    assert!(edit(&|_| {}).is_empty());
    let why = edit(&|j| {
        segment(j).set(
            "integrity",
            Json::Object(vec![
                ("type".into(), Json::str("hmac(sha256)")),
                ("journal_encryption".into(), Json::str("none")),
                ("journal_integrity".into(), Json::str("none")),
            ]),
        )
    });
    assert!(why.contains("authenticated encryption"), "{why}");
    let why = edit(&|j| segment(j).set("encryption", Json::str("serpent-xts-plain64")));
    assert!(why.contains("serpent-xts-plain64"), "{why}");
    let why = edit(&requirement("online-reencrypt-v2"));
    assert!(why.contains("online reencryption"), "{why}");
    let why = edit(&requirement("offline-reencrypt"));
    assert!(why.contains("offline reencryption"), "{why}");
    let why = edit(&requirement("flux-capacitor"));
    assert!(
        why.contains("unknown mandatory requirement flux-capacitor"),
        "{why}"
    );
    let why = edit(&requirement(REQUIREMENT_INCOMPLETE));
    assert!(why.contains("evfs has not finished"), "{why}");
    // Two data segments (a reencryption stopped half way).
    let why = edit(&|j| {
        let s0 = segment(j);
        s0.set("size", Json::u64_string(1 << 20));
        let mut s1 = s0.clone();
        s1.set("offset", Json::u64_string(17 << 20));
        s1.set("size", Json::str("dynamic"));
        if let Some(Json::Object(segs)) = j.get_mut("segments") {
            segs.push(("1".into(), s1));
        }
        if let Some(Json::Object(d)) = j.get_mut("digests")
            && let Some(Json::Array(list)) = d[0].1.get_mut("segments")
        {
            list.push(Json::str("1"));
        }
    });
    assert!(why.contains("2 data segments"), "{why}");

    // A header with a foreign requirement is read-only for evfs.
    let mut json = h.json.clone();
    requirement("flux-capacitor")(&mut json);
    let img = raw_image(&json.to_text());
    let mut r = luks2(&Header::read(&img).unwrap()).clone();
    assert!(matches!(
        r.set_token(None, &serde_json::json!({"type": "t"})),
        Err(LuksError::Unsupported(_))
    ));
    assert!(matches!(
        r.add_requirement(REQUIREMENT_INCOMPLETE),
        Err(LuksError::Unsupported(_))
    ));
}

#[test]
fn json_keeps_order_and_refuses_duplicates() {
    let text = br#"{"b":1,"a":{"z":[1,2,{"y":null}],"c":"\u00e9\n"},"0":true}"#;
    let j = Json::parse(text).unwrap();
    let keys: Vec<&str> = j
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["b", "a", "0"]);
    assert_eq!(Json::parse(j.to_text().as_bytes()).unwrap(), j);
    assert_eq!(
        serde_json::Value::from(&j),
        serde_json::from_slice::<serde_json::Value>(text).unwrap()
    );
    assert!(Json::parse(br#"{"a":1,"a":2}"#).is_err());
    // Nesting deeper than serde_json's limit is an error, not a crash.
    let deep = "[".repeat(100_000);
    assert!(Json::parse(deep.as_bytes()).is_err());
    // At most 65536 values: a 4 MiB area of `0,` builds no huge tree.
    let many = |n: usize| format!("[{}0]", "0,".repeat(n - 2));
    assert!(Json::parse(many(super::json::MAX_VALUES).as_bytes()).is_ok());
    assert!(Json::parse(many(super::json::MAX_VALUES + 1).as_bytes()).is_err());
    assert!(
        Json::parse(b"{} x").is_err(),
        "nothing may follow the value"
    );
}

#[test]
fn af_split_and_merge_round_trip() {
    for hash in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512] {
        // 48 bytes: SHA-1 and SHA-512 diffusion end in a short block.
        for key_len in [16usize, 32, 48, 64] {
            let key = fill(key_len as u64, key_len);
            let split = af_split(&key, 4000, hash, &mut fixed_rng(9)).unwrap();
            assert_eq!(split.len(), af_size(key_len, 4000));
            assert_eq!(split.len() % 512, 0);
            assert_eq!(&af_merge(&split, key_len, 4000, hash)[..], &key[..]);
            // Every stripe matters.
            let mut damaged = split.clone();
            damaged[key_len * 17] ^= 1;
            assert_ne!(&af_merge(&damaged, key_len, 4000, hash)[..], &key[..]);
        }
    }
}

#[test]
fn pbkdf2_matches_rfc_7914_vector() {
    // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64).
    let mut out = [0u8; 64];
    HashAlg::Sha256.pbkdf2(b"passwd", b"salt", 1, &mut out);
    assert_eq!(
        crate::hex::encode(&out),
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc\
         49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
    );
}

#[test]
fn key_files_are_read_whole_up_to_8_mib() {
    let k = read_key(&b"line one\nline two\n"[..]).unwrap();
    assert_eq!(k.expose(), b"line one\nline two\n");
    assert!(read_key(&b""[..]).unwrap().expose().is_empty());
    let max = vec![7u8; KEY_FILE_MAX];
    assert_eq!(read_key(&max[..]).unwrap().expose().len(), KEY_FILE_MAX);
    let over = vec![7u8; KEY_FILE_MAX + 1];
    assert!(matches!(read_key(&over[..]), Err(LuksError::Invalid(_))));
}

#[test]
fn the_data_area_applies_the_iv_rule() {
    let area = DataArea {
        cipher: SectorCipherKind::AesXtsPlain64,
        offset: 1 << 20,
        size: None,
        sector_size: 4096,
        iv_tweak: 3,
    };
    assert_eq!(area.iv_step(), 8);
    assert_eq!(area.iv_of(0), Some(3));
    assert_eq!(area.iv_of(10), Some(83));
    assert_eq!(area.iv_of(u64::MAX / 4), None);
    assert_eq!(area.data_size((1 << 20) + 3 * 4096 + 100), 3 * 4096);
    assert_eq!(area.data_size(100), 0);
    let key = LuksKey::new(fill(8, 64));
    let c = area.cipher(&key).unwrap();
    let plain = fill(9, 4096 * 3);
    let mut data = plain.clone();
    c.encrypt(&mut data, 5).unwrap();
    // Sector 6 of the area is one XTS sector with tweak 6 * 8 + 3.
    let mut one = plain[4096..8192].to_vec();
    crate::crypto::Xts::new(key.expose())
        .unwrap()
        .encrypt_sectors(&mut one, 4096, 51);
    assert_eq!(&data[4096..8192], &one[..]);
    c.decrypt(&mut data, 5).unwrap();
    assert_eq!(data, plain);
    assert!(matches!(
        c.decrypt(&mut data[..100], 0),
        Err(LuksError::Invalid(_))
    ));
    assert!(c.decrypt(&mut data[..4096], u64::MAX / 8).is_ok());
    assert!(matches!(
        c.decrypt(&mut data[..4096], u64::MAX / 8 + 1),
        Err(LuksError::Invalid(_))
    ));
    assert!(matches!(
        c.decrypt(&mut data[..8192], u64::MAX / 8),
        Err(LuksError::Invalid(_))
    ));
    assert!(area.cipher(&LuksKey::new(vec![0; 16])).is_err());
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

/// Everything a caller would do with a header read from untrusted bytes,
/// short of running its KDFs.
fn exercise(bytes: &[u8]) -> bool {
    let read = Header::read(bytes);
    let accepted = read.is_ok();
    if let Ok(h) = read {
        let _ = h.unsupported();
        let _ = h.uuid();
        if let Ok(area) = h.data_area() {
            let _ = area.data_size(bytes.len() as u64);
            let _ = area.iv_of(u64::MAX);
        }
        if let Header::Luks2(h) = &h {
            let _ = h.unlock_order();
            // parse(write(x)) == x, when the JSON still fits its area once
            // rewritten compactly.
            if let Ok([p, s]) = h.encode_copies() {
                let md = h.metadata_size() as usize;
                let mut img = bytes.to_vec();
                img[..md].copy_from_slice(&p);
                img[md..2 * md].copy_from_slice(&s);
                let again = Header::read(&img).expect("what evfs writes reads back");
                assert_eq!(luks2(&again).json_text(), h.json_text());
                assert_eq!(luks2(&again).metadata(), h.metadata());
                assert_eq!(luks2(&again).seqid(), h.seqid());
            }
            let mut w = (**h).clone();
            let _ = w.set_token(None, &serde_json::json!({"type": "t"}));
            let _ = w.add_requirement(REQUIREMENT_INCOMPLETE);
            let _ = w.remove_keyslot(0);
        }
    }
    accepted
}

/// A valid LUKS2 header (deterministic) and its image.
fn sample_luks2() -> (Luks2Header, Vec<u8>) {
    static IMG: std::sync::OnceLock<(Luks2Header, Vec<u8>)> = std::sync::OnceLock::new();
    IMG.get_or_init(|| {
        // Data at 1 MiB: a small image that mutations copy quickly.
        let opts = FormatOptions {
            data_offset: 1 << 20,
            ..fast_options()
        };
        let (h, plan) = format_with(
            &LuksKey::new(fill(11, 64)),
            &pass("pw"),
            &opts,
            &mut fixed_rng(11),
        )
        .unwrap();
        let mut img = Vec::new();
        plan.apply(&mut img).unwrap();
        img.resize((1 << 20) + 4096, 0);
        (h, img)
    })
    .clone()
}

/// The inputs the mutation tests start from are accepted, so mutations
/// reach the code behind the parser.
#[test]
fn the_mutation_seeds_are_accepted() {
    let (_, mut img) = sample_luks2();
    assert!(exercise(&img));
    img[30] = b'x';
    img[16384 + 30] = b'x';
    fix_checksums(&mut img);
    assert!(exercise(&img), "a patched label with fixed checksums reads");
    let mut l1 = unhexdump(&listing(DOC, 0));
    l1.resize(2 << 20, 0);
    assert!(exercise(&l1));
}

/// Fix both LUKS2 checksums of `img` after a mutation.
fn fix_checksums(img: &mut [u8]) {
    for off in [0usize, 16384] {
        if img.len() < off + 16384 {
            return;
        }
        img[off + 448..off + 512].fill(0);
        let (bin, area) = img[off..off + 16384].split_at(4096);
        let sum = checksum("sha256", bin, area).unwrap();
        img[off + 448..off + 448 + 32].copy_from_slice(&sum);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        exercise(&bytes);
        // With a LUKS magic and either version in front.
        for version in [1u8, 2] {
            let mut b = bytes.clone();
            b.resize(b.len().max(600), 0);
            b[..6].copy_from_slice(b"LUKS\xba\xbe");
            b[6..8].copy_from_slice(&[0, version]);
            exercise(&b);
        }
    }

    #[test]
    fn mutated_luks2_headers_never_panic(
        patches in proptest::collection::vec((0usize..32768, any::<u8>()), 1..8),
        fix in any::<bool>(),
    ) {
        let (_, mut img) = sample_luks2();
        for (at, v) in &patches {
            img[*at] = *v;
        }
        if fix {
            fix_checksums(&mut img);
        }
        exercise(&img);
    }

    /// Mutations of the JSON text itself (checksums fixed), so they reach
    /// the JSON checks: digits, quotes, braces.
    #[test]
    fn mutated_luks2_json_never_panics(
        patches in proptest::collection::vec(
            (0usize..2000, prop::sample::select(b"0123456789\"{}[],:-a ".to_vec())),
            1..6
        ),
    ) {
        let (_, mut img) = sample_luks2();
        for (at, v) in &patches {
            img[4096 + at] = *v;
            img[16384 + 4096 + at] = *v;
        }
        fix_checksums(&mut img);
        exercise(&img);
    }

    #[test]
    fn mutated_luks1_headers_never_panic(
        patches in proptest::collection::vec((0usize..592, any::<u8>()), 1..8),
    ) {
        let mut img = unhexdump(&listing(DOC, 0));
        img.resize(2 << 20, 0);
        for (at, v) in &patches {
            img[*at] = *v;
        }
        exercise(&img);
    }

    /// What the writer writes reads back as written, for any label, sector
    /// size, key size and metadata size.
    #[test]
    fn formats_round_trip(
        label in "[a-z0-9 -]{0,47}",
        sector in prop::sample::select(vec![512u32, 1024, 2048, 4096]),
        key_len in prop::sample::select(vec![32usize, 64]),
        md in prop::sample::select(vec![16384u64, 32768, 65536]),
        seed in any::<u64>(),
    ) {
        let key = LuksKey::new(fill(seed, key_len));
        // A 1 MiB data offset: a smaller keyslots area to fill with random
        // bytes than the default 16 MiB, for speed.
        let opts = FormatOptions {
            sector_size: sector,
            metadata_size: md,
            data_offset: 1 << 20,
            label: label.clone(),
            ..fast_options()
        };
        let (h, plan) = format_with(&key, &pass("p"), &opts, &mut fixed_rng(seed)).unwrap();
        let mut img = Vec::new();
        plan.apply(&mut img).unwrap();
        let r = Header::read(&img).unwrap();
        let r2 = luks2(&r);
        prop_assert_eq!(r2.label(), label);
        prop_assert_eq!(r2.json_text(), h.json_text());
        prop_assert_eq!(r2.metadata_size(), md);
        prop_assert_eq!(r.data_area().unwrap().sector_size, sector);
        prop_assert!(r.verify_key(&key).unwrap());
        let u = r.unlock(&img, &pass("p"), None).unwrap();
        prop_assert_eq!(u.key.expose(), key.expose());
    }
}

// ---------------------------------------------------------------------------
// The worked examples of formats/LUKS.md
// ---------------------------------------------------------------------------

/// The LUKS1 phdr cryptsetup 2.6.1 wrote (block 0): every documented field.
#[test]
fn the_luks1_example_in_formats_luks_md_parses_to_the_documented_fields() {
    let bytes = unhexdump(&listing(DOC, 0));
    assert_eq!(bytes.len(), 592);
    let mut img = bytes.clone();
    img.resize(2 << 20, 0);
    let h = match Header::read(&img).unwrap() {
        Header::Luks1(h) => h,
        Header::Luks2(_) => panic!("LUKS1 expected"),
    };
    assert_eq!(h.cipher_spec(), "aes-xts-plain64");
    assert_eq!(h.hash_spec, "sha256");
    assert_eq!(h.payload_offset, 4096);
    assert_eq!(h.key_bytes, 32);
    assert_eq!(h.mk_digest_iterations, 1000);
    assert_eq!(
        crate::hex::encode(&h.mk_digest),
        "034be2266cbf2198b8d39ccde0e614463f5846d4"
    );
    assert_eq!(h.uuid, "0a7c5e2e-6f3b-4d1a-9c4e-2b8d7f6a1e03");
    assert_eq!(h.active_keyslots(), vec![0]);
    let offsets: Vec<u32> = h.keyslots.iter().map(|k| k.key_material_offset).collect();
    assert_eq!(offsets, [8, 264, 520, 776, 1032, 1288, 1544, 1800]);
    assert!(h.keyslots.iter().all(|k| k.stripes == 4000));
    assert_eq!(h.keyslots[0].iterations, 1000);
    assert_eq!(h.keyslots[1].active, luks1::KEY_DISABLED);
    // The volume key cryptsetup printed matches the mk-digest.
    let key =
        crate::hex::decode("0555dbba4f7d57dd41171495b444ed7c1948ba32b04a27c6a88c75aded93b05c")
            .unwrap();
    let h = Header::Luks1(h);
    assert!(h.verify_key(&LuksKey::new(key)).unwrap());
    assert!(!h.verify_key(&LuksKey::new(vec![5; 32])).unwrap());
    // The data area as evfs describes it.
    let area = h.data_area().unwrap();
    assert_eq!(
        (area.offset, area.sector_size, area.iv_tweak),
        (2 << 20, 512, 0)
    );
}

/// The LUKS2 header evfs writes for the documented inputs: its binary
/// header (block 1) and JSON (the `json` block). Rewritten by
/// `EVFS_UPDATE_FORMATS=1 cargo test`.
#[test]
fn the_luks2_example_in_formats_luks_md_is_what_evfs_writes() {
    let key = LuksKey::new((0u8..64).collect());
    let opts = FormatOptions {
        label: "evfs-example".into(),
        uuid: Some([
            0x3e, 0x9a, 0x6c, 0x51, 0x0d, 0x7b, 0x4f, 0x28, 0x9e, 0x14, 0x62, 0xa0, 0xc5, 0x83,
            0xd7, 0x1f,
        ]),
        kdf: Argon2Params {
            memory_kib: 1024,
            iterations: 4,
            parallel: 1,
        },
        digest_iterations: 1000,
        ..FormatOptions::default()
    };
    let (h, plan) = format_with(&key, &pass("correct horse"), &opts, &mut fixed_rng(2026)).unwrap();
    let [primary, _] = h.encode_copies().unwrap();
    expect_listing(DOC, 1, &primary[..512]);
    expect_json_block(DOC, &h.json);

    // And it is a header that opens with the documented passphrase.
    let mut img = Vec::new();
    plan.apply(&mut img).unwrap();
    let r = Header::read(&img).unwrap();
    assert_eq!(r.uuid(), "3e9a6c51-0d7b-4f28-9e14-62a0c583d71f");
    let u = r.unlock(&img, &pass("correct horse"), None).unwrap();
    assert_eq!(u.key.expose(), key.expose());
    // The documented binary header parses as documented.
    let bin = BinHeader::parse(&unhexdump(&listing(DOC, 1))).map(|b| (b.hdr_size, b.seqid));
    assert_eq!(bin, None, "512 bytes are not a whole binary header");
    let mut whole = unhexdump(&listing(DOC, 1));
    whole.resize(4096, 0);
    let b = BinHeader::parse(&whole).unwrap();
    assert_eq!((b.hdr_size, b.seqid, b.hdr_offset), (16384, 1, 0));
    assert_eq!(b.uuid, b"3e9a6c51-0d7b-4f28-9e14-62a0c583d71f");
    assert_eq!(b.label, b"evfs-example");
    assert_eq!(b.checksum_alg, "sha256");
}

const JSON_FENCE: &str = "```json\n";

/// Require that the first ```json block of `rel` is `json` (same members in
/// the same order; layout free); rewrite it with `EVFS_UPDATE_FORMATS=1`.
fn expect_json_block(rel: &str, json: &Json) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(JSON_FENCE).expect("a json block") + JSON_FENCE.len();
    let end = start + doc[start..].find("```").expect("closing fence");
    let documented = Json::parse(&doc.as_bytes()[start..end]).expect("the block is JSON");
    if documented.to_text() == json.to_text() {
        return;
    }
    if std::env::var_os("EVFS_UPDATE_FORMATS").is_some() {
        let updated = format!("{}{}{}", &doc[..start], pretty(json, 0), &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "{rel}: the json block is stale; regenerate it with `EVFS_UPDATE_FORMATS=1 cargo test` and review the diff"
    );
}

/// JSON with two-space indents, members in order (as `luksDump
/// --dump-json-metadata` prints it).
fn pretty(j: &Json, depth: usize) -> String {
    let pad = "  ".repeat(depth + 1);
    let end = "  ".repeat(depth);
    let mut s = match j {
        Json::Array(items) if !items.is_empty() => {
            let inner: Vec<String> = items
                .iter()
                .map(|v| format!("{pad}{}", pretty(v, depth + 1).trim_end()))
                .collect();
            format!("[\n{}\n{end}]", inner.join(",\n"))
        }
        Json::Object(members) if !members.is_empty() => {
            let inner: Vec<String> = members
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{pad}{}: {}",
                        Json::str(k.clone()).to_text(),
                        pretty(v, depth + 1).trim_end()
                    )
                })
                .collect();
            format!("{{\n{}\n{end}}}", inner.join(",\n"))
        }
        other => other.to_text(),
    };
    if depth == 0 {
        s.push('\n');
    }
    s
}

#[test]
fn hexdump_helpers_agree_on_the_examples() {
    // The LUKS1 block is `hexdump -C` output of cryptsetup's header.
    let b = unhexdump(&listing(DOC, 0));
    assert_eq!(hexdump(&b), listing(DOC, 0));
}
