//! `kvmini check`: is KVM usable here, and what kind of host is it? One line per finding,
//! and two measured figures: the port-I/O exit round trip and how much slower guest ring-0
//! code runs than ring-3 code (about 1x on hardware virtualization, about 1000x where ring 0
//! is emulated).

use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd};
use kvmini_measure::stats;
use serde::Serialize;
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::layout::GDT_START;

mod debug;
use crate::arch::x86_64::{cpuid, gdt, paging, regs};
use crate::{host, memory};
pub use debug::DebugProbe;

/// Capabilities Linux guests use (interrupt controller, timer, interrupt eventfds).
pub const LINUX_CAPS: [(Cap, &str); 4] = [
    (Cap::Irqchip, "in-kernel interrupt controllers"),
    (Cap::Pit2, "in-kernel PIT timer"),
    (Cap::Irqfd, "interrupts through eventfds"),
    (Cap::ExtCpuid, "CPUID configuration"),
];

/// Where the probe code sits in the probe VM's memory.
const PROBE_CODE: u64 = 0x1000;
/// The probe's stack pointer (the probe code uses no stack, but a vCPU needs one).
const PROBE_STACK: u64 = 0x8000;
/// Port the probes write to when a measurement is done.
const PROBE_PORT: u16 = 0x80;

/// The probe program (64-bit, position-independent, runs at CPL 0 or 3):
///
/// ```text
/// 0x00 loop: add  $1, %rax        48 83 c0 01
/// 0x04       imul %rax, %rbx      48 0f af d8
/// 0x08       dec  %rcx            48 ff c9
/// 0x0b       jnz  loop            75 f3
/// 0x0d       out  %al, $0x80      e6 80        ; RCX iterations done
/// 0x0f       jmp  loop            eb ef
/// 0x20 io:   out  %al, $0x80      e6 80        ; one exit per iteration
/// 0x22       jmp  io              eb fc
/// 0x30 id:   cpuid                0f a2        ; leaf in EAX, subleaf in ECX
/// 0x32       out  %al, $0x80      e6 80        ; the VMM reads EBX, ECX, EDX
/// 0x34       jmp  id              eb fa
/// 0x40 dbg:  nop                  90           ; the debugging probes (check/debug.rs)
/// 0x41       mov  %eax, 0x2000    89 04 25 00 20 00 00
/// 0x48       out  %al, $0x80      e6 80
/// 0x4a int3: int3                 cc
/// 0x4b       out  %al, $0x80      e6 80
/// 0x4d       jmp  .               eb fe
/// ```
const PROBE: [u8; 0x4f] = [
    0x48, 0x83, 0xc0, 0x01, 0x48, 0x0f, 0xaf, 0xd8, 0x48, 0xff, 0xc9, 0x75, 0xf3, 0xe6, 0x80, 0xeb,
    0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
    0xe6, 0x80, 0xeb, 0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
    0x0f, 0xa2, 0xe6, 0x80, 0xeb, 0xfa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
    0x90, 0x89, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00, 0xe6, 0x80, 0xcc, 0xe6, 0x80, 0xeb, 0xfe,
];
const LOOP_ENTRY: u64 = PROBE_CODE;
const IO_ENTRY: u64 = PROBE_CODE + 0x20;
const CPUID_ENTRY: u64 = PROBE_CODE + 0x30;

/// How long each speed measurement should last at least.
const MIN_MEASURE: Duration = Duration::from_millis(2);
/// How many exits the round-trip probe times.
const IO_SAMPLES: usize = 200;

/// A capability and whether KVM has it.
#[derive(Clone, Debug, Serialize)]
pub struct CapLine {
    /// KVM's name for it.
    pub name: String,
    /// What kvmini uses it for.
    pub used_for: &'static str,
    /// Present.
    pub present: bool,
    /// kvmini cannot run any guest without it.
    pub required: bool,
}

/// The probes' results.
#[derive(Clone, Debug, Serialize)]
pub struct Measurements {
    /// Median port-I/O exit round trip (guest `out` at CPL 0 → kvmini → `KVM_RUN`),
    /// microseconds.
    pub io_exit_us: f64,
    /// The same from CPL 3.
    pub io_exit_ring3_us: f64,
    /// Nanoseconds per loop iteration at CPL 0.
    pub ring0_ns_per_iter: f64,
    /// Nanoseconds per loop iteration at CPL 3.
    pub ring3_ns_per_iter: f64,
    /// How many times slower ring 0 is.
    pub ring0_slowdown: f64,
}

