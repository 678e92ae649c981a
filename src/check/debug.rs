//! `kvmini check`'s debugging line: which of the debugger's tools (`--gdb`) work on this host,
//! tried in the probe VM at ring 0 with `KVM_SET_GUEST_DEBUG`: a single step, an instruction
//! breakpoint in DR0, a write watchpoint in DR0, and `int3` with `KVM_GUESTDBG_USE_SW_BP`.
//! The GDB stub itself decides by the host's kind ([`host::DebugSupport`]); the line says
//! what that is, and warns when the probe disagrees.

use std::fmt;

use kvm_bindings::{
    kvm_guest_debug, kvm_guest_debug_arch, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit};
use serde::Serialize;

use super::{step, Finding, Probe, ProbeError, PROBE_CODE};
use crate::host;

/// `nop`, then a store to [`WATCHED`], then `out`.
const NOP: u64 = PROBE_CODE + 0x40;
/// The store.
const STORE: u64 = NOP + 1;
/// The `out` after the store.
const AFTER_STORE: u64 = NOP + 8;
/// `int3`, then `out`.
const INT3: u64 = PROBE_CODE + 0x4a;
/// The address the store writes.
const WATCHED: u64 = 0x2000;

/// DR7: G0, with GE and the reserved bit 10.
const DR7_G0: u64 = 0x602;
/// DR7 R/W0 = write, LEN0 = 4 bytes.
const DR7_WRITE4: u64 = (0b01 << 16) | (0b11 << 18);

/// What worked in the probe VM.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DebugProbe {
    /// `KVM_GUESTDBG_SINGLESTEP` stopped after one instruction.
    pub single_step: bool,
    /// An instruction breakpoint in DR0 stopped before its instruction.
    pub hw_breakpoints: bool,
    /// A write watchpoint in DR0 stopped after the store.
    pub watchpoints: bool,
    /// `int3` with `KVM_GUESTDBG_USE_SW_BP` came back as a debug exit.
    pub int3: bool,
}

impl Probe {
    /// Runs from `rip` with this guest-debug state; the debug exit's (exception, pc, DR6),
    /// or None for any other exit.
    fn debug_run(
        &mut self,
        rip: u64,
        control: u32,
        dr0: u64,
        dr7: u64,
    ) -> Result<Option<(u32, u64, u64)>, ProbeError> {
        self.enter(rip, 0, 0, false)?;
        let mut debugreg = [0u64; 8];
        debugreg[0] = dr0;
        debugreg[7] = dr7;
        let debug = kvm_guest_debug {
            control,
            pad: 0,
            arch: kvm_guest_debug_arch { debugreg },
        };
        self.vcpu
            .set_guest_debug(&debug)
            .map_err(step("KVM_SET_GUEST_DEBUG"))?;
        let exit = match self.vcpu.run() {
            Ok(VcpuExit::Debug(d)) => Some((d.exception, d.pc, d.dr6)),
            _ => None,
        };
        self.vcpu
            .set_guest_debug(&kvm_guest_debug::default())
            .map_err(step("KVM_SET_GUEST_DEBUG"))?;
        Ok(exit)
    }
}

/// Tries each tool once.
pub fn probe(kvm: &Kvm) -> Result<DebugProbe, ProbeError> {
    if !kvm.check_extension(Cap::SetGuestDebug) {
        return Err(ProbeError {
            what: "KVM_CAP_SET_GUEST_DEBUG",
            why: "missing: this KVM cannot stop a guest for a debugger".into(),
        });
    }
    let mut p = Probe::new(kvm, &[])?;
    let on = KVM_GUESTDBG_ENABLE;
    let stepped = p.debug_run(NOP, on | KVM_GUESTDBG_SINGLESTEP, 0, 0)?;
    let hw = KVM_GUESTDBG_USE_HW_BP;
    let breakpoint = p.debug_run(NOP, on | hw, STORE, DR7_G0)?;
    let watched = p.debug_run(NOP, on | hw, WATCHED, DR7_G0 | DR7_WRITE4)?;
    // Last: on a host whose emulator cannot run int3 this ends in an emulation failure.
    let int3 = p.debug_run(INT3, on | KVM_GUESTDBG_USE_SW_BP, 0, 0)?;
    Ok(DebugProbe {
        single_step: matches!(stepped, Some((1, pc, dr6)) if pc == STORE && dr6 & (1 << 14) != 0),
        hw_breakpoints: matches!(breakpoint, Some((1, pc, dr6)) if pc == STORE && dr6 & 1 != 0),
        watchpoints: matches!(watched, Some((1, pc, dr6)) if pc == AFTER_STORE && dr6 & 1 != 0),
        int3: matches!(int3, Some((3, pc, _)) if pc == INT3),
    })
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The debugging line of the report.
pub(super) fn write_line(
    f: &mut fmt::Formatter<'_>,
    probe: &Finding<DebugProbe>,
    stub: host::DebugSupport,
) -> fmt::Result {
    let plan = if stub.int3 {
        "the GDB stub uses int3 for breakpoints, DR0-DR3 for hardware breakpoints and watchpoints"
    } else {
        "the GDB stub sets breakpoints in DR0-DR3 (4 at most) and refuses watchpoints, on ring-0 code only"
    };
    match probe {
        Finding::Found(d) => {
            let agrees = d.single_step
                && d.hw_breakpoints
                && d.int3 == stub.int3
                && (d.watchpoints || !stub.watchpoints);
            writeln!(
                f,
                "{} debugging (--gdb), probed at ring 0: single-step {}, hardware breakpoints {}, watchpoints {}, int3 breakpoints {}; {plan}",
                if agrees { "info" } else { "warn" },
                yes(d.single_step),
                yes(d.hw_breakpoints),
                yes(d.watchpoints),
                yes(d.int3),
            )
        }
        Finding::Failed { error } if error != "not run" => {
            writeln!(f, "warn debugging (--gdb): {error}")
        }
        Finding::Failed { .. } => Ok(()),
    }
}
