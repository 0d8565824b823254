//! Authenticity: the attacks of someone who can write the backup storage
//! or the volume, each reproduced as the attacker would run it, and refused.
//!
//! A forger needs no private key to wrap a volume key of their choice for
//! alice's public key and recompute every MAC and checksum; what they
//! cannot make is alice's signature. `verify` and `restore` run one
//! checker, so they agree on every stream (a property test mutates streams
//! at random and compares their verdicts).

use proptest::prelude::*;

use crate::common::{Env, b3, mixed_data};
use evfs::crypto::VolumeKey;
use evfs::emd::Emd;
use evfs::stream::format::{Header, Trailer};
use evfs::stream::writer::{StreamFramer, StreamWriter};

const MIB: usize = 1 << 20;
const EMD: usize = 16384;
const HEADER: usize = 16544;
const TRAILER_BODY: usize = 64 + EMD;
const TRAILER: usize = TRAILER_BODY + 32 + 32 + 448;

/// alice with a signed volume `prod.vol` and a signed stream of it.
fn alice() -> (Env, String, Vec<u8>) {
    let (env, pws) = Env::with_keys(&["alice.k1"]);
    let data = env.volume_from_data("orig.raw", "prod.vol", "alice.k1", 3 * MIB + 1000, 5);
    let pa = pws[0].clone();
    env.ok(&[
        "backup",
        "prod.vol",
        "--stream",
        "s.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    (env, pa, data)
}

fn k(pa: &str) -> Vec<&str> {
    vec!["-k", "alice.k1", "--passphrase-file", pa]
}

fn run<'a>(env: &Env, code: i32, args: &[&'a str], extra: &[&'a str]) -> (String, String) {
    let all: Vec<&str> = args.iter().chain(extra).copied().collect();
    env.expect(code, &all)
}

fn read(env: &Env, name: &str) -> Vec<u8> {
    std::fs::read(env.path(name)).unwrap()
}

/// The parts of a version-3 stream, located by the offsets of
/// `formats/STREAM.md`, with the checksums recomputed after a change:
/// what an attacker with write access does.
struct Parts {
    bytes: Vec<u8>,
    /// (start, payload length) of every frame.
    frames: Vec<(usize, usize)>,
    /// (start, length of the sealed index) of the index section, if any.
    index: Option<(usize, usize)>,
    trailer: usize,
}

impl Parts {
    fn of(bytes: Vec<u8>) -> Parts {
        assert_eq!(&bytes[..8], b"EVFS-STR");
        let mut at = HEADER;
        let mut frames = vec![];
        while &bytes[at..at + 4] == b"EVFR" {
            let n = u32::from_le_bytes(bytes[at + 28..at + 32].try_into().unwrap()) as usize;
            frames.push((at, n));
            at += 32 + n + 32;
        }
        let mut index = None;
        if &bytes[at..at + 8] == b"EVFS-IDX" {
            let n = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize;
            index = Some((at, n));
            at += 32 + n + 32;
        }
        assert_eq!(&bytes[at..at + 8], b"EVFS-END");
        assert_eq!(bytes.len(), at + TRAILER);
        Parts {
            bytes,
            frames,
            index,
            trailer: at,
        }
    }

    /// Recompute every unkeyed check: both EMD checksums, the header's,
    /// every frame's BLAKE3 and the trailer's checksum.
    fn fix(&mut self) -> Vec<u8> {
        let b = &mut self.bytes;
        for emd in [128, self.trailer + 64] {
            let sum = blake3::hash(&b[emd..emd + EMD - 32]);
            b[emd + EMD - 32..emd + EMD].copy_from_slice(sum.as_bytes());
        }
        let sum = blake3::hash(&b[..HEADER - 32]);
        b[HEADER - 32..HEADER].copy_from_slice(sum.as_bytes());
        let mut manifest = blake3::Hasher::new();
        manifest.update(&b[..HEADER]);
        for &(at, n) in &self.frames {
            let h = blake3::hash(&b[at..at + 32 + n]);
            b[at + 32 + n..at + 64 + n].copy_from_slice(h.as_bytes());
            manifest.update(h.as_bytes());
        }
        if let Some((at, n)) = self.index {
            let h = blake3::hash(&b[at..at + 32 + n]);
            b[at + 32 + n..at + 64 + n].copy_from_slice(h.as_bytes());
            manifest.update(h.as_bytes());
        }
        let t = self.trailer;
        manifest.update(&b[t..t + TRAILER_BODY + 32]);
        b[t + TRAILER_BODY + 32..t + TRAILER_BODY + 64]
            .copy_from_slice(manifest.finalize().as_bytes());
        b.clone()
    }

    fn strip_signature(&mut self) {
        let t = self.trailer + TRAILER_BODY + 64;
        self.bytes[t..t + 448].fill(0);
    }
}

/// A stream built from scratch for alice's public keys: a volume key the
/// forger chose, wrapped for every slot of the genuine stream's EMD, data
/// of the forger's choice, every MAC and checksum right. `keep_signature`:
/// the forged EMDs keep the genuine EMD's signature block.
fn forge(genuine: &[u8], evil: &[u8], keep_signature: bool) -> Vec<u8> {
    let header = Header::parse(genuine).unwrap();
    let key = VolumeKey::generate(header.emd.cipher).unwrap();
    let mut emd: Emd = header.emd.clone();
    for slot in &mut emd.slots {
        slot.wrapped = evfs::crypto::wrap::wrap(&key, &slot.public, slot.id.as_str()).unwrap();
    }
    emd.data_len = evil.len() as u64;
    let signature = emd.signature.clone();
    emd.seal(&key);
    if keep_signature {
        emd.signature = signature.clone();
    }
    // A forger need not carry a chunk index: the stream is unindexed.
    let h = Header {
        emd: emd.clone(),
        expected: Some(evil.len() as u64),
        indexed: false,
        ..header
    };
    let ss = emd.sector_size as usize;
    let framer = StreamFramer {
        compress: None,
        sparse: false,
        chunk_size: MIB,
    };
    let mut w = StreamWriter::start(Vec::new(), "forged", &h, Some(&key.stream_mac_key())).unwrap();
    for (i, chunk) in evil.chunks(MIB).enumerate() {
        let mut c = chunk.to_vec();
        c.resize(chunk.len().next_multiple_of(ss), 0);
        key.xts().encrypt_sectors(&mut c, ss, (i * MIB / ss) as u64);
        let f = framer
            .frame(i as u64, (i * MIB) as u64, &c, false, None)
            .unwrap();
        w.write_frame(&f.header, &c, &f.hash).unwrap();
    }
    let digest = blake3::hash(evil);
    let mut fin = emd.clone();
    let mut provenance = Trailer::parse(&genuine[genuine.len() - TRAILER..], 3)
        .unwrap()
        .emd
        .provenance
        .unwrap();
    provenance.bytes = evil.len() as u64;
    provenance.plaintext_blake3 = Some(*digest.as_bytes());
    fin.provenance = Some(provenance);
    fin.seal(&key);
    if keep_signature {
        fin.signature = signature;
    }
    w.finish(evil.len() as u64, Some(digest), &fin, None)
        .unwrap()
        .0
}

#[test]
fn a_stream_forged_with_a_keystore_holding_only_alices_public_key_is_refused() {
    let (env, pa, data) = alice();
    // Mallory's own keystore: his key pair and alice's public key.
    let mallory = Env::new();
    mallory.gen_key("mallory.k1");
    std::fs::write(
        mallory.path("alice.pub"),
        env.ok(&["key", "show", "alice.k1"]),
    )
    .unwrap();
    mallory.ok(&["key", "import", "alice.k1", "alice.pub"]);
    std::fs::write(mallory.path("evil.raw"), mixed_data(2 * MIB, 666)).unwrap();
    let (_, err) = mallory.expect(
        0,
        &[
            "backup",
            "evil.raw",
            "--stream",
            "signed.evfs",
            "--owner",
            "alice.k1",
            "--sign-with",
            "mallory.k1",
            "--passphrase-file",
            "mallory.k1.pw",
        ],
    );
    assert!(!err.contains("not signed"), "{err}");
    let (_, err) = mallory.expect(
        0,
        &[
            "backup",
            "evil.raw",
            "--stream",
            "unsigned.evfs",
            "--owner",
            "alice.k1",
        ],
    );
    assert!(err.contains("the stream is not signed"), "{err}");
    for f in ["signed.evfs", "unsigned.evfs"] {
        std::fs::copy(mallory.path(f), env.path(f)).unwrap();
    }
    let prod = read(&env, "prod.vol");

    // Signed by mallory: refused, naming the unknown signer.
    let (out, err) = run(&env, 5, &["verify", "signed.evfs"], &k(&pa));
    assert!(
        err.contains("mallory.k1") && err.contains("not a trusted signer"),
        "{out}{err}"
    );
    // A new volume, not alice's: refused as another lineage, and with
    // --force for the signer.
    let (_, err) = run(&env, 3, &["restore", "signed.evfs", "prod.vol"], &k(&pa));
    assert!(err.contains("another lineage"), "{err}");
    let (_, err) = run(
        &env,
        5,
        &["restore", "signed.evfs", "prod.vol", "--force"],
        &k(&pa),
    );
    assert!(err.contains("mallory.k1"), "{err}");
    // Unsigned: refused with -k.
    let (_, err) = run(&env, 5, &["verify", "unsigned.evfs"], &k(&pa));
    assert!(err.contains("not signed"), "{err}");
    run(
        &env,
        5,
        &["restore", "unsigned.evfs", "prod.vol", "--force"],
        &k(&pa),
    );
    // Over an existing volume a signature is required even without -k,
    // and --force does not waive it.
    for f in ["signed.evfs", "unsigned.evfs"] {
        run(&env, 5, &["restore", f, "prod.vol", "--force"], &[]);
    }
    assert!(
        read(&env, "prod.vol") == prod,
        "the original was not touched"
    );
    env.ok(&[&["verify", "prod.vol"][..], &k(&pa)].concat());
    assert!(env.hash("prod.vol", "alice.k1").starts_with(&b3(&data)));

    // Keyless verify reports who signed and exits on integrity alone.
    let out = env.ok(&["verify", "signed.evfs", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signed_by"]["id"], "mallory.k1");
    assert_eq!(v["signed_by"]["trusted"], false);
    assert_eq!(v["signed_by"]["valid"], true);
    let fp = v["signed_by"]["fingerprint"].as_str().unwrap().to_string();
    env.expect(5, &["verify", "signed.evfs", "--require-signature"]);
    // Trusting the fingerprint for one run is a decision the user makes.
    env.ok(&["verify", "signed.evfs", "--trust", &fp]);
    // A copy restored into a new file is not unlocked with alice's key:
    // its EMD is signed by nobody she trusts.
    let (_, err) = env.expect(0, &["restore", "signed.evfs", "new.vol"]);
    assert!(err.contains("authenticity was not checked"), "{err}");
    let (_, err) = run(&env, 5, &["hash", "new.vol"], &k(&pa));
    assert!(err.contains("mallory.k1"), "{err}");
}

#[test]
fn a_forged_stream_with_every_mac_recomputed_is_refused_by_verify_and_restore() {
    let (env, pa, _) = alice();
    let genuine = read(&env, "s.evfs");
    let evil = mixed_data(2 * MIB + 5, 99);
    std::fs::write(env.path("forged.evfs"), forge(&genuine, &evil, false)).unwrap();
    std::fs::write(env.path("resigned.evfs"), forge(&genuine, &evil, true)).unwrap();
    let prod = read(&env, "prod.vol");

    // Every MAC checks out: only the missing signature tells.
    let (out, err) = run(&env, 5, &["verify", "forged.evfs"], &k(&pa));
    assert!(
        out.contains("stream MAC verified") && err.contains("not signed"),
        "{out}{err}"
    );
    run(&env, 5, &["restore", "forged.evfs", "prod.vol"], &k(&pa));
    run(&env, 5, &["restore", "forged.evfs", "prod.vol"], &[]);
    // alice's old signature on the forged EMDs is broken, with or
    // without a key, into any target.
    for extra in [&k(&pa)[..], &[]] {
        let (_, err) = run(&env, 5, &["verify", "resigned.evfs"], extra);
        assert!(err.contains("broken signature"), "{err}");
        run(&env, 5, &["restore", "resigned.evfs", "fresh.vol"], extra);
        assert!(!env.path("fresh.vol").exists());
    }
    assert!(
        read(&env, "prod.vol") == prod,
        "the original was not touched"
    );
    // Keyless verify of the unsigned forgery: integrity holds, and it says
    // that the stream is not signed.
    let out = env.ok(&["verify", "forged.evfs"]);
    assert!(out.contains("not signed"), "{out}");
}

#[test]
fn a_substituted_emd_wrapping_a_key_the_attacker_knows_is_refused_at_unlock() {
    let (env, pa, _) = alice();
    let img = read(&env, "prod.vol");
    let genuine = Emd::parse(&img[..EMD]).unwrap();
    let key = VolumeKey::generate(genuine.cipher).unwrap();
    for keep_signature in [false, true] {
        let mut emd = genuine.clone();
        for slot in &mut emd.slots {
            slot.wrapped = evfs::crypto::wrap::wrap(&key, &slot.public, slot.id.as_str()).unwrap();
        }
        emd.generation += 10;
        emd.seal(&key);
        if keep_signature {
            emd.signature = genuine.signature.clone();
        }
        let mut bad = img.clone();
        let backup_at = (bad.len() & !4095) - EMD;
        for at in [0, backup_at] {
            bad[at..at + EMD].copy_from_slice(&emd.encode()[..]);
        }
        std::fs::write(env.path("sub.vol"), &bad).unwrap();
        std::fs::write(env.path("new.raw"), mixed_data(MIB, 3)).unwrap();
        let why = if keep_signature {
            "broken signature"
        } else {
            "not signed"
        };
        for args in [
            &["hash", "sub.vol"][..],
            &["verify", "sub.vol"],
            &["disable", "sub.vol"],
            &["backup", "new.raw", "sub.vol"],
            &["backup", "sub.vol", "copy.vol"],
        ] {
            let (_, err) = run(&env, 5, args, &k(&pa));
            assert!(err.contains(why), "{args:?}: {err}");
        }
        assert!(
            read(&env, "sub.vol") == bad,
            "nothing was written under the forged key"
        );
        assert!(!env.path("copy.vol").exists());
    }
}

/// The downgrade: one ciphertext byte flipped, the stream relabelled raw,
/// its MAC and digest cleared, the trailer's EMD replaced so that it
/// matches the header's (as a raw stream's must), checksums fixed.
fn downgrade(genuine: &[u8], trailer_emd_from_header: bool) -> Vec<u8> {
    let mut p = Parts::of(genuine.to_vec());
    let (f0, _) = p.frames[0];
    p.bytes[f0 + 32 + 100] ^= 1;
    p.bytes[10] = 1; // flags: raw
    p.bytes[40] = 3; // mode: raw
    let t = p.trailer;
    p.bytes[t + 24] = 0; // no digest, no MAC
    p.bytes[t + 32..t + 64].fill(0);
    p.bytes[t + TRAILER_BODY..t + TRAILER_BODY + 32].fill(0);
    if trailer_emd_from_header {
        let h = p.bytes[128..128 + EMD].to_vec();
        p.bytes[t + 64..t + 64 + EMD].copy_from_slice(&h);
    } else {
        let fin = p.bytes[t + 64..t + 64 + EMD].to_vec();
        p.bytes[128..128 + EMD].copy_from_slice(&fin);
    }
    p.strip_signature();
    p.fix()
}

#[test]
fn a_stream_relabelled_raw_and_stripped_of_its_mac_is_refused() {
    let (env, pa, _) = alice();
    let genuine = read(&env, "s.evfs");
    env.ok(&[&["restore", "s.evfs", "copy.vol"][..], &k(&pa)].concat());
    let copy = read(&env, "copy.vol");
    for (i, from_header) in [true, false].into_iter().enumerate() {
        let name = format!("dg{i}.evfs");
        std::fs::write(env.path(&name), downgrade(&genuine, from_header)).unwrap();
        // Unsigned now: with -k, refused by both, and even with
        // --allow-unsigned the key finds the damage.
        run(&env, 5, &["verify", &name], &k(&pa));
        run(&env, 5, &["restore", &name, "copy.vol"], &k(&pa));
        let allow = [&k(&pa)[..], &["--allow-unsigned"]].concat();
        let (out, err) = run(&env, 5, &["verify", &name], &allow);
        let new = format!("new{i}.vol");
        let (_, err2) = run(&env, 5, &["restore", &name, &new], &allow);
        assert!(!out.is_empty() || !err.is_empty());
        assert!(!err2.is_empty());
        let code = env.run(&["check", &new]).status.code();
        assert_ne!(
            code,
            Some(0),
            "a refused restore never leaves a clean target"
        );
        // Over the existing copy, keyless: a signature is required.
        run(&env, 5, &["restore", &name, "copy.vol"], &[]);
        // Keyless, into a new file: the same verdict from verify and restore.
        let v = env.run(&["verify", &name]).status.code();
        let fresh = format!("fresh{i}.vol");
        let r = env.run(&["restore", &name, &fresh]).status.code();
        assert_eq!(v == Some(0), r == Some(0), "verify {v:?}, restore {r:?}");
    }
    assert!(read(&env, "copy.vol") == copy, "the copy was not touched");
}

#[test]
fn a_genuine_raw_stream_of_an_enabled_volume_stays_valid() {
    let (env, pa, data) = alice();
    // The tape recipe: a raw stream, signed by the owner.
    env.ok(&[
        "backup",
        "prod.vol",
        "--raw",
        "--stream",
        "raw.evfs",
        "--passphrase-file",
        &pa,
    ]);
    let out = env.ok(&["verify", "raw.evfs", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signed_by"]["id"], "alice.k1");
    assert_eq!(v["signed_by"]["trusted"], true);
    let out = env.ok(&[&["verify", "raw.evfs"][..], &k(&pa)].concat());
    assert!(out.contains("matches the recorded digest"), "{out}");
    env.ok(&[&["restore", "raw.evfs", "back.vol"][..], &k(&pa)].concat());
    assert!(env.hash("back.vol", "alice.k1").starts_with(&b3(&data)));
}

#[test]
fn a_changed_trailer_label_or_digest_is_refused_by_keyless_verify_and_restore() {
    let (env, pa, _) = alice();
    let genuine = read(&env, "s.evfs");
    let mut label = Parts::of(genuine.clone());
    let t = label.trailer;
    label.bytes[t + 64 + 176] ^= 0x20; // the label, at 176 of the EMD
    label.strip_signature();
    std::fs::write(env.path("label.evfs"), label.fix()).unwrap();
    let mut digest = Parts::of(genuine);
    let t = digest.trailer;
    digest.bytes[t + 40] ^= 1;
    digest.strip_signature();
    std::fs::write(env.path("digest.evfs"), digest.fix()).unwrap();
    for (name, why) in [("label.evfs", "label"), ("digest.evfs", "provenance")] {
        let (out, err) = env.expect(5, &["verify", name]);
        assert!(err.contains(why), "{out}{err}");
        let (_, err) = env.expect(5, &["restore", name, "r.vol"]);
        assert!(err.contains(why), "{err}");
        assert_ne!(env.run(&["check", "r.vol"]).status.code(), Some(0));
        run(&env, 5, &["verify", name], &k(&pa));
        std::fs::remove_file(env.path("r.vol")).unwrap();
    }
}

/// One small signed stream, made once for the property test.
fn sample() -> &'static (Env, String, Vec<u8>) {
    static SAMPLE: std::sync::OnceLock<(Env, String, Vec<u8>)> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| {
        let (env, pws) = Env::with_keys(&["alice.k1"]);
        env.volume_from_data("orig.raw", "prod.vol", "alice.k1", MIB + 3000, 8);
        let pa = pws[0].clone();
        env.ok(&[
            "backup",
            "prod.vol",
            "--stream",
            "s.evfs",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ]);
        let s = read(&env, "s.evfs");
        (env, pa, s)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever a writer of the storage changes, and however they fix the
    /// checksums up, `verify` and `restore` (into a new target) agree:
    /// keyless, and with the key.
    #[test]
    fn verify_and_restore_agree_on_mutated_streams(
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        fix in any::<bool>(),
        strip in any::<bool>(),
        keyed in any::<bool>(),
    ) {
        let (env, pa, genuine) = sample();
        let mut p = Parts::of(genuine.clone());
        let i = at.index(p.bytes.len());
        p.bytes[i] ^= xor;
        if strip {
            p.strip_signature();
        }
        let bytes = if fix { p.fix() } else { p.bytes.clone() };
        let n = i ^ usize::from(xor) ^ (usize::from(fix) << 40);
        let name = format!("m{n}.evfs");
        std::fs::write(env.path(&name), &bytes).unwrap();
        let key = if keyed { k(pa) } else { vec![] };
        let v = env.run(&[&["verify", &name][..], &key].concat()).status.code();
        let target = format!("m{n}.vol");
        let r = env.run(&[&["restore", &name, &target][..], &key].concat()).status.code();
        prop_assert_eq!(v == Some(0), r == Some(0), "verify {:?}, restore {:?} at byte {}", v, r, i);
        if r != Some(0) && env.path(&target).exists() {
            prop_assert_ne!(env.run(&["check", &target]).status.code(), Some(0));
        }
        let _ = std::fs::remove_file(env.path(&target));
        let _ = std::fs::remove_file(env.path(&name));
    }
}

#[test]
fn a_team_trusts_the_backup_hosts_key_by_import_and_withdraws_it() {
    // The backup host: backup.cron is a user of alice's volume there.
    let (host, pws) = Env::with_keys(&["alice.k1", "backup.cron"]);
    let data = host.volume_from_data("orig.raw", "prod.vol", "alice.k1", 2 * MIB, 3);
    host.ok(&[
        "user",
        "add",
        "prod.vol",
        "backup.cron",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pws[0],
    ]);
    host.ok(&[
        "backup",
        "prod.vol",
        "--stream",
        "s.evfs",
        "-k",
        "backup.cron",
        "--passphrase-file",
        &pws[1],
    ]);
    let pub_line = host.ok(&["key", "show", "backup.cron"]);
    let fp = host.ok(&["key", "list", "--json"]);
    let fp: serde_json::Value = serde_json::from_str(&fp).unwrap();
    let fp = fp["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "backup.cron")
        .map(|k| k["fingerprint"].as_str().unwrap().to_string())
        .unwrap();

    // alice's own host: her key pair, no trust in backup.cron yet.
    let me = Env::new();
    me.gen_key("alice.k1");
    std::fs::copy(host.path("alice.k1.pw"), me.path("alice.k1.pw")).unwrap();
    // The same key pair as on the host: copied over.
    std::fs::copy(
        host.keystore().join("alice/k1.priv"),
        me.keystore().join("alice/k1.priv"),
    )
    .unwrap();
    std::fs::copy(
        host.keystore().join("alice/k1.pub"),
        me.keystore().join("alice/k1.pub"),
    )
    .unwrap();
    std::fs::copy(host.path("s.evfs"), me.path("s.evfs")).unwrap();
    std::fs::write(me.path("backup.cron.pub"), &pub_line).unwrap();
    let k = ["-k", "alice.k1", "--passphrase-file", "alice.k1.pw"];
    let verify = [&["verify", "s.evfs"][..], &k].concat();

    me.ok(&["key", "import", "backup.cron", "backup.cron.pub"]);
    let (_, err) = me.expect(5, &verify);
    assert!(
        err.contains("backup.cron") && err.contains("not a trusted signer"),
        "{err}"
    );
    let list = me.ok(&["key", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("backup.cron") && !l.contains("trusted")),
        "{list}"
    );
    // For one run, by fingerprint:
    me.ok(&[&verify[..], &["--trust", &fp]].concat());
    me.expect(2, &[&verify[..], &["--trust", "b3:nothex"]].concat());

    // Trusted from now on: verify, restore and the restored volume's unlock.
    me.ok(&["key", "import", "backup.cron", "backup.cron.pub", "--trust"]);
    let list: serde_json::Value = serde_json::from_str(&me.ok(&["key", "list", "--json"])).unwrap();
    let trusted = |id: &str| {
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()["trusted"]
            .clone()
    };
    assert_eq!(trusted("backup.cron"), true);
    assert_eq!(
        trusted("alice.k1"),
        true,
        "a key pair of the keystore is trusted"
    );
    let out = me.ok(&verify);
    assert!(
        out.contains("signed by backup.cron") && out.contains("trusted"),
        "{out}"
    );
    let out = me.ok(&[&["restore", "s.evfs", "r.vol", "--json"][..], &k].concat());
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["signed_by"]["id"], "backup.cron");
    assert_eq!(r["signed_by"]["trusted"], true);
    let hash = me.ok(&[&["hash", "r.vol"][..], &k].concat());
    assert!(hash.starts_with(&b3(&data)), "{hash}");
    assert_eq!(me.info("r.vol")["signed_by"]["id"], "backup.cron");

    // Withdrawn: the restored volume no longer unlocks without a decision.
    me.ok(&["key", "untrust", "backup.cron"]);
    let (_, err) = me.expect(5, &[&["hash", "r.vol"][..], &k].concat());
    assert!(err.contains("not a trusted signer"), "{err}");
    me.ok(&[&["hash", "r.vol", "--allow-unsigned"][..], &k].concat());
    // Its own key pair stays trusted while its private key is here.
    let (_, err) = me.expect(2, &["key", "untrust", "alice.k1"]);
    assert!(err.contains("key pair of this keystore"), "{err}");
    // A swapped .pub is not trusted by the old mark.
    me.ok(&["key", "import", "backup.cron", "backup.cron.pub", "--trust"]);
    me.gen_key("other.k1");
    let other = me.ok(&["key", "show", "other.k1"]);
    std::fs::write(
        me.keystore().join("backup/cron.pub"),
        other.replace("other.k1", "backup.cron"),
    )
    .unwrap();
    let list: serde_json::Value = serde_json::from_str(&me.ok(&["key", "list", "--json"])).unwrap();
    let entry = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "backup.cron")
        .unwrap()
        .clone();
    assert_eq!(entry["trusted"], false, "{entry}");
}

#[test]
fn create_and_backup_sign_with_the_owner_or_sign_with_and_say_when_they_cannot() {
    let (env, pws) = Env::with_keys(&["alice.k1", "signer.k1"]);
    let signed = |vol: &str| env.info(vol)["signed_by"]["id"].clone();
    // With the owner's passphrase: signed by the owner.
    env.ok(&[
        "create",
        "a.vol",
        "--owner",
        "alice.k1",
        "--size",
        "4M",
        "--passphrase-file",
        &pws[0],
    ]);
    assert_eq!(signed("a.vol"), "alice.k1");
    // --sign-with another key.
    env.ok(&[
        "create",
        "b.vol",
        "--owner",
        "alice.k1",
        "--size",
        "4M",
        "--sign-with",
        "signer.k1",
        "--passphrase-file",
        &pws[1],
    ]);
    assert_eq!(signed("b.vol"), "signer.k1");
    // No passphrase to be had: unsigned, and said so.
    let (_, err) = env.expect(
        0,
        &["create", "c.vol", "--owner", "alice.k1", "--size", "4M"],
    );
    assert!(
        err.contains("the EMD is not signed") && err.contains("evfs emd sign"),
        "{err}"
    );
    assert_eq!(env.info("c.vol")["signed_by"], serde_json::Value::Null);
    // A wrong passphrase for the signer is an error, not a silent unsigned volume.
    std::fs::write(env.path("wrong.pw"), "wrong\n").unwrap();
    env.expect(
        4,
        &[
            "create",
            "d.vol",
            "--owner",
            "alice.k1",
            "--size",
            "4M",
            "--passphrase-file",
            "wrong.pw",
        ],
    );
    assert!(!env.path("d.vol").exists());
    // A plain-data backup: the owner, or --sign-with.
    std::fs::write(env.path("plain"), mixed_data(MIB, 1)).unwrap();
    env.ok(&[
        "backup",
        "plain",
        "e.vol",
        "--owner",
        "alice.k1",
        "--sign-with",
        "signer.k1",
        "--passphrase-file",
        &pws[1],
    ]);
    assert_eq!(signed("e.vol"), "signer.k1");
    let (_, err) = env.expect(0, &["backup", "plain", "f.vol", "--owner", "alice.k1"]);
    assert!(err.contains("the target's EMD is not signed"), "{err}");
    // A volume backup signs with -k; a raw clone keeps the source's signature.
    env.ok(&[
        "backup",
        "a.vol",
        "g.vol",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pws[0],
    ]);
    assert_eq!(signed("g.vol"), "alice.k1");
    env.ok(&["backup", "b.vol", "h.vol", "--raw"]);
    assert_eq!(signed("h.vol"), "signer.k1");
    // The stream: by -k's key, or --sign-with, whose passphrase (when -k
    // takes --passphrase-file) is the stored one or a prompt.
    let args = [
        "backup",
        "a.vol",
        "--stream",
        "a.evfs",
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pws[0],
        "--sign-with",
        "signer.k1",
    ];
    let (_, err) = env.expect(4, &args);
    assert!(
        err.contains("no passphrase available for key signer.k1"),
        "{err}"
    );
    env.ok(&[
        "key",
        "store-passphrase",
        "signer.k1",
        "--passphrase-file",
        &pws[1],
    ]);
    env.ok(&args);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["verify", "a.evfs", "--json"])).unwrap();
    assert_eq!(v["signed_by"]["id"], "signer.k1");
}
