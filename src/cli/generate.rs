//! `gradata generate man|completions SHELL`: the man page and shell completions, generated from the
//! same clap definition that parses the command line, so they cannot drift from it. Used by the
//! package builds; hidden from `--help`.

use std::io::Write;

use anyhow::Context;
use clap::{CommandFactory, Subcommand};

use super::{Cli, Outcome};

/// What to generate.
#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// The man page gradata(8), in roff, on stdout
    Man,
    /// Completions for a shell, on stdout
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

pub(crate) fn run(command: &GenerateCommand) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    let mut cli = Cli::command();
    match command {
        GenerateCommand::Man => {
            // Section 8: system administration commands (a daemon and its control tool).
            let man = clap_mangen::Man::new(cli).section("8");
            man.render(&mut out).context("writing the man page")?;
        }
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli, "gradata", &mut out);
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(Outcome::Success)
}
