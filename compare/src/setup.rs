//! Everything the sides need, found ([`super::find`]) and built once before anything is
//! measured: the OCI runtime, root and KVM, the guests, the host's static busybox, kvmini
//! oci's runtime, and the container side's root file systems and bundles; and the process
//! each run of a side starts.

use std::path::{Path, PathBuf};

use kvmini::check;
use kvmini_measure::runner::{Marker, Spec};

use super::find::{find_guests, find_runtime, host_busybox, require};
use super::kvmini_oci::{self, OwnBundle};
use super::progress::Progress;
use super::sample::RunError;
use super::workload::{Side, Workload, LINUX_COMMAND, LINUX_SNAPSHOT, LINUX_VM_MEM, PROBE_SCRIPT};
use super::{bundle, Error, Options};

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
    /// The `kvmini-oci` side's runtime.
    pub(crate) oci: kvmini_oci::Runtime,
    /// The bundle of the user's own that `oci` runs, if one was given.
    pub(crate) own_bundle: Option<OwnBundle>,
    /// (workload, probe?) → bundle directory.
    bundles: Vec<((Workload, bool), PathBuf)>,
    next_id: std::cell::Cell<u64>,
}

impl Setup {
    pub(crate) fn container_args(&self, w: Workload, probe: bool) -> Vec<String> {
        if let (Workload::Oci, Some(own)) = (w, &self.own_bundle) {
            return match probe {
                false => own.args(),
                true => ["sh", "-c", PROBE_SCRIPT].map(String::from).to_vec(),
            };
        }
        let words: Vec<&str> = match (w, probe) {
            (Workload::Hello | Workload::Oci, false) => vec!["/bin/busybox", "echo", "hello"],
            (Workload::Compute, false) => vec!["/bin/compute-native"],
            (Workload::Linux, false) => LINUX_COMMAND.to_vec(),
            (Workload::Hello | Workload::Compute | Workload::Oci, true) => {
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
            Workload::Hello | Workload::Oci => args.push(g("hello.elf")),
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
            Workload::Hello | Workload::Oci => (busybox, vec!["echo".into(), "hello".into()]),
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
            Side::KvminiOci => "vm (kvmini oci)".into(),
            Side::Baseline => "baseline (host process)".into(),
        }
    }

    /// The line that counts as the first output of a run (or probe) of `w` on `side`.
    pub(crate) fn marker(&self, w: Workload, side: Side, probe: bool) -> Marker {
        if probe || (w == Workload::Oci && self.own_bundle.is_some()) {
            Marker::Any
        } else {
            w.marker(side)
        }
    }

    /// A container ID of its own for each run.
    fn container_id(&self) -> String {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        format!("kvmini-compare-{}-{id}", std::process::id())
    }

    /// The bundle a run (or probe) of `w` runs.
    fn bundle_dir(&self, w: Workload, probe: bool) -> String {
        self.bundles
            .iter()
            .find(|(k, _)| *k == (w, probe))
            .map(|(_, b)| b.display().to_string())
            .unwrap_or_default()
    }

    /// The process one run (or probe) of `w` on `side` starts.
    pub(crate) fn spec(&self, w: Workload, side: Side, probe: bool) -> Spec {
        let mut env = Vec::new();
        let (program, args, cleanup) = match side {
            Side::Container => {
                let id = self.container_id();
                let rt = self.runtime.display().to_string();
                let bundle = self.bundle_dir(w, probe);
                (
                    self.runtime.clone(),
                    vec!["run".into(), "--bundle".into(), bundle, id.clone()],
                    Some(vec![rt, "delete".into(), "--force".into(), id]),
                )
            }
            Side::KvminiOci => {
                let id = self.container_id();
                env = self.oci.env();
                let args = self.oci.run_args(&self.bundle_dir(w, probe), &id);
                (
                    self.oci.program.clone(),
                    args,
                    Some(self.oci.delete_command(&id)),
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
            env,
        }
    }
}

pub(crate) fn failed(w: Workload, side: Side, setup: &Setup, source: RunError) -> Error {
    let hint = match side {
        Side::Container => format!(" (is {} a working OCI runtime?)", setup.runtime.display()),
        Side::Vm | Side::Snapshot | Side::KvminiOci | Side::Baseline => String::new(),
    };
    Error::SideFailed {
        workload: w.name(),
        side: side.name(),
        hint,
        source: Box::new(source),
    }
}

/// Records that `w` cannot run here, and says so on the progress line.
fn skip(w: Workload, why: String, progress: &mut Progress, skipped: &mut Vec<(Workload, String)>) {
    progress.message(&format!("kvmini compare: skipping {}: {why}", w.name()));
    skipped.push((w, why));
}

/// Checks that the guests `workloads` need are built; returns the workloads that cannot run
/// here, with why (linux without its kernel: skipped with a message, not an error). `oci`
/// on its own busybox bundle needs the same files as `hello` and `compute`; what else it
/// needs is [`kvmini_oci::Runtime::missing`]'s.
fn check_guests(
    guests: &Path,
    workloads: &[Workload],
    own_bundle: bool,
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
            Workload::Oci if !own_bundle => {
                require(guests.join("compute-native"), make_guests)?;
            }
            Workload::Oci => {}
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
                    skip(Workload::Linux, why, progress, &mut skipped);
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
/// that runs. `oci` with a bundle of the user's own runs that bundle, and a copy of its
/// configuration for the probe.
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
        if let (Workload::Oci, Some(own)) = (w, &setup.own_bundle) {
            let probe = work.bundle_of("oci-own-probe", &own.probe_config())?;
            setup.bundles.push(((w, false), own.dir.clone()));
            setup.bundles.push(((w, true), probe));
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

/// Root and a usable KVM, which every comparison needs; `kvmini check`'s report.
fn check_machine() -> Result<check::Report, Error> {
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
    Ok(check)
}

/// Checks the options and the machine, and builds the container side's files.
pub(crate) fn prepare(
    opts: &Options,
    workloads: &[Workload],
    progress: &mut Progress,
) -> Result<Prepared, Error> {
    let runtime = find_runtime(opts.runtime.as_deref())?;
    let own_bundle = opts.bundle.as_deref().map(OwnBundle::open).transpose()?;
    let check = check_machine()?;

    let guests = find_guests(opts.guest_dir.as_deref());
    let guests = std::path::absolute(&guests).unwrap_or(guests);
    let mut skipped = check_guests(&guests, workloads, own_bundle.is_some(), progress)?;
    let kvmini = std::env::current_exe().map_err(|e| Error::Missing {
        path: "kvmini".into(),
        how: format!("cannot find this program's own binary: {e}"),
    })?;
    let work = bundle::WorkDir::open(&bundle::default_work_dir(opts.work_dir.as_deref()))?;
    let oci = kvmini_oci::Runtime::beside(&kvmini, &guests, &work.path);
    if let (true, Some(why)) = (workloads.contains(&Workload::Oci), oci.missing()) {
        skip(Workload::Oci, why, progress, &mut skipped);
    }
    let need_busybox = workloads
        .iter()
        .filter(|w| !skipped.iter().any(|(s, _)| s == *w))
        .any(|w| match w {
            Workload::Linux => false,
            Workload::Oci => own_bundle.is_none(),
            Workload::Hello | Workload::Compute => true,
        });
    let host_busybox = if need_busybox {
        host_busybox()?
    } else {
        PathBuf::from("/bin/busybox")
    };

    let runtime_name = runtime
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runtime".into());
    let mut setup = Setup {
        runtime,
        runtime_name,
        kvmini,
        snapshot_missing: snapshot_missing(&guests),
        guests,
        host_busybox,
        initramfs_rootfs: None,
        oci,
        own_bundle,
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

    fn setup(own_bundle: Option<OwnBundle>) -> Setup {
        let kvmini = PathBuf::from("/k/kvmini");
        Setup {
            runtime: "/usr/sbin/runc".into(),
            runtime_name: "runc".into(),
            oci: kvmini_oci::Runtime::beside(&kvmini, Path::new("/g"), Path::new("/w")),
            kvmini,
            guests: "/g".into(),
            host_busybox: "/bin/busybox".into(),
            initramfs_rootfs: None,
            snapshot_missing: None,
            own_bundle,
            bundles: vec![
                ((Workload::Oci, false), "/w/bundles/oci".into()),
                ((Workload::Oci, true), "/w/bundles/oci-probe".into()),
            ],
            next_id: std::cell::Cell::new(0),
        }
    }

    #[test]
    fn both_oci_sides_run_the_same_bundle_each_as_a_container_of_its_own() {
        let s = setup(None);
        let runc = s.spec(Workload::Oci, Side::Container, false);
        let kvm = s.spec(Workload::Oci, Side::KvminiOci, false);
        let id = |spec: &Spec| spec.args.last().unwrap().clone();
        assert_eq!(runc.program, Path::new("/usr/sbin/runc"));
        assert_eq!(runc.args[..3], ["run", "--bundle", "/w/bundles/oci"]);
        assert_eq!(kvm.program, Path::new("/k/kvmini-runtime"));
        assert_eq!(
            kvm.args[..5],
            [
                "--root",
                "/w/kvmini-oci-root",
                "run",
                "--bundle",
                "/w/bundles/oci"
            ]
        );
        assert_ne!(id(&runc), id(&kvm));
        let delete = kvm.cleanup.as_ref().unwrap();
        assert_eq!(delete[0], "/k/kvmini-runtime");
        assert_eq!(delete[delete.len() - 3..], ["delete", "--force", &id(&kvm)]);
        assert!(kvm
            .env
            .contains(&("KVMINI_OCI_BOOT".into(), "snapshot".into())));
        assert!(runc.env.is_empty());
        assert_eq!(kvm.timeout, Workload::Oci.timeout());
        // The probe runs the probe's bundle, through the same runtime.
        let probe = s.spec(Workload::Oci, Side::KvminiOci, true);
        assert_eq!(probe.args[4], "/w/bundles/oci-probe");
        assert_eq!(
            s.marker(Workload::Oci, Side::KvminiOci, false),
            Marker::Line("hello")
        );
        assert_eq!(s.label(Side::KvminiOci), "vm (kvmini oci)");
        assert_eq!(
            s.container_args(Workload::Oci, false),
            ["/bin/busybox", "echo", "hello"]
        );
    }

    #[test]
    fn an_own_bundle_runs_its_own_process_and_any_first_line_counts() {
        let dir = std::env::temp_dir().join(format!("kvmini-compare-own-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"process": {"args": ["/bin/date"]}, "root": {"path": "rootfs"}}"#,
        )
        .unwrap();
        let s = setup(Some(OwnBundle::open(&dir).unwrap()));
        assert_eq!(s.container_args(Workload::Oci, false), ["/bin/date"]);
        assert_eq!(
            s.container_args(Workload::Oci, true),
            ["sh", "-c", PROBE_SCRIPT]
        );
        assert_eq!(s.marker(Workload::Oci, Side::Container, false), Marker::Any);
        assert_eq!(
            s.marker(Workload::Hello, Side::Container, false),
            Marker::Line("hello")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

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
