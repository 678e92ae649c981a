//! One vCPU: the run loop. `KVM_RUN`, time it for `--stats`, turn what KVM returned into an
//! [`exit::Exit`], hand it to [`exit::handle_exit`] (through the vCPU's tracer with
//! `--trace`), and act on the outcome. The loop only loops: what an exit means is the
//! dispatch's business.

pub mod exit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO, KVM_EXIT_IO_IN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::config::UnclaimedMmio;
use crate::crash::{CrashKind, CrashReport};
use crate::devices::Bus;
use crate::gdb::{Next, VcpuDebug};
use crate::memory::GuestMem;
use crate::stats::VcpuStats;
use crate::stop::{StopLatch, StopReason};
use crate::trace::tracer::Tracer;
use crate::{host, kick};
use exit::{handle_exit, Devices, Exit, VcpuEmulation};

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

/// A vCPU and what it needs to handle exits.
pub struct Vcpu {
    fd: VcpuFd,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    mem: GuestMem,
    unclaimed_mmio: UnclaimedMmio,
    /// Time each `KVM_RUN` for the statistics.
    time_exits: bool,
    /// When the last `KVM_RUN` returned (with `time_exits`).
    last_exit: Option<Instant>,
    /// The debugger's side on this vCPU (`--gdb`).
    debug: Option<Box<VcpuDebug>>,
    /// What the vCPU measured.
    pub stats: VcpuStats,
    /// With `--trace`: the tracer each exit goes through (the run loop is then another
    /// instance of the same code).
    trace: Option<Box<Tracer>>,
}

/// What the run loop hands each exit to: the dispatch, or a tracer around it.
trait Dispatch: FnMut(&Devices<'_>, Exit<'_>, &mut VcpuStats) -> VcpuEmulation {}

impl<F: FnMut(&Devices<'_>, Exit<'_>, &mut VcpuStats) -> VcpuEmulation> Dispatch for F {}

/// The port I/O of the exit `KVM_RUN` just returned, read from `kvm_run` itself:
/// kvm-ioctls' `VcpuExit::IoIn`/`IoOut` give the data, but not the access size that splits
/// string I/O (`rep outsb`, `rep insw`) into elements.
fn port_io_exit(fd: &mut VcpuFd) -> Exit<'_> {
    let run = fd.get_kvm_run();
    if run.exit_reason != KVM_EXIT_IO {
        return unexpected(run.exit_reason);
    }
    // SAFETY: the exit reason says `io` is the active member of the union.
    let io = unsafe { run.__bindgen_anon_1.io };
    let size = usize::from(io.size);
    let len = size * io.count as usize;
    let base: *mut u8 = (run as *mut kvm_bindings::kvm_run).cast();
    // SAFETY: the kernel puts the data `data_offset` bytes into this vCPU's `kvm_run` mapping,
    // which `VcpuFd` maps whole for as long as it lives (as kvm-ioctls' own decoding of this
    // exit relies on). The slice borrows `fd` mutably, so nothing else touches the mapping
    // until it is gone.
    let data = unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
    if u32::from(io.direction) == KVM_EXIT_IO_IN {
        Exit::IoIn {
            port: io.port,
            size,
            data,
        }
    } else {
        Exit::IoOut {
            port: io.port,
            size,
            data,
        }
    }
}

/// The suberror and data words of a `KVM_EXIT_INTERNAL_ERROR`, which kvm-ioctls does not decode.
fn internal_error_exit(fd: &mut VcpuFd) -> Exit<'static> {
    let run = fd.get_kvm_run();
    if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
        return unexpected(run.exit_reason);
    }
    // SAFETY: the exit reason says `internal` is the active member of the union.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let ndata = (internal.ndata as usize).min(internal.data.len());
    Exit::InternalError {
        suberror: internal.suberror,
        data: internal.data[..ndata].to_vec(),
    }
}

