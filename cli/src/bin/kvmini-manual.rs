//! `kvmini-manual`: writes `kvmini`'s shell completions and man pages from the command line's
//! own definitions. `kvmini completions SHELL` and `kvmini man DIR` run it.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use kvmini_cli::manual::{self, CompletionsArgs, ManArgs};
use kvmini_cli::Cli;

#[derive(Parser, Debug)]
#[command(
    name = "kvmini-manual",
    version,
    about = "Write kvmini's shell completions and man pages"
)]
struct Manual {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a completion script for a shell.
    Completions(CompletionsArgs),
    /// Write the man pages into a directory.
    Man(ManArgs),
}

fn main() -> ExitCode {
    let manual = match kvmini_cli::parse::<Manual>() {
        Ok(manual) => manual,
        Err(code) => return code,
    };
    let code = match manual.command {
        Command::Completions(args) => manual::completions(&args, Cli::command()),
        Command::Man(args) => manual::man(&args, Cli::command()),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
