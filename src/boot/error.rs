//! Why an image cannot boot. Every error here is the user's input being wrong; each says which
//! input and, where there is one, what to do about it.

use std::fmt;
use std::path::PathBuf;

use crate::config::{human_size, CpuMode};

/// A part of what is loaded into guest memory, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A raw image.
    RawImage,
    /// The ELF file header.
    ElfHeader,
    /// The ELF program header table.
    ProgramHeaders,
    /// A loadable ELF segment, by index among the program headers.
    ElfSegment(usize),
    /// A PT_NOTE segment, by index among the program headers.
    ElfNotes(usize),
    /// A bzImage's setup header.
    SetupHeader,
    /// What a Multiboot header's address fields load (and zero).
    MultibootLoad,
    /// A bzImage's kernel once decompressed: `init_size` bytes at `pref_address`.
    DecompressedKernel,
    /// The initrd, which must end below `limit` and start after the kernel (ending at
    /// `kernel_end`).
    Initrd {
        /// Where the kernel ends.
        kernel_end: u64,
        /// Where the initrd must end by.
        limit: u64,
    },
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::RawImage => write!(f, "the raw image"),
            Part::ElfHeader => write!(f, "the ELF header"),
            Part::ProgramHeaders => write!(f, "the program header table"),
            Part::ElfSegment(i) => write!(f, "ELF segment {i}"),
            Part::ElfNotes(i) => write!(f, "the notes of ELF segment {i}"),
            Part::SetupHeader => write!(f, "the setup header"),
            Part::MultibootLoad => write!(f, "what the Multiboot address fields load"),
            Part::DecompressedKernel => {
                write!(f, "the decompressed kernel (init_size at pref_address)")
            }
            Part::Initrd { kernel_end, limit } => write!(
                f,
                "the initrd (the kernel ends at {kernel_end:#x}; the initrd must end below {limit:#x})"
            ),
        }
    }
}

/// What is wrong with an ELF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfProblem {
    /// Not an ELF file.
    #[error("no ELF magic")]
    NoMagic,
    /// ELF32.
    #[error("it is a 32-bit ELF file; kvmini boots ELF64 kernels, and 32-bit ones only with a Multiboot header")]
    Class32,
    /// Another machine.
    #[error("it is built for machine type {0}, not x86-64")]
    Machine(u16),
    /// Program header entries of the wrong size.
    #[error("program header size {0} is not 56")]
    ProgramHeaderSize(u16),
    /// No program headers.
    #[error("it has no program headers, so nothing to load")]
    NoProgramHeaders,
    /// The program header table's offset and size overflow.
    #[error("program header table offset overflows")]
    ProgramHeadersOverflow,
    /// A segment's file offset and size overflow.
    #[error("segment {0} has an offset that overflows")]
    SegmentOverflow(usize),
    /// A segment with more file bytes than memory bytes.
    #[error("segment {0} has more file bytes than memory bytes")]
    SegmentFileLargerThanMemory(usize),
    /// Nothing of type `PT_LOAD`.
    #[error("it has no loadable segments")]
    NoLoadableSegments,
    /// More PT_NOTE segments than kvmini reads.
    #[error("it has {0} PT_NOTE segments; kvmini reads at most {max}", max = super::elf::MAX_NOTE_SEGMENTS)]
    TooManyNoteSegments(usize),
    /// More bytes of notes than kvmini reads.
    #[error("its PT_NOTE segments hold {} of notes; kvmini reads at most {}", human_size(*.0), human_size(super::elf::MAX_NOTE_BYTES))]
    NotesTooLarge(u64),
}

