//! The VMM: owns KVM, the VM, guest memory, the vCPU and the buses. `Vmm::new` builds a VM
//! that is ready to run; `Vmm::run` runs it to the end and says why it stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::{cpuid, layout, mptable, regs};
use crate::boot::cmdline::CmdlineArgs;
use crate::boot::raw::RawArgs;
use crate::boot::{self, BootArgs, BootImage};
use crate::config::{self, SerialInput, SerialOutput, VmConfig};
use crate::console::Console;
use crate::crash::{CrashKind, CrashReport};
use crate::devices::debug_port::{DebugPort, DEBUG_PORT, USERSPACE_UP};
use crate::devices::exit_port::{ExitPort, EXIT_PORT};
use crate::devices::i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
use crate::devices::serial::{IrqTrigger, SerialDevice, SerialSink, COM1_LEN, COM1_PORT};
use crate::devices::{bus, lock, Bus};
use crate::host::{self, Workarounds};
use crate::memory::{self, GuestMem};
use crate::stats::{Stats, Timeline, VcpuStats};
use crate::status;
use crate::stop::{StopLatch, StopReason};
use crate::vcpu::{self, Vcpu};

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
}

impl Error {
    /// The process exit status for this error (see [`status`]).
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Boot(_) | Error::SerialFile { .. } => status::BAD_INPUT,
            Error::Memory(memory::Error::Map { .. }) => status::BAD_INPUT,
            Error::Host(_) => status::NO_KVM,
            Error::Memory(_)
            | Error::Bus(_)
            | Error::Kvm { .. }
            | Error::Console(_)
            | Error::Thread(_)
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
}

/// The serial line's interrupt: ISA IRQ 4, COM1's.
const COM1_GSI: u32 = 4;

/// A VM ready to run.
pub struct Vmm {
    // Field order is drop order: the vCPUs and the VM go before the memory KVM maps.
    vcpus: Vec<Vcpu>,
    _vm: VmFd,
    _kvm: Kvm,
    mem: GuestMem,
    devices: Devices,
    boot: BootImage,
    timeout: Option<Duration>,
    serial_input: SerialInput,
    hidden: Vec<String>,
    start: Instant,
    ready: Instant,
}

/// The devices every VM has, and the buses they sit on.
struct Devices {
    serial: Arc<Mutex<SerialDevice>>,
    debug_port: Arc<Mutex<DebugPort>>,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
}

impl Vmm {
    /// Builds the VM `config` describes, step by step; times in the statistics count from
    /// here.
    pub fn new(config: &VmConfig) -> Result<Self, Error> {
        let start = Instant::now();
        config.validate()?;
        let kvm = host::open_kvm()?;
        let vm = kvm.create_vm().map_err(host::Error::CreateVm)?;

        let image = boot::open(&config.image, config.format)?;
        let linux = image.kind.is_linux();
        config.validate_for_image(image.kind.format(), linux)?;
        // Only a kernel needs to know the host kind, so raw images never pay for the look.
        let host = if linux {
            Workarounds::for_linux(config.host_workarounds)
        } else {
            Workarounds::NONE
        };
        let mem = memory::create(config.mem_size_for(linux))?;
        let boot = boot::load(image, &mem, &boot_args(config, &host))?;
        memory::register(&vm, &mem)?;
        // Intel CPUs without "unrestricted guest" need these pages to run real mode.
        vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;

        // Linux gets the PC it expects; raw guests and other kernels run without interrupts.
        let serial_irq = if linux {
            create_pc_platform(&vm, &mem, config.cpus)?
        } else {
            IrqTrigger::default()
        };
        let devices = create_devices(config, serial_irq)?;
        let hidden = hidden_cpu_features(config, &host);
        let vcpus = create_vcpus(&kvm, &vm, &mem, &boot, &devices, config, &hidden)?;
        Ok(Vmm {
            vcpus,
            _vm: vm,
            _kvm: kvm,
            mem,
            devices,
            boot,
            timeout: config.timeout,
            serial_input: config.serial_input,
            hidden,
            start,
            ready: Instant::now(),
        })
    }

