//! `evfs check` on a LUKS volume: both LUKS2 header copies, and whether it
//! is an evfs target that was not finished (the `evfs-incomplete`
//! requirement: a backup into it was interrupted). LUKS has no dirty bit;
//! the requirement is what marks a half-written target, and cryptsetup
//! refuses to activate a volume that carries it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::luks::{CopyState, Header, REQUIREMENT_INCOMPLETE};
use crate::volume::luks::LuksVolume;

/// What `check` found on a LUKS volume.
#[derive(Clone, Debug)]
pub struct LuksCheck {
    /// The volume checked.
    pub path: PathBuf,
    /// `luks1` or `luks2`.
    pub format: &'static str,
    /// LUKS2: whether the primary and the secondary header copy are valid.
    pub copies: Option<(bool, bool)>,
    /// An evfs target whose writing did not finish.
    pub incomplete: bool,
    /// The report's lines.
    pub lines: Vec<String>,
}

impl LuksCheck {
    /// Whether the volume checked clean: complete, both LUKS2 copies valid.
    pub fn ok(&self) -> bool {
        !self.incomplete && self.copies.is_none_or(|(a, b)| a && b)
    }

    /// Exit 6 for an unfinished target, 5 for a bad header copy.
    pub fn error(&self) -> Option<Error> {
        let vol = self.path.display();
        if self.incomplete {
            return Some(
                Error::dirty(format!(
                    "{vol} is incomplete: an evfs backup into it was interrupted (requirement {REQUIREMENT_INCOMPLETE}), so its data is part old, part new"
                ))
                .with_hint(
                    "run the backup into it again: it completes the volume and removes the requirement",
                ),
            );
        }
        match self.copies {
            Some((a, b)) if !(a && b) => Some(
                Error::integrity(format!(
                    "{vol}: the {} LUKS2 header copy is damaged",
                    if a { "secondary" } else { "primary" }
                ))
                .with_hint(format!(
                    "cryptsetup rewrites it from the good copy: `cryptsetup repair {vol}`"
                )),
            ),
            _ => None,
        }
    }
}

/// Check the LUKS volume `vol`.
pub fn run(vol: &LuksVolume, path: &Path) -> Result<LuksCheck> {
    let quoted = format!("\"{}\"", path.display());
    let mut lines = Vec::new();
    let mut copies = None;
    let mut incomplete = false;
    let format = vol.format_name();
    match &vol.header {
        Header::Luks1(_) => lines.push(format!(
            "LUKS1 volume {quoted}: one header, no checksum to check."
        )),
        Header::Luks2(h) => {
            let state = |c: &CopyState| match c {
                CopyState::Valid { seqid } => (true, format!("valid (seqid {seqid})")),
                CopyState::BadJson(why) => (false, format!("damaged: {why}")),
                CopyState::Bad(why) => (false, format!("damaged: {why}")),
            };
            let (a, at) = state(&h.copies()[0]);
            let (b, bt) = state(&h.copies()[1]);
            lines.push(format!("LUKS2 volume {quoted}: primary header {at}."));
            lines.push(format!("LUKS2 volume {quoted}: secondary header {bt}."));
            copies = Some((a, b));
            incomplete = h.requirements().iter().any(|r| r == REQUIREMENT_INCOMPLETE);
        }
    }
    let report = LuksCheck {
        path: path.to_path_buf(),
        format,
        copies,
        incomplete,
        lines,
    };
    let mut report = report;
    if report.incomplete {
        report.lines.push(format!(
            "LUKS2 volume {quoted} holds an unfinished evfs backup (requirement {REQUIREMENT_INCOMPLETE})."
        ));
    } else if report.ok() {
        report.lines.push(format!("LUKS volume {quoted} is clean."));
    }
    Ok(report)
}
