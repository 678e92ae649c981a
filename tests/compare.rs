//! `kvmini compare` end to end: the same workloads in a container (runc), in a kvmini VM and as
//! a host process, one bundle under runc and under kvmini oci, and its errors. The end-to-end
//! tests need root, KVM and runc (the oci workload also the Linux guest and its OCI snapshot);
//! without them they skip with a message, unless `KVMINI_REQUIRE_KVM=1` (as CI sets, which
//! installs runc), in which case they fail.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{kvm_or_skip, kvmini, scratch, status, texts};
use kvmini::status::{BAD_INPUT, INTERNAL};
use serde_json::Value;

/// Whether the container side can run here: root, and runc on the PATH (or in /usr/sbin).
fn container_or_skip() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let why = if unsafe { libc::geteuid() } != 0 {
        "not root: the container side needs root".to_string()
    } else if kvmini_compare::find_runtime(None).is_err() {
        "runc is not installed (apt-get install runc; make test installs it)".to_string()
    } else {
        return true;
    };
    common::skip("compare test", &why)
}

fn side<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["sides"]
        .as_array()
        .expect("sides")
        .iter()
        .find(|s| s["side"] == name)
        .unwrap_or_else(|| panic!("no {name} side in {workload}"))
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

/// Runs `kvmini compare ARGS --json J --work-dir W` (scratch files named after `name`),
/// which must succeed with every side of `labels` in its tables; returns the tables and the
/// JSON report.
fn compare_ok(name: &str, args: &[&str], labels: &[&str]) -> (String, Value) {
    let json = scratch(&format!("{name}.json"));
    let work = scratch(&format!("{name}-work"));
    let mut all = vec!["compare"];
    all.extend(args);
    all.extend(["--json", json.to_str().unwrap()]);
    all.extend(["--work-dir", work.to_str().unwrap()]);
    let out = kvmini(&all);
    let (stdout, stderr) = texts(&out);
    assert_eq!(status(&out), 0, "{stdout}\n{stderr}");
    for label in labels {
        assert!(stdout.contains(label), "{label} in\n{stdout}");
    }
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, report)
}

