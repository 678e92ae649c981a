//! Guest memory in a snapshot: a sparse file with the RAM regions one after the other, in
//! which only the pages the guest touched and that hold something are written; the rest are
//! holes. A restore maps the file copy-on-write (`MAP_PRIVATE`): the guest's writes never
//! reach the file, and VMs restored from one snapshot share every page none of them wrote.

use std::fs::File;
use std::os::unix::fs::FileExt;

use vm_memory::mmap::MmapRegion;
use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress,
};

use super::state::MemoryLayout;
use super::Error;
use crate::memory::GuestMem;

const PAGE: u64 = 4096;

/// FNV-1a over 64-bit words: the data of a memory file are whole pages, and word steps keep
/// checking a Linux guest's 14 MiB at a few milliseconds.
#[derive(Clone, Copy, Debug)]
struct DataHash(u64);

impl DataHash {
    fn new() -> Self {
        DataHash(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for word in bytes.chunks_exact(8) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The pages of `len` bytes at `host` that are mapped (touched at least once).
fn resident_pages(host: *mut u8, len: u64) -> Result<Vec<bool>, Error> {
    let pages = len.div_ceil(PAGE) as usize;
    let mut vec = vec![0u8; pages];
    // SAFETY: `host` is the start of a mapping of `len` bytes that the caller's guest memory
    // owns and keeps alive; mincore only reads the page tables and fills `vec`, which has one
    // byte per page.
    let r = unsafe { libc::mincore(host.cast(), len as usize, vec.as_mut_ptr()) };
    if r != 0 {
        return Err(Error::MemoryFile(std::io::Error::last_os_error()));
    }
    Ok(vec.into_iter().map(|b| b & 1 != 0).collect())
}

/// Writes the touched, non-zero pages of `mem` to `file` at their place; returns the layout.
pub fn save(mem: &GuestMem, file: &mut File) -> Result<MemoryLayout, Error> {
    let mut layout = MemoryLayout::default();
    let mut offset = 0u64;
    let mut page = vec![0u8; PAGE as usize];
    let mut hash = DataHash::new();
    for region in mem.iter() {
        let (start, len) = (region.start_addr().raw_value(), region.len());
        layout.regions.push((start, len));
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|_| Error::Corrupt("guest memory region"))?;
        for (i, resident) in resident_pages(host, len)?.into_iter().enumerate() {
            if !resident {
                continue;
            }
            let at = i as u64 * PAGE;
            mem.read_slice(&mut page, GuestAddress(start + at))
                .map_err(|e| Error::MemoryFile(std::io::Error::other(e)))?;
            if page.iter().all(|b| *b == 0) {
                continue;
            }
            file.write_all_at(&page, offset + at)
                .map_err(Error::MemoryFile)?;
            hash.update(&page);
            match layout.resident.last_mut() {
                Some((o, l)) if *o + *l == offset + at => *l += PAGE,
                _ => layout.resident.push((offset + at, PAGE)),
            }
        }
        offset += len;
    }
    // The holes at the end count too: the file is as long as guest memory.
    file.set_len(offset).map_err(Error::MemoryFile)?;
    file.sync_all().map_err(Error::MemoryFile)?;
    layout.checksum = hash.0;
    Ok(layout)
}

/// Maps the memory file copy-on-write as guest memory, after checking its length, and reads
/// the ranges that hold data ahead.
pub fn map(file: File, layout: &MemoryLayout) -> Result<GuestMem, Error> {
    let len = file.metadata().map_err(Error::MemoryFile)?.len();
    if len != layout.file_len() {
        return Err(Error::MemoryFileLength {
            expected: layout.file_len(),
            found: len,
        });
    }
    if !layout.ranges_are_sound() {
        return Err(Error::Corrupt("the memory file's data ranges"));
    }
    prefetch(&file, &layout.resident);
    verify(&file, layout)?;
    let mut regions = Vec::with_capacity(layout.regions.len());
    let mut offset = 0u64;
    for &(start, size) in &layout.regions {
        let file = file.try_clone().map_err(Error::MemoryFile)?;
        let mapping = MmapRegion::build(
            Some(FileOffset::new(file, offset)),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_NORESERVE | libc::MAP_PRIVATE,
        )
        .map_err(|e| Error::MemoryFile(std::io::Error::other(e)))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(start))
            .ok_or(Error::Corrupt("memory regions"))?;
        regions.push(region);
        offset += size;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|_| Error::Corrupt("memory regions"))
}

/// Reads the data ranges and checks their checksum.
fn verify(file: &File, layout: &MemoryLayout) -> Result<(), Error> {
    let mut hash = DataHash::new();
    let mut buf = vec![0u8; 1 << 20];
    for &(offset, len) in &layout.resident {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset + done)
                .map_err(Error::MemoryFile)?;
            hash.update(&buf[..n]);
            done += n as u64;
        }
    }
    if hash.0 != layout.checksum {
        return Err(Error::Corrupt(
            "the memory file's data does not match its checksum",
        ));
    }
    Ok(())
}

