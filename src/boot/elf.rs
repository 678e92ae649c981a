//! ELF64 kernels: loaded by `linux_loader` at their segments' physical addresses, entered at
//! their PVH note if they have one (32-bit protected mode, EBX = `hvm_start_info`), else at
//! `e_entry` in long mode.
//!
//! kvmini checks the headers itself first, so that a truncated file or a segment that does
//! not fit in guest memory gets a message that says which and by how much.
//! Sources: the System V ABI ELF chapters; the Xen PVH boot ABI
//! (`xen/include/public/arch-x86/hvm/start_info.h`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::elf::{
    Elf64_Ehdr, Elf64_Phdr, EI_CLASS, ELFCLASS64, EM_X86_64, PT_LOAD, PT_NOTE,
};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::ByteValued;

use super::error::{ElfProblem, EntryProblem, Error, Part};
use super::reader::ImageReader;
use super::{cmdline, initrd, pvh, zero_page, Entry, KernelArgs, Loaded};
use crate::arch::x86_64::layout::{
    BOOT_STRUCTURES_END, GDT_START, IDENTITY_MAP_SIZE, PVH_INFO_START, ZERO_PAGE_START,
};
use crate::memory::{contains_range, GuestMem};

/// Most PT_NOTE segments kvmini reads (a vmlinux has one)...
pub const MAX_NOTE_SEGMENTS: usize = 16;
/// ...and most bytes of notes in all of them (a vmlinux has a few hundred). Both kvmini and
/// linux-loader walk every note, so this bounds the time a crafted file can take.
pub const MAX_NOTE_BYTES: u64 = 64 << 10;

/// The parts of an ELF file kvmini looks at before loading it.
#[derive(Clone, Debug)]
pub struct Headers {
    /// File header.
    pub ehdr: Elf64_Ehdr,
    /// Program headers.
    pub phdrs: Vec<Elf64_Phdr>,
}

fn bad(path: &Path, problem: ElfProblem) -> Error {
    Error::BadElf {
        path: path.to_path_buf(),
        problem,
    }
}

fn truncated(path: &Path, what: Part, needed: u64, len: u64) -> Error {
    Error::Truncated {
        path: path.to_path_buf(),
        what,
        needed,
        len,
    }
}

/// Reads and checks the file and program headers.
pub fn read_headers(file: &mut ImageReader, path: &Path, len: u64) -> Result<Headers, Error> {
    let io = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut ehdr = Elf64_Ehdr::default();
    let ehdr_len = std::mem::size_of::<Elf64_Ehdr>() as u64;
    if len < ehdr_len {
        return Err(truncated(path, Part::ElfHeader, ehdr_len, len));
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_exact(ehdr.as_mut_slice()).map_err(io)?;
    check_ehdr(&ehdr).map_err(|problem| bad(path, problem))?;

    let phdr_len = std::mem::size_of::<Elf64_Phdr>() as u64;
    let table_end = u64::from(ehdr.e_phnum)
        .checked_mul(phdr_len)
        .and_then(|n| n.checked_add(ehdr.e_phoff))
        .ok_or_else(|| bad(path, ElfProblem::ProgramHeadersOverflow))?;
    if table_end > len {
        return Err(truncated(path, Part::ProgramHeaders, table_end, len));
    }
    file.seek(SeekFrom::Start(ehdr.e_phoff)).map_err(io)?;
    let mut table = vec![0u8; (table_end - ehdr.e_phoff) as usize];
    file.read_exact(&mut table).map_err(io)?;
    let phdrs = table
        .chunks_exact(phdr_len as usize)
        .map(|bytes| {
            let mut phdr = Elf64_Phdr::default();
            phdr.as_mut_slice().copy_from_slice(bytes);
            phdr
        })
        .collect();
    let headers = Headers { ehdr, phdrs };
    check_notes(&headers, path, len)?;
    Ok(headers)
}

/// Checks the PT_NOTE segments against the file and kvmini's bounds on notes.
fn check_notes(h: &Headers, path: &Path, len: u64) -> Result<(), Error> {
    let notes: Vec<(usize, &Elf64_Phdr)> = h
        .phdrs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.p_type == PT_NOTE)
        .collect();
    if notes.len() > MAX_NOTE_SEGMENTS {
        return Err(bad(path, ElfProblem::TooManyNoteSegments(notes.len())));
    }
    let mut total = 0u64;
    for (i, p) in notes {
        let end = p
            .p_offset
            .checked_add(p.p_filesz)
            .ok_or_else(|| bad(path, ElfProblem::SegmentOverflow(i)))?;
        if end > len {
            return Err(truncated(path, Part::ElfNotes(i), end, len));
        }
        total = total.saturating_add(p.p_filesz);
    }
    if total > MAX_NOTE_BYTES {
        return Err(bad(path, ElfProblem::NotesTooLarge(total)));
    }
    Ok(())
}

