//! Linux's `boot_params` ("zero page") for the 64-bit boot protocol: the setup header (a
//! bzImage's own, or the few fields a `vmlinux` needs), the command line, the initrd and the
//! e820 memory map. RSI points at it when the kernel starts.
//!
//! Source of truth: Linux's `Documentation/arch/x86/zero-page.rst` and `boot.rst`.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::GuestAddress;

use super::cmdline::Placed;
use super::error::Error;
use super::initrd::Initrd;
use super::memmap::memory_map;
use crate::arch::x86_64::layout::{BOOT_HEAP_END, ZERO_PAGE_START};
use crate::memory::GuestMem;

/// `boot_flag` of a valid setup header.
pub const BOOT_FLAG: u16 = 0xaa55;
/// "HdrS", the setup header's `header` field.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// `loadflags`: the heap end pointer is valid.
const CAN_USE_HEAP: u8 = 0x80;
/// `type_of_loader`: a boot loader without an assigned ID.
pub const LOADER_UNDEFINED: u8 = 0xff;
/// `kernel_alignment` given to a `vmlinux`, which has no setup header of its own: 16 MiB, the
/// x86-64 kernel's `CONFIG_PHYSICAL_ALIGN` default.
const VMLINUX_KERNEL_ALIGNMENT: u32 = 0x0100_0000;

/// The e820 part of `boot_params`.
pub fn fill_e820(params: &mut boot_params, mem: &GuestMem) {
    let map = memory_map(mem);
    for (slot, range) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: range.addr,
            size: range.size,
            r#type: range.kind,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
}

/// Writes the zero page for a 64-bit Linux entry; `header` is a bzImage's setup header.
pub fn write_boot_params(
    mem: &GuestMem,
    header: Option<setup_header>,
    cmdline: Option<Placed>,
    initrd: Option<Initrd>,
) -> Result<(), Error> {
    let mut params = boot_params::default();
    if let Some(hdr) = header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = BOOT_FLAG;
        params.hdr.header = HDRS_MAGIC;
        params.hdr.kernel_alignment = VMLINUX_KERNEL_ALIGNMENT;
    }
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = BOOT_HEAP_END;
    if let Some(c) = cmdline {
        params.hdr.cmd_line_ptr = c.addr as u32;
        params.hdr.cmdline_size = c.len as u32;
    }
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    fill_e820(&mut params, mem);
    let boot = BootParams::new(&params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&boot, mem).map_err(|source| Error::Configurator {
        what: "boot_params",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::CMDLINE_START;
    use vm_memory::Bytes;

    #[test]
    fn boot_params_carry_e820_cmdline_and_initrd() {
        let mem = crate::memory::create(64 << 20).unwrap();
        let initrd = Initrd {
            addr: 0x300_0000,
            size: 0x1234,
        };
        let header = setup_header {
            boot_flag: BOOT_FLAG,
            header: HDRS_MAGIC,
            version: 0x020f,
            ..Default::default()
        };
        let cmdline = Placed {
            addr: CMDLINE_START,
            len: 10,
        };
        write_boot_params(&mem, Some(header), Some(cmdline), Some(initrd)).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let (ptr, size, image, rsize) = (
            p.hdr.cmd_line_ptr,
            p.hdr.cmdline_size,
            p.hdr.ramdisk_image,
            p.hdr.ramdisk_size,
        );
        assert_eq!((ptr, size), (CMDLINE_START as u32, 10));
        assert_eq!((image, rsize), (0x300_0000, 0x1234));
        assert_eq!(p.hdr.type_of_loader, LOADER_UNDEFINED);
        assert_eq!(p.e820_entries, 2);
        let second = p.e820_table[1];
        let (addr, len) = (second.addr, second.size);
        assert_eq!((addr, len), (0x10_0000, (64 << 20) - 0x10_0000));
    }

    #[test]
    fn a_vmlinux_gets_the_header_fields_the_kernel_reads() {
        let mem = crate::memory::create(16 << 20).unwrap();
        write_boot_params(&mem, None, None, None).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let (flag, magic, align) = (p.hdr.boot_flag, p.hdr.header, p.hdr.kernel_alignment);
        assert_eq!(
            (flag, magic, align),
            (BOOT_FLAG, HDRS_MAGIC, VMLINUX_KERNEL_ALIGNMENT)
        );
        let cmd_line_ptr = p.hdr.cmd_line_ptr;
        assert_eq!(cmd_line_ptr, 0);
    }
}
