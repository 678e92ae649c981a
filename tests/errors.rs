//! Bad input and misbehaving guests: each gets a clear message and its documented exit
//! status, never a panic or a hang. Two tables: inputs kvmini must refuse (status 120), and
//! guests that end badly, each with what kvmini must print.

mod common;

use std::path::PathBuf;

use std::time::Duration;

use common::{guest, kvm_or_skip, kvmini, kvmini_within, scratch, status, texts};
use kvmini::status::{BAD_INPUT, GUEST_CRASH, INTERNAL, OUTPUT_LIMIT, TIMEOUT};

/// How long any one run here may take before the test calls it a hang: far more than any of
/// them needs.
const HANG: Duration = Duration::from_secs(120);

/// The image a case runs.
enum Image {
    /// No image argument at all.
    None,
    /// A path that is not there.
    Missing(&'static str),
    /// A path that is there but is no image (a device).
    Path(&'static str),
    /// A built guest.
    Guest(&'static str),
    /// The first bytes of a built guest: (file name, guest, length).
    Cut(&'static str, &'static str, usize),
    /// A file made for the case from a built guest: (file name, guest, how to change it).
    Made(&'static str, &'static str, fn(Vec<u8>) -> Vec<u8>),
}

impl Image {
    fn path(&self) -> Option<PathBuf> {
        match self {
            Image::None => None,
            Image::Missing(p) | Image::Path(p) => Some(PathBuf::from(p)),
            Image::Guest(name) => Some(guest(name)),
            Image::Cut(name, from, len) => {
                let made = scratch(name);
                std::fs::write(&made, &std::fs::read(guest(from)).unwrap()[..*len]).unwrap();
                Some(made)
            }
            Image::Made(name, from, change) => {
                let made = scratch(name);
                std::fs::write(&made, change(std::fs::read(guest(from)).unwrap())).unwrap();
                Some(made)
            }
        }
    }
}

/// An input kvmini must refuse with status 120 and a message containing every `says`.
struct BadInput {
    case: &'static str,
    image: Image,
    args: &'static [&'static str],
    /// The check happens after /dev/kvm is opened, so it needs KVM.
    needs_kvm: bool,
    says: &'static [&'static str],
}

const fn bad(
    case: &'static str,
    image: Image,
    args: &'static [&'static str],
    needs_kvm: bool,
    says: &'static [&'static str],
) -> BadInput {
    BadInput {
        case,
        image,
        args,
        needs_kvm,
        says,
    }
}

/// `elf` with `count` more program headers, each a PT_NOTE segment over the same `size`
/// bytes of zeros (every one of them an empty note) appended to the file.
fn with_notes(mut elf: Vec<u8>, count: usize, size: u64) -> Vec<u8> {
    let word = |v: &[u8], at: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&v[at..at + n]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phnum) = (word(&elf, 0x20, 8), word(&elf, 0x38, 2));
    let mut table = elf[phoff..phoff + phnum * 56].to_vec();
    elf.resize(elf.len().next_multiple_of(8), 0);
    let zeros = elf.len() as u64;
    elf.resize(elf.len() + size as usize, 0);
    for _ in 0..count {
        table.extend_from_slice(&4u32.to_le_bytes()); // p_type = PT_NOTE
        table.extend_from_slice(&4u32.to_le_bytes()); // p_flags = R
        for field in [zeros, 0, 0, size, size, 4] {
            // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
            table.extend_from_slice(&field.to_le_bytes());
        }
    }
    let new_phoff = elf.len() as u64;
    elf.extend_from_slice(&table);
    elf[0x20..0x28].copy_from_slice(&new_phoff.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&((phnum + count) as u16).to_le_bytes());
    elf
}

