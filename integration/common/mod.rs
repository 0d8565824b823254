//! The one helper module of the CLI tests: a scratch directory with a
//! keystore, the real `evfs` binary run inside it (one way to start it, as
//! an `assert_cmd` or a `std` command), sample data, and in [`tools`] the
//! external tools some tests drive.
#![allow(dead_code)]

pub mod cryptsetup;
pub mod tools;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// The `evfs` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_evfs")
}

/// A scratch directory with its own keystore.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A scratch directory on tmpfs (`/dev/shm`) where there is one: fast,
    /// for tests that write a lot.
    pub fn on_tmpfs() -> Env {
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir());
        Env {
            dir: dir.expect("a scratch directory"),
        }
    }

    /// A new scratch directory with the keys `ids` generated; their
    /// passphrase files, in order.
    pub fn with_keys(ids: &[&str]) -> (Env, Vec<String>) {
        let env = Env::new();
        let pws = ids.iter().map(|id| env.gen_key(id)).collect();
        (env, pws)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn keystore(&self) -> PathBuf {
        self.path("keystore")
    }

    /// `evfs --keystore <ks> ARGS` in the scratch directory, stdin empty.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::from_std(self.process(args));
        c.write_stdin(Vec::<u8>::new());
        c
    }

    /// The same command as a `std` process, for pipes, signals and
    /// children that run in the background.
    pub fn process(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(bin());
        c.current_dir(self.dir.path())
            .arg("--keystore")
            .arg(self.keystore())
            .args(args)
            .env_remove("EVFS_KEYSTORE");
        c
    }

    /// Run a bash script in the scratch directory with `$EVFS` set to the
    /// binary and its keystore: for real shell redirections and pipes.
    pub fn bash(&self, script: &str) -> Output {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env(
                "EVFS",
                format!("{} --keystore {}", bin(), self.keystore().display()),
            )
            .env_remove("EVFS_KEYSTORE")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash")
    }

    /// Run and return the output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run evfs")
    }

    /// Run, require exit `code`, return (stdout, stderr).
    pub fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "evfs {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args).0
    }

    /// Write a passphrase file for `id` and return its path (as text).
    pub fn pass_file(&self, id: &str) -> String {
        let p = self.path(&format!("{id}.pw"));
        std::fs::write(&p, format!("pass phrase of {id}\n")).unwrap();
        p.display().to_string()
    }

    /// `key gen ID` with a passphrase file and a small KDF.
    pub fn gen_key(&self, id: &str) -> String {
        let pw = self.pass_file(id);
        self.ok(&[
            "key",
            "gen",
            id,
            "--passphrase-file",
            &pw,
            "--kdf-memory",
            "256K",
            "--kdf-passes",
            "1",
        ]);
        pw
    }

    /// A new volume of `size` owned by `owner`, its EMD signed with the
    /// owner's key (passphrase file `OWNER.pw`).
    pub fn create(&self, vol: &str, owner: &str, size: &str) {
        let pw = format!("{owner}.pw");
        self.ok(&[
            "create",
            vol,
            "--owner",
            owner,
            "--size",
            size,
            "--passphrase-file",
            &pw,
        ]);
    }

    /// [`Env::process`] as another user: the binary is copied into the
    /// scratch directory first (made 0755), since the build directory may
    /// be out of that user's reach (a checkout under a 0700 home).
    pub fn process_as(&self, uid: u32, gid: u32, args: &[&str]) -> std::process::Command {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let exe = self.path("evfs-binary");
        if !exe.exists() {
            std::fs::copy(bin(), &exe).expect("copy the evfs binary");
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
            // A child forked meanwhile by another test thread holds the
            // copy's descriptor open for writing until it execs, and
            // exec fails with ETXTBSY until then: wait for that to pass.
            for _ in 0..100 {
                match std::process::Command::new(&exe).arg("--version").output() {
                    Err(e) if e.raw_os_error() == Some(26) => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
        let mut c = std::process::Command::new(&exe);
        c.current_dir(self.dir.path())
            .arg("--keystore")
            .arg(self.keystore())
            .args(args)
            .env_remove("EVFS_KEYSTORE")
            .uid(uid)
            .gid(gid);
        c
    }

    /// Write `len` bytes of [`mixed_data`] to `image` and encrypt them into a
    /// new volume `vol` owned by `owner` (signed with its key); returns the data.
    pub fn volume_from_data(
        &self,
        image: &str,
        vol: &str,
        owner: &str,
        len: usize,
        seed: u64,
    ) -> Vec<u8> {
        let data = mixed_data(len, seed);
        std::fs::write(self.path(image), &data).unwrap();
        let pw = format!("{owner}.pw");
        self.ok(&[
            "backup",
            image,
            vol,
            "--owner",
            owner,
            "--passphrase-file",
            &pw,
        ]);
        data
    }

    /// `info --json` as a JSON value.
    pub fn info(&self, vol: &str) -> serde_json::Value {
        let out = self.ok(&["info", vol, "--json"]);
        serde_json::from_str(&out).expect("info --json is JSON")
    }

    /// `hash VOL -k ID` (with the key's passphrase file), the hex digest.
    pub fn hash(&self, vol: &str, key: &str) -> String {
        let pw = self.path(&format!("{key}.pw")).display().to_string();
        let out = self.ok(&["hash", vol, "-k", key, "--passphrase-file", &pw]);
        out.split_whitespace().next().unwrap().to_string()
    }
}

/// A deterministic mix of text, zeros and pseudo-random bytes.
pub fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let text = b"The quick brown fox jumps over the lazy dog. EVFS backup test data. ";
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    while out.len() < len {
        let block = (out.len() / (1 << 20)) % 3;
        let n = (len - out.len()).min(1 << 20);
        match block {
            0 => out.extend(text.iter().cycle().take(n)),
            1 => out.extend(std::iter::repeat_n(0u8, n)),
            _ => {
                for _ in 0..n {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    out.push(state as u8);
                }
            }
        }
    }
    out
}

/// BLAKE3 of bytes, as hex (what `b3sum` prints).
pub fn b3(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
