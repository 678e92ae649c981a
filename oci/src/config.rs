//! A bundle's `config.json` (OCI runtime specification `config.md`, `config-linux.md`)
//! turned into a [`Plan`]: what the VM and the guest's `oci-init` do.
//!
//! Every field falls in one of three kinds, listed in docs/oci.md's table: honoured; accepted
//! because the VM boundary already gives what it asks (a namespace, a seccomp filter or a
//! capability set protects the host kernel, which the guest process never reaches); or
//! refused with [`Error::Unsupported`]. A field kvmini does not know is refused too, so
//! nothing that would change behaviour is dropped silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::Error;

mod mounts;

pub use mounts::Mount;

/// Guest memory when config.json sets no limit, and the least the guest gets (the Linux
/// guest's kernel and initramfs need it).
pub const MIN_MEM_MIB: u64 = 128;

/// What one container needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `process.args`.
    pub args: Vec<String>,
    /// `process.env`.
    pub env: Vec<String>,
    /// `process.cwd`.
    pub cwd: String,
    /// `process.user.uid`.
    pub uid: u32,
    /// `process.user.gid`.
    pub gid: u32,
    /// `process.user.additionalGids`.
    pub additional_gids: Vec<u32>,
    /// `process.user.umask`.
    pub umask: Option<u32>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `process.rlimits`: resource number, soft, hard.
    pub rlimits: Vec<(u32, u64, u64)>,
    /// `root.path`, made absolute against the bundle.
    pub root: PathBuf,
    /// `root.readonly`.
    pub readonly: bool,
    /// The guest's mounts below the container root, in order.
    pub mounts: Vec<Mount>,
    /// Host paths of bind mounts, copied into the bind image: the Nth is /oci-binds/N in
    /// the guest.
    pub bind_sources: Vec<PathBuf>,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub cpus: u8,
    /// `linux.sysctl`: set in the guest kernel.
    pub sysctls: BTreeMap<String, String>,
    /// `annotations`, for `state`.
    pub annotations: BTreeMap<String, String>,
    /// What was skipped because the VM boundary makes it moot, to log as warnings.
    pub notes: Vec<String>,
    /// `process.terminal`: the process runs on a pseudo-terminal in the guest.
    pub terminal: bool,
    /// `process.consoleSize`: the terminal's rows and columns.
    pub console_size: Option<(u16, u16)>,
}

/// Reads `bundle/config.json` into a plan.
pub fn load(bundle: &Path) -> Result<Plan, Error> {
    let path = bundle.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoConfig(bundle.to_path_buf()))
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::BadConfig(e.to_string()))?;
    plan(&value, bundle)
}

/// The plan for a parsed config.json whose relative paths are relative to `bundle`.
pub fn plan(config: &Value, bundle: &Path) -> Result<Plan, Error> {
    let top = object(config, "the document")?;
    allow(
        top,
        "",
        &[
            "ociVersion",
            "process",
            "root",
            "hostname",
            "domainname",
            "mounts",
            "hooks",
            "annotations",
            "linux",
        ],
    )?;
    check_version(top.get("ociVersion"))?;
    refuse_if_set(top, "", "hooks", "hooks run host programs around the container; run them yourself before create and after delete")?;
    refuse_if_set(
        top,
        "",
        "domainname",
        "the guest has no NIS domain name support",
    )?;
    let mut plan = Plan {
        mem_mib: MIN_MEM_MIB,
        cpus: 1,
        ..Plan::default()
    };
    process(&mut plan, top.get("process"))?;
    root(&mut plan, top.get("root"), bundle)?;
    plan.hostname = optional_string(top.get("hostname"), "hostname")?;
    if let Some(Value::Object(a)) = top.get("annotations") {
        for (k, v) in a {
            let v = v
                .as_str()
                .ok_or_else(|| bad("annotations values must be strings"))?;
            plan.annotations.insert(k.clone(), v.to_string());
        }
    }
    mounts::add(&mut plan, top.get("mounts"))?;
    linux(&mut plan, top.get("linux"))?;
    Ok(plan)
}

fn check_version(v: Option<&Value>) -> Result<(), Error> {
    let v = v
        .and_then(Value::as_str)
        .ok_or_else(|| bad("ociVersion is missing or not a string"))?;
    if v.split('.').next() != Some("1") {
        return Err(Error::Unsupported {
            field: "ociVersion".into(),
            why: format!("version {v:?}: kvmini implements the 1.x specification"),
        });
    }
    Ok(())
}

