//! Identity by storage, locks on storage, and no hangs or leftovers: two
//! names of one storage (a loop device over a file, a partition of it,
//! standard input or output redirected onto it) are one volume; locks and
//! exclusive opens follow the storage; a FIFO or character device where a
//! volume is needed is refused at once; a killed or failed run leaves no
//! file behind.
//!
//! Every refusal must leave the source and the target as they were: each
//! test hashes them before and after.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::tools::{Loop, Mapped, SmallFs, write_mbr};
use crate::common::{Env, b3};

const MIB: u64 = 1 << 20;

/// A keystore with alice.k1 and bob.k1, and `vol.img`: a volume of 4 MiB
/// of data. Returns the environment and alice's passphrase file.
fn setup() -> (Env, String) {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    env.gen_key("bob.k1");
    env.volume_from_data("data.raw", "vol.img", "alice.k1", 4 << 20, 11);
    (env, pa)
}

/// `-k alice.k1 --passphrase-file PA`.
fn key(pa: &str) -> [&str; 4] {
    ["-k", "alice.k1", "--passphrase-file", pa]
}

/// The BLAKE3 of each file (or device), to show that nothing was written.
fn hashes(env: &Env, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            let p = if n.starts_with('/') {
                Path::new(n).to_path_buf()
            } else {
                env.path(n)
            };
            b3(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run with a deadline (a hang fails the test); require exit `code` and
/// `words` on stderr.
fn expect_within(env: &Env, code: i32, args: &[&str], words: &str) -> String {
    let out = env
        .cmd(args)
        .timeout(Duration::from_secs(30))
        .output()
        .expect("run evfs");
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "evfs {args:?} (a hang ends in a kill): {err}"
    );
    assert!(
        err.contains(words),
        "evfs {args:?}: expected {words:?} in: {err}"
    );
    err
}

fn with<'a>(args: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    args.iter().chain(extra).copied().collect()
}

// ------------------------------------------------------------ case 1: names

#[test]
fn a_loop_device_over_the_source_is_the_source_in_both_directions() {
    let (env, pa) = setup();
    let Some(l) = Loop::attach("identity_loop", &env.path("vol.img")) else {
        return;
    };
    let k = key(&pa);
    let before = hashes(&env, &["vol.img"]);
    let dev = l.path();
    let why = format!("{dev} is backed by vol.img");
    for args in [
        with(&["backup", dev, "vol.img"], &k),
        with(&["backup", "vol.img", dev], &k),
        with(&["backup", "vol.img", dev, "--force"], &k),
        with(&["backup", dev, "vol.img", "--raw", "--force"], &[]),
        with(&["backup", "vol.img", "--stream", dev, "--force"], &k),
        with(&["backup", "vol.img", dev, "--cleartext", "--force"], &k),
    ] {
        let err = expect_within(&env, 3, &args, &why);
        assert!(err.contains("the target is the source itself"), "{err}");
        assert_eq!(hashes(&env, &["vol.img"]), before, "evfs {args:?} wrote");
    }
    // Two loop devices over one file.
    let Some(l2) = Loop::attach("identity_loop", &env.path("vol.img")) else {
        return;
    };
    let err = expect_within(
        &env,
        3,
        &with(&["backup", dev, l2.path(), "--force"], &k),
        &format!("{} is backed by", l2.path()),
    );
    assert!(err.contains(&format!(", and {dev} is backed by")), "{err}");
    assert_eq!(hashes(&env, &["vol.img"]), before);
    // A loop device over another file is another storage.
    std::fs::File::create(env.path("other.img"))
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let Some(other) = Loop::attach("identity_loop", &env.path("other.img")) else {
        return;
    };
    env.ok(&with(&["backup", dev, other.path()], &k));
    env.ok(&with(&["verify", other.path(), "--against", "vol.img"], &k));
    assert_eq!(hashes(&env, &["vol.img"]), before);
}