const BAD_INPUTS: &[BadInput] = &[
    bad(
        "missing image",
        Image::Missing("/nonexistent/kernel.elf"),
        &[],
        false,
        &["cannot read /nonexistent/kernel.elf: No such file"],
    ),
    bad(
        "empty image",
        Image::Made("empty.bin", "hello16.bin", |_| Vec::new()),
        &[],
        true,
        &["is empty"],
    ),
    bad(
        "ELF cut inside the program header table",
        Image::Cut("cut-headers.elf", "hello.elf", 100),
        &[],
        true,
        &["is truncated", "program header table"],
    ),
    bad(
        "ELF cut inside the first segment's data",
        Image::Cut("cut-data.elf", "hello.elf", 0x1100),
        &[],
        true,
        &["is truncated", "segment"],
    ),
    bad(
        "ELF cut inside the ELF header",
        Image::Cut("cut-ehdr.elf", "hello.elf", 40),
        &[],
        true,
        &["ELF header"],
    ),
    // Walking 3,000 segments of empty notes, 12 bytes at a time, took minutes.
    bad(
        "ELF with thousands of note segments",
        Image::Made("notes.elf", "hello.elf", |v| with_notes(v, 3000, 1 << 20)),
        &["--timeout", "10"],
        true,
        &["PT_NOTE segments; kvmini reads at most 16"],
    ),
    bad(
        "ELF with a megabyte of notes",
        Image::Made("big-note.elf", "hello.elf", |v| with_notes(v, 1, 1 << 20)),
        &["--timeout", "10"],
        true,
        &["PT_NOTE segments hold 1 MiB of notes; kvmini reads at most 64 KiB"],
    ),
    bad(
        "a character device as the image",
        Image::Path("/dev/zero"),
        &["--timeout", "10"],
        true,
        &["/dev/zero is not a regular file: it is a character device"],
    ),
    bad(
        "a random device as the image",
        Image::Path("/dev/urandom"),
        &["--timeout", "10"],
        true,
        &["/dev/urandom is not a regular file"],
    ),
    bad(
        "ELF for another machine",
        Image::Made("i386.elf", "hello.elf", |mut v| {
            v[0x12] = 3; // e_machine = EM_386
            v
        }),
        &[],
        true,
        &["not x86-64"],
    ),
    // hello.elf loads at 1 MiB; with 1 MiB of RAM there is no room.
    bad(
        "ELF that does not fit",
        Image::Guest("hello.elf"),
        &["--mem", "1M"],
        true,
        &["does not fit in 1 MiB of guest memory; raise --mem"],
    ),
    bad(
        "entry point outside memory",
        Image::Guest("hello64.bin"),
        &["--mode", "long", "--entry", "0x2000000"],
        true,
        &["entry point 0x2000000 is outside guest memory (16 MiB)"],
    ),
    bad(
        "zero memory",
        Image::Guest("hello16.bin"),
        &["--mem", "0"],
        false,
        &["too small"],
    ),
    bad(
        "more memory than the host has",
        Image::Guest("hello16.bin"),
        &["--mem", "1024T"],
        false,
        &["more than this host's", "lower --mem"],
    ),
    bad(
        "memory size that is not a size",
        Image::Guest("hello16.bin"),
        &["--mem", "lots"],
        false,
        &["is not a size"],
    ),
    bad("no image", Image::None, &[], false, &[]),
    bad(
        "unknown serial output",
        Image::Missing("x.bin"),
        &["--serial", "tty"],
        false,
        &["not stdio, none or file:PATH"],
    ),
    bad(
        "zero timeout",
        Image::Missing("x.bin"),
        &["--timeout", "0"],
        false,
        &["must be more than 0 seconds"],
    ),
    bad(
        "infinite timeout",
        Image::Missing("x.bin"),
        &["--timeout", "inf"],
        false,
        &["'inf' is more than the longest timeout, 1000000000 seconds"],
    ),
    bad(
        "timeout past the longest",
        Image::Missing("x.bin"),
        &["--timeout", "1e10"],
        false,
        &["'1e10' is more than the longest timeout, 1000000000 seconds"],
    ),
    bad(
        "output limit too large to count",
        Image::Missing("x.bin"),
        &["--serial-limit", "99999999T"],
        false,
        &["'99999999T' is too large"],
    ),
    bad(
        "raw-image option for an ELF",
        Image::Guest("hello.elf"),
        &["--load-addr", "0x200000"],
        true,
        &["--load-addr applies to raw images only"],
    ),
    bad(
        "no vCPUs",
        Image::Guest("hello16.bin"),
        &["--cpus", "0"],
        false,
        &["--cpus 0 is out of range"],
    ),
    bad(
        "a CPU feature to add",
        Image::Guest("hello16.bin"),
        &["--cpu-features", "avx2"],
        false,
        &["features can only be hidden; write -avx2"],
    ),
    bad(
        "an unknown CPU feature",
        Image::Guest("hello16.bin"),
        &["--cpu-features", "-avx9"],
        false,
        &["unknown CPU feature 'avx9'; known: pclmulqdq"],
    ),
    bad(
        "a debug-exit device over the serial port",
        Image::Guest("hello64.bin"),
        &["--mode", "long", "--debug-exit", "qemu,iobase=0x3f8"],
        false,
        &["--debug-exit iobase=0x3f8 runs into the serial port"],
    ),
    bad(
        "a debug-exit device of another kind",
        Image::Guest("hello64.bin"),
        &["--debug-exit", "isa"],
        false,
        &["'isa' is not kvmini or qemu"],
    ),
    // Other vCPUs are started by a guest through the local APICs, which raw guests lack.
    bad(
        "two vCPUs for a raw image",
        Image::Guest("hello16.bin"),
        &["--cpus", "2"],
        true,
        &["--cpus 2 needs a Linux kernel"],
    ),
];

