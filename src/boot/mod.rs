//! How a guest gets in: tell what the image is ([`open`]), put it into guest memory and say
//! what CPU state its first instruction expects ([`load`]). One module per boot protocol or
//! structure:
//!
//! - [`raw`]: flat machine code in real, protected or long mode;
//! - [`elf`]: ELF64 kernels, through their PVH note ([`pvh`]) or at `e_entry` with a zero page;
//! - [`bzimage`]: Linux bzImages (the x86 boot protocol's setup header);
//! - [`multiboot`]: Multiboot 1 and 2 kernels (a.out kludge or ELF32/ELF64), their modules
//!   and boot information;
//! - [`zero_page`]: Linux's `boot_params`; [`pvh`]: `hvm_start_info`;
//! - [`cmdline`] and [`initrd`]: what kernels get besides themselves; [`memmap`]: the memory
//!   map every protocol hands over;
//! - [`entry`]: the registers, GDT and page tables of the first instruction.
//!
//! Every fixed guest address is in [`crate::arch::x86_64::layout`].

pub mod bzimage;
pub mod cmdline;
pub mod elf;
pub mod entry;
pub mod error;
pub mod initrd;
pub mod memmap;
pub mod multiboot;
pub mod pvh;
pub mod raw;
pub mod reader;
pub mod zero_page;

use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;

use crate::arch::x86_64::layout::CMDLINE_MAX_SIZE;
use crate::config::{ImageFormat, ModuleConfig};
use crate::memory::GuestMem;
pub use entry::{setup_entry, Entry};
pub use error::Error;
use reader::ImageReader;

/// What an image is, with the headers that told.
#[derive(Debug)]
pub enum ImageKind {
    /// Flat machine code.
    Raw,
    /// An ELF64 executable.
    Elf {
        /// Its checked file and program headers.
        headers: elf::Headers,
        /// It carries a "Linux" note (a `vmlinux`).
        linux: bool,
    },
    /// A Linux bzImage.
    BzImage(setup_header),
    /// A Multiboot kernel, with its checked header.
    Multiboot(multiboot::Header),
}

impl ImageKind {
    /// The format.
    pub fn format(&self) -> ImageFormat {
        match self {
            ImageKind::Raw => ImageFormat::Raw,
            ImageKind::Elf { .. } => ImageFormat::Elf,
            ImageKind::BzImage(_) => ImageFormat::BzImage,
            ImageKind::Multiboot(h) => match h.version {
                multiboot::Version::One => ImageFormat::Multiboot1,
                multiboot::Version::Two => ImageFormat::Multiboot2,
            },
        }
    }

    /// A Linux kernel: it gets the PC machine Linux expects (interrupt controllers, timer, MP
    /// table), kvmini's default command line and this host's workarounds.
    pub fn is_linux(&self) -> bool {
        match self {
            ImageKind::Raw | ImageKind::Multiboot(_) => false,
            ImageKind::Elf { linux, .. } => *linux,
            ImageKind::BzImage(_) => true,
        }
    }
}

/// An image file, opened and looked at, not loaded yet.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    file: ImageReader,
    len: u64,
    /// What it is.
    pub kind: ImageKind,
}

