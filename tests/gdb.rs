//! The GDB stub (`--gdb`, `--gdb-wait`) driven by Debian's real `gdb` in batch mode: each
//! test starts kvmini with a guest and a Unix socket, runs `gdb -batch -nx` with commands
//! against it, and asserts on what GDB printed, on the guest's serial output and on kvmini's
//! exit status. Bad `--gdb` values end with status 120 before any guest runs. Every child
//! runs under a time limit, so nothing here can hang.
//!
//! `gdb` comes from Debian's `gdb` package (`make test` installs it); without it the tests
//! skip with a message, unless `KVMINI_REQUIRE_KVM=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{
    guest, kvm_or_skip, kvmini_bin, kvmini_status, output_within, output_within_child, repo_root,
    scratch, texts, thread_seccomp, Transcript,
};
use kvmini::status::BAD_INPUT;

/// Longer than any run here needs; a child still going then is a hang.
const HANG: Duration = Duration::from_secs(120);

/// Whether `gdb` is installed; without it the test skips (or fails under
/// `KVMINI_REQUIRE_KVM=1`, where `make test` has installed it).
fn gdb_or_skip() -> bool {
    if !kvm_or_skip() {
        return false;
    }
    if Command::new("gdb").arg("--version").output().is_ok() {
        return true;
    }
    let why = "gdb is not installed (apt-get install gdb; make test installs it)";
    common::skip("GDB test", why)
}