/// What is wrong with a bzImage's setup header (the x86 boot protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupHeaderProblem {
    /// No "HdrS".
    #[error("no \"HdrS\" setup header magic at 0x202")]
    NoMagic,
    /// `boot_flag` is not 0xaa55.
    #[error("boot_flag is {0:#x}, not 0xaa55: the setup header is corrupt")]
    BootFlag(u16),
    /// A protocol older than 2.12.
    #[error("boot protocol {}.{:02} is too old; kvmini needs 2.12 or later (Linux 3.8+) for the 64-bit entry point", .0 >> 8, .0 & 0xff)]
    OldProtocol(u16),
    /// `XLF_KERNEL_64` is clear.
    #[error("it has no 64-bit entry point (a 32-bit kernel?); kvmini boots x86-64 kernels")]
    No64BitEntry,
    /// `LOADED_HIGH` is clear.
    #[error("it is a zImage loaded low; kvmini boots bzImages")]
    LoadedLow,
    /// The header describes more setup and kernel than the file holds.
    #[error("it is truncated: the header describes {described} bytes of setup and kernel, the file has {len}")]
    Truncated {
        /// Bytes of setup and kernel the header describes.
        described: u64,
        /// Bytes in the file.
        len: u64,
    },
}

/// What is wrong with an entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    /// Outside guest RAM of this size.
    OutsideMemory(u64),
    /// Named by an ELF field (`PVH note`, `e_entry`) and outside guest RAM.
    FieldOutsideMemory(&'static str),
    /// Named by an ELF field and above 4 GiB, past kvmini's identity map.
    FieldAbove4G(&'static str),
    /// Above 4 GiB, where protected- or long-mode entry cannot reach.
    Above4G(CpuMode),
    /// More than 64 KiB above a real-mode image's load address.
    BeyondRealModeSegment {
        /// The load address.
        load: u64,
    },
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::OutsideMemory(mem) => {
                write!(f, "outside guest memory ({})", human_size(*mem))
            }
            EntryProblem::FieldOutsideMemory(field) => write!(f, "({field}) outside guest memory"),
            EntryProblem::FieldAbove4G(field) => write!(f, "({field}) above 4 GiB"),
            EntryProblem::Above4G(mode) => {
                write!(f, "above 4 GiB, where {mode} mode entry cannot reach")
            }
            EntryProblem::BeyondRealModeSegment { load } => write!(
                f,
                "not within 64 KiB above the load address {load:#x}, so no IP reaches it from CS = {:#x}",
                load >> 4
            ),
        }
    }
}

/// What is wrong with a raw image's load address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadAddressProblem {
    /// Real mode: not on a 16-byte paragraph.
    NotParagraphAligned,
    /// Real mode: the image would end above 1 MiB.
    AboveRealModeLimit {
        /// Where the image would end.
        end: u64,
    },
}

impl fmt::Display for LoadAddressProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadAddressProblem::NotParagraphAligned => {
                write!(f, "not a multiple of 16, so no real-mode segment starts there")
            }
            LoadAddressProblem::AboveRealModeLimit { end } => write!(
                f,
                "too high for real mode: the image would end at {end:#x}, and real mode reaches only the first 1 MiB"
            ),
        }
    }
}

/// What is wrong with a kernel command line.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineProblem {
    /// linux-loader refused it (too long for the capacity, a bad character).
    #[error("{source}{}", .capacity.map_or(String::new(), |c| format!(" (at most {c} bytes)")))]
    Build {
        /// linux-loader's reason.
        source: linux_loader::cmdline::Error,
        /// The capacity, when the reason is length.
        capacity: Option<usize>,
    },
    /// The init arguments could not be added.
    #[error("init arguments: {0}")]
    InitArgs(linux_loader::cmdline::Error),
    /// An init argument with a double quote.
    #[error("init argument {0:?} contains a double quote, which the kernel cannot pass")]
    Quote(String),
    /// Longer than the kernel's `cmdline_size`.
    #[error("it is {len} bytes, and this kernel accepts at most {max}")]
    TooLongForKernel {
        /// Its length.
        len: usize,
        /// The kernel's limit.
        max: u64,
    },
    /// It could not be written to guest memory.
    #[error("cannot place it in guest memory: {0}")]
    Place(linux_loader::loader::Error),
}

