//! The Linux boot section (`--linux N`): N boots of the guest kernel with the busybox
//! initramfs running `uname -r`, through `guest/build/vmlinux` (PVH) and
//! `guest/build/bzImage`, under kvmini and under QEMU's microvm, interleaved round by round.
//!
//! Every boot is timed from outside the same way for every subject: launch to the first byte
//! on standard output, to the first byte of the `kvmini-init: user space up` line, and to
//! exit. kvmini's boots also give its own milestones from `--stats=json`. QEMU is given the
//! kernel command line kvmini used (the `cmdline` of kvmini's first boot of the same kernel),
//! so that both VMMs boot the kernel alike, with or without the host workarounds.
//!
//! A boot counts only when it passes [`verdict::verdict`].

mod section;
mod verdict;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use kvmini_measure::runner::{self, Spec, Status};
use kvmini_measure::stats::median;
use kvmini_measure::table::{Align, Table};

use super::{ms, Context, Section, GUESTS};
use crate::host::{shown, Machine, Peer};
use crate::kvmini_stats::KvminiStats;
use crate::report::{Outcome, Row};
use verdict::{verdict, USERSPACE_LINE};

/// The initramfs every boot uses.
const INITRAMFS: &str = "guest/build/initramfs.cpio";
/// Guest memory, for kvmini and QEMU alike.
const MEM: &str = "128M";
/// The command `/init` runs.
const COMMAND: [&str; 2] = ["uname", "-r"];
/// The kernels booted: file name in `guest/build` and what its subjects' names add.
const KERNELS: [(&str, &str); 2] = [("vmlinux", " (PVH)"), ("bzImage", "")];

/// The files the Linux section needs, relative to the checkout.
pub fn inputs() -> Vec<PathBuf> {
    KERNELS
        .iter()
        .map(|(k, _)| Path::new(GUESTS).join(k))
        .chain([PathBuf::from(INITRAMFS)])
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Vmm {
    Kvmini,
    Qemu,
}

/// One boot, as the results file holds it.
#[derive(Debug, Serialize)]
struct Boot {
    round: usize,
    ok: bool,
    /// Why it does not count, if it does not.
    failure: Option<String>,
    /// How the process ended.
    status: String,
    launch_to_first_byte_s: Option<f64>,
    launch_to_userspace_line_s: Option<f64>,
    launch_to_exit_s: f64,
    peak_rss_mib: f64,
    /// The `uname -r` line.
    uname_r: Option<String>,
    /// kvmini's `--stats=json` report.
    kvmini_stats: Option<KvminiStats>,
}

impl Boot {
    fn stat(&self, f: fn(&KvminiStats) -> Option<f64>) -> Option<f64> {
        self.kvmini_stats.as_ref().and_then(f)
    }
}

/// A VMM booting one of the kernels.
struct Subject {
    name: String,
    vmm: Vmm,
    kernel: &'static str,
    program: String,
    /// For QEMU: empty until kvmini's command line is known.
    args: Vec<String>,
    /// Why it cannot run here, if it cannot.
    absent: Option<String>,
    /// Why it was not booted again, if it was not.
    stopped: Option<String>,
    boots: Vec<Boot>,
}

/// A subject in the results file.
#[derive(Serialize)]
struct SubjectResult<'a> {
    name: &'a str,
    vmm: Vmm,
    kernel: &'a str,
    command: String,
    status: &'static str,
    reason: Option<String>,
    boots_ok: usize,
    boots_failed: usize,
    boots: &'a [Boot],
}

impl Subject {
    fn kvmini(program: &str, kernel: &'static str, entry: &str) -> Self {
        let image = format!("{GUESTS}/{kernel}");
        let args = ["run", &image, "--initrd", INITRAMFS, "--mem", MEM]
            .into_iter()
            .chain(["--stats=json", "--"])
            .chain(COMMAND)
            .map(String::from)
            .collect();
        Subject {
            name: format!("kvmini {kernel}{entry}"),
            vmm: Vmm::Kvmini,
            kernel,
            program: program.into(),
            args,
            absent: None,
            stopped: None,
            boots: Vec::new(),
        }
    }

    fn qemu(kernel: &'static str, qemu: &Peer) -> Self {
        Subject {
            name: format!("QEMU microvm {kernel}"),
            vmm: Vmm::Qemu,
            kernel,
            program: qemu.program.clone(),
            args: Vec::new(),
            absent: qemu.absent.clone(),
            stopped: None,
            boots: Vec::new(),
        }
    }

