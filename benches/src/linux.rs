//! The Linux boot benchmark (`--linux N`): N boots of the guest kernel with the busybox
//! initramfs running `uname -r`, through `guest/build/vmlinux` (PVH) and
//! `guest/build/bzImage`, under kvmini and under QEMU's microvm, interleaved round by round.
//!
//! Every boot is timed from outside the same way for every subject: launch to the first byte
//! on standard output, to the first byte of the `kvmini-init: user space up` line, and to
//! exit. kvmini's boots also give its own milestones from `--stats=json`. QEMU is given the
//! kernel command line kvmini used (the `cmdline` of kvmini's first boot of the same kernel),
//! so that both VMMs boot the kernel alike, with or without the host workarounds.
//!
//! A boot counts only when it printed the user-space line, then a line starting with `6.1.`
//! (`uname -r`), then `kvmini-init: exit status 0`, and the VMM exited with status 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::measure::{self, Status};
use crate::report::{self, Outcome, Row};
use crate::{command_line, ms, GUESTS, KVMINI};

/// The initramfs every boot uses.
const INITRAMFS: &str = "guest/build/initramfs.cpio";
/// Guest memory, for kvmini and QEMU alike.
const MEM: &str = "128M";
/// The command `/init` runs.
const COMMAND: [&str; 2] = ["uname", "-r"];
/// The line `/init` prints first.
pub const USERSPACE_LINE: &str = "kvmini-init: user space up";
/// How the `uname -r` line of the guest kernel starts.
pub const RELEASE_PREFIX: &str = "6.1.";
/// What `/init` prints when the command has ended, before the status.
const EXIT_LINE: &str = "kvmini-init: exit status ";

/// The kernels booted: file name in `guest/build` and what its subjects' names add.
const KERNELS: [(&str, &str); 2] = [("vmlinux", " (PVH)"), ("bzImage", "")];

