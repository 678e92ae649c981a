//! The sandbox: a seccomp filter per thread, built with rust-vmm's `seccompiler` from the
//! lists in [`filters`]. Once the VM is built and before the guest's first instruction, each
//! kvmini thread (the vCPUs, the I/O thread, the console, the SIGUSR1 watcher, the GDB stub,
//! and the main thread, which runs the boot vCPU) installs the filter of its role: a guest that takes over
//! kvmini's process finds only the system calls kvmini itself needs.
//!
//! A forbidden call raises SIGSYS (`SECCOMP_RET_TRAP`); kvmini's handler prints the call's
//! name and number and the thread's role and ends the process with
//! [`crate::status::SANDBOX`]. [`SeccompMode::Log`] lets every call through and has the
//! kernel log the forbidden ones instead (in the kernel log, as `audit: type=1326`), to find a
//! missing entry.
//!
//! Source of truth: `seccomp(2)` and the kernel's `Documentation/userspace-api/seccomp_filter.rst`.

mod filters;
mod names;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Whether and how kvmini confines itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeccompMode {
    /// No filters (the library's default: a program that embeds kvmini decides for its own
    /// threads).
    #[default]
    Off,
    /// Filters that end kvmini at a forbidden call, with a message (the binary's default).
    On,
    /// Filters that let every call through and have the kernel log the forbidden ones.
    Log,
}

/// What a thread does, which decides its filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A vCPU thread other than the boot vCPU's.
    Vcpu,
    /// The main thread: the boot vCPU, then saving and teardown.
    Main,
    /// The devices' I/O thread.
    Io,
    /// Standard input to the UART.
    Console,
    /// The SIGUSR1 watcher.
    Signal,
    /// The GDB remote stub (`--gdb`).
    Gdb,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Vcpu => "vCPU",
            Role::Main => "main (boot vCPU)",
            Role::Io => "I/O",
            Role::Console => "console",
            Role::Signal => "signal",
            Role::Gdb => "GDB",
        }
    }
}

/// A filter that could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the {role} thread's seccomp filter: {source}")]
pub struct Error {
    role: &'static str,
    source: seccompiler::Error,
}

thread_local! {
    /// This thread's role, for the message when its filter stops it.
    static ROLE: Cell<Option<Role>> = const { Cell::new(None) };
}

/// Installs the filter of `role` on the calling thread (nothing when `mode` is off). A thread
/// that has one already keeps it: filters only ever narrow.
pub fn enter(role: Role, mode: SeccompMode) -> Result<(), Error> {
    if mode == SeccompMode::Off || ROLE.with(Cell::get).is_some() {
        return Ok(());
    }
    let err = |source| Error {
        role: role.name(),
        source,
    };
    install_sigsys_handler();
    let program = program(role, mode).map_err(err)?;
    seccompiler::apply_filter(&program).map_err(err)?;
    ROLE.with(|r| r.set(Some(role)));
    Ok(())
}

/// [`enter`] for a thread kvmini starts, which has nobody to return an error to: a filter
/// that cannot be installed ends the process (status 125) rather than leave the thread
/// unconfined.
pub fn enter_or_exit(role: Role, mode: SeccompMode) {
    if let Err(e) = enter(role, mode) {
        eprintln!("kvmini: {e}");
        std::process::exit(crate::status::INTERNAL);
    }
}

/// The BPF program for `role`.
fn program(role: Role, mode: SeccompMode) -> Result<BpfProgram, seccompiler::Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(nr, _why) in filters::allowed(role) {
        rules.insert(nr, Vec::new());
    }
    rules.insert(libc::SYS_ioctl, ioctl_rules(role)?);
    let mismatch = match mode {
        SeccompMode::Log => SeccompAction::Log,
        _ => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)?;
    BpfProgram::try_from(filter).map_err(seccompiler::Error::Backend)
}

