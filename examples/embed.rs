//! kvmini as a library, the way a kernel's own test suite would use it: boot an image with a
//! timeout, capture what it prints on the serial port, and read how it ended.
//!
//! ```text
//! cargo run --example embed -- guest/build/hello.elf
//! ```
//!
//! Exits with the guest's status, so a test harness can use it as it is.

use std::process::ExitCode;
use std::time::Duration;

use kvmini::config::{SerialOutput, SharedBuffer};
use kvmini::{StopReason, VmConfig};

fn main() -> ExitCode {
    let Some(image) = std::env::args().nth(1) else {
        eprintln!("usage: embed IMAGE   (an ELF kernel such as guest/build/hello.elf)");
        return ExitCode::from(2);
    };
    // Serial output goes to a buffer we read afterwards; a timeout keeps a stuck guest from
    // hanging the test.
    let serial = SharedBuffer::new();
    let mut config = VmConfig::new(image);
    config.serial = SerialOutput::Buffer(serial.clone());
    config.timeout = Some(Duration::from_secs(10));

    let outcome = match kvmini::run(&config) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("the VM could not run: {e}");
            return ExitCode::from(e.exit_status() as u8);
        }
    };
    print!("{}", serial.text());
    match &outcome.reason {
        StopReason::Crash(report) => eprint!("the guest crashed: {report}"),
        reason => eprintln!(
            "stopped: {reason}; {} exits, {:.2} ms in the guest",
            outcome.stats.exits_total, outcome.stats.guest_ms
        ),
    }
    ExitCode::from(outcome.exit_status as u8)
}
