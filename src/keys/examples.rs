//! The worked examples of `formats/KEYSTORE.md`: every keystore file made
//! from fixed inputs by the code that writes them, compared byte for byte
//! with the document, and then read back from the document's bytes by the
//! code that reads them, so that the examples are proven, not just dumped.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use x25519_dalek::{PublicKey, StaticSecret};

use super::keystore::{
    fingerprint, parse_public_line, pass_key, pass_text, priv_aad, priv_text, public_line,
    trust_text,
};
use super::{KeyId, Keystore};
use crate::crypto::Passphrase;
use crate::crypto::kdf::{self, KdfParams};
use crate::testutil::{expect_fenced, expect_listing, fenced, listing, unhexdump};

const DOC: &str = "formats/KEYSTORE.md";

/// Held by each test that compares blocks of the document: with
/// `EVFS_UPDATE_FORMATS=1` they rewrite it, and must not lose each other's
/// updates.
static DOC_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn doc_lock() -> std::sync::MutexGuard<'static, ()> {
    DOC_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The example's passphrase, as a passphrase file would hold it after its
/// trailing newline is stripped.
const PASSPHRASE: &[u8] = b"correct horse battery staple";

/// Small Argon2id parameters, so that the test is fast: 256 KiB, 1 pass, 1 lane.
const PARAMS: KdfParams = KdfParams {
    memory_kib: 256,
    passes: 1,
    lanes: 1,
};

fn id() -> KeyId {
    KeyId::parse("alice.k1").unwrap()
}

fn pw(bytes: &[u8]) -> Passphrase {
    Passphrase::new(bytes.to_vec())
}

/// Bytes `first, first + 1, ...`.
fn run<const N: usize>(first: u8) -> [u8; N] {
    std::array::from_fn(|i| first + i as u8)
}

/// The X25519 private key: bytes 40..5f.
fn secret() -> [u8; 32] {
    run(0x40)
}

/// The `.priv` salt (10..1f) and nonce (20..2b).
fn salt() -> [u8; 16] {
    run(0x10)
}

fn priv_nonce() -> [u8; 12] {
    run(0x20)
}

/// The host key (c0..df) and the `.pass` nonce (30..3b).
fn host_key() -> [u8; 32] {
    run(0xc0)
}

fn pass_nonce() -> [u8; 12] {
    run(0x30)
}

fn public() -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(secret())).to_bytes()
}

/// Write `bytes` to `dir/name` with exactly `mode`.
fn put(dir: &Path, name: &str, bytes: &[u8], mode: u32) {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A `key: value` field of a documented key file.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key} line in {text:?}"))
}

fn unhex(text: &str) -> Vec<u8> {
    crate::hex::decode(text).unwrap()
}

/// Open `sealed` (ciphertext, then the 16-byte tag) with ChaCha20-Poly1305,
/// straight from the crate: the documented construction, not the code's.
fn chacha_open(key: &[u8; 32], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Vec<u8> {
    let (body, tag) = sealed.split_at(sealed.len() - 16);
    let nonce: [u8; 12] = nonce.try_into().expect("a 12-byte nonce");
    let tag: [u8; 16] = tag.try_into().unwrap();
    let mut data = body.to_vec();
    ChaCha20Poly1305::new(&(*key).into())
        .decrypt_inout_detached(&nonce.into(), aad, data.as_mut_slice().into(), &tag.into())
        .expect("the documented tag verifies");
    data
}

#[test]
fn the_priv_example_is_what_the_code_writes_and_opens_with_its_passphrase() {
    let _doc = doc_lock();
    // What the writer makes from the fixed inputs is what the document shows.
    let text = priv_text(
        &id(),
        &StaticSecret::from(secret()),
        &pw(PASSPHRASE),
        PARAMS,
        &salt(),
        &priv_nonce(),
    )
    .unwrap();
    expect_fenced(DOC, "text", 0, &text);
    let key = kdf::derive(&pw(PASSPHRASE), &salt(), PARAMS).unwrap();
    expect_listing(DOC, 0, key.as_ref());
    let aad = priv_aad(&id(), &public());
    expect_listing(DOC, 1, &aad);
    expect_fenced(DOC, "text", 1, &public_line(&id(), &public()));

    // The documented derivation, step by step, from the document's bytes
    // with the primitives named there and nothing of the keystore's code.
    let doc_priv = fenced(DOC, "text", 0);
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(256, 1, 1, Some(32)).unwrap(),
    );
    assert_eq!(field(&doc_priv, "kdf"), "argon2id m=256 t=1 p=1");
    let mut derived = [0u8; 32];
    argon
        .hash_password_into(PASSPHRASE, &unhex(field(&doc_priv, "salt")), &mut derived)
        .unwrap();
    assert_eq!(derived[..], unhexdump(&listing(DOC, 0))[..]);
    let doc_public = unhex(field(&doc_priv, "public"));
    let doc_aad = [b"evfs private key v1".as_slice(), b"alice.k1", &doc_public].concat();
    assert_eq!(doc_aad, unhexdump(&listing(DOC, 1)));
    let sealed = unhex(field(&doc_priv, "sealed"));
    assert_eq!(sealed.len(), 32 + 16, "ciphertext, then the tag");
    let opened = chacha_open(
        &derived,
        &unhex(field(&doc_priv, "nonce")),
        &doc_aad,
        &sealed,
    );
    assert_eq!(opened, secret());
    let opened: [u8; 32] = opened.try_into().unwrap();
    let x25519 = PublicKey::from(&StaticSecret::from(opened)).to_bytes();
    assert_eq!(x25519[..], doc_public[..]);

    // The keystore opens the documented files with the documented passphrase.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    put(&dir, "k1.priv", doc_priv.as_bytes(), 0o600);
    put(&dir, "k1.pub", fenced(DOC, "text", 1).as_bytes(), 0o644);
    let ks = Keystore::at(tmp.path());
    let key = ks.unlock(&id(), &pw(PASSPHRASE)).unwrap();
    assert_eq!(key.public()[..], doc_public[..]);
    assert_eq!(key.secret().to_bytes(), secret());
    assert_eq!(ks.public(&id()).unwrap()[..], doc_public[..]);
    assert_eq!(
        parse_public_line(&fenced(DOC, "text", 1)),
        Some(public()),
        "`key import` reads the documented line"
    );
    // Not a byte more or less of the passphrase opens it.
    for wrong in [
        &b"correct horse battery stapl"[..],
        b"correct horse battery staple\n",
        b"Correct horse battery staple",
    ] {
        let e = crate::error::expect_err(ks.unlock(&id(), &pw(wrong)));
        assert_eq!(e.exit_code(), 4, "{e}");
    }

    // The fingerprint the document gives.
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC)).unwrap();
    let fp = fingerprint(&public());
    assert_eq!(
        fp,
        format!(
            "b3:{}",
            crate::hex::encode(&blake3::hash(&public()).as_bytes()[..8])
        )
    );
    assert!(doc.contains(&format!("`{fp}`")), "{DOC} names {fp}");
}

