//! `kvmini oci`, the OCI runtime, against runc (Debian's `runc`, `make deps-compare`) on the
//! same bundles: runc's command line on bad input (no KVM needed), then containers that
//! boot the Linux guest (`make linux`): create/state/start/state/delete with the process's
//! output and exit status compared with runc's, kill, and run with a writable root. Needs
//! root (runc and the state directories) and Debian's busybox-static for the container root.
//! Each boot of the guest costs about a minute on a host whose guest kernel code is
//! emulated, so the checks share containers.

mod common;

use common::oci::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// What one container checks at once: output, environment, working directory, a tmpfs
/// written and read back, a bind-mounted host file, the host name, the end of standard input,
/// standard error apart from output, and the exit status.
/// Its input is empty: `cat` sees its end.
const SCRIPT: &str = "echo hello; pwd; env | sort; hostname; echo written > /tmp/x; cat /tmp/x; \
                      cat /mnt/hostfile; cat /dev/null; cat; echo input ended; echo to stderr >&2; exit 3";

#[test]
fn bad_input_fails_as_runc_fails() {
    if !runc_or_skip() {
        return;
    }
    let dir = scratch("bad");
    let (kr, rr) = (dir.join("kvmini-state"), dir.join("runc-state"));
    let empty = dir.join("empty-bundle");
    std::fs::create_dir_all(&empty).unwrap();
    let e = empty.to_str().unwrap();
    same_failure(
        &kvmini_oci(&kr, &["create", "--bundle", e, "c"]),
        &runc(&rr, &["create", "--bundle", e, "c"]),
        "JSON specification file config.json not found",
        "a bundle without config.json",
    );
    for cmd in [
        &["start", "nope"][..],
        &["state", "nope"],
        &["kill", "nope", "KILL"],
        &["delete", "nope"],
    ] {
        same_failure(
            &kvmini_oci(&kr, cmd),
            &runc(&rr, cmd),
            "container does not exist",
            &format!("{cmd:?} of an unknown ID"),
        );
    }
    // --log with --log-format json: the error as a JSON line in the file.
    for (rt, name) in [
        (Runtime::kvmini(&kr), "kvmini"),
        (Runtime::runc(&rr), "runc"),
    ] {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = rt.command();
        cmd.arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "state", "nope"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        assert_eq!(cmd.status().unwrap().code(), Some(1), "{name}");
        let line: Value = serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
        assert_eq!(line["level"], "error", "{name}");
        assert_eq!(line["msg"], "container does not exist", "{name}");
        assert!(line["time"].is_string(), "{name}");
    }
    // A state root that does not exist: no containers, and list shows none.
    let missing = dir.join("no/such/root");
    same_failure(
        &kvmini_oci(&missing, &["state", "x"]),
        &runc(&missing, &["state", "x"]),
        "container does not exist",
        "state under a missing root",
    );
    for out in [
        kvmini_oci(&missing, &["list", "-q"]),
        runc(&missing, &["list", "-q"]),
    ] {
        assert_eq!(common::status(&out), 0);
        assert_eq!(common::texts(&out).0, "");
    }
    for out in [
        kvmini_oci(&kr, &["delete", "--force", "nope"]),
        runc(&rr, &["delete", "--force", "nope"]),
    ] {
        assert_eq!(common::status(&out), 0, "delete --force of an unknown ID");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// runc takes any ociVersion; kvmini refuses a major version it does not implement, and
/// config.json fields that would change what the container does, leaving nothing behind.
#[test]
fn fields_kvmini_cannot_honour_are_refused_by_name() {
    if !runc_or_skip() {
        return;
    }
    let dir = scratch("refused");
    let kr = dir.join("kvmini-state");
    let b = bundle(&dir, "true", true);
    let config: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    let b_str = b.to_str().unwrap();
    for (pointer, value, phrase) in [
        (
            "/ociVersion",
            serde_json::json!("2.0.0"),
            "ociVersion is not supported",
        ),
        (
            "/linux/uidMappings",
            serde_json::json!([{ "containerID": 0, "hostID": 1000, "size": 1 }]),
            "linux.uidMappings is not supported",
        ),
        (
            "/linux/devices",
            serde_json::json!([{ "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229 }]),
            "linux.devices is not supported",
        ),
    ] {
        let mut c = config.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        c.pointer_mut(if parent.is_empty() { "" } else { parent })
            .unwrap()[key] = value;
        std::fs::write(b.join("config.json"), c.to_string()).unwrap();
        let out = kvmini_oci(&kr, &["create", "--bundle", b_str, "c"]);
        let (_, err) = common::texts(&out);
        assert_eq!(common::status(&out), 1, "{pointer}: {err}");
        assert!(err.contains(phrase), "{pointer}: {err}");
        assert!(
            !kr.join("c").exists(),
            "{pointer}: a refused create leaves no state"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What one runtime did with a container: its output, exit status and the failures of
/// the commands that do not fit its status.
struct Life {
    stdout: String,
    stderr: String,
    status: i32,
    taken_id: Output,
    start_stopped: Output,
    kill_stopped: Output,
}

/// Takes container `id` of `bundle` through create, state, create again (taken ID), start,
/// state, its end, start and kill (both refused), delete; `dir` holds its output files.
fn life(rt: &Runtime, bundle: &Path, id: &str, dir: &Path) -> Life {
    let out = dir.join(id);
    let created = rt.create(bundle, id, &out);
    assert_eq!(common::status(&created), 0, "{:?}", common::texts(&created));
    let s = rt.state(id);
    assert_eq!(s["status"], "created");
    assert_eq!(s["id"], id);
    assert_eq!(s["bundle"], bundle.to_str().unwrap());
    let pid = s["pid"].as_i64().unwrap() as i32;
    let pid_file = std::fs::read_to_string(out.with_extension("pid")).unwrap();
    assert_eq!(pid_file, pid.to_string());
    let taken_id = rt.run(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    let started = rt.run(&["start", id]);
    assert_eq!(common::status(&started), 0, "{:?}", common::texts(&started));
    let now = rt.state(id)["status"].as_str().unwrap().to_string();
    assert!(now == "running" || now == "stopped", "{now}");
    let status = wait_pid(pid);
    assert_eq!(rt.state(id)["status"], "stopped");
    let life = Life {
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(out.with_extension("err")).unwrap(),
        status,
        taken_id,
        start_stopped: rt.run(&["start", id]),
        kill_stopped: rt.run(&["kill", id, "TERM"]),
    };
    let deleted = rt.run(&["delete", id]);
    assert_eq!(common::status(&deleted), 0, "{:?}", common::texts(&deleted));
    life
}

#[test]
fn a_container_goes_through_its_life_as_under_runc() {
    if !runc_or_skip() || !common::linux_or_skip(&[]) {
        return;
    }
    become_subreaper();
    let dir = scratch("life");
    let b = bundle(&dir, SCRIPT, true);
    let (kr, rr) = (dir.join("kvmini-state"), dir.join("runc-state"));
    let expected = life(&Runtime::runc(&rr), &b, "r", &dir);
    let got = life(&Runtime::kvmini(&kr), &b, "k", &dir);
    assert_eq!(got.stdout, expected.stdout);
    assert!(got.stdout.contains("from the host\n"), "{}", got.stdout);
    // kvmini's create logged its warnings (mqueue and cgroup mounts skipped) before.
    assert_eq!(expected.stderr, "to stderr\n");
    assert!(got.stderr.ends_with("\"\nto stderr\n"), "{}", got.stderr);
    assert_eq!((got.status, expected.status), (3, 3));
    for (k, r, phrase) in [
        (
            &got.taken_id,
            &expected.taken_id,
            "container with given ID already exists",
        ),
        (
            &got.start_stopped,
            &expected.start_stopped,
            "cannot start a container that has stopped",
        ),
        (
            &got.kill_stopped,
            &expected.kill_stopped,
            "container not running",
        ),
    ] {
        same_failure(k, r, phrase, phrase);
    }
    assert!(!kr.join("k").exists(), "delete removes the state directory");
    assert_eq!(
        std::fs::read_dir(&kr).unwrap().count(),
        1,
        "only the image cache stays"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_reaches_the_process_in_the_vm() {
    if !runc_or_skip() || !common::linux_or_skip(&[]) {
        return;
    }
    become_subreaper();
    let dir = scratch("kill");
    let script = "trap 'echo got TERM; exit 7' TERM; echo started; while :; do sleep 1; done";
    let b = bundle(&dir, script, true);
    let kr = dir.join("kvmini-state");
    let rt = Runtime::kvmini(&kr);
    let out = dir.join("k");
    let created = rt.create(&b, "k", &out);
    assert_eq!(common::status(&created), 0, "{:?}", common::texts(&created));
    let pid = rt.state("k")["pid"].as_i64().unwrap() as i32;
    assert_eq!(common::status(&rt.run(&["start", "k"])), 0);
    // The process runs once its first line is out.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while std::fs::read_to_string(&out).unwrap() != "started\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "no output from the container"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(rt.state("k")["status"], "running");
    let refused = rt.run(&["delete", "k"]);
    assert_eq!(common::status(&refused), 1);
    assert!(common::texts(&refused)
        .1
        .contains("that is not stopped: running"));
    assert_eq!(common::status(&rt.run(&["kill", "k", "SIGTERM"])), 0);
    assert_eq!(wait_pid(pid), 7, "the process's own status, from its trap");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "started\ngot TERM\n"
    );
    assert_eq!(rt.state("k")["status"], "stopped");
    assert_eq!(common::status(&rt.run(&["delete", "k"])), 0);
    let state_dir = kr.join("k");
    assert!(!state_dir.exists());
    assert_eq!(
        processes_naming(state_dir.to_str().unwrap()),
        Vec::<String>::new()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_with_a_writable_root_gives_what_runc_gives() {
    if !runc_or_skip() || !common::linux_or_skip(&[]) {
        return;
    }
    let dir = scratch("run");
    let script = "echo kept > /etc/note; cat /etc/note; id; ulimit -n";
    let b = bundle(&dir, script, false);
    let (kr, rr) = (dir.join("kvmini-state"), dir.join("runc-state"));
    let b_str = b.to_str().unwrap();
    let expected = runc(&rr, &["run", "--bundle", b_str, "r"]);
    let got = kvmini_oci(&kr, &["run", "--bundle", b_str, "k"]);
    assert_eq!(
        common::status(&expected),
        0,
        "{:?}",
        common::texts(&expected)
    );
    assert_eq!(common::status(&got), 0, "{:?}", common::texts(&got));
    assert_eq!(common::texts(&got).0, common::texts(&expected).0);
    assert!(common::texts(&got).0.starts_with("kept\n"));
    // The writable root was the container's own copy: deleted with it; the root stays as it
    // was (runc wrote it in place).
    assert!(!kr.join("k").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two containers of one read-only root restored from the OCI snapshot at once: each VM
/// has a root disk of its own (a restored VM's root is attached writable, and locked).
#[test]
fn two_containers_of_one_read_only_root_run_at_once() {
    if !runc_or_skip() || !common::linux_or_skip(&["oci-snapshot/state"]) {
        return;
    }
    let dir = scratch("two");
    let b = bundle(&dir, "echo hello", true);
    let kr = dir.join("kvmini-state");
    let children: Vec<_> = ["k1", "k2"]
        .map(|id| {
            let mut cmd = Runtime::kvmini(&kr).command();
            cmd.args(["run", "--bundle"])
                .arg(&b)
                .arg(id)
                .env("KVMINI_OCI_BOOT", "snapshot")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .into();
    for child in children {
        let out = common::output_within_child(child, Duration::from_secs(300));
        let (stdout, stderr) = common::texts(&out);
        assert_eq!(
            (common::status(&out), stdout.as_str()),
            (0, "hello\n"),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn podman_runs_a_container_with_kvmini_runtime_as_with_runc() {
    if !runc_or_skip() || !common::linux_or_skip(&[]) {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("skipping podman test: podman is not installed (apt-get install podman)");
        return;
    }
    let dir = scratch("podman");
    let work = kvmini_compare::bundle::WorkDir::open(&dir.join("work")).unwrap();
    let rootfs = work
        .busybox_rootfs(Path::new(BUSYBOX), Path::new(BUSYBOX))
        .unwrap();
    // The runtime's own program, built beside kvmini.
    let runtime = common::kvmini_bin().with_file_name("kvmini-runtime");
    let runc = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v runc"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let run = |runtime: &Path| {
        let mut cmd = Command::new("podman");
        cmd.arg("--runtime").arg(runtime);
        // No network: podman's network namespace is a path to join, which a VM cannot.
        cmd.args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
        ]);
        cmd.args(["--ulimit", "nproc=1024:1024", "--rootfs"])
            .arg(&rootfs);
        cmd.args(["sh", "-c", "echo hello from podman; id; ulimit -n; exit 4"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        common::output_within(cmd, Duration::from_secs(600))
    };
    let expected = run(Path::new(runc.trim()));
    let got = run(&runtime);
    assert_eq!(
        common::status(&expected),
        4,
        "{:?}",
        common::texts(&expected)
    );
    assert_eq!(common::status(&got), 4, "{:?}", common::texts(&got));
    assert_eq!(common::texts(&got).0, common::texts(&expected).0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bundle of `sh -c true`, changed by `edit`, through `kvmini oci create` under
/// `KVMINI_OCI_BOOT=snapshot`, which must refuse it (status 1) and leave nothing behind:
/// returns its error output. None (after a message) when runc's tests cannot run here or
/// there is no OCI snapshot.
fn refused_with_snapshot(name: &str, edit: impl FnOnce(&Path)) -> Option<String> {
    if !runc_or_skip() {
        return None;
    }
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/build/oci-snapshot");
    if !snapshot.join("state").is_file() {
        eprintln!("skipping: no OCI snapshot (make oci-snapshot)");
        return None;
    }
    let dir = scratch(name);
    let b = bundle(&dir, "true", true);
    edit(&b);
    let kr = dir.join("kvmini-root");
    let mut cmd = Runtime::kvmini(&kr).command();
    cmd.args(["create", "--bundle"])
        .arg(&b)
        .arg("c")
        .env("KVMINI_OCI_BOOT", "snapshot")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = common::output_within(cmd, Duration::from_secs(300));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!kr.join("c").exists(), "a refused create leaves no state");
    let _ = std::fs::remove_dir_all(&dir);
    Some(err)
}

/// With the OCI snapshot, a root file system larger than its root disk is refused at
/// `create`, naming the fallback, and leaves nothing behind (no VM: no KVM needed).
#[test]
fn a_root_too_big_for_the_snapshot_is_refused() {
    let Some(err) = refused_with_snapshot("too-big", |b| {
        edit_config(b, |c| {
            let rootfs = PathBuf::from(c["root"]["path"].as_str().unwrap());
            // Sparse: it costs nothing here, but the image must hold all of it.
            let big = std::fs::File::create(rootfs.join("big")).unwrap();
            big.set_len(300 << 20).unwrap();
        })
    }) else {
        return;
    };
    assert!(
        err.contains("more than the 256 MiB of the OCI snapshot's disk")
            && err.contains("KVMINI_OCI_BOOT=cold"),
        "{err}"
    );
}

/// A container asking for more memory than the snapshot has cannot be restored: with
/// KVMINI_OCI_BOOT=snapshot it is refused, saying why (unset, it would boot cold).
#[test]
fn other_resources_than_the_snapshot_s_are_refused_under_snapshot() {
    let Some(err) = refused_with_snapshot("resources", |b| {
        edit_config(b, |c| {
            c["linux"]["resources"] = serde_json::json!({ "memory": { "limit": 256 << 20 } });
        })
    }) else {
        return;
    };
    assert!(
        err.contains("asks for 256 MiB and 1 vCPU(s), the snapshot has 128 MiB"),
        "{err}"
    );
}
