//! Why a LUKS header could not be read, unlocked or updated.
//!
//! The variants follow what a caller must tell the user apart: not LUKS at
//! all, LUKS but damaged, LUKS that evfs does not handle (with the reason),
//! a passphrase that opened no keyslot (cryptsetup cannot tell a wrong
//! passphrase from a damaged keyslot either: both fail the digest), a request
//! that does not fit the header, and I/O.

use std::fmt;
use std::io;

/// The error of every fallible function in [`crate::luks`].
#[derive(Debug)]
pub enum LuksError {
    /// No LUKS magic where a LUKS1 or LUKS2 header (or a LUKS2 secondary
    /// header) would be.
    NotLuks,
    /// A LUKS header that cannot be used: checksums wrong on both LUKS2
    /// copies, fields out of range, areas beyond the device.
    Damaged(String),
    /// A valid header evfs does not handle; the text says what and why.
    Unsupported(String),
    /// No keyslot opened with this secret: the passphrase (or key file) is
    /// wrong, or the keyslot is damaged. Like cryptsetup, evfs cannot tell
    /// the two apart: both end in a digest mismatch.
    WrongPassphrase,
    /// No keyslot can be tried: none is active, or the one named is not.
    NoKeyslot(String),
    /// The request does not fit this header (a key of the wrong size, no
    /// room left for a keyslot, a token referring to a missing keyslot…).
    Invalid(String),
    /// Reading or writing the device failed.
    Io(io::Error),
}

impl fmt::Display for LuksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LuksError::NotLuks => write!(f, "not a LUKS volume (no LUKS header)"),
            LuksError::Damaged(why) => write!(f, "damaged LUKS header: {why}"),
            LuksError::Unsupported(why) => write!(f, "unsupported LUKS volume: {why}"),
            LuksError::WrongPassphrase => write!(
                f,
                "no keyslot opened with this passphrase (wrong passphrase or damaged keyslot)"
            ),
            LuksError::NoKeyslot(why) => write!(f, "no usable keyslot: {why}"),
            LuksError::Invalid(why) => write!(f, "{why}"),
            LuksError::Io(e) => write!(f, "I/O error on the LUKS device: {e}"),
        }
    }
}

impl std::error::Error for LuksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LuksError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for LuksError {
    fn from(e: io::Error) -> Self {
        LuksError::Io(e)
    }
}

/// Shorthand for the module's results.
pub type Result<T> = std::result::Result<T, LuksError>;

pub(crate) fn damaged(why: impl Into<String>) -> LuksError {
    LuksError::Damaged(why.into())
}

pub(crate) fn unsupported(why: impl Into<String>) -> LuksError {
    LuksError::Unsupported(why.into())
}

pub(crate) fn invalid(why: impl Into<String>) -> LuksError {
    LuksError::Invalid(why.into())
}
