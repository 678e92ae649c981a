//! `mounts`: kernel file systems the guest mounts itself (proc, sysfs, tmpfs, devpts), bind
//! mounts of host paths (copied into the bind image at create), and the device nodes and
//! links runc gives every container's /dev tmpfs (made there by the guest's mknod(2) and
//! symlink(2), as runc makes them).

use std::path::PathBuf;

use serde_json::Value;

use super::{bad, object, optional_string, strings, Plan};
use crate::Error;

/// One mount in the guest, below the container's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// A file system type (proc, sysfs, tmpfs, devpts), or "bind" (a directory) or "file"
    /// (a regular file) for a bind mount; or no mount at all: "device" (a character device
    /// node) or "link" (a symbolic link).
    pub kind: String,
    /// The source: the file system's name, a path in the guest for a bind mount, "MAJOR:MINOR"
    /// for a device, the target of a link.
    pub source: String,
    /// The absolute path inside the container.
    pub destination: String,
    /// mount(2) flags (MS_RDONLY, MS_NOSUID, ...).
    pub flags: u64,
    /// The file system's own options, comma-separated.
    pub data: String,
}

/// The device nodes runc creates in a container's /dev tmpfs (name, major, minor; mode 0666).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The links runc makes there (/dev/core only where /proc/kcore exists: not in the guest).
const LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// The mount(2) flag of each option that has one (mount(8)'s names).
const FLAGS: [(&str, u64); 12] = [
    ("ro", 1),
    ("nosuid", 2),
    ("nodev", 4),
    ("noexec", 8),
    ("sync", 16),
    ("dirsync", 128),
    ("noatime", 1024),
    ("nodiratime", 2048),
    ("relatime", 1 << 21),
    ("strictatime", 1 << 24),
    ("rw", 0),
    ("suid", 0),
];

/// Options that only say how mounts propagate between namespaces: moot in a VM.
const PROPAGATION: [&str; 10] = [
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "dev",
    "exec",
];

pub(super) fn add(plan: &mut Plan, v: Option<&Value>) -> Result<(), Error> {
    let Some(Value::Array(list)) = v else {
        return Ok(());
    };
    let (mut dev_tmpfs, mut dev_pts) = (false, false);
    for m in list {
        let m = object(m, "mounts[]")?;
        super::allow(
            m,
            "mounts[].",
            &["destination", "type", "source", "options"],
        )?;
        let destination = optional_string(m.get("destination"), "mounts[].destination")?
            .filter(|d| d.starts_with('/'))
            .ok_or_else(|| bad("mounts[].destination must be an absolute path"))?;
        let kind = optional_string(m.get("type"), "mounts[].type")?.unwrap_or_default();
        let source = optional_string(m.get("source"), "mounts[].source")?.unwrap_or_default();
        let options = strings(m.get("options"), "mounts[].options")?;
        let is_bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        let (flags, data) = split_options(&options, is_bind);
        match kind.as_str() {
            _ if is_bind => bind(plan, &source, destination, flags)?,
            "proc" | "sysfs" | "tmpfs" | "devpts" => {
                dev_tmpfs |= kind == "tmpfs" && destination == "/dev";
                dev_pts |= kind == "devpts" && destination == "/dev/pts";
                plan.mounts.push(Mount {
                    kind,
                    source,
                    destination,
                    flags,
                    data,
                })
            }
            "mqueue" | "cgroup" | "cgroup2" => plan.notes.push(format!(
                "mount of {kind} on {destination} skipped: the guest kernel has no {kind} file system, and the VM is the process's whole machine"
            )),
            _ => {
                return Err(Error::Unsupported {
                    field: format!("mounts[{destination}].type"),
                    why: format!("file system type {kind:?}: kvmini mounts proc, sysfs, tmpfs, devpts and bind mounts"),
                })
            }
        }
    }
    if dev_tmpfs {
        add_dev_nodes(plan, dev_pts);
    }
    Ok(())
}

/// runc's nodes and links in a /dev tmpfs; /dev/ptmx a link to pts/ptmx when devpts is
/// mounted on /dev/pts.
fn add_dev_nodes(plan: &mut Plan, dev_pts: bool) {
    let node = |kind: &str, name: &str, source: String| Mount {
        kind: kind.into(),
        source,
        destination: format!("/dev/{name}"),
        flags: 0,
        data: String::new(),
    };
    for (name, major, minor) in DEVICES {
        plan.mounts
            .push(node("device", name, format!("{major}:{minor}")));
    }
    for (name, target) in LINKS {
        plan.mounts.push(node("link", name, target.into()));
    }
    if dev_pts {
        plan.mounts.push(node("link", "ptmx", "pts/ptmx".into()));
    }
}

/// A bind mount of a host path: copied into the bind image as /oci-binds/N.
fn bind(plan: &mut Plan, source: &str, destination: String, flags: u64) -> Result<(), Error> {
    let path = PathBuf::from(source);
    let meta = std::fs::metadata(&path).map_err(|e| {
        bad(&format!(
            "mounts[{destination}]: bind source {source:?}: {e}"
        ))
    })?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(Error::Unsupported {
            field: format!("mounts[{destination}].source"),
            why: format!("{source} is neither a directory nor a regular file; bind mounts are copied into the VM"),
        });
    }
    let n = plan.bind_sources.len();
    plan.bind_sources.push(path);
    plan.mounts.push(Mount {
        kind: if meta.is_dir() { "bind" } else { "file" }.into(),
        source: format!("/oci-binds/{n}"),
        destination,
        flags: flags & 1, // only "ro" applies to a bind mount's remount
        data: String::new(),
    });
    Ok(())
}

/// Splits options into mount flags and the file system's own data.
fn split_options(options: &[String], is_bind: bool) -> (u64, String) {
    let mut flags = 0;
    let mut data = Vec::new();
    for o in options {
        if let Some((_, f)) = FLAGS.iter().find(|(n, _)| n == o) {
            flags |= f;
        } else if PROPAGATION.contains(&o.as_str()) || (is_bind && (o == "bind" || o == "rbind")) {
        } else {
            data.push(o.as_str());
        }
    }
    (flags, data.join(","))
}