fn check_ehdr(ehdr: &Elf64_Ehdr) -> Result<(), ElfProblem> {
    if &ehdr.e_ident[..4] != b"\x7fELF" {
        return Err(ElfProblem::NoMagic);
    }
    if ehdr.e_ident[EI_CLASS] != ELFCLASS64 {
        return Err(ElfProblem::Class32);
    }
    if ehdr.e_machine != EM_X86_64 {
        return Err(ElfProblem::Machine(ehdr.e_machine));
    }
    if usize::from(ehdr.e_phentsize) != std::mem::size_of::<Elf64_Phdr>() {
        return Err(ElfProblem::ProgramHeaderSize(ehdr.e_phentsize));
    }
    if ehdr.e_phnum == 0 {
        return Err(ElfProblem::NoProgramHeaders);
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
        let file_end = p
            .p_offset
            .checked_add(p.p_filesz)
            .ok_or_else(|| bad(path, ElfProblem::SegmentOverflow(i)))?;
        if file_end > len {
            return Err(truncated(path, Part::ElfSegment(i), file_end, len));
        }
        if p.p_filesz > p.p_memsz {
            return Err(bad(path, ElfProblem::SegmentFileLargerThanMemory(i)));
        }
        if !contains_range(mem, p.p_paddr, p.p_memsz) {
            return Err(Error::DoesNotFit {
                what: Part::ElfSegment(i),
                start: p.p_paddr,
                size: p.p_memsz,
                mem: mem_size,
                hint: "raise --mem",
            });
        }
        let end = p.p_paddr + p.p_memsz;
        if p.p_paddr < BOOT_STRUCTURES_END && end > GDT_START {
            return Err(Error::OverlapsBootStructures {
                what: Part::ElfSegment(i),
                start: p.p_paddr,
                end,
            });
        }
    }
    if loadable == 0 {
        return Err(bad(path, ElfProblem::NoLoadableSegments));
    }
    Ok(())
}

fn check_entry(mem: &GuestMem, entry: u64, field: &'static str) -> Result<(), Error> {
    let problem = if !contains_range(mem, entry, 1) {
        EntryProblem::FieldOutsideMemory(field)
    } else if entry >= IDENTITY_MAP_SIZE {
        EntryProblem::FieldAbove4G(field)
    } else {
        return Ok(());
    };
    Err(Error::BadEntry { entry, problem })
}

/// The notes of an ELF file that decide how it boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// A note named "Linux" (every vmlinux has one): the kernel gets the machine and the
    /// command line Linux expects.
    pub linux: bool,
    /// A PVH entry note (`Xen`, `XEN_ELFNOTE_PHYS32_ENTRY`): the kernel is entered there.
    pub pvh: bool,
}

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the type of the PVH entry note.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Reads the notes that decide how the file boots. Each PT_NOTE segment, checked by
/// [`read_headers`], is read once.
pub fn read_notes(file: &mut ImageReader, path: &Path, h: &Headers) -> Result<Notes, Error> {
    let mut found = Notes::default();
    for p in h.phdrs.iter().filter(|p| p.p_type == PT_NOTE) {
        let mut notes = vec![0u8; p.p_filesz as usize];
        file.seek(SeekFrom::Start(p.p_offset))
            .and_then(|_| file.read_exact(&mut notes))
            .map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
        for (name, kind) in note_names(&notes) {
            found.linux |= name == b"Linux";
            found.pvh |= name == b"Xen" && kind == XEN_ELFNOTE_PHYS32_ENTRY;
        }
    }
    Ok(found)
}

