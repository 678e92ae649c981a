//! The VMM: owns KVM, the VM, guest memory, the vCPU and the buses. `Vmm::new` builds a VM
//! that is ready to run; `Vmm::run` runs it to the end and says why it stopped.

pub(crate) mod build;
mod snapshot;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VmFd};

use crate::arch::x86_64::layout;
use crate::boot;
use crate::config::{self, SeccompMode, SerialInput, VmConfig};
use crate::console::Console;
use crate::crash::{CrashKind, CrashReport};
use crate::devices::debug_port::{DebugPort, USERSPACE_UP};
use crate::devices::serial::{IrqTrigger, SerialDevice};
use crate::devices::virtio::io_thread::{self, IoThread};
use crate::devices::virtio::mmio::SharedTransport;
use crate::devices::virtio::{self, setup};
use crate::devices::{bus, lock, Bus};
use crate::gdb;
use crate::host::{self, Workarounds};
use crate::memory::{self, GuestMem};
use crate::sandbox::Role;
use crate::signal::SnapshotSignal;
use crate::snapshot::state::Machine;
use crate::stats::{DeviceStats, Stats, Timeline, VcpuStats};
use crate::status;
use crate::stop::{SnapshotTrigger, StopLatch, StopReason};
use crate::trace;
use crate::vcpu::{self, Vcpu};
use build::DeviceArgs;

