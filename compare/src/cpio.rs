//! Unpacking a "newc" cpio archive (the initramfs format, Linux
//! `Documentation/driver-api/early-userspace/buffer-format.rst`) into a directory, so the
//! Linux guest's initramfs can serve as a container's root file system.
//!
//! Directories, regular files, symbolic links and hard links are unpacked; device nodes,
//! FIFOs and sockets are skipped (the container runtime provides `/dev`). Owners are not
//! changed: the caller is root and the archive's files are root's.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const MAGIC: &[u8] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive is not newc or is cut short.
    #[error("not a newc cpio archive or truncated at byte {0}")]
    Format(usize),
    /// A member's name leaves the target directory.
    #[error("member name {0:?} is not a relative path inside the archive")]
    BadName(String),
    /// Writing the files failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// What was being written.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// What unpacking wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Directories, files and links created.
    pub entries: usize,
    /// Device nodes and other special files left out.
    pub skipped: usize,
}

fn hex_field(data: &[u8], at: usize, field: usize) -> Result<u32, Error> {
    let start = at + 6 + field * 8;
    let text = std::str::from_utf8(&data[start..start + 8]).map_err(|_| Error::Format(start))?;
    u32::from_str_radix(text, 16).map_err(|_| Error::Format(start))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Unpacks `archive` into `dest` (which must exist).
pub fn unpack(archive: &[u8], dest: &Path) -> Result<Unpacked, Error> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut done = Unpacked::default();
    // Hard links: the first path written for each inode, by inode number.
    let mut inodes: HashMap<u32, PathBuf> = HashMap::new();
    let mut at = 0;
    loop {
        if archive.len() < at + HEADER_LEN || &archive[at..at + 6] != MAGIC {
            return Err(Error::Format(at));
        }
        let ino = hex_field(archive, at, 0)?;
        let mode = hex_field(archive, at, 1)?;
        let nlink = hex_field(archive, at, 4)?;
        let size = hex_field(archive, at, 6)? as usize;
        let name_len = hex_field(archive, at, 11)? as usize;
        let name_at = at + HEADER_LEN;
        let data_at = align4(name_at + name_len);
        let end = align4(data_at + size);
        if name_len == 0 || archive.len() < data_at + size {
            return Err(Error::Format(at));
        }
        let name = String::from_utf8_lossy(&archive[name_at..name_at + name_len - 1]).into_owned();
        if name == TRAILER {
            return Ok(done);
        }
        let data = &archive[data_at..data_at + size];
        at = end.min(archive.len());

        let rel = Path::new(name.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(Error::BadName(name));
        }
        let path = dest.join(rel);
        if path == dest {
            continue; // "." itself
        }
        let perms = fs::Permissions::from_mode(mode & 0o7777);
        match mode & S_IFMT {
            S_IFDIR => {
                fs::create_dir_all(&path).map_err(io_err(&path))?;
                fs::set_permissions(&path, perms).map_err(io_err(&path))?;
            }
            S_IFREG => {
                // newc stores a hard-linked file's data with the last of its names.
                match inodes.get(&ino).filter(|_| nlink > 1) {
                    Some(first) => {
                        if size > 0 {
                            fs::write(first, data).map_err(io_err(first))?;
                        }
                        fs::hard_link(first, &path).map_err(io_err(&path))?;
                    }
                    None => {
                        fs::write(&path, data).map_err(io_err(&path))?;
                        fs::set_permissions(&path, perms).map_err(io_err(&path))?;
                        if nlink > 1 {
                            inodes.insert(ino, path.clone());
                        }
                    }
                }
            }
            S_IFLNK => {
                // Some writers (the kernel's gen_init_cpio) count a NUL after the target.
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                let target = String::from_utf8_lossy(&data[..end]).into_owned();
                symlink(target, &path).map_err(io_err(&path))?;
            }
            _ => {
                done.skipped += 1;
                continue;
            }
        }
        done.entries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
        let fields = [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, 0, 0];
        out.extend_from_slice(MAGIC);
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(format!("{:08x}{:08x}", name.len() + 1, 0).as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(align4(out.len()), 0);
        out.extend_from_slice(data);
        out.resize(align4(out.len()), 0);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kvmini-cpio-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn unpacks_dirs_files_links_and_skips_devices() {
        let mut a = Vec::new();
        member(&mut a, 1, S_IFDIR | 0o755, 2, "bin", b"");
        member(
            &mut a,
            2,
            S_IFREG | 0o755,
            1,
            "bin/busybox",
            b"#!/bin/true\n",
        );
        member(&mut a, 3, S_IFLNK | 0o777, 1, "bin/sh", b"busybox");
        member(&mut a, 6, S_IFLNK | 0o777, 1, "bin/ls", b"busybox\0");
        member(&mut a, 4, 0o020600, 1, "console", b"");
        member(&mut a, 5, S_IFREG | 0o644, 2, "a", b"");
        member(&mut a, 5, S_IFREG | 0o644, 2, "b", b"same");
        member(&mut a, 0, 0, 1, TRAILER, b"");
        let dir = scratch("ok");
        let done = unpack(&a, &dir).unwrap();
        assert_eq!(
            done,
            Unpacked {
                entries: 6,
                skipped: 1
            }
        );
        assert_eq!(fs::read(dir.join("bin/busybox")).unwrap(), b"#!/bin/true\n");
        let mode = fs::metadata(dir.join("bin/busybox"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dir.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(dir.join("bin/ls")).unwrap(),
            Path::new("busybox")
        );
        assert!(!dir.join("console").exists());
        assert_eq!(
            fs::read(dir.join("a")).unwrap(),
            b"same",
            "hard link gets the data"
        );
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"same");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_garbage_truncation_and_escapes() {
        let dir = scratch("bad");
        assert!(matches!(unpack(b"hello", &dir), Err(Error::Format(0))));
        let mut a = Vec::new();
        member(&mut a, 1, S_IFREG | 0o644, 1, "f", b"data");
        assert!(
            matches!(unpack(&a, &dir), Err(Error::Format(_))),
            "no trailer"
        );
        let mut a = Vec::new();
        member(&mut a, 1, S_IFREG | 0o644, 1, "../evil", b"x");
        member(&mut a, 0, 0, 1, TRAILER, b"");
        assert!(matches!(unpack(&a, &dir), Err(Error::BadName(_))));
        fs::remove_dir_all(dir).unwrap();
    }
}
