//! Why the benchmark could not run: each message says what to do.

use std::path::PathBuf;

use kvmini_measure::runner::{self, Status};

/// Why the benchmark stopped before it measured anything, or could not write its results.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkout could not be entered.
    #[error("cannot enter {}: {source}", .dir.display())]
    Chdir {
        /// The checkout.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// /dev/kvm cannot be opened and KVMINI_REQUIRE_KVM=1 asks for it.
    #[error("KVMINI_REQUIRE_KVM=1 but cannot open /dev/kvm: {0}")]
    NoKvm(std::io::Error),
    /// An input is not built.
    #[error("{} is missing: run {how}", .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The command that builds it.
        how: &'static str,
    },
    /// `kvmini check --json` could not be run.
    #[error("cannot run {} check: {source}", .kvmini.display())]
    Check {
        /// The kvmini binary.
        kvmini: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `kvmini check --json` printed something else.
    #[error("{} check --json printed no JSON: {source}", .kvmini.display())]
    CheckOutput {
        /// The kvmini binary.
        kvmini: PathBuf,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// `kvmini check` says KVM cannot be used.
    #[error("kvmini check says KVM is not usable here: {0}")]
    Unusable(String),
    /// A process could not be started or waited for.
    #[error(transparent)]
    Run(#[from] runner::Error),
    /// An exit-cost guest ended with the wrong status.
    #[error("{command}: {status} (expected exit status {expected}): {stderr}")]
    ExitStatus {
        /// The command line.
        command: String,
        /// How it ended.
        status: Status,
        /// How it should have.
        expected: i32,
        /// Its standard error.
        stderr: String,
    },
    /// kvmini printed no `--stats=json` object.
    #[error("{command}: no JSON statistics on stderr")]
    NoStats {
        /// The command line.
        command: String,
    },
    /// The exit-cost guests do not make the exits they claim.
    #[error(
        "the exit-cost guests do not make the exits they should: unclaimed (port, mmio) writes \
         counted by kvmini: {0}"
    )]
    ExitCounts(String),
    /// The results' directory could not be made.
    #[error("cannot create {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The results could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The results could not be turned into JSON.
    #[error("cannot render the results as JSON: {0}")]
    Json(#[from] serde_json::Error),
}
