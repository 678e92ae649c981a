//! The steps that build a VM, shared by a cold boot (`Vmm::new`) and a restore
//! (`Vmm::restore`): the PC platform, the devices on their buses, the vCPUs.

use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::Epoll;
use vmm_sys_util::eventfd::EventFd;

use super::{kvm_err, Devices, Error};
use crate::arch::x86_64::{cpuid, layout, mptable, regs};
use crate::boot::cmdline::CmdlineArgs;
use crate::boot::raw::RawArgs;
use crate::boot::{self, BootArgs, BootImage};
use crate::config::{SerialOutput, VmConfig};
use crate::devices::bus;
use crate::devices::debug_exit::{DebugExit, DebugExitConfig};
use crate::devices::debug_port::{DebugPort, DEBUG_PORT};
use crate::devices::exit_port::{ExitPort, EXIT_PORT};
use crate::devices::i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
use crate::devices::serial::{IrqTrigger, SerialDevice, SerialSink, COM1_LEN, COM1_PORT};
use crate::devices::virtio::mmio::{MmioTransport, SharedTransport, NOTIFY_OFFSET, WINDOW_SIZE};
use crate::devices::virtio::setup::{self, OpenDevices};
use crate::devices::virtio::{EventRegistry, Interrupt};
use crate::devices::{lock, Bus};
use crate::host::Workarounds;
use crate::memory::GuestMem;
use crate::snapshot::state::SerialState;
use crate::stop::SnapshotTrigger;
use crate::trace::{self, tracer::Tracer};
use crate::vcpu::Vcpu;

/// The serial line's interrupt: ISA IRQ 4, COM1's.
const COM1_GSI: u32 = 4;

/// What the boot code needs of the configuration, with this host's command-line additions.
pub fn boot_args<'a>(
    config: &'a VmConfig,
    host: &Workarounds,
    device_params: &'a str,
) -> BootArgs<'a> {
    BootArgs {
        raw: RawArgs {
            mode: config.mode.unwrap_or_default(),
            load_addr: config.load_addr,
            entry: config.entry,
        },
        cmdline: CmdlineArgs {
            base: config.cmdline.as_deref(),
            host_params: host.cmdline,
            device_params,
            init_args: &config.init_args,
        },
        initrd: config.initrd.as_deref(),
        modules: &config.modules,
    }
}

/// The PC that Linux expects: in-kernel PIC, IO-APIC, local APICs and PIT. Returns the
/// trigger of the serial line's interrupt (IRQ 4).
pub fn create_pc_platform(vm: &VmFd) -> Result<IrqTrigger, Error> {
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
    Ok(IrqTrigger::new(evt))
}

/// The MP table that lists `cpus` processors, where Linux looks for it.
pub fn write_mptable(mem: &GuestMem, cpus: u8) -> Result<(), Error> {
    let table = mptable::build(layout::MPTABLE_START as u32, cpus);
    mem.write_slice(&table, GuestAddress(layout::MPTABLE_START))
        .map_err(|source| boot::Error::Memory {
            what: "the MP table",
            source,
        })?;
    Ok(())
}

/// How the devices are made.
pub struct DeviceArgs<'a> {
    /// Where serial output goes.
    pub serial: &'a SerialOutput,
    /// The serial output limit.
    pub serial_limit: Option<u64>,
    /// The UART's interrupt.
    pub serial_irq: IrqTrigger,
    /// The UART's saved registers, for a restore.
    pub serial_state: Option<&'a SerialState>,
    /// Fired by the guest's snapshot request (a value on the debug port).
    pub snapshot: SnapshotTrigger,
    /// QEMU's debug-exit device in place of kvmini's exit port.
    pub debug_exit: Option<DebugExitConfig>,
    /// The virtio devices, in slot order.
    pub virtio: &'a [SharedTransport],
    /// The trace, which serial output to the same file or terminal takes turns with.
    pub trace: Option<&'a trace::Sink>,
}

