//! `evfs backup` from the command line: the done-list of the backup pipeline
//! issue, against the real binary.

use std::collections::HashSet;
use std::io::Read;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Env, b3, contains};
use evfs::emd::format::EMD_SIZE;

const MIB: usize = 1 << 20;

/// A keystore with alice (owner) and bob, and a 48 MiB image of text, zeros
/// and random bytes encrypted into `src.vol` owned by alice.
fn setup() -> (Env, Vec<u8>, String, String) {
    let (env, pws) = Env::with_keys(&["alice.k1", "bob"]);
    let image = env.volume_from_data("image", "src.vol", "alice.k1", 48 * MIB, 1);
    let [pa, pb] = <[String; 2]>::try_from(pws).unwrap();
    (env, image, pa, pb)
}

/// The data area of a volume file (1 MiB in, as long as the EMD says).
fn data_area(env: &Env, vol: &str) -> Vec<u8> {
    let info = env.info(vol);
    let off = info["data_offset"].as_u64().unwrap() as usize;
    let len = info["data_size"].as_u64().unwrap() as usize;
    std::fs::read(env.path(vol)).unwrap()[off..off + len].to_vec()
}

#[test]
fn a_plain_image_becomes_a_volume_without_cleartext_that_decrypts_back() {
    let (env, image, pa, _) = setup();
    let vol = std::fs::read(env.path("src.vol")).unwrap();
    assert!(
        !contains(&vol, b"The quick brown fox jumps"),
        "the volume holds cleartext"
    );
    assert_eq!(env.hash("src.vol", "alice.k1"), b3(&image));
    let cat = env
        .cmd(&["cat", "src.vol", "-k", "alice.k1", "--passphrase-file", &pa])
        .output()
        .unwrap();
    assert!(cat.status.success());
    assert!(
        cat.stdout == image,
        "cat gives the image back byte for byte"
    );
    let info = env.info("src.vol");
    assert_eq!(info["owner"], "alice.k1");
    assert_eq!(info["data_size"], 48 * MIB);
    assert_eq!(info["provenance"]["plaintext_blake3"], b3(&image));
    assert_eq!(info["provenance"]["bytes"], 48 * MIB);
}

