//! Page tables: the identity map kvmini builds for long-mode entry, and a software page
//! walk that turns a guest-virtual address into a guest-physical one (used to show the code
//! bytes at RIP when a guest crashes with paging on).
//!
//! Source of truth: Intel SDM Vol. 3A, chapter 4 "Paging" (4.3 32-bit paging, 4.4 PAE
//! paging, 4.5 4-level paging).

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::arch::x86_64::layout::{IDENTITY_MAP_SIZE, PDE_START, PDPTE_START, PML4_START};

/// Present.
pub const PTE_P: u64 = 1 << 0;
/// Writable.
pub const PTE_RW: u64 = 1 << 1;
/// Reachable from ring 3.
pub const PTE_US: u64 = 1 << 2;
/// Page size: this entry maps a large page rather than pointing at a table.
pub const PTE_PS: u64 = 1 << 7;

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const GIB: u64 = 1 << 30;
const TWO_MIB: u64 = 2 << 20;

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type, hard-wired to 1 on every CPU since the 486.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages under 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: physical address extension (required for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

/// One entry to write: where, and what.
pub type TableEntry = (u64, u64);

/// The entries of an identity map of the first [`IDENTITY_MAP_SIZE`] bytes with 2 MiB
/// pages: one PML4 entry, one PDPT entry per GiB, 512 PD entries per GiB. With `user`,
/// every level carries the U/S bit so that ring-3 code can use the mapping too.
pub fn identity_map_entries(user: bool) -> Vec<TableEntry> {
    let bits = PTE_P | PTE_RW | if user { PTE_US } else { 0 };
    let gibs = IDENTITY_MAP_SIZE / GIB;
    let mut entries = Vec::with_capacity(1 + gibs as usize * 513);
    entries.push((PML4_START, PDPTE_START | bits));
    for gib in 0..gibs {
        let pd = PDE_START + gib * 0x1000;
        entries.push((PDPTE_START + gib * 8, pd | bits));
        for i in 0..512 {
            let phys = gib * GIB + i * TWO_MIB;
            entries.push((pd + i * 8, phys | bits | PTE_PS));
        }
    }
    entries
}

/// Writes the identity map into guest memory; returns the value for CR3.
pub fn write_identity_map<M: GuestMemoryBackend>(
    mem: &M,
    user: bool,
) -> Result<u64, vm_memory::GuestMemoryError> {
    // Build each table page in host memory and write it in one go: 6 writes instead of 2,053.
    let mut pages = std::collections::BTreeMap::<u64, [u64; 512]>::new();
    for (addr, value) in identity_map_entries(user) {
        let page = addr & !0xfff;
        pages.entry(page).or_insert([0; 512])[((addr & 0xfff) / 8) as usize] = value;
    }
    for (page, table) in pages {
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(page))?;
    }
    Ok(PML4_START)
}

/// The paging-related control registers of a vCPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagingState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
}

/// Why a guest-virtual address could not be translated.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// A paging-structure entry on the way is not present.
    #[error("not mapped (level-{level} entry at {entry_addr:#x} is not present)")]
    NotPresent {
        /// Paging level of the entry, 1 = page table.
        level: u8,
        /// Guest-physical address of the entry.
        entry_addr: u64,
    },
    /// A paging structure lies outside guest RAM.
    #[error("page table at {0:#x} is outside guest memory")]
    TableOutsideMemory(u64),
    /// 5-level paging is not walked.
    #[error("5-level paging is not supported by the page walker")]
    FiveLevel,
}

/// Translates `vaddr` through the guest's page tables. With paging off the address is
/// already physical.
pub fn translate<M: GuestMemoryBackend>(
    mem: &M,
    state: &PagingState,
    vaddr: u64,
) -> Result<u64, WalkError> {
    if state.cr0 & CR0_PG == 0 {
        return Ok(vaddr);
    }
    if state.cr4 & CR4_PAE == 0 {
        return walk_32bit(mem, state, vaddr as u32);
    }
    if state.efer & EFER_LMA == 0 {
        // PAE: a 4-entry PDPT whose entries have no PS bit.
        return walk(
            mem,
            state.cr3 & 0xffff_ffe0,
            vaddr & 0xffff_ffff,
            &[(3, 30, 0x3)],
            false,
        );
    }
    if state.cr4 & CR4_LA57 != 0 {
        return Err(WalkError::FiveLevel);
    }
    walk(
        mem,
        state.cr3 & ADDR_MASK,
        vaddr,
        &[(4, 39, 0x1ff), (3, 30, 0x1ff)],
        true,
    )
}

