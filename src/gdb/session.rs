//! The debugger's view of the vCPU, kept by the GDB thread: the state at the last stop, the
//! breakpoints and watchpoints set, how to resume (stepping off a hardware breakpoint first,
//! since this host's `kvm_pvm` does not honour RFLAGS.RF), and how each stop reads to GDB.
//! The gdbstub traits in `target.rs` call into it; so does the server between sessions.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc::TryRecvError;

use gdbstub::common::Signal;
use gdbstub::stub::SingleThreadStopReason;
use gdbstub::target::ext::breakpoints::WatchKind;
use kvm_bindings::{
    kvm_debug_exit_arch, kvm_guest_debug, kvm_guest_debug_arch, KVM_GUESTDBG_BLOCKIRQ,
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};

use super::debugregs::{DebugRegs, SlotUse, WatchError, DR6_BS};
use super::link::{Event, GdbSide, Request, StopCause};
use super::memory;
use super::regs::{CpuState, GdbRegs, Layout};
use crate::host::DebugSupport;
use crate::memory::GuestMem;

/// A stop as gdbstub reports it.
pub type GdbStop = SingleThreadStopReason<u64>;

/// `int3`.
const INT3: u8 = 0xcc;

/// Where the vCPU is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vcpu {
    /// Running the guest.
    Running,
    /// Waiting for requests; `initial` when it has not run yet (`--gdb-wait`).
    Stopped { initial: bool },
    /// The VM ended with this status.
    Ended(i32),
}

/// What the host and the image decide about a session.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Which breakpoints the host can use.
    pub host: DebugSupport,
    /// `KVM_GUESTDBG_BLOCKIRQ` is there: no interrupt is taken while single-stepping.
    pub block_irq: bool,
    /// The image is a 64-bit kernel: GDB gets the x86-64 description whatever the mode.
    pub kernel_image: bool,
}

/// The debugger's side of the vCPU.
pub struct Session {
    pub(super) link: GdbSide,
    mem: GuestMem,
    pub(super) options: Options,
    pub(super) layout: Layout,
    pub(super) state: CpuState,
    vcpu: Vcpu,
    pub(super) hw: DebugRegs,
    /// `int3` breakpoints: the address and the byte the `int3` took the place of.
    pub(super) sw: Vec<(u64, u8)>,
    /// GDB sent Ctrl-C.
    interrupting: bool,
    /// A stop to report before waiting for the vCPU again.
    pending: Option<GdbStop>,
}

impl Session {
    /// The debugger's side, with the vCPU running.
    pub fn new(link: GdbSide, mem: GuestMem, options: Options) -> Self {
        Session {
            link,
            mem,
            options,
            layout: Layout::default(),
            state: CpuState::default(),
            vcpu: Vcpu::Running,
            hw: DebugRegs::default(),
            sw: Vec::new(),
            interrupting: false,
            pending: None,
        }
    }

    /// The VM's exit status, once it ended.
    pub fn ended(&self) -> Option<i32> {
        match self.vcpu {
            Vcpu::Ended(status) => Some(status),
            _ => None,
        }
    }

