//! The exit dispatch: one function from (devices, exit) to an outcome, shaped like
//! Firecracker's `handle_kvm_exit`. It touches no `kvm_run` and no vCPU file descriptor, so the
//! unit tests below drive it with fabricated exits. Port I/O and MMIO go to the buses; the
//! dispatch knows no port numbers.
//!
//! Source of truth: the `KVM_RUN` section of the kernel's KVM API documentation
//! (`Documentation/virt/kvm/api.rst`), for what each exit carries.

use kvm_bindings::kvm_debug_exit_arch;

use crate::config::UnclaimedMmio;
use crate::crash::CrashKind;
use crate::devices::Bus;
use crate::stats::{Unclaimed, VcpuStats};
use crate::stop::StopReason;

/// `KVM_SYSTEM_EVENT_SHUTDOWN`.
pub const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// `KVM_SYSTEM_EVENT_RESET`.
pub const SYSTEM_EVENT_RESET: u32 = 2;
/// `KVM_INTERNAL_ERROR_EMULATION`.
pub const INTERNAL_ERROR_EMULATION: u32 = 1;

/// One exit of `KVM_RUN`, as the dispatch sees it.
#[derive(Debug)]
pub enum Exit<'a> {
    /// `in`: fill `data`, `size` bytes per element (string instructions carry several).
    IoIn {
        /// The port.
        port: u16,
        /// Bytes per access: 1, 2 or 4.
        size: usize,
        /// Every element's bytes, one after the other.
        data: &'a mut [u8],
    },
    /// `out`: `data` holds the elements written, `size` bytes each.
    IoOut {
        /// The port.
        port: u16,
        /// Bytes per access: 1, 2 or 4.
        size: usize,
        /// Every element's bytes, one after the other.
        data: &'a [u8],
    },
    /// A read of guest-physical memory that is not RAM.
    MmioRead(u64, &'a mut [u8]),
    /// A write of guest-physical memory that is not RAM.
    MmioWrite(u64, &'a [u8]),
    /// `hlt` without an in-kernel irqchip.
    Hlt,
    /// `KVM_EXIT_SHUTDOWN`: a triple fault.
    Shutdown,
    /// `KVM_EXIT_FAIL_ENTRY` with the hardware reason.
    FailEntry(u64),
    /// `KVM_EXIT_INTERNAL_ERROR` with its suberror and data words.
    InternalError {
        /// KVM's suberror code.
        suberror: u32,
        /// The data words KVM gave.
        data: Vec<u64>,
    },
    /// `KVM_EXIT_INTR`, or `KVM_RUN` ending with EINTR: a signal (a kick or the timeout).
    Interrupted,
    /// `KVM_EXIT_SYSTEM_EVENT` of this type.
    SystemEvent(u32),
    /// `KVM_EXIT_DEBUG`: a single step, a breakpoint or a watchpoint of the debugger.
    Debug(kvm_debug_exit_arch),
    /// Anything else, named.
    Other(String),
}

/// The outcome of one exit.
#[derive(Debug)]
pub enum VcpuEmulation {
    /// Handled; run the guest again.
    Handled,
    /// `KVM_RUN` was interrupted (a kick or the timeout).
    Interrupted,
    /// The VM must stop.
    Stopped(StopReason),
    /// The guest crashed; the vCPU adds its registers and code bytes to make the report.
    Crashed(CrashKind),
    /// The debugger's stop (exception, PC, DR6, DR7): the vCPU hands it to the debugger.
    Debug(kvm_debug_exit_arch),
}

/// What the dispatch routes accesses to.
#[derive(Debug)]
pub struct Devices<'a> {
    /// The port-I/O bus.
    pub io: &'a Bus,
    /// The MMIO bus.
    pub mmio: &'a Bus,
    /// What an MMIO access no device claims means.
    pub unclaimed_mmio: UnclaimedMmio,
}

