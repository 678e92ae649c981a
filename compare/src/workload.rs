//! The workloads: each a named pair of the same job done in a container and in a VM, plus the
//! same program as a plain host process (the baseline, with no isolation at all).

use std::time::Duration;

use serde::Serialize;

use kvmini_measure::runner::Marker;

/// Where a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// In a container, through an OCI runtime's command line.
    Container,
    /// In a kvmini VM, through `kvmini run`.
    Vm,
    /// In a kvmini VM resumed from a snapshot, through `kvmini restore` (`linux` only).
    Snapshot,
    /// The same OCI bundle as the container, through `kvmini oci` (the `kvmini-runtime`
    /// program): a VM restored from the guest's OCI snapshot (`oci` only).
    #[serde(rename = "kvmini-oci")]
    KvminiOci,
    /// As a plain process on the host.
    Baseline,
}

impl Side {
    /// The sides of the workloads that have no snapshot.
    pub const COLD: [Side; 3] = [Side::Container, Side::Vm, Side::Baseline];
    /// The sides of `linux`, in the order each round runs them.
    pub const LINUX: [Side; 4] = [Side::Container, Side::Vm, Side::Snapshot, Side::Baseline];
    /// The sides of `oci`: one bundle, two runtimes.
    pub const OCI: [Side; 2] = [Side::Container, Side::KvminiOci];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Side::Container => "container",
            Side::Vm => "vm",
            Side::Snapshot => "snapshot",
            Side::KvminiOci => "kvmini-oci",
            Side::Baseline => "baseline",
        }
    }
}

/// A workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Start, print one line, exit.
    Hello,
    /// The same CPU-bound loop on every side.
    Compute,
    /// A full Linux user space running one command.
    Linux,
    /// The same OCI bundle under the container runtime and under `kvmini oci`.
    Oci,
}

/// The command the `linux` workload runs (it prints `hello`). busybox by name, found on
/// `PATH`, so it runs whichever applet links the initramfs has.
pub const LINUX_COMMAND: [&str; 3] = ["busybox", "echo", "hello"];
/// What the isolation probe runs through busybox `sh -c`: the kernel release, the PID and the
/// number of CPUs the workload sees (`uname -r`, `$$`, `nproc`), each on a line of its own
/// with a name, so that a kernel message on a VM's console cannot be taken for one. (No
/// double quotes: the kernel cannot pass them to a VM's init.)
pub const PROBE_SCRIPT: &str = "echo kernel=$(uname -r); echo pid=$$; echo cpus=$(nproc)";
/// The Linux guest saved ready for work (`make snapshot`), in the guest directory.
pub const LINUX_SNAPSHOT: &str = "linux-snapshot";
/// Guest memory of the `linux` VM.
pub const LINUX_VM_MEM: &str = "128M";
/// Most runs of `linux` per side: a boot is slow where guest ring 0 is emulated.
pub const LINUX_MAX_RUNS: usize = 3;
/// Most runs per side whose memory is sampled (separate from the timed runs).
pub const MEMORY_RUNS: usize = 5;
/// Most instances of `linux` started at once, for the same reason.
pub const LINUX_MAX_PARALLEL: usize = 2;
/// Most runs of `oci` per side: each `kvmini oci` container is a VM whose guest kernel
/// mounts the root and starts the process, seconds where guest ring 0 is emulated.
pub const OCI_MAX_RUNS: usize = 3;
/// Most instances of `oci` started at once, for the same reason.
pub const OCI_MAX_PARALLEL: usize = 2;
/// The program beside kvmini that `kvmini oci` runs: the OCI runtime.
pub const OCI_RUNTIME: &str = "kvmini-runtime";
/// The guest's OCI snapshot (`make oci-snapshot`), in the guest directory: every
/// `kvmini oci` container of the comparison is a restore of it.
pub const OCI_SNAPSHOT: &str = "oci-snapshot";