/// Walks 64-bit-entry paging: the `upper` levels (level, shift, index mask) and then the
/// page directory (level 2, large pages allowed) and page table (level 1). `huge_pages`
/// says whether a level-3 entry may map a 1 GiB page (4-level paging only).
fn walk<M: GuestMemoryBackend>(
    mem: &M,
    mut table: u64,
    vaddr: u64,
    upper: &[(u8, u32, u64)],
    huge_pages: bool,
) -> Result<u64, WalkError> {
    let levels = upper
        .iter()
        .copied()
        .chain([(2u8, 21u32, 0x1ffu64), (1, 12, 0x1ff)]);
    for (level, shift, mask) in levels {
        let entry_addr = table + ((vaddr >> shift) & mask) * 8;
        let entry: u64 = mem
            .read_obj(GuestAddress(entry_addr))
            .map_err(|_| WalkError::TableOutsideMemory(table))?;
        if entry & PTE_P == 0 {
            return Err(WalkError::NotPresent { level, entry_addr });
        }
        let large = entry & PTE_PS != 0 && (level == 2 || (level == 3 && huge_pages));
        if large || level == 1 {
            let page_mask = (1u64 << shift) - 1;
            return Ok((entry & ADDR_MASK & !page_mask) | (vaddr & page_mask));
        }
        table = entry & ADDR_MASK;
    }
    unreachable!("the walk always ends at level 1")
}

