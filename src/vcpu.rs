//! One vCPU: the run loop and the exit dispatch. `handle_exit` turns every `KVM_EXIT_*` into a
//! [`VcpuEmulation`] outcome; the loop only loops. Port I/O and MMIO go to the buses, and
//! the loop knows no port numbers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::config::UnclaimedMmio;
use crate::crash::{CrashKind, CrashReport};
use crate::devices::{lock, Bus, DeviceRequest};
use crate::kick;
use crate::memory::GuestMem;
use crate::stats::VcpuStats;

/// `KVM_SYSTEM_EVENT_SHUTDOWN`.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// `KVM_SYSTEM_EVENT_RESET`.
const SYSTEM_EVENT_RESET: u32 = 2;
/// `KVM_INTERNAL_ERROR_EMULATION`.
const INTERNAL_ERROR_EMULATION: u32 = 1;

/// Errors of the run loop itself (not of the guest).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `KVM_RUN` failed in a way that says nothing about the guest.
    #[error("KVM_RUN failed: {0}")]
    Run(kvm_ioctls::Error),
    /// The kick handler or the timeout timer could not be set up.
    #[error("cannot set up the vCPU's signal or timer: {0}")]
    Setup(std::io::Error),
}

/// Why the VM stopped.
#[derive(Clone, Debug)]
pub enum StopReason {
    /// The guest wrote this status to the exit port.
    GuestExit(u8),
    /// The guest halted with nothing to wake it.
    Halted,
    /// The guest asked for a reset (i8042) or a reboot.
    Reset,
    /// The guest asked to power off.
    PowerOff,
    /// The guest crashed.
    Crash(Box<CrashReport>),
    /// `--timeout` expired.
    Timeout,
    /// The guest wrote more serial output than `--serial-limit` allows.
    OutputLimit(u64),
    /// The user pressed Ctrl-A x on the console.
    UserQuit,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::GuestExit(v) => write!(f, "guest wrote {v} to the exit port (0xf4)"),
            StopReason::Halted => write!(f, "guest halted (hlt with nothing to wake it)"),
            StopReason::Reset => write!(f, "guest requested a reset"),
            StopReason::PowerOff => write!(f, "guest powered off"),
            StopReason::Crash(r) => write!(f, "{}", r.kind),
            StopReason::Timeout => write!(f, "timed out"),
            StopReason::OutputLimit(l) => {
                write!(f, "guest wrote more than {l} bytes to the serial port")
            }
            StopReason::UserQuit => write!(f, "quit from the console (Ctrl-A x)"),
        }
    }
}

impl From<DeviceRequest> for StopReason {
    fn from(r: DeviceRequest) -> Self {
        match r {
            DeviceRequest::Exit(v) => StopReason::GuestExit(v),
            DeviceRequest::Reset => StopReason::Reset,
            DeviceRequest::OutputLimit(l) => StopReason::OutputLimit(l),
        }
    }
}

/// The VM-wide stop: the first reason wins, and every registered vCPU thread is kicked out
/// of `KVM_RUN` so that all of them stop with the VM.
#[derive(Debug)]
pub struct StopLatch {
    stopped: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    threads: Mutex<Vec<libc::pthread_t>>,
    notify: Option<EventFd>,
}

impl Default for StopLatch {
    fn default() -> Self {
        StopLatch {
            stopped: AtomicBool::new(false),
            reason: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            notify: EventFd::new(libc::EFD_NONBLOCK).ok(),
        }
    }
}

impl StopLatch {
    /// Whether the VM has been asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Stops the VM for `reason` unless it is already stopping.
    pub fn stop(&self, reason: StopReason) {
        let mut slot = lock(&self.reason);
        if slot.is_some() {
            return;
        }
        *slot = Some(reason);
        self.stopped.store(true, Ordering::SeqCst);
        drop(slot);
        if let Some(n) = &self.notify {
            let _ = n.write(1);
        }
        // Only the first stop kicks, while every registered thread is still in its loop.
        for &t in lock(&self.threads).iter() {
            // SAFETY: `t` is a vCPU thread that registered itself and cannot leave its loop
            // before `stopped` is set, which happened just now, above.
            unsafe { libc::pthread_kill(t, kick::kick_signal()) };
        }
    }