/// Handles one exit: counts it by reason, routes device accesses and says what follows.
///
/// Inlined into its two callers, the run loop and the tracer's one call site, so that the run
/// loop without `--trace` pays no call for it.
#[inline(always)]
pub fn handle_exit(devices: &Devices<'_>, exit: Exit<'_>, stats: &mut VcpuStats) -> VcpuEmulation {
    let c = &mut stats.exits;
    match exit {
        Exit::IoOut { port, size, data } => {
            c.io_out += 1;
            port_out(devices.io, port, size, data, &mut stats.unclaimed)
        }
        Exit::IoIn { port, size, data } => {
            c.io_in += 1;
            port_in(devices.io, port, size, data, &mut stats.unclaimed)
        }
        Exit::MmioWrite(addr, data) => {
            c.mmio_write += 1;
            match devices.mmio.write(addr, data) {
                Some(Some(request)) => VcpuEmulation::Stopped(request.into()),
                Some(None) => VcpuEmulation::Handled,
                None => unclaimed_mmio(devices.unclaimed_mmio, addr, data.len(), true, stats),
            }
        }
        Exit::MmioRead(addr, data) => {
            c.mmio_read += 1;
            if devices.mmio.read(addr, data) {
                VcpuEmulation::Handled
            } else {
                data.fill(0xff);
                unclaimed_mmio(devices.unclaimed_mmio, addr, data.len(), false, stats)
            }
        }
        Exit::Hlt => {
            c.hlt += 1;
            // KVM hands `hlt` to userspace only when it has no irqchip to wait on: nothing
            // can ever wake this vCPU again.
            VcpuEmulation::Stopped(StopReason::Halted)
        }
        Exit::Shutdown => {
            c.shutdown += 1;
            VcpuEmulation::Crashed(CrashKind::TripleFault)
        }
        Exit::FailEntry(reason) => {
            c.fail_entry += 1;
            VcpuEmulation::Crashed(CrashKind::FailEntry { reason })
        }
        Exit::InternalError { suberror, data } => {
            c.internal_error += 1;
            VcpuEmulation::Crashed(if suberror == INTERNAL_ERROR_EMULATION {
                CrashKind::EmulationFailure
            } else {
                CrashKind::InternalError { suberror, data }
            })
        }
        Exit::Interrupted => {
            c.interrupted += 1;
            VcpuEmulation::Interrupted
        }
        Exit::SystemEvent(kind) => {
            c.system_event += 1;
            match kind {
                SYSTEM_EVENT_SHUTDOWN => VcpuEmulation::Stopped(StopReason::PowerOff),
                SYSTEM_EVENT_RESET => VcpuEmulation::Stopped(StopReason::Reset),
                other => VcpuEmulation::Crashed(CrashKind::UnexpectedExit(format!(
                    "KVM_EXIT_SYSTEM_EVENT type {other}"
                ))),
            }
        }
        Exit::Debug(arch) => {
            c.debug += 1;
            VcpuEmulation::Debug(arch)
        }
        Exit::Other(name) => {
            c.other += 1;
            VcpuEmulation::Crashed(CrashKind::UnexpectedExit(name))
        }
    }
}

/// `out`: one bus write per element; unclaimed writes are dropped and counted.
#[inline(always)] // into handle_exit, with it
fn port_out(
    bus: &Bus,
    port: u16,
    size: usize,
    data: &[u8],
    unclaimed: &mut Unclaimed,
) -> VcpuEmulation {
    for element in data.chunks(size.max(1)) {
        match bus.write(u64::from(port), element) {
            Some(Some(request)) => return VcpuEmulation::Stopped(request.into()),
            Some(None) => {}
            None => {
                unclaimed.port_writes += 1;
                unclaimed.note(true, u64::from(port));
            }
        }
    }
    VcpuEmulation::Handled
}

/// `in`: one bus read per element; unclaimed reads see all-ones and are counted.
#[inline(always)] // into handle_exit, with it
fn port_in(
    bus: &Bus,
    port: u16,
    size: usize,
    data: &mut [u8],
    unclaimed: &mut Unclaimed,
) -> VcpuEmulation {
    for element in data.chunks_mut(size.max(1)) {
        if !bus.read(u64::from(port), element) {
            element.fill(0xff);
            unclaimed.port_reads += 1;
            unclaimed.note(false, u64::from(port));
        }
    }
    VcpuEmulation::Handled
}

