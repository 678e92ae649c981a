//! Multiboot 1 and Multiboot 2 kernels, booted as GRUB and QEMU's `-kernel` boot them.
//!
//! 1. [`header`] finds the header in the first bytes of the file;
//! 2. the kernel is loaded either by the header's address fields (the "a.out kludge":
//!    Multiboot 1 flag bit 16, the Multiboot 2 address and entry address tags) or, without
//!    them, by its ELF32 or ELF64 program headers ([`elf`]);
//! 3. the initrd and the modules go above it, page-aligned ([`modules`]);
//! 4. the boot information ([`info`]) goes to
//!    [`MULTIBOOT_INFO_START`](crate::arch::x86_64::layout::MULTIBOOT_INFO_START);
//! 5. the vCPU starts in 32-bit flat protected mode, paging off, interrupts off, with
//!    EAX = the boot magic and EBX = the information's address.
//!
//! Sources: the Multiboot Specification 0.6.96 and the Multiboot2 Specification 2.0
//! (chapter 3: the OS image format, the machine state, the boot information).

pub mod elf;
pub mod header;
pub mod info;
pub mod modules;
mod problem;

use std::io::{Seek, SeekFrom};
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use vm_memory::{Bytes, GuestAddress};

pub use header::{Header, Version, Want};
pub use problem::Problem;

use super::error::{EntryProblem, Error, Part};
use super::reader::ImageReader;
use super::{memmap, Entry, Loaded};
use crate::arch::x86_64::layout::{GDT_START, MULTIBOOT_INFO_END, MULTIBOOT_INFO_START};
use crate::config::{CpuMode, ImageFormat, ModuleConfig};
use crate::memory::{contains_range, GuestMem};

/// The top of what a 32-bit kernel reaches.
const LIMIT_4G: u64 = 1 << 32;

/// The headers `--format` asks for.
pub fn want(format: ImageFormat) -> Want {
    match format {
        ImageFormat::Multiboot1 => Want::Only(Version::One),
        ImageFormat::Multiboot2 => Want::Only(Version::Two),
        _ => Want::Any,
    }
}

/// The header of a file that must be a Multiboot kernel (`--format multiboot...`).
pub fn required_header(head: &[u8], len: u64, want: Want) -> Result<Header, Problem> {
    header::find(head, len, want)?.ok_or(Problem::NoHeader(match want {
        Want::Any => None,
        Want::Only(v) => Some(v),
    }))
}

/// A stretch of the file copied to guest memory, the rest up to `memsz` left zero (guest
/// memory starts zeroed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadRange {
    /// What it is, for messages.
    pub what: Part,
    /// File offset.
    pub offset: u64,
    /// Bytes from the file.
    pub filesz: u64,
    /// Guest-physical address.
    pub addr: u64,
    /// Bytes in memory.
    pub memsz: u64,
}

/// The a.out kludge: where the header's address fields put the file (the header found at
/// file offset `header_offset`, in a file of `len` bytes).
pub fn aout_range(
    header: &Header,
    fields: header::AddressFields,
    len: u64,
) -> Result<LoadRange, Problem> {
    let header_addr = u64::from(fields.header_addr);
    let (load_addr, offset) = if header.version == Version::Two && fields.load_addr == u32::MAX {
        // Multiboot 2: load_addr -1 loads the file from its start.
        let load_addr =
            header_addr
                .checked_sub(header.offset)
                .ok_or(Problem::HeaderAddrBelowOffset {
                    header_addr: fields.header_addr,
                    header_offset: header.offset,
                })?;
        (load_addr, 0)
    } else {
        let load_addr = u64::from(fields.load_addr);
        let distance = header_addr
            .checked_sub(load_addr)
            .ok_or(Problem::LoadAboveHeader {
                load_addr: fields.load_addr,
                header_addr: fields.header_addr,
            })?;
        let offset = header
            .offset
            .checked_sub(distance)
            .ok_or(Problem::LoadBeforeFile {
                distance,
                header_offset: header.offset,
            })?;
        (load_addr, offset)
    };
    let filesz = match u64::from(fields.load_end_addr) {
        0 => len.saturating_sub(offset),
        end => end
            .checked_sub(load_addr)
            .ok_or(Problem::LoadEndBeforeLoad {
                load_addr,
                load_end_addr: end,
            })?,
    };
    let memsz = match u64::from(fields.bss_end_addr) {
        0 => filesz,
        end => end.checked_sub(load_addr).filter(|&m| m >= filesz).ok_or(
            Problem::BssEndBeforeLoadEnd {
                load_end: load_addr + filesz,
                bss_end: end,
            },
        )?,
    };
    Ok(LoadRange {
        what: Part::MultibootLoad,
        offset,
        filesz,
        addr: load_addr,
        memsz,
    })
}

