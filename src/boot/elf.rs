//! ELF64 kernels: loaded by `linux_loader` at their segments' physical addresses, entered at
//! their PVH note if they have one (32-bit protected mode, EBX = `hvm_start_info`), else at
//! `e_entry` in long mode.
//!
//! kvmini checks the headers itself first, so that a truncated file or a segment that does
//! not fit in guest memory gets a message that says which and by how much.
//! Sources: the System V ABI ELF chapters; the Xen PVH boot ABI
//! (`xen/include/public/arch-x86/hvm/start_info.h`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::elf::{
    Elf64_Ehdr, Elf64_Phdr, EI_CLASS, ELFCLASS64, EM_X86_64, PT_LOAD, PT_NOTE,
};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{ByteValued, GuestAddress};

use super::layout::{
    BOOT_STRUCTURES_END, GDT_START, IDENTITY_MAP_SIZE, PVH_INFO_START, PVH_MEMMAP_START,
    PVH_MODLIST_START, ZERO_PAGE_START,
};
use super::linux::{self, Initrd, KernelArgs};
use super::{memory_map, Entry, Error};
use crate::config::human_size;
use crate::memory::{contains_range, GuestMem};

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// The parts of an ELF file kvmini looks at before loading it.
#[derive(Clone, Debug)]
pub struct Headers {
    /// File header.
    pub ehdr: Elf64_Ehdr,
    /// Program headers.
    pub phdrs: Vec<Elf64_Phdr>,
}

fn bad(path: &Path, why: impl Into<String>) -> Error {
    Error::BadElf {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn truncated(path: &Path, what: impl Into<String>, needed: u64, len: u64) -> Error {
    Error::Truncated {
        path: path.to_path_buf(),
        what: what.into(),
        needed,
        len,
    }
}

/// Reads and checks the file and program headers.
pub fn read_headers(file: &mut File, path: &Path, len: u64) -> Result<Headers, Error> {
    let io = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut ehdr = Elf64_Ehdr::default();
    let ehdr_len = std::mem::size_of::<Elf64_Ehdr>() as u64;
    if len < ehdr_len {
        return Err(truncated(path, "the ELF header", ehdr_len, len));
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_exact(ehdr.as_mut_slice()).map_err(io)?;
    check_ehdr(&ehdr).map_err(|why| bad(path, why))?;

    let phdr_len = std::mem::size_of::<Elf64_Phdr>() as u64;
    let table_end = u64::from(ehdr.e_phnum)
        .checked_mul(phdr_len)
        .and_then(|n| n.checked_add(ehdr.e_phoff))
        .ok_or_else(|| bad(path, "program header table offset overflows"))?;
    if table_end > len {
        return Err(truncated(path, "the program header table", table_end, len));
    }
    file.seek(SeekFrom::Start(ehdr.e_phoff)).map_err(io)?;
    let mut phdrs = vec![Elf64_Phdr::default(); usize::from(ehdr.e_phnum)];
    for phdr in &mut phdrs {
        file.read_exact(phdr.as_mut_slice()).map_err(io)?;
    }
    Ok(Headers { ehdr, phdrs })
}

fn check_ehdr(ehdr: &Elf64_Ehdr) -> Result<(), String> {
    if &ehdr.e_ident[..4] != b"\x7fELF" {
        return Err("no ELF magic".into());
    }
    if ehdr.e_ident[EI_CLASS] != ELFCLASS64 {
        return Err("it is a 32-bit ELF file; kvmini boots ELF64 kernels".into());
    }
    if ehdr.e_machine != EM_X86_64 {
        return Err(format!(
            "it is built for machine type {}, not x86-64",
            ehdr.e_machine
        ));
    }
    if usize::from(ehdr.e_phentsize) != std::mem::size_of::<Elf64_Phdr>() {
        return Err(format!(
            "program header size {} is not 56",
            ehdr.e_phentsize
        ));
    }
    if ehdr.e_phnum == 0 {
        return Err("it has no program headers, so nothing to load".into());
    }
    Ok(())
}

/// Checks every loadable segment against the file length and guest memory.
pub fn check_segments(h: &Headers, path: &Path, len: u64, mem: &GuestMem) -> Result<(), Error> {
    let mem_size = crate::memory::size(mem);
    let mut loadable = 0;
    for (i, p) in h
        .phdrs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.p_type == PT_LOAD)
    {
        loadable += 1;
        let what = format!("segment {i}");
        let file_end = p
            .p_offset
            .checked_add(p.p_filesz)
            .ok_or_else(|| bad(path, format!("{what} has an offset that overflows")))?;
        if file_end > len {
            return Err(truncated(path, what, file_end, len));
        }
        if p.p_filesz > p.p_memsz {
            return Err(bad(
                path,
                format!("{what} has more file bytes than memory bytes"),
            ));
        }
        if !contains_range(mem, p.p_paddr, p.p_memsz) {
            return Err(Error::DoesNotFit {
                what: format!("ELF {what}"),
                start: p.p_paddr,
                size: p.p_memsz,
                mem: mem_size,
                hint: "raise --mem",
            });
        }
        let end = p.p_paddr + p.p_memsz;
        if p.p_paddr < BOOT_STRUCTURES_END && end > GDT_START {
            return Err(Error::OverlapsBootStructures {
                what: format!("ELF {what}"),
                start: p.p_paddr,
                end,
            });
        }
    }
    if loadable == 0 {
        return Err(bad(path, "it has no loadable segments"));
    }
    Ok(())
}

fn check_entry(mem: &GuestMem, entry: u64, how: &str) -> Result<(), Error> {
    if !contains_range(mem, entry, 1) {
        return Err(Error::BadEntry {
            entry,
            why: format!("({how}) outside guest memory"),
        });
    }
    if entry >= IDENTITY_MAP_SIZE {
        return Err(Error::BadEntry {
            entry,
            why: format!("({how}) above 4 GiB"),
        });
    }
    Ok(())
}

/// Whether the ELF file carries a note named "Linux" (every vmlinux does): such a kernel
/// gets the machine and the command line Linux expects.
pub fn has_linux_note(file: &mut File, h: &Headers) -> bool {
    h.phdrs
        .iter()
        .filter(|p| p.p_type == PT_NOTE && p.p_filesz <= 1 << 20)
        .any(|p| {
            let mut notes = vec![0u8; p.p_filesz as usize];
            file.seek(SeekFrom::Start(p.p_offset)).is_ok()
                && file.read_exact(&mut notes).is_ok()
                && note_names(&notes).any(|name| name == b"Linux")
        })
}

/// The names of the notes in a PT_NOTE segment (4-byte aligned name and descriptor).
fn note_names(mut notes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let word = |b: &[u8], i: usize| -> Option<usize> {
            Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
        };
        let namesz = word(notes, 0)?;
        let descsz = word(notes, 4)?;
        let align = |n: usize| n.checked_add(3).map(|n| n & !3);
        let name = notes.get(12..12 + namesz)?;
        let next = 12 + align(namesz)? + align(descsz)?;
        notes = notes.get(next..).unwrap_or(&[]);
        Some(name.strip_suffix(&[0]).unwrap_or(name))
    })
}

