//! `--trace`: real guests booted by the binary with their exits traced; asserts on the lines
//! (the serial port's bytes in order, the exit port's stop, filters, MMIO), on the trace file,
//! on serial output and trace lines sharing one file, and on bad filters refused.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{guest, kvm_or_skip, kvmini_bin, kvmini_status, scratch, status};

/// One exit line of a trace.
#[derive(Debug)]
struct Line {
    cpu: String,
    exit: String,
    addr: String,
    size: String,
    data: String,
    device: String,
    action: String,
}

/// The exit lines of a trace (the `#` lines are the column heads and the end line; kvmini's
/// own messages come after the end).
fn exit_lines(trace: &str) -> Vec<Line> {
    trace
        .lines()
        .take_while(|l| !is_end(l))
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            assert!(c.len() >= 9 && c[1] == "ms", "not a trace line: {l:?}");
            c[0].parse::<f64>().expect("time");
            Line {
                cpu: c[2].into(),
                exit: c[3].into(),
                addr: c[4].into(),
                size: c[5].into(),
                data: c[6].into(),
                device: c[7].into(),
                action: c[8..].join(" "),
            }
        })
        .collect()
}

fn is_end(line: &str) -> bool {
    line.starts_with('#') && line.contains(" ms  end: ")
}

/// The end line.
fn end_line(trace: &str) -> &str {
    let end = trace.lines().find(|l| is_end(l));
    end.unwrap_or_else(|| panic!("no end line in {trace}"))
}

/// The bytes written to the UART's transmit register, in order.
fn serial_bytes(lines: &[Line]) -> String {
    lines
        .iter()
        .filter(|l| l.exit == "io-out" && l.addr == "0x3f8")
        .flat_map(|l| l.data.split(','))
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte") as char)
        .collect()
}

#[test]
fn real_mode_guest_traces_each_serial_byte_and_its_exit() {
    if !kvm_or_skip() {
        return;
    }
    let hello = guest("hello16.bin");
    let (code, out, err) = kvmini_status(&["run", hello.to_str().unwrap(), "--trace"]);
    assert_eq!(code, 16, "{err}");
    assert_eq!(out, "Hello from real mode\n", "serial output is untouched");
    let lines = exit_lines(&err);
    assert_eq!(serial_bytes(&lines), "Hello from real mode\n");
    for l in lines
        .iter()
        .filter(|l| l.addr == "0x3f8" || l.addr == "0x3fd")
    {
        assert_eq!((l.cpu.as_str(), l.size.as_str()), ("0", "1"), "{l:?}");
        assert_eq!(
            (l.device.as_str(), l.action.as_str()),
            ("serial", "handled")
        );
    }
    // The guest polls the line status register before each byte: THR empty (0x20) and more.
    assert!(lines
        .iter()
        .any(|l| l.exit == "io-in" && l.addr == "0x3fd" && l.data == "60"));
    let last = lines.last().unwrap();
    assert_eq!(
        (last.exit.as_str(), last.addr.as_str(), last.data.as_str()),
        ("io-out", "0xf4", "10")
    );
    assert_eq!(last.device, "exit-port");
    assert_eq!(
        last.action,
        "stopped: guest wrote 16 to the exit port (0xf4)"
    );
    let end = end_line(&err);
    assert!(end.contains("; exit status 16; "), "{end}");
    let n = lines.len();
    assert!(end.ends_with(&format!(" {n} exits, {n} traced")), "{end}");
}

#[test]
fn a_filter_on_the_exit_port_gives_exactly_its_line() {
    if !kvm_or_skip() {
        return;
    }
    let image = guest("modeswitch.bin");
    let (code, out, err) = kvmini_status(&["run", image.to_str().unwrap(), "--trace=io-out:0xf4"]);
    assert_eq!(code, 3, "{err}");
    assert!(out.ends_with("modeswitch: long mode\n"), "{out}");
    let lines = exit_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    let l = &lines[0];
    assert_eq!(
        [&l.exit, &l.addr, &l.size, &l.data, &l.device],
        ["io-out", "0xf4", "1", "03", "exit-port"]
    );
    assert_eq!(l.action, "stopped: guest wrote 3 to the exit port (0xf4)");
    // Every exit was still made and handled; one was traced.
    assert!(end_line(&err).ends_with(" exits, 1 traced"), "{err}");
}

#[test]
fn the_modeswitch_guest_prints_from_each_mode_through_the_serial_port() {
    if !kvm_or_skip() {
        return;
    }
    let image = guest("modeswitch.bin");
    let (code, _, err) = kvmini_status(&["run", image.to_str().unwrap(), "--trace=io"]);
    assert_eq!(code, 3, "{err}");
    let lines = exit_lines(&err);
    assert_eq!(
        serial_bytes(&lines),
        "modeswitch: real mode\nmodeswitch: protected mode\nmodeswitch: long mode\n"
    );
    assert!(lines.iter().all(|l| l.exit.starts_with("io-")), "{err}");
}

