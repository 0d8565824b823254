//! `evfs map` and `evfs dmtable` against real clients: qemu-img and qemu-io
//! over the NBD socket, and an independent XTS implementation reading the
//! raw volume with nothing but the dm-crypt table line.

use crate::common::tools::{Mapped, have_tools, run_tool};
use crate::common::{Env, b3, contains, mixed_data};
use aes::cipher::KeyInit;
use aes::{Aes128, Aes256};
use xts_mode::{Xts128, get_tweak_default};

/// Bytes of plaintext in the test volumes (6 MiB: text, zeros, random).
const DATA: usize = 6 << 20;

/// A keystore with alice (owner) and bob (authorized user), and `vol`: a
/// volume holding `mixed_data(DATA)`, which is returned.
fn setup(sector_size: &str) -> (Env, Vec<u8>) {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    env.gen_key("bob");
    let data = mixed_data(DATA, 7);
    std::fs::write(env.path("data.raw"), &data).unwrap();
    env.ok(&[
        "create",
        "vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
        "--size",
        "8M",
        "--sector-size",
        sector_size,
    ]);
    env.ok(&[
        "backup",
        "data.raw",
        "vol",
        "--target-key",
        "alice.k1",
        "--target-passphrase-file",
        &pa,
    ]);
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
    (env, data)
}

fn pw(env: &Env, id: &str) -> String {
    env.path(&format!("{id}.pw")).display().to_string()
}