    /// Takes one event off the channel without waiting; the stop it means to GDB, if any.
    pub fn try_event(&mut self) -> Option<GdbStop> {
        loop {
            match self.link.events.try_recv() {
                Ok(event) => {
                    if let Some(stop) = self.on_event(event) {
                        return Some(stop);
                    }
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => return Some(self.vcpu_gone()),
            }
        }
    }

    /// Waits for the vCPU to stop or the VM to end.
    fn wait_stop(&mut self) -> GdbStop {
        loop {
            match self.link.events.recv() {
                Ok(event) => {
                    if let Some(stop) = self.on_event(event) {
                        return stop;
                    }
                }
                Err(_) => return self.vcpu_gone(),
            }
        }
    }

    fn vcpu_gone(&mut self) -> GdbStop {
        let status = self.ended().unwrap_or(crate::status::INTERNAL);
        self.vcpu = Vcpu::Ended(status);
        GdbStop::Exited(status as u8)
    }

    fn on_event(&mut self, event: Event) -> Option<GdbStop> {
        match event {
            Event::Stopped(cause, state) => {
                // The vCPU is stopped: no kick can be pending for this stop any more.
                self.link.shared.interrupt.store(false, Ordering::SeqCst);
                self.state = *state;
                self.vcpu = Vcpu::Stopped {
                    initial: matches!(cause, StopCause::Start),
                };
                let stop = self.stop_reason(cause);
                self.interrupting = false;
                Some(stop)
            }
            Event::Ended(status) => {
                self.vcpu = Vcpu::Ended(status);
                Some(GdbStop::Exited(status as u8))
            }
            Event::Reply(_) => None,
        }
    }

    /// What a stop means to GDB.
    fn stop_reason(&self, cause: StopCause) -> GdbStop {
        match cause {
            StopCause::Start => GdbStop::Signal(Signal::SIGTRAP),
            StopCause::Requested if self.interrupting => GdbStop::Signal(Signal::SIGINT),
            StopCause::Requested => GdbStop::Signal(Signal::SIGTRAP),
            StopCause::Debug(exit) => self.debug_stop(&exit),
            StopCause::Crash(what) => {
                eprintln!("kvmini: gdb: the guest crashed ({what}); it stops here, and the VM ends when it is resumed");
                GdbStop::Signal(Signal::SIGSEGV)
            }
        }
    }

    /// A `KVM_EXIT_DEBUG`, by its exception and DR6.
    fn debug_stop(&self, exit: &kvm_debug_exit_arch) -> GdbStop {
        match exit.exception {
            3 if self.sw.iter().any(|(a, _)| *a == exit.pc) => GdbStop::SwBreak(()),
            1 => match self.hw.hit(exit.dr6) {
                Some(SlotUse::SwBreak) => GdbStop::SwBreak(()),
                Some(SlotUse::HwBreak) => GdbStop::HwBreak(()),
                Some(SlotUse::Watch { kind, addr, .. }) => GdbStop::Watch {
                    tid: (),
                    kind,
                    addr,
                },
                None if exit.dr6 & DR6_BS != 0 => GdbStop::DoneStep,
                None => GdbStop::Signal(Signal::SIGTRAP),
            },
            _ => GdbStop::Signal(Signal::SIGTRAP),
        }
    }

    /// Brings the vCPU to a stop for a new debugger and picks its target description; false
    /// when the VM ended first.
    pub fn attach(&mut self) -> bool {
        if self.vcpu == Vcpu::Running {
            self.link.shared.interrupt_vcpu();
            self.wait_stop();
        }
        if self.ended().is_some() {
            return false;
        }
        self.layout = if self.options.kernel_image || self.state.long_mode() {
            Layout::X86_64
        } else {
            Layout::I386
        };
        self.pending = None;
        self.link.shared.attached.store(true, Ordering::SeqCst);
        true
    }

    /// The debugger left: every breakpoint goes, and the guest runs on without debugging.
    pub fn detach(&mut self) {
        self.link.shared.attached.store(false, Ordering::SeqCst);
        if self.vcpu == Vcpu::Running {
            self.link.shared.interrupt_vcpu();
            self.wait_stop();
        }
        if self.ended().is_some() {
            return;
        }
        self.release();
    }

    /// Removes every breakpoint and lets the stopped vCPU run without debugging.
    fn release(&mut self) {
        for (addr, byte) in std::mem::take(&mut self.sw) {
            memory::write(&self.mem, &self.state.sregs, addr, &[byte]);
        }
        self.hw.clear();
        if self.link.requests.send(Request::Detach).is_ok() {
            self.vcpu = Vcpu::Running;
        }
    }

    /// GDB's `kill`: the VM ends.
    pub fn kill(&mut self) {
        self.link.shared.attached.store(false, Ordering::SeqCst);
        if self.vcpu == Vcpu::Running {
            self.link.shared.interrupt_vcpu();
            self.wait_stop();
        }
        if self.ended().is_none() && self.link.requests.send(Request::Kill).is_ok() {
            while self.ended().is_none() {
                self.wait_stop();
            }
        }
    }

    /// An event while no debugger is attached: a stop other than the one `--gdb-wait` asked
    /// for (a breakpoint a departed debugger left armed) lets the guest run on.
    pub fn between_sessions(&mut self) {
        while self.try_event().is_some() {
            if self.vcpu == (Vcpu::Stopped { initial: false }) {
                self.release();
            }
        }
    }

    /// GDB's Ctrl-C.
    pub fn interrupt(&mut self) {
        self.interrupting = true;
        self.link.shared.interrupt_vcpu();
    }

    /// A stop decided without running the vCPU, to report first.
    pub fn take_pending(&mut self) -> Option<GdbStop> {
        self.pending.take()
    }

    /// The guest-debug state for a run: the breakpoints (but `skip`), single-stepping.
    fn guest_debug(&self, step: bool, skip: Option<usize>) -> kvm_guest_debug {
        let mut control = 0;
        if step {
            control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
            if self.options.block_irq {
                control |= KVM_GUESTDBG_BLOCKIRQ;
            }
        }
        if self.hw.any() {
            control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
        }
        if !self.sw.is_empty() {
            control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
        }
        kvm_guest_debug {
            control,
            pad: 0,
            arch: kvm_guest_debug_arch {
                debugreg: self.hw.debugreg(skip),
            },
        }
    }

    fn send_resume(&mut self, debug: kvm_guest_debug, range: Option<Range<u64>>) -> bool {
        let ok = self
            .link
            .requests
            .send(Request::Resume { debug, range })
            .is_ok();
        if ok {
            self.vcpu = Vcpu::Running;
        }
        ok
    }

    /// Continues (`step` false) or steps, within `range` when given. An instruction
    /// breakpoint at RIP is left out for one step first: RFLAGS.RF does not step past it on
    /// every host. Where ring-3 code cannot be debugged, a step there is refused (SIGSTOP).
    pub fn resume(&mut self, step: bool, range: Option<Range<u64>>) -> Result<(), &'static str> {
        if self.ended().is_some() {
            return Err("the VM has ended");
        }
        if step && !self.options.host.ring3 && self.state.cpl() == 3 {
            eprintln!("kvmini: gdb: cannot single-step guest ring-3 code on this host: {}; set a breakpoint in ring-0 code and continue", crate::host::RING3_DEBUG_NOTE);
            self.pending = Some(GdbStop::Signal(Signal::SIGSTOP));
            return Ok(());
        }
        let pc = crate::crash::code_address(&self.state.regs, &self.state.sregs);
        let at_breakpoint = self.hw.exec_at(pc);
        if let (Some(slot), false) = (at_breakpoint, step) {
            if !self.send_resume(self.guest_debug(true, Some(slot)), None) {
                return Err("the vCPU is gone");
            }
            match self.wait_stop() {
                GdbStop::DoneStep => {}
                other => {
                    self.pending = Some(other);
                    return Ok(());
                }
            }
        }
        let skip = if step { at_breakpoint } else { None };
        if !self.send_resume(self.guest_debug(step, skip), range) {
            return Err("the vCPU is gone");
        }
        Ok(())
    }