    /// Registers the calling thread to be kicked when the VM stops.
    pub fn register_current_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        lock(&self.threads).push(me);
    }

    /// The reason, once stopped.
    pub fn reason(&self) -> Option<StopReason> {
        lock(&self.reason).clone()
    }
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
}

/// What an exit leaves to do once the `kvm_run` borrow of the exit has ended.
enum Pending {
    Done(VcpuEmulation),
    /// Port I/O: the data area and its length, to be split by the access size.
    Io {
        port: u16,
        out: bool,
        data: *mut u8,
        len: usize,
    },
    Crash(CrashKind),
    InternalError,
}

/// A vCPU and what it needs to handle exits.
pub struct Vcpu {
    fd: VcpuFd,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    mem: GuestMem,
    unclaimed_mmio: UnclaimedMmio,
    deadline: Option<Instant>,
    /// Time each `KVM_RUN` for the statistics.
    time_exits: bool,
    /// When the last `KVM_RUN` returned (with `time_exits`).
    last_exit: Option<Instant>,
    /// What the vCPU measured.
    pub stats: VcpuStats,
}

impl Vcpu {
    /// Wraps a created and configured vCPU.
    pub fn new(
        fd: VcpuFd,
        io_bus: Arc<Bus>,
        mmio_bus: Arc<Bus>,
        mem: GuestMem,
        unclaimed_mmio: UnclaimedMmio,
        time_exits: bool,
    ) -> Self {
        Vcpu {
            fd,
            io_bus,
            mmio_bus,
            mem,
            unclaimed_mmio,
            deadline: None,
            time_exits,
            last_exit: None,
            stats: VcpuStats::default(),
        }
    }

    /// Runs the guest until the VM stops, for whatever reason and on whichever vCPU; the
    /// reason ends up in `latch`. With `timeout`, this thread arms a timer that kicks it, and
    /// a kick after the deadline stops the VM as a timeout.
    pub fn run(&mut self, latch: &StopLatch, timeout: Option<Duration>) -> Result<(), Error> {
        kick::install_handler()
            .map_err(|e| Error::Setup(std::io::Error::from_raw_os_error(e.errno())))?;
        kick::register_vcpu(self.fd.get_kvm_run());
        latch.register_current_thread();
        let mut _timer = None;
        if let Some(t) = timeout {
            // The deadline is taken before the timer is armed, so the kick never comes early.
            self.deadline = Some(Instant::now() + t);
            _timer = Some(kick::KickTimer::arm(kick::current_tid(), t).map_err(Error::Setup)?);
        }
        let result = loop {
            if latch.is_stopped() {
                break Ok(());
            }
            match self.run_once() {
                Ok(VcpuEmulation::Handled) => {}
                Ok(VcpuEmulation::Interrupted) => {
                    // Clear first, then look: a kick landing in between is not lost.
                    self.fd.set_kvm_immediate_exit(0);
                    if self.deadline.is_some_and(|d| Instant::now() >= d) {
                        latch.stop(StopReason::Timeout);
                    }
                }
                Ok(VcpuEmulation::Stopped(reason)) => latch.stop(reason),
                Err(e) => {
                    latch.stop(StopReason::Crash(Box::new(CrashReport::new(
                        CrashKind::UnexpectedExit(e.to_string()),
                        &self.mem,
                        None,
                        None,
                        None,
                    ))));
                    break Err(e);
                }
            }
        };
        kick::unregister_vcpu();
        result
    }

