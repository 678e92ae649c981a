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
    for finding in ["device", "cpuid"] {
        assert!(v[finding].get("error").is_none(), "{finding}: {v}");
        assert!(v[finding].get("Ok").is_none(), "{finding}: {v}");
    }
    // The module directory decides the kind; the report must agree with it.
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    assert_eq!(kind == "pvm", pvm);
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
    let (stdout, _) = texts(&out);
    assert_eq!(status(&out), kvmini::status::NO_KVM, "{stdout}");
    assert!(
        stdout.contains("FAIL /dev/kvm is not readable and writable by this user"),
        "{stdout}"
    );
    assert!(stdout.contains("usermod -aG kvm"), "{stdout}");
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
