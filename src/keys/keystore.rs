//! The keystore directory: `<user>/<keyname>.pub` (0644), `.priv` (0600),
//! `.pass` (0600), and `.hostkey` (0600) at the top.
//!
//! A `.priv` holds the X25519 private key sealed with ChaCha20-Poly1305 under
//! a key derived from the passphrase by Argon2id; the KDF parameters and salt
//! are stored beside it. A `.pass` holds the passphrase sealed under a key
//! derived from the host key, so that the `.pass` alone reveals nothing.
//!
//! Every file is read and written through `keys::files`, which
//! refuses links, files and directories that another user could have put in
//! place, and creates files so that concurrent runs cannot replace each
//! other's keys.

use std::fs;
use std::path::{Path, PathBuf};

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::KeyId;
use super::files::{Dir, Trust};
use crate::crypto::kdf::{self, KdfParams};
use crate::crypto::{self, Passphrase};
use crate::error::{CliAdvice, Error, IoContext, Result};
use crate::hex;

const PRIV_HEADER: &str = "evfs private key v1";
const PASS_HEADER: &str = "evfs stored passphrase v1";
const PUB_TAG: &str = "evfs-x25519";
const HOSTKEY: &str = ".hostkey";
const PASS_CONTEXT: &str = "evfs 2026-11 stored passphrase key v1";
/// Longest passphrase we store or read from a file.
pub const PASSPHRASE_MAX: usize = 4096;

/// An unlocked private key. The secret is wiped on drop; no `Debug`, no `Clone`.
pub struct PrivateKey {
    id: KeyId,
    secret: StaticSecret,
}

impl PrivateKey {
    /// The key pair's ID.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The X25519 private key.
    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// The X25519 public key of this private key.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }

    /// A key from its secret bytes: the fixed keys of worked examples.
    #[cfg(test)]
    pub(crate) fn from_secret(id: KeyId, secret: [u8; 32]) -> PrivateKey {
        PrivateKey {
            id,
            secret: StaticSecret::from(secret),
        }
    }

    /// The signature of `message` with this key (see `crypto::sign`); the
    /// signature block that carries it is `signature::Sign`'s.
    pub fn signature_of(&self, message: &[u8]) -> [u8; crate::crypto::sign::SIGNATURE_LEN] {
        crate::crypto::sign::sign(&self.secret, message)
    }
}

/// One line of `key list`.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The key's ID.
    pub id: KeyId,
    /// Its X25519 public key, from the `.pub`.
    pub public: [u8; 32],
    /// A `.priv` is there (a link counts; using one is refused).
    pub has_private: bool,
    /// A stored passphrase (`.pass`) is there.
    pub has_passphrase: bool,
    /// Its signatures are trusted: a key pair of this keystore, or a public
    /// key imported with trust.
    pub trusted: bool,
}

/// What a `.trust` file holds: the public key it vouches for, so that a
/// `.pub` swapped afterwards is not trusted by the old mark.
const TRUST_HEADER: &str = "evfs trusted signer v1";

pub use crate::crypto::sign::fingerprint;

/// The `.pub` file line (also what `key show` prints and `key import` reads).
pub fn public_line(id: &KeyId, public: &[u8; 32]) -> String {
    format!("{PUB_TAG} {} {}\n", hex::encode(public), id)
}

/// Parse a `.pub` line; the ID in it is informational.
pub fn parse_public_line(text: &str) -> Option<[u8; 32]> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let mut parts = line.split_whitespace();
    if parts.next()? != PUB_TAG {
        return None;
    }
    hex::decode_array::<32>(parts.next()?)
}

/// The keystore directory.
pub struct Keystore {
    root: PathBuf,
}

