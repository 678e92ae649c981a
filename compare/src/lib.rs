//! `kvmini compare`: "a container virtualizes the OS, a VM virtualizes the hardware", as
//! measurements anyone can reproduce.
//!
//! Each workload ([`workload::Workload`]) is the same job on three sides
//! ([`workload::Side`]): in a container run by an OCI runtime's command line
//! (`RUNTIME run --bundle DIR ID`, runc by default), in a VM run by kvmini (`kvmini run ...`,
//! kvmini's own binary as a child process), and as a plain host process (the baseline). A
//! comparison, step by step:
//!
//! 1. Check the options, find the runtime, check for root (runtimes need it for namespaces,
//!    cgroups and mounts) and for KVM ([`check`] also names the host kind).
//! 2. Build the container side's files in a work directory, once: root file systems from the
//!    same files the VM side boots (busybox and the compute program; the Linux guest's
//!    initramfs, unpacked by [`cpio`]) and one OCI bundle per command, with a `config.json`
//!    kvmini writes itself ([`oci`], [`bundle`]).
//! 3. Per workload, read what each side sees from inside with one untimed probe run (kernel
//!    release, PID, CPUs), then run each side once untimed to warm caches.
//! 4. Time the runs, interleaved (container, VM, baseline, container, ...) so machine noise
//!    hits every side alike: launch to the workload's first line of output and to the end of
//!    the process, and CPU time ([`measure`]). Then a few more runs, interleaved too, sample
//!    the memory of the whole process tree from `/proc` while they run ([`memory`]); they are
//!    not timed, since the sampler takes CPU time.
//! 5. Density: start P instances at once for each `--parallel` level.
//! 6. Summarize ([`stats`]) into a [`report::Report`]: tables on the terminal, everything as
//!    JSON, and an SVG chart ([`chart`]).

pub mod bundle;
pub mod chart;
pub mod cpio;
pub mod measure;
pub mod memory;
pub mod oci;
pub mod progress;
pub mod report;
pub mod stats;
pub mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use measure::{Marker, RunError, Sample, Spec};
use progress::Progress;
use report::{Compute, Density, Isolation, Report, SideReport, WorkloadReport};
use stats::Summary;
use workload::{Side, Workload, LINUX_COMMAND, LINUX_VM_MEM, PROBE_SCRIPT};

use kvmini::{check, status};

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
  120      bad input or usage: an option, an unknown workload, a missing runtime or
           guest file, not root, a --json or --svg path that cannot be written
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
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Where to write the SVG chart.
    pub svg: Option<PathBuf>,
    /// Where the built guests are; `guest/build` (here or in the source tree of this binary)
    /// when `None`.
    pub guest_dir: Option<PathBuf>,
    /// Where bundles are built; see [`bundle::default_work_dir`].
    pub work_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workloads: Vec::new(),
            runs: DEFAULT_RUNS,
            parallel: DEFAULT_PARALLEL.to_vec(),
            runtime: None,
            json: None,
            svg: None,
            guest_dir: None,
            work_dir: None,
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
    /// A report file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The JSON report or the chart could not be rendered.
    #[error("cannot render the report: {0}")]
    Render(String),
}

impl Error {
    /// The process exit status for this error (see [`EXIT_STATUS`]).
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::UnknownWorkload(_)
            | Error::NoRuntime(_)
            | Error::NotRoot
            | Error::Missing { .. }
            | Error::Busybox(_)
            | Error::Output { .. } => status::BAD_INPUT,
            Error::NoKvm(_) => status::NO_KVM,
            Error::Bundle(_) | Error::SideFailed { .. } | Error::Render(_) => status::INTERNAL,
        }
    }
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

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The runtime's path: `given` if it names a file, else looked up on `PATH` (and in the sbin
/// directories, which a non-root `PATH` may lack).
pub fn find_runtime(given: Option<&Path>) -> Result<PathBuf, Error> {
    let name = given.unwrap_or(Path::new(DEFAULT_RUNTIME));
    let install = "install runc (apt-get install runc on Debian and Ubuntu) or name another \
                   OCI runtime with --runtime PATH";
    if name.components().count() > 1 || name.is_absolute() {
        return if is_executable(name) {
            Ok(name.to_path_buf())
        } else {
            Err(Error::NoRuntime(format!(
                "the OCI runtime {} does not exist or is not an executable file: {install}",
                name.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::NoRuntime(format!(
                "the OCI runtime `{}` is not on PATH: {install}",
                name.display()
            ))
        })
}

/// The first line `RUNTIME --version` prints, or why there is none.
fn runtime_version(runtime: &Path) -> String {
    match Command::new(runtime).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        Ok(out) => format!("unknown: --version exited with {}", out.status),
        Err(e) => format!("unknown: {e}"),
    }
}

/// Where the guests are: `given`, else `guest/build` in the current directory, else in the
/// source tree this binary was built in (`target/<profile>/kvmini`).
fn find_guests(given: Option<&Path>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_path_buf();
    }
    let here = PathBuf::from("guest/build");
    if here.is_dir() {
        return here;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .skip(1)
                .map(|dir| dir.join("guest/build"))
                .find(|d| d.is_dir())
        })
        .unwrap_or(here)
}