/// Everything that can stop a VM from being built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The host's KVM is not usable.
    #[error(transparent)]
    Host(#[from] host::Error),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] memory::Error),
    /// The image could not be loaded.
    #[error(transparent)]
    Boot(#[from] boot::Error),
    /// The serial output file could not be created.
    #[error("cannot create serial output file {}: {source}", .path.display())]
    SerialFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The trace file could not be created.
    #[error("cannot create the trace file {}: {source}", .path.display())]
    TraceFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Devices overlap on a bus.
    #[error("device layout: {0}")]
    Bus(#[from] bus::Error),
    /// A KVM call failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// The console thread could not start.
    #[error("cannot set up the console on standard input: {0}")]
    Console(std::io::Error),
    /// A vCPU thread could not start or failed.
    #[error("vCPU thread: {0}")]
    Thread(std::io::Error),
    /// The run loop failed.
    #[error(transparent)]
    Vcpu(#[from] vcpu::Error),
    /// A snapshot could not be saved or restored.
    #[error("snapshot: {0}")]
    Snapshot(#[from] crate::snapshot::Error),
    /// A thread could not enter the sandbox.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::Error),
    /// A device's file, socket or TAP could not be opened as asked.
    #[error(transparent)]
    Device(#[from] virtio::SetupError),
    /// The GDB stub could not listen or start.
    #[error(transparent)]
    Gdb(#[from] gdb::Error),
}

/// The host's limits an error can run into, as the user would raise them.
const OPEN_FILES: &str = "the process's open-file limit (ulimit -n)";
const SYSTEM_FILES: &str = "the system's open-file limit (fs.file-max)";
const ADDRESS_SPACE: &str = "the address-space limit (ulimit -v) or host memory";
const THREADS: &str = "the process's limit on threads (ulimit -u)";

impl Error {
    /// The system error behind this one, when there is one.
    fn errno(&self) -> Option<i32> {
        let io = |e: &std::io::Error| e.raw_os_error();
        match self {
            Error::Host(host::Error::Open(e) | host::Error::CreateVm(e)) => Some(e.errno()),
            Error::Boot(boot::Error::Read { source, .. }) => io(source),
            Error::SerialFile { source, .. } | Error::TraceFile { source, .. } => io(source),
            Error::Kvm { source, .. } => Some(source.errno()),
            Error::Console(e) | Error::Thread(e) => io(e),
            Error::Vcpu(vcpu::Error::Run(e)) => Some(e.errno()),
            Error::Vcpu(vcpu::Error::Setup(e)) => io(e),
            Error::Gdb(e) => e.io().and_then(io),
            _ => None,
        }
    }

    /// The host limit this error ran into, when it is one: the host's resources, not the
    /// user's input, were short (too many open files, too little address space).
    pub fn host_limit(&self) -> Option<&'static str> {
        if let Error::Memory(memory::Error::Map { .. }) = self {
            // The size was checked against the host's RAM; mapping it lazily fails only
            // for want of address space.
            return Some(ADDRESS_SPACE);
        }
        match self.errno()? {
            libc::EMFILE => Some(OPEN_FILES),
            libc::ENFILE => Some(SYSTEM_FILES),
            libc::ENOMEM => Some(ADDRESS_SPACE),
            libc::EAGAIN if matches!(self, Error::Thread(_)) => Some(THREADS),
            _ => None,
        }
    }

    /// The process exit status for this error (see [`status`]).
    pub fn exit_status(&self) -> i32 {
        if self.host_limit().is_some() {
            return status::INTERNAL;
        }
        match self {
            Error::Config(_)
            | Error::Boot(_)
            | Error::SerialFile { .. }
            | Error::TraceFile { .. }
            | Error::Device(_) => status::BAD_INPUT,
            Error::Host(_) => status::NO_KVM,
            Error::Snapshot(e) if e.is_bad_input() => status::BAD_INPUT,
            Error::Gdb(e) if e.is_bad_input() => status::BAD_INPUT,
            Error::Memory(_)
            | Error::Snapshot(_)
            | Error::Bus(_)
            | Error::Kvm { .. }
            | Error::Console(_)
            | Error::Thread(_)
            | Error::Sandbox(_)
            | Error::Gdb(_)
            | Error::Vcpu(_) => status::INTERNAL,
        }
    }
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { what, source }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Why the VM stopped.
    pub reason: StopReason,
    /// The process exit status that goes with it.
    pub exit_status: i32,
    /// What the run measured.
    pub stats: Stats,
    /// With `--trace`: why the trace could not be written whole, when it could not.
    pub trace_failure: Option<String>,
}

/// A VM ready to run.
pub struct Vmm {
    // Field order is drop order: the vCPUs and the VM go before the memory KVM maps.
    vcpus: Vec<Vcpu>,
    vm: VmFd,
    kvm: Kvm,
    mem: GuestMem,
    devices: Devices,
    /// The virtio devices, and the event loop their I/O thread waits on.
    virtio: Vec<SharedTransport>,
    epoll: Option<Arc<vmm_sys_util::epoll::Epoll>>,
    /// What the VM is: its size, its platform, what was booted.
    machine: Machine,
    timeout: Option<Duration>,
    serial_input: SerialInput,
    /// Serial input to give the guest first.
    input: Vec<u8>,
    /// Where to save the VM when it stops for a snapshot.
    snapshot: Option<crate::snapshot::Writer>,
    /// Fired by whatever asks for the snapshot first.
    snapshot_trigger: SnapshotTrigger,
    /// After saving, go on running.
    snapshot_continue: bool,
    /// The sandbox every thread enters before the guest runs.
    seccomp: SeccompMode,
    /// Make a forbidden system call once confined (tests the sandbox).
    debug_forbidden_syscall: bool,
    /// Where `--trace` lines go; each vCPU holds a tracer on it.
    trace: Option<Arc<trace::Sink>>,
    /// The guest's status that means success (`--success-status`).
    success_status: Option<u8>,
    /// The GDB stub, listening (`--gdb`), and whether the image is a 64-bit kernel.
    gdb: Option<(gdb::Stub, bool)>,
    start: Instant,
    ready: Instant,
}

/// The devices every VM has, and the buses they sit on.
pub(crate) struct Devices {
    pub(crate) serial: Arc<Mutex<SerialDevice>>,
    debug_port: Arc<Mutex<DebugPort>>,
    pub(crate) io_bus: Arc<Bus>,
    pub(crate) mmio_bus: Arc<Bus>,
}

impl Vmm {
    /// Builds the VM `config` describes, step by step; times in the statistics count from
    /// here.
    pub fn new(config: &VmConfig) -> Result<Self, Error> {
        let start = Instant::now();
        config.validate()?;
        // Where a snapshot goes is checked, and made, before the guest runs.
        let snapshot = config
            .snapshot
            .as_deref()
            .map(crate::snapshot::Writer::create)
            .transpose()?;
        let trace = build::open_trace(config.trace.as_ref(), start)?;
        // So is the debugger's socket: a port in use is refused before anything runs.
        let gdb = config.gdb.as_ref().map(gdb::Stub::listen).transpose()?;
        let kvm = host::open_kvm()?;
        let vm = kvm.create_vm().map_err(host::Error::CreateVm)?;

        let image = boot::open(&config.image, config.format)?;
        let linux = image.kind.is_linux();
        let format = image.kind.format();
        config.validate_for_image(format, linux)?;
        // Only a kernel needs to know the host kind, so raw images never pay for the look.
        let host = if linux {
            Workarounds::for_linux(config.host_workarounds)
        } else {
            Workarounds::NONE
        };
        // Device files are opened (and refused) before anything is loaded.
        let open_devices = setup::open(&config.devices)?;
        let device_params = setup::cmdline_params(&open_devices);
        let mem = memory::create(config.mem_size_for(linux))?;
        let boot = boot::load(
            image,
            &mem,
            &build::boot_args(config, &host, &device_params),
        )?;
        memory::register(&vm, &mem)?;
        set_tss(&vm)?;

        // Linux gets the PC it expects; raw guests and other kernels run without interrupts.
        let serial_irq = if linux {
            build::write_mptable(&mem, config.cpus)?;
            build::create_pc_platform(&vm)?
        } else {
            IrqTrigger::default()
        };
        let (virtio, epoll) = if open_devices.devices.is_empty() {
            (Vec::new(), None)
        } else {
            let epoll = io_thread::new_epoll().map_err(Error::Thread)?;
            let virtio = build::attach_virtio(&vm, &mem, open_devices, &epoll)?;
            (virtio, Some(epoll))
        };
        let snapshot_trigger = SnapshotTrigger::new(snapshot.is_some());
        let devices = build::create_devices(DeviceArgs {
            serial: &config.serial,
            serial_limit: config.serial_limit,
            serial_irq,
            serial_state: None,
            snapshot: snapshot_trigger.clone(),
            debug_exit: config.debug_exit,
            virtio: &virtio,
            trace: trace.as_deref(),
        })?;
        let hidden = build::hidden_cpu_features(config, &host);
        let mut vcpus = build::create_vcpus(&kvm, &vm, &mem, &boot, &devices, config, &hidden)?;
        build::trace_vcpus(&mut vcpus, trace.as_ref());
        let machine = Machine {
            mem_size: memory::size(&mem),
            cpus: config.cpus,
            pc_platform: linux,
            unclaimed_mmio: config.unclaimed_mmio,
            boot_summary: boot.summary,
            cmdline: boot.cmdline,
            hidden_cpu_features: hidden,
            debug_exit: config.debug_exit,
        };
        Ok(Vmm {
            vcpus,
            vm,
            kvm,
            mem,
            devices,
            virtio,
            epoll,
            machine,
            timeout: config.timeout,
            serial_input: config.serial_input,
            input: Vec::new(),
            snapshot,
            snapshot_trigger,
            snapshot_continue: config.snapshot_continue,
            seccomp: config.seccomp,
            debug_forbidden_syscall: config.debug_forbidden_syscall,
            trace,
            success_status: config.success_status,
            gdb: gdb.map(|stub| (stub, gdb::is_64bit_kernel(format))),
            start,
            ready: Instant::now(),
        })
    }

    /// Where the GDB stub listens (`--gdb`), as GDB's `target remote` takes it, and whether
    /// the guest waits for it before its first instruction.
    pub fn gdb_target(&self) -> Option<(&str, bool)> {
        self.gdb
            .as_ref()
            .map(|(stub, _)| (stub.target(), stub.waits()))
    }

    /// Runs the guest until it stops: the boot vCPU on this thread, every other vCPU on a
    /// thread of its own; the first vCPU (or the console) to stop the VM stops them all.
    pub fn run(mut self) -> Result<RunOutcome, Error> {
        crate::sandbox::prepare(self.seccomp);
        let latch = Arc::new(StopLatch::default());
        // Before any thread starts: they inherit the blocked SIGUSR1.
        let _signal = match self.snapshot_trigger.is_armed() {
            true => Some(
                SnapshotSignal::start(self.snapshot_trigger.clone(), latch.clone(), self.seccomp)
                    .map_err(Error::Thread)?,
            ),
            false => None,
        };
        let console = match self.serial_input {
            SerialInput::Stdin if self.machine.pc_platform => {
                let input = std::mem::take(&mut self.input);
                let trigger = self.snapshot_trigger.clone();
                Console::start(
                    self.devices.serial.clone(),
                    latch.clone(),
                    input,
                    trigger,
                    self.seccomp,
                )
                .map_err(Error::Console)?
            }
            _ => None,
        };
        let io_thread = match &self.epoll {
            Some(epoll) => Some(
                IoThread::start(epoll.clone(), self.virtio.clone(), self.seccomp)
                    .map_err(Error::Thread)?,
            ),
            None => None,
        };
        let gdb = match self.gdb.take() {
            Some((stub, kernel_image)) => {
                let (debug, running) =
                    stub.start(&self.kvm, self.mem.clone(), kernel_image, self.seccomp)?;
                self.vcpus[0].attach_debugger(debug);
                Some(running)
            }
            None => None,
        };
        let vcpu_count = self.vcpus.len();
        let started = Instant::now();
        // The vCPUs keep counting across runs: the last run's figures are the whole run's.
        let mut saved = None;
        let (reason, stats) = loop {
            // A run that goes on after a snapshot has what is left of the timeout (a zero
            // duration would disarm the timer).
            let timeout = self.timeout.map(|t| {
                t.saturating_sub(started.elapsed())
                    .max(Duration::from_nanos(1))
            });
            let sandbox = Sandbox {
                mode: self.seccomp,
                forbidden_call: self.debug_forbidden_syscall,
            };
            let (stats, vcpus) =
                run_vcpus(std::mem::take(&mut self.vcpus), &latch, timeout, sandbox)?;
            self.vcpus = vcpus;
            let reason = latch.reason().unwrap_or(StopReason::Halted);
            let Some(writer) = self
                .snapshot
                .take()
                .filter(|_| matches!(reason, StopReason::Snapshot))
            else {
                break (reason, stats);
            };
            // The devices finish what the guest asked of them, and keep still while the VM
            // is saved.
            if let Some(io) = &io_thread {
                io.pause();
            }
            saved = Some(self.save(writer)?);
            if !self.snapshot_continue {
                break (reason, stats);
            }
            if let Some(io) = &io_thread {
                io.resume();
            }
            latch.reset();
        };
        let end = Instant::now();
        if let Some(gdb) = gdb {
            gdb.finish();
        }
        drop(console);
        let io_stats = io_thread.map(IoThread::stop);
        let trace = self.trace.take();
        let mut outcome = self.outcome(reason, &stats, vcpu_count, end);
        outcome.stats.snapshot = saved;
        outcome.stats.io_thread_cpu_ms = io_stats.map(|s| s.cpu_time.as_secs_f64() * 1e3);
        if let Some(sink) = trace {
            let exits = stats.exits.total();
            sink.finish(end, &outcome.reason, outcome.exit_status, exits);
            outcome.trace_failure = sink.failure();
        }
        Ok(outcome)
    }

    /// The outcome of a run that ended at `end` for `reason`: a reset after a kernel panic is
    /// a crash; the statistics gather what the vCPUs and the devices saw.
    fn outcome(
        mut self,
        mut reason: StopReason,
        stats: &VcpuStats,
        vcpus: usize,
        end: Instant,
    ) -> RunOutcome {
        let mut serial = lock(&self.devices.serial);
        // A write that failed as the VM was stopping for another reason the guest chose (its
        // exit code right after a lost line) must still be told: output was lost.
        if let Some(failure) = serial.flush() {
            if reason.is_the_guests() {
                reason = StopReason::OutputFailed(failure);
            }
        }
        if let (StopReason::Reset, Some(line)) = (&reason, serial.panic_line()) {
            let param = self
                .machine
                .cmdline
                .as_deref()
                .and_then(crate::crash::panic_param);
            let kind = CrashKind::KernelPanic {
                line,
                param: param.map(str::to_string),
            };
            reason = StopReason::Crash(Box::new(CrashReport::new(
                kind, &self.mem, None, None, None,
            )));
        }
        let exit_status = status::with_success(status::for_stop(&reason), self.success_status);
        let timeline = Timeline {
            start: self.start,
            ready: self.ready,
            first_run: stats.first_run,
            first_serial_byte: serial.first_byte_at(),
            userspace: lock(&self.devices.debug_port).first_write(USERSPACE_UP),
            end,
        };
        let mut report = Stats::new(
            reason.to_string(),
            exit_status,
            self.machine.boot_summary.clone(),
            stats,
            serial.bytes_written(),
            &timeline,
        );
        drop(serial);
        report.vcpus = vcpus;
        report.devices = self
            .virtio
            .iter()
            .map(|t| {
                let t = lock(t);
                DeviceStats {
                    name: t.name().to_string(),
                    requests: t.requests(),
                    fault: t.fault().map(str::to_string),
                }
            })
            .collect();
        report.cmdline = self.machine.cmdline.take();
        report.hidden_cpu_features = std::mem::take(&mut self.machine.hidden_cpu_features);
        RunOutcome {
            reason,
            exit_status,
            stats: report,
            trace_failure: None,
        }
    }
}

/// Runs the first vCPU on this thread (with the timeout) and the others on threads of their
/// own, until the VM stops; returns what they measured, summed, and the vCPUs (stopped, for
/// a snapshot).
fn run_vcpus(
    vcpus: Vec<Vcpu>,
    latch: &Arc<StopLatch>,
    timeout: Option<Duration>,
    sandbox: Sandbox,
) -> Result<(VcpuStats, Vec<Vcpu>), Error> {
    // The kick's signal handler goes in before any thread is confined (sigaction is not
    // among the calls the filters allow).
    crate::kick::install_handler()
        .map_err(|e| Error::Thread(std::io::Error::from_raw_os_error(e.errno())))?;
    let mut vcpus = vcpus.into_iter();
    let mut boot_vcpu = vcpus
        .next()
        .expect("a validated config has at least one vCPU");
    let others: Vec<_> = vcpus
        .map(|mut vcpu| {
            let latch = latch.clone();
            std::thread::Builder::new()
                .name("kvmini-vcpu".into())
                .spawn(move || {
                    crate::sandbox::enter_or_exit(Role::Vcpu, sandbox.mode);
                    let result = vcpu.run(&latch, None);
                    (vcpu, result)
                })
                .map_err(Error::Thread)
        })
        .collect::<Result<_, _>>()?;
    // Last, once every other thread runs: the calling thread's filter is inherited by any
    // thread it starts.
    crate::sandbox::enter(Role::Main, sandbox.mode)?;
    if sandbox.forbidden_call && sandbox.mode != SeccompMode::Off {
        // SAFETY: a system call without arguments that no filter allows.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let mut result = boot_vcpu.run(latch, timeout).map_err(Error::from);
    let mut stats = boot_vcpu.stats.clone();
    let mut stopped = vec![boot_vcpu];
    for handle in others {
        match handle.join() {
            Ok((vcpu, r)) => {
                stats.merge(&vcpu.stats);
                if result.is_ok() {
                    result = r.map_err(Error::from);
                }
                stopped.push(vcpu);
            }
            Err(_) => {
                result = Err(Error::Thread(std::io::Error::other(
                    "a vCPU thread panicked",
                )))
            }
        }
    }
    result.map(|()| (stats, stopped))
}

/// How the vCPU threads confine themselves.
#[derive(Clone, Copy)]
struct Sandbox {
    mode: SeccompMode,
    forbidden_call: bool,
}

/// Pages Intel CPUs without "unrestricted guest" need to run real mode.
fn set_tss(vm: &VmFd) -> Result<(), Error> {
    vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))
}

/// Builds and runs a VM in one call.
pub fn run(config: &VmConfig) -> Result<RunOutcome, Error> {
    Vmm::new(config)?.run()
}
