//! The kvmini benchmark: what a VM costs to start, to exit to the VMM and to keep, measured
//! against QEMU's microvm (and Firecracker, when named), and against `benches/floor.c`, the
//! least any VMM has to do.
//!
//! ```text
//! make bench                                   # builds what it needs, 30 rounds
//! cargo bench --bench vmm -- --runs 5 --warmup 1 --density 10
//! make bench-linux                             # only the Linux boots: --linux 5
//! ```
//!
//! Every measured command runs once per round and the rounds repeat (A B C A B C ...), so
//! slow drift of the machine spreads over all subjects alike. The first `--warmup`
//! rounds are thrown away. It prints p50, p90, min and max of each measurement, the targets
//! as information, and writes everything, raw samples included, to `--json`. Numbers never
//! fail it: only a subject that breaks (wrong output, wrong exit status, a hang) does, and
//! for peers (QEMU, Firecracker) not even that.
//!
//! `--linux N` runs the Linux boot section instead (see `linux.rs`): N boots of the guest
//! kernel under kvmini and QEMU, with its own table and `bench/build/linux-results.json`.
//!
//! `cargo test` runs this binary without `--bench`; it then checks its own arithmetic and
//! parsing and exits.

#![deny(clippy::undocumented_unsafe_blocks)]

mod linux;
mod measure;
mod report;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use measure::Status;
use report::{Outcome, Row};

/// The kvmini binary cargo built for this benchmark (release settings, statically linked).
const KVMINI: &str = "target/x86_64-unknown-linux-gnu/release/kvmini";
const FLOOR: &str = "bench/build/floor";
const GUESTS: &str = "guest/build";
/// The greeting of hello.elf and of hello16.bin: the first byte counted as "first byte".
const ELF_GREETING: &str = "Hello from a 64-bit ELF kernel";
const REAL_GREETING: &str = "Hello from real mode";
/// A run that takes longer than this is a hang.
const RUN_LIMIT: Duration = Duration::from_secs(60);

const USAGE: &str = "\
usage: cargo bench --bench vmm -- [OPTIONS]     (make bench runs it with the defaults)

  --runs N          measured rounds (default 30)
  --warmup N        rounds run first and thrown away (default 3)
  --json PATH       where the results go (default bench/results.json; with --linux,
                    bench/build/linux-results.json)
  --density N       VMs started at once in the density test (default 50)
  --mem-sizes LIST  guest sizes of the memory test, comma-separated (default 16M,256M,2G)
  --settle-ms N     how long a memory-test VM runs before its memory is read (default 500)
  --linux N         run only the Linux boot section: N interleaved boots each of kvmini and
                    QEMU on guest/build/vmlinux (PVH) and bzImage with initramfs.cpio
                    (make linux builds them); results in bench/build/linux-results.json
  --linux-timeout S seconds after which a Linux boot counts as hung (default 600)

Peers: QEMU (qemu-system-x86_64 on PATH, or QEMU=/path) and Firecracker
(FIRECRACKER=/path/to/firecracker) are measured when present.";

#[derive(Debug)]
struct Options {
    runs: usize,
    warmup: usize,
    /// `--json`; without it, the section's default.
    json: Option<PathBuf>,
    density: usize,
    mem_sizes: Vec<String>,
    settle: Duration,
    /// `--linux N`: boots per subject of the Linux section, the only section run then.
    linux: Option<usize>,
    linux_timeout: Duration,
}

impl Options {
    fn json_path(&self) -> PathBuf {
        self.json.clone().unwrap_or_else(|| {
            PathBuf::from(if self.linux.is_some() {
                "bench/build/linux-results.json"
            } else {
                "bench/results.json"
            })
        })
    }
}