fn require(path: PathBuf, how: &str) -> Result<PathBuf, Error> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            path,
            how: how.into(),
        })
    }
}

/// The host's busybox, which must be the static one (it runs inside a root file system with
/// no libraries).
fn host_busybox() -> Result<PathBuf, Error> {
    let install = "install Debian's busybox-static (apt-get install busybox-static)";
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Busybox(format!("busybox is not installed: {install}")))?;
    match bundle::is_static_elf(&path) {
        Ok(true) => Ok(path),
        Ok(false) => Err(Error::Busybox(format!(
            "{} is not a statically linked program, so it cannot run alone in a container: {install}",
            path.display()
        ))),
        Err(e) => Err(Error::Busybox(format!("cannot read {}: {e}", path.display()))),
    }
}

/// A date as `YYYY-MM-DD HH:MM UTC` from seconds since the epoch (proleptic Gregorian
/// calendar; H. Hinnant's `civil_from_days`).
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Everything the sides need, found and built once.
struct Setup {
    runtime: PathBuf,
    runtime_name: String,
    kvmini: PathBuf,
    guests: PathBuf,
    host_busybox: PathBuf,
    initramfs_rootfs: Option<PathBuf>,
    /// (workload, probe?) → bundle directory.
    bundles: Vec<((Workload, bool), PathBuf)>,
    next_id: std::cell::Cell<u64>,
}

impl Setup {
    fn container_args(&self, w: Workload, probe: bool) -> Vec<String> {
        let words: Vec<&str> = match (w, probe) {
            (Workload::Hello, false) => vec!["/bin/busybox", "echo", "hello"],
            (Workload::Compute, false) => vec!["/bin/compute-native"],
            (Workload::Linux, false) => LINUX_COMMAND.to_vec(),
            (Workload::Hello | Workload::Compute, true) => {
                vec!["/bin/busybox", "sh", "-c", PROBE_SCRIPT]
            }
            (Workload::Linux, true) => vec!["busybox", "sh", "-c", PROBE_SCRIPT],
        };
        words.into_iter().map(String::from).collect()
    }

    fn vm_args(&self, w: Workload, probe: bool) -> Vec<String> {
        let g = |name: &str| self.guests.join(name).display().to_string();
        let mut args = vec!["run".to_string()];
        match w {
            Workload::Hello => args.push(g("hello.elf")),
            Workload::Compute => args.extend([g("compute.bin"), "--mode".into(), "long".into()]),
            Workload::Linux => {
                args.extend([
                    g("vmlinux"),
                    "--initrd".into(),
                    g("initramfs.cpio"),
                    "--mem".into(),
                    LINUX_VM_MEM.into(),
                    "--".into(),
                ]);
                if probe {
                    args.extend(["busybox", "sh", "-c", PROBE_SCRIPT].map(String::from));
                } else {
                    args.extend(LINUX_COMMAND.map(String::from));
                }
            }
        }
        args
    }

    fn baseline(&self, w: Workload, probe: bool) -> (PathBuf, Vec<String>) {
        // The same busybox file the container runs.
        let busybox = match (w, &self.initramfs_rootfs) {
            (Workload::Linux, Some(root)) => root.join("bin/busybox"),
            _ => self.host_busybox.clone(),
        };
        if probe {
            return (
                busybox,
                ["sh", "-c", PROBE_SCRIPT].map(String::from).to_vec(),
            );
        }
        match w {
            Workload::Hello => (busybox, vec!["echo".into(), "hello".into()]),
            Workload::Compute => (self.guests.join("compute-native"), Vec::new()),
            Workload::Linux => (
                busybox,
                LINUX_COMMAND[1..].iter().map(|a| a.to_string()).collect(),
            ),
        }
    }

