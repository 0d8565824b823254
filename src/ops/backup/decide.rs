//! The configuration table of `evfs backup` (the EVFS Administrator's
//! Guide table 7-1), in one function.
//!
//! Given what the source is, what the target is and which flags were given,
//! [`decide`] says what the backup does, or refuses it (exit 3) before
//! anything is written. It is pure: every row is tested below.

use crate::emd::State;
use crate::error::{Error, Result};

/// What the source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    /// An EVFS volume whose state is enabled.
    Enabled,
    /// An EVFS volume whose state is disabled (raw ciphertext only).
    Disabled,
    /// A plain file, device or stdin without EVFS metadata.
    Plain,
    /// A LUKS1 or LUKS2 volume evfs can read: decrypted with its secret,
    /// never copied or encrypted as it lies.
    Luks,
}

/// What the target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dst {
    /// Does not exist, or is empty or all zeros.
    Blank,
    /// Holds data that is not an EVFS volume (or a damaged one).
    Foreign,
    /// An EVFS volume, and how it relates to the source.
    Volume {
        /// Its state.
        state: State,
        /// Bytes of its data area.
        data_size: u64,
        /// How it relates to the source.
        relation: Relation,
    },
    /// Standard output (`-`).
    Stdout,
    /// `--stream FILE`.
    StreamFile,
    /// The source itself: the same storage under any name.
    Source,
    /// A LUKS volume (`version` 1 or 2) with a data area of `data_size`
    /// bytes.
    Luks {
        /// The LUKS version, 1 or 2.
        version: u16,
        /// Bytes of its data area.
        data_size: u64,
    },
}

/// The format of a backup's target (`--target-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An EVFS volume (EMD and AES-XTS data area).
    Evfs,
    /// A LUKS2 volume that cryptsetup opens.
    Luks2,
}

/// How a target volume relates to the backup's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The same volume (the same UUID): the source's raw mirror, or the
    /// original a raw mirror was taken from.
    Same,
    /// An EMD clone of this source, made by an earlier backup of it
    /// (finished or interrupted): a refresh keeps its UUID and key.
    Clone,
    /// A volume with an EMD of its own (made by `create`, by a backup into
    /// it with its own key, or a clone of another source). `key_slot`: the
    /// `-k` key has a slot in it, so it can be written with its own key.
    Own {
        /// The `-k` key has a slot in it.
        key_slot: bool,
    },
}

/// How much the target can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// A regular file (or a new one): it grows as needed.
    Grows,
    /// A block device of this many bytes.
    Bytes(u64),
}

/// Which flag named the key of a target volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKey {
    /// `--target-key ID`.
    Flag,
    /// `-k ID` with a plain source, where it can only mean the target's key.
    K,
}

impl TargetKey {
    fn flag(self) -> &'static str {
        match self {
            TargetKey::Flag => "--target-key",
            TargetKey::K => "-k",
        }
    }
}

/// The flags that choose between rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--raw`.
    pub raw: bool,
    /// `--cleartext`.
    pub cleartext: bool,
    /// `--owner` was given.
    pub owner: bool,
    /// Which flag named the key of a target volume, if one did.
    pub target_key: Option<TargetKey>,
    /// `--force`.
    pub force: bool,
    /// `--target-format`; `None`: the target's own, else evfs.
    pub target_format: Option<Format>,
}

/// What is done with the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Decrypt with the source key, encrypt with the target key.
    Reencrypt,
    /// Encrypt a plain source into a volume.
    Encrypt,
    /// Copy ciphertext as it lies; the EMD is cloned with the same key.
    Raw,
    /// Decrypt and write the plaintext.
    Cleartext,
}

impl Mode {
    /// The mode's name, as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Reencrypt => "reencrypt",
            Mode::Encrypt => "encrypt",
            Mode::Raw => "raw",
            Mode::Cleartext => "cleartext",
        }
    }
}

/// Where and how it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// A new EMD clone (or new volume) replaces whatever the target held.
    NewClone,
    /// An EMD clone of this source is refreshed: it keeps its UUID and
    /// volume key; owner, users and label follow the source.
    Refresh,
    /// Into an existing volume with its own key, keeping its EMD.
    IntoVolume,
    /// Plaintext bytes onto a plain target.
    Plain,
    /// A backup stream.
    Stream,
    /// A new LUKS2 volume replaces whatever the target held.
    NewLuks,
    /// Into an existing LUKS2 volume with its own volume key, keeping its
    /// header and keyslots.
    IntoLuks,
}

/// What the table decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What is done with the data.
    pub mode: Mode,
    /// Where and how it is written.
    pub write: Write,
}

/// Sizes the room check needs: the device a clone needs, and the plaintext
/// bytes; `None` when the source length is not known (stdin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Bytes of the device an EVFS clone of the source needs.
    pub clone_device: Option<u64>,
    /// Bytes of plaintext the backup copies.
    pub plaintext: Option<u64>,
    /// The device a new LUKS2 target needs.
    pub luks_device: Option<u64>,
}