#[test]
fn a_second_device_node_of_a_loop_device_is_the_same_block_device() {
    use std::os::unix::fs::MetadataExt;
    let test = "identity_device_node";
    let (env, pa) = setup();
    let Some(l) = Loop::attach(test, &env.path("vol.img")) else {
        return;
    };
    // Device nodes on a `nodev` mount cannot be opened at all.
    let nodev = rustix::fs::statvfs(env.dir.path())
        .expect("statvfs of the scratch directory")
        .f_flag
        .contains(rustix::fs::StatVfsMountFlags::NODEV);
    if nodev {
        crate::common::tools::unavailable(test, "the scratch file system is mounted nodev");
        return;
    }
    // A second node with the loop device's major:minor, as a copy of /dev
    // in a chroot or container holds: another inode, the same block
    // device. It lies in the scratch directory, removed with it.
    let rdev = std::fs::metadata(&l.dev)
        .expect("stat the loop device")
        .rdev();
    if let Err(e) = rustix::fs::mknodat(
        rustix::fs::CWD,
        env.path("node2"),
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from(0o600),
        rdev,
    ) {
        crate::common::tools::unavailable(test, &format!("mknod is not permitted here: {e}"));
        return;
    }
    let k = key(&pa);
    let dev = l.path();
    let before = hashes(&env, &["vol.img"]);
    for (args, why) in [
        (
            with(&["backup", "node2", dev, "--force"], &k),
            format!("{dev} and node2 are the same block device"),
        ),
        (
            with(&["backup", dev, "node2", "--force"], &k),
            format!("node2 and {dev} are the same block device"),
        ),
        (
            with(&["backup", "node2", dev, "--raw", "--force"], &[]),
            format!("{dev} and node2 are the same block device"),
        ),
        (
            with(&["backup", "node2", "vol.img", "--force"], &k),
            "node2 is backed by vol.img".to_string(),
        ),
        (
            with(&["backup", "vol.img", "node2", "--force"], &k),
            "node2 is backed by vol.img".to_string(),
        ),
    ] {
        let err = expect_within(&env, 3, &args, &why);
        assert!(err.contains("the target is the source itself"), "{err}");
        assert_eq!(hashes(&env, &["vol.img"]), before, "evfs {args:?} wrote");
    }
    std::fs::remove_file(env.path("node2")).expect("remove node2");
}

#[test]
fn loop_devices_over_separate_ranges_of_one_file_are_separate() {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    std::fs::File::create(env.path("disk.img"))
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let test = "identity_loop_ranges";
    let Some(head) = Loop::attach_with(test, &env.path("disk.img"), &["--sizelimit", "8388608"])
    else {
        return;
    };
    let Some(tail) = Loop::attach_with(test, &env.path("disk.img"), &["--offset", "8388608"])
    else {
        return;
    };
    env.ok(&[
        "create",
        head.path(),
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
    ]);
    let k = key(&pa);
    // Apart: a backup from one half into the other runs.
    env.ok(&with(&["backup", head.path(), tail.path()], &k));
    env.ok(&with(
        &["verify", tail.path(), "--against", head.path()],
        &k,
    ));
    // The file as a whole holds both halves.
    let before = hashes(&env, &["disk.img"]);
    let err = expect_within(
        &env,
        3,
        &with(&["backup", tail.path(), "disk.img", "--force"], &k),
        &format!("{} is backed by disk.img", tail.path()),
    );
    assert!(err.contains("the source itself"), "{err}");
    assert_eq!(hashes(&env, &["disk.img"]), before);
}