    fn label(&self, side: Side) -> String {
        match side {
            Side::Container => format!("container ({})", self.runtime_name),
            Side::Vm => "vm (kvmini)".into(),
            Side::Baseline => "baseline (host process)".into(),
        }
    }

    /// The process one run (or probe) of `w` on `side` starts.
    fn spec(&self, w: Workload, side: Side, probe: bool) -> Spec {
        let marker = if probe { Marker::Any } else { w.marker(side) };
        let (program, args, cleanup) = match side {
            Side::Container => {
                let id = self.next_id.get();
                self.next_id.set(id + 1);
                let id = format!("kvmini-compare-{}-{id}", std::process::id());
                let bundle = self
                    .bundles
                    .iter()
                    .find(|(k, _)| *k == (w, probe))
                    .map(|(_, b)| b.display().to_string())
                    .unwrap_or_default();
                let rt = self.runtime.display().to_string();
                (
                    self.runtime.clone(),
                    vec!["run".into(), "--bundle".into(), bundle, id.clone()],
                    Some(vec![rt, "delete".into(), "--force".into(), id]),
                )
            }
            Side::Vm => (self.kvmini.clone(), self.vm_args(w, probe), None),
            Side::Baseline => {
                let (program, args) = self.baseline(w, probe);
                (program, args, None)
            }
        };
        Spec {
            program,
            args,
            marker,
            timeout: w.timeout(),
            cleanup,
        }
    }
}

fn failed(w: Workload, side: Side, setup: &Setup, source: RunError) -> Error {
    let hint = match side {
        Side::Container => format!(" (is {} a working OCI runtime?)", setup.runtime.display()),
        Side::Vm => String::new(),
        Side::Baseline => String::new(),
    };
    Error::SideFailed {
        workload: w.name(),
        side: side.name(),
        hint,
        source: Box::new(source),
    }
}

/// What [`prepare`] found and built.
struct Prepared {
    setup: Setup,
    /// Workloads that cannot run here, with why.
    skipped: Vec<(Workload, String)>,
    /// Held for its lock while the comparison runs.
    work: bundle::WorkDir,
    check: check::Report,
}

/// Checks the options and the machine, and builds the container side's files.
fn prepare(
    opts: &Options,
    workloads: &[Workload],
    progress: &mut Progress,
) -> Result<Prepared, Error> {
    let runtime = find_runtime(opts.runtime.as_deref())?;
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    for path in opts.json.iter().chain(&opts.svg) {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) {
            return Err(Error::Output {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "its directory does not exist",
                ),
            });
        }
    }
    let check = check::run();
    if !check.usable {
        let why = check
            .device
            .error()
            .or(check.measurements.error())
            .unwrap_or("KVM is not usable here")
            .to_string();
        return Err(Error::NoKvm(why));
    }

    let guests = find_guests(opts.guest_dir.as_deref());
    let make_guests = "build the guests with `make guests` (make test does)";
    let mut skipped = Vec::new();
    let need_busybox = workloads.iter().any(|w| *w != Workload::Linux);
    for w in workloads {
        match w {
            Workload::Hello => {
                require(guests.join("hello.elf"), make_guests)?;
            }
            Workload::Compute => {
                require(guests.join("compute.bin"), make_guests)?;
                require(guests.join("compute-native"), make_guests)?;
            }
            Workload::Linux => {
                let missing: Vec<String> = ["vmlinux", "initramfs.cpio"]
                    .iter()
                    .map(|f| guests.join(f))
                    .filter(|p| !p.is_file())
                    .map(|p| p.display().to_string())
                    .collect();
                if !missing.is_empty() {
                    let why = format!(
                        "{} missing: build the Linux guest with `make linux`",
                        missing.join(" and ")
                    );
                    progress.message(&format!("kvmini compare: skipping linux: {why}"));
                    skipped.push((Workload::Linux, why));
                }
            }
        }
    }
    let host_busybox = if need_busybox {
        host_busybox()?
    } else {
        PathBuf::from("/bin/busybox")
    };
    let kvmini = std::env::current_exe().map_err(|e| Error::Missing {
        path: "kvmini".into(),
        how: format!("cannot find this program's own binary: {e}"),
    })?;

    let work = bundle::WorkDir::open(&bundle::default_work_dir(opts.work_dir.as_deref()))?;
    let runtime_name = runtime
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runtime".into());
    let mut setup = Setup {
        runtime,
        runtime_name,
        kvmini,
        guests: std::path::absolute(&guests).unwrap_or(guests),
        host_busybox,
        initramfs_rootfs: None,
        bundles: Vec::new(),
        next_id: std::cell::Cell::new(0),
    };
    for &w in workloads {
        if skipped.iter().any(|(s, _)| *s == w) {
            continue;
        }
        let rootfs = match w {
            Workload::Linux => {
                let r = work.initramfs_rootfs(&setup.guests.join("initramfs.cpio"))?;
                setup.initramfs_rootfs = Some(r.clone());
                r
            }
            _ => work.busybox_rootfs(&setup.host_busybox, &setup.guests.join("compute-native"))?,
        };
        for probe in [false, true] {
            let name = format!("{}{}", w.name(), if probe { "-probe" } else { "" });
            let dir = work.bundle(&name, &rootfs, &setup.container_args(w, probe))?;
            setup.bundles.push(((w, probe), dir));
        }
    }
    Ok(Prepared {
        setup,
        skipped,
        work,
        check,
    })
}