/// `ioctl` for KVM's requests on every thread that makes them, and the terminal's on the
/// console's and the main thread's (which restores the terminal at the end).
fn ioctl_rules(role: Role) -> Result<Vec<SeccompRule>, seccompiler::Error> {
    let (mask, kvm, terminal) = filters::ioctl_rules();
    let request = |op, value| SeccompCondition::new(1, SeccompCmpArgLen::Dword, op, value);
    let mut rules = Vec::new();
    if matches!(role, Role::Vcpu | Role::Main) {
        rules.push(SeccompRule::new(vec![request(
            SeccompCmpOp::MaskedEq(mask),
            kvm,
        )?])?);
    }
    if matches!(role, Role::Console | Role::Main) {
        for &t in terminal {
            rules.push(SeccompRule::new(vec![request(SeccompCmpOp::Eq, t)?])?);
        }
    }
    if role == Role::Io {
        rules.push(SeccompRule::new(vec![request(
            SeccompCmpOp::Eq,
            filters::FIONBIO,
        )?])?);
    }
    if rules.is_empty() {
        // No rule at all would allow every request: allow none instead.
        rules.push(SeccompRule::new(vec![request(
            SeccompCmpOp::Eq,
            u64::MAX >> 32,
        )?])?);
    }
    Ok(rules)
}

/// Installs the SIGSYS handler once per process.
fn install_sigsys_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction with a valid handler and SA_SIGINFO; the handler only
        // makes async-signal-safe calls (write, _exit).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handle_sigsys as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut());
        }
    });
}

/// Offset of `si_syscall` in a SIGSYS `siginfo_t` (after signo, errno, code, padding and the
/// `si_call_addr` pointer).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn handle_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo_t for SIGSYS, whose si_syscall is the i32 at
    // this offset.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read()
    };
    let role = ROLE.with(Cell::get).map_or("unknown", Role::name);
    let mut msg = Message::default();
    msg.push("kvmini: sandbox: the ");
    msg.push(role);
    msg.push(" thread made the system call ");
    msg.push(names::name(i64::from(nr)).unwrap_or("(unknown)"));
    msg.push(" (");
    msg.push_number(nr);
    msg.push("), which its seccomp filter does not allow; kvmini stops (status ");
    msg.push_number(crate::status::SANDBOX);
    msg.push("). --seccomp log lets it through and logs it instead; --seccomp off runs without the sandbox\n");
    // SAFETY: write and _exit are async-signal-safe; the buffer is valid for its length.
    unsafe {
        libc::write(2, msg.buf.as_ptr().cast(), msg.len);
        libc::_exit(crate::status::SANDBOX);
    }
}

/// A message put together without allocating (in a signal handler).
struct Message {
    buf: [u8; 512],
    len: usize,
}

impl Default for Message {
    fn default() -> Self {
        Message {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl Message {
    fn push(&mut self, s: &str) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
    }

    fn push_number(&mut self, v: i32) {
        let mut digits = [0u8; 12];
        let mut i = digits.len();
        let mut u = v.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if v < 0 {
            self.push("-");
        }
        // The digits are ASCII.
        self.push(std::str::from_utf8(&digits[i..]).unwrap_or("?"));
    }
}

/// Every role's list with its reasons (the test that keeps `docs/security.md` in step).
#[cfg(test)]
fn describe(role: Role) -> Vec<(&'static str, &'static str)> {
    filters::allowed(role)
        .map(|&(nr, why)| (names::name(nr).unwrap_or("?"), why))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Role; 6] = [
        Role::Vcpu,
        Role::Main,
        Role::Io,
        Role::Console,
        Role::Signal,
        Role::Gdb,
    ];

    #[test]
    fn every_role_compiles_to_a_program_and_allows_exit() {
        for role in ROLES {
            for mode in [SeccompMode::On, SeccompMode::Log] {
                assert!(!program(role, mode).unwrap().is_empty());
            }
            assert!(describe(role).iter().any(|(n, _)| *n == "exit_group"));
        }
    }

    #[test]
    fn a_forbidden_call_in_a_filtered_thread_ends_the_process_with_the_message() {
        // In a child process, so the filter and the exit stay there.
        // SAFETY: fork in a test; the child only installs a filter, calls getppid and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let _ = enter(Role::Signal, SeccompMode::On);
            // SAFETY: a plain system call the signal thread's filter does not allow.
            unsafe { libc::syscall(libc::SYS_getppid) };
            // SAFETY: leaving the child without running the test harness's code.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), crate::status::SANDBOX);
    }

    #[test]
    fn docs_security_lists_every_allowed_call_with_its_reason() {
        let doc = include_str!("../../docs/security.md");
        for role in ROLES {
            for (name, why) in describe(role) {
                let row = format!("| `{name}` | {why} |");
                assert!(doc.contains(&row), "docs/security.md lacks {row}");
            }
        }
    }

    #[test]
    fn messages_hold_numbers() {
        let mut m = Message::default();
        m.push("n=");
        m.push_number(-42);
        m.push_number(0);
        assert_eq!(&m.buf[..m.len], b"n=-420");
    }
}
