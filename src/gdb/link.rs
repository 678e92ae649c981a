//! Between the GDB thread and the vCPU thread: what a stopped vCPU reports ([`Event`]), what
//! the debugger asks of it ([`Request`]), and the vCPU's side ([`VcpuDebug`]), which the run
//! loop calls when an exit concerns the debugger. The vCPU makes every KVM call itself
//! (`KVM_SET_GUEST_DEBUG`, `KVM_GET/SET_REGS`, `SREGS`, `FPU`); the GDB thread reads and
//! writes guest memory, which needs none.
//!
//! A stop: the vCPU reads its state, sends [`Event::Stopped`], writes the wake eventfd (the
//! GDB thread polls it with the connection) and waits for requests until one lets it run
//! again. A stop the debugger asks for (attach, Ctrl-C) sets the interrupt flag and kicks the
//! vCPU out of `KVM_RUN` with [`crate::kick`]'s signal.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_debug_exit_arch, kvm_guest_debug};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::eventfd::EventFd;

use super::debugregs::DR6_BS;
use super::regs::CpuState;
use crate::crash::CrashKind;
use crate::stop::{StopLatch, StopReason};

/// How often a stopped vCPU looks at the VM's stop latch and its deadline.
const POLL: Duration = Duration::from_millis(100);

/// What both threads share.
#[derive(Debug)]
pub struct Shared {
    /// Written by the vCPU with each event the GDB thread must see while it polls.
    pub wake: EventFd,
    /// The debugger wants the vCPU stopped.
    pub interrupt: AtomicBool,
    /// A debugger is attached (a crash then stops in it first).
    pub attached: AtomicBool,
    /// The VM has ended; the vCPU takes no more requests.
    pub ended: AtomicBool,
    /// The vCPU runs the guest (rather than waiting in a debugger stop).
    pub running: AtomicBool,
    /// The vCPU thread's kernel thread id, to kick it.
    vcpu_tid: AtomicI32,
}

impl Shared {
    /// Shared state with a fresh wake eventfd.
    pub fn new() -> std::io::Result<Self> {
        Ok(Shared {
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
            interrupt: AtomicBool::new(false),
            attached: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            running: AtomicBool::new(false),
            vcpu_tid: AtomicI32::new(0),
        })
    }

    /// Asks a running vCPU to stop: sets the flag the run loop looks at and kicks its thread
    /// out of `KVM_RUN` (the kick cannot be lost, see [`crate::kick`]).
    pub fn interrupt_vcpu(&self) {
        self.interrupt.store(true, Ordering::SeqCst);
        let tid = self.vcpu_tid.load(Ordering::SeqCst);
        if tid != 0 && self.running.load(Ordering::SeqCst) {
            // SAFETY: tgkill with the kick signal, whose handler only sets `immediate_exit`
            // of the vCPU's registered `kvm_run`; `tid` is the vCPU thread of this process.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    tid,
                    crate::kick::kick_signal(),
                )
            };
        }
    }
}

/// Why a vCPU stopped for the debugger.
#[derive(Debug)]
pub enum StopCause {
    /// Before the guest's first instruction (`--gdb-wait`).
    Start,
    /// The debugger asked (attach, Ctrl-C).
    Requested,
    /// `KVM_EXIT_DEBUG`: a single step, a breakpoint or a watchpoint.
    Debug(kvm_debug_exit_arch),
    /// The guest crashed; resuming ends the VM with the crash.
    Crash(String),
}

/// From the vCPU to the GDB thread.
#[derive(Debug)]
pub enum Event {
    /// The vCPU stopped and waits for requests.
    Stopped(StopCause, Box<CpuState>),
    /// The answer to [`Request::SetState`].
    Reply(Result<(), String>),
    /// The VM ended, with this exit status.
    Ended(i32),
}