#[test]
fn bad_input_is_refused_with_status_120_and_a_message_that_says_why() {
    let kvm = kvm_or_skip();
    for case in BAD_INPUTS.iter().filter(|c| kvm || !c.needs_kvm) {
        let image = case.image.path();
        let mut args = vec!["run".to_string()];
        args.extend(image.iter().map(|p| p.display().to_string()));
        args.extend(case.args.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kvmini_within(&args, HANG);
        let (code, err) = (status(&out), texts(&out).1);
        assert_eq!(code, BAD_INPUT, "{}: {err}", case.case);
        for says in case.says {
            assert!(
                err.contains(says),
                "{}: expected {says:?} in: {err}",
                case.case
            );
        }
    }
}

/// A guest that ends badly: what kvmini must print and the status it must end with.
struct BadGuest {
    guest: &'static str,
    args: &'static [&'static str],
    /// Its serial output on standard output, exactly.
    stdout: &'static str,
    status: i32,
    /// Lines of kvmini's report on standard error.
    says: &'static [&'static str],
}

/// Runs the guest in long mode; returns standard error after checking the common shape.
fn expect(g: &BadGuest) -> String {
    let mut args = vec!["run", "--mode", "long"];
    let path = guest(g.guest);
    args.insert(1, path.to_str().unwrap());
    args.extend(g.args);
    let out = kvmini(&args);
    let (stdout, err) = texts(&out);
    assert_eq!(stdout, g.stdout, "{}: {err}", g.guest);
    assert_eq!(status(&out), g.status, "{}: {err}", g.guest);
    for says in g.says {
        assert!(
            err.contains(says),
            "{}: expected {says:?} in: {err}",
            g.guest
        );
    }
    err
}

#[test]
fn triple_fault_is_a_crash_with_a_register_dump() {
    if !kvm_or_skip() {
        return;
    }
    let err = expect(&BadGuest {
        guest: "triple.bin",
        args: &["--timeout", "30"],
        stdout: "triple: faulting now\n",
        status: GUEST_CRASH,
        // ud2 (0f 0b) is the faulting instruction, then the registers.
        says: &[
            ": 0f 0b",
            "rip=0x",
            "rax=0x",
            "r15=0x",
            "cr0=0x",
            "cr3=0x",
            "efer=0x",
            "  cs  sel=0x0008",
            "idt base=0x0 limit=0x0",
        ],
    });
    // A host with hardware virtualization reports the triple fault; an emulating host may
    // report that it could not emulate the instruction. Either is a crash, fully reported.
    assert!(
        err.contains("guest crashed: triple fault")
            || err.contains("guest crashed: emulation failure"),
        "{err}"
    );
}

#[test]
fn spinning_guest_is_stopped_by_the_timeout() {
    if !kvm_or_skip() {
        return;
    }
    let start = std::time::Instant::now();
    expect(&BadGuest {
        guest: "spin.bin",
        args: &["--timeout", "1"],
        stdout: "spin: looping forever\n",
        status: TIMEOUT,
        says: &["timed out after 1 s (--timeout)"],
    });
    // Not a timing assertion: proof that the timeout and not something else ended it.
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
}

#[test]
fn unclaimed_mmio_is_a_crash_by_default_and_all_ones_when_ignored() {
    if !kvm_or_skip() {
        return;
    }
    expect(&BadGuest {
        guest: "mmio.bin",
        args: &["--timeout", "30"],
        stdout: "mmio: touching unmapped memory\n",
        status: GUEST_CRASH,
        says: &[
            "write of 4 bytes at guest-physical 0xd0000000, which is neither RAM nor a device",
            "rip=0x",
        ],
    });
    // The guest read back all-ones and says so with status 0x11.
    let err = expect(&BadGuest {
        guest: "mmio.bin",
        args: &["--unclaimed-mmio", "ignore", "--stats=json"],
        stdout: "mmio: touching unmapped memory\n",
        status: 0x11,
        says: &[],
    });
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
        guest("flood.bin").to_str().unwrap(),
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
    let err = expect(&BadGuest {
        guest: "flood.bin",
        args: &["--serial", "none", "--timeout", "1", "--stats=json"],
        stdout: "",
        status: TIMEOUT,
        says: &[],
    });
    let json = err.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(v["serial_bytes"].as_u64().unwrap() > 1000, "{json}");
}

