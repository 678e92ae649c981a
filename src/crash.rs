//! What kvmini prints when a guest dies: the reason in words, RIP, the code bytes at RIP (read
//! through guest memory, translated through the guest's page tables when paging is on), and
//! the general, segment and control registers.

use std::fmt;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::paging::{self, PagingState, CR0_PE};
use crate::memory::GuestMem;

/// How a guest died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// `KVM_EXIT_SHUTDOWN`: a triple fault (an exception while delivering a double fault).
    TripleFault,
    /// `KVM_EXIT_INTERNAL_ERROR` with suberror 1: KVM's instruction emulator could not run
    /// the instruction at RIP.
    EmulationFailure,
    /// Another `KVM_EXIT_INTERNAL_ERROR`.
    InternalError {
        /// KVM's suberror code.
        suberror: u32,
        /// Extra data words KVM gave.
        data: Vec<u64>,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: the CPU refused to enter the guest with this state.
    FailEntry {
        /// Hardware reason (VMX exit reason / SVM exit code).
        reason: u64,
    },
    /// The guest accessed guest-physical memory that is neither RAM nor a device.
    UnclaimedMmio {
        /// Address.
        addr: u64,
        /// Access size.
        len: usize,
        /// Write (else read).
        write: bool,
    },
    /// An exit kvmini has no use for.
    UnexpectedExit(String),
    /// The Linux guest panicked (its panic line, seen on the console) and reset itself.
    KernelPanic {
        /// The panic line.
        line: String,
        /// The `panic=` parameter of the kernel command line that asked for the reset, if
        /// there was one.
        param: Option<String>,
    },
}

impl fmt::Display for CrashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashKind::TripleFault => write!(f, "triple fault (KVM_EXIT_SHUTDOWN): the guest took an exception it could not handle"),
            CrashKind::EmulationFailure => write!(f, "emulation failure (KVM_EXIT_INTERNAL_ERROR, suberror 1): KVM could not emulate the instruction at RIP"),
            CrashKind::InternalError { suberror, data } => {
                let name = match suberror {
                    2 => "simultaneous exceptions",
                    3 => "delivery event error",
                    4 => "unexpected exit reason",
                    _ => "unknown",
                };
                write!(f, "KVM internal error, suberror {suberror} ({name})")?;
                if !data.is_empty() {
                    let words: Vec<String> = data.iter().map(|d| format!("{d:#x}")).collect();
                    write!(f, ", data [{}]", words.join(", "))?;
                }
                Ok(())
            }
            CrashKind::FailEntry { reason } => write!(f, "VM entry failed (KVM_EXIT_FAIL_ENTRY), hardware reason {reason:#x}: the CPU rejected the guest state"),
            CrashKind::UnclaimedMmio { addr, len, write } => write!(
                f,
                "{} of {len} bytes at guest-physical {addr:#x}, which is neither RAM nor a device{} (--unclaimed-mmio ignore tolerates this)",
                if *write { "write" } else { "read" },
                // KVM completes a write before it exits to userspace.
                if *write { "; RIP is already past the writing instruction" } else { "" }
            ),
            CrashKind::UnexpectedExit(name) => write!(f, "unexpected exit {name}"),
            CrashKind::KernelPanic { line, param } => {
                write!(f, "kernel panic: \"{line}\" (the kernel then reset the VM")?;
                match param {
                    Some(p) => write!(f, ", as {p} on its command line asks)"),
                    None => write!(f, ")"),
                }
            }
        }
    }
}

impl CrashKind {
    /// The crash in a few words, for a line of `--trace`: the report has the rest.
    pub fn brief(&self) -> String {
        match self {
            CrashKind::TripleFault => "triple fault".into(),
            CrashKind::EmulationFailure => "emulation failure".into(),
            CrashKind::InternalError { suberror, .. } => {
                format!("KVM internal error, suberror {suberror}")
            }
            CrashKind::FailEntry { reason } => format!("VM entry failed, reason {reason:#x}"),
            CrashKind::UnclaimedMmio { addr, write, .. } => format!(
                "unclaimed MMIO {} at {addr:#x}",
                if *write { "write" } else { "read" }
            ),
            CrashKind::UnexpectedExit(name) => format!("unexpected exit {name}"),
            CrashKind::KernelPanic { .. } => "kernel panic".into(),
        }
    }
}

/// The `panic=` parameter of a kernel command line, as written: the last one before any
/// ` -- ` (after it the words are init's), which is the one the kernel obeys.
pub fn panic_param(cmdline: &str) -> Option<&str> {
    let kernel = cmdline.split(" -- ").next().unwrap_or_default();
    kernel
        .split_ascii_whitespace()
        .rfind(|w| w.starts_with("panic="))
}