/// Waits until `text` has `needle` after offset `after`; the offset just past it. Fails (does
/// not wait on) once `child` has ended without it, or after a minute.
fn wait_for(text: &Transcript, needle: &str, after: usize, child: &mut Child) -> usize {
    for _ in 0..6000 {
        if let Some(i) = text.text.lock().unwrap()[after..].find(needle) {
            return after + i + needle.len();
        }
        if let Ok(Some(status)) = child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "ended ({status}) without {needle:?}:\n{}",
                text.text.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no {needle:?} in a minute:\n{}", text.text.lock().unwrap());
}

/// A kvmini run with a GDB stub on a Unix socket, its standard error read as it comes.
struct Debuggee {
    child: Child,
    socket: PathBuf,
    stderr: Transcript,
}

impl Debuggee {
    /// Starts `kvmini run IMAGE ARGS --gdb unix:SOCKET` and waits until it listens.
    fn start(name: &str, image: &Path, args: &[&str]) -> Self {
        let socket = scratch(&format!("{name}.gdb"));
        let _ = std::fs::remove_file(&socket);
        let mut child = Command::new(kvmini_bin())
            .arg("run")
            .arg(image)
            .args(args)
            .arg("--gdb")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kvmini runs");
        let stderr = Transcript::start(child.stderr.take().unwrap());
        wait_for(&stderr, "kvmini: gdb: listening", 0, &mut child);
        Debuggee {
            child,
            socket,
            stderr,
        }
    }

    /// Waits for kvmini to end: its status, standard output and all of standard error.
    fn finish(self) -> (i32, String, String) {
        let out = output_within_child(self.child, HANG);
        let status = out.status.code().expect("kvmini exits with a status");
        // The reader thread has seen the pipe close by the time the process is reaped.
        std::thread::sleep(Duration::from_millis(100));
        let stderr = self.stderr.text.lock().unwrap().clone();
        (status, texts(&out).0, stderr)
    }
}

/// `gdb -batch -nx` with the symbols of `file`, connected to `socket`, then `commands`; its
/// standard error goes to its standard output, so that what it prints stays in order.
fn gdb_command(file: &Path, socket: &Path, commands: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec gdb \"$@\" 2>&1", "gdb"])
        .args(["-batch", "-nx", "-ex", "set pagination off", "-ex"])
        .arg(format!("file {}", file.display()))
        .arg("-ex")
        .arg(format!("target remote {}", socket.display()));
    for c in commands {
        cmd.args(["-ex", c]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs GDB to its end; everything it printed.
fn gdb(file: &Path, socket: &Path, commands: &[&str]) -> String {
    let out: Output = output_within(gdb_command(file, socket, commands), HANG);
    texts(&out).0
}

/// Asserts that `text` has each of `needles`, in this order.
fn assert_in_order(text: &str, needles: &[&str]) {
    let mut at = 0;
    for needle in needles {
        match text[at..].find(needle) {
            Some(i) => at += i + needle.len(),
            None => panic!("no {needle:?} (in order) in:\n{text}"),
        }
    }
}

/// Waits until the main thread of process `pid` is running (state R in /proc): a vCPU
/// stopped for the debugger sleeps, one running a spinning guest does not.
fn wait_until_running(pid: u32) {
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
    };
    let mut running = 0;
    for _ in 0..3000 {
        // Three looks in a row: a thread woken for a moment is not the guest running.
        running = if state() == Some('R') { running + 1 } else { 0 };
        if running == 3 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("kvmini's vCPU never ran again after GDB's continue");
}

/// debug64.bin in long mode, waiting for GDB, and the ELF file with its symbols.
fn debug64(name: &str) -> (Debuggee, PathBuf) {
    let vm = Debuggee::start(
        name,
        &guest("debug64.bin"),
        &["--mode", "long", "--gdb-wait", "--timeout", "60"],
    );
    (vm, repo_root().join("guest/build/raw/debug64.elf"))
}

/// Whether this host is kvm_pvm (no int3, no watchpoints for the debugger).
fn pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

#[test]
fn gdb_breaks_in_hello_elf_steps_reads_and_sees_the_exit() {
    if !gdb_or_skip() {
        return;
    }
    let hello = guest("hello.elf");
    let vm = Debuggee::start("hello", &hello, &["--gdb-wait", "--timeout", "60"]);
    let said = gdb(
        &hello,
        &vm.socket,
        &[
            "info symbol $pc",
            // A plain (software) breakpoint: int3, or a debug register on kvm_pvm.
            "break kmain",
            "continue",
            "info symbol $pc",
            "info registers rip",
            "p source",
            "x/xw start_info_paddr",
            "stepi",
            "info symbol $pc",
            "next",
            "info line *$pc",
            "step",
            "monitor info",
            "continue",
        ],
    );
    let (status, stdout, stderr) = vm.finish();
    assert_in_order(
        &said,
        &[
            "pvh_start32 in section .text",
            "Breakpoint 1 at 0x",
            "Breakpoint 1, kmain (source=1, start_info_paddr=24576)",
            "kmain in section .text",
            "rip            0x",
            "<kmain>",
            "$1 = 1",
            // The PVH start info's magic, read through the guest's page tables.
            "0x6000:\t0x336ec578",
            "kmain + ",
            "Line ",
            // Into the inlined uart_puts, with its argument.
            "uart_puts (s=",
            "\"Hello from a 64-bit ELF kernel (entered via PVH)\\n\")",
            "target description: i386:x86-64",
            "[Inferior 1 (process 1) exited normally]",
        ],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.contains("Hello from a 64-bit ELF kernel (entered via PVH)"),
        "{stdout}"
    );
}

#[test]
fn gdb_debugs_a_long_mode_raw_guest_and_writes_its_memory() {
    if !gdb_or_skip() {
        return;
    }
    let (vm, elf) = debug64("debug64");
    let said = gdb(
        &elf,
        &vm.socket,
        &[
            "break bump",
            "continue",
            "info symbol $pc",
            "p $rcx",
            "stepi",
            "p *(int *)&counter",
            "info symbol $pc",
            "delete",
            "hbreak counted",
            "continue",
            "info symbol $pc",
            "p *(int *)&counter",
            // The guest exits with its counter: 40 written here makes the status 40.
            "set var *(int *)&counter = 40",
            "continue",
        ],
    );
    let (status, stdout, stderr) = vm.finish();
    assert_in_order(
        &said,
        &[
            "Breakpoint 1, 0x",
            "in bump ()",
            "bump in section .text",
            "$1 = 3",
            "$2 = 1",
            "bump + ",
            "Hardware assisted breakpoint 2 at 0x",
            "Breakpoint 2, 0x",
            "counted in section .text",
            "$3 = 3",
            "[Inferior 1 (process 1) exited with code 050]",
        ],
    );
    assert_eq!(status, 40, "{stderr}");
    assert!(stdout.contains("debug64: counted"), "{stdout}");
}

#[test]
fn gdb_watchpoints_stop_where_the_host_lets_them() {
    if !gdb_or_skip() {
        return;
    }
    let (vm, elf) = debug64("watch");
    // A hardware watchpoint first; on kvm_pvm, where they do not fire, the stub refuses it
    // and GDB's own software watchpoint (single steps) takes over.
    let mut commands = vec!["watch *(int *)&counter", "continue"];
    if pvm() {
        commands.extend([
            "delete",
            "set can-use-hw-watchpoints 0",
            "watch *(int *)&counter",
            "continue",
        ]);
    }
    commands.extend(["p *(int *)&counter", "delete", "continue"]);
    let said = gdb(&elf, &vm.socket, &commands);
    let (status, _, stderr) = vm.finish();
    if pvm() {
        assert_in_order(
            &said,
            &[
                "Hardware watchpoint 1",
                "Could not insert hardware watchpoint 1",
                "Watchpoint 2: *(int *)&counter",
                "Old value = 0",
                "New value = 1",
                "$1 = 1",
            ],
        );
        assert!(
            stderr.contains("refused: on kvm_pvm data breakpoints do not fire")
                && stderr.contains("set can-use-hw-watchpoints 0"),
            "{stderr}"
        );
    } else {
        assert_in_order(
            &said,
            &[
                "Hardware watchpoint 1: *(int *)&counter",
                "Old value = 0",
                "New value = 1",
                "$1 = 1",
            ],
        );
    }
    assert!(said.contains("exited with code 03]"), "{said}");
    assert_eq!(status, 3, "{stderr}");
}

#[test]
fn gdb_attaches_to_a_running_guest_interrupts_it_and_kills_it() {
    if !gdb_or_skip() {
        return;
    }
    let spin = guest("spin.bin");
    let elf = repo_root().join("guest/build/raw/spin.elf");
    // No --gdb-wait: the guest runs, and stops when GDB attaches (QEMU's -s).
    let vm = Debuggee::start("spin", &spin, &["--mode", "long", "--timeout", "60"]);
    let mut gdb_run = gdb_command(
        &elf,
        &vm.socket,
        &["info symbol $pc", "continue", "info symbol $pc", "kill"],
    )
    .spawn()
    .unwrap();
    let said = Transcript::start(gdb_run.stdout.take().unwrap());
    // GDB has attached (the guest stopped) once it said where; after its `continue` the vCPU
    // thread (kvmini's main thread) runs the spinning guest again. Then Ctrl-C, which is
    // SIGINT to GDB, which sends the stub its interrupt.
    wait_for(&said, "_start + ", 0, &mut gdb_run);
    wait_until_running(vm.child.id());
    let threads = thread_seccomp(vm.child.id());
    // SAFETY: kill(2) on the GDB child, which is not reaped before the wait below.
    unsafe { libc::kill(gdb_run.id() as libc::pid_t, libc::SIGINT) };
    let _ = output_within_child(gdb_run, HANG);
    let said = said.text.lock().unwrap().clone();
    let (status, stdout, stderr) = vm.finish();
    assert_in_order(
        &said,
        &[
            "_start + 32 in section .text",
            "Program received signal SIGINT, Interrupt.",
            "_start + 32 in section .text",
        ],
    );
    assert!(stdout.contains("spin: looping forever"), "{stdout}");
    assert!(
        stderr.contains("killed from the debugger (GDB's kill)"),
        "{stderr}"
    );
    assert_eq!(status, 0, "{stderr}");
    // The GDB thread runs under its own seccomp filter, as every other thread does.
    assert!(
        threads.iter().any(|t| t.0 == "kvmini-gdb" && t.1 == 2),
        "{threads:?}"
    );
}

#[test]
fn a_detached_guest_runs_on_without_its_breakpoints() {
    if !gdb_or_skip() {
        return;
    }
    let (vm, elf) = debug64("detach");
    // GDB leaves with a breakpoint set: the guest must not stop at it any more.
    let said = gdb(&elf, &vm.socket, &["break bump", "continue", "detach"]);
    let (status, stdout, stderr) = vm.finish();
    assert_in_order(
        &said,
        &[
            "Breakpoint 1, 0x",
            "in bump ()",
            "[Inferior 1 (process 1) detached]",
        ],
    );
    assert_eq!(status, 3, "{stderr}");
    assert!(stdout.contains("debug64: counted"), "{stdout}");
}

#[test]
fn bad_gdb_options_are_refused_before_any_guest_runs() {
    let hello = guest("hello.elf");
    let hello = hello.to_str().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port_in_use = format!("tcp:127.0.0.1:{}", taken.local_addr().unwrap().port());
    let existing = scratch("gdb-socket-exists");
    std::fs::write(&existing, b"").unwrap();
    let existing = format!("unix:{}", existing.display());
    let dir = scratch("gdb-snapshot");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--gdb", "udp:localhost:1234"],
            "write tcp:HOST:PORT, tcp::PORT or unix:PATH",
        ),
        (&["--gdb", "tcp:localhost"], "no port"),
        (&["--gdb", "tcp::70000"], "'70000' is not a port number"),
        (&["--gdb", "unix:"], "no path after unix:"),
        (&["--gdb-wait"], "--gdb"),
        (&["--gdb", &port_in_use], "the port is in use"),
        (
            &["--gdb", &existing],
            "already exists; remove it or choose another path",
        ),
        (&["--gdb", "tcp::0", "--cpus", "2"], "--gdb debugs one vCPU"),
        (
            &["--gdb", "tcp::0", "--snapshot", dir.to_str().unwrap()],
            "--gdb and --snapshot cannot be used together",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["run", hello];
        all.extend_from_slice(args);
        let (status, stdout, stderr) = kvmini_status(&all);
        assert_eq!(status, BAD_INPUT, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: a guest ran: {stdout}");
    }
}

#[test]
fn gdb_connects_over_tcp_to_the_port_kvmini_picked() {
    if !gdb_or_skip() {
        return;
    }
    let hello64 = guest("hello64.bin");
    let mut child = Command::new(kvmini_bin())
        .arg("run")
        .arg(&hello64)
        .args(["--mode", "long", "--gdb", "tcp:127.0.0.1:0", "--gdb-wait"])
        .args(["--timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Transcript::start(child.stderr.take().unwrap());
    let from = wait_for(&stderr, "target remote ", 0, &mut child);
    let to = wait_for(&stderr, ";", from, &mut child);
    let address = stderr.text.lock().unwrap()[from..to - 1].to_string();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let elf = repo_root().join("guest/build/raw/hello64.elf");
    let said = gdb(
        &elf,
        Path::new(&address),
        &["info registers rip", "stepi", "stepi", "p $rip", "continue"],
    );
    let out = output_within_child(child, HANG);
    assert_in_order(
        &said,
        &[
            "rip            0x100000            0x100000 <_start>",
            "$1 = (void (*)()) 0x100002 <_start+2>",
            "[Inferior 1 (process 1) exited with code 0100]",
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(texts(&out).0.contains("Hello from long mode"));
}

#[test]
fn a_guest_waiting_for_a_debugger_still_times_out() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Debuggee::start(
        "nobody",
        &guest("hello64.bin"),
        &["--mode", "long", "--gdb-wait", "--timeout", "1"],
    );
    let (status, stdout, stderr) = vm.finish();
    assert_eq!(status, kvmini::status::TIMEOUT, "{stderr}");
    assert!(stdout.is_empty(), "the guest ran: {stdout}");
    assert!(stderr.contains("timed out"), "{stderr}");
}

#[test]
fn a_crash_stops_in_gdb_first_then_ends_the_vm() {
    if !gdb_or_skip() {
        return;
    }
    let elf = repo_root().join("guest/build/raw/triple.elf");
    let vm = Debuggee::start(
        "triple",
        &guest("triple.bin"),
        &["--mode", "long", "--gdb-wait", "--timeout", "60"],
    );
    let said = gdb(
        &elf,
        &vm.socket,
        &["continue", "info symbol $pc", "continue"],
    );
    let (status, _, stderr) = vm.finish();
    assert_in_order(
        &said,
        &[
            "Program received signal SIGSEGV, Segmentation fault.",
            "in section .text",
            "[Inferior 1 (process 1) exited with code 0172]",
        ],
    );
    assert_eq!(status, kvmini::status::GUEST_CRASH, "{stderr}");
    assert_in_order(
        &stderr,
        &[
            "kvmini: gdb: the guest crashed (triple fault",
            "kvmini: guest crashed: triple fault",
        ],
    );
}

#[test]
fn a_fifth_breakpoint_needs_int3_and_is_refused_with_a_message_without() {
    if !gdb_or_skip() {
        return;
    }
    let (vm, elf) = debug64("five");
    // Five breakpoints: four plain ones and a hardware one.
    let said = gdb(
        &elf,
        &vm.socket,
        &[
            "break again",
            "break bump",
            "break counted",
            "break *counted+5",
            "hbreak *counted+0x1e",
            "continue",
            "info symbol $pc",
            "delete",
            "continue",
        ],
    );
    let (status, _, stderr) = vm.finish();
    if pvm() {
        assert_in_order(
            &said,
            &[
                "Cannot insert breakpoint",
                "Command aborted.",
                "exited with code 03]",
            ],
        );
        assert!(
            stderr.contains("refused: on this host breakpoints are hardware breakpoints")
                && stderr.contains("all 4 debug registers are in use"),
            "{stderr}"
        );
    } else {
        assert_in_order(
            &said,
            &[
                "Breakpoint 1, 0x",
                "again in section .text",
                "exited with code 03]",
            ],
        );
    }
    assert_eq!(status, 3, "{stderr}");
}

#[test]
fn the_trace_shows_each_stop_for_the_debugger_as_it_happens_and_as_stats_counts_it() {
    if !gdb_or_skip() {
        return;
    }
    let hello = guest("hello.elf");
    let trace = scratch("gdb-trace.txt");
    let trace_arg = trace.to_str().unwrap();
    let vm = Debuggee::start(
        "hello-traced",
        &hello,
        &[
            "--gdb-wait",
            "--timeout",
            "60",
            "--stats",
            "--trace=debug",
            "--trace-file",
            trace_arg,
        ],
    );
    let show = format!("shell cat {trace_arg}");
    let said = gdb(
        &hello,
        &vm.socket,
        &["break kmain", "continue", "stepi", &show, "continue"],
    );
    let (status, stdout, stderr) = vm.finish();
    // The vCPU wrote its line out before it waited on the debugger.
    assert_in_order(
        &said,
        &[
            "Breakpoint 1, kmain",
            "to the debugger: #",
            "[Inferior 1 (process 1) exited normally]",
        ],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.contains("Hello from a 64-bit ELF kernel"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let debug: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(debug.len() >= 2, "the breakpoint and the step:\n{text}");
    for line in &debug {
        assert!(
            line.contains(" debug ") && line.contains("to the debugger: #"),
            "{text}"
        );
    }
    let counted = format!("debug {}", debug.len());
    assert!(
        stderr.contains(&counted),
        "--stats counts {counted}:\n{stderr}\n{text}"
    );
    let end = text.lines().last().unwrap();
    assert!(end.ends_with(&format!(", {} traced", debug.len())), "{end}");
}
