//! The initial ramdisk: placed as high as the kernel allows in the RAM below 4 GiB, above the
//! kernel, page aligned, and copied straight from its file into guest memory.
//!
//! Source of truth: Linux's `Documentation/arch/x86/boot.rst` (`initrd_addr_max`, "the initrd
//! should typically be located as high in memory as possible").

use std::path::Path;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::error::{Error, Part};
use super::reader::{self, ImageReader};
use crate::arch::x86_64::layout::HIGH_LOAD_ADDR;
use crate::memory::GuestMem;

/// Where an initrd was put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Initrd {
    /// Guest-physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The end of the RAM that starts at 0: all of guest memory, or the part below the 32-bit
/// MMIO hole.
pub fn low_ram_end(mem: &GuestMem) -> u64 {
    mem.iter()
        .find(|r| r.start_addr().raw_value() == 0)
        .map_or(0, |r| r.len())
}

/// Where an initrd of `size` bytes goes: as high as possible in the RAM below 4 GiB, page
/// aligned, ending below `max_end` (the kernel's `initrd_addr_max` + 1) and starting above
/// `kernel_end`.
pub fn place_initrd(
    mem: &GuestMem,
    size: u64,
    kernel_end: u64,
    max_end: u64,
) -> Result<u64, Error> {
    let end = low_ram_end(mem).min(max_end);
    let addr = end.checked_sub(size).map(|a| a & !0xfff);
    match addr {
        Some(addr) if addr >= kernel_end.max(HIGH_LOAD_ADDR) => Ok(addr),
        _ => Err(Error::DoesNotFit {
            what: Part::Initrd {
                kernel_end,
                limit: end,
            },
            start: kernel_end,
            size,
            mem: crate::memory::size(mem),
            hint: "raise --mem",
        }),
    }
}

/// Copies the initrd from `path` into guest memory, ending below `max_end`.
pub fn load_initrd(
    mem: &GuestMem,
    path: &Path,
    kernel_end: u64,
    max_end: u64,
) -> Result<Initrd, Error> {
    let io = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = reader::open(path)?;
    let size = file.metadata().map_err(io)?.len();
    if size == 0 {
        return Err(Error::Empty(path.to_path_buf()));
    }
    let addr = place_initrd(mem, size, kernel_end, max_end)?;
    let mut file = ImageReader::new(file, size);
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| Error::Memory {
            what: "the initrd",
            source,
        })?;
    Ok(Initrd { addr, size })
}

/// ", initrd 1.2 MiB at 0x7000000" for boot summaries, or nothing.
pub fn summary(initrd: Option<Initrd>) -> String {
    initrd.map_or(String::new(), |i| {
        format!(
            ", initrd {} at {:#x}",
            crate::config::human_size(i.size),
            i.addr
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_goes_high_and_must_fit_above_the_kernel() {
        let mem = crate::memory::create(64 << 20).unwrap();
        let addr = place_initrd(&mem, 0x1800, 0x200_0000, 0x3800_0000).unwrap();
        assert_eq!(addr, (64 << 20) - 0x2000);
        // Below a kernel-imposed maximum.
        let addr = place_initrd(&mem, 0x1000, 0x200_0000, 48 << 20).unwrap();
        assert_eq!(addr, (48 << 20) - 0x1000);
        let err = place_initrd(&mem, 60 << 20, 0x200_0000, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        assert!(
            err.to_string().starts_with(
                "the initrd (the kernel ends at 0x2000000; the initrd must end below 0x4000000)"
            ),
            "{err}"
        );
    }
}
