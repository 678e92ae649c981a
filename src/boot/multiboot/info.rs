//! The boot information a Multiboot kernel finds through EBX: built as the bytes of one block
//! at a known guest address, pure and without guest memory, so that every field is checked
//! by unit tests.
//!
//! - Multiboot 1: `struct multiboot_info` (flags, mem_lower/mem_upper, cmdline, mods, mmap,
//!   boot_loader_name), then the memory map, the module list and the strings it points to.
//! - Multiboot 2: `total_size`, `reserved`, then 8-byte aligned tags: command line (1), boot
//!   loader name (2), one per module (3), basic memory information (4), memory map (6), end (0).
//!
//! Sources: the Multiboot Specification 0.6.96, 3.3 "Boot information format"; the Multiboot2
//! Specification 2.0, 3.6 "Boot information".

use crate::arch::x86_64::layout::HIGH_LOAD_ADDR;
use crate::boot::memmap::MemoryRange;

/// The name kvmini gives as the boot loader's.
pub const LOADER_NAME: &str = "kvmini";

/// Bytes of `struct multiboot_info`, up to and including the framebuffer fields.
pub const MB1_INFO_LEN: usize = 116;

/// Multiboot 1 `flags` bits kvmini sets: mem_lower/mem_upper, cmdline, mods, mmap,
/// boot_loader_name.
pub mod mb1_flags {
    /// `mem_lower` and `mem_upper` are valid.
    pub const MEMORY: u32 = 1 << 0;
    /// `cmdline` is valid.
    pub const CMDLINE: u32 = 1 << 2;
    /// `mods_count` and `mods_addr` are valid.
    pub const MODS: u32 = 1 << 3;
    /// `mmap_length` and `mmap_addr` are valid.
    pub const MEM_MAP: u32 = 1 << 6;
    /// `boot_loader_name` is valid.
    pub const BOOT_LOADER_NAME: u32 = 1 << 9;
}

/// Field offsets in `struct multiboot_info`.
mod mb1_field {
    pub const FLAGS: usize = 0;
    pub const MEM_LOWER: usize = 4;
    pub const MEM_UPPER: usize = 8;
    pub const CMDLINE: usize = 16;
    pub const MODS_COUNT: usize = 20;
    pub const MODS_ADDR: usize = 24;
    pub const MMAP_LENGTH: usize = 44;
    pub const MMAP_ADDR: usize = 48;
    pub const BOOT_LOADER_NAME: usize = 64;
}

/// Multiboot 2 information tag types kvmini writes.
pub mod mb2_tag {
    /// The end of the tags.
    pub const END: u32 = 0;
    /// The command line.
    pub const CMDLINE: u32 = 1;
    /// The boot loader's name.
    pub const BOOT_LOADER_NAME: u32 = 2;
    /// One module.
    pub const MODULE: u32 = 3;
    /// `mem_lower` and `mem_upper`.
    pub const BASIC_MEMINFO: u32 = 4;
    /// The memory map.
    pub const MMAP: u32 = 6;
}

/// Bytes of one Multiboot 2 memory map entry.
const MB2_MMAP_ENTRY: u32 = 24;
/// Bytes of one Multiboot 1 memory map entry after its `size` field.
const MB1_MMAP_ENTRY: u32 = 20;

/// A module as the kernel is told of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    /// Its first byte's guest-physical address.
    pub start: u32,
    /// Just past its last byte.
    pub end: u32,
    /// Its string (command line), without a NUL.
    pub string: &'a [u8],
}

/// What goes into the boot information.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo<'a> {
    /// The kernel's command line, without a NUL.
    pub cmdline: &'a [u8],
    /// The modules, in order.
    pub modules: &'a [Module<'a>],
    /// The memory map.
    pub memory: &'a [MemoryRange],
}