fn process(plan: &mut Plan, v: Option<&Value>) -> Result<(), Error> {
    let p = object(v.ok_or_else(|| bad("process is missing"))?, "process")?;
    allow(
        p,
        "process.",
        &[
            "terminal",
            "consoleSize",
            "user",
            "args",
            "env",
            "cwd",
            "capabilities",
            "rlimits",
            "apparmorProfile",
            "oomScoreAdj",
            "selinuxLabel",
            "noNewPrivileges",
        ],
    )?;
    plan.terminal = p.get("terminal").and_then(Value::as_bool).unwrap_or(false);
    if let Some(size) = p.get("consoleSize") {
        let size = object(size, "process.consoleSize")?;
        allow(size, "process.consoleSize.", &["height", "width"])?;
        let dim = |k: &str| {
            size.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| bad(&format!("process.consoleSize.{k} must be a number 0-65535")))
        };
        plan.console_size = Some((dim("height")?, dim("width")?));
    }
    plan.args = strings(p.get("args"), "process.args")?;
    if plan.args.is_empty() {
        return Err(bad("process.args must name a program"));
    }
    plan.env = strings(p.get("env"), "process.env")?;
    plan.cwd = optional_string(p.get("cwd"), "process.cwd")?.unwrap_or_else(|| "/".into());
    if !plan.cwd.starts_with('/') {
        return Err(bad("process.cwd must be an absolute path"));
    }
    if let Some(u) = p.get("user") {
        let u = object(u, "process.user")?;
        allow(
            u,
            "process.user.",
            &["uid", "gid", "umask", "additionalGids"],
        )?;
        plan.uid = number(u.get("uid"), "process.user.uid")?.unwrap_or(0);
        plan.gid = number(u.get("gid"), "process.user.gid")?.unwrap_or(0);
        plan.umask = number(u.get("umask"), "process.user.umask")?;
        if let Some(Value::Array(g)) = u.get("additionalGids") {
            for gid in g {
                let gid = number(Some(gid), "process.user.additionalGids")?;
                plan.additional_gids.extend(gid);
            }
        }
    }
    rlimits(plan, p.get("rlimits"))
}

const RLIMITS: [&str; 16] = [
    "CPU",
    "FSIZE",
    "DATA",
    "STACK",
    "CORE",
    "RSS",
    "NPROC",
    "NOFILE",
    "MEMLOCK",
    "AS",
    "LOCKS",
    "SIGPENDING",
    "MSGQUEUE",
    "NICE",
    "RTPRIO",
    "RTTIME",
];

fn rlimits(plan: &mut Plan, v: Option<&Value>) -> Result<(), Error> {
    let Some(Value::Array(list)) = v else {
        return Ok(());
    };
    for r in list {
        let r = object(r, "process.rlimits[]")?;
        let name = r.get("type").and_then(Value::as_str).unwrap_or("");
        let resource = RLIMITS
            .iter()
            .position(|n| name.strip_prefix("RLIMIT_") == Some(n))
            .ok_or_else(|| bad(&format!("process.rlimits: unknown type {name:?}")))?;
        let soft = r.get("soft").and_then(Value::as_u64);
        let hard = r.get("hard").and_then(Value::as_u64);
        let (Some(soft), Some(hard)) = (soft, hard) else {
            return Err(bad(&format!(
                "process.rlimits: {name} needs soft and hard numbers"
            )));
        };
        plan.rlimits.push((resource as u32, soft, hard));
    }
    Ok(())
}

fn root(plan: &mut Plan, v: Option<&Value>, bundle: &Path) -> Result<(), Error> {
    let r = object(v.ok_or_else(|| bad("root is missing"))?, "root")?;
    allow(r, "root.", &["path", "readonly"])?;
    let path =
        optional_string(r.get("path"), "root.path")?.ok_or_else(|| bad("root.path is missing"))?;
    let path = bundle.join(path);
    if !path.is_dir() {
        return Err(bad(&format!(
            "root.path {} is not a directory",
            path.display()
        )));
    }
    plan.root = path;
    plan.readonly = r.get("readonly").and_then(Value::as_bool).unwrap_or(false);
    Ok(())
}

/// Fields of `linux` the VM boundary satisfies, and why (docs/oci.md has the same list).
const BOUNDARY: [(&str, &str); 8] = [
    ("namespaces", "the VM is a namespace of every kind"),
    ("cgroupsPath", "the VM's memory and vCPUs are its limits"),
    (
        "seccomp",
        "the process calls the guest kernel, never the host's",
    ),
    (
        "maskedPaths",
        "the guest's /proc and /sys describe the VM only",
    ),
    (
        "readonlyPaths",
        "the guest's /proc and /sys describe the VM only",
    ),
    (
        "rootfsPropagation",
        "the guest's mounts never reach the host",
    ),
    ("mountLabel", "no SELinux in the guest"),
    ("resources", "checked field by field"),
];

