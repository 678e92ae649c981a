//! What `--stats` prints: counts of each exit reason, unclaimed accesses, where the time went
//! (in the guest, in kvmini), and when the boot milestones happened.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::trace::ExitKind;

/// Per-vCPU exit counters, one per `KVM_EXIT_*` reason kvmini sees.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExitCounts {
    /// Port reads (`in`).
    pub io_in: u64,
    /// Port writes (`out`).
    pub io_out: u64,
    /// MMIO reads.
    pub mmio_read: u64,
    /// MMIO writes.
    pub mmio_write: u64,
    /// `hlt`.
    pub hlt: u64,
    /// Triple faults.
    pub shutdown: u64,
    /// Failed VM entries.
    pub fail_entry: u64,
    /// KVM internal errors (emulation failures among them).
    pub internal_error: u64,
    /// `KVM_RUN` interrupted by a signal (timeouts, kicks).
    pub interrupted: u64,
    /// System events (guest-requested shutdown or reset).
    pub system_event: u64,
    /// `KVM_EXIT_DEBUG`: single steps, breakpoints and watchpoints (`--gdb`).
    pub debug: u64,
    /// Any other exit.
    pub other: u64,
}

impl ExitCounts {
    /// All exits.
    pub fn total(&self) -> u64 {
        ExitKind::ALL.iter().map(|k| self.of(*k)).sum()
    }

    /// The count of one kind of exit.
    pub fn of(&self, kind: ExitKind) -> u64 {
        match kind {
            ExitKind::IoOut => self.io_out,
            ExitKind::IoIn => self.io_in,
            ExitKind::MmioWrite => self.mmio_write,
            ExitKind::MmioRead => self.mmio_read,
            ExitKind::Hlt => self.hlt,
            ExitKind::Shutdown => self.shutdown,
            ExitKind::FailEntry => self.fail_entry,
            ExitKind::InternalError => self.internal_error,
            ExitKind::Interrupted => self.interrupted,
            ExitKind::SystemEvent => self.system_event,
            ExitKind::Debug => self.debug,
            ExitKind::Other => self.other,
        }
    }

    fn named(&self) -> [(&'static str, u64); 12] {
        ExitKind::ALL.map(|k| (k.name(), self.of(k)))
    }
}

/// Accesses no device claimed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Unclaimed {
    /// Port reads (answered with all-ones).
    pub port_reads: u64,
    /// Port writes (dropped).
    pub port_writes: u64,
    /// MMIO reads (answered with all-ones under `--unclaimed-mmio ignore`).
    pub mmio_reads: u64,
    /// MMIO writes (dropped under `--unclaimed-mmio ignore`).
    pub mmio_writes: u64,
    /// The first few distinct unclaimed addresses ("r 0x70", "w 0xd0000000"), so that the
    /// counts above say where the guest looked.
    pub addresses: Vec<String>,
    /// The same, as (write, address), to tell new ones cheaply: most guests that touch an
    /// unclaimed address touch it again and again.
    #[serde(skip)]
    seen: Vec<(bool, u64)>,
}

/// How many distinct unclaimed addresses are kept.
const UNCLAIMED_ADDRESSES_KEPT: usize = 8;

impl Unclaimed {
    /// Notes an unclaimed access (the counter is the caller's).
    pub fn note(&mut self, write: bool, addr: u64) {
        if self.seen.len() < UNCLAIMED_ADDRESSES_KEPT && !self.seen.contains(&(write, addr)) {
            self.seen.push((write, addr));
            self.addresses
                .push(format!("{} {addr:#x}", if write { "w" } else { "r" }));
        }
    }
}

/// What one vCPU measured about itself.
#[derive(Clone, Debug, Default)]
pub struct VcpuStats {
    /// Exits by reason.
    pub exits: ExitCounts,
    /// Accesses no device claimed.
    pub unclaimed: Unclaimed,
    /// Time spent inside `KVM_RUN`.
    pub guest_time: Duration,
    /// Time spent in the run loop outside `KVM_RUN`.
    pub vmm_time: Duration,
    /// When `KVM_RUN` was first entered.
    pub first_run: Option<Instant>,
}

