//! `evfs create`: write a new EMD onto a file or block device.

use std::path::{Path, PathBuf};

use crate::crypto::Cipher;
use crate::emd;
use crate::error::{Error, Result};
use crate::keys::{KeyId, PrivateKey};
use crate::ops::{Keys, Observer, trust};
use crate::signature::Sign;
use crate::volume::{Device, NewVolume, layout, metadata};

/// A new volume: where, owned by whom, how.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    /// A file or block device (a file is created when `size` is given).
    pub vol: PathBuf,
    /// The owner's key pair (its public key is read from the keystore); not
    /// a recovery key.
    pub owner: KeyId,
    /// Bytes of the volume: a new file is made this size (an empty file grows
    /// to it; any other existing `vol` must have it); `None`: `vol` exists and
    /// keeps its size.
    pub size: Option<u64>,
    /// The data area's cipher.
    pub cipher: Cipher,
    /// Bytes per data sector: 512 or 4096 (checked by the command line, not
    /// here).
    pub sector_size: u32,
    /// A label for people, at most 64 bytes without NUL characters.
    pub label: String,
    /// Recovery keys (user `evfs`).
    pub recovery: Vec<KeyId>,
    /// Overwrite an existing EMD or non-zero data.
    pub force: bool,
    /// Sign with this key (default: the owner's, when it can be unlocked).
    pub sign_with: Option<KeyId>,
}

/// Write a new EMD; a file this made is removed again on failure.
pub fn run(args: &CreateRequest, keys: &dyn Keys, obs: &dyn Observer) -> Result<()> {
    crate::ops::check_sector_size(args.sector_size)?;
    let ks = keys.keystore()?;
    let owner = args.owner.clone();
    if owner.is_recovery() {
        return Err(Error::usage(format!(
            "{owner} is a recovery key; a recovery key cannot own a volume"
        )));
    }
    let owner_public = ks.public(&owner)?;
    let mut recovery = Vec::new();
    for id in &args.recovery {
        let id = id.clone();
        if !id.is_recovery() {
            return Err(Error::usage(format!(
                "--recovery {id}: recovery keys belong to the pseudo-user evfs (evfs.NAME)"
            )));
        }
        let public = ks.public(&id)?;
        recovery.push((id, public));
    }
    check_label(&args.label)?;
    // The signer is unlocked before anything is written.
    let signer = trust::signer(keys, args.sign_with.as_ref(), Some(&owner))?;

    let existed = args.vol.exists();
    let dev = open_or_make(&args.vol, args.size)?;
    let result = write_new(
        obs,
        &dev,
        args,
        (&owner, owner_public),
        recovery,
        signer.as_ref(),
        existed,
    );
    if result.is_err() && !existed {
        let _ = std::fs::remove_file(&args.vol);
    }
    result
}

fn write_new(
    obs: &dyn Observer,
    dev: &Device,
    args: &CreateRequest,
    (owner, owner_public): (&KeyId, [u8; 32]),
    recovery: Vec<(KeyId, [u8; 32])>,
    signer: Option<&PrivateKey>,
    existed: bool,
) -> Result<()> {
    if dev.size() < layout::MIN_VOLUME {
        return Err(Error::usage(format!(
            "{} has {} bytes; a volume needs at least {} (3 MiB)",
            dev.path().display(),
            dev.size(),
            layout::MIN_VOLUME
        )));
    }
    // The EMD in force on an old volume that `--force` replaces.
    let old = if existed {
        metadata::read(dev)?.current().cloned()
    } else {
        None
    };
    if existed && !args.force {
        let copies = metadata::read(dev)?;
        if copies.any_magic() {
            return Err(Error::refused(format!(
                "{} already holds an EVFS EMD",
                dev.path().display()
            ))
            .with_hint("use --force to overwrite it (its data becomes unrecoverable)"));
        }
        if !crate::ops::backup::target::is_blank(dev)? {
            return Err(Error::refused(format!(
                "{} holds non-zero data",
                dev.path().display()
            ))
            .with_hint("use --force to make it a volume anyway; to keep the data, back it up into a new volume with `evfs backup FILE VOL --owner ID`"));
        }
    }
    let sector_size = args.sector_size;
    let data_size = layout::max_data_size(dev.size(), sector_size);
    let (mut emd, _key) = NewVolume {
        cipher: args.cipher,
        sector_size,
        data_size,
        data_len: data_size,
        label: &args.label,
        owner: (owner, owner_public),
        recovery,
    }
    .build()?;
    // Above the old EMD's generation, so that a crash between the writes
    // of the two copies never leaves the old EMD in force over the new one.
    if let Some(old) = &old {
        emd.generation = old.generation.saturating_add(1);
    }
    match signer {
        Some(pk) => emd.sign(|m| pk.sign(m)),
        None => obs.note(&format!(
            "evfs: note: the EMD is not signed: the private key of {owner} is not here (or not readable) or its passphrase was not given (give --sign-with ID or --passphrase-file F, or sign it later with `evfs emd sign {} -k {owner}`)",
            dev.path().display()
        )),
    }
    metadata::write_both(dev, &emd)?;
    obs.note(&format!(
        "created EVFS volume {} (uuid {}, {}, {} data area, owner {owner})",
        dev.path().display(),
        emd.uuid_string(),
        emd.cipher.name(),
        crate::size::human(data_size),
    ));
    Ok(())
}

fn check_label(label: &str) -> Result<()> {
    if label.len() > emd::format::LABEL_MAX || label.contains('\0') {
        return Err(Error::usage(format!(
            "the label is at most {} bytes without NUL characters",
            emd::format::LABEL_MAX
        )));
    }
    Ok(())
}

fn open_or_make(path: &Path, size: Option<u64>) -> Result<Device> {
    if !path.exists() {
        let size = size.ok_or_else(|| {
            Error::usage(format!("{} does not exist", path.display()))
                .with_hint("give --size to create it as a file")
        })?;
        return Device::create_file(path, size);
    }
    let mut dev = Device::open_write(path)?;
    dev.lock(true, "make it a volume")?;
    if let Some(size) = size
        && size != dev.size()
    {
        if dev.size() == 0 && !dev.is_block() {
            dev.grow_to(size)?;
        } else {
            return Err(Error::usage(format!(
                "{} already exists with {} bytes, not {size}",
                path.display(),
                dev.size()
            ))
            .with_hint("leave out --size to use it as it is"));
        }
    }
    Ok(dev)
}