impl Keystore {
    /// `--keystore DIR`, else `$EVFS_KEYSTORE`, else `/etc/evfs/pkey` for root,
    /// else `$XDG_CONFIG_HOME/evfs/pkey` (`~/.config/evfs/pkey`).
    pub fn resolve(flag: Option<&Path>) -> Result<Keystore> {
        if let Some(p) = flag {
            return Ok(Keystore::at(p));
        }
        if let Some(p) = std::env::var_os("EVFS_KEYSTORE").filter(|v| !v.is_empty()) {
            return Ok(Keystore::at(Path::new(&p)));
        }
        if rustix::process::geteuid().is_root() {
            return Ok(Keystore::at(Path::new("/etc/evfs/pkey")));
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| {
                Error::usage("no keystore: neither HOME nor XDG_CONFIG_HOME is set")
                    .with_hint(CliAdvice::KeystoreLocation)
            })?;
        Ok(Keystore::at(&config.join("evfs/pkey")))
    }

    /// The keystore rooted at `root` (nothing is read or made yet).
    pub fn at(root: &Path) -> Keystore {
        Keystore {
            root: root.to_path_buf(),
        }
    }

    /// The keystore's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, id: &KeyId, ext: &str) -> PathBuf {
        self.root.join(id.user()).join(file_name(id, ext))
    }

    /// The user directory of `id`, made (0700, with the keystore) if missing.
    fn create_user_dir(&self, id: &KeyId) -> Result<Dir> {
        Dir::create(&self.root)?.create_subdir(id.user())
    }

    /// The key file `<keyname>.<ext>` of `id`, checked for `trust`; `None`
    /// when it or its directories do not exist.
    fn read(&self, id: &KeyId, ext: &str, trust: Trust) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(root) = Dir::open(&self.root)? else {
            return Ok(None);
        };
        let Some(dir) = root.subdir(id.user())? else {
            return Ok(None);
        };
        dir.read(&file_name(id, ext), trust)
    }

    /// Where the `.pub` of `id` is (read it through [`Keystore::public`]).
    pub(crate) fn pub_path(&self, id: &KeyId) -> PathBuf {
        self.file(id, "pub")
    }

    /// Where the sealed private key of `id` is.
    pub(crate) fn priv_path(&self, id: &KeyId) -> PathBuf {
        self.file(id, "priv")
    }

    /// Where the stored passphrase of `id` is.
    pub(crate) fn pass_path(&self, id: &KeyId) -> PathBuf {
        self.file(id, "pass")
    }

    /// Make a new key pair sealed under `pass`; refuses to overwrite one.
    pub fn generate(&self, id: &KeyId, pass: &Passphrase, params: KdfParams) -> Result<[u8; 32]> {
        let params = params.validate()?;
        let dir = self.create_user_dir(id)?;
        let (priv_name, pub_name) = (file_name(id, "priv"), file_name(id, "pub"));
        // Checked again when the files are linked into place; this early
        // check only spares the user the KDF's wait.
        if dir.exists(&priv_name)? || dir.exists(&pub_name)? {
            return Err(self.exists_error(id));
        }
        let secret = StaticSecret::from(crypto::random_array::<32>()?);
        let public = PublicKey::from(&secret).to_bytes();
        let salt = crypto::random_array::<16>()?;
        let nonce = crypto::random_array::<12>()?;
        let text = priv_text(id, &secret, pass, params, &salt, &nonce)?;
        // Linked into place, not renamed: of two runs making the same key at
        // once, one fails here instead of both succeeding with one .priv and
        // the other's .pub.
        if !dir.create_new(&priv_name, text.as_bytes(), 0o600)? {
            return Err(self.exists_error(id));
        }
        if !dir.create_new(&pub_name, public_line(id, &public).as_bytes(), 0o644)? {
            // Someone imported a public key under this ID meanwhile; keep
            // theirs and leave no private key without its public half.
            dir.remove(&priv_name)?;
            return Err(self.exists_error(id));
        }
        Ok(public)
    }

    fn exists_error(&self, id: &KeyId) -> Error {
        Error::usage(format!(
            "key {id} already exists in {}",
            self.root.display()
        ))
        .with_hint("choose another key name, or remove the old key's files first")
    }

    /// Add someone else's public key under `id`.
    pub fn import(&self, id: &KeyId, public: &[u8; 32]) -> Result<()> {
        let dir = self.create_user_dir(id)?;
        let line = public_line(id, public);
        if dir.create_new(&file_name(id, "pub"), line.as_bytes(), 0o644)? {
            return Ok(());
        }
        // Importing the same key again is fine; another key under its ID is not.
        if &self.public(id)? == public {
            return Ok(());
        }
        Err(Error::usage(format!(
            "key {id} already exists in {} with another public key",
            self.root.display()
        ))
        .with_hint("import it under another key ID"))
    }

    /// Trust `id`'s signatures (`key import --trust`): a `.trust` file
    /// beside its `.pub`, naming the public key it vouches for.
    pub fn trust(&self, id: &KeyId) -> Result<()> {
        let public = self.public(id)?;
        let dir = self.create_user_dir(id)?;
        dir.replace(
            &file_name(id, "trust"),
            trust_text(&public).as_bytes(),
            0o644,
        )
    }

    /// Withdraw trust from `id` (`key untrust`); `false` when there was
    /// none to withdraw. A key pair of this keystore stays trusted while its
    /// private key is here.
    pub fn untrust(&self, id: &KeyId) -> Result<bool> {
        match Dir::open(&self.root)?
            .map(|r| r.subdir(id.user()))
            .transpose()?
        {
            Some(Some(dir)) => dir.remove(&file_name(id, "trust")),
            _ => Ok(false),
        }
    }

    /// Whether `id`, with public key `public`, is a trusted signer here:
    /// a key pair of this keystore, or a key imported with trust whose
    /// `.pub` still holds `public`.
    pub fn is_trusted(&self, id: &KeyId, public: &[u8; 32]) -> Result<bool> {
        match self.public(id) {
            Ok(p) if &p == public => {}
            _ => return Ok(false),
        }
        // A key pair of this keystore: its `.priv` passes the checks of a
        // secret file. A link, a loose file, or a file another user put in
        // a shared (sticky) directory does not make the key trusted.
        if self.has_private(id) {
            return Ok(true);
        }
        let Some(bytes) = self.read(id, "trust", Trust::Public)? else {
            return Ok(false);
        };
        let text = std::str::from_utf8(&bytes).unwrap_or("");
        let mut lines = text.lines();
        Ok(lines.next() == Some(TRUST_HEADER)
            && lines.next().and_then(hex::decode_array::<32>).as_ref() == Some(public))
    }

    /// The public key of `id`.
    pub fn public(&self, id: &KeyId) -> Result<[u8; 32]> {
        let path = self.pub_path(id);
        let Some(bytes) = self.read(id, "pub", Trust::Public)? else {
            return Err(
                Error::runtime(format!("no key {id} in keystore {}", self.root.display()))
                    .with_hint(CliAdvice::ImportKey { id: id.to_string() }),
            );
        };
        let text = std::str::from_utf8(&bytes).unwrap_or("");
        parse_public_line(text).ok_or_else(|| {
            Error::integrity(format!("{} is not an evfs public key file", path.display()))
        })
    }

    /// Whether the private key of `id` is in this keystore.
    /// (One that passes the checks of a secret file: the same test that
    /// makes a key pair a trusted signer.)
    pub fn has_private(&self, id: &KeyId) -> bool {
        matches!(self.read(id, "priv", Trust::Secret), Ok(Some(_)))
    }

    /// Whether a stored passphrase exists for `id`.
    pub fn has_stored_passphrase(&self, id: &KeyId) -> bool {
        self.pass_path(id).exists()
    }

    /// Decrypt the private key of `id` with `pass`. Exit 4 when the passphrase
    /// is wrong or there is no private key.
    pub fn unlock(&self, id: &KeyId, pass: &Passphrase) -> Result<PrivateKey> {
        let path = self.priv_path(id);
        let Some(bytes) = self.read(id, "priv", Trust::Secret)? else {
            return Err(Error::access(format!(
                "no private key for {id} ({} does not exist)",
                path.display()
            ))
            .with_hint(CliAdvice::GenerateKey));
        };
        let text = secret_text(&bytes, &path)?;
        let parsed = PrivFile::parse(&text)
            .ok_or_else(|| Error::integrity(format!("{} is damaged", path.display())))?;
        if &parsed.id != id {
            return Err(Error::integrity(format!(
                "{} holds key {}, not {id}",
                path.display(),
                parsed.id
            )));
        }
        let key = kdf::derive(pass, &parsed.salt, parsed.params)?;
        let mut secret = Zeroizing::new(parsed.sealed);
        if !crypto::open(
            &key,
            &parsed.nonce,
            &priv_aad(id, &parsed.public),
            secret.as_mut(),
            &parsed.tag,
        ) {
            return Err(Error::access(format!("wrong passphrase for key {id}"))
                .with_hint(CliAdvice::WrongPassphrase));
        }
        let secret = StaticSecret::from(*secret);
        if PublicKey::from(&secret).to_bytes() != parsed.public {
            return Err(Error::integrity(format!(
                "{}: private and public key do not match",
                path.display()
            )));
        }
        Ok(PrivateKey {
            id: id.clone(),
            secret,
        })
    }

    /// Seal `pass` with the host key into `<id>.pass`.
    pub fn store_passphrase(&self, id: &KeyId, pass: &Passphrase) -> Result<()> {
        let host = self.hostkey(true)?;
        let nonce = crypto::random_array::<12>()?;
        let text = pass_text(id, pass, &host, &nonce);
        self.create_user_dir(id)?
            .replace(&file_name(id, "pass"), text.as_bytes(), 0o600)
    }

    /// The stored passphrase of `id`, if there is one.
    pub fn stored_passphrase(&self, id: &KeyId) -> Result<Option<Passphrase>> {
        let path = self.pass_path(id);
        let Some(bytes) = self.read(id, "pass", Trust::Secret)? else {
            return Ok(None);
        };
        let text = secret_text(&bytes, &path)?;
        let damaged = || Error::integrity(format!("{} is damaged", path.display()));
        let mut nonce = None;
        let mut sealed = None;
        let mut lines = text.lines();
        if lines.next() != Some(PASS_HEADER) {
            return Err(damaged());
        }
        for line in lines {
            match line.split_once(": ") {
                Some(("nonce", v)) => nonce = hex::decode_array::<12>(v),
                Some(("sealed", v)) => sealed = hex::decode(v),
                _ => {}
            }
        }
        let (nonce, sealed) = nonce.zip(sealed).ok_or_else(damaged)?;
        if sealed.len() < 16 || sealed.len() > PASSPHRASE_MAX + 16 {
            return Err(damaged());
        }
        let host = self.hostkey(false)?;
        let key = pass_key(&host);
        let (body, tag) = sealed.split_at(sealed.len() - 16);
        let mut body = Zeroizing::new(body.to_vec());
        let tag: [u8; 16] = tag.try_into().expect("16 bytes");
        if !crypto::open(&key, &nonce, id.as_str().as_bytes(), &mut body, &tag) {
            return Err(Error::access(format!(
                "the stored passphrase of {id} cannot be opened with this host key"
            ))
            .with_hint(CliAdvice::StorePassphrase {
                id: Some(id.to_string()),
            }));
        }
        Ok(Some(Passphrase::new(body.to_vec())))
    }

    /// Remove the stored passphrase of `id`; `false` if there was none.
    pub fn forget_passphrase(&self, id: &KeyId) -> Result<bool> {
        let path = self.pass_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }

    /// Every key in the store, sorted by ID.
    pub fn list(&self) -> Result<Vec<KeyEntry>> {
        let mut out = Vec::new();
        // The keystore's own checks first; each public key is read with its
        // directory's checks below.
        if Dir::open(&self.root)?.is_none() {
            return Ok(out);
        }
        let users = fs::read_dir(&self.root).ctx("reading", &self.root)?;
        for user in users {
            let user = user.ctx("reading", &self.root)?;
            if !user.file_type().ctx("reading", user.path())?.is_dir() {
                continue;
            }
            let dir = user.path();
            for entry in fs::read_dir(&dir).ctx("reading", &dir)? {
                let entry = entry.ctx("reading", &dir)?;
                let name = entry.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".pub")) else {
                    continue;
                };
                let Ok(id) =
                    KeyId::parse(&format!("{}.{stem}", user.file_name().to_string_lossy()))
                else {
                    continue;
                };
                let public = self.public(&id)?;
                // A link counts as present here; using it is refused.
                let present = |p: PathBuf| fs::symlink_metadata(p).is_ok();
                out.push(KeyEntry {
                    has_private: present(self.priv_path(&id)),
                    has_passphrase: present(self.pass_path(&id)),
                    trusted: self.is_trusted(&id, &public)?,
                    id,
                    public,
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn hostkey(&self, create: bool) -> Result<Zeroizing<[u8; 32]>> {
        let path = self.root.join(HOSTKEY);
        let missing = || {
            Error::access(format!(
                "the host key {} is missing, so stored passphrases cannot be opened",
                path.display()
            ))
            .with_hint(CliAdvice::StorePassphrase { id: None })
        };
        let root = if create {
            Dir::create(&self.root)?
        } else {
            Dir::open(&self.root)?.ok_or_else(missing)?
        };
        let bytes = match root.read(HOSTKEY, Trust::Secret)? {
            Some(bytes) => bytes,
            None if create => {
                // Two runs storing their first passphrases at once both get
                // here. Only one link succeeds; both then use the key on
                // disk, so that neither seals a passphrase under a key that
                // is lost.
                let key = Zeroizing::new(crypto::random_array::<32>()?);
                root.create_new(HOSTKEY, key.as_ref(), 0o600)?;
                root.read(HOSTKEY, Trust::Secret)?.ok_or_else(missing)?
            }
            None => return Err(missing()),
        };
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::integrity(format!("{} is damaged", path.display())))?;
        Ok(Zeroizing::new(key))
    }
}

struct PrivFile {
    id: KeyId,
    public: [u8; 32],
    params: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 12],
    sealed: [u8; 32],
    tag: [u8; 16],
}

