//! The backup stream from the command line: pipes, restore, verify, damage,
//! sparse and compressed streams, raw streams, and the demo.

use crate::common::{Env, b3, contains};

const MIB: usize = 1 << 20;

fn setup() -> (Env, Vec<u8>, String) {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    let image = env.volume_from_data("image", "src.vol", "alice.k1", 48 * MIB, 2);
    (env, image, pa)
}

/// `evfs backup src.vol - ...` through a shell pipe into `file`.
fn stream_via_pipe(env: &Env, pa: &str, extra: &str, file: &str) {
    let status = std::process::Command::new("bash")
        .current_dir(env.dir.path())
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' --keystore '{}' backup src.vol - -k alice.k1 --passphrase-file '{pa}' {extra} | cat > {file}",
            crate::common::bin(),
            env.keystore().display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_piped_stream_verifies_and_restores_with_an_empty_keystore() {
    let (env, image, pa) = setup();
    stream_via_pipe(&env, &pa, "", "s.evfs");
    env.ok(&["verify", "s.evfs"]);
    env.ok(&[
        "verify",
        "s.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.ok(&[
        "verify",
        "s.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        "image",
    ]);
    let out = env.ok(&["verify", "s.evfs", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["plaintext_blake3"], b3(&image));

    let keyless = Env::new();
    let s = env.path("s.evfs").display().to_string();
    let r = env.path("restored.vol").display().to_string();
    let out = keyless.ok(&["restore", &s, &r, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Keyless: the frames' ciphertext is written as it lies (case 18: it
    // was labelled "reencrypt"), from a stream made by re-encrypting.
    assert_eq!(report["mode"], "raw");
    assert_eq!(report["stream_mode"], "reencrypt");
    assert_eq!(report["bytes"], 48 * MIB);
    assert_eq!(report["plaintext_blake3"], b3(&image));
    let info = env.info("restored.vol");
    assert_eq!(info["dirty"], false);
    assert_eq!(
        info["provenance"]["source_uuid"],
        env.info("src.vol")["uuid"]
    );
    assert_eq!(info["provenance"]["plaintext_blake3"], b3(&image));
    assert_eq!(env.hash("restored.vol", "alice.k1"), b3(&image));
    keyless.ok(&["check", &r]);

    // From stdin too.
    let out = keyless
        .cmd(&[
            "restore",
            "-",
            &env.path("fromstdin.vol").display().to_string(),
        ])
        .write_stdin(std::fs::read(env.path("s.evfs")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.hash("fromstdin.vol", "alice.k1"), b3(&image));
}

#[test]
fn a_cut_or_altered_stream_fails_verify_and_restore_and_the_target_never_checks_clean() {
    let (env, _, pa) = setup();
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
    let good = std::fs::read(env.path("s.evfs")).unwrap();
    let n = good.len();
    let mut damaged: Vec<(String, Vec<u8>)> = [100, 4096, n / 2, n - 1]
        .iter()
        .map(|&cut| (format!("cut at {cut}"), good[..cut].to_vec()))
        .collect();
    for (name, at) in [
        ("header", 200usize),
        ("frame", n / 3),
        ("trailer", n - 5000),
        ("last byte", n - 1),
    ] {
        let mut b = good.clone();
        b[at] ^= 0x01;
        damaged.push((format!("{name} byte {at} changed"), b));
    }
    for (what, bytes) in damaged {
        std::fs::write(env.path("bad.evfs"), &bytes).unwrap();
        let (_, err) = env.expect(5, &["verify", "bad.evfs"]);
        assert!(!err.is_empty(), "{what}");
        env.expect(
            5,
            &[
                "verify",
                "bad.evfs",
                "-k",
                "alice.k1",
                "--passphrase-file",
                &pa,
            ],
        );
        let _ = std::fs::remove_file(env.path("r.vol"));
        env.expect(5, &["restore", "bad.evfs", "r.vol"]);
        if env.path("r.vol").exists() {
            let code = env.run(&["check", "r.vol"]).status.code();
            assert!(
                matches!(code, Some(5) | Some(6)),
                "{what}: a partly restored target checked {code:?}"
            );
        }
    }
}

#[test]
fn sparse_and_compressed_streams_are_smaller_and_restore_with_the_key() {
    let (env, image, pa) = setup();
    env.ok(&[
        "backup",
        "src.vol",
        "--stream",
        "full.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.ok(&[
        "backup",
        "src.vol",
        "--stream",
        "sparse.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--sparse",
    ]);
    let size = |f: &str| std::fs::metadata(env.path(f)).unwrap().len() as i64;
    assert!(
        size("full.evfs") - size("sparse.evfs") >= 15 * MIB as i64,
        "--sparse saves 15 MiB of 16 MiB zeros"
    );
    // Restoring a sparse stream needs the key (exit 4 without).
    env.expect(4, &["restore", "sparse.evfs", "r1.vol"]);
    env.ok(&[
        "restore",
        "sparse.evfs",
        "r1.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    assert_eq!(env.hash("r1.vol", "alice.k1"), b3(&image));

    // 32 MiB of text and zeros compress well, and never show as cleartext.
    let text: Vec<u8> = (0..32 * MIB)
        .map(|i| {
            if (i / MIB).is_multiple_of(2) {
                b"The quick brown fox jumps over the lazy dog. "[i % 45]
            } else {
                0
            }
        })
        .collect();
    std::fs::write(env.path("text"), &text).unwrap();
    env.ok(&[
        "backup",
        "text",
        "text.vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
    ]);
    env.ok(&[
        "backup",
        "text.vol",
        "--stream",
        "z.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--compress",
    ]);
    let z = std::fs::read(env.path("z.evfs")).unwrap();
    assert!(
        32 * MIB - z.len() >= 28 * MIB,
        "--compress saved only {} bytes",
        32 * MIB - z.len()
    );
    assert!(
        !contains(&z, b"quick brown fox"),
        "the compressed stream holds cleartext"
    );
    env.ok(&["verify", "z.evfs"]);
    env.ok(&[
        "verify",
        "z.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        "text",
    ]);
    let (_, err) = env.expect(4, &["restore", "z.evfs", "r2.vol"]);
    assert!(err.contains("-k"), "{err}");
    assert!(!env.path("r2.vol").exists() || env.run(&["check", "r2.vol"]).status.code() != Some(0));
    env.ok(&[
        "restore",
        "z.evfs",
        "r2.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    assert_eq!(env.hash("r2.vol", "alice.k1"), b3(&text));
}

#[test]
fn a_raw_stream_of_a_disabled_volume_needs_no_key_and_decrypts_with_the_source_key() {
    let (env, image, pa) = setup();
    env.ok(&[
        "disable",
        "src.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    let keyless = Env::new();
    let src = env.path("src.vol").display().to_string();
    let s = env.path("raw.evfs").display().to_string();
    let r = env.path("raw.vol").display().to_string();
    keyless.ok(&["backup", &src, "--stream", &s, "--raw"]);
    keyless.ok(&["verify", &s]);
    keyless.ok(&["restore", &s, &r]);
    keyless.ok(&["check", &r]);
    assert_eq!(env.info("raw.vol")["uuid"], env.info("src.vol")["uuid"]);
    env.ok(&[
        "enable",
        "raw.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    assert_eq!(env.hash("raw.vol", "alice.k1"), b3(&image));
    // Without --raw a disabled source cannot become a stream.
    env.expect(
        3,
        &[
            "backup",
            "src.vol",
            "--stream",
            "x.evfs",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ],
    );
}

#[test]
fn a_stream_fed_to_backup_is_refused_with_a_hint() {
    let (env, _, pa) = setup();
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
    let (_, err) = env.expect(
        3,
        &[
            "backup",
            "s.evfs",
            "x.vol",
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
        ],
    );
    assert!(err.contains("evfs restore"), "{err}");
    // A stream where a volume is expected is named as a stream.
    let (_, err) = env.expect(2, &["info", "s.evfs"]);
    assert!(
        err.contains("backup stream") && err.contains("evfs restore"),
        "{err}"
    );
}

#[test]
fn restore_refuses_foreign_targets_and_replaces_an_old_stream_only_when_complete() {
    let (env, image, pa) = setup();
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
    std::fs::write(env.path("foreign"), vec![1u8; 4 * MIB]).unwrap();
    env.expect(3, &["restore", "s.evfs", "foreign"]);
    assert!(std::fs::read(env.path("foreign")).unwrap() == vec![1u8; 4 * MIB]);
    env.ok(&["restore", "s.evfs", "foreign", "--force"]);
    assert_eq!(env.hash("foreign", "alice.k1"), b3(&image));
    // A stream file that is not a stream is not replaced without --force.
    env.expect(
        3,
        &[
            "backup",
            "src.vol",
            "--stream",
            "image",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ],
    );
    assert!(std::fs::read(env.path("image")).unwrap() == image);
    // An existing stream is replaced by the next one.
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
    env.ok(&["verify", "s.evfs"]);
}

#[test]
fn the_demo_passes() {
    let env = Env::new();
    let out = env.ok(&[
        "demo",
        "--size",
        "16M",
        "--dir",
        &env.path("demo").display().to_string(),
    ]);
    assert!(out.contains("every verification passed"), "{out}");
    assert_eq!(out.matches("verify").count(), 3, "{out}");
}
