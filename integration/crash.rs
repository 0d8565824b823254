//! Crash safety, tested by killing: `backup` (into a new volume and into an
//! existing one of the same lineage) and `restore` are killed with SIGKILL
//! at points spread over their run. After each kill the target is either
//! dirty (`check` exits 6), or not begun (no EMD yet, all zeros), or complete
//! (`verify -k --against SRC` passes): never clean and wrong. The source is
//! byte for byte what it was.
//!
//! And `--resume`: a backup killed after a checkpoint continues from it and
//! ends with the digest of an uninterrupted run; without a target or onto a
//! finished one it is a full backup; onto a target of another source, or
//! from a source written to since, it is refused (exit 3).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::Env;
use evfs::emd::Emd;
use evfs::volume::Device;

/// Data area of the source: big enough that a release build takes a
/// noticeable fraction of a second, small enough for CI.
const DATA_MIB: usize = 256;
/// Kill points per command.
const KILLS: u32 = 11;

/// An environment on tmpfs when there is one (fast, and a kill never loses
/// written data there either: what is tested is the order of the writes).
fn env() -> Env {
    Env::on_tmpfs()
}

struct Fixture {
    env: Env,
    pw: String,
}

impl Fixture {
    /// A key and a source volume `src` of `mib` MiB of mixed data.
    fn new(mib: usize) -> Fixture {
        let env = env();
        let pw = env.gen_key("alice");
        env.volume_from_data("data", "src", "alice", mib << 20, 5);
        std::fs::remove_file(env.path("data")).unwrap();
        Fixture { env, pw }
    }

    /// `evfs --keystore KS ARGS` as a child process, output discarded.
    fn spawn(&self, args: &[&str]) -> Child {
        self.env
            .process(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn evfs")
    }

    fn key_args(&self) -> [&str; 4] {
        ["-k", "alice", "--passphrase-file", &self.pw]
    }

    /// Run `args` to the end three times and return the shortest time it
    /// took (warm caches: kills spread over it land inside later runs).
    fn timed(&self, args: &[&str]) -> Duration {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                self.env.ok(args);
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    }

    /// `backup --json`, parsed.
    fn backup_json(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["backup"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&self.key_args());
        args.push("--json");
        serde_json::from_str(&self.env.ok(&args)).expect("backup --json is JSON")
    }
}

/// What a killed run left.
#[derive(Debug, Default)]
struct Tally {
    not_begun: u32,
    dirty: u32,
    complete: u32,
}

/// Check what a kill left in `target`: never a clean volume with wrong data.
fn judge(f: &Fixture, target: &str, may_be_absent: bool, tally: &mut Tally) {
    let path = f.env.path(target);
    let has_magic = path.exists()
        && evfs::volume::metadata::read(&Device::open_read(&path).unwrap())
            .unwrap()
            .any_magic();
    if !has_magic {
        assert!(may_be_absent, "{target} lost its EMD");
        // Killed before its first EMD: the data area must not have been touched.
        if path.exists() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                bytes.iter().all(|&b| b == 0),
                "{target} has data but no EMD"
            );
        }
        tally.not_begun += 1;
        return;
    }
    let check = f.env.run(&["check", target]);
    match check.status.code() {
        Some(6) => {
            tally.dirty += 1;
            return;
        }
        Some(0) => {}
        Some(5) => {
            // Killed between the two copies of the final EMD: the newer copy
            // (clean) is in force, the other is stale; `check -r` repairs it.
            let info = f.env.info(target);
            assert_eq!(info["dirty"], false, "{info}");
            f.env.ok(&["check", "-r", target]);
        }
        other => panic!(
            "check {target} exited {other:?}: {}",
            String::from_utf8_lossy(&check.stderr)
        ),
    }
    let mut args = vec!["verify", target, "--against", "src"];
    args.extend_from_slice(&f.key_args());
    let out = f.env.run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{target} is clean but does not verify against the source: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    tally.complete += 1;
}

/// Kill `args` at `KILLS` points spread over `reference` (the time an
/// uninterrupted run takes) and judge the target after each.
fn kill_spread(
    f: &Fixture,
    args: &[&str],
    target: &str,
    reference: Duration,
    fresh: bool,
) -> Tally {
    let mut tally = Tally::default();
    for i in 0..KILLS {
        if fresh {
            let _ = std::fs::remove_file(f.env.path(target));
        }
        // From the start to a little past the end of a typical run.
        let delay = reference.mul_f64(1.1 * f64::from(i) / f64::from(KILLS - 1));
        let mut child = f.spawn(args);
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none_or(|c| c == 0),
            "{args:?} failed by itself: {status}"
        );
        judge(f, target, fresh, &mut tally);
    }
    eprintln!("{args:?}: {tally:?} over {KILLS} kills in {reference:?}");
    tally
}

