//! The sandbox: with `--seccomp on` (the default) every thread of a running kvmini is under a
//! seccomp filter once the guest runs; a forbidden system call ends kvmini with the call's
//! name and status 126; `--seccomp off` installs none. The Linux tests (devices, restores)
//! check their threads too, with the I/O and console threads among them.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{guest, kvm_or_skip, kvmini_bin, kvmini_status, scratch, thread_seccomp};
use kvmini::status::SANDBOX;

/// Starts spin.bin (it never stops by itself) with `args`, waits until kvmini has `threads`
/// threads, all filtered when `filtered`, else for half a second, reads their seccomp state,
/// and stops it.
fn threads_of_spinning_guest(
    args: &[&str],
    threads: usize,
    filtered: bool,
) -> Vec<(String, u32, u32)> {
    let mut child = Command::new(kvmini_bin())
        .args(["run", guest("spin.bin").to_str().unwrap(), "--mode", "long"])
        .args(["--timeout", "30"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = thread_seccomp(child.id());
        // The main thread installs its filter last, once the others run.
        if seen.len() >= threads && (!filtered || seen.iter().all(|t| t.1 == 2)) {
            if !filtered {
                std::thread::sleep(Duration::from_millis(500));
                seen = thread_seccomp(child.id());
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn every_thread_of_a_running_kvmini_is_filtered() {
    if !kvm_or_skip() {
        return;
    }
    let dir = scratch("sandbox-snapshot");
    let _ = std::fs::remove_dir_all(&dir);
    // --snapshot adds the SIGUSR1 watcher's thread to the main thread. KVM's own kernel
    // workers (kvm-nx-lpage-recovery, kvm-pit) are listed among a VM's threads too; they run
    // no user code.
    let threads = threads_of_spinning_guest(&["--snapshot", dir.to_str().unwrap()], 2, true);
    let ours: Vec<_> = threads
        .iter()
        .filter(|t| !t.0.starts_with("kvm-"))
        .collect();
    assert_eq!(ours.len(), 2, "{threads:?}");
    for (name, mode, filters) in ours {
        assert_eq!(*mode, 2, "thread {name} has no seccomp filter: {threads:?}");
        assert!(*filters >= 1, "{threads:?}");
    }
    assert!(
        threads.iter().any(|t| t.0 == "kvmini-signal"),
        "{threads:?}"
    );
    assert!(threads.iter().any(|t| t.0 == "kvmini"), "{threads:?}");
}

#[test]
fn seccomp_off_installs_no_filter() {
    if !kvm_or_skip() {
        return;
    }
    let threads = threads_of_spinning_guest(&["--seccomp", "off"], 1, false);
    assert!(!threads.is_empty());
    assert!(
        threads
            .iter()
            .filter(|t| !t.0.starts_with("kvm-"))
            .all(|t| t.1 == 0),
        "{threads:?}"
    );
}

#[test]
fn a_forbidden_system_call_ends_kvmini_with_its_name_and_status_126() {
    if !kvm_or_skip() {
        return;
    }
    let hello = guest("hello.elf");
    let (status, _, err) =
        kvmini_status(&["run", hello.to_str().unwrap(), "--debug-forbidden-syscall"]);
    assert_eq!(status, SANDBOX, "{err}");
    assert!(
        err.contains("the main (boot vCPU) thread made the system call getppid (110)"),
        "{err}"
    );
    assert!(err.contains("--seccomp log"), "{err}");
    // In log mode the call goes through and the guest ends as it always does.
    let (status, out, err) = kvmini_status(&[
        "run",
        hello.to_str().unwrap(),
        "--debug-forbidden-syscall",
        "--seccomp",
        "log",
    ]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("Hello"), "{out}");
}
