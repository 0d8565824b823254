//! The keystore from the command line: stored passphrases made by concurrent
//! runs, and the refusals that keep others from swapping key files (the
//! rules ssh applies to its key files).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::Env;
use crate::common::tools::unavailable;

/// A uid that owns nothing here.
const STRANGER: u32 = 12345;

/// `key gen ID --store-passphrase` with a small KDF, as a process not yet started.
fn gen_stored(env: &Env, id: &str) -> std::process::Command {
    let pw = env.pass_file(id);
    let mut c = env.process(&[
        "key",
        "gen",
        id,
        "--store-passphrase",
        "--passphrase-file",
        &pw,
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    c.stdin(Stdio::null());
    c
}

/// Regression (issue case 9): concurrent `key gen --store-passphrase` in a
/// fresh keystore each made a `.hostkey`, the last one replaced the others,
/// and a stored passphrase sealed under a lost host key could not be opened.
#[test]
fn concurrent_key_gen_with_stored_passphrases_share_one_host_key() {
    const ROUNDS: usize = 20;
    const KEYS: [&str; 4] = ["ann.k", "ben.k", "cat.k", "dan.k"];
    for round in 0..ROUNDS {
        let env = Env::new();
        // Build every command first so that the starts are as close as can be.
        let mut cmds: Vec<_> = KEYS.iter().map(|id| gen_stored(&env, id)).collect();
        let children: Vec<_> = cmds
            .iter_mut()
            .map(|c| {
                c.stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (id, child) in KEYS.iter().zip(children) {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: key gen {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let list: serde_json::Value =
            serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap();
        for id in KEYS {
            let entry = list["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["id"] == id)
                .unwrap_or_else(|| panic!("round {round}: {id} not listed: {list}"));
            assert_eq!(entry["passphrase_stored"], true, "round {round}: {list}");
            // Stdin is empty and there is no terminal: only the stored
            // passphrase can unlock the key.
            let vol = format!("{id}.vol");
            env.create(&vol, id, "4M");
            env.ok(&["hash", &vol, "-k", id]);
        }
    }
}

// ---------------------------------------------------------------- hardening

/// A keystore holding `alice` with her passphrase stored, and a volume `vol`
/// she owns; her passphrase file.
fn alice() -> (Env, String) {
    let env = Env::new();
    let pw = env.pass_file("alice");
    env.ok(&[
        "key",
        "gen",
        "alice",
        "--store-passphrase",
        "--passphrase-file",
        &pw,
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    env.create("vol", "alice", "4M");
    (env, pw)
}

/// A path in the keystore.
fn ks(env: &Env, name: &str) -> PathBuf {
    env.keystore().join(name)
}

/// The key files of `alice`.
const KEY_FILES: [&str; 4] = [
    "alice/alice.priv",
    "alice/alice.pass",
    ".hostkey",
    "alice/alice.pub",
];

/// A command that reads `file`: the `.priv` is read to unlock with the
/// passphrase file `pw`, the `.pass` and `.hostkey` to unlock with the
/// stored passphrase, the `.pub` by `key show`.
fn reader<'a>(file: &str, pw: &'a str) -> Vec<&'a str> {
    match file {
        "alice/alice.priv" => vec!["hash", "vol", "-k", "alice", "--passphrase-file", pw],
        "alice/alice.pass" | ".hostkey" => vec!["hash", "vol", "-k", "alice"],
        _ => vec!["key", "show", "alice"],
    }
}

/// Run; require exit 4 (access denied) and a message that names `file` and
/// says `fix`.
fn refused(env: &Env, args: &[&str], file: &Path, fix: &str) -> String {
    let (_, err) = env.expect(4, args);
    let name = file.display().to_string();
    assert!(err.contains(&name), "the message names {name}: {err}");
    assert!(err.contains(fix), "the message says {fix:?}: {err}");
    err
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn a_symlink_in_place_of_a_key_file_is_refused_until_replaced_by_the_file() {
    for file in KEY_FILES {
        let (env, pw) = alice();
        let args = reader(file, &pw);
        let path = ks(&env, file);
        let moved = env.path("moved-away");
        std::fs::rename(&path, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &path).unwrap();
        let err = refused(&env, &args, &path, "replace the symlink with the file");
        assert!(err.contains("symbolic link"), "{err}");
        // Doing what the hint says (mv the file over the link) puts it right.
        assert!(
            err.contains(&format!("mv {} {}", moved.display(), path.display())),
            "{err}"
        );
        std::fs::rename(&moved, &path).unwrap();
        env.ok(&args);
    }
}

#[test]
fn a_fifo_in_place_of_a_key_file_is_refused_without_hanging() {
    let (env, pw) = alice();
    let path = ks(&env, "alice/alice.priv");
    std::fs::remove_file(&path).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let mut child = env
        .process(&["hash", "vol", "-k", "alice", "--passphrase-file", &pw])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("evfs hung opening a FIFO in place of a .priv");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&path.display().to_string()) && err.contains("not a regular file"),
        "{err}"
    );
}

#[test]
fn secrets_readable_or_writable_by_group_or_others_are_refused() {
    for file in &KEY_FILES[..3] {
        for loose in [0o640, 0o620, 0o604, 0o602] {
            let (env, pw) = alice();
            let args = reader(file, &pw);
            let path = ks(&env, file);
            chmod(&path, loose);
            let err = refused(&env, &args, &path, &format!("chmod 600 {}", path.display()));
            assert!(err.contains("group or others"), "{err}");
            chmod(&path, 0o400);
            env.ok(&args);
        }
    }
}

#[test]
fn a_public_key_writable_by_others_is_refused_and_a_read_only_one_is_fine() {
    let (env, _) = alice();
    let path = ks(&env, "alice/alice.pub");
    for loose in [0o664, 0o646] {
        chmod(&path, loose);
        refused(
            &env,
            &["key", "show", "alice"],
            &path,
            &format!("chmod 644 {}", path.display()),
        );
        refused(
            &env,
            &[
                "create",
                "v2",
                "--owner",
                "alice",
                "--passphrase-file",
                "alice.pw",
                "--size",
                "4M",
            ],
            &path,
            "chmod 644",
        );
    }
    chmod(&path, 0o444);
    env.ok(&["key", "show", "alice"]);
    chmod(&path, 0o644);
    env.ok(&[
        "create",
        "v2",
        "--owner",
        "alice",
        "--passphrase-file",
        "alice.pw",
        "--size",
        "4M",
    ]);
}

#[test]
fn keystore_directories_writable_by_others_are_refused_unless_sticky() {
    let (env, pw) = alice();
    let unlock = [
        "hash",
        "vol",
        "-k",
        "alice",
        "--passphrase-file",
        pw.as_str(),
    ];
    for dir in [env.keystore(), ks(&env, "alice")] {
        for loose in [0o770, 0o707, 0o777] {
            chmod(&dir, loose);
            let err = refused(&env, &unlock, &dir, &format!("chmod 700 {}", dir.display()));
            assert!(err.contains("writable by group or others"), "{err}");
            refused(&env, &["key", "show", "alice"], &dir, "chmod 700");
            refused(&env, &["key", "list"], &env.keystore(), "chmod 700");
        }
        // Others may add files but not replace ours; what they add fails
        // the file checks.
        chmod(&dir, 0o1777);
        env.ok(&unlock);
        chmod(&dir, 0o755);
        env.ok(&unlock);
        chmod(&dir, 0o700);
    }
    // Making a key in a loose keystore is refused too: someone could swap
    // the new files.
    chmod(&env.keystore(), 0o777);
    let pb = env.pass_file("bob");
    refused(
        &env,
        &[
            "key",
            "gen",
            "bob",
            "--passphrase-file",
            &pb,
            "--kdf-memory",
            "256K",
            "--kdf-passes",
            "1",
        ],
        &env.keystore(),
        "chmod 700",
    );
}

#[test]
fn key_files_and_directories_of_another_user_are_refused_even_for_root() {
    if !is_root() {
        unavailable(
            "key_files_and_directories_of_another_user_are_refused_even_for_root",
            "only root can give files to another uid",
        );
        return;
    }
    for file in KEY_FILES {
        let (env, pw) = alice();
        let args = reader(file, &pw);
        let path = ks(&env, file);
        std::os::unix::fs::chown(&path, Some(STRANGER), None).unwrap();
        let err = refused(&env, &args, &path, &format!("chown 0 {}", path.display()));
        assert!(err.contains(&format!("uid {STRANGER}")), "{err}");
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();
        env.ok(&args);
    }
    let (env, pw) = alice();
    let unlock = [
        "hash",
        "vol",
        "-k",
        "alice",
        "--passphrase-file",
        pw.as_str(),
    ];
    for dir in [env.keystore(), ks(&env, "alice")] {
        std::os::unix::fs::chown(&dir, Some(STRANGER), None).unwrap();
        let err = refused(&env, &unlock, &dir, &format!("chown 0 {}", dir.display()));
        assert!(err.contains(&format!("uid {STRANGER}")), "{err}");
        std::os::unix::fs::chown(&dir, Some(0), None).unwrap();
        env.ok(&unlock);
    }
}

/// ssh's rule for directories: root's are fine for everyone. A user works
/// with a keystore whose directories and public keys are root's, and is
/// still refused root's private key.
#[test]
fn another_user_may_use_roots_directories_and_public_keys_but_not_its_secrets() {
    let test = "another_user_may_use_roots_directories_and_public_keys_but_not_its_secrets";
    if !is_root() {
        unavailable(test, "only root can run evfs as another uid");
        return;
    }
    let (env, pa) = alice();
    for dir in [
        env.dir.path().to_path_buf(),
        env.keystore(),
        ks(&env, "alice"),
    ] {
        chmod(&dir, 0o755);
    }
    chmod(Path::new(&pa), 0o644);
    let bob_dir = ks(&env, "bob");
    let home = env.path("bob-home");
    for dir in [&bob_dir, &home] {
        std::fs::create_dir(dir).unwrap();
        chmod(dir, 0o700);
        std::os::unix::fs::chown(dir, Some(STRANGER), Some(STRANGER)).unwrap();
    }
    let pb = env.pass_file("bob");
    chmod(Path::new(&pb), 0o644);
    let as_stranger = |args: &[&str]| {
        let out = env
            .process_as(STRANGER, STRANGER, args)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) => Some(out),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => None,
            Err(e) => panic!("starting evfs as uid {STRANGER}: {e}"),
        }
    };
    let Some(probe) = as_stranger(&["key", "list"]) else {
        unavailable(
            test,
            &format!("uid {STRANGER} cannot run {}", crate::common::bin()),
        );
        return;
    };
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let ok = |args: &[&str]| {
        let out = as_stranger(args).unwrap();
        assert!(
            out.status.success(),
            "evfs {args:?} as uid {STRANGER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&[
        "key",
        "gen",
        "bob",
        "--passphrase-file",
        &pb,
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    let vol = home.join("vol").display().to_string();
    ok(&["create", &vol, "--owner", "alice", "--size", "4M"]);
    // Root's private key stays root's, even where the stranger can read it.
    let priv_file = ks(&env, "alice/alice.priv");
    chmod(&priv_file, 0o644);
    let out = as_stranger(&["hash", &vol, "-k", "alice", "--passphrase-file", &pa]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&priv_file.display().to_string()) && err.contains("owned by uid 0"),
        "{err}"
    );
}

/// Under umask 000, `key gen` still makes directories 0700, private files
/// 0600 and public files 0644.
#[test]
fn key_gen_and_import_make_exact_modes_under_umask_000() {
    let env = Env::new();
    let permissive = |args: &[&str]| {
        let mut c = env.process(args);
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            c.pre_exec(|| {
                rustix::process::umask(rustix::fs::Mode::empty());
                Ok(())
            });
        }
        let out = c.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let pw = env.pass_file("alice");
    permissive(&[
        "key",
        "gen",
        "alice",
        "--store-passphrase",
        "--passphrase-file",
        &pw,
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    let line = env.ok(&["key", "show", "alice"]);
    std::fs::write(env.path("alice.line"), line).unwrap();
    permissive(&["key", "import", "carol", "alice.line"]);
    for (name, want) in [
        ("", 0o700),
        ("alice", 0o700),
        ("carol", 0o700),
        (".hostkey", 0o600),
        ("alice/alice.priv", 0o600),
        ("alice/alice.pass", 0o600),
        ("alice/alice.pub", 0o644),
        ("carol/carol.pub", 0o644),
    ] {
        let path = ks(&env, name);
        assert_eq!(
            mode(&path),
            want,
            "{} has mode {:o}",
            path.display(),
            mode(&path)
        );
    }
}