/// One finding of the check: what was found, or why it could not be found out. In JSON it is
/// the value itself, or `{"error": "..."}`.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Finding<T> {
    /// What was found.
    Found(T),
    /// Why it could not be found out.
    Failed {
        /// The reason, for people.
        error: String,
    },
}

impl<T> Finding<T> {
    fn failed(error: impl Into<String>) -> Self {
        Finding::Failed {
            error: error.into(),
        }
    }

    fn from_result<E: std::fmt::Display>(r: Result<T, E>) -> Self {
        r.map_or_else(|e| Finding::failed(e.to_string()), Finding::Found)
    }

    /// What was found, if anything.
    pub fn found(&self) -> Option<&T> {
        match self {
            Finding::Found(v) => Some(v),
            Finding::Failed { .. } => None,
        }
    }

    /// Why nothing was found, if so.
    pub fn error(&self) -> Option<&str> {
        match self {
            Finding::Found(_) => None,
            Finding::Failed { error } => Some(error),
        }
    }
}

/// Everything `kvmini check` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The device that opened (`/dev/kvm`), or why it did not (with the fix).
    pub device: Finding<&'static str>,
    /// KVM API version.
    pub api_version: Option<i32>,
    /// Capabilities.
    pub caps: Vec<CapLine>,
    /// Host kind, in words.
    pub host_kind: String,
    /// `pvm`, `hardware`, `nested` or `unknown`.
    pub host_kind_short: &'static str,
    /// Probe results, or why probing failed.
    pub measurements: Finding<Measurements>,
    /// Whether hiding CPUID features works here.
    pub cpuid: Finding<CpuidLeaks>,
    /// Which kinds of breakpoints work here (`--gdb`), probed in ring 0.
    pub debugging: Finding<DebugProbe>,
    /// What the GDB stub uses on this kind of host.
    pub debug_support: host::DebugSupport,
    /// kvmini can run guests here.
    pub usable: bool,
}

/// Runs every check.
pub fn run() -> Report {
    let kind = host::kind();
    let mut report = Report {
        device: Finding::Found("/dev/kvm"),
        api_version: None,
        caps: Vec::new(),
        host_kind: kind.to_string(),
        host_kind_short: kind.short(),
        measurements: Finding::failed("not run"),
        cpuid: Finding::failed("not run"),
        debugging: Finding::failed("not run"),
        debug_support: host::DebugSupport::for_host(kind),
        usable: false,
    };
    let kvm = match host::open_device() {
        Ok(kvm) => kvm,
        Err(err) => {
            report.device = Finding::failed(err.to_string());
            return report;
        }
    };
    report.api_version = Some(kvm.get_api_version());
    let required = host::REQUIRED_CAPS.iter().map(|c| (c, true));
    let linux = LINUX_CAPS.iter().map(|c| (c, false));
    for ((cap, used_for), required) in required.chain(linux) {
        report.caps.push(CapLine {
            name: format!("{cap:?}"),
            used_for,
            present: kvm.check_extension(*cap),
            required,
        });
    }
    let api_ok = report.api_version == Some(host::KVM_API_VERSION);
    let caps_ok = report.caps.iter().all(|c| c.present || !c.required);
    if api_ok && caps_ok {
        report.measurements = Finding::from_result(measure(&kvm));
        report.cpuid = Finding::from_result(probe_cpuid(&kvm));
        report.debugging = Finding::from_result(debug::probe(&kvm));
        report.usable = report.measurements.found().is_some();
    }
    report
}

/// A failed probe step.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct ProbeError {
    what: &'static str,
    why: String,
}

fn step<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ProbeError {
    move |e| ProbeError {
        what,
        why: e.to_string(),
    }
}

struct Probe {
    vcpu: VcpuFd,
    // Kept alive for the vCPU.
    _vm: kvm_ioctls::VmFd,
    _mem: memory::GuestMem,
}

