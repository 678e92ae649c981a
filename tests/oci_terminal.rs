//! `kvmini oci` with what engines and users bring beyond a plain bundle, against runc:
//! a terminal (`process.terminal`, through a console socket and through podman -t), the
//! runc command line's terminal rules, a root with a dynamically linked program, `podman
//! stop` and `podman rm`, and a container whose resources the OCI snapshot does not have
//! (booted cold: its vCPUs and memory are the container's limits). Needs root, runc,
//! podman and Debian's busybox-static (`make deps-compare`) and the Linux guest with its OCI
//! snapshot (`make oci-snapshot`).

mod common;

use common::oci::*;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The longest a container of these tests may take (a cold boot here: about a minute).
const LIMIT: Duration = Duration::from_secs(600);

/// Whether podman is there; otherwise says why.
fn podman_or_skip() -> bool {
    if Command::new("podman").arg("--version").output().is_ok() {
        return true;
    }
    eprintln!("skipping podman test: podman is not installed (make deps-compare)");
    false
}

/// `runc spec`'s bundle (terminal, `sh`), untouched, with a copy of the busybox root.
fn runc_spec_bundle(dir: &Path) -> PathBuf {
    let work = kvmini_compare::bundle::WorkDir::open(&dir.join("work")).unwrap();
    let rootfs = work
        .busybox_rootfs(Path::new(BUSYBOX), Path::new(BUSYBOX))
        .unwrap();
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&rootfs)
        .arg(b.join("rootfs"))
        .status()
        .unwrap();
    assert!(copied.success());
    let spec = Command::new("runc")
        .arg("spec")
        .current_dir(&b)
        .output()
        .unwrap();
    assert!(spec.status.success(), "{:?}", common::texts(&spec));
    b
}

/// What a terminal session gave: the terminal's name, everything read from its master, and
/// the process's exit status.
#[derive(Debug, PartialEq)]
struct Session {
    name: String,
    output: String,
    status: i32,
}