/// Data ranges closer than this are read ahead as one: one system call instead of many, for
/// a few holes read as zeros.
const PREFETCH_GAP: u64 = 256 << 10;

/// The data ranges, with those closer than [`PREFETCH_GAP`] joined.
fn prefetch_spans(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &(offset, len) in ranges {
        match spans.last_mut() {
            Some((start, span)) if offset <= *start + *span + PREFETCH_GAP => {
                *span = offset + len - *start
            }
            _ => spans.push((offset, len)),
        }
    }
    spans
}

/// Asks the kernel to read the data ranges into the page cache now, in the background, so
/// that the guest's first touches do not each wait for a disk read.
fn prefetch(file: &File, ranges: &[(u64, u64)]) {
    use std::os::fd::AsRawFd;
    for (offset, len) in prefetch_spans(ranges) {
        // SAFETY: posix_fadvise only takes a file descriptor and numbers.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_ranges_are_read_ahead_together() {
        let ranges = [
            (0, 0x1000),
            (0x3000, 0x1000),
            (0x10_0000, 0x2000),
            (0x50_0000, 0x1000),
        ];
        assert_eq!(
            prefetch_spans(&ranges),
            [(0, 0x4000), (0x10_0000, 0x2000), (0x50_0000, 0x1000)]
        );
        assert!(prefetch_spans(&[]).is_empty());
    }

    #[test]
    fn only_touched_nonzero_pages_are_written_and_map_back() {
        let mem = crate::memory::create(4 << 20).unwrap();
        mem.write_obj(0x1234_5678u32, GuestAddress(0x2000)).unwrap();
        mem.write_obj(0x9abcu16, GuestAddress(0x3000)).unwrap();
        mem.write_obj(0u64, GuestAddress(0x10_0000)).unwrap(); // touched, but zero
        mem.write_obj(7u8, GuestAddress(0x3f_f000)).unwrap();
        let path = std::env::temp_dir().join(format!("kvmini-mem-{}", std::process::id()));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let layout = save(&mem, &mut file).unwrap();
        assert_eq!(layout.regions, [(0, 4 << 20)]);
        assert_eq!(layout.resident, [(0x2000, 0x2000), (0x3f_f000, 0x1000)]);
        assert_eq!(file.metadata().unwrap().len(), 4 << 20);

        let back = map(File::open(&path).unwrap(), &layout).unwrap();
        let word: u32 = back.read_obj(GuestAddress(0x2000)).unwrap();
        assert_eq!(word, 0x1234_5678);
        let byte: u8 = back.read_obj(GuestAddress(0x3f_f000)).unwrap();
        assert_eq!(byte, 7);
        // Copy-on-write: writing the restored memory leaves the file alone.
        back.write_obj(0u32, GuestAddress(0x2000)).unwrap();
        let again = map(File::open(&path).unwrap(), &layout).unwrap();
        let word: u32 = again.read_obj(GuestAddress(0x2000)).unwrap();
        assert_eq!(word, 0x1234_5678);

        // A changed byte in the data is found.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0x2001] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            map(File::open(&path).unwrap(), &layout),
            Err(Error::Corrupt(_))
        ));

        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            map(File::open(&path).unwrap(), &layout),
            Err(Error::MemoryFileLength { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }
}