#[test]
fn the_pass_example_is_what_the_code_writes_and_gives_the_passphrase_back() {
    let _doc = doc_lock();
    let text = pass_text(&id(), &pw(PASSPHRASE), &host_key(), &pass_nonce());
    expect_listing(DOC, 2, &host_key());
    expect_listing(DOC, 3, pass_key(&host_key()).as_ref());
    expect_fenced(DOC, "text", 2, &text);

    // The documented derivation and seal, from the document's bytes.
    let doc_host: [u8; 32] = unhexdump(&listing(DOC, 2)).try_into().unwrap();
    let derived = blake3::derive_key("evfs 2026-11 stored passphrase key v1", &doc_host);
    assert_eq!(derived[..], unhexdump(&listing(DOC, 3))[..]);
    let doc_pass = fenced(DOC, "text", 2);
    let sealed = unhex(field(&doc_pass, "sealed"));
    assert_eq!(
        sealed.len(),
        PASSPHRASE.len() + 16,
        "ciphertext, then the tag"
    );
    let opened = chacha_open(
        &derived,
        &unhex(field(&doc_pass, "nonce")),
        b"alice.k1",
        &sealed,
    );
    assert_eq!(opened, PASSPHRASE);

    // The keystore reads the documented `.hostkey` and `.pass`, and the
    // passphrase it gets opens the documented `.priv`.
    let tmp = tempfile::tempdir().unwrap();
    put(tmp.path(), ".hostkey", &doc_host, 0o600);
    let dir = tmp.path().join("alice");
    put(&dir, "k1.pass", doc_pass.as_bytes(), 0o600);
    put(&dir, "k1.priv", fenced(DOC, "text", 0).as_bytes(), 0o600);
    put(&dir, "k1.pub", fenced(DOC, "text", 1).as_bytes(), 0o644);
    let ks = Keystore::at(tmp.path());
    let stored = ks.stored_passphrase(&id()).unwrap().unwrap();
    assert_eq!(stored.expose(), PASSPHRASE);
    assert_eq!(ks.unlock(&id(), &stored).unwrap().public(), public());
    // Another host key does not open it.
    put(tmp.path(), ".hostkey", &[0x55; 32], 0o600);
    let e = crate::error::expect_err(ks.stored_passphrase(&id()));
    assert_eq!(e.exit_code(), 4, "{e}");
}

#[test]
fn the_trust_example_is_what_the_code_writes_and_makes_the_key_trusted() {
    let _doc = doc_lock();
    expect_fenced(DOC, "text", 3, &trust_text(&public()));
    // A keystore that imported alice.k1's public key (no private key) and
    // holds the documented `.trust` trusts her signatures.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    put(&dir, "k1.pub", fenced(DOC, "text", 1).as_bytes(), 0o644);
    let ks = Keystore::at(tmp.path());
    assert!(!ks.is_trusted(&id(), &public()).unwrap(), "imported only");
    put(&dir, "k1.trust", fenced(DOC, "text", 3).as_bytes(), 0o644);
    assert!(ks.is_trusted(&id(), &public()).unwrap());
    // It vouches for that public key only.
    assert!(!ks.is_trusted(&id(), &[9; 32]).unwrap());
    // A key pair of the keystore is trusted without one.
    fs::remove_file(dir.join("k1.trust")).unwrap();
    put(&dir, "k1.priv", fenced(DOC, "text", 0).as_bytes(), 0o600);
    assert!(ks.is_trusted(&id(), &public()).unwrap());
}

#[test]
fn the_documented_modes_are_the_ones_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ks");
    let ks = Keystore::at(&root);
    let id = id();
    ks.generate(&id, &pw(PASSPHRASE), PARAMS).unwrap();
    ks.store_passphrase(&id, &pw(PASSPHRASE)).unwrap();
    ks.trust(&id).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    for (path, want) in [
        (root.clone(), 0o700),
        (root.join("alice"), 0o700),
        (root.join(".hostkey"), 0o600),
        (root.join("alice/k1.priv"), 0o600),
        (root.join("alice/k1.pass"), 0o600),
        (root.join("alice/k1.pub"), 0o644),
        (root.join("alice/k1.trust"), 0o644),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    assert_eq!(fs::read(root.join(".hostkey")).unwrap().len(), 32);
    // Nothing else is left in the directories (no temporary files).
    let mut names: Vec<String> = fs::read_dir(root.join("alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["k1.pass", "k1.priv", "k1.pub", "k1.trust"]);
}
