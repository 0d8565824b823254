//! Changed-only refreshes: a backup into a target that holds the chunk
//! index of its last backup re-encrypts and writes only the chunks whose
//! source changed, and still records the digest of the whole plaintext.
//! Killed part-way, it leaves the target dirty, and a re-run completes it.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Env, b3, mixed_data};

const CHUNK: usize = 1 << 20;
const SECTOR: usize = 4096;
const DATA_OFFSET: usize = 1 << 20;

/// Pick `n` distinct chunks of `chunks` (a fixed xorshift sequence).
fn pick(chunks: usize, n: usize, seed: u64) -> BTreeSet<usize> {
    let mut state = seed | 1;
    let mut out = BTreeSet::new();
    while out.len() < n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.insert((state % chunks as u64) as usize);
    }
    out
}

/// Change a few bytes in the second sector of each chunk of `which`; the
/// sectors changed (as data-area sector numbers).
fn change(data: &mut [u8], which: &BTreeSet<usize>, round: u8) -> BTreeSet<usize> {
    let mut sectors = BTreeSet::new();
    for &c in which {
        let len = data.len();
        let at = (c * CHUNK + SECTOR + 100).min(len - 1);
        for b in &mut data[at..(at + 8).min(len)] {
            *b = b.wrapping_add(round).wrapping_add(1);
        }
        sectors.insert(at / SECTOR);
    }
    sectors
}

/// The data area of a volume file, in 4 KiB sectors.
fn sectors(env: &Env, vol: &str, len: usize) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(env.path(vol)).unwrap();
    bytes[DATA_OFFSET..DATA_OFFSET + len.next_multiple_of(SECTOR)]
        .chunks(SECTOR)
        .map(<[u8]>::to_vec)
        .collect()
}

fn differing(a: &[Vec<u8>], b: &[Vec<u8>]) -> BTreeSet<usize> {
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i)
        .collect()
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).expect("--json output is JSON")
}

struct Setup {
    env: Env,
    data: Vec<u8>,
    k: Vec<String>,
}

/// A source volume `src` of `len` bytes of mixed data (from `data.raw`),
/// and `copy`, a full backup of it.
fn setup(len: usize) -> Setup {
    let env = Env::on_tmpfs();
    let pw = env.gen_key("alice.k1");
    let data = env.volume_from_data("data.raw", "src", "alice.k1", len, 11);
    let k: Vec<String> = ["-k", "alice.k1", "--passphrase-file", &pw]
        .map(String::from)
        .to_vec();
    let s = Setup { env, data, k };
    let first = s.backup(&["src", "copy"]);
    assert_eq!(first["chunks_unchanged"], 0, "{first}");
    assert_eq!(first["chunks_total"], len.div_ceil(CHUNK), "{first}");
    s
}

impl Setup {
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = args.to_vec();
        v.extend(self.k.iter().map(String::as_str));
        v
    }

    fn backup(&self, args: &[&str]) -> serde_json::Value {
        let mut v = vec!["backup"];
        v.extend_from_slice(args);
        v.push("--json");
        json(&self.env.ok(&self.args(&v)))
    }

    /// Write `self.data` into the source volume, as a backup of plain data
    /// into it (itself a changed-only refresh of `src`).
    fn rewrite_source(&self) {
        std::fs::write(self.env.path("data.raw"), &self.data).unwrap();
        let pw = &self.k[3];
        self.env.ok(&[
            "backup",
            "data.raw",
            "src",
            "--target-key",
            "alice.k1",
            "--target-passphrase-file",
            pw,
        ]);
    }

    /// What `cat -k` decrypts of `vol`: every byte.
    fn cat(&self, vol: &str) -> Vec<u8> {
        let out = self
            .env
            .process(&self.args(&["cat", vol]))
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn recorded_digest(&self, vol: &str) -> String {
        let info = self.env.info(vol);
        info["provenance"]["plaintext_blake3"]
            .as_str()
            .unwrap_or_else(|| panic!("{vol} records no digest: {info}"))
            .to_string()
    }
}

#[test]
fn a_refresh_after_one_percent_of_random_changes_rewrites_only_those_chunks() {
    let len = 200 * CHUNK + 12345;
    let mut s = setup(len);
    let before = sectors(&s.env, "copy", len);
    let chunks = len.div_ceil(CHUNK);
    let which = pick(chunks, 2, 42);
    let changed = change(&mut s.data, &which, 0);
    s.rewrite_source();

    let r = s.backup(&["src", "copy"]);
    assert_eq!(r["chunks_total"], chunks, "{r}");
    assert_eq!(r["chunks_written"], which.len(), "{r}");
    assert_eq!(r["chunks_unchanged"], chunks - which.len(), "{r}");
    assert_eq!(r["bytes_read"], len, "{r}");
    let written = r["bytes_written"].as_u64().unwrap();
    assert!(written <= (which.len() * CHUNK) as u64, "{r}");
    assert!(
        written * 100 <= 3 * len as u64,
        "more than 3 % written: {r}"
    );

    // Only the sectors whose plaintext changed have other ciphertext.
    let after = sectors(&s.env, "copy", len);
    assert_eq!(differing(&before, &after), changed);

    // The digest recorded, printed, and of every byte decrypted: the new
    // plaintext's, as b3sum prints it.
    let want = b3(&s.data);
    assert_eq!(r["plaintext_blake3"], want.as_str());
    assert_eq!(s.recorded_digest("copy"), want);
    assert_eq!(b3(&s.cat("copy")), want);
    s.env.ok(&s.args(&["verify", "copy", "--against", "src"]));
    s.env.ok(&["check", "copy"]);
}