#[test]
fn containers_vms_and_host_processes_are_measured_alike() {
    if !kvm_or_skip() || !container_or_skip() {
        return;
    }
    let svg = scratch("compare.svg");
    let args = [
        "--runs",
        "3",
        "--parallel",
        "1,2",
        "--workload",
        "hello",
        "--workload",
        "compute",
        "--svg",
        svg.to_str().unwrap(),
    ];
    // The table names the host kind and every side.
    let labels = ["container (runc)", "vm (kvmini)", "baseline (host process)"];
    let (stdout, report) = compare_ok("compare", &args, &labels);
    assert!(stdout.contains("host:"), "{stdout}");
    assert!(!report["host"]["kind"].as_str().unwrap().is_empty());
    let workloads = report["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 2, "{report}");
    let host = host_release();
    for w in workloads {
        let name = w["name"].as_str().unwrap();
        assert!(w["skipped"].is_null(), "{name} skipped: {}", w["skipped"]);
        for s in ["container", "vm", "baseline"] {
            let s = side(w, s);
            let runs = s["runs"].as_array().unwrap();
            assert_eq!(runs.len(), 3, "{name} {}", s["side"]);
            for r in runs {
                let first = r["first_output_ms"].as_f64().unwrap();
                let total = r["total_ms"].as_f64().unwrap();
                assert!(first > 0.0 && total >= first, "{name} {}: {r}", s["side"]);
            }
            assert!(s["total_ms"]["p50"].as_f64().unwrap() > 0.0);
            assert!(
                s["peak_rss_kib"].as_u64().unwrap() > 0,
                "{name} {}",
                s["side"]
            );
            assert!(
                s["peak_pss_kib"].as_u64().unwrap() > 0,
                "{name} {}",
                s["side"]
            );
            assert!(s["maxrss_kib"].as_u64().unwrap() > 0);
            let density = s["density"].as_array().unwrap();
            let levels: Vec<u64> = density
                .iter()
                .map(|d| d["parallel"].as_u64().unwrap())
                .collect();
            assert_eq!(levels, [1, 2], "{name} {}", s["side"]);
            for d in density {
                assert!(d["wall_ms"].as_f64().unwrap() > 0.0);
                assert_eq!(
                    d["instances"].as_array().unwrap().len() as u64,
                    d["parallel"].as_u64().unwrap()
                );
            }
        }

        // The container had its own PID namespace: the probe's shell was PID 1 there.
        let container = &side(w, "container")["isolation"];
        assert_eq!(container["pid"], "1", "{name}: {container}");
        // It shares the host's kernel; the VM does not see it.
        assert_eq!(container["kernel"], host.as_str(), "{name}: {container}");
        let vm = &side(w, "vm")["isolation"];
        assert!(
            vm["kernel"].is_null() || vm["kernel"] != host.as_str(),
            "{name}: the VM saw the host kernel: {vm}"
        );
        assert_eq!(vm["cpus"], "1", "{name}: {vm}");
        // The baseline is a plain host process.
        let baseline = &side(w, "baseline")["isolation"];
        assert_eq!(baseline["kernel"], host.as_str());
        assert_ne!(baseline["pid"], "1");
    }

    // The same checksum loop gave the same answer in the container, the VM and on the host.
    let compute = workloads.iter().find(|w| w["name"] == "compute").unwrap();
    assert_eq!(compute["checksums_agree"], true, "{compute}");
    let sums: Vec<&str> = ["container", "vm", "baseline"]
        .iter()
        .map(|s| side(compute, s)["compute"]["checksum"].as_str().unwrap())
        .collect();
    assert!(
        sums.iter().all(|s| s.len() == 16 && *s == sums[0]),
        "{sums:?}"
    );

    // The chart is well-formed SVG.
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the SVG parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(text.contains("container (runc)") && text.contains("vm (kvmini)"));
}

#[test]
fn one_bundle_runs_under_runc_and_under_kvmini_oci() {
    if !kvm_or_skip() || !container_or_skip() || !common::linux_or_skip(&["oci-snapshot/state"]) {
        return;
    }
    // kvmini-runtime is beside kvmini: cargo builds every binary of the package for its tests.
    let args = ["--workload", "oci", "--runs", "1", "--parallel", "1"];
    let labels = ["container (runc)", "vm (kvmini oci)"];
    let (_, report) = compare_ok("oci-compare", &args, &labels);
    let workloads = report["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 1, "{report}");
    let w = &workloads[0];
    assert_eq!(w["name"], "oci");
    assert!(w["skipped"].is_null(), "skipped: {}", w["skipped"]);
    let sides = ["container", "kvmini-oci"];
    assert_eq!(w["sides"].as_array().unwrap().len(), 2, "{w}");
    for (i, name) in sides.into_iter().enumerate() {
        assert_eq!(w["sides"][i]["side"], name);
        let s = side(w, name);
        let runs = s["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{name}");
        let first = runs[0]["first_output_ms"].as_f64().unwrap();
        assert!(
            first > 0.0 && runs[0]["total_ms"].as_f64().unwrap() >= first,
            "{name}: {s}"
        );
        assert!(s["peak_rss_kib"].as_u64().unwrap() > 0, "{name}");
        assert_eq!(s["density"][0]["instances"].as_array().unwrap().len(), 1);
        // The very same process on both sides.
        assert_eq!(
            s["container_args"],
            serde_json::json!(["/bin/busybox", "echo", "hello"])
        );
    }
    assert!(side(w, "kvmini-oci")["command"]
        .as_str()
        .unwrap()
        .contains("kvmini-oci-root run --bundle"));

    // runc's process is PID 1 of its namespace on the host's kernel; kvmini oci's runs on the
    // guest's kernel, a child of oci-init, with the VM's one vCPU.
    let host = host_release();
    let container = &side(w, "container")["isolation"];
    assert_eq!(container["kernel"], host.as_str(), "{container}");
    assert_eq!(container["pid"], "1", "{container}");
    let vm = &side(w, "kvmini-oci")["isolation"];
    assert_ne!(vm["kernel"], host.as_str(), "{vm}");
    assert_eq!(vm["kernel"], common::kernel_release().as_str(), "{vm}");
    let pid: u32 = vm["pid"].as_str().unwrap().parse().unwrap();
    assert!(pid > 1, "{vm}");
    assert_eq!(vm["cpus"], "1", "{vm}");

    // Every container of kvmini oci was deleted.
    let root = scratch("oci-compare-work").join("kvmini-oci-root");
    let (code, list, err) =
        common::kvmini_status(&["oci", "--root", root.to_str().unwrap(), "list", "-q"]);
    assert_eq!((code, list.as_str()), (0, ""), "{err}");
}

/// Runs `kvmini ARGS`, which must fail as bad input; returns its standard error.
fn bad_input(args: &[&str]) -> String {
    let out = kvmini(args);
    let (_, stderr) = texts(&out);
    assert_eq!(status(&out), BAD_INPUT, "{args:?}: {stderr}");
    stderr
}

#[test]
fn a_bundle_of_ones_own_is_checked_before_anything_runs() {
    let stderr = bad_input(&["compare", "--bundle", "/tmp", "--workload", "hello"]);
    assert!(stderr.contains("add --workload oci"), "{stderr}");
    let stderr = bad_input(&["compare", "--bundle", "/nonexistent-bundle", "--runs", "1"]);
    if kvmini_compare::find_runtime(None).is_ok() {
        assert!(
            stderr.contains("/nonexistent-bundle/config.json"),
            "{stderr}"
        );
    }
}

#[test]
fn a_missing_runtime_is_bad_input_with_the_install_command() {
    let stderr = bad_input(&["compare", "--runtime", "/nonexistent/runc", "--runs", "1"]);
    assert!(stderr.contains("/nonexistent/runc"), "{stderr}");
    assert!(stderr.contains("apt-get install runc"), "{stderr}");
}

#[test]
fn an_unknown_workload_is_bad_input_listing_the_known_ones() {
    let stderr = bad_input(&["compare", "--workload", "nope"]);
    assert!(stderr.contains("'nope'"), "{stderr}");
    for known in ["hello", "compute", "linux", "oci"] {
        assert!(stderr.contains(known), "{stderr}");
    }
}

#[test]
fn a_failing_runtime_is_reported_with_its_stderr() {
    if !kvm_or_skip() || !container_or_skip() {
        return;
    }
    let runtime = scratch("failing-runtime");
    std::fs::write(
        &runtime,
        "#!/bin/sh\necho \"failing-runtime: cannot run $*\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = scratch("failing-work");
    let out = kvmini(&[
        "compare",
        "--runtime",
        runtime.to_str().unwrap(),
        "--workload",
        "hello",
        "--runs",
        "1",
        "--parallel",
        "1",
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(status(&out), INTERNAL, "{stderr}");
    assert!(
        stderr.contains("container side of `hello` failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("failing-runtime: cannot run run --bundle"),
        "{stderr}"
    );
}

#[test]
fn bad_counts_are_bad_input() {
    for args in [
        &["compare", "--runs", "0"][..],
        &["compare", "--parallel", "0"],
        &["compare", "--runs", "many"],
    ] {
        bad_input(args);
    }
}
