//! The pieces of `evfs backup`: the configuration table ([`decide`]), opening
//! and sniffing the source ([`source`]), classifying the target ([`target`]),
//! the EMD clone ([`clone`]) and checkpoints for `--resume` ([`resume`]). The command in `commands/backup.rs` joins
//! them to the pipeline.

pub mod clone;
pub mod decide;
pub mod resume;
pub mod rollback;
pub mod source;
pub mod target;