/// An exit whose `kvm_run` does not say what kvm-ioctls decoded (KVM never does this).
fn unexpected(reason: u32) -> Exit<'static> {
    Exit::Other(format!("exit reason {reason} in kvm_run"))
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
            time_exits,
            last_exit: None,
            debug: None,
            stats: VcpuStats::default(),
            trace: None,
        }
    }

    /// Traces every exit of this vCPU through `tracer`.
    pub(crate) fn trace_with(&mut self, tracer: Tracer) {
        self.trace = Some(Box::new(tracer));
    }

    /// Puts this vCPU under the debugger (`--gdb`).
    pub fn attach_debugger(&mut self, debug: VcpuDebug) {
        self.debug = Some(Box::new(debug));
    }

    /// Hands the vCPU to the debugger, if there is one, and acts on what it decides.
    fn debugger(&mut self, latch: &StopLatch, call: impl FnOnce(&mut VcpuDebug, &VcpuFd) -> Next) {
        let Some(debug) = self.debug.as_deref_mut() else {
            return;
        };
        match call(debug, &self.fd) {
            Next::Run => {}
            Next::Stop(reason) => latch.stop(reason),
            Next::Fail(kind) => latch.stop(self.crash(kind)),
        }
    }

    /// Runs the guest until the VM stops, for whatever reason and on whichever vCPU; the
    /// reason ends up in `latch`. With `timeout`, this thread arms a timer that kicks it, and
    /// a kick after the deadline stops the VM as a timeout.
    pub fn run(&mut self, latch: &StopLatch, timeout: Option<Duration>) -> Result<(), Error> {
        kick::install_handler()
            .map_err(|e| Error::Setup(std::io::Error::from_raw_os_error(e.errno())))?;
        // SAFETY: the `kvm_run` mapping lives as long as `self.fd`, which outlives this call;
        // the registration is cleared below, before this function returns.
        unsafe { kick::register_vcpu(self.fd.get_kvm_run()) };
        latch.register_current_thread();
        let mut deadline = None;
        let mut _timer = None;
        if let Some(t) = timeout {
            // The deadline is taken before the timer is armed, so the kick never comes early.
            deadline = Some(Instant::now() + t);
            _timer = Some(kick::KickTimer::arm(kick::current_tid(), t).map_err(Error::Setup)?);
        }
        self.debugger(latch, |d, fd| d.start(fd, latch, deadline));
        // The loop is chosen once: without a tracer it is the plain dispatch's, and an exit
        // pays nothing for tracing.
        let result = match self.trace.take() {
            None => self.run_loop(latch, deadline, handle_exit),
            Some(mut tracer) => {
                let traced =
                    |d: &Devices<'_>, e: Exit<'_>, s: &mut VcpuStats| tracer.handle(d, e, s);
                let result = self.run_loop(latch, deadline, traced);
                tracer.flush();
                self.trace = Some(tracer);
                result
            }
        };
        if let Some(debug) = &self.debug {
            let status = latch.reason().map_or(0, |r| crate::status::for_stop(&r));
            debug.ended(status);
        }
        kick::unregister_vcpu();
        result
    }

    /// Enters the guest and acts on each exit's outcome until the VM stops. `dispatch` is
    /// [`handle_exit`] or a tracer around it: each makes an instance of the loop of its own,
    /// so that the untraced one pays nothing for tracing.
    fn run_loop<D: Dispatch>(
        &mut self,
        latch: &StopLatch,
        deadline: Option<Instant>,
        mut dispatch: D,
    ) -> Result<(), Error> {
        loop {
            if latch.is_stopped() {
                return Ok(());
            }
            match self.run_once(&mut dispatch) {
                Ok(VcpuEmulation::Handled) => {}
                Ok(VcpuEmulation::Interrupted) => {
                    // Clear first, then look: a kick landing in between is not lost.
                    self.fd.set_kvm_immediate_exit(0);
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        latch.stop(StopReason::Timeout);
                    } else {
                        self.debugger(latch, |d, fd| d.interrupted(fd, latch, deadline));
                    }
                }
                Ok(VcpuEmulation::Stopped(reason)) => latch.stop(reason),
                Ok(VcpuEmulation::Debug(exit)) if self.debug.is_some() => {
                    self.debugger(latch, |d, fd| d.debug_exit(fd, exit, latch, deadline));
                }
                Ok(VcpuEmulation::Debug(_)) => latch.stop(self.crash(CrashKind::UnexpectedExit(
                    "KVM_EXIT_DEBUG without a debugger".into(),
                ))),
                Ok(VcpuEmulation::Crashed(kind)) => {
                    self.debugger(latch, |d, fd| {
                        d.crashed(fd, &kind, latch);
                        Next::Run
                    });
                    latch.stop(self.crash(kind));
                }
                Err(e) => {
                    let kind = CrashKind::UnexpectedExit(e.to_string());
                    latch.stop(StopReason::Crash(Box::new(CrashReport::new(
                        kind, &self.mem, None, None, None,
                    ))));
                    return Err(e);
                }
            }
        }
    }

    /// Enters the guest once and hands the exit to `dispatch`.
    fn run_once<D: Dispatch>(&mut self, dispatch: &mut D) -> Result<VcpuEmulation, Error> {
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
        let result = self.fd.run();
        if self.time_exits {
            let exited = Instant::now();
            if let Some(entered) = entered {
                self.stats.guest_time += exited - entered;
            }
            self.last_exit = Some(exited);
        }
        let devices = Devices {
            io: &self.io_bus,
            mmio: &self.mmio_bus,
            unclaimed_mmio: self.unclaimed_mmio,
        };
        let stats = &mut self.stats;
        // kvm-ioctls decodes the exit; port I/O and internal errors are read again from
        // `kvm_run` for what it leaves out (the access size, the suberror).
        let exit = match result {
            Ok(VcpuExit::IoIn(..) | VcpuExit::IoOut(..)) => port_io_exit(&mut self.fd),
            Ok(VcpuExit::InternalError) => internal_error_exit(&mut self.fd),
            Ok(VcpuExit::MmioRead(addr, data)) => Exit::MmioRead(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => Exit::MmioWrite(addr, data),
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::Shutdown) => Exit::Shutdown,
            Ok(VcpuExit::FailEntry(reason, _cpu)) => Exit::FailEntry(reason),
            Ok(VcpuExit::Intr) => Exit::Interrupted,
            Ok(VcpuExit::SystemEvent(kind, _)) => Exit::SystemEvent(kind),
            Ok(VcpuExit::Debug(arch)) => Exit::Debug(arch),
            Ok(other) => Exit::Other(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR => Exit::Interrupted,
            Err(e) if e.errno() == libc::EAGAIN => return Ok(VcpuEmulation::Handled),
            Err(e) => return Err(Error::Run(e)),
        };
        Ok(dispatch(&devices, exit, stats))
    }

    /// The vCPU's file descriptor, to read or set its state while it is stopped.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Lets KVM finish the instruction of the last exit (an `out` or an MMIO access completes
    /// only on the next `KVM_RUN`) without running the guest further: `KVM_RUN` with
    /// `immediate_exit` set returns at once, after the completion. The state read afterwards
    /// is the state after that instruction.
    pub fn complete_pending_exit(&mut self) -> Result<(), Error> {
        self.fd.set_kvm_immediate_exit(1);
        let result = self.fd.run().map(|_| ());
        self.fd.set_kvm_immediate_exit(0);
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Run(e)),
        }
    }

    /// The stop reason for a crash: the kind, with the registers and the code at RIP.
    fn crash(&self, kind: CrashKind) -> StopReason {
        let host_note = match kind {
            // Asked only now: most runs never crash, and raw images never need the host kind.
            CrashKind::EmulationFailure => host::emulator_note().map(str::to_string),
            _ => None,
        };
        StopReason::Crash(Box::new(CrashReport::new(
            kind,
            &self.mem,
            self.fd.get_regs().ok(),
            self.fd.get_sregs().ok(),
            host_note,
        )))
    }
}
