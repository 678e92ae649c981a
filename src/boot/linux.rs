//! Linux kernels: the x86 boot protocol for bzImage (setup header checks, `boot_params` with
//! the e820 map, command line and initrd; entered at the 64-bit entry point), the same
//! `boot_params` for an ELF `vmlinux` entered at `e_entry`, and the pieces PVH shares with it
//! (command line, initrd placement).
//!
//! Source of truth: the kernel's `Documentation/arch/x86/boot.rst` (boot protocol 2.12+ for
//! the 64-bit entry and `xloadflags`) and `zero-page.rst`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIGH_LOAD_ADDR, ZERO_PAGE_START};
use super::{memory_map, Entry, Error};
use crate::config::human_size;
use crate::memory::GuestMem;

/// The command line kvmini gives Linux when the user gives none: the console on COM1, a
/// reboot through the i8042 (which kvmini treats as a clean stop), and a panic that reboots
/// at once instead of hanging.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

/// What a Linux guest needs on top on a host whose KVM emulates guest ring 0 (`kvm_pvm`):
/// no XSAVE (XRSTOR cannot be emulated and CPUID cannot hide it), no POPCNT and SMAP
/// (alternatives would patch in instructions the emulator cannot run), and the guest-side
/// workarounds of kvmini's guest kernel (see docs/linux-guest.md).
pub const PVM_CMDLINE: &str = "noxsave clearcpuid=popcnt,smap pvm_workarounds";

/// `boot_flag` of a valid setup header.
const BOOT_FLAG: u16 = 0xaa55;
/// "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `loadflags`: the protected-mode kernel is loaded at 1 MiB.
const LOADED_HIGH: u8 = 0x01;
/// `loadflags`: the heap end pointer is valid.
const CAN_USE_HEAP: u8 = 0x80;
/// `xloadflags`: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 0x01;
/// Oldest boot protocol kvmini speaks: 2.12 brought `xloadflags` and the 64-bit entry.
const MIN_PROTOCOL: u16 = 0x020c;
/// The 64-bit entry point is this far into the protected-mode kernel.
const STARTUP_64_OFFSET: u64 = 0x200;
/// `type_of_loader`: a boot loader without an assigned ID.
const LOADER_UNDEFINED: u8 = 0xff;
/// Initrd limit when the kernel does not say (protocol < 2.03).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// Builds the kernel command line: the user's (or kvmini's default for Linux), the host
/// workarounds when they apply, then ` -- ` and the arguments for init.
pub fn build_cmdline(
    base: Option<&str>,
    host_params: Option<&str>,
    init_args: &[String],
    capacity: usize,
) -> Result<Cmdline, Error> {
    let bad = |why: String| Error::BadCmdline { why };
    let mut cmdline = Cmdline::new(capacity).map_err(|e| bad(e.to_string()))?;
    for part in [base, host_params].into_iter().flatten() {
        if !part.trim().is_empty() {
            cmdline
                .insert_str(part)
                .map_err(|e| bad(format!("{e} (at most {} bytes)", capacity - 1)))?;
        }
    }
    if !init_args.is_empty() {
        if base.is_none_or(|b| b.trim().is_empty()) && host_params.is_none() {
            // Linux needs at least one kernel argument before the `--`.
            cmdline.insert_str("--").map_err(|e| bad(e.to_string()))?;
        }
        let mut words = Vec::with_capacity(init_args.len());
        for arg in init_args {
            // The kernel splits init arguments at spaces but keeps "double-quoted" words whole.
            if arg.contains('"') {
                return Err(bad(format!(
                    "init argument {arg:?} contains a double quote, which the kernel cannot pass"
                )));
            }
            words.push(if arg.is_empty() || arg.contains(char::is_whitespace) {
                format!("\"{arg}\"")
            } else {
                arg.clone()
            });
        }
        cmdline
            .insert_init_args(words.join(" "))
            .map_err(|e| bad(format!("init arguments: {e}")))?;
    }
    Ok(cmdline)
}