/// A 16 MiB `disk.img` with two 4 MiB partitions (from 1 MiB and 5 MiB),
/// on a loop device with its partitions, and a volume on each.
fn partitioned(test: &str) -> Option<(Env, String, Loop)> {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    env.gen_key("bob.k1");
    let disk = env.path("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    write_mbr(&disk, &[(2048, 8192), (10240, 8192)]);
    let l = Loop::attach_partitioned(test, &disk)?;
    for n in [1, 2] {
        let p = l.partition(n).display().to_string();
        env.ok(&[
            "create",
            &p,
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
            "--label",
            &format!("p{n}"),
        ]);
    }
    Some((env, pa, l))
}

#[test]
fn a_partition_is_its_disk_range_and_its_backing_file_range() {
    let Some((env, pa, l)) = partitioned("identity_partition") else {
        return;
    };
    let k = key(&pa);
    let (p1, p2) = (l.partition(1), l.partition(2));
    let (p1, p2) = (p1.to_str().unwrap(), p2.to_str().unwrap());
    let before = hashes(&env, &["disk.img"]);
    expect_within(
        &env,
        3,
        &with(&["backup", p1, "disk.img", "--force"], &k),
        &format!(
            "{p1} is a partition of {}, which is backed by disk.img",
            l.path()
        ),
    );
    expect_within(
        &env,
        3,
        &with(&["backup", p2, l.path(), "--force"], &k),
        &format!("{p2} is a partition of {}", l.path()),
    );
    assert_eq!(hashes(&env, &["disk.img"]), before);
    // Nested: a loop device over the first partition.
    let Some(nested) = Loop::attach("identity_partition", &l.partition(1)) else {
        return;
    };
    expect_within(
        &env,
        3,
        &with(&["backup", nested.path(), p1, "--force"], &k),
        &format!("{} is backed by {p1}", nested.path()),
    );
    expect_within(
        &env,
        3,
        &with(&["backup", nested.path(), "disk.img", "--force"], &k),
        &format!(
            "{} is backed by {p1}, which is a partition of {}, which is backed by disk.img",
            nested.path(),
            l.path()
        ),
    );
    assert_eq!(hashes(&env, &["disk.img"]), before);
    drop(nested);
    // Two partitions of one disk are apart.
    env.ok(&with(&["backup", p1, p2, "--force"], &k));
    env.ok(&with(&["verify", p2, "--against", p1], &k));
}

#[test]
fn a_restore_onto_its_own_stream_is_refused_by_any_name() {
    let (env, pa) = setup();
    env.ok(&with(
        &["backup", "vol.img", "--stream", "s.evfs"],
        &key(&pa),
    ));
    std::fs::hard_link(env.path("s.evfs"), env.path("link.evfs")).unwrap();
    let before = hashes(&env, &["s.evfs"]);
    expect_within(
        &env,
        3,
        &["restore", "s.evfs", "link.evfs", "--force"],
        "the target is the stream itself",
    );
    let Some(l) = Loop::attach("identity_restore", &env.path("s.evfs")) else {
        return;
    };
    expect_within(
        &env,
        3,
        &["restore", "s.evfs", l.path(), "--force"],
        &format!("{} is backed by s.evfs", l.path()),
    );
    let out = env.bash(&format!("$EVFS restore - {} --force < s.evfs", l.path()));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("is backed by"), "{}", stderr(&out));
    assert_eq!(hashes(&env, &["s.evfs"]), before);
}

// ------------------------------------------------- case 3: stdin and stdout

