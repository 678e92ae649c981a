//! Raw images: flat machine code copied byte for byte to a load address and entered in the
//! CPU mode the user names.
//!
//! - real mode follows kvmtool's flat-binary convention: loaded at 0x10000 and entered at
//!   `CS:IP = 0x1000:0000` with every segment register equal to CS;
//! - protected and long mode load at 1 MiB and enter at the load address, on kvmini's GDT
//!   (and, for long mode, its identity map of the first 4 GiB).

use std::path::Path;

use vm_memory::{Bytes, GuestAddress};

use super::error::{EntryProblem, Error, LoadAddressProblem, Part};
use super::reader::ImageReader;
use super::Entry;
use crate::arch::x86_64::layout::{
    BOOT_STRUCTURES_END, GDT_START, HIGH_LOAD_ADDR, IDENTITY_MAP_SIZE, REAL_MODE_LIMIT,
    REAL_MODE_LOAD_ADDR,
};
use crate::config::CpuMode;
use crate::memory::{contains_range, GuestMem};

/// The default load address for `mode`.
pub fn default_load_addr(mode: CpuMode) -> u64 {
    match mode {
        CpuMode::Real => REAL_MODE_LOAD_ADDR,
        CpuMode::Protected | CpuMode::Long => HIGH_LOAD_ADDR,
    }
}

/// Works out the entry state for an image of `len` bytes, checking that it fits the mode and
/// guest memory. Pure: nothing is written.
pub fn plan(
    mem: &GuestMem,
    mode: CpuMode,
    len: u64,
    load_addr: Option<u64>,
    entry: Option<u64>,
) -> Result<(u64, Entry), Error> {
    let load = load_addr.unwrap_or_else(|| default_load_addr(mode));
    let mem_size = crate::memory::size(mem);
    if !contains_range(mem, load, len) {
        return Err(Error::DoesNotFit {
            what: Part::RawImage,
            start: load,
            size: len,
            mem: mem_size,
            hint: "raise --mem or choose a lower --load-addr",
        });
    }
    let end = load + len;
    let entry = entry.unwrap_or(load);
    if !contains_range(mem, entry, 1) {
        return Err(Error::BadEntry {
            entry,
            problem: EntryProblem::OutsideMemory(mem_size),
        });
    }
    let plan = match mode {
        CpuMode::Real => {
            if load % 16 != 0 {
                return Err(Error::BadLoadAddress {
                    addr: load,
                    problem: LoadAddressProblem::NotParagraphAligned,
                });
            }
            if end > REAL_MODE_LIMIT {
                return Err(Error::BadLoadAddress {
                    addr: load,
                    problem: LoadAddressProblem::AboveRealModeLimit { end },
                });
            }
            let ip = entry
                .checked_sub(load)
                .filter(|ip| *ip <= 0xffff)
                .ok_or(Error::BadEntry {
                    entry,
                    problem: EntryProblem::BeyondRealModeSegment { load },
                })?;
            Entry::Real {
                segment: (load >> 4) as u16,
                ip: ip as u16,
            }
        }
        CpuMode::Protected | CpuMode::Long => {
            if load < BOOT_STRUCTURES_END && end > GDT_START {
                return Err(Error::OverlapsBootStructures {
                    what: Part::RawImage,
                    start: load,
                    end,
                });
            }
            if entry >= IDENTITY_MAP_SIZE {
                return Err(Error::BadEntry {
                    entry,
                    problem: EntryProblem::Above4G(mode),
                });
            }
            if mode == CpuMode::Protected {
                Entry::Protected {
                    eip: entry as u32,
                    eax: 0,
                    ebx: 0,
                }
            } else {
                Entry::Long { rip: entry, rsi: 0 }
            }
        }
    };
    Ok((load, plan))
}

/// Where and how a raw image starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawArgs {
    /// The CPU mode.
    pub mode: CpuMode,
    /// The load address; the mode's default when `None`.
    pub load_addr: Option<u64>,
    /// The entry point; the load address when `None`.
    pub entry: Option<u64>,
}

/// Copies the image (`len` bytes of `file`, from `path`) into guest memory and returns its
/// entry state.
pub fn load(
    mem: &GuestMem,
    file: &mut ImageReader,
    path: &Path,
    len: u64,
    args: &RawArgs,
) -> Result<Entry, Error> {
    let (load, entry) = plan(mem, args.mode, len, args.load_addr, args.entry)?;
    // Straight from the file into guest memory: no copy of the image in the VMM.
    use std::io::Seek;
    file.rewind().map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    mem.read_exact_volatile_from(GuestAddress(load), file, len as usize)
        .map_err(|source| Error::Memory {
            what: "the raw image",
            source,
        })?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: u64) -> GuestMem {
        crate::memory::create(size).unwrap()
    }

    #[test]
    fn real_mode_uses_the_kvmtool_convention() {
        let (load, e) = plan(&mem(1 << 20), CpuMode::Real, 512, None, None).unwrap();
        assert_eq!(load, 0x10000);
        assert_eq!(
            e,
            Entry::Real {
                segment: 0x1000,
                ip: 0
            }
        );
        let (_, e) = plan(
            &mem(1 << 20),
            CpuMode::Real,
            512,
            Some(0x7c00),
            Some(0x7c10),
        )
        .unwrap();
        assert_eq!(
            e,
            Entry::Real {
                segment: 0x7c0,
                ip: 0x10
            }
        );
    }

    #[test]
    fn real_mode_rejects_what_real_mode_cannot_reach() {
        let m = mem(4 << 20);
        assert!(matches!(
            plan(&m, CpuMode::Real, 16, Some(0x7c01), None),
            Err(Error::BadLoadAddress { addr: 0x7c01, .. })
        ));
        assert!(matches!(
            plan(&m, CpuMode::Real, 2 << 20, None, None),
            Err(Error::BadLoadAddress { addr: 0x10000, .. })
        ));
        assert!(matches!(
            plan(&m, CpuMode::Real, 0x20000, None, Some(0x20000)),
            Err(Error::BadEntry { entry: 0x20000, .. })
        ));
    }

    #[test]
    fn high_modes_load_at_one_mib() {
        let (load, e) = plan(&mem(16 << 20), CpuMode::Long, 4096, None, None).unwrap();
        assert_eq!(load, 0x10_0000);
        assert_eq!(
            e,
            Entry::Long {
                rip: 0x10_0000,
                rsi: 0
            }
        );
        let (_, e) = plan(
            &mem(16 << 20),
            CpuMode::Protected,
            4096,
            None,
            Some(0x10_0010),
        )
        .unwrap();
        assert_eq!(
            e,
            Entry::Protected {
                eip: 0x10_0010,
                eax: 0,
                ebx: 0
            }
        );
    }

    #[test]
    fn images_must_fit_in_memory_and_miss_boot_structures() {
        let m = mem(2 << 20);
        let err = plan(&m, CpuMode::Long, 2 << 20, None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the raw image (2 MiB at 0x100000) does not fit in 2 MiB of guest memory; raise --mem or choose a lower --load-addr"
        );
        assert!(matches!(
            plan(&m, CpuMode::Long, 0x100, Some(0x8000), None),
            Err(Error::OverlapsBootStructures { .. })
        ));
        assert!(matches!(
            plan(&m, CpuMode::Long, 0x100, None, Some(0x30_0000)),
            Err(Error::BadEntry { .. })
        ));
    }
}