#[test]
fn an_unchanged_chunk_is_not_written_and_full_rewrites_it() {
    let len = 8 * CHUNK;
    let s = setup(len);
    // A sector of chunk 5 scribbled over behind evfs's back (as a write
    // through dm-crypt would be): a changed-only refresh does not see it,
    // since it does not write chunk 5; --full rewrites it.
    let path = s.env.path("copy");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = DATA_OFFSET + 5 * CHUNK + 7 * SECTOR;
    bytes[at..at + SECTOR].fill(0xee);
    std::fs::write(&path, &bytes).unwrap();

    let r = s.backup(&["src", "copy"]);
    assert_eq!(r["chunks_written"], 0, "{r}");
    assert_eq!(r["bytes_written"], 0, "{r}");
    let now = std::fs::read(&path).unwrap();
    assert!(now[at..at + SECTOR].iter().all(|&b| b == 0xee));

    let r = s.backup(&["src", "copy", "--full"]);
    assert_eq!(r["chunks_written"], 8, "{r}");
    assert_eq!(r["chunks_unchanged"], 0, "{r}");
    assert_eq!(b3(&s.cat("copy")), b3(&s.data));
}

#[test]
fn single_chunk_and_ragged_volumes_recombine_the_exact_digest() {
    for len in [1000, CHUNK, CHUNK + 1, 3 * CHUNK - 512] {
        let mut s = setup(len);
        // Unchanged: every chunk passed over, the digest still exact.
        let r = s.backup(&["src", "copy"]);
        assert_eq!(r["chunks_written"], 0, "{len}: {r}");
        assert_eq!(r["plaintext_blake3"], b3(&s.data).as_str(), "{len}");
        // The last chunk changed, the others not.
        let last = len.div_ceil(CHUNK) - 1;
        s.data[len - 1] ^= 0x55;
        s.rewrite_source();
        let r = s.backup(&["src", "copy"]);
        assert_eq!(r["chunks_written"], 1, "{len}: {r}");
        assert_eq!(r["chunks_unchanged"], last, "{len}: {r}");
        let want = b3(&s.data);
        assert_eq!(r["plaintext_blake3"], want.as_str(), "{len}");
        assert_eq!(b3(&s.cat("copy")), want, "{len}");
        assert_eq!(s.recorded_digest("copy"), want, "{len}");
    }
}

#[test]
fn a_plain_source_into_a_volume_with_its_own_key_refreshes_changed_chunks() {
    let env = Env::on_tmpfs();
    let pw = env.gen_key("alice.k1");
    env.create("vol", "alice.k1", "40M");
    let mut data = mixed_data(30 * CHUNK, 3);
    std::fs::write(env.path("data.raw"), &data).unwrap();
    let args = [
        "backup",
        "data.raw",
        "vol",
        "--target-key",
        "alice.k1",
        "--target-passphrase-file",
        &pw,
        "--json",
    ];
    let r = json(&env.ok(&args));
    assert_eq!(r["chunks_written"], 30, "{r}");
    data[17 * CHUNK + 5] ^= 1;
    std::fs::write(env.path("data.raw"), &data).unwrap();
    let r = json(&env.ok(&args));
    assert_eq!(r["chunks_written"], 1, "{r}");
    assert_eq!(r["plaintext_blake3"], b3(&data).as_str());
    assert_eq!(env.hash("vol", "alice.k1"), b3(&data));
}

#[test]
fn what_the_index_cannot_vouch_for_is_written_in_full() {
    let len = 6 * CHUNK;
    let s = setup(len);
    // A run with -v says why it writes every chunk.
    let full = |args: &[&str], why: &str| {
        let mut v = vec!["backup"];
        v.extend_from_slice(args);
        v.extend(["-v", "--json"]);
        let out = s
            .env
            .process(&s.args(&v))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains(why), "expected {why:?}: {err}");
        let r = json(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(r["chunks_unchanged"], 0, "{r}");
        assert_eq!(r["chunks_written"], 6, "{r}");
    };

    // A damaged index (a byte of its area flipped): its BLAKE3 in the EMD
    // no longer matches.
    let path = s.env.path("copy");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = DATA_OFFSET + len + 200;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    full(&["src", "copy"], "damaged or was changed");

    // Rekeyed: a fresh volume key, under which the index does not open.
    full(&["src", "copy", "--rekey"], "does not open with its key");
    // The refresh after it passes over everything again.
    let r = s.backup(&["src", "copy"]);
    assert_eq!(r["chunks_written"], 0, "{r}");
    full(&["src", "copy", "--full"], "--full");

    // A volume with its own key, backed up into from two sources holding
    // the same plaintext under two keys: the second one's chunks read
    // differently, and are all written.
    s.env.ok(&s.args(&["backup", "src", "other"]));
    s.env.create("vol", "alice.k1", "16M");
    s.backup(&["src", "vol", "--target-key", "alice.k1"]);
    let r = s.backup(&["src", "vol", "--target-key", "alice.k1"]);
    assert_eq!(r["chunks_written"], 0, "{r}");
    full(
        &["other", "vol", "--target-key", "alice.k1"],
        "came from another source",
    );
    assert_eq!(b3(&s.cat("vol")), b3(&s.data));
}

