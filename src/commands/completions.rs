//! `evfs completions SHELL`: shell completions generated from the clap
//! definitions, on standard output.

use clap::CommandFactory;
use clap_complete::Shell;

use super::out;
use crate::cli::Cli;
use crate::error::{Error, Result};

pub fn run(shell: Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "evfs", &mut script);
    let text = String::from_utf8(script)
        .map_err(|_| Error::runtime("internal: completions are not UTF-8"))?;
    out(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_that_knows_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "evfs", &mut script);
            let text = String::from_utf8(script).unwrap();
            for word in ["backup", "restore", "map", "dmtable", "keystore"] {
                assert!(text.contains(word), "{shell:?} completions lack {word}");
            }
        }
    }
}