/// Writes `hvm_start_info`, the memory map and the module list (the initrd) for a PVH entry.
pub fn write_pvh_start_info(
    mem: &GuestMem,
    cmdline_addr: Option<u64>,
    initrd: Option<Initrd>,
) -> Result<(), Error> {
    let memmap: Vec<hvm_memmap_table_entry> = memory_map(mem)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
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
        version: 1,
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
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(|e| Error::Memory {
        what: "the PVH start info",
        source: vm_memory::GuestMemoryError::IOError(std::io::Error::other(e.to_string())),
    })
}

/// Loads an ELF kernel whose headers were checked into `mem`, with its command line and
/// initrd. Entered at the PVH note if there is one, else at `e_entry` in long mode with a
/// zero page in RSI (the 64-bit Linux boot protocol; harmless to other kernels).
pub fn load(
    mem: &GuestMem,
    file: &mut File,
    path: &Path,
    headers: &Headers,
    args: &KernelArgs<'_>,
) -> Result<(Entry, String), Error> {
    let loaded = Elf::load(mem, None, file, None).map_err(|source| Error::Loader {
        path: path.to_path_buf(),
        source,
    })?;
    let cmdline = args
        .cmdline
        .map(|c| linux::write_cmdline(mem, c))
        .transpose()?;
    let initrd = args
        .initrd
        .map(|p| linux::load_initrd(mem, p, loaded.kernel_end, IDENTITY_MAP_SIZE))
        .transpose()?;
    let initrd_note = initrd.map_or(String::new(), |i| {
        format!(", initrd {} at {:#x}", human_size(i.size), i.addr)
    });
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => {
            let eip = addr.0;
            check_entry(mem, eip, "PVH note")?;
            write_pvh_start_info(mem, cmdline.map(|(a, _)| a), initrd)?;
            let entry = Entry::Protected {
                eip: eip as u32,
                ebx: PVH_INFO_START as u32,
            };
            Ok((entry, format!("ELF, PVH entry at {eip:#x}{initrd_note}")))
        }
        PvhBootCapability::PvhEntryNotPresent | PvhBootCapability::PvhEntryIgnored => {
            let rip = headers.ehdr.e_entry;
            check_entry(mem, rip, "e_entry")?;
            linux::write_boot_params(mem, None, cmdline, initrd)?;
            let entry = Entry::Long {
                rip,
                rsi: ZERO_PAGE_START,
            };
            Ok((entry, format!("ELF, 64-bit entry at {rip:#x}{initrd_note}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(segments: &[(u64, u64, u64, u64)]) -> Headers {
        let mut ehdr = Elf64_Ehdr::default();
        ehdr.e_ident[..4].copy_from_slice(b"\x7fELF");
        ehdr.e_ident[EI_CLASS] = ELFCLASS64;
        ehdr.e_machine = EM_X86_64;
        ehdr.e_phentsize = 56;
        ehdr.e_phnum = segments.len() as u16;
        let phdrs = segments
            .iter()
            .map(|&(off, filesz, paddr, memsz)| Elf64_Phdr {
                p_type: PT_LOAD,
                p_offset: off,
                p_filesz: filesz,
                p_paddr: paddr,
                p_memsz: memsz,
                ..Default::default()
            })
            .collect();
        Headers { ehdr, phdrs }
    }

    #[test]
    fn rejects_files_that_are_not_x86_64_elf64() {
        let mut h = headers(&[]);
        assert!(check_ehdr(&h.ehdr)
            .unwrap_err()
            .contains("no program headers"));
        h.ehdr.e_phnum = 1;
        assert_eq!(check_ehdr(&h.ehdr), Ok(()));
        h.ehdr.e_machine = 3;
        assert!(check_ehdr(&h.ehdr).unwrap_err().contains("machine type 3"));
        h.ehdr.e_machine = EM_X86_64;
        h.ehdr.e_ident[EI_CLASS] = 1;
        assert!(check_ehdr(&h.ehdr).unwrap_err().contains("32-bit"));
    }

    #[test]
    fn segments_must_be_in_the_file_and_in_memory() {
        let mem = crate::memory::create(4 << 20).unwrap();
        let p = Path::new("k.elf");
        assert!(check_segments(
            &headers(&[(0x1000, 0x2000, 0x10_0000, 0x3000)]),
            p,
            0x3000,
            &mem
        )
        .is_ok());
        assert!(matches!(
            check_segments(
                &headers(&[(0x1000, 0x2000, 0x10_0000, 0x3000)]),
                p,
                0x2fff,
                &mem
            ),
            Err(Error::Truncated {
                needed: 0x3000,
                len: 0x2fff,
                ..
            })
        ));
        assert!(matches!(
            check_segments(
                &headers(&[(0x1000, 0x10, 0x3f_f000, 0x2000)]),
                p,
                0x2000,
                &mem
            ),
            Err(Error::DoesNotFit {
                start: 0x3f_f000,
                ..
            })
        ));
        assert!(matches!(
            check_segments(&headers(&[(0x1000, 0x10, 0x1000, 0x10)]), p, 0x2000, &mem),
            Err(Error::OverlapsBootStructures { .. })
        ));
        assert!(matches!(
            check_segments(
                &headers(&[(0x1000, 0x20, 0x10_0000, 0x10)]),
                p,
                0x2000,
                &mem
            ),
            Err(Error::BadElf { .. })
        ));
    }

    #[test]
    fn note_names_are_walked_with_alignment() {
        let mut notes = Vec::new();
        for (name, desc) in [
            (&b"Xen\0"[..], &[0u8; 4][..]),
            (b"Linux\0", &[1, 2, 3]),
            (b"GNU\0", &[0; 20]),
        ] {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&1u32.to_le_bytes());
            notes.extend_from_slice(name);
            notes.resize(notes.len().next_multiple_of(4), 0);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        let names: Vec<&[u8]> = note_names(&notes).collect();
        assert_eq!(names, [&b"Xen"[..], b"Linux", b"GNU"]);
        assert_eq!(note_names(&notes[..10]).count(), 0);
    }

    #[test]
    fn pvh_start_info_describes_memory() {
        use vm_memory::Bytes;
        let mem = crate::memory::create(16 << 20).unwrap();
        let initrd = Initrd {
            addr: 0x80_0000,
            size: 0x1000,
        };
        write_pvh_start_info(&mem, Some(0x20000), Some(initrd)).unwrap();
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
