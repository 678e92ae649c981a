//! How the loaders read an image or initrd file: [`ImageReader`].
//!
//! - Reads into guest memory are filled completely. vm-memory and linux-loader issue one
//!   `read` per guest-memory region and call a short count an error, but Linux returns at
//!   most 0x7ffff000 bytes from one `read(2)`, so an image of 2 GiB or more would never load.
//! - Small reads (headers, ELF notes, which linux-loader reads 12 bytes at a time) come from
//!   a buffer, so a file full of tiny notes costs a few system calls, not one per note.
//!
//! Source of truth: read(2), "NOTES" (the 0x7ffff000 limit).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};

use super::error::Error;
use crate::files::{self, OpenError};

/// Bytes of the file kept for small reads.
const BUFFER: usize = 64 << 10;

/// Opens an image or initrd: a regular file, never waited on (see [`crate::files`]).
pub fn open(path: &Path) -> Result<File, Error> {
    files::open_regular(path).map_err(|e| match e {
        OpenError::Io(source) => Error::Read {
            path: path.to_path_buf(),
            source,
        },
        OpenError::NotRegular(kind) => Error::NotRegular {
            path: path.to_path_buf(),
            kind,
        },
    })
}

/// A file read at a position of its own: buffered for small reads, unbuffered and complete
/// for reads into guest memory.
#[derive(Debug)]
pub struct ImageReader<F = File> {
    file: F,
    len: u64,
    pos: u64,
    /// A copy of the file's bytes from `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
}

/// What [`ImageReader`] needs of a file: positioned reads, and reads into guest memory at
/// the file's own offset.
pub trait Source: FileExt + ReadVolatile + Seek {}
impl<T: FileExt + ReadVolatile + Seek> Source for T {}

impl<F: Source> ImageReader<F> {
    /// A reader of the `len` bytes of `file`, at its start.
    pub fn new(file: F, len: u64) -> Self {
        ImageReader {
            file,
            len,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// Reads at `self.pos`, retrying interrupted calls.
    fn read_at(&self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read_at(out, self.pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl<F: Source> Read for ImageReader<F> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buffered = self
            .pos
            .checked_sub(self.buf_start)
            .filter(|&off| off < self.buf.len() as u64);
        let off = match buffered {
            Some(off) => off as usize,
            None if out.len() >= BUFFER => {
                let n = self.read_at(out)?;
                self.pos += n as u64;
                return Ok(n);
            }
            None => {
                let mut buf = std::mem::take(&mut self.buf);
                buf.resize(BUFFER, 0);
                let n = self.read_at(&mut buf)?;
                buf.truncate(n);
                self.buf = buf;
                self.buf_start = self.pos;
                0
            }
        };
        let n = out.len().min(self.buf.len() - off);
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<F: Source> Seek for ImageReader<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}

impl<F: Source> ReadVolatile for ImageReader<F> {
    /// Fills `buf` unless the file ends first: straight from the file into guest memory, one
    /// `read(2)` after another.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        self.file
            .seek(SeekFrom::Start(self.pos))
            .map_err(VolatileMemoryError::IOError)?;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_volatile(&mut buf.offset(done)?) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(VolatileMemoryError::IOError(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        self.pos += done as u64;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    /// A file whose every read returns at most 7 bytes, as a 2 GiB read returns 0x7ffff000.
    struct Stingy(io::Cursor<Vec<u8>>);

    impl FileExt for Stingy {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let data = self.0.get_ref();
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(7).min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        }
        fn write_at(&self, _: &[u8], _: u64) -> io::Result<usize> {
            unreachable!()
        }
    }

    impl ReadVolatile for Stingy {
        fn read_volatile<B: BitmapSlice>(
            &mut self,
            buf: &mut VolatileSlice<B>,
        ) -> Result<usize, VolatileMemoryError> {
            let n = buf.len().min(7);
            self.0.read_volatile(&mut buf.subslice(0, n)?)
        }
    }

    impl Seek for Stingy {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.0.seek(to)
        }
    }

    fn stingy(len: usize) -> (Vec<u8>, ImageReader<Stingy>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let reader = ImageReader::new(Stingy(io::Cursor::new(data.clone())), len as u64);
        (data, reader)
    }

    #[test]
    fn reads_into_guest_memory_are_complete_despite_short_reads() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let (data, mut r) = stingy(5000);
        r.seek(SeekFrom::Start(100)).unwrap();
        mem.read_exact_volatile_from(GuestAddress(0x1000), &mut r, 4900)
            .unwrap();
        let mut back = vec![0; 4900];
        mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert_eq!(back, data[100..]);
        // At the end of the file a read comes back short, and a read_exact fails.
        r.seek(SeekFrom::End(-10)).unwrap();
        assert!(mem
            .read_exact_volatile_from(GuestAddress(0), &mut r, 20)
            .is_err());
    }

    #[test]
    fn small_reads_and_seeks_see_the_file_as_it_is() {
        let (data, mut r) = stingy(200);
        let mut four = [0; 4];
        r.seek(SeekFrom::Start(12)).unwrap();
        r.read_exact(&mut four).unwrap();
        assert_eq!(four, data[12..16]);
        r.seek(SeekFrom::Current(-8)).unwrap();
        r.read_exact(&mut four).unwrap();
        assert_eq!(four, data[8..12]);
        r.seek(SeekFrom::End(-2)).unwrap();
        assert!(r.read_exact(&mut four).is_err());
        assert!(r.seek(SeekFrom::Current(-1000)).is_err());
        let mut all = Vec::new();
        r.seek(SeekFrom::Start(0)).unwrap();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
    }
}
