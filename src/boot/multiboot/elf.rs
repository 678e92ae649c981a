//! The ELF side of a Multiboot kernel without address fields: ELF32 (i386) or ELF64 (x86-64)
//! program headers, read into one shape and bounds-checked. The loadable segments go to
//! their physical addresses (`p_paddr`), as GRUB loads them; `e_entry` is translated to a
//! physical address through the segment that holds it, so a kernel linked higher-half still
//! starts where it is.
//!
//! Source of truth: the System V ABI, "Object Files" (ELF header, program header); GRUB's
//! `grub-core/loader/multiboot_elfxx.c` for the entry translation.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::Problem;
use crate::boot::error::{ElfProblem, Error, Part};
use crate::boot::reader::ImageReader;

/// `e_ident[EI_CLASS]`: 32-bit objects...
const ELFCLASS32: u8 = 1;
/// ...and 64-bit ones.
const ELFCLASS64: u8 = 2;
/// `e_ident[EI_DATA]`: little-endian.
const ELFDATA2LSB: u8 = 1;
/// `e_machine` of i386...
const EM_386: u16 = 3;
/// ...and of x86-64.
const EM_X86_64: u16 = 62;
/// A loadable segment.
const PT_LOAD: u32 = 1;

/// Size of the file header of each class.
const EHDR_LEN: [usize; 2] = [52, 64];
/// Size of a program header of each class.
const PHDR_LEN: [usize; 2] = [32, 56];

/// What the program header table says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// ELF64 (else ELF32).
    pub is64: bool,
    /// `e_entry`.
    pub entry: u64,
    /// `e_phoff`.
    pub phoff: u64,
    /// `e_phnum`.
    pub phnum: u16,
}