/// The UART, the exit port (or QEMU's debug-exit device), the debug port and the i8042, on
/// the port bus; the virtio devices on the MMIO bus.
pub fn create_devices(args: DeviceArgs<'_>) -> Result<Devices, Error> {
    let mut sink = serial_sink(args.serial, args.serial_limit)?;
    if let Some(trace) = args.trace {
        if let Some(line) = trace.shared_line(sink.fd()) {
            // Two descriptors kvmini opened on one file would write over each other.
            if let (SerialOutput::File(_), Some(path)) = (args.serial, trace.path()) {
                return Err(Error::TraceFile {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "it is the --serial file too; give the trace a file of its own",
                    ),
                });
            }
            sink.share_lines(line);
        }
    }
    let uart = match args.serial_state {
        Some(state) => SerialDevice::from_state(state, args.serial_irq, sink)
            .map_err(|_| crate::snapshot::Error::Corrupt("the UART's state"))?,
        None => SerialDevice::new(args.serial_irq, sink),
    };
    let serial = Arc::new(Mutex::new(uart));
    let debug_port = Arc::new(Mutex::new(DebugPort::new(args.snapshot)));
    let i8042: bus::SharedDevice = Arc::new(Mutex::new(I8042::default()));
    let mut io_bus = Bus::new();
    io_bus.insert("serial", COM1_PORT, COM1_LEN, serial.clone())?;
    match args.debug_exit {
        Some(d) => io_bus.insert(
            "debug-exit",
            u64::from(d.iobase),
            u64::from(d.iosize),
            Arc::new(Mutex::new(DebugExit)),
        )?,
        None => io_bus.insert("exit-port", EXIT_PORT, 1, Arc::new(Mutex::new(ExitPort)))?,
    }
    io_bus.insert("debug-port", DEBUG_PORT, 1, debug_port.clone())?;
    let (data, command) = (I8042_DATA_PORT, I8042_COMMAND_PORT);
    io_bus.insert_with_origin("i8042", data, 1, data, i8042.clone())?;
    io_bus.insert_with_origin("i8042", command, 1, data, i8042)?;
    let mut mmio_bus = Bus::new();
    for (i, transport) in args.virtio.iter().enumerate() {
        let (base, _) = setup::slot(i);
        let name = format!("{}@{base:#x}", lock(transport).name());
        mmio_bus.insert(name, base, WINDOW_SIZE, transport.clone())?;
    }
    Ok(Devices {
        serial,
        debug_port,
        io_bus: Arc::new(io_bus),
        mmio_bus: Arc::new(mmio_bus),
    })
}

/// Puts each virtio device behind its MMIO transport, with its interrupt line on an irqfd
/// and an ioeventfd on its notify register for each queue (KVM matches the 32-bit write of
/// the queue's index and signals the I/O thread without an exit).
pub fn attach_virtio(
    vm: &VmFd,
    mem: &GuestMem,
    open: OpenDevices,
    epoll: &Arc<Epoll>,
) -> Result<Vec<SharedTransport>, Error> {
    let io_err = |what| move |e: std::io::Error| kvm_err(what)(e.into());
    let mut transports = Vec::with_capacity(open.devices.len());
    for (i, device) in open.devices.into_iter().enumerate() {
        let (base, irq) = setup::slot(i);
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        vm.register_irqfd(&irqfd, irq)
            .map_err(kvm_err("KVM_IRQFD"))?;
        let events = EventRegistry::new(epoll.clone(), i as u32);
        let transport =
            MmioTransport::new(device, mem.clone(), Interrupt::new(Some(irqfd)), events)
                .map_err(io_err("eventfd"))?;
        let notify = IoEventAddress::Mmio(base + NOTIFY_OFFSET);
        for (q, evt) in transport.queue_evts().iter().enumerate() {
            vm.register_ioevent(evt, &notify, q as u32)
                .map_err(kvm_err("KVM_IOEVENTFD"))?;
        }
        transports.push(Arc::new(Mutex::new(transport)));
    }
    Ok(transports)
}

/// The user's hidden CPUID features and the host's, each once.
pub fn hidden_cpu_features(config: &VmConfig, host: &Workarounds) -> Vec<String> {
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
pub fn create_vcpus(
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
        vcpus.push(devices.vcpu(fd, mem, config.unclaimed_mmio, config.time_exits));
    }
    Ok(vcpus)
}

impl Devices {
    /// A vCPU whose exits reach these devices' buses.
    pub fn vcpu(
        &self,
        fd: kvm_ioctls::VcpuFd,
        mem: &GuestMem,
        unclaimed: crate::config::UnclaimedMmio,
        time_exits: bool,
    ) -> Vcpu {
        Vcpu::new(
            fd,
            self.io_bus.clone(),
            self.mmio_bus.clone(),
            mem.clone(),
            unclaimed,
            time_exits,
        )
    }
}

/// Opens the trace's destination, when there is a trace.
pub fn open_trace(
    config: Option<&trace::TraceConfig>,
    start: std::time::Instant,
) -> Result<Option<Arc<trace::Sink>>, Error> {
    let Some(config) = config else {
        return Ok(None);
    };
    let sink = trace::Sink::open(config, start).map_err(|source| Error::TraceFile {
        path: match &config.output {
            trace::TraceOutput::File(path) => path.clone(),
            _ => "standard error".into(),
        },
        source,
    })?;
    Ok(Some(Arc::new(sink)))
}

/// Gives each vCPU a tracer of its own on `sink`.
pub fn trace_vcpus(vcpus: &mut [Vcpu], sink: Option<&Arc<trace::Sink>>) {
    let Some(sink) = sink else {
        return;
    };
    for (index, vcpu) in vcpus.iter_mut().enumerate() {
        vcpu.trace_with(Tracer::new(sink.clone(), index));
    }
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