/// Decide what `evfs backup` does, or refuse it.
pub fn decide(src: Src, dst: Dst, room: Room, sizes: Sizes, f: Flags) -> Result<Decision> {
    use Dst::*;
    if dst == Source {
        return Err(Error::refused(
            "the target is the source itself (the same storage under another name)",
        )
        .with_hint("choose another target"));
    }
    if f.raw && f.cleartext {
        return Err(Error::refused(
            "--raw copies ciphertext, --cleartext writes plaintext: they exclude each other",
        ));
    }
    if f.cleartext && (f.owner || f.target_key == Some(TargetKey::Flag)) {
        return Err(Error::usage(
            "--cleartext writes plaintext; --owner and --target-key are for encrypted targets",
        ));
    }
    if f.target_format.is_some() && matches!(dst, Stdout | StreamFile) {
        return Err(Error::usage(
            "--target-format chooses the format of a file or device target; a backup stream is evfs's own",
        ));
    }
    let luks_target = matches!(
        (f.target_format, dst),
        (Some(Format::Luks2), _) | (None, Luks { .. })
    );
    if f.cleartext && f.target_format == Some(Format::Luks2) {
        return Err(Error::usage(
            "--cleartext writes plaintext; --target-format luks2 makes an encrypted target",
        ));
    }
    if luks_target && f.owner {
        return Err(Error::usage(
            "--owner names the owner of a new EVFS volume; a LUKS2 target opens with its passphrase",
        )
        .with_hint("leave out --owner, and give --target-luks-passphrase-file F"));
    }
    if f.raw && (f.owner || f.target_key.is_some()) {
        let by = if f.owner {
            "--owner"
        } else {
            f.target_key.map_or("--target-key", TargetKey::flag)
        };
        return Err(twice(&format!(
            "--raw copies the ciphertext as it lies, and {by} would encrypt it again"
        ))
        .with_hint(format!(
            "leave out {by} for a raw clone, or leave out --raw to decrypt with -k and re-encrypt"
        )));
    }

    let decision = if f.raw {
        raw_row(src, dst, f)?
    } else if luks_target && !f.cleartext {
        luks_target_row(src, dst, f)?
    } else {
        match src {
            Src::Disabled if f.cleartext => {
                return Err(Error::refused(
                    "the source is disabled: its data is raw ciphertext and cannot be exported as cleartext",
                )
                .with_hint("enable it first with `evfs enable SRC -k ID`"));
            }
            Src::Disabled => {
                return Err(twice(
                    "the source is disabled (its data is raw ciphertext), and copying it into an encrypting target",
                )
                .with_hint(
                    "use --raw to clone the ciphertext with its EMD, or enable the source first",
                ));
            }
            Src::Enabled if f.cleartext => cleartext_row(dst, f)?,
            Src::Enabled => reencrypt_row(dst, f)?,
            Src::Plain if f.cleartext => {
                return Err(Error::usage(
                    "--cleartext exports an EVFS volume's plaintext; the source is not an EVFS volume",
                ));
            }
            Src::Plain => encrypt_row(dst, f)?,
            Src::Luks if f.cleartext => cleartext_row(dst, f)?,
            Src::Luks => luks_source_row(dst, f)?,
        }
    };
    check_room(decision, dst, room, sizes)?;
    Ok(decision)
}

fn raw_row(src: Src, dst: Dst, f: Flags) -> Result<Decision> {
    use Dst::*;
    if src == Src::Luks {
        if let Volume {
            state: State::Enabled,
            ..
        }
        | Luks { .. } = dst
        {
            return Err(twice(
                "--raw copies a LUKS volume's data area as it lies, and the target encrypts what it is given",
            )
            .with_hint("leave out --raw: evfs decrypts the LUKS volume and writes a re-keyed copy"));
        }
        return Err(Error::refused(
            "--raw clones an EVFS volume with its EMD; the source is a LUKS volume, which evfs copies decrypted and re-keyed",
        )
        .with_hint(
            "leave out --raw (a copy of the LUKS volume byte for byte, with the same volume key, is what dd makes)",
        ));
    }
    if matches!(dst, Luks { .. }) || f.target_format == Some(Format::Luks2) {
        return Err(
            twice("--raw copies ciphertext, and the target is a LUKS volume (encrypting)")
                .with_hint(
                    "leave out --raw to decrypt with -k and re-encrypt into the LUKS2 target",
                ),
        );
    }
    if src == Src::Plain {
        return Err(Error::refused(
            "--raw clones an EVFS volume with its EMD; the source is not an EVFS volume",
        ));
    }
    let write = match dst {
        Blank => Write::NewClone,
        Stdout | StreamFile => Write::Stream,
        Volume {
            state: State::Enabled,
            ..
        } => {
            return Err(twice(
                "--raw copies ciphertext, and the target is an enabled (encrypting) volume",
            )
            .with_hint("disable the target first, or clone into a new file"));
        }
        Volume {
            relation: Relation::Same | Relation::Clone,
            ..
        } => Write::NewClone,
        Volume { .. } | Foreign if f.force => Write::NewClone,
        Volume { .. } | Foreign => return Err(foreign(dst)),
        Source | Luks { .. } => unreachable!("checked first"),
    };
    Ok(Decision {
        mode: Mode::Raw,
        write,
    })
}