/// The options, or `None` when help was asked for.
fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options {
        runs: 30,
        warmup: 3,
        json: None,
        density: 50,
        mem_sizes: vec!["16M".into(), "256M".into(), "2G".into()],
        settle: Duration::from_millis(500),
        linux: None,
        linux_timeout: Duration::from_secs(600),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if name == "--bench" {
            continue; // cargo bench adds it
        }
        if name == "--help" || name == "-h" {
            return Ok(None);
        }
        const TAKES_VALUE: [&str; 8] = [
            "--runs",
            "--warmup",
            "--json",
            "--density",
            "--settle-ms",
            "--mem-sizes",
            "--linux",
            "--linux-timeout",
        ];
        if !TAKES_VALUE.contains(&name) {
            return Err(format!("unknown option {name}"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        let count = |v: &str| -> Result<usize, String> {
            v.parse()
                .map_err(|_| format!("{name}: '{v}' is not a whole number"))
        };
        match name {
            "--runs" => o.runs = count(&value)?,
            "--warmup" => o.warmup = count(&value)?,
            "--json" => o.json = Some(PathBuf::from(value)),
            "--density" => o.density = count(&value)?,
            "--settle-ms" => o.settle = Duration::from_millis(count(&value)? as u64),
            "--mem-sizes" => {
                o.mem_sizes = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for s in &o.mem_sizes {
                    parse_size(s).ok_or_else(|| format!("--mem-sizes: '{s}' is not a size"))?;
                }
            }
            "--linux" => o.linux = Some(count(&value)?),
            "--linux-timeout" => o.linux_timeout = Duration::from_secs(count(&value)? as u64),
            _ => unreachable!("every option in TAKES_VALUE is handled"),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if o.linux == Some(0) {
        return Err("--linux must be at least 1".into());
    }
    if o.linux_timeout.is_zero() {
        return Err("--linux-timeout must be at least 1".into());
    }
    Ok(Some(o))
}

/// "16M", "2G", "512K", or a plain number of MiB (kvmini's --mem syntax), in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 20),
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .map(|n| n << shift)
}

/// A command measured for start-up or exit cost.
struct Subject {
    name: String,
    program: String,
    args: Vec<String>,
    /// The exit status it must end with (`None`: any; peers end their own way).
    status: Option<i32>,
    /// Text its standard output must contain; its first byte is the "first byte".
    greeting: Option<&'static str>,
    /// A peer: failing is reported, not fatal.
    peer: bool,
    /// Why it cannot run here, if it cannot.
    absent: Option<String>,
    first_ms: Vec<f64>,
    exit_ms: Vec<f64>,
    rss_mib: Vec<f64>,
    failure: Option<String>,
}

impl Subject {
    fn new(name: &str, program: &str, args: &[&str], status: Option<i32>) -> Self {
        Subject {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            status,
            greeting: None,
            peer: false,
            absent: None,
            first_ms: Vec::new(),
            exit_ms: Vec::new(),
            rss_mib: Vec::new(),
            failure: None,
        }
    }

    fn greeting(mut self, text: &'static str) -> Self {
        self.greeting = Some(text);
        self
    }

    fn peer(mut self, absent: Option<String>) -> Self {
        self.peer = true;
        self.absent = absent;
        self
    }

    fn command(&self) -> String {
        command_line(&self.program, &self.args)
    }

    fn live(&self) -> bool {
        self.absent.is_none() && self.failure.is_none()
    }

    /// Runs it once; records the sample when `keep`.
    fn measure(&mut self, keep: bool) {
        match measure::run(
            Path::new("."),
            &self.program,
            &self.args,
            self.greeting,
            RUN_LIMIT,
        ) {
            Err(e) => self.failure = Some(format!("cannot start: {e}")),
            Ok(run) => {
                if let Some(why) = self.check(&run) {
                    self.failure = Some(why);
                } else if keep {
                    self.exit_ms.push(ms(run.exit));
                    if let Some(first) = run.first_byte {
                        self.first_ms.push(ms(first));
                    }
                    self.rss_mib.push(run.maxrss_kib as f64 / 1024.0);
                }
            }
        }
    }

    /// Why `run` is not what this subject must do, if it is not.
    fn check(&self, run: &measure::Run) -> Option<String> {
        let tail = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let lines: Vec<&str> = text.lines().rev().take(3).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        };
        let status_ok = match (self.status, run.status) {
            (_, Status::TimedOut) => false,
            (Some(want), got) => got == Status::Code(want),
            (None, _) => true,
        };
        if !status_ok {
            return Some(format!(
                "{} (expected exit status {}); stderr: {}",
                run.status,
                self.status.map_or("any".into(), |s| s.to_string()),
                tail(&run.stderr)
            ));
        }
        if let Some(text) = self.greeting {
            if measure::find(&run.stdout, text.as_bytes()).is_none() {
                return Some(format!(
                    "output lacks '{text}' ({}); stdout: {}; stderr: {}",
                    run.status,
                    tail(&run.stdout),
                    tail(&run.stderr)
                ));
            }
        }
        None
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn command_line(program: &str, args: &[String]) -> String {
    // Shown relative to the checkout, as a user would type it.
    let cwd = std::env::current_dir().unwrap_or_default();
    let program = Path::new(program)
        .strip_prefix(&cwd)
        .map_or(program, |p| p.to_str().unwrap_or(program));
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|w| {
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b))
            {
                w.to_string()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first executable called `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// QEMU's program (QEMU=/path, else qemu-system-x86_64 on PATH) and why it cannot run here,
/// if it cannot.
fn qemu_program() -> (String, Option<String>) {
    match std::env::var("QEMU") {
        Ok(path) if is_executable(Path::new(&path)) => (path, None),
        Ok(path) => (
            path.clone(),
            Some(format!("QEMU={path} is not an executable")),
        ),
        Err(_) => match on_path("qemu-system-x86_64") {
            Some(_) => ("qemu-system-x86_64".to_string(), None),
            None => (
                "qemu-system-x86_64".to_string(),
                Some("qemu-system-x86_64 not on PATH; apt-get install qemu-system-x86".into()),
            ),
        },
    }
}

/// QEMU's microvm booting hello.elf: the command from the guest's README.
fn qemu() -> Subject {
    let (program, absent) = qemu_program();
    let hello = format!("{GUESTS}/hello.elf");
    Subject::new(
        "QEMU microvm hello.elf",
        &program,
        &[
            "-M",
            "microvm",
            "-accel",
            "kvm",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            &hello,
        ],
        None,
    )
    .greeting(ELF_GREETING)
    .peer(absent)
}

/// Firecracker booting hello.elf from a config file (no API socket), when FIRECRACKER names it.
fn firecracker(root: &Path) -> Subject {
    let config = "bench/build/firecracker.json";
    let (program, absent) = match std::env::var("FIRECRACKER") {
        Err(_) => (
            "firecracker".to_string(),
            Some("set FIRECRACKER=/path/to/firecracker".to_string()),
        ),
        Ok(path) if !is_executable(Path::new(&path)) => (
            path.clone(),
            Some(format!("FIRECRACKER={path} is not an executable")),
        ),
        Ok(path) => {
            let body = json!({
                "boot-source": {
                    "kernel_image_path": root.join(GUESTS).join("hello.elf"),
                    "boot_args": "console=ttyS0 reboot=k panic=1",
                },
                "drives": [],
                "network-interfaces": [],
                "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 },
            });
            let written = std::fs::create_dir_all("bench/build").and_then(|_| {
                std::fs::write(config, serde_json::to_string_pretty(&body).unwrap() + "\n")
            });
            match written {
                Ok(()) => (path, None),
                Err(e) => (path, Some(format!("cannot write {config}: {e}"))),
            }
        }
    };
    Subject::new(
        "Firecracker hello.elf",
        &program,
        &["--no-api", "--config-file", config],
        None,
    )
    .greeting(ELF_GREETING)
    .peer(absent)
}

fn startup_subjects(root: &Path) -> Vec<Subject> {
    let elf = format!("{GUESTS}/hello.elf");
    let real = format!("{GUESTS}/hello16.bin");
    vec![
        Subject::new("kvmini hello.elf", KVMINI, &["run", &elf], Some(0)).greeting(ELF_GREETING),
        Subject::new("kvmini hello16.bin", KVMINI, &["run", &real], Some(16))
            .greeting(REAL_GREETING),
        Subject::new("floor hello16.bin", FLOOR, &[&real], Some(16)).greeting(REAL_GREETING),
        qemu(),
        firecracker(root),
    ]
}

/// The exit-cost guests and the exit status each ends with (see guest/raw/exits.s).
const EXIT_KINDS: [(&str, i32); 3] = [("none", 0x30), ("pio", 0x31), ("mmio", 0x32)];

fn exit_subjects() -> Vec<Subject> {
    let mut v = Vec::new();
    for (vmm, program) in [("kvmini", KVMINI), ("floor", FLOOR)] {
        for (kind, status) in EXIT_KINDS {
            let image = format!("{GUESTS}/exits-{kind}.bin");
            let args: Vec<&str> = if vmm == "kvmini" {
                vec![
                    "run",
                    &image,
                    "--mode",
                    "real",
                    "--unclaimed-mmio",
                    "ignore",
                ]
            } else {
                vec![&image]
            };
            v.push(Subject::new(
                &format!("{vmm} exits-{kind}.bin"),
                program,
                &args,
                Some(status),
            ));
        }
    }
    v
}

/// The memory test for one guest size.
struct MemoryProbe {
    size: String,
    bytes: u64,
    args: Vec<String>,
    overhead_mib: Vec<f64>,
    anon_mib: Vec<f64>,
    pss_mib: Vec<f64>,
    guest_mib: Vec<f64>,
    failure: Option<String>,
}

impl MemoryProbe {
    fn new(size: &str) -> Self {
        let args = [
            "run",
            &format!("{GUESTS}/spin.bin"),
            "--mode",
            "long",
            "--mem",
            size,
            "--timeout",
            "2",
            "--serial",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        MemoryProbe {
            size: size.into(),
            bytes: parse_size(size).expect("sizes are checked with the options"),
            args,
            overhead_mib: Vec::new(),
            anon_mib: Vec::new(),
            pss_mib: Vec::new(),
            guest_mib: Vec::new(),
            failure: None,
        }
    }

    fn measure(&mut self, settle: Duration, keep: bool) {
        match measure::resident_while_running(
            Path::new("."),
            KVMINI,
            &self.args,
            self.bytes,
            settle,
        ) {
            Err(e) => self.failure = Some(e),
            Ok((_, status))
                if !matches!(status, Status::Signal(libc::SIGTERM) | Status::Code(124)) =>
            {
                self.failure = Some(format!(
                    "{status} (expected to be stopped by SIGTERM, or by --timeout: 124)"
                ))
            }
            Ok((r, _)) if keep => {
                let mib = |kib: u64| kib as f64 / 1024.0;
                self.overhead_mib.push(mib(r.total_kib - r.guest_kib));
                self.anon_mib.push(mib(r.anon_kib));
                self.pss_mib.push(mib(r.pss_kib));
                self.guest_mib.push(mib(r.guest_kib));
            }
            Ok(_) => {}
        }
    }
}

/// The density test: many VMs started at once.
struct Density {
    count: usize,
    args: Vec<String>,
    wall_ms: Vec<f64>,
    per_second: Vec<f64>,
    failure: Option<String>,
}

impl Density {
    fn new(count: usize) -> Self {
        Density {
            count,
            args: ["run", &format!("{GUESTS}/hello.elf"), "--serial", "none"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            wall_ms: Vec::new(),
            per_second: Vec::new(),
            failure: None,
        }
    }

    fn measure(&mut self, keep: bool) {
        match measure::start_many(Path::new("."), KVMINI, &self.args, self.count) {
            Err(e) => self.failure = Some(format!("cannot start {KVMINI}: {e}")),
            Ok((wall, results)) => {
                let bad: Vec<String> = results
                    .iter()
                    .filter(|(s, _)| *s != Status::Code(0))
                    .map(|(s, err)| format!("{s}: {}", String::from_utf8_lossy(err).trim()))
                    .collect();
                if !bad.is_empty() {
                    self.failure = Some(format!(
                        "{} of {} VMs failed; first: {}",
                        bad.len(),
                        self.count,
                        bad[0]
                    ));
                } else if keep {
                    self.wall_ms.push(ms(wall));
                    self.per_second.push(self.count as f64 / wall.as_secs_f64());
                }
            }
        }
    }
}

/// The exits kvmini counts for each exit-cost guest (`--stats=json`): the N in ns per exit,
/// and proof that each guest makes the exits it claims.
fn count_exits() -> Result<(u64, Value), String> {
    let mut counts = Vec::new();
    let mut raw = serde_json::Map::new();
    for (kind, status) in EXIT_KINDS {
        let image = format!("{GUESTS}/exits-{kind}.bin");
        let args: Vec<String> = [
            "run",
            &image,
            "--mode",
            "real",
            "--unclaimed-mmio",
            "ignore",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--stats=json".to_string()])
        .collect();
        let run = measure::run(Path::new("."), KVMINI, &args, None, RUN_LIMIT)
            .map_err(|e| format!("cannot start {KVMINI}: {e}"))?;
        if run.status != Status::Code(status) {
            return Err(format!(
                "{}: {} (expected exit status {status}): {}",
                command_line(KVMINI, &args),
                run.status,
                String::from_utf8_lossy(&run.stderr).trim()
            ));
        }
        let stderr = String::from_utf8_lossy(&run.stderr);
        let stats: Value = stderr
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l.trim()).ok())
            .ok_or_else(|| {
                format!(
                    "{}: no JSON statistics on stderr",
                    command_line(KVMINI, &args)
                )
            })?;
        let n = |key: &str| stats["unclaimed"][key].as_u64().unwrap_or(0);
        counts.push((kind, n("port_writes"), n("mmio_writes")));
        raw.insert(kind.into(), stats["unclaimed"].clone());
    }
    match counts[..] {
        [("none", 0, 0), ("pio", n, 0), ("mmio", 0, m)] if n == m && n > 0 => {
            Ok((n, Value::Object(raw)))
        }
        _ => Err(format!(
            "the exit-cost guests do not make the exits they should: unclaimed (port, mmio) writes \
             counted by kvmini: {counts:?}"
        )),
    }
}

/// Per-round ns per exit: (time(kind) - time(none)) / n, paired by round.
fn per_exit_ns(kind: &Subject, none: &Subject, n: u64) -> Vec<f64> {
    kind.exit_ms
        .iter()
        .zip(&none.exit_ms)
        .map(|(k, z)| (k - z) * 1e6 / n as f64)
        .collect()
}

/// A target from the project's issue, with what was measured.
struct Target {
    what: String,
    goal: String,
    measured: Option<f64>,
    shown: String,
    met: Option<bool>,
}

/// A ratio with three significant digits, so that one near a target's bound shows which side
/// of it it is on.
fn ratio_text(r: f64) -> String {
    match r {
        r if r < 10.0 => format!("{r:.3}x"),
        r if r < 100.0 => format!("{r:.1}x"),
        r => format!("{r:.0}x"),
    }
}

fn p50(samples: &[f64]) -> Option<f64> {
    report::summarize(samples).map(|s| s.p50)
}

fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as libc::time_t;
    // SAFETY: an all-zero tm is a valid buffer for gmtime_r to fill.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::gmtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The 1-minute load average: other work on the machine shows in the spread of the numbers.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// `kvmini check --json`: the host kind, or why KVM cannot be used.
fn host_check() -> Result<Value, String> {
    let out = std::process::Command::new(KVMINI)
        .args(["check", "--json"])
        .output()
        .map_err(|e| format!("cannot run {KVMINI} check: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{KVMINI} check --json printed no JSON: {e}"))?;
    if v["usable"] != json!(true) {
        return Err(format!(
            "kvmini check says KVM is not usable here: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(v)
}

fn preflight() -> Result<(), String> {
    if !Path::new(KVMINI).exists() {
        return Err(format!("{KVMINI} is missing: run make build first"));
    }
    if !Path::new(FLOOR).exists() {
        return Err(format!(
            "{FLOOR} is missing: run make bench (it builds benches/floor.c with gcc)"
        ));
    }
    for g in ["hello.elf", "hello16.bin", "spin.bin"]
        .into_iter()
        .map(String::from)
        .chain(EXIT_KINDS.iter().map(|(k, _)| format!("exits-{k}.bin")))
    {
        let p = Path::new(GUESTS).join(&g);
        if !p.exists() {
            return Err(format!("{} is missing: run make guests first", p.display()));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if let Err(e) = std::env::set_current_dir(&root) {
        eprintln!("bench: cannot enter {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    let result = match options.linux {
        Some(boots) => bench_linux(&options, boots),
        None => bench(&options, &root),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether /dev/kvm can be used; without it the benchmark is skipped (`Ok(false)`), unless
/// KVMINI_REQUIRE_KVM=1 (the same rule as the test suite's).
fn kvm_usable() -> Result<bool, String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(true),
        Err(e) if std::env::var("KVMINI_REQUIRE_KVM").as_deref() == Ok("1") => Err(format!(
            "KVMINI_REQUIRE_KVM=1 but cannot open /dev/kvm: {e}"
        )),
        Err(e) => {
            println!("skipping the benchmark: cannot open /dev/kvm: {e} (set KVMINI_REQUIRE_KVM=1 to make this fail)");
            Ok(false)
        }
    }
}

/// Runs only the Linux boot section (`--linux N`).
fn bench_linux(o: &Options, boots: usize) -> Result<bool, String> {
    if !kvm_usable()? {
        return Ok(true);
    }
    if !Path::new(KVMINI).exists() {
        return Err(format!("{KVMINI} is missing: run make build first"));
    }
    for p in linux::inputs() {
        if !p.exists() {
            return Err(format!("{} is missing: run make linux first", p.display()));
        }
    }
    let host = host_check()?;
    linux::bench(
        boots,
        o.linux_timeout,
        &o.json_path(),
        &host,
        qemu_program(),
    )
}

/// Runs the whole benchmark; `Ok(false)` when kvmini or the floor failed somewhere.
fn bench(o: &Options, root: &Path) -> Result<bool, String> {
    if !kvm_usable()? {
        return Ok(true);
    }
    preflight()?;
    let host = host_check()?;
    let date = now_utc();
    let load_before = load_average();
    let (n_exits, exit_counts) = count_exits()?;

    let mut startup = startup_subjects(root);
    let mut exits = exit_subjects();
    let mut memory: Vec<MemoryProbe> = o.mem_sizes.iter().map(|s| MemoryProbe::new(s)).collect();
    let mut density = Density::new(o.density);

    let total = o.warmup + o.runs;
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    for round in 0..total {
        let keep = round >= o.warmup;
        if tty {
            eprint!(
                "\rround {}/{total}{}   ",
                round + 1,
                if keep { "" } else { " (warm-up)" }
            );
        } else if round == 0 || (round + 1) % 10 == 0 || round + 1 == total {
            eprintln!(
                "round {}/{total} ({:.0} s)",
                round + 1,
                started.elapsed().as_secs_f64()
            );
        }
        let _ = std::io::stderr().flush();
        for s in startup
            .iter_mut()
            .chain(exits.iter_mut())
            .filter(|s| s.live())
        {
            s.measure(keep);
        }
        for m in memory.iter_mut().filter(|m| m.failure.is_none()) {
            m.measure(o.settle, keep);
        }
        if o.density > 0 && density.failure.is_none() {
            density.measure(keep);
        }
    }
    if tty {
        eprintln!();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load_after = load_average();

    // ── Rows ────────────────────────────────────────────────────────────────
    let mut rows = Vec::new();
    let outcome = |s: &Subject, samples: &[f64]| match (&s.absent, &s.failure) {
        (Some(why), _) => Outcome::NotInstalled(why.clone()),
        (_, Some(why)) => Outcome::Failed(why.clone()),
        _ => Outcome::Measured(samples.to_vec()),
    };
    for s in &startup {
        let row = |measurement: &str, unit, samples: &[f64]| Row {
            subject: s.name.clone(),
            measurement: measurement.into(),
            unit,
            command: s.command(),
            outcome: outcome(s, samples),
        };
        rows.push(row("launch->first byte", "ms", &s.first_ms));
        rows.push(row("launch->exit", "ms", &s.exit_ms));
        rows.push(row("peak RSS", "MiB", &s.rss_mib));
    }
    for s in &exits {
        rows.push(Row {
            subject: s.name.clone(),
            measurement: "launch->exit".into(),
            unit: "ms",
            command: s.command(),
            outcome: outcome(s, &s.exit_ms),
        });
    }
    let find = |name: &str| {
        exits
            .iter()
            .find(|s| s.name == name)
            .expect("subject exists")
    };
    let mut exit_cost = serde_json::Map::new();
    for vmm in ["kvmini", "floor"] {
        let none = find(&format!("{vmm} exits-none.bin"));
        for kind in ["pio", "mmio"] {
            let s = find(&format!("{vmm} exits-{kind}.bin"));
            let failed = none.failure.clone().or_else(|| s.failure.clone());
            let samples = per_exit_ns(s, none, n_exits);
            let from_medians = match (p50(&s.exit_ms), p50(&none.exit_ms)) {
                (Some(k), Some(z)) if failed.is_none() => Some((k - z) * 1e6 / n_exits as f64),
                _ => None,
            };
            exit_cost.insert(format!("{vmm}_{kind}_ns_from_medians"), json!(from_medians));
            rows.push(Row {
                subject: format!("{vmm} {kind} exit"),
                measurement: "cost per exit".into(),
                unit: "ns/exit",
                command: format!(
                    "(launch->exit of exits-{kind}.bin - of exits-none.bin) / {n_exits}, paired by round"
                ),
                outcome: match failed {
                    Some(why) => Outcome::Failed(why),
                    None => Outcome::Measured(samples),
                },
            });
        }
    }
    for m in &memory {
        let subject = format!("kvmini spin.bin --mem {}", m.size);
        let command = command_line(KVMINI, &m.args);
        let out = |samples: &[f64]| match &m.failure {
            Some(why) => Outcome::Failed(why.clone()),
            None => Outcome::Measured(samples.to_vec()),
        };
        rows.push(Row {
            subject: subject.clone(),
            measurement: "RSS minus guest RAM".into(),
            unit: "MiB",
            command: command.clone(),
            outcome: out(&m.overhead_mib),
        });
        rows.push(Row {
            subject: subject.clone(),
            measurement: "  of it anonymous".into(),
            unit: "MiB",
            command: command.clone(),
            outcome: out(&m.anon_mib),
        });
        rows.push(Row {
            subject: subject.clone(),
            measurement: "PSS minus guest RAM".into(),
            unit: "MiB",
            command: command.clone(),
            outcome: out(&m.pss_mib),
        });
        rows.push(Row {
            subject,
            measurement: "guest RAM resident".into(),
            unit: "MiB",
            command,
            outcome: out(&m.guest_mib),
        });
    }
    if o.density > 0 {
        let subject = format!("kvmini hello.elf x{} at once", density.count);
        let command = format!(
            "{} VMs of: {}",
            density.count,
            command_line(KVMINI, &density.args)
        );
        let out = |samples: &[f64]| match &density.failure {
            Some(why) => Outcome::Failed(why.clone()),
            None => Outcome::Measured(samples.to_vec()),
        };
        rows.push(Row {
            subject: subject.clone(),
            measurement: "wall, first start->last exit".into(),
            unit: "ms",
            command: command.clone(),
            outcome: out(&density.wall_ms),
        });
        rows.push(Row {
            subject,
            measurement: "started and finished".into(),
            unit: "VMs/s",
            command,
            outcome: out(&density.per_second),
        });
    }

    // ── Targets (information) ───────────────────────────────────────────────
    let by = |name: &str| {
        startup
            .iter()
            .find(|s| s.name == name)
            .expect("subject exists")
    };
    let (kv_elf, kv_real, floor, qemu) = (
        by("kvmini hello.elf"),
        by("kvmini hello16.bin"),
        by("floor hello16.bin"),
        by("QEMU microvm hello.elf"),
    );
    let measured = |s: &Subject, samples: &[f64]| if s.live() { p50(samples) } else { None };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut targets = Vec::new();
    let mut target = |what: &str, goal: &str, v: Option<f64>, shown: String, met: Option<bool>| {
        targets.push(Target {
            what: what.into(),
            goal: goal.into(),
            measured: v,
            shown,
            met,
        })
    };
    let fmt_ratio = |r: Option<f64>, missing: &str| r.map_or(missing.to_string(), ratio_text);
    let r = ratio(
        measured(kv_real, &kv_real.exit_ms),
        measured(floor, &floor.exit_ms),
    );
    target(
        "launch->exit p50, kvmini hello16.bin / floor",
        "<= 1.3x",
        r,
        fmt_ratio(r, "n/a"),
        r.map(|r| r <= 1.3),
    );
    let r = ratio(
        measured(kv_real, &kv_real.first_ms),
        measured(floor, &floor.first_ms),
    );
    target(
        "launch->first byte p50, kvmini hello16.bin / floor",
        "(reported)",
        r,
        fmt_ratio(r, "n/a"),
        None,
    );
    let q = measured(qemu, &qemu.exit_ms);
    let r = ratio(q, measured(kv_elf, &kv_elf.exit_ms));
    let why_no_qemu = match (&qemu.absent, &qemu.failure) {
        (Some(_), _) => "n/a: QEMU not installed",
        (_, Some(_)) => "n/a: QEMU failed",
        _ => "n/a",
    };
    target(
        "launch->exit p50, QEMU microvm / kvmini (hello.elf)",
        ">= 3x faster",
        r,
        fmt_ratio(r, why_no_qemu),
        r.map(|r| r >= 3.0),
    );
    for s in [kv_elf, kv_real] {
        let v = measured(s, &s.first_ms);
        target(
            &format!("launch->first byte p50, {}", s.name),
            "<= ~10 ms",
            v,
            v.map_or("n/a".into(), |v| format!("{v:.2} ms")),
            v.map(|v| v <= 10.0),
        );
    }
    for kind in ["pio", "mmio"] {
        let k = exit_cost[&format!("kvmini_{kind}_ns_from_medians")].as_f64();
        let f = exit_cost[&format!("floor_{kind}_ns_from_medians")].as_f64();
        let r = ratio(k, f);
        let shown = match (k, f, r) {
            (Some(k), Some(f), Some(r)) => format!("{} ({k:.0} / {f:.0} ns)", ratio_text(r)),
            _ => "n/a".into(),
        };
        target(
            &format!("{kind} exit cost, kvmini / floor (from medians)"),
            "<= 1.1x",
            r,
            shown,
            r.map(|r| r <= 1.1),
        );
    }
    let overheads: Vec<(String, f64)> = memory
        .iter()
        .filter(|m| m.failure.is_none())
        .filter_map(|m| p50(&m.overhead_mib).map(|v| (m.size.clone(), v)))
        .collect();
    let worst = overheads
        .iter()
        .map(|(_, v)| *v)
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
    target(
        "VMM memory (RSS minus guest RAM) p50, largest over sizes",
        "<= 2 MiB",
        worst,
        worst.map_or("n/a".into(), |v| format!("{v:.2} MiB")),
        worst.map(|v| v <= 2.0),
    );
    if overheads.len() >= 2 {
        let (first, last) = (&overheads[0], &overheads[overheads.len() - 1]);
        let growth = last.1 - first.1;
        target(
            &format!("VMM memory growth, --mem {} -> {}", first.0, last.0),
            "flat (< 0.25 MiB)",
            Some(growth),
            format!("{growth:+.2} MiB"),
            Some(growth.abs() < 0.25),
        );
    }

    // ── Print ───────────────────────────────────────────────────────────────
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let host_short = host["host_kind_short"].as_str().unwrap_or("?");
    let host_long = host["host_kind"].as_str().unwrap_or("?");
    let io_exit_us = host["measurements"]["io_exit_us"].as_f64();
    let mut text = String::new();
    text += &format!("kvmini benchmark, {date}\n");
    text += &format!("host kind: {host_short} ({host_long})\n");
    if let Some(us) = io_exit_us {
        text += &format!("kvmini check: port-I/O exit round trip {us:.1} us\n");
    }
    text += &format!(
        "machine: {cpus} CPUs, load average {load_before} before and {load_after} after; rounds took {elapsed:.0} s\n"
    );
    text += &format!(
        "{} measured rounds after {} warm-up rounds, interleaved; exit-cost guests make {n_exits} exits each\n\ncommands:\n",
        o.runs, o.warmup
    );
    for s in startup.iter().chain(exits.iter()) {
        let cmd = match &s.absent {
            Some(why) => format!("{}   [not installed: {why}]", s.command()),
            None => s.command(),
        };
        text += &format!("  {:<24} {cmd}\n", s.name);
    }
    for m in &memory {
        text += &format!(
            "  {:<24} {}   (smaps after {} ms)\n",
            format!("memory --mem {}", m.size),
            command_line(KVMINI, &m.args),
            o.settle.as_millis()
        );
    }
    if o.density > 0 {
        text += &format!(
            "  {:<24} {} at once: {}\n",
            "density",
            density.count,
            command_line(KVMINI, &density.args)
        );
    }
    text += "\n";
    text += &report::table(&rows);
    text += "\ntargets (information, never pass/fail):\n";
    let ww = targets.iter().map(|t| t.what.len()).max().unwrap_or(0);
    let gw = targets.iter().map(|t| t.goal.len()).max().unwrap_or(0);
    for t in &targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "",
        };
        text += &format!(
            "  {:<ww$}  {:<gw$}  {:<28} {verdict}\n",
            t.what, t.goal, t.shown
        );
    }
    print!("{text}");

    let failures: Vec<&Subject> = startup
        .iter()
        .chain(exits.iter())
        .filter(|s| s.failure.is_some())
        .collect();
    let fatal = failures.iter().any(|s| !s.peer)
        || memory.iter().any(|m| m.failure.is_some())
        || density.failure.is_some();
    for s in &failures {
        let kind = if s.peer { "warning: peer" } else { "error:" };
        eprintln!(
            "{kind} {} failed: {}\n  command: {}",
            s.name,
            s.failure.as_deref().unwrap_or(""),
            s.command()
        );
    }

    // ── JSON ────────────────────────────────────────────────────────────────
    let results = json!({
        "date": date,
        "host_kind_short": host_short,
        "host_kind": host_long,
        "kvmini_check_io_exit_us": io_exit_us,
        "runs": o.runs,
        "warmup": o.warmup,
        "exits_per_run": n_exits,
        "exit_counts_by_kvmini": exit_counts,
        "exit_cost_from_medians_ns": exit_cost,
        "memory_settle_ms": o.settle.as_millis() as u64,
        "density_vms": o.density,
        "cpus": cpus,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "elapsed_s": elapsed,
        "subjects": startup.iter().chain(exits.iter()).map(|s| json!({
            "name": s.name,
            "command": s.command(),
            "expected_exit_status": s.status,
            "peer": s.peer,
            "status": if s.absent.is_some() { "not installed" }
                      else if s.failure.is_some() { "failed" } else { "measured" },
            "reason": s.absent.clone().or_else(|| s.failure.clone()),
        })).collect::<Vec<_>>(),
        "rows": rows.iter().map(report::row_json).collect::<Vec<_>>(),
        "targets": targets.iter().map(|t| json!({
            "what": t.what, "goal": t.goal, "measured": t.measured, "shown": t.shown, "met": t.met,
        })).collect::<Vec<_>>(),
        "table": text,
    });
    let json_path = o.json_path();
    if let Some(dir) = json_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&results).expect("JSON of plain values") + "\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    println!("\nresults: {}", json_path.display());
    Ok(!fatal)
}

/// What `cargo test` checks: the arithmetic and the parsing, without KVM.
#[cfg(test)]
#[test]
fn self_check() {
    let s = report::summarize(&[4.0, 1.0, 3.0, 2.0]).expect("samples");
    assert_eq!((s.p50, s.min, s.max), (2.5, 1.0, 4.0));
    assert!((s.p90 - 3.7).abs() < 1e-9, "p90 interpolates: {}", s.p90);
    assert_eq!(report::summarize(&[]), None);
    assert_eq!(report::summarize(&[7.0]).map(|s| s.p90), Some(7.0));

    let smaps = "\
5567eefa7000-5567eefd1000 r--p 00000000 fe:00 5316891    /usr/bin/x
Rss:                 164 kB
Pss:                  41 kB
Anonymous:             0 kB
7ff90b400000-7ff91b400000 rw-p 00000000 00:00 0 
Rss:                  32 kB
Pss:                  32 kB
Anonymous:            32 kB
7ff91b5f0000-7ff91b5f3000 rw-p 00000000 00:00 0 
Rss:                   8 kB
Pss:                   8 kB
Anonymous:             8 kB
";
    let r = measure::parse_smaps(smaps, 256 << 20).expect("guest mapping found");
    assert_eq!(
        (r.total_kib, r.guest_kib, r.anon_kib, r.pss_kib),
        (204, 32, 8, 49)
    );
    assert!(measure::parse_smaps(smaps, 16 << 20).is_err());

    assert_eq!(measure::find(b"log line\nHello", b"Hello"), Some(9));
    assert_eq!(measure::find(b"nothing", b"Hello"), None);
    assert_eq!(parse_size("2G"), Some(2 << 30));
    assert_eq!(parse_size("256"), Some(256 << 20));
    assert_eq!(parse_size("x"), None);
    assert_eq!(
        command_line("a/b", &["--x".into(), "two words".into()]),
        "a/b --x 'two words'"
    );
    let o = parse_options(&[
        "--runs".into(),
        "2".into(),
        "--bench".into(),
        "--density=5".into(),
    ])
    .expect("options parse")
    .expect("not help");
    assert_eq!((o.runs, o.warmup, o.density), (2, 3, 5));
    assert_eq!(
        (o.linux, o.json_path()),
        (None, "bench/results.json".into())
    );
    let o = parse_options(&["--linux".into(), "5".into()])
        .expect("options parse")
        .expect("not help");
    assert_eq!(o.linux, Some(5));
    assert_eq!(
        o.json_path(),
        PathBuf::from("bench/build/linux-results.json")
    );
    assert!(parse_options(&["--linux=0".into()]).is_err());
    assert!(parse_options(&["--nope".into()]).is_err());
    assert!(parse_options(&["--help".into()]).expect("help").is_none());
    linux::self_check();
}