    /// Runs the guest until it stops: the boot vCPU on this thread, every other vCPU on a
    /// thread of its own; the first vCPU (or the console) to stop the VM stops them all.
    pub fn run(mut self) -> Result<RunOutcome, Error> {
        let latch = Arc::new(StopLatch::default());
        let console = match self.serial_input {
            SerialInput::Stdin if self.boot.linux => {
                Console::start(self.devices.serial.clone(), latch.clone())
                    .map_err(Error::Console)?
            }
            _ => None,
        };
        let vcpus = std::mem::take(&mut self.vcpus);
        let vcpu_count = vcpus.len();
        let stats = run_vcpus(vcpus, &latch, self.timeout);
        drop(console);
        let stats = stats?;
        let reason = latch.reason().unwrap_or(StopReason::Halted);
        Ok(self.outcome(reason, &stats, vcpu_count, Instant::now()))
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
        let serial = lock(&self.devices.serial);
        if let (StopReason::Reset, Some(line)) = (&reason, serial.panic_line()) {
            let kind = CrashKind::KernelPanic(line);
            reason = StopReason::Crash(Box::new(CrashReport::new(
                kind, &self.mem, None, None, None,
            )));
        }
        let exit_status = status::for_stop(&reason);
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
            self.boot.summary.clone(),
            stats,
            serial.bytes_written(),
            &timeline,
        );
        drop(serial);
        report.vcpus = vcpus;
        report.cmdline = self.boot.cmdline.take();
        report.hidden_cpu_features = std::mem::take(&mut self.hidden);
        RunOutcome {
            reason,
            exit_status,
            stats: report,
        }
    }
}

/// Runs the first vCPU on this thread (with the timeout) and the others on threads of their
/// own, until the VM stops; returns what they measured, summed.
fn run_vcpus(
    vcpus: Vec<Vcpu>,
    latch: &Arc<StopLatch>,
    timeout: Option<Duration>,
) -> Result<VcpuStats, Error> {
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
                    let result = vcpu.run(&latch, None);
                    (vcpu, result)
                })
                .map_err(Error::Thread)
        })
        .collect::<Result<_, _>>()?;
    let mut result = boot_vcpu.run(latch, timeout).map_err(Error::from);
    let mut stats = boot_vcpu.stats.clone();
    for handle in others {
        match handle.join() {
            Ok((vcpu, r)) => {
                stats.merge(&vcpu.stats);
                if result.is_ok() {
                    result = r.map_err(Error::from);
                }
            }
            Err(_) => {
                result = Err(Error::Thread(std::io::Error::other(
                    "a vCPU thread panicked",
                )))
            }
        }
    }
    result.map(|()| stats)
}

/// What the boot code needs of the configuration, with this host's command-line additions.
fn boot_args<'a>(config: &'a VmConfig, host: &Workarounds) -> BootArgs<'a> {
    BootArgs {
        raw: RawArgs {
            mode: config.mode.unwrap_or_default(),
            load_addr: config.load_addr,
            entry: config.entry,
        },
        cmdline: CmdlineArgs {
            base: config.cmdline.as_deref(),
            host_params: host.cmdline,
            init_args: &config.init_args,
        },
        initrd: config.initrd.as_deref(),
    }
}

/// The PC that Linux expects: in-kernel PIC, IO-APIC, local APICs and PIT, and an MP table
/// that lists `cpus` processors. Returns the trigger of the serial line's interrupt (IRQ 4).
fn create_pc_platform(vm: &VmFd, mem: &GuestMem, cpus: u8) -> Result<IrqTrigger, Error> {
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| kvm_err("eventfd")(e.into()))?;
    vm.register_irqfd(&evt, COM1_GSI)
        .map_err(kvm_err("KVM_IRQFD"))?;
    let table = mptable::build(layout::MPTABLE_START as u32, cpus);
    mem.write_slice(&table, GuestAddress(layout::MPTABLE_START))
        .map_err(|source| boot::Error::Memory {
            what: "the MP table",
            source,
        })?;
    Ok(IrqTrigger::new(evt))
}

