//! The VM-wide stop: why a VM stopped ([`StopReason`]) and the latch that records the first
//! reason and kicks every vCPU thread out of `KVM_RUN` ([`StopLatch`]). vCPUs, the console and
//! the timeout all stop the VM through it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::crash::CrashReport;
use crate::devices::serial::WriteFailure;
use crate::devices::{lock, DeviceRequest};
use crate::kick;

/// Why the VM stopped.
#[derive(Clone, Debug)]
pub enum StopReason {
    /// The guest wrote this status to the exit port.
    GuestExit(u8),
    /// The guest wrote this value to QEMU's debug-exit device (`--debug-exit qemu`); the
    /// status is `(value << 1) | 1`.
    DebugExit(u32),
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
    /// The guest's serial output could not be written (a closed pipe, a full disk): the rest
    /// of it would be lost.
    OutputFailed(WriteFailure),
    /// The user pressed Ctrl-A x on the console.
    UserQuit,
    /// The guest asked to be saved (`--snapshot`); the VM stopped for it.
    Snapshot,
    /// The debugger ended the VM (GDB's `kill`).
    DebuggerKill,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::GuestExit(v) => write!(f, "guest wrote {v} to the exit port (0xf4)"),
            StopReason::DebugExit(v) => write!(
                f,
                "guest wrote {v:#x} to the debug-exit device (QEMU's convention: status (V << 1) | 1)"
            ),
            StopReason::Halted => write!(f, "guest halted (hlt with nothing to wake it)"),
            StopReason::Reset => write!(f, "guest requested a reset"),
            StopReason::PowerOff => write!(f, "guest powered off"),
            StopReason::Crash(r) => write!(f, "{}", r.kind),
            StopReason::Timeout => write!(f, "timed out"),
            StopReason::OutputLimit(l) => {
                write!(f, "guest wrote more than {l} bytes to the serial port")
            }
            StopReason::OutputFailed(e) => write!(f, "serial output could not be written: {e}"),
            StopReason::UserQuit => write!(f, "quit from the console (Ctrl-A x)"),
            StopReason::Snapshot => write!(f, "stopped to save a snapshot"),
            StopReason::DebuggerKill => write!(f, "killed from the debugger (GDB's kill)"),
        }
    }
}

impl StopReason {
    /// Whether the guest chose to stop (its exit code, a halt, a reset), or the user did,
    /// rather than kvmini stopping it for a crash, the timeout or its output.
    pub fn is_the_guests(&self) -> bool {
        match self {
            StopReason::GuestExit(_)
            | StopReason::DebugExit(_)
            | StopReason::Halted
            | StopReason::Reset
            | StopReason::PowerOff
            | StopReason::UserQuit
            | StopReason::Snapshot
            | StopReason::DebuggerKill => true,
            StopReason::Crash(_)
            | StopReason::Timeout
            | StopReason::OutputLimit(_)
            | StopReason::OutputFailed(_) => false,
        }
    }
}

impl From<DeviceRequest> for StopReason {
    fn from(r: DeviceRequest) -> Self {
        match r {
            DeviceRequest::Exit(v) => StopReason::GuestExit(v),
            DeviceRequest::Reset => StopReason::Reset,
            DeviceRequest::OutputLimit(l) => StopReason::OutputLimit(l),
            DeviceRequest::OutputFailed(e) => StopReason::OutputFailed(e),
            DeviceRequest::Snapshot => StopReason::Snapshot,
            DeviceRequest::DebugExit(v) => StopReason::DebugExit(v),
        }
    }
}

/// The one snapshot a run with `--snapshot` takes: the guest (0x7f on port 0x80), SIGUSR1 or
/// Ctrl-A s fire it, and only the first of them stops the VM to save it.
#[derive(Clone, Debug, Default)]
pub struct SnapshotTrigger(Arc<AtomicBool>);

impl SnapshotTrigger {
    /// A trigger; an unarmed one never fires.
    pub fn new(armed: bool) -> Self {
        SnapshotTrigger(Arc::new(AtomicBool::new(armed)))
    }

    /// Whether a snapshot can still be asked for.
    pub fn is_armed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Asks for the snapshot; true for the first caller of an armed trigger.
    pub fn fire(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// The VM-wide stop: the first reason wins, and every registered vCPU thread is kicked out
/// of `KVM_RUN` so that all of them stop with the VM.
#[derive(Debug, Default)]
pub struct StopLatch {
    stopped: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    threads: Mutex<Vec<libc::pthread_t>>,
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

    /// Makes the latch ready for the VM to run again (after a snapshot that lets it go on);
    /// the vCPU threads register again when they start.
    pub fn reset(&self) {
        let mut slot = lock(&self.reason);
        lock(&self.threads).clear();
        *slot = None;
        self.stopped.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_trigger_fires_once_and_only_when_armed() {
        let unarmed = SnapshotTrigger::new(false);
        assert!(!unarmed.fire());
        let armed = SnapshotTrigger::new(true);
        let other = armed.clone();
        assert!(armed.is_armed());
        assert!(other.fire());
        assert!(!armed.fire());
        assert!(!armed.is_armed());
    }

    #[test]
    fn the_first_stop_reason_wins_until_a_reset() {
        let latch = StopLatch::default();
        latch.stop(StopReason::Timeout);
        latch.stop(StopReason::Halted);
        assert!(latch.is_stopped());
        assert!(matches!(latch.reason(), Some(StopReason::Timeout)));
        latch.reset();
        assert!(!latch.is_stopped());
        assert!(latch.reason().is_none());
    }
}