/// Everything known about a guest at the moment it died.
#[derive(Clone, Debug)]
pub struct CrashReport {
    /// What happened.
    pub kind: CrashKind,
    /// General registers, if KVM would give them.
    pub regs: Option<kvm_regs>,
    /// Segment and control registers, if KVM would give them.
    pub sregs: Option<kvm_sregs>,
    /// Linear address of RIP and the code bytes there, or why they could not be read.
    pub code: Result<(u64, Vec<u8>), String>,
    /// A line about the host when it explains the crash (an emulator that cannot run an
    /// instruction, say).
    pub host_note: Option<String>,
}

/// How many code bytes to show.
const CODE_BYTES: usize = 16;

/// The linear address of CS:RIP.
pub fn code_address(regs: &kvm_regs, sregs: &kvm_sregs) -> u64 {
    if sregs.cr0 & CR0_PE == 0 {
        // Real mode: 16-bit IP.
        sregs.cs.base.wrapping_add(regs.rip & 0xffff)
    } else if sregs.cs.l == 1 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    }
}

/// Reads the code bytes at CS:RIP, walking the guest's page tables when paging is on.
pub fn read_code(
    mem: &GuestMem,
    regs: &kvm_regs,
    sregs: &kvm_sregs,
) -> Result<(u64, Vec<u8>), String> {
    let linear = code_address(regs, sregs);
    let state = PagingState {
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
    };
    let mut bytes = Vec::with_capacity(CODE_BYTES);
    for i in 0..CODE_BYTES as u64 {
        let va = linear.wrapping_add(i);
        let pa = match paging::translate(mem, &state, va) {
            Ok(pa) => pa,
            Err(e) if i == 0 => return Err(format!("RIP {linear:#x} is {e}")),
            Err(_) => break,
        };
        match mem.read_obj::<u8>(GuestAddress(pa)) {
            Ok(b) => bytes.push(b),
            Err(_) if i == 0 => {
                return Err(format!(
                    "RIP {linear:#x} is at guest-physical {pa:#x}, outside guest memory"
                ))
            }
            Err(_) => break,
        }
    }
    Ok((linear, bytes))
}

impl CrashReport {
    /// Builds the report from the vCPU state; any piece KVM refused stays empty.
    pub fn new(
        kind: CrashKind,
        mem: &GuestMem,
        regs: Option<kvm_regs>,
        sregs: Option<kvm_sregs>,
        host_note: Option<String>,
    ) -> Self {
        let code = match (&regs, &sregs) {
            (Some(r), Some(s)) => read_code(mem, r, s),
            _ => Err("registers unavailable".into()),
        };
        CrashReport {
            kind,
            regs,
            sregs,
            code,
            host_note,
        }
    }
}

