//! LUKS volumes as sources and targets, each checked against cryptsetup
//! itself: images cryptsetup made of known plaintext hash, back up, restore
//! and verify to that plaintext; LUKS2 targets evfs made are dumped,
//! opened, re-keyed in place (`reencrypt --force-offline-reencrypt`) and
//! decrypted by cryptsetup's volume key with an independent XTS; damaged
//! headers, wrong passphrases and damaged keyslots fail as they must and
//! write nothing; a target killed while being written carries evfs's
//! requirement, which cryptsetup honours; enrolled key pairs open volumes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::cryptsetup::{self as cs, ARGON2, Make, PBKDF2};
use crate::common::tools::have_tools;
use crate::common::{Env, b3, mixed_data};

const PW: &[u8] = b"source secret";
const TPW: &[u8] = b"target secret";
const MIB: usize = 1 << 20;

fn cryptsetup(test: &str) -> bool {
    have_tools(test, &["cryptsetup"])
}

/// A scratch directory with passphrase files `pw` (the source's, a
/// passphrase file with a newline) and `tpw` (the target's), and key file
/// `key` holding the source's secret with no newline.
fn env() -> Env {
    let env = Env::on_tmpfs();
    let mut pw = PW.to_vec();
    pw.push(b'\n');
    std::fs::write(env.path("pw"), &pw).unwrap();
    std::fs::write(env.path("tpw"), TPW).unwrap();
    std::fs::write(env.path("key"), PW).unwrap();
    env
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `evfs hash IMG ARGS...`, the digest.
fn hash(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["hash"];
    all.extend_from_slice(args);
    env.ok(&all).split_whitespace().next().unwrap().to_string()
}

/// The bytes and modification time of a file, to show nothing wrote it.
fn snapshot(p: &Path) -> (String, std::time::SystemTime) {
    (
        b3(&std::fs::read(p).unwrap()),
        std::fs::metadata(p).unwrap().modified().unwrap(),
    )
}

/// Plaintext of `mib` MiB: text, zeros and noise.
fn plain(mib: usize, seed: u64) -> Vec<u8> {
    mixed_data(mib * MIB, seed)
}

#[test]
fn cryptsetup_images_hash_to_their_plaintext_and_info_describes_them() {
    if !cryptsetup("cryptsetup_images_hash_to_their_plaintext_and_info_describes_them") {
        return;
    }
    let env = env();
    let data = plain(6, 1);
    let hdr = env.path("detached.hdr");
    let cases: Vec<(&str, Make, &str, &str)> = vec![
        ("l2-4096-argon2id", Make::default(), "luks2", "argon2id"),
        (
            "l2-512-argon2id",
            Make {
                sector_size: 512,
                ..Make::default()
            },
            "luks2",
            "argon2id",
        ),
        (
            "l2-4096-pbkdf2",
            Make {
                kdf: PBKDF2,
                ..Make::default()
            },
            "luks2",
            "pbkdf2",
        ),
        (
            "l1-xts",
            Make {
                luks1: true,
                sector_size: 512,
                ..Make::default()
            },
            "luks1",
            "pbkdf2",
        ),
        (
            "l1-cbc-essiv",
            Make {
                luks1: true,
                sector_size: 512,
                cipher: Some(("aes-cbc-essiv:sha256", "256")),
                ..Make::default()
            },
            "luks1",
            "pbkdf2",
        ),
        (
            "l2-detached",
            Make {
                sector_size: 512,
                header: Some(&hdr),
                ..Make::default()
            },
            "luks2",
            "argon2id",
        ),
    ];
    let want = b3(&data);
    for (name, make, format, kdf) in cases {
        let img = env.path(&format!("{name}.img"));
        cs::image(&img, &data, PW, make);
        let mut open: Vec<&str> = vec![s(&img), "--luks-passphrase-file", "pw"];
        let detached = make.header.is_some();
        if detached {
            open.extend(["--luks-header", s(&hdr)]);
        }
        assert_eq!(hash(&env, &open), want, "{name}");
        // A key file is the secret as it is: the same secret without the
        // newline the passphrase file has.
        let mut by_key = vec![s(&img), "--luks-key-file", "key"];
        if detached {
            by_key.extend(["--luks-header", s(&hdr)]);
        }
        assert_eq!(hash(&env, &by_key), want, "{name} by key file");

        let mut info = vec!["info", s(&img), "--json"];
        if detached {
            info.extend(["--luks-header", s(&hdr)]);
        }
        let j: serde_json::Value = serde_json::from_str(&env.ok(&info)).unwrap();
        assert_eq!(j["format"], format, "{name}");
        assert_eq!(j["data_size"], data.len() as u64, "{name}");
        assert_eq!(j["sector_size"], u64::from(make.sector_size), "{name}");
        let dump = cs::dump(if detached { &hdr } else { &img });
        assert_eq!(j["uuid"], cs::field(&dump, "UUID"), "{name}");
        let offset = if detached { 0 } else { cs::data_offset(&img) };
        assert_eq!(j["data_offset"], offset, "{name}");
        assert_eq!(j["keyslots"][0]["kdf"]["type"], kdf, "{name}");
        assert_eq!(
            j["cipher"],
            make.cipher.map_or("aes-xts-plain64", |c| c.0),
            "{name}"
        );
        assert!(j["label"].is_string() && j["keyslots"].is_array() && j["tokens"].is_array());
        let mut cat = vec!["cat"];
        cat.extend_from_slice(&open);
        let out = env.cmd(&cat).output().unwrap();
        assert!(out.status.success() && out.stdout == data, "{name}: cat");
    }
}

#[test]
fn luks_sources_back_up_to_evfs_volumes_streams_and_luks2_and_restore_and_verify() {
    if !cryptsetup("luks_sources_back_up_to_evfs_volumes_streams_and_luks2_and_restore_and_verify")
    {
        return;
    }
    let env = env();
    let pw = env.gen_key("alice.k1");
    let data = plain(8, 2);
    let want = b3(&data);
    std::fs::write(env.path("plain.raw"), &data).unwrap();
    for (name, make) in [
        ("l2", Make::default()),
        (
            "l1",
            Make {
                luks1: true,
                sector_size: 512,
                cipher: Some(("aes-cbc-essiv:sha256", "256")),
                ..Make::default()
            },
        ),
    ] {
        let img = env.path(&format!("{name}.img"));
        cs::image(&img, &data, PW, make);
        let before = snapshot(&img);
        let src = [s(&img), "--luks-passphrase-file", "pw"];

        // To a new EVFS volume: it needs an owner.
        let vol = format!("{name}.vol");
        let (_, err) = env.expect(2, &["backup", src[0], &vol, src[1], src[2]]);
        assert!(err.contains("--owner"), "{err}");
        env.ok(&[
            "backup",
            src[0],
            &vol,
            src[1],
            src[2],
            "--owner",
            "alice.k1",
            "--passphrase-file",
            &pw,
        ]);
        assert_eq!(env.hash(&vol, "alice.k1"), want, "{name}");
        let out = env.ok(&["verify", &vol, "-k", "alice.k1", "--passphrase-file", &pw]);
        assert!(out.contains("verified"), "{out}");
        let out = env.ok(&[
            "verify",
            &vol,
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pw,
            "--against",
            src[0],
            "--luks-passphrase-file",
            "pw",
        ]);
        assert!(out.contains("equals"), "{out}");

        // To a stream, restored and verified.
        let stream = format!("{name}.evfs");
        env.ok(&[
            "backup",
            src[0],
            "--stream",
            &stream,
            src[1],
            src[2],
            "--owner",
            "alice.k1",
            "--passphrase-file",
            &pw,
        ]);
        env.ok(&[
            "verify",
            &stream,
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pw,
        ]);
        let restored = format!("{name}-restored.vol");
        env.ok(&["restore", &stream, &restored]);
        assert_eq!(env.hash(&restored, "alice.k1"), want, "{name}");

        // To a fresh LUKS2 volume.
        let copy = env.path(&format!("{name}-copy.img"));
        env.ok(&[
            "backup",
            src[0],
            s(&copy),
            src[1],
            src[2],
            "--target-format",
            "luks2",
            "--target-luks-passphrase-file",
            "tpw",
            "--luks-kdf-memory",
            "32K",
        ]);
        assert!(cs::opens(&copy, TPW), "{name}");
        assert_eq!(
            hash(&env, &[s(&copy), "--luks-passphrase-file", "tpw"]),
            want,
            "{name}"
        );
        let out = env.ok(&["verify", s(&copy), "--luks-passphrase-file", "tpw"]);
        assert!(out.contains("matches the provenance"), "{out}");
        // Nobody signed it (no evfs key pair took part): reported, and
        // refused where a signature is required.
        assert!(out.contains("provenance is not signed"), "{out}");
        env.expect(
            5,
            &[
                "verify",
                s(&copy),
                "--luks-passphrase-file",
                "tpw",
                "--require-signature",
            ],
        );
        // The source is never written.
        assert_eq!(snapshot(&img), before, "{name}: the source changed");
    }
    // A plain file encrypted into a new LUKS2 volume needs no owner.
    env.ok(&[
        "backup",
        "plain.raw",
        "plain.img",
        "--target-format",
        "luks2",
        "--target-luks-passphrase-file",
        "tpw",
        "--luks-kdf-memory",
        "32K",
        "--sector-size",
        "512",
    ]);
    assert_eq!(
        hash(&env, &["plain.img", "--luks-passphrase-file", "tpw"]),
        want
    );
}

/// Decrypt a LUKS2 data area with an XTS implementation that is not evfs's
/// (the `xts-mode` crate): IVs in 512-byte units, as dm-crypt counts them.
fn decrypt_independently(img: &Path, key: &[u8], sector: usize, len: usize) -> Vec<u8> {
    use aes::Aes256;
    use aes::cipher::KeyInit;
    use xts_mode::{Xts128, get_tweak_default};
    let offset = cs::data_offset(img) as usize;
    let mut data = std::fs::read(img).unwrap()[offset..offset + len].to_vec();
    let xts = Xts128::<Aes256>::new(
        Aes256::new_from_slice(&key[..32]).unwrap(),
        Aes256::new_from_slice(&key[32..]).unwrap(),
    );
    for (i, chunk) in data.chunks_mut(sector).enumerate() {
        let tweak = get_tweak_default((i * sector / 512) as u128);
        xts.decrypt_sector(chunk, tweak);
    }
    data
}

#[test]
fn evfs_made_luks2_targets_are_cryptsetups_own_and_survive_its_reencryption() {
    if !cryptsetup("evfs_made_luks2_targets_are_cryptsetups_own_and_survive_its_reencryption") {
        return;
    }
    let env = env();
    let data = plain(6, 3);
    let want = b3(&data);
    let src = env.path("src.img");
    cs::image(&src, &data, PW, Make::default());
    for sector in ["512", "4096"] {
        let copy = env.path(&format!("copy{sector}.img"));
        env.ok(&[
            "backup",
            s(&src),
            s(&copy),
            "--luks-passphrase-file",
            "pw",
            "--target-format",
            "luks2",
            "--target-luks-passphrase-file",
            "tpw",
            "--luks-kdf-memory",
            "64K",
            "--luks-kdf-iterations",
            "5",
            "--sector-size",
            sector,
        ]);
        let dump = cs::dump(&copy);
        assert!(
            dump.contains(&format!("sector: {sector} [bytes]")),
            "{dump}"
        );
        assert!(
            dump.contains("argon2id") && dump.contains("Memory:     64"),
            "{dump}"
        );
        assert!(dump.contains("Time cost:  5"), "{dump}");
        assert!(dump.contains("evfs-provenance"), "{dump}");
        assert!(!dump.contains("evfs-incomplete"), "{dump}");
        assert!(cs::opens(&copy, TPW));
        assert!(!cs::opens(&copy, PW));
        // A re-keyed copy: new UUID, new volume key, same plaintext.
        let src_dump = cs::dump(&src);
        assert_ne!(cs::field(&dump, "UUID"), cs::field(&src_dump, "UUID"));
        let key = cs::volume_key(&copy, TPW);
        assert_ne!(key, cs::volume_key(&src, PW));
        let ss: usize = sector.parse().unwrap();
        assert!(
            decrypt_independently(&copy, &key, ss, data.len()) == data,
            "{sector}"
        );

        // cryptsetup re-keys it in place; the data still decrypts, by evfs
        // and by cryptsetup's new key, and evfs still verifies it (the
        // provenance token is not tied to the volume key).
        let mut args = vec![
            "reencrypt",
            "-q",
            "--force-offline-reencrypt",
            "--key-file",
            "-",
        ];
        args.extend_from_slice(ARGON2);
        args.push(s(&copy));
        cs::ok(&args, TPW);
        let rekeyed = cs::volume_key(&copy, TPW);
        assert_ne!(rekeyed, key);
        assert!(decrypt_independently(&copy, &rekeyed, ss, data.len()) == data);
        assert_eq!(
            hash(&env, &[s(&copy), "--luks-passphrase-file", "tpw"]),
            want
        );
        let out = env.ok(&["verify", s(&copy), "--luks-passphrase-file", "tpw"]);
        assert!(out.contains("matches the provenance"), "{out}");
        // Nobody signed it (no evfs key pair took part): reported, and
        // refused where a signature is required.
        assert!(out.contains("provenance is not signed"), "{out}");
        env.expect(
            5,
            &[
                "verify",
                s(&copy),
                "--luks-passphrase-file",
                "tpw",
                "--require-signature",
            ],
        );
        let out = env.ok(&[
            "verify",
            s(&copy),
            "--target-luks-passphrase-file",
            "tpw",
            "--against",
            s(&src),
            "--luks-passphrase-file",
            "pw",
        ]);
        assert!(out.contains("equals"), "{out}");
    }

    // A refresh of an existing LUKS2 target keeps its header and keyslots
    // and writes under its own key.
    let copy = env.path("copy4096.img");
    let uuid = cs::field(&cs::dump(&copy), "UUID").to_string();
    let key = cs::volume_key(&copy, TPW);
    let other = plain(6, 4);
    std::fs::write(env.path("other.raw"), &other).unwrap();
    // Signed by --sign-with: the provenance token carries the signature
    // (it is not sealed with the volume key), which verify reports.
    env.gen_key("alice.k1");
    env.ok(&[
        "backup",
        "other.raw",
        s(&copy),
        "--target-luks-passphrase-file",
        "tpw",
        "--sign-with",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
    ]);
    let out = env.ok(&[
        "verify",
        s(&copy),
        "--luks-passphrase-file",
        "tpw",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signed_by"]["id"], "alice.k1", "{out}");
    assert_eq!(v["signed_by"]["trusted"], true, "{out}");
    assert_eq!(v["signed_by"]["valid"], true, "{out}");
    assert_eq!(cs::field(&cs::dump(&copy), "UUID"), uuid);
    assert_eq!(cs::volume_key(&copy, TPW), key);
    assert_eq!(
        hash(&env, &[s(&copy), "--luks-passphrase-file", "tpw"]),
        b3(&other)
    );
    env.ok(&["verify", s(&copy), "--luks-passphrase-file", "tpw"]);
    // dmtable names the data the way cryptsetup maps it.
    let line = env.ok(&["dmtable", s(&copy), "--luks-passphrase-file", "tpw"]);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let want_line = format!(
        "0 {} crypt aes-xts-plain64 {hex} 0 {} {} 1 sector_size:4096\n",
        other.len() / 512,
        std::path::absolute(&copy).unwrap().display(),
        cs::data_offset(&copy) / 512
    );
    assert_eq!(line, want_line);
}

#[test]
fn restoring_a_stream_onto_a_luks2_target_writes_it_under_the_targets_key() {
    if !cryptsetup("restoring_a_stream_onto_a_luks2_target_writes_it_under_the_targets_key") {
        return;
    }
    let env = env();
    let pw = env.gen_key("alice.k1");
    let data = env.volume_from_data("data.raw", "vol", "alice.k1", 5 * MIB, 5);
    env.ok(&[
        "backup",
        "vol",
        "--stream",
        "vol.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pw,
    ]);
    let target = env.path("target.img");
    cs::image(&target, &vec![0u8; 6 * MIB], TPW, Make::default());
    let key = cs::volume_key(&target, TPW);
    // Without -k the stream cannot be decrypted.
    env.expect(
        4,
        &[
            "restore",
            "vol.evfs",
            s(&target),
            "--target-luks-passphrase-file",
            "tpw",
        ],
    );
    env.ok(&[
        "restore",
        "vol.evfs",
        s(&target),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pw,
        "--target-luks-passphrase-file",
        "tpw",
    ]);
    assert_eq!(cs::volume_key(&target, TPW), key);
    let plain = decrypt_independently(&target, &key, 4096, 6 * MIB);
    assert!(plain[..data.len()] == data[..]);
    let out = env.ok(&["verify", s(&target), "--luks-passphrase-file", "tpw"]);
    assert!(out.contains("matches the provenance"), "{out}");
}

#[test]
fn damaged_headers_fall_back_to_the_other_copy_or_exit_5_and_nothing_is_written() {
    if !cryptsetup("damaged_headers_fall_back_to_the_other_copy_or_exit_5_and_nothing_is_written") {
        return;
    }
    let env = env();
    let data = plain(4, 6);
    let base = env.path("base.img");
    cs::image(&base, &data, PW, Make::default());
    let md = 16 << 10;
    let damaged = |name: &str, at: &[u64]| -> PathBuf {
        let p = env.path(name);
        let mut b = std::fs::read(&base).unwrap();
        for &i in at {
            b[i as usize] ^= 0x5a;
        }
        std::fs::write(&p, b).unwrap();
        p
    };
    for (name, at) in [
        ("primary-binary", vec![30]),
        ("primary-json", vec![4096 + 40]),
        ("secondary-binary", vec![md + 30]),
        ("secondary-json", vec![md + 4096 + 40]),
    ] {
        let img = damaged(&format!("{name}.img"), &at);
        let before = snapshot(&img);
        assert_eq!(
            hash(&env, &[s(&img), "--luks-passphrase-file", "pw"]),
            b3(&data),
            "{name}"
        );
        let info = env.ok(&["info", s(&img)]);
        assert!(info.contains("bad"), "{name}: {info}");
        let (_, err) = env.expect(5, &["check", s(&img)]);
        assert!(err.contains("damaged"), "{err}");
        assert_eq!(snapshot(&img), before, "{name}: evfs wrote the source");
        // cryptsetup uses the other copy too (and repairs the bad one,
        // which evfs, reading a source, never does).
        assert!(cs::opens(&img, PW), "{name}");
    }
    let both = damaged("both.img", &[30, md + 4096 + 40]);
    assert!(!cs::opens(&both, PW));
    let before = snapshot(&both);
    for args in [
        vec!["hash", s(&both), "--luks-passphrase-file", "pw"],
        vec!["info", s(&both)],
        vec!["verify", s(&both), "--luks-passphrase-file", "pw"],
    ] {
        let (_, err) = env.expect(5, &args);
        assert!(err.contains("damaged LUKS header"), "{args:?}: {err}");
    }
    // As a backup source it is refused: neither decrypted nor encrypted
    // as plain data.
    let (_, err) = env.expect(
        3,
        &[
            "backup",
            s(&both),
            "copy.img",
            "--target-format",
            "luks2",
            "--target-luks-passphrase-file",
            "tpw",
        ],
    );
    assert!(err.contains("LUKS"), "{err}");
    assert!(!env.path("copy.img").exists());
    assert_eq!(snapshot(&both), before);
}

#[test]
fn a_wrong_passphrase_or_a_damaged_keyslot_exits_4_naming_both_and_writes_nothing() {
    if !cryptsetup("a_wrong_passphrase_or_a_damaged_keyslot_exits_4_naming_both_and_writes_nothing")
    {
        return;
    }
    let env = env();
    let data = plain(4, 7);
    let img = env.path("src.img");
    cs::image(&img, &data, PW, Make::default());
    std::fs::write(env.path("wrong"), "not it\n").unwrap();
    let slot_damaged = env.path("slot.img");
    let mut b = std::fs::read(&img).unwrap();
    // Keyslot 0's area starts at 32 KiB: garble its material.
    for x in &mut b[32768 + 1000..32768 + 3000] {
        *x ^= 0xff;
    }
    std::fs::write(&slot_damaged, b).unwrap();
    assert!(!cs::opens(&slot_damaged, PW));
    for (what, src, secret) in [
        ("wrong passphrase", &img, "wrong"),
        // The right passphrase, but the keyslot is damaged.
        ("damaged keyslot", &slot_damaged, "pw"),
    ] {
        let before = snapshot(src);
        for args in [
            vec!["hash", s(src), "--luks-passphrase-file", secret],
            vec![
                "backup",
                s(src),
                "new.img",
                "--luks-passphrase-file",
                secret,
                "--target-format",
                "luks2",
                "--target-luks-passphrase-file",
                "tpw",
            ],
        ] {
            let (_, err) = env.expect(4, &args);
            assert!(
                err.contains("wrong") && err.contains("damaged"),
                "{what}: {err}"
            );
        }
        assert!(!env.path("new.img").exists(), "{what}: a target was made");
        assert_eq!(snapshot(src), before, "{what}");
    }
    // No secret at all and no terminal: exit 4 naming the flags.
    let (_, err) = env.expect(4, &["hash", s(&img)]);
    assert!(err.contains("--luks-passphrase-file"), "{err}");
    // A wrong passphrase of an existing LUKS2 target: nothing written.
    let target = env.path("target.img");
    cs::image(&target, &vec![0u8; 4 * MIB], TPW, Make::default());
    let before = snapshot(&target);
    let (_, err) = env.expect(
        4,
        &[
            "backup",
            s(&img),
            s(&target),
            "--luks-passphrase-file",
            "pw",
            "--target-luks-passphrase-file",
            "wrong",
        ],
    );
    assert!(err.contains("wrong") && err.contains("damaged"), "{err}");
    assert_eq!(snapshot(&target), before);
}

#[test]
fn luks_refusals_exit_3() {
    if !cryptsetup("luks_refusals_exit_3") {
        return;
    }
    let env = env();
    let pw = env.gen_key("alice.k1");
    let data = plain(4, 8);
    let img = env.path("src.img");
    cs::image(&img, &data, PW, Make::default());
    env.volume_from_data("data.raw", "vol", "alice.k1", 4 * MIB, 9);
    let k = ["-k", "alice.k1", "--passphrase-file", pw.as_str()];
    let src = [s(&img), "--luks-passphrase-file", "pw"];
    // A raw copy of a LUKS data area onto an enabled volume.
    let (_, err) = env.expect(3, &["backup", src[0], "vol", src[1], src[2], "--raw"]);
    assert!(err.contains("twice"), "{err}");
    // Decrypted data onto a LUKS target's raw area.
    let target = env.path("target.img");
    cs::image(&target, &vec![0u8; 8 * MIB], TPW, Make::default());
    let mut args = vec!["backup", "vol", s(&target), "--cleartext"];
    args.extend(k);
    let (_, err) = env.expect(3, &args);
    assert!(err.contains("cleartext on encrypted media"), "{err}");
    // A raw EVFS copy into a LUKS target.
    let (_, err) = env.expect(3, &["backup", "vol", s(&target), "--raw"]);
    assert!(err.contains("twice"), "{err}");
    // A LUKS target smaller than the source.
    let small = env.path("small.img");
    cs::image(&small, &vec![0u8; 2 * MIB], TPW, Make::default());
    let (_, err) = env.expect(
        3,
        &[
            "backup",
            src[0],
            s(&small),
            src[1],
            src[2],
            "--target-luks-passphrase-file",
            "tpw",
        ],
    );
    assert!(err.contains("too small"), "{err}");
    // The source as its own target, under another name.
    std::fs::hard_link(&img, env.path("link.img")).unwrap();
    let (_, err) = env.expect(
        3,
        &[
            "backup",
            src[0],
            "link.img",
            src[1],
            src[2],
            "--target-luks-passphrase-file",
            "pw",
        ],
    );
    assert!(err.contains("the source itself"), "{err}");
    // What evfs does not read: LUKS2 with CBC-ESSIV data, a reencryption
    // in progress.
    let cbc = env.path("cbc.img");
    std::fs::write(&cbc, vec![0u8; 20 * MIB]).unwrap();
    let mut fmt = vec![
        "luksFormat",
        "-q",
        "--type",
        "luks2",
        "--cipher",
        "aes-cbc-essiv:sha256",
        "--key-size",
        "256",
        "--key-file",
        "-",
    ];
    fmt.extend_from_slice(ARGON2);
    fmt.push(s(&cbc));
    cs::ok(&fmt, PW);
    let (_, err) = env.expect(3, &["hash", s(&cbc), "--luks-passphrase-file", "pw"]);
    assert!(err.contains("aes-cbc-essiv:sha256"), "{err}");
    let mut init = vec!["reencrypt", "-q", "--init-only", "--key-file", "-"];
    init.extend_from_slice(ARGON2);
    init.push(s(&target));
    cs::ok(&init, TPW);
    for args in [
        vec!["hash", s(&target), "--luks-passphrase-file", "tpw"],
        vec![
            "backup",
            s(&target),
            "x.img",
            "--luks-passphrase-file",
            "tpw",
            "--target-format",
            "luks2",
        ],
    ] {
        let (_, err) = env.expect(3, &args);
        assert!(err.contains("reencryption"), "{err}");
    }
    // A LUKS image is never encrypted as plain data: it is a LUKS source.
    let (_, err) = env.expect(4, &["backup", src[0], "z.vol", "--owner", "alice.k1"]);
    assert!(err.contains("LUKS volume"), "{err}");
    assert!(!env.path("z.vol").exists());
}

/// Wait until `cond`, at most 30 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_target_killed_while_written_carries_the_requirement_until_a_run_completes_it() {
    if !cryptsetup("a_target_killed_while_written_carries_the_requirement_until_a_run_completes_it")
    {
        return;
    }
    let env = env();
    let target = env.path("target.img");
    // Plain data on standard input, fed by the test: the run is stopped
    // with its header written and some data in, but not all.
    let mut child = env
        .process(&[
            "backup",
            "-",
            s(&target),
            "--target-format",
            "luks2",
            "--target-luks-passphrase-file",
            "tpw",
            "--luks-kdf-memory",
            "32K",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&plain(4, 10)).unwrap();
    stdin.flush().unwrap();
    wait_for("the header", || {
        std::fs::metadata(&target).is_ok_and(|m| m.len() >= 16 << 20)
            && cs::run(&["isLuks", s(&target)], b"").status.success()
    });
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);

    let dump = cs::dump(&target);
    assert_eq!(
        cs::field(&dump, "Requirements"),
        "evfs-incomplete",
        "{dump}"
    );
    // What cryptsetup still does, and what it refuses.
    assert!(cs::opens(&target, TPW));
    std::fs::write(env.path("nk"), "new key").unwrap();
    cs::fails(
        &[
            "luksAddKey",
            "--key-file",
            "-",
            s(&target),
            s(&env.path("nk")),
        ],
        TPW,
    );
    cs::fails(
        &[
            "reencrypt",
            "-q",
            "--force-offline-reencrypt",
            "--key-file",
            "-",
            s(&target),
        ],
        TPW,
    );
    cs::fails(&["config", "--label", "x", s(&target)], b"");
    // evfs calls it incomplete.
    let (_, err) = env.expect(6, &["check", s(&target)]);
    assert!(err.contains("incomplete"), "{err}");
    let (out, _) = env.expect(6, &["check", s(&target), "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["incomplete"].clone(), j["exit"].clone()),
        (true.into(), 6.into())
    );
    env.expect(3, &["hash", s(&target), "--luks-passphrase-file", "tpw"]);
    env.expect(5, &["verify", s(&target), "--luks-passphrase-file", "tpw"]);
    // A full run into it completes it.
    let data = plain(4, 11);
    std::fs::write(env.path("data.raw"), &data).unwrap();
    env.ok(&[
        "backup",
        "data.raw",
        s(&target),
        "--target-luks-passphrase-file",
        "tpw",
    ]);
    assert_eq!(cs::field(&cs::dump(&target), "Requirements"), "");
    env.ok(&["check", s(&target)]);
    assert_eq!(
        hash(&env, &[s(&target), "--luks-passphrase-file", "tpw",]).len(),
        64
    );
    env.ok(&["verify", s(&target), "--luks-passphrase-file", "tpw"]);
}

#[test]
fn enrolled_key_pairs_open_luks_volumes_with_a_stored_passphrase() {
    if !cryptsetup("enrolled_key_pairs_open_luks_volumes_with_a_stored_passphrase") {
        return;
    }
    let env = env();
    let pw = env.pass_file("backup.cron");
    env.ok(&[
        "key",
        "gen",
        "backup.cron",
        "--passphrase-file",
        &pw,
        "--store-passphrase",
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    let data = plain(4, 12);
    let img = env.path("disk.img");
    cs::image(&img, &data, PW, Make::default());
    // Not enrolled yet: -k cannot open it.
    let (_, err) = env.expect(4, &["hash", s(&img), "-k", "backup.cron"]);
    assert!(err.contains("luks enroll"), "{err}");
    env.ok(&[
        "luks",
        "enroll",
        s(&img),
        "backup.cron",
        "--luks-passphrase-file",
        "pw",
    ]);
    let dump = cs::dump(&img);
    assert!(
        dump.contains("evfs-key") && dump.contains("  1: luks2"),
        "{dump}"
    );
    assert!(cs::opens(&img, PW), "the old passphrase still opens it");
    let (_, err) = env.expect(
        2,
        &[
            "luks",
            "enroll",
            s(&img),
            "backup.cron",
            "--luks-passphrase-file",
            "pw",
        ],
    );
    assert!(err.contains("already"), "{err}");
    // No key file in clear: the stored passphrase of the key pair.
    assert_eq!(hash(&env, &[s(&img), "-k", "backup.cron"]), b3(&data));
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["info", s(&img), "--json"])).unwrap();
    assert_eq!(info["keyslots"][1]["enrolled"], "backup.cron");
    // A nightly job: the enrolled source into a LUKS2 copy.
    env.ok(&[
        "backup",
        s(&img),
        "copy.img",
        "-k",
        "backup.cron",
        "--target-format",
        "luks2",
        "--target-luks-passphrase-file",
        "tpw",
        "--luks-kdf-memory",
        "32K",
    ]);
    env.ok(&["verify", "copy.img", "--luks-passphrase-file", "tpw"]);
    // Enrolled in the copy too, the nightly job needs no LUKS secret at all.
    env.ok(&[
        "luks",
        "enroll",
        "copy.img",
        "backup.cron",
        "--luks-passphrase-file",
        "tpw",
    ]);
    env.ok(&[
        "backup",
        s(&img),
        "copy.img",
        "-k",
        "backup.cron",
        "--target-key",
        "backup.cron",
    ]);
    env.ok(&["verify", "copy.img", "-k", "backup.cron"]);
    // Unenrolled with the key pair itself: keyslot and token are gone.
    env.ok(&["luks", "unenroll", s(&img), "backup.cron"]);
    let dump = cs::dump(&img);
    assert!(
        !dump.contains("evfs-key") && !dump.contains("  1: luks2"),
        "{dump}"
    );
    env.expect(4, &["hash", s(&img), "-k", "backup.cron"]);
    assert_eq!(
        hash(&env, &[s(&img), "--luks-passphrase-file", "pw"]),
        b3(&data)
    );
    // The last keyslot is never removed.
    env.ok(&[
        "luks",
        "enroll",
        s(&img),
        "backup.cron",
        "--luks-passphrase-file",
        "pw",
    ]);
    cs::ok(&["luksKillSlot", "-q", s(&img), "0"], b"");
    let (_, err) = env.expect(3, &["luks", "unenroll", s(&img), "backup.cron"]);
    assert!(err.contains("only keyslot"), "{err}");
}

#[test]
fn header_writes_wait_for_cryptsetups_metadata_lock() {
    if !cryptsetup("header_writes_wait_for_cryptsetups_metadata_lock")
        || !have_tools(
            "header_writes_wait_for_cryptsetups_metadata_lock",
            &["flock"],
        )
    {
        return;
    }
    let env = env();
    env.gen_key("backup.cron");
    let img = env.path("disk.img");
    cs::image(&img, &plain(2, 13), PW, Make::default());
    // cryptsetup locks an image file with flock(2) on the file itself.
    let mut holder = std::process::Command::new("flock")
        .args(["-x", s(&img), "sleep", "2"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    env.ok(&[
        "luks",
        "enroll",
        s(&img),
        "backup.cron",
        "--luks-passphrase-file",
        "pw",
    ]);
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "evfs wrote the header while the lock was held ({:?})",
        started.elapsed()
    );
    holder.wait().unwrap();
    assert!(cs::dump(&img).contains("evfs-key"));
}

#[test]
fn a_luks_volume_maps_over_nbd_read_only_and_read_write() {
    if !cryptsetup("a_luks_volume_maps_over_nbd_read_only_and_read_write")
        || !have_tools(
            "a_luks_volume_maps_over_nbd_read_only_and_read_write",
            &["qemu-img", "qemu-io"],
        )
    {
        return;
    }
    use crate::common::tools::{Mapped, run_tool};
    let env = env();
    let data = plain(4, 14);
    let img = env.path("disk.img");
    cs::image(&img, &data, PW, Make::default());
    let m = Mapped::start(
        &env,
        "ro.sock",
        &[s(&img), "--luks-passphrase-file", "pw", "--read-only"],
    );
    let out = env.path("out.raw");
    let (ok, text) = run_tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &m.uri(), s(&out)],
    );
    assert!(ok, "{text}");
    let (status, _) = m.stop();
    assert!(status.success());
    assert!(std::fs::read(&out).unwrap() == data);

    // A write through the map lands under the volume's key.
    let copy = env.path("copy.img");
    env.ok(&[
        "backup",
        s(&img),
        s(&copy),
        "--luks-passphrase-file",
        "pw",
        "--target-format",
        "luks2",
        "--target-luks-passphrase-file",
        "tpw",
        "--luks-kdf-memory",
        "32K",
    ]);
    let m = Mapped::start(
        &env,
        "rw.sock",
        &[s(&copy), "--luks-passphrase-file", "tpw"],
    );
    // While it is mapped read-write, no backup reads it and no header
    // change is made to it: evfs's storage lock, as for EVFS volumes.
    let (_, err) = env.expect(
        1,
        &[
            "backup",
            s(&copy),
            "x.img",
            "--luks-passphrase-file",
            "tpw",
            "--target-format",
            "luks2",
            "--target-luks-passphrase-file",
            "tpw",
        ],
    );
    assert!(err.contains("in use"), "{err}");
    assert!(!env.path("x.img").exists());
    env.gen_key("backup.cron");
    let (_, err) = env.expect(
        1,
        &[
            "luks",
            "enroll",
            s(&copy),
            "backup.cron",
            "--luks-passphrase-file",
            "tpw",
        ],
    );
    assert!(err.contains("in use"), "{err}");
    let (ok, text) = run_tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x61 4095 3", &m.uri()],
    );
    assert!(ok, "{text}");
    let (status, _) = m.stop();
    assert!(status.success());
    let mut want = data.clone();
    want[4095..4098].copy_from_slice(b"aaa");
    let key = cs::volume_key(&copy, TPW);
    assert!(decrypt_independently(&copy, &key, 4096, data.len()) == want);
    // The provenance says the volume changed since its backup.
    let out = env.ok(&["verify", s(&copy), "--luks-passphrase-file", "tpw"]);
    assert!(out.contains("written through evfs map"), "{out}");
}