impl PrivFile {
    fn parse(text: &str) -> Option<PrivFile> {
        let mut lines = text.lines();
        if lines.next()? != PRIV_HEADER {
            return None;
        }
        let (mut id, mut public, mut params, mut salt, mut nonce, mut sealed) =
            (None, None, None, None, None, None);
        for line in lines {
            let (k, v) = line.split_once(": ")?;
            match k {
                "id" => id = KeyId::parse(v).ok(),
                "public" => public = hex::decode_array::<32>(v),
                "kdf" => params = parse_kdf(v),
                "salt" => salt = hex::decode_array::<16>(v),
                "nonce" => nonce = hex::decode_array::<12>(v),
                "sealed" => sealed = hex::decode_array::<48>(v),
                _ => {}
            }
        }
        let sealed = sealed?;
        Some(PrivFile {
            id: id?,
            public: public?,
            params: params?,
            salt: salt?,
            nonce: nonce?,
            sealed: sealed[..32].try_into().ok()?,
            tag: sealed[32..].try_into().ok()?,
        })
    }
}

fn parse_kdf(v: &str) -> Option<KdfParams> {
    let mut parts = v.split_whitespace();
    if parts.next()? != "argon2id" {
        return None;
    }
    let (mut m, mut t, mut p) = (None, None, None);
    for part in parts {
        let (k, n) = part.split_once('=')?;
        let n: u32 = n.parse().ok()?;
        match k {
            "m" => m = Some(n),
            "t" => t = Some(n),
            "p" => p = Some(n),
            _ => return None,
        }
    }
    KdfParams {
        memory_kib: m?,
        passes: t?,
        lanes: p?,
    }
    .validate()
    .ok()
}

