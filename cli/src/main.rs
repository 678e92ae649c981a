//! The `kvmini` command: parses arguments with clap, builds the library's inputs, calls the
//! library and maps the result to a documented exit status. One module per subcommand.

mod check;
mod compare;
mod devices;
mod restore;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kvmini::status;

#[derive(Parser, Debug)]
#[command(
    name = "kvmini",
    version,
    about = "A tiny KVM virtual machine monitor: boots raw x86 code and ELF kernels, and says what kind of KVM host it runs on",
    after_help = status::TABLE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot IMAGE in a new VM and run it until the guest stops.
    #[command(after_help = status::TABLE)]
    Run(Box<run::RunArgs>),
    /// Build a new VM from a snapshot directory and run it from where the guest was saved.
    #[command(after_help = status::TABLE)]
    Restore(restore::RestoreArgs),
    /// Tell whether KVM is usable here and what kind of host this is; exits 0 when kvmini
    /// can run guests, 121 when it cannot.
    Check(check::CheckArgs),
    /// Run the same workloads in a container (an OCI runtime, runc by default), in a kvmini VM
    /// and as a plain host process, and report start-up latency, memory, density and what
    /// each sees from inside. Needs root (for the container side) and KVM.
    #[command(after_help = kvmini_compare::EXIT_STATUS)]
    Compare(compare::CompareArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                status::BAD_INPUT as u8
            } else {
                0
            });
        }
    };
    let code = match cli.command {
        Command::Run(args) => run::main(&args),
        Command::Restore(args) => restore::main(&args),
        Command::Check(args) => check::main(&args),
        Command::Compare(args) => compare::main(args),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