/// Writes the command line at `CMDLINE_START`; returns its address and length (without NUL).
pub fn write_cmdline(mem: &GuestMem, cmdline: &Cmdline) -> Result<(u64, usize), Error> {
    let len = cmdline
        .as_cstring()
        .map_err(|e| Error::BadCmdline { why: e.to_string() })?
        .as_bytes()
        .len();
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(|e| {
        Error::BadCmdline {
            why: format!("cannot place it in guest memory: {e}"),
        }
    })?;
    Ok((CMDLINE_START, len))
}

/// Where an initrd was put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Initrd {
    /// Guest-physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Where an initrd of `size` bytes goes: as high as possible in the RAM below 4 GiB, page
/// aligned, below `max_end` (the kernel's `initrd_addr_max` + 1) and above `kernel_end`.
pub fn place_initrd(
    mem: &GuestMem,
    size: u64,
    kernel_end: u64,
    max_end: u64,
) -> Result<u64, Error> {
    let low_end = mem
        .iter()
        .find(|r| r.start_addr().raw_value() == 0)
        .map_or(0, |r| r.len());
    let end = low_end.min(max_end);
    let addr = end.checked_sub(size).map(|a| a & !0xfff);
    match addr {
        Some(addr) if addr >= kernel_end.max(HIGH_LOAD_ADDR) => Ok(addr),
        _ => Err(Error::DoesNotFit {
            what: format!(
                "the initrd (the kernel ends at {kernel_end:#x}; the initrd must end below {end:#x})"
            ),
            start: kernel_end,
            size,
            mem: crate::memory::size(mem),
            hint: "raise --mem",
        }),
    }
}

/// Copies the initrd from `path` into guest memory below `max_end`.
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
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size == 0 {
        return Err(Error::Empty(path.to_path_buf()));
    }
    let addr = place_initrd(mem, size, kernel_end, max_end)?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| Error::Memory {
            what: "the initrd",
            source,
        })?;
    Ok(Initrd { addr, size })
}

/// Reads and checks a bzImage's setup header.
pub fn read_setup_header(file: &mut File, path: &Path, len: u64) -> Result<setup_header, Error> {
    let bad = |why: String| Error::BadKernel {
        path: path.to_path_buf(),
        why,
    };
    let mut hdr = setup_header::default();
    let hdr_end = 0x1f1 + std::mem::size_of::<setup_header>() as u64;
    if len < hdr_end {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "the setup header".into(),
            needed: hdr_end,
            len,
        });
    }
    file.seek(SeekFrom::Start(0x1f1))
        .and_then(|_| file.read_exact(hdr.as_mut_slice()))
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
    check_setup_header(&hdr, len).map_err(bad)?;
    Ok(hdr)
}

/// The checks of the boot protocol, on a header read from a file of `len` bytes.
pub fn check_setup_header(hdr: &setup_header, len: u64) -> Result<(), String> {
    let (magic, flag, version) = (hdr.header, hdr.boot_flag, hdr.version);
    if magic != HDRS_MAGIC {
        return Err("no \"HdrS\" setup header magic at 0x202".into());
    }
    if flag != BOOT_FLAG {
        return Err(format!(
            "boot_flag is {flag:#x}, not 0xaa55: the setup header is corrupt"
        ));
    }
    if version < MIN_PROTOCOL {
        return Err(format!(
            "boot protocol {}.{:02} is too old; kvmini needs 2.12 or later (Linux 3.8+) for the 64-bit entry point",
            version >> 8,
            version & 0xff
        ));
    }
    let xloadflags = hdr.xloadflags;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(
            "it has no 64-bit entry point (a 32-bit kernel?); kvmini boots x86-64 kernels".into(),
        );
    }
    if hdr.loadflags & LOADED_HIGH == 0 {
        return Err("it is a zImage loaded low; kvmini boots bzImages".into());
    }
    let setup_sects = if hdr.setup_sects == 0 {
        4
    } else {
        u64::from(hdr.setup_sects)
    };
    let setup_len = (setup_sects + 1) * 512;
    let syssize = u64::from(hdr.syssize) * 16;
    if setup_len + syssize > len {
        return Err(format!(
            "it is truncated: the header describes {} bytes of setup and kernel, the file has {len}",
            setup_len + syssize
        ));
    }
    Ok(())
}