fn segment(f: &mut fmt::Formatter<'_>, name: &str, s: &kvm_segment) -> fmt::Result {
    writeln!(
        f,
        "  {name:<3} sel={:#06x} base={:#018x} limit={:#010x} type={:#x} dpl={} db={} l={} g={} p={}{}",
        s.selector,
        s.base,
        s.limit,
        s.type_,
        s.dpl,
        s.db,
        s.l,
        s.g,
        s.present,
        if s.unusable != 0 { " unusable" } else { "" }
    )
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "guest crashed: {}", self.kind)?;
        if let Some(note) = &self.host_note {
            writeln!(f, "  note: {note}")?;
        }
        if let CrashKind::KernelPanic { .. } = self.kind {
            // The guest reset itself after the panic: its registers say nothing; its log does.
            return writeln!(f, "  the guest's console output above says why");
        }
        match &self.code {
            Ok((linear, bytes)) => {
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(f, "  code at {linear:#x}: {}", hex.join(" "))?;
            }
            Err(why) => writeln!(f, "  code: cannot read: {why}")?,
        }
        if let Some(r) = &self.regs {
            writeln!(f, "  rip={:#018x} rflags={:#010x}", r.rip, r.rflags)?;
            let gprs = [
                ("rax", r.rax),
                ("rbx", r.rbx),
                ("rcx", r.rcx),
                ("rdx", r.rdx),
                ("rsi", r.rsi),
                ("rdi", r.rdi),
                ("rbp", r.rbp),
                ("rsp", r.rsp),
                ("r8", r.r8),
                ("r9", r.r9),
                ("r10", r.r10),
                ("r11", r.r11),
                ("r12", r.r12),
                ("r13", r.r13),
                ("r14", r.r14),
                ("r15", r.r15),
            ];
            for row in gprs.chunks(4) {
                let cells: Vec<String> = row
                    .iter()
                    .map(|(n, v)| format!("{n:<3}={v:#018x}"))
                    .collect();
                writeln!(f, "  {}", cells.join(" "))?;
            }
        } else {
            writeln!(f, "  general registers unavailable")?;
        }
        if let Some(s) = &self.sregs {
            writeln!(
                f,
                "  cr0={:#010x} cr2={:#018x} cr3={:#018x} cr4={:#010x} efer={:#x}",
                s.cr0, s.cr2, s.cr3, s.cr4, s.efer
            )?;
            for (name, seg) in [
                ("cs", &s.cs),
                ("ds", &s.ds),
                ("es", &s.es),
                ("fs", &s.fs),
                ("gs", &s.gs),
                ("ss", &s.ss),
                ("tr", &s.tr),
            ] {
                segment(f, name, seg)?;
            }
            writeln!(
                f,
                "  gdt base={:#x} limit={:#x}  idt base={:#x} limit={:#x}",
                s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit
            )?;
        } else {
            writeln!(f, "  segment registers unavailable")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::paging::{write_identity_map, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};

    fn mem() -> GuestMem {
        crate::memory::create(16 << 20).unwrap()
    }

    #[test]
    fn a_kernel_panic_quotes_the_panic_parameter_the_command_line_gave() {
        assert_eq!(
            panic_param("console=ttyS0 panic=-1 quiet panic=1 -- sh -c panic=5"),
            Some("panic=1")
        );
        assert_eq!(panic_param("console=ttyS0"), None);
        let kind = |param: Option<&str>| CrashKind::KernelPanic {
            line: "Kernel panic - not syncing: VFS".into(),
            param: param.map(str::to_string),
        };
        assert_eq!(
            kind(Some("panic=1")).to_string(),
            "kernel panic: \"Kernel panic - not syncing: VFS\" (the kernel then reset the VM, as panic=1 on its command line asks)"
        );
        assert!(kind(None)
            .to_string()
            .ends_with("(the kernel then reset the VM)"));
    }

    #[test]
    fn real_mode_code_is_read_at_cs_base_plus_ip() {
        let m = mem();
        m.write_slice(&[0xf4, 0x90], GuestAddress(0x10010)).unwrap();
        let mut s = kvm_sregs::default();
        s.cs.base = 0x10000;
        let r = kvm_regs {
            rip: 0x10,
            ..Default::default()
        };
        let (linear, bytes) = read_code(&m, &r, &s).unwrap();
        assert_eq!(linear, 0x10010);
        assert_eq!(&bytes[..2], &[0xf4, 0x90]);
        assert_eq!(bytes.len(), CODE_BYTES);
    }

    #[test]
    fn long_mode_code_is_read_through_the_page_tables() {
        let m = mem();
        let cr3 = write_identity_map(&m, false).unwrap();
        m.write_slice(&[0x0f, 0x0b], GuestAddress(0x10_0000))
            .unwrap();
        let mut s = kvm_sregs {
            cr0: CR0_PE | CR0_PG,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            ..Default::default()
        };
        s.cs.l = 1;
        let r = kvm_regs {
            rip: 0x10_0000,
            ..Default::default()
        };
        assert_eq!(&read_code(&m, &r, &s).unwrap().1[..2], &[0x0f, 0x0b]);
        // Outside the identity map: the walk says where it stopped.
        let r = kvm_regs {
            rip: 0x7_0000_0000,
            ..Default::default()
        };
        assert!(read_code(&m, &r, &s).unwrap_err().contains("not mapped"));
        // Mapped, but no RAM behind it.
        let r = kvm_regs {
            rip: 0xd000_0000,
            ..Default::default()
        };
        assert!(read_code(&m, &r, &s)
            .unwrap_err()
            .contains("outside guest memory"));
    }

    #[test]
    fn the_report_names_reason_rip_code_and_registers() {
        let m = mem();
        m.write_slice(&[0x0f, 0x0b], GuestAddress(0x10_0000))
            .unwrap();
        let mut s = kvm_sregs {
            cr0: CR0_PE,
            ..Default::default()
        };
        s.cs.db = 1;
        let r = kvm_regs {
            rip: 0x10_0000,
            rax: 0x1234,
            ..Default::default()
        };
        let report =
            CrashReport::new(CrashKind::TripleFault, &m, Some(r), Some(s), None).to_string();
        assert!(report.starts_with("guest crashed: triple fault"));
        assert!(report.contains("code at 0x100000: 0f 0b 00"));
        assert!(report.contains("rip=0x0000000000100000"));
        assert!(report.contains("rax=0x0000000000001234"));
        assert!(report.contains("cr0=0x00000001"));
        assert!(report.contains("  cs  sel="));
    }

    #[test]
    fn missing_registers_are_said_not_invented() {
        let report = CrashReport::new(
            CrashKind::EmulationFailure,
            &mem(),
            None,
            None,
            Some("x".into()),
        )
        .to_string();
        assert!(report.contains("general registers unavailable"));
        assert!(report.contains("code: cannot read: registers unavailable"));
        assert!(report.contains("note: x"));
    }
}
