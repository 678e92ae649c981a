//! Guest memory: anonymous, lazily backed host mappings (`MAP_NORESERVE`, nothing touched
//! until the guest or a loader writes it), and the one place that hands them to KVM.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// Guest memory.
pub type GuestMem = GuestMemoryMmap<()>;

/// Errors while creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host refused the mapping.
    #[error("cannot map {size} bytes of guest memory: {source}")]
    Map {
        /// Bytes asked for.
        size: u64,
        /// Why.
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM refused a memory slot.
    #[error("KVM refused guest memory slot {slot} ({size} bytes at {base:#x}): {source}")]
    Register {
        /// Slot number.
        slot: u32,
        /// Guest-physical base.
        base: u64,
        /// Size in bytes.
        size: u64,
        /// Why.
        source: kvm_ioctls::Error,
    },
}

/// Where `size` bytes of RAM go in the guest-physical space: below the 32-bit MMIO hole, and
/// what does not fit there from 4 GiB up.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if size > low {
        regions.push((GuestAddress(MMIO_GAP_END), (size - low) as usize));
    }
    regions
}

/// Maps `size` bytes of guest RAM. Nothing is touched, so the host commits pages only as
/// the guest uses them.
pub fn create(size: u64) -> Result<GuestMem, Error> {
    GuestMemoryMmap::from_ranges(&ram_regions(size)).map_err(|source| Error::Map { size, source })
}

/// Registers every region of `mem` with KVM, one slot each.
pub fn register(vm: &VmFd, mem: &GuestMem) -> Result<(), Error> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let base = region.start_addr().raw_value();
        let size = region.len();
        // `get_host_address` cannot fail for offset 0 of a region we just iterated.
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| Error::Register {
                slot,
                base,
                size,
                source: kvm_ioctls::Error::new(libc::EFAULT),
            })?;
        let region_desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: base,
            memory_size: size,
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of a mapping of `size` bytes owned by `mem`. `mem` is
        // kept alive by the `Vmm` for as long as the VM file descriptor exists, so KVM never
        // sees the mapping go away under the guest; slots are distinct and regions disjoint.
        unsafe { vm.set_user_memory_region(region_desc) }.map_err(|source| Error::Register {
            slot,
            base,
            size,
            source,
        })?;
    }
    Ok(())
}

/// Total guest RAM in bytes.
pub fn size(mem: &GuestMem) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// Whether `[addr, addr + len)` lies entirely inside one RAM region.
pub fn contains_range(mem: &GuestMem, addr: u64, len: u64) -> bool {
    if len == 0 {
        return mem.address_in_range(GuestAddress(addr));
    }
    let Some(last) = addr.checked_add(len - 1) else {
        return false;
    };
    mem.iter().any(|r| {
        let start = r.start_addr().raw_value();
        addr >= start && last <= r.last_addr().raw_value()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_region_at_zero() {
        assert_eq!(ram_regions(16 << 20), vec![(GuestAddress(0), 16 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let r = ram_regions(4 << 30);
        assert_eq!(
            r,
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
    }

    #[test]
    fn ranges_are_checked_against_regions() {
        let mem = create(4 << 30).unwrap();
        assert!(contains_range(&mem, 0, 16));
        assert!(contains_range(&mem, (3 << 30) - 16, 16));
        assert!(!contains_range(&mem, (3 << 30) - 16, 17));
        assert!(!contains_range(&mem, 0xd000_0000, 4));
        assert!(contains_range(&mem, 4 << 30, 1 << 30));
        assert!(!contains_range(&mem, u64::MAX, 2));
    }
}