    /// The registers in the session's layout.
    pub fn registers(&self) -> GdbRegs {
        GdbRegs::from_state(self.layout, &self.state)
    }

    /// Writes the registers GDB changed.
    pub fn set_registers(&mut self, regs: &GdbRegs) -> Result<(), String> {
        if regs.layout != self.layout {
            return Err("the register packet does not match the target description".into());
        }
        let new = regs.apply(&self.state);
        self.link
            .requests
            .send(Request::SetState(Box::new(new.clone())))
            .map_err(|_| "the vCPU is gone".to_string())?;
        loop {
            match self.link.events.recv() {
                Ok(Event::Reply(result)) => {
                    result?;
                    self.state = new;
                    return Ok(());
                }
                Ok(other) => {
                    self.on_event(other);
                    if self.ended().is_some() {
                        return Err("the VM has ended".into());
                    }
                }
                Err(_) => return Err("the vCPU is gone".into()),
            }
        }
    }

    /// Reads guest memory at a linear address; how many bytes it could.
    pub fn read_memory(&self, addr: u64, buf: &mut [u8]) -> usize {
        let n = memory::read(&self.mem, &self.state.sregs, addr, buf);
        // GDB sees its own view: the bytes under the int3s it asked for.
        for &(at, byte) in &self.sw {
            if let Some(i) = at.checked_sub(addr).filter(|&i| i < n as u64) {
                buf[i as usize] = byte;
            }
        }
        n
    }