/// `evfs cat vol -k ID`.
fn cat(env: &Env, id: &str) -> Vec<u8> {
    let out = env
        .cmd(&["cat", "vol", "-k", id, "--passphrase-file", &pw(env, id)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn map_alice(env: &Env, extra: &[&str]) -> Mapped {
    let pa = pw(env, "alice.k1");
    let mut args = vec!["vol", "-k", "alice.k1", "--passphrase-file", pa.as_str()];
    args.extend_from_slice(extra);
    Mapped::start(env, "vol.sock", &args)
}

fn dirty(env: &Env) -> bool {
    env.info("vol")["dirty"]
        .as_bool()
        .expect("info --json has a boolean dirty")
}

/// The data area of `vol` as it lies on disk.
fn ciphertext(env: &Env) -> Vec<u8> {
    let info = env.info("vol");
    let off = info["data_offset"].as_u64().unwrap() as usize;
    let len = info["data_size"].as_u64().unwrap() as usize;
    std::fs::read(env.path("vol")).unwrap()[off..off + len].to_vec()
}

#[test]
fn qemu_img_reads_exactly_the_plaintext_and_the_volume_is_dirty_only_while_mapped() {
    if !have_tools("map_qemu_img_reads", &["qemu-img"]) {
        return;
    }
    let (env, data) = setup("4096");
    assert!(!dirty(&env));
    let mapped = map_alice(&env, &[]);
    assert!(dirty(&env), "a mapped volume is dirty");
    let log = mapped.log();
    assert!(log.contains("nbd+unix:///?socket="), "{log}");
    assert!(log.contains("nbd-client -unix"), "{log}");

    let out = env.path("out.img");
    let (ok, text) = run_tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &mapped.uri(),
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), DATA);
    assert!(got == data, "qemu-img read other bytes than the plaintext");

    let (status, log) = mapped.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(!dirty(&env), "clean after SIGTERM: {log}");
    assert!(!env.path("vol.sock").exists(), "the socket is removed");
    assert!(cat(&env, "alice.k1") == data);
    env.ok(&["check", "vol"]);
}

#[test]
fn data_written_through_map_lands_encrypted_and_another_user_reads_it_back() {
    if !have_tools("map_qemu_img_writes", &["qemu-img"]) {
        return;
    }
    let (env, data) = setup("4096");
    let mut new = mixed_data(DATA, 99);
    new[..4096].fill(0x5a);
    let input = env.path("new.raw");
    std::fs::write(&input, &new).unwrap();

    let mapped = map_alice(&env, &[]);
    let (ok, text) = run_tool(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            input.to_str().unwrap(),
            &mapped.uri(),
        ],
    );
    assert!(ok, "{text}");
    let (status, log) = mapped.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(!dirty(&env));

    // evfs hash equals b3sum of what was written.
    assert_eq!(env.hash("vol", "alice.k1"), b3(&new));
    // It is stored encrypted: no plaintext pattern lies on disk.
    let ct = ciphertext(&env);
    assert!(!contains(&ct, b"The quick brown fox"));
    assert!(!contains(&ct, &[0x5a; 64]));
    // bob's slot holds the same volume key: he reads what alice wrote.
    assert!(cat(&env, "bob") == new);

    // Written outside any backup, the volume no longer matches the chunk
    // index of its last one: backing the old data up into it again writes
    // every chunk (were the index trusted, every chunk would read as
    // unchanged and the volume would keep what map wrote).
    let pa = pw(&env, "alice.k1");
    let out = env.ok(&[
        "backup",
        "data.raw",
        "vol",
        "--target-key",
        "alice.k1",
        "--target-passphrase-file",
        &pa,
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["chunks_unchanged"], 0, "{r}");
    assert!(cat(&env, "alice.k1") == data);
}

#[test]
fn qemu_io_writes_and_reads_at_odd_offsets_and_lengths() {
    if !have_tools("map_qemu_io", &["qemu-io"]) {
        return;
    }
    for sector in ["4096", "512"] {
        let (env, data) = setup(sector);
        let mapped = map_alice(&env, &[]);
        let end_write = format!("write -P 0x44 {} 7", DATA - 7);
        let end_read = format!("read -P 0x44 {} 7", DATA - 7);
        let commands = [
            "write -P 0xab 1000 3333",
            "read -P 0xab 1000 3333",
            "write -P 0x11 1 1",
            "read -P 0x11 1 1",
            "write -P 0x22 4095 4098",
            "read -P 0x22 4095 4098",
            "write -P 0x33 65537 100000",
            "read -P 0x33 65537 100000",
            "write -z 200001 300007",
            "read -P 0 200001 300007",
            &end_write,
            &end_read,
            "flush",
        ];
        let mut model = data.clone();
        for (byte, off, len) in [
            (0xab, 1000, 3333),
            (0x11, 1, 1),
            (0x22, 4095, 4098),
            (0x33, 65537, 100_000),
            (0x00, 200_001, 300_007),
            (0x44, DATA - 7, 7),
        ] {
            model[off..off + len].fill(byte);
        }
        let uri = mapped.uri();
        let mut args = vec!["-f", "raw", uri.as_str()];
        for c in &commands {
            args.extend(["-c", c]);
        }
        let (ok, out) = run_tool("qemu-io", &args);
        assert!(ok, "{out}");
        assert!(
            !out.contains("failed")
                && !out.contains("error")
                && !out.contains("Pattern verification"),
            "sector {sector}: {out}"
        );
        assert_eq!(out.matches("read ").count(), 6, "{out}");
        let (status, log) = mapped.stop();
        assert!(status.success(), "{status}: {log}");
        assert!(
            cat(&env, "alice.k1") == model,
            "sector {sector}: plaintext differs"
        );
        assert!(cat(&env, "bob") == model);
    }
}

#[test]
fn a_mapped_volume_is_locked_against_a_second_map_and_backups() {
    if !have_tools("map_lock", &["qemu-img"]) {
        return;
    }
    let (env, data) = setup("4096");
    let pa = pw(&env, "alice.k1");
    let mapped = map_alice(&env, &[]);

    let (_, err) = env.expect(
        1,
        &[
            "map",
            "vol",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
            "--socket",
            "other.sock",
        ],
    );
    assert!(err.contains("in use"), "{err}");
    assert!(!env.path("other.sock").exists());
    let (_, err) = env.expect(
        1,
        &[
            "map",
            "vol",
            "--raw",
            "--read-only",
            "--socket",
            "other.sock",
        ],
    );
    assert!(err.contains("in use"), "{err}");

    // Into the mapped volume, with its own key or replacing it: the lock.
    env.ok(&[
        "backup",
        "data.raw",
        "data.vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
    ]);
    let (_, err) = env.expect(
        1,
        &[
            "backup",
            "data.raw",
            "vol",
            "--target-key",
            "alice.k1",
            "--target-passphrase-file",
            &pa,
        ],
    );
    assert!(err.contains("in use"), "{err}");
    let (_, err) = env.expect(
        1,
        &[
            "backup",
            "data.vol",
            "vol",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
            "--force",
        ],
    );
    assert!(err.contains("in use"), "{err}");
    // Nor restored into.
    env.ok(&[
        "backup",
        "data.vol",
        "--stream",
        "data.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    let (_, err) = env.expect(1, &["restore", "data.evfs", "vol", "--force"]);
    assert!(err.contains("in use"), "{err}");
    // Nor can it be read as a backup source while a writer has it.
    let (_, err) = env.expect(
        1,
        &[
            "backup",
            "vol",
            "copy.img",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ],
    );
    assert!(err.contains("in use"), "{err}");

    // The export still serves the original data.
    let out = env.path("out.img");
    let (ok, text) = run_tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &mapped.uri(),
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    assert!(std::fs::read(&out).unwrap() == data);
    let (status, log) = mapped.stop();
    assert!(status.success(), "{log}");
    // Once unmapped, the backup goes through.
    env.ok(&[
        "backup",
        "vol",
        "copy.img",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
}

#[test]
fn raw_map_serves_the_ciphertext_without_a_key_even_when_disabled() {
    if !have_tools("map_raw", &["qemu-img"]) {
        return;
    }
    let (env, _) = setup("4096");
    let pa = pw(&env, "alice.k1");
    env.ok(&["disable", "vol", "-k", "alice.k1", "--passphrase-file", &pa]);
    // Decrypted, a disabled volume is refused.
    let (_, err) = env.expect(
        3,
        &[
            "map",
            "vol",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
            "--socket",
            "vol.sock",
        ],
    );
    assert!(err.contains("disabled"), "{err}");
    assert!(!env.path("vol.sock").exists());
    assert!(!dirty(&env), "a refused map leaves the volume alone");

    let mapped = Mapped::start(&env, "vol.sock", &["vol", "--raw"]);
    assert!(dirty(&env));
    let out = env.path("out.img");
    let (ok, text) = run_tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &mapped.uri(),
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let (status, log) = mapped.stop();
    assert!(status.success(), "{log}");
    assert!(std::fs::read(&out).unwrap() == ciphertext(&env));
    assert!(!dirty(&env));
    assert_eq!(env.info("vol")["state"], "disabled");
}

#[test]
fn read_only_map_refuses_writes_and_shares_the_volume_with_backup_sources() {
    if !have_tools("map_read_only", &["qemu-img", "qemu-io"]) {
        return;
    }
    let (env, data) = setup("4096");
    let pa = pw(&env, "alice.k1");
    let before = std::fs::read(env.path("vol")).unwrap();
    let mapped = map_alice(&env, &["--read-only"]);
    assert!(!dirty(&env), "a read-only map does not write the EMD");

    let (ok, out) = run_tool(
        "qemu-io",
        &["-f", "raw", &mapped.uri(), "-c", "write -P 0xab 0 512"],
    );
    assert!(
        !ok || out.contains("failed") || out.contains("denied"),
        "{out}"
    );
    let input = env.path("ones.raw");
    std::fs::write(&input, vec![1u8; DATA]).unwrap();
    let (ok, out) = run_tool(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            input.to_str().unwrap(),
            &mapped.uri(),
        ],
    );
    assert!(!ok, "{out}");
    let (ok, out) = run_tool(
        "qemu-io",
        &["-r", "-f", "raw", &mapped.uri(), "-c", "read -v 0 16"],
    );
    assert!(ok && !out.contains("failed"), "{out}");

    // A backup may read the volume at the same time (both hold shared locks).
    env.ok(&[
        "backup",
        "vol",
        "copy.img",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    let (status, log) = mapped.stop();
    assert!(status.success(), "{log}");
    assert!(
        std::fs::read(env.path("vol")).unwrap() == before,
        "nothing changed"
    );
    assert_eq!(env.hash("copy.img", "alice.k1"), b3(&data));
}

#[test]
fn map_refuses_without_a_key_a_foreign_key_or_a_non_socket_path() {
    let (env, _) = setup("4096");
    env.gen_key("carol");
    let pc = pw(&env, "carol");
    // Neither -k nor --raw: a usage error.
    env.expect(2, &["map", "vol", "--socket", "vol.sock"]);
    // A key without a slot: access denied.
    env.expect(
        4,
        &[
            "map",
            "vol",
            "-k",
            "carol",
            "--passphrase-file",
            &pc,
            "--socket",
            "vol.sock",
        ],
    );
    // A path that is not a socket is never replaced.
    std::fs::write(env.path("file"), b"keep me").unwrap();
    let (_, err) = env.expect(2, &["map", "vol", "--raw", "--socket", "file"]);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(env.path("file")).unwrap(), b"keep me");
    assert!(!dirty(&env));
}

#[test]
fn a_stale_socket_is_replaced_and_the_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (env, _) = setup("4096");
    // A socket file nobody listens on, as a killed map leaves behind.
    drop(std::os::unix::net::UnixListener::bind(env.path("vol.sock")).unwrap());
    assert!(env.path("vol.sock").exists());
    let mapped = Mapped::start(&env, "vol.sock", &["vol", "--raw", "--read-only"]);
    let mode = std::fs::metadata(env.path("vol.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let (status, log) = mapped.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("serving the raw ciphertext"), "{log}");
}

/// The fields of a dm-crypt table line, as dmsetup reads them.
struct Table {
    sectors: u64,
    cipher: String,
    key: Vec<u8>,
    iv_offset: u64,
    device: String,
    offset: u64,
    opts: Vec<String>,
}

fn parse_table(line: &str) -> Table {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(f.len() >= 8, "{line}");
    assert_eq!(f[0], "0", "starts at sector 0");
    assert_eq!(f[2], "crypt");
    let nopts: usize = f.get(8).map_or(0, |n| n.parse().unwrap());
    assert_eq!(f.len(), 8 + usize::from(f.len() > 8) + nopts, "{line}");
    Table {
        sectors: f[1].parse().unwrap(),
        cipher: f[3].to_string(),
        key: (0..f[4].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&f[4][i..i + 2], 16).unwrap())
            .collect(),
        iv_offset: f[5].parse().unwrap(),
        device: f[6].to_string(),
        offset: f[7].parse().unwrap(),
        opts: f
            .get(9..)
            .unwrap_or_default()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// Decrypt what the table maps from the raw device, the way dm-crypt does,
/// with the `xts-mode` crate and nothing but the table's numbers.
fn dm_decrypt(t: &Table) -> Vec<u8> {
    assert_eq!(t.cipher, "aes-xts-plain64");
    let mut sector = 512usize;
    let mut large = false;
    for o in &t.opts {
        if let Some(s) = o.strip_prefix("sector_size:") {
            sector = s.parse().unwrap();
        } else if o == "iv_large_sectors" {
            large = true;
        } else {
            panic!("unexpected option {o}");
        }
    }
    let raw = std::fs::read(&t.device).unwrap();
    let start = (t.offset * 512) as usize;
    let len = (t.sectors * 512) as usize;
    let mut data = raw[start..start + len].to_vec();
    let (k1, k2) = t.key.split_at(t.key.len() / 2);
    // plain64: the IV is the 512-byte sector number, unless iv_large_sectors
    // counts in units of the sector size; plus iv_offset.
    let per = if large { 1 } else { (sector / 512) as u128 };
    let first = u128::from(t.iv_offset);
    macro_rules! run {
        ($c:ty) => {{
            let x = Xts128::<$c>::new(
                <$c>::new_from_slice(k1).unwrap(),
                <$c>::new_from_slice(k2).unwrap(),
            );
            for (i, s) in data.chunks_mut(sector).enumerate() {
                x.decrypt_sector(s, get_tweak_default(first + i as u128 * per));
            }
        }};
    }
    match t.key.len() {
        32 => run!(Aes128),
        64 => run!(Aes256),
        n => panic!("key of {n} bytes"),
    }
    data
}

#[test]
fn dmtable_line_decrypts_the_raw_volume_independently() {
    for (sector, cipher) in [("4096", "aes-256-xts"), ("512", "aes-128-xts")] {
        let env = Env::new();
        let pa = env.gen_key("alice.k1");
        env.ok(&[
            "create",
            "vol",
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
            "--size",
            "5M",
            "--sector-size",
            sector,
            "--cipher",
            cipher,
        ]);
        let data = mixed_data(3 << 20, 11);
        std::fs::write(env.path("data.raw"), &data).unwrap();
        env.ok(&[
            "backup",
            "data.raw",
            "vol",
            "--target-key",
            "alice.k1",
            "--target-passphrase-file",
            &pa,
        ]);
        let (line, err) = env.expect(
            0,
            &["dmtable", "vol", "-k", "alice.k1", "--passphrase-file", &pa],
        );
        assert!(
            err.contains("warning") && err.contains("volume key"),
            "{err}"
        );
        assert_eq!(line.lines().count(), 1, "{line}");
        let t = parse_table(&line);
        assert!(std::path::Path::new(&t.device).is_absolute(), "{line}");
        assert_eq!(t.iv_offset, 0);
        assert_eq!(t.offset, 2048, "1 MiB in 512-byte sectors");
        if sector == "4096" {
            assert_eq!(t.opts, ["sector_size:4096", "iv_large_sectors"], "{line}");
        } else {
            assert!(t.opts.is_empty(), "{line}");
        }
        let plain = dm_decrypt(&t);
        assert!(
            plain == cat(&env, "alice.k1"),
            "{cipher}/{sector}: differs from evfs cat"
        );
        assert!(plain[..data.len()] == data[..]);
    }
}

#[test]
fn dmtable_refuses_a_disabled_volume_and_a_recovery_key() {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    env.gen_key("evfs.r1");
    env.ok(&[
        "create",
        "vol",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
        "--size",
        "4M",
        "--recovery",
        "evfs.r1",
    ]);
    let pr = pw(&env, "evfs.r1");
    env.expect(
        4,
        &["dmtable", "vol", "-k", "evfs.r1", "--passphrase-file", &pr],
    );
    env.ok(&["disable", "vol", "-k", "alice.k1", "--passphrase-file", &pa]);
    let (out, _) = env.expect(
        3,
        &["dmtable", "vol", "-k", "alice.k1", "--passphrase-file", &pa],
    );
    assert!(out.is_empty(), "no key on stdout: {out}");
}

/// Regression guard: the map's final EMD write must not roll back what an
/// administration command changed while the volume was mapped.
#[test]
fn admin_commands_are_refused_while_mapped_and_work_after_the_stop() {
    let (env, data) = setup("4096");
    let pa = pw(&env, "alice.k1");
    env.gen_key("carol");
    let mapped = map_alice(&env, &[]);
    let add = [
        "user",
        "add",
        "vol",
        "carol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        pa.as_str(),
    ];
    let (_, err) = env.expect(1, &add);
    assert!(err.contains("in use by"), "{err}");
    let (_, err) = env.expect(
        1,
        &["destroy", "vol", "-k", "alice.k1", "--passphrase-file", &pa],
    );
    assert!(err.contains("in use by"), "{err}");
    env.expect(1, &["check", "-r", "vol"]);
    let (status, log) = mapped.stop();
    assert!(status.success(), "{log}");
    assert_eq!(env.info("vol")["dirty"], false);
    env.ok(&add);
    assert!(cat(&env, "carol") == data);
}
