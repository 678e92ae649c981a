//! Everything the sides need, found and built once before anything is measured: the OCI
//! runtime, root and KVM, the guests, the host's static busybox, and the container side's
//! root file systems and bundles; and the process each run of a side starts.

use std::path::{Path, PathBuf};
use std::process::Command;

use kvmini::check;
use kvmini_measure::runner::{Marker, Spec};

use super::progress::Progress;
use super::sample::RunError;
use super::workload::{Side, Workload, LINUX_COMMAND, LINUX_SNAPSHOT, LINUX_VM_MEM, PROBE_SCRIPT};
use super::{bundle, Error, Options, DEFAULT_RUNTIME};

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The runtime's path: `given` if it names a file, else looked up on `PATH` (and in the sbin
/// directories, which a non-root `PATH` may lack).
pub fn find_runtime(given: Option<&Path>) -> Result<PathBuf, Error> {
    let name = given.unwrap_or(Path::new(DEFAULT_RUNTIME));
    let install = "install runc (apt-get install runc on Debian and Ubuntu) or name another \
                   OCI runtime with --runtime PATH";
    if name.components().count() > 1 || name.is_absolute() {
        return if is_executable(name) {
            Ok(name.to_path_buf())
        } else {
            Err(Error::NoRuntime(format!(
                "the OCI runtime {} does not exist or is not an executable file: {install}",
                name.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::NoRuntime(format!(
                "the OCI runtime `{}` is not on PATH: {install}",
                name.display()
            ))
        })
}

/// The first line `RUNTIME --version` prints, or why there is none.
pub(crate) fn runtime_version(runtime: &Path) -> String {
    match Command::new(runtime).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        Ok(out) => format!("unknown: --version exited with {}", out.status),
        Err(e) => format!("unknown: {e}"),
    }
}

/// Where the guests are: `given`, else `guest/build` in the current directory, else in the
/// source tree this binary was built in (`target/<profile>/kvmini`).
fn find_guests(given: Option<&Path>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_path_buf();
    }
    let here = PathBuf::from("guest/build");
    if here.is_dir() {
        return here;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .skip(1)
                .map(|dir| dir.join("guest/build"))
                .find(|d| d.is_dir())
        })
        .unwrap_or(here)
}

fn require(path: PathBuf, how: &str) -> Result<PathBuf, Error> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            path,
            how: how.into(),
        })
    }
}

