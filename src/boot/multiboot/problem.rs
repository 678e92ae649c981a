//! What is wrong with a Multiboot kernel, in words that say what to change.

use super::header::{self, Version};
use crate::arch::x86_64::layout::{GDT_START, MULTIBOOT_INFO_END};
use crate::boot::error::{ElfProblem, Part};

/// What is wrong with a Multiboot kernel: its header, its address fields or its ELF headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// No header where the format says there must be one.
    #[error("it has no Multiboot header: {}", no_header(*.0))]
    NoHeader(Option<Version>),
    /// The header's words do not add up to 0.
    #[error("its Multiboot {version} header at offset {offset:#x} has a bad checksum: its words add up to {sum:#x}, not 0 (use --format raw or elf if it is no Multiboot kernel)")]
    Checksum {
        /// 1 or 2.
        version: u8,
        /// File offset of the header.
        offset: u64,
        /// What the words add up to.
        sum: u32,
    },
    /// The file ends inside the header.
    #[error("it is truncated: its Multiboot {version} header at offset {offset:#x} needs bytes up to {needed:#x}, and the file has {len:#x}")]
    HeaderTruncated {
        /// 1 or 2.
        version: u8,
        /// File offset of the header.
        offset: u64,
        /// Bytes the header needs.
        needed: u64,
        /// Bytes in the file.
        len: u64,
    },
    /// A Multiboot 2 `header_length` kvmini cannot use.
    #[error("its Multiboot 2 header_length {0} is not usable: the header must hold its 16 fixed bytes and end within the first {head} KiB of the file", head = header::HEAD_LEN >> 10)]
    HeaderLength(u32),
    /// Multiboot 1 flag bit 2.
    #[error("it requires a video mode (Multiboot 1 flags bit 2), and kvmini has no display; clear the bit (the console is the serial port at 0x3f8)")]
    NeedsVideo,
    /// Multiboot 1 required flags kvmini does not know.
    #[error("it requires features kvmini does not know: Multiboot 1 flags bits {0:#x} (bits 0-15 are requirements)")]
    RequiredFlags(u32),
    /// Not i386.
    #[error("its Multiboot 2 header is for architecture {0}, not 0 (32-bit i386)")]
    Architecture(u32),
    /// The tags run to `header_length` without an end tag.
    #[error("its Multiboot 2 header has no end tag (type 0, size 8) within header_length")]
    NoEndTag,
    /// A tag whose size is too small or runs past the header.
    #[error("its Multiboot 2 header tag of type {kind} at offset {offset:#x} has size {size}, too small for the tag or past header_length")]
    BadTag {
        /// File offset of the tag.
        offset: u64,
        /// Its type.
        kind: u16,
        /// Its size.
        size: u32,
    },
    /// A required tag kvmini does not know.
    #[error("its Multiboot 2 header has a required tag of type {0}, which kvmini does not know; set its optional flag (bit 0) if the kernel can do without")]
    UnknownTag(u16),
    /// A required information request kvmini cannot meet.
    #[error("its Multiboot 2 header requires boot information of type {0}, which kvmini does not give (it gives types 1, 2, 3, 4 and 6: command line, boot loader name, modules, basic memory information, memory map); make the request optional")]
    InformationRequest(u32),
    /// A required framebuffer tag.
    #[error("its Multiboot 2 header requires a framebuffer, and kvmini has no display; make the framebuffer tag optional")]
    NeedsFramebuffer,
    /// A required console.
    #[error("its Multiboot 2 header requires a console (console flags bit 0), and kvmini has no EGA text console; its console is the serial port at 0x3f8")]
    NeedsConsole,
    /// An address tag without an entry address tag.
    #[error("its Multiboot 2 header has an address tag but no entry address tag (type 3), so nothing says where to start")]
    AddressWithoutEntry,
    /// `load_addr` above `header_addr`.
    #[error("load_addr {load_addr:#x} is above header_addr {header_addr:#x}; the loaded bytes must start at or before the header")]
    LoadAboveHeader {
        /// `load_addr`.
        load_addr: u32,
        /// `header_addr`.
        header_addr: u32,
    },
    /// `header_addr - load_addr` reaches before the file's start.
    #[error("header_addr - load_addr is {distance:#x}, but the header is only {header_offset:#x} bytes into the file")]
    LoadBeforeFile {
        /// `header_addr - load_addr`.
        distance: u64,
        /// File offset of the header.
        header_offset: u64,
    },
    /// Multiboot 2 `load_addr` -1 with a header that would put the file's start below 0.
    #[error("header_addr {header_addr:#x} is below the header's file offset {header_offset:#x}, so load_addr -1 (load from the file's start) would start below address 0")]
    HeaderAddrBelowOffset {
        /// `header_addr`.
        header_addr: u32,
        /// File offset of the header.
        header_offset: u64,
    },
    /// `load_end_addr` below `load_addr`.
    #[error("load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}")]
    LoadEndBeforeLoad {
        /// `load_addr`.
        load_addr: u64,
        /// `load_end_addr`.
        load_end_addr: u64,
    },
    /// `bss_end_addr` below the end of the loaded bytes.
    #[error("bss_end_addr {bss_end:#x} is below the end of the loaded bytes, {load_end:#x}")]
    BssEndBeforeLoadEnd {
        /// Where the loaded bytes end.
        load_end: u64,
        /// `bss_end_addr`.
        bss_end: u64,
    },
    /// More file bytes than memory bytes.
    #[error("{0} has more file bytes than memory bytes")]
    FileLargerThanMemory(Part),
    /// Offsets or sizes that overflow.
    #[error("{0} has an offset or size that overflows")]
    Overflow(Part),
    /// Past 4 GiB.
    #[error("{what} ends at {end:#x}, above 4 GiB, out of a 32-bit kernel's reach")]
    Above4G {
        /// What part.
        what: Part,
        /// Where it ends.
        end: u64,
    },
    /// On kvmini's own structures.
    #[error("{what} at {start:#x}..{end:#x} overlaps kvmini's boot structures and Multiboot information at {GDT_START:#x}..{MULTIBOOT_INFO_END:#x}; link the kernel at or above {MULTIBOOT_INFO_END:#x} (1 MiB is usual)")]
    Overlaps {
        /// What part.
        what: Part,
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// What the ELF reader of the other loaders also finds.
    #[error("{0}")]
    Elf(#[from] ElfProblem),
    /// Neither ELF32 nor ELF64.
    #[error("its ELF class is {0}, neither 1 (32-bit) nor 2 (64-bit)")]
    ElfClass(u8),
    /// Big-endian.
    #[error("it is a big-endian ELF file; x86 is little-endian")]
    ElfBigEndian,
    /// Not i386 (ELF32) or x86-64 (ELF64).
    #[error("it is built for machine type {machine}, not {}", if *.is64 { "x86-64 (62)" } else { "i386 (3)" })]
    ElfMachine {
        /// ELF64.
        is64: bool,
        /// `e_machine`.
        machine: u16,
    },
    /// Program header entries of the wrong size.
    #[error("its program header size is {phentsize}, not {}", if *.is64 { 56 } else { 32 })]
    ElfPhentsize {
        /// ELF64.
        is64: bool,
        /// `e_phentsize`.
        phentsize: usize,
    },
    /// The file ends inside the ELF header (this many bytes are needed).
    #[error("it is truncated inside its ELF header ({0} bytes)")]
    ElfHeaderTruncated(u64),
}

fn no_header(version: Option<Version>) -> &'static str {
    match version {
        Some(Version::One) => "Multiboot 1 needs magic 0x1BADB002, 4-byte aligned, in the first 8 KiB",
        Some(Version::Two) => "Multiboot 2 needs magic 0xE85250D6, 8-byte aligned, in the first 32 KiB",
        None => "Multiboot 1 needs magic 0x1BADB002 4-byte aligned in the first 8 KiB, Multiboot 2 needs 0xE85250D6 8-byte aligned in the first 32 KiB",
    }
}
