//! The devices section (`--devices N`, run alone): the Linux guest with a scratch disk under
//! kvmini and under QEMU's microvm with its virtio-mmio block device, the same kernel and
//! initramfs, N rounds, kvmini then QEMU in each. The guest runs `blkbench` (guest/linux/
//! initramfs/blkbench.c): with direct I/O, a sequential read and a sequential write of
//! [`SEQ_MIB`] MiB in 1 MiB requests, then [`RANDOM_READS`] reads of 4 KiB at random
//! places, each timed by the guest's own clock.
//!
//! In the same boot the guest then sends [`VSOCK_BYTES`] to the host over vsock (kvmini
//! only: QEMU's vsock needs the host's vhost-vsock) and, when the section could make a network
//! namespace with a TAP (as root), [`TCP_BYTES`] over TCP through virtio-net; the host's
//! receivers time each from the connection to the end of the data.
//!
//! QEMU gets the kernel parameters kvmini used (from kvmini's first run's `--stats=json`)
//! with its own devices in place of kvmini's, and its disk with its default cache mode
//! (writeback, through the host's page cache, as kvmini reads and writes). kvmini's runs also
//! give the CPU time its I/O thread used per request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use kvmini_measure::runner::{self, Spec, Status};

use super::devices_net::{
    self, Netns, Received, GUEST_ADDR, HOST_ADDR, NETNS, TAP, TCP_BYTES, TCP_PORT, VSOCK_BYTES,
    VSOCK_PORT,
};
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
/// Where QEMU's microvm puts its first two virtio-mmio devices (from its last slot down)
/// and their lines.
const QEMU_DEVICES: [&str; 2] = [
    "virtio_mmio.device=512@0xfeb00e00:12",
    "virtio_mmio.device=512@0xfeb00c00:11",
];
/// kvmini's vsock socket.
const VSOCK_UDS: &str = "bench/build/devices-vsock.sock";

/// KiB the guest sends over vsock and over TCP, for the header.
pub const VSOCK_KIB: u64 = VSOCK_BYTES >> 10;
/// KiB over TCP.
pub const TCP_KIB: u64 = TCP_BYTES >> 10;

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
    /// Guest to host over vsock (kvmini only).
    vsock_mb_s: Option<f64>,
    /// Guest to host over TCP (with the network namespace).
    tcp_mb_s: Option<f64>,
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

/// The guest's command: the disk benchmark, then the transfers the subject has. Programs run
/// one at a time, fed from files: busybox processes side by side sometimes die of a
/// segmentation fault in the guest on a software-virtualized host.
fn guest_command(vsock: bool, net: bool) -> [String; 3] {
    let b = "/bin/busybox";
    let mut script = format!("blkbench /dev/vda {SEQ_MIB} {RANDOM_READS}");
    if vsock {
        script += &format!(
            " && {b} head -c {VSOCK_BYTES} /dev/zero >/tmp/v \
             && vsock connect 2 {VSOCK_PORT} </tmp/v >/dev/null"
        );
    }
    if net {
        script += &format!(
            " && {b} ifconfig eth0 {GUEST_ADDR} netmask 255.255.255.0 up \
             && {b} head -c {TCP_BYTES} /dev/zero >/tmp/t \
             && {b} nc {HOST_ADDR} {TCP_PORT} </tmp/t"
        );
    }
    ["sh".into(), "-c".into(), script]
}

impl Subject {
    /// The program and its arguments; QEMU's need kvmini's command line (`cmdline`). With
    /// the namespace, both run inside it (`ip netns exec`).
    fn command(&self, cmdline: Option<&str>, net: bool) -> Option<(String, Vec<String>)> {
        let disk = self.disk.display().to_string();
        let image = format!("{GUESTS}/{KERNEL}");
        let vsock = self.vmm == Vmm::Kvmini;
        let init = guest_command(vsock, net);
        let mut args: Vec<String> = match self.vmm {
            Vmm::Kvmini => {
                let mut a: Vec<String> = ["run", &image, "--initrd", INITRAMFS, "--mem", MEM]
                    .into_iter()
                    .chain(["--disk", &disk, "--stats=json"])
                    .map(String::from)
                    .collect();
                a.extend(["--vsock".into(), format!("cid=3,uds={VSOCK_UDS}")]);
                if net {
                    a.extend(["--net".into(), format!("tap={TAP}")]);
                }
                a.push("--".into());
                a.extend(init);
                a
            }
            Vmm::Qemu => qemu_args(&image, &disk, &qemu_cmdline(cmdline?, net, &init), net),
        };
        let mut program = self.program.clone();
        if net {
            let mut wrapped: Vec<String> = ["netns", "exec", NETNS]
                .into_iter()
                .map(String::from)
                .collect();
            wrapped.push(program);
            wrapped.append(&mut args);
            (program, args) = ("ip".into(), wrapped);
        }
        Some((program, args))
    }

    fn live(&self) -> bool {
        self.absent.is_none() && self.stopped.is_none()
    }

    fn good(&self) -> impl Iterator<Item = &Figures> {
        self.runs.iter().filter_map(|r| r.figures.as_ref())
    }

