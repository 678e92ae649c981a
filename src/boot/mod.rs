//! How a guest gets in: find out what the image is, put it into guest memory, and describe
//! the CPU state its first instruction expects.

pub mod elf;
pub mod layout;
pub mod linux;
pub mod raw;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use kvm_bindings::{kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::{gdt, paging, regs};
use crate::config::{human_size, ImageFormat, VmConfig};
use crate::memory::GuestMem;
use layout::{BOOT_STACK_POINTER, GDT_START, REAL_MODE_STACK_POINTER};

/// Errors while loading an image. Every one of them is the user's input being wrong.
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
    /// Part of the image would land outside guest RAM.
    #[error("{what} ({} at {start:#x}) does not fit in {} of guest memory; {hint}", human_size(*.size), human_size(*.mem))]
    DoesNotFit {
        /// What part.
        what: String,
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
    #[error("{what} at {start:#x}..{end:#x} overlaps kvmini's boot structures at {:#x}..{:#x}; load it at or above {:#x}", layout::GDT_START, layout::BOOT_STRUCTURES_END, layout::BOOT_STRUCTURES_END)]
    OverlapsBootStructures {
        /// What part.
        what: String,
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// The entry point is not where the CPU can start.
    #[error("entry point {entry:#x} is {why}")]
    BadEntry {
        /// The entry point.
        entry: u64,
        /// What is wrong with it.
        why: String,
    },
    /// A load address the mode cannot use.
    #[error("load address {addr:#x} is {why}")]
    BadLoadAddress {
        /// The address.
        addr: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The ELF file is malformed or not for this machine.
    #[error("{} is not a usable ELF kernel: {why}", .path.display())]
    BadElf {
        /// Image path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The ELF file ends before the data its headers describe.
    #[error("{} is truncated: {what} needs bytes up to offset {needed:#x}, but the file has {len:#x}", .path.display())]
    Truncated {
        /// Image path.
        path: PathBuf,
        /// What part.
        what: String,
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
    #[error("kernel command line: {why}")]
    BadCmdline {
        /// What is wrong.
        why: String,
    },
    /// A Linux kernel image the boot protocol refuses.
    #[error("{} is not a bootable Linux kernel: {why}", .path.display())]
    BadKernel {
        /// Image path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A kernel option given for a raw image.
    #[error("{option} applies to kernels (ELF or bzImage) only, and {} is a raw image", .path.display())]
    KernelOnlyOption {
        /// The option.
        option: &'static str,
        /// Image path.
        path: PathBuf,
    },
    /// An option does not apply to this image format.
    #[error("{option} applies to raw images only, and {} is {format:?}", .path.display())]
    RawOnlyOption {
        /// The option.
        option: &'static str,
        /// Image path.
        path: PathBuf,
        /// Its format.
        format: ImageFormat,
    },
    /// A format kvmini cannot boot yet.
    #[error("{} is a {format:?} image, which kvmini cannot boot", .path.display())]
    Unsupported {
        /// Image path.
        path: PathBuf,
        /// Its format.
        format: ImageFormat,
    },
    /// Writing boot structures to guest memory failed.
    #[error("cannot write {what} to guest memory: {source}")]
    Memory {
        /// What.
        what: &'static str,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
}

/// The CPU state a loaded image expects at its first instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Real mode at `segment:ip`, every segment register equal to `segment`.
    Real {
        /// CS, DS, ES, FS, GS and SS.
        segment: u16,
        /// Instruction pointer.
        ip: u16,
    },
    /// 32-bit flat protected mode, paging off.
    Protected {
        /// Instruction pointer.
        eip: u32,
        /// EBX (the PVH start info for PVH kernels).
        ebx: u32,
    },
    /// 64-bit long mode on kvmini's identity map of the first 4 GiB.
    Long {
        /// Instruction pointer.
        rip: u64,
        /// RSI (the Linux `boot_params` for 64-bit Linux entry).
        rsi: u64,
    },
}

/// What was loaded, and how to start it.
#[derive(Clone, Debug)]
pub struct BootImage {
    /// Image format.
    pub format: ImageFormat,
    /// First instruction's CPU state.
    pub entry: Entry,
    /// One line for logs and `--stats`: "ELF, PVH entry at 0x100000".
    pub summary: String,
    /// A Linux kernel (a bzImage, or an ELF with a "Linux" note): it gets the PC machine
    /// Linux expects (interrupt controllers, timer, MP table).
    pub linux: bool,
    /// The kernel command line passed, if any.
    pub cmdline: Option<String>,
}

/// Tells an image format from the first bytes of the file: ELF magic, the Linux setup
/// header's "HdrS" at 0x202, otherwise raw.
pub fn detect_format(head: &[u8]) -> ImageFormat {
    if head.starts_with(b"\x7fELF") {
        ImageFormat::Elf
    } else if head.get(0x202..0x206) == Some(b"HdrS") {
        ImageFormat::BzImage
    } else {
        ImageFormat::Raw
    }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// An image file, opened and looked at, not loaded yet.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    file: File,
    len: u64,
    /// Its format.
    pub format: ImageFormat,
    /// A Linux kernel: a bzImage, or an ELF with a "Linux" note.
    pub linux: bool,
    elf: Option<elf::Headers>,
}

/// Opens the image `config` names, tells its format and checks the options that only apply
/// to some formats. Nothing is written anywhere yet: the caller sizes guest memory by what
/// the image is (see [`crate::config::VmConfig::mem_size_for`]).
pub fn open(config: &VmConfig) -> Result<Image, Error> {
    let path = config.image.as_path();
    let mut file = File::open(path).map_err(read_err(path))?;
    let len = file.metadata().map_err(read_err(path))?.len();
    if len == 0 {
        return Err(Error::Empty(path.to_path_buf()));
    }
    let format = match config.format {
        Some(f) => f,
        None => {
            let mut head = Vec::with_capacity(0x206);
            (&mut file)
                .take(0x206)
                .read_to_end(&mut head)
                .map_err(read_err(path))?;
            detect_format(&head)
        }
    };
    let (kernel_only, raw_only) = (
        [
            ("--cmdline", config.cmdline.is_some()),
            ("--initrd", config.initrd.is_some()),
            ("init arguments after --", !config.init_args.is_empty()),
        ],
        [
            ("--mode", config.mode.is_some()),
            ("--load-addr", config.load_addr.is_some()),
            ("--entry", config.entry.is_some()),
        ],
    );
    let misplaced =
        |options: &[(&'static str, bool)]| options.iter().find(|(_, set)| *set).map(|(o, _)| *o);
    if format == ImageFormat::Raw {
        if let Some(option) = misplaced(&kernel_only) {
            return Err(Error::KernelOnlyOption {
                option,
                path: path.to_path_buf(),
            });
        }
    } else if let Some(option) = misplaced(&raw_only) {
        return Err(Error::RawOnlyOption {
            option,
            path: path.to_path_buf(),
            format,
        });
    }
    let (linux, elf) = match format {
        ImageFormat::Raw => (false, None),
        ImageFormat::BzImage => (true, None),
        ImageFormat::Elf => {
            let headers = elf::read_headers(&mut file, path, len)?;
            (elf::has_linux_note(&mut file, &headers), Some(headers))
        }
    };
    Ok(Image {
        path: path.to_path_buf(),
        file,
        len,
        format,
        linux,
        elf,
    })
}

/// Loads an opened image into `mem`. `host_params` are the kernel parameters this host needs
/// on top (software-virtualized KVM), added for Linux kernels only.
pub fn load(
    config: &VmConfig,
    image: Image,
    mem: &GuestMem,
    host_params: &dyn Fn() -> Option<&'static str>,
) -> Result<BootImage, Error> {
    let Image {
        path,
        mut file,
        len,
        format,
        linux,
        elf,
    } = image;
    let initrd = config.initrd.as_deref();
    let (entry, summary, cmdline) = match (format, elf) {
        (ImageFormat::Raw, _) => {
            let mode = config.mode.unwrap_or_default();
            let entry = raw::load(mem, &mut file, len, mode, config.load_addr, config.entry)?;
            (entry, format!("raw image, {mode} mode"), None)
        }
        (ImageFormat::Elf, Some(headers)) => {
            elf::check_segments(&headers, &path, len, mem)?;
            let cmdline = kernel_cmdline(config, linux, host_params, linux::ELF_CMDLINE_CAPACITY)?;
            let args = linux::KernelArgs {
                cmdline: cmdline.as_ref(),
                initrd,
            };
            let (entry, summary) = elf::load(mem, &mut file, &path, &headers, &args)?;
            (entry, summary, cmdline)
        }
        (ImageFormat::BzImage, _) | (ImageFormat::Elf, None) => {
            let cmdline = kernel_cmdline(config, true, host_params, layout::CMDLINE_MAX_SIZE)?;
            let args = linux::KernelArgs {
                cmdline: cmdline.as_ref(),
                initrd,
            };
            let (entry, summary) = linux::load_bzimage(mem, &mut file, &path, len, &args)?;
            (entry, summary, cmdline)
        }
    };
    Ok(BootImage {
        format,
        entry,
        summary,
        linux,
        cmdline: cmdline_text(&cmdline),
    })
}

/// The command line for a kernel: for Linux, the user's or kvmini's default plus the host
/// parameters; for other kernels, only what the user gave.
fn kernel_cmdline(
    config: &VmConfig,
    linux: bool,
    host_params: &dyn Fn() -> Option<&'static str>,
    capacity: usize,
) -> Result<Option<linux_loader::cmdline::Cmdline>, Error> {
    if linux {
        let base = config.cmdline.as_deref().unwrap_or(linux::DEFAULT_CMDLINE);
        linux::build_cmdline(Some(base), host_params(), &config.init_args, capacity).map(Some)
    } else if config.cmdline.is_some() || !config.init_args.is_empty() {
        linux::build_cmdline(config.cmdline.as_deref(), None, &config.init_args, capacity).map(Some)
    } else {
        Ok(None)
    }
}

fn cmdline_text(cmdline: &Option<linux_loader::cmdline::Cmdline>) -> Option<String> {
    cmdline
        .as_ref()
        .and_then(|c| c.as_cstring().ok())
        .map(|c| c.to_string_lossy().into_owned())
}

/// Writes what the entry mode needs into guest memory (GDT, page tables) and returns the
/// registers to start the vCPU with. `sregs` is the vCPU's state after creation.
pub fn setup_entry(
    mem: &GuestMem,
    entry: &Entry,
    sregs: &mut kvm_sregs,
) -> Result<kvm_regs, Error> {
    let write_gdt = || {
        mem.write_obj(gdt::BOOT_GDT, GuestAddress(GDT_START))
            .map_err(|source| Error::Memory {
                what: "the GDT",
                source,
            })
    };
    match *entry {
        Entry::Real { segment, ip } => {
            regs::real_mode_sregs(sregs, segment);
            Ok(regs::entry_regs(
                u64::from(ip),
                REAL_MODE_STACK_POINTER,
                false,
            ))
        }
        Entry::Protected { eip, ebx } => {
            write_gdt()?;
            regs::protected_mode_sregs(sregs, GDT_START, gdt::BOOT_GDT.len());
            let mut r = regs::entry_regs(u64::from(eip), BOOT_STACK_POINTER, false);
            r.rbx = u64::from(ebx);
            Ok(r)
        }
        Entry::Long { rip, rsi } => {
            write_gdt()?;
            let cr3 = paging::write_identity_map(mem, false).map_err(|source| Error::Memory {
                what: "the page tables",
                source,
            })?;
            regs::long_mode_sregs(sregs, GDT_START, gdt::BOOT_GDT.len(), cr3, false);
            let mut r = regs::entry_regs(rip, BOOT_STACK_POINTER, false);
            r.rsi = rsi;
            Ok(r)
        }
    }
}

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// The guest's memory map as (address, size, E820 type): RAM below the EBDA, a hole up to
/// 1 MiB, then every RAM region. Shared by the PVH start info and Linux's `boot_params`.
pub fn memory_map(mem: &GuestMem) -> Vec<(u64, u64, u32)> {
    use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
    let mut map = Vec::new();
    for region in mem.iter() {
        let start = region.start_addr().raw_value();
        let end = start + region.len();
        if start == 0 {
            map.push((0, end.min(layout::EBDA_START), E820_RAM));
            if end > layout::HIGH_LOAD_ADDR {
                map.push((
                    layout::HIGH_LOAD_ADDR,
                    end - layout::HIGH_LOAD_ADDR,
                    E820_RAM,
                ));
            }
        } else {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_magic_bytes() {
        assert_eq!(detect_format(b"\x7fELF\x02\x01\x01"), ImageFormat::Elf);
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), ImageFormat::BzImage);
        assert_eq!(detect_format(b"\xfa\xb8\x00\x10"), ImageFormat::Raw);
        assert_eq!(detect_format(b""), ImageFormat::Raw);
    }

    #[test]
    fn long_mode_entry_writes_gdt_and_identity_map() {
        let mem = crate::memory::create(16 << 20).unwrap();
        let mut sregs = kvm_sregs::default();
        let r = setup_entry(
            &mem,
            &Entry::Long {
                rip: 0x10_0000,
                rsi: 0x7000,
            },
            &mut sregs,
        )
        .unwrap();
        assert_eq!(
            (r.rip, r.rsi, r.rsp),
            (0x10_0000, 0x7000, BOOT_STACK_POINTER)
        );
        let gdt: [u64; 6] = mem.read_obj(GuestAddress(GDT_START)).unwrap();
        assert_eq!(gdt, gdt::BOOT_GDT);
        let pml4: u64 = mem.read_obj(GuestAddress(sregs.cr3)).unwrap();
        assert_eq!(pml4 & 1, 1);
    }

    #[test]
    fn memory_map_has_the_pc_hole_and_the_mmio_gap() {
        let mem = crate::memory::create(16 << 20).unwrap();
        assert_eq!(
            memory_map(&mem),
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x10_0000, (16 << 20) - 0x10_0000, E820_RAM)
            ]
        );
        let mem = crate::memory::create(4 << 30).unwrap();
        let map = memory_map(&mem);
        assert_eq!(map.len(), 3);
        assert_eq!(map[1], (0x10_0000, (3 << 30) - 0x10_0000, E820_RAM));
        assert_eq!(map[2], (4 << 30, 1 << 30, E820_RAM));
    }

    #[test]
    fn real_mode_entry_touches_no_memory() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let mut sregs = kvm_sregs::default();
        let r = setup_entry(
            &mem,
            &Entry::Real {
                segment: 0x1000,
                ip: 0x10,
            },
            &mut sregs,
        )
        .unwrap();
        assert_eq!((r.rip, r.rsp), (0x10, REAL_MODE_STACK_POINTER));
        assert_eq!(sregs.cs.base, 0x10000);
        let gdt: u64 = mem.read_obj(GuestAddress(GDT_START + 8)).unwrap();
        assert_eq!(gdt, 0);
    }
}
