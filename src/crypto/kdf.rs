//! The passphrase KDF: Argon2id, with its parameters stored beside the salt.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use super::Passphrase;
use crate::error::{Error, Result};

/// Argon2id cost parameters, stored in every `.priv` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl KdfParams {
    /// The floor for the defaults: at least 64 MiB and 3 passes.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        passes: 3,
        lanes: 1,
    };

    /// Refuse parameters Argon2 cannot run, and absurd ones read from a file
    /// (a hostile `.priv` must not make us allocate terabytes).
    pub fn validate(self) -> Result<Self> {
        if self.memory_kib < 8 * self.lanes.max(1) || self.memory_kib > 16 * 1024 * 1024 {
            return Err(Error::usage(format!(
                "KDF memory {} KiB is out of range (8 KiB to 16 GiB)",
                self.memory_kib
            )));
        }
        if self.passes == 0 || self.passes > 1000 {
            return Err(Error::usage(format!(
                "KDF passes {} is out of range (1 to 1000)",
                self.passes
            )));
        }
        if self.lanes == 0 || self.lanes > 64 {
            return Err(Error::usage(format!(
                "KDF lanes {} is out of range (1 to 64)",
                self.lanes
            )));
        }
        Ok(self)
    }
}

/// Derive a 32-byte key from a passphrase and salt.
pub fn derive(pass: &Passphrase, salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = params.validate()?;
    let p = Params::new(params.memory_kib, params.passes, params.lanes, Some(32))
        .map_err(|e| Error::usage(format!("invalid KDF parameters: {e}")))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass.expose(), salt, out.as_mut())
        .map_err(|e| Error::runtime(format!("Argon2id failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    #[test]
    fn derivation_depends_on_passphrase_salt_and_params() {
        let a = derive(&Passphrase::new(b"pw".to_vec()), b"saltsaltsaltsalt", SMALL).unwrap();
        let b = derive(&Passphrase::new(b"pw".to_vec()), b"saltsaltsaltsalt", SMALL).unwrap();
        let c = derive(&Passphrase::new(b"pX".to_vec()), b"saltsaltsaltsalt", SMALL).unwrap();
        let d = derive(&Passphrase::new(b"pw".to_vec()), b"saltsaltsaltsalX", SMALL).unwrap();
        let e = derive(
            &Passphrase::new(b"pw".to_vec()),
            b"saltsaltsaltsalt",
            KdfParams { passes: 2, ..SMALL },
        )
        .unwrap();
        assert_eq!(*a, *b);
        assert_ne!(*a, *c);
        assert_ne!(*a, *d);
        assert_ne!(*a, *e);
    }

    #[test]
    fn absurd_parameters_are_refused() {
        let huge = KdfParams {
            memory_kib: u32::MAX,
            ..SMALL
        };
        assert!(huge.validate().is_err());
        assert!(KdfParams { passes: 0, ..SMALL }.validate().is_err());
        assert!(KdfParams::DEFAULT.validate().is_ok());
    }
}