/// Runs the comparison `opts` describes.
pub fn run(opts: &Options, progress: &mut Progress) -> Result<Report, Error> {
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
    let parallel: Vec<usize> = opts
        .parallel
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let workloads = parse_workloads(&opts.workloads)?;
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

    let levels = |w: Workload| -> Vec<usize> {
        parallel
            .iter()
            .copied()
            .filter(|p| w.max_parallel().is_none_or(|m| *p <= m))
            .collect()
    };
    let total: usize = workloads
        .iter()
        .filter(|w| !skipped.iter().any(|(s, _)| s == *w))
        .map(|&w| {
            let memory: usize = Side::ALL
                .iter()
                .map(|side| w.memory_runs(*side, opts.runs))
                .sum();
            3 * (1 + usize::from(w.warm_up()) + w.runs(opts.runs) + levels(w).len()) + memory
        })
        .sum();
    *progress = Progress::new(total);

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
        reports.push(measure_workload(
            w,
            opts,
            &levels(w),
            &parallel,
            &setup,
            progress,
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
        work_dir: work.path.display().to_string(),
        runs: opts.runs,
        parallel,
        method: vec![
            "every side is a child process started the same way (fork and exec from kvmini compare, stdin /dev/null, stdout and stderr piped)",
            "first output: from just before the fork to the arrival of the workload's own first line on the stdout pipe",
            "end: from just before the fork to wait4's return; CPU: ru_utime + ru_stime of the process and the descendants it waited for",
            "memory: separate runs (up to 5 per side, 1 for linux's vm), not timed: /proc/PID/smaps_rollup of every process of the tree, summed per sample, sampled while it runs, 100 us apart at first, then 1 % of the time so far apart (at most 10 ms), and the launched process alone back to back for its first 2 ms; peak = the largest sum seen; maxrss = the largest ru_maxrss of a timed run (one process; it includes the launcher's image between fork and exec)",
            "order: one untimed probe and (except linux) one untimed warm-up run per side, then the timed runs, then the memory runs, each interleaved container, vm, baseline",
            "density: P instances started back to back without waiting, wall time from the first launch to the last exit; not sampled",
        ],
        workloads: reports,
    })
}

fn isolation_from_probe(w: Workload, side: Side, sample: &Sample, spec: &Spec) -> Isolation {
    let after = (side == Side::Vm).then_some(workload::USER_SPACE_UP);
    let mut iso = Isolation {
        probe_command: Some(spec.command_line()),
        probe_output: Some(sample.stdout.clone()),
        ..Isolation::default()
    };
    match workload::parse_probe(&sample.stdout, after) {
        Some((kernel, pid, cpus)) => {
            iso.kernel = Some(kernel);
            iso.pid = Some(pid);
            iso.cpus = Some(cpus);
        }
        None => {
            iso.note = Some(format!(
                "the {} probe's output was not understood",
                w.name()
            ))
        }
    }
    iso
}

