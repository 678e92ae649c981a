//! Multiboot modules: the initrd (first, its path as its string) and every `--module`, each a
//! regular file, copied whole into guest memory one after another above the kernel, each on
//! a page boundary (Multiboot 1 flag bit 0 and the Multiboot 2 module alignment tag ask for
//! that; kvmini always does it), all below the 32-bit MMIO hole.

use std::fs::File;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::layout::HIGH_LOAD_ADDR;
use crate::boot::error::Error;
use crate::boot::initrd::low_ram_end;
use crate::boot::reader::{self, ImageReader};
use crate::config::ModuleConfig;
use crate::memory::GuestMem;

/// Modules start on pages of this size.
pub const MODULE_ALIGN: u64 = 4096;

/// A module file, opened and measured.
#[derive(Debug)]
pub struct Opened {
    path: PathBuf,
    string: String,
    file: File,
    size: u64,
}

/// A module in guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Guest-physical address of its first byte.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its string.
    pub string: String,
}

/// Opens the initrd and the modules, in that order; each must be a regular file (a FIFO
/// or a device is refused, never waited on).
pub fn open(initrd: Option<&Path>, modules: &[ModuleConfig]) -> Result<Vec<Opened>, Error> {
    let initrd = initrd.map(|p| (p.to_path_buf(), p.to_string_lossy().into_owned()));
    let all = initrd
        .into_iter()
        .chain(modules.iter().map(|m| (m.path.clone(), m.string())));
    all.map(|(path, string)| {
        let file = reader::open(&path)?;
        let size = file
            .metadata()
            .map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(Opened {
            path,
            string,
            file,
            size,
        })
    })
    .collect()
}

/// Where modules of `sizes` bytes go: from `start` (page-aligned) up, each on the next page
/// boundary. The first one that would end past `limit` is an error: (its index, where it
/// would have started).
pub fn place(sizes: &[u64], start: u64, limit: u64) -> Result<Vec<u64>, (usize, u64)> {
    let mut next = Some(start.next_multiple_of(MODULE_ALIGN));
    let mut placed = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let at = next.ok_or((i, u64::MAX))?;
        match at.checked_add(size) {
            Some(end) if end <= limit => {
                placed.push(at);
                next = end.checked_next_multiple_of(MODULE_ALIGN);
            }
            _ => return Err((i, at)),
        }
    }
    Ok(placed)
}

/// Copies the modules into guest memory above the kernel, which ends at `kernel_end`.
pub fn load(mem: &GuestMem, modules: Vec<Opened>, kernel_end: u64) -> Result<Vec<Placed>, Error> {
    let start = kernel_end.max(HIGH_LOAD_ADDR);
    let limit = low_ram_end(mem).min(super::LIMIT_4G);
    let sizes: Vec<u64> = modules.iter().map(|m| m.size).collect();
    let addrs = place(&sizes, start, limit).map_err(|(i, at)| Error::ModuleDoesNotFit {
        path: modules[i].path.clone(),
        size: sizes[i],
        start: at,
        limit,
        mem: crate::memory::size(mem),
    })?;
    let mut placed = Vec::with_capacity(modules.len());
    for (m, start) in modules.into_iter().zip(addrs) {
        if m.size > 0 {
            let mut file = ImageReader::new(m.file, m.size);
            mem.read_exact_volatile_from(GuestAddress(start), &mut file, m.size as usize)
                .map_err(|source| Error::Memory {
                    what: "a module",
                    source,
                })?;
        }
        placed.push(Placed {
            start,
            size: m.size,
            string: m.string,
        });
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_go_one_after_another_on_page_boundaries() {
        assert_eq!(
            place(&[0x1800, 0, 10, 0x1000], 0x10_0123, 1 << 30),
            Ok(vec![0x10_1000, 0x10_3000, 0x10_3000, 0x10_4000])
        );
        assert_eq!(place(&[], 0x10_0000, 0x10_0000), Ok(vec![]));
        // The second does not end by the limit.
        assert_eq!(
            place(&[0x1000, 0x1001], 0x10_0000, 0x10_2000),
            Err((1, 0x10_1000))
        );
        assert_eq!(place(&[u64::MAX], 0x10_0000, u64::MAX), Err((0, 0x10_0000)));
    }

    #[test]
    fn module_files_must_be_regular_files() {
        let err = open(None, &[ModuleConfig::new("/dev/zero")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("/dev/zero is not a regular file: it is a character device"),
            "{err}"
        );
        let err = open(Some(Path::new("/nonexistent/initrd")), &[]).unwrap_err();
        assert!(
            err.to_string().contains("cannot read /nonexistent/initrd"),
            "{err}"
        );
    }

    #[test]
    fn modules_that_do_not_fit_name_the_file() {
        let mem = crate::memory::create(2 << 20).unwrap();
        let dir = std::env::temp_dir().join(format!("kvmini-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (small, big) = (dir.join("small"), dir.join("big"));
        std::fs::write(&small, b"hello").unwrap();
        std::fs::write(&big, vec![7u8; 0x8_0000]).unwrap();
        let opened = open(Some(&small), &[ModuleConfig::new(&big)]).unwrap();
        let placed = load(&mem, opened, 0x10_0000).unwrap();
        assert_eq!(placed[0].start, 0x10_0000);
        assert_eq!(placed[1].start, 0x10_1000);
        assert_eq!(placed[0].string, small.to_string_lossy());
        assert_eq!(
            mem.read_obj::<[u8; 5]>(GuestAddress(0x10_0000)).unwrap(),
            *b"hello"
        );
        let opened = open(None, &[ModuleConfig::new(&big)]).unwrap();
        let err = load(&mem, opened, 0x1c_0000).unwrap_err();
        assert!(matches!(
            err,
            Error::ModuleDoesNotFit {
                start: 0x1c_0000,
                limit: 0x20_0000,
                ..
            }
        ));
        assert!(err.to_string().contains("raise --mem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