/// Checks each range against the file, guest memory, 4 GiB and kvmini's own structures;
/// returns where the kernel ends.
fn check_ranges(ranges: &[LoadRange], path: &Path, len: u64, mem: &GuestMem) -> Result<u64, Error> {
    let bad = |problem| Error::BadMultiboot {
        path: path.to_path_buf(),
        problem,
    };
    let mut kernel_end = 0;
    for r in ranges {
        let file_end = r
            .offset
            .checked_add(r.filesz)
            .ok_or_else(|| bad(Problem::Overflow(r.what)))?;
        if file_end > len {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                what: r.what,
                needed: file_end,
                len,
            });
        }
        if r.filesz > r.memsz {
            return Err(bad(Problem::FileLargerThanMemory(r.what)));
        }
        let end = r
            .addr
            .checked_add(r.memsz)
            .ok_or_else(|| bad(Problem::Overflow(r.what)))?;
        if end > LIMIT_4G {
            return Err(bad(Problem::Above4G { what: r.what, end }));
        }
        if !contains_range(mem, r.addr, r.memsz) {
            return Err(Error::DoesNotFit {
                what: r.what,
                start: r.addr,
                size: r.memsz,
                mem: crate::memory::size(mem),
                hint: "raise --mem",
            });
        }
        if r.addr < MULTIBOOT_INFO_END && end > GDT_START {
            return Err(bad(Problem::Overlaps {
                what: r.what,
                start: r.addr,
                end,
            }));
        }
        kernel_end = kernel_end.max(end);
    }
    Ok(kernel_end)
}

/// The kernel's load ranges and entry point, and how they were found.
fn plan(
    header: &Header,
    file: &mut ImageReader,
    path: &Path,
    len: u64,
) -> Result<(Vec<LoadRange>, u64, &'static str), Error> {
    if let Some(fields) = header.address {
        let range = aout_range(header, fields, len).map_err(|problem| Error::BadMultiboot {
            path: path.to_path_buf(),
            problem,
        })?;
        // The address fields come with an entry address (checked by the header parser).
        let entry = u64::from(header.entry.unwrap_or(fields.load_addr));
        return Ok((vec![range], entry, "address fields"));
    }
    let program = elf::read(file, path, len)?;
    let ranges = program
        .segments
        .iter()
        .map(|s| LoadRange {
            what: Part::ElfSegment(s.index),
            offset: s.offset,
            filesz: s.filesz,
            addr: s.paddr,
            memsz: s.memsz,
        })
        .collect();
    // GRUB lets a Multiboot 2 entry address tag override e_entry.
    let entry = header.entry.map_or(program.entry, u64::from);
    Ok((ranges, entry, "ELF"))
}

/// What a Multiboot kernel gets besides itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct MultibootArgs<'a> {
    /// The command line (none: an empty one).
    pub cmdline: Option<&'a Cmdline>,
    /// The initrd: the first module.
    pub initrd: Option<&'a Path>,
    /// The other modules.
    pub modules: &'a [ModuleConfig],
}

