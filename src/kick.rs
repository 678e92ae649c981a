//! Getting a vCPU out of `KVM_RUN`: a signal whose handler sets `immediate_exit` in the
//! interrupted thread's `kvm_run`, so the kick is never lost, even when it lands just before
//! the thread enters the guest (the race a plain signal would have). The same signal, from a
//! POSIX timer aimed at the vCPU thread, implements `--timeout`.
//!
//! Source: the `KVM_RUN` / `immediate_exit` section of the kernel's KVM API documentation.

use std::cell::Cell;
use std::ptr;
use std::sync::OnceLock;
use std::time::Duration;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    /// The `kvm_run` of the vCPU this thread runs, if any.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

/// The signal kvmini uses to kick vCPU threads.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer was registered by `register_vcpu` on this very thread and points
        // at the vCPU's `kvm_run` mapping, which lives until `unregister_vcpu` clears it. A
        // one-byte store is async-signal-safe.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*run).immediate_exit), 1) };
    }
}

/// Installs the kick handler (once per process).
pub fn install_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static INSTALLED: OnceLock<Result<(), vmm_sys_util::errno::Error>> = OnceLock::new();
    *INSTALLED.get_or_init(|| register_signal_handler(kick_signal(), handle_kick))
}

/// Makes kicks aimed at this thread stop `run`'s next or current `KVM_RUN`.
///
/// # Safety
///
/// `run` must point at a `kvm_run` (a vCPU's mapping) that stays valid until this thread
/// calls [`unregister_vcpu`]: the kick handler writes through it whenever the signal arrives.
pub unsafe fn register_vcpu(run: *mut kvm_run) {
    KVM_RUN.with(|r| r.set(run));
}

/// Stops kicks from touching the vCPU (before its `kvm_run` goes away).
pub fn unregister_vcpu() {
    KVM_RUN.with(|r| r.set(ptr::null_mut()));
}

/// The kernel thread id of the calling thread.
pub fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// A one-shot POSIX timer that sends the kick signal to one thread; deleted on drop.
#[derive(Debug)]
pub struct KickTimer {
    id: libc::timer_t,
}

impl KickTimer {
    /// Arms a timer that kicks thread `tid` after `after`.
    pub fn arm(tid: libc::pid_t, after: Duration) -> std::io::Result<Self> {
        // SAFETY: an all-zero sigevent is a valid starting value; the fields we need are set below.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = kick_signal();
        sev.sigev_notify_thread_id = tid;
        let mut id: libc::timer_t = ptr::null_mut();
        // SAFETY: `sev` and `id` are valid for the duration of the call.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let timer = KickTimer { id };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: `timer.id` is the timer created above; `spec` is valid for the call.
        if unsafe { libc::timer_settime(timer.id, 0, &spec, ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(timer)
    }
}

impl Drop for KickTimer {
    fn drop(&mut self) {
        // SAFETY: `self.id` is a timer this struct created and nobody else deletes.
        unsafe { libc::timer_delete(self.id) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_sets_immediate_exit_of_the_registered_run_only() {
        install_handler().unwrap();
        let mut run = kvm_run::default();
        // SAFETY: `run` outlives the registration, which ends below.
        unsafe { register_vcpu(&mut run) };
        // SAFETY: sending a signal to our own thread.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                current_tid(),
                kick_signal(),
            )
        };
        unregister_vcpu();
        assert_eq!(run.immediate_exit, 1);

        // SAFETY: as above; nothing is registered now, so the handler must do nothing.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                current_tid(),
                kick_signal(),
            )
        };
        assert_eq!(run.immediate_exit, 1);
    }

    #[test]
    fn the_timer_kicks_the_thread_it_was_armed_for() {
        install_handler().unwrap();
        let mut run = kvm_run::default();
        // SAFETY: `run` outlives the registration, which ends below.
        unsafe { register_vcpu(&mut run) };
        let _t = KickTimer::arm(current_tid(), Duration::from_millis(5)).unwrap();
        let start = std::time::Instant::now();
        // SAFETY: reading a byte of a live local; volatile because the signal handler writes it.
        while unsafe { ptr::read_volatile(&run.immediate_exit) } == 0
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        unregister_vcpu();
        assert_eq!(run.immediate_exit, 1);
    }
}
