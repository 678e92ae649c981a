//! Saving a stopped VM and building one from a snapshot: the same machine, then its state.

use std::time::Instant;

use kvm_bindings::{
    kvm_irqchip, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;

use std::sync::Arc;

use vmm_sys_util::epoll::Epoll;

use super::build::{self, DeviceArgs};
use super::{kvm_err, set_tss, Devices, Error, Vmm};
use crate::config::{DeviceConfig, RestoreConfig};
use crate::devices::lock;
use crate::devices::serial::IrqTrigger;
use crate::devices::virtio::io_thread;
use crate::devices::virtio::mmio::state::RestoreError;
use crate::devices::virtio::mmio::SharedTransport;
use crate::devices::virtio::setup::{self, OpenDevices};
use crate::devices::virtio::state::VirtioState;
use crate::host;
use crate::memory::{self, GuestMem};
use crate::snapshot::state::{HostState, Machine, PlatformState, VcpuState, VmState};
use crate::snapshot::{self, Writer};
use crate::stats::SnapshotStats;
use crate::stop::SnapshotTrigger;
use crate::vcpu::Vcpu;

/// The in-kernel interrupt controllers, in `KVM_IRQCHIP_*` order.
const IRQCHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

fn save_platform(vm: &VmFd) -> Result<PlatformState, Error> {
    let mut irqchips = Vec::with_capacity(IRQCHIPS.len());
    for chip_id in IRQCHIPS {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip)
            .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
        irqchips.push(chip);
    }
    Ok(PlatformState {
        irqchips,
        pit: vm.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?,
        clock: vm.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?,
    })
}

fn restore_platform(vm: &VmFd, platform: &PlatformState) -> Result<(), Error> {
    for chip in &platform.irqchips {
        vm.set_irqchip(chip).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
    }
    vm.set_pit2(&platform.pit)
        .map_err(kvm_err("KVM_SET_PIT2"))?;
    // Flags 0: the guest's clock goes on from the saved value, not counting the time the VM
    // spent saved (the saved flags say which host clock the value came from).
    let mut clock = platform.clock;
    clock.flags = 0;
    vm.set_clock(&clock).map_err(kvm_err("KVM_SET_CLOCK"))
}

impl Vmm {
    /// Saves the stopped VM through `writer`: the vCPUs, the PC platform, the UART and guest
    /// memory.
    pub(super) fn save(&mut self, writer: Writer) -> Result<SnapshotStats, Error> {
        let start = Instant::now();
        snapshot::vcpu::check_xsave_size(&self.kvm)?;
        for vcpu in &mut self.vcpus {
            vcpu.complete_pending_exit()?;
        }
        let msr_index = self
            .kvm
            .get_msr_index_list()
            .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
        let boot_vcpu = self
            .vcpus
            .first()
            .ok_or(snapshot::Error::Corrupt("no vCPU"))?;
        let tsc_khz = boot_vcpu
            .fd()
            .get_tsc_khz()
            .map_err(kvm_err("KVM_GET_TSC_KHZ"))?;
        let vcpus = self
            .vcpus
            .iter()
            .map(|v| snapshot::vcpu::save(v.fd(), msr_index.as_slice(), self.machine.pc_platform))
            .collect::<Result<Vec<_>, _>>()?;
        let platform = match self.machine.pc_platform {
            true => Some(save_platform(&self.vm)?),
            false => None,
        };
        let mut file = writer.memory_file()?;
        let memory = snapshot::memory::save(&self.mem, &mut file)?;
        let memory_bytes = memory.resident.iter().map(|(_, len)| len).sum();
        let state = VmState {
            host: HostState {
                kind: host::kind().short().to_string(),
                tsc_khz,
            },
            machine: self.machine.clone(),
            vcpus,
            platform,
            serial: lock(&self.devices.serial).state(),
            // The I/O thread keeps still (paused by the caller): the devices are quiescent.
            devices: self.virtio.iter().map(|t| lock(t).save()).collect(),
            memory,
        };
        let state_bytes = writer.finish(&state)?;
        Ok(SnapshotStats {
            save_ms: start.elapsed().as_secs_f64() * 1e3,
            memory_bytes,
            state_bytes,
        })
    }

