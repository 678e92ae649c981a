//! The PVH boot protocol: the kernel's PVH note names a 32-bit entry point, entered in flat
//! protected mode with paging off and EBX = the `hvm_start_info`, which carries the command
//! line, the memory map and the modules (the initrd).
//!
//! Source of truth: Xen's `xen/include/public/arch-x86/hvm/start_info.h` and
//! `docs/misc/pvh.pandoc`.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::GuestAddress;

use super::error::Error;
use super::initrd::Initrd;
use super::memmap::memory_map;
use crate::arch::x86_64::layout::{PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START};
use crate::memory::GuestMem;

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// The version of `hvm_start_info` kvmini writes: 1, the first with the memory map.
const HVM_START_INFO_VERSION: u32 = 1;

/// Writes `hvm_start_info`, the memory map and the module list (the initrd).
pub fn write_start_info(
    mem: &GuestMem,
    cmdline_addr: Option<u64>,
    initrd: Option<Initrd>,
) -> Result<(), Error> {
    let memmap: Vec<hvm_memmap_table_entry> = memory_map(mem)
        .into_iter()
        .map(|r| hvm_memmap_table_entry {
            addr: r.addr,
            size: r.size,
            type_: r.kind,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = initrd
        .iter()
        .map(|i| hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            ..Default::default()
        })
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: HVM_START_INFO_VERSION,
        cmdline_paddr: cmdline_addr.unwrap_or(0),
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_START
        },
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(|source| Error::Configurator {
        what: "the PVH start info",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn pvh_start_info_describes_memory() {
        let mem = crate::memory::create(16 << 20).unwrap();
        let initrd = Initrd {
            addr: 0x80_0000,
            size: 0x1000,
        };
        write_start_info(&mem, Some(0x20000), Some(initrd)).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.memmap_entries, 2);
        assert_eq!(info.cmdline_paddr, 0x20000);
        assert_eq!(
            (info.nr_modules, info.modlist_paddr),
            (1, PVH_MODLIST_START)
        );
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!((module.paddr, module.size), (0x80_0000, 0x1000));
        let second: [u64; 2] = mem.read_obj(GuestAddress(info.memmap_paddr + 24)).unwrap();
        assert_eq!(second, [0x10_0000, (16 << 20) - 0x10_0000]);
    }
}