/// Loads the Multiboot kernel `file` (`len` bytes, its `header` found), its modules and its
/// boot information; returns its entry state.
pub fn load(
    mem: &GuestMem,
    file: &mut ImageReader,
    path: &Path,
    len: u64,
    header: &Header,
    args: &MultibootArgs<'_>,
) -> Result<Loaded, Error> {
    // Every file is opened, and refused, before anything is loaded.
    let opened = modules::open(args.initrd, args.modules)?;
    let (ranges, entry, how) = plan(header, file, path, len)?;
    let kernel_end = check_ranges(&ranges, path, len, mem)?;
    if entry >= LIMIT_4G {
        return Err(Error::BadEntry {
            entry,
            problem: EntryProblem::Above4G(CpuMode::Protected),
        });
    }
    if !contains_range(mem, entry, 1) {
        return Err(Error::BadEntry {
            entry,
            problem: EntryProblem::OutsideMemory(crate::memory::size(mem)),
        });
    }
    for r in ranges.iter().filter(|r| r.filesz > 0) {
        file.seek(SeekFrom::Start(r.offset))
            .map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
        mem.read_exact_volatile_from(GuestAddress(r.addr), file, r.filesz as usize)
            .map_err(|source| Error::Memory {
                what: "the kernel",
                source,
            })?;
    }
    let placed = modules::load(mem, opened, kernel_end)?;
    write_info(mem, header.version, args.cmdline, &placed)?;
    let count = match placed.len() {
        0 => String::new(),
        1 => ", 1 module".to_string(),
        n => format!(", {n} modules"),
    };
    Ok(Loaded {
        entry: Entry::Protected {
            eip: entry as u32,
            eax: header.version.boot_magic(),
            ebx: MULTIBOOT_INFO_START as u32,
        },
        summary: format!(
            "Multiboot {} kernel ({how}), entry at {entry:#x}{count}",
            header.version.number()
        ),
    })
}