impl Workload {
    /// Every workload, in the order they run and are reported.
    pub const ALL: [Workload; 4] = [
        Workload::Hello,
        Workload::Compute,
        Workload::Linux,
        Workload::Oci,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Hello => "hello",
            Workload::Compute => "compute",
            Workload::Linux => "linux",
            Workload::Oci => "oci",
        }
    }

    /// The workload called `name`.
    pub fn parse(name: &str) -> Option<Workload> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Its sides, in the order each round runs them: only `linux` has one from a snapshot,
    /// only `oci` runs one bundle under two runtimes (and has no baseline: a host process
    /// runs no bundle).
    pub fn sides(self) -> &'static [Side] {
        match self {
            Workload::Linux => &Side::LINUX,
            Workload::Oci => &Side::OCI,
            Workload::Hello | Workload::Compute => &Side::COLD,
        }
    }

    /// What each side runs, in words.
    pub fn description(self) -> &'static str {
        match self {
            Workload::Hello => {
                "start, print one line, exit: busybox `echo hello` in a container (a rootfs of \
                 Debian's static busybox) vs the tiny guest kernel hello.elf in a VM"
            }
            Workload::Compute => {
                "the same checksum loop (one object file, guest/compute/checksum.c): a static \
                 Linux program in a container vs a guest that runs it in ring 3 (compute.bin)"
            }
            Workload::Linux => {
                "a full Linux user space running `busybox echo hello`: the busybox initramfs as \
                 a container's rootfs vs kvmini booting guest/build/vmlinux with that initramfs, \
                 and vs kvmini restoring guest/build/linux-snapshot (that guest saved ready \
                 for work by `make snapshot`)"
            }
            Workload::Oci => {
                "the same OCI bundle (busybox `echo hello` on a rootfs of Debian's static \
                 busybox, or the bundle given with --bundle) run by the container runtime and \
                 by kvmini oci (kvmini-runtime), whose container is a VM restored from \
                 guest/build/oci-snapshot with the Linux guest's kernel"
            }
        }
    }

    /// The first line of the workload's own output on `side`.
    pub fn marker(self, side: Side) -> Marker {
        match (self, side) {
            (Workload::Hello, Side::Vm) => Marker::Prefix("Hello from"),
            (Workload::Hello | Workload::Linux | Workload::Oci, _) => Marker::Line("hello"),
            (Workload::Compute, _) => Marker::Prefix("checksum="),
        }
    }

    /// Timed runs per side when `runs` were asked for.
    pub fn runs(self, runs: usize) -> usize {
        match self {
            Workload::Linux => runs.min(LINUX_MAX_RUNS),
            Workload::Oci => runs.min(OCI_MAX_RUNS),
            Workload::Hello | Workload::Compute => runs,
        }
    }

    /// Runs of `side` whose memory is sampled when `runs` timed runs were asked for (one Linux
    /// boot; more of everything else, since one run of a process that lives a millisecond may
    /// end before the first sample).
    pub fn memory_runs(self, side: Side, runs: usize) -> usize {
        match (self, side) {
            (Workload::Linux, Side::Vm) => 1,
            (Workload::Linux, Side::Snapshot) | (Workload::Oci, Side::KvminiOci) => runs.min(2),
            _ => runs.min(MEMORY_RUNS),
        }
    }

    /// The largest number of instances started at once, if limited.
    pub fn max_parallel(self) -> Option<usize> {
        match self {
            Workload::Linux => Some(LINUX_MAX_PARALLEL),
            Workload::Oci => Some(OCI_MAX_PARALLEL),
            Workload::Hello | Workload::Compute => None,
        }
    }

    /// Why it makes fewer runs than asked, when it does.
    pub fn why_fewer_runs(self) -> &'static str {
        match self {
            Workload::Oci => {
                "each kvmini oci container is a VM whose guest kernel is slow where guest \
                 ring 0 is emulated"
            }
            _ => "a boot is slow where guest ring 0 is emulated",
        }
    }

    /// Whether each side gets one untimed run before the timed ones (not the slow ones:
    /// for `oci` the probe, on the same root file system, fills kvmini oci's image cache).
    pub fn warm_up(self) -> bool {
        matches!(self, Workload::Hello | Workload::Compute)
    }

    /// How long one run may take before it is killed.
    pub fn timeout(self) -> Duration {
        match self {
            Workload::Linux | Workload::Oci => Duration::from_secs(600),
            Workload::Hello | Workload::Compute => Duration::from_secs(60),
        }
    }
}

/// What the `compute` programs print: `checksum=<hex> cycles=<decimal>`.
pub fn parse_compute(output: &str) -> Option<(String, u64)> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("checksum=")?;
        let (sum, cycles) = rest.split_once(" cycles=")?;
        let ok = !sum.is_empty() && sum.bytes().all(|b| b.is_ascii_hexdigit());
        Some((sum.to_string(), cycles.trim().parse().ok()?)).filter(|_| ok)
    })
}

/// The line kvmini's initramfs prints when user space is up: a VM's probe answers follow it.
pub const USER_SPACE_UP: &str = "kvmini-init: user space up";