/// From the GDB thread to a stopped vCPU.
#[derive(Debug)]
pub enum Request {
    /// Write these registers (and only these).
    SetState(Box<CpuState>),
    /// Run with this guest-debug state (`KVM_GUESTDBG_SINGLESTEP` for a step); with a range,
    /// keep stepping while RIP stays in it (GDB's range stepping).
    Resume {
        /// For `KVM_SET_GUEST_DEBUG`.
        debug: kvm_guest_debug,
        /// Step while RIP is in this range.
        range: Option<Range<u64>>,
    },
    /// Turn guest debugging off and run: the debugger left.
    Detach,
    /// End the VM (GDB's `kill`).
    Kill,
}

/// What the run loop does after the debugger had the vCPU.
#[derive(Debug)]
pub enum Next {
    /// Run the guest on.
    Run,
    /// Stop the VM for this reason.
    Stop(StopReason),
    /// Stop the VM as a crash: a KVM call for the debugger failed.
    Fail(CrashKind),
}

/// The vCPU's side of the debugger.
#[derive(Debug)]
pub struct VcpuDebug {
    requests: Receiver<Request>,
    events: Sender<Event>,
    shared: Arc<Shared>,
    wait_at_start: bool,
    range: Option<Range<u64>>,
}

/// The GDB thread's side: where it sends requests and reads events.
#[derive(Debug)]
pub struct GdbSide {
    /// To the vCPU.
    pub requests: Sender<Request>,
    /// From the vCPU.
    pub events: Receiver<Event>,
    /// Both threads'.
    pub shared: Arc<Shared>,
}

/// A linked pair; `wait_at_start` stops the vCPU before the guest's first instruction.
pub fn pair(wait_at_start: bool) -> std::io::Result<(VcpuDebug, GdbSide)> {
    let shared = Arc::new(Shared::new()?);
    let (req_tx, req_rx) = std::sync::mpsc::channel();
    let (ev_tx, ev_rx) = std::sync::mpsc::channel();
    let vcpu = VcpuDebug {
        requests: req_rx,
        events: ev_tx,
        shared: shared.clone(),
        wait_at_start,
        range: None,
    };
    let gdb = GdbSide {
        requests: req_tx,
        events: ev_rx,
        shared,
    };
    Ok((vcpu, gdb))
}

/// Turns guest debugging off.
fn disable(fd: &VcpuFd) {
    let _ = fd.set_guest_debug(&kvm_guest_debug::default());
}

/// The vCPU's registers, as a stop reports them.
fn read_state(fd: &VcpuFd) -> Result<CpuState, kvm_ioctls::Error> {
    Ok(CpuState {
        regs: fd.get_regs()?,
        sregs: fd.get_sregs()?,
        fpu: fd.get_fpu()?,
    })
}