impl VcpuStats {
    /// Adds another vCPU's figures to these.
    pub fn merge(&mut self, o: &VcpuStats) {
        let (e, oe) = (&mut self.exits, &o.exits);
        e.io_in += oe.io_in;
        e.io_out += oe.io_out;
        e.mmio_read += oe.mmio_read;
        e.mmio_write += oe.mmio_write;
        e.hlt += oe.hlt;
        e.shutdown += oe.shutdown;
        e.fail_entry += oe.fail_entry;
        e.internal_error += oe.internal_error;
        e.interrupted += oe.interrupted;
        e.system_event += oe.system_event;
        e.debug += oe.debug;
        e.other += oe.other;
        let (u, ou) = (&mut self.unclaimed, &o.unclaimed);
        u.port_reads += ou.port_reads;
        u.port_writes += ou.port_writes;
        u.mmio_reads += ou.mmio_reads;
        u.mmio_writes += ou.mmio_writes;
        for &(write, addr) in &ou.seen {
            u.note(write, addr);
        }
        self.guest_time += o.guest_time;
        self.vmm_time += o.vmm_time;
        self.first_run = match (self.first_run, o.first_run) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Milliseconds, for reports.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The whole report. It reads back from its own JSON (`--stats=json`), fields that are
/// missing taking their defaults, so that tools can parse what kvmini printed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Why the VM stopped, in words.
    pub stop_reason: String,
    /// The process exit status kvmini uses for it.
    pub exit_status: i32,
    /// What was booted.
    pub image: String,
    /// Exits by reason.
    pub exits: ExitCounts,
    /// Sum of exits.
    pub exits_total: u64,
    /// Accesses no device claimed.
    pub unclaimed: Unclaimed,
    /// Bytes the guest wrote to the serial port.
    pub serial_bytes: u64,
    /// Milliseconds from `Vmm::new` ("start" below) to the VM being ready to run (memory,
    /// image, vCPU, devices).
    pub setup_ms: f64,
    /// Milliseconds inside `KVM_RUN`.
    pub guest_ms: f64,
    /// Milliseconds in kvmini's run loop outside `KVM_RUN`.
    pub vmm_ms: f64,
    /// Milliseconds from start to the end of the run.
    pub total_ms: f64,
    /// Milliseconds from start to the first `KVM_RUN`.
    pub first_run_ms: Option<f64>,
    /// Milliseconds from start to the first serial byte.
    pub first_serial_byte_ms: Option<f64>,
    /// Milliseconds from start to the guest's "user space is up" marker (0x60 on port 0x80).
    pub userspace_ms: Option<f64>,
    /// Number of vCPUs (exit counts and times are summed over them).
    pub vcpus: usize,
    /// The kernel command line, if any.
    pub cmdline: Option<String>,
    /// CPUID features hidden from the guest.
    pub hidden_cpu_features: Vec<String>,
    /// The snapshot this run saved, if it saved one.
    pub snapshot: Option<SnapshotStats>,
    /// The virtio devices, in the order the guest found them.
    pub devices: Vec<DeviceStats>,
    /// Milliseconds of CPU time the I/O thread used (with devices only).
    pub io_thread_cpu_ms: Option<f64>,
}

/// What one virtio device did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceStats {
    /// Its name (`virtio-blk`).
    pub name: String,
    /// Requests (descriptor chains) it answered.
    pub requests: u64,
    /// The first fault that made it ask the driver for a reset, if any.
    pub fault: Option<String>,
}

/// What saving a snapshot cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotStats {
    /// Milliseconds from the VM's stop to the snapshot in place.
    pub save_ms: f64,
    /// Bytes of guest memory written (the rest of the memory file is holes).
    pub memory_bytes: u64,
    /// Bytes of the state file.
    pub state_bytes: u64,
}

/// When things happened, relative to `start`.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    /// Start of the run: `Vmm::new`.
    pub start: Instant,
    /// VM ready to run.
    pub ready: Instant,
    /// First `KVM_RUN`.
    pub first_run: Option<Instant>,
    /// First serial byte.
    pub first_serial_byte: Option<Instant>,
    /// The guest's user-space marker.
    pub userspace: Option<Instant>,
    /// End of the run.
    pub end: Instant,
}