/// The files the Linux section needs, relative to the checkout.
pub fn inputs() -> Vec<PathBuf> {
    KERNELS
        .iter()
        .map(|(k, _)| Path::new(GUESTS).join(k))
        .chain([PathBuf::from(INITRAMFS)])
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vmm {
    Kvmini,
    Qemu,
}

/// One boot.
#[derive(Debug)]
struct Boot {
    round: usize,
    /// Why it does not count, if it does not.
    failure: Option<String>,
    /// How the process ended.
    status: String,
    first_byte_s: Option<f64>,
    userspace_line_s: Option<f64>,
    exit_s: f64,
    peak_rss_mib: f64,
    /// The `uname -r` line.
    release: Option<String>,
    /// kvmini's `--stats=json` object.
    stats: Option<Value>,
}

impl Boot {
    fn stat_s(&self, key: &str) -> Option<f64> {
        self.stats.as_ref()?[key].as_f64().map(|v| v / 1e3)
    }

    fn stat_ms(&self, key: &str) -> Option<f64> {
        self.stats.as_ref()?[key].as_f64()
    }

    fn json(&self) -> Value {
        json!({
            "round": self.round,
            "ok": self.failure.is_none(),
            "failure": self.failure,
            "status": self.status,
            "launch_to_first_byte_s": self.first_byte_s,
            "launch_to_userspace_line_s": self.userspace_line_s,
            "launch_to_exit_s": self.exit_s,
            "peak_rss_mib": self.peak_rss_mib,
            "uname_r": self.release,
            "kvmini_stats": self.stats,
        })
    }
}

/// A VMM booting one of the kernels.
struct Subject {
    name: String,
    vmm: Vmm,
    kernel: &'static str,
    program: String,
    /// For QEMU: empty until kvmini's command line is known.
    args: Vec<String>,
    /// Why it cannot run here, if it cannot.
    absent: Option<String>,
    /// Why it was not booted again, if it was not.
    stopped: Option<String>,
    boots: Vec<Boot>,
}

impl Subject {
    fn kvmini(kernel: &'static str, entry: &str) -> Self {
        let image = format!("{GUESTS}/{kernel}");
        let args = [
            "run",
            &image,
            "--initrd",
            INITRAMFS,
            "--mem",
            MEM,
            "--stats=json",
            "--",
        ]
        .into_iter()
        .chain(COMMAND)
        .map(String::from)
        .collect();
        Subject {
            name: format!("kvmini {kernel}{entry}"),
            vmm: Vmm::Kvmini,
            kernel,
            program: KVMINI.into(),
            args,
            absent: None,
            stopped: None,
            boots: Vec::new(),
        }
    }

    fn qemu(kernel: &'static str, program: &str, absent: Option<String>) -> Self {
        Subject {
            name: format!("QEMU microvm {kernel}"),
            vmm: Vmm::Qemu,
            kernel,
            program: program.into(),
            args: Vec::new(),
            absent,
            stopped: None,
            boots: Vec::new(),
        }
    }

    /// QEMU's arguments, booting this kernel with `cmdline`.
    fn qemu_args(&self, cmdline: &str) -> Vec<String> {
        let image = format!("{GUESTS}/{}", self.kernel);
        [
            "-M",
            "microvm,acpi=off",
            "-accel",
            "kvm",
            "-cpu",
            "host,-cx16",
            "-m",
            MEM,
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-device",
            "i8042",
            "-kernel",
            &image,
            "-initrd",
            INITRAMFS,
            "-append",
            cmdline,
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    fn command(&self) -> String {
        if self.args.is_empty() {
            format!(
                "{} (kvmini's command line not known yet)",
                command_line(&self.program, &[])
            )
        } else {
            command_line(&self.program, &self.args)
        }
    }

    fn live(&self) -> bool {
        self.absent.is_none() && self.stopped.is_none()
    }

    fn good(&self) -> impl Iterator<Item = &Boot> {
        self.boots.iter().filter(|b| b.failure.is_none())
    }

    fn failed(&self) -> impl Iterator<Item = &Boot> {
        self.boots.iter().filter(|b| b.failure.is_some())
    }

    /// Boots it once as round `round`.
    fn boot(&mut self, round: usize, limit: Duration) -> &Boot {
        let boot = match measure::run(Path::new("."), &self.program, &self.args, None, limit) {
            Err(e) => {
                self.stopped = Some(format!("cannot start: {e}"));
                Boot {
                    round,
                    failure: Some(format!("cannot start {}: {e}", self.program)),
                    status: "not started".into(),
                    first_byte_s: None,
                    userspace_line_s: None,
                    exit_s: 0.0,
                    peak_rss_mib: 0.0,
                    release: None,
                    stats: None,
                }
            }
            Ok(run) => {
                let v = verdict(self.vmm == Vmm::Kvmini, &run);
                if run.status == Status::TimedOut {
                    self.stopped = Some(format!(
                        "round {round} hung for {} s; a hang would repeat",
                        limit.as_secs()
                    ));
                }
                let secs = |d: Duration| ms(d) / 1e3;
                Boot {
                    round,
                    failure: v.failure,
                    status: run.status.to_string(),
                    first_byte_s: run.first_byte.map(secs),
                    userspace_line_s: run.arrival_of(USERSPACE_LINE).map(secs),
                    exit_s: secs(run.exit),
                    peak_rss_mib: run.maxrss_kib as f64 / 1024.0,
                    release: v.release,
                    stats: v.stats,
                }
            }
        };
        self.boots.push(boot);
        self.boots.last().expect("just pushed")
    }

    /// The samples of its good boots.
    fn samples(&self, of: impl Fn(&Boot) -> Option<f64>) -> Vec<f64> {
        self.good().filter_map(of).collect()
    }
}

/// What a boot's output says.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Why the boot does not count, if it does not.
    pub failure: Option<String>,
    /// The `uname -r` line.
    pub release: Option<String>,
    /// kvmini's `--stats=json` object (the last JSON line on standard error).
    pub stats: Option<Value>,
}

fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(n)
        .collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Whether a boot did what it must; `kvmini` adds the checks of kvmini's statistics.
pub fn verdict(kvmini: bool, run: &measure::Run) -> Verdict {
    let stats: Option<Value> = kvmini
        .then(|| {
            String::from_utf8_lossy(&run.stderr)
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
                .filter(Value::is_object)
        })
        .flatten();
    let text = String::from_utf8_lossy(&run.stdout);
    let after_up = text.find(USERSPACE_LINE).map(|p| &text[p..]);
    let release = after_up.and_then(|t| {
        t.lines()
            .map(|l| l.trim_matches(|c: char| c == '\r' || c.is_whitespace()))
            .find(|l| l.starts_with(RELEASE_PREFIX))
            .map(String::from)
    });
    let init_status = after_up.and_then(|t| {
        let rest = &t[t.find(EXIT_LINE)? + EXIT_LINE.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<i32>().ok()
    });
    let outputs = || {
        format!(
            "stdout: {}; stderr: {}",
            tail(&run.stdout, 3),
            tail(&run.stderr, 2)
        )
    };
    let failure = if run.status == Status::TimedOut {
        Some(format!("{}; {}", run.status, outputs()))
    } else if after_up.is_none() {
        Some(format!(
            "no '{USERSPACE_LINE}' ({}); {}",
            run.status,
            outputs()
        ))
    } else if release.is_none() {
        Some(format!(
            "no line starting with '{RELEASE_PREFIX}' (uname -r) after '{USERSPACE_LINE}' ({}); {}",
            run.status,
            outputs()
        ))
    } else if init_status != Some(0) {
        Some(format!(
            "/init reported {} (expected exit status 0); {}",
            init_status.map_or("no exit status".into(), |s| format!("exit status {s}")),
            outputs()
        ))
    } else if run.status != Status::Code(0) {
        Some(format!(
            "{} (expected exit status 0); {}",
            run.status,
            outputs()
        ))
    } else if kvmini && stats.is_none() {
        Some(format!(
            "no --stats=json object on stderr; stderr: {}",
            tail(&run.stderr, 3)
        ))
    } else if kvmini && stats.as_ref().is_some_and(|s| s["userspace_ms"].is_null()) {
        Some("kvmini saw no user-space marker (0x60 on port 0x80): userspace_ms is null".into())
    } else {
        None
    };
    Verdict {
        failure,
        release,
        stats,
    }
}

/// Median of a subject's samples, when it has good boots.
fn median(samples: &[f64]) -> Option<f64> {
    report::summarize(samples).map(|s| s.p50)
}

/// Runs the Linux section: `boots` interleaved rounds. `Ok(false)` when a kvmini boot failed.
pub fn bench(
    boots: usize,
    limit: Duration,
    json_path: &Path,
    host: &Value,
    qemu: (String, Option<String>),
) -> Result<bool, String> {
    let date = crate::now_utc();
    let load_before = crate::load_average();
    let mut subjects: Vec<Subject> = KERNELS
        .iter()
        .map(|&(k, entry)| Subject::kvmini(k, entry))
        .chain(
            KERNELS
                .iter()
                .map(|&(k, _)| Subject::qemu(k, &qemu.0, qemu.1.clone())),
        )
        .collect();
    // The command line of kvmini's first boot of each kernel, which QEMU is given.
    let mut cmdlines: Vec<(&'static str, String)> = Vec::new();

    let started = Instant::now();
    for round in 1..=boots {
        for s in subjects.iter_mut() {
            if !s.live() {
                continue;
            }
            if s.vmm == Vmm::Qemu && s.args.is_empty() {
                // The same kernel's command line, else the other kernel's (they are the same).
                let cmdline = cmdlines
                    .iter()
                    .find(|(k, _)| *k == s.kernel)
                    .or(cmdlines.first())
                    .map(|(_, c)| c.clone());
                match cmdline {
                    Some(c) => s.args = s.qemu_args(&c),
                    None => {
                        s.stopped = Some(
                            "kvmini's first boots gave no command line (--stats=json cmdline)"
                                .into(),
                        );
                        continue;
                    }
                }
            }
            let _ = write!(
                std::io::stderr(),
                "round {round}/{boots}, {}: booting ({:.0} s so far) ... ",
                s.name,
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            let kernel = s.kernel;
            let is_kvmini = s.vmm == Vmm::Kvmini;
            let b = s.boot(round, limit);
            let at = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} s"));
            match &b.failure {
                None => eprintln!(
                    "first byte {}, user space {}, exit {}",
                    at(b.first_byte_s),
                    at(b.userspace_line_s),
                    at(Some(b.exit_s))
                ),
                Some(why) => eprintln!("FAILED after {:.1} s: {why}", b.exit_s),
            }
            if is_kvmini && !cmdlines.iter().any(|(k, _)| *k == kernel) {
                if let Some(c) = b
                    .stats
                    .as_ref()
                    .and_then(|st| st["cmdline"].as_str())
                    .map(String::from)
                {
                    cmdlines.push((kernel, c));
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load_after = crate::load_average();

    // ── Rows ────────────────────────────────────────────────────────────────
    type Of = fn(&Boot) -> Option<f64>;
    let outside: [(&str, &str, Of); 4] = [
        ("launch->first byte", "s", |b| b.first_byte_s),
        ("launch->'user space up' line", "s", |b| b.userspace_line_s),
        ("launch->exit", "s", |b| Some(b.exit_s)),
        ("peak RSS", "MiB", |b| Some(b.peak_rss_mib)),
    ];
    let inside: [(&str, &str, Of); 4] = [
        ("kvmini: first KVM_RUN", "ms", |b| b.stat_ms("first_run_ms")),
        ("kvmini: first serial byte", "s", |b| {
            b.stat_s("first_serial_byte_ms")
        }),
        ("kvmini: port 0x80 marker", "s", |b| {
            b.stat_s("userspace_ms")
        }),
        ("kvmini: total", "s", |b| b.stat_s("total_ms")),
    ];
    let mut rows = Vec::new();
    for s in &subjects {
        let failed = s.failed().count();
        let label = if failed > 0 {
            format!("{} [{failed} of {} boots FAILED]", s.name, s.boots.len())
        } else {
            s.name.clone()
        };
        let measurements = outside.iter().chain(if s.vmm == Vmm::Kvmini {
            &inside[..]
        } else {
            &[]
        });
        for (measurement, unit, of) in measurements {
            let outcome = match (&s.absent, s.good().next(), s.boots.first()) {
                (Some(why), _, _) => Outcome::NotInstalled(why.clone()),
                (None, Some(_), _) => Outcome::Measured(s.samples(of)),
                (None, None, Some(b)) => Outcome::Failed(format!(
                    "every boot failed; round {}: {}",
                    b.round,
                    b.failure.as_deref().unwrap_or("")
                )),
                (None, None, None) => {
                    Outcome::Failed(s.stopped.clone().unwrap_or_else(|| "never booted".into()))
                }
            };
            rows.push(Row {
                subject: label.clone(),
                measurement: measurement.to_string(),
                unit,
                command: s.command(),
                outcome,
            });
        }
    }

    // ── Comparisons (medians of good boots) ─────────────────────────────────
    let by = |vmm: Vmm, kernel: &str| {
        subjects
            .iter()
            .find(|s| s.vmm == vmm && s.kernel == kernel)
            .expect("subject exists")
    };
    let mut comparisons = Vec::new();
    for (kernel, _) in KERNELS {
        let (k, q) = (by(Vmm::Kvmini, kernel), by(Vmm::Qemu, kernel));
        for (what, of) in [
            ("launch->'user space up' line", outside[1].2),
            ("launch->exit", outside[2].2),
        ] {
            let (km, qm) = (median(&k.samples(of)), median(&q.samples(of)));
            let shown = match (km, qm) {
                (Some(km), Some(qm)) => format!(
                    "QEMU {qm:.1} s / kvmini {km:.1} s = {:.2}x",
                    qm / km.max(1e-9)
                ),
                _ if q.absent.is_some() => "n/a: QEMU not installed".into(),
                _ => "n/a: a subject has no good boot".into(),
            };
            comparisons.push((format!("{kernel}: {what}"), shown, km, qm));
        }
    }
    for (what, of) in [
        ("launch->'user space up' line", outside[1].2),
        ("launch->exit", outside[2].2),
    ] {
        for vmm in [Vmm::Kvmini, Vmm::Qemu] {
            let (v, b) = (by(vmm, "vmlinux"), by(vmm, "bzImage"));
            if let (Some(vm), Some(bm)) = (median(&v.samples(of)), median(&b.samples(of))) {
                comparisons.push((
                    format!(
                        "{}: bzImage - vmlinux, {what}",
                        v.name.split(' ').next().unwrap()
                    ),
                    format!("{:+.1} s", bm - vm),
                    Some(vm),
                    Some(bm),
                ));
            }
        }
    }

    // ── Print ───────────────────────────────────────────────────────────────
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let host_short = host["host_kind_short"].as_str().unwrap_or("?");
    let host_long = host["host_kind"].as_str().unwrap_or("?");
    let mut text = String::new();
    text += &format!("kvmini Linux boot benchmark, {date}\n");
    text += &format!("host kind: {host_short} ({host_long})\n");
    text += &format!(
        "machine: {cpus} CPUs, load average {load_before} before and {load_after} after; boots took {elapsed:.0} s\n"
    );
    text += &format!(
        "{boots} boots of each subject, interleaved round by round, no warm-up; {} s limit per boot\n",
        limit.as_secs()
    );
    match cmdlines.first() {
        Some((_, c)) => {
            text += &format!("kernel command line (kvmini's, given to QEMU with -append): {c}\n")
        }
        None => text += "kernel command line: none known (kvmini gave none)\n",
    }
    if cmdlines.windows(2).any(|w| w[0].1 != w[1].1) {
        for (k, c) in &cmdlines {
            text += &format!("  NOTE: differs by kernel; {k}: {c}\n");
        }
    }
    text += "\ncommands:\n";
    let nw = subjects.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &subjects {
        let cmd = match &s.absent {
            Some(why) => format!("{}   [not installed: {why}]", s.command()),
            None => s.command(),
        };
        text += &format!("  {:<nw$}  {cmd}\n", s.name);
    }
    text += "\n";
    text += &report::median_table(&rows);
    text += "\n(launch->... are measured from outside, alike for every VMM; 'kvmini: ...' are kvmini's\n\
              own --stats=json milestones, from its main(); the port 0x80 marker comes after the\n\
              'user space up' line: /init runs /bin/outb to write it; QEMU has no port 0xf4, so\n\
              its launch->exit also holds /init's fallback, an exec of `reboot -f`)\n";
    if !comparisons.is_empty() {
        text += "\nmedians compared:\n";
        let cw = comparisons.iter().map(|c| c.0.len()).max().unwrap_or(0);
        for (what, shown, _, _) in &comparisons {
            text += &format!("  {what:<cw$}  {shown}\n");
        }
    }
    let mut failure_lines = Vec::new();
    for s in &subjects {
        for b in s.failed() {
            failure_lines.push(format!(
                "  {} round {}: {}",
                s.name,
                b.round,
                b.failure.as_deref().unwrap_or("")
            ));
        }
        if let Some(why) = &s.stopped {
            failure_lines.push(format!("  {}: not booted again: {why}", s.name));
        }
    }
    if !failure_lines.is_empty() {
        text += "\nfailed boots (left out of the numbers above):\n";
        for l in &failure_lines {
            text += l;
            text += "\n";
        }
    }
    print!("{text}");

    let fatal = subjects
        .iter()
        .any(|s| s.vmm == Vmm::Kvmini && (s.failed().next().is_some() || s.stopped.is_some()));
    for s in subjects
        .iter()
        .filter(|s| s.failed().next().is_some() || s.stopped.is_some())
    {
        let kind = if s.vmm == Vmm::Kvmini {
            "error:"
        } else {
            "warning: peer"
        };
        eprintln!(
            "{kind} {} failed {} of {} boots\n  command: {}",
            s.name,
            s.failed().count(),
            s.boots.len(),
            s.command()
        );
    }

    // ── JSON ────────────────────────────────────────────────────────────────
    let results = json!({
        "date": date,
        "host_kind_short": host_short,
        "host_kind": host_long,
        "boots_per_subject": boots,
        "boot_limit_s": limit.as_secs(),
        "cpus": cpus,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "elapsed_s": elapsed,
        "cmdline_by_kernel": cmdlines.iter().map(|(k, c)| (k.to_string(), json!(c)))
            .collect::<serde_json::Map<_, _>>(),
        "subjects": subjects.iter().map(|s| json!({
            "name": s.name,
            "vmm": if s.vmm == Vmm::Kvmini { "kvmini" } else { "qemu" },
            "kernel": s.kernel,
            "command": s.command(),
            "status": if s.absent.is_some() { "not installed" }
                      else if s.failed().next().is_some() || s.stopped.is_some() { "failed" }
                      else { "measured" },
            "reason": s.absent.clone().or_else(|| s.stopped.clone()),
            "boots_ok": s.good().count(),
            "boots_failed": s.failed().count(),
            "boots": s.boots.iter().map(Boot::json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "medians_compared": comparisons.iter().map(|(what, shown, _, _)| json!({
            "what": what, "shown": shown,
        })).collect::<Vec<_>>(),
        "rows": rows.iter().map(report::row_json).collect::<Vec<_>>(),
        "table": text,
    });
    if let Some(dir) = json_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(
        json_path,
        serde_json::to_string_pretty(&results).expect("JSON of plain values") + "\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    println!("\nresults: {}", json_path.display());
    Ok(!fatal)
}

/// What `cargo test` checks of this module: the verdict on a boot's output.
#[cfg(test)]
pub fn self_check() {
    let run = |status: Status, stdout: &str, stderr: &str| measure::Run {
        first_byte: None,
        exit: Duration::from_secs(30),
        status,
        maxrss_kib: 0,
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
        arrivals: vec![
            (10, Duration::from_secs(3)),
            (stdout.len(), Duration::from_secs(25)),
        ],
    };
    let good = "[    0.000000] Linux version 6.1.0 (x@y)\r\nkvmini-init: user space up\r\n\
                6.1.158\r\nkvmini-init: exit status 0\r\n";
    let stats = r#"{"exit_status":0,"userspace_ms":26000.5,"cmdline":"console=ttyS0 -- uname -r"}"#;
    let v = verdict(
        true,
        &run(Status::Code(0), good, &format!("warn\n{stats}\n")),
    );
    assert_eq!(v.failure, None, "a good boot");
    assert_eq!(v.release.as_deref(), Some("6.1.158"));
    assert_eq!(v.stats.expect("stats")["userspace_ms"], json!(26000.5));
    let r = run(Status::Code(0), good, "");
    assert!(verdict(true, &r).failure.is_some(), "kvmini without stats");
    assert_eq!(verdict(false, &r).failure, None, "QEMU needs no stats");
    assert_eq!(
        r.arrival_of(USERSPACE_LINE),
        Some(Duration::from_secs(25)),
        "the line arrived in the second chunk"
    );
    // The banner's "6.1." does not count for uname -r.
    let no_uname =
        "Linux version 6.1.0\r\nkvmini-init: user space up\r\nkvmini-init: exit status 0\r\n";
    assert!(verdict(false, &run(Status::Code(0), no_uname, ""))
        .failure
        .expect("fails")
        .contains("uname"));
    let bad_status = good.replace("exit status 0", "exit status 127");
    assert!(verdict(false, &run(Status::Code(0), &bad_status, ""))
        .failure
        .expect("fails")
        .contains("exit status 127"));
    assert!(verdict(false, &run(Status::TimedOut, good, ""))
        .failure
        .is_some());
    assert!(verdict(false, &run(Status::Code(122), good, ""))
        .failure
        .is_some());
}
