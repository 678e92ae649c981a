//! Linux bzImages: the setup header checked against the x86 boot protocol, the protected-mode
//! kernel loaded at 1 MiB (by linux-loader), then command line, initrd and zero page; the vCPU
//! starts at the 64-bit entry point in long mode with RSI = the zero page.
//!
//! Source of truth: Linux's `Documentation/arch/x86/boot.rst` (protocol 2.12+ for the 64-bit
//! entry and `xloadflags`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{Address, ByteValued, GuestAddress};

use super::error::{CmdlineProblem, Error, Part, SetupHeaderProblem};
use super::reader::ImageReader;
use super::zero_page::{write_boot_params, BOOT_FLAG, HDRS_MAGIC};
use super::{cmdline, initrd, Entry, KernelArgs, Loaded};
use crate::arch::x86_64::layout::{HIGH_LOAD_ADDR, ZERO_PAGE_START};
use crate::memory::{contains_range, GuestMem};

/// File offset of the setup header.
pub const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// File offset of the setup header's "HdrS" magic, which tells a bzImage.
pub const HDRS_OFFSET: usize = 0x202;
/// `loadflags`: the protected-mode kernel is loaded at 1 MiB.
const LOADED_HIGH: u8 = 0x01;
/// `xloadflags`: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 0x01;
/// Oldest boot protocol kvmini speaks: 2.12 brought `xloadflags` and the 64-bit entry.
const MIN_PROTOCOL: u16 = 0x020c;
/// The 64-bit entry point is this far into the protected-mode kernel.
const STARTUP_64_OFFSET: u64 = 0x200;
/// Initrd limit when the kernel does not say (protocol < 2.03).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// Setup sectors when the header says 0 (very old kernels).
const DEFAULT_SETUP_SECTS: u64 = 4;
/// Bytes of a sector, the unit of `setup_sects`.
const SECTOR: u64 = 512;

/// Reads and checks a bzImage's setup header.
pub fn read_setup_header(
    file: &mut ImageReader,
    path: &Path,
    len: u64,
) -> Result<setup_header, Error> {
    let mut hdr = setup_header::default();
    let hdr_end = SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>() as u64;
    if len < hdr_end {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: Part::SetupHeader,
            needed: hdr_end,
            len,
        });
    }
    file.seek(SeekFrom::Start(SETUP_HEADER_OFFSET))
        .and_then(|_| file.read_exact(hdr.as_mut_slice()))
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
    check_setup_header(&hdr, len).map_err(|problem| Error::BadKernel {
        path: path.to_path_buf(),
        problem,
    })?;
    Ok(hdr)
}

/// The checks of the boot protocol, on a header read from a file of `len` bytes.
pub fn check_setup_header(hdr: &setup_header, len: u64) -> Result<(), SetupHeaderProblem> {
    let (magic, flag, version) = (hdr.header, hdr.boot_flag, hdr.version);
    if magic != HDRS_MAGIC {
        return Err(SetupHeaderProblem::NoMagic);
    }
    if flag != BOOT_FLAG {
        return Err(SetupHeaderProblem::BootFlag(flag));
    }
    if version < MIN_PROTOCOL {
        return Err(SetupHeaderProblem::OldProtocol(version));
    }
    if hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(SetupHeaderProblem::No64BitEntry);
    }
    if hdr.loadflags & LOADED_HIGH == 0 {
        return Err(SetupHeaderProblem::LoadedLow);
    }
    let setup_sects = match hdr.setup_sects {
        0 => DEFAULT_SETUP_SECTS,
        n => u64::from(n),
    };
    // The boot sector, then the setup sectors, then the kernel (`syssize` 16-byte paragraphs).
    let described = (setup_sects + 1) * SECTOR + u64::from(hdr.syssize) * 16;
    if described > len {
        return Err(SetupHeaderProblem::Truncated { described, len });
    }
    Ok(())
}

/// Loads a bzImage whose header was checked.
pub fn load(
    mem: &GuestMem,
    file: &mut ImageReader,
    path: &Path,
    hdr: setup_header,
    args: &KernelArgs<'_>,
) -> Result<Loaded, Error> {
    // The kernel decompresses itself to its preferred address and needs init_size bytes there.
    let pref = hdr.pref_address;
    let init_size = u64::from(hdr.init_size);
    if !contains_range(mem, pref, init_size) {
        return Err(Error::DoesNotFit {
            what: Part::DecompressedKernel,
            start: pref,
            size: init_size,
            mem: crate::memory::size(mem),
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
    let placed = match args.cmdline {
        Some(c) => {
            let (len, max) = (cmdline::len(c)?, u64::from(header.cmdline_size));
            if len as u64 > max {
                return Err(CmdlineProblem::TooLongForKernel { len, max }.into());
            }
            Some(cmdline::write_cmdline(mem, c)?)
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
        .map(|p| initrd::load_initrd(mem, p, kernel_end, initrd_max))
        .transpose()?;
    write_boot_params(mem, Some(header), placed, initrd)?;
    let rip = loaded.kernel_load.raw_value() + STARTUP_64_OFFSET;
    let version = header.version;
    Ok(Loaded {
        entry: Entry::Long {
            rip,
            rsi: ZERO_PAGE_START,
        },
        summary: format!(
            "bzImage (boot protocol {}.{:02}), 64-bit entry at {rip:#x}{}",
            version >> 8,
            version & 0xff,
            initrd::summary(initrd)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = check_setup_header(&h, len).unwrap_err();
        assert_eq!(err, SetupHeaderProblem::BootFlag(0x1234));
        assert!(err.to_string().contains("corrupt"));
        let mut h = header();
        h.version = 0x020a;
        assert!(check_setup_header(&h, len)
            .unwrap_err()
            .to_string()
            .contains("2.10 is too old"));
        let mut h = header();
        h.xloadflags = 0;
        assert!(check_setup_header(&h, len)
            .unwrap_err()
            .to_string()
            .contains("no 64-bit entry"));
        let mut h = header();
        h.loadflags = 0;
        assert_eq!(
            check_setup_header(&h, len),
            Err(SetupHeaderProblem::LoadedLow)
        );
        let err = check_setup_header(&header(), 5 * 512 + 0xfff).unwrap_err();
        assert_eq!(
            err,
            SetupHeaderProblem::Truncated {
                described: 5 * 512 + 0x1000,
                len: 5 * 512 + 0xfff
            }
        );
        assert!(err.to_string().contains("truncated"));
    }
}