/// `<keyname>.<ext>`, the name of a key file in its user directory.
fn file_name(id: &KeyId, ext: &str) -> String {
    format!("{}.{ext}", id.keyname())
}

/// The text of a `.priv` file: `secret` sealed under a key derived from
/// `pass` with `params` and `salt`, with `nonce`.
pub(super) fn priv_text(
    id: &KeyId,
    secret: &StaticSecret,
    pass: &Passphrase,
    params: KdfParams,
    salt: &[u8; 16],
    nonce: &[u8; 12],
) -> Result<String> {
    let public = PublicKey::from(secret).to_bytes();
    let key = kdf::derive(pass, salt, params)?;
    let mut sealed = Zeroizing::new(secret.to_bytes());
    let tag = crypto::seal(&key, nonce, &priv_aad(id, &public), sealed.as_mut());
    Ok(format!(
        "{PRIV_HEADER}\nid: {id}\npublic: {}\nkdf: argon2id m={} t={} p={}\nsalt: {}\nnonce: {}\nsealed: {}{}\n",
        hex::encode(&public),
        params.memory_kib,
        params.passes,
        params.lanes,
        hex::encode(salt),
        hex::encode(nonce),
        hex::encode(sealed.as_ref()),
        hex::encode(&tag),
    ))
}