/// The names and types of the notes in a PT_NOTE segment (4-byte aligned name and
/// descriptor).
fn note_names(mut notes: &[u8]) -> impl Iterator<Item = (&[u8], u32)> {
    std::iter::from_fn(move || {
        let word = |b: &[u8], i: usize| -> Option<usize> {
            Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
        };
        let namesz = word(notes, 0)?;
        let descsz = word(notes, 4)?;
        let kind = word(notes, 8)? as u32;
        let align = |n: usize| n.checked_add(3).map(|n| n & !3);
        let name = notes.get(12..12 + namesz)?;
        let next = 12 + align(namesz)? + align(descsz)?;
        notes = notes.get(next..).unwrap_or(&[]);
        Some((name.strip_suffix(&[0]).unwrap_or(name), kind))
    })
}

/// Loads an ELF kernel whose headers and segments were checked, with its command line and
/// initrd. Entered at the PVH note if there is one, else at `e_entry` in long mode with a
/// zero page in RSI (the 64-bit Linux boot protocol; harmless to other kernels).
pub fn load(
    mem: &GuestMem,
    file: &mut ImageReader,
    path: &Path,
    headers: &Headers,
    args: &KernelArgs<'_>,
) -> Result<Loaded, Error> {
    let loaded = Elf::load(mem, None, file, None).map_err(|source| Error::Loader {
        path: path.to_path_buf(),
        source,
    })?;
    let placed = args
        .cmdline
        .map(|c| cmdline::write_cmdline(mem, c))
        .transpose()?;
    let initrd = args
        .initrd
        .map(|p| initrd::load_initrd(mem, p, loaded.kernel_end, IDENTITY_MAP_SIZE))
        .transpose()?;
    let initrd_note = initrd::summary(initrd);
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => {
            let eip = addr.0;
            check_entry(mem, eip, "PVH note")?;
            pvh::write_start_info(mem, placed.map(|c| c.addr), initrd)?;
            Ok(Loaded {
                entry: Entry::Protected {
                    eip: eip as u32,
                    eax: 0,
                    ebx: PVH_INFO_START as u32,
                },
                summary: format!("ELF, PVH entry at {eip:#x}{initrd_note}"),
            })
        }
        PvhBootCapability::PvhEntryNotPresent | PvhBootCapability::PvhEntryIgnored => {
            let rip = headers.ehdr.e_entry;
            check_entry(mem, rip, "e_entry")?;
            zero_page::write_boot_params(mem, None, placed, initrd)?;
            Ok(Loaded {
                entry: Entry::Long {
                    rip,
                    rsi: ZERO_PAGE_START,
                },
                summary: format!("ELF, 64-bit entry at {rip:#x}{initrd_note}"),
            })
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
        assert_eq!(check_ehdr(&h.ehdr), Err(ElfProblem::NoProgramHeaders));
        assert!(ElfProblem::NoProgramHeaders
            .to_string()
            .contains("no program headers"));
        h.ehdr.e_phnum = 1;
        assert_eq!(check_ehdr(&h.ehdr), Ok(()));
        h.ehdr.e_machine = 3;
        assert_eq!(check_ehdr(&h.ehdr), Err(ElfProblem::Machine(3)));
        assert!(ElfProblem::Machine(3)
            .to_string()
            .contains("machine type 3"));
        h.ehdr.e_machine = EM_X86_64;
        h.ehdr.e_ident[EI_CLASS] = 1;
        assert_eq!(check_ehdr(&h.ehdr), Err(ElfProblem::Class32));
        assert!(ElfProblem::Class32.to_string().contains("32-bit"));
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
            Err(Error::BadElf {
                problem: ElfProblem::SegmentFileLargerThanMemory(0),
                ..
            })
        ));
    }

    #[test]
    fn note_names_are_walked_with_alignment() {
        let mut notes = Vec::new();
        for (name, desc, kind) in [
            (&b"Xen\0"[..], &[0u8; 4][..], 18u32),
            (b"Linux\0", &[1, 2, 3], 1),
            (b"GNU\0", &[0; 20], 3),
        ] {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&kind.to_le_bytes());
            notes.extend_from_slice(name);
            notes.resize(notes.len().next_multiple_of(4), 0);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        let names: Vec<(&[u8], u32)> = note_names(&notes).collect();
        assert_eq!(names, [(&b"Xen"[..], 18), (b"Linux", 1), (b"GNU", 3)]);
        assert_eq!(note_names(&notes[..10]).count(), 0);
    }
}