/// The e820 part of `boot_params`.
pub fn fill_e820(params: &mut boot_params, mem: &GuestMem) {
    let map = memory_map(mem);
    for (slot, (addr, size, kind)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *kind,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
}

/// Writes the zero page for a 64-bit Linux entry.
pub fn write_boot_params(
    mem: &GuestMem,
    header: Option<setup_header>,
    cmdline: Option<(u64, usize)>,
    initrd: Option<Initrd>,
) -> Result<(), Error> {
    let mut params = boot_params::default();
    if let Some(hdr) = header {
        params.hdr = hdr;
    } else {
        // An ELF vmlinux has no setup header: give the fields the kernel looks at.
        params.hdr.boot_flag = BOOT_FLAG;
        params.hdr.header = HDRS_MAGIC;
        params.hdr.kernel_alignment = 0x0100_0000;
    }
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    if let Some((addr, len)) = cmdline {
        params.hdr.cmd_line_ptr = addr as u32;
        params.hdr.cmdline_size = len as u32;
    }
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    fill_e820(&mut params, mem);
    let boot = BootParams::new(&params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&boot, mem).map_err(|e| Error::Memory {
        what: "boot_params",
        source: vm_memory::GuestMemoryError::IOError(std::io::Error::other(e.to_string())),
    })
}

/// The kernel-side options of a boot.
#[derive(Clone, Debug, Default)]
pub struct KernelArgs<'a> {
    /// Command line (already including defaults and host parameters), if any.
    pub cmdline: Option<&'a Cmdline>,
    /// Initrd file.
    pub initrd: Option<&'a Path>,
}