fn cleartext_row(dst: Dst, f: Flags) -> Result<Decision> {
    use Dst::*;
    let write = match dst {
        Blank | Stdout => Write::Plain,
        Foreign if f.force => Write::Plain,
        Foreign => return Err(foreign(dst)),
        Volume { .. } => {
            return Err(Error::refused(
                "--cleartext into an EVFS volume would put cleartext on encrypted media",
            )
            .with_hint("leave out --cleartext to re-encrypt into it, or export to a plain file"));
        }
        Luks { .. } => {
            return Err(Error::refused(
                "--cleartext onto a LUKS volume would put cleartext on encrypted media (over its header and data area)",
            )
            .with_hint(
                "leave out --cleartext to re-encrypt into it with its passphrase, or export to a plain file",
            ));
        }
        StreamFile => {
            return Err(Error::usage(
                "a backup stream is encrypted; --cleartext writes plaintext to a file, a device or stdout",
            ));
        }
        Source => unreachable!("checked first"),
    };
    Ok(Decision {
        mode: Mode::Cleartext,
        write,
    })
}

fn reencrypt_row(dst: Dst, f: Flags) -> Result<Decision> {
    use Dst::*;
    if f.owner {
        return Err(Error::usage(
            "--owner makes a new volume from a plain source; a volume's clone keeps the source's owner and users",
        ));
    }
    let write = match dst {
        Blank | Stdout | StreamFile | Foreign if f.target_key.is_some() => {
            return Err(no_volume_for_target_key(TargetKey::Flag));
        }
        Blank => Write::NewClone,
        Stdout | StreamFile => Write::Stream,
        Volume {
            state: State::Disabled,
            ..
        } if f.force && f.target_key.is_none() => Write::NewClone,
        Volume {
            state: State::Disabled,
            ..
        } => {
            return Err(Error::refused(
                "the target is a disabled (raw) EVFS volume: writing decrypted data onto it would put cleartext on encrypted media",
            )
            .with_hint("enable the target first, or use --force to replace it with a new clone"));
        }
        Volume { .. } if f.target_key.is_some() => Write::IntoVolume,
        Volume {
            relation: Relation::Clone,
            ..
        } => Write::Refresh,
        // The same volume in another copy: written with its own key (which
        // is the source's), keeping its identity; --force only lets a
        // rollback through.
        Volume {
            relation: Relation::Same,
            ..
        } => Write::IntoVolume,
        // Only --force replaces a volume's own EMD with a clone.
        Volume { .. } if f.force => Write::NewClone,
        Volume {
            relation: Relation::Own { key_slot: true },
            ..
        } => Write::IntoVolume,
        Volume { .. } => {
            return Err(Error::refused(
                "the target is an EVFS volume with an EMD of its own (not a clone of this source), and -k has no slot in it; refusing to replace its EMD",
            )
            .with_hint(
                "give --target-key ID to re-encrypt into it with its own key, or --force to replace it with a clone of the source",
            ));
        }
        Foreign if f.force => Write::NewClone,
        Foreign => return Err(foreign(dst)),
        Luks { .. } if f.force => Write::NewClone,
        Luks { .. } => return Err(luks_replaced()),
        Source => unreachable!("checked first"),
    };
    Ok(Decision {
        mode: Mode::Reencrypt,
        write,
    })
}

fn encrypt_row(dst: Dst, f: Flags) -> Result<Decision> {
    use Dst::*;
    let write = match dst {
        Volume {
            state: State::Enabled,
            ..
        } if f.target_key.is_some() => Write::IntoVolume,
        Volume {
            state: State::Disabled,
            ..
        } if !(f.owner && f.force) => {
            return Err(Error::refused(
                "the target is a disabled (raw) EVFS volume: writing plain data onto it would put cleartext on encrypted media",
            )
            .with_hint("enable the target first"));
        }
        Volume { .. } if f.owner && f.force => Write::NewClone,
        Volume { .. } if f.owner => {
            return Err(Error::refused(
                "the target is an EVFS volume with an EMD of its own; refusing to replace it with a new volume",
            )
            .with_hint(
                "give --target-key ID (or -k ID) to encrypt into it keeping its EMD, or --force to replace it with a new volume",
            ));
        }
        Volume { .. } => {
            return Err(Error::usage(
                "the target is an EVFS volume: name its key with -k ID or --target-key ID to encrypt into it",
            ));
        }
        _ if f.target_key.is_some() => {
            return Err(no_volume_for_target_key(
                f.target_key.unwrap_or(TargetKey::Flag),
            ));
        }
        _ if !f.owner => {
            return Err(
                Error::usage("the source is plain data: a new volume needs an owner")
                    .with_hint("give --owner ID (only the public key is needed)"),
            );
        }
        Blank => Write::NewClone,
        Stdout | StreamFile => Write::Stream,
        Foreign | Luks { .. } if f.force => Write::NewClone,
        Foreign => return Err(foreign(dst)),
        Luks { .. } => return Err(luks_replaced()),
        Source => unreachable!("checked first"),
    };
    Ok(Decision {
        mode: Mode::Encrypt,
        write,
    })
}

