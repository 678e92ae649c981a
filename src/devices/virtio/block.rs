//! virtio-blk: a raw disk image as a block device (`/dev/vda`, ...).
//!
//! Reads and writes go to the image with `pread`/`pwrite` as they arrive, so a request the
//! guest sees completed is in the host's page cache and survives kvmini's end; a flush
//! (`VIRTIO_BLK_F_FLUSH`) reaches the disk with `fdatasync`. The device reports the image's
//! size in 512-byte sectors and answers `GET_ID` with its ID; requests past the end fail.
//!
//! Source of truth: VIRTIO 1.2, section 5.2 (block device).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

use super::state::DeviceState;
use super::{Chain, Context, DeviceError, SetupError, VirtioDevice};
use crate::config::DiskConfig;

/// Bytes per sector, whatever the image's own block size.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the request queue.
const QUEUE_SIZE: u16 = 256;
/// Segments a request may have: all the queue's descriptors but the header and the status.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bytes copied between the guest and the image at a time.
const CHUNK: usize = 64 << 10;
/// `struct virtio_blk_outhdr`: type, reserved, sector.
const HEADER_SIZE: usize = 16;

/// A virtio block device over an open image.
#[derive(Debug)]
pub struct Block {
    file: File,
    /// The image, as a snapshot's default for a restore.
    path: std::path::PathBuf,
    read_only: bool,
    /// Image size in bytes, rounded down to whole sectors.
    size: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config: [u8; 24],
}

