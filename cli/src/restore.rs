//! `kvmini restore`: a new VM from a snapshot directory, run like `kvmini run` runs one.

use std::path::PathBuf;

use kvmini::config::{RestoreConfig, SerialInput};
use kvmini::Vmm;

use crate::run::{finish, Control};

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// A snapshot directory written by `kvmini run --snapshot DIR`.
    dir: PathBuf,

    #[command(flatten)]
    control: Control,
}

/// Restores and runs the VM; returns the exit status.
pub fn main(args: &RestoreArgs) -> i32 {
    let config = RestoreConfig {
        dir: args.dir.clone(),
        serial: args.control.serial.clone(),
        serial_limit: args.control.serial_limit,
        timeout: args.control.timeout,
        serial_input: SerialInput::Stdin,
        // Only --stats shows the split, so only --stats pays for it.
        time_exits: args.control.stats.is_some(),
    };
    finish(
        Vmm::restore(&config).and_then(Vmm::run),
        &args.control,
        None,
    )
}