#[test]
fn trace_file_takes_the_lines_of_an_elf_kernel() {
    if !kvm_or_skip() {
        return;
    }
    let path = scratch("hello-elf.trace");
    let image = guest("hello.elf");
    let (code, out, err) = kvmini_status(&[
        "run",
        image.to_str().unwrap(),
        "--trace-file",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
    let trace = std::fs::read_to_string(&path).unwrap();
    let lines = exit_lines(&trace);
    let text = serial_bytes(&lines);
    assert_eq!(text, out, "every serial byte, in order");
    assert!(text.starts_with("Hello from a 64-bit ELF kernel (entered via PVH)\n"));
    let last = lines.last().unwrap();
    assert_eq!((last.addr.as_str(), last.data.as_str()), ("0xf4", "00"));
    assert!(end_line(&trace).contains("; exit status 0; "), "{trace}");
}

#[test]
fn mmio_exits_show_their_address_and_that_nothing_claims_it() {
    if !kvm_or_skip() {
        return;
    }
    let image = guest("mmio.bin");
    let image = image.to_str().unwrap();
    let (code, _, err) = kvmini_status(&["run", image, "--mode", "long", "--trace=mmio"]);
    assert_eq!(code, 122, "{err}");
    let lines = exit_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    let l = &lines[0];
    assert_eq!(
        [&l.exit, &l.addr, &l.size, &l.data, &l.device],
        ["mmio-write", "0xd0000000", "4", "12345678", "unclaimed"]
    );
    assert_eq!(l.action, "crashed: unclaimed MMIO write at 0xd0000000");
    // The crash report still follows the trace.
    assert!(
        err.contains("kvmini: guest crashed: write of 4 bytes"),
        "{err}"
    );

    let args = [image, "--mode", "long", "--trace=mmio,io-out:0xf4"];
    let (code, _, err) =
        kvmini_status(&[&["run"][..], &args, &["--unclaimed-mmio", "ignore"]].concat());
    assert_eq!(code, 0x11, "the guest read all-ones: {err}");
    let seen: Vec<(String, String, String)> = exit_lines(&err)
        .into_iter()
        .map(|l| (l.exit, l.data, l.action))
        .collect();
    let expect = [
        ("mmio-write", "12345678", "dropped write"),
        ("mmio-read", "ffffffff", "all-ones read"),
        (
            "io-out",
            "11",
            "stopped: guest wrote 17 to the exit port (0xf4)",
        ),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(seen, expect);
}

#[test]
fn a_restored_vm_traces_from_where_it_was_saved() {
    if !kvm_or_skip() {
        return;
    }
    let dir = scratch("count-snapshot");
    let _ = std::fs::remove_dir_all(&dir);
    let count = guest("count.bin");
    let dir_arg = dir.to_str().unwrap();
    let args = [
        "run",
        count.to_str().unwrap(),
        "--mode",
        "long",
        "--snapshot",
        dir_arg,
    ];
    let (code, _, err) = kvmini_status(&args);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kvmini_status(&["restore", dir_arg, "--trace=io-out"]);
    assert_eq!(code, 42, "{err}");
    assert_eq!(out, "count 6\ncount 7\ncount 8\ncount 9\n");
    assert_eq!(serial_bytes(&exit_lines(&err)), out);
    assert!(end_line(&err).contains("; exit status 42; "), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Serial output and the trace written to one file: every line is whole, serial or trace,
/// even for a guest that writes without ever ending its line.
#[test]
fn serial_output_and_trace_lines_on_one_file_do_not_cut_each_other() {
    if !kvm_or_skip() {
        return;
    }
    let path = scratch("flood-and-trace.txt");
    let file = std::fs::File::create(&path).unwrap();
    let flood = guest("flood.bin");
    let mut cmd = Command::new(kvmini_bin());
    cmd.args(["run", flood.to_str().unwrap(), "--mode", "long"])
        .args(["--timeout", "0.5", "--trace"])
        // One open file behind both, as `2>&1` gives.
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    let out = common::output_within(cmd, Duration::from_secs(60));
    assert_eq!(status(&out), 124);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut trace = 0;
    let mut flood_lines = 0;
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with("kvmini: timed out after") {
            continue;
        }
        if line == "flood: writing forever" || line.bytes().all(|b| b == b'x') {
            flood_lines += 1;
            continue;
        }
        let l = &exit_lines(line)[0];
        assert!(
            l.exit.starts_with("io-") || l.exit == "interrupted",
            "{line}"
        );
        trace += 1;
    }
    assert!(
        trace > 100 && flood_lines >= 2,
        "{trace} trace lines, {flood_lines} serial"
    );
    assert!(text.contains("flood: writing forever\n"));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_filters_and_trace_files_are_refused_as_bad_input() {
    let hello = guest("hello16.bin");
    let hello = hello.to_str().unwrap();
    for (filter, says) in [
        ("--trace=pio", "'pio' is not an exit kind"),
        ("--trace=", "has an empty item"),
        ("--trace=io,,hlt", "has an empty item"),
        (
            "--trace=hlt:0x10",
            "only io and mmio kinds take a port or address range",
        ),
        ("--trace=io:0x3ff-0x3f8", "the range ends before it starts"),
        ("--trace=io:0x10000", "I/O ports go up to 0xffff"),
        ("--trace=mmio:0xzz", "'0xzz' in 'mmio:0xzz' is not a number"),
    ] {
        let (code, _, err) = kvmini_status(&["run", hello, filter]);
        assert_eq!(code, 120, "{filter}: {err}");
        assert!(err.contains(says), "{filter}: {err}");
        let (code, _, err) = kvmini_status(&["restore", "/nonexistent", filter]);
        assert_eq!(code, 120, "restore {filter}: {err}");
        assert!(err.contains(says), "restore {filter}: {err}");
    }
    // The file is opened before KVM is.
    let dir = scratch("");
    let (code, _, err) = kvmini_status(&["run", hello, "--trace-file", dir.to_str().unwrap()]);
    assert_eq!(code, 120, "{err}");
    assert!(err.contains("cannot create the trace file"), "{err}");
    if !kvm_or_skip() {
        return;
    }
    let both = scratch("serial-and-trace.txt");
    let both = both.to_str().unwrap();
    let serial = format!("file:{both}");
    let args = ["run", hello, "--serial", &serial, "--trace-file", both];
    let (code, _, err) = kvmini_status(&args);
    assert_eq!(code, 120, "{err}");
    assert!(err.contains("it is the --serial file too"), "{err}");
}
