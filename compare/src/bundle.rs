//! The container side's files: root file systems built once from the same files the VM side
//! uses, and OCI bundles (a directory with `config.json`, OCI runtime specification
//! `bundle.md`) that point at them. Everything lives in a work directory and is reused while
//! its sources are unchanged (a stamp records their sizes and modification times).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{cpio, oci};

/// Bump when the layout of what is built here changes, so old work directories are rebuilt.
const LAYOUT_VERSION: u32 = 1;

/// Why the container side's files could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The work directory belongs to someone else.
    #[error("work directory {} is owned by uid {owner}, not by this user: remove it or pass --work-dir", .path.display())]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// The initramfs could not be unpacked.
    #[error("unpacking {}: {source}", .path.display())]
    Cpio {
        /// The archive.
        path: PathBuf,
        /// Why.
        source: cpio::Error,
    },
    /// busybox did not list its applets.
    #[error("{} --list failed: {why}", .path.display())]
    Busybox {
        /// The busybox binary.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}

/// The work directory: `dir` if given, else `$XDG_CACHE_HOME/kvmini-compare`, else
/// `/tmp/kvmini-compare-<uid>`.
pub fn default_work_dir(dir: Option<&Path>) -> PathBuf {
    if let Some(d) = dir {
        return d.to_path_buf();
    }
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(cache) => PathBuf::from(cache).join("kvmini-compare"),
        // SAFETY: getuid(2) cannot fail and touches no memory.
        None => std::env::temp_dir().join(format!("kvmini-compare-{}", unsafe { libc::getuid() })),
    }
}

/// The prepared work directory, locked (`flock`) while this value lives, so concurrent runs do
/// not rebuild under each other.
pub struct WorkDir {
    /// Its path (absolute).
    pub path: PathBuf,
    _lock: fs::File,
}

impl WorkDir {
    /// Creates (mode 0700) or opens `path` and locks it.
    pub fn open(path: &Path) -> Result<WorkDir, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_err("cannot create work directory", path))?;
        let path = fs::canonicalize(path).map_err(io_err("cannot resolve", path))?;
        let meta = fs::metadata(&path).map_err(io_err("cannot read", &path))?;
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(Error::NotOurs {
                path,
                owner: meta.uid(),
            });
        }
        let lock_path = path.join(".lock");
        let lock = fs::File::create(&lock_path).map_err(io_err("cannot create", &lock_path))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor this function owns; it touches no memory.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("cannot lock", &lock_path)(io::Error::last_os_error()));
        }
        Ok(WorkDir { path, _lock: lock })
    }

    /// A root file system called `name`, built by `build` into an empty directory unless one
    /// built from the same `sources` is already there.
    fn rootfs(
        &self,
        name: &str,
        sources: &[&Path],
        build: impl FnOnce(&Path) -> Result<(), Error>,
    ) -> Result<PathBuf, Error> {
        let dir = self.path.join("rootfs");
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let target = dir.join(name);
        let stamp_path = dir.join(format!("{name}.stamp"));
        let stamp = fingerprint(sources)?;
        if target.is_dir() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
            return Ok(target);
        }
        let tmp = dir.join(format!("{name}.tmp"));
        remove_all(&tmp)?;
        fs::create_dir(&tmp).map_err(io_err("cannot create", &tmp))?;
        build(&tmp)?;
        for d in ["dev", "proc", "sys", "tmp", "etc", "root"] {
            let p = tmp.join(d);
            if !p.exists() {
                fs::create_dir(&p).map_err(io_err("cannot create", &p))?;
            }
        }
        remove_all(&target)?;
        fs::rename(&tmp, &target).map_err(io_err("cannot rename to", &target))?;
        fs::write(&stamp_path, stamp).map_err(io_err("cannot write", &stamp_path))?;
        Ok(target)
    }

    /// `/bin/busybox` with a symlink per applet, and the `compute` program as
    /// `/bin/compute-native`.
    pub fn busybox_rootfs(&self, busybox: &Path, compute: &Path) -> Result<PathBuf, Error> {
        self.rootfs("busybox", &[busybox, compute], |root| {
            let bin = root.join("bin");
            fs::create_dir(&bin).map_err(io_err("cannot create", &bin))?;
            copy_file(busybox, &bin.join("busybox"))?;
            copy_file(compute, &bin.join("compute-native"))?;
            for applet in applets(busybox)? {
                let link = bin.join(&applet);
                if applet != "busybox" && !link.exists() {
                    symlink("busybox", &link).map_err(io_err("cannot create", &link))?;
                }
            }
            Ok(())
        })
    }

    /// The initramfs at `cpio`, unpacked.
    pub fn initramfs_rootfs(&self, archive: &Path) -> Result<PathBuf, Error> {
        self.rootfs("initramfs", &[archive], |root| {
            let data = fs::read(archive).map_err(io_err("cannot read", archive))?;
            cpio::unpack(&data, root).map_err(|source| Error::Cpio {
                path: archive.to_path_buf(),
                source,
            })?;
            Ok(())
        })
    }

    /// A bundle called `name` whose container runs `args` on `rootfs`; `config.json` is
    /// rewritten only when it changes.
    pub fn bundle(&self, name: &str, rootfs: &Path, args: &[String]) -> Result<PathBuf, Error> {
        self.bundle_of(name, &oci::config(rootfs, args))
    }

    /// A bundle called `name` with `config` as its `config.json`, rewritten only when it
    /// changes.
    pub fn bundle_of(&self, name: &str, config: &serde_json::Value) -> Result<PathBuf, Error> {
        let dir = self.path.join("bundles").join(name);
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(config)
            .map_err(|e| io_err("cannot encode", &path)(io::Error::other(e)))?;
        if fs::read_to_string(&path).ok().as_deref() != Some(&text) {
            let mut f = fs::File::create(&path).map_err(io_err("cannot write", &path))?;
            f.write_all(text.as_bytes())
                .map_err(io_err("cannot write", &path))?;
        }
        Ok(dir)
    }
}