fn measure_workload(
    w: Workload,
    opts: &Options,
    levels: &[usize],
    parallel: &[usize],
    setup: &Setup,
    progress: &mut Progress,
) -> Result<WorkloadReport, Error> {
    let runs = w.runs(opts.runs);
    let mut notes = Vec::new();
    if runs < opts.runs {
        notes.push(format!(
            "{runs} timed runs per side instead of {} (a boot is slow where guest ring 0 is emulated)",
            opts.runs
        ));
    }
    let too_many: Vec<String> = parallel
        .iter()
        .filter(|p| !levels.contains(p))
        .map(|p| format!("P={p}"))
        .collect();
    if !too_many.is_empty() {
        notes.push(format!(
            "{} skipped: at most {} instances of this workload start at once",
            too_many.join(", "),
            w.max_parallel().unwrap_or(0)
        ));
    }

    // Isolation facts: one untimed probe per side.
    let mut isolation = Vec::new();
    for side in Side::ALL {
        progress.show(&format!("{}: {} probe", w.name(), side.name()));
        let iso = if side == Side::Vm && w != Workload::Linux {
            Isolation {
                kernel: None,
                pid: None,
                cpus: Some("1".into()),
                note: Some("the guest is its own kernel: no kernel under it and no process ID; CPUs from the VM config (kvmini run's default, 1 vCPU)".into()),
                ..Isolation::default()
            }
        } else {
            let spec = setup.spec(w, side, true);
            let sample = measure::run_once(&spec, false).map_err(|e| failed(w, side, setup, e))?;
            isolation_from_probe(w, side, &sample, &spec)
        };
        isolation.push(iso);
        progress.step(1);
    }
    if w.warm_up() {
        for side in Side::ALL {
            progress.show(&format!("{}: {} warm-up", w.name(), side.name()));
            measure::run_once(&setup.spec(w, side, false), false)
                .map_err(|e| failed(w, side, setup, e))?;
            progress.step(1);
        }
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Side::ALL.len()];
    for i in 0..runs {
        for (k, side) in Side::ALL.into_iter().enumerate() {
            progress.show(&format!(
                "{}: run {}/{runs}, {}",
                w.name(),
                i + 1,
                side.name()
            ));
            let s = measure::run_once(&setup.spec(w, side, false), false)
                .map_err(|e| failed(w, side, setup, e))?;
            samples[k].push(s);
            progress.step(1);
        }
    }
    let memory_runs = Side::ALL.map(|side| w.memory_runs(side, opts.runs));
    let mut sampled: Vec<Vec<Sample>> = vec![Vec::new(); Side::ALL.len()];
    for i in 0..memory_runs.iter().copied().max().unwrap_or(0) {
        for (k, side) in Side::ALL.into_iter().enumerate() {
            if i >= memory_runs[k] {
                continue;
            }
            progress.show(&format!(
                "{}: memory run {}/{}, {}",
                w.name(),
                i + 1,
                memory_runs[k],
                side.name()
            ));
            let s = measure::run_once(&setup.spec(w, side, false), true)
                .map_err(|e| failed(w, side, setup, e))?;
            sampled[k].push(s);
            progress.step(1);
        }
    }

    let mut density: Vec<Vec<Density>> = vec![Vec::new(); Side::ALL.len()];
    for &p in levels {
        for (k, side) in Side::ALL.into_iter().enumerate() {
            progress.show(&format!("{}: {p} at once, {}", w.name(), side.name()));
            let specs: Vec<Spec> = (0..p).map(|_| setup.spec(w, side, false)).collect();
            let b = measure::run_batch(&specs).map_err(|e| failed(w, side, setup, e))?;
            let lat: Vec<f64> = b.instances.iter().map(|s| s.total_ms).collect();
            density[k].push(Density {
                parallel: p,
                wall_ms: b.wall_ms,
                latency_ms: Summary::of(&lat),
                instances: b.instances,
            });
            progress.step(1);
        }
    }

    let mut sides = Vec::new();
    for (k, side) in Side::ALL.into_iter().enumerate() {
        let runs = std::mem::take(&mut samples[k]);
        let memory_runs = std::mem::take(&mut sampled[k]);
        let peak = |f: fn(&memory::Peak) -> u64| {
            memory_runs
                .iter()
                .filter_map(|s| s.memory.as_ref().map(f))
                .max()
                .unwrap_or(0)
        };
        let col = |f: fn(&Sample) -> f64| Summary::of(&runs.iter().map(f).collect::<Vec<_>>());
        let compute = (w == Workload::Compute).then(|| {
            let parsed: Vec<(String, u64)> = runs
                .iter()
                .filter_map(|s| workload::parse_compute(&s.stdout))
                .collect();
            let mut seen: Vec<String> = parsed.iter().map(|(c, _)| c.clone()).collect();
            seen.dedup();
            seen.sort();
            seen.dedup();
            Compute {
                checksum: parsed.first().map(|(c, _)| c.clone()).unwrap_or_default(),
                checksums_seen: seen,
                cycles: Summary::of(&parsed.iter().map(|(_, c)| *c as f64).collect::<Vec<_>>()),
            }
        });
        let spec = setup.spec(w, side, false);
        sides.push(SideReport {
            side,
            label: setup.label(side),
            command: spec.command_line(),
            container_args: (side == Side::Container).then(|| setup.container_args(w, false)),
            first_output_ms: col(|s| s.first_output_ms),
            total_ms: col(|s| s.total_ms),
            cpu_ms: col(|s| s.user_ms + s.sys_ms),
            peak_rss_kib: peak(|m| m.rss_kib),
            peak_pss_kib: peak(|m| m.pss_kib),
            maxrss_kib: runs.iter().map(|s| s.maxrss_kib).max().unwrap_or(0),
            isolation: std::mem::take(&mut isolation[k]),
            compute,
            density: std::mem::take(&mut density[k]),
            runs,
            memory_runs,
        });
    }
    let checksums_agree = (w == Workload::Compute).then(|| {
        let all: BTreeSet<&String> = sides
            .iter()
            .filter_map(|s| s.compute.as_ref())
            .flat_map(|c| c.checksums_seen.iter())
            .collect();
        all.len() == 1
            && sides.iter().all(|s| {
                s.compute
                    .as_ref()
                    .is_some_and(|c| c.checksums_seen.len() == 1)
            })
    });
    Ok(WorkloadReport {
        name: w.name(),
        description: w.description(),
        runs,
        skipped: None,
        notes,
        checksums_agree,
        sides,
    })
}

