//! The devices section (`--devices N`, run alone): the Linux guest with a scratch disk under
//! kvmini and under QEMU's microvm with its virtio-mmio block device, the same kernel and
//! initramfs, N rounds, kvmini then QEMU in each. The guest runs `blkbench` (guest/linux/
//! initramfs/blkbench.c): with direct I/O, a sequential read and a sequential write of
//! [`SEQ_MIB`] MiB in 1 MiB requests, then [`RANDOM_READS`] reads of 4 KiB at random
//! places, each timed by the guest's own clock.
//!
//! QEMU gets the command line kvmini used (from kvmini's first run's `--stats=json`) with its
//! own device in place of kvmini's, and its disk with its default cache mode (writeback,
//! through the host's page cache, as kvmini reads and writes). kvmini's runs also give the
//! CPU time its I/O thread used per request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use kvmini_measure::runner::{self, Spec, Status};

use super::{Context, Section, GUESTS};
use crate::host::{shown, Peer};
use crate::kvmini_stats::{self, KvminiStats};
use crate::report::{Outcome, Row};

/// The initramfs every run uses (it has /bin/blkbench).
const INITRAMFS: &str = "guest/build/initramfs.cpio";
/// The kernel.
const KERNEL: &str = "vmlinux";
/// Guest memory, for both.
const MEM: &str = "128M";
/// Size of each scratch disk.
const DISK_MIB: u64 = 16;
/// MiB read and written sequentially.
pub const SEQ_MIB: u32 = 4;
/// 4 KiB reads at random places.
pub const RANDOM_READS: u32 = 200;
/// Where QEMU's microvm puts its first virtio-mmio device (its last slot) and its line.
const QEMU_DEVICE: &str = "virtio_mmio.device=512@0xfeb00e00:12";

/// The files the section needs, relative to the checkout.
pub fn inputs() -> Vec<PathBuf> {
    vec![Path::new(GUESTS).join(KERNEL), PathBuf::from(INITRAMFS)]
}

/// What one run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    seq_read_mb_s: f64,
    seq_write_mb_s: f64,
    rand_read_per_s: f64,
    /// kvmini only: I/O thread CPU time over the requests its devices answered, µs.
    io_cpu_us_per_request: Option<f64>,
    launch_to_exit_s: f64,
}

/// One run, as the results file holds it.
#[derive(Debug, Serialize)]
struct DeviceRun {
    round: usize,
    figures: Option<Figures>,
    failure: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Vmm {
    Kvmini,
    Qemu,
}

/// A VMM running the disk benchmark.
struct Subject {
    name: &'static str,
    vmm: Vmm,
    program: String,
    disk: PathBuf,
    absent: Option<String>,
    stopped: Option<String>,
    runs: Vec<DeviceRun>,
}

/// The guest's command.
fn guest_command() -> [String; 4] {
    [
        "blkbench".into(),
        "/dev/vda".into(),
        SEQ_MIB.to_string(),
        RANDOM_READS.to_string(),
    ]
}

impl Subject {
    fn args(&self, cmdline: Option<&str>) -> Option<Vec<String>> {
        let disk = self.disk.display().to_string();
        let image = format!("{GUESTS}/{KERNEL}");
        let args: Vec<String> = match self.vmm {
            Vmm::Kvmini => ["run", &image, "--initrd", INITRAMFS, "--mem", MEM]
                .into_iter()
                .chain(["--disk", &disk, "--stats=json", "--"])
                .map(String::from)
                .chain(guest_command())
                .collect(),
            Vmm::Qemu => {
                let append = qemu_cmdline(cmdline?);
                let drive = format!("id=d0,file={disk},format=raw,if=none");
                [
                    "-M",
                    "microvm,acpi=off,auto-kernel-cmdline=off",
                    "-accel",
                    "kvm",
                    "-cpu",
                    "host,-cx16,-arch-capabilities",
                    "-m",
                    MEM,
                    "-smp",
                    "1",
                    "-nodefaults",
                    "-no-user-config",
                    "-display",
                    "none",
                    "-serial",
                    "stdio",
                    "-no-reboot",
                    "-device",
                    "i8042",
                    "-kernel",
                    &image,
                    "-initrd",
                    INITRAMFS,
                    "-append",
                    &append,
                    "-drive",
                    &drive,
                    "-device",
                    "virtio-blk-device,drive=d0",
                ]
                .into_iter()
                .map(String::from)
                .collect()
            }
        };
        Some(args)
    }

    fn live(&self) -> bool {
        self.absent.is_none() && self.stopped.is_none()
    }

    fn good(&self) -> impl Iterator<Item = &Figures> {
        self.runs.iter().filter_map(|r| r.figures.as_ref())
    }