fn file_hash(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}

#[test]
fn killed_backups_and_restores_leave_a_dirty_or_a_complete_target_and_the_source_intact() {
    let f = Fixture::new(DATA_MIB);
    let before = file_hash(&f.env.path("src"));
    let k = f.key_args();

    // Into a new volume.
    let new_args = ["backup", "src", "new", k[0], k[1], k[2], k[3]];
    let reference = f.timed(&new_args);
    std::fs::remove_file(f.env.path("new")).unwrap();
    let t = kill_spread(&f, &new_args, "new", reference, true);
    assert!(t.dirty > 0, "no kill landed inside a backup: {t:?}");

    // Into an existing volume of the same lineage, again and again; each run
    // starts from what the killed one before it left.
    let same_args = ["backup", "src", "same", k[0], k[1], k[2], k[3]];
    let reference = f.timed(&same_args);
    let t = kill_spread(&f, &same_args, "same", reference, false);
    assert!(t.dirty > 0, "no kill landed inside a refresh: {t:?}");
    assert_eq!(t.not_begun, 0);

    // A stream restored into a new volume.
    f.env.ok(&[
        "backup", "src", "--stream", "s.evfs", k[0], k[1], k[2], k[3],
    ]);
    let restore_args = ["restore", "s.evfs", "restored"];
    let reference = f.timed(&restore_args);
    std::fs::remove_file(f.env.path("restored")).unwrap();
    let t = kill_spread(&f, &restore_args, "restored", reference, true);
    assert!(t.dirty > 0, "no kill landed inside a restore: {t:?}");

    assert_eq!(file_hash(&f.env.path("src")), before, "the source changed");
}

/// The checkpoint in force on `path`, if any: (bytes done, total).
fn checkpoint(path: &Path) -> Option<(u64, u64)> {
    let dev = Device::open_read(path).ok()?;
    let copies = evfs::volume::metadata::read(&dev).ok()?;
    let e: &Emd = copies.current()?;
    e.checkpoint.as_ref().map(|c| (c.bytes_done, c.total))
}