    fn run(
        &mut self,
        round: usize,
        (program, args): (String, Vec<String>),
        limit: Duration,
        net: bool,
    ) -> Option<KvminiStats> {
        if let Err(e) = make_disk(&self.disk) {
            self.stopped = Some(format!("cannot make {}: {e}", self.disk.display()));
            return None;
        }
        let receivers = match self.receivers(net, limit) {
            Ok(r) => r,
            Err(e) => {
                self.stopped = Some(format!("cannot start the host's receivers: {e}"));
                return None;
            }
        };
        let mut spec = Spec::new(&program, &args);
        spec.timeout = limit;
        let (figures, failure, stats) = match runner::run(&spec, false) {
            Err(e) => {
                self.stopped = Some(e.to_string());
                (None, Some(e.to_string()), None)
            }
            Ok(run) => {
                let stats = kvmini_stats::from_stderr(&run.stderr_text());
                let [vsock, tcp] = receivers.map(|r| r.map(devices_net::Receiver::finish));
                let parsed = parse(&run.stdout_text()).and_then(|mut f| {
                    f.vsock_mb_s = transfer("vsock", vsock, VSOCK_BYTES)?;
                    f.tcp_mb_s = transfer("TCP", tcp, TCP_BYTES)?;
                    Ok(f)
                });
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

impl Subject {
    /// The host's ends of the transfers this subject's guest makes: vsock, TCP.
    fn receivers(
        &self,
        net: bool,
        limit: Duration,
    ) -> std::io::Result<[Option<devices_net::Receiver>; 2]> {
        let vsock = match self.vmm {
            Vmm::Kvmini => Some(devices_net::vsock_receiver(Path::new(VSOCK_UDS), limit)?),
            Vmm::Qemu => None,
        };
        let tcp = match net {
            true => Some(devices_net::tcp_receiver(limit)?),
            false => None,
        };
        Ok([vsock, tcp])
    }
}

/// The rate of a transfer that was expected (`Some`): every byte must have come.
fn transfer(what: &str, got: Option<Option<Received>>, bytes: u64) -> Result<Option<f64>, String> {
    match got {
        None => Ok(None),
        Some(Some(r)) if r.bytes == bytes => Ok(Some(r.mb_s())),
        Some(Some(r)) => Err(format!("{what}: {} of {bytes} bytes arrived", r.bytes)),
        Some(None) => Err(format!("{what}: no connection from the guest")),
    }
}

/// QEMU's arguments: the same machine, disk and (with `net`) network device as kvmini's.
fn qemu_args(image: &str, disk: &str, append: &str, net: bool) -> Vec<String> {
    let drive = format!("id=d0,file={disk},format=raw,if=none");
    let mut args: Vec<String> = [
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
        image,
        "-initrd",
        INITRAMFS,
        "-append",
        append,
        "-drive",
        &drive,
        "-device",
        "virtio-blk-device,drive=d0",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if net {
        args.extend(
            [
                "-netdev",
                &format!("tap,id=n0,ifname={TAP},script=no,downscript=no"),
                "-device",
                "virtio-net-device,netdev=n0",
            ]
            .map(String::from),
        );
    }
    args
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

/// kvmini's kernel parameters with QEMU's devices in place of kvmini's (its words before
/// ` -- ` without `virtio_mmio.device=`), then ` -- ` and `init`, quoted as kvmini quotes.
fn qemu_cmdline(kvmini: &str, net: bool, init: &[String]) -> String {
    let kernel = kvmini.split_once(" -- ").map_or(kvmini, |(k, _)| k);
    let mut words: Vec<String> = kernel
        .split_whitespace()
        .filter(|w| !w.starts_with("virtio_mmio.device="))
        .map(String::from)
        .collect();
    words.extend(
        QEMU_DEVICES[..1 + usize::from(net)]
            .iter()
            .map(|d| d.to_string()),
    );
    words.push("--".into());
    words.extend(init.iter().map(|w| match w.contains(' ') {
        true => format!("\"{w}\""),
        false => w.clone(),
    }));
    words.join(" ")
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
    /// The namespace with the TAP, or why there is none (then no TCP transfer).
    netns: Result<Netns, String>,
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
            netns: Netns::create(),
        }
    }

    /// Why there is no TCP transfer, if there is none.
    pub fn no_network(&self) -> Option<&str> {
        self.netns.as_ref().err().map(String::as_str)
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
            "vsock_bytes": VSOCK_BYTES,
            "tcp_bytes": TCP_BYTES,
            "no_network": self.no_network(),
            "subjects": subjects,
        })
    }
}

/// A figure of a run: name, unit, how to get it.
type Of = (&'static str, &'static str, fn(&Figures) -> Option<f64>);

const FIGURES: [Of; 7] = [
    ("sequential read, direct, 1 MiB", "MB/s", |f| {
        Some(f.seq_read_mb_s)
    }),
    ("sequential write, direct, 1 MiB", "MB/s", |f| {
        Some(f.seq_write_mb_s)
    }),
    ("random read, direct, 4 KiB", "req/s", |f| {
        Some(f.rand_read_per_s)
    }),
    ("vsock guest->host", "MB/s", |f| f.vsock_mb_s),
    ("TCP guest->host (virtio-net)", "MB/s", |f| f.tcp_mb_s),
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
                let line = match s.command(self.cmdline.as_deref(), self.netns.is_ok()) {
                    Some((program, args)) => shown(&program, &args),
                    None => format!(
                        "{} (kvmini's command line, then its own devices)",
                        s.program
                    ),
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
            let net = self.netns.is_ok();
            let Some(command) = self.subjects[i].command(self.cmdline.as_deref(), net) else {
                self.subjects[i].stopped = Some("kvmini gave no command line to copy".into());
                continue;
            };
            let stats = self.subjects[i].run(round, command, self.limit, net);
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
                let unavailable = match what {
                    w if w.starts_with("vsock") && s.vmm == Vmm::Qemu => {
                        Some("needs vhost-vsock on the host (/dev/vhost-vsock)".to_string())
                    }
                    w if w.starts_with("TCP") => self.no_network().map(str::to_string),
                    _ => None,
                };
                let outcome = match (s.absent.as_ref().or(unavailable.as_ref()), &s.stopped) {
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
#[path = "devices_tests.rs"]
mod tests;
