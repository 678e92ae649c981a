//! The VMM: owns KVM, the VM, guest memory, the vCPU and the buses. `Vmm::new` builds a VM
//! that is ready to run; `Vmm::run` runs it to the end and says why it stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VmFd};

use crate::arch::x86_64::cpuid;
use crate::boot::{self, layout, BootImage};
use crate::config::{self, SerialOutput, VmConfig};
use crate::devices::exit_port::{ExitPort, EXIT_PORT};
use crate::devices::i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
use crate::devices::serial::{IrqTrigger, SerialDevice, SerialSink, COM1_LEN, COM1_PORT};
use crate::devices::{bus, Bus};
use crate::memory::{self, GuestMem};
use crate::stats::{Stats, Timeline};
use crate::vcpu::{self, StopReason, Vcpu};
use crate::{host, kick, status};

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
    /// The timeout timer could not be armed.
    #[error("cannot arm the --timeout timer: {0}")]
    Timer(std::io::Error),
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
            | Error::Timer(_)
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

/// A VM ready to run.
pub struct Vmm {
    // Field order is drop order: the vCPU and the VM go before the memory KVM maps.
    vcpu: Vcpu,
    _vm: VmFd,
    _kvm: Kvm,
    _mem: GuestMem,
    serial: Arc<Mutex<SerialDevice>>,
    boot: BootImage,
    timeout: Option<Duration>,
    start: Instant,
    ready: Instant,
}

impl Vmm {
    /// Builds the VM `config` describes.
    pub fn new(config: &VmConfig) -> Result<Self, Error> {
        Self::new_at(config, Instant::now())
    }

    /// Builds the VM, measuring times from `start` (the CLI passes the start of `main`).
    pub fn new_at(config: &VmConfig, start: Instant) -> Result<Self, Error> {
        config.validate()?;
        let kvm = host::open_kvm()?;
        let vm = kvm.create_vm().map_err(host::Error::CreateVm)?;
        let mem = memory::create(config.mem_size)?;
        let boot = boot::load(config, &mem)?;
        memory::register(&vm, &mem)?;
        // Intel CPUs without "unrestricted guest" need these pages to run real mode.
        vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;

        let serial = Arc::new(Mutex::new(SerialDevice::new(
            IrqTrigger::default(),
            serial_sink(&config.serial, config.serial_limit)?,
        )));
        let i8042: bus::SharedDevice = Arc::new(Mutex::new(I8042::default()));
        let mut io_bus = Bus::new();
        io_bus.insert(COM1_PORT, COM1_LEN, serial.clone())?;
        io_bus.insert(EXIT_PORT, 1, Arc::new(Mutex::new(ExitPort)))?;
        io_bus.insert_with_origin(I8042_DATA_PORT, 1, I8042_DATA_PORT, i8042.clone())?;
        io_bus.insert_with_origin(I8042_COMMAND_PORT, 1, I8042_DATA_PORT, i8042)?;
        let mmio_bus = Bus::new();

        let vcpu_fd = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        cpuid::filter_entries(cpuid.as_mut_slice(), 0);
        vcpu_fd
            .set_cpuid2(&cpuid)
            .map_err(kvm_err("KVM_SET_CPUID2"))?;
        let mut sregs = vcpu_fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        let regs = boot::setup_entry(&mem, &boot.entry, &mut sregs)?;
        vcpu_fd
            .set_sregs(&sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu_fd.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;

        let vcpu = Vcpu::new(
            vcpu_fd,
            Arc::new(io_bus),
            Arc::new(mmio_bus),
            mem.clone(),
            config.unclaimed_mmio,
        );
        Ok(Vmm {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            _mem: mem,
            serial,
            boot,
            timeout: config.timeout,
            start,
            ready: Instant::now(),
        })
    }

    /// What was loaded.
    pub fn boot_image(&self) -> &BootImage {
        &self.boot
    }

    /// Runs the guest until it stops.
    pub fn run(mut self) -> Result<RunOutcome, Error> {
        let mut deadline = None;
        let mut _timer = None;
        if let Some(timeout) = self.timeout {
            kick::install_handler()
                .map_err(|e| Error::Timer(std::io::Error::from_raw_os_error(e.errno())))?;
            // The deadline is taken before the timer is armed, so the kick never comes early.
            deadline = Some(Instant::now() + timeout);
            _timer =
                Some(kick::KickTimer::arm(kick::current_tid(), timeout).map_err(Error::Timer)?);
        }
        let reason = self.vcpu.run(deadline)?;
        let end = Instant::now();
        let exit_status = status::for_stop(&reason);
        let serial = bus_lock(&self.serial);
        let timeline = Timeline {
            start: self.start,
            ready: self.ready,
            first_run: self.vcpu.stats.first_run,
            first_serial_byte: serial.first_byte_at(),
            end,
        };
        let stats = Stats::new(
            reason.to_string(),
            exit_status,
            self.boot.summary.clone(),
            &self.vcpu.stats,
            serial.bytes_written(),
            &timeline,
        );
        drop(serial);
        Ok(RunOutcome {
            reason,
            exit_status,
            stats,
        })
    }
}

fn bus_lock(serial: &Arc<Mutex<SerialDevice>>) -> std::sync::MutexGuard<'_, SerialDevice> {
    serial.lock().unwrap_or_else(|p| p.into_inner())
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