/// Creates container `id` of `bundle` with a console socket, starts it, waits for the
/// shell's prompt on the terminal's master, types `line`, resizes the terminal to 25 rows and
/// 83 columns (as conmon does for a resized window) once the shell says "armed", and reads
/// until the terminal closes.
fn terminal_session(rt: &Runtime, bundle: &Path, id: &str, dir: &Path, line: &str) -> Session {
    let socket = dir.join(format!("{id}.sock"));
    let listener = UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || {
        kvmini_oci::terminal::receive_master(&listener.accept().unwrap().0).unwrap()
    });
    let pid_file = dir.join(format!("{id}.pid"));
    let mut cmd = rt.command();
    cmd.args(["create", "--bundle"]).arg(bundle);
    cmd.arg("--console-socket").arg(&socket);
    cmd.arg("--pid-file").arg(&pid_file).arg(id);
    let created = common::output_within(cmd, LIMIT);
    assert_eq!(common::status(&created), 0, "{:?}", common::texts(&created));
    let (name, master) = receiver.join().unwrap();
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let started = rt.run(&["start", id]);
    assert_eq!(common::status(&started), 0, "{:?}", common::texts(&started));
    let resize_fd = master.try_clone().unwrap();
    let mut writer = std::fs::File::from(master.try_clone().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::fs::File::from(master);
        let mut buf = [0u8; 4096];
        // EIO once the last slave side closes: the end.
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut output = Vec::new();
    let (mut typed, mut resized) = (false, false);
    let ended = loop {
        let chunk = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(chunk) => chunk,
            Err(e) => break e == mpsc::RecvTimeoutError::Disconnected,
        };
        output.extend_from_slice(&chunk);
        // The prompt ("/ # "), then busybox's line editing asks where the cursor is.
        if !typed && output.windows(2).any(|w| w == b"# ") {
            writer.write_all(line.as_bytes()).unwrap();
            typed = true;
        }
        if typed && !resized && output.windows(9).any(|w| w == b"\r\narmed\r\n") {
            let size = libc::winsize {
                ws_row: 25,
                ws_col: 83,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: `size` is a valid winsize for TIOCSWINSZ to read.
            let r = unsafe { libc::ioctl(resize_fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            resized = true;
        }
    };
    if !ended {
        let _ = rt.run(&["delete", "--force", id]);
        panic!(
            "{id}: the terminal went quiet (typed: {typed}, resized: {resized}): {:?}",
            String::from_utf8_lossy(&output)
        );
    }
    let status = wait_pid(pid);
    let deleted = rt.run(&["delete", id]);
    assert_eq!(common::status(&deleted), 0, "{:?}", common::texts(&deleted));
    Session {
        name,
        output: String::from_utf8_lossy(&output).into_owned(),
        status,
    }
}

/// runc's own bundle (`runc spec`: a terminal and an interactive shell) through the runc
/// command line with a console socket, as conmon drives it: the same terminal, prompt,
/// echo, output, window size after a resize (the shell's WINCH trap prints it) and status
/// under both runtimes.
/// The shell waits in a builtin (`read -t 1`), not in a program: an interactive shell gives
/// each program the terminal's foreground, and SIGWINCH would go to it.
#[test]
fn a_terminal_reaches_the_console_socket_as_under_runc() {
    if !runc_or_skip() || !common::linux_or_skip(&[]) {
        return;
    }
    become_subreaper();
    let dir = scratch("tty");
    let b = runc_spec_bundle(&dir);
    let line = "tty; echo $((6 * 7)); trap 'stty size; exit 3' WINCH; echo armed; \
                while :; do read -t 1 x; done\r";
    let want = terminal_session(&Runtime::runc(&dir.join("r")), &b, "t-runc", &dir, line);
    let got = terminal_session(&Runtime::kvmini(&dir.join("k")), &b, "t-kvm", &dir, line);
    assert_eq!(want.status, 3, "{want:?}");
    assert!(want.output.contains("\r\n42\r\n"), "{want:?}");
    assert!(want.output.contains("\r\n25 83\r\n"), "{want:?}");
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// runc's rules: a detached container with a terminal needs a console socket, and a console
/// socket needs a terminal and a detached container. No VM starts.
#[test]
fn terminal_options_that_do_not_fit_fail_as_under_runc() {
    if !runc_or_skip() {
        return;
    }
    let dir = scratch("tty-rules");
    let b = runc_spec_bundle(&dir);
    let socket = dir.join("unused.sock");
    let (kr, rr) = (dir.join("k"), dir.join("r"));
    let create = |terminal: bool, socket: Option<&Path>| {
        edit_config(&b, |c| c["process"]["terminal"] = terminal.into());
        let mut args = vec!["create", "--bundle", b.to_str().unwrap()];
        if let Some(s) = socket {
            args.extend(["--console-socket", s.to_str().unwrap()]);
        }
        args.push("c1");
        (
            Runtime::kvmini(&kr).run(&args),
            Runtime::runc(&rr).run(&args),
        )
    };
    let (k, r) = create(true, None);
    same_failure(
        &k,
        &r,
        "without setting console socket",
        "terminal, no socket",
    );
    let (k, r) = create(false, Some(&socket));
    same_failure(&k, &r, "cannot use console socket", "socket, no terminal");
    let run = |rt: Runtime| {
        rt.run(&[
            "run",
            "--bundle",
            b.to_str().unwrap(),
            "--console-socket",
            socket.to_str().unwrap(),
            "c2",
        ])
    };
    edit_config(&b, |c| c["process"]["terminal"] = true.into());
    let (k, r) = (run(Runtime::kvmini(&kr)), run(Runtime::runc(&rr)));
    same_failure(
        &k,
        &r,
        "cannot use console socket",
        "run in the foreground with a socket",
    );
    // Nothing was left behind by the refused containers.
    for root in [&kr, &rr] {
        let left: Vec<_> = std::fs::read_dir(root)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: {left:?}", root.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `podman run` with `runtime`, `options`, `rootfs` as the root and `command`; `--network
/// none` (a VM cannot join podman's network namespace) and the rlimits this host allows.
fn podman(runtime: &Path, options: &[&str], rootfs: &Path, command: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--runtime").arg(runtime).arg("run");
    cmd.args(["--network", "none", "--ulimit", "nofile=1024:1024"]);
    cmd.args(["--ulimit", "nproc=1024:1024"]).args(options);
    cmd.arg("--rootfs")
        .arg(rootfs)
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn runc_path() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v runc"])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn kvmini_runtime() -> PathBuf {
    common::kvmini_bin().with_file_name("kvmini-runtime")
}

/// `podman run -t` in a terminal of 31 rows and 97 columns (made by script(1)): the process
/// sees a terminal of that size, its output comes with the terminal's CR-LF, its error on the
/// same terminal, and its status is podman's, as under runc.
#[test]
fn podman_run_t_gives_the_process_a_terminal_as_runc_does() {
    if !runc_or_skip() || !podman_or_skip() || !common::linux_or_skip(&[]) {
        return;
    }
    let dir = scratch("podman-tty");
    let work = kvmini_compare::bundle::WorkDir::open(&dir.join("work")).unwrap();
    let rootfs = work
        .busybox_rootfs(Path::new(BUSYBOX), Path::new(BUSYBOX))
        .unwrap();
    let session = |runtime: &Path| {
        let inner = podman(runtime, &["--rm", "-t"], &rootfs, &[]);
        let mut line = String::from("stty rows 31 cols 97; ");
        line.push_str(&format!("{:?}", inner.get_program()));
        for a in inner.get_args() {
            line.push_str(&format!(" {:?}", a));
        }
        line.push_str(" sh -c 'busybox tty; busybox stty size; echo to stderr >&2; exit 6'");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        common::output_within(cmd, LIMIT)
    };
    let want = session(&runc_path());
    let got = session(&kvmini_runtime());
    assert_eq!(common::status(&want), 6, "{:?}", common::texts(&want));
    assert!(
        common::texts(&want).0.contains("31 97\r\nto stderr\r\n"),
        "{:?}",
        common::texts(&want)
    );
    assert_eq!(common::status(&got), 6, "{:?}", common::texts(&got));
    // The runtime's own warnings (the skipped mqueue and cgroup mounts) reach the terminal
    // when conmon passes them on before the process's output: not the process's.
    let got_text = common::texts(&got).0;
    let (warnings, process): (Vec<&str>, Vec<&str>) = got_text
        .split_inclusive('\n')
        .partition(|l| l.starts_with("time=") && l.contains("level=warning"));
    for w in warnings {
        assert!(w.contains("mqueue") || w.contains("cgroup"), "{w}");
    }
    assert_eq!(process.concat(), common::texts(&want).0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A root with a dynamically linked program (the host's `expr`, its libraries and the
/// dynamic loader, copied where ldd finds them) runs under podman as under runc; `podman
/// stop` ends a running container through SIGTERM (its trap sets the status) and `podman rm`
/// leaves nothing of it running.
#[test]
fn podman_runs_a_dynamic_program_and_stops_and_removes_a_container() {
    if !runc_or_skip() || !podman_or_skip() || !common::linux_or_skip(&[]) {
        return;
    }
    let dir = scratch("podman-dyn");
    let rootfs = dynamic_rootfs(&dir, "/usr/bin/expr");
    for runtime in [runc_path(), kvmini_runtime()] {
        let out = common::output_within(
            podman(
                &runtime,
                &["--rm"],
                &rootfs,
                &["/usr/bin/expr", "6", "*", "7"],
            ),
            LIMIT,
        );
        assert_eq!(
            common::status(&out),
            0,
            "{runtime:?}: {:?}",
            common::texts(&out)
        );
        assert_eq!(common::texts(&out).0, "42\n", "{runtime:?}");
    }
    let work = kvmini_compare::bundle::WorkDir::open(&dir.join("work")).unwrap();
    let busybox = work
        .busybox_rootfs(Path::new(BUSYBOX), Path::new(BUSYBOX))
        .unwrap();
    for runtime in [runc_path(), kvmini_runtime()] {
        let name = format!("kvmini-stop-{}", std::process::id());
        let script = "trap 'echo stopping; exit 7' TERM; echo up; while :; do sleep 1; done";
        let started = common::output_within(
            podman(
                &runtime,
                &["-d", "--name", &name],
                &busybox,
                &["sh", "-c", script],
            ),
            LIMIT,
        );
        assert_eq!(common::status(&started), 0, "{:?}", common::texts(&started));
        let id = common::texts(&started).0.trim().to_string();
        let podman_cmd = |args: &[&str]| {
            let mut c = Command::new("podman");
            c.args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            common::output_within(c, LIMIT)
        };
        // Up once its first line is out (the VM's start takes seconds here).
        let mut up = false;
        for _ in 0..600 {
            up = common::texts(&podman_cmd(&["logs", &name]))
                .0
                .contains("up");
            if up {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            up,
            "{runtime:?}: the container never printed its first line"
        );
        let stopped = podman_cmd(&["stop", "-t", "60", &name]);
        assert_eq!(common::status(&stopped), 0, "{:?}", common::texts(&stopped));
        let code = podman_cmd(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
        assert_eq!(common::texts(&code).0.trim(), "7", "{runtime:?}");
        let logs = podman_cmd(&["logs", &name]);
        assert_eq!(common::texts(&logs).0, "up\nstopping\n", "{runtime:?}");
        let removed = podman_cmd(&["rm", &name]);
        assert_eq!(common::status(&removed), 0, "{:?}", common::texts(&removed));
        assert!(
            processes_naming(&id).is_empty(),
            "{runtime:?}: {:?}",
            processes_naming(&id)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A root file system with `program` and what the dynamic loader needs for it.
fn dynamic_rootfs(dir: &Path, program: &str) -> PathBuf {
    let root = dir.join("dynamic-root");
    let ldd = Command::new("ldd").arg(program).output().unwrap();
    assert!(ldd.status.success(), "{:?}", common::texts(&ldd));
    let mut files = vec![program.to_string()];
    for line in String::from_utf8(ldd.stdout).unwrap().lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(path.to_string());
        }
    }
    assert!(
        files.len() > 2,
        "{program} is not dynamically linked: {files:?}"
    );
    for f in &files {
        let to = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // The file itself, not a link to it (ld.so's path is one on Debian).
        std::fs::copy(f, &to).unwrap();
    }
    root
}

/// A container that asks for 2 vCPUs and 256 MiB, which the OCI snapshot (1 vCPU, 128 MiB)
/// does not have, boots the guest cold (KVMINI_OCI_BOOT unset: `auto`) and gets them: the
/// process counts 2 CPUs and about 256 MiB of memory, where runc's process sees the host's.
#[test]
fn a_container_with_other_resources_boots_cold_with_them() {
    if !runc_or_skip() || !common::linux_or_skip(&[]) {
        return;
    }
    become_subreaper();
    let dir = scratch("cold");
    let script = "grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo";
    let b = bundle(&dir, script, true);
    edit_config(&b, |c| {
        c["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 256u64 << 20 });
        c["linux"]["resources"]["cpu"] = serde_json::json!({ "quota": 200_000, "period": 100_000 });
    });
    let root = dir.join("k");
    // The host's segmentation fault in a guest program (common::host_segfault): a run whose
    // output shows it is tried again, up to three times.
    let mut attempt = 0;
    let out: Output = loop {
        attempt += 1;
        let mut cmd = Runtime::kvmini(&root).command();
        cmd.args(["--debug", "run", "--bundle"])
            .arg(&b)
            .arg(format!("cold{attempt}"));
        cmd.env_remove("KVMINI_OCI_BOOT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = common::output_within(cmd, LIMIT);
        let (o, e) = common::texts(&out);
        if attempt == 3 || !common::host_segfault(&(o + &e)) {
            break out;
        }
        eprintln!("a guest program died of a segmentation fault (the host's); running again");
    };
    let (stdout, stderr) = common::texts(&out);
    assert_eq!(common::status(&out), 0, "{stdout:?} {stderr:?}");
    assert!(
        stderr.contains("Cold"),
        "the debug log names the cold boot: {stderr:?}"
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("2"), "{stdout:?}");
    let kib: u64 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout:?}"));
    // MemTotal is what the guest kernel has left after its own reservations.
    assert!((200 << 10..=256 << 10).contains(&kib), "MemTotal {kib} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}