    /// Enters the guest once and handles the exit.
    pub fn run_once(&mut self) -> Result<VcpuEmulation, Error> {
        let entered = if self.time_exits || self.stats.first_run.is_none() {
            Some(Instant::now())
        } else {
            None
        };
        if self.stats.first_run.is_none() {
            self.stats.first_run = entered;
        }
        if let (Some(entered), Some(last)) = (entered, self.last_exit) {
            // Everything since the last exit was kvmini's handling of it.
            self.stats.vmm_time += entered - last;
        }
        let Vcpu {
            fd,
            io_bus,
            mmio_bus,
            unclaimed_mmio,
            stats,
            time_exits,
            last_exit,
            ..
        } = self;
        let exit = fd.run();
        if *time_exits {
            let exited = Instant::now();
            if let Some(entered) = entered {
                stats.guest_time += exited - entered;
            }
            *last_exit = Some(exited);
        }
        let pending = match exit {
            Ok(exit) => handle_exit(exit, mmio_bus, *unclaimed_mmio, stats),
            Err(e) if e.errno() == libc::EINTR => {
                stats.exits.interrupted += 1;
                Pending::Done(VcpuEmulation::Interrupted)
            }
            Err(e) if e.errno() == libc::EAGAIN => Pending::Done(VcpuEmulation::Handled),
            Err(e) => return Err(Error::Run(e)),
        };
        let outcome = match pending {
            Pending::Done(outcome) => outcome,
            Pending::Io {
                port,
                out,
                data,
                len,
            } => {
                // SAFETY: the exit was KVM_EXIT_IO, so `io` is the active member of the union.
                let size = usize::from(unsafe { fd.get_kvm_run().__bindgen_anon_1.io.size }).max(1);
                // SAFETY: `data`/`len` are the I/O data area kvm-ioctls handed out for this exit,
                // inside this vCPU's `kvm_run` mapping, which lives as long as `fd`; the exit that
                // borrowed it is gone and nothing else touches it before the next KVM_RUN.
                let data = unsafe { std::slice::from_raw_parts_mut(data, len) };
                port_io(io_bus, stats, port, out, data, size)
            }
            Pending::Crash(kind) => self.crash(kind),
            Pending::InternalError => {
                // SAFETY: the exit was KVM_EXIT_INTERNAL_ERROR, so `internal` is the active member.
                let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
                let ndata = (internal.ndata as usize).min(internal.data.len());
                let kind = if internal.suberror == INTERNAL_ERROR_EMULATION {
                    CrashKind::EmulationFailure
                } else {
                    CrashKind::InternalError {
                        suberror: internal.suberror,
                        data: internal.data[..ndata].to_vec(),
                    }
                };
                self.crash(kind)
            }
        };
        Ok(outcome)
    }

    fn crash(&self, kind: CrashKind) -> VcpuEmulation {
        let host_note = match kind {
            CrashKind::EmulationFailure => crate::host::emulator_note(),
            _ => None,
        };
        let report = CrashReport::new(
            kind,
            &self.mem,
            self.fd.get_regs().ok(),
            self.fd.get_sregs().ok(),
            host_note,
        );
        VcpuEmulation::Stopped(StopReason::Crash(Box::new(report)))
    }
}

