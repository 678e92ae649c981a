//! A container's state directory, `ROOT/ID/`: `state.json` (what `create` decided), the
//! exec FIFO that holds the process until `start` (runc's `exec.fifo`), the VM's argument
//! list for the holder, and the container's own disk images.
//!
//! The status is not stored: it is read from the holder process each time. Its PID is
//! checked with the start time in `/proc/PID/stat`, so a reused PID does not make a stopped
//! container look alive; a zombie holder is stopped too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Global, OCI_VERSION};

/// The FIFO in the state directory that `start` opens.
pub const EXEC_FIFO: &str = "exec.fifo";
/// The state file.
pub const STATE_FILE: &str = "state.json";
/// The VM's command line for the holder (a JSON list).
pub const VM_FILE: &str = "vm.json";

/// A container's status (runtime specification, runtime.md "State").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `create` has not finished.
    Creating,
    /// Created; the process waits for `start`.
    Created,
    /// Started; the process runs.
    Running,
    /// The holder has exited.
    Stopped,
}

impl Status {
    /// Its name in `state`'s JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Saved {
    /// The container ID.
    pub id: String,
    /// The bundle, absolute.
    pub bundle: PathBuf,
    /// The root file system, absolute.
    pub rootfs: PathBuf,
    /// The holder's PID (0 until it is started).
    pub pid: i32,
    /// The holder's start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
    /// When `create` ran, RFC 3339.
    pub created: String,
    /// `annotations` from config.json.
    pub annotations: BTreeMap<String, String>,
}

/// Reads a container's saved state.
pub fn load(g: &Global, id: &str) -> Result<Saved, Error> {
    let path = g.dir(id).join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    serde_json::from_str(&text)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e.into()))
}

/// Writes a container's state (through a temporary file, so readers never see half of it).
pub fn save(dir: &Path, s: &Saved) -> Result<(), Error> {
    let tmp = dir.join(".state.json.tmp");
    let text = serde_json::to_string(s).expect("state serializes");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, dir.join(STATE_FILE)))
        .map_err(|e| Error::io(format!("writing {}", dir.join(STATE_FILE).display()), e))
}

/// Field 22 (start time) and field 3 (state letter) of /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

/// The start time of a live process, for [`Saved::start_time`].
pub fn start_time(pid: i32) -> u64 {
    proc_stat(pid).map_or(0, |(t, _)| t)
}

/// Whether the holder of `s` is alive (not a zombie, not a reused PID).
pub fn alive(s: &Saved) -> bool {
    s.pid > 0 && matches!(proc_stat(s.pid), Some((t, state)) if t == s.start_time && state != 'Z')
}

/// The container's status now.
pub fn status(g: &Global, s: &Saved) -> Status {
    if s.pid == 0 {
        return Status::Creating;
    }
    if !alive(s) {
        return Status::Stopped;
    }
    if g.dir(&s.id).join(EXEC_FIFO).exists() {
        Status::Created
    } else {
        Status::Running
    }
}

/// `state`'s JSON (runtime.md), with runc's extra fields rootfs, created and owner.
pub fn to_json(g: &Global, s: &Saved) -> serde_json::Value {
    let status = status(g, s);
    let pid = if matches!(status, Status::Created | Status::Running) {
        s.pid
    } else {
        0
    };
    serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": s.id,
        "pid": pid,
        "status": status.as_str(),
        "bundle": s.bundle,
        "rootfs": s.rootfs,
        "created": s.created,
        "owner": "",
        "annotations": s.annotations,
    })
}

/// Checks that `id` can name a state directory (runc's rule: `^[\w+-\.]+$`).
pub fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
        && id.chars().any(|c| c != '.');
    if ok {
        Ok(())
    } else {
        Err(Error::BadId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_cannot_escape_the_root() {
        for good in ["a", "web-1", "x_y.z+1"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn this_process_is_alive_and_pid_reuse_is_not() {
        let pid = std::process::id() as i32;
        let mut s = Saved {
            id: "x".into(),
            bundle: "/".into(),
            rootfs: "/".into(),
            pid,
            start_time: start_time(pid),
            created: String::new(),
            annotations: BTreeMap::new(),
        };
        assert!(alive(&s));
        s.start_time += 1;
        assert!(!alive(&s));
    }
}