/// A LUKS source into an EVFS target: decrypted with its secret and
/// encrypted into a new volume (which needs an owner: LUKS has none to
/// clone), a stream, or a volume with its own key.
fn luks_source_row(dst: Dst, f: Flags) -> Result<Decision> {
    use Dst::*;
    let no_owner = || {
        Error::usage("the source is a LUKS volume: a new EVFS volume needs an owner").with_hint(
            "give --owner ID (only the public key is needed), or --target-format luks2 for a LUKS2 copy",
        )
    };
    let write = match dst {
        Blank | Stdout | StreamFile | Foreign if f.target_key == Some(TargetKey::Flag) => {
            return Err(no_volume_for_target_key(TargetKey::Flag));
        }
        Blank if f.owner => Write::NewClone,
        Stdout | StreamFile if f.owner => Write::Stream,
        Blank | Stdout | StreamFile => return Err(no_owner()),
        Volume {
            state: State::Disabled,
            ..
        } if !(f.force && f.owner) => {
            return Err(Error::refused(
                "the target is a disabled (raw) EVFS volume: writing decrypted data onto it would put cleartext on encrypted media",
            )
            .with_hint("enable the target first"));
        }
        Volume { .. } if f.target_key == Some(TargetKey::Flag) => Write::IntoVolume,
        Volume {
            relation: Relation::Own { key_slot: true },
            ..
        } => Write::IntoVolume,
        Volume { .. } | Foreign | Luks { .. } if f.force && f.owner => Write::NewClone,
        Volume { .. } | Foreign | Luks { .. } if f.force => return Err(no_owner()),
        Volume { .. } => {
            return Err(Error::refused(
                "the target is an EVFS volume with an EMD of its own, and no key of it was given; refusing to replace its EMD",
            )
            .with_hint(
                "give --target-key ID to re-encrypt into it with its own key, or --force with --owner ID to replace it with a new volume",
            ));
        }
        Foreign => return Err(foreign(dst)),
        Luks { .. } => return Err(luks_replaced()),
        Source => unreachable!("checked first"),
    };
    Ok(Decision {
        mode: Mode::Reencrypt,
        write,
    })
}

/// Any decrypted or plain source into a LUKS2 target: a new one
/// (`--target-format luks2`), or an existing one with its own volume key.
fn luks_target_row(src: Src, dst: Dst, f: Flags) -> Result<Decision> {
    use Dst::*;
    let mode = match src {
        Src::Disabled => {
            return Err(twice(
                "the source is disabled (its data is raw ciphertext), and copying it into a LUKS2 target",
            )
            .with_hint("enable the source first"));
        }
        Src::Plain => Mode::Encrypt,
        Src::Enabled | Src::Luks => Mode::Reencrypt,
    };
    let write = match dst {
        Luks { version: 2, .. } => Write::IntoLuks,
        _ if f.target_key == Some(TargetKey::Flag) => {
            return Err(Error::usage(
                "--target-key opens an existing target (an EVFS volume, or a LUKS2 volume it is enrolled in); a new LUKS2 target opens with its passphrase",
            ));
        }
        Blank => Write::NewLuks,
        Luks { .. } if f.force => Write::NewLuks,
        Luks { .. } => {
            return Err(Error::refused(
                "the target is a LUKS1 volume; evfs writes into LUKS2 volumes only",
            )
            .with_hint(
                "convert it with `cryptsetup convert --type luks2`, or use --force to replace it with a new LUKS2 volume",
            ));
        }
        Volume { .. } | Foreign if f.force => Write::NewLuks,
        Volume { .. } => {
            return Err(Error::refused(
                "the target is an EVFS volume; a LUKS2 target would replace it",
            )
            .with_hint("use --force to replace it with a new LUKS2 volume"));
        }
        Foreign => return Err(foreign(dst)),
        Stdout | StreamFile | Source => unreachable!("checked first"),
    };
    Ok(Decision { mode, write })
}

fn check_room(d: Decision, dst: Dst, room: Room, sizes: Sizes) -> Result<()> {
    let (need, have, what) = match (d.write, dst, room) {
        (Write::NewLuks, _, Room::Bytes(have)) => (sizes.luks_device, have, "bytes of device"),
        (Write::IntoLuks, Dst::Luks { data_size, .. }, _) => {
            (sizes.plaintext, data_size, "bytes of LUKS data area")
        }
        (Write::NewClone | Write::Refresh, _, Room::Bytes(have)) => {
            (sizes.clone_device, have, "bytes of device")
        }
        (Write::Plain, _, Room::Bytes(have)) => (sizes.plaintext, have, "bytes of device"),
        (Write::IntoVolume, Dst::Volume { data_size, .. }, _) => {
            (sizes.plaintext, data_size, "bytes of data area")
        }
        _ => return Ok(()),
    };
    match need {
        Some(need) if need > have => Err(Error::refused(format!(
            "the target is too small: it has {have} {what}, the backup needs {need}"
        ))
        .with_hint("choose a larger target, or a new file")),
        _ => Ok(()),
    }
}