impl Probe {
    fn new(kvm: &Kvm, hide: &[&cpuid::Feature]) -> Result<Self, ProbeError> {
        let vm = kvm.create_vm().map_err(step("KVM_CREATE_VM"))?;
        let mem = memory::create(2 << 20).map_err(step("guest memory"))?;
        memory::register(&vm, &mem).map_err(step("KVM_SET_USER_MEMORY_REGION"))?;
        mem.write_slice(&PROBE, GuestAddress(PROBE_CODE))
            .map_err(step("probe code"))?;
        mem.write_obj(gdt::BOOT_GDT, GuestAddress(GDT_START))
            .map_err(step("GDT"))?;
        paging::write_identity_map(&mem, true).map_err(step("page tables"))?;
        let vcpu = vm.create_vcpu(0).map_err(step("KVM_CREATE_VCPU"))?;
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(step("KVM_GET_SUPPORTED_CPUID"))?;
        cpuid::filter_entries(cpuid.as_mut_slice(), 0, 1, hide);
        vcpu.set_cpuid2(&cpuid).map_err(step("KVM_SET_CPUID2"))?;
        Ok(Probe {
            vcpu,
            _vm: vm,
            _mem: mem,
        })
    }

    /// Puts the vCPU at `rip` in long mode at CPL 0 or 3.
    fn enter(&self, rip: u64, rax: u64, rcx: u64, user: bool) -> Result<(), ProbeError> {
        let mut sregs = self.vcpu.get_sregs().map_err(step("KVM_GET_SREGS"))?;
        regs::long_mode_sregs(
            &mut sregs,
            GDT_START,
            gdt::BOOT_GDT.len(),
            crate::arch::x86_64::layout::PML4_START,
            user,
        );
        self.vcpu.set_sregs(&sregs).map_err(step("KVM_SET_SREGS"))?;
        let mut r = regs::entry_regs(rip, PROBE_STACK, user);
        r.rax = rax;
        r.rcx = rcx;
        self.vcpu.set_regs(&r).map_err(step("KVM_SET_REGS"))
    }

    /// Runs until the probe port is written; returns how long that took.
    fn run_to_port(&mut self) -> Result<Duration, ProbeError> {
        let t = Instant::now();
        match self.vcpu.run().map_err(step("KVM_RUN"))? {
            VcpuExit::IoOut(PROBE_PORT, _) => Ok(t.elapsed()),
            other => Err(ProbeError {
                what: "probe guest",
                why: format!("unexpected exit {other:?}"),
            }),
        }
    }

    /// Nanoseconds per loop iteration at the given privilege level, doubling the iteration
    /// count until one run lasts at least `MIN_MEASURE`.
    fn ns_per_iteration(&mut self, user: bool, exit_cost: Duration) -> Result<f64, ProbeError> {
        let mut n: u64 = 256;
        loop {
            self.enter(LOOP_ENTRY, 0, n, user)?;
            let t = self.run_to_port()?;
            if t >= MIN_MEASURE || n >= 1 << 32 {
                return Ok(t.saturating_sub(exit_cost).as_nanos() as f64 / n as f64);
            }
            n *= 2;
        }
    }
}

/// Which hidden CPUID features a guest still sees, at CPL 0 and at CPL 3.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuidLeaks {
    /// Features hidden with `KVM_SET_CPUID2` that CPUID at CPL 0 still reports.
    pub ring0: Vec<&'static str>,
    /// The same at CPL 3.
    pub ring3: Vec<&'static str>,
    /// How many features were tried (those KVM supports here).
    pub tried: usize,
}

/// Hides every feature kvmini can hide (of those KVM supports) in a probe VM and runs CPUID
/// in it: a host that ignores `KVM_SET_CPUID2` for some bits shows them here.
pub fn probe_cpuid(kvm: &Kvm) -> Result<CpuidLeaks, ProbeError> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(step("KVM_GET_SUPPORTED_CPUID"))?;
    let present = |f: &cpuid::Feature| {
        supported
            .as_slice()
            .iter()
            .any(|e| f.is_in(e.function, e.index) && f.is_set([e.eax, e.ebx, e.ecx, e.edx]))
    };
    let hide: Vec<&cpuid::Feature> = cpuid::FEATURES.iter().filter(|f| present(f)).collect();
    let mut p = Probe::new(kvm, &hide)?;
    let mut leaks = CpuidLeaks {
        tried: hide.len(),
        ..Default::default()
    };
    for user in [false, true] {
        for f in &hide {
            p.enter(CPUID_ENTRY, u64::from(f.leaf), u64::from(f.subleaf), user)?;
            p.run_to_port()?;
            let r = p.vcpu.get_regs().map_err(step("KVM_GET_REGS"))?;
            // CPUID writes the 32-bit registers, which zero the upper halves.
            if f.is_set([r.rax, r.rbx, r.rcx, r.rdx].map(|v| v as u32)) {
                if user {
                    &mut leaks.ring3
                } else {
                    &mut leaks.ring0
                }
                .push(f.name);
            }
        }
    }
    Ok(leaks)
}