/// `mem_lower` and `mem_upper` in KiB: the RAM from 0 (at most 640 KiB) and the RAM from
/// 1 MiB up to the first hole.
pub fn mem_lower_upper(memory: &[MemoryRange]) -> (u32, u32) {
    let kib_at = |addr: u64, max: u64| {
        memory
            .iter()
            .find(|r| r.addr == addr)
            .map_or(0, |r| (r.size.min(max) / 1024) as u32)
    };
    (
        kib_at(0, 640 << 10),
        kib_at(HIGH_LOAD_ADDR, u64::from(u32::MAX) << 10),
    )
}

/// The bytes of a block that will sit at `base`.
struct Block {
    bytes: Vec<u8>,
    base: u64,
}

impl Block {
    fn new(base: u64) -> Self {
        Block {
            bytes: Vec::new(),
            base,
        }
    }

    /// The guest address of the next byte. The block sits below 4 GiB, and the caller
    /// checks that it fits where it goes.
    fn addr(&self) -> u32 {
        (self.base + self.bytes.len() as u64) as u32
    }

    fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    fn set_u32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Appends a NUL-terminated string; returns its address.
    fn string(&mut self, s: &[u8]) -> u32 {
        let addr = self.addr();
        self.bytes.extend_from_slice(s);
        self.bytes.push(0);
        addr
    }

    fn align(&mut self, n: usize) {
        self.bytes.resize(self.bytes.len().next_multiple_of(n), 0);
    }

    /// Appends a Multiboot 2 tag of `kind` whose body `fill` writes, and pads to 8 bytes.
    fn tag(&mut self, kind: u32, fill: impl FnOnce(&mut Block)) {
        let start = self.bytes.len();
        self.u32(kind);
        self.u32(0);
        fill(self);
        let size = (self.bytes.len() - start) as u32;
        self.set_u32(start + 4, size);
        self.align(8);
    }
}

/// The Multiboot 1 information for a block at `base` (its first byte is the
/// `multiboot_info`, whose address goes in EBX).
pub fn multiboot1(info: &BootInfo<'_>, base: u64) -> Vec<u8> {
    use mb1_field as f;
    let mut b = Block::new(base);
    b.bytes.resize(MB1_INFO_LEN, 0);
    b.align(8);
    let mmap_addr = b.addr();
    for r in info.memory {
        b.u32(MB1_MMAP_ENTRY);
        b.u64(r.addr);
        b.u64(r.size);
        b.u32(r.kind);
    }
    let mmap_length = b.addr() - mmap_addr;
    let mods_addr = b.addr();
    let mods_at = b.bytes.len();
    b.bytes.resize(mods_at + 16 * info.modules.len(), 0);
    let cmdline = b.string(info.cmdline);
    let loader = b.string(LOADER_NAME.as_bytes());
    for (i, m) in info.modules.iter().enumerate() {
        let string = b.string(m.string);
        let at = mods_at + 16 * i;
        b.set_u32(at, m.start);
        b.set_u32(at + 4, m.end);
        b.set_u32(at + 8, string);
    }
    let (lower, upper) = mem_lower_upper(info.memory);
    let flags = mb1_flags::MEMORY
        | mb1_flags::CMDLINE
        | mb1_flags::MODS
        | mb1_flags::MEM_MAP
        | mb1_flags::BOOT_LOADER_NAME;
    for (at, v) in [
        (f::FLAGS, flags),
        (f::MEM_LOWER, lower),
        (f::MEM_UPPER, upper),
        (f::CMDLINE, cmdline),
        (f::MODS_COUNT, info.modules.len() as u32),
        (f::MODS_ADDR, mods_addr),
        (f::MMAP_LENGTH, mmap_length),
        (f::MMAP_ADDR, mmap_addr),
        (f::BOOT_LOADER_NAME, loader),
    ] {
        b.set_u32(at, v);
    }
    b.bytes
}

