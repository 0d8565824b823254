//! The configuration table of `evfs backup` (SPEC.md; EVFS Administrator's
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
}

/// What the target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dst {
    /// Does not exist, or is empty or all zeros.
    Blank,
    /// Holds data that is not an EVFS volume (or a damaged one).
    Foreign,
    /// An EVFS volume of this source's lineage (its provenance names the source).
    Lineage { state: State, data_size: u64 },
    /// An EVFS volume of another lineage.
    Other { state: State, data_size: u64 },
    /// Standard output (`-`).
    Stdout,
    /// `--stream FILE`.
    StreamFile,
    /// The source itself: the same path, a link to it, or the same device.
    Source,
}

/// How much the target can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// A regular file (or a new one): it grows as needed.
    Grows,
    /// A block device of this many bytes.
    Bytes(u64),
}

/// The flags that choose between rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub raw: bool,
    pub cleartext: bool,
    pub owner: bool,
    pub target_key: bool,
    pub force: bool,
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
    /// Into an existing volume with its own key, keeping its EMD.
    IntoVolume,
    /// Plaintext bytes onto a plain target.
    Plain,
    /// A backup stream.
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub mode: Mode,
    pub write: Write,
}

/// Sizes the room check needs: the data area a clone needs and the
/// plaintext bytes; `None` when the source length is not known (stdin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub clone_device: Option<u64>,
    pub plaintext: Option<u64>,
}

/// Decide what `evfs backup` does, or refuse it.
pub fn decide(src: Src, dst: Dst, room: Room, sizes: Sizes, f: Flags) -> Result<Decision> {
    use Dst::*;
    if dst == Source {
        return Err(Error::refused(
            "the target is the source itself (same file, a link to it, or the same device)",
        )
        .with_hint("choose another target"));
    }
    if f.raw && f.cleartext {
        return Err(Error::refused(
            "--raw copies ciphertext, --cleartext writes plaintext: they exclude each other",
        ));
    }
    if f.cleartext && (f.owner || f.target_key) {
        return Err(Error::usage(
            "--cleartext writes plaintext; --owner and --target-key are for encrypted targets",
        ));
    }
    if f.raw && (f.owner || f.target_key) {
        return Err(twice(
            "a --raw source would be encrypted again by --owner or --target-key",
        ));
    }

    let decision = if f.raw {
        raw_row(src, dst, f)?
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
                    "the source is disabled (raw ciphertext): copying it into an encrypting target",
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
        }
    };
    check_room(decision, dst, room, sizes)?;
    Ok(decision)
}