#[test]
fn a_volume_backed_up_to_a_new_target_is_a_rekeyed_clone() {
    let (env, image, pa, pb) = setup();
    env.ok(&[
        "user",
        "add",
        "src.vol",
        "bob",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    let out = env.ok(&[
        "backup",
        "src.vol",
        "copy.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["mode"], "reencrypt");
    assert_eq!(report["bytes"], 48 * MIB);
    assert_eq!(report["plaintext_blake3"], b3(&image));
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
    assert!(report["threads"].as_u64().unwrap() >= 1);

    let (src, copy) = (env.info("src.vol"), env.info("copy.vol"));
    assert_ne!(src["uuid"], copy["uuid"], "a new UUID");
    assert_eq!(copy["provenance"]["source_uuid"], src["uuid"]);
    assert_eq!(copy["provenance"]["plaintext_blake3"], b3(&image));
    assert_eq!(copy["owner"], "alice.k1");
    assert_eq!(copy["users"], serde_json::json!(["bob.bob"]));
    assert_eq!(copy["dirty"], false);
    assert_eq!(copy["state"], "enabled");

    // A fresh key: no ciphertext sector of the copy appears in the source.
    let (a, b) = (data_area(&env, "src.vol"), data_area(&env, "copy.vol"));
    assert_eq!(a.len(), b.len());
    let sectors: HashSet<&[u8]> = a.chunks(4096).collect();
    assert!(
        b.chunks(4096).all(|s| !sectors.contains(s)),
        "a ciphertext sector repeats"
    );

    // Every user of the source can read the copy.
    assert_eq!(env.hash("copy.vol", "alice.k1"), b3(&image));
    let by_bob = env.ok(&["hash", "copy.vol", "-k", "bob", "--passphrase-file", &pb]);
    assert!(by_bob.starts_with(&b3(&image)));

    env.ok(&[
        "verify",
        "copy.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.ok(&[
        "verify",
        "copy.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        "src.vol",
    ]);
    env.ok(&[
        "verify",
        "src.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        "image",
    ]);

    // The same backup again refreshes the clone, no --force: it keeps its
    // UUID and volume key, and follows the source.
    env.ok(&[
        "backup",
        "src.vol",
        "copy.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    let again = env.info("copy.vol");
    assert_eq!(
        again["uuid"], copy["uuid"],
        "a refresh keeps the clone's UUID"
    );
    assert_eq!(again["clone_of"], src["uuid"]);
    assert_eq!(again["provenance"]["source_uuid"], src["uuid"]);
    assert_eq!(
        again["data_version"].as_u64(),
        copy["data_version"].as_u64().map(|v| v + 1)
    );
    assert_eq!(env.hash("copy.vol", "alice.k1"), b3(&image));
}

#[test]
fn same_key_keeps_the_ciphertext_and_target_key_keeps_a_foreign_emd() {
    let (env, image, pa, pb) = setup();
    env.ok(&[
        "backup",
        "src.vol",
        "same.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--same-key",
    ]);
    assert!(data_area(&env, "src.vol") == data_area(&env, "same.vol"));

    // Bob's own volume, foreign to the source: --target-key re-encrypts into it.
    env.create("bobs.vol", "bob", "60M");
    let uuid = env.info("bobs.vol")["uuid"].clone();
    let (_, err) = env.expect(
        3,
        &[
            "backup",
            "src.vol",
            "bobs.vol",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ],
    );
    assert!(err.contains("EMD of its own"), "{err}");
    env.ok(&[
        "backup",
        "src.vol",
        "bobs.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--target-key",
        "bob",
        "--target-passphrase-file",
        &pb,
    ]);
    let info = env.info("bobs.vol");
    assert_eq!(info["uuid"], uuid, "the target keeps its EMD");
    assert_eq!(info["owner"], "bob.bob");
    assert_eq!(info["provenance"]["plaintext_blake3"], b3(&image));
    env.ok(&["verify", "bobs.vol", "-k", "bob", "--passphrase-file", &pb]);
    // --force replaces it with a clone instead.
    env.ok(&[
        "backup",
        "src.vol",
        "bobs.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--force",
    ]);
    assert_eq!(env.info("bobs.vol")["owner"], "alice.k1");
}

/// Run a refused backup: exit 3, the message contains `why`, and the target
/// is left as it was (absent, or byte-identical).
fn refused(env: &Env, target: &str, args: &[&str], why: &str) {
    let before = std::fs::read(env.path(target)).ok();
    let (_, err) = env.expect(3, args);
    assert!(err.contains(why), "{args:?}: {err}");
    let after = std::fs::read(env.path(target)).ok();
    assert!(before == after, "{args:?} changed {target}");
}

#[test]
fn every_refusal_exits_3_says_why_and_writes_nothing() {
    let (env, _, pa, _) = setup();
    let k = ["-k", "alice.k1", "--passphrase-file", pa.as_str()];
    let with = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(k.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |target: &str, argv: Vec<String>, why: &str| {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        refused(&env, target, &argv, why);
    };

    // Target is the source: same path, symlink, hard link.
    std::os::unix::fs::symlink(env.path("src.vol"), env.path("link.vol")).unwrap();
    std::fs::hard_link(env.path("src.vol"), env.path("hard.vol")).unwrap();
    for t in ["src.vol", "link.vol", "hard.vol"] {
        run(t, with(&["backup", "src.vol", t]), "the source itself");
    }
    // Foreign data without --force.
    std::fs::write(env.path("foreign"), vec![7u8; 8 * MIB]).unwrap();
    run(
        "foreign",
        with(&["backup", "src.vol", "foreign"]),
        "not an EVFS volume",
    );
    // Cleartext onto encrypted media.
    env.ok(&[
        "backup",
        "src.vol",
        "copy.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    run(
        "copy.vol",
        with(&["backup", "src.vol", "copy.vol", "--cleartext"]),
        "cleartext on encrypted media",
    );
    // Decrypted data onto a disabled volume.
    env.ok(&[
        "disable",
        "copy.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    run(
        "copy.vol",
        with(&["backup", "src.vol", "copy.vol"]),
        "cleartext on encrypted media",
    );
    // Too small: a target volume whose data area is smaller than the source.
    env.create("small.vol", "alice.k1", "16M");
    run(
        "small.vol",
        with(&[
            "backup",
            "src.vol",
            "small.vol",
            "--target-key",
            "alice.k1",
            "--target-passphrase-file",
            &pa,
        ]),
        "too small",
    );
    // Double encryption: a --raw source into an enabled volume, and a
    // disabled source into a new target.
    env.ok(&[
        "enable",
        "copy.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    run(
        "copy.vol",
        vec![
            "backup".into(),
            "src.vol".into(),
            "copy.vol".into(),
            "--raw".into(),
        ],
        "encrypted twice",
    );
    env.ok(&[
        "disable",
        "src.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    run(
        "new.vol",
        with(&["backup", "src.vol", "new.vol"]),
        "encrypted twice",
    );
    run(
        "new.vol",
        with(&["backup", "src.vol", "new.vol", "--cleartext"]),
        "disabled",
    );
    assert!(
        !env.path("new.vol").exists(),
        "a refusal leaves no target behind"
    );
}

#[test]
fn a_raw_clone_of_a_disabled_source_needs_no_key_and_decrypts_once_enabled() {
    let (env, image, pa, _) = setup();
    env.ok(&[
        "disable",
        "src.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    // A keystore with no keys at all.
    let keyless = Env::new();
    let src = env.path("src.vol").display().to_string();
    let dst = env.path("raw.vol").display().to_string();
    let out = keyless.ok(&["backup", &src, &dst, "--raw", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["mode"], "raw");
    assert!(report["plaintext_blake3"].is_null());
    keyless.ok(&["check", &dst]);
    let info = env.info("raw.vol");
    assert_eq!(info["state"], "disabled");
    assert_eq!(info["dirty"], false);
    assert!(data_area(&env, "src.vol") == data_area(&env, "raw.vol"));
    env.ok(&[
        "enable",
        "raw.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    assert_eq!(env.hash("raw.vol", "alice.k1"), b3(&image));
    // A raw refresh of a disabled clone of the same lineage is allowed.
    env.ok(&[
        "disable",
        "raw.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    keyless.ok(&["backup", &src, &dst, "--raw"]);
}

#[test]
fn cleartext_export_to_a_file_and_to_stdout() {
    let (env, image, pa, _) = setup();
    env.ok(&[
        "backup",
        "src.vol",
        "plain.out",
        "--cleartext",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    assert!(std::fs::read(env.path("plain.out")).unwrap() == image);
    let out = env
        .cmd(&[
            "backup",
            "src.vol",
            "-",
            "--cleartext",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == image);
    // Without --cleartext a plain target becomes a clone.
    env.ok(&[
        "backup",
        "src.vol",
        "clone.out",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    assert_eq!(
        env.info("clone.out")["provenance"]["plaintext_blake3"],
        b3(&image)
    );
}

#[test]
fn stdin_sources_are_sniffed() {
    let (env, image, pa, _) = setup();
    // A volume on stdin is decrypted with -k.
    let vol = std::fs::read(env.path("src.vol")).unwrap();
    let out = env
        .cmd(&[
            "backup",
            "-",
            "fromstdin.vol",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ])
        .write_stdin(vol)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.hash("fromstdin.vol", "alice.k1"), b3(&image));
    // Plain data on stdin with --owner.
    let out = env
        .cmd(&[
            "backup",
            "-",
            "plainstdin.vol",
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
        ])
        .write_stdin(image.clone())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.hash("plainstdin.vol", "alice.k1"), b3(&image));
    // A backup stream on stdin is refused with a hint to use restore.
    env.ok(&[
        "backup",
        "src.vol",
        "--stream",
        "s.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    let out = env
        .cmd(&[
            "backup",
            "-",
            "x.vol",
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
        ])
        .write_stdin(std::fs::read(env.path("s.evfs")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("evfs restore"));
    assert!(!env.path("x.vol").exists());
}

/// Start `evfs ARGS` in the background, as the tests' `Env::cmd` would.
fn spawn(env: &Env, args: &[&str]) -> std::process::Child {
    env.process(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A big volume for the tests that need a backup to take a while.
fn big_volume(env: &Env, name: &str, size: &str) {
    env.create(name, "alice.k1", size);
}

/// `backup big.vol t.vol -k alice.k1`, killed with SIGKILL as soon as the
/// target carries its dirty EMD (tried again when the backup finished first).
fn kill_a_backup_mid_way(env: &Env, pa: &str) {
    for attempt in 0..5 {
        let _ = std::fs::remove_file(env.path("t.vol"));
        let mut child = spawn(
            env,
            &[
                "backup",
                "big.vol",
                "t.vol",
                "-k",
                "alice.k1",
                "--passphrase-file",
                pa,
                "--threads",
                "1",
            ],
        );
        // Kill it as soon as the target carries its dirty EMD with its
        // checkpoint, in both copies (the primary copy is written first).
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen_dirty = false;
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            let out = env.run(&["info", "t.vol", "--json"]);
            if out.status.success() {
                let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if info["dirty"] == true
                    && info["checkpoint"].is_object()
                    && info["emd"]["backup"] == "ok"
                {
                    seen_dirty = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        if seen_dirty && !status.success() {
            return;
        }
        eprintln!("attempt {attempt}: the backup finished before it could be killed; again");
    }
    panic!("the backup could never be caught while running");
}

/// `backup big.vol t.vol -k alice.k1 EXTRA`.
fn backup_t<'a>(pa: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "backup",
        "big.vol",
        "t.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        pa,
    ];
    args.extend(extra);
    args
}

#[test]
fn a_killed_backup_leaves_an_incomplete_target_that_check_names_and_resume_finishes() {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    big_volume(&env, "big.vol", "1G");
    kill_a_backup_mid_way(&env, &pa);
    // Case 6 of the safety issue: `check -r` said "successfully
    // recovered" and made the half-copied target look clean. Now the
    // unfinished backup is named, kept, and finished by --resume.
    let (out, err) = env.expect(6, &["check", "t.vol"]);
    assert!(
        out.contains("holds an unfinished backup from volume"),
        "{out}"
    );
    assert!(err.contains("--resume"), "{err}");
    let (out, err) = env.expect(6, &["check", "-r", "t.vol"]);
    assert!(!out.contains("successfully recovered"), "{out}");
    assert!(
        out.contains("unfinished backup") && err.contains("--resume"),
        "{out}{err}"
    );
    let (json, _) = env.expect(6, &["check", "t.vol", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["exit"], 6);
    assert_eq!(report["incomplete"]["task"], "backup");
    assert!(report["hint"].as_str().unwrap().contains("--resume"));
    let info = env.info("t.vol");
    assert_eq!(info["dirty"], true);
    assert!(info["checkpoint"].is_object(), "{info}");
    env.ok(&backup_t(&pa, &["--resume"]));
    env.ok(&["check", "t.vol"]);
    env.ok(&[
        "verify",
        "t.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
}

#[test]
fn check_r_repairs_a_bad_emd_copy_of_an_unfinished_target_and_keeps_its_checkpoint() {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    big_volume(&env, "big.vol", "1G");
    kill_a_backup_mid_way(&env, &pa);
    let checkpoint = env.info("t.vol")["checkpoint"].clone();
    assert!(checkpoint.is_object(), "{checkpoint}");
    // The primary EMD copy (the first 16 KiB) wiped.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(env.path("t.vol"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; EMD_SIZE], 0).unwrap();
    drop(f);
    let info = env.info("t.vol");
    assert_eq!(info["emd"]["primary"], "bad", "{info}");
    assert_eq!(info["emd"]["backup"], "ok", "{info}");
    assert_eq!(info["checkpoint"], checkpoint, "the backup copy lost it");
    // `check` names both: the unfinished backup and the bad copy.
    let (out, err) = env.expect(6, &["check", "t.vol"]);
    assert!(out.contains("holds an unfinished backup"), "{out}");
    assert!(out.contains("EMD primary copy bad"), "{out}");
    assert!(err.contains("--resume"), "{err}");
    // `check -r` repairs the copy only: the target stays unfinished.
    let (out, err) = env.expect(6, &["check", "-r", "t.vol"]);
    assert!(
        out.contains("Repairing the primary EMD copy"),
        "no repair said: {out}"
    );
    assert!(!out.contains("successfully recovered"), "{out}");
    assert!(
        out.contains("unfinished backup") && err.contains("--resume"),
        "{out}{err}"
    );
    let info = env.info("t.vol");
    assert_eq!(info["emd"]["primary"], "ok", "not repaired: {info}");
    assert_eq!(info["emd"]["backup"], "ok", "{info}");
    assert_eq!(info["dirty"], true, "{info}");
    assert_eq!(info["checkpoint"], checkpoint, "the checkpoint changed");
    let (out, _) = env.expect(6, &["check", "t.vol"]);
    assert!(!out.contains("EMD primary copy bad"), "{out}");
    // And --resume finishes it.
    env.ok(&backup_t(&pa, &["--resume"]));
    env.ok(&["check", "t.vol"]);
    env.ok(&[
        "verify",
        "t.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
}

#[test]
fn a_plain_rerun_after_check_r_finishes_an_interrupted_backup() {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    big_volume(&env, "big.vol", "1G");
    kill_a_backup_mid_way(&env, &pa);
    let (out, _) = env.expect(6, &["check", "-r", "t.vol"]);
    assert!(out.contains("unfinished backup"), "{out}");
    // The same backup again, without --resume: it copies everything.
    env.ok(&backup_t(&pa, &[]));
    let (out, _) = env.expect(0, &["check", "t.vol"]);
    assert!(out.contains("is clean"), "{out}");
    let info = env.info("t.vol");
    assert_eq!(info["dirty"], false, "{info}");
    assert!(info["checkpoint"].is_null(), "{info}");
    assert_eq!(
        env.hash("t.vol", "alice.k1"),
        env.hash("big.vol", "alice.k1")
    );
}

#[test]
fn progress_lines_arrive_at_the_interval_and_sigusr1_prints_dd_stats() {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    big_volume(&env, "big.vol", "1G");
    let out = env.run(&[
        "backup",
        "big.vol",
        "p.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--progress",
        "--progress-interval",
        "100ms",
        "--threads",
        "1",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr
        .lines()
        .filter(|l| l.contains("evfs: backup: ") && l.contains("ETA"))
        .count();
    assert!(
        lines >= 3,
        "expected several progress lines, got {lines}:\n{stderr}"
    );

    let mut child = spawn(
        &env,
        &[
            "backup",
            "big.vol",
            "q.vol",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
            "--threads",
            "1",
            "--force",
        ],
    );
    // Wait until the target exists (the handler is installed before the data moves).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.path("q.vol").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let running = child.try_wait().unwrap().is_none();
    send_signal(child.id(), "USR1");
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "SIGUSR1 must not kill the backup: {err}");
    if running {
        assert!(
            err.contains("records in") && err.contains("bytes ("),
            "{err}"
        );
    } else {
        eprintln!("the backup finished before SIGUSR1; the stats line was not checked");
    }
}

/// Send a signal with the `kill` command (no unsafe libc call in tests).
fn send_signal(pid: u32, signal: &str) {
    let ok = Process::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok || signal == "USR1", "kill -{signal} {pid} failed");
}

#[test]
fn usage_errors_and_missing_keys_have_their_exit_codes() {
    let (env, _, _, _) = setup();
    env.expect(4, &["backup", "src.vol", "x.vol"]);
    env.expect(2, &["backup", "image", "x.vol"]);
    env.expect(2, &["backup", "src.vol", "x.vol", "--compress"]);
    env.expect(2, &["backup", "src.vol"]);
    env.expect(2, &["backup", "src.vol", "x.vol", "--threads", "0"]);
    env.expect(1, &["backup", "missing.vol", "x.vol"]);
    env.expect(
        2,
        &["backup", "src.vol", "x.vol", "--progress-interval", "soon"],
    );
    assert!(!env.path("x.vol").exists());
}

#[test]
fn a_cut_off_cleartext_export_leaves_no_file_and_a_stream_to_dev_null_leaves_it_a_device() {
    let (env, _, pa, _) = setup();
    // A volume on stdin that ends early: the export fails and no file appears.
    let vol = std::fs::read(env.path("src.vol")).unwrap();
    let out = env
        .cmd(&[
            "backup",
            "-",
            "out.raw",
            "--cleartext",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ])
        .write_stdin(vol[..vol.len() / 2].to_vec())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    assert!(!env.path("out.raw").exists());
    assert!(
        std::fs::read_dir(env.dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial"))
    );
    // A stream into a character device is written to it, not over it.
    env.ok(&[
        "backup",
        "src.vol",
        "--stream",
        "/dev/null",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
}
