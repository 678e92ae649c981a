//! SIGUSR1 saves a VM run with `--snapshot`: the signal is blocked in every thread of the run
//! and read from a signalfd by one watcher thread, which fires the snapshot trigger and stops
//! the VM. Without `--snapshot` nothing here runs and SIGUSR1 keeps its default action.
//!
//! Source of truth: signalfd(2), pthread_sigmask(3).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::stop::{SnapshotTrigger, StopLatch, StopReason};

/// The watcher thread; stopped, and the signal mask put back, on drop.
#[derive(Debug)]
pub struct SnapshotSignal {
    thread: Option<JoinHandle<()>>,
    stop: Arc<EventFd>,
    old_mask: libc::sigset_t,
}

fn usr1() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid buffer for sigemptyset to initialize.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
    }
    set
}

impl SnapshotSignal {
    /// Blocks SIGUSR1 in the calling thread, so that the threads it starts afterwards (the
    /// vCPUs, the console) block it too, and starts the watcher.
    pub fn start(
        trigger: SnapshotTrigger,
        latch: Arc<StopLatch>,
        seccomp: crate::config::SeccompMode,
    ) -> std::io::Result<Self> {
        let set = usr1();
        // SAFETY: as above.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `old_mask` are valid sigset_t buffers.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask) };
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        // SAFETY: `set` is a valid sigset_t; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: putting back the mask read above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            return Err(e);
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let stop_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kvmini-signal".into())
            .spawn(move || {
                crate::sandbox::enter_or_exit(crate::sandbox::Role::Signal, seccomp);
                watch(&fd, &stop_thread, &trigger, &latch)
            })?;
        Ok(SnapshotSignal {
            thread: Some(thread),
            stop,
            old_mask,
        })
    }
}

fn watch(fd: &OwnedFd, stop: &EventFd, trigger: &SnapshotTrigger, latch: &StopLatch) {
    while crate::console::wait_readable(fd.as_raw_fd(), stop, -1) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        // SAFETY: reading one signalfd_siginfo into a buffer of its size.
        let r = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
        if r == info.len() as isize && trigger.fire() {
            latch.stop(StopReason::Snapshot);
        }
    }
}

impl Drop for SnapshotSignal {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // A SIGUSR1 that came after the watcher stopped is still pending: take it, so that
        // unblocking does not end the process with the signal's default action.
        let set = usr1();
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `set` and `zero` are valid; sigtimedwait returns at once (-1) when nothing
        // is pending.
        while unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) } > 0 {}
        // SAFETY: putting back the mask this thread had before `start`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}