/// An MMIO access no device claims: a crash, unless the user asked to ignore them (reads
/// then see the all-ones the caller put there).
fn unclaimed_mmio(
    policy: UnclaimedMmio,
    addr: u64,
    len: usize,
    write: bool,
    stats: &mut VcpuStats,
) -> VcpuEmulation {
    if policy == UnclaimedMmio::Fatal {
        return VcpuEmulation::Crashed(CrashKind::UnclaimedMmio { addr, len, write });
    }
    let u = &mut stats.unclaimed;
    if write {
        u.mmio_writes += 1;
    } else {
        u.mmio_reads += 1;
    }
    u.note(write, addr);
    VcpuEmulation::Handled
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::devices::{BusDevice, DeviceRequest};

    /// Records every access; reads return `0x10 + offset` in each byte.
    #[derive(Default)]
    struct Recorder(Vec<(bool, u64, Vec<u8>)>);

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.0.push((false, offset, data.to_vec()));
            data.fill(0x10 + offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
            self.0.push((true, offset, data.to_vec()));
            (data == [0xee]).then_some(DeviceRequest::Exit(7))
        }
    }

    struct Machine {
        io: Bus,
        mmio: Bus,
        port_dev: Arc<Mutex<Recorder>>,
        mmio_dev: Arc<Mutex<Recorder>>,
        stats: VcpuStats,
    }

    const PORT: u16 = 0x3f8;
    const MMIO: u64 = 0xd000_0000;

    impl Machine {
        fn new() -> Self {
            let port_dev = Arc::new(Mutex::new(Recorder::default()));
            let mmio_dev = Arc::new(Mutex::new(Recorder::default()));
            let mut io = Bus::new();
            io.insert("recorder", u64::from(PORT), 8, port_dev.clone())
                .unwrap();
            let mut mmio = Bus::new();
            mmio.insert("recorder", MMIO, 0x1000, mmio_dev.clone())
                .unwrap();
            Machine {
                io,
                mmio,
                port_dev,
                mmio_dev,
                stats: VcpuStats::default(),
            }
        }

        fn handle(&mut self, exit: Exit<'_>, unclaimed_mmio: UnclaimedMmio) -> VcpuEmulation {
            let devices = Devices {
                io: &self.io,
                mmio: &self.mmio,
                unclaimed_mmio,
            };
            handle_exit(&devices, exit, &mut self.stats)
        }

        fn port_accesses(&self) -> Vec<(bool, u64, Vec<u8>)> {
            self.port_dev.lock().unwrap().0.clone()
        }
    }

    #[test]
    fn port_reads_and_writes_of_each_size_reach_the_device() {
        let mut m = Machine::new();
        for size in [1, 2, 4] {
            let mut data = vec![0u8; size];
            let out = m.handle(
                Exit::IoIn {
                    port: PORT + 1,
                    size,
                    data: &mut data,
                },
                UnclaimedMmio::Fatal,
            );
            assert!(matches!(out, VcpuEmulation::Handled));
            assert_eq!(data, vec![0x11; size], "a read of {size} bytes");
            let written: Vec<u8> = (1..=size as u8).collect();
            let out = m.handle(
                Exit::IoOut {
                    port: PORT,
                    size,
                    data: &written,
                },
                UnclaimedMmio::Fatal,
            );
            assert!(matches!(out, VcpuEmulation::Handled));
        }
        let writes: Vec<Vec<u8>> = m
            .port_accesses()
            .into_iter()
            .filter(|(w, _, _)| *w)
            .map(|(_, offset, d)| {
                assert_eq!(offset, 0);
                d
            })
            .collect();
        assert_eq!(writes, [vec![1], vec![1, 2], vec![1, 2, 3, 4]]);
        // Reads hand the device a zeroed buffer.
        assert!(m
            .port_accesses()
            .iter()
            .filter(|(w, _, _)| !*w)
            .all(|(_, offset, d)| *offset == 1 && d.iter().all(|b| *b == 0)));
        assert_eq!((m.stats.exits.io_in, m.stats.exits.io_out), (3, 3));
    }

    #[test]
    fn string_io_is_split_into_one_access_per_element() {
        let mut m = Machine::new();
        let out = m.handle(
            Exit::IoOut {
                port: PORT,
                size: 2,
                data: &[1, 2, 3, 4, 5, 6],
            },
            UnclaimedMmio::Fatal,
        );
        assert!(matches!(out, VcpuEmulation::Handled));
        let mut data = [0u8; 3];
        m.handle(
            Exit::IoIn {
                port: PORT + 2,
                size: 1,
                data: &mut data,
            },
            UnclaimedMmio::Fatal,
        );
        assert_eq!(data, [0x12; 3]);
        let accesses = m.port_accesses();
        assert_eq!(accesses.len(), 6);
        assert_eq!(
            accesses[..3]
                .iter()
                .map(|(_, _, d)| d.clone())
                .collect::<Vec<_>>(),
            [vec![1, 2], vec![3, 4], vec![5, 6]]
        );
        // One exit each, however many elements.
        assert_eq!((m.stats.exits.io_out, m.stats.exits.io_in), (1, 1));
    }

    #[test]
    fn a_device_request_stops_the_vm_at_that_element() {
        let mut m = Machine::new();
        let out = m.handle(
            Exit::IoOut {
                port: PORT,
                size: 1,
                data: &[0x41, 0xee, 0x42],
            },
            UnclaimedMmio::Fatal,
        );
        assert!(matches!(
            out,
            VcpuEmulation::Stopped(StopReason::GuestExit(7))
        ));
        assert_eq!(
            m.port_accesses().len(),
            2,
            "the element after the stop is not sent"
        );
    }

    #[test]
    fn unclaimed_ports_read_all_ones_drop_writes_and_are_counted() {
        let mut m = Machine::new();
        let mut data = [0u8; 4];
        let out = m.handle(
            Exit::IoIn {
                port: 0x70,
                size: 2,
                data: &mut data,
            },
            UnclaimedMmio::Fatal,
        );
        assert!(matches!(out, VcpuEmulation::Handled));
        assert_eq!(data, [0xff; 4]);
        m.handle(
            Exit::IoOut {
                port: 0x80,
                size: 1,
                data: &[1, 2, 3],
            },
            UnclaimedMmio::Fatal,
        );
        let u = &m.stats.unclaimed;
        assert_eq!((u.port_reads, u.port_writes), (2, 3));
        assert_eq!(u.addresses, ["r 0x70", "w 0x80"]);
    }

    #[test]
    fn claimed_mmio_reaches_the_device() {
        let mut m = Machine::new();
        let mut data = [0u8; 4];
        let out = m.handle(Exit::MmioRead(MMIO + 4, &mut data), UnclaimedMmio::Fatal);
        assert!(matches!(out, VcpuEmulation::Handled));
        assert_eq!(data, [0x14; 4]);
        let out = m.handle(Exit::MmioWrite(MMIO + 8, &[9, 9]), UnclaimedMmio::Fatal);
        assert!(matches!(out, VcpuEmulation::Handled));
        let out = m.handle(Exit::MmioWrite(MMIO, &[0xee]), UnclaimedMmio::Fatal);
        assert!(matches!(
            out,
            VcpuEmulation::Stopped(StopReason::GuestExit(7))
        ));
        let accesses = m.mmio_dev.lock().unwrap().0.clone();
        assert_eq!(accesses[1], (true, 8, vec![9, 9]));
        assert_eq!((m.stats.exits.mmio_read, m.stats.exits.mmio_write), (1, 2));
    }

    #[test]
    fn unclaimed_mmio_is_a_crash_unless_ignored() {
        let mut m = Machine::new();
        let mut data = [0u8; 8];
        let out = m.handle(Exit::MmioRead(0x1234, &mut data), UnclaimedMmio::Fatal);
        assert!(matches!(
            out,
            VcpuEmulation::Crashed(CrashKind::UnclaimedMmio {
                addr: 0x1234,
                len: 8,
                write: false
            })
        ));
        let out = m.handle(Exit::MmioWrite(0x1234, &[1]), UnclaimedMmio::Fatal);
        assert!(matches!(
            out,
            VcpuEmulation::Crashed(CrashKind::UnclaimedMmio { write: true, .. })
        ));
        let out = m.handle(Exit::MmioRead(0x1234, &mut data), UnclaimedMmio::Ignore);
        assert!(matches!(out, VcpuEmulation::Handled));
        assert_eq!(data, [0xff; 8]);
        let out = m.handle(Exit::MmioWrite(0x2000, &[1]), UnclaimedMmio::Ignore);
        assert!(matches!(out, VcpuEmulation::Handled));
        let u = &m.stats.unclaimed;
        assert_eq!((u.mmio_reads, u.mmio_writes), (1, 1));
    }

    #[test]
    fn halts_faults_and_system_events_end_the_run_with_their_reason() {
        let mut m = Machine::new();
        let fatal = UnclaimedMmio::Fatal;
        assert!(matches!(
            m.handle(Exit::Hlt, fatal),
            VcpuEmulation::Stopped(StopReason::Halted)
        ));
        assert!(matches!(
            m.handle(Exit::Shutdown, fatal),
            VcpuEmulation::Crashed(CrashKind::TripleFault)
        ));
        assert!(matches!(
            m.handle(Exit::FailEntry(0x21), fatal),
            VcpuEmulation::Crashed(CrashKind::FailEntry { reason: 0x21 })
        ));
        assert!(matches!(
            m.handle(Exit::SystemEvent(SYSTEM_EVENT_SHUTDOWN), fatal),
            VcpuEmulation::Stopped(StopReason::PowerOff)
        ));
        assert!(matches!(
            m.handle(Exit::SystemEvent(SYSTEM_EVENT_RESET), fatal),
            VcpuEmulation::Stopped(StopReason::Reset)
        ));
        match m.handle(Exit::SystemEvent(9), fatal) {
            VcpuEmulation::Crashed(CrashKind::UnexpectedExit(name)) => {
                assert!(name.contains("type 9"), "{name}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            m.handle(Exit::Interrupted, fatal),
            VcpuEmulation::Interrupted
        ));
        assert!(matches!(
            m.handle(Exit::Other("Debug".into()), fatal),
            VcpuEmulation::Crashed(CrashKind::UnexpectedExit(_))
        ));
        let debug = kvm_debug_exit_arch {
            exception: 1,
            pc: 0x10_0000,
            dr6: 0xffff_0ff1,
            ..Default::default()
        };
        assert!(matches!(
            m.handle(Exit::Debug(debug), fatal),
            VcpuEmulation::Debug(d) if d.pc == 0x10_0000 && d.dr6 == 0xffff_0ff1
        ));
        let c = &m.stats.exits;
        assert_eq!(
            (
                c.hlt,
                c.shutdown,
                c.fail_entry,
                c.system_event,
                c.interrupted,
                c.debug,
                c.other
            ),
            (1, 1, 1, 3, 1, 1, 1)
        );
        assert_eq!(c.total(), 9);
    }

    #[test]
    fn internal_errors_tell_emulation_failures_from_the_rest() {
        let mut m = Machine::new();
        let out = m.handle(
            Exit::InternalError {
                suberror: INTERNAL_ERROR_EMULATION,
                data: vec![],
            },
            UnclaimedMmio::Fatal,
        );
        assert!(matches!(
            out,
            VcpuEmulation::Crashed(CrashKind::EmulationFailure)
        ));
        let out = m.handle(
            Exit::InternalError {
                suberror: 3,
                data: vec![0x80000b0e, 0x31],
            },
            UnclaimedMmio::Fatal,
        );
        match out {
            VcpuEmulation::Crashed(CrashKind::InternalError { suberror, data }) => {
                assert_eq!((suberror, data), (3, vec![0x80000b0e, 0x31]))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.stats.exits.internal_error, 2);
    }
}