/// Where an open image lives, to refuse the same file twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl Block {
    /// Opens the image `config` names: read-only when asked, or when kvmini may not write
    /// it ([`Block::read_only`] then says so).
    pub fn open(config: &DiskConfig) -> Result<Self, SetupError> {
        let fail = |reason: String| SetupError::new("--disk", config.path.display(), reason);
        let meta = std::fs::metadata(&config.path).map_err(|e| fail(e.to_string()))?;
        if !(meta.is_file() || meta.file_type().is_block_device()) {
            return Err(fail("not a regular file or a block device".into()));
        }
        let (mut file, read_only) = open_image(config).map_err(|e| fail(e.to_string()))?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| fail(e.to_string()))?;
        let size = size - size % SECTOR_SIZE;
        let mut id = [0; VIRTIO_BLK_ID_BYTES as usize];
        let name = config.id.clone().unwrap_or_else(|| {
            config
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        });
        let n = name.len().min(id.len());
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        let mut block_config = [0; 24];
        block_config[..8].copy_from_slice(&(size / SECTOR_SIZE).to_le_bytes());
        block_config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        Ok(Block {
            file,
            path: super::state::absolute(&config.path),
            read_only,
            size,
            id,
            config: block_config,
        })
    }

    /// Locks the image against other programs (`flock`): shared for a read-only disk,
    /// exclusive for a writable one, as QEMU locks its images.
    pub fn lock(&self, path: &std::path::Path) -> Result<(), SetupError> {
        let lock = if self.read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock on a descriptor this device owns.
        if unsafe { libc::flock(self.file.as_raw_fd(), lock | libc::LOCK_NB) } != 0 {
            return Err(SetupError::new(
                "--disk",
                path.display(),
                "in use: another program holds a lock on it (another VM?)".into(),
            ));
        }
        Ok(())
    }

    /// Whether the guest may only read.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The device and inode of the image.
    pub fn file_id(&self) -> Option<FileId> {
        let meta = self.file.metadata().ok()?;
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Answers one request; returns the bytes written into the chain (data and status).
    fn handle(&mut self, chain: Chain<'_>, mem: &crate::memory::GuestMem) -> u32 {
        let (Ok(mut reader), Ok(mut writer)) = (chain.clone().reader(mem), chain.writer(mem))
        else {
            // A descriptor outside guest memory: nothing can be read or answered.
            return 0;
        };
        let Some(status_at) = writer.available_bytes().checked_sub(1) else {
            // No writable byte for the status: the request is malformed and unanswerable.
            return 0;
        };
        let Ok(mut status_writer) = writer.split_at(status_at) else {
            return 0;
        };
        let status = match self.request(&mut reader, &mut writer) {
            Ok(()) => VIRTIO_BLK_S_OK,
            Err(status) => status,
        };
        let written = writer.bytes_written() as u32;
        match status_writer.write_all(&[status as u8]) {
            Ok(()) => written + 1,
            Err(_) => written,
        }
    }

    fn request(
        &mut self,
        reader: &mut super::Reader<'_>,
        writer: &mut super::Writer<'_>,
    ) -> Result<(), u32> {
        let mut header = [0u8; HEADER_SIZE];
        reader
            .read_exact(&mut header)
            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
        let kind = u32::from_le_bytes(header[..4].try_into().unwrap());
        let sector = u64::from_le_bytes(header[8..].try_into().unwrap());
        match kind {
            // Data in the wrong direction (a device-writable buffer in a write, a readable
            // one in a read) makes the request malformed.
            VIRTIO_BLK_T_IN if reader.available_bytes() > 0 => Err(VIRTIO_BLK_S_IOERR),
            VIRTIO_BLK_T_OUT if writer.available_bytes() > 0 => Err(VIRTIO_BLK_S_IOERR),
            VIRTIO_BLK_T_IN => {
                let len = writer.available_bytes() as u64;
                let offset = self.range(sector, len)?;
                self.copy_to_guest(offset, writer)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                let len = reader.available_bytes() as u64;
                let offset = self.range(sector, len)?;
                self.copy_from_guest(offset, reader)
            }
            VIRTIO_BLK_T_FLUSH => self.file.sync_data().map_err(|_| VIRTIO_BLK_S_IOERR),
            VIRTIO_BLK_T_GET_ID => {
                let n = writer.available_bytes().min(self.id.len());
                writer
                    .write_all(&self.id[..n])
                    .map_err(|_| VIRTIO_BLK_S_IOERR)
            }
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    /// The byte offset of `len` bytes at `sector`, if they lie inside the image.
    fn range(&self, sector: u64, len: u64) -> Result<u64, u32> {
        let offset = sector.checked_mul(SECTOR_SIZE).ok_or(VIRTIO_BLK_S_IOERR)?;
        match offset.checked_add(len) {
            Some(end) if end <= self.size && len % SECTOR_SIZE == 0 => Ok(offset),
            _ => Err(VIRTIO_BLK_S_IOERR),
        }
    }

    fn copy_to_guest(&self, mut offset: u64, writer: &mut super::Writer<'_>) -> Result<(), u32> {
        let mut buf = vec![0; CHUNK.min(writer.available_bytes())];
        while writer.available_bytes() > 0 {
            let n = buf.len().min(writer.available_bytes());
            self.file
                .read_exact_at(&mut buf[..n], offset)
                .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            writer
                .write_all(&buf[..n])
                .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            offset += n as u64;
        }
        Ok(())
    }

    fn copy_from_guest(&self, mut offset: u64, reader: &mut super::Reader<'_>) -> Result<(), u32> {
        let mut buf = vec![0; CHUNK.min(reader.available_bytes())];
        while reader.available_bytes() > 0 {
            let n = buf.len().min(reader.available_bytes());
            reader
                .read_exact(&mut buf[..n])
                .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            self.file
                .write_all_at(&buf[..n], offset)
                .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            offset += n as u64;
        }
        Ok(())
    }
}

/// Opens the image as asked; read-write falls back to read-only when the file or its file
/// system may not be written.
fn open_image(config: &DiskConfig) -> std::io::Result<(File, bool)> {
    if config.read_only {
        return Ok((File::open(&config.path)?, true));
    }
    match OpenOptions::new().read(true).write(true).open(&config.path) {
        Ok(file) => Ok((file, false)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) =>
        {
            Ok((File::open(&config.path)?, true))
        }
        Err(e) => Err(e),
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn name(&self) -> &'static str {
        "virtio-blk"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut features = (1 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_SEG_MAX);
        if self.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::mmio::read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, queue: usize, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        let mem = ctx.mem;
        ctx.process_chains(queue, |chain| self.handle(chain, mem))?;
        Ok(())
    }

    fn save(&self) -> DeviceState {
        DeviceState::Block {
            path: self.path.clone(),
            capacity: self.size,
            read_only: self.read_only,
            id: self.id,
        }
    }

    fn restore(&mut self, saved: &DeviceState) -> Result<(), String> {
        let DeviceState::Block {
            capacity,
            read_only,
            id,
            ..
        } = saved
        else {
            return Err(super::other_kind(self.name(), saved));
        };
        if self.size != *capacity {
            return Err(format!(
                "the image {} holds {}, and the snapshot's disk held {}: the guest knows its \
                 disk's size; give an image of exactly that size",
                self.path.display(),
                sectors(self.size),
                sectors(*capacity)
            ));
        }
        match (self.read_only, *read_only) {
            (true, false) => {
                return Err(format!(
                    "the image {} is read-only here (ro, or kvmini may not write it), and the \
                     snapshot's disk was writable",
                    self.path.display()
                ))
            }
            (false, true) => {
                return Err(format!(
                    "the snapshot's disk was read-only: give {} with ro",
                    self.path.display()
                ))
            }
            _ => {}
        }
        // The guest may have read the ID already: it stays the saved one.
        self.id = *id;
        Ok(())
    }
}

/// `8 MiB (16384 sectors)`.
fn sectors(bytes: u64) -> String {
    format!(
        "{} ({} sectors)",
        crate::config::human_size(bytes),
        bytes / SECTOR_SIZE
    )
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
