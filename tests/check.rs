//! `kvmini check` on a host with KVM: every line is there, the probes measured something,
//! and the JSON agrees.

mod common;

use common::{kvm_or_skip, kvmini, status, texts};

#[test]
fn check_reports_device_version_caps_kind_and_measurements() {
    if !kvm_or_skip() {
        return;
    }
    let out = kvmini(&["check"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(status(&out), 0, "{stdout}{stderr}");
    for line in [
        "ok   /dev/kvm: present, readable and writable",
        "ok   KVM API version 12",
        "ok   capability UserMemory: yes",
        "ok   capability ImmediateExit: yes",
        "info host kind: ",
        "info port-I/O exit round trip: ",
        "info guest ring 0 vs ring 3: ",
        "CPUID: ",
        "debugging (--gdb), probed at ring 0: single-step ",
        "kvmini can run guests here",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn check_json_has_positive_measurements_and_a_host_kind() {
    if !kvm_or_skip() {
        return;
    }
    let out = kvmini(&["check", "--json"]);
    assert_eq!(status(&out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["usable"], true);
    let m = &v["measurements"];
    assert!(m.get("error").is_none(), "{v}");
    assert!(m["io_exit_us"].as_f64().unwrap() > 0.0, "{v}");
    assert!(m["ring0_ns_per_iter"].as_f64().unwrap() > 0.0, "{v}");
    assert!(m["ring3_ns_per_iter"].as_f64().unwrap() > 0.0, "{v}");
    let kind = v["host_kind_short"].as_str().unwrap();
    assert!(
        ["pvm", "hardware", "nested", "unknown"].contains(&kind),
        "{kind}"
    );
    for finding in ["device", "cpuid", "debugging"] {
        assert!(v[finding].get("error").is_none(), "{finding}: {v}");
        assert!(v[finding].get("Ok").is_none(), "{finding}: {v}");
    }
    // The module directory decides the kind; the report must agree with it.
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    assert_eq!(kind == "pvm", pvm);
    // What the GDB stub uses follows the host kind; on kvm_pvm the probe finds no int3.
    assert_eq!(v["debug_support"]["int3"], !pvm, "{v}");
    if pvm {
        assert_eq!(v["debugging"]["int3"], false, "{v}");
        assert_eq!(v["debugging"]["single_step"], true, "{v}");
    }
}

/// Runs the kvmini binary as the unprivileged user `nobody`, who cannot open a root-only
/// `/dev/kvm`. None when this cannot be arranged (not root, or /dev/kvm open to everyone).
fn kvmini_as_nobody(args: &[&str]) -> Option<std::process::Output> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mode = std::fs::metadata("/dev/kvm").ok()?.permissions().mode();
    if !root || mode & 0o006 != 0 {
        eprintln!("skipping: needs root and a /dev/kvm that others cannot open (mode {mode:o})");
        return None;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::kvmini_bin())
        .args(args)
        .output()
        .expect("setpriv runs");
    Some(out)
}

#[test]
fn a_user_who_cannot_open_dev_kvm_is_told_how_to_fix_it() {
    let Some(out) = kvmini_as_nobody(&["check"]) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/dev/kvm").unwrap().permissions().mode();
    let (stdout, _) = texts(&out);
    assert_eq!(status(&out), kvmini::status::NO_KVM, "{stdout}");
    assert!(
        stdout.contains(
            "FAIL /dev/kvm is not readable and writable by this user (nobody; the device is crw-"
        ),
        "{stdout}"
    );
    // A device only root may open (crw------- root:root, as on the development host) needs
    // group access first; one with a group needs nobody in it.
    if mode & 0o060 == 0 {
        assert!(stdout.contains("only its owner may use it"), "{stdout}");
        assert!(stdout.contains("sudo chmod 660 /dev/kvm"), "{stdout}");
    }
    assert!(stdout.contains("usermod -aG"), "{stdout}");
    assert!(stdout.contains("kvmini cannot run guests here"), "{stdout}");

    let hello = common::guest("hello16.bin");
    let out = kvmini_as_nobody(&["run", hello.to_str().unwrap()]).unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(status(&out), kvmini::status::NO_KVM, "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line a user can act on: {stderr}"
    );
    assert!(
        stderr.contains("/dev/kvm is not readable and writable by this user"),
        "{stderr}"
    );
}

/// Runs kvmini as `nobody` (with primary group `regid` and the supplementary `groups`) in a
/// private mount namespace where `/dev/kvm` is a node of the same device owned by root and
/// the group `gid`, mode 660: the set-up of hosts that give the kvm group the device. Needs
/// root; `None` (skipped) without it.
fn kvmini_as_nobody_with_group_device(
    gid: u32,
    regid: u32,
    groups: &str,
    args: &[&str],
) -> Option<std::process::Output> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !kvm_or_skip() {
        eprintln!("skipping: needs root and KVM");
        return None;
    }
    let script = r#"set -e
        d=$(mktemp -d); mount -t tmpfs -o mode=755 kvmini-test "$d"
        mknod "$d/kvm" c 10 232; chgrp "$1" "$d/kvm"; chmod 660 "$d/kvm"
        mount --bind "$d/kvm" /dev/kvm
        shift; exec setpriv --reuid=65534 "$@""#;
    let groups_arg = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!("--groups={groups}")
    };
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(gid.to_string())
        .arg(format!("--regid={regid}"))
        .arg(groups_arg)
        .arg("--")
        .arg(common::kvmini_bin())
        .args(args)
        .output()
        .expect("unshare runs");
    Some(out)
}

/// Debian's `users` group (nobody is not in it) and nobody's own primary group `nogroup`.
const USERS: u32 = 100;
const NOGROUP: u32 = 65534;

#[test]
fn a_user_outside_the_devices_group_is_told_to_join_that_group() {
    let Some(out) = kvmini_as_nobody_with_group_device(USERS, NOGROUP, "", &["check"]) else {
        return;
    };
    let (stdout, stderr) = texts(&out);
    assert_eq!(status(&out), kvmini::status::NO_KVM, "{stdout}{stderr}");
    assert!(
        stdout.contains("(nobody; the device is crw-rw---- root:users): add the user to the users group (sudo usermod -aG users nobody, then log in again)"),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_member_whose_login_predates_the_group_is_told_to_log_in_again() {
    // nobody's primary group in /etc/passwd is nogroup, but this process runs without it.
    let Some(out) = kvmini_as_nobody_with_group_device(NOGROUP, 1, "", &["check"]) else {
        return;
    };
    let (stdout, stderr) = texts(&out);
    assert_eq!(status(&out), kvmini::status::NO_KVM, "{stdout}{stderr}");
    assert!(
        stdout.contains("nobody is in group nogroup but this login session started before that: log in again (or run `newgrp nogroup`)"),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_non_root_user_in_the_devices_group_runs_guests() {
    let groups = USERS.to_string();
    let Some(out) = kvmini_as_nobody_with_group_device(USERS, NOGROUP, &groups, &["check"]) else {
        return;
    };
    let (stdout, stderr) = texts(&out);
    assert_eq!(status(&out), 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("ok   /dev/kvm: present, readable and writable"),
        "{stdout}"
    );
    let hello = common::guest("hello.elf");
    let run = ["run", hello.to_str().unwrap(), "--timeout", "30"];
    let out = kvmini_as_nobody_with_group_device(USERS, NOGROUP, &groups, &run).unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(status(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("Hello"), "{stdout}");
}