/// The probe's three answers (kernel release, PID, CPUs) from its output: the values of the
/// lines that start with `kernel=`, `pid=` and `cpus=`, after the line containing `after` if
/// given (a VM's boot log echoes the kernel command line, probe script included).
pub fn parse_probe(output: &str, after: Option<&str>) -> Option<(String, String, String)> {
    let mut lines: Vec<&str> = output.lines().map(str::trim).collect();
    if let Some(marker) = after {
        let at = lines.iter().position(|l| l.contains(marker))?;
        lines.drain(..=at);
    }
    let value = |key: &str| {
        lines.iter().find_map(|l| {
            let v = l.strip_prefix(key)?.split_whitespace().next()?;
            Some(v.to_string())
        })
    };
    Some((value("kernel=")?, value("pid=")?, value("cpus=")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.name()), Some(w));
        }
        assert_eq!(Workload::parse("nope"), None);
        assert_eq!(Workload::Linux.runs(20), LINUX_MAX_RUNS);
        assert_eq!(Workload::Hello.runs(20), 20);
    }

    #[test]
    fn oci_runs_one_bundle_on_two_runtimes_with_few_runs_at_a_time() {
        assert_eq!(Workload::parse("oci"), Some(Workload::Oci));
        assert_eq!(Workload::Oci.sides(), [Side::Container, Side::KvminiOci]);
        assert_eq!(serde_json::to_value(Side::KvminiOci).unwrap(), "kvmini-oci");
        assert_eq!(Side::KvminiOci.name(), "kvmini-oci");
        assert_eq!(Workload::Oci.runs(20), OCI_MAX_RUNS);
        assert_eq!(Workload::Oci.runs(2), 2);
        assert_eq!(Workload::Oci.max_parallel(), Some(OCI_MAX_PARALLEL));
        assert_eq!(Workload::Oci.memory_runs(Side::KvminiOci, 20), 2);
        assert_eq!(Workload::Oci.memory_runs(Side::Container, 20), MEMORY_RUNS);
        assert!(!Workload::Oci.warm_up());
        assert_eq!(Workload::Hello.max_parallel(), None);
        // Both sides print the same line: the same process ran.
        assert_eq!(
            Workload::Oci.marker(Side::Container),
            Workload::Oci.marker(Side::KvminiOci)
        );
        for w in Workload::ALL {
            assert_eq!(w.sides().contains(&Side::KvminiOci), w == Workload::Oci);
        }
    }

    #[test]
    fn only_linux_has_a_side_from_a_snapshot() {
        assert_eq!(
            Workload::Linux.sides(),
            [Side::Container, Side::Vm, Side::Snapshot, Side::Baseline]
        );
        for w in [Workload::Hello, Workload::Compute] {
            assert!(!w.sides().contains(&Side::Snapshot), "{w:?}");
        }
        assert_eq!(Side::Snapshot.name(), "snapshot");
        assert_eq!(serde_json::to_value(Side::Snapshot).unwrap(), "snapshot");
    }

    #[test]
    fn compute_lines_parse() {
        assert_eq!(
            parse_compute("checksum=f990e536e445db6a cycles=456367570\n"),
            Some(("f990e536e445db6a".into(), 456367570))
        );
        assert_eq!(parse_compute("checksum=zz cycles=1\n"), None);
        assert_eq!(parse_compute("hello\n"), None);
    }

    #[test]
    fn probe_answers_skip_the_boot_log() {
        let vm =
            "[    0.000000] Command line: console=ttyS0 -- busybox sh -c \"echo kernel=$(uname \
                  -r); echo pid=$$; echo cpus=$(nproc)\"\r\nkvmini-init: user space up\r\n\
                  [   73.674311] hrtimer: interrupt took 24752909 ns\r\nkernel=6.1.192\r\n\
                  pid=26\r\ncpus=1\r\nkvmini-init: exit status 0\r\n";
        assert_eq!(
            parse_probe(vm, Some(USER_SPACE_UP)),
            Some(("6.1.192".into(), "26".into(), "1".into()))
        );
        assert_eq!(
            parse_probe("kernel=6.1.192\npid=1\ncpus=1\n", Some(USER_SPACE_UP)),
            None
        );
        assert_eq!(
            parse_probe("kernel=6.1.0-28-amd64\npid=1\ncpus=2\n", None),
            Some(("6.1.0-28-amd64".into(), "1".into(), "2".into()))
        );
        assert_eq!(parse_probe("kernel=6.1\n", None), None);
    }
}
