//! The safety issue ("The main job never loses data and never lies"), case
//! by case as it was reported, against the real binary: rollbacks, foreign
//! targets taken over, exact sizes, ciphertext fed as plaintext, writes
//! through `map`, hostile labels, messages, JSON on every exit, one unlock
//! per key, plain-source provenance, closed pipes, dirty volumes enabled,
//! and the format versions (cases 1-3, 9-11 and 14 are in `identity.rs`,
//! `keystore.rs` and `reliability.rs`).

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use crate::common::tools::{Mapped, have_tools, run_tool};
use crate::common::{Env, b3, mixed_data};

const MIB: usize = 1 << 20;

/// alice (owner) and bob, and `orig.vol` holding 4 MiB of mixed data.
fn setup() -> (Env, Vec<u8>, String, String) {
    let (env, pws) = Env::with_keys(&["alice.k1", "bob"]);
    let data = env.volume_from_data("orig.raw", "orig.vol", "alice.k1", 4 * MIB, 11);
    let [pa, pb] = <[String; 2]>::try_from(pws).unwrap();
    (env, data, pa, pb)
}

fn k(pa: &str) -> [&str; 4] {
    ["-k", "alice.k1", "--passphrase-file", pa]
}

/// Run `evfs ARGS` with `-k alice.k1` and its passphrase appended.
fn with_k<'a>(args: &[&'a str], pa: &'a str) -> Vec<&'a str> {
    args.iter().copied().chain(k(pa)).collect()
}

fn bytes(env: &Env, name: &str) -> Vec<u8> {
    std::fs::read(env.path(name)).unwrap()
}

/// Write `data` into a volume with its own key (a data write: it moves
/// the volume's data version on).
fn write_into(env: &Env, vol: &str, data: &[u8], pa: &str) {
    std::fs::write(env.path("new.raw"), data).unwrap();
    env.ok(&with_k(&["backup", "new.raw", vol], pa));
}

// ------------------------------------------------------------ case 4

