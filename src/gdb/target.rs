//! The gdbstub target: gdbstub's traits for one thread (the vCPU), each a thin call into the
//! [`Session`]. Errors GDB can live with are non-fatal replies; a vCPU that is gone ends the
//! session.

use gdbstub::common::Signal;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadRangeStepping, SingleThreadRangeSteppingOps, SingleThreadResume,
    SingleThreadResumeOps, SingleThreadSingleStep, SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{outputln, ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};

use super::regs::{GdbRegs, KvmX86};
use super::session::Session;

/// Why a session cannot go on.
#[derive(Debug)]
pub struct Fatal(pub &'static str);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// EFAULT: the reply to memory that is not there.
const EFAULT: u8 = 14;

impl Target for Session {
    type Arch = KvmX86;
    type Error = Fatal;

    fn base_ops(&mut self) -> BaseOps<'_, KvmX86, Fatal> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for Session {
    fn read_registers(&mut self, regs: &mut GdbRegs) -> TargetResult<(), Self> {
        *regs = self.registers();
        Ok(())
    }

    fn write_registers(&mut self, regs: &GdbRegs) -> TargetResult<(), Self> {
        self.set_registers(regs).map_err(|e| {
            eprintln!("kvmini: gdb: cannot write the registers: {e}");
            TargetError::NonFatal
        })
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self.read_memory(start, data) {
            0 => Err(TargetError::Errno(EFAULT)),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        if self.write_memory(start, data) {
            Ok(())
        } else {
            Err(TargetError::Errno(EFAULT))
        }
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for Session {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Fatal> {
        Session::resume(self, false, None).map_err(Fatal)
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_range_step(&mut self) -> Option<SingleThreadRangeSteppingOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Session {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Fatal> {
        Session::resume(self, true, None).map_err(Fatal)
    }
}

impl SingleThreadRangeStepping for Session {
    fn resume_range_step(&mut self, start: u64, end: u64) -> Result<(), Fatal> {
        Session::resume(self, true, Some(start..end)).map_err(Fatal)
    }
}

impl Breakpoints for Session {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Session {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(Session::add_sw_breakpoint(self, addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(Session::remove_sw_breakpoint(self, addr))
    }
}

impl HwBreakpoint for Session {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(Session::add_hw_breakpoint(self, addr))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self
            .hw
            .remove_exec(addr, super::debugregs::SlotUse::HwBreak))
    }
}

impl HwWatchpoint for Session {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.add_watchpoint(addr, len, kind))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.hw.remove_watch(addr, len, kind))
    }
}

impl TargetDescriptionXmlOverride for Session {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::NonFatal);
        }
        let xml = self.layout.xml().as_bytes();
        let start = (offset as usize).min(xml.len());
        let n = length.min(buf.len()).min(xml.len() - start);
        buf[..n].copy_from_slice(&xml[start..start + n]);
        Ok(n)
    }
}

impl MonitorCmd for Session {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), Fatal> {
        match cmd {
            b"info" => {
                for line in self.describe() {
                    outputln!(out, "{line}");
                }
            }
            _ => {
                outputln!(out, "kvmini's GDB stub knows: monitor info (the target description, the breakpoint kinds this host allows, the debug registers in use)");
            }
        }
        Ok(())
    }
}
