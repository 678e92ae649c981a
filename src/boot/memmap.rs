//! The guest's memory map, as every boot protocol hands it over (Linux's e820 table in the
//! zero page, PVH's `hvm_memmap_table_entry` array): RAM below the EBDA, a hole up to 1 MiB as
//! on a PC, then every RAM region.
//!
//! Source of truth: the ACPI specification's address range types; Linux's
//! `Documentation/arch/x86/zero-page.rst` for the e820 table.

use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::x86_64::layout::{EBDA_START, HIGH_LOAD_ADDR};
use crate::memory::GuestMem;

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// One range of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    /// Guest-physical start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type.
    pub kind: u32,
}

impl MemoryRange {
    const fn ram(addr: u64, size: u64) -> Self {
        MemoryRange {
            addr,
            size,
            kind: E820_RAM,
        }
    }
}

/// The memory map of `mem`.
pub fn memory_map(mem: &GuestMem) -> Vec<MemoryRange> {
    let mut map = Vec::new();
    for region in mem.iter() {
        let start = region.start_addr().raw_value();
        let end = start + region.len();
        if start == 0 {
            map.push(MemoryRange::ram(0, end.min(EBDA_START)));
            if end > HIGH_LOAD_ADDR {
                map.push(MemoryRange::ram(HIGH_LOAD_ADDR, end - HIGH_LOAD_ADDR));
            }
        } else {
            map.push(MemoryRange::ram(start, end - start));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_has_the_pc_hole_and_the_mmio_gap() {
        let mem = crate::memory::create(16 << 20).unwrap();
        assert_eq!(
            memory_map(&mem),
            vec![
                MemoryRange::ram(0, 0x9fc00),
                MemoryRange::ram(0x10_0000, (16 << 20) - 0x10_0000)
            ]
        );
        let mem = crate::memory::create(4 << 30).unwrap();
        let map = memory_map(&mem);
        assert_eq!(map.len(), 3);
        assert_eq!(map[1], MemoryRange::ram(0x10_0000, (3 << 30) - 0x10_0000));
        assert_eq!(map[2], MemoryRange::ram(4 << 30, 1 << 30));
    }
}