#[test]
fn standard_output_or_input_redirected_onto_the_other_side_is_refused() {
    let (env, pa) = setup();
    env.ok(&with(&["backup", "vol.img", "copy.img"], &key(&pa)));
    env.ok(&with(
        &["backup", "vol.img", "--stream", "s.evfs"],
        &key(&pa),
    ));
    let names = ["vol.img", "copy.img", "s.evfs"];
    let before = hashes(&env, &names);
    let k = format!("-k alice.k1 --passphrase-file {pa}");
    for script in [
        format!("$EVFS backup vol.img - {k} 1<>vol.img"),
        format!("$EVFS backup vol.img - {k} >> vol.img"),
        format!("$EVFS backup vol.img - --cleartext {k} 1<>vol.img"),
        "$EVFS backup vol.img - --raw >> vol.img".to_string(),
        format!("$EVFS backup - copy.img {k} < copy.img"),
        "$EVFS backup - copy.img --raw --force < copy.img".to_string(),
        format!("$EVFS cat vol.img {k} 1<>vol.img"),
        "$EVFS restore - s.evfs --force < s.evfs".to_string(),
        "$EVFS restore - copy.img --force 0<>copy.img".to_string(),
    ] {
        let out = env.bash(&script);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{script}: {err}");
        assert!(
            err.contains("are the same file")
                && (err.contains("standard output") || err.contains("standard input")),
            "{script}: {err}"
        );
        assert_eq!(hashes(&env, &names), before, "{script} wrote");
    }
    // A pipe is never the same storage.
    let out = env.bash(&format!("$EVFS backup vol.img - {k} | cat > piped.evfs"));
    assert!(out.status.success(), "{}", stderr(&out));
    env.ok(&["verify", "piped.evfs"]);
    // Standard output on a loop device over the source.
    let Some(l) = Loop::attach("identity_stdout_loop", &env.path("vol.img")) else {
        return;
    };
    let out = env.bash(&format!("$EVFS backup vol.img - {k} 1<>{}", l.path()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("standard output is backed by vol.img"),
        "{err}"
    );
    assert_eq!(hashes(&env, &names), before);
}

// ------------------------------------------------------------- case 2: locks

#[test]
fn locks_follow_the_storage_through_a_loop_device_and_name_the_holder() {
    let (env, pa) = setup();
    let Some(l) = Loop::attach("identity_locks", &env.path("vol.img")) else {
        return;
    };
    let k = key(&pa);
    std::fs::write(env.path("other.raw"), vec![5u8; 2 << 20]).unwrap();
    env.ok(&[
        "backup",
        "other.raw",
        "other.img",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
    ]);

    // The file mapped read-write: every writer through the loop device waits.
    let map = Mapped::start(&env, "a.sock", &with(&["vol.img"], &k));
    let holder = format!("in use by process {}", map.pid());
    let during = hashes(&env, &["vol.img", "other.img"]);
    expect_within(
        &env,
        1,
        &with(&["user", "add", l.path(), "bob.k1"], &k),
        &holder,
    );
    expect_within(&env, 1, &["check", "-r", l.path()], &holder);
    expect_within(
        &env,
        1,
        &with(&["backup", "other.img", l.path(), "--force"], &k),
        &holder,
    );
    expect_within(
        &env,
        1,
        &with(&["backup", l.path(), "copy.img"], &k),
        &holder,
    );
    assert_eq!(hashes(&env, &["vol.img", "other.img"]), during);
    assert!(!env.path("copy.img").exists());
    let (status, log) = map.stop();
    assert!(status.success(), "{log}");

    // The loop device mapped read-write: the file is held.
    let map = Mapped::start(&env, "b.sock", &with(&[l.path()], &k));
    let holder = format!("in use by process {}", map.pid());
    let during = hashes(&env, &["vol.img", "other.img"]);
    expect_within(
        &env,
        1,
        &with(&["user", "add", "vol.img", "bob.k1"], &k),
        &holder,
    );
    expect_within(
        &env,
        1,
        &with(&["backup", "other.img", "vol.img", "--force"], &k),
        &holder,
    );
    // The kernel refuses a second exclusive open of the device (O_EXCL);
    // the message still names the evfs that holds it.
    expect_within(
        &env,
        1,
        &[
            "create",
            l.path(),
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
            "--force",
        ],
        &holder,
    );
    assert_eq!(hashes(&env, &["vol.img", "other.img"]), during);
    let (status, log) = map.stop();
    assert!(status.success(), "{log}");

    // Readers share: a read-only map of the file and a backup from the device.
    let map = Mapped::start(&env, "c.sock", &with(&["vol.img", "--read-only"], &k));
    env.ok(&with(&["backup", l.path(), "copy.img"], &k));
    let holder = format!("in use by process {}", map.pid());
    expect_within(
        &env,
        1,
        &with(&["user", "add", l.path(), "bob.k1"], &k),
        &holder,
    );
    let (status, log) = map.stop();
    assert!(status.success(), "{log}");

    // Free again: the user is added once, through either name.
    env.ok(&with(&["user", "add", l.path(), "bob.k1"], &k));
    expect_within(
        &env,
        2,
        &with(&["user", "add", "vol.img", "bob.k1"], &k),
        "already has a slot",
    );
    assert_eq!(env.info("vol.img")["users"], serde_json::json!(["bob.k1"]));
}

/// Wait for `child` at most 30 s (a hang fails the test), then take its output.
fn finish(mut child: std::process::Child, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn user_adds_racing_through_the_file_and_a_loop_device_lose_no_user() {
    // Case 2 as it was reported: two `user add` at once, one through the
    // file and one through a loop device over it, each reading the EMD
    // and writing it back with its own new slot: the later write lost the
    // earlier user.
    let (env, pa) = setup();
    let Some(l) = Loop::attach("identity_user_add_race", &env.path("vol.img")) else {
        return;
    };
    let k = key(&pa);
    let mut added: Vec<String> = Vec::new();
    let mut refused = 0;
    for round in 0..10 {
        let ids = [format!("file{round}.k1"), format!("loop{round}.k1")];
        for id in &ids {
            env.gen_key(id);
        }
        let vols = ["vol.img", l.path()];
        let children: Vec<_> = vols
            .iter()
            .zip(&ids)
            .map(|(vol, id)| {
                env.process(&with(&["user", "add", vol, id], &k))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn evfs user add")
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
        for (i, child) in children.into_iter().enumerate() {
            let what = format!("round {round}: user add {} {}", vols[i], ids[i]);
            let out = finish(child, &what);
            match out.status.code() {
                Some(0) => added.push(ids[i].clone()),
                Some(1) => {
                    let holder = format!("in use by process {}", pids[1 - i]);
                    assert!(
                        stderr(&out).contains(&holder),
                        "{what}: refused without naming the other run ({holder}): {}",
                        stderr(&out)
                    );
                    refused += 1;
                }
                code => panic!("{what}: exit {code:?}: {}", stderr(&out)),
            }
        }
        // Every user whose add succeeded is there, and no refused one.
        let mut users: Vec<String> = env.info("vol.img")["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u.as_str().expect("a user ID").to_string())
            .collect();
        users.sort();
        let mut expected = added.clone();
        expected.sort();
        assert_eq!(
            users, expected,
            "round {round}: the volume's users are not those whose user add succeeded"
        );
    }
    // The runs overlapped: otherwise this test did not race them.
    assert!(
        refused > 0,
        "in 10 rounds no user add was ever refused: the two runs never overlapped"
    );
    env.ok(&with(&["verify", "vol.img"], &k));
}

#[test]
fn a_device_held_by_another_program_is_refused_as_in_use() {
    let (env, pa) = setup();
    let Some(l) = Loop::attach("identity_excl", &env.path("vol.img")) else {
        return;
    };
    // This test process holds the device exclusively, as a mount would.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&l.dev)
        .unwrap();
    let before = hashes(&env, &["vol.img"]);
    expect_within(
        &env,
        1,
        &with(&["user", "add", l.path(), "bob.k1"], &key(&pa)),
        "is mounted or in use by another program",
    );
    assert_eq!(hashes(&env, &["vol.img"]), before);
    // Reading needs no exclusive open.
    env.ok(&["info", l.path()]);
    drop(held);
    env.ok(&with(&["user", "add", l.path(), "bob.k1"], &key(&pa)));
}

#[test]
fn partitions_lock_only_their_range() {
    let Some((env, pa, l)) = partitioned("identity_partition_locks") else {
        return;
    };
    let k = key(&pa);
    let (p1, p2) = (l.partition(1), l.partition(2));
    let (p1, p2) = (p1.to_str().unwrap(), p2.to_str().unwrap());
    let map = Mapped::start(&env, "p1.sock", &with(&[p1], &k));
    let holder = format!("in use by process {}", map.pid());
    // The other partition is free.
    env.ok(&with(&["user", "add", p2, "bob.k1"], &k));
    // The same range through the backing file, and the whole disk, are not.
    std::fs::File::create(env.path("src.raw"))
        .unwrap()
        .write_all(&vec![9u8; 1 << 20])
        .unwrap();
    let during = hashes(&env, &["disk.img"]);
    expect_within(
        &env,
        1,
        &with(&["backup", "src.raw", "disk.img", "--force"], &k),
        &holder,
    );
    expect_within(
        &env,
        1,
        &[
            "create",
            l.path(),
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
            "--force",
        ],
        &holder,
    );
    assert_eq!(hashes(&env, &["disk.img"]), during);
    let (status, log) = map.stop();
    assert!(status.success(), "{log}");
    env.ok(&with(&["user", "add", p1, "bob.k1"], &k));
}

// ---------------------------------------------------------- case 10: leftovers

/// Files in the scratch directory whose names hold "partial", or start with
/// a dot.
fn leftovers(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n.starts_with(".x") || n.starts_with(".s"))
        .collect()
}

/// Run `args` with the volume fed through a pipe, kill it with SIGKILL
/// once it holds an unnamed file in the scratch directory and has read
/// half of the volume.
fn kill_mid_way(env: &Env, args: &[&str]) {
    let vol = std::fs::read(env.path("vol.img")).unwrap();
    let mut child = env
        .process(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn evfs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&vol[..vol.len() / 2]).unwrap();
    // The output file: an unnamed file open in the directory (O_TMPFILE
    // shows as "DIR/#INODE (deleted)").
    let dir = env.dir.path().display().to_string();
    let fds = format!("/proc/{}/fd", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open_here = std::fs::read_dir(&fds).ok().is_some_and(|d| {
            d.flatten().any(|e| {
                std::fs::read_link(e.path()).is_ok_and(|t| {
                    let t = t.display().to_string();
                    t.starts_with(&dir) && (t.contains("(deleted)") || t.contains("partial"))
                })
            })
        });
        if open_here {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "evfs {args:?} never opened its output"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
}

#[test]
fn a_killed_export_or_stream_leaves_no_partial_file_and_the_old_target_as_it_was() {
    let (env, pa) = setup();
    std::fs::write(env.path("x"), b"the old export\n").unwrap();
    env.ok(&with(
        &["backup", "vol.img", "--stream", "s.evfs"],
        &key(&pa),
    ));
    let before = hashes(&env, &["x", "s.evfs"]);
    let k = key(&pa);
    kill_mid_way(
        &env,
        &with(&["backup", "-", "x", "--cleartext", "--force"], &k),
    );
    kill_mid_way(&env, &with(&["backup", "-", "--stream", "s.evfs"], &k));
    assert_eq!(leftovers(&env), Vec::<String>::new());
    assert_eq!(hashes(&env, &["x", "s.evfs"]), before);
    // And the same runs to the end replace them whole.
    env.ok(&with(
        &["backup", "vol.img", "x", "--cleartext", "--force"],
        &k,
    ));
    assert_eq!(
        std::fs::read(env.path("x")).unwrap(),
        std::fs::read(env.path("data.raw")).unwrap()
    );
    env.ok(&["verify", "s.evfs"]);
}

#[test]
fn stale_partial_files_of_dead_processes_are_removed_by_the_next_run() {
    let (env, pa) = setup();
    for name in [".x.partial-99999999", ".s.evfs.partial-99999999"] {
        std::fs::write(env.path(name), b"plaintext left by a killed run").unwrap();
    }
    let k = key(&pa);
    env.ok(&with(&["backup", "vol.img", "x", "--cleartext"], &k));
    env.ok(&with(&["backup", "vol.img", "--stream", "s.evfs"], &k));
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

#[test]
fn a_failed_create_leaves_no_file() {
    let env = Env::new();
    env.gen_key("alice.k1");
    // A size the file may not take: the file is made, then setting its
    // size fails. The limit on file sizes (`ulimit -f`, 1 GiB here) makes
    // the kernel refuse it with EFBIG at the same call as a file system
    // does past its largest file (ext4: 16 TiB), on any scratch file
    // system (XFS, btrfs and tmpfs take 100 TiB). SIGXFSZ is ignored so
    // that the call fails instead of the signal killing evfs.
    let out = env.bash(
        "trap '' XFSZ; ulimit -f 1048576; exec $EVFS create x --owner alice.k1 \
         --passphrase-file alice.k1.pw --size 100T",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("setting the size of x"),
        "not the size that failed: {}",
        stderr(&out)
    );
    assert!(!env.path("x").exists(), "a failed create left x");
    // A file system too small for the EMD: the write fails.
    let Some(fs) = SmallFs::mount("8k") else {
        return;
    };
    let x = fs.path("x");
    let out = env.run(&[
        "create",
        &x,
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
        "--size",
        "100T",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(fs.dir.path()).unwrap().count(), 0);
}

// ------------------------------------------- case 11: FIFOs and char devices

fn mkfifo(env: &Env, name: &str) -> String {
    let p = env.path(name);
    rustix::fs::mkfifoat(rustix::fs::CWD, &p, rustix::fs::Mode::from(0o600)).unwrap();
    name.to_string()
}

#[test]
fn a_fifo_or_character_device_where_a_volume_is_needed_is_refused_at_once() {
    let (env, pa) = setup();
    env.ok(&with(
        &["backup", "vol.img", "--stream", "s.evfs"],
        &key(&pa),
    ));
    let fifo = mkfifo(&env, "vol.fifo");
    let k = key(&pa);
    let before = hashes(&env, &["vol.img", "s.evfs"]);
    for (target, what) in [
        (
            fifo.as_str(),
            "vol.fifo is a FIFO (named pipe), not a volume",
        ),
        ("/dev/null", "/dev/null is a character device, not a volume"),
    ] {
        for args in [
            vec!["info", target],
            vec!["check", target],
            vec!["check", "-r", target],
            vec!["emd", "backup", target, "saved.emd"],
            vec!["hash", target],
            with(&["hash", target], &k),
            with(&["cat", target], &k),
            with(&["user", "add", target, "bob.k1"], &k),
            vec![
                "create",
                target,
                "--owner",
                "alice.k1",
                "--passphrase-file",
                "alice.k1.pw",
            ],
            vec!["restore", "s.evfs", target],
            vec!["restore", "-", target],
            with(&["backup", "vol.img", target], &k),
            with(&["backup", target, "copy.img"], &k),
            with(&["dmtable", target], &k),
        ] {
            let err = expect_within(&env, 2, &args, what);
            assert!(
                err.contains("a volume is a regular file or a block device"),
                "{err}"
            );
        }
    }
    assert!(!env.path("saved.emd").exists() && !env.path("copy.img").exists());
    assert_eq!(hashes(&env, &["vol.img", "s.evfs"]), before);
}

/// Write `file` into the FIFO `fifo` from a thread.
fn feed(env: &Env, fifo: &str, file: &str) -> std::thread::JoinHandle<()> {
    let (fifo, data) = (env.path(fifo), std::fs::read(env.path(file)).unwrap());
    std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        let _ = w.write_all(&data);
    })
}

#[test]
fn streams_may_still_come_from_fifos_and_go_to_character_devices() {
    let (env, pa) = setup();
    env.ok(&with(
        &["backup", "vol.img", "--stream", "s.evfs"],
        &key(&pa),
    ));
    let fifo = mkfifo(&env, "s.fifo");
    let writer = feed(&env, &fifo, "s.evfs");
    expect_within(&env, 0, &["verify", &fifo], "");
    writer.join().unwrap();
    let writer = feed(&env, &fifo, "s.evfs");
    expect_within(&env, 0, &["restore", &fifo, "restored.img"], "");
    writer.join().unwrap();
    env.ok(&with(
        &["verify", "restored.img", "--against", "vol.img"],
        &key(&pa),
    ));
    expect_within(
        &env,
        0,
        &with(&["backup", "vol.img", "--stream", "/dev/null"], &key(&pa)),
        "",
    );
    // An empty stream is a damaged one, not a hang.
    expect_within(&env, 5, &["verify", "/dev/null"], "");
}
