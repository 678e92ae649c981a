//! `kvmini check`: runs the library's host checks and prints the report.

use kvmini::{check, status};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

/// Prints the report; the exit status is 0 when guests can run, else [`status::NO_KVM`].
pub fn main(args: &CheckArgs) -> i32 {
    let report = check::run();
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{report}");
    }
    if report.usable {
        status::CLEAN
    } else {
        status::NO_KVM
    }
}