/// Writes what changed between `old` and `new`.
fn write_state(fd: &VcpuFd, old: &CpuState, new: &CpuState) -> Result<(), String> {
    if new.regs != old.regs {
        fd.set_regs(&new.regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    }
    if new.sregs != old.sregs {
        fd.set_sregs(&new.sregs)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    }
    if new.fpu != old.fpu {
        fd.set_fpu(&new.fpu)
            .map_err(|e| format!("KVM_SET_FPU: {e}"))?;
    }
    Ok(())
}

impl VcpuDebug {
    /// Called by the vCPU thread before it first runs the guest: records the thread to kick,
    /// and with `--gdb-wait` waits for the debugger. Some reason when the VM must stop.
    pub fn start(&mut self, fd: &VcpuFd, latch: &StopLatch, deadline: Option<Instant>) -> Next {
        self.shared
            .vcpu_tid
            .store(crate::kick::current_tid(), Ordering::SeqCst);
        self.shared.running.store(true, Ordering::SeqCst);
        if self.wait_at_start {
            return self.stop(fd, StopCause::Start, latch, deadline);
        }
        Next::Run
    }

    /// After `KVM_RUN` was interrupted: stops for the debugger when it asked.
    pub fn interrupted(
        &mut self,
        fd: &VcpuFd,
        latch: &StopLatch,
        deadline: Option<Instant>,
    ) -> Next {
        if !self.shared.interrupt.swap(false, Ordering::SeqCst) {
            return Next::Run;
        }
        self.range = None;
        self.stop(fd, StopCause::Requested, latch, deadline)
    }

    /// `KVM_EXIT_DEBUG`: stops for the debugger, unless it is a single step that lands
    /// inside the range being stepped through.
    pub fn debug_exit(
        &mut self,
        fd: &VcpuFd,
        exit: kvm_debug_exit_arch,
        latch: &StopLatch,
        deadline: Option<Instant>,
    ) -> Next {
        let plain_step = exit.exception == 1 && exit.dr6 & DR6_BS != 0 && exit.dr6 & 0xf == 0;
        if let (true, Some(range)) = (plain_step, &self.range) {
            if fd.get_regs().is_ok_and(|r| range.contains(&r.rip)) {
                return Next::Run;
            }
        }
        self.range = None;
        self.stop(fd, StopCause::Debug(exit), latch, deadline)
    }

    /// The guest crashed: with a debugger attached, stop in it first (whatever it asks
    /// next, the VM then ends with the crash).
    pub fn crashed(&mut self, fd: &VcpuFd, kind: &CrashKind, latch: &StopLatch) {
        if self.shared.attached.load(Ordering::SeqCst) {
            let _ = self.stop(fd, StopCause::Crash(kind.to_string()), latch, None);
        }
    }

    /// The VM ended: tells the GDB thread (which reports the status to GDB).
    pub fn ended(&self, status: i32) {
        self.shared.running.store(false, Ordering::SeqCst);
        self.shared.ended.store(true, Ordering::SeqCst);
        let _ = self.events.send(Event::Ended(status));
        let _ = self.shared.wake.write(1);
    }

    /// Reports a stop and serves the debugger's requests until one lets the vCPU run again
    /// or ends the VM. A VM stopped meanwhile by something else (the console, `--timeout`)
    /// ends the wait too.
    fn stop(
        &mut self,
        fd: &VcpuFd,
        cause: StopCause,
        latch: &StopLatch,
        deadline: Option<Instant>,
    ) -> Next {
        self.shared.running.store(false, Ordering::SeqCst);
        let mut state = match read_state(fd) {
            Ok(state) => state,
            Err(e) => {
                return Next::Fail(CrashKind::UnexpectedExit(format!(
                    "cannot read the vCPU's registers for the debugger: {e}"
                )))
            }
        };
        let reported = self
            .events
            .send(Event::Stopped(cause, Box::new(state.clone())))
            .is_ok();
        let _ = self.shared.wake.write(1);
        let next = if reported {
            self.serve(fd, &mut state, latch, deadline)
        } else {
            disable(fd);
            Next::Run
        };
        self.shared
            .running
            .store(matches!(next, Next::Run), Ordering::SeqCst);
        next
    }

    fn serve(
        &mut self,
        fd: &VcpuFd,
        state: &mut CpuState,
        latch: &StopLatch,
        deadline: Option<Instant>,
    ) -> Next {
        loop {
            let wait = deadline.map_or(POLL, |d| {
                d.saturating_duration_since(Instant::now()).min(POLL)
            });
            match self.requests.recv_timeout(wait) {
                Ok(Request::SetState(new)) => {
                    let result = write_state(fd, state, &new);
                    if result.is_ok() {
                        *state = *new;
                    }
                    let _ = self.events.send(Event::Reply(result));
                }
                Ok(Request::Resume { debug, range }) => {
                    if let Err(e) = fd.set_guest_debug(&debug) {
                        return Next::Fail(CrashKind::UnexpectedExit(format!(
                            "KVM_SET_GUEST_DEBUG failed: {e}"
                        )));
                    }
                    self.range = range;
                    return Next::Run;
                }
                Ok(Request::Detach) | Err(RecvTimeoutError::Disconnected) => {
                    disable(fd);
                    return Next::Run;
                }
                Ok(Request::Kill) => return Next::Stop(StopReason::DebuggerKill),
                Err(RecvTimeoutError::Timeout) => {
                    if latch.is_stopped() {
                        return Next::Run;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Next::Stop(StopReason::Timeout);
                    }
                }
            }
        }
    }
}