    /// Writes guest memory at a linear address.
    pub fn write_memory(&self, addr: u64, data: &[u8]) -> bool {
        memory::write(&self.mem, &self.state.sregs, addr, data)
    }

    /// A software breakpoint: an `int3` where the host runs it, else a debug register.
    pub fn add_sw_breakpoint(&mut self, addr: u64) -> bool {
        if !self.options.host.int3 {
            let added = self.hw.add_exec(addr, SlotUse::SwBreak);
            if !added {
                eprintln!("kvmini: gdb: breakpoint at {addr:#x} refused: on this host breakpoints are hardware breakpoints ({}), and all 4 debug registers are in use; delete or disable one", crate::host::INT3_NOTE);
            }
            return added;
        }
        if self.sw.iter().any(|(a, _)| *a == addr) {
            return true;
        }
        let mut byte = [0u8];
        if memory::read(&self.mem, &self.state.sregs, addr, &mut byte) != 1
            || !memory::write(&self.mem, &self.state.sregs, addr, &[INT3])
        {
            return false;
        }
        self.sw.push((addr, byte[0]));
        true
    }

    /// Removes a software breakpoint.
    pub fn remove_sw_breakpoint(&mut self, addr: u64) -> bool {
        if !self.options.host.int3 {
            return self.hw.remove_exec(addr, SlotUse::SwBreak);
        }
        match self.sw.iter().position(|(a, _)| *a == addr) {
            Some(i) => {
                let (_, byte) = self.sw.remove(i);
                memory::write(&self.mem, &self.state.sregs, addr, &[byte])
            }
            None => false,
        }
    }

    /// A hardware breakpoint (`hbreak`).
    pub fn add_hw_breakpoint(&mut self, addr: u64) -> bool {
        let added = self.hw.add_exec(addr, SlotUse::HwBreak);
        if !added {
            eprintln!("kvmini: gdb: hardware breakpoint at {addr:#x} refused: all 4 debug registers are in use");
        }
        added
    }

    /// A watchpoint; refused where data breakpoints do not fire.
    pub fn add_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> bool {
        if !self.options.host.watchpoints {
            eprintln!("kvmini: gdb: watchpoint at {addr:#x} refused: {}; `set can-use-hw-watchpoints 0` in GDB gives software watchpoints (GDB single-steps and compares)", crate::host::WATCHPOINT_NOTE);
            return false;
        }
        match self.hw.add_watch(addr, len, kind) {
            Ok(()) => true,
            Err(WatchError::NoRoom { needs, free }) => {
                eprintln!("kvmini: gdb: watchpoint on {len} bytes at {addr:#x} refused: it needs {needs} debug registers (aligned pieces of 1, 2, 4 or 8 bytes) and {free} of 4 are free");
                false
            }
            Err(WatchError::Empty) => false,
        }
    }

    /// What `monitor info` prints.
    pub fn describe(&self) -> Vec<String> {
        let host = self.options.host;
        let mut lines = vec![
            format!(
                "target description: {}",
                match self.layout {
                    Layout::X86_64 => "i386:x86-64",
                    Layout::I386 => "i386",
                }
            ),
            format!(
                "software breakpoints: {}",
                if host.int3 {
                    "int3 (KVM_GUESTDBG_USE_SW_BP)".to_string()
                } else {
                    format!("set in debug registers ({})", crate::host::INT3_NOTE)
                }
            ),
            format!(
                "watchpoints: {}",
                if host.watchpoints {
                    "in debug registers, 1, 2, 4 or 8 bytes each".to_string()
                } else {
                    format!("refused ({})", crate::host::WATCHPOINT_NOTE)
                }
            ),
        ];
        lines.extend(self.hw.describe());
        lines.extend(self.sw.iter().map(|(a, _)| format!("int3 at {a:#x}")));
        lines
    }
}
