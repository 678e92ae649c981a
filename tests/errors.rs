//! Bad input and misbehaving guests: each gets a clear message and its documented exit
//! status, never a panic or a hang.

mod common;

use common::{guest, kvm_or_skip, kvmini, scratch, status, texts};
use kvmini::status::{BAD_INPUT, GUEST_CRASH, OUTPUT_LIMIT, TIMEOUT};

/// Runs kvmini and returns (status, stderr).
fn run_err(args: &[&str]) -> (i32, String) {
    let (code, _, stderr) = common::kvmini_status(args);
    (code, stderr)
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn missing_image_is_bad_input() {
    let (code, err) = run_err(&["run", "/nonexistent/kernel.elf"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.contains("cannot read /nonexistent/kernel.elf: No such file"),
        "{err}"
    );
}

#[test]
fn empty_image_is_bad_input() {
    if !kvm_or_skip() {
        return;
    }
    let empty = scratch("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let (code, err) = run_err(&["run", path(&empty)]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn truncated_elf_is_bad_input() {
    if !kvm_or_skip() {
        return;
    }
    let elf = std::fs::read(guest("hello.elf")).unwrap();
    // Cut inside the program header table, and inside the first segment's data.
    for (name, len, what) in [
        ("cut-headers.elf", 100, "program header table"),
        ("cut-data.elf", 0x1100, "segment"),
    ] {
        let cut = scratch(name);
        std::fs::write(&cut, &elf[..len]).unwrap();
        let (code, err) = run_err(&["run", path(&cut)]);
        assert_eq!(code, BAD_INPUT, "{err}");
        assert!(err.contains("is truncated") && err.contains(what), "{err}");
    }
    let cut = scratch("cut-ehdr.elf");
    std::fs::write(&cut, &elf[..40]).unwrap();
    let (code, err) = run_err(&["run", path(&cut)]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("ELF header"), "{err}");
}

#[test]
fn corrupt_elf_header_is_bad_input() {
    if !kvm_or_skip() {
        return;
    }
    let mut elf = std::fs::read(guest("hello.elf")).unwrap();
    elf[0x12] = 3; // e_machine = EM_386
    let bad = scratch("i386.elf");
    std::fs::write(&bad, &elf).unwrap();
    let (code, err) = run_err(&["run", path(&bad)]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("not x86-64"), "{err}");
}

#[test]
fn elf_that_does_not_fit_in_memory_is_bad_input() {
    if !kvm_or_skip() {
        return;
    }
    // hello.elf loads at 1 MiB; with 1 MiB of RAM there is no room.
    let (code, err) = run_err(&["run", path(&guest("hello.elf")), "--mem", "1M"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.contains("does not fit in 1 MiB of guest memory; raise --mem"),
        "{err}"
    );
}

#[test]
fn entry_point_outside_memory_is_bad_input() {
    if !kvm_or_skip() {
        return;
    }
    let (code, err) = run_err(&[
        "run",
        path(&guest("hello64.bin")),
        "--mode",
        "long",
        "--entry",
        "0x2000000",
    ]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.contains("entry point 0x2000000 is outside guest memory (16 MiB)"),
        "{err}"
    );
}

#[test]
fn zero_and_absurd_memory_sizes_are_bad_input() {
    let (code, err) = run_err(&["run", path(&guest("hello16.bin")), "--mem", "0"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("too small"), "{err}");

    let (code, err) = run_err(&["run", path(&guest("hello16.bin")), "--mem", "1024T"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.contains("more than this host's") && err.contains("lower --mem"),
        "{err}"
    );

    let (code, err) = run_err(&["run", path(&guest("hello16.bin")), "--mem", "lots"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("is not a size"), "{err}");
}

#[test]
fn usage_errors_are_bad_input() {
    let (code, err) = run_err(&["run"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    let (code, err) = run_err(&["run", "x.bin", "--serial", "tty"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("not stdio, none or file:PATH"), "{err}");
    let (code, _) = run_err(&["run", "x.bin", "--timeout", "0"]);
    assert_eq!(code, BAD_INPUT);
}

#[test]
fn raw_only_options_are_refused_for_elf() {
    if !kvm_or_skip() {
        return;
    }
    let (code, err) = run_err(&["run", path(&guest("hello.elf")), "--load-addr", "0x200000"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.contains("--load-addr applies to raw images only"),
        "{err}"
    );
}

#[test]
fn triple_fault_is_a_crash_with_a_register_dump() {
    if !kvm_or_skip() {
        return;
    }
    let out = kvmini(&[
        "run",
        path(&guest("triple.bin")),
        "--mode",
        "long",
        "--timeout",
        "30",
    ]);
    let (stdout, err) = texts(&out);
    assert_eq!(stdout, "triple: faulting now\n");
    assert_eq!(status(&out), GUEST_CRASH, "{err}");
    // A host with hardware virtualization reports the triple fault; an emulating host may
    // report that it could not emulate the instruction. Either is a crash, fully reported.
    assert!(
        err.contains("guest crashed: triple fault")
            || err.contains("guest crashed: emulation failure"),
        "{err}"
    );
    // ud2 (0f 0b) is the faulting instruction.
    assert!(err.contains(": 0f 0b"), "code bytes at RIP: {err}");
    for field in [
        "rip=0x",
        "rax=0x",
        "r15=0x",
        "cr0=0x",
        "cr3=0x",
        "efer=0x",
        "  cs  sel=0x0008",
        "idt base=0x0 limit=0x0",
    ] {
        assert!(err.contains(field), "missing {field}: {err}");
    }
}

#[test]
fn spinning_guest_is_stopped_by_the_timeout() {
    if !kvm_or_skip() {
        return;
    }
    let start = std::time::Instant::now();
    let out = kvmini(&[
        "run",
        path(&guest("spin.bin")),
        "--mode",
        "long",
        "--timeout",
        "1",
    ]);
    let (stdout, err) = texts(&out);
    assert_eq!(stdout, "spin: looping forever\n");
    assert_eq!(status(&out), TIMEOUT, "{err}");
    assert!(err.contains("timed out after 1 s (--timeout)"), "{err}");
    // Not a timing assertion: proof that the timeout and not something else ended it.
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
}

#[test]
fn unclaimed_mmio_is_a_crash_by_default_and_all_ones_when_ignored() {
    if !kvm_or_skip() {
        return;
    }
    let out = kvmini(&[
        "run",
        path(&guest("mmio.bin")),
        "--mode",
        "long",
        "--timeout",
        "30",
    ]);
    let (stdout, err) = texts(&out);
    assert_eq!(stdout, "mmio: touching unmapped memory\n");
    assert_eq!(status(&out), GUEST_CRASH, "{err}");
    assert!(
        err.contains(
            "write of 4 bytes at guest-physical 0xd0000000, which is neither RAM nor a device"
        ),
        "{err}"
    );
    assert!(err.contains("rip=0x"), "{err}");

    let out = kvmini(&[
        "run",
        path(&guest("mmio.bin")),
        "--mode",
        "long",
        "--unclaimed-mmio",
        "ignore",
        "--stats=json",
    ]);
    let (_, err) = texts(&out);
    // The guest read back all-ones and says so with status 0x11.
    assert_eq!(status(&out), 0x11, "{err}");
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(v["unclaimed"]["mmio_writes"], 1);
    assert_eq!(v["unclaimed"]["mmio_reads"], 1);
}

#[test]
fn serial_flood_is_cut_at_the_output_limit() {
    if !kvm_or_skip() {
        return;
    }
    let file = scratch("flood.txt");
    let arg = format!("file:{}", file.display());
    let out = kvmini(&[
        "run",
        path(&guest("flood.bin")),
        "--mode",
        "long",
        "--serial",
        &arg,
        "--serial-limit",
        "64K",
        "--timeout",
        "60",
    ]);
    let (_, err) = texts(&out);
    assert_eq!(status(&out), OUTPUT_LIMIT, "{err}");
    assert!(
        err.contains("wrote more than 65536 bytes to the serial port (--serial-limit)"),
        "{err}"
    );
    let written = std::fs::read(&file).unwrap();
    assert_eq!(written.len(), 65536);
    assert!(written.starts_with(b"flood: writing forever\nxxx"));
}

#[test]
fn serial_flood_without_a_limit_still_ends_at_the_timeout() {
    if !kvm_or_skip() {
        return;
    }
    let out = kvmini(&[
        "run",
        path(&guest("flood.bin")),
        "--mode",
        "long",
        "--serial",
        "none",
        "--timeout",
        "1",
        "--stats=json",
    ]);
    let (_, err) = texts(&out);
    assert_eq!(status(&out), TIMEOUT, "{err}");
    let json = err.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(v["serial_bytes"].as_u64().unwrap() > 1000, "{json}");
}

#[test]
fn vcpu_and_cpuid_options_are_checked() {
    let hello = guest("hello16.bin");
    let (code, err) = run_err(&["run", path(&hello), "--cpus", "0"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("--cpus 0 is out of range"), "{err}");
    let (code, err) = run_err(&["run", path(&hello), "--cpu-features", "avx2"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.contains("features can only be hidden; write -avx2"),
        "{err}"
    );
    let (code, err) = run_err(&["run", path(&hello), "--cpu-features", "-avx9"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.contains("unknown CPU feature 'avx9'; known: pclmulqdq"),
        "{err}"
    );
    if !kvm_or_skip() {
        return;
    }
    // Other vCPUs are started by a guest through the local APICs, which raw guests lack.
    let (code, err) = run_err(&["run", path(&hello), "--cpus", "2"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("--cpus 2 needs a Linux kernel"), "{err}");
}
