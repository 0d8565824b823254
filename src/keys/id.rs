//! Key IDs: `user.keyname`, as on HP-UX; a bare `alice` means `alice.alice`.

use std::fmt;

use crate::error::{Error, Result};

/// The pseudo-user of recovery keys.
pub const RECOVERY_USER: &str = "evfs";

/// Longest user or key name.
const PART_MAX: usize = 31;

/// A validated key ID. Both parts are 1 to 31 of `[A-Za-z0-9_-]`, so the ID
/// is safe as a path component and fits the EMD's 64-byte field.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    text: String,
    dot: usize,
}

impl KeyId {
    /// Parse `user.keyname`, or a bare `name` meaning `name.name`; exit 2 when
    /// a part is empty, longer than 31 bytes, starts with `-` or holds a
    /// character outside `[A-Za-z0-9_-]`.
    pub fn parse(text: &str) -> Result<KeyId> {
        let (user, name) = match text.split_once('.') {
            Some((u, n)) => (u, n),
            None => (text, text),
        };
        for part in [user, name] {
            let ok = !part.is_empty()
                && part.len() <= PART_MAX
                && part
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                && !part.starts_with('-');
            if !ok {
                return Err(Error::usage(format!(
                    "invalid key ID {text:?}: expected user.keyname, each part 1 to {PART_MAX} \
                     letters, digits, '_' or '-' (not starting with '-')"
                )));
            }
        }
        Ok(KeyId {
            text: format!("{user}.{name}"),
            dot: user.len(),
        })
    }

    /// The whole ID, `user.keyname`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The user part, before the dot.
    pub fn user(&self) -> &str {
        &self.text[..self.dot]
    }

    /// The key name part, after the dot.
    pub fn keyname(&self) -> &str {
        &self.text[self.dot + 1..]
    }

    /// Whether the ID belongs to the recovery pseudo-user `evfs`.
    pub fn is_recovery(&self) -> bool {
        self.user() == RECOVERY_USER
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for KeyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<KeyId> {
        KeyId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_dot_keyname_and_bare_user() {
        let id = KeyId::parse("alice.k1").unwrap();
        assert_eq!((id.user(), id.keyname()), ("alice", "k1"));
        assert_eq!(KeyId::parse("alice").unwrap().as_str(), "alice.alice");
        assert!(KeyId::parse("evfs.r1").unwrap().is_recovery());
    }

    #[test]
    fn bad_ids_are_usage_errors() {
        for bad in [
            "",
            ".",
            "a.",
            ".b",
            "a.b.c",
            "a/b",
            "../x",
            "a b",
            "-x",
            &"x".repeat(32),
        ] {
            let e = KeyId::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