/// The UART, the exit port, the debug port and the i8042, on the port bus; the MMIO bus is
/// empty.
fn create_devices(config: &VmConfig, serial_irq: IrqTrigger) -> Result<Devices, Error> {
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        serial_irq,
        serial_sink(&config.serial, config.serial_limit)?,
    )));
    let debug_port = Arc::new(Mutex::new(DebugPort::default()));
    let i8042: bus::SharedDevice = Arc::new(Mutex::new(I8042::default()));
    let mut io_bus = Bus::new();
    io_bus.insert(COM1_PORT, COM1_LEN, serial.clone())?;
    io_bus.insert(EXIT_PORT, 1, Arc::new(Mutex::new(ExitPort)))?;
    io_bus.insert(DEBUG_PORT, 1, debug_port.clone())?;
    io_bus.insert_with_origin(I8042_DATA_PORT, 1, I8042_DATA_PORT, i8042.clone())?;
    io_bus.insert_with_origin(I8042_COMMAND_PORT, 1, I8042_DATA_PORT, i8042)?;
    Ok(Devices {
        serial,
        debug_port,
        io_bus: Arc::new(io_bus),
        mmio_bus: Arc::new(Bus::new()),
    })
}

/// The user's hidden CPUID features and the host's, each once.
fn hidden_cpu_features(config: &VmConfig, host: &Workarounds) -> Vec<String> {
    let mut hidden = config.hide_cpu_features.clone();
    for name in host.hidden_cpu_features {
        if !hidden.iter().any(|h| h == name) {
            hidden.push(name.to_string());
        }
    }
    hidden
}

/// Creates the vCPUs with their CPUID; Linux's get their local APIC's LINT pins wired, and the
/// boot processor its entry state. The others wait, in the in-kernel local APIC, for the guest
/// to start them (INIT, SIPI).
fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    mem: &GuestMem,
    boot: &BootImage,
    devices: &Devices,
    config: &VmConfig,
    hidden: &[String],
) -> Result<Vec<Vcpu>, Error> {
    let hide: Vec<_> = hidden.iter().filter_map(|n| cpuid::feature(n)).collect();
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::with_capacity(usize::from(config.cpus));
    for id in 0..config.cpus {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut cpuid = supported.clone();
        cpuid::filter_entries(cpuid.as_mut_slice(), id, config.cpus, &hide);
        fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        if boot.linux {
            let mut lapic = fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
            regs::set_lint_modes(&mut lapic.regs);
            fd.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))?;
        }
        if id == 0 {
            let mut sregs = fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
            let regs = boot::setup_entry(mem, &boot.entry, &mut sregs)?;
            fd.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
            fd.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
        }
        vcpus.push(Vcpu::new(
            fd,
            devices.io_bus.clone(),
            devices.mmio_bus.clone(),
            mem.clone(),
            config.unclaimed_mmio,
            config.time_exits,
        ));
    }
    Ok(vcpus)
}

fn serial_sink(output: &SerialOutput, limit: Option<u64>) -> Result<SerialSink, Error> {
    Ok(match output {
        SerialOutput::Stdout => SerialSink::stdout(limit),
        SerialOutput::Null => SerialSink::null(limit),
        SerialOutput::Buffer(buf) => SerialSink::new(Box::new(buf.clone()), limit),
        SerialOutput::File(path) => {
            SerialSink::file(path, limit).map_err(|source| Error::SerialFile {
                path: path.clone(),
                source,
            })?
        }
    })
}

/// Builds and runs a VM in one call.
pub fn run(config: &VmConfig) -> Result<RunOutcome, Error> {
    Vmm::new(config)?.run()
}
