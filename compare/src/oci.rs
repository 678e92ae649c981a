//! The OCI bundle's `config.json`, written by kvmini itself rather than by `runc spec`, so any
//! runtime with runc's command line can run it. The content follows the OCI runtime
//! specification 1.0 (`config.md`, `config-linux.md`) and mirrors what `runc spec` generates:
//! a read-only root, the default namespaces (pid, network, ipc, uts, mount, cgroup), runc's
//! default mounts, three capabilities, masked and read-only `/proc` paths, and no devices
//! beyond the runtime's defaults.

use std::path::Path;

use serde_json::{json, Value};

/// OCI runtime specification version the configuration follows.
pub const OCI_VERSION: &str = "1.0.2";
/// Host name inside the container (its own UTS namespace).
pub const HOSTNAME: &str = "kvmini-compare";

/// The `config.json` for a container that runs `args` (non-interactively, as root, with
/// `PATH` set) on the root file system at `rootfs` (an absolute path, kept read-only so
/// several containers can share it at once).
pub fn config(rootfs: &Path, args: &[String]) -> Value {
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "ambient": caps,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": rootfs, "readonly": true },
        "hostname": HOSTNAME,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" },
                { "type": "network" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
                { "type": "cgroup" },
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_rootfs_the_command_and_a_pid_namespace() {
        let c = config(
            Path::new("/x/rootfs"),
            &["/bin/echo".into(), "hello".into()],
        );
        assert_eq!(c["ociVersion"], OCI_VERSION);
        assert_eq!(c["root"]["path"], "/x/rootfs");
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(c["process"]["args"], json!(["/bin/echo", "hello"]));
        assert_eq!(c["process"]["terminal"], false);
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for wanted in ["pid", "mount", "network", "uts", "ipc"] {
            assert!(ns.contains(&wanted), "{wanted} namespace");
        }
        assert!(c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/proc" && m["type"] == "proc"));
    }
}