/// Errors while opening or loading an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image cannot be opened or read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// Image path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The image is empty.
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
    /// The image or initrd is a FIFO, a device or a directory.
    #[error("{} is not a regular file: it is {kind}", .path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is ("a FIFO").
        kind: &'static str,
    },
    /// Part of the image would land outside guest RAM.
    #[error("{what} ({} at {start:#x}) does not fit in {} of guest memory; {hint}", human_size(*.size), human_size(*.mem))]
    DoesNotFit {
        /// What part.
        what: Part,
        /// Where it starts.
        start: u64,
        /// How large it is.
        size: u64,
        /// Guest RAM size.
        mem: u64,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// Part of the image would overwrite the structures kvmini sets up for the entry mode.
    #[error("{what} at {start:#x}..{end:#x} overlaps kvmini's boot structures at {:#x}..{:#x}; load it at or above {:#x}", crate::arch::x86_64::layout::GDT_START, crate::arch::x86_64::layout::BOOT_STRUCTURES_END, crate::arch::x86_64::layout::BOOT_STRUCTURES_END)]
    OverlapsBootStructures {
        /// What part.
        what: Part,
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// The entry point is not where the CPU can start.
    #[error("entry point {entry:#x} is {problem}")]
    BadEntry {
        /// The entry point.
        entry: u64,
        /// What is wrong with it.
        problem: EntryProblem,
    },
    /// A load address the mode cannot use.
    #[error("load address {addr:#x} is {problem}")]
    BadLoadAddress {
        /// The address.
        addr: u64,
        /// What is wrong with it.
        problem: LoadAddressProblem,
    },
    /// The ELF file is malformed or not for this machine.
    #[error("{} is not a usable ELF kernel: {problem}", .path.display())]
    BadElf {
        /// Image path.
        path: PathBuf,
        /// What is wrong.
        problem: ElfProblem,
    },
    /// The file ends before the data its headers describe.
    #[error("{} is truncated: {what} needs bytes up to offset {needed:#x}, but the file has {len:#x}", .path.display())]
    Truncated {
        /// Image path.
        path: PathBuf,
        /// What part.
        what: Part,
        /// Bytes the headers say are there.
        needed: u64,
        /// Bytes that are there.
        len: u64,
    },
    /// The crate loader refused the image.
    #[error("{} could not be loaded: {source}", .path.display())]
    Loader {
        /// Image path.
        path: PathBuf,
        /// Why.
        source: linux_loader::loader::Error,
    },
    /// The kernel command line cannot be built or placed.
    #[error("kernel command line: {0}")]
    BadCmdline(#[from] CmdlineProblem),
    /// A Linux kernel image the boot protocol refuses.
    #[error("{} is not a bootable Linux kernel: {problem}", .path.display())]
    BadKernel {
        /// Image path.
        path: PathBuf,
        /// What is wrong.
        problem: SetupHeaderProblem,
    },
    /// A Multiboot kernel kvmini cannot boot.
    #[error("{} is not a bootable Multiboot kernel: {problem}", .path.display())]
    BadMultiboot {
        /// Image path.
        path: PathBuf,
        /// What is wrong.
        problem: super::multiboot::Problem,
    },
    /// A Multiboot module that does not fit in guest memory.
    #[error("module {} ({}) does not fit in {} of guest memory: modules go one after another, page-aligned, above the kernel, and this one would start at {start:#x} and must end by {limit:#x}; raise --mem", .path.display(), human_size(*.size), human_size(*.mem))]
    ModuleDoesNotFit {
        /// The module's file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Where it would start.
        start: u64,
        /// Where modules must end by (the end of RAM below the MMIO hole).
        limit: u64,
        /// Guest RAM size.
        mem: u64,
    },
    /// More Multiboot information than its area holds.
    #[error("the Multiboot information (command line, module strings, memory map) takes {size} bytes, more than the {room} kvmini has for it; shorten the command line or the module strings")]
    MultibootInfoTooLarge {
        /// Bytes needed.
        size: u64,
        /// Bytes there are.
        room: u64,
    },
    /// Writing boot structures to guest memory failed.
    #[error("cannot write {what} to guest memory: {source}")]
    Memory {
        /// What.
        what: &'static str,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
    /// A boot configurator of linux-loader could not write its structure.
    #[error("cannot write {what} to guest memory: {source}")]
    Configurator {
        /// What.
        what: &'static str,
        /// Why.
        source: linux_loader::configurator::Error,
    },
}