/// Loads a bzImage: the protected-mode kernel at 1 MiB, then command line, initrd and zero
/// page; the vCPU starts at the 64-bit entry point in long mode with RSI = the zero page.
pub fn load_bzimage(
    mem: &GuestMem,
    file: &mut File,
    path: &Path,
    len: u64,
    args: &KernelArgs<'_>,
) -> Result<(Entry, String), Error> {
    let hdr = read_setup_header(file, path, len)?;
    // The kernel decompresses itself to its preferred address and needs init_size bytes there.
    let pref = hdr.pref_address;
    let init_size = u64::from(hdr.init_size);
    let mem_size = crate::memory::size(mem);
    if !crate::memory::contains_range(mem, pref, init_size) {
        return Err(Error::DoesNotFit {
            what: "the decompressed kernel (init_size at pref_address)".into(),
            start: pref,
            size: init_size,
            mem: mem_size,
            hint: "raise --mem",
        });
    }
    let loaded =
        BzImage::load(mem, None, file, Some(GuestAddress(HIGH_LOAD_ADDR))).map_err(|source| {
            Error::Loader {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let header = loaded.setup_header.unwrap_or(hdr);
    let cmdline = match args.cmdline {
        Some(c) => {
            let max = u64::from(header.cmdline_size);
            let s = c
                .as_cstring()
                .map_err(|e| Error::BadCmdline { why: e.to_string() })?;
            if s.as_bytes().len() as u64 > max {
                return Err(Error::BadCmdline {
                    why: format!(
                        "it is {} bytes, and this kernel accepts at most {max}",
                        s.as_bytes().len()
                    ),
                });
            }
            Some(write_cmdline(mem, c)?)
        }
        None => None,
    };
    let kernel_end = loaded.kernel_end.max(pref + init_size);
    let initrd_max = match header.initrd_addr_max {
        0 => DEFAULT_INITRD_ADDR_MAX,
        m => u64::from(m),
    } + 1;
    let initrd = args
        .initrd
        .map(|p| load_initrd(mem, p, kernel_end, initrd_max))
        .transpose()?;
    write_boot_params(mem, Some(header), cmdline, initrd)?;
    let rip = loaded.kernel_load.raw_value() + STARTUP_64_OFFSET;
    let version = header.version;
    let summary = format!(
        "bzImage (boot protocol {}.{:02}), 64-bit entry at {rip:#x}{}",
        version >> 8,
        version & 0xff,
        initrd.map_or(String::new(), |i| format!(
            ", initrd {} at {:#x}",
            human_size(i.size),
            i.addr
        ))
    );
    Ok((
        Entry::Long {
            rip,
            rsi: ZERO_PAGE_START,
        },
        summary,
    ))
}

/// Capacity for command lines of ELF kernels (no header says otherwise).
pub const ELF_CMDLINE_CAPACITY: usize = CMDLINE_MAX_SIZE;

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn header() -> setup_header {
        setup_header {
            setup_sects: 4,
            syssize: 0x100,
            boot_flag: BOOT_FLAG,
            header: HDRS_MAGIC,
            version: 0x020f,
            loadflags: LOADED_HIGH,
            xloadflags: XLF_KERNEL_64,
            ..Default::default()
        }
    }

    #[test]
    fn setup_header_checks_follow_the_boot_protocol() {
        let len = 5 * 512 + 0x1000;
        assert_eq!(check_setup_header(&header(), len), Ok(()));
        let mut h = header();
        h.boot_flag = 0x1234;
        assert!(check_setup_header(&h, len).unwrap_err().contains("corrupt"));
        let mut h = header();
        h.version = 0x020a;
        assert!(check_setup_header(&h, len)
            .unwrap_err()
            .contains("2.10 is too old"));
        let mut h = header();
        h.xloadflags = 0;
        assert!(check_setup_header(&h, len)
            .unwrap_err()
            .contains("no 64-bit entry"));
        assert!(check_setup_header(&header(), 5 * 512 + 0xfff)
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn cmdline_joins_defaults_host_params_and_init_args() {
        let c = build_cmdline(
            Some(DEFAULT_CMDLINE),
            Some(PVM_CMDLINE),
            &["uname".into(), "-r".into()],
            512,
        )
        .unwrap();
        let s = c.as_cstring().unwrap().into_string().unwrap();
        assert_eq!(s, format!("{DEFAULT_CMDLINE} {PVM_CMDLINE} -- uname -r"));
        let c = build_cmdline(
            Some("x"),
            None,
            &["sh".into(), "-c".into(), "exit 7".into()],
            512,
        )
        .unwrap();
        assert_eq!(
            c.as_cstring().unwrap().into_string().unwrap(),
            "x -- sh -c \"exit 7\""
        );
        assert!(build_cmdline(Some("x"), None, &["a\"b".into()], 512).is_err());
        let c = build_cmdline(None, None, &["sh".into()], 512).unwrap();
        assert_eq!(c.as_cstring().unwrap().into_string().unwrap(), "-- -- sh");
        assert!(matches!(
            build_cmdline(Some(&"x".repeat(600)), None, &[], 512),
            Err(Error::BadCmdline { .. })
        ));
    }

    #[test]
    fn initrd_goes_high_and_must_fit_above_the_kernel() {
        let mem = crate::memory::create(64 << 20).unwrap();
        let addr = place_initrd(&mem, 0x1800, 0x200_0000, DEFAULT_INITRD_ADDR_MAX + 1).unwrap();
        assert_eq!(addr, (64 << 20) - 0x2000);
        // Below a kernel-imposed maximum.
        let addr = place_initrd(&mem, 0x1000, 0x200_0000, 48 << 20).unwrap();
        assert_eq!(addr, (48 << 20) - 0x1000);
        let err = place_initrd(&mem, 60 << 20, 0x200_0000, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn boot_params_carry_e820_cmdline_and_initrd() {
        let mem = crate::memory::create(64 << 20).unwrap();
        let initrd = Initrd {
            addr: 0x300_0000,
            size: 0x1234,
        };
        write_boot_params(
            &mem,
            Some(header()),
            Some((CMDLINE_START, 10)),
            Some(initrd),
        )
        .unwrap();
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
}
