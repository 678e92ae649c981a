//! The process exit statuses of `kvmini run`: the guest's own status when it asks for one,
//! and a small reserved block for everything kvmini decides itself.

use crate::stop::StopReason;

/// The guest stopped cleanly: `hlt` with nothing to wake it, an i8042 reset, power-off (or it
/// wrote 0 to the exit port).
pub const CLEAN: i32 = 0;
/// Bad input or usage: options, an image that is missing, corrupt, truncated, not a regular
/// file or does not fit.
pub const BAD_INPUT: i32 = 120;
/// The host has no usable KVM.
pub const NO_KVM: i32 = 121;
/// The guest crashed: triple fault, emulation failure, failed entry, unclaimed MMIO.
pub const GUEST_CRASH: i32 = 122;
/// The guest's serial output was cut short: it wrote more than `--serial-limit` allows, or
/// kvmini could not write it (a closed pipe, a full disk).
pub const OUTPUT_LIMIT: i32 = 123;
/// `--timeout` expired.
pub const TIMEOUT: i32 = 124;
/// kvmini itself failed (a KVM call that should not fail did), or the host ran short of
/// something kvmini needs (open files, address space), which the message names.
pub const INTERNAL: i32 = 125;
/// A kvmini thread made a system call its seccomp filter does not allow (`--seccomp on`).
pub const SANDBOX: i32 = 126;

/// Guest exit codes at or above this collide with kvmini's own statuses.
pub const FIRST_RESERVED: i32 = BAD_INPUT;

/// With a success status (`--success-status`): the guest stopped cleanly without giving it.
/// 1, as bootimage's `test-success-exit-code` makes QEMU's 0.
pub const NOT_SUCCESS: i32 = 1;

/// The exit status of a run that must report `success` to pass (`--success-status N`, for
/// test runners such as cargo's, which take 0 for a pass): N becomes 0, 0 (the guest stopped
/// without reporting anything) becomes [`NOT_SUCCESS`], every other status stays.
pub fn with_success(status: i32, success: Option<u8>) -> i32 {
    match success {
        Some(s) if status == i32::from(s) => CLEAN,
        Some(_) if status == CLEAN => NOT_SUCCESS,
        _ => status,
    }
}

/// The table, as printed by `--help` and in the README.
pub const TABLE: &str = "\
Exit status:
  0        the guest stopped cleanly (hlt with interrupts off, i8042 reset, power-off)
           or wrote 0 to the exit port, or the user quit with Ctrl-A x or GDB's kill,
           or the VM was saved (--snapshot)
  V        the guest wrote byte V to I/O port 0xf4 (guests should use 1-119)
  (V<<1)|1 with --debug-exit qemu: the guest wrote V to QEMU's debug-exit device
           With --success-status N: 0 for N, and 1 for what would be 0 (the guest
           stopped without giving N)
  120      bad input or usage (options, a missing, corrupt or truncated image, an
           image or initrd that is not a regular file or does not fit in guest memory)
  121      no usable KVM on this host (/dev/kvm missing, not accessible, too old)
  122      the guest crashed (triple fault, emulation failure, failed VM entry,
           access to unclaimed guest-physical memory, kernel panic, unexpected exit)
  123      the guest's serial output was cut short: it wrote more than --serial-limit
           bytes, or kvmini could not write it (a closed pipe, a full disk, an error)
  124      --timeout expired
  125      internal error in kvmini, or a host limit was reached (open files,
           address space: the message names the ulimit)
  126      the sandbox stopped kvmini: a thread made a system call its seccomp
           filter does not allow (the message names it; see --seccomp)";

/// The exit status for a stopped VM.
pub fn for_stop(reason: &StopReason) -> i32 {
    match reason {
        StopReason::GuestExit(v) => i32::from(*v),
        StopReason::DebugExit(v) => i32::from(crate::devices::debug_exit::status(*v)),
        StopReason::Halted
        | StopReason::Reset
        | StopReason::PowerOff
        | StopReason::UserQuit
        | StopReason::Snapshot
        | StopReason::DebuggerKill => CLEAN,
        StopReason::Crash(_) => GUEST_CRASH,
        StopReason::Timeout => TIMEOUT,
        StopReason::OutputLimit(_) | StopReason::OutputFailed(_) => OUTPUT_LIMIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_and_reserved_above_guest_codes() {
        let ours = [
            BAD_INPUT,
            NO_KVM,
            GUEST_CRASH,
            OUTPUT_LIMIT,
            TIMEOUT,
            INTERNAL,
        ];
        for (i, a) in ours.iter().enumerate() {
            assert!(
                *a >= FIRST_RESERVED && *a < 126,
                "{a} must stay clear of shell statuses 126+"
            );
            assert!(ours[i + 1..].iter().all(|b| a != b));
        }
        assert_eq!(for_stop(&StopReason::GuestExit(64)), 64);
        assert_eq!(for_stop(&StopReason::DebugExit(0x10)), 33);
        assert_eq!(for_stop(&StopReason::Halted), CLEAN);
        assert_eq!(for_stop(&StopReason::Timeout), TIMEOUT);
        assert_eq!(with_success(33, Some(33)), CLEAN);
        assert_eq!(with_success(CLEAN, Some(33)), NOT_SUCCESS);
        assert_eq!(with_success(35, Some(33)), 35);
        assert_eq!(with_success(GUEST_CRASH, Some(33)), GUEST_CRASH);
        assert_eq!(with_success(33, None), 33);
        assert_eq!(with_success(CLEAN, None), CLEAN);
        for line in ours.iter().map(|s| s.to_string()) {
            assert!(TABLE.contains(&format!("  {line} ")), "table lists {line}");
        }
    }
}