/// Measures the exit round trip and the ring-0/ring-3 speed ratio in a small probe VM.
pub fn measure(kvm: &Kvm) -> Result<Measurements, ProbeError> {
    let mut p = Probe::new(kvm, &[])?;
    let mut io_exit = [Duration::ZERO; 2];
    for (user, slot) in [false, true].into_iter().zip(&mut io_exit) {
        p.enter(IO_ENTRY, 0, 0, user)?;
        let samples = (0..IO_SAMPLES)
            .map(|_| p.run_to_port().map(|d| d.as_secs_f64()))
            .collect::<Result<Vec<_>, _>>()?;
        let median = stats::median(&samples).unwrap_or_default();
        *slot = Duration::from_secs_f64(median);
    }
    let ring0 = p.ns_per_iteration(false, io_exit[0])?;
    let ring3 = p.ns_per_iteration(true, io_exit[1])?;
    Ok(Measurements {
        io_exit_us: io_exit[0].as_secs_f64() * 1e6,
        io_exit_ring3_us: io_exit[1].as_secs_f64() * 1e6,
        ring0_ns_per_iter: ring0,
        ring3_ns_per_iter: ring3,
        ring0_slowdown: if ring3 > 0.0 { ring0 / ring3 } else { f64::NAN },
    })
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok  "
    } else {
        "FAIL"
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.device {
            Finding::Found(path) => writeln!(f, "ok   {path}: present, readable and writable")?,
            Finding::Failed { error } => writeln!(f, "FAIL {error}")?,
        }
        if let Some(v) = self.api_version {
            let ok = v == host::KVM_API_VERSION;
            writeln!(
                f,
                "{} KVM API version {v}{}",
                mark(ok),
                if ok { "" } else { " (kvmini needs 12)" }
            )?;
        }
        for c in &self.caps {
            let tag = if c.present {
                "ok  "
            } else if c.required {
                "FAIL"
            } else {
                "warn"
            };
            let need = if c.required { "needed" } else { "Linux guests" };
            writeln!(
                f,
                "{tag} capability {}: {} ({need}: {})",
                c.name,
                if c.present { "yes" } else { "no" },
                c.used_for
            )?;
        }
        writeln!(f, "info host kind: {}", self.host_kind)?;
        match &self.measurements {
            Finding::Found(m) => {
                writeln!(
                    f,
                    "info port-I/O exit round trip: {:.1} us from ring 0, {:.1} us from ring 3 (medians of {IO_SAMPLES})",
                    m.io_exit_us, m.io_exit_ring3_us
                )?;
                writeln!(
                    f,
                    "info guest ring 0 vs ring 3: {:.1} ns vs {:.2} ns per loop iteration, ring 0 is {:.0}x slower{}",
                    m.ring0_ns_per_iter,
                    m.ring3_ns_per_iter,
                    m.ring0_slowdown,
                    if m.ring0_slowdown > 10.0 { ": ring-0 code is emulated here, do heavy guest work in ring 3" } else { "" }
                )?;
            }
            Finding::Failed { error } if self.device.found().is_some() => {
                writeln!(f, "FAIL probe VM: {error}")?
            }
            Finding::Failed { .. } => {}
        }
        match &self.cpuid {
            Finding::Found(l) if l.ring0.is_empty() && l.ring3.is_empty() => writeln!(
                f,
                "ok   CPUID: each of {} features hidden with KVM_SET_CPUID2 stays hidden from the CPUID instruction",
                l.tried
            )?,
            Finding::Found(l) => {
                let list = |v: &Vec<&str>| if v.is_empty() { "none".to_string() } else { v.join(", ") };
                writeln!(
                    f,
                    "warn CPUID: this host ignores KVM_SET_CPUID2 for some features; hidden, yet the CPUID instruction reports them at ring 0: {}; at ring 3: {}",
                    list(&l.ring0),
                    list(&l.ring3)
                )?
            }
            Finding::Failed { error } if self.measurements.found().is_some() => {
                writeln!(f, "FAIL CPUID probe: {error}")?
            }
            Finding::Failed { .. } => {}
        }
        debug::write_line(f, &self.debugging, self.debug_support)?;
        if self.usable {
            writeln!(f, "kvmini can run guests here")
        } else {
            writeln!(f, "kvmini cannot run guests here")
        }
    }
}