/// A FIFO blocks whoever opens it until the other end shows up: kvmini must refuse one
/// without waiting, as the image, the initrd or the serial output file.
#[test]
fn fifos_are_refused_not_waited_on() {
    if !kvm_or_skip() {
        return;
    }
    let fifo = scratch("fifo");
    common::mkfifo(&fifo);
    let path = fifo.to_str().unwrap();
    let elf = guest("hello.elf");
    let elf = elf.to_str().unwrap();
    let serial = format!("file:{path}");
    let cases: [(&str, Vec<&str>, &str); 3] = [
        ("image", vec![path], "is not a regular file: it is a FIFO"),
        (
            "initrd",
            vec![elf, "--initrd", path],
            "is not a regular file: it is a FIFO",
        ),
        (
            "serial output",
            vec![elf, "--serial", &serial],
            "it is a FIFO, not a regular file or a character device",
        ),
    ];
    for (case, args, says) in cases {
        let mut all = vec!["run"];
        all.extend(args);
        all.extend(["--timeout", "5"]);
        let out = kvmini_within(&all, HANG);
        let (_, err) = texts(&out);
        assert_eq!(status(&out), BAD_INPUT, "{case}: {err}");
        assert!(err.contains(path) && err.contains(says), "{case}: {err}");
    }
    std::fs::remove_file(&fifo).unwrap();
}

#[test]
fn serial_output_to_a_character_device_is_fine() {
    if !kvm_or_skip() {
        return;
    }
    let out = kvmini_within(
        &[
            "run",
            guest("hello64.bin").to_str().unwrap(),
            "--mode",
            "long",
            "--serial",
            "file:/dev/null",
        ],
        HANG,
    );
    assert_eq!(status(&out), 64, "{}", texts(&out).1);
}

/// Output the guest wrote that could not be written out: the run stops with the status of
/// the output limit and says why.
#[test]
fn serial_output_that_cannot_be_written_stops_the_run() {
    if !kvm_or_skip() {
        return;
    }
    let hello = guest("hello64.bin");
    let run = |serial: &str, stdout: std::process::Stdio| {
        let mut cmd = std::process::Command::new(common::kvmini_bin());
        cmd.args(["run", hello.to_str().unwrap(), "--mode", "long"])
            .args(["--serial", serial, "--timeout", "30"])
            .stdout(stdout)
            .stderr(std::process::Stdio::piped());
        let out = common::output_within(cmd, HANG);
        (status(&out), texts(&out).1)
    };
    let full = || std::fs::File::create("/dev/full").unwrap().into();
    let (code, err) = run("stdio", full());
    assert_eq!(code, OUTPUT_LIMIT, "{err}");
    assert!(
        err.contains(
            "cannot write the guest's serial output to standard output: No space left on device"
        ),
        "{err}"
    );
    let (code, err) = run("file:/dev/full", std::process::Stdio::null());
    assert_eq!(code, OUTPUT_LIMIT, "{err}");
    assert!(
        err.contains(
            "cannot write the guest's serial output to /dev/full: No space left on device"
        ),
        "{err}"
    );
    // Only root may open it for writing; writing fails even so.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (code, err) = run("file:/proc/version", std::process::Stdio::null());
        assert_eq!(code, OUTPUT_LIMIT, "{err}");
        assert!(
            err.contains("to /proc/version: Input/output error"),
            "{err}"
        );
    }
}