fn remove_all(path: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", path)(e)),
        _ => Ok(()),
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), Error> {
    fs::copy(from, to).map_err(io_err("cannot copy to", to))?;
    Ok(())
}

/// What the rootfs was built from: each source's path, size and modification time.
fn fingerprint(sources: &[&Path]) -> Result<String, Error> {
    let mut s = format!("layout {LAYOUT_VERSION}\n");
    for path in sources {
        let m = fs::metadata(path).map_err(io_err("cannot read", path))?;
        s.push_str(&format!(
            "{} {} {}.{:09}\n",
            path.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    Ok(s)
}

/// busybox's applet names (`busybox --list`).
fn applets(busybox: &Path) -> Result<Vec<String>, Error> {
    let err = |why: String| Error::Busybox {
        path: busybox.to_path_buf(),
        why,
    };
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .map(String::from)
        .collect())
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked).
pub fn is_static_elf(path: &Path) -> io::Result<bool> {
    let data = fs::read(path)?;
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        data.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    // ELF64, little-endian (ELF specification, "ELF Header").
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Ok(false);
    };
    const PT_INTERP: u32 = 3;
    for i in 0..usize::from(phnum) {
        let at = phoff as usize + i * usize::from(phentsize);
        match data.get(at..at + 4) {
            Some(b) if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP => {
                return Ok(false)
            }
            Some(_) => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_is_not_static() {
        // /bin/sh is dynamically linked on every Debian system.
        assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
        let text = std::env::temp_dir().join(format!("kvmini-notelf-{}", std::process::id()));
        fs::write(&text, "#!/bin/sh\n").unwrap();
        assert!(!is_static_elf(&text).unwrap());
        fs::remove_file(text).unwrap();
    }

    #[test]
    fn work_dir_builds_once_and_rebuilds_when_sources_change() {
        let base = std::env::temp_dir().join(format!("kvmini-work-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        let file = base.join("source-file");
        fs::write(&file, b"one").unwrap();
        let work = WorkDir::open(&base.join("work")).unwrap();
        let mut builds = 0;
        let mut build = |root: &Path| {
            builds += 1;
            fs::write(root.join("marker"), b"x").unwrap();
            Ok(())
        };
        let a = work.rootfs("t", &[&file], &mut build).unwrap();
        let b = work.rootfs("t", &[&file], &mut build).unwrap();
        assert_eq!(a, b);
        assert!(a.join("marker").exists() && a.join("proc").is_dir());
        fs::write(&file, b"changed").unwrap();
        work.rootfs("t", &[&file], &mut build).unwrap();
        assert_eq!(builds, 2);
        let bundle = work.bundle("b", &a, &["/bin/true".into()]).unwrap();
        let config = fs::read_to_string(bundle.join("config.json")).unwrap();
        assert!(config.contains("/bin/true"));
        drop(work);
        fs::remove_dir_all(base).unwrap();
    }
}