fn walk_32bit<M: GuestMemoryBackend>(
    mem: &M,
    state: &PagingState,
    vaddr: u32,
) -> Result<u64, WalkError> {
    let pd = state.cr3 & 0xffff_f000;
    let pde_addr = pd + u64::from(vaddr >> 22) * 4;
    let pde: u32 = mem
        .read_obj(GuestAddress(pde_addr))
        .map_err(|_| WalkError::TableOutsideMemory(pd))?;
    if pde & 1 == 0 {
        return Err(WalkError::NotPresent {
            level: 2,
            entry_addr: pde_addr,
        });
    }
    if pde & (PTE_PS as u32) != 0 && state.cr4 & CR4_PSE != 0 {
        return Ok(u64::from(pde & 0xffc0_0000) | u64::from(vaddr & 0x003f_ffff));
    }
    let pt = u64::from(pde & 0xffff_f000);
    let pte_addr = pt + u64::from((vaddr >> 12) & 0x3ff) * 4;
    let pte: u32 = mem
        .read_obj(GuestAddress(pte_addr))
        .map_err(|_| WalkError::TableOutsideMemory(pt))?;
    if pte & 1 == 0 {
        return Err(WalkError::NotPresent {
            level: 1,
            entry_addr: pte_addr,
        });
    }
    Ok(u64::from(pte & 0xffff_f000) | u64::from(vaddr & 0xfff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    fn long_mode(cr3: u64) -> PagingState {
        PagingState {
            cr0: CR0_PE | CR0_PG,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
        }
    }

    #[test]
    fn identity_map_covers_four_gib_with_2mib_pages() {
        let entries = identity_map_entries(false);
        assert_eq!(entries.len(), 1 + 4 * 513);
        assert_eq!(entries[0], (PML4_START, PDPTE_START | 3));
        let last = entries.last().unwrap();
        assert_eq!(last.0, PDE_START + 3 * 0x1000 + 511 * 8);
        assert_eq!(last.1, ((4u64 << 30) - (2 << 20)) | 0x83);
        assert!(identity_map_entries(true)
            .iter()
            .all(|(_, v)| v & PTE_US != 0));
        assert!(identity_map_entries(false)
            .iter()
            .all(|(_, v)| v & PTE_US == 0));
    }

    #[test]
    fn walking_the_identity_map_returns_the_same_address() {
        let m = mem();
        let cr3 = write_identity_map(&m, false).unwrap();
        let st = long_mode(cr3);
        for addr in [0u64, 0x10_0000, 0x12_3456, 0xd000_0000, 0xffff_ffff] {
            assert_eq!(translate(&m, &st, addr), Ok(addr), "{addr:#x}");
        }
        // Above the 4 GiB the map covers: the PML4 entry is there, the PDPT entry is not.
        assert_eq!(
            translate(&m, &st, 5 << 30),
            Err(WalkError::NotPresent {
                level: 3,
                entry_addr: PDPTE_START + 5 * 8
            })
        );
    }

    #[test]
    fn walks_4kib_pages_and_reports_where_the_walk_stops() {
        let m = mem();
        // Map virtual 0xffff_8000_0020_3000 to physical 0x55_5000 through fresh tables.
        let (pml4, pdpt, pd, pt) = (0x1_0000u64, 0x1_1000u64, 0x1_2000u64, 0x1_3000u64);
        let va = 0xffff_8000_0020_3abcu64;
        m.write_obj(pdpt | 3, GuestAddress(pml4 + ((va >> 39) & 0x1ff) * 8))
            .unwrap();
        m.write_obj(pd | 3, GuestAddress(pdpt + ((va >> 30) & 0x1ff) * 8))
            .unwrap();
        m.write_obj(pt | 3, GuestAddress(pd + ((va >> 21) & 0x1ff) * 8))
            .unwrap();
        m.write_obj(
            0x55_5000u64 | 3,
            GuestAddress(pt + ((va >> 12) & 0x1ff) * 8),
        )
        .unwrap();
        let st = long_mode(pml4);
        assert_eq!(translate(&m, &st, va), Ok(0x55_5abc));
        assert!(matches!(
            translate(&m, &st, va + 0x1000),
            Err(WalkError::NotPresent { level: 1, .. })
        ));
    }

    #[test]
    fn walks_32bit_and_pae_paging() {
        let m = mem();
        // 32-bit paging: one 4 MiB page (PSE) and one 4 KiB page.
        let pd = 0x2_0000u64;
        let pt = 0x2_1000u64;
        m.write_obj(0x0040_0083u32, GuestAddress(pd + 4)).unwrap(); // 4-8 MiB -> 4-8 MiB
        m.write_obj((pt as u32) | 3, GuestAddress(pd + 8)).unwrap(); // 8-12 MiB -> table
        m.write_obj(0x0007_7003u32, GuestAddress(pt + 5 * 4))
            .unwrap();
        let st = PagingState {
            cr0: CR0_PE | CR0_PG,
            cr3: pd,
            cr4: CR4_PSE,
            efer: 0,
        };
        assert_eq!(translate(&m, &st, 0x0045_6789), Ok(0x0045_6789));
        assert_eq!(translate(&m, &st, 0x0080_5123), Ok(0x0007_7123));
        assert!(translate(&m, &st, 0x00c0_0000).is_err());

        // PAE: 4-entry PDPT, 2 MiB page.
        let pdpt = 0x3_0000u64;
        let pd = 0x3_1000u64;
        m.write_obj(pd | 1, GuestAddress(pdpt)).unwrap();
        m.write_obj(0x0060_0083u64, GuestAddress(pd + 8)).unwrap();
        let st = PagingState {
            cr0: CR0_PE | CR0_PG,
            cr3: pdpt,
            cr4: CR4_PAE,
            efer: 0,
        };
        assert_eq!(translate(&m, &st, 0x0020_1234), Ok(0x0060_1234));
    }

    #[test]
    fn without_paging_addresses_are_physical() {
        let st = PagingState {
            cr0: CR0_PE,
            ..Default::default()
        };
        assert_eq!(translate(&mem(), &st, 0x1234), Ok(0x1234));
    }
}