/// `kvmini run ... | head -c 10`: once the reader is gone, the VM stops.
#[test]
fn a_closed_standard_output_stops_the_run() {
    if !kvm_or_skip() {
        return;
    }
    use std::io::Read;
    let mut child = std::process::Command::new(common::kvmini_bin())
        .args([
            "run",
            guest("flood.bin").to_str().unwrap(),
            "--mode",
            "long",
        ])
        .args(["--timeout", "600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The read end closed when its handle went away above.
    assert_eq!(&head, b"flood: wri");
    let out = common::output_within_child(child, HANG);
    let err = texts(&out).1;
    assert_eq!(status(&out), OUTPUT_LIMIT, "{err}");
    assert!(
        err.contains("kvmini: stopped: standard output was closed (Broken pipe"),
        "{err}"
    );
}

/// Too few file descriptors or too little address space are the host's limits, not bad
/// input: status 125, with the limit named.
#[test]
fn host_limits_are_internal_errors_that_name_the_limit() {
    if !kvm_or_skip() {
        return;
    }
    let hello = guest("hello64.bin");
    for (limit, says) in [
        (
            "ulimit -n 5",
            "this is the process's open-file limit (ulimit -n), a limit of the host",
        ),
        (
            "ulimit -v 20000",
            "this is the address-space limit (ulimit -v) or host memory, a limit of the host",
        ),
    ] {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{limit}; exec \"$0\" run \"$1\" --mode long"))
            .arg(common::kvmini_bin())
            .arg(&hello)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = common::output_within(cmd, HANG);
        let err = texts(&out).1;
        assert_eq!(status(&out), INTERNAL, "{limit}: {err}");
        assert!(err.contains(says), "{limit}: {err}");
    }
}

/// A tiny ELF that kvmini takes for Linux (it carries a "Linux" note), so that its console
/// reads a terminal on standard input; it spins at 1 MiB.
fn spinning_linux_elf() -> PathBuf {
    let mut elf = vec![0u8; 0x1002];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4..7].copy_from_slice(&[2, 1, 1]); // 64-bit, little-endian, version 1
    elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    elf[0x18..0x20].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let note = [
        &6u32.to_le_bytes()[..],
        &0u32.to_le_bytes(),
        &1u32.to_le_bytes(),
        b"Linux\0\0\0",
    ]
    .concat();
    let phdrs: [(u32, u64, u64, u64, u64); 2] = [
        (1, 0x1000, 0x10_0000, 2, 0x1000),   // PT_LOAD: the code
        (4, 0x200, 0, note.len() as u64, 0), // PT_NOTE
    ];
    for (i, (kind, offset, paddr, filesz, memsz)) in phdrs.into_iter().enumerate() {
        let at = 64 + i * 56;
        elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        elf[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes());
        for (j, v) in [offset, paddr, paddr, filesz, memsz, 4]
            .into_iter()
            .enumerate()
        {
            elf[at + 8 + j * 8..at + 16 + j * 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    elf[0x200..0x200 + note.len()].copy_from_slice(&note);
    elf[0x1000..0x1002].copy_from_slice(&[0xeb, 0xfe]); // jmp $
    let path = scratch("spin-linux.elf");
    std::fs::write(&path, elf).unwrap();
    path
}

/// kvmini runs on a pseudo-terminal (made by script(1)); once it has put the terminal in raw
/// mode it gets SIGINT, and the terminal must be as it was before.
#[test]
fn sigint_puts_the_terminal_back() {
    if !kvm_or_skip() {
        return;
    }
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: no script(1) to make a pseudo-terminal (util-linux)");
        return;
    }
    let dir = scratch("sigint");
    std::fs::create_dir_all(&dir).unwrap();
    let inner = "stty -g > \"$D/before\"; tty > \"$D/tty\"; \
        sh -c 'echo $$ > \"$D/pid\"; exec \"$0\" run \"$1\" --timeout 60' \"$K\" \"$E\"; \
        echo $? > \"$D/status\"; stty -g > \"$D/after\"";
    let mut script = std::process::Command::new("script")
        .args(["-qec", inner, "/dev/null"])
        .env("D", &dir)
        .env("K", common::kvmini_bin())
        .env("E", spinning_linux_elf())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let start = std::time::Instant::now();
    let waited = |what: &str| {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} never happened"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    while read("pid").trim().is_empty() || read("tty").trim().is_empty() {
        waited("kvmini starting");
    }
    let tty = read("tty").trim().to_string();
    let mode = || {
        let out = std::process::Command::new("stty")
            .args(["-g", "-F", &tty])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    while mode() == read("before") {
        waited("raw mode");
    }
    let pid: i32 = read("pid").trim().parse().unwrap();
    // SAFETY: kill(2) on kvmini's pid, which is running (it just changed the terminal).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    while read("after").is_empty() {
        waited("kvmini ending");
    }
    drop(script.stdin.take());
    let _ = script.wait();
    // 128 + SIGINT: kvmini ended as SIGINT ends a process.
    assert_eq!(read("status").trim(), "130");
    assert_eq!(read("after"), read("before"), "the terminal is still raw");
}