fn twice(what: &str) -> Error {
    Error::refused(format!(
        "double encryption: {what}: the data would be encrypted twice"
    ))
}

fn luks_replaced() -> Error {
    Error::refused("the target is a LUKS volume; an EVFS target would replace it")
        .with_hint("use --force to replace it, or leave out --target-format evfs to write into it")
}

fn foreign(dst: Dst) -> Error {
    let what = match dst {
        Dst::Foreign => "holds data that is not an EVFS volume",
        _ => "is an EVFS volume that is not a clone of this source",
    };
    Error::refused(format!("the target {what}; refusing to overwrite it"))
        .with_hint("use --force to overwrite it")
}

fn no_volume_for_target_key(by: TargetKey) -> Error {
    match by {
        TargetKey::Flag => Error::usage(
            "--target-key names the key of an existing EVFS target volume; this target is not one",
        ),
        TargetKey::K => Error::usage(
            "the source is plain data, so -k can only name the key of an existing EVFS target volume; this target is not one",
        )
        .with_hint("give --owner ID to make a new volume (only the public key is needed)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dst::*;

    const BIG: Sizes = Sizes {
        clone_device: Some(100),
        plaintext: Some(50),
        luks_device: Some(120),
    };
    const EN: State = State::Enabled;
    const DIS: State = State::Disabled;

    fn ok(src: Src, dst: Dst, f: Flags) -> (Mode, Write) {
        let d = decide(src, dst, Room::Grows, BIG, f)
            .unwrap_or_else(|e| panic!("{src:?} -> {dst:?} {f:?} refused: {e}"));
        (d.mode, d.write)
    }

    fn code(src: Src, dst: Dst, f: Flags) -> u8 {
        match decide(src, dst, Room::Grows, BIG, f) {
            Ok(d) => panic!("{src:?} -> {dst:?} {f:?} allowed: {d:?}"),
            Err(e) => e.exit_code(),
        }
    }

    fn msg(src: Src, dst: Dst, f: Flags) -> String {
        decide(src, dst, Room::Grows, BIG, f)
            .err()
            .map(|e| {
                format!(
                    "{e} / {}",
                    e.hint().map(|h| h.to_string()).unwrap_or_default()
                )
            })
            .unwrap_or_default()
    }

    fn flags() -> Flags {
        Flags::default()
    }

    fn with(f: impl FnOnce(&mut Flags)) -> Flags {
        let mut flags = Flags::default();
        f(&mut flags);
        flags
    }

    fn vol(state: State, relation: Relation) -> Dst {
        Volume {
            state,
            data_size: 50,
            relation,
        }
    }

    const CLONE: Relation = Relation::Clone;
    const SAME: Relation = Relation::Same;
    const OWN_SLOT: Relation = Relation::Own { key_slot: true };
    const OWN: Relation = Relation::Own { key_slot: false };

    #[test]
    fn row_enabled_volume_reencrypts_into_new_targets_streams_and_refreshes_its_clones() {
        use Mode::Reencrypt;
        assert_eq!(
            ok(Src::Enabled, Blank, flags()),
            (Reencrypt, Write::NewClone)
        );
        assert_eq!(
            ok(Src::Enabled, StreamFile, flags()),
            (Reencrypt, Write::Stream)
        );
        assert_eq!(
            ok(Src::Enabled, Stdout, flags()),
            (Reencrypt, Write::Stream)
        );
        assert_eq!(
            ok(Src::Enabled, vol(EN, CLONE), flags()),
            (Reencrypt, Write::Refresh)
        );
        let tk = with(|f| f.target_key = Some(TargetKey::Flag));
        for rel in [CLONE, SAME, OWN, OWN_SLOT] {
            assert_eq!(
                ok(Src::Enabled, vol(EN, rel), tk),
                (Reencrypt, Write::IntoVolume),
                "{rel:?}"
            );
        }
        let force = with(|f| f.force = true);
        for rel in [OWN, OWN_SLOT] {
            assert_eq!(
                ok(Src::Enabled, vol(EN, rel), force),
                (Reencrypt, Write::NewClone),
                "{rel:?}"
            );
        }
        assert_eq!(
            ok(Src::Enabled, vol(EN, CLONE), force),
            (Reencrypt, Write::Refresh)
        );
        assert_eq!(
            ok(Src::Enabled, vol(EN, SAME), force),
            (Reencrypt, Write::IntoVolume)
        );
    }

    /// Case 5 of the safety issue: a volume with its own EMD (carol's) is
    /// written with its own key or refused, never silently re-cloned.
    #[test]
    fn row_a_target_with_its_own_emd_is_written_with_its_own_key_or_refused() {
        use Mode::Reencrypt;
        assert_eq!(
            ok(Src::Enabled, vol(EN, OWN_SLOT), flags()),
            (Reencrypt, Write::IntoVolume)
        );
        assert_eq!(
            ok(Src::Enabled, vol(EN, SAME), flags()),
            (Reencrypt, Write::IntoVolume)
        );
        assert_eq!(code(Src::Enabled, vol(EN, OWN), flags()), 3);
        let m = msg(Src::Enabled, vol(EN, OWN), flags());
        assert!(
            m.contains("EMD of its own") && m.contains("--target-key"),
            "{m}"
        );
    }

    #[test]
    fn row_plain_source_encrypts_with_owner_or_into_a_volume() {
        let owner = with(|f| f.owner = true);
        assert_eq!(
            ok(Src::Plain, Blank, owner),
            (Mode::Encrypt, Write::NewClone)
        );
        assert_eq!(
            ok(Src::Plain, Stdout, owner),
            (Mode::Encrypt, Write::Stream)
        );
        for by in [TargetKey::Flag, TargetKey::K] {
            let tk = with(|f| f.target_key = Some(by));
            assert_eq!(
                ok(Src::Plain, vol(EN, OWN), tk),
                (Mode::Encrypt, Write::IntoVolume)
            );
        }
        assert_eq!(
            code(Src::Plain, Blank, flags()),
            2,
            "a new target needs --owner"
        );
        assert_eq!(code(Src::Plain, vol(EN, OWN), flags()), 2);
        assert_eq!(code(Src::Plain, vol(EN, OWN), owner), 3, "foreign volume");
    }

    /// Case 15: a plain source with -k into a new target blames -k, not a
    /// --target-key that was never given.
    #[test]
    fn a_plain_source_with_k_and_no_volume_names_k() {
        let k = with(|f| f.target_key = Some(TargetKey::K));
        assert_eq!(code(Src::Plain, Blank, k), 2);
        let m = msg(Src::Plain, Blank, k);
        assert!(
            m.contains("-k can only name") && !m.contains("--target-key"),
            "{m}"
        );
        assert!(m.contains("--owner"), "{m}");
    }

    #[test]
    fn row_raw_source_clones_into_new_targets_streams_and_disabled_volumes() {
        let raw = with(|f| f.raw = true);
        for src in [Src::Enabled, Src::Disabled] {
            assert_eq!(ok(src, Blank, raw), (Mode::Raw, Write::NewClone));
            assert_eq!(ok(src, Stdout, raw), (Mode::Raw, Write::Stream));
            assert_eq!(ok(src, StreamFile, raw), (Mode::Raw, Write::Stream));
            for rel in [SAME, CLONE] {
                assert_eq!(ok(src, vol(DIS, rel), raw), (Mode::Raw, Write::NewClone));
            }
            assert_eq!(code(src, vol(DIS, OWN_SLOT), raw), 3);
        }
        assert_eq!(code(Src::Plain, Blank, raw), 3);
    }

    #[test]
    fn row_disabled_or_raw_source_into_an_encrypting_target_is_double_encryption() {
        let raw = with(|f| f.raw = true);
        for dst in [Blank, Stdout, StreamFile, vol(EN, CLONE), vol(EN, OWN)] {
            assert_eq!(code(Src::Disabled, dst, flags()), 3, "{dst:?}");
            let m = msg(Src::Disabled, dst, flags());
            assert!(m.contains("encrypted twice"), "{m}");
            assert!(m.contains("the source is disabled"), "{m}");
        }
        for dst in [vol(EN, CLONE), vol(EN, OWN), vol(EN, SAME)] {
            assert_eq!(code(Src::Enabled, dst, raw), 3, "{dst:?}");
            assert!(msg(Src::Enabled, dst, raw).contains("encrypted twice"));
        }
        for (extra, name) in [
            (with(|f| f.owner = true), "--owner"),
            (
                with(|f| f.target_key = Some(TargetKey::Flag)),
                "--target-key",
            ),
        ] {
            let f = Flags { raw: true, ..extra };
            let m = msg(Src::Disabled, Blank, f);
            assert!(m.contains("encrypted twice") && m.contains(name), "{m}");
            // One sentence that reads: the old text said "... would be
            // encrypted again by ... would encrypt the data twice".
            assert!(!m.contains("would encrypt the data twice"), "{m}");
        }
    }

    #[test]
    fn row_cleartext_export_only_with_the_flag() {
        let clear = with(|f| f.cleartext = true);
        assert_eq!(
            ok(Src::Enabled, Blank, clear),
            (Mode::Cleartext, Write::Plain)
        );
        assert_eq!(
            ok(Src::Enabled, Stdout, clear),
            (Mode::Cleartext, Write::Plain)
        );
        assert_eq!(code(Src::Enabled, Foreign, clear), 3);
        let forced = Flags {
            force: true,
            ..clear
        };
        assert_eq!(
            ok(Src::Enabled, Foreign, forced),
            (Mode::Cleartext, Write::Plain)
        );
        assert_eq!(code(Src::Disabled, Blank, clear), 3);
    }

    #[test]
    fn row_plain_target_without_cleartext_becomes_a_clone() {
        assert_eq!(
            ok(Src::Enabled, Blank, flags()),
            (Mode::Reencrypt, Write::NewClone)
        );
        assert_eq!(
            ok(Src::Enabled, Foreign, with(|f| f.force = true)),
            (Mode::Reencrypt, Write::NewClone)
        );
    }

    #[test]
    fn row_decrypted_data_onto_a_disabled_volume_or_cleartext_into_a_volume_is_refused() {
        let clear = with(|f| f.cleartext = true);
        for rel in [SAME, CLONE, OWN, OWN_SLOT] {
            for state in [EN, DIS] {
                let dst = vol(state, rel);
                assert_eq!(code(Src::Enabled, dst, clear), 3, "{dst:?}");
                assert!(msg(Src::Enabled, dst, clear).contains("cleartext on encrypted media"));
            }
        }
        let tk = with(|f| f.target_key = Some(TargetKey::Flag));
        for f in [flags(), tk] {
            for dst in [vol(DIS, CLONE), vol(DIS, OWN_SLOT)] {
                assert_eq!(code(Src::Enabled, dst, f), 3);
                assert!(msg(Src::Enabled, dst, f).contains("cleartext on encrypted media"));
                assert_eq!(code(Src::Plain, dst, tk), 3);
            }
        }
    }

    #[test]
    fn row_target_is_source_too_small_or_foreign_is_refused() {
        for src in [Src::Enabled, Src::Disabled, Src::Plain] {
            let f = Flags {
                force: true,
                raw: src != Src::Plain,
                owner: src == Src::Plain,
                ..flags()
            };
            assert_eq!(code(src, Source, f), 3);
        }
        assert_eq!(code(Src::Enabled, Foreign, flags()), 3);
        assert_eq!(code(Src::Enabled, vol(EN, OWN), flags()), 3);
        let raw = with(|f| f.raw = true);
        assert_eq!(code(Src::Disabled, vol(DIS, OWN), raw), 3);
        let small = decide(Src::Enabled, Blank, Room::Bytes(99), BIG, flags()).unwrap_err();
        assert_eq!(small.exit_code(), 3);
        assert!(small.to_string().contains("too small"));
        assert!(decide(Src::Enabled, Blank, Room::Bytes(100), BIG, flags()).is_ok());
        let refresh = decide(Src::Enabled, vol(EN, CLONE), Room::Bytes(99), BIG, flags());
        assert_eq!(refresh.unwrap_err().exit_code(), 3);
        let tk = with(|f| f.target_key = Some(TargetKey::Flag));
        let tight = Volume {
            state: EN,
            data_size: 49,
            relation: OWN,
        };
        assert_eq!(
            decide(Src::Enabled, tight, Room::Grows, BIG, tk)
                .unwrap_err()
                .exit_code(),
            3
        );
        let clear = with(|f| f.cleartext = true);
        assert_eq!(
            decide(Src::Enabled, Blank, Room::Bytes(49), BIG, clear)
                .unwrap_err()
                .exit_code(),
            3
        );
        let unknown = Sizes {
            clone_device: None,
            plaintext: None,
            luks_device: None,
        };
        assert!(
            decide(
                Src::Plain,
                Blank,
                Room::Bytes(1),
                unknown,
                with(|f| f.owner = true)
            )
            .is_ok()
        );
    }

    #[test]
    fn contradictory_flags_are_refused() {
        let both = with(|f| {
            f.raw = true;
            f.cleartext = true;
        });
        assert_eq!(code(Src::Enabled, Blank, both), 3);
        let co = with(|f| {
            f.cleartext = true;
            f.owner = true;
        });
        assert_eq!(code(Src::Enabled, Blank, co), 2);
        assert_eq!(code(Src::Enabled, Blank, with(|f| f.owner = true)), 2);
    }

    const LUKS2: Dst = Luks {
        version: 2,
        data_size: 50,
    };
    const LUKS1: Dst = Luks {
        version: 1,
        data_size: 50,
    };

    fn to_luks2(f: impl FnOnce(&mut Flags)) -> Flags {
        with(|g| {
            g.target_format = Some(Format::Luks2);
            f(g);
        })
    }

    #[test]
    fn row_luks_source_into_new_evfs_volumes_needs_an_owner_and_never_goes_raw() {
        let owner = with(|f| f.owner = true);
        assert_eq!(
            ok(Src::Luks, Blank, owner),
            (Mode::Reencrypt, Write::NewClone)
        );
        assert_eq!(
            ok(Src::Luks, Stdout, owner),
            (Mode::Reencrypt, Write::Stream)
        );
        assert_eq!(code(Src::Luks, Blank, flags()), 2);
        assert!(msg(Src::Luks, Blank, flags()).contains("--owner"));
        let tk = with(|f| f.target_key = Some(TargetKey::Flag));
        assert_eq!(
            ok(Src::Luks, vol(EN, OWN), tk),
            (Mode::Reencrypt, Write::IntoVolume)
        );
        assert_eq!(
            ok(Src::Luks, vol(EN, OWN_SLOT), flags()),
            (Mode::Reencrypt, Write::IntoVolume)
        );
        assert_eq!(code(Src::Luks, vol(EN, OWN), flags()), 3);
        assert_eq!(code(Src::Luks, vol(DIS, OWN), tk), 3);
        assert_eq!(code(Src::Luks, Foreign, owner), 3);
        // A LUKS data area is never copied as it lies.
        let raw = with(|f| f.raw = true);
        for dst in [Blank, Stdout, vol(DIS, OWN), LUKS2] {
            assert_eq!(code(Src::Luks, dst, raw), 3, "{dst:?}");
        }
        assert!(msg(Src::Luks, vol(EN, OWN), raw).contains("encrypted twice"));
        let clear = with(|f| f.cleartext = true);
        assert_eq!(ok(Src::Luks, Blank, clear), (Mode::Cleartext, Write::Plain));
    }

    #[test]
    fn row_any_decrypted_source_into_luks2_targets() {
        for (src, mode) in [
            (Src::Enabled, Mode::Reencrypt),
            (Src::Luks, Mode::Reencrypt),
            (Src::Plain, Mode::Encrypt),
        ] {
            assert_eq!(ok(src, Blank, to_luks2(|_| {})), (mode, Write::NewLuks));
            // An existing LUKS2 volume is written with its own key, by
            // default (the target's own format) or asked for.
            assert_eq!(ok(src, LUKS2, flags()), (mode, Write::IntoLuks));
            assert_eq!(ok(src, LUKS2, to_luks2(|_| {})), (mode, Write::IntoLuks));
            // Replacing anything else takes --force.
            for dst in [Foreign, vol(EN, OWN), LUKS1] {
                assert_eq!(code(src, dst, to_luks2(|_| {})), 3, "{src:?} {dst:?}");
                assert_eq!(
                    ok(src, dst, to_luks2(|f| f.force = true)),
                    (mode, Write::NewLuks)
                );
            }
            assert_eq!(code(src, LUKS1, flags()), 3);
            assert!(msg(src, LUKS1, flags()).contains("LUKS1"));
            assert_eq!(code(src, Stdout, to_luks2(|_| {})), 2);
            assert_eq!(code(src, Blank, to_luks2(|f| f.owner = true)), 2);
        }
        assert_eq!(code(Src::Disabled, Blank, to_luks2(|_| {})), 3);
        assert!(msg(Src::Disabled, LUKS2, flags()).contains("encrypted twice"));
    }

    #[test]
    fn row_raw_or_decrypted_data_onto_a_luks_target_is_refused() {
        let raw = with(|f| f.raw = true);
        for src in [Src::Enabled, Src::Disabled] {
            assert_eq!(code(src, LUKS2, raw), 3);
            assert!(msg(src, LUKS2, raw).contains("encrypted twice"));
            assert_eq!(code(src, Blank, to_luks2(|f| f.raw = true)), 3);
        }
        let clear = with(|f| f.cleartext = true);
        for src in [Src::Enabled, Src::Luks] {
            assert_eq!(code(src, LUKS2, clear), 3);
            assert!(msg(src, LUKS2, clear).contains("cleartext on encrypted media"));
        }
        assert_eq!(
            code(Src::Enabled, Blank, to_luks2(|f| f.cleartext = true)),
            2
        );
    }

    #[test]
    fn row_an_evfs_target_replacing_a_luks_volume_takes_force() {
        let evfs = with(|f| f.target_format = Some(Format::Evfs));
        assert_eq!(code(Src::Enabled, LUKS2, evfs), 3);
        let forced = Flags {
            force: true,
            ..evfs
        };
        assert_eq!(
            ok(Src::Enabled, LUKS2, forced),
            (Mode::Reencrypt, Write::NewClone)
        );
        let owner = Flags {
            owner: true,
            ..forced
        };
        assert_eq!(
            ok(Src::Plain, LUKS2, owner),
            (Mode::Encrypt, Write::NewClone)
        );
        assert_eq!(
            ok(Src::Luks, LUKS2, owner),
            (Mode::Reencrypt, Write::NewClone)
        );
    }

    #[test]
    fn a_luks_target_smaller_than_the_source_is_refused() {
        let tight = Luks {
            version: 2,
            data_size: 49,
        };
        let e = decide(Src::Luks, tight, Room::Grows, BIG, flags()).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("too small"), "{e}");
        let small = decide(Src::Luks, Blank, Room::Bytes(119), BIG, to_luks2(|_| {}));
        assert_eq!(small.unwrap_err().exit_code(), 3);
        assert!(decide(Src::Luks, Blank, Room::Bytes(120), BIG, to_luks2(|_| {})).is_ok());
    }
}
