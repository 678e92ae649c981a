//! Disk images for the VM: the container's root file system and the copies of its bind-mount
//! sources, each an ext4 image written by `mkfs.ext4 -d` (no root, loop device or mount
//! needed; the same way guest/linux/Makefile builds rootfs.ext4).
//!
//! Root images are cached under `ROOT/cache/` by a key over the tree's metadata: every
//! entry's path, type, mode, owner, size, modification time (to the nanosecond), device
//! number and link target. Reading every file's contents would cost as much as building the
//! image; any tool that changes a file updates its mtime or size (an edit that keeps both,
//! such as `touch -r`, goes unseen: delete `ROOT/cache` then). A read-only root uses the
//! cached image itself, read-only; a writable root gets its own sparse copy in the state
//! directory, removed by `delete`.
//!
//! Mount points the tree lacks are added to the image (`debugfs`), as runc creates them in
//! the root directory itself; so a read-only root can take mounts on paths it does not have.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Free space a writable root gets beyond its files (the image file is sparse: unused space
/// costs no disk).
pub const WRITABLE_SPARE: u64 = 64 << 20;
/// Changes when the image layout or mkfs options change, so old cache entries are not used.
const FORMAT: &str = "kvmini-oci-rootfs-1";

/// What a tree holds, for sizing its image.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    entries: u64,
    bytes: u64,
}

/// The cache key of the tree at `root` (32 hex digits) and its tally.
fn tree_key(root: &Path) -> Result<(String, Tally), Error> {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    let mut b = std::collections::hash_map::DefaultHasher::new();
    FORMAT.hash(&mut a);
    (FORMAT, 1u8).hash(&mut b);
    let mut tally = Tally::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let m = std::fs::symlink_metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let fields = (
            rel.as_os_str().as_encoded_bytes(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.rdev(),
        );
        fields.hash(&mut a);
        fields.hash(&mut b);
        tally.entries += 1;
        tally.bytes += m.size().div_ceil(4096) * 4096;
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            target.hash(&mut a);
            target.hash(&mut b);
        } else if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            stack.extend(names.into_iter().rev().map(|n| rel.join(n)));
        }
    }
    Ok((format!("{:016x}{:016x}", a.finish(), b.finish()), tally))
}

/// The image size for a tree: its blocks, an inode each, a quarter more for ext4's own
/// metadata, 8 MiB at least, in whole MiB.
fn image_size(t: Tally, spare: u64) -> u64 {
    let used = t.bytes + t.entries * 4096;
    ((used + used / 4 + spare).max(8 << 20)).div_ceil(1 << 20) << 20
}

/// The image size: `fixed` when given (an error when the tree needs more), else the
/// tree's own.
fn sized(what: &'static str, tally: Tally, spare: u64, fixed: Option<u64>) -> Result<u64, Error> {
    let need = image_size(tally, spare);
    match fixed {
        Some(have) if need > have => Err(Error::TooBig {
            what,
            need_mib: need >> 20,
            have_mib: have >> 20,
        }),
        Some(have) => Ok(have),
        None => Ok(need),
    }
}

/// Writes an ext4 image of `dir` at `image` (replaced if there), of `size` bytes (sparse).
fn mkfs(dir: &Path, image: &Path, tally: Tally, size: u64) -> Result<(), Error> {
    let file = std::fs::File::create(image)
        .map_err(|e| Error::io(format!("creating {}", image.display()), e))?;
    file.set_len(size)
        .map_err(|e| Error::io(format!("sizing {}", image.display()), e))?;
    drop(file);
    let inodes = tally.entries + tally.entries / 4 + 256;
    // No journal: the guest ends the VM by a port write without unmounting; oci-init syncs.
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-E",
            "root_owner=0:0",
            "-N",
        ])
        .arg(inodes.to_string())
        .arg("-d")
        .arg(dir)
        .arg(image))
}

