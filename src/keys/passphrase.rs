//! Where a passphrase comes from, first found wins: `--passphrase-file F`
//! (`-` = stdin), the key's stored passphrase, a no-echo prompt on the
//! controlling terminal. Never argv, never the environment.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rustix::termios::{self, LocalModes, OptionalActions, Termios};
use zeroize::Zeroizing;

use super::keystore::PASSPHRASE_MAX;
use super::{KeyId, Keystore, PrivateKey};
use crate::crypto::Passphrase;
use crate::error::{CliAdvice, Error, IoContext, Result};

/// An explicit passphrase source given on the command line.
#[derive(Clone, Debug, Default)]
pub struct PassphraseSource {
    /// `--passphrase-file F` (or `--target-passphrase-file F`); `-` is stdin.
    pub file: Option<PathBuf>,
}

impl PassphraseSource {
    /// A source that reads `file` (`-`: standard input); with `None`, the
    /// stored passphrase or the prompt serves.
    pub fn file(file: Option<&Path>) -> Self {
        PassphraseSource {
            file: file.map(Path::to_path_buf),
        }
    }

    /// Whether this source reads standard input.
    pub fn uses_stdin(&self) -> bool {
        self.file.as_deref() == Some(Path::new("-"))
    }
}

/// Read a passphrase file (`-` = stdin), stripping one trailing newline.
pub fn read_passphrase_file(path: &Path) -> Result<Passphrase> {
    let mut bytes = Zeroizing::new(Vec::new());
    // The longest passphrase, its CR LF, and one byte more: a longer file
    // must not pass as its first bytes.
    let limit = PASSPHRASE_MAX as u64 + 3;
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .ctx("reading the passphrase from", "standard input")?;
    } else {
        File::open(path)
            .ctx("opening the passphrase file", path)?
            .take(limit)
            .read_to_end(&mut bytes)
            .ctx("reading the passphrase file", path)?;
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() > PASSPHRASE_MAX {
        return Err(Error::usage(format!(
            "the passphrase in {} is longer than {PASSPHRASE_MAX} bytes",
            path.display()
        )));
    }
    if bytes.is_empty() {
        return Err(Error::usage(format!(
            "the passphrase file {} is empty",
            path.display()
        )));
    }
    Ok(Passphrase::new(bytes.to_vec()))
}

/// The passphrase of an existing key: file, stored, prompt, else exit 4.
pub fn existing(ks: &Keystore, id: &KeyId, source: &PassphraseSource) -> Result<Passphrase> {
    available(ks, id, source)?.ok_or_else(|| no_source(id))
}

/// The passphrase of an existing key from the first source that has one:
/// the file, the stored passphrase, a prompt; `None` when there is none.
pub fn available(
    ks: &Keystore,
    id: &KeyId,
    source: &PassphraseSource,
) -> Result<Option<Passphrase>> {
    if let Some(f) = &source.file {
        return read_passphrase_file(f).map(Some);
    }
    if let Some(p) = ks.stored_passphrase(id)? {
        return Ok(Some(p));
    }
    prompt(&format!("Passphrase for key {id}: "))
}

/// Unlock the private key of `id` with a passphrase from `source`.
pub fn unlock(ks: &Keystore, id: &KeyId, source: &PassphraseSource) -> Result<PrivateKey> {
    let pass = existing(ks, id, source)?;
    ks.unlock(id, &pass)
}

/// The passphrase of a new key: the file, or a prompt typed twice.
pub fn new_key(id: &KeyId, source: &PassphraseSource) -> Result<Passphrase> {
    if let Some(f) = &source.file {
        return read_passphrase_file(f);
    }
    let Some(first) = prompt(&format!("New passphrase for key {id}: "))? else {
        return Err(Error::access(format!("no passphrase for the new key {id}"))
            .with_hint(CliAdvice::PassphraseSources { id: None }));
    };
    let again = prompt("Type it again: ")?.ok_or_else(|| no_source(id))?;
    if first.expose() != again.expose() {
        return Err(Error::usage("the two passphrases differ"));
    }
    if first.expose().is_empty() {
        return Err(Error::usage("an empty passphrase is not allowed"));
    }
    Ok(first)
}