    fn run(&mut self, round: usize, args: Vec<String>, limit: Duration) -> Option<KvminiStats> {
        if let Err(e) = make_disk(&self.disk) {
            self.stopped = Some(format!("cannot make {}: {e}", self.disk.display()));
            return None;
        }
        let mut spec = Spec::new(&self.program, &args);
        spec.timeout = limit;
        let (figures, failure, stats) = match runner::run(&spec, false) {
            Err(e) => {
                self.stopped = Some(e.to_string());
                (None, Some(e.to_string()), None)
            }
            Ok(run) => {
                let stats = kvmini_stats::from_stderr(&run.stderr_text());
                let parsed = parse(&run.stdout_text());
                let failure = match (&run.status, &parsed) {
                    (Status::Code(0), Ok(_)) => None,
                    (Status::TimedOut, _) => {
                        self.stopped = Some(format!("round {round} hung"));
                        Some("hung".into())
                    }
                    (status, Err(why)) => Some(format!("{status}: {why}")),
                    (status, Ok(_)) => Some(format!("{status}")),
                };
                let figures = parsed.ok().filter(|_| failure.is_none()).map(|mut f| {
                    f.launch_to_exit_s = run.exit.as_secs_f64();
                    f.io_cpu_us_per_request = stats.as_ref().and_then(io_cpu_per_request);
                    f
                });
                (figures, failure, stats)
            }
        };
        self.runs.push(DeviceRun {
            round,
            figures,
            failure,
        });
        stats
    }
}

/// A fresh scratch disk of [`DISK_MIB`] MiB (sparse).
fn make_disk(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path)?;
    file.set_len(DISK_MIB << 20)
}

/// I/O thread CPU time over every request kvmini's devices answered, µs.
fn io_cpu_per_request(stats: &KvminiStats) -> Option<f64> {
    let requests: u64 = stats.devices.iter().map(|d| d.requests).sum();
    let cpu_ms = stats.io_thread_cpu_ms?;
    (requests > 0).then(|| cpu_ms * 1e3 / requests as f64)
}

/// kvmini's command line with QEMU's device in place of kvmini's: its words before ` -- `
/// without `virtio_mmio.device=` and `root=`, QEMU's device, then init's arguments.
fn qemu_cmdline(kvmini: &str) -> String {
    let (kernel, init) = match kvmini.split_once(" -- ") {
        Some((k, i)) => (k, i),
        None => (kvmini, ""),
    };
    let mut words: Vec<&str> = kernel
        .split_whitespace()
        .filter(|w| !w.starts_with("virtio_mmio.device=") && !w.starts_with("root="))
        .collect();
    words.push(QEMU_DEVICE);
    let mut line = words.join(" ");
    if !init.is_empty() {
        line = format!("{line} -- {init}");
    }
    line
}

/// The three `blkbench:` lines.
fn parse(stdout: &str) -> Result<Figures, String> {
    let find = |name: &str| -> Result<(f64, f64), String> {
        let prefix = format!("blkbench: {name} ");
        let line = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
            .ok_or(format!("no '{prefix}' line"))?;
        let mut nums = line.split_whitespace().map(str::parse::<f64>);
        match (nums.next(), nums.next()) {
            (Some(Ok(a)), Some(Ok(ns))) if ns > 0.0 => Ok((a, ns)),
            _ => Err(format!("bad line '{prefix}{line}'")),
        }
    };
    let (read_bytes, read_ns) = find("seq-read")?;
    let (write_bytes, write_ns) = find("seq-write")?;
    let (reads, rand_ns) = find("rand-read")?;
    Ok(Figures {
        seq_read_mb_s: read_bytes / read_ns * 1e3,
        seq_write_mb_s: write_bytes / write_ns * 1e3,
        rand_read_per_s: reads / rand_ns * 1e9,
        ..Figures::default()
    })
}

/// The section.
pub struct Devices {
    limit: Duration,
    round: usize,
    subjects: Vec<Subject>,
    /// kvmini's command line, from its first run, which QEMU is given.
    cmdline: Option<String>,
}

impl Devices {
    /// kvmini and QEMU (`qemu`), each run to the hang limit `limit`.
    pub fn new(cx: &Context, limit: Duration, qemu: &Peer) -> Self {
        let subject = |name, vmm, program: String, absent| Subject {
            name,
            vmm,
            program,
            disk: PathBuf::from(format!("bench/build/devices-{name}.img")),
            absent,
            stopped: None,
            runs: Vec::new(),
        };
        Devices {
            limit,
            round: 0,
            subjects: vec![
                subject("kvmini", Vmm::Kvmini, cx.kvmini(), None),
                subject(
                    "qemu-microvm",
                    Vmm::Qemu,
                    qemu.program.clone(),
                    qemu.absent.clone(),
                ),
            ],
            cmdline: None,
        }
    }