/// The Multiboot 2 information for a block at `base` (8-byte aligned; its address goes in
/// EBX).
pub fn multiboot2(info: &BootInfo<'_>, base: u64) -> Vec<u8> {
    let mut b = Block::new(base);
    b.u32(0); // total_size, set below
    b.u32(0); // reserved
    b.tag(mb2_tag::CMDLINE, |b| {
        b.string(info.cmdline);
    });
    b.tag(mb2_tag::BOOT_LOADER_NAME, |b| {
        b.string(LOADER_NAME.as_bytes());
    });
    for m in info.modules {
        b.tag(mb2_tag::MODULE, |b| {
            b.u32(m.start);
            b.u32(m.end);
            b.string(m.string);
        });
    }
    let (lower, upper) = mem_lower_upper(info.memory);
    b.tag(mb2_tag::BASIC_MEMINFO, |b| {
        b.u32(lower);
        b.u32(upper);
    });
    b.tag(mb2_tag::MMAP, |b| {
        b.u32(MB2_MMAP_ENTRY);
        b.u32(0); // entry_version
        for r in info.memory {
            b.u64(r.addr);
            b.u64(r.size);
            b.u32(r.kind);
            b.u32(0);
        }
    });
    b.tag(mb2_tag::END, |_| {});
    let total = b.bytes.len() as u32;
    b.set_u32(0, total);
    b.bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::memmap::E820_RAM;

    const BASE: u64 = 0x1_0000;

    fn memory() -> Vec<MemoryRange> {
        vec![
            MemoryRange {
                addr: 0,
                size: 0x9_fc00,
                kind: E820_RAM,
            },
            MemoryRange {
                addr: 0x10_0000,
                size: (32 << 20) - 0x10_0000,
                kind: E820_RAM,
            },
        ]
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// The NUL-terminated string at guest address `addr` of a block at `BASE`.
    fn str_at(b: &[u8], addr: u32) -> &str {
        let at = (u64::from(addr) - BASE) as usize;
        let end = at + b[at..].iter().position(|&c| c == 0).unwrap();
        std::str::from_utf8(&b[at..end]).unwrap()
    }

    fn modules() -> [Module<'static>; 2] {
        [
            Module {
                start: 0x20_0000,
                end: 0x20_0123,
                string: b"/boot/one arg",
            },
            Module {
                start: 0x20_1000,
                end: 0x20_1000,
                string: b"two",
            },
        ]
    }

    /// The information `builder` makes at `BASE` with [`memory`], [`modules`] and `cmdline`.
    fn build(builder: fn(&BootInfo<'_>, u64) -> Vec<u8>, cmdline: &[u8]) -> Vec<u8> {
        let (memory, modules) = (memory(), modules());
        let info = BootInfo {
            cmdline,
            modules: &modules,
            memory: &memory,
        };
        builder(&info, BASE)
    }

    #[test]
    fn lower_and_upper_memory_in_kib() {
        assert_eq!(mem_lower_upper(&memory()), (639, 31 << 10));
        assert_eq!(mem_lower_upper(&memory()[..1]), (639, 0));
        let big = [MemoryRange {
            addr: 0,
            size: 1 << 20,
            kind: E820_RAM,
        }];
        assert_eq!(mem_lower_upper(&big), (640, 0));
    }

    #[test]
    fn multiboot1_info_points_at_everything_it_holds() {
        let b = build(multiboot1, b"console=ttyS0 debug");
        assert_eq!(
            u32_at(&b, 0),
            0x24d,
            "flags: mem, cmdline, mods, mmap, name"
        );
        assert_eq!((u32_at(&b, 4), u32_at(&b, 8)), (639, 31 << 10));
        assert_eq!(str_at(&b, u32_at(&b, 16)), "console=ttyS0 debug");
        assert_eq!(str_at(&b, u32_at(&b, 64)), "kvmini");
        // The memory map: `size` (20) before each 20-byte entry.
        let (len, addr) = (u32_at(&b, 44), u32_at(&b, 48));
        assert_eq!(len, 48);
        let at = (u64::from(addr) - BASE) as usize;
        assert_eq!(u32_at(&b, at), 20);
        assert_eq!(u64_at(&b, at + 4), 0);
        assert_eq!(u64_at(&b, at + 12), 0x9_fc00);
        assert_eq!(u32_at(&b, at + 20), 1);
        assert_eq!(u64_at(&b, at + 28), 0x10_0000);
        assert_eq!(u64_at(&b, at + 36), (32 << 20) - 0x10_0000);
        // The module list.
        assert_eq!(u32_at(&b, 20), 2);
        let at = (u64::from(u32_at(&b, 24)) - BASE) as usize;
        assert_eq!((u32_at(&b, at), u32_at(&b, at + 4)), (0x20_0000, 0x20_0123));
        assert_eq!(str_at(&b, u32_at(&b, at + 8)), "/boot/one arg");
        assert_eq!(u32_at(&b, at + 12), 0);
        assert_eq!(
            (u32_at(&b, at + 16), u32_at(&b, at + 20)),
            (0x20_1000, 0x20_1000)
        );
        assert_eq!(str_at(&b, u32_at(&b, at + 24)), "two");
        // Nothing is set that the flags do not announce.
        assert_eq!(u32_at(&b, 12), 0, "boot_device");
        assert!(b[28..44].iter().all(|&x| x == 0), "syms");
    }

    #[test]
    fn multiboot1_info_without_modules_or_command_line() {
        let memory = memory();
        let info = BootInfo {
            cmdline: b"",
            modules: &[],
            memory: &memory,
        };
        let b = multiboot1(&info, BASE);
        assert_eq!(u32_at(&b, 20), 0);
        assert_eq!(str_at(&b, u32_at(&b, 16)), "");
    }

    /// The tags of a Multiboot 2 block: (type, body).
    fn tags(b: &[u8]) -> Vec<(u32, &[u8])> {
        let mut out = Vec::new();
        let mut at = 8;
        loop {
            assert_eq!(at % 8, 0, "tags are 8-byte aligned");
            let (kind, size) = (u32_at(b, at), u32_at(b, at + 4) as usize);
            out.push((kind, &b[at + 8..at + size]));
            if kind == mb2_tag::END {
                assert_eq!(size, 8);
                assert_eq!(at + 8, b.len());
                return out;
            }
            at = (at + size).next_multiple_of(8);
        }
    }

    #[test]
    fn multiboot2_info_is_tags_in_order_up_to_the_end_tag() {
        let b = build(multiboot2, b"quiet");
        assert_eq!(u32_at(&b, 0) as usize, b.len(), "total_size");
        assert_eq!(u32_at(&b, 4), 0, "reserved");
        let t = tags(&b);
        let kinds: Vec<u32> = t.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [1, 2, 3, 3, 4, 6, 0]);
        assert_eq!(t[0].1, b"quiet\0");
        assert_eq!(t[1].1, b"kvmini\0");
        assert_eq!(
            (u32_at(t[2].1, 0), u32_at(t[2].1, 4)),
            (0x20_0000, 0x20_0123)
        );
        assert_eq!(&t[2].1[8..], b"/boot/one arg\0");
        assert_eq!(&t[3].1[8..], b"two\0");
        assert_eq!((u32_at(t[4].1, 0), u32_at(t[4].1, 4)), (639, 31 << 10));
        let mmap = t[5].1;
        assert_eq!((u32_at(mmap, 0), u32_at(mmap, 4)), (24, 0));
        assert_eq!(mmap.len(), 8 + 2 * 24);
        assert_eq!(u64_at(mmap, 8 + 24), 0x10_0000);
        assert_eq!(u64_at(mmap, 16 + 24), (32 << 20) - 0x10_0000);
        assert_eq!(u32_at(mmap, 24 + 24), 1);
    }
}