/// Classifies one exit; port I/O and faults are finished by the caller.
fn handle_exit(
    exit: VcpuExit<'_>,
    mmio_bus: &Bus,
    unclaimed: UnclaimedMmio,
    stats: &mut VcpuStats,
) -> Pending {
    let c = &mut stats.exits;
    match exit {
        VcpuExit::IoOut(port, data) => {
            c.io_out += 1;
            Pending::Io {
                port,
                out: true,
                data: data.as_ptr().cast_mut(),
                len: data.len(),
            }
        }
        VcpuExit::IoIn(port, data) => {
            c.io_in += 1;
            Pending::Io {
                port,
                out: false,
                data: data.as_mut_ptr(),
                len: data.len(),
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            c.mmio_write += 1;
            match mmio_bus.write(addr, data) {
                Some(Some(request)) => Pending::Done(VcpuEmulation::Stopped(request.into())),
                Some(None) => Pending::Done(VcpuEmulation::Handled),
                None if unclaimed == UnclaimedMmio::Ignore => {
                    stats.unclaimed.mmio_writes += 1;
                    stats.unclaimed.note(true, addr);
                    Pending::Done(VcpuEmulation::Handled)
                }
                None => Pending::Crash(CrashKind::UnclaimedMmio {
                    addr,
                    len: data.len(),
                    write: true,
                }),
            }
        }
        VcpuExit::MmioRead(addr, data) => {
            c.mmio_read += 1;
            if mmio_bus.read(addr, data) {
                Pending::Done(VcpuEmulation::Handled)
            } else if unclaimed == UnclaimedMmio::Ignore {
                stats.unclaimed.mmio_reads += 1;
                stats.unclaimed.note(false, addr);
                data.fill(0xff);
                Pending::Done(VcpuEmulation::Handled)
            } else {
                Pending::Crash(CrashKind::UnclaimedMmio {
                    addr,
                    len: data.len(),
                    write: false,
                })
            }
        }
        VcpuExit::Hlt => {
            c.hlt += 1;
            // KVM hands `hlt` to userspace only when it has no irqchip to wait on: nothing
            // can ever wake this vCPU again.
            Pending::Done(VcpuEmulation::Stopped(StopReason::Halted))
        }
        VcpuExit::Shutdown => {
            c.shutdown += 1;
            Pending::Crash(CrashKind::TripleFault)
        }
        VcpuExit::FailEntry(reason, _cpu) => {
            c.fail_entry += 1;
            Pending::Crash(CrashKind::FailEntry { reason })
        }
        VcpuExit::InternalError => {
            c.internal_error += 1;
            Pending::InternalError
        }
        VcpuExit::Intr => {
            c.interrupted += 1;
            Pending::Done(VcpuEmulation::Interrupted)
        }
        VcpuExit::SystemEvent(kind, _) => {
            c.system_event += 1;
            match kind {
                SYSTEM_EVENT_SHUTDOWN => {
                    Pending::Done(VcpuEmulation::Stopped(StopReason::PowerOff))
                }
                SYSTEM_EVENT_RESET => Pending::Done(VcpuEmulation::Stopped(StopReason::Reset)),
                other => Pending::Crash(CrashKind::UnexpectedExit(format!(
                    "KVM_EXIT_SYSTEM_EVENT type {other}"
                ))),
            }
        }
        other => {
            c.other += 1;
            Pending::Crash(CrashKind::UnexpectedExit(format!("{other:?}")))
        }
    }
}

/// Port I/O: one bus access per element of `size` bytes (string instructions carry several).
/// Unclaimed reads see all-ones, unclaimed writes are dropped; both are counted.
fn port_io(
    bus: &Bus,
    stats: &mut VcpuStats,
    port: u16,
    out: bool,
    data: &mut [u8],
    size: usize,
) -> VcpuEmulation {
    let port = u64::from(port);
    for element in data.chunks_mut(size) {
        if out {
            match bus.write(port, element) {
                Some(Some(request)) => return VcpuEmulation::Stopped(request.into()),
                Some(None) => {}
                None => {
                    stats.unclaimed.port_writes += 1;
                    stats.unclaimed.note(true, port);
                }
            }
        } else if !bus.read(port, element) {
            element.fill(0xff);
            stats.unclaimed.port_reads += 1;
            stats.unclaimed.note(false, port);
        }
    }
    VcpuEmulation::Handled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::exit_port::ExitPort;
    use std::sync::Mutex;

    #[test]
    fn port_io_routes_each_element_and_counts_the_unclaimed() {
        let mut bus = Bus::new();
        bus.insert(0xf4, 1, Arc::new(Mutex::new(ExitPort))).unwrap();
        let mut stats = VcpuStats::default();

        let mut data = [0u8; 4];
        assert!(matches!(
            port_io(&bus, &mut stats, 0x70, false, &mut data, 2),
            VcpuEmulation::Handled
        ));
        assert_eq!(data, [0xff; 4]);
        assert_eq!(stats.unclaimed.port_reads, 2);

        assert!(matches!(
            port_io(&bus, &mut stats, 0x80, true, &mut [1, 2, 3], 1),
            VcpuEmulation::Handled
        ));
        assert_eq!(stats.unclaimed.port_writes, 3);

        let out = port_io(&bus, &mut stats, 0xf4, true, &mut [9], 1);
        assert!(matches!(
            out,
            VcpuEmulation::Stopped(StopReason::GuestExit(9))
        ));
    }
}
