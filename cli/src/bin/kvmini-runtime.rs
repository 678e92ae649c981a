//! `kvmini-runtime`: kvmini's OCI runtime (runc's command line, docs/oci.md) under the name a
//! container engine calls, `podman --runtime PATH/kvmini-runtime ...`. `kvmini oci ARGS` runs
//! `kvmini-runtime ARGS`.

use std::process::ExitCode;

use clap::Parser;

use kvmini_cli::oci::{self, OciArgs};

#[derive(Parser, Debug)]
#[command(
    name = "kvmini-runtime",
    version = oci::VERSION.as_str(),
    about = "An OCI runtime with runc's command line that runs each container's process in a kvmini VM with the Linux guest"
)]
struct Runtime {
    #[command(flatten)]
    args: OciArgs,
}

fn main() -> ExitCode {
    match kvmini_cli::parse::<Runtime>() {
        Ok(runtime) => ExitCode::from(oci::main(runtime.args).clamp(0, 255) as u8),
        Err(code) => code,
    }
}
