//! `evfs demo`: the main job end to end (`ops::demo`), its summary on stdout.

use std::io::Write;
use std::path::PathBuf;

use super::Ctx;
use super::progress::{CliObserver, ProgressMode};
use crate::error::Result;

pub fn run(ctx: &Ctx, dir: Option<PathBuf>, size: u64, threads: Option<usize>) -> Result<()> {
    let threads = threads.map(|n| super::threads(Some(n))).transpose()?;
    let obs = CliObserver::new(ctx, ProgressMode::silent());
    let line = |line: &str| {
        if !ctx.quiet {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    };
    crate::ops::demo::run(dir, size, threads, &line, &obs)
}