/// Builds the boot information and writes it at `MULTIBOOT_INFO_START`.
fn write_info(
    mem: &GuestMem,
    version: Version,
    cmdline: Option<&Cmdline>,
    placed: &[modules::Placed],
) -> Result<(), Error> {
    let cmdline = cmdline.and_then(|c| c.as_cstring().ok());
    let memory = memmap::memory_map(mem);
    // Modules end below 4 GiB (modules::load), so their addresses fit in 32 bits.
    let list: Vec<info::Module<'_>> = placed
        .iter()
        .map(|m| info::Module {
            start: m.start as u32,
            end: (m.start + m.size) as u32,
            string: m.string.as_bytes(),
        })
        .collect();
    let boot_info = info::BootInfo {
        cmdline: cmdline.as_ref().map_or(&[][..], |c| c.to_bytes()),
        modules: &list,
        memory: &memory,
    };
    let bytes = match version {
        Version::One => info::multiboot1(&boot_info, MULTIBOOT_INFO_START),
        Version::Two => info::multiboot2(&boot_info, MULTIBOOT_INFO_START),
    };
    let room = MULTIBOOT_INFO_END - MULTIBOOT_INFO_START;
    if bytes.len() as u64 > room {
        return Err(Error::MultibootInfoTooLarge {
            size: bytes.len() as u64,
            room,
        });
    }
    mem.write_slice(&bytes, GuestAddress(MULTIBOOT_INFO_START))
        .map_err(|source| Error::Memory {
            what: "the Multiboot information",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: Version, offset: u64) -> Header {
        Header {
            version,
            offset,
            address: None,
            entry: Some(0x10_0020),
        }
    }

    fn fields(
        header_addr: u32,
        load_addr: u32,
        load_end: u32,
        bss_end: u32,
    ) -> header::AddressFields {
        header::AddressFields {
            header_addr,
            load_addr,
            load_end_addr: load_end,
            bss_end_addr: bss_end,
        }
    }

    #[test]
    fn the_aout_kludge_loads_from_the_header_backwards() {
        let h = header(Version::One, 0x40);
        let r = aout_range(
            &h,
            fields(0x10_0040, 0x10_0000, 0x10_3000, 0x10_8000),
            0x5000,
        )
        .unwrap();
        assert_eq!(
            (r.offset, r.filesz, r.addr, r.memsz),
            (0, 0x3000, 0x10_0000, 0x8000)
        );
        // load_end_addr 0: to the end of the file; bss_end_addr 0: no bss.
        let r = aout_range(&h, fields(0x10_0040, 0x10_0020, 0, 0), 0x5000).unwrap();
        assert_eq!((r.offset, r.filesz, r.memsz), (0x20, 0x4fe0, 0x4fe0));
        // Multiboot 2's load_addr -1: from the file's start.
        let h2 = header(Version::Two, 0x40);
        let r = aout_range(&h2, fields(0x10_0040, u32::MAX, 0, 0), 0x100).unwrap();
        assert_eq!((r.offset, r.addr, r.filesz), (0, 0x10_0000, 0x100));
    }

    #[test]
    fn address_fields_that_do_not_add_up_are_refused() {
        let h = header(Version::One, 0x40);
        assert!(matches!(
            aout_range(&h, fields(0x10_0000, 0x10_0040, 0, 0), 0x100),
            Err(Problem::LoadAboveHeader { .. })
        ));
        assert_eq!(
            aout_range(&h, fields(0x10_0080, 0x10_0000, 0, 0), 0x100),
            Err(Problem::LoadBeforeFile {
                distance: 0x80,
                header_offset: 0x40
            })
        );
        assert!(matches!(
            aout_range(&h, fields(0x10_0040, 0x10_0000, 0xf_0000, 0), 0x100),
            Err(Problem::LoadEndBeforeLoad { .. })
        ));
        assert!(matches!(
            aout_range(
                &h,
                fields(0x10_0040, 0x10_0000, 0x10_0100, 0x10_0080),
                0x100
            ),
            Err(Problem::BssEndBeforeLoadEnd { .. })
        ));
    }

    #[test]
    fn ranges_must_be_in_the_file_in_memory_and_off_kvmini_structures() {
        let mem = crate::memory::create(4 << 20).unwrap();
        let p = Path::new("k");
        let range = |offset, filesz, addr, memsz| LoadRange {
            what: Part::ElfSegment(1),
            offset,
            filesz,
            addr,
            memsz,
        };
        let ok = [
            range(0x1000, 0x800, 0x10_0000, 0x2000),
            range(0x1800, 0x10, 0x20_0000, 0x10),
        ];
        assert_eq!(check_ranges(&ok, p, 0x2000, &mem).unwrap(), 0x20_0010);
        let err = check_ranges(&ok, p, 0x17ff, &mem).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { needed: 0x1800, .. }),
            "{err}"
        );
        let err = check_ranges(&[range(0, 0x10, 0x3f_0000, 0x2_0000)], p, 0x10, &mem).unwrap_err();
        assert!(err.to_string().contains("does not fit in 4 MiB"), "{err}");
        let err = check_ranges(&[range(0, 0x10, 0x7_f000, 0x2000)], p, 0x10, &mem).unwrap_err();
        assert!(
            err.to_string().contains(
                "overlaps kvmini's boot structures and Multiboot information at 0x500..0x80000"
            ),
            "{err}"
        );
        let err = check_ranges(&[range(0, 0x10, 0xffff_f000, 0x2000)], p, 0x10, &mem).unwrap_err();
        assert!(err.to_string().contains("above 4 GiB"), "{err}");
        let err = check_ranges(&[range(0, 0x20, 0x10_0000, 0x10)], p, 0x20, &mem).unwrap_err();
        assert!(err.to_string().contains("more file bytes"), "{err}");
    }

    #[test]
    fn a_forced_format_needs_its_header() {
        let err = required_header(&[0; 64], 64, Want::Only(Version::Two)).unwrap_err();
        assert_eq!(err, Problem::NoHeader(Some(Version::Two)));
        assert!(err.to_string().contains("0xE85250D6"), "{err}");
    }
}