fn linux(plan: &mut Plan, v: Option<&Value>) -> Result<(), Error> {
    let Some(v) = v else {
        return Ok(());
    };
    let l = object(v, "linux")?;
    let mut known: Vec<&str> = BOUNDARY.iter().map(|(k, _)| *k).collect();
    known.extend(["uidMappings", "gidMappings", "devices", "sysctl"]);
    allow(l, "linux.", &known)?;
    for f in ["uidMappings", "gidMappings"] {
        refuse_if_set(
            l,
            "linux.",
            f,
            "the guest runs the process with the IDs of process.user; no user namespace",
        )?;
    }
    refuse_if_set(
        l,
        "linux.",
        "devices",
        "the guest has only its own virtio devices; no host device nodes",
    )?;
    if let Some(Value::Object(s)) = l.get("sysctl") {
        for (k, v) in s {
            let v = v
                .as_str()
                .ok_or_else(|| bad("linux.sysctl values must be strings"))?;
            if k.is_empty() || k.contains("..") || k.starts_with(['.', '/']) {
                return Err(bad(&format!("linux.sysctl: bad key {k:?}")));
            }
            plan.sysctls.insert(k.clone(), v.to_string());
        }
    }
    if let Some(Value::Array(ns)) = l.get("namespaces") {
        if ns.iter().any(|n| n.get("path").is_some()) {
            return Err(Error::Unsupported {
                field: "linux.namespaces[].path".into(),
                why: "a VM cannot join another container's namespaces".into(),
            });
        }
    }
    if let Some(r) = l.get("resources") {
        resources(plan, object(r, "linux.resources")?)?;
    }
    Ok(())
}

fn resources(plan: &mut Plan, r: &Map<String, Value>) -> Result<(), Error> {
    allow(
        r,
        "linux.resources.",
        &[
            "devices",
            "memory",
            "cpu",
            "pids",
            "blockIO",
            "hugepageLimits",
            "network",
            "rdma",
            "unified",
        ],
    )?;
    for f in ["blockIO", "hugepageLimits", "network", "rdma", "unified"] {
        refuse_if_set(
            r,
            "linux.resources.",
            f,
            "kvmini sets only memory and vCPUs",
        )?;
    }
    if let Some(Value::Object(m)) = r.get("memory") {
        if let Some(limit) = m.get("limit").and_then(Value::as_i64).filter(|l| *l > 0) {
            plan.mem_mib = (limit as u64).div_ceil(1 << 20).max(MIN_MEM_MIB);
        }
    }
    if let Some(Value::Object(c)) = r.get("cpu") {
        for f in [
            "shares",
            "realtimeRuntime",
            "realtimePeriod",
            "mems",
            "idle",
            "burst",
        ] {
            refuse_if_set(
                c,
                "linux.resources.cpu.",
                f,
                "kvmini sets the vCPU count only (quota/period or cpus)",
            )?;
        }
        plan.cpus = cpu_count(c)?;
    }
    Ok(())
}

fn cpu_count(c: &Map<String, Value>) -> Result<u8, Error> {
    let quota = c.get("quota").and_then(Value::as_i64).unwrap_or(0);
    let period = c.get("period").and_then(Value::as_u64).unwrap_or(100_000);
    let n = if quota > 0 && period > 0 {
        (quota as u64).div_ceil(period)
    } else if let Some(list) = c
        .get("cpus")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        cpu_list_len(list)
            .ok_or_else(|| bad(&format!("linux.resources.cpu.cpus: bad list {list:?}")))?
    } else {
        1
    };
    Ok(n.clamp(1, u64::from(kvmini::config::MAX_CPUS)) as u8)
}

/// How many CPUs a list such as "0-3,6" names.
fn cpu_list_len(list: &str) -> Option<u64> {
    list.split(',').try_fold(0u64, |n, part| {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        (b >= a).then(|| n + b - a + 1)
    })
}

fn bad(msg: &str) -> Error {
    Error::BadConfig(msg.to_string())
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, Error> {
    v.as_object()
        .ok_or_else(|| bad(&format!("{what} must be an object")))
}

/// Refuses keys outside `known`: kvmini cannot say a field it does not know is harmless.
fn allow(obj: &Map<String, Value>, prefix: &str, known: &[&str]) -> Result<(), Error> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(Error::Unsupported {
            field: format!("{prefix}{k}"),
            why: "kvmini does not know this field (docs/oci.md lists those it does); remove it"
                .into(),
        }),
        None => Ok(()),
    }
}

/// Refuses `key` unless it is absent, null, false, zero or empty.
fn refuse_if_set(
    obj: &Map<String, Value>,
    prefix: &str,
    key: &str,
    why: &str,
) -> Result<(), Error> {
    let set = match obj.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Bool(true)) => true,
    };
    if set {
        return Err(Error::Unsupported {
            field: format!("{prefix}{key}"),
            why: why.into(),
        });
    }
    Ok(())
}

fn optional_string(v: Option<&Value>, what: &str) -> Result<Option<String>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(&format!("{what} must be a string"))),
    }
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, Error> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(&format!("{what} must be a list of strings"))),
        Some(_) => Err(bad(&format!("{what} must be a list of strings"))),
    }
}

fn number(v: Option<&Value>, what: &str) -> Result<Option<u32>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(&format!("{what} must be a number 0-4294967295"))),
    }
}

#[cfg(test)]
mod tests;
