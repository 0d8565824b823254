//! Volumes and keys from the command line: the done-list of the
//! volumes-and-keys issue, run against the real binary.

use std::os::unix::fs::PermissionsExt;

use crate::common::{Env, contains, files_under};
use evfs::emd::State;
use evfs::emd::format::{EMD_SIZE, Emd};

fn setup() -> (Env, String, String) {
    let (env, pws) = Env::with_keys(&["alice.k1", "bob"]);
    env.create("vol", "alice.k1", "64M");
    let [pa, pb] = <[String; 2]>::try_from(pws).unwrap();
    (env, pa, pb)
}

#[test]
fn info_json_shows_every_field_of_a_new_volume() {
    let (env, _, _) = setup();
    let info = env.info("vol");
    for field in [
        "uuid",
        "label",
        "cipher",
        "sector_size",
        "data_offset",
        "data_size",
        "state",
        "dirty",
        "generation",
        "owner",
        "users",
        "recovery",
        "emd",
        "provenance",
    ] {
        assert!(
            info.get(field).is_some(),
            "info --json lacks {field}: {info}"
        );
    }
    assert_eq!(info["state"], "enabled");
    assert_eq!(info["dirty"], false);
    assert_eq!(info["emd"]["primary"], "ok");
    assert_eq!(info["emd"]["backup"], "ok");
    assert_eq!(info["owner"], "alice.k1");
    assert_eq!(info["cipher"], "aes-256-xts");
    assert_eq!(info["sector_size"], 4096);
    assert_eq!(info["data_offset"], 1 << 20);
    assert_eq!(info["data_size"], 62 << 20);
    assert!(info["provenance"].is_null());
    assert_eq!(std::fs::metadata(env.path("vol")).unwrap().len(), 64 << 20);
}

