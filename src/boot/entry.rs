//! The CPU state at a guest's first instruction: real mode, 32-bit flat protected mode, or
//! 64-bit long mode on kvmini's GDT and identity map, and what each needs in guest memory.
//!
//! Source of truth: Intel SDM vol. 3A, chapter 9 (processor management and initialization) and
//! section 9.8 (switching to protected mode), 9.8.5 (IA-32e mode).

use kvm_bindings::{kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::Error;
use crate::arch::x86_64::layout::{BOOT_STACK_POINTER, GDT_START, REAL_MODE_STACK_POINTER};
use crate::arch::x86_64::{gdt, paging, regs};
use crate::memory::GuestMem;

/// The CPU state a loaded image expects at its first instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Real mode at `segment:ip`, every segment register equal to `segment`.
    Real {
        /// CS, DS, ES, FS, GS and SS.
        segment: u16,
        /// Instruction pointer.
        ip: u16,
    },
    /// 32-bit flat protected mode, paging off.
    Protected {
        /// Instruction pointer.
        eip: u32,
        /// EAX (the boot magic for Multiboot kernels).
        eax: u32,
        /// EBX (the PVH start info for PVH kernels, the boot information for Multiboot
        /// kernels).
        ebx: u32,
    },
    /// 64-bit long mode on kvmini's identity map of the first 4 GiB.
    Long {
        /// Instruction pointer.
        rip: u64,
        /// RSI (the Linux `boot_params` for 64-bit Linux entry).
        rsi: u64,
    },
}

/// Writes what the entry mode needs into guest memory (GDT, page tables) and returns the
/// registers to start the vCPU with. `sregs` is the vCPU's state after creation.
pub fn setup_entry(
    mem: &GuestMem,
    entry: &Entry,
    sregs: &mut kvm_sregs,
) -> Result<kvm_regs, Error> {
    let write_gdt = || {
        mem.write_obj(gdt::BOOT_GDT, GuestAddress(GDT_START))
            .map_err(|source| Error::Memory {
                what: "the GDT",
                source,
            })
    };
    match *entry {
        Entry::Real { segment, ip } => {
            regs::real_mode_sregs(sregs, segment);
            Ok(regs::entry_regs(
                u64::from(ip),
                REAL_MODE_STACK_POINTER,
                false,
            ))
        }
        Entry::Protected { eip, eax, ebx } => {
            write_gdt()?;
            regs::protected_mode_sregs(sregs, GDT_START, gdt::BOOT_GDT.len());
            let mut r = regs::entry_regs(u64::from(eip), BOOT_STACK_POINTER, false);
            r.rax = u64::from(eax);
            r.rbx = u64::from(ebx);
            Ok(r)
        }
        Entry::Long { rip, rsi } => {
            write_gdt()?;
            let cr3 = paging::write_identity_map(mem, false).map_err(|source| Error::Memory {
                what: "the page tables",
                source,
            })?;
            regs::long_mode_sregs(sregs, GDT_START, gdt::BOOT_GDT.len(), cr3, false);
            let mut r = regs::entry_regs(rip, BOOT_STACK_POINTER, false);
            r.rsi = rsi;
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_entry_writes_gdt_and_identity_map() {
        let mem = crate::memory::create(16 << 20).unwrap();
        let mut sregs = kvm_sregs::default();
        let r = setup_entry(
            &mem,
            &Entry::Long {
                rip: 0x10_0000,
                rsi: 0x7000,
            },
            &mut sregs,
        )
        .unwrap();
        assert_eq!(
            (r.rip, r.rsi, r.rsp),
            (0x10_0000, 0x7000, BOOT_STACK_POINTER)
        );
        let gdt: [u64; 6] = mem.read_obj(GuestAddress(GDT_START)).unwrap();
        assert_eq!(gdt, gdt::BOOT_GDT);
        let pml4: u64 = mem.read_obj(GuestAddress(sregs.cr3)).unwrap();
        assert_eq!(pml4 & 1, 1);
    }

    #[test]
    fn real_mode_entry_touches_no_memory() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let mut sregs = kvm_sregs::default();
        let r = setup_entry(
            &mem,
            &Entry::Real {
                segment: 0x1000,
                ip: 0x10,
            },
            &mut sregs,
        )
        .unwrap();
        assert_eq!((r.rip, r.rsp), (0x10, REAL_MODE_STACK_POINTER));
        assert_eq!(sregs.cs.base, 0x10000);
        let gdt: u64 = mem.read_obj(GuestAddress(GDT_START + 8)).unwrap();
        assert_eq!(gdt, 0);
    }
}