#[test]
fn case_4_a_raw_mirror_written_back_over_its_newer_original_is_a_rollback() {
    let (env, _, pa, _) = setup();
    env.ok(&["backup", "orig.vol", "mirror.vol", "--raw"]);
    assert_eq!(env.info("mirror.vol")["uuid"], env.info("orig.vol")["uuid"]);
    // New data is written to the original after the mirror was taken.
    let newer = mixed_data(4 * MIB, 12);
    write_into(&env, "orig.vol", &newer, &pa);
    let uuid = env.info("orig.vol")["uuid"].clone();
    let before = bytes(&env, "orig.vol");
    let (_, err) = env.expect(3, &with_k(&["backup", "mirror.vol", "orig.vol"], &pa));
    assert!(
        err.contains("roll") && err.contains("lose 1 later data write"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(
        before == bytes(&env, "orig.vol"),
        "a refusal writes nothing"
    );
    assert_eq!(env.hash("orig.vol", "alice.k1"), b3(&newer));
    // Asked for, the rollback happens, and the original keeps its identity.
    env.ok(&with_k(
        &["backup", "mirror.vol", "orig.vol", "--force"],
        &pa,
    ));
    assert_eq!(env.info("orig.vol")["uuid"], uuid);
}

#[test]
fn case_4_a_stream_restored_over_its_own_modified_source_is_a_rollback() {
    let (env, _, pa, _) = setup();
    env.ok(&with_k(&["backup", "orig.vol", "--stream", "s.evfs"], &pa));
    write_into(&env, "orig.vol", &mixed_data(3 * MIB, 13), &pa);
    let before = bytes(&env, "orig.vol");
    let (_, err) = env.expect(3, &["restore", "s.evfs", "orig.vol"]);
    assert!(err.contains("written to since"), "{err}");
    assert!(before == bytes(&env, "orig.vol"));
    // A copy restored earlier and written to since is protected the same way.
    env.ok(&["restore", "s.evfs", "r.vol"]);
    write_into(&env, "r.vol", &mixed_data(MIB, 14), &pa);
    env.expect(3, &["restore", "s.evfs", "r.vol"]);
    env.ok(&["restore", "s.evfs", "r.vol", "--force"]);
}

/// The recovery path documented in the README: a backup copy written back
/// over a damaged original with the original's own key; the original keeps
/// its UUID, and the next scheduled backup refreshes the copy without
/// --force.
#[test]
fn case_4_restoring_a_damaged_original_from_its_copy_lets_the_next_backup_run() {
    let (env, data, pa, _) = setup();
    let backup = with_k(&["backup", "orig.vol", "copy.vol"], &pa);
    env.ok(&backup);
    let uuid = env.info("orig.vol")["uuid"].clone();
    // Damage outside evfs: garbage over part of the data area.
    let mut img = bytes(&env, "orig.vol");
    img[MIB + 4096..MIB + 3 * 4096].fill(0x5a);
    std::fs::write(env.path("orig.vol"), &img).unwrap();
    assert_ne!(env.hash("orig.vol", "alice.k1"), b3(&data));
    env.ok(&with_k(&["backup", "copy.vol", "orig.vol"], &pa));
    let info = env.info("orig.vol");
    assert_eq!(info["uuid"], uuid, "the original keeps its identity");
    assert_eq!(env.hash("orig.vol", "alice.k1"), b3(&data));
    env.ok(&with_k(&["verify", "orig.vol"], &pa));
    // The next nightly run, unchanged, needs no --force.
    env.ok(&backup);
    env.ok(&with_k(
        &["verify", "copy.vol", "--against", "orig.vol"],
        &pa,
    ));
}

// ------------------------------------------------------------ case 5

#[test]
fn case_5_a_foreign_volume_with_its_own_emd_is_not_taken_over() {
    let (env, _, pa, _) = setup();
    let pc = env.gen_key("carol.k1");
    env.ok(&[
        "create",
        "carol.img",
        "--owner",
        "carol.k1",
        "--passphrase-file",
        "carol.k1.pw",
        "--size",
        "8M",
        "--label",
        "carols",
    ]);
    std::fs::write(env.path("c.raw"), mixed_data(2 * MIB, 15)).unwrap();
    env.ok(&[
        "backup",
        "c.raw",
        "carol.img",
        "--target-key",
        "carol.k1",
        "--target-passphrase-file",
        &pc,
    ]);
    let before = bytes(&env, "carol.img");
    let (_, err) = env.expect(3, &with_k(&["backup", "orig.vol", "carol.img"], &pa));
    assert!(
        err.contains("EMD of its own") && err.contains("--target-key"),
        "{err}"
    );
    assert!(
        before == bytes(&env, "carol.img"),
        "carol's volume is untouched"
    );
    let info = env.info("carol.img");
    assert_eq!(
        (info["owner"].as_str(), info["label"].as_str()),
        (Some("carol.k1"), Some("carols"))
    );
    // Only --force replaces it with a clone.
    env.ok(&with_k(
        &["backup", "orig.vol", "carol.img", "--force"],
        &pa,
    ));
    assert_eq!(env.info("carol.img")["owner"], "alice.k1");
}

#[test]
fn case_5_a_refresh_keeps_the_clones_uuid_and_key_and_follows_the_sources_users() {
    let (env, data, pa, pb) = setup();
    // The source made again with a label, so that the clone's label is
    // not merely empty like the setup's; no command changes a label.
    env.ok(&[
        "create",
        "orig.vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--label",
        "payroll",
        "--force",
    ]);
    write_into(&env, "orig.vol", &data, &pa);
    let backup = with_k(&["backup", "orig.vol", "copy.vol"], &pa);
    env.ok(&backup);
    let first = env.info("copy.vol");
    assert_eq!(first["clone_of"], env.info("orig.vol")["uuid"]);
    assert_eq!(first["label"], "payroll");
    let data_area = |env: &Env| bytes(env, "copy.vol")[MIB..5 * MIB].to_vec();
    let cipher_before = data_area(&env);
    env.ok(&with_k(&["user", "add", "orig.vol", "bob"], &pa));
    env.ok(&backup);
    let again = env.info("copy.vol");
    assert_eq!(again["uuid"], first["uuid"]);
    assert_eq!(again["users"], serde_json::json!(["bob.bob"]));
    // The same plaintext under the same key: the same XTS ciphertext.
    assert!(
        cipher_before == data_area(&env),
        "the refresh kept the volume key"
    );
    env.ok(&["hash", "copy.vol", "-k", "bob", "--passphrase-file", &pb]);
    // The source's owner changes: the refresh follows it (alice, the old
    // owner, stays a user of both and opens the source).
    env.ok(&with_k(&["owner", "orig.vol", "bob"], &pa));
    env.ok(&backup);
    let (source, clone) = (env.info("orig.vol"), env.info("copy.vol"));
    assert_eq!(source["owner"], "bob.bob", "{source}");
    assert_eq!(
        clone["owner"], source["owner"],
        "the clone's owner: {clone}"
    );
    assert_eq!(
        clone["users"], source["users"],
        "the clone's users: {clone}"
    );
    assert_eq!(clone["users"], serde_json::json!(["alice.k1"]));
    assert_eq!(
        clone["label"], source["label"],
        "the clone's label: {clone}"
    );
    assert_eq!(clone["uuid"], first["uuid"]);
    // --rekey: a fresh key, still the same volume.
    let mut rekey = backup.clone();
    rekey.push("--rekey");
    env.ok(&rekey);
    assert_eq!(env.info("copy.vol")["uuid"], first["uuid"]);
    assert!(cipher_before != data_area(&env), "--rekey changed the key");
    env.ok(&with_k(
        &["verify", "copy.vol", "--against", "orig.vol"],
        &pa,
    ));
}

// ------------------------------------------------------------ case 7

#[test]
fn case_7_hash_cat_export_and_verify_cover_exactly_the_data_for_every_size() {
    let (env, pws) = Env::with_keys(&["alice.k1"]);
    let pa = &pws[0];
    for (len, sector) in [
        (0usize, "4096"),
        (1, "4096"),
        (1_000_001, "4096"),
        (516_096, "512"),
        (4095, "512"),
    ] {
        let image = mixed_data(len, len as u64);
        let name = format!("img{len}");
        let vol = format!("{name}.vol");
        std::fs::write(env.path(&name), &image).unwrap();
        env.ok(&[
            "backup",
            &name,
            &vol,
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
            "--sector-size",
            sector,
        ]);
        let info = env.info(&vol);
        assert_eq!(info["data_length"], len, "{info}");
        assert_eq!(info["sector_size"].to_string(), sector);
        assert_eq!(
            env.hash(&vol, "alice.k1"),
            b3(&image),
            "hash of {len} bytes"
        );
        let cat = env.cmd(&with_k(&["cat", &vol], pa)).output().unwrap();
        assert!(
            cat.status.success() && cat.stdout == image,
            "cat of {len} bytes"
        );
        let export = format!("{name}.out");
        env.ok(&with_k(&["backup", &vol, &export, "--cleartext"], pa));
        assert!(bytes(&env, &export) == image, "export of {len} bytes");
        env.ok(&with_k(&["verify", &vol, "--against", &name], pa));
        // A clone and a stream keep the exact length too.
        let copy = format!("{name}.copy");
        env.ok(&with_k(&["backup", &vol, &copy], pa));
        assert_eq!(env.hash(&copy, "alice.k1"), b3(&image));
        let stream = format!("{name}.evfs");
        env.ok(&with_k(&["backup", &vol, "--stream", &stream], pa));
        env.ok(&with_k(&["verify", &stream, "--against", &name], pa));
    }
    // One byte more is a length difference, named as such.
    let mut longer = mixed_data(1, 1);
    longer.push(0);
    std::fs::write(env.path("longer"), &longer).unwrap();
    let (out, _) = env.expect(
        5,
        &with_k(&["verify", "img1.vol", "--against", "longer"], pa),
    );
    assert!(out.contains("differs in length"), "{out}");
}

// ------------------------------------------------------------ case 8

/// The data area of a volume file, as `map --raw`, dd or qemu-img copy it.
fn raw_data_area(env: &Env, vol: &str) -> Vec<u8> {
    let info = env.info(vol);
    let (off, len) = (
        info["data_offset"].as_u64().unwrap() as usize,
        info["data_size"].as_u64().unwrap() as usize,
    );
    bytes(env, vol)[off..off + len].to_vec()
}

#[test]
fn case_8_ciphertext_fed_as_plaintext_is_refused() {
    let (env, _, pa, _) = setup();
    std::fs::write(env.path("raw.bin"), raw_data_area(&env, "orig.vol")).unwrap();
    let (_, err) = env.expect(
        3,
        &[
            "backup",
            "raw.bin",
            "x.vol",
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
        ],
    );
    assert!(err.contains("looks like ciphertext"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(!env.path("x.vol").exists());
    // From a pipe, and into an existing volume with -k, alike.
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
        .write_stdin(bytes(&env, "raw.bin"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    env.expect(3, &with_k(&["backup", "raw.bin", "orig.vol"], &pa));
    // A disk image holding an EVFS volume after a 1 MiB partition table.
    let mut disk = vec![0u8; MIB];
    disk.extend(bytes(&env, "orig.vol"));
    std::fs::write(env.path("disk.img"), &disk).unwrap();
    let (_, err) = env.expect(
        3,
        &[
            "backup",
            "disk.img",
            "y.vol",
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
        ],
    );
    assert!(err.contains("EMD magic at byte 1048576"), "{err}");
    // A LUKS header.
    let mut luks = b"LUKS\xba\xbe\x00\x02".to_vec();
    luks.resize(4 * MIB, 0);
    std::fs::write(env.path("luks.img"), &luks).unwrap();
    let (_, err) = env.expect(
        3,
        &[
            "backup",
            "luks.img",
            "z.vol",
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
        ],
    );
    assert!(err.contains("LUKS"), "{err}");
    // Random data it really is: --force.
    env.ok(&[
        "backup",
        "raw.bin",
        "x.vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
        "--force",
    ]);
}

#[test]
fn case_8_file_system_images_even_full_of_compressed_files_are_not_refused() {
    if !have_tools("case_8_file_system_images", &["mke2fs"]) {
        return;
    }
    let (env, _, _, _) = setup();
    // A directory of incompressible files (as compressed files are).
    let files = env.path("files");
    std::fs::create_dir(&files).unwrap();
    for i in 0..12 {
        let mut noise = Vec::with_capacity(MIB);
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ i;
        while noise.len() < MIB {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            noise.extend_from_slice(&state.to_le_bytes());
        }
        std::fs::write(files.join(format!("archive{i}.zst")), noise).unwrap();
    }
    let img = env.path("fs.img").display().to_string();
    let (ok, text) = run_tool(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            files.to_str().unwrap(),
            &img,
            "16M",
        ],
    );
    assert!(ok, "mke2fs: {text}");
    env.ok(&[
        "backup",
        "fs.img",
        "fs.vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
    ]);
    assert_eq!(env.hash("fs.vol", "alice.k1"), b3(&bytes(&env, "fs.img")));
}

// ------------------------------------------------------------ case 12

#[test]
fn case_12_a_volume_written_through_map_verifies_as_modified_not_tampered() {
    if !have_tools("case_12", &["qemu-io"]) {
        return;
    }
    let (env, _, pa, _) = setup();
    env.ok(&with_k(&["backup", "orig.vol", "copy.vol"], &pa));
    let version = env.info("copy.vol")["data_version"].as_u64().unwrap();
    // A map that writes nothing leaves the data version as it was.
    let m = Mapped::start(&env, "m0.sock", &with_k(&["copy.vol"], &pa));
    let (status, log) = m.stop();
    assert!(status.success(), "{log}");
    assert_eq!(env.info("copy.vol")["data_version"], version);
    env.ok(&with_k(&["verify", "copy.vol"], &pa));
    let m = Mapped::start(&env, "m.sock", &with_k(&["copy.vol"], &pa));
    let (ok, text) = run_tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x41 0 8192", &m.uri()],
    );
    assert!(ok, "qemu-io: {text}");
    let (status, log) = m.stop();
    assert!(status.success(), "{log}");
    let info = env.info("copy.vol");
    assert_eq!(info["modified_since_backup"], true, "{info}");
    assert_eq!(info["data_version"].as_u64(), Some(version + 1));
    let out = env.ok(&with_k(&["verify", "copy.vol"], &pa));
    assert!(out.contains("modified since its backup"), "{out}");
}

// ------------------------------------------------------------ case 13

#[test]
fn case_13_control_characters_in_labels_do_not_reach_the_terminal() {
    let (env, _, _, _) = setup();
    env.ok(&[
        "create",
        "l.vol",
        "--owner",
        "alice.k1",
        "--size",
        "4M",
        "--label",
        "a\u{1b}[31mred\u{7}",
    ]);
    let out = env.ok(&["info", "l.vol"]);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("a\\x1b[31mred\\x07"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["info", "l.vol", "--json"])).unwrap();
    assert_eq!(json["label"], "a\u{1b}[31mred\u{7}");
}

// ------------------------------------------------------------ case 15

#[test]
fn case_15_wrong_kinds_of_argument_say_what_the_file_is_and_exit_2() {
    let (env, _, pa, _) = setup();
    let (_, err) = env.expect(2, &["info", "orig.raw"]);
    assert!(err.contains("orig.raw is plain data"), "{err}");
    env.ok(&with_k(&["backup", "orig.vol", "--stream", "s.evfs"], &pa));
    let (_, err) = env.expect(2, &["check", "s.evfs"]);
    assert!(
        err.contains("is a backup stream, not an EVFS volume"),
        "{err}"
    );
    let (_, err) = env.expect(2, &["restore", "orig.vol", "x.img"]);
    assert!(
        err.contains("orig.vol is an EVFS volume, not a backup stream"),
        "{err}"
    );
    assert!(!env.path("x.img").exists());
    let (_, err) = env.expect(2, &["verify", "orig.raw"]);
    assert!(err.contains("plain data"), "{err}");
    // The source named when -k is given with a plain source and no volume.
    let (_, err) = env.expect(2, &with_k(&["backup", "orig.raw", "new.vol"], &pa));
    assert!(
        err.contains("-k can only name") && !err.contains("--target-key"),
        "{err}"
    );
}

#[test]
fn case_15_check_on_a_volume_in_use_names_the_process() {
    let (env, _, pa, _) = setup();
    let m = Mapped::start(&env, "m.sock", &with_k(&["orig.vol"], &pa));
    let (_, err) = env.expect(1, &["check", "orig.vol"]);
    assert!(
        err.contains("in use by process") && err.contains("map"),
        "{err}"
    );
    assert!(!err.contains("not been properly shut down"), "{err}");
    let (status, log) = m.stop();
    assert!(status.success(), "{log}");
    env.ok(&["check", "orig.vol"]);
}

// ------------------------------------------------------------ case 16

#[test]
fn case_16_json_prints_one_object_on_every_exit() {
    let (env, _, pa, _) = setup();
    let json = |out: &str| -> serde_json::Value {
        assert_eq!(out.lines().count(), 1, "one object: {out}");
        serde_json::from_str(out).unwrap()
    };
    let (out, _) = env.expect(1, &["info", "missing.vol", "--json"]);
    let v = json(&out);
    assert_eq!(
        (v["ok"].as_bool(), v["exit"].as_u64()),
        (Some(false), Some(1))
    );
    assert!(v["error"].as_str().unwrap().contains("missing.vol"));
    let (out, _) = env.expect(2, &["info", "orig.raw", "--json"]);
    assert_eq!(json(&out)["exit"], 2);
    std::fs::write(env.path("foreign"), vec![7u8; 8 * MIB]).unwrap();
    let (out, _) = env.expect(
        3,
        &with_k(&["backup", "orig.vol", "foreign", "--json"], &pa),
    );
    let v = json(&out);
    assert_eq!(v["exit"], 3);
    assert!(v["hint"].as_str().unwrap().contains("--force"));
    // Where stdout carries data, the object goes to stderr.
    let out = env
        .cmd(&["backup", "orig.vol", "-", "-k", "alice.k1", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line on stderr");
    assert_eq!(json(line)["exit"], 4);
    // verify and check merge it into their report.
    let mut img = bytes(&env, "orig.vol");
    img[MIB + 10] ^= 1;
    std::fs::write(env.path("bad.vol"), &img).unwrap();
    let (out, _) = env.expect(5, &with_k(&["verify", "bad.vol", "--json"], &pa));
    let v = json(&out);
    assert_eq!(
        (v["ok"].as_bool(), v["exit"].as_u64()),
        (Some(false), Some(5))
    );
    assert!(v["checks"].as_array().is_some_and(|c| !c.is_empty()), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("does NOT match"),
        "{v}"
    );
}

// ------------------------------------------------------------ case 17

#[test]
fn case_17_the_same_key_for_source_and_target_is_unlocked_once() {
    let (env, _, pa, _) = setup();
    env.create("own.vol", "alice.k1", "8M");
    // No stored passphrase, no terminal: a second unlock would fail (4).
    let out = env
        .cmd(&[
            "backup",
            "orig.vol",
            "own.vol",
            "-k",
            "alice.k1",
            "--passphrase-file",
            "-",
            "--target-key",
            "alice.k1",
        ])
        .write_stdin(std::fs::read(&pa).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&with_k(
        &["verify", "own.vol", "--against", "orig.vol"],
        &pa,
    ));
}

// ------------------------------------------------------------ case 18

#[test]
fn case_18_a_plain_source_is_recorded_as_plain_data_of_its_size() {
    let (env, data, _, _) = setup();
    let info = env.info("orig.vol");
    let p = &info["provenance"];
    assert_eq!(p["source"], "plain");
    assert!(p["source_uuid"].is_null(), "{p}");
    assert_eq!(p["bytes"], data.len());
    let text = env.ok(&["info", "orig.vol"]);
    assert!(
        text.contains(&format!(
            "encrypted from plain data of {} bytes",
            data.len()
        )),
        "{text}"
    );
    assert!(!text.contains("00000000-0000"), "{text}");
    let raw = bytes(&env, "orig.vol");
    assert!(
        !crate::common::contains(&raw, b"orig.raw"),
        "the EMD names no path"
    );
}

// ------------------------------------------------------------ case 19

#[test]
fn case_19_hash_into_a_closed_pipe_is_not_an_error() {
    let (env, _, pa, _) = setup();
    let mut child = env
        .process(&with_k(&["hash", "orig.vol"], &pa))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------ case 20

#[test]
fn case_20_enabling_a_dirty_volume_warns() {
    let (env, _, pa, _) = setup();
    env.ok(&with_k(&["disable", "orig.vol"], &pa));
    let mut img = bytes(&env, "orig.vol");
    let emd = evfs::emd::format::Emd::parse(&img[..16384]).unwrap();
    let mut dirty = emd.clone();
    dirty.dirty = true;
    img[..16384].copy_from_slice(&dirty.encode()[..]);
    std::fs::write(env.path("orig.vol"), &img).unwrap();
    let (_, err) = env.expect(0, &with_k(&["enable", "orig.vol"], &pa));
    assert!(
        err.contains("warning") && err.contains("evfs check orig.vol"),
        "{err}"
    );
}

// ------------------------------------------------------------ formats

/// A copy of the committed version-1 samples, with the key file's mode set
/// (git keeps no modes).
fn v1_samples() -> Env {
    let env = Env::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/data/v1");
    for f in [
        "plain.bin",
        "pass.txt",
        "volume.img",
        "stream.evfs",
        "stream-compressed.evfs",
    ] {
        std::fs::copy(src.join(f), env.path(f)).unwrap();
    }
    let user = env.keystore().join("sample");
    std::fs::create_dir_all(&user).unwrap();
    for f in ["owner.pub", "owner.priv"] {
        std::fs::copy(src.join("keystore/sample").join(f), user.join(f)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for (p, mode) in [
        (env.keystore(), 0o700),
        (user.clone(), 0o700),
        (user.join("owner.priv"), 0o600),
        (user.join("owner.pub"), 0o644),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    env
}

/// The version-1 streams were made from the padded 8192-byte data area.
const V1_STREAM_DIGEST: &str = "8c569cc3d3befacfd1aec59ae58fab7d7a7b9a088c1a536cb1e12a7128ab0181";

#[test]
fn formats_version_1_volumes_and_streams_are_still_read() {
    let env = v1_samples();
    let key = ["-k", "sample.owner", "--passphrase-file", "pass.txt"];
    let with = |args: &[&str], extra: &[&str]| -> Vec<String> {
        args.iter()
            .chain(&key)
            .chain(extra)
            .map(|a| a.to_string())
            .collect()
    };
    let run = |code: i32, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.expect(code, &args)
    };
    let info = env.info("volume.img");
    assert_eq!(info["format_version"], 1);
    assert_eq!(info["signed_by"], serde_json::Value::Null);
    // Version 1 knew no signatures: unlocking one is refused, naming the
    // way out, until it is signed or --allow-unsigned accepts it.
    let (_, err) = run(5, with(&["hash", "volume.img"], &[]));
    assert!(
        err.contains("is not signed") && err.contains("evfs emd sign volume.img"),
        "{err}"
    );
    // The volume's provenance counts the plain source's exact bytes: its
    // hash is now `b3sum plain.bin`.
    let plain = b3(&bytes(&env, "plain.bin"));
    assert_eq!(info["data_length"], 4940);
    let (hash, _) = run(0, with(&["hash", "volume.img"], &["--allow-unsigned"]));
    assert!(hash.starts_with(&plain), "{hash}");
    run(0, with(&["verify", "volume.img"], &["--allow-unsigned"]));
    env.ok(&["check", "volume.img"]);
    for s in ["stream.evfs", "stream-compressed.evfs"] {
        // Unsigned streams: with -k a signature is required.
        run(5, with(&["verify", s], &[]));
        let (out, _) = run(0, with(&["verify", s], &["--json", "--allow-unsigned"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["plaintext_blake3"], V1_STREAM_DIGEST, "{s}");
        assert_eq!(v["signed_by"], serde_json::Value::Null, "{s}");
        let target = format!("{s}.restored");
        run(0, with(&["restore", s, &target], &["--allow-unsigned"]));
        let (hash, _) = run(0, with(&["hash", &target], &["--allow-unsigned"]));
        assert!(hash.starts_with(V1_STREAM_DIGEST), "{s}: {hash}");
    }
    // `emd sign` by a key holder moves a version-1 volume to version 2,
    // signed; from then on it unlocks without --allow-unsigned.
    run(0, with(&["emd", "sign", "volume.img"], &[]));
    let info = env.info("volume.img");
    assert_eq!(info["format_version"], 2);
    assert_eq!(info["signed_by"]["id"], "sample.owner");
    assert_eq!(info["signed_by"]["trusted"], true);
    run(0, with(&["disable", "volume.img"], &[]));
    run(0, with(&["enable", "volume.img"], &[]));
    let (hash, _) = run(0, with(&["hash", "volume.img"], &[]));
    assert!(hash.starts_with(&plain), "{hash}");
}

#[test]
fn formats_a_newer_version_is_refused_as_a_newer_format() {
    let (env, _, pa, _) = setup();
    env.ok(&with_k(&["backup", "orig.vol", "--stream", "s.evfs"], &pa));
    // Version 3 of the EMD, checksum fixed up, in both copies.
    let mut img = bytes(&env, "orig.vol");
    let len = img.len();
    let backup_at = (len & !4095) - 16384;
    for at in [0, backup_at] {
        let copy = &mut img[at..at + 16384];
        copy[8] = 3;
        let sum = blake3::hash(&copy[..16352]);
        copy[16352..].copy_from_slice(sum.as_bytes());
    }
    std::fs::write(env.path("new.vol"), &img).unwrap();
    let (_, err) = env.expect(5, &["info", "new.vol"]);
    assert!(err.contains("newer format"), "{err}");
    // Version 4 of the stream (this evfs writes 3).
    let mut s = bytes(&env, "s.evfs");
    s[8] = 4;
    std::fs::write(env.path("new.evfs"), &s).unwrap();
    let (out, err) = env.expect(5, &["verify", "new.evfs"]);
    assert!(format!("{out}{err}").contains("newer format"), "{out}{err}");
    let (_, err) = env.expect(5, &["restore", "new.evfs", "r.vol"]);
    assert!(err.contains("newer format"), "{err}");
    assert!(!env.path("r.vol").exists());
}

/// The committed samples of the current version read as they were made.
#[test]
fn formats_version_2_samples_are_read() {
    let env = Env::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/data/v2");
    for f in ["volume.img", "stream.evfs"] {
        std::fs::copy(src.join(f), env.path(f)).unwrap();
    }
    let plain = std::fs::read(src.join("plain.bin")).unwrap();
    let info = env.info("volume.img");
    assert_eq!(info["format_version"], 2);
    assert_eq!(info["data_length"], plain.len());
    assert_eq!(info["provenance"]["plaintext_blake3"], b3(&plain));
    assert_eq!(info["signed_by"]["id"], "sample.owner");
    assert_eq!(info["signed_by"]["fingerprint"], "b3:b00a968b47418956");
    // An empty keystore trusts nobody: the signature is reported valid,
    // not trusted, and keyless verify exits on integrity alone.
    assert_eq!(info["signed_by"]["trusted"], false);
    assert_eq!(info["signed_by"]["valid"], true);
    let out = env.ok(&["verify", "stream.evfs", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["plaintext_blake3"], b3(&plain));
    assert_eq!(v["signed_by"]["id"], "sample.owner");
    assert_eq!(v["signed_by"]["valid"], true);
    env.expect(5, &["verify", "stream.evfs", "--require-signature"]);
    env.ok(&["verify", "stream.evfs", "--trust", "b3:b00a968b47418956"]);
    // Disaster recovery: a new target on a host that trusts nobody.
    let (_, err) = env.expect(0, &["restore", "stream.evfs", "r.vol"]);
    assert!(err.contains("authenticity was not checked"), "{err}");
    assert_eq!(
        env.info("r.vol")["provenance"]["plaintext_blake3"],
        b3(&plain)
    );
    let _ = std::io::stderr().flush();
}

/// The committed stream of the current version (3) reads as it was made,
/// and its chunk index makes it the base of an incremental stream of the
/// volume it was made from.
#[test]
fn formats_version_3_samples_are_read_and_are_a_base() {
    let env = v1_samples();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/data");
    std::fs::copy(data.join("v2/volume.img"), env.path("src.img")).unwrap();
    std::fs::copy(data.join("v3/stream.evfs"), env.path("s3.evfs")).unwrap();
    let plain = std::fs::read(data.join("v2/plain.bin")).unwrap();
    let k = ["-k", "sample.owner", "--passphrase-file", "pass.txt"];
    let with =
        |args: &[&'static str]| -> Vec<&'static str> { args.iter().chain(&k).copied().collect() };
    let out = env.ok(&with(&["verify", "s3.evfs"]));
    assert!(
        out.contains("chunk index opened with the volume key: 1 chunk,"),
        "{out}"
    );
    assert!(out.contains(&b3(&plain)), "{out}");
    let out = env.ok(&with(&[
        "backup", "src.img", "--stream", "i.evfs", "--since", "s3.evfs", "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["chunks_unchanged"], 1, "{r}");
    assert_eq!(r["chunks_written"], 0, "{r}");
    env.ok(&with(&["restore", "s3.evfs", "i.evfs", "r.vol"]));
    assert_eq!(
        env.info("r.vol")["provenance"]["plaintext_blake3"],
        b3(&plain)
    );
}

// ------------------------------------------------------------ read-through

/// A restore replaces only the stream's own volume or its source (the
/// rollback check decides); another copy of the source (a volume with its
/// own EMD filled from it, or another clone) keeps its UUID, keys and data
/// unless --force.
#[test]
fn a_restore_does_not_take_over_another_copy_of_the_source() {
    let (env, _, pa, pb) = setup();
    env.ok(&[
        "create",
        "bobs.vol",
        "--owner",
        "bob",
        "--passphrase-file",
        &pb,
        "--size",
        "8M",
    ]);
    env.ok(&[
        "backup",
        "orig.vol",
        "bobs.vol",
        "--target-key",
        "bob",
        "--target-passphrase-file",
        &pb,
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.ok(&with_k(&["backup", "orig.vol", "clone.vol"], &pa));
    env.ok(&with_k(&["backup", "orig.vol", "--stream", "s.evfs"], &pa));
    for vol in ["bobs.vol", "clone.vol"] {
        let before = bytes(&env, vol);
        let (_, err) = env.expect(3, &["restore", "s.evfs", vol]);
        assert!(
            err.contains("another copy of the stream's source"),
            "{vol}: {err}"
        );
        assert!(before == bytes(&env, vol), "{vol} was written");
    }
    env.ok(&["restore", "s.evfs", "clone.vol", "--force"]);
}

/// A source holding an unfinished restore is part old, part new: a copy
/// of it, decrypted or raw, is refused (exit 3) and nothing is made.
#[test]
fn a_source_with_an_unfinished_restore_is_not_copied_as_if_whole() {
    let (env, _, pa, _) = setup();
    env.ok(&with_k(&["backup", "orig.vol", "--stream", "s.evfs"], &pa));
    let s = bytes(&env, "s.evfs");
    std::fs::write(env.path("cut.evfs"), &s[..s.len() / 2]).unwrap();
    let out = env.bash("$EVFS restore - half.vol < cut.evfs");
    assert_eq!(out.status.code(), Some(5));
    env.expect(6, &["check", "half.vol"]);
    let (_, err) = env.expect(3, &with_k(&["backup", "half.vol", "copy.vol"], &pa));
    assert!(err.contains("unfinished restore"), "{err}");
    assert!(!env.path("copy.vol").exists());
    env.expect(3, &["backup", "half.vol", "raw.vol", "--raw"]);
    assert!(!env.path("raw.vol").exists());
}

/// A volume file cut short: `check` says so (exit 5) and `check -r`
/// writes nothing (its backup copy's place lies inside the data area).
#[test]
fn check_r_does_not_write_into_the_data_of_a_volume_cut_short() {
    let (env, _, _, _) = setup();
    let whole = bytes(&env, "orig.vol");
    std::fs::write(env.path("cut.vol"), &whole[..3 * MIB]).unwrap();
    let (out, err) = env.expect(5, &["check", "cut.vol"]);
    assert!(
        format!("{out}{err}").contains("shorter than its EMD says"),
        "{out}{err}"
    );
    let (out, err) = env.expect(5, &["check", "-r", "cut.vol"]);
    assert!(format!("{out}{err}").contains("cut short"), "{out}{err}");
    assert!(bytes(&env, "cut.vol") == whole[..3 * MIB], "check -r wrote");
}

/// Case 16 for the command line itself: a usage error that the parser
/// finds (a missing argument, an unknown flag) prints one JSON object
/// with --json too, exit 2.
#[test]
fn case_16_a_usage_error_prints_one_json_object_too() {
    let env = Env::new();
    for args in [
        &["backup", "--json"][..],
        &["info", "--json", "--bogus", "x"][..],
    ] {
        let (out, err) = env.expect(2, args);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!("{args:?}: not one JSON object ({e}): {out:?}; stderr {err}")
        });
        assert_eq!(v["ok"], false);
        assert_eq!(v["exit"], 2);
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("usage error"))
        );
    }
}
