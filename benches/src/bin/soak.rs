//! `make soak`: kvmini run many times and for long, checking that nothing leaks or drifts.
//!
//! 1. `--sequential N` runs of `hello.elf`, one after the other: every one must exit 0 with
//!    the guest's greeting; the host's open file count (`/proc/sys/fs/file-nr`) and each run's
//!    peak RSS must stay flat.
//! 2. `--parallel N` runs of `hello.elf` started at once: every one must exit 0.
//! 3. `--linux-minutes M`: the Linux guest restored from `guest/build/linux-snapshot` runs a
//!    loop of commands for M minutes while the soak samples kvmini's open descriptors and
//!    resident memory every few seconds: both must stay flat, and kvmini must exit 0.
//!
//! It prints the figures and exits non-zero when a check fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use kvmini_measure::runner::{self, Spec, Status};

/// The kvmini binary `make build` builds.
const KVMINI: &str = "target/x86_64-unknown-linux-gnu/release/kvmini";

#[derive(Parser, Debug)]
#[command(
    name = "kvmini-soak",
    about = "kvmini run many times and for long: statuses, descriptors and memory must stay flat"
)]
struct Options {
    /// Sequential runs of hello.elf.
    #[arg(long, default_value_t = 1000)]
    sequential: usize,
    /// Runs of hello.elf started at once.
    #[arg(long, default_value_t = 200)]
    parallel: usize,
    /// Minutes of the Linux guest's command loop (0: none).
    #[arg(long = "linux-minutes", default_value_t = 10)]
    linux_minutes: u64,
    /// The kvmini binary.
    #[arg(long, default_value = KVMINI)]
    kvmini: String,
}

/// Open files on the host, from `/proc/sys/fs/file-nr` (allocated minus free).
fn host_open_files() -> u64 {
    let text = std::fs::read_to_string("/proc/sys/fs/file-nr").unwrap_or_default();
    let n: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match n.as_slice() {
        [allocated, free, ..] => allocated - free,
        _ => 0,
    }
}

/// A check's outcome, printed.
fn check(ok: bool, what: String, failures: &mut Vec<String>) {
    println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
    if !ok {
        failures.push(what);
    }
}

fn sequential(o: &Options, failures: &mut Vec<String>) {
    println!("{} sequential runs of hello.elf", o.sequential);
    let args = ["run", "guest/build/hello.elf", "--timeout", "10"];
    let before = host_open_files();
    let started = Instant::now();
    let (mut bad, mut rss) = (Vec::new(), Vec::new());
    for i in 0..o.sequential {
        let mut spec = Spec::new(&o.kvmini, args);
        spec.timeout = Duration::from_secs(20);
        match runner::run(&spec, false) {
            Ok(run) if run.status == Status::Code(0) && run.stdout_text().contains("Hello") => {
                rss.push(run.maxrss_kib)
            }
            Ok(run) => bad.push(format!("run {i}: {}", run.status)),
            Err(e) => bad.push(format!("run {i}: {e}")),
        }
    }
    let after = host_open_files();
    let secs = started.elapsed().as_secs_f64();
    check(
        bad.is_empty(),
        format!(
            "{} of {} exited 0 with the greeting ({:.1} runs/s){}",
            o.sequential - bad.len(),
            o.sequential,
            o.sequential as f64 / secs,
            bad.first()
                .map_or(String::new(), |b| format!("; first failure: {b}"))
        ),
        failures,
    );
    let tenth = (rss.len() / 10).max(1);
    let first: u64 = rss.iter().take(tenth).max().copied().unwrap_or(0);
    let last: u64 = rss.iter().rev().take(tenth).max().copied().unwrap_or(0);
    check(
        last <= first + 64,
        format!("peak RSS per run: {first} KiB in the first tenth, {last} KiB in the last"),
        failures,
    );
    // Other programs on the host open and close files too: a leak of one per run would
    // show as hundreds.
    check(
        after <= before + 64,
        format!("host open files: {before} before, {after} after"),
        failures,
    );
}