impl Stats {
    /// Assembles the report.
    pub fn new(
        stop_reason: String,
        exit_status: i32,
        image: String,
        vcpu: &VcpuStats,
        serial_bytes: u64,
        t: &Timeline,
    ) -> Self {
        let since = |i: Instant| ms(i.saturating_duration_since(t.start));
        Stats {
            stop_reason,
            exit_status,
            image,
            exits_total: vcpu.exits.total(),
            exits: vcpu.exits.clone(),
            unclaimed: vcpu.unclaimed.clone(),
            serial_bytes,
            setup_ms: since(t.ready),
            guest_ms: ms(vcpu.guest_time),
            vmm_ms: ms(vcpu.vmm_time),
            total_ms: since(t.end),
            first_run_ms: t.first_run.map(since),
            first_serial_byte_ms: t.first_serial_byte.map(since),
            userspace_ms: t.userspace.map(since),
            vcpus: 1,
            cmdline: None,
            hidden_cpu_features: Vec::new(),
            snapshot: None,
            devices: Vec::new(),
            io_thread_cpu_ms: None,
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kvmini stats")?;
        writeln!(
            f,
            "  stopped:   {} (exit status {})",
            self.stop_reason, self.exit_status
        )?;
        writeln!(f, "  image:     {}", self.image)?;
        if let Some(c) = &self.cmdline {
            writeln!(f, "  cmdline:   {c}")?;
        }
        if !self.hidden_cpu_features.is_empty() {
            writeln!(
                f,
                "  hidden:    CPUID {}",
                self.hidden_cpu_features.join(", ")
            )?;
        }
        if self.vcpus > 1 {
            writeln!(
                f,
                "  vcpus:     {} (counts and times summed over them)",
                self.vcpus
            )?;
        }
        let exits: Vec<String> = self
            .exits
            .named()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        writeln!(
            f,
            "  exits:     {} total: {}",
            self.exits_total,
            exits.join(", ")
        )?;
        let u = &self.unclaimed;
        writeln!(
            f,
            "  unclaimed: port reads {}, port writes {}, mmio reads {}, mmio writes {}{}",
            u.port_reads,
            u.port_writes,
            u.mmio_reads,
            u.mmio_writes,
            if u.addresses.is_empty() {
                String::new()
            } else {
                format!(" (at {})", u.addresses.join(", "))
            }
        )?;
        writeln!(f, "  serial:    {} bytes", self.serial_bytes)?;
        writeln!(
            f,
            "  time:      setup {:.3} ms, in guest {:.3} ms, in kvmini {:.3} ms, total wall {:.3} ms",
            self.setup_ms, self.guest_ms, self.vmm_ms, self.total_ms
        )?;
        let at = |t: Option<f64>| t.map_or("never".to_string(), |t| format!("{t:.3} ms"));
        write!(
            f,
            "  milestones: first vCPU run at {}, first serial byte at {}",
            at(self.first_run_ms),
            at(self.first_serial_byte_ms)
        )?;
        match self.userspace_ms {
            Some(t) => writeln!(f, ", user space up at {t:.3} ms")?,
            None => writeln!(f)?,
        }
        if let Some(s) = &self.snapshot {
            writeln!(
                f,
                "  snapshot:  saved in {:.3} ms: {} bytes of memory, {} bytes of state",
                s.save_ms, s.memory_bytes, s.state_bytes
            )?;
        }
        if !self.devices.is_empty() {
            let devices: Vec<String> = self
                .devices
                .iter()
                .map(|d| match &d.fault {
                    Some(fault) => format!("{} {} requests (fault: {fault})", d.name, d.requests),
                    None => format!("{} {} requests", d.name, d.requests),
                })
                .collect();
            write!(f, "  devices:   {}", devices.join(", "))?;
            match self.io_thread_cpu_ms {
                Some(ms) => writeln!(f, "; I/O thread CPU {ms:.3} ms")?,
                None => writeln!(f)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        let start = Instant::now();
        let vcpu = VcpuStats {
            exits: ExitCounts {
                io_out: 21,
                io_in: 20,
                ..Default::default()
            },
            unclaimed: Unclaimed {
                port_writes: 2,
                addresses: vec!["w 0x70".into()],
                ..Default::default()
            },
            guest_time: Duration::from_micros(300),
            vmm_time: Duration::from_micros(100),
            first_run: None,
        };
        let t = Timeline {
            start,
            ready: start + Duration::from_millis(1),
            first_run: Some(start + Duration::from_millis(1)),
            first_serial_byte: None,
            userspace: None,
            end: start + Duration::from_millis(2),
        };
        Stats::new(
            "guest exit 64".into(),
            64,
            "raw image, long mode".into(),
            &vcpu,
            21,
            &t,
        )
    }

    #[test]
    fn text_report_lists_exits_time_and_milestones() {
        let text = sample().to_string();
        assert!(
            text.contains("exits:     41 total: io-out 21, io-in 20\n"),
            "{text}"
        );
        assert!(
            text.contains("port writes 2, mmio reads 0, mmio writes 0 (at w 0x70)"),
            "{text}"
        );
        assert!(text.contains("in guest 0.300 ms, in kvmini 0.100 ms, total wall 2.000 ms"));
        assert!(text.contains("first serial byte at never"));
    }

    #[test]
    fn json_report_reads_back() {
        let text = serde_json::to_string(&sample()).unwrap();
        let back: Stats = serde_json::from_str(&text).unwrap();
        assert_eq!(back.exits, sample().exits);
        assert_eq!(back.total_ms, sample().total_ms);
        let partial: Stats =
            serde_json::from_str(r#"{"exit_status":3,"userspace_ms":1.5}"#).unwrap();
        assert_eq!((partial.exit_status, partial.userspace_ms), (3, Some(1.5)));
        assert_eq!(partial.first_run_ms, None);
    }

    #[test]
    fn json_report_has_every_field() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["exit_status"], 64);
        assert_eq!(v["exits"]["io_out"], 21);
        assert_eq!(v["exits_total"], 41);
        assert_eq!(v["unclaimed"]["port_writes"], 2);
        assert!(v["first_serial_byte_ms"].is_null());
        assert!(v["total_ms"].as_f64().unwrap() >= 2.0);
    }
}
