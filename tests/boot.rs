//! Booting every demo guest, in every CPU mode, through the library and the binary; asserts
//! on the serial output and on how the VM stopped.

mod common;

use common::{config, guest, kvm_or_skip, kvmini, run, status, texts};
use kvmini::config::CpuMode;
use kvmini::StopReason;

fn boot_raw(name: &str, mode: CpuMode) -> (StopReason, i32, String) {
    let (mut c, buf) = config(guest(name));
    c.mode = Some(mode);
    let (outcome, text) = run(&c, &buf);
    (outcome.reason, outcome.exit_status, text)
}

#[test]
fn real_mode_guest_prints_and_exits_with_its_code() {
    if !kvm_or_skip() {
        return;
    }
    let (reason, code, text) = boot_raw("hello16.bin", CpuMode::Real);
    assert_eq!(text, "Hello from real mode\n");
    assert!(matches!(reason, StopReason::GuestExit(16)), "{reason:?}");
    assert_eq!(code, 16);
}

#[test]
fn protected_mode_guest_prints_and_exits_with_its_code() {
    if !kvm_or_skip() {
        return;
    }
    let (reason, code, text) = boot_raw("hello32.bin", CpuMode::Protected);
    assert_eq!(text, "Hello from protected mode\n");
    assert!(matches!(reason, StopReason::GuestExit(32)), "{reason:?}");
    assert_eq!(code, 32);
}

#[test]
fn long_mode_guest_prints_and_exits_with_its_code() {
    if !kvm_or_skip() {
        return;
    }
    let (reason, code, text) = boot_raw("hello64.bin", CpuMode::Long);
    assert_eq!(text, "Hello from long mode\n");
    assert!(matches!(reason, StopReason::GuestExit(64)), "{reason:?}");
    assert_eq!(code, 64);
}

#[test]
fn modeswitch_walks_from_real_to_protected_to_long_mode() {
    if !kvm_or_skip() {
        return;
    }
    let (reason, code, text) = boot_raw("modeswitch.bin", CpuMode::Real);
    assert_eq!(
        text,
        "modeswitch: real mode\nmodeswitch: protected mode\nmodeswitch: long mode\n"
    );
    assert!(matches!(reason, StopReason::GuestExit(3)), "{reason:?}");
    assert_eq!(code, 3);
}

#[test]
fn elf_kernel_is_entered_through_its_pvh_note() {
    if !kvm_or_skip() {
        return;
    }
    let (c, buf) = config(guest("hello.elf"));
    let (outcome, text) = run(&c, &buf);
    // 16 MiB of RAM: below the EBDA, and from 1 MiB up.
    assert_eq!(
        text,
        "Hello from a 64-bit ELF kernel (entered via PVH)\nmemory map: 2 entries\n"
    );
    assert!(
        matches!(outcome.reason, StopReason::GuestExit(0)),
        "{:?}",
        outcome.reason
    );
    assert!(
        outcome.stats.image.contains("PVH entry at 0x100000"),
        "{}",
        outcome.stats.image
    );
}

#[test]
fn pvh_memory_map_follows_guest_memory_size() {
    if !kvm_or_skip() {
        return;
    }
    // 4 GiB of RAM is split around the 32-bit MMIO hole: a third entry above 4 GiB.
    let (mut c, buf) = config(guest("hello.elf"));
    c.mem_size = Some(4 << 30);
    let (_, text) = run(&c, &buf);
    assert!(text.contains("memory map: 3 entries"), "{text}");
}

