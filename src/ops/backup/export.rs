//! A cleartext export (`--cleartext`): a volume's plaintext to a plain file,
//! a block device or standard output, exactly as long as its data.

use std::os::unix::fs::FileTypeExt;

use super::source::OpenSource;
use super::{Job, Target};
use crate::crypto::VolumeKey;
use crate::error::{Error, Result};
use crate::ops::Report;
use crate::pipeline::Plan;
use crate::pipeline::sink::{DeviceSink, WriteSink, stdout_file};
use crate::volume::Device;
use crate::volume::partial::Partial;

impl Job<'_> {
    /// Export the plaintext of `src`, decrypted with `src_key`.
    pub(super) fn export(&self, src: OpenSource, src_key: Option<VolumeKey>) -> Result<Report> {
        // An EVFS volume with its key, or an unlocked LUKS source.
        let (Some(len), true) = (src.len(), src_key.is_some() || src.is_luks()) else {
            return Err(Error::runtime(
                "internal: a cleartext export needs a volume and its key",
            ));
        };
        let src_name = src.name.clone();
        let src_uuid = src.emd.as_ref().map(|e| e.uuid);
        let plan = Plan::new(self.req.threads)
            .decrypt(src.decrypt_key(src_key.as_ref())?)
            .hash(true)
            .plain_len(Some(len));
        let (outcome, target) = match &self.req.target {
            Target::Stdout => {
                let mut sink = WriteSink {
                    writer: stdout_file()?,
                    name: "standard output".to_string(),
                };
                let (outcome, _) = self.run_pipeline(&plan, src, &mut sink)?;
                sink.flush()?;
                (outcome, "standard output".to_string())
            }
            Target::Path(path) => {
                // A file is written unnamed and takes its name when
                // complete: a cut-off export never looks like a whole one,
                // leaves no plaintext behind, and an old file stays as it
                // was until then. A block device is written in place.
                let block = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
                let (mut dev, partial) = if block {
                    (Device::open_write(path)?, None)
                } else {
                    let partial = Partial::create(path)?;
                    partial
                        .file()
                        .set_len(len)
                        .map_err(|e| Error::io("setting the size of", path, e))?;
                    (Device::over_partial(&partial)?, Some(partial))
                };
                dev.lock(true, "write a backup into it")?;
                let limit = if dev.is_block() { dev.size() } else { len };
                let outcome = {
                    let sink = DeviceSink {
                        dev: &dev,
                        base: 0,
                        limit,
                        exact: true,
                    };
                    let mut sink = self.device_sink(&dev, sink)?;
                    self.run_pipeline(&plan, src, &mut *sink)?.0
                };
                if !dev.is_block() {
                    dev.resize(len)?;
                }
                dev.sync()?;
                if let Some(partial) = partial {
                    partial.commit()?;
                }
                (outcome, path.display().to_string())
            }
            Target::StreamFile(_) => {
                return Err(Error::runtime("internal: cleartext into a stream"));
            }
        };
        Ok(Report {
            digest: outcome.digest,
            chunks: Some(crate::ops::Chunks::written(&outcome)),
            ..self.report(src_name, src_uuid, target, outcome.bytes)
        })
    }
}