fn raw_row(src: Src, dst: Dst, f: Flags) -> Result<Decision> {
    use Dst::*;
    if src == Src::Plain {
        return Err(Error::refused(
            "--raw clones an EVFS volume with its EMD; the source is not an EVFS volume",
        ));
    }
    let write = match dst {
        Blank => Write::NewClone,
        Stdout | StreamFile => Write::Stream,
        Lineage {
            state: State::Disabled,
            ..
        } => Write::NewClone,
        Lineage {
            state: State::Enabled,
            ..
        }
        | Other {
            state: State::Enabled,
            ..
        } => {
            return Err(twice("a --raw source into an enabled (encrypting) volume")
                .with_hint("disable the target first, or clone into a new file"));
        }
        Other {
            state: State::Disabled,
            ..
        }
        | Foreign => {
            if f.force {
                Write::NewClone
            } else {
                return Err(foreign(dst));
            }
        }
        Source => unreachable!("checked first"),
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
        Lineage { .. } | Other { .. } => {
            return Err(Error::refused(
                "--cleartext into an EVFS volume would put cleartext on encrypted media",
            )
            .with_hint("leave out --cleartext to re-encrypt into it, or export to a plain file"));
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
        Blank if f.target_key => return Err(no_volume_for_target_key()),
        Blank => Write::NewClone,
        Stdout | StreamFile if f.target_key => return Err(no_volume_for_target_key()),
        Stdout | StreamFile => Write::Stream,
        Lineage {
            state: State::Enabled,
            ..
        } if f.target_key => Write::IntoVolume,
        Lineage {
            state: State::Enabled,
            ..
        } => Write::NewClone,
        Other {
            state: State::Enabled,
            ..
        } if f.target_key => Write::IntoVolume,
        Other {
            state: State::Enabled,
            ..
        } if f.force => Write::NewClone,
        Other {
            state: State::Enabled,
            ..
        } => {
            return Err(foreign(dst).with_hint(
                "give --target-key ID to re-encrypt into it with its own key, or --force to replace it with a clone",
            ));
        }
        Lineage {
            state: State::Disabled,
            ..
        }
        | Other {
            state: State::Disabled,
            ..
        } if f.force && !f.target_key => Write::NewClone,
        Lineage {
            state: State::Disabled,
            ..
        }
        | Other {
            state: State::Disabled,
            ..
        } => {
            return Err(Error::refused(
                "the target is a disabled (raw) EVFS volume: writing decrypted data onto it would put cleartext on encrypted media",
            )
            .with_hint("enable the target first, or use --force to replace it with a new clone"));
        }
        Foreign if f.force && !f.target_key => Write::NewClone,
        Foreign if f.target_key => return Err(no_volume_for_target_key()),
        Foreign => return Err(foreign(dst)),
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
        Other {
            state: State::Enabled,
            ..
        }
        | Lineage {
            state: State::Enabled,
            ..
        } if f.target_key => Write::IntoVolume,
        Other {
            state: State::Disabled,
            ..
        }
        | Lineage {
            state: State::Disabled,
            ..
        } if !(f.owner && f.force) => {
            return Err(Error::refused(
                "the target is a disabled (raw) EVFS volume: writing plain data onto it would put cleartext on encrypted media",
            )
            .with_hint("enable the target first"));
        }
        Other { .. } | Lineage { .. } if f.owner && f.force => Write::NewClone,
        Other { .. } | Lineage { .. } if f.owner => {
            return Err(foreign(dst).with_hint(
                "give --target-key ID to encrypt into it keeping its EMD, or --force to replace it with a new volume",
            ));
        }
        Other { .. } | Lineage { .. } => {
            return Err(Error::usage(
                "the target is an EVFS volume: name its key with --target-key ID to encrypt into it",
            ));
        }
        _ if f.target_key => return Err(no_volume_for_target_key()),
        _ if !f.owner => {
            return Err(
                Error::usage("the source is plain data: a new volume needs an owner")
                    .with_hint("give --owner ID (only the public key is needed)"),
            );
        }
        Blank => Write::NewClone,
        Stdout | StreamFile => Write::Stream,
        Foreign if f.force => Write::NewClone,
        Foreign => return Err(foreign(dst)),
        Source => unreachable!("checked first"),
    };
    Ok(Decision {
        mode: Mode::Encrypt,
        write,
    })
}

fn check_room(d: Decision, dst: Dst, room: Room, sizes: Sizes) -> Result<()> {
    let (need, have, what) = match (d.write, dst, room) {
        (Write::NewClone, _, Room::Bytes(have)) => (sizes.clone_device, have, "bytes of device"),
        (Write::Plain, _, Room::Bytes(have)) => (sizes.plaintext, have, "bytes of device"),
        (Write::IntoVolume, Dst::Lineage { data_size, .. } | Dst::Other { data_size, .. }, _) => {
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
        "double encryption: {what} would encrypt the data twice"
    ))
}

fn foreign(dst: Dst) -> Error {
    let what = match dst {
        Dst::Foreign => "holds data that is not an EVFS volume",
        _ => "is an EVFS volume of another lineage (its provenance does not name this source)",
    };
    Error::refused(format!("the target {what}; refusing to overwrite it"))
        .with_hint("use --force to overwrite it")
}

fn no_volume_for_target_key() -> Error {
    Error::usage(
        "--target-key names the key of an existing EVFS target volume; this target is not one",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dst::*;

    const BIG: Sizes = Sizes {
        clone_device: Some(100),
        plaintext: Some(50),
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
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    fn flags() -> Flags {
        Flags::default()
    }

    fn vol(state: State, lineage: bool) -> Dst {
        if lineage {
            Lineage {
                state,
                data_size: 50,
            }
        } else {
            Other {
                state,
                data_size: 50,
            }
        }
    }

    #[test]
    fn row_enabled_volume_reencrypts_into_new_targets_streams_and_its_lineage() {
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
            ok(Src::Enabled, vol(EN, true), flags()),
            (Reencrypt, Write::NewClone)
        );
        let tk = Flags {
            target_key: true,
            ..flags()
        };
        assert_eq!(
            ok(Src::Enabled, vol(EN, false), tk),
            (Reencrypt, Write::IntoVolume)
        );
        let force = Flags {
            force: true,
            ..flags()
        };
        assert_eq!(
            ok(Src::Enabled, vol(EN, false), force),
            (Reencrypt, Write::NewClone)
        );
    }

    #[test]
    fn row_plain_source_encrypts_with_owner_or_into_a_volume() {
        let owner = Flags {
            owner: true,
            ..flags()
        };
        assert_eq!(
            ok(Src::Plain, Blank, owner),
            (Mode::Encrypt, Write::NewClone)
        );
        assert_eq!(
            ok(Src::Plain, Stdout, owner),
            (Mode::Encrypt, Write::Stream)
        );
        let tk = Flags {
            target_key: true,
            ..flags()
        };
        assert_eq!(
            ok(Src::Plain, vol(EN, false), tk),
            (Mode::Encrypt, Write::IntoVolume)
        );
        assert_eq!(
            code(Src::Plain, Blank, flags()),
            2,
            "a new target needs --owner"
        );
        assert_eq!(code(Src::Plain, vol(EN, false), flags()), 2);
        assert_eq!(code(Src::Plain, vol(EN, false), owner), 3, "foreign volume");
    }

    #[test]
    fn row_raw_source_clones_into_new_targets_streams_and_disabled_volumes() {
        let raw = Flags {
            raw: true,
            ..flags()
        };
        for src in [Src::Enabled, Src::Disabled] {
            assert_eq!(ok(src, Blank, raw), (Mode::Raw, Write::NewClone));
            assert_eq!(ok(src, Stdout, raw), (Mode::Raw, Write::Stream));
            assert_eq!(ok(src, StreamFile, raw), (Mode::Raw, Write::Stream));
            assert_eq!(ok(src, vol(DIS, true), raw), (Mode::Raw, Write::NewClone));
        }
        assert_eq!(code(Src::Plain, Blank, raw), 3);
    }

    #[test]
    fn row_disabled_or_raw_source_into_an_encrypting_target_is_double_encryption() {
        let raw = Flags {
            raw: true,
            ..flags()
        };
        for dst in [Blank, Stdout, StreamFile, vol(EN, true), vol(EN, false)] {
            assert_eq!(code(Src::Disabled, dst, flags()), 3, "{dst:?}");
            assert!(msg(Src::Disabled, dst, flags()).contains("encrypt the data twice"));
        }
        for dst in [vol(EN, true), vol(EN, false)] {
            assert_eq!(code(Src::Enabled, dst, raw), 3, "{dst:?}");
            assert!(msg(Src::Enabled, dst, raw).contains("encrypt the data twice"));
        }
        for extra in [
            Flags { owner: true, ..raw },
            Flags {
                target_key: true,
                ..raw
            },
        ] {
            assert!(msg(Src::Disabled, Blank, extra).contains("encrypt the data twice"));
        }
    }

    #[test]
    fn row_cleartext_export_only_with_the_flag() {
        let clear = Flags {
            cleartext: true,
            ..flags()
        };
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
        let force = Flags {
            force: true,
            ..flags()
        };
        assert_eq!(
            ok(Src::Enabled, Foreign, force),
            (Mode::Reencrypt, Write::NewClone)
        );
    }

    #[test]
    fn row_decrypted_data_onto_a_disabled_volume_or_cleartext_into_a_volume_is_refused() {
        let clear = Flags {
            cleartext: true,
            ..flags()
        };
        for dst in [
            vol(EN, true),
            vol(EN, false),
            vol(DIS, true),
            vol(DIS, false),
        ] {
            assert_eq!(code(Src::Enabled, dst, clear), 3, "{dst:?}");
            assert!(msg(Src::Enabled, dst, clear).contains("cleartext on encrypted media"));
        }
        let tk = Flags {
            target_key: true,
            ..flags()
        };
        for f in [flags(), tk] {
            for dst in [vol(DIS, true), vol(DIS, false)] {
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
        assert_eq!(code(Src::Enabled, vol(EN, false), flags()), 3);
        let raw = Flags {
            raw: true,
            ..flags()
        };
        assert_eq!(code(Src::Disabled, vol(DIS, false), raw), 3);
        let small = decide(Src::Enabled, Blank, Room::Bytes(99), BIG, flags()).unwrap_err();
        assert_eq!(small.exit_code(), 3);
        assert!(small.to_string().contains("too small"));
        assert!(decide(Src::Enabled, Blank, Room::Bytes(100), BIG, flags()).is_ok());
        let tk = Flags {
            target_key: true,
            ..flags()
        };
        let tight = Other {
            state: EN,
            data_size: 49,
        };
        assert_eq!(
            decide(Src::Enabled, tight, Room::Grows, BIG, tk)
                .unwrap_err()
                .exit_code(),
            3
        );
        let clear = Flags {
            cleartext: true,
            ..flags()
        };
        assert_eq!(
            decide(Src::Enabled, Blank, Room::Bytes(49), BIG, clear)
                .unwrap_err()
                .exit_code(),
            3
        );
        let unknown = Sizes {
            clone_device: None,
            plaintext: None,
        };
        assert!(
            decide(
                Src::Plain,
                Blank,
                Room::Bytes(1),
                unknown,
                Flags {
                    owner: true,
                    ..flags()
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn contradictory_flags_are_refused() {
        let both = Flags {
            raw: true,
            cleartext: true,
            ..flags()
        };
        assert_eq!(code(Src::Enabled, Blank, both), 3);
        let co = Flags {
            cleartext: true,
            owner: true,
            ..flags()
        };
        assert_eq!(code(Src::Enabled, Blank, co), 2);
        let owner = Flags {
            owner: true,
            ..flags()
        };
        assert_eq!(code(Src::Enabled, Blank, owner), 2);
    }
}