#[test]
fn roles_passphrases_and_exit_codes() {
    let (env, pa, pb) = setup();
    env.ok(&[
        "user",
        "add",
        "vol",
        "bob",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    assert_eq!(env.info("vol")["users"], serde_json::json!(["bob.bob"]));

    // The user may disable; the owner may enable.
    env.ok(&["disable", "vol", "-k", "bob", "--passphrase-file", &pb]);
    assert_eq!(env.info("vol")["state"], "disabled");
    env.ok(&["enable", "vol", "-k", "alice.k1", "--passphrase-file", &pa]);
    assert_eq!(env.info("vol")["state"], "enabled");

    // A non-owner adding a user: access denied.
    env.gen_key("carol");
    let (_, err) = env.expect(
        4,
        &[
            "user",
            "add",
            "vol",
            "carol",
            "-k",
            "bob",
            "--passphrase-file",
            &pb,
        ],
    );
    assert!(err.contains("only owner"), "{err}");
    // A wrong passphrase.
    let (_, err) = env.expect(
        4,
        &["enable", "vol", "-k", "alice.k1", "--passphrase-file", &pb],
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    // A key in no slot.
    let pc = env.path("carol.pw").display().to_string();
    let (_, err) = env.expect(
        4,
        &["disable", "vol", "-k", "carol", "--passphrase-file", &pc],
    );
    assert!(err.contains("no slot"), "{err}");
    // No passphrase file, none stored, no terminal.
    let (_, err) = env.expect(4, &["disable", "vol", "-k", "bob"]);
    assert!(
        err.contains("--passphrase-file")
            && err.contains("store-passphrase")
            && err.contains("terminal"),
        "the message names the three ways: {err}"
    );
    // After storing the passphrase, the same call needs no input at all.
    env.ok(&["key", "store-passphrase", "bob", "--passphrase-file", &pb]);
    env.ok(&["disable", "vol", "-k", "bob"]);
    assert_eq!(env.info("vol")["state"], "disabled");
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap();
    let bob = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "bob.bob")
        .unwrap();
    assert_eq!(bob["passphrase_stored"], true);
    env.ok(&["key", "forget-passphrase", "bob"]);
    env.expect(4, &["enable", "vol", "-k", "bob"]);

    // Users can be removed; the owner cannot.
    env.ok(&[
        "user",
        "remove",
        "vol",
        "bob",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.expect(4, &["enable", "vol", "-k", "bob", "--passphrase-file", &pb]);
    env.expect(
        2,
        &[
            "user",
            "remove",
            "vol",
            "alice.k1",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ],
    );
}

#[test]
fn recovery_key_may_change_the_owner_and_nothing_else() {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    env.gen_key("carol");
    let pr = env.pass_file("evfs.r1");
    env.ok(&[
        "key",
        "gen",
        "evfs.r1",
        "--recovery",
        "--passphrase-file",
        &pr,
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    env.expect(
        2,
        &[
            "key",
            "gen",
            "dave.k",
            "--recovery",
            "--passphrase-file",
            &pr,
        ],
    );
    env.ok(&[
        "create",
        "vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
        "--size",
        "8M",
        "--recovery",
        "evfs.r1",
    ]);
    assert_eq!(env.info("vol")["recovery"], serde_json::json!(["evfs.r1"]));
    env.expect(
        4,
        &["disable", "vol", "-k", "evfs.r1", "--passphrase-file", &pr],
    );
    env.expect(
        4,
        &["hash", "vol", "-k", "evfs.r1", "--passphrase-file", &pr],
    );
    env.ok(&[
        "owner",
        "vol",
        "carol",
        "-k",
        "evfs.r1",
        "--passphrase-file",
        &pr,
    ]);
    let info = env.info("vol");
    assert_eq!(info["owner"], "carol.carol");
    assert_eq!(info["users"], serde_json::json!(["alice.k1"]));
    // The old owner kept access but lost the owner's rights.
    env.ok(&["disable", "vol", "-k", "alice.k1", "--passphrase-file", &pa]);
    env.expect(
        4,
        &["destroy", "vol", "-k", "alice.k1", "--passphrase-file", &pa],
    );
}

#[test]
fn group_readable_private_key_is_refused_and_no_passphrase_is_stored_in_clear() {
    let (env, pa, pb) = setup();
    env.ok(&["key", "store-passphrase", "bob", "--passphrase-file", &pb]);
    for file in files_under(&env.keystore())
        .into_iter()
        .chain([env.path("vol")])
    {
        let bytes = std::fs::read(&file).unwrap();
        for id in ["alice.k1", "bob"] {
            let phrase = format!("pass phrase of {id}");
            assert!(
                !contains(&bytes, phrase.as_bytes()),
                "{} holds a passphrase",
                file.display()
            );
        }
    }
    let priv_file = env.keystore().join("alice/k1.priv");
    assert_eq!(
        std::fs::metadata(&priv_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(env.keystore().join("bob/bob.pass"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    std::fs::set_permissions(&priv_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (_, err) = env.expect(
        4,
        &["disable", "vol", "-k", "alice.k1", "--passphrase-file", &pa],
    );
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn wiped_first_mib_is_reported_and_repaired_and_emd_backup_restores_a_destroyed_volume() {
    let (env, pa, _) = setup();
    let before = env.hash("vol", "alice.k1");
    let vol = env.path("vol");
    let f = std::fs::OpenOptions::new().write(true).open(&vol).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; 1 << 20], 0).unwrap();
    drop(f);
    let info = env.info("vol");
    assert_eq!(info["emd"]["primary"], "bad");
    assert_eq!(info["emd"]["backup"], "ok");
    env.expect(5, &["check", "vol"]);
    let out = env.ok(&["check", "-r", "vol"]);
    assert!(out.contains("has been successfully recovered"), "{out}");
    assert_eq!(env.info("vol")["emd"]["primary"], "ok");
    env.ok(&["check", "vol"]);
    assert_eq!(env.hash("vol", "alice.k1"), before);

    env.ok(&["emd", "backup", "vol", "vol.emd"]);
    env.expect(2, &["emd", "backup", "vol", "vol.emd"]);
    env.ok(&["destroy", "vol", "-k", "alice.k1", "--passphrase-file", &pa]);
    // No EMD left: plain data, a wrong kind of argument (exit 2).
    env.expect(2, &["info", "vol"]);
    env.ok(&["emd", "restore", "vol", "vol.emd"]);
    assert_eq!(env.info("vol")["emd"]["primary"], "ok");
    assert_eq!(env.hash("vol", "alice.k1"), before);
}

/// `create --force` over a volume writes the new EMD one generation above
/// the old one's, so that a crash between its two copies (the new primary
/// written, the old backup copy still there) leaves the new EMD in force,
/// never the old one (`formats/EMD.md`, Generations).
#[test]
fn create_force_over_a_volume_writes_above_the_old_generation() {
    let (env, pa, _) = setup();
    env.ok(&["disable", "vol", "-k", "alice.k1", "--passphrase-file", &pa]);
    env.ok(&["enable", "vol", "-k", "alice.k1", "--passphrase-file", &pa]);
    let old = env.info("vol");
    let old_generation = old["generation"].as_u64().unwrap();
    assert_eq!(old_generation, 2, "{old}");
    let vol = env.path("vol");
    let backup_at = (std::fs::metadata(&vol).unwrap().len() as usize & !4095) - EMD_SIZE;
    let old_backup = std::fs::read(&vol).unwrap()[backup_at..backup_at + EMD_SIZE].to_vec();
    env.ok(&[
        "create",
        "vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--force",
    ]);
    let new = env.info("vol");
    assert_ne!(new["uuid"], old["uuid"]);
    assert_eq!(new["generation"], old_generation + 1, "{new}");
    // The state a crash after the primary copy would leave.
    let mut bytes = std::fs::read(&vol).unwrap();
    bytes[backup_at..backup_at + EMD_SIZE].copy_from_slice(&old_backup);
    std::fs::write(&vol, &bytes).unwrap();
    let torn = env.info("vol");
    assert_eq!(torn["uuid"], new["uuid"], "{torn}");
    assert_eq!(torn["emd"]["backup"], "bad", "{torn}");
}

#[test]
fn check_reports_a_dirty_volume_and_r_resets_it_with_the_hp_ux_messages() {
    let (env, _, _) = setup();
    let vol = env.path("vol");
    let mut bytes = std::fs::read(&vol).unwrap();
    let mut e = Emd::parse(&bytes[..EMD_SIZE]).unwrap();
    e.dirty = true;
    e.generation += 1;
    let backup_at = (bytes.len() & !4095) - EMD_SIZE;
    let enc = e.encode();
    bytes[..EMD_SIZE].copy_from_slice(&enc[..]);
    bytes[backup_at..backup_at + EMD_SIZE].copy_from_slice(&enc[..]);
    std::fs::write(&vol, &bytes).unwrap();
    let (out, _) = env.expect(6, &["check", "vol"]);
    assert!(
        out.contains("Encrypted volume \"vol\" has not been properly shut down."),
        "{out}"
    );
    assert_eq!(env.info("vol")["dirty"], true);
    let out = env.ok(&["check", "-r", "vol"]);
    assert_eq!(
        out,
        "Encrypted volume \"vol\" has not been properly shut down.\nResetting dirty bit...\nEncrypted volume \"vol\" has been successfully recovered\n"
    );
    assert_eq!(env.info("vol")["dirty"], false);
    env.ok(&["check", "vol"]);
}

#[test]
fn any_flipped_byte_in_a_copy_is_detected() {
    let (env, _, _) = setup();
    let vol = env.path("vol");
    let good = std::fs::read(&vol).unwrap();
    let backup_at = (good.len() & !4095) - EMD_SIZE;
    for (copy_at, name) in [(0usize, "primary"), (backup_at, "backup")] {
        for off in [0, 9, 24, 130, 153, 170, 200, 520, 600, 16000, EMD_SIZE - 1] {
            let mut bad = good.clone();
            bad[copy_at + off] ^= 0x04;
            std::fs::write(&vol, &bad).unwrap();
            let info = env.info("vol");
            assert_eq!(
                info["emd"][name], "bad",
                "flip at {name}+{off} went unnoticed"
            );
        }
    }
}

#[test]
fn tampering_with_checksums_fixed_up_is_caught_by_the_mac_at_unlock() {
    let (env, pa, _) = setup();
    let vol = env.path("vol");
    let good = std::fs::read(&vol).unwrap();
    let backup_at = (good.len() & !4095) - EMD_SIZE;
    let tampered = |mutate: &dyn Fn(&mut Emd)| {
        let mut bytes = good.clone();
        let mut e = Emd::parse(&bytes[..EMD_SIZE]).unwrap();
        mutate(&mut e);
        let enc = e.encode();
        bytes[..EMD_SIZE].copy_from_slice(&enc[..]);
        bytes[backup_at..backup_at + EMD_SIZE].copy_from_slice(&enc[..]);
        std::fs::write(&vol, &bytes).unwrap();
    };
    tampered(&|e| e.state = State::Disabled);
    assert_eq!(
        env.info("vol")["state"],
        "disabled",
        "the parser accepts it..."
    );
    let (_, err) = env.expect(
        5,
        &["enable", "vol", "-k", "alice.k1", "--passphrase-file", &pa],
    );
    assert!(err.contains("MAC"), "...but unlock does not: {err}");
    tampered(&|e| e.data_size -= 1 << 20);
    env.expect(
        5,
        &["hash", "vol", "-k", "alice.k1", "--passphrase-file", &pa],
    );
    tampered(&|e| e.label = "evil".into());
    env.expect(
        5,
        &["disable", "vol", "-k", "alice.k1", "--passphrase-file", &pa],
    );
}

#[test]
fn create_refuses_existing_emd_or_data_and_bad_arguments() {
    let (env, _, _) = setup();
    let (_, err) = env.expect(
        3,
        &[
            "create",
            "vol",
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
        ],
    );
    assert!(err.contains("already holds an EVFS EMD"), "{err}");
    env.ok(&[
        "create",
        "vol",
        "--owner",
        "bob",
        "--passphrase-file",
        "bob.pw",
        "--force",
    ]);
    assert_eq!(env.info("vol")["owner"], "bob.bob");
    std::fs::write(env.path("data"), vec![1u8; 4 << 20]).unwrap();
    env.expect(
        3,
        &[
            "create",
            "data",
            "--owner",
            "bob",
            "--passphrase-file",
            "bob.pw",
        ],
    );
    env.expect(
        2,
        &[
            "create",
            "new",
            "--owner",
            "bob",
            "--passphrase-file",
            "bob.pw",
        ],
    );
    env.expect(
        2,
        &[
            "create",
            "tiny",
            "--owner",
            "bob",
            "--passphrase-file",
            "bob.pw",
            "--size",
            "1M",
        ],
    );
    assert!(
        !env.path("tiny").exists(),
        "a refused create leaves no file behind"
    );
    let (_, err) = env.expect(
        1,
        &[
            "create",
            "x",
            "--owner",
            "nobody",
            "--passphrase-file",
            "nobody.pw",
            "--size",
            "8M",
        ],
    );
    assert!(err.contains("key import"), "{err}");
    env.expect(
        2,
        &[
            "create",
            "x",
            "--owner",
            "bob",
            "--passphrase-file",
            "bob.pw",
            "--size",
            "8Q",
        ],
    );
    env.expect(
        2,
        &[
            "create",
            "x",
            "--owner",
            "bob",
            "--passphrase-file",
            "bob.pw",
            "--size",
            "8M",
            "--sector-size",
            "1024",
        ],
    );
    env.ok(&[
        "create",
        "small",
        "--owner",
        "bob",
        "--passphrase-file",
        "bob.pw",
        "--size",
        "8M",
        "--sector-size",
        "512",
        "--cipher",
        "aes-128-xts",
        "--label",
        "lab",
    ]);
    let info = env.info("small");
    assert_eq!(info["sector_size"], 512);
    assert_eq!(info["cipher"], "aes-128-xts");
    assert_eq!(info["label"], "lab");
    env.expect(
        1,
        &[
            "create",
            "x",
            "--owner",
            "nobody.k",
            "--passphrase-file",
            "nobody.k.pw",
            "--size",
            "8M",
        ],
    );
}

#[test]
fn key_show_and_import_move_a_public_key_between_keystores() {
    let (env, _, _) = setup();
    let line = env.ok(&["key", "show", "alice.k1"]);
    assert!(line.starts_with("evfs-x25519 "), "{line}");
    std::fs::write(env.path("alice.pub"), &line).unwrap();
    let other = Env::new();
    other.ok(&[
        "key",
        "import",
        "alice.k1",
        env.path("alice.pub").to_str().unwrap(),
    ]);
    assert_eq!(other.ok(&["key", "show", "alice.k1"]), line);
    // Only the public key is needed to create a volume for someone; with
    // no private key to sign it, its EMD is unsigned, and says so.
    let (_, err) = other.expect(
        0,
        &["create", "theirs", "--owner", "alice.k1", "--size", "8M"],
    );
    assert!(err.contains("the EMD is not signed"), "{err}");
    let pa = env.path("alice.k1.pw").display().to_string();
    let theirs = other.path("theirs").display().to_string();
    let k = ["-k", "alice.k1", "--passphrase-file", &pa];
    // Alice refuses an EMD nobody she trusts signed, until she signs it.
    let (_, err) = env.expect(5, &[&["disable", &theirs][..], &k].concat());
    assert!(
        err.contains("is not signed") && err.contains("evfs emd sign"),
        "{err}"
    );
    env.ok(&[&["emd", "sign", &theirs][..], &k].concat());
    env.ok(&[&["disable", &theirs][..], &k].concat());
    std::fs::write(env.path("junk"), "not a key").unwrap();
    other.expect(
        2,
        &["key", "import", "x.y", env.path("junk").to_str().unwrap()],
    );
}

#[test]
fn hash_of_a_plain_file_equals_blake3_and_cat_gives_the_data_area() {
    let (env, pa, _) = setup();
    let data = crate::common::mixed_data(3 << 20, 7);
    std::fs::write(env.path("plain"), &data).unwrap();
    let out = env.ok(&["hash", "plain"]);
    assert_eq!(out, format!("{}  plain\n", crate::common::b3(&data)));
    let cat = env
        .cmd(&["cat", "vol", "-k", "alice.k1", "--passphrase-file", &pa])
        .output()
        .unwrap();
    assert!(cat.status.success());
    assert_eq!(cat.stdout.len(), 62 << 20);
    assert_eq!(crate::common::b3(&cat.stdout), env.hash("vol", "alice.k1"));
    env.expect(4, &["hash", "vol"]);
}
