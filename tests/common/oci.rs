//! Helpers of the OCI runtime tests (tests/oci.rs, tests/oci_terminal.rs): runc and
//! `kvmini oci` side by side on the same bundles.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const BUSYBOX: &str = "/bin/busybox";
/// Whether runc-based tests can run here; otherwise says why.
pub fn runc_or_skip() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    let why = if unsafe { libc::geteuid() } != 0 {
        "not root"
    } else if Command::new("runc").arg("--version").output().is_err() {
        "runc is not installed (make deps-compare)"
    } else if !kvmini_compare::bundle::is_static_elf(Path::new(BUSYBOX)).unwrap_or(false) {
        "/bin/busybox is not Debian's busybox-static (make deps-compare)"
    } else {
        return true;
    };
    eprintln!("skipping OCI runtime test: {why}");
    false
}

/// A scratch directory for one test, removed first if a previous run left it.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmini-oci-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A bundle in `dir` with a busybox root (kvmini compare's) and runc-spec-like config.json
/// (kvmini compare's, plus a tmpfs on /tmp and a read-only bind mount of a host file on
/// /mnt/hostfile), running `sh -c script` in /tmp.
pub fn bundle(dir: &Path, script: &str, readonly: bool) -> PathBuf {
    let work = kvmini_compare::bundle::WorkDir::open(&dir.join("work")).unwrap();
    // compare's root has its compute program too; busybox stands in for it here.
    let rootfs = work
        .busybox_rootfs(Path::new(BUSYBOX), Path::new(BUSYBOX))
        .unwrap();
    std::fs::create_dir_all(rootfs.join("mnt")).unwrap();
    let host_file = dir.join("hostfile");
    std::fs::write(&host_file, "from the host\n").unwrap();
    let args = ["sh".to_string(), "-c".into(), script.into()];
    let mut config = kvmini_compare::oci::config(&rootfs, &args);
    config["process"]["cwd"] = "/tmp".into();
    config["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push("GREETING=hi there".into());
    config["root"]["readonly"] = readonly.into();
    let mounts = config["mounts"].as_array_mut().unwrap();
    mounts.push(serde_json::json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" }));
    mounts.push(
        serde_json::json!({ "destination": "/mnt/hostfile", "type": "bind",
        "source": host_file, "options": ["rbind", "ro"] }),
    );
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("config.json"), config.to_string()).unwrap();
    b
}

/// A runtime's command line: runc, or kvmini oci, each with its own state root.
pub struct Runtime {
    program: PathBuf,
    prefix: Vec<String>,
}

impl Runtime {
    pub fn kvmini(root: &Path) -> Runtime {
        let prefix = vec!["oci".into(), "--root".into(), root.display().to_string()];
        Runtime {
            program: super::kvmini_bin(),
            prefix,
        }
    }

    pub fn runc(root: &Path) -> Runtime {
        let prefix = vec!["--root".into(), root.display().to_string()];
        Runtime {
            program: "runc".into(),
            prefix,
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        super::output_within(cmd, Duration::from_secs(300))
    }

    /// `create` with stdout and stderr to files (the container's process keeps them), as
    /// conmon gives the runtime the container's pipes.
    pub fn create(&self, bundle: &Path, id: &str, out: &Path) -> Output {
        let mut cmd = self.command();
        cmd.args(["create", "--bundle"]).arg(bundle);
        cmd.arg("--pid-file").arg(out.with_extension("pid")).arg(id);
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap());
        let status = cmd.status().unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(out.with_extension("err")).unwrap(),
        }
    }

    pub fn state(&self, id: &str) -> Value {
        let out = self.run(&["state", id]);
        assert_eq!(super::status(&out), 0, "{:?}", super::texts(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub fn kvmini_oci(root: &Path, args: &[&str]) -> Output {
    Runtime::kvmini(root).run(args)
}

pub fn runc(root: &Path, args: &[&str]) -> Output {
    Runtime::runc(root).run(args)
}

/// Both runtimes exit with the same status and both say `phrase` on stderr.
pub fn same_failure(kvmini: &Output, runc: &Output, phrase: &str, what: &str) {
    let (_, ke) = super::texts(kvmini);
    let (_, re) = super::texts(runc);
    assert_eq!(
        super::status(kvmini),
        super::status(runc),
        "{what}: kvmini said {ke:?}, runc {re:?}"
    );
    assert!(ke.contains(phrase), "{what}: kvmini said {ke:?}");
    assert!(re.contains(phrase), "{what}: runc said {re:?}");
}
/// Makes this test process the reaper of orphans, as conmon is: a holder whose `create` has
/// exited becomes its child, and its exit status can be read.
pub fn become_subreaper() {
    // SAFETY: prctl with plain values; it only marks this process.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
}

/// Waits for process `pid` (a child of this subreaper) and returns its exit status as a
/// shell shows it.
pub fn wait_pid(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid writes only `status`.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}
/// The bundle's config.json, changed by `edit`.
pub fn edit_config(b: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = b.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

/// Processes whose command line names `needle` (a state directory: the holder and its VM).
pub fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}