#[test]
fn killed_changed_only_refreshes_leave_the_target_dirty_and_a_rerun_completes_it() {
    let len = 96 * CHUNK;
    let mut s = setup(len);
    let chunks = len.div_ceil(CHUNK);
    let k: Vec<&str> = s.k.iter().map(String::as_str).collect();
    let mut dirty = 0;
    let mut previous = s.data.clone();
    for round in 0..8u8 {
        // A third of the chunks change, so that the refresh takes a while.
        let which = pick(chunks, chunks / 3, 100 + u64::from(round));
        change(&mut s.data, &which, round);
        s.rewrite_source();
        let mut args = vec!["backup", "src", "copy"];
        args.extend_from_slice(&k);
        // Time one run on a scratch clone of the target, then kill the
        // real one at a point spread over that time.
        std::fs::copy(s.env.path("copy"), s.env.path("scratch")).unwrap();
        let mut probe = vec!["backup", "src", "scratch"];
        probe.extend_from_slice(&k);
        let t = Instant::now();
        s.env.ok(&probe);
        let took = t.elapsed();
        let mut child = s
            .env
            .process(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(took.mul_f64(f64::from(round) / 8.0) + Duration::from_millis(5));
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert!(status.code().is_none_or(|c| c == 0), "{status}");
        let check = s.env.run(&["check", "copy"]);
        match check.status.code() {
            Some(6) => dirty += 1,
            // Not begun, or finished (or killed between the two copies of
            // the final EMD, where the newer, clean one is in force): the
            // last backup or this one, whole.
            Some(0) | Some(5) => {
                assert_eq!(s.env.info("copy")["dirty"], false);
                if check.status.code() == Some(5) {
                    s.env.ok(&["check", "-r", "copy"]);
                }
                let got = b3(&s.cat("copy"));
                assert!(
                    got == b3(&s.data) || got == b3(&previous),
                    "clean but wrong"
                );
                if got == b3(&s.data) {
                    previous = s.data.clone();
                }
                continue;
            }
            other => panic!("check exited {other:?}"),
        }
        // A mixed target is never clean; the re-run completes it (in full:
        // the index of an unfinished run is not trusted).
        let r = s.backup(&["src", "copy"]);
        assert_eq!(r["chunks_unchanged"], 0, "{r}");
        assert_eq!(r["plaintext_blake3"], b3(&s.data).as_str());
        assert_eq!(b3(&s.cat("copy")), b3(&s.data));
        s.env.ok(&["check", "copy"]);
        previous = s.data.clone();
    }
    assert!(dirty > 0, "no kill landed inside a refresh");
}

/// `restore` or `verify` as a child with all output, for exit codes.
fn run_code(s: &Setup, args: &[&str]) -> (Option<i32>, String) {
    let out = s.env.process(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

fn file_b3(s: &Setup, name: &str) -> String {
    b3(&std::fs::read(s.env.path(name)).unwrap())
}

/// A full stream with its manifest, and two incremental links after it,
/// each made after a change to the source (the second sparse and
/// compressed); returns the digests of the source after each link.
fn chain(s: &mut Setup, chunks: usize) -> Vec<String> {
    let mut digests = vec![];
    let r = s.backup(&["src", "--stream", "full.evfs", "--manifest", "full.man"]);
    assert_eq!(r["chunks_written"], chunks, "{r}");
    digests.push(b3(&s.data));
    let links = [
        ("i1.evfs", "full.man", "i1.man", &[][..]),
        (
            "i2.evfs",
            "i1.man",
            "i2.man",
            &["--sparse", "--compress"][..],
        ),
    ];
    for (round, (link, since, manifest, extra)) in links.into_iter().enumerate() {
        change(&mut s.data, &pick(chunks, 2, 7 + round as u64), round as u8);
        s.rewrite_source();
        let mut args = vec![
            "src",
            "--stream",
            link,
            "--since",
            since,
            "--manifest",
            manifest,
        ];
        args.extend_from_slice(extra);
        let r = s.backup(&args);
        assert_eq!(r["chunks_written"], 2, "{r}");
        assert_eq!(r["chunks_unchanged"], chunks - 2, "{r}");
        assert_eq!(r["plaintext_blake3"], b3(&s.data).as_str(), "{r}");
        // Two chunks at most, a header and a trailer of 16 KiB each.
        assert!(
            r["bytes_sent"].as_u64().unwrap() <= (2 * CHUNK + 40 * 1024) as u64,
            "an incremental stream of 2 chunks in {chunks}: {r}"
        );
        digests.push(b3(&s.data));
    }
    digests
}

#[test]
fn an_incremental_stream_chain_of_three_links_restores_to_the_source_and_verifies() {
    let chunks = 24;
    let mut s = setup(chunks * CHUNK - 777);
    let digests = chain(&mut s, chunks);

    // One run applies the chain; the result is the source's.
    s.env
        .ok(&s.args(&["restore", "full.evfs", "i1.evfs", "i2.evfs", "r.vol"]));
    assert_eq!(s.env.hash("r.vol", "alice.k1"), digests[2]);
    assert_eq!(b3(&s.cat("r.vol")), b3(&s.data));
    s.env.ok(&["check", "r.vol"]);
    // Link by link, each restore leaves the state of its backup.
    s.env.ok(&["restore", "full.evfs", "l.vol"]);
    for (i, link) in ["i1.evfs", "i2.evfs"].into_iter().enumerate() {
        s.env.ok(&s.args(&["restore", link, "l.vol"]));
        assert_eq!(s.env.hash("l.vol", "alice.k1"), digests[i + 1]);
    }

    // verify with the key recombines the chain's plaintext and checks
    // every link's digest; without it, the links and every frame.
    let out = s
        .env
        .ok(&s.args(&["verify", "full.evfs", "i1.evfs", "i2.evfs", "--json"]));
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["plaintext_blake3"], digests[2].as_str(), "{v}");
    assert!(
        out.contains("the chain restores to plaintext BLAKE3"),
        "{out}"
    );
    s.env.ok(&["verify", "full.evfs", "i1.evfs", "i2.evfs"]);
}

#[test]
fn a_link_out_of_place_is_refused_and_changes_nothing() {
    let chunks = 8;
    let mut s = setup(chunks * CHUNK);
    chain(&mut s, chunks);
    s.env.ok(&["restore", "full.evfs", "t.vol"]);
    let before = file_b3(&s, "t.vol");

    // The second link onto the full one's state: a link is missing.
    let (code, out) = run_code(&s, &s.args(&["restore", "i2.evfs", "t.vol"]));
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("applies onto state") && out.contains("t.vol holds state"),
        "{out}"
    );
    assert_eq!(file_b3(&s, "t.vol"), before, "a refused link wrote");
    // Onto nothing: no volume is made.
    let (code, out) = run_code(&s, &["restore", "i1.evfs", "new.vol"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(!s.env.path("new.vol").exists());
    // Onto a volume written since its base (a backup into it).
    s.env.ok(&["restore", "full.evfs", "w.vol"]);
    let pw = s.k[3].clone();
    s.env.ok(&[
        "backup",
        "data.raw",
        "w.vol",
        "--target-key",
        "alice.k1",
        "--target-passphrase-file",
        &pw,
    ]);
    let written = file_b3(&s, "w.vol");
    let (code, out) = run_code(&s, &s.args(&["restore", "i1.evfs", "w.vol"]));
    assert_eq!(code, Some(3), "{out}");
    assert_eq!(file_b3(&s, "w.vol"), written);

    // A chain with a gap, a repeat or links out of order: exit 5 naming the
    // link, before anything is written.
    for (links, says) in [
        (
            &["full.evfs", "i2.evfs"][..],
            "link 2 of the chain (i2.evfs)",
        ),
        (&["full.evfs", "i1.evfs", "i1.evfs"][..], "it is repeated"),
        (
            &["full.evfs", "i2.evfs", "i1.evfs"][..],
            "link 2 of the chain (i2.evfs)",
        ),
        (&["i1.evfs", "full.evfs"][..], "not an incremental one"),
    ] {
        let mut args = vec!["restore"];
        args.extend_from_slice(links);
        args.push("c.vol");
        let (code, out) = run_code(&s, &args);
        assert_eq!(code, Some(5), "{links:?}: {out}");
        assert!(out.contains(says), "{links:?}: {out}");
        assert!(!s.env.path("c.vol").exists(), "{links:?} wrote");
        let mut args = vec!["verify"];
        args.extend_from_slice(links);
        let (code, out) = run_code(&s, &args);
        assert_eq!(code, Some(5), "verify {links:?}: {out}");
        assert!(out.contains(says), "verify {links:?}: {out}");
    }
}

#[test]
fn an_incremental_stream_since_a_backup_volume_applies_onto_copies_of_it() {
    let chunks = 6;
    let mut s = setup(chunks * CHUNK);
    std::fs::copy(s.env.path("copy"), s.env.path("replica")).unwrap();
    change(&mut s.data, &pick(chunks, 1, 5), 0);
    s.rewrite_source();
    let r = s.backup(&["src", "--stream", "inc.evfs", "--since", "copy"]);
    assert_eq!(r["chunks_written"], 1, "{r}");
    // Applied onto a copy of the base (the base itself is busy being the
    // nightly target elsewhere).
    s.env.ok(&s.args(&["restore", "inc.evfs", "replica"]));
    assert_eq!(s.env.hash("replica", "alice.k1"), b3(&s.data));
    // A raw clone of the base carries its chunk index too.
    s.env.ok(&["backup", "copy", "raw.vol", "--raw"]);
    let r = s.backup(&["src", "--stream", "inc2.evfs", "--since", "raw.vol"]);
    assert_eq!(r["chunks_written"], 1, "{r}");
    // A base that is not a backup of the source is refused.
    let (code, out) = run_code(
        &s,
        &s.args(&["backup", "copy", "--stream", "x.evfs", "--since", "src"]),
    );
    assert_eq!(code, Some(3), "{out}");
}

#[test]
fn a_killed_incremental_restore_leaves_the_target_dirty_and_a_rerun_completes_it() {
    let chunks = 64;
    let mut s = setup(chunks * CHUNK);
    let r = s.backup(&["src", "--stream", "full.evfs", "--manifest", "full.man"]);
    assert_eq!(r["chunks_written"], chunks);
    change(&mut s.data, &pick(chunks, chunks / 2, 77), 3);
    s.rewrite_source();
    s.backup(&["src", "--stream", "inc.evfs", "--since", "full.man"]);
    s.env.ok(&["restore", "full.evfs", "base.vol"]);
    let t = Instant::now();
    std::fs::copy(s.env.path("base.vol"), s.env.path("probe.vol")).unwrap();
    s.env.ok(&["restore", "inc.evfs", "probe.vol"]);
    let took = t.elapsed();
    let mut dirty = 0;
    for i in 0..6u32 {
        std::fs::copy(s.env.path("base.vol"), s.env.path("t.vol")).unwrap();
        let mut child = s
            .env
            .process(&s.args(&["restore", "inc.evfs", "t.vol"]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(took.mul_f64(f64::from(i) / 6.0));
        let _ = child.kill();
        child.wait().unwrap();
        match s.env.run(&["check", "t.vol"]).status.code() {
            Some(6) => {
                dirty += 1;
                // The same stream again completes it (reading the whole
                // volume back, with the key); without the key it cannot.
                let (code, out) = run_code(&s, &["restore", "inc.evfs", "t.vol"]);
                assert_eq!(code, Some(4), "{out}");
                s.env.ok(&s.args(&["restore", "inc.evfs", "t.vol"]));
            }
            Some(0) => {}
            other => panic!("check exited {other:?}"),
        }
        s.env.ok(&["check", "t.vol"]);
        let got = s.env.hash("t.vol", "alice.k1");
        // Not begun (the base, clean), or complete: never clean and mixed.
        assert!(got == b3(&s.data) || got == s.env.hash("base.vol", "alice.k1"));
        if got != b3(&s.data) {
            s.env.ok(&s.args(&["restore", "inc.evfs", "t.vol"]));
            assert_eq!(s.env.hash("t.vol", "alice.k1"), b3(&s.data));
        }
    }
    assert!(dirty > 0, "no kill landed inside the restore");
}

/// A source whose data shrinks inside its last sector reads the same
/// sectors of ciphertext: the data length in the tag tells them apart, so
/// the last chunk is rewritten and the digest is the new data's.
#[test]
fn data_that_shrinks_inside_its_last_sector_is_not_taken_for_unchanged() {
    let text = mixed_data(2_000_000, 9);
    let mut s = setup(2_000_100);
    s.data = text.iter().copied().chain([0u8; 100]).collect();
    s.rewrite_source();
    s.backup(&["src", "copy"]);
    s.backup(&["src", "--stream", "full.evfs", "--manifest", "full.man"]);
    s.data = text;
    s.rewrite_source();
    let r = s.backup(&["src", "copy"]);
    assert_eq!(r["chunks_written"], 1, "{r}");
    assert_eq!(r["plaintext_blake3"], b3(&s.data).as_str());
    assert_eq!(s.env.hash("copy", "alice.k1"), b3(&s.data));
    s.env.ok(&s.args(&["verify", "copy"]));
    let r = s.backup(&["src", "--stream", "i.evfs", "--since", "full.man"]);
    assert_eq!(r["chunks_written"], 1, "{r}");
    s.env.ok(&s.args(&["verify", "full.evfs", "i.evfs"]));
    s.env
        .ok(&s.args(&["restore", "full.evfs", "i.evfs", "r.vol"]));
    assert_eq!(s.env.hash("r.vol", "alice.k1"), b3(&s.data));
}

/// A forged link whose frames pass their own checksums is written from a
/// pipe before its trailer fails; completing "the interrupted restore"
/// with the genuine link then reads the volume back and refuses to call
/// the mixture clean.
#[test]
fn completing_an_interrupted_incremental_restore_checks_the_whole_volume() {
    let chunks = 6;
    let mut s = setup(chunks * CHUNK);
    s.backup(&["src", "--stream", "full.evfs", "--manifest", "full.man"]);
    change(&mut s.data, &[1].into_iter().collect(), 0);
    s.rewrite_source();
    s.backup(&["src", "--stream", "i.evfs", "--since", "full.man"]);
    s.env.ok(&["restore", "full.evfs", "t.vol"]);

    // Frame 0 (chunk 1) moved to chunk 4, its checksum made again.
    let mut forged = std::fs::read(s.env.path("i.evfs")).unwrap();
    let at = 16544;
    assert_eq!(&forged[at..at + 4], b"EVFR");
    forged[at + 8..at + 16].copy_from_slice(&4u64.to_le_bytes());
    forged[at + 16..at + 24].copy_from_slice(&(4 * CHUNK as u64).to_le_bytes());
    let len = u32::from_le_bytes(forged[at + 28..at + 32].try_into().unwrap()) as usize;
    let hash = blake3::hash(&forged[at..at + 32 + len]);
    forged[at + 32 + len..at + 64 + len].copy_from_slice(hash.as_bytes());
    let out = s
        .env
        .process(&s.args(&["restore", "-", "t.vol"]))
        .stdin(
            std::fs::File::open({
                std::fs::write(s.env.path("forged.evfs"), &forged).unwrap();
                s.env.path("forged.evfs")
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.env.run(&["check", "t.vol"]).status.code(), Some(6));

    let (code, out) = run_code(&s, &s.args(&["restore", "i.evfs", "t.vol"]));
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("an earlier attempt wrote other data"), "{out}");
    assert_eq!(s.env.run(&["check", "t.vol"]).status.code(), Some(6));
}

/// A manifest that cannot be written fails the backup before its stream
/// is: no stream is left without the manifest the next night needs.
#[test]
fn a_manifest_that_cannot_be_written_leaves_no_stream() {
    let s = setup(2 * CHUNK);
    let (code, out) = run_code(
        &s,
        &s.args(&[
            "backup",
            "src",
            "--stream",
            "s.evfs",
            "--manifest",
            "no/such/dir/s.man",
        ]),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(!s.env.path("s.evfs").exists());
    // A truncated manifest says so.
    s.backup(&["src", "--stream", "f.evfs", "--manifest", "f.man"]);
    let whole = std::fs::read(s.env.path("f.man")).unwrap();
    std::fs::write(s.env.path("cut.man"), &whole[..100]).unwrap();
    let (code, out) = run_code(
        &s,
        &s.args(&["backup", "src", "--stream", "x.evfs", "--since", "cut.man"]),
    );
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("truncated"), "{out}");
}

/// Every stream of an EVFS volume carries its chunk index (stream format
/// version 3): a stream file is a base for the next incremental stream,
/// read from its end, and a stream coming down a pipe is read through.
#[test]
fn a_stream_file_or_pipe_is_the_base_of_the_next_incremental_stream() {
    let chunks = 12;
    let mut s = setup(chunks * CHUNK - 1000);
    let r = s.backup(&["src", "--stream", "full.evfs"]);
    assert_eq!(r["chunks_written"], chunks, "{r}");
    let mut digests = vec![b3(&s.data)];
    change(&mut s.data, &pick(chunks, 2, 21), 0);
    s.rewrite_source();
    let r = s.backup(&["src", "--stream", "i1.evfs", "--since", "full.evfs"]);
    assert_eq!(r["chunks_written"], 2, "{r}");
    assert_eq!(r["chunks_unchanged"], chunks - 2, "{r}");
    digests.push(b3(&s.data));
    // The incremental link is a base too, here down a pipe.
    change(&mut s.data, &pick(chunks, 1, 22), 1);
    s.rewrite_source();
    let pw = &s.k[3];
    let out = s.env.bash(&format!(
        "$EVFS backup src --stream i2.evfs --since <(cat i1.evfs) -k alice.k1 --passphrase-file {pw} --json"
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["chunks_written"], 1, "{r}");
    digests.push(b3(&s.data));

    s.env
        .ok(&s.args(&["restore", "full.evfs", "i1.evfs", "i2.evfs", "r.vol"]));
    assert_eq!(s.env.hash("r.vol", "alice.k1"), digests[2]);
    assert_eq!(b3(&s.cat("r.vol")), digests[2]);
    let out = s
        .env
        .ok(&s.args(&["verify", "full.evfs", "i1.evfs", "i2.evfs"]));
    assert!(
        out.contains("chunk index opened with the volume key: 12 chunks"),
        "{out}"
    );
}

/// A volume made by a restore holds the stream's chunk index: it is a base
/// for an incremental stream and a target for changed-only refreshes.
#[test]
fn a_restored_volume_is_a_base_and_its_refresh_writes_only_changed_chunks() {
    let chunks = 8;
    let mut s = setup(chunks * CHUNK);
    s.backup(&["src", "--stream", "full.evfs"]);
    s.env.ok(&["restore", "full.evfs", "r.vol"]);
    s.env.ok(&["restore", "full.evfs", "r2.vol"]);
    let changed = change(&mut s.data, &pick(chunks, 1, 31), 0);
    s.rewrite_source();
    let r = s.backup(&["src", "--stream", "i.evfs", "--since", "r.vol"]);
    assert_eq!(r["chunks_written"], 1, "{r}");
    s.env.ok(&s.args(&["restore", "i.evfs", "r.vol"]));
    assert_eq!(s.env.hash("r.vol", "alice.k1"), b3(&s.data));
    // A refresh of the other restored copy re-encrypts one chunk: only
    // the sectors whose plaintext changed get other ciphertext.
    let before = sectors(&s.env, "r2.vol", chunks * CHUNK);
    let r = s.backup(&["src", "r2.vol"]);
    assert_eq!(r["chunks_written"], 1, "{r}");
    assert_eq!(r["chunks_unchanged"], chunks - 1, "{r}");
    let after = sectors(&s.env, "r2.vol", chunks * CHUNK);
    assert_eq!(differing(&before, &after), changed);
    assert_eq!(s.recorded_digest("r2.vol"), b3(&s.data));
    assert_eq!(b3(&s.cat("r2.vol")), b3(&s.data));
}

/// A raw stream carries its source's index area as it lies: a copy
/// restored from it is refreshed changed-only like a raw clone.
#[test]
fn a_raw_stream_carries_its_sources_chunk_index() {
    let chunks = 6;
    let mut s = setup(chunks * CHUNK);
    s.env
        .ok(&["backup", "copy", "--stream", "raw.evfs", "--raw"]);
    s.env.ok(&["verify", "raw.evfs"]);
    s.env.ok(&["restore", "raw.evfs", "rc.vol"]);
    change(&mut s.data, &pick(chunks, 1, 41), 0);
    s.rewrite_source();
    let r = s.backup(&["src", "rc.vol"]);
    assert_eq!(r["chunks_written"], 1, "{r}");
    assert_eq!(s.env.hash("rc.vol", "alice.k1"), b3(&s.data));
}

/// What cannot be a base says why: a stream without a chunk index (plain
/// data, a committed version-2 sample), and a stream whose index section
/// was changed (also found by verify).
#[test]
fn a_stream_without_its_chunk_index_or_with_a_damaged_one_is_refused_as_a_base() {
    let chunks = 4;
    let s = setup(chunks * CHUNK);
    s.env.ok(&[
        "backup",
        "data.raw",
        "--stream",
        "plain.evfs",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        &s.k[3],
    ]);
    let v2 =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/data/v2/stream.evfs");
    std::fs::copy(v2, s.env.path("v2.evfs")).unwrap();
    for base in ["plain.evfs", "v2.evfs"] {
        let (code, out) = run_code(
            &s,
            &s.args(&["backup", "src", "--stream", "x.evfs", "--since", base]),
        );
        assert_eq!(code, Some(3), "{base}: {out}");
        assert!(out.contains("carries no chunk index"), "{base}: {out}");
        assert!(!s.env.path("x.evfs").exists());
    }
    s.backup(&["src", "--stream", "full.evfs"]);
    let mut bytes = std::fs::read(s.env.path("full.evfs")).unwrap();
    // The index section lies right before the 16960-byte trailer: 32 bytes
    // of section header, the sealed index, its 32-byte BLAKE3.
    let at = bytes.len() - 16960 - 32 - 100;
    bytes[at] ^= 0x20;
    std::fs::write(s.env.path("bad.evfs"), &bytes).unwrap();
    let (code, out) = run_code(
        &s,
        &s.args(&["backup", "src", "--stream", "x.evfs", "--since", "bad.evfs"]),
    );
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("chunk index"), "{out}");
    let (code, out) = run_code(&s, &["verify", "bad.evfs"]);
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("chunk index"), "{out}");
}

/// What a stream run writes is never what it reads: a manifest over the
/// source, over a file that is not a manifest, or over the stream, and a
/// stream over its own BASE are refused before anything is written.
#[test]
fn a_manifest_or_stream_over_the_source_base_or_another_file_is_refused() {
    let chunks = 3;
    let s = setup(chunks * CHUNK);
    s.backup(&["src", "--stream", "full.evfs", "--manifest", "full.man"]);
    std::fs::write(s.env.path("notes.txt"), b"keep me\n").unwrap();
    std::fs::create_dir(s.env.path("dir")).unwrap();
    let keep: Vec<(&str, String)> = ["src", "full.evfs", "full.man", "notes.txt"]
        .into_iter()
        .map(|f| (f, file_b3(&s, f)))
        .collect();
    let cases: [(&[&str], i32, &str); 8] = [
        (
            &[
                "--stream",
                "x.evfs",
                "--since",
                "full.evfs",
                "--manifest",
                "src",
            ],
            3,
            "the source",
        ),
        (
            &[
                "--stream",
                "x.evfs",
                "--since",
                "full.evfs",
                "--manifest",
                "notes.txt",
            ],
            3,
            "not a manifest",
        ),
        (
            &[
                "--stream",
                "x.evfs",
                "--since",
                "full.evfs",
                "--manifest",
                "full.evfs",
            ],
            3,
            "BASE",
        ),
        (
            &["--stream", "x.evfs", "--manifest", "x.evfs"],
            2,
            "own file",
        ),
        (
            &["--stream", "dir/../x.evfs", "--manifest", "x.evfs"],
            2,
            "own file",
        ),
        (
            &["--stream", "x.evfs", "--manifest", "-"],
            2,
            "writes a file",
        ),
        (&["--stream", "x.evfs", "--manifest", "dir"], 2, "directory"),
        (
            &["--stream", "full.evfs", "--since", "full.evfs"],
            3,
            "replace BASE",
        ),
    ];
    for (extra, code, says) in cases {
        let mut args = vec!["backup", "src"];
        args.extend_from_slice(extra);
        let (got, out) = run_code(&s, &s.args(&args));
        assert_eq!(got, Some(code), "{extra:?}: {out}");
        assert!(out.contains(says), "{extra:?}: {out}");
        assert!(!s.env.path("x.evfs").exists(), "{extra:?} left a stream");
        for (f, b) in &keep {
            assert_eq!(&file_b3(&s, f), b, "{extra:?} changed {f}");
        }
    }
    // --force replaces a file that is not a manifest, never the source.
    s.backup(&[
        "src",
        "--stream",
        "x.evfs",
        "--manifest",
        "notes.txt",
        "--force",
    ]);
    let (code, out) = run_code(
        &s,
        &s.args(&[
            "backup",
            "src",
            "--stream",
            "y.evfs",
            "--manifest",
            "src",
            "--force",
        ]),
    );
    assert_eq!(code, Some(3), "{out}");
    assert_eq!(file_b3(&s, "src"), keep[0].1);
    // An incremental stream keeps its base's key: --rekey does not apply.
    let (code, out) = run_code(
        &s,
        &s.args(&[
            "backup",
            "src",
            "--stream",
            "z.evfs",
            "--since",
            "full.evfs",
            "--rekey",
        ]),
    );
    assert_eq!(code, Some(2), "{out}");
}

/// Before the first link of a chain is written, every link is known to be
/// whole and to have the key it needs; a stream file cut short is refused
/// before it touches an existing volume; the links of a chain are files.
#[test]
fn a_chain_or_stream_that_cannot_finish_is_refused_before_anything_is_written() {
    let chunks = 6;
    let mut s = setup(chunks * CHUNK);
    let r = s.backup(&["src", "--stream", "full.evfs"]);
    assert_eq!(r["chunks_written"], chunks);
    change(&mut s.data, &pick(chunks, 1, 51), 0);
    s.rewrite_source();
    s.backup(&[
        "src",
        "--stream",
        "i1.evfs",
        "--since",
        "full.evfs",
        "--sparse",
    ]);
    // A sparse link needs the key: refused with no target made.
    let (code, out) = run_code(&s, &["restore", "full.evfs", "i1.evfs", "n.vol"]);
    assert_eq!(code, Some(4), "{out}");
    assert!(!s.env.path("n.vol").exists(), "{out}");
    // A link cut short: found from its end, nothing written.
    let i1 = std::fs::read(s.env.path("i1.evfs")).unwrap();
    std::fs::write(s.env.path("cut.evfs"), &i1[..i1.len() - 100]).unwrap();
    let (code, out) = run_code(&s, &s.args(&["restore", "full.evfs", "cut.evfs", "n.vol"]));
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("does not end with its trailer"), "{out}");
    assert!(!s.env.path("n.vol").exists(), "{out}");
    // Onto an existing volume at its base: a cut link, or one with bytes
    // added, leaves it as it was (clean, byte for byte).
    s.env.ok(&["restore", "full.evfs", "t.vol"]);
    let before = file_b3(&s, "t.vol");
    let mut longer = i1.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(s.env.path("long.evfs"), &longer).unwrap();
    for bad in ["cut.evfs", "long.evfs"] {
        let (code, out) = run_code(&s, &s.args(&["restore", bad, "t.vol"]));
        assert_eq!(code, Some(5), "{bad}: {out}");
        assert_eq!(file_b3(&s, "t.vol"), before, "{bad}");
    }
    s.env.ok(&["check", "t.vol"]);
    // A link damaged inside (its end intact) fails while it is written:
    // the note says the volume holds an unfinished restore of it.
    let mut bad = i1.clone();
    bad[16_544 + 100] ^= 1;
    std::fs::write(s.env.path("bad.evfs"), &bad).unwrap();
    let (code, out) = run_code(&s, &s.args(&["restore", "full.evfs", "bad.evfs", "b.vol"]));
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("failed while it was written"), "{out}");
    s.env.expect(6, &["check", "b.vol"]);
    // Links from pipes cannot be read twice.
    let out = s.env.bash("$EVFS restore full.evfs <(cat i1.evfs) p.vol");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("regular files"));
    // Without the key, verify does not claim to have recombined the chain.
    let out = s.env.ok(&["verify", "full.evfs", "i1.evfs"]);
    assert!(!out.contains("the chain restores to"), "{out}");
    assert!(out.contains("not recomputed"), "{out}");
    let out = s.env.ok(&s.args(&["verify", "full.evfs", "i1.evfs"]));
    assert!(
        out.contains("the chain restores to plaintext BLAKE3"),
        "{out}"
    );
}

/// `-q` prints only what failed; an empty pipe as BASE says what a BASE
/// from a pipe must be.
#[test]
fn quiet_verify_prints_only_failures_and_an_empty_pipe_is_no_base() {
    let s = setup(2 * CHUNK);
    s.backup(&["src", "--stream", "full.evfs"]);
    let (out, _) = s.env.expect(0, &["verify", "-q", "full.evfs"]);
    assert_eq!(out, "", "quiet and verified: nothing on stdout");
    let mut bytes = std::fs::read(s.env.path("full.evfs")).unwrap();
    bytes[20_000] ^= 1;
    std::fs::write(s.env.path("bad.evfs"), &bytes).unwrap();
    let (out, _) = s.env.expect(5, &["verify", "-q", "bad.evfs"]);
    assert!(
        !out.is_empty() && out.lines().all(|l| l.starts_with("FAIL")),
        "{out}"
    );
    let pw = &s.k[3];
    // A pipe that delivers its first bytes in pieces is read whole.
    let out = s.env.bash(&format!(
        "$EVFS backup src --stream y.evfs --since <(head -c 4 full.evfs; sleep 0.2; tail -c +5 full.evfs) -k alice.k1 --passphrase-file {pw}"
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.env.bash(&format!(
        "$EVFS backup src --stream x.evfs --since <(true) -k alice.k1 --passphrase-file {pw}"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("BASE is a stream or a manifest"), "{err}");
}

/// `verify` checks the chunk index the EMD names: an index area written
/// outside evfs is reported (not a failure: the data is intact); the next
/// backup writes every chunk and a new index.
#[test]
fn verify_reports_an_index_area_written_outside_evfs() {
    let s = setup(3 * CHUNK);
    let out = s.env.ok(&["verify", "copy"]);
    assert!(out.contains("chunk index: "), "{out}");
    let info = s.env.info("copy");
    let at = DATA_OFFSET as u64 + info["data_size"].as_u64().expect("data_size");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(s.env.path("copy"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"scribble", at + 100).unwrap();
    drop(f);
    let out = s.env.ok(&["verify", "copy"]);
    assert!(
        out.contains("damaged or was changed") && out.contains("writes every chunk"),
        "{out}"
    );
    let r = s.backup(&["src", "copy"]);
    assert_eq!(r["chunks_written"], r["chunks_total"], "{r}");
    let out = s.env.ok(&s.args(&["verify", "copy"]));
    assert!(out.contains("its BLAKE3 as the EMD names it"), "{out}");
}
