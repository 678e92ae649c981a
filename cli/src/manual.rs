//! `kvmini completions SHELL` and `kvmini man DIR`: shell completions and man pages, written
//! from the same clap definitions the parser uses, so that they never disagree with it.
//! `kvmini` hands both to `kvmini-manual`, installed beside it, which links the generators;
//! `make install` puts their output where shells and `man` look for them.

use std::path::{Path, PathBuf};

use clap::{Args, Command};
use clap_complete::Shell;

use kvmini::status;

/// `kvmini completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: Shell,
}

/// `kvmini man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// The directory to write `kvmini.1` and one page per subcommand (`kvmini-run.1`, ...)
    /// into; created when missing.
    dir: PathBuf,
}

/// The program that writes completions and man pages, installed beside `kvmini`.
pub const MANUAL_PROGRAM: &str = "kvmini-manual";

/// Prints the completion script for `args.shell` on standard output.
pub fn completions(args: &CompletionsArgs, mut cmd: Command) -> i32 {
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout());
    0
}

/// Writes the man pages into `args.dir` and names each on standard output.
pub fn man(args: &ManArgs, cmd: Command) -> i32 {
    match write_pages(&args.dir, cmd) {
        Ok(pages) => {
            for page in pages {
                println!("{}", page.display());
            }
            0
        }
        Err(e) => {
            eprintln!(
                "kvmini: cannot write the man pages into {}: {e}",
                args.dir.display()
            );
            status::BAD_INPUT
        }
    }
}

/// `kvmini.1` for the whole command and `kvmini-SUB.1` for each visible subcommand.
fn write_pages(dir: &Path, cmd: Command) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![write_page(dir, "kvmini", cmd.clone())?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap_mangen names a page and its synopsis by the command's name: give each
        // subcommand its full name ("kvmini run") and its file the usual "kvmini-run".
        // (A one-shot command: leaking the two names is simpler than clap's `string` feature,
        // which would grow every run of kvmini.)
        let page: &'static str = format!("kvmini-{}", sub.get_name()).leak();
        let full = sub
            .clone()
            .name(page)
            .bin_name(format!("kvmini {}", sub.get_name()));
        pages.push(write_page(dir, page, full)?);
    }
    Ok(pages)
}

fn write_page(dir: &Path, name: &str, cmd: Command) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("{name}.1"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut roff)?;
    std::fs::write(&path, roff)?;
    Ok(path)
}