    /// QEMU's arguments, booting this kernel with `cmdline`.
    fn qemu_args(&self, cmdline: &str) -> Vec<String> {
        let image = format!("{GUESTS}/{}", self.kernel);
        let machine = [
            "-M",
            "microvm,acpi=off",
            "-accel",
            "kvm",
            "-cpu",
            "host,-cx16,-arch-capabilities",
        ];
        let sizes = ["-m", MEM, "-smp", "1"];
        let plain = ["-nodefaults", "-no-user-config", "-display", "none"];
        let io = ["-serial", "stdio", "-no-reboot", "-device", "i8042"];
        let boot = ["-kernel", &image, "-initrd", INITRAMFS, "-append", cmdline];
        [&machine[..], &sizes, &plain, &io, &boot]
            .concat()
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn command(&self) -> String {
        if self.args.is_empty() {
            format!(
                "{} (kvmini's command line not known yet)",
                shown(&self.program, &[])
            )
        } else {
            shown(&self.program, &self.args)
        }
    }

    fn live(&self) -> bool {
        self.absent.is_none() && self.stopped.is_none()
    }

    fn good(&self) -> impl Iterator<Item = &Boot> {
        self.boots.iter().filter(|b| b.ok)
    }

    fn failed(&self) -> impl Iterator<Item = &Boot> {
        self.boots.iter().filter(|b| !b.ok)
    }

    /// The samples of its good boots.
    fn samples(&self, of: Of) -> Vec<f64> {
        self.good().filter_map(of).collect()
    }

    /// Boots it once as round `round`.
    fn boot(&mut self, round: usize, limit: Duration) -> &Boot {
        let mut spec = Spec::new(&self.program, &self.args);
        spec.timeout = limit;
        let boot = match runner::run(&spec, false) {
            Err(e) => {
                self.stopped = Some(e.to_string());
                Boot {
                    round,
                    ok: false,
                    failure: Some(e.to_string()),
                    status: "not started".into(),
                    launch_to_first_byte_s: None,
                    launch_to_userspace_line_s: None,
                    launch_to_exit_s: 0.0,
                    peak_rss_mib: 0.0,
                    uname_r: None,
                    kvmini_stats: None,
                }
            }
            Ok(run) => {
                let v = verdict(self.vmm == Vmm::Kvmini, &run);
                if run.status == Status::TimedOut {
                    self.stopped = Some(format!(
                        "round {round} hung for {} s; a hang would repeat",
                        limit.as_secs()
                    ));
                }
                let secs = |d: Duration| ms(d) / 1e3;
                Boot {
                    round,
                    ok: v.failure.is_none(),
                    failure: v.failure,
                    status: run.status.to_string(),
                    launch_to_first_byte_s: run.first_byte().map(secs),
                    launch_to_userspace_line_s: run.arrival_of(USERSPACE_LINE).map(secs),
                    launch_to_exit_s: secs(run.exit),
                    peak_rss_mib: run.maxrss_kib as f64 / 1024.0,
                    uname_r: v.release,
                    kvmini_stats: v.stats,
                }
            }
        };
        self.boots.push(boot);
        self.boots.last().expect("just pushed")
    }

    fn result(&self) -> SubjectResult<'_> {
        let failed = self.failed().next().is_some() || self.stopped.is_some();
        SubjectResult {
            name: &self.name,
            vmm: self.vmm,
            kernel: self.kernel,
            command: self.command(),
            status: if self.absent.is_some() {
                "not installed"
            } else if failed {
                "failed"
            } else {
                "measured"
            },
            reason: self.absent.clone().or_else(|| self.stopped.clone()),
            boots_ok: self.good().count(),
            boots_failed: self.failed().count(),
            boots: &self.boots,
        }
    }
}

/// A figure of a boot.
type Of = fn(&Boot) -> Option<f64>;

/// What every boot is timed for from outside.
const OUTSIDE: [(&str, &str, Of); 4] = [
    ("launch->first byte", "s", |b| b.launch_to_first_byte_s),
    ("launch->'user space up' line", "s", |b| {
        b.launch_to_userspace_line_s
    }),
    ("launch->exit", "s", |b| Some(b.launch_to_exit_s)),
    ("peak RSS", "MiB", |b| Some(b.peak_rss_mib)),
];

/// kvmini's own milestones (`--stats=json`, milliseconds from its `main`).
const INSIDE: [(&str, &str, Of); 4] = [
    ("kvmini: first KVM_RUN", "ms", |b| {
        b.stat(|s| s.first_run_ms)
    }),
    ("kvmini: first serial byte", "s", |b| {
        b.stat(|s| s.first_serial_byte_ms).map(|v| v / 1e3)
    }),
    ("kvmini: port 0x80 marker", "s", |b| {
        b.stat(|s| s.userspace_ms).map(|v| v / 1e3)
    }),
    ("kvmini: total", "s", |b| {
        b.stat(|s| Some(s.total_ms)).map(|v| v / 1e3)
    }),
];

/// The two medians compared, as shown.
#[derive(Clone, Debug, Serialize)]
struct Compared {
    what: String,
    shown: String,
}

/// The Linux section's results file.
#[derive(Serialize)]
pub struct Results<'a> {
    #[serde(flatten)]
    machine: &'a Machine,
    boots_per_subject: usize,
    boot_limit_s: u64,
    cmdline_by_kernel: BTreeMap<&'static str, String>,
    subjects: Vec<SubjectResult<'a>>,
    medians_compared: Vec<Compared>,
    rows: Vec<Row>,
    table: String,
}

/// The Linux section.
pub struct Linux {
    boots: usize,
    limit: Duration,
    round: usize,
    started: Instant,
    subjects: Vec<Subject>,
    /// The command line of kvmini's first boot of each kernel, which QEMU is given.
    cmdlines: Vec<(&'static str, String)>,
}
