//! `kvmini compare`: the options, handed to the kvmini-compare crate.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// A workload to run: hello, compute or linux (repeat for several) [default: all;
    /// linux is skipped with a message when guest/build/vmlinux is missing].
    #[arg(long = "workload", value_name = "NAME")]
    workloads: Vec<String>,
    /// Timed runs per side (linux: at most 3).
    #[arg(long, default_value_t = kvmini_compare::DEFAULT_RUNS)]
    runs: usize,
    /// Instances started at once for the density figures, comma-separated (linux: at most 2).
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    parallel: Vec<usize>,
    /// The OCI runtime: a path or a name on PATH; it is run as `RUNTIME run --bundle DIR ID`.
    #[arg(long, value_name = "PATH", default_value = kvmini_compare::DEFAULT_RUNTIME)]
    runtime: PathBuf,
    /// Write the whole report, raw samples included, as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write a chart of the latencies and memory as SVG to PATH.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Where the built guests are [default: guest/build].
    #[arg(long, value_name = "DIR")]
    guest_dir: Option<PathBuf>,
    /// Where the container bundles are built and kept [default: $XDG_CACHE_HOME/kvmini-compare,
    /// else /tmp/kvmini-compare-UID].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

/// Runs the comparison; returns the exit status.
pub fn main(a: CompareArgs) -> i32 {
    kvmini_compare::main(&kvmini_compare::Options {
        workloads: a.workloads,
        runs: a.runs,
        parallel: a.parallel,
        runtime: Some(a.runtime),
        json: a.json,
        svg: a.svg,
        guest_dir: a.guest_dir,
        work_dir: a.work_dir,
    })
}