/// The key that seals stored passphrases, derived from the host key.
pub(super) fn pass_key(host: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key(PASS_CONTEXT, host))
}

/// The text of a `.pass` file: `pass` sealed under the key of `host`, with `nonce`.
pub(super) fn pass_text(
    id: &KeyId,
    pass: &Passphrase,
    host: &[u8; 32],
    nonce: &[u8; 12],
) -> String {
    let key = pass_key(host);
    let mut sealed = Zeroizing::new(pass.expose().to_vec());
    let tag = crypto::seal(&key, nonce, id.as_str().as_bytes(), &mut sealed);
    format!(
        "{PASS_HEADER}\nid: {id}\nnonce: {}\nsealed: {}{}\n",
        hex::encode(nonce),
        hex::encode(&sealed),
        hex::encode(&tag)
    )
}

/// The text of a `.trust` file vouching for `public`.
pub(super) fn trust_text(public: &[u8; 32]) -> String {
    format!("{TRUST_HEADER}\n{}\n", hex::encode(public))
}

/// The associated data of a `.priv`'s AEAD: its header, the key ID and the
/// public key, concatenated.
pub(super) fn priv_aad(id: &KeyId, public: &[u8; 32]) -> Vec<u8> {
    let mut aad = PRIV_HEADER.as_bytes().to_vec();
    aad.extend_from_slice(id.as_str().as_bytes());
    aad.extend_from_slice(public);
    aad
}

