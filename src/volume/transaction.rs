//! One write of data into a volume, the way every writer does it: the EMD
//! is marked dirty (with the task's checkpoint) before the first data byte;
//! checkpoints are recorded only after the data before them is synced; and
//! the EMD is written clean (sealed by the key holder) only after all data
//! is synced. A transaction dropped before [`Transaction::commit`] leaves
//! the volume dirty, which is what the bit is for.

use super::device::Device;
use super::metadata;
use crate::crypto::VolumeKey;
use crate::emd::Emd;
use crate::error::Result;
use crate::keys::PrivateKey;
use crate::signature::Sign;

/// A data write in progress on `dev`, with the EMD it left on the media.
pub struct Transaction<'a> {
    dev: &'a Device,
    emd: Emd,
}

impl<'a> Transaction<'a> {
    /// Mark `dev` dirty: write `emd` (dirty, with its checkpoint if any) to
    /// both copies at a generation above `floor`, so that a crash between
    /// the two copies never leaves an older valid EMD in force.
    pub fn begin(dev: &'a Device, mut emd: Emd, floor: u64) -> Result<Transaction<'a>> {
        emd.dirty = true;
        emd.generation = emd.generation.max(floor);
        metadata::write_both(dev, &emd)?;
        Ok(Transaction { dev, emd })
    }

    /// The EMD as it is on the media now.
    pub fn emd(&self) -> &Emd {
        &self.emd
    }

    /// The device being written.
    pub fn device(&self) -> &'a Device {
        self.dev
    }

    /// Record that the first `done` data bytes are written: sync them,
    /// then write the checkpoint.
    pub fn checkpoint(&mut self, done: u64) -> Result<()> {
        self.dev.sync()?;
        if let Some(c) = self.emd.checkpoint.as_mut() {
            c.bytes_done = done;
        }
        self.emd.generation += 1;
        metadata::write_both(self.dev, &self.emd)
    }

    /// Finish: sync the data, let `finish` fill in the final EMD (its
    /// provenance, length...), clear the dirty bit and the checkpoint, seal
    /// it with `key` and sign it with `signer` when the writer holds them,
    /// and write it to both copies at the next generation. Returns the EMD
    /// written.
    pub fn commit(
        mut self,
        key: Option<&VolumeKey>,
        signer: Option<&PrivateKey>,
        finish: impl FnOnce(&mut Emd) -> Result<()>,
    ) -> Result<Emd> {
        self.dev.sync()?;
        let generation = self.emd.generation;
        finish(&mut self.emd)?;
        self.emd.dirty = false;
        self.emd.checkpoint = None;
        if let Some(k) = key {
            self.emd.seal(k);
        }
        if let Some(pk) = signer {
            self.emd.sign(|m| pk.sign(m));
        }
        self.emd.generation = generation.max(self.emd.generation) + 1;
        metadata::write_both(self.dev, &self.emd)?;
        Ok(self.emd)
    }
}
