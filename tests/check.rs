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
    let m = &v["measurements"]["Ok"];
    assert!(m["io_exit_us"].as_f64().unwrap() > 0.0, "{v}");
    assert!(m["ring0_ns_per_iter"].as_f64().unwrap() > 0.0, "{v}");
    assert!(m["ring3_ns_per_iter"].as_f64().unwrap() > 0.0, "{v}");
    let kind = v["host_kind_short"].as_str().unwrap();
    assert!(
        ["pvm", "hardware", "nested", "unknown"].contains(&kind),
        "{kind}"
    );
    // The module directory decides the kind; the report must agree with it.
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    assert_eq!(kind == "pvm", pvm);
}