/// The text of a secret file, as UTF-8, wiped on drop.
fn secret_text(bytes: &[u8], path: &Path) -> Result<Zeroizing<String>> {
    std::str::from_utf8(bytes)
        .map(|t| Zeroizing::new(t.to_string()))
        .map_err(|_| Error::integrity(format!("{} is damaged", path.display())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    const SMALL: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    fn store() -> (tempfile::TempDir, Keystore) {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::at(&dir.path().join("ks"));
        (dir, ks)
    }

    fn pw(s: &str) -> Passphrase {
        Passphrase::new(s.as_bytes().to_vec())
    }

    #[test]
    fn generate_unlock_and_wrong_passphrase() {
        let (_d, ks) = store();
        let id = KeyId::parse("alice.k1").unwrap();
        let public = ks.generate(&id, &pw("secret words"), SMALL).unwrap();
        assert_eq!(ks.public(&id).unwrap(), public);
        let key = ks.unlock(&id, &pw("secret words")).unwrap();
        assert_eq!(key.public(), public);
        assert_eq!(
            crate::error::expect_err(ks.unlock(&id, &pw("wrong"))).exit_code(),
            4
        );
        let mode = |p: PathBuf| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(ks.priv_path(&id)), 0o600);
        assert_eq!(mode(ks.pub_path(&id)), 0o644);
        assert!(ks.generate(&id, &pw("x"), SMALL).is_err());
    }

    #[test]
    fn private_file_holds_no_clear_secret_and_is_refused_when_group_readable() {
        let (_d, ks) = store();
        let id = KeyId::parse("bob").unwrap();
        ks.generate(&id, &pw("hunter2-passphrase"), SMALL).unwrap();
        let text = fs::read_to_string(ks.priv_path(&id)).unwrap();
        assert!(!text.contains("hunter2"));
        let secret = ks.unlock(&id, &pw("hunter2-passphrase")).unwrap();
        assert!(!text.contains(&hex::encode(secret.secret().as_bytes())));
        fs::set_permissions(ks.priv_path(&id), fs::Permissions::from_mode(0o640)).unwrap();
        let e = crate::error::expect_err(ks.unlock(&id, &pw("hunter2-passphrase")));
        assert_eq!(e.exit_code(), 4);
        assert!(e.hint().unwrap().to_string().contains("chmod 600"));
    }

    #[test]
    fn stored_passphrase_round_trip_and_forget() {
        let (_d, ks) = store();
        let id = KeyId::parse("carol.k").unwrap();
        ks.generate(&id, &pw("pp"), SMALL).unwrap();
        assert!(ks.stored_passphrase(&id).unwrap().is_none());
        ks.store_passphrase(&id, &pw("pp")).unwrap();
        let text = fs::read_to_string(ks.pass_path(&id)).unwrap();
        assert!(!text.contains("pp\n") && !text.contains(&hex::encode(b"pp")));
        let back = ks.stored_passphrase(&id).unwrap().unwrap();
        assert_eq!(back.expose(), b"pp");
        assert!(ks.forget_passphrase(&id).unwrap());
        assert!(!ks.forget_passphrase(&id).unwrap());
        assert!(ks.stored_passphrase(&id).unwrap().is_none());
    }

    #[test]
    fn import_list_and_public_line() {
        let (_d, ks) = store();
        let id = KeyId::parse("dave.k").unwrap();
        let public = [5u8; 32];
        ks.import(&id, &public).unwrap();
        let line = public_line(&id, &public);
        assert_eq!(parse_public_line(&line), Some(public));
        let list = ks.list().unwrap();
        assert_eq!(list.len(), 1);
        assert!(!list[0].has_private);
        assert!(ks.import(&id, &[6u8; 32]).is_err());
    }

    /// Regression: any `.priv` beside a `.pub` made the key trusted, even a
    /// link or a file the keystore's checks refuse (in a sticky directory,
    /// one that another user put there), so an imported key became a
    /// trusted signer without `key import --trust`.
    #[test]
    fn only_a_private_key_that_passes_the_checks_makes_a_key_pair_trusted() {
        let (_d, ks) = store();
        let id = KeyId::parse("gina.k").unwrap();
        let public = ks.generate(&id, &pw("pp"), SMALL).unwrap();
        assert!(
            ks.is_trusted(&id, &public).unwrap(),
            "a key pair of this keystore"
        );
        let path = ks.priv_path(&id);
        let moved = ks.root().join("elsewhere.priv");
        fs::rename(&path, &moved).unwrap();
        assert!(!ks.is_trusted(&id, &public).unwrap(), "public key only");
        std::os::unix::fs::symlink(&moved, &path).unwrap();
        assert!(!ks.is_trusted(&id, &public).unwrap(), "a link");
        fs::remove_file(&path).unwrap();
        fs::copy(&moved, &path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!ks.is_trusted(&id, &public).unwrap(), "readable by others");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ks.is_trusted(&id, &public).unwrap());
        assert!(!ks.is_trusted(&id, &[7; 32]).unwrap(), "another public key");
    }

    #[test]
    fn damaged_private_file_is_an_integrity_error_not_a_panic() {
        let (_d, ks) = store();
        let id = KeyId::parse("erin").unwrap();
        ks.generate(&id, &pw("pp"), SMALL).unwrap();
        fs::write(
            ks.priv_path(&id),
            "evfs private key v1\nkdf: argon2id m=4294967295 t=1 p=1\n",
        )
        .unwrap();
        fs::set_permissions(ks.priv_path(&id), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            crate::error::expect_err(ks.unlock(&id, &pw("pp"))).exit_code(),
            5
        );
    }

    /// Regression (issue case 9): runs storing their first passphrases at
    /// once each made a host key and the last replaced the others.
    #[test]
    fn concurrent_first_stored_passphrases_share_one_host_key() {
        let (_d, ks) = store();
        let ids: Vec<KeyId> = (0..6)
            .map(|i| KeyId::parse(&format!("u{i}.k")).unwrap())
            .collect();
        for id in &ids {
            ks.generate(id, &pw(id.as_str()), SMALL).unwrap();
        }
        let barrier = std::sync::Barrier::new(ids.len());
        std::thread::scope(|s| {
            for id in &ids {
                let (root, barrier) = (ks.root(), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    Keystore::at(root)
                        .store_passphrase(id, &pw(id.as_str()))
                        .unwrap();
                });
            }
        });
        for id in &ids {
            let back = ks.stored_passphrase(id).unwrap().unwrap();
            assert_eq!(back.expose(), id.as_str().as_bytes());
        }
    }

    #[test]
    fn links_and_loose_directories_are_refused_with_exit_4() {
        let (_d, ks) = store();
        let id = KeyId::parse("frank.k").unwrap();
        ks.generate(&id, &pw("pp"), SMALL).unwrap();
        ks.store_passphrase(&id, &pw("pp")).unwrap();
        let moved = ks.root().join("elsewhere");
        for path in [
            ks.priv_path(&id),
            ks.pass_path(&id),
            ks.root().join(HOSTKEY),
        ] {
            fs::rename(&path, &moved).unwrap();
            std::os::unix::fs::symlink(&moved, &path).unwrap();
            let e = match path.extension().and_then(|e| e.to_str()) {
                Some("priv") => crate::error::expect_err(ks.unlock(&id, &pw("pp"))),
                _ => crate::error::expect_err(ks.stored_passphrase(&id)),
            };
            assert_eq!(e.exit_code(), 4, "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            fs::remove_file(&path).unwrap();
            fs::rename(&moved, &path).unwrap();
        }
        assert_eq!(ks.stored_passphrase(&id).unwrap().unwrap().expose(), b"pp");
        let user_dir = ks.root().join("frank");
        fs::set_permissions(&user_dir, fs::Permissions::from_mode(0o770)).unwrap();
        for e in [
            crate::error::expect_err(ks.unlock(&id, &pw("pp"))),
            crate::error::expect_err(ks.public(&id).map(|_| ())),
            crate::error::expect_err(ks.generate(
                &KeyId::parse("frank.k2").unwrap(),
                &pw("x"),
                SMALL,
            )),
        ] {
            assert_eq!(e.exit_code(), 4, "{e}");
            assert!(e.hint().unwrap().to_string().contains("chmod 700"), "{e:?}");
        }
    }
}