/// The host's busybox, which must be the static one (it runs inside a root file system with
/// no libraries).
fn host_busybox() -> Result<PathBuf, Error> {
    let install = "install Debian's busybox-static (apt-get install busybox-static)";
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Busybox(format!("busybox is not installed: {install}")))?;
    match bundle::is_static_elf(&path) {
        Ok(true) => Ok(path),
        Ok(false) => Err(Error::Busybox(format!(
            "{} is not a statically linked program, so it cannot run alone in a container: {install}",
            path.display()
        ))),
        Err(e) => Err(Error::Busybox(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Everything the sides need, found and built once.
pub(crate) struct Setup {
    pub(crate) runtime: PathBuf,
    runtime_name: String,
    pub(crate) kvmini: PathBuf,
    guests: PathBuf,
    host_busybox: PathBuf,
    initramfs_rootfs: Option<PathBuf>,
    /// Why the Linux snapshot side does not run, when it does not.
    pub(crate) snapshot_missing: Option<String>,
    /// (workload, probe?) → bundle directory.
    bundles: Vec<((Workload, bool), PathBuf)>,
    next_id: std::cell::Cell<u64>,
}

impl Setup {
    pub(crate) fn container_args(&self, w: Workload, probe: bool) -> Vec<String> {
        let words: Vec<&str> = match (w, probe) {
            (Workload::Hello, false) => vec!["/bin/busybox", "echo", "hello"],
            (Workload::Compute, false) => vec!["/bin/compute-native"],
            (Workload::Linux, false) => LINUX_COMMAND.to_vec(),
            (Workload::Hello | Workload::Compute, true) => {
                vec!["/bin/busybox", "sh", "-c", PROBE_SCRIPT]
            }
            (Workload::Linux, true) => vec!["busybox", "sh", "-c", PROBE_SCRIPT],
        };
        words.into_iter().map(String::from).collect()
    }

    fn vm_args(&self, w: Workload, probe: bool) -> Vec<String> {
        let g = |name: &str| self.guests.join(name).display().to_string();
        let mut args = vec!["run".to_string()];
        match w {
            Workload::Hello => args.push(g("hello.elf")),
            Workload::Compute => args.extend([g("compute.bin"), "--mode".into(), "long".into()]),
            Workload::Linux => {
                args.extend([
                    g("vmlinux"),
                    "--initrd".into(),
                    g("initramfs.cpio"),
                    "--mem".into(),
                    LINUX_VM_MEM.into(),
                    "--".into(),
                ]);
                if probe {
                    args.extend(["busybox", "sh", "-c", PROBE_SCRIPT].map(String::from));
                } else {
                    args.extend(LINUX_COMMAND.map(String::from));
                }
            }
        }
        args
    }

    /// `kvmini restore` of the Linux snapshot, running the workload's command (or the probe).
    fn snapshot_args(&self, probe: bool) -> Vec<String> {
        let dir = self.guests.join(LINUX_SNAPSHOT).display().to_string();
        let mut args = vec!["restore".to_string(), dir, "--".into()];
        if probe {
            args.extend(["busybox", "sh", "-c", PROBE_SCRIPT].map(String::from));
        } else {
            args.extend(LINUX_COMMAND.map(String::from));
        }
        args
    }

    /// The sides of `w` that run here: `linux` without its snapshot has no snapshot side.
    pub(crate) fn sides(&self, w: Workload) -> Vec<Side> {
        w.sides()
            .iter()
            .copied()
            .filter(|s| *s != Side::Snapshot || self.snapshot_missing.is_none())
            .collect()
    }

    fn baseline(&self, w: Workload, probe: bool) -> (PathBuf, Vec<String>) {
        // The same busybox file the container runs.
        let busybox = match (w, &self.initramfs_rootfs) {
            (Workload::Linux, Some(root)) => root.join("bin/busybox"),
            _ => self.host_busybox.clone(),
        };
        if probe {
            return (
                busybox,
                ["sh", "-c", PROBE_SCRIPT].map(String::from).to_vec(),
            );
        }
        match w {
            Workload::Hello => (busybox, vec!["echo".into(), "hello".into()]),
            Workload::Compute => (self.guests.join("compute-native"), Vec::new()),
            Workload::Linux => (
                busybox,
                LINUX_COMMAND[1..].iter().map(|a| a.to_string()).collect(),
            ),
        }
    }

    pub(crate) fn label(&self, side: Side) -> String {
        match side {
            Side::Container => format!("container ({})", self.runtime_name),
            Side::Vm => "vm (kvmini)".into(),
            Side::Snapshot => "vm (from snapshot)".into(),
            Side::Baseline => "baseline (host process)".into(),
        }
    }

    /// The line that counts as the first output of a run (or probe) of `w` on `side`.
    pub(crate) fn marker(&self, w: Workload, side: Side, probe: bool) -> Marker {
        if probe {
            Marker::Any
        } else {
            w.marker(side)
        }
    }

    /// The process one run (or probe) of `w` on `side` starts.
    pub(crate) fn spec(&self, w: Workload, side: Side, probe: bool) -> Spec {
        let (program, args, cleanup) = match side {
            Side::Container => {
                let id = self.next_id.get();
                self.next_id.set(id + 1);
                let id = format!("kvmini-compare-{}-{id}", std::process::id());
                let bundle = self
                    .bundles
                    .iter()
                    .find(|(k, _)| *k == (w, probe))
                    .map(|(_, b)| b.display().to_string())
                    .unwrap_or_default();
                let rt = self.runtime.display().to_string();
                (
                    self.runtime.clone(),
                    vec!["run".into(), "--bundle".into(), bundle, id.clone()],
                    Some(vec![rt, "delete".into(), "--force".into(), id]),
                )
            }
            Side::Vm => (self.kvmini.clone(), self.vm_args(w, probe), None),
            Side::Snapshot => (self.kvmini.clone(), self.snapshot_args(probe), None),
            Side::Baseline => {
                let (program, args) = self.baseline(w, probe);
                (program, args, None)
            }
        };
        Spec {
            program,
            args,
            timeout: w.timeout(),
            cleanup,
        }
    }
}

pub(crate) fn failed(w: Workload, side: Side, setup: &Setup, source: RunError) -> Error {
    let hint = match side {
        Side::Container => format!(" (is {} a working OCI runtime?)", setup.runtime.display()),
        Side::Vm | Side::Snapshot | Side::Baseline => String::new(),
    };
    Error::SideFailed {
        workload: w.name(),
        side: side.name(),
        hint,
        source: Box::new(source),
    }
}

/// Checks that the guests `workloads` need are built; returns the workloads that cannot run
/// here, with why (linux without its kernel: skipped with a message, not an error).
fn check_guests(
    guests: &Path,
    workloads: &[Workload],
    progress: &mut Progress,
) -> Result<Vec<(Workload, String)>, Error> {
    let make_guests = "build the guests with `make guests` (make test does)";
    let mut skipped = Vec::new();
    for w in workloads {
        match w {
            Workload::Hello => {
                require(guests.join("hello.elf"), make_guests)?;
            }
            Workload::Compute => {
                require(guests.join("compute.bin"), make_guests)?;
                require(guests.join("compute-native"), make_guests)?;
            }
            Workload::Linux => {
                let missing: Vec<String> = ["vmlinux", "initramfs.cpio"]
                    .iter()
                    .map(|f| guests.join(f))
                    .filter(|p| !p.is_file())
                    .map(|p| p.display().to_string())
                    .collect();
                if !missing.is_empty() {
                    let why = format!(
                        "{} missing: build the Linux guest with `make linux`",
                        missing.join(" and ")
                    );
                    progress.message(&format!("kvmini compare: skipping linux: {why}"));
                    skipped.push((Workload::Linux, why));
                }
            }
        }
    }
    Ok(skipped)
}

/// Why the `linux` workload has no side from a snapshot here, if it has none.
fn snapshot_missing(guests: &Path) -> Option<String> {
    let dir = guests.join(LINUX_SNAPSHOT);
    (!dir.join("memory").is_file() || !dir.join("state").is_file()).then(|| {
        format!(
            "the vm (from snapshot) side is skipped: {} is missing; `make snapshot` saves it",
            dir.display()
        )
    })
}

/// Builds the root file systems and the bundles (a run's and a probe's) of every workload
/// that runs.
fn build_bundles(
    work: &bundle::WorkDir,
    setup: &mut Setup,
    workloads: &[Workload],
    skipped: &[(Workload, String)],
) -> Result<(), Error> {
    for &w in workloads {
        if skipped.iter().any(|(s, _)| *s == w) {
            continue;
        }
        let rootfs = match w {
            Workload::Linux => {
                let r = work.initramfs_rootfs(&setup.guests.join("initramfs.cpio"))?;
                setup.initramfs_rootfs = Some(r.clone());
                r
            }
            _ => work.busybox_rootfs(&setup.host_busybox, &setup.guests.join("compute-native"))?,
        };
        for probe in [false, true] {
            let name = format!("{}{}", w.name(), if probe { "-probe" } else { "" });
            let dir = work.bundle(&name, &rootfs, &setup.container_args(w, probe))?;
            setup.bundles.push(((w, probe), dir));
        }
    }
    Ok(())
}

/// What [`prepare`] found and built.
pub(crate) struct Prepared {
    pub(crate) setup: Setup,
    /// Workloads that cannot run here, with why.
    pub(crate) skipped: Vec<(Workload, String)>,
    /// Held for its lock while the comparison runs.
    pub(crate) work: bundle::WorkDir,
    pub(crate) check: check::Report,
}

/// Checks the options and the machine, and builds the container side's files.
pub(crate) fn prepare(
    opts: &Options,
    workloads: &[Workload],
    progress: &mut Progress,
) -> Result<Prepared, Error> {
    let runtime = find_runtime(opts.runtime.as_deref())?;
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    let check = check::run();
    if !check.usable {
        let why = check
            .device
            .error()
            .or(check.measurements.error())
            .unwrap_or("KVM is not usable here")
            .to_string();
        return Err(Error::NoKvm(why));
    }

    let guests = find_guests(opts.guest_dir.as_deref());
    let skipped = check_guests(&guests, workloads, progress)?;
    let need_busybox = workloads.iter().any(|w| *w != Workload::Linux);
    let host_busybox = if need_busybox {
        host_busybox()?
    } else {
        PathBuf::from("/bin/busybox")
    };
    let kvmini = std::env::current_exe().map_err(|e| Error::Missing {
        path: "kvmini".into(),
        how: format!("cannot find this program's own binary: {e}"),
    })?;

    let work = bundle::WorkDir::open(&bundle::default_work_dir(opts.work_dir.as_deref()))?;
    let runtime_name = runtime
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runtime".into());
    let missing_snapshot = snapshot_missing(&guests);
    let mut setup = Setup {
        runtime,
        runtime_name,
        kvmini,
        guests: std::path::absolute(&guests).unwrap_or(guests),
        host_busybox,
        initramfs_rootfs: None,
        snapshot_missing: missing_snapshot,
        bundles: Vec::new(),
        next_id: std::cell::Cell::new(0),
    };
    build_bundles(&work, &mut setup, workloads, &skipped)?;
    Ok(Prepared {
        setup,
        skipped,
        work,
        check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_side_needs_both_files_of_the_snapshot() {
        let guests =
            std::env::temp_dir().join(format!("kvmini-compare-setup-{}", std::process::id()));
        let dir = guests.join(LINUX_SNAPSHOT);
        std::fs::create_dir_all(&dir).unwrap();
        let why = snapshot_missing(&guests).expect("no snapshot yet");
        assert!(
            why.contains("make snapshot") && why.contains("linux-snapshot"),
            "{why}"
        );
        std::fs::write(dir.join("memory"), b"").unwrap();
        assert!(snapshot_missing(&guests).is_some());
        std::fs::write(dir.join("state"), b"").unwrap();
        assert_eq!(snapshot_missing(&guests), None);
        std::fs::remove_dir_all(&guests).unwrap();
    }
}
