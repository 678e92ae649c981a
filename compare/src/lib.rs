//! `kvmini compare`: "a container virtualizes the OS, a VM virtualizes the hardware", as
//! measurements anyone can reproduce.
//!
//! Each workload ([`workload::Workload`]) is the same job on three sides
//! ([`workload::Side`]): in a container run by an OCI runtime's command line
//! (`RUNTIME run --bundle DIR ID`, runc by default), in a VM run by kvmini (`kvmini run ...`,
//! kvmini's own binary as a child process), and as a plain host process (the baseline). The
//! `linux` workload has a fourth when guest/build/linux-snapshot exists: the same guest
//! resumed from that snapshot (`kvmini restore DIR -- CMD`). The `oci` workload has two
//! sides that run one OCI bundle: the container runtime, and `kvmini oci`, whose container
//! is a VM ([`kvmini_oci`]). A comparison, step by step:
//!
//! 1. Check the options, find the runtime, check for root (runtimes need it for namespaces,
//!    cgroups and mounts) and for KVM (`kvmini::check` also names the host kind).
//! 2. Build the container side's files in a work directory, once: root file systems from the
//!    same files the VM side boots (busybox and the compute program; the Linux guest's
//!    initramfs, unpacked by [`cpio`]) and one OCI bundle per command, with a `config.json`
//!    kvmini writes itself ([`oci`], [`bundle`]).
//! 3. Per workload, read what each side sees from inside with one untimed probe run (kernel
//!    release, PID, CPUs), then run each side once untimed to warm caches.
//! 4. Time the runs, interleaved (container, VM, [VM from snapshot,] baseline, container, ...;
//!    for `oci`: container, kvmini oci, container, ...) so machine noise
//!    hits every side alike: launch to the workload's first line of output and to the end of
//!    the process, and CPU time ([`sample`], over the measuring kit's runner). Then a few
//!    more runs, interleaved too, sample the memory of the whole process tree from `/proc`
//!    while they run (the kit's `memory`); they are not timed, since the sampler takes CPU
//!    time.
//! 5. Density: start P instances at once for each `--parallel` level.
//! 6. Summarize (the kit's `stats`) into a [`report::Report`], which [`run`] returns: the
//!    `kvmini` binary prints its tables, writes it as JSON and draws it as an SVG chart
//!    ([`chart`]).

pub mod bundle;
pub mod chart;
pub mod cpio;
mod find;
pub mod kvmini_oci;
pub mod oci;
pub mod progress;
pub mod report;
pub mod sample;
mod setup;
mod sides;
pub mod workload;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use find::runtime_version;
use progress::Progress;
use report::{Report, WorkloadReport};
use sample::RunError;
use setup::{prepare, Prepared};
use workload::{Side, Workload};

pub use find::find_runtime;

/// Timed runs per side when none are given.
pub const DEFAULT_RUNS: usize = 20;
/// Density levels when none are given.
pub const DEFAULT_PARALLEL: [usize; 2] = [1, 10];
/// Most timed runs per side.
pub const MAX_RUNS: usize = 10_000;
/// Most instances started at once.
pub const MAX_PARALLEL: usize = 256;
/// The runtime used when none is given.
pub const DEFAULT_RUNTIME: &str = "runc";

/// The exit statuses of `kvmini compare`, as its `--help` prints them.
pub const EXIT_STATUS: &str = "\
Exit status:
  0        the comparison ran; the report is on standard output
  120      bad input or usage: an option, an unknown workload, a missing runtime,
           guest file or --bundle, not root, a --json or --svg path that cannot be
           written
  121      no usable KVM on this host
  125      a side failed to run (the runtime, kvmini or a workload failed, timed
           out or printed the wrong thing; its stderr is shown), or the work
           directory could not be prepared";

/// What to compare and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// Workload names; all of [`Workload::ALL`] when empty.
    pub workloads: Vec<String>,
    /// Timed runs per side.
    pub runs: usize,
    /// Density levels: instances started at once.
    pub parallel: Vec<usize>,
    /// The OCI runtime: a path, or a name looked up on `PATH`; `runc` when `None`.
    pub runtime: Option<PathBuf>,
    /// Where the built guests are; `guest/build` (here or in the source tree of this binary)
    /// when `None`.
    pub guest_dir: Option<PathBuf>,
    /// Where bundles are built; see [`bundle::default_work_dir`].
    pub work_dir: Option<PathBuf>,
    /// A bundle of the user's own for the `oci` workload to run in place of its busybox
    /// one; with no workloads named, only `oci` runs.
    pub bundle: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workloads: Vec::new(),
            runs: DEFAULT_RUNS,
            parallel: DEFAULT_PARALLEL.to_vec(),
            runtime: None,
            guest_dir: None,
            work_dir: None,
            bundle: None,
        }
    }
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option is wrong.
    #[error("{0}")]
    Usage(String),
    /// No such workload.
    #[error("unknown workload '{0}': the workloads are {known}", known = known_workloads())]
    UnknownWorkload(String),
    /// The runtime is not there.
    #[error("{0}")]
    NoRuntime(String),
    /// Not root.
    #[error("the container side needs root: an OCI runtime creates namespaces, cgroups and mounts. Run kvmini compare as root (e.g. with sudo)")]
    NotRoot,
    /// No usable KVM.
    #[error("the VM side needs KVM: {0}. `kvmini check` says more")]
    NoKvm(String),
    /// A guest or a program is missing.
    #[error("{} is missing: {how}", .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// How to get it.
        how: String,
    },
    /// The host's busybox cannot serve as a container's root file system.
    #[error("{}", .0)]
    Busybox(String),
    /// The container side's files could not be built.
    #[error("preparing the container side: {0}")]
    Bundle(#[from] bundle::Error),
    /// A side failed.
    #[error("the {side} side of `{workload}` failed{hint}: {source}")]
    SideFailed {
        /// The workload.
        workload: &'static str,
        /// The side.
        side: &'static str,
        /// What to check.
        hint: String,
        /// What happened.
        source: Box<RunError>,
    },
}