/// Tells an image format from the first bytes of the file: ELF magic, the Linux setup
/// header's "HdrS", otherwise raw.
pub fn detect_format(head: &[u8]) -> ImageFormat {
    let hdrs = bzimage::HDRS_OFFSET;
    if head.starts_with(b"\x7fELF") {
        ImageFormat::Elf
    } else if head.get(hdrs..hdrs + 4) == Some(b"HdrS") {
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

/// Opens the image at `path`, tells its format (unless `format` says) and reads and checks
/// its headers. Nothing is written anywhere yet: the caller sizes guest memory by what the
/// image is.
///
/// Detection: a bzImage, and an ELF64 kernel with a "Linux" or PVH note, boot as such; any
/// other file with a Multiboot header (or a magic whose checksum fails: an error) is a
/// Multiboot kernel; then other ELF files, then raw code.
pub fn open(path: &Path, format: Option<ImageFormat>) -> Result<Image, Error> {
    let file = reader::open(path)?;
    let len = file.metadata().map_err(read_err(path))?.len();
    let mut file = ImageReader::new(file, len);
    if len == 0 {
        return Err(Error::Empty(path.to_path_buf()));
    }
    let mut head = Vec::with_capacity(multiboot::header::HEAD_LEN.min(len as usize));
    (&mut file)
        .take(multiboot::header::HEAD_LEN as u64)
        .read_to_end(&mut head)
        .map_err(read_err(path))?;
    let bad_multiboot = |problem| Error::BadMultiboot {
        path: path.to_path_buf(),
        problem,
    };
    let multiboot = |want| match multiboot::header::find(&head, len, want) {
        Ok(found) => Ok(found.map(ImageKind::Multiboot)),
        Err(problem) => Err(bad_multiboot(problem)),
    };
    let kind = match format.unwrap_or_else(|| detect_format(&head)) {
        ImageFormat::Raw if format.is_some() => ImageKind::Raw,
        ImageFormat::Raw => multiboot(multiboot::Want::Any)?.unwrap_or(ImageKind::Raw),
        ImageFormat::BzImage => {
            ImageKind::BzImage(bzimage::read_setup_header(&mut file, path, len)?)
        }
        ImageFormat::Elf if format.is_some() => open_elf(&mut file, path, len)?.0,
        ImageFormat::Elf => match open_elf(&mut file, path, len) {
            Ok((kind, pvh)) if pvh || kind.is_linux() => kind,
            elf => match multiboot(multiboot::Want::Any)? {
                Some(kind) => kind,
                None => elf?.0,
            },
        },
        f @ (ImageFormat::Multiboot | ImageFormat::Multiboot1 | ImageFormat::Multiboot2) => {
            let want = multiboot::want(f);
            ImageKind::Multiboot(
                multiboot::required_header(&head, len, want).map_err(bad_multiboot)?,
            )
        }
    };
    Ok(Image {
        path: path.to_path_buf(),
        file,
        len,
        kind,
    })
}

/// An ELF64 kernel's headers and notes; and whether it has a PVH note.
fn open_elf(file: &mut ImageReader, path: &Path, len: u64) -> Result<(ImageKind, bool), Error> {
    let headers = elf::read_headers(file, path, len)?;
    let notes = elf::read_notes(file, path, &headers)?;
    let kind = ImageKind::Elf {
        headers,
        linux: notes.linux,
    };
    Ok((kind, notes.pvh))
}

/// What a boot needs besides the image.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootArgs<'a> {
    /// Where and how a raw image starts.
    pub raw: raw::RawArgs,
    /// What goes on a kernel's command line.
    pub cmdline: cmdline::CmdlineArgs<'a>,
    /// A kernel's initrd.
    pub initrd: Option<&'a Path>,
    /// A Multiboot kernel's modules, after the initrd.
    pub modules: &'a [ModuleConfig],
}

/// The kernel-side inputs of a load.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelArgs<'a> {
    /// The command line, complete.
    pub cmdline: Option<&'a Cmdline>,
    /// The initrd file.
    pub initrd: Option<&'a Path>,
}

/// What a loader put in guest memory.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The first instruction's CPU state.
    pub entry: Entry,
    /// One line for logs and `--stats`.
    pub summary: String,
}

/// What was loaded, and how to start it.
#[derive(Clone, Debug)]
pub struct BootImage {
    /// First instruction's CPU state.
    pub entry: Entry,
    /// One line for logs and `--stats`: "ELF, PVH entry at 0x100000".
    pub summary: String,
    /// A Linux kernel (see [`ImageKind::is_linux`]).
    pub linux: bool,
    /// The kernel command line passed, if any.
    pub cmdline: Option<String>,
}

/// Loads an opened image into `mem`.
pub fn load(image: Image, mem: &GuestMem, args: &BootArgs<'_>) -> Result<BootImage, Error> {
    let Image {
        path,
        mut file,
        len,
        kind,
    } = image;
    let linux = kind.is_linux();
    let kernel_args = |cmdline| KernelArgs {
        cmdline,
        initrd: args.initrd,
    };
    let (loaded, cmdline) = match kind {
        ImageKind::Raw => {
            let loaded = Loaded {
                entry: raw::load(mem, &mut file, &path, len, &args.raw)?,
                summary: format!("raw image, {} mode", args.raw.mode),
            };
            (loaded, None)
        }
        ImageKind::Elf { headers, .. } => {
            elf::check_segments(&headers, &path, len, mem)?;
            let cmdline = args.cmdline.build(linux, CMDLINE_MAX_SIZE)?;
            let kernel = kernel_args(cmdline.as_ref());
            (
                elf::load(mem, &mut file, &path, &headers, &kernel)?,
                cmdline,
            )
        }
        ImageKind::BzImage(header) => {
            let cmdline = args.cmdline.build(linux, CMDLINE_MAX_SIZE)?;
            let kernel = kernel_args(cmdline.as_ref());
            (
                bzimage::load(mem, &mut file, &path, header, &kernel)?,
                cmdline,
            )
        }
        ImageKind::Multiboot(header) => {
            let cmdline = args.cmdline.build(linux, CMDLINE_MAX_SIZE)?;
            let mb = multiboot::MultibootArgs {
                cmdline: cmdline.as_ref(),
                initrd: args.initrd,
                modules: args.modules,
            };
            (
                multiboot::load(mem, &mut file, &path, len, &header, &mb)?,
                cmdline,
            )
        }
    };
    Ok(BootImage {
        entry: loaded.entry,
        summary: loaded.summary,
        linux,
        cmdline: cmdline.as_ref().and_then(cmdline::text),
    })
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
}
