//! kvmini as the runner of a kernel's `cargo test`: examples/kernel-tests is a freestanding
//! kernel whose test targets are whole kernels, and the `runner` line of its
//! .cargo/config.toml boots each one in kvmini. Its `cargo test` runs here with the kvmini
//! just built (first on PATH, where the runner line finds `kvmini`), as README.md shows it:
//! the passing kernel passes, and the kernel that fails on purpose fails cargo with its panic
//! message. Also `--success-status`, the option that makes the kernel's success status 0.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{guest, kvm_or_skip, kvmini_bin, kvmini_status, output_within, repo_root, texts};
use kvmini::status::{BAD_INPUT, NOT_SUCCESS};

/// Far more than building the example (a few seconds) and booting its kernels takes.
const CARGO_LIMIT: Duration = Duration::from_secs(900);

/// Settings of the calling environment that would take the place of the example's own
/// .cargo/config.toml (its target, flags and runner).
const OVERRIDES: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER",
];

fn example_dir() -> PathBuf {
    repo_root().join("examples/kernel-tests")
}

/// `cargo test ARGS` in the example, with the kvmini under test first on PATH and a target
/// directory of its own (under the repository's target/, so that it waits on no other
/// build's lock); standard output and error captured.
fn cargo_test(args: &[&str]) -> Output {
    let kvmini_dir = kvmini_bin().parent().unwrap().to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(kvmini_dir).chain(std::env::split_paths(&path)))
            .unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("test")
        .args(args)
        .current_dir(example_dir())
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", repo_root().join("target/kernel-tests"))
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in OVERRIDES {
        cmd.env_remove(var);
    }
    output_within(cmd, CARGO_LIMIT)
}

/// Without KVM the kernels cannot boot, but they still build.
fn kvm_or_build_only(args: &[&str]) -> bool {
    if kvm_or_skip() {
        return true;
    }
    let out = cargo_test(&[args, &["--no-run"]].concat());
    let (_, err) = texts(&out);
    assert!(out.status.success(), "the example does not build: {err}");
    false
}

#[test]
fn cargo_test_boots_each_test_kernel_in_kvmini_and_passes() {
    if !kvm_or_build_only(&[]) {
        return;
    }
    let out = cargo_test(&[]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("Running tests/basic.rs"), "{stderr}");
    // The intentionally failing kernel needs its feature.
    assert!(!stderr.contains("tests/failing.rs"), "{stderr}");
    for line in [
        "running 3 tests in the kernel",
        "test basic::arithmetic ... ok",
        "test basic::formatting ... (formatted \"0xff/ héllo\")\nok",
        "test basic::privilege ... ok",
        "kernel test result: ok. 3 passed",
    ] {
        assert!(stdout.contains(line), "expected {line:?} in: {stdout}");
    }
}

#[test]
fn a_failing_test_kernel_fails_cargo_test_with_its_panic_message() {
    let args = ["--features", "failing", "--test", "failing"];
    if !kvm_or_build_only(&args) {
        return;
    }
    let out = cargo_test(&args);
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "test failing::passes ... ok",
        "test failing::fails ... FAILED",
        "panicked at tests/failing.rs:",
        "assertion `left == right` failed: the answer is off by one\n  left: 41\n right: 42",
        "kernel test result: FAILED. 1 passed; 1 failed; 1 not run",
    ] {
        assert!(stdout.contains(line), "expected {line:?} in: {stdout}");
    }
    // A panic ends the kernel: the test after the failing one never runs.
    assert!(!stdout.contains("never_runs"), "{stdout}");
    // Cargo names the runner and the status the kernel's failure code gave.
    for says in [
        "kvmini run --debug-exit qemu,iobase=0xf4,iosize=4 --success-status 33",
        "(exit status: 35)",
    ] {
        assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
    }
}

#[test]
fn the_success_status_becomes_0_and_a_silent_stop_becomes_1() {
    if !kvm_or_skip() {
        return;
    }
    let hello64 = guest("hello64.bin");
    let hello64 = hello64.to_str().unwrap();
    // hello64 writes 64 to kvmini's exit port.
    let run =
        |extra: &[&str]| kvmini_status(&[&["run", hello64, "--mode", "long"], extra].concat());
    let (code, out, err) = run(&["--success-status", "64"]);
    assert_eq!((code, out.as_str()), (0, "Hello from long mode\n"), "{err}");
    // Any other status stays what it was.
    let (code, _, err) = run(&["--success-status", "33"]);
    assert_eq!(code, 64, "{err}");
    // With QEMU's device at its default ports the write to 0xf4 goes nowhere and the guest
    // halts: a clean stop that never gave the success status fails.
    let (code, _, err) = run(&["--debug-exit", "qemu", "--success-status", "33"]);
    assert_eq!(code, NOT_SUCCESS, "{err}");
    assert!(
        err.contains(
            "the guest stopped without giving the success status (--success-status): guest halted"
        ),
        "{err}"
    );
}

#[test]
fn a_success_status_that_no_guest_gives_is_bad_input() {
    for bad in ["0", "120", "300", "x"] {
        let (code, _, err) = kvmini_status(&["run", "/dev/null", "--success-status", bad]);
        assert_eq!(code, BAD_INPUT, "{bad}: {err}");
        let says = match bad {
            "x" => "'x' is not a number",
            _ => "is not a status a guest gives; use 1 to 119",
        };
        assert!(err.contains(says), "{bad}: {err}");
    }
}