    /// Builds the VM saved in `config.dir` and gives it its state: ready to run from where the
    /// guest was. Times in the statistics count from here.
    pub fn restore(config: &RestoreConfig) -> Result<Self, Error> {
        let start = Instant::now();
        let (state, memory_file) = snapshot::open(&config.dir)?;
        let VmState {
            host: saved_host,
            machine,
            vcpus: vcpu_states,
            platform,
            serial,
            devices: device_states,
            memory: layout,
        } = state;
        if !config.input.is_empty() && !machine.pc_platform {
            return Err(crate::config::Error::CommandNeedsLinux(config.dir.clone()).into());
        }
        if layout.file_len() != machine.mem_size
            || vcpu_states.len() != usize::from(machine.cpus)
            || (!device_states.is_empty() && !machine.pc_platform)
        {
            return Err(snapshot::Error::Corrupt("the machine and its state disagree").into());
        }
        snapshot::check_host_kind(&saved_host, host::kind().short())?;
        // The devices' files are checked and opened before anything is built.
        let device_config = snapshot::devices::resolve(&device_states, &config.devices)?;
        device_config.validate()?;
        let open_devices = setup::open(&device_config)?;
        let trace = build::open_trace(config.trace.as_ref(), start)?;
        let kvm = host::open_kvm()?;
        snapshot::vcpu::check_xsave_size(&kvm)?;
        let vm = kvm.create_vm().map_err(host::Error::CreateVm)?;
        let mem = snapshot::memory::map(memory_file, &layout)?;
        memory::register(&vm, &mem)?;
        set_tss(&vm)?;
        let serial_irq = match (&platform, machine.pc_platform) {
            (Some(platform), true) => {
                let irq = build::create_pc_platform(&vm)?;
                restore_platform(&vm, platform)?;
                irq
            }
            (None, false) => IrqTrigger::default(),
            _ => return Err(snapshot::Error::Corrupt("the PC platform's state").into()),
        };
        let (virtio, epoll) = restore_virtio(&vm, &mem, open_devices, &device_states)
            .map_err(|e| devices_error(e, &device_states, &device_config))?;
        let devices = build::create_devices(DeviceArgs {
            serial: &config.serial,
            serial_limit: config.serial_limit,
            serial_irq,
            serial_state: Some(&serial),
            snapshot: SnapshotTrigger::default(),
            debug_exit: machine.debug_exit,
            virtio: &virtio,
            trace: trace.as_deref(),
        })?;
        let mut vcpus = restore_vcpus(
            &vm,
            &mem,
            &devices,
            &vcpu_states,
            &saved_host,
            &machine,
            config,
        )?;
        // Last: an interrupt a device raises again must find the vCPUs' local APICs set.
        for transport in &virtio {
            lock(transport).resume();
        }
        build::trace_vcpus(&mut vcpus, trace.as_ref());
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
            input: config.input.clone(),
            snapshot: None,
            snapshot_trigger: SnapshotTrigger::default(),
            snapshot_continue: false,
            seccomp: config.seccomp,
            debug_forbidden_syscall: false,
            trace,
            success_status: None,
            gdb: None,
            start,
            ready: Instant::now(),
        })
    }
}

/// The vCPUs of a restored VM, each with its saved state.
fn restore_vcpus(
    vm: &VmFd,
    mem: &GuestMem,
    devices: &Devices,
    states: &[VcpuState],
    saved_host: &HostState,
    machine: &Machine,
    config: &RestoreConfig,
) -> Result<Vec<Vcpu>, Error> {
    let mut vcpus = Vec::with_capacity(states.len());
    for (id, saved) in states.iter().enumerate() {
        let fd = vm
            .create_vcpu(id as u64)
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let tsc_khz = fd.get_tsc_khz().map_err(kvm_err("KVM_GET_TSC_KHZ"))?;
        snapshot::check_tsc_khz(saved_host, tsc_khz)?;
        snapshot::vcpu::restore(&fd, saved)?;
        vcpus.push(devices.vcpu(fd, mem, machine.unclaimed_mmio, config.time_exits));
    }
    Ok(vcpus)
}

/// Why a restored device could not take its state: which one (by slot).
enum DeviceFailure {
    /// The VM could not be built.
    Vmm(Error),
    /// Device `index` refused.
    State(usize, RestoreError),
}

/// The restored VM's virtio devices: wired as at a boot (irqfds, ioeventfds, the I/O
/// thread's event loop), then given their saved registers and queues. They run once
/// [`MmioTransport::resume`](crate::devices::virtio::mmio::MmioTransport::resume) is called.
fn restore_virtio(
    vm: &VmFd,
    mem: &GuestMem,
    open: OpenDevices,
    states: &[VirtioState],
) -> Result<(Vec<SharedTransport>, Option<Arc<Epoll>>), DeviceFailure> {
    if open.devices.is_empty() {
        return Ok((Vec::new(), None));
    }
    let epoll = io_thread::new_epoll().map_err(|e| DeviceFailure::Vmm(Error::Thread(e)))?;
    let virtio = build::attach_virtio(vm, mem, open, &epoll).map_err(DeviceFailure::Vmm)?;
    for (i, (transport, saved)) in virtio.iter().zip(states).enumerate() {
        lock(transport)
            .restore(saved)
            .map_err(|e| DeviceFailure::State(i, e))?;
    }
    Ok((virtio, Some(epoll)))
}

/// The error for a device that failed to restore, naming it.
fn devices_error(e: DeviceFailure, states: &[VirtioState], config: &DeviceConfig) -> Error {
    match e {
        DeviceFailure::Vmm(e) => e,
        DeviceFailure::State(_, RestoreError::Corrupt(what)) => {
            snapshot::Error::Corrupt(what).into()
        }
        DeviceFailure::State(i, RestoreError::Mismatch(why)) => {
            let device = snapshot::devices::describe(config, i);
            snapshot::devices::mismatch(states, format!("device {i} ({device}): {why}")).into()
        }
    }
}
