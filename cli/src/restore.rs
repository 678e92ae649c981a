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

    #[command(
        flatten,
        next_help_heading = "Devices (the snapshot's, in its order, on the files to use now; none given: the snapshot's own)"
    )]
    devices: crate::devices::DeviceArgs,

    /// A command for the guest, after "--": kvmini's Linux guest, saved ready for work
    /// (kvmini.snapshot=1), reads it from its console and runs it; kvmini exits with its status.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The words as one line of shell words, each single-quoted.
fn shell_line(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect();
    quoted.join(" ") + "\n"
}

/// Restores and runs the VM; returns the exit status.
pub fn main(args: &RestoreArgs) -> i32 {
    let config = RestoreConfig {
        dir: args.dir.clone(),
        serial: args.control.serial.clone(),
        serial_limit: args.control.serial_limit,
        timeout: args.control.timeout,
        serial_input: SerialInput::Stdin,
        input: if args.command.is_empty() {
            Vec::new()
        } else {
            shell_line(&args.command).into_bytes()
        },
        // Only --stats shows the split, so only --stats pays for it.
        time_exits: args.control.stats.is_some(),
        devices: args.devices.to_config(),
        seccomp: args.control.seccomp.mode(),
        trace: args.control.trace(),
    };
    finish(
        Vmm::restore(&config).and_then(Vmm::run),
        &args.control,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_one_line_of_quoted_words() {
        let words = ["sh", "-c", "echo it's $HOME"].map(String::from);
        assert_eq!(shell_line(&words), "'sh' '-c' 'echo it'\\''s $HOME'\n");
    }
}
