//! Helpers shared by the integration tests: where the guests are, whether KVM is there, and
//! running a VM through the library or the `kvmini` binary.

#![allow(dead_code)]

pub mod linux;
pub mod oci;

use std::path::PathBuf;
use std::process::{Command, Output};

use kvmini::config::{SerialOutput, SharedBuffer, VmConfig};
use kvmini::RunOutcome;

/// Path of a built guest; fails with the command to build it when it is missing.
pub fn guest(name: &str) -> PathBuf {
    let path = repo_root().join("guest/build").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make guests` (make test does)",
        path.display()
    );
    path
}

/// Whether KVM tests can run. Without `/dev/kvm` a test skips with a message, unless
/// `KVMINI_REQUIRE_KVM=1`, in which case it fails.
pub fn kvm_or_skip() -> bool {
    let why = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => return true,
        Err(e) => format!("cannot open /dev/kvm: {e}"),
    };
    skip("KVM test", &why)
}

/// A test that cannot run here: under `KVMINI_REQUIRE_KVM=1` (as CI and `make test` set) it
/// fails with `why`; otherwise it says why this `what` skips. False, for the `_or_skip`
/// helpers to return.
pub fn skip(what: &str, why: &str) -> bool {
    if std::env::var("KVMINI_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("KVMINI_REQUIRE_KVM=1 but {why}");
    }
    eprintln!("skipping {what}: {why} (set KVMINI_REQUIRE_KVM=1 to make this fail)");
    false
}

/// What `make linux` builds; every Linux test needs them.
pub const LINUX_GUEST: [&str; 4] = ["vmlinux", "bzImage", "initramfs.cpio", "kernel.release"];

/// The built guest kernel's release (`uname -r` in the guest), as `make linux` recorded it.
pub fn kernel_release() -> String {
    let path = repo_root().join("guest/build/kernel.release");
    let release = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make linux`)", path.display()));
    release.trim().to_string()
}

/// Whether a Linux guest's output (console and kvmini's) shows the segmentation fault a
/// software-virtualized (kvm_pvm) host sometimes deals a guest program, more often with two
/// vCPUs (docs/devices.md): in a program the shell reports, or in the shell that is init,
/// whose death panics the kernel. Tests that meet it run the guest again.
pub fn host_segfault(output: &str) -> bool {
    output.contains("Segmentation fault")
        || output.contains("Attempted to kill init! exitcode=0x0000000b")
}

/// Whether the Linux tests can run: KVM (as [`kvm_or_skip`]) and the Linux guest built by
/// `make linux` (and `make snapshot`), with `extra` outputs in guest/build. Without them a
/// test skips with the command that builds them, unless `KVMINI_REQUIRE_KVM=1`, in which
/// case it fails (`make test` builds them first).
pub fn linux_or_skip(extra: &[&str]) -> bool {
    if !kvm_or_skip() {
        return false;
    }
    let build = repo_root().join("guest/build");
    let Some(missing) = LINUX_GUEST
        .iter()
        .chain(extra)
        .find(|f| !build.join(f).exists())
    else {
        return true;
    };
    let why = format!(
        "guest/build/{missing} is missing: `make linux` builds the Linux guest (and `make \
         snapshot` its snapshot; `make test` does both)"
    );
    skip("Linux test", &why)
}

/// A configuration that captures serial output, with a timeout so no test can hang.
pub fn config(image: PathBuf) -> (VmConfig, SharedBuffer) {
    let buf = SharedBuffer::new();
    let mut c = VmConfig::new(image);
    c.serial = SerialOutput::Buffer(buf.clone());
    c.timeout = Some(std::time::Duration::from_secs(30));
    (c, buf)
}

/// Runs a VM through the library; returns the outcome and the serial output.
pub fn run(config: &VmConfig, buf: &SharedBuffer) -> (RunOutcome, String) {
    let outcome = kvmini::run(config).unwrap_or_else(|e| panic!("VM failed to run: {e}"));
    (outcome, buf.text())
}

/// The top of the checkout. The integration tests belong to the kvmini-cli package (cli/),
/// so that cargo builds the `kvmini` binary they run.
pub fn repo_root() -> PathBuf {
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    cli.parent()
        .expect("cli/ is inside the checkout")
        .to_path_buf()
}

/// The `kvmini` binary cargo built for these tests.
pub fn kvmini_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kvmini"))
}

/// Runs the `kvmini` binary.
pub fn kvmini(args: &[&str]) -> Output {
    Command::new(kvmini_bin())
        .args(args)
        .output()
        .expect("kvmini binary runs")
}

/// Runs the `kvmini` binary; returns its exit status, standard output and standard error.
pub fn kvmini_status(args: &[&str]) -> (i32, String, String) {
    let out = kvmini(args);
    let (stdout, stderr) = texts(&out);
    (status(&out), stdout, stderr)
}

/// The process exit status, panicking on death by signal.
pub fn status(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("kvmini died by a signal: {:?}", out.status))
}

/// Standard output and error as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch file path unique to this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmini-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Collects a child's stdout on a thread; `wait_for` blocks until a string shows up.
pub struct Transcript {
    /// Everything read so far.
    pub text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Transcript {
    /// Starts reading `out`.
    pub fn start(mut out: impl std::io::Read + Send + 'static) -> Self {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Transcript { text }
    }

    /// The offset just past the first `needle` after offset `after`; waits up to 10 minutes.
    pub fn wait_for(&self, needle: &str, after: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            if let Some(i) = self.text.lock().unwrap()[after..].find(needle) {
                return after + i + needle.len();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                self.text.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Runs `cmd` to its end, killing it after `limit`: a test of something that must not hang
/// fails instead of hanging with it. Standard output and error are captured unless `cmd`
/// says otherwise.
pub fn output_within(mut cmd: Command, limit: std::time::Duration) -> Output {
    output_within_child(cmd.spawn().expect("command runs"), limit)
}

/// Waits for `child` to end, killing it after `limit` (see [`output_within`]).
pub fn output_within_child(child: std::process::Child, limit: std::time::Duration) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("child output"),
        Err(_) => {
            // SAFETY: kill(2) on the child's pid, which is not reaped until the thread's
            // wait returns, so it cannot name another process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().expect("killed child is reaped").expect("output");
            panic!(
                "child {pid} still running after {} s; stderr: {}",
                limit.as_secs(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Runs the `kvmini` binary, killing it after `limit` (see [`output_within`]).
pub fn kvmini_within(args: &[&str], limit: std::time::Duration) -> Output {
    use std::process::Stdio;
    let mut cmd = Command::new(kvmini_bin());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    output_within(cmd, limit)
}

/// Makes a FIFO at `path` (replacing whatever was there).
pub fn mkfifo(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Every thread of process `pid` with its name and its seccomp state: (name, mode, filters)
/// from `/proc/PID/task/*/status` (`Seccomp:` 2 is a filter, 0 none).
pub fn thread_seccomp(pid: u32) -> Vec<(String, u32, u32)> {
    let mut threads = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        threads.push((
            field("Name:"),
            field("Seccomp:").parse().unwrap_or(0),
            field("Seccomp_filters:").parse().unwrap_or(0),
        ));
    }
    threads
}