fn no_source(id: &KeyId) -> Error {
    Error::access(format!(
        "no passphrase available for key {id}: no --passphrase-file, no stored passphrase, and no terminal to ask on"
    ))
    .with_hint(CliAdvice::PassphraseSources {
        id: Some(id.to_string()),
    })
}

/// Ask on the controlling terminal without echo. `None` when there is no
/// terminal to ask on: no `/dev/tty`, or neither stdin nor stderr is a
/// terminal (cron, pipelines under test harnesses).
pub fn prompt(text: &str) -> Result<Option<Passphrase>> {
    if !termios::isatty(std::io::stdin()) && !termios::isatty(std::io::stderr()) {
        return Ok(None);
    }
    let Ok(tty) = OpenOptions::new().read(true).write(true).open("/dev/tty") else {
        return Ok(None);
    };
    let guard = EchoOff::new(&tty)?;
    let mut tty = &tty;
    tty.write_all(text.as_bytes())
        .ctx("writing to", "/dev/tty")?;
    tty.flush().ctx("writing to", "/dev/tty")?;
    let mut line = Zeroizing::new(Vec::new());
    let mut byte = [0u8; 1];
    let mut too_long = false;
    loop {
        match tty.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            // One byte past the limit is kept: a CR before the newline.
            Ok(_) if line.len() <= PASSPHRASE_MAX => line.push(byte[0]),
            Ok(_) => too_long = true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading from", "/dev/tty", e)),
        }
    }
    drop(guard);
    zeroize::Zeroize::zeroize(&mut byte);
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    // As for a passphrase file: a longer one is refused, never cut short.
    if too_long || line.len() > PASSPHRASE_MAX {
        return Err(Error::usage(format!(
            "the passphrase typed is longer than {PASSPHRASE_MAX} bytes"
        )));
    }
    Ok(Some(Passphrase::new(line.to_vec())))
}

/// Turns terminal echo off and restores the old settings on drop.
struct EchoOff<'a> {
    tty: &'a File,
    saved: Termios,
}

impl<'a> EchoOff<'a> {
    fn new(tty: &'a File) -> Result<Self> {
        let saved = termios::tcgetattr(tty)
            .map_err(|e| Error::io("reading the settings of", "/dev/tty", e.into()))?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        termios::tcsetattr(tty, OptionalActions::Flush, &quiet)
            .map_err(|e| Error::io("turning off echo on", "/dev/tty", e.into()))?;
        Ok(EchoOff { tty, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, OptionalActions::Flush, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_file_strips_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "two words\n\n").unwrap();
        assert_eq!(read_passphrase_file(&p).unwrap().expose(), b"two words\n");
        std::fs::write(&p, "crlf\r\n").unwrap();
        assert_eq!(read_passphrase_file(&p).unwrap().expose(), b"crlf");
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(
            crate::error::expect_err(read_passphrase_file(&p)).exit_code(),
            2
        );
        assert!(read_passphrase_file(&dir.path().join("missing")).is_err());
    }

    /// Regression: the file was read up to the longest passphrase and two
    /// bytes more, so a longer file whose bytes 4096 and 4097 happened to be
    /// CR LF passed as its first 4096 bytes, the rest silently ignored.
    #[test]
    fn a_passphrase_file_longer_than_the_limit_is_refused_whatever_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        let longest = "a".repeat(PASSPHRASE_MAX);
        std::fs::write(&p, format!("{longest}\r\n")).unwrap();
        assert_eq!(
            read_passphrase_file(&p).unwrap().expose(),
            longest.as_bytes()
        );
        for longer in [
            format!("{longest}\r\nmore words\n"),
            format!("{longest}\r\n\n"),
            format!("{longest}b\n"),
        ] {
            std::fs::write(&p, longer).unwrap();
            let e = crate::error::expect_err(read_passphrase_file(&p));
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
        }
    }
}