/// Start `backup - TARGET` reading the source volume from a pipe, feed it
/// the metadata and the first `feed` bytes of data, wait until the target's
/// checkpoint covers at least `want` bytes, and kill it there: an
/// interruption at a known point, whatever the machine's speed.
fn interrupt_at(f: &Fixture, target: &str, feed: usize, want: u64) -> u64 {
    let src = std::fs::read(f.env.path("src")).unwrap();
    let data_offset = 1 << 20;
    let mut child = f
        .env
        .process(&[
            "backup",
            "-",
            target,
            "-k",
            "alice",
            "--passphrase-file",
            &f.pw,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&src[..data_offset + feed]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        if let Some((done, _)) = checkpoint(&f.env.path(target))
            && done >= want
        {
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of {want} bytes came"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    done
}

#[test]
fn resume_continues_from_the_checkpoint_with_the_digest_of_a_full_run() {
    let f = Fixture::new(64);
    let full = f.backup_json(&["src", "full"]);
    let digest = full["plaintext_blake3"].as_str().unwrap().to_string();
    assert_eq!(full["resumed_at"], serde_json::Value::Null);

    // A checkpoint comes every 16 MiB of a 64 MiB volume; 40 MiB are fed.
    let done = interrupt_at(&f, "t", 40 << 20, 32 << 20);
    assert_eq!(done, 32 << 20);
    f.env.expect(6, &["check", "t"]);
    let before = std::fs::read(f.env.path("t")).unwrap();

    // Not onto a target of another source: exit 3, and the target untouched.
    f.env.ok(&[
        "create",
        "other",
        "--owner",
        "alice",
        "--passphrase-file",
        "alice.pw",
        "--size",
        "66M",
    ]);
    let mut args = vec!["backup", "other", "t", "--resume"];
    args.extend_from_slice(&f.key_args());
    let (_, err) = f.env.expect(3, &args);
    assert!(err.contains("another source"), "{err}");
    assert!(std::fs::read(f.env.path("t")).unwrap() == before);

    let r = f.backup_json(&["src", "t", "--resume"]);
    assert_eq!(r["resumed_at"], 32 << 20);
    assert_eq!(r["bytes"], 64 << 20);
    assert_eq!(r["plaintext_blake3"].as_str().unwrap(), digest);
    let mut args = vec!["verify", "t", "--against", "src"];
    args.extend_from_slice(&f.key_args());
    f.env.ok(&args);
    assert_eq!(f.env.info("t")["provenance"]["plaintext_blake3"], digest);

    // A finished target, or none: a full backup.
    let again = f.backup_json(&["src", "t", "--resume"]);
    assert_eq!(again["resumed_at"], serde_json::Value::Null);
    assert_eq!(again["plaintext_blake3"].as_str().unwrap(), digest);
    let fresh = f.backup_json(&["src", "none-yet", "--resume"]);
    assert_eq!(fresh["resumed_at"], serde_json::Value::Null);
    assert_eq!(fresh["plaintext_blake3"].as_str().unwrap(), digest);
}

#[test]
fn resume_refuses_a_source_written_to_since_and_a_run_of_another_kind() {
    let f = Fixture::new(64);
    interrupt_at(&f, "t", 24 << 20, 16 << 20);
    // The interrupted run re-encrypted: --raw would continue it as a raw clone.
    let (_, err) = f
        .env
        .expect(3, &["backup", "src", "t", "--resume", "--raw"]);
    assert!(err.contains("not a raw clone"), "{err}");
    f.env
        .ok(&["disable", "src", "-k", "alice", "--passphrase-file", &f.pw]);
    f.env
        .ok(&["enable", "src", "-k", "alice", "--passphrase-file", &f.pw]);
    // The source's generation moved twice: what was copied may not match it.
    let mut args = vec!["backup", "src", "t", "--resume"];
    args.extend_from_slice(&f.key_args());
    let (_, err) = f.env.expect(3, &args);
    assert!(err.contains("source changed"), "{err}");
    // Without --resume, the interrupted target of this source is refreshed
    // in full, no --force needed.
    let mut args = vec!["backup", "src", "t"];
    args.extend_from_slice(&f.key_args());
    f.env.ok(&args);
    f.env.ok(&["check", "t"]);
}

#[test]
fn resume_into_a_volume_with_its_own_key() {
    let f = Fixture::new(64);
    f.env.gen_key("bob");
    let pb = f.env.path("bob.pw").display().to_string();
    f.env.ok(&[
        "create",
        "vol",
        "--owner",
        "bob",
        "--passphrase-file",
        "bob.pw",
        "--size",
        "66M",
    ]);
    let into = |extra: &[&str]| {
        let mut args = vec![
            "backup",
            "src",
            "vol",
            "-k",
            "alice",
            "--passphrase-file",
            &f.pw,
            "--target-key",
            "bob",
            "--target-passphrase-file",
            &pb,
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str::<serde_json::Value>(&f.env.ok(&args)).unwrap()
    };
    let full = into(&[]);
    // Interrupt a run into it: feed the source through stdin.
    let src = std::fs::read(f.env.path("src")).unwrap();
    let mut child = f
        .env
        .process(&[
            "backup",
            "-",
            "vol",
            "-k",
            "alice",
            "--passphrase-file",
            &f.pw,
            "--target-key",
            "bob",
            "--target-passphrase-file",
            &pb,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&src[..(1 << 20) + (20 << 20)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&f.env.path("vol")).is_none_or(|(d, _)| d < 16 << 20) {
        assert!(Instant::now() < deadline, "no checkpoint came");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    f.env.expect(6, &["check", "vol"]);
    let r = into(&["--resume"]);
    assert_eq!(r["resumed_at"], 16 << 20);
    assert_eq!(r["plaintext_blake3"], full["plaintext_blake3"]);
    f.env
        .ok(&["verify", "vol", "-k", "bob", "--passphrase-file", &pb]);
}

#[test]
fn repeated_kills_and_resumes_end_in_the_copy_of_a_full_run() {
    let f = Fixture::new(DATA_MIB);
    let digest = f.backup_json(&["src", "full"])["plaintext_blake3"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(f.env.path("full")).unwrap();
    let k = f.key_args();
    let args = ["backup", "src", "t", "--resume", k[0], k[1], k[2], k[3]];
    let reference = f.timed(&["backup", "src", "full", k[0], k[1], k[2], k[3]]);
    // Each run is killed a little later than the one before; every run
    // continues from where the killed one before it had synced.
    let mut progress = Vec::new();
    let mut finished = false;
    for i in 1..=40u32 {
        let mut child = f.spawn(&args);
        std::thread::sleep(reference.mul_f64(f64::from(i) / 8.0));
        let _ = child.kill();
        if child.wait().unwrap().success() {
            finished = true;
            break;
        }
        f.env.expect(6, &["check", "t"]);
        progress.push(checkpoint(&f.env.path("t")).map_or(0, |(done, _)| done));
    }
    eprintln!("checkpoints after each kill: {progress:?}");
    assert!(
        progress.iter().any(|&done| done > 0),
        "no kill came after a checkpoint: nothing was resumed"
    );
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "a resumed run went backwards: {progress:?}"
    );
    if !finished {
        f.env.ok(&args);
    }
    assert_eq!(
        f.env.info("t")["provenance"]["plaintext_blake3"],
        digest.as_str()
    );
    let mut verify = vec!["verify", "t", "--against", "src"];
    verify.extend_from_slice(&k);
    f.env.ok(&verify);
}