/// A loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its index among the program headers.
    pub index: usize,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`, where it is loaded.
    pub paddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
}

/// An ELF kernel's loadable segments and physical entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The physical entry point.
    pub entry: u64,
    /// Every `PT_LOAD` segment with memory bytes.
    pub segments: Vec<Segment>,
}

fn uint(bytes: &[u8], at: usize, n: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&bytes[at..at + n]);
    u64::from_le_bytes(b)
}

/// Reads the file header from the first bytes of the file (all of them, if fewer than 64).
pub fn parse_file_header(bytes: &[u8]) -> Result<FileHeader, Problem> {
    if !bytes.starts_with(b"\x7fELF") {
        return Err(ElfProblem::NoMagic.into());
    }
    let class = *bytes.get(4).unwrap_or(&0);
    let is64 = match class {
        ELFCLASS32 => false,
        ELFCLASS64 => true,
        other => return Err(Problem::ElfClass(other)),
    };
    let c = usize::from(is64);
    if bytes.len() < EHDR_LEN[c] {
        return Err(Problem::ElfHeaderTruncated(EHDR_LEN[c] as u64));
    }
    if bytes[5] != ELFDATA2LSB {
        return Err(Problem::ElfBigEndian);
    }
    let machine = uint(bytes, 18, 2) as u16;
    let wanted = if is64 { EM_X86_64 } else { EM_386 };
    if machine != wanted {
        return Err(Problem::ElfMachine { is64, machine });
    }
    // e_entry, e_phoff, e_phentsize and e_phnum: after two words (ELF32) or two double
    // words (ELF64).
    let w = if is64 { 8 } else { 4 };
    let phentsize = uint(bytes, 24 + 3 * w + 6, 2) as usize;
    if phentsize != PHDR_LEN[c] {
        return Err(Problem::ElfPhentsize { is64, phentsize });
    }
    let phnum = uint(bytes, 24 + 3 * w + 8, 2) as u16;
    if phnum == 0 {
        return Err(ElfProblem::NoProgramHeaders.into());
    }
    Ok(FileHeader {
        is64,
        entry: uint(bytes, 24, w),
        phoff: uint(bytes, 24 + w, w),
        phnum,
    })
}

/// The loadable segments of a program header table (`is64` says which layout).
pub fn parse_segments(table: &[u8], is64: bool) -> Vec<Segment> {
    let size = PHDR_LEN[usize::from(is64)];
    table
        .chunks_exact(size)
        .enumerate()
        .filter(|(_, p)| uint(p, 0, 4) as u32 == PT_LOAD)
        .map(|(index, p)| {
            // offset, vaddr, paddr, filesz, memsz: after p_type (ELF32), or after p_type and
            // p_flags (ELF64).
            let field = |i: usize| {
                if is64 {
                    uint(p, 8 + 8 * i, 8)
                } else {
                    uint(p, 4 + 4 * i, 4)
                }
            };
            Segment {
                index,
                offset: field(0),
                vaddr: field(1),
                paddr: field(2),
                filesz: field(3),
                memsz: field(4),
            }
        })
        .filter(|s| s.memsz > 0)
        .collect()
}

/// The physical address of `entry`: translated through the segment whose virtual range holds
/// it, or taken as is.
pub fn physical_entry(entry: u64, segments: &[Segment]) -> u64 {
    segments
        .iter()
        .find(|s| entry >= s.vaddr && entry - s.vaddr < s.memsz)
        .map_or(entry, |s| entry - s.vaddr + s.paddr)
}

/// Reads and checks the headers of the ELF kernel `file` (`len` bytes).
pub fn read(file: &mut ImageReader, path: &Path, len: u64) -> Result<Program, Error> {
    let io = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let bad = |problem| Error::BadMultiboot {
        path: path.to_path_buf(),
        problem,
    };
    let mut head = vec![0u8; len.min(EHDR_LEN[1] as u64) as usize];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut head))
        .map_err(io)?;
    let fh = parse_file_header(&head).map_err(|problem| match problem {
        Problem::ElfHeaderTruncated(needed) => Error::Truncated {
            path: path.to_path_buf(),
            what: Part::ElfHeader,
            needed,
            len,
        },
        problem => bad(problem),
    })?;
    let table_len = u64::from(fh.phnum) * PHDR_LEN[usize::from(fh.is64)] as u64;
    let table_end = fh
        .phoff
        .checked_add(table_len)
        .ok_or_else(|| bad(ElfProblem::ProgramHeadersOverflow.into()))?;
    if table_end > len {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: Part::ProgramHeaders,
            needed: table_end,
            len,
        });
    }
    let mut table = vec![0u8; table_len as usize];
    file.seek(SeekFrom::Start(fh.phoff))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(io)?;
    let segments = parse_segments(&table, fh.is64);
    if segments.is_empty() {
        return Err(bad(ElfProblem::NoLoadableSegments.into()));
    }
    Ok(Program {
        entry: physical_entry(fh.entry, &segments),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF file header of the class, with `phnum` program headers at 0x40.
    fn ehdr(is64: bool, entry: u64, phnum: u16) -> Vec<u8> {
        let mut h = vec![0u8; EHDR_LEN[usize::from(is64)]];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = if is64 { ELFCLASS64 } else { ELFCLASS32 };
        h[5] = ELFDATA2LSB;
        let machine = if is64 { EM_X86_64 } else { EM_386 };
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        let w = if is64 { 8 } else { 4 };
        h[24..24 + w].copy_from_slice(&entry.to_le_bytes()[..w]);
        h[24 + w..24 + 2 * w].copy_from_slice(&0x40u64.to_le_bytes()[..w]);
        let phentsize = PHDR_LEN[usize::from(is64)] as u16;
        h[24 + 3 * w + 6..24 + 3 * w + 8].copy_from_slice(&phentsize.to_le_bytes());
        h[24 + 3 * w + 8..24 + 3 * w + 10].copy_from_slice(&phnum.to_le_bytes());
        h
    }

    /// A program header: type, offset, vaddr, paddr, filesz, memsz.
    fn phdr(is64: bool, fields: [u64; 6]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&(fields[0] as u32).to_le_bytes());
        if is64 {
            p.extend_from_slice(&7u32.to_le_bytes());
            for f in &fields[1..] {
                p.extend_from_slice(&f.to_le_bytes());
            }
            p.extend_from_slice(&[0; 8]);
        } else {
            for f in &fields[1..] {
                p.extend_from_slice(&(*f as u32).to_le_bytes());
            }
            p.extend_from_slice(&[0; 8]);
        }
        p
    }

    #[test]
    fn both_classes_read_into_one_shape() {
        for is64 in [false, true] {
            let fh = parse_file_header(&ehdr(is64, 0xc010_0010, 3)).unwrap();
            assert_eq!(
                (fh.is64, fh.entry, fh.phoff, fh.phnum),
                (is64, 0xc010_0010, 0x40, 3)
            );
            let mut table = phdr(is64, [1, 0x1000, 0xc010_0000, 0x10_0000, 0x800, 0x2000]);
            table.extend(phdr(is64, [4, 0x100, 0, 0, 0x20, 0x20]));
            table.extend(phdr(is64, [1, 0x2000, 0, 0x20_0000, 0, 0]));
            let segments = parse_segments(&table, is64);
            assert_eq!(
                segments,
                [Segment {
                    index: 0,
                    offset: 0x1000,
                    filesz: 0x800,
                    vaddr: 0xc010_0000,
                    paddr: 0x10_0000,
                    memsz: 0x2000
                }]
            );
            // A higher-half entry point becomes physical; one outside every segment stays.
            assert_eq!(physical_entry(0xc010_0010, &segments), 0x10_0010);
            assert_eq!(physical_entry(0x30_0000, &segments), 0x30_0000);
        }
    }

    #[test]
    fn file_headers_for_other_machines_are_refused() {
        assert_eq!(
            parse_file_header(b"MZ\x90\0"),
            Err(Problem::Elf(ElfProblem::NoMagic))
        );
        let mut h = ehdr(false, 0, 1);
        h[18] = 62;
        assert_eq!(
            parse_file_header(&h),
            Err(Problem::ElfMachine {
                is64: false,
                machine: 62
            })
        );
        let mut h = ehdr(true, 0, 1);
        h[5] = 2;
        assert_eq!(parse_file_header(&h), Err(Problem::ElfBigEndian));
        let mut h = ehdr(true, 0, 1);
        h[4] = 3;
        assert_eq!(parse_file_header(&h), Err(Problem::ElfClass(3)));
        assert_eq!(
            parse_file_header(&ehdr(true, 0, 1)[..40]),
            Err(Problem::ElfHeaderTruncated(64))
        );
        assert_eq!(
            parse_file_header(&ehdr(false, 0, 0)),
            Err(Problem::Elf(ElfProblem::NoProgramHeaders))
        );
        let mut h = ehdr(false, 0, 1);
        h[42] = 56;
        assert_eq!(
            parse_file_header(&h),
            Err(Problem::ElfPhentsize {
                is64: false,
                phentsize: 56
            })
        );
    }
}