fn known_workloads() -> String {
    Workload::ALL
        .iter()
        .map(|w| w.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The workloads `names` asks for, in the order given, each once; all when empty.
pub fn parse_workloads(names: &[String]) -> Result<Vec<Workload>, Error> {
    if names.is_empty() {
        return Ok(Workload::ALL.to_vec());
    }
    let mut out = Vec::new();
    for name in names {
        let w = Workload::parse(name).ok_or_else(|| Error::UnknownWorkload(name.clone()))?;
        if !out.contains(&w) {
            out.push(w);
        }
    }
    Ok(out)
}

/// The workloads `opts` asks for ([`parse_workloads`]); with `--bundle`, `oci` alone when
/// none are named, and an error when those named leave it out (the bundle would go unused).
fn workloads_of(opts: &Options) -> Result<Vec<Workload>, Error> {
    if opts.bundle.is_none() {
        return parse_workloads(&opts.workloads);
    }
    if opts.workloads.is_empty() {
        return Ok(vec![Workload::Oci]);
    }
    let workloads = parse_workloads(&opts.workloads)?;
    if !workloads.contains(&Workload::Oci) {
        return Err(Error::Usage(
            "--bundle is the bundle of the oci workload: add --workload oci".into(),
        ));
    }
    Ok(workloads)
}

/// A date as `YYYY-MM-DD HH:MM UTC` from seconds since the epoch ([`kvmini_measure::date`]).
pub fn utc_date(secs: u64) -> String {
    let t = kvmini_measure::date::utc(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

/// The parallel levels asked for, each once, in increasing order; checked with the runs.
fn check_counts(opts: &Options) -> Result<Vec<usize>, Error> {
    if opts.runs == 0 || opts.runs > MAX_RUNS {
        return Err(Error::Usage(format!(
            "--runs must be between 1 and {MAX_RUNS}"
        )));
    }
    if opts.parallel.iter().any(|p| *p == 0 || *p > MAX_PARALLEL) {
        return Err(Error::Usage(format!(
            "--parallel levels must be between 1 and {MAX_PARALLEL}"
        )));
    }
    Ok(opts
        .parallel
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// The parallel levels of `parallel` that workload `w` runs.
fn levels(w: Workload, parallel: &[usize]) -> Vec<usize> {
    parallel
        .iter()
        .copied()
        .filter(|p| w.max_parallel().is_none_or(|m| *p <= m))
        .collect()
}

/// How many runs (steps of the progress bar) the comparison makes.
fn total_steps(
    opts: &Options,
    workloads: &[Workload],
    parallel: &[usize],
    sides_of: impl Fn(Workload) -> Vec<Side>,
) -> usize {
    workloads
        .iter()
        .map(|&w| {
            let sides = sides_of(w);
            let memory: usize = sides
                .iter()
                .map(|side| w.memory_runs(*side, opts.runs))
                .sum();
            sides.len()
                * (1 + usize::from(w.warm_up()) + w.runs(opts.runs) + levels(w, parallel).len())
                + memory
        })
        .sum()
}

/// How everything was measured, in words, for the report.
const METHOD: [&str; 6] = [
    "every side is a child process started the same way (fork and exec from kvmini compare, stdin /dev/null, stdout and stderr piped)",
    "first output: from just before the fork to the arrival of the workload's own first line on the stdout pipe",
    "end: from just before the fork to wait4's return; CPU: ru_utime + ru_stime of the process and the descendants it waited for",
    "memory: separate runs (up to 5 per side; for linux, 1 of the vm and up to 2 from the snapshot; for oci, up to 2 of kvmini oci), not timed: /proc/PID/smaps_rollup of every process of the tree, summed per sample, sampled while it runs, 100 us apart at first, then 1 % of the time so far apart (at most 10 ms), and the launched process alone back to back for its first 2 ms; peak = the largest sum seen (a side none of whose runs was seen, a process that ended before its first sample on a busy machine, is run again, up to 20 times); maxrss = the largest ru_maxrss of a timed run (one process; it includes the pages of kvmini compare's forked copy that the child touched before exec)",
    "order: one untimed probe and (except linux and oci) one untimed warm-up run per side, then the timed runs, then the memory runs, each interleaved container, vm, (linux) vm from snapshot, baseline; for oci container, kvmini oci",
    "density: P instances started back to back without waiting, wall time from the first launch to the last exit; not sampled",
];

/// Runs the comparison `opts` describes and returns its report. Live progress (a bar, and
/// the workloads skipped) goes to `progress`; nothing is printed on standard output.
pub fn run(opts: &Options, progress: &mut Progress) -> Result<Report, Error> {
    let parallel = check_counts(opts)?;
    let workloads = workloads_of(opts)?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Prepared {
        setup,
        skipped,
        work,
        check,
    } = prepare(opts, &workloads, progress)?;
    let to_run: Vec<Workload> = workloads
        .iter()
        .copied()
        .filter(|w| !skipped.iter().any(|(s, _)| s == w))
        .collect();
    *progress = Progress::new(total_steps(opts, &to_run, &parallel, |w| setup.sides(w)));

    let mut reports = Vec::new();
    for &w in &workloads {
        if let Some((_, why)) = skipped.iter().find(|(s, _)| *s == w) {
            reports.push(WorkloadReport {
                name: w.name(),
                description: w.description(),
                runs: 0,
                skipped: Some(why.clone()),
                notes: Vec::new(),
                checksums_agree: None,
                sides: Vec::new(),
            });
            continue;
        }
        let levels = levels(w, &parallel);
        reports.push(sides::measure_workload(
            w, opts, &levels, &parallel, &setup, progress,
        )?);
    }
    progress.clear();

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Ok(Report {
        kvmini_version: env!("CARGO_PKG_VERSION"),
        date_utc: utc_date(started),
        unix_time: started,
        host: report::Host {
            kind: check.host_kind.clone(),
            kind_short: check.host_kind_short,
            kernel,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            check,
        },
        runtime: report::Runtime {
            path: setup.runtime.display().to_string(),
            version: runtime_version(&setup.runtime),
        },
        vmm: setup.kvmini.display().to_string(),
        oci_runtime: to_run.contains(&Workload::Oci).then(|| report::Runtime {
            path: setup.oci.program.display().to_string(),
            version: runtime_version(&setup.oci.program),
        }),
        work_dir: work.path.display().to_string(),
        runs: opts.runs,
        parallel,
        method: METHOD.to_vec(),
        workloads: reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmini::status;
    use std::path::Path;

    #[test]
    fn workloads_parse_in_order_once_and_unknown_ones_are_named() {
        assert_eq!(parse_workloads(&[]).unwrap(), Workload::ALL.to_vec());
        let names = ["compute", "hello", "compute"].map(String::from);
        assert_eq!(
            parse_workloads(&names).unwrap(),
            vec![Workload::Compute, Workload::Hello]
        );
        let e = parse_workloads(&["nope".into()]).unwrap_err();
        assert!(matches!(e, Error::UnknownWorkload(_)), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("'nope'") && text.contains("hello, compute, linux, oci"),
            "{text}"
        );
    }

    #[test]
    fn a_bundle_of_ones_own_goes_with_the_oci_workload() {
        let mut opts = Options {
            bundle: Some("/b".into()),
            ..Options::default()
        };
        assert_eq!(workloads_of(&opts).unwrap(), vec![Workload::Oci]);
        opts.workloads = vec!["hello".into(), "oci".into()];
        assert_eq!(
            workloads_of(&opts).unwrap(),
            vec![Workload::Hello, Workload::Oci]
        );
        opts.workloads = vec!["hello".into()];
        let e = workloads_of(&opts).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        assert!(e.to_string().contains("--workload oci"), "{e}");
        opts.bundle = None;
        assert_eq!(workloads_of(&opts).unwrap(), vec![Workload::Hello]);
        opts.workloads.clear();
        assert_eq!(workloads_of(&opts).unwrap(), Workload::ALL.to_vec());
    }

    #[test]
    fn a_missing_runtime_says_how_to_install_one() {
        let e = find_runtime(Some(Path::new("/nonexistent/runc"))).unwrap_err();
        assert!(matches!(e, Error::NoRuntime(_)), "{e}");
        assert!(e.to_string().contains("apt-get install runc"), "{e}");
        let e = find_runtime(Some(Path::new("no-such-runtime-here"))).unwrap_err();
        assert!(e.to_string().contains("not on PATH"), "{e}");
        assert_eq!(
            find_runtime(Some(Path::new("/bin/sh"))).unwrap(),
            Path::new("/bin/sh")
        );
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn every_status_is_in_the_help_table() {
        for s in [
            status::CLEAN,
            status::BAD_INPUT,
            status::NO_KVM,
            status::INTERNAL,
        ] {
            assert!(EXIT_STATUS.contains(&format!("  {s} ")), "{s}");
        }
    }
}