/// A copy of hello.elf whose PVH note has another type, so no PVH entry is found.
fn elf_without_pvh_note() -> std::path::PathBuf {
    let mut elf = std::fs::read(guest("hello.elf")).unwrap();
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phnum) = (u64_at(&elf, 0x20), u16_at(&elf, 0x38));
    let mut patched = 0;
    for i in 0..phnum {
        let ph = phoff + i * 56;
        if u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 4 {
            // PT_NOTE: the first note's n_type is at offset 8 of the segment.
            let type_at = u64_at(&elf, ph + 8) + 8;
            assert_eq!(
                u32::from_le_bytes(elf[type_at..type_at + 4].try_into().unwrap()),
                18
            );
            elf[type_at..type_at + 4].copy_from_slice(&0x1234u32.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 1, "hello.elf has one PT_NOTE");
    let path = common::scratch("hello-nopvh.elf");
    std::fs::write(&path, elf).unwrap();
    path
}

#[test]
fn elf_kernel_without_pvh_note_is_entered_in_long_mode() {
    if !kvm_or_skip() {
        return;
    }
    let (c, buf) = config(elf_without_pvh_note());
    let (outcome, text) = run(&c, &buf);
    assert_eq!(
        text,
        "Hello from a 64-bit ELF kernel (entered via 64-bit entry)\n"
    );
    assert!(matches!(outcome.reason, StopReason::GuestExit(0)));
    assert!(
        outcome.stats.image.contains("64-bit entry"),
        "{}",
        outcome.stats.image
    );
}

#[test]
fn binary_boots_long_mode_guest_and_prints_stats() {
    if !kvm_or_skip() {
        return;
    }
    let hello64 = guest("hello64.bin");
    let out = kvmini(&[
        "run",
        hello64.to_str().unwrap(),
        "--mode",
        "long",
        "--stats",
    ]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(stdout, "Hello from long mode\n");
    assert_eq!(status(&out), 64, "{stderr}");
    assert!(
        stderr.contains("stopped:   guest wrote 64 to the exit port"),
        "{stderr}"
    );
    // 21 characters, each after one LSR poll, plus the exit-port write.
    assert!(stderr.contains("io-out 22, io-in 21"), "{stderr}");
    assert!(stderr.contains("total wall"), "{stderr}");
}

#[test]
fn binary_prints_json_stats() {
    if !kvm_or_skip() {
        return;
    }
    let elf = guest("hello.elf");
    let out = kvmini(&["run", elf.to_str().unwrap(), "--stats=json"]);
    let (_, stderr) = texts(&out);
    assert_eq!(status(&out), 0, "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(stderr.trim()).expect("stderr is one JSON object");
    assert_eq!(v["exit_status"], 0);
    assert!(v["exits"]["io_out"].as_u64().unwrap() > 40);
    assert!(v["first_serial_byte_ms"].as_f64().unwrap() > 0.0);
    assert!(v["total_ms"].as_f64().unwrap() >= v["first_serial_byte_ms"].as_f64().unwrap());
}

#[test]
fn serial_output_goes_to_a_file_or_nowhere() {
    if !kvm_or_skip() {
        return;
    }
    let hello16 = guest("hello16.bin");
    let file = common::scratch("serial.txt");
    let arg = format!("file:{}", file.display());
    let out = kvmini(&["run", hello16.to_str().unwrap(), "--serial", &arg]);
    assert_eq!(status(&out), 16);
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "Hello from real mode\n"
    );

    let out = kvmini(&[
        "run",
        hello16.to_str().unwrap(),
        "--serial",
        "none",
        "--stats=json",
    ]);
    assert_eq!(status(&out), 16);
    assert!(out.stdout.is_empty());
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["serial_bytes"], 21);
}

#[test]
fn raw_image_can_be_loaded_and_entered_elsewhere() {
    if !kvm_or_skip() {
        return;
    }
    // hello16 far-jumps to 0x1000:offset itself, so it only runs correctly from 0x10000;
    // hello64 is position-dependent too. Instead: load hello16 at its usual place, but name
    // the load address and entry explicitly, which must behave exactly like the defaults.
    let (mut c, buf) = config(guest("hello16.bin"));
    c.load_addr = Some(0x10000);
    c.entry = Some(0x10000);
    let (outcome, text) = run(&c, &buf);
    assert_eq!(text, "Hello from real mode\n");
    assert!(matches!(outcome.reason, StopReason::GuestExit(16)));
}

#[test]
fn qemus_debug_exit_convention_ends_the_run_with_v_shifted_left_plus_one() {
    if !kvm_or_skip() {
        return;
    }
    let hello = guest("hello64.bin");
    let hello = hello.to_str().unwrap();
    // hello64 writes 64 to port 0xf4, where test frameworks for QEMU put the device.
    let qemu = ["--debug-exit", "qemu,iobase=0xf4,iosize=4"];
    let (code, out, err) =
        common::kvmini_status(&[&["run", hello, "--mode", "long"][..], &qemu].concat());
    assert_eq!(out, "Hello from long mode\n");
    assert_eq!(code, (64 << 1) | 1, "{err}");
    assert!(
        err.contains("debug-exit value 0x40 gives status 129"),
        "{err}"
    );
    // At QEMU's default ports the device is elsewhere, and kvmini's exit port is gone: the
    // write to 0xf4 is unclaimed and the guest halts.
    let (code, _, err) = common::kvmini_status(&[
        "run",
        hello,
        "--mode",
        "long",
        "--debug-exit",
        "qemu",
        "--stats",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(at w 0xf4)"), "{err}");
}

/// One read(2) returns at most 0x7ffff000 bytes, so an initrd of 2 GiB or more loads only if
/// the loader reads on; the kernel (an ELF) is read by the same reader. The file is sparse,
/// so it costs no disk; loading it touches 2.1 GiB of guest memory, which is slow on a host
/// that emulates paging.
#[test]
fn an_initrd_of_more_than_2_gib_loads_whole() {
    if !kvm_or_skip() {
        return;
    }
    let initrd = common::scratch("big-initrd.cpio");
    std::fs::File::create(&initrd)
        .unwrap()
        .set_len(2100 << 20)
        .unwrap();
    let out = common::kvmini_within(
        &[
            "run",
            guest("hello.elf").to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--mem",
            "3G",
            "--timeout",
            "300",
            "--stats",
        ],
        std::time::Duration::from_secs(600),
    );
    std::fs::remove_file(&initrd).unwrap();
    let (stdout, err) = texts(&out);
    assert_eq!(status(&out), 0, "{err}");
    assert!(
        stdout.starts_with("Hello from a 64-bit ELF kernel"),
        "{stdout}"
    );
    assert!(err.contains(", initrd 2 GiB at 0x"), "{err}");
}
