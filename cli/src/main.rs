//! `kvmini`: the command line is the `kvmini_cli` library's (`src/lib.rs`).

fn main() -> std::process::ExitCode {
    kvmini_cli::main()
}