fn parallel(o: &Options, failures: &mut Vec<String>) {
    println!("{} runs of hello.elf at once", o.parallel);
    let started = Instant::now();
    let children: Vec<_> = (0..o.parallel)
        .map(|_| {
            Command::new(&o.kvmini)
                .args(["run", "guest/build/hello.elf", "--timeout", "60"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect();
    let mut ok = 0;
    let mut first_bad = None;
    for child in children {
        match child.and_then(|mut c| c.wait()) {
            Ok(s) if s.success() => ok += 1,
            Ok(s) => first_bad = first_bad.or(Some(format!("{s}"))),
            Err(e) => first_bad = first_bad.or(Some(e.to_string())),
        }
    }
    check(
        ok == o.parallel,
        format!(
            "{ok} of {} exited 0, all done in {:.2} s{}",
            o.parallel,
            started.elapsed().as_secs_f64(),
            first_bad.map_or(String::new(), |b| format!("; first failure: {b}"))
        ),
        failures,
    );
}

/// Descriptors and resident memory (KiB) of process `pid`.
fn fds_and_rss(pid: u32) -> Option<(usize, u64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((fds, rss))
}

fn linux(o: &Options, failures: &mut Vec<String>) {
    let snapshot = Path::new("guest/build/linux-snapshot");
    if o.linux_minutes == 0 {
        return;
    }
    if !snapshot.join("state").exists() {
        check(
            false,
            "guest/build/linux-snapshot is missing: make snapshot".into(),
            failures,
        );
        return;
    }
    println!(
        "the Linux guest, a loop of commands for {} minutes",
        o.linux_minutes
    );
    let secs = o.linux_minutes * 60;
    // One program at a time: side-by-side busybox processes are what a software-virtualized
    // host sometimes faults (docs/devices.md).
    let script = format!(
        "end=$(($(/bin/busybox date +%s) + {secs})); n=0; \
         while [ $(/bin/busybox date +%s) -lt $end ]; do \
         /bin/busybox ls / >/dev/null && n=$((n + 1)); done; echo soak-commands $n"
    );
    let mut child = match Command::new(&o.kvmini)
        .args(["restore", &snapshot.display().to_string()])
        .args([
            "--timeout",
            &(secs + 600).to_string(),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return check(false, format!("cannot start kvmini: {e}"), failures),
    };
    let pid = child.id();
    let out = child.stdout.take().expect("piped");
    // Read to the end: a closed pipe would stop kvmini (status 123) at the guest's next line.
    let reader = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.trim().strip_prefix("soak-commands ").map(str::to_string))
            .last()
    });
    let mut samples = Vec::new();
    while let Ok(None) = child.try_wait() {
        if let Some(s) = fds_and_rss(pid) {
            samples.push(s);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    let commands = reader.join().ok().flatten();
    check(
        status == "exit status: 0" && commands.is_some(),
        format!(
            "kvmini ended with {status} after {} commands in the guest",
            commands.unwrap_or_else(|| "?".into())
        ),
        failures,
    );
    let third = (samples.len() / 3).max(1);
    let early = samples
        .iter()
        .skip(1)
        .take(third)
        .copied()
        .max()
        .unwrap_or((0, 0));
    let late = samples
        .iter()
        .rev()
        .take(third)
        .copied()
        .max()
        .unwrap_or((0, 0));
    check(
        late.0 <= early.0,
        format!("kvmini's descriptors: {} early, {} late", early.0, late.0),
        failures,
    );
    check(
        late.1 <= early.1 + 1024,
        format!(
            "kvmini's resident memory: {} KiB early, {} KiB late",
            early.1, late.1
        ),
        failures,
    );
}

fn main() -> std::process::ExitCode {
    let o = Options::parse();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    if let Err(e) = std::env::set_current_dir(root) {
        eprintln!("soak: cannot enter the checkout: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let mut failures = Vec::new();
    sequential(&o, &mut failures);
    parallel(&o, &mut failures);
    linux(&o, &mut failures);
    if failures.is_empty() {
        println!("soak: every check held");
        std::process::ExitCode::SUCCESS
    } else {
        println!("soak: {} check(s) failed", failures.len());
        std::process::ExitCode::FAILURE
    }
}
