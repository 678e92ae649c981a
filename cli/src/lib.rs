//! The `kvmini` command: parses arguments with clap, builds the library's inputs, calls the
//! library and maps the result to a documented exit status. One module per subcommand.
//!
//! A library so that two binaries share the one definition of the command line: `kvmini`
//! (`src/main.rs`) and `kvmini-manual` (`src/bin/kvmini-manual.rs`), which writes the shell
//! completions and man pages from it. `kvmini completions` and `kvmini man` run the second:
//! the generators stay out of the `kvmini` binary, whose every page of text is mapped on
//! each run (with them linked in, a tiny guest's run took 2.2 MiB instead of 2.0).

mod check;
mod compare;
mod devices;
pub mod manual;
pub mod oci;
mod restore;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kvmini::status;

/// The command line of `kvmini`.
#[derive(Parser, Debug)]
#[command(
    name = "kvmini",
    version,
    about = "A tiny KVM virtual machine monitor: boots raw x86 code and ELF kernels, and says what kind of KVM host it runs on",
    after_help = status::TABLE
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot IMAGE in a new VM and run it until the guest stops.
    #[command(after_help = status::TABLE)]
    Run(Box<run::RunArgs>),
    /// Build a new VM from a snapshot directory and run it from where the guest was saved.
    ///
    /// A snapshot's virtio devices come back on the files, sockets and TAPs the device options
    /// name: every device of the snapshot, in its order (disks, network devices, vsock,
    /// entropy), a disk image of its saved size, the same vsock cid; --root is a disk like
    /// --disk (the kernel command line was set at boot). Without any device option, the
    /// snapshot's own files. A restore whose devices differ stops with status 120 before the
    /// guest runs, saying which device and how.
    #[command(after_help = status::TABLE)]
    Restore(restore::RestoreArgs),
    /// Tell whether KVM is usable here and what kind of host this is; exits 0 when kvmini
    /// can run guests, 121 when it cannot.
    Check(check::CheckArgs),
    /// Run the same workloads in a container (an OCI runtime, runc by default), in a kvmini VM
    /// and as a plain host process, and one OCI bundle under the runtime and under kvmini oci;
    /// report start-up latency, memory, density and what each sees from inside. Needs root
    /// (for the container side) and KVM.
    #[command(after_help = kvmini_compare::EXIT_STATUS)]
    Compare(compare::CompareArgs),
    /// An OCI runtime with runc's command line that runs each container's process in a
    /// kvmini VM with the Linux guest (docs/oci.md); also what the binary does when called
    /// kvmini-runtime (`podman --runtime PATH/kvmini-runtime`). Failures exit 1, as runc's.
    #[command(version = oci::VERSION.as_str())]
    Oci(oci::OciArgs),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell); `make
    /// install` installs them.
    Completions(manual::CompletionsArgs),
    /// Write the man pages (kvmini.1 and one per subcommand) into a directory; `make install`
    /// installs them.
    Man(manual::ManArgs),
}

/// Parses this process's arguments; on an error (or `--help`, `--version`) prints it and
/// returns the status to exit with: 120 for bad usage, 0 for help.
pub fn parse<P: Parser>() -> Result<P, ExitCode> {
    P::try_parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() {
            status::BAD_INPUT as u8
        } else {
            0
        })
    })
}

/// Runs `program` from `kvmini`'s own directory in place of this process, with kvmini's
/// arguments after the first `skip` (the program name, and a subcommand the program does not
/// take); returns only when it cannot. Subcommands with large dependencies live in such
/// programs: each page of kvmini's code is mapped on every run (the kernel maps code around
/// each page touched), so code linked in costs every VM's memory, used or not.
pub fn exec_sibling(program: &str, skip: usize) -> i32 {
    use std::os::unix::process::CommandExt;
    let path = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(program),
        Err(e) => {
            eprintln!("kvmini: cannot tell where kvmini is installed: {e}");
            return status::INTERNAL;
        }
    };
    let err = std::process::Command::new(&path)
        .args(std::env::args_os().skip(skip))
        .exec();
    eprintln!(
        "kvmini: cannot run {}: {err}; it is installed beside kvmini (make install, or cargo \
         install --path cli)",
        path.display()
    );
    status::INTERNAL
}

/// `kvmini`'s `main`: parses the command line, runs the subcommand, and returns its status.
pub fn main() -> ExitCode {
    let cli = match parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let code = match cli.command {
        Command::Run(args) => run::main(&args),
        Command::Restore(args) => restore::main(&args),
        Command::Check(args) => check::main(&args),
        Command::Compare(args) => compare::main(args),
        // Both run a program installed beside kvmini, which links what they need, so that
        // every run of a VM does not carry it (see `exec_sibling`).
        Command::Oci(_) => exec_sibling(oci::RUNTIME_NAME, 2),
        Command::Completions(_) | Command::Man(_) => exec_sibling(manual::MANUAL_PROGRAM, 1),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