/// Runs a host tool; its failure becomes [`Error::Tool`].
fn run(cmd: &mut Command) -> Result<(), Error> {
    let tool = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| Error::Tool {
        tool: tool.clone(),
        detail: format!("{e} (mkfs.ext4 is in Debian's e2fsprogs)"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Tool {
        tool,
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// A directory or, for a bind mount of a file, a regular file to add to the root image.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MountPoint {
    /// The absolute path in the container.
    pub path: String,
    /// A file rather than a directory.
    pub file: bool,
}

/// The mount points of `wanted` that `rootfs` lacks, with every missing parent directory
/// before its children.
fn missing(rootfs: &Path, wanted: &[MountPoint]) -> Vec<MountPoint> {
    let mut out: Vec<MountPoint> = Vec::new();
    for w in wanted {
        let parts: Vec<&str> = w.path.split('/').filter(|p| !p.is_empty()).collect();
        for i in 1..=parts.len() {
            let path = format!("/{}", parts[..i].join("/"));
            let file = w.file && i == parts.len();
            let there = std::fs::symlink_metadata(rootfs.join(&path[1..])).is_ok();
            if !there && !out.iter().any(|m| m.path == path) {
                out.push(MountPoint { path, file });
            }
        }
    }
    out
}

/// Adds `points` (parents first) to the image with debugfs.
fn add_mount_points(image: &Path, points: &[MountPoint]) -> Result<(), Error> {
    let empty = image.with_extension("empty");
    std::fs::write(&empty, b"")
        .map_err(|e| Error::io(format!("writing {}", empty.display()), e))?;
    let mut script = String::new();
    for m in points {
        if m.path.contains(['\n', '"']) {
            return Err(Error::BadConfig(format!(
                "mount point {:?}: no quotes or newlines",
                m.path
            )));
        }
        if m.file {
            script.push_str(&format!("write \"{}\" \"{}\"\n", empty.display(), m.path));
        } else {
            script.push_str(&format!("mkdir \"{}\"\n", m.path));
        }
    }
    let script_path = image.with_extension("debugfs");
    let result = std::fs::write(&script_path, script)
        .map_err(|e| Error::io(format!("writing {}", script_path.display()), e))
        .and_then(|()| {
            run(Command::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&script_path)
                .arg(image))
        });
    let _ = std::fs::remove_file(&script_path);
    let _ = std::fs::remove_file(&empty);
    result
}

/// The root disk for a container: the cached image of `rootfs` with the mount points it
/// lacks (built if missing) when `readonly`, else a copy of it at `private` with
/// [`WRITABLE_SPARE`] free. With `fixed`, the image has that size (the OCI snapshot's root
/// disk), or the call fails when the tree does not fit.
pub fn root_disk(
    rootfs: &Path,
    mount_points: &[MountPoint],
    cache: &Path,
    readonly: bool,
    fixed: Option<u64>,
    private: &Path,
) -> Result<PathBuf, Error> {
    let (key, tally) = tree_key(rootfs)?;
    let points = missing(rootfs, mount_points);
    let key = if points.is_empty() {
        key
    } else {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        points.hash(&mut h);
        format!("{key}-{:016x}", h.finish())
    };
    let kind = if readonly { "ro" } else { "rw" };
    let spare = if readonly { 0 } else { WRITABLE_SPARE };
    let size = sized("the root file system", tally, spare, fixed)?;
    let cached = cache.join(format!("rootfs-{key}-{kind}-{}M.ext4", size >> 20));
    if !cached.exists() {
        std::fs::create_dir_all(cache)
            .map_err(|e| Error::io(format!("creating {}", cache.display()), e))?;
        let tmp = cache.join(format!(".build-{}-{key}", std::process::id()));
        let built = mkfs(rootfs, &tmp, tally, size)
            .and_then(|()| match points.is_empty() {
                true => Ok(()),
                false => add_mount_points(&tmp, &points),
            })
            .and_then(|()| {
                std::fs::rename(&tmp, &cached)
                    .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))
            });
        if built.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        built?;
    }
    if readonly {
        return Ok(cached);
    }
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&cached)
        .arg(private))?;
    Ok(private.to_path_buf())
}

/// Copies each bind source to `stage/N` (`cp -a`: owners, modes and times kept) and builds
/// their image at `image` (of size `fixed` when given); the stage is removed afterwards.
pub fn bind_disk(
    sources: &[PathBuf],
    stage: &Path,
    image: &Path,
    fixed: Option<u64>,
) -> Result<(), Error> {
    std::fs::create_dir_all(stage)
        .map_err(|e| Error::io(format!("creating {}", stage.display()), e))?;
    let result = (|| {
        for (n, src) in sources.iter().enumerate() {
            run(Command::new("cp")
                .arg("-a")
                .arg(src)
                .arg(stage.join(n.to_string())))?;
        }
        let (_, tally) = tree_key(stage)?;
        mkfs(
            stage,
            image,
            tally,
            sized("the copy of the bind mounts", tally, 0, fixed)?,
        )
    })();
    let _ = std::fs::remove_dir_all(stage);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_mount_points_come_parents_first() {
        let dir = std::env::temp_dir().join(format!("kvmini-oci-points-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        let want = |path: &str, file| MountPoint {
            path: path.into(),
            file,
        };
        let got = missing(
            &dir,
            &[
                want("/proc", false),
                want("/mnt/a/f", true),
                want("/mnt/b", false),
            ],
        );
        assert_eq!(
            got,
            [
                want("/mnt", false),
                want("/mnt/a", false),
                want("/mnt/a/f", true),
                want("/mnt/b", false)
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_follows_metadata_and_images_hold_the_tree() {
        let dir = std::env::temp_dir().join(format!("kvmini-oci-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("t/etc")).unwrap();
        std::fs::write(dir.join("t/etc/hostname"), "a\n").unwrap();
        let (k1, tally) = tree_key(&dir.join("t")).unwrap();
        assert_eq!(tally.entries, 3);
        assert_eq!(tree_key(&dir.join("t")).unwrap().0, k1);
        std::fs::write(dir.join("t/etc/hostname"), "bb\n").unwrap();
        assert_ne!(tree_key(&dir.join("t")).unwrap().0, k1);
        assert_eq!(image_size(tally, 0), 8 << 20);
        assert_eq!(
            image_size(
                Tally {
                    entries: 1,
                    bytes: 100 << 20
                },
                0
            ),
            126 << 20
        );
    }
}