/// `kvmini compare`: runs the comparison, prints the tables, writes `--json` and `--svg`;
/// returns the exit status ([`EXIT_STATUS`]).
pub fn main(opts: &Options) -> i32 {
    let mut progress = Progress::new(1);
    let result = run(opts, &mut progress).and_then(|report| {
        print!("{report}");
        if let Some(path) = &opts.json {
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| Error::Render(format!("JSON: {e}")))?;
            std::fs::write(path, text + "\n").map_err(|source| Error::Output {
                path: path.clone(),
                source,
            })?;
        }
        if let Some(path) = &opts.svg {
            let svg = chart::svg(&report).map_err(|e| Error::Render(format!("SVG: {e}")))?;
            std::fs::write(path, svg).map_err(|source| Error::Output {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    });
    progress.clear();
    match result {
        Ok(()) => status::CLEAN,
        Err(e) => {
            eprintln!("kvmini: compare: {e}");
            e.exit_status()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_in_order_once_and_unknown_ones_are_named() {
        assert_eq!(parse_workloads(&[]).unwrap(), Workload::ALL.to_vec());
        let names = ["compute", "hello", "compute"].map(String::from);
        assert_eq!(
            parse_workloads(&names).unwrap(),
            vec![Workload::Compute, Workload::Hello]
        );
        let e = parse_workloads(&["nope".into()]).unwrap_err();
        assert_eq!(e.exit_status(), status::BAD_INPUT);
        let text = e.to_string();
        assert!(
            text.contains("'nope'") && text.contains("hello, compute, linux"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_runtime_says_how_to_install_one() {
        let e = find_runtime(Some(Path::new("/nonexistent/runc"))).unwrap_err();
        assert_eq!(e.exit_status(), status::BAD_INPUT);
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
