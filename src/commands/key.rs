//! `evfs key gen|list|show|import|store-passphrase|forget-passphrase`.

use std::io::Read;

use super::{Ctx, out};
use crate::cli::KeyCommand;
use crate::crypto::kdf::KdfParams;
use crate::error::{Error, IoContext, Result};
use crate::keys::keystore::{fingerprint, parse_public_line, public_line};
use crate::keys::{KeyId, PassphraseSource, passphrase};

pub fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<()> {
    let ks = ctx.keystore()?;
    match cmd {
        KeyCommand::Gen {
            id,
            passphrase_file,
            store_passphrase,
            recovery,
            kdf_memory,
            kdf_passes,
        } => {
            let id = KeyId::parse(&id)?;
            if recovery && !id.is_recovery() {
                return Err(Error::usage(format!(
                    "a recovery key belongs to the pseudo-user evfs, not {}",
                    id.user()
                ))
                .with_hint("name it evfs.NAME, for example evfs.r1"));
            }
            let memory_kib = u32::try_from(kdf_memory / 1024)
                .map_err(|_| Error::usage("--kdf-memory is too large"))?;
            let params = KdfParams {
                memory_kib,
                passes: kdf_passes,
                lanes: 1,
            }
            .validate()?;
            let pass =
                passphrase::new_key(&id, &PassphraseSource::file(passphrase_file.as_deref()))?;
            let public = ks.generate(&id, &pass, params)?;
            if store_passphrase {
                ks.store_passphrase(&id, &pass)?;
            }
            ctx.note(format!(
                "generated key {id} ({}) in {}{}",
                fingerprint(&public),
                ks.root().display(),
                if store_passphrase {
                    ", passphrase stored"
                } else {
                    ""
                }
            ));
            Ok(())
        }
        KeyCommand::List { json } => {
            let keys = ks.list()?;
            if json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id.as_str(),
                            "fingerprint": fingerprint(&k.public),
                            "private": k.has_private,
                            "passphrase_stored": k.has_passphrase,
                            "trusted": k.trusted,
                            "recovery": k.id.is_recovery(),
                        })
                    })
                    .collect();
                let doc = serde_json::json!({
                    "keystore": ks.root().display().to_string(),
                    "keys": list,
                });
                return out(format!("{doc}\n"));
            }
            let mut text = String::new();
            for k in &keys {
                text.push_str(&format!(
                    "{:<24} {}  {}{}{}\n",
                    k.id.as_str(),
                    fingerprint(&k.public),
                    if k.has_private {
                        "private"
                    } else {
                        "public-only"
                    },
                    if k.trusted { ", trusted" } else { "" },
                    if k.has_passphrase {
                        ", passphrase stored"
                    } else {
                        ""
                    }
                ));
            }
            if keys.is_empty() {
                ctx.note(format!("no keys in {}", ks.root().display()));
            }
            out(text)
        }
        KeyCommand::Show { id } => {
            let id = KeyId::parse(&id)?;
            let public = ks.public(&id)?;
            out(public_line(&id, &public))
        }
        KeyCommand::Import { id, file, trust } => {
            let id = KeyId::parse(&id)?;
            let mut text = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin()
                    .take(64 * 1024)
                    .read_to_string(&mut text)
                    .ctx("reading", "standard input")?;
            } else {
                std::fs::File::open(&file)
                    .ctx("opening", &file)?
                    .take(64 * 1024)
                    .read_to_string(&mut text)
                    .ctx("reading", &file)?;
            }
            let public = parse_public_line(&text).ok_or_else(|| {
                Error::usage(format!(
                    "{} does not hold an evfs public key line",
                    file.display()
                ))
                .with_hint("export one with `evfs key show ID`")
            })?;
            ks.import(&id, &public)?;
            if trust {
                ks.trust(&id)?;
            }
            ctx.note(format!(
                "imported {id} ({}){}",
                fingerprint(&public),
                if trust {
                    ", trusted: its signatures of backups and EMDs are accepted"
                } else {
                    ""
                }
            ));
            Ok(())
        }
        KeyCommand::Untrust { id } => {
            let id = KeyId::parse(&id)?;
            let public = ks.public(&id)?;
            if ks.has_private(&id) {
                return Err(Error::usage(format!(
                    "{id} is a key pair of this keystore: it is trusted while its private key is here"
                )));
            }
            if ks.untrust(&id)? {
                ctx.note(format!(
                    "{id} ({}) is no longer a trusted signer",
                    fingerprint(&public)
                ));
            } else {
                ctx.note(format!("{id} was not a trusted signer"));
            }
            Ok(())
        }
        KeyCommand::StorePassphrase {
            id,
            passphrase_file,
        } => {
            let id = KeyId::parse(&id)?;
            let source = PassphraseSource::file(passphrase_file.as_deref());
            // Ask even when one is stored: the point is to store a new one.
            let pass = match &source.file {
                Some(f) => passphrase::read_passphrase_file(f)?,
                None => passphrase::prompt(&format!("Passphrase for key {id}: "))?.ok_or_else(|| {
                    Error::access(format!("no passphrase given for key {id}"))
                        .with_hint("give --passphrase-file F (- for standard input) or run from a terminal")
                })?,
            };
            // Only a passphrase that opens the key is worth storing.
            ks.unlock(&id, &pass)?;
            ks.store_passphrase(&id, &pass)?;
            ctx.note(format!(
                "stored the passphrase of {id} in {}",
                ks.pass_path(&id).display()
            ));
            Ok(())
        }
        KeyCommand::ForgetPassphrase { id } => {
            let id = KeyId::parse(&id)?;
            if ks.forget_passphrase(&id)? {
                ctx.note(format!("forgot the stored passphrase of {id}"));
            } else {
                ctx.note(format!("{id} had no stored passphrase"));
            }
            Ok(())
        }
    }
}
