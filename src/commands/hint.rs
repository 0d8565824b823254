//! How the command line words a [`Hint`]: plain advice as it is, and
//! [`CliAdvice`] as this front end's own commands and flags.

use std::fmt;

use crate::error::{CliAdvice, Hint};

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hint::Text(text) => f.write_str(text),
            Hint::Cli(advice) => write!(f, "{advice}"),
        }
    }
}

impl fmt::Display for CliAdvice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliAdvice::PassphraseSources { id: None } => {
                f.write_str("give --passphrase-file F (- for standard input) or run from a terminal")
            }
            CliAdvice::PassphraseSources { id: Some(id) } => write!(
                f,
                "give --passphrase-file F (- for standard input), store one with `evfs key store-passphrase {id}`, or run from a terminal"
            ),
            CliAdvice::KeystoreLocation => f.write_str("pass --keystore DIR or set EVFS_KEYSTORE"),
            CliAdvice::OwnKeystore { me, path } => write!(
                f,
                "if it is yours, run `chown {me} {path}` as root; otherwise use a keystore of your own (--keystore DIR)"
            ),
            CliAdvice::ImportKey { id } => write!(
                f,
                "see `evfs key list`; add someone's public key with `evfs key import {id} FILE`"
            ),
            CliAdvice::GenerateKey => f.write_str(
                "generate one with `evfs key gen`, or use --keystore to point at the right keystore",
            ),
            CliAdvice::WrongPassphrase => f.write_str(
                "try again; a stored passphrase that no longer works can be replaced with `evfs key store-passphrase`",
            ),
            CliAdvice::StorePassphrase { id: Some(id) } => {
                write!(f, "store it again with `evfs key store-passphrase {id}`")
            }
            CliAdvice::StorePassphrase { id: None } => {
                f.write_str("store the passphrase again with `evfs key store-passphrase ID`")
            }
            CliAdvice::EmdRestore { distrust: false } => {
                f.write_str("restore a saved EMD with `evfs emd restore VOL FILE`")
            }
            CliAdvice::EmdRestore { distrust: true } => f.write_str(
                "do not trust this metadata; restore a saved copy with `evfs emd restore`",
            ),
            CliAdvice::NotAVolume { stream: true } => f.write_str(
                "check it with `evfs verify STREAM`, or write it onto a volume with `evfs restore STREAM DST`",
            ),
            CliAdvice::NotAVolume { stream: false } => f.write_str(
                "make a volume of its data with `evfs backup FILE VOL --owner ID`, or make it a new volume with `evfs create`",
            ),
            CliAdvice::Enable { volume } => write!(f, "enable it with `evfs enable {volume} -k ID`"),
            CliAdvice::UserAdd { volume, id } => write!(
                f,
                "the owner can add it with `evfs user add {volume} {id} -k OWNER`"
            ),
            CliAdvice::LuksSecret { target: false } => f.write_str(
                "give --luks-passphrase-file F or --luks-key-file F (- for standard input), -k ID of a key pair enrolled with `evfs luks enroll`, or run from a terminal",
            ),
            CliAdvice::LuksSecret { target: true } => f.write_str(
                "give --target-luks-passphrase-file F or --target-luks-key-file F (- for standard input), or run from a terminal",
            ),
            CliAdvice::LuksEnroll { volume, id } => write!(
                f,
                "enroll it with `evfs luks enroll {volume} {id} --luks-passphrase-file F`, or give the volume's passphrase with --luks-passphrase-file F"
            ),
        }
    }
}
