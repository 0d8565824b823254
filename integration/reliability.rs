//! Reliability and security against the real binary: faults (a full target,
//! a closed pipe, a source that shrinks or ends early, short reads and
//! writes), hostile input (damaged streams and EMDs, absurd fields, with
//! memory bounded), secrets (never in any output, no core dumps, tampered
//! EMDs refused, the prompt without echo) and a second writer refused.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::tools::SmallFs;
use crate::common::{Env, contains};
use evfs::emd::format::{EMD_SIZE, Emd};
use evfs::emd::{Role, State};
use evfs::volume::Device;
use proptest::prelude::*;

/// A keystore with `alice` and a volume `src` of `mib` MiB of mixed data.
fn setup(mib: usize) -> (Env, String) {
    let env = Env::new();
    let pw = env.gen_key("alice");
    env.volume_from_data("data", "src", "alice", mib << 20, 3);
    (env, pw)
}

/// `evfs` with the keystore, as a std command (for pipes and pre_exec).
fn evfs(env: &Env, args: &[&str]) -> Command {
    env.process(args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// No panic, no signal death: a message and an exit code.
fn assert_clean_failure(out: &Output, code: i32, words: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(words), "expected {words:?} in: {err}");
}

// ---------------------------------------------------------------- faults

#[test]
fn a_full_target_fails_with_exit_1_and_is_left_dirty() {
    let Some(fs) = SmallFs::mount("8M") else {
        return;
    };
    let (env, pw) = setup(16);
    let k = ["-k", "alice", "--passphrase-file", pw.as_str()];
    let t = fs.path("t");
    let mut args = vec!["backup", "src", t.as_str()];
    args.extend_from_slice(&k);
    let out = env.run(&args);
    assert_clean_failure(&out, 1, "No space left on device");
    assert!(text(&out.stderr).contains("free space"));
    env.expect(6, &["check", &t]);

    // A restore into it.
    env.ok(&[
        "backup", "src", "--stream", "s.evfs", k[0], k[1], k[2], k[3],
    ]);
    std::fs::remove_file(&t).unwrap();
    let out = env.run(&["restore", "s.evfs", &t]);
    assert_clean_failure(&out, 1, "No space left on device");
    env.expect(6, &["check", &t]);

    // A stream file: no partial stream is left to be mistaken for one.
    std::fs::remove_file(&t).unwrap();
    let s = fs.path("s.evfs");
    let out = env.run(&["backup", "src", "--stream", &s, k[0], k[1], k[2], k[3]]);
    assert_clean_failure(&out, 1, "No space left on device");
    assert_eq!(std::fs::read_dir(fs.dir.path()).unwrap().count(), 0);
}

/// A backup whose reader goes away did not complete: exit 1. `cat` (and
/// `hash`) only feed a reader, and a reader that stops is not an error for
/// them (case 19): exit 0, no message, as `cat(1)` and ripgrep do.
#[test]
fn a_closed_stdout_is_a_broken_pipe_with_exit_1() {
    let (env, pw) = setup(8);
    let out = env.bash(&format!(
        "$EVFS cat src -k alice --passphrase-file {pw} 2>err | head -c 64 >/dev/null; echo \"${{PIPESTATUS[0]}}\""
    ));
    let err = std::fs::read_to_string(env.path("err")).unwrap();
    assert_eq!(text(&out.stdout).trim(), "0", "cat: {err}");
    assert!(err.is_empty(), "cat: {err}");
    for cmd in [
        format!("$EVFS backup src - -k alice --passphrase-file {pw}"),
        format!("$EVFS backup src - --cleartext -k alice --passphrase-file {pw}"),
    ] {
        let out = env.bash(&format!(
            "{cmd} 2>err | head -c 1000 >/dev/null; echo \"${{PIPESTATUS[0]}}\""
        ));
        let err = std::fs::read_to_string(env.path("err")).unwrap();
        assert_eq!(text(&out.stdout).trim(), "1", "{cmd}: {err}");
        assert!(err.contains("broken pipe"), "{cmd}: {err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
}

#[test]
fn a_source_that_ends_early_or_shrinks_fails_with_exit_1() {
    let (env, pw) = setup(16);
    // A volume on stdin that ends half-way: the target stays dirty.
    let src = std::fs::read(env.path("src")).unwrap();
    let mut child = evfs(
        &env,
        &["backup", "-", "t", "-k", "alice", "--passphrase-file", &pw],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&src[..9 << 20]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_clean_failure(&out, 1, "truncated");
    env.expect(6, &["check", "t"]);

    // A mapped file cut short while it is read: the backup waits on a full
    // pipe until the file was truncated, then meets the missing pages.
    std::fs::write(env.path("big"), crate::common::mixed_data(64 << 20, 9)).unwrap();
    let out = env.bash("$EVFS backup big - --owner alice 2>err | { head -c 1 >/dev/null; truncate -s 1M big; cat >/dev/null; }; echo \"${PIPESTATUS[0]}\"",
    );
    let err = std::fs::read_to_string(env.path("err")).unwrap();
    assert_eq!(text(&out.stdout).trim(), "1", "{err}");
    assert!(
        err.contains("could not be read") || err.contains("shrank"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // A volume cut short before it is opened: refused, exit 5.
    std::fs::copy(env.path("src"), env.path("short")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(env.path("short"))
        .unwrap();
    f.set_len(8 << 20).unwrap();
    for args in [
        vec![
            "backup",
            "short",
            "u",
            "-k",
            "alice",
            "--passphrase-file",
            &pw,
        ],
        vec!["backup", "short", "u", "--raw"],
        vec!["hash", "short", "-k", "alice", "--passphrase-file", &pw],
    ] {
        let out = env.run(&args);
        assert_clean_failure(&out, 5, "runs past the end");
    }
}

#[test]
fn short_reads_from_a_slow_pipe_and_signals_during_writes_lose_nothing() {
    let (env, pw) = setup(16);
    let data = crate::common::mixed_data(5 * 1048576 + 777, 4);
    // Plain data trickling in through a pipe in odd pieces.
    let mut child = evfs(
        &env,
        &[
            "backup",
            "-",
            "trickled",
            "--owner",
            "alice",
            "--passphrase-file",
            "alice.pw",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for piece in data.chunks(65_537) {
        stdin.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let mut args = vec!["verify", "trickled", "--against", "data.part"];
    std::fs::write(env.path("data.part"), &data).unwrap();
    args.extend_from_slice(&["-k", "alice", "--passphrase-file", &pw]);
    env.ok(&args);

    // A stream written into a pipe read slowly, with SIGUSR1 (dd-style
    // statistics) interrupting its blocked writes again and again.
    let mut child = evfs(
        &env,
        &[
            "backup",
            "src",
            "-",
            "-k",
            "alice",
            "--passphrase-file",
            &pw,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = received.clone();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{e}"),
            }
            seen.store(all.len(), std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    // Signal only once data flows: the handler is in place from then on.
    while received.load(std::sync::atomic::Ordering::Relaxed) < 2 << 20 && !reader.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < Duration::from_secs(60) {
        // SAFETY: sending a signal to our own child process by its pid.
        unsafe {
            libc::kill(pid, libc::SIGUSR1);
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let stream = reader.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(env.path("s.evfs"), stream).unwrap();
    env.ok(&[
        "verify",
        "s.evfs",
        "-k",
        "alice",
        "--passphrase-file",
        &pw,
        "--against",
        "src",
    ]);
}

// ---------------------------------------------------------- hostile input

/// Limit the child's address space, so that an input that made it
/// allocate without bound fails the test instead of the machine.
fn bounded(c: &mut Command) -> &mut Command {
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Restore `stream` into a new target with bounded memory: exit 5, no
/// panic, and the target (if any) is never clean.
fn restore_must_fail(env: &Env, stream: &[u8], case: &str) {
    std::fs::write(env.path("bad.evfs"), stream).unwrap();
    let _ = std::fs::remove_file(env.path("r"));
    let out = bounded(&mut evfs(env, &["restore", "bad.evfs", "r"]))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{case}: {err}");
    assert!(!err.contains("panicked"), "{case}: {err}");
    if env.path("r").exists() {
        let check = env.run(&["check", "r"]);
        assert_ne!(check.status.code(), Some(0), "{case}: the target is clean");
    }
}

/// A valid stream of a 4 MiB volume (four 1 MiB frames) and where its frames start.
fn valid_stream(env: &Env, pw: &str) -> (Vec<u8>, Vec<usize>) {
    let bytes = std::fs::read(env.path("s4.evfs")).unwrap_or_else(|_| {
        env.ok(&[
            "create",
            "v4",
            "--owner",
            "alice",
            "--passphrase-file",
            "alice.pw",
            "--size",
            "6M",
        ]);
        env.ok(&[
            "backup",
            "v4",
            "--stream",
            "s4.evfs",
            "-k",
            "alice",
            "--passphrase-file",
            pw,
        ]);
        std::fs::read(env.path("s4.evfs")).unwrap()
    });
    let header = 64 + EMD_SIZE + 32;
    let frame = 32 + (1 << 20) + 32;
    let starts = (0..4).map(|i| header + i * frame).collect();
    (bytes, starts)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn damaged_streams_never_restore_clean(
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        swap in (0usize..4, 0usize..4),
        noise in proptest::collection::vec(any::<u8>(), 0..70_000),
    ) {
        let env = Env::new();
        let pw = env.gen_key("alice");
        let (good, starts) = valid_stream(&env, &pw);
        env.ok(&["restore", "s4.evfs", "ok"]);

        let mut truncated = good.clone();
        truncated.truncate(cut.index(good.len()));
        restore_must_fail(&env, &truncated, "truncated");

        let mut flipped = good.clone();
        let at = flip.index(good.len());
        flipped[at] ^= 1 << bit;
        restore_must_fail(&env, &flipped, &format!("bit {bit} of byte {at} flipped"));

        let (a, b) = swap;
        if a != b {
            let frame = starts[1] - starts[0];
            let mut swapped = good.clone();
            let fa = good[starts[a]..starts[a] + frame].to_vec();
            let fb = good[starts[b]..starts[b] + frame].to_vec();
            swapped[starts[a]..starts[a] + frame].copy_from_slice(&fb);
            swapped[starts[b]..starts[b] + frame].copy_from_slice(&fa);
            restore_must_fail(&env, &swapped, &format!("frames {a} and {b} swapped"));
        }

        let mut random = b"EVFS-STR".to_vec();
        random.extend_from_slice(&noise);
        restore_must_fail(&env, &random, "random bytes after the magic");
        let mut spliced = good[..starts[1]].to_vec();
        spliced.extend_from_slice(&noise);
        restore_must_fail(&env, &spliced, "random bytes after a frame");
    }
}

/// Write `e` over both copies of the volume at `path`, checksums fixed up as
/// an attacker would (the MAC stays as it was).
fn forge(path: &Path, mutate: impl Fn(&mut Emd)) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut e = Emd::parse(&bytes[..EMD_SIZE]).unwrap();
    mutate(&mut e);
    let enc = e.encode();
    let backup = (bytes.len() & !4095) - EMD_SIZE;
    bytes[..EMD_SIZE].copy_from_slice(&enc[..]);
    bytes[backup..backup + EMD_SIZE].copy_from_slice(&enc[..]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn hostile_emds_and_absurd_fields_exit_5_without_panic() {
    let (env, pw) = setup(4);
    let good = std::fs::read(env.path("src")).unwrap();
    // Random bytes behind the EMD magic: no valid EMD.
    let mut junk = good.clone();
    junk[8..EMD_SIZE]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 131 % 251) as u8);
    let backup = (junk.len() & !4095) - EMD_SIZE;
    junk[backup..backup + EMD_SIZE].fill(0x5a);
    std::fs::write(env.path("junk"), &junk).unwrap();
    for args in [
        vec!["info", "junk"],
        vec!["check", "junk"],
        vec!["verify", "junk"],
        vec!["backup", "junk", "x", "--raw"],
        vec!["hash", "junk", "-k", "alice", "--passphrase-file", &pw],
    ] {
        let out = bounded(&mut evfs(&env, &args)).output().unwrap();
        assert_clean_failure(&out, 5, "damaged");
    }
    // Absurd geometry and counts with the checksums fixed up.
    for (name, mutate) in [
        (
            "huge data area",
            Box::new(|e: &mut Emd| e.data_size = 1 << 61) as Box<dyn Fn(&mut Emd)>,
        ),
        (
            "data past the end",
            Box::new(|e: &mut Emd| e.data_offset = 1 << 40),
        ),
    ] {
        std::fs::write(env.path("evil"), &good).unwrap();
        forge(&env.path("evil"), mutate);
        for args in [
            vec!["backup", "evil", "x", "--raw"],
            vec![
                "backup",
                "evil",
                "x",
                "-k",
                "alice",
                "--passphrase-file",
                &pw,
            ],
            vec!["hash", "evil", "-k", "alice", "--passphrase-file", &pw],
            vec!["verify", "evil", "-k", "alice", "--passphrase-file", &pw],
        ] {
            let out = bounded(&mut evfs(&env, &args)).output().unwrap();
            let err = text(&out.stderr);
            assert!(!err.contains("panicked"), "{name}: {args:?}: {err}");
            assert!(
                matches!(out.status.code(), Some(3 | 5)),
                "{name}: {args:?} exited {:?}: {err}",
                out.status.code()
            );
            assert!(!env.path("x").exists() || env.run(&["check", "x"]).status.code() != Some(0));
        }
    }
    // A target whose checkpoint claims 2^64 bytes: a resume is refused.
    std::fs::write(env.path("evil"), &good).unwrap();
    forge(&env.path("evil"), |e| {
        e.dirty = true;
        e.checkpoint = Some(evfs::emd::Checkpoint {
            task: evfs::emd::Task::Backup,
            run_id: [1; 16],
            source_uuid: e.uuid,
            bytes_done: u64::MAX,
            total: u64::MAX,
            source_generation: e.generation,
        });
    });
    let out = env.run(&[
        "backup",
        "src",
        "evil",
        "--resume",
        "-k",
        "alice",
        "--passphrase-file",
        &pw,
    ]);
    assert_clean_failure(&out, 3, "bytes");
    env.expect(6, &["check", "evil"]);
}

#[test]
fn tampered_emds_are_refused_at_unlock_by_backup_verify_and_hash() {
    let (env, pw) = setup(4);
    env.gen_key("bob");
    env.ok(&[
        "user",
        "add",
        "src",
        "bob",
        "-k",
        "alice",
        "--passphrase-file",
        &pw,
    ]);
    env.ok(&["disable", "src", "-k", "alice", "--passphrase-file", &pw]);
    let disabled = std::fs::read(env.path("src")).unwrap();
    env.ok(&["enable", "src", "-k", "alice", "--passphrase-file", &pw]);
    let good = std::fs::read(env.path("src")).unwrap();
    for (name, mutate) in [
        // Enabling a disabled volume behind the owner's back.
        (
            "state",
            Box::new(|e: &mut Emd| e.state = State::Enabled) as Box<dyn Fn(&mut Emd)>,
        ),
        (
            "the owner",
            Box::new(|e: &mut Emd| {
                e.slots[0].role = Role::User;
                e.slots[1].role = Role::Owner;
            }),
        ),
        (
            "a slot's public key",
            Box::new(|e: &mut Emd| e.slots[0].public[3] ^= 1),
        ),
        ("geometry", Box::new(|e: &mut Emd| e.data_size += 1 << 20)),
        ("label", Box::new(|e: &mut Emd| e.label = "evil".into())),
    ] {
        let base = if name == "state" { &disabled } else { &good };
        std::fs::write(env.path("src"), base).unwrap();
        forge(&env.path("src"), mutate);
        for args in [
            vec![
                "backup",
                "src",
                "copy",
                "-k",
                "alice",
                "--passphrase-file",
                &pw,
            ],
            vec![
                "backup",
                "src",
                "-",
                "-k",
                "alice",
                "--passphrase-file",
                &pw,
            ],
            vec!["verify", "src", "-k", "alice", "--passphrase-file", &pw],
            vec!["hash", "src", "-k", "alice", "--passphrase-file", &pw],
        ] {
            let out = env.run(&args);
            let err = text(&out.stderr);
            // A changed public key no longer matches the keystore's: exit 4.
            let code = if name == "a slot's public key" { 4 } else { 5 };
            assert_eq!(out.status.code(), Some(code), "{name}: {args:?}: {err}");
            assert!(code == 4 || err.contains("MAC"), "{name}: {err}");
            assert!(
                out.stdout.is_empty() || args[0] == "verify",
                "{name}: data was written"
            );
            assert!(!env.path("copy").exists(), "{name}: a copy was made");
        }
    }
}

// ---------------------------------------------------------------- secrets

/// The hex (both cases) and raw bytes that must never appear in output.
fn secrets_of(env: &Env, pass: &str, vols: &[&str]) -> Vec<Vec<u8>> {
    let ks = evfs::keys::Keystore::at(&env.keystore());
    let id = evfs::keys::KeyId::parse("alice").unwrap();
    let pk = ks
        .unlock(
            &id,
            &evfs::crypto::Passphrase::new(pass.as_bytes().to_vec()),
        )
        .unwrap();
    let mut out = vec![pass.as_bytes().to_vec()];
    let mut add = |bytes: &[u8]| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        out.push(hex.clone().into_bytes());
        out.push(hex.to_uppercase().into_bytes());
        // Half keys too: an XTS key is two AES keys.
        out.push(hex[..hex.len() / 2].to_string().into_bytes());
        out.push(hex[hex.len() / 2..].to_string().into_bytes());
    };
    add(pk.secret().as_bytes());
    for vol in vols {
        let dev = Device::open_read(&env.path(vol)).unwrap();
        let copies = evfs::volume::metadata::read(&dev).unwrap();
        let emd = copies.current().unwrap();
        let unlocked =
            evfs::volume::unlock_emd(emd, &env.path(vol), &pk, &[Role::Owner, Role::User], "test")
                .unwrap();
        add(unlocked.key.expose());
        add(unlocked.key.emd_mac_key().expose());
        add(unlocked.key.stream_mac_key().expose());
    }
    out
}

#[test]
fn no_key_or_passphrase_appears_in_any_output_even_verbose() {
    let env = Env::new();
    let pass = "correct horse battery staple 7781";
    std::fs::write(env.path("pw"), format!("{pass}\n")).unwrap();
    let k = ["-k", "alice", "--passphrase-file", "pw"];
    env.ok(&[
        "-v",
        "key",
        "gen",
        "alice",
        "--passphrase-file",
        "pw",
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    std::fs::write(env.path("data"), crate::common::mixed_data(3 << 20, 1)).unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "-v",
            "backup",
            "data",
            "src",
            "--owner",
            "alice",
            "--passphrase-file",
            "pw",
            "--progress",
        ],
        vec![
            "-vv",
            "backup",
            "src",
            "copy",
            k[0],
            k[1],
            k[2],
            k[3],
            "--progress",
            "--json",
        ],
        vec![
            "-vv",
            "backup",
            "src",
            "--stream",
            "s.evfs",
            k[0],
            k[1],
            k[2],
            k[3],
            "--compress",
        ],
        vec![
            "-vv",
            "backup",
            "src",
            "copy",
            k[0],
            k[1],
            k[2],
            k[3],
            "--same-key",
        ],
        vec![
            "-vv", "restore", "s.evfs", "restored", k[0], k[1], k[2], k[3], "--json",
        ],
        vec![
            "-vv",
            "verify",
            "copy",
            k[0],
            k[1],
            k[2],
            k[3],
            "--against",
            "src",
            "--json",
        ],
        vec!["-vv", "verify", "s.evfs", k[0], k[1], k[2], k[3]],
        vec!["-vv", "info", "copy", "--json"],
        vec!["-vv", "info", "restored"],
        vec!["-vv", "check", "copy"],
        vec!["-vv", "hash", "restored", k[0], k[1], k[2], k[3]],
        vec!["-vv", "key", "list", "--json"],
        vec![
            "-vv",
            "key",
            "store-passphrase",
            "alice",
            "--passphrase-file",
            "pw",
        ],
        vec!["-vv", "backup", "src", "copy2", "-k", "alice"],
        vec!["-vv", "enable", "copy2", "-k", "alice"],
    ];
    let mut all = Vec::new();
    for args in &runs {
        let out = env.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        all.push((args.clone(), out));
    }
    // A failing unlock, verbose, says why without the secret either.
    std::fs::write(env.path("wrong.pw"), format!("{pass}x\n")).unwrap();
    let wrong = env.run(&[
        "-vv",
        "disable",
        "copy",
        "-k",
        "alice",
        "--passphrase-file",
        "wrong.pw",
    ]);
    assert_eq!(wrong.status.code(), Some(4));
    all.push((vec!["disable (wrong passphrase)"], wrong));
    let secrets = secrets_of(&env, pass, &["src", "copy", "restored", "copy2"]);
    // The passphrase, then 4 forms of the private key and of 3 keys per volume.
    assert_eq!(secrets.len(), 1 + 4 + 4 * 3 * 4);
    // The search finds a key where one is printed.
    assert!(contains(
        format!("key {}", text(&secrets[5])).as_bytes(),
        &secrets[5]
    ));
    for (args, out) in &all {
        for s in &secrets {
            assert!(
                !contains(&out.stdout, s) && !contains(&out.stderr, s),
                "{args:?} printed a secret ({} bytes)",
                s.len()
            );
        }
    }
}

/// Read a `/proc/PID/limits` line of a running process.
fn core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .to_string()
}

#[test]
fn a_process_with_keys_loaded_dumps_no_core() {
    let (env, pw) = setup(8);
    // The backup blocks on a pipe nobody reads: keys loaded, still running.
    let mut child = evfs(
        &env,
        &[
            "backup",
            "src",
            "-",
            "-k",
            "alice",
            "--passphrase-file",
            &pw,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut first = [0u8; 8];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"EVFS-STR");
    let line = core_limit(child.id());
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_passphrase_prompt_does_not_echo() {
    let python = Command::new("python3").arg("--version").output();
    if !python.is_ok_and(|o| o.status.success()) {
        crate::common::tools::unavailable(
            "the_passphrase_prompt_does_not_echo",
            "python3 (for its pty module) is not installed",
        );
        return;
    }
    let env = Env::new();
    let secret = "typed secret 4417";
    std::fs::write(env.path("bob.pw"), format!("{secret}\n")).unwrap();
    env.ok(&[
        "key",
        "gen",
        "bob",
        "--passphrase-file",
        "bob.pw",
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    env.ok(&[
        "create",
        "vol",
        "--owner",
        "bob",
        "--passphrase-file",
        "bob.pw",
        "--size",
        "4M",
    ]);
    let script = r#"
import os, pty, sys
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b""
while b"Passphrase" not in out:
    chunk = os.read(fd, 1024)
    if not chunk:
        break
    out += chunk
os.write(fd, os.environ["SECRET"].encode() + b"\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(crate::common::bin())
        .arg("--keystore")
        .arg(env.keystore())
        .args(["hash", "vol", "-k", "bob"])
        .env("SECRET", secret)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}{}", text(&out.stderr));
    assert!(screen.contains("Passphrase for key bob.bob: "), "{screen}");
    assert!(
        !screen.contains(secret),
        "the passphrase was echoed: {screen}"
    );
    assert!(
        screen.contains("  vol"),
        "the hash was not printed: {screen}"
    );
}

// ------------------------------------------------------------ concurrency

/// Start `backup - held --owner alice` reading from a pipe this test holds
/// open: the target stays locked until the pipe is closed.
fn hold_target(env: &Env) -> (Child, std::process::ChildStdin) {
    let mut child = evfs(
        env,
        &[
            "backup",
            "-",
            "held",
            "--owner",
            "alice",
            "--passphrase-file",
            "alice.pw",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&crate::common::mixed_data(3 << 20, 8))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let begun = Device::open_read(&env.path("held"))
            .ok()
            .and_then(|d| evfs::volume::metadata::read(&d).ok())
            .is_some_and(|c| c.current().is_some_and(|e| e.dirty));
        if begun {
            break;
        }
        assert!(Instant::now() < deadline, "the first backup did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, stdin)
}

#[test]
fn a_second_writer_is_refused_while_the_first_runs_and_named() {
    let (env, pw) = setup(4);
    env.ok(&[
        "backup",
        "src",
        "--stream",
        "s.evfs",
        "-k",
        "alice",
        "--passphrase-file",
        &pw,
    ]);
    let (mut first, stdin) = hold_target(&env);
    let holder = format!("in use by process {}", first.id());
    for args in [
        vec![
            "backup",
            "src",
            "held",
            "-k",
            "alice",
            "--passphrase-file",
            &pw,
        ],
        vec![
            "backup",
            "src",
            "held",
            "-k",
            "alice",
            "--passphrase-file",
            &pw,
            "--force",
        ],
        vec!["backup", "src", "held", "--raw", "--force"],
        vec!["restore", "s.evfs", "held", "--force"],
        // Read while it is written: not as a backup source either.
        vec!["backup", "held", "other", "--raw"],
    ] {
        let t = Instant::now();
        let out = env.run(&args);
        assert_clean_failure(&out, 1, &holder);
        assert!(
            text(&out.stderr).contains("evfs"),
            "the holder's command line is named"
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{args:?} waited for the lock"
        );
    }
    drop(stdin);
    assert!(first.wait().unwrap().success());
    // Once the first is done, the target is free again.
    env.ok(&[
        "backup",
        "src",
        "held",
        "-k",
        "alice",
        "--passphrase-file",
        &pw,
        "--force",
    ]);
}

/// A standard error whose reader has gone (`evfs … 2>&1 | true`) does not
/// turn the exit status into a panic's (101): the command ends as it would
/// have, its messages lost.
#[test]
fn a_closed_standard_error_keeps_the_exit_status() {
    let (env, pa) = setup(2);
    for (args, code) in [
        (vec!["info", "nothere.vol"], 1),
        (
            vec![
                "backup",
                "src",
                "copy.vol",
                "-k",
                "alice",
                "--passphrase-file",
                &pa,
            ],
            0,
        ),
        (vec!["restore", "nothere.evfs", "r.vol"], 1),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .process(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(writer)
            .status()
            .unwrap();
        assert_eq!(out.code(), Some(code), "{args:?}");
    }
}