    /// The results, for the results file.
    pub fn results(&self) -> serde_json::Value {
        let subjects: Vec<_> = self
            .subjects
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "vmm": s.vmm,
                    "absent": s.absent,
                    "stopped": s.stopped,
                    "runs": s.runs,
                })
            })
            .collect();
        serde_json::json!({
            "seq_mib": SEQ_MIB,
            "random_reads": RANDOM_READS,
            "kvmini_cmdline": self.cmdline,
            "subjects": subjects,
        })
    }
}

/// A figure of a run: name, unit, how to get it.
type Of = (&'static str, &'static str, fn(&Figures) -> Option<f64>);

const FIGURES: [Of; 5] = [
    ("sequential read, direct, 1 MiB", "MB/s", |f| {
        Some(f.seq_read_mb_s)
    }),
    ("sequential write, direct, 1 MiB", "MB/s", |f| {
        Some(f.seq_write_mb_s)
    }),
    ("random read, direct, 4 KiB", "req/s", |f| {
        Some(f.rand_read_per_s)
    }),
    ("I/O thread CPU per request", "us", |f| {
        f.io_cpu_us_per_request
    }),
    ("launch->exit (boot and benchmark)", "s", |f| {
        Some(f.launch_to_exit_s)
    }),
];

impl Section for Devices {
    fn commands(&self) -> Vec<(String, String)> {
        self.subjects
            .iter()
            .map(|s| {
                let args = s.args(self.cmdline.as_deref());
                let line = match args {
                    Some(a) => shown(&s.program, &a),
                    None => format!("{} (kvmini's command line, then its own device)", s.program),
                };
                (s.name.to_string(), line)
            })
            .collect()
    }

    fn measure(&mut self, _keep: bool) {
        let round = self.round;
        self.round += 1;
        for i in 0..self.subjects.len() {
            if !self.subjects[i].live() {
                continue;
            }
            let Some(args) = self.subjects[i].args(self.cmdline.as_deref()) else {
                self.subjects[i].stopped = Some("kvmini gave no command line to copy".into());
                continue;
            };
            let stats = self.subjects[i].run(round, args, self.limit);
            if self.cmdline.is_none() {
                self.cmdline = stats.and_then(|s| s.cmdline);
            }
        }
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for s in &self.subjects {
            for (what, unit, of) in FIGURES {
                let samples: Vec<f64> = s.good().filter_map(of).collect();
                if s.vmm == Vmm::Qemu && what.starts_with("I/O thread") {
                    continue;
                }
                let outcome = match (&s.absent, &s.stopped) {
                    (Some(why), _) => Outcome::NotInstalled {
                        reason: why.clone(),
                    },
                    (None, Some(why)) if samples.is_empty() => Outcome::Failed {
                        reason: why.clone(),
                    },
                    _ => Outcome::measured(&samples),
                };
                rows.push(Row::new(s.name, what, unit, "").with(outcome));
            }
        }
        rows
    }

    fn failures(&self) -> Vec<String> {
        self.subjects
            .iter()
            .flat_map(|s| {
                s.runs
                    .iter()
                    .filter_map(move |r| r.failure.as_ref().map(|f| (s.name, r.round, f)))
            })
            .map(|(name, round, f)| format!("{name}, round {round}: {f}"))
            .collect()
    }

    fn fatal(&self) -> bool {
        self.subjects
            .iter()
            .any(|s| s.vmm == Vmm::Kvmini && s.runs.iter().any(|r| r.failure.is_some()))
    }
}

/// Median of kvmini over QEMU for figure `what`, when both have one.
pub fn ratio(rows: &[Row], what: &str) -> Option<f64> {
    let m = |subject: &str| {
        rows.iter()
            .find(|r| r.subject == subject && r.measurement == what)
            .and_then(|r| match &r.outcome {
                Outcome::Measured(s) if s.n > 0 => Some(s.p50),
                _ => None,
            })
    };
    Some(m("kvmini")? / m("qemu-microvm")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkbench_lines_become_rates() {
        let out = "boot...\nblkbench: seq-read 4194304 2097152000\r\n\
                   blkbench: seq-write 4194304 4194304000\nblkbench: rand-read 200 10000000000\n";
        let f = parse(out).unwrap();
        assert!((f.seq_read_mb_s - 2.0).abs() < 1e-9);
        assert!((f.seq_write_mb_s - 1.0).abs() < 1e-9);
        assert!((f.rand_read_per_s - 20.0).abs() < 1e-9);
        assert!(parse("blkbench: seq-read 1 0\n").is_err());
        assert!(parse("nothing").unwrap_err().contains("seq-read"));
    }

    #[test]
    fn qemu_gets_kvmini_command_line_with_its_own_device() {
        let kvmini = "console=ttyS0 noxsave virtio_mmio.device=4K@0xd0000000:5 root=/dev/vda rw \
                      -- blkbench /dev/vda 4 200";
        assert_eq!(
            qemu_cmdline(kvmini),
            format!("console=ttyS0 noxsave rw {QEMU_DEVICE} -- blkbench /dev/vda 4 200")
        );
    }
}
