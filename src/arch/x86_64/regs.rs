//! The CPU state a guest is started in: one pure function per x86 operating mode, over the
//! `kvm_sregs`/`kvm_regs` a freshly created vCPU reports.
//!
//! Source of truth: Intel SDM Vol. 3A, 9.1 "Initialization Overview" (reset state), 9.8
//! "Software Initialization for Protected-Mode Operation" and 9.8.5 "Initializing IA-32e
//! Mode".

use kvm_bindings::{kvm_regs, kvm_sregs};

use super::gdt::{boot_segment, selector};
use super::paging::{CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};

/// CR0.NE: report x87 errors natively (as every modern OS expects).
const CR0_NE: u64 = 1 << 5;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;
/// RFLAGS.IOPL = 3: `in`/`out` allowed at every privilege level.
const RFLAGS_IOPL3: u64 = 3 << 12;

/// Real mode with all segment registers equal to `segment`. Only selector and base change:
/// the access rights a vCPU has after reset are the ones real mode needs.
pub fn real_mode_sregs(sregs: &mut kvm_sregs, segment: u16) {
    for seg in [
        &mut sregs.cs,
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        seg.selector = segment;
        seg.base = u64::from(segment) << 4;
        seg.limit = 0xffff;
    }
    sregs.cr0 = CR0_ET;
    sregs.cr4 = 0;
    sregs.efer = 0;
}

fn load_gdt(sregs: &mut kvm_sregs, gdt_base: u64, gdt_len: usize) {
    sregs.gdt.base = gdt_base;
    sregs.gdt.limit = (gdt_len * 8 - 1) as u16;
    // A zero-limit IDT: an exception before the guest installs its own ends in a triple
    // fault, which kvmini reports, instead of jumping through whatever memory holds.
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
}

fn load_data_segments(sregs: &mut kvm_sregs, data_selector: u16) {
    let data = boot_segment(data_selector);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
}

/// 32-bit flat protected mode with paging off, on the GDT at `gdt_base`.
pub fn protected_mode_sregs(sregs: &mut kvm_sregs, gdt_base: u64, gdt_len: usize) {
    load_gdt(sregs, gdt_base, gdt_len);
    sregs.cs = boot_segment(selector::CODE32);
    load_data_segments(sregs, selector::DATA);
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
    sregs.cr4 = 0;
    sregs.efer = 0;
}

/// 64-bit long mode on the page tables at `cr3`. With `user` the vCPU starts at CPL 3.
pub fn long_mode_sregs(sregs: &mut kvm_sregs, gdt_base: u64, gdt_len: usize, cr3: u64, user: bool) {
    load_gdt(sregs, gdt_base, gdt_len);
    if user {
        sregs.cs = boot_segment(selector::USER_CODE64);
        load_data_segments(sregs, selector::USER_DATA);
    } else {
        sregs.cs = boot_segment(selector::CODE64);
        load_data_segments(sregs, selector::DATA);
    }
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
}

/// General registers at entry: instruction and stack pointer, interrupts off. With `user`,
/// IOPL is 3 so that ring-3 code can reach the port-I/O devices.
pub fn entry_regs(rip: u64, rsp: u64, user: bool) -> kvm_regs {
    kvm_regs {
        rip,
        rsp,
        rflags: RFLAGS_RESERVED | if user { RFLAGS_IOPL3 } else { 0 },
        ..Default::default()
    }
}

/// Offset of LVT LINT0 in the local APIC register page.
const APIC_LVT_LINT0: usize = 0x350;
/// Offset of LVT LINT1.
const APIC_LVT_LINT1: usize = 0x360;
/// LVT delivery mode ExtINT (bits 10:8).
const APIC_MODE_EXTINT: u32 = 0x7 << 8;
/// LVT delivery mode NMI.
const APIC_MODE_NMI: u32 = 0x4 << 8;
const APIC_MODE_MASK: u32 = 0x7 << 8;

/// Wires the local APIC the way a PC's firmware leaves it: the 8259's output on LINT0 as
/// ExtINT, NMI on LINT1 ("virtual wire" mode, MP specification 3.6.2.2).
pub fn set_lint_modes(regs: &mut [std::os::raw::c_char; 1024]) {
    for (offset, mode) in [
        (APIC_LVT_LINT0, APIC_MODE_EXTINT),
        (APIC_LVT_LINT1, APIC_MODE_NMI),
    ] {
        let bytes: [u8; 4] = std::array::from_fn(|i| regs[offset + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !APIC_MODE_MASK) | mode;
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            regs[offset + i] = *b as std::os::raw::c_char;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint0_is_extint_and_lint1_is_nmi() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT_LINT0 + 1] = 0x05; // some other delivery mode
        regs[APIC_LVT_LINT1 + 2] = 0x01; // bit 16: masked, kept
        set_lint_modes(&mut regs);
        assert_eq!(regs[APIC_LVT_LINT0 + 1] as u8, 0x07);
        assert_eq!(
            (
                regs[APIC_LVT_LINT1 + 1] as u8,
                regs[APIC_LVT_LINT1 + 2] as u8
            ),
            (0x04, 0x01)
        );
    }

    #[test]
    fn real_mode_sets_selector_and_base_and_keeps_access_rights() {
        let mut s = kvm_sregs::default();
        s.cs.type_ = 0xb;
        s.cs.present = 1;
        s.cr0 = 0x6000_0011;
        real_mode_sregs(&mut s, 0x1000);
        assert_eq!(
            (s.cs.selector, s.cs.base, s.cs.limit),
            (0x1000, 0x10000, 0xffff)
        );
        assert_eq!((s.ss.selector, s.ss.base), (0x1000, 0x10000));
        assert_eq!((s.cs.type_, s.cs.present), (0xb, 1));
        assert_eq!(s.cr0 & CR0_PE, 0);
    }

    #[test]
    fn protected_mode_is_flat_32bit_without_paging() {
        let mut s = kvm_sregs::default();
        protected_mode_sregs(&mut s, 0x500, 6);
        assert_eq!((s.gdt.base, s.gdt.limit), (0x500, 47));
        assert_eq!((s.cs.selector, s.cs.db, s.cs.l), (0x18, 1, 0));
        assert_eq!((s.ds.base, s.ds.limit), (0, 0xffff_ffff));
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!(s.efer, 0);
        assert_eq!(s.idt.limit, 0);
    }

    #[test]
    fn long_mode_enables_paging_pae_and_lma() {
        let mut s = kvm_sregs::default();
        long_mode_sregs(&mut s, 0x500, 6, 0x9000, false);
        assert_eq!((s.cs.selector, s.cs.l, s.cs.dpl), (0x08, 1, 0));
        assert_eq!(s.cr3, 0x9000);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.cr4 & CR4_PAE, CR4_PAE);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);

        long_mode_sregs(&mut s, 0x500, 6, 0x9000, true);
        assert_eq!(
            (s.cs.selector, s.cs.dpl, s.ss.selector, s.ss.dpl),
            (0x2b, 3, 0x23, 3)
        );
    }

    #[test]
    fn entry_registers() {
        let r = entry_regs(0x10_0000, 0x8ff0, false);
        assert_eq!((r.rip, r.rsp, r.rflags), (0x10_0000, 0x8ff0, 2));
        assert_eq!(entry_regs(0, 0, true).rflags, 0x3002);
    }
}
