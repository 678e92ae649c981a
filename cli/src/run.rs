//! `kvmini run`: the options of one VM, turned into a `VmConfig`, and what is printed when it
//! stops.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;

use kvmini::config::{
    self, CpuMode, DebugExitConfig, GdbAddress, GdbConfig, HostWorkarounds, ImageFormat,
    ModuleConfig, SeccompMode, SerialInput, SerialOutput, TraceConfig, TraceFilter, TraceOutput,
    UnclaimedMmio, VmConfig,
};
use kvmini::{status, Error, RunOutcome, StopReason, Vmm};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Kernel or raw image: an ELF64 kernel (PVH note or 64-bit entry), a bzImage, a Multiboot
    /// 1 or 2 kernel, or flat machine code.
    image: PathBuf,

    /// Image format [default: detected from the file: Linux "HdrS" header, ELF64 with a
    /// Linux or PVH note, a Multiboot header (Multiboot 2 when there are both), other ELF,
    /// else raw]. multiboot: Multiboot 2 when the file has both headers, else 1;
    /// multiboot1/multiboot2: only that header.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,

    /// Guest memory: a number with K, M, G or T (binary units); a plain number is MiB
    /// [default: 16M; 128M for Linux kernels].
    #[arg(long, value_parser = parse_size)]
    mem: Option<u64>,

    /// CPU mode a raw image starts in [default: real]. real: loaded at 0x10000, entered at
    /// CS:IP = 0x1000:0000 (kvmtool's convention); protected: 32-bit flat, paging off, loaded at
    /// 1 MiB; long: 64-bit, first 4 GiB identity-mapped, loaded at 1 MiB.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,

    /// Guest-physical load address of a raw image (decimal or 0x hex) [default: by mode].
    #[arg(long, value_parser = parse_u64)]
    load_addr: Option<u64>,

    /// Entry point of a raw image [default: its load address].
    #[arg(long, value_parser = parse_u64)]
    entry: Option<u64>,

    #[command(flatten)]
    control: Control,

    /// Save the VM into DIR (new or empty) when the guest asks for it by writing 0x7f to port
    /// 0x80, when kvmini gets SIGUSR1, or at Ctrl-A s on the console; then stop with status 0.
    /// `kvmini restore DIR` goes on from there.
    #[arg(long, value_name = "DIR")]
    snapshot: Option<PathBuf>,

    /// End the run the way QEMU's isa-debug-exit device does, for kernels whose test
    /// frameworks were written for QEMU: writing V to the device's ports exits with status
    /// (V << 1) | 1. qemu[,iobase=PORT,iosize=N] (QEMU's defaults: iobase=0x501, iosize=2;
    /// 1, 2 or 4 ports); it takes the place of kvmini's exit port at 0xf4 [default: kvmini].
    #[arg(long, value_name = "DEVICE", value_parser = parse_debug_exit)]
    debug_exit: Option<DebugExitArg>,

    /// The status that means success, for test runners that take 0 as a pass (cargo's
    /// `runner`): a run that ends with STATUS exits 0, one that would exit 0 (the guest
    /// stopped without giving STATUS) exits 1, any other status stays. With --debug-exit
    /// qemu,iobase=0xf4,iosize=4 a test framework that writes 0x10 on success gives 33.
    /// 1 to 119 [default: none].
    #[arg(long, value_name = "STATUS", value_parser = parse_success_status)]
    success_status: Option<u8>,

    /// With --snapshot: after saving, let the VM go on running instead of stopping.
    #[arg(long, requires = "snapshot")]
    snapshot_continue: bool,

    /// What a guest access to guest-physical memory that is neither RAM nor a device means:
    /// fatal stops the VM as a crash; ignore reads all-ones, drops writes and counts both.
    #[arg(long, value_enum, default_value = "fatal")]
    unclaimed_mmio: MmioArg,

    /// Kernel command line [default for Linux: "console=ttyS0 reboot=k panic=-1"; on a
    /// kvm_pvm host kvmini adds what Linux needs there, see --host-workarounds].
    #[arg(long)]
    cmdline: Option<String>,

    /// Initial ramdisk for the kernel (loaded high; PVH passes it as a module, Multiboot as
    /// the first module); a regular file, as the image must be.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,

    /// A module for a Multiboot kernel (repeatable; after the initrd, in order): a regular
    /// file, loaded page-aligned above the kernel, with STRING as its command line [default
    /// STRING: PATH as given, as GRUB passes it].
    #[arg(long = "module", value_name = "PATH[,STRING]", value_parser = parse_module)]
    modules: Vec<ModuleConfig>,

    /// Number of vCPUs (Linux kernels; an MP table describes them).
    #[arg(long, default_value_t = 1)]
    cpus: u8,

    /// CPUID features to hide from the guest, comma-separated, each with a leading '-'
    /// (e.g. -avx2,-cx16). Names as in /proc/cpuinfo, and kvm-pv-unhalt, kvm-pv-ipi,
    /// kvm-pv-sched-yield.
    #[arg(long, value_name = "LIST", value_delimiter = ',', allow_hyphen_values = true, value_parser = parse_hidden_feature)]
    cpu_features: Vec<String>,

    /// For Linux kernels on a software-virtualized host (kvm_pvm), add the kernel parameters
    /// "noxsave clearcpuid=popcnt,smap pvm_workarounds" and hide cx16 and KVM's hypercall
    /// features (kvm-pv-unhalt, kvm-pv-ipi, kvm-pv-sched-yield) from CPUID: auto does so
    /// only on such a host.
    #[arg(long, value_enum, default_value = "auto")]
    host_workarounds: WorkaroundsArg,

    #[command(
        flatten,
        next_help_heading = "Devices (Linux guests; virtio over MMIO)"
    )]
    devices: crate::devices::DeviceArgs,

    /// Serve GDB's remote protocol at ADDRESS: tcp:HOST:PORT (HOST an IP address or
    /// localhost; tcp::PORT: localhost; port 0: any free one, printed at start) or unix:PATH (a new socket, removed at exit). The guest
    /// runs at once and stops when a debugger attaches, as with QEMU's -s; --gdb-wait stops
    /// it first. One vCPU; not with --snapshot. See docs/gdb.md.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_gdb)]
    gdb: Option<GdbAddress>,

    /// With --gdb: stop before the guest's first instruction until a debugger attaches and
    /// continues (QEMU's -S).
    #[arg(long, requires = "gdb")]
    gdb_wait: bool,

    /// Once confined, make a system call no filter allows (tests the sandbox).
    #[arg(long, hide = true)]
    debug_forbidden_syscall: bool,

    /// Arguments for the guest's init, after "--" (kvmini's initramfs runs them as a command).
    #[arg(last = true, value_name = "INIT_ARGS")]
    init_args: Vec<String>,
}

/// How a VM runs and what is printed when it stops: the options `run` and `restore` share.
#[derive(clap::Args, Debug)]
pub struct Control {
    /// Where serial (COM1) output goes: stdio, none, or file:PATH (a regular file, created or
    /// truncated, or a character device such as /dev/null; not a FIFO).
    #[arg(long, default_value = "stdio", value_parser = parse_serial)]
    pub serial: SerialOutput,

    /// Stop the VM (status 123) once the guest has written more than SIZE bytes to the serial
    /// port [default: no limit]. Serial output that cannot be written (a closed pipe, a full
    /// disk) stops it with status 123 too.
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    pub serial_limit: Option<u64>,

    /// Stop the VM (status 124) after SECONDS (fractions allowed; at most 1e9, about 31
    /// years).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,

    /// At exit, print to stderr the count of each exit reason, unclaimed accesses, time in the
    /// guest and in kvmini, total wall time and boot milestones; --stats=json prints one JSON
    /// object instead.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "text", value_name = "FORMAT")]
    pub stats: Option<StatsArg>,

    /// The sandbox: once the VM is built, each of kvmini's threads runs under a seccomp filter
    /// that allows only the system calls it needs (see docs/security.md). on: a forbidden call
    /// ends kvmini with a message and status 126; log: lets it through and has the kernel log
    /// it; off: no filters.
    #[arg(long, value_enum, default_value = "on", value_name = "MODE")]
    pub seccomp: SeccompArg,

    /// Print a line for each VM exit to stderr: time since start, vCPU, exit kind, port or
    /// guest-physical address, size, data (hex), the device that took it and what kvmini did.
    /// FILTER selects exits: comma-separated KIND[:FROM[-TO]] items, KIND one of all, io,
    /// io-in, io-out, mmio, mmio-read, mmio-write, hlt, shutdown, fail-entry, internal-error,
    /// interrupted, system-event, debug, other; io and mmio kinds take an inclusive port or address
    /// range (e.g. --trace=io:0x3f8-0x3ff,hlt) [default: all].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "all", value_name = "FILTER", value_parser = parse_trace_filter)]
    pub trace: Option<TraceFilter>,

    /// Write the --trace lines to PATH (created or truncated) instead of stderr; without
    /// --trace, traces every exit.
    #[arg(long, value_name = "PATH")]
    pub trace_file: Option<PathBuf>,
}

impl Control {
    /// The trace the options ask for, if any.
    pub fn trace(&self) -> Option<TraceConfig> {
        if self.trace.is_none() && self.trace_file.is_none() {
            return None;
        }
        Some(TraceConfig {
            filter: self.trace.clone().unwrap_or_default(),
            output: match &self.trace_file {
                Some(path) => TraceOutput::File(path.clone()),
                None => TraceOutput::Stderr,
            },
        })
    }
}

fn parse_trace_filter(s: &str) -> Result<TraceFilter, String> {
    TraceFilter::parse(s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SeccompArg {
    On,
    Off,
    Log,
}

impl SeccompArg {
    pub fn mode(self) -> SeccompMode {
        match self {
            SeccompArg::On => SeccompMode::On,
            SeccompArg::Off => SeccompMode::Off,
            SeccompArg::Log => SeccompMode::Log,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Raw,
    Elf,
    Bzimage,
    Multiboot,
    Multiboot1,
    Multiboot2,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Real,
    Protected,
    Long,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MmioArg {
    Fatal,
    Ignore,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WorkaroundsArg {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StatsArg {
    Text,
    Json,
}

fn parse_size(s: &str) -> Result<u64, String> {
    config::parse_size(s).map_err(|e| e.to_string())
}

/// Sizes of output count bytes when they have no unit, unlike memory sizes.
fn parse_byte_size(s: &str) -> Result<u64, String> {
    config::parse_byte_count(s).map_err(|e| e.to_string())
}

fn parse_module(s: &str) -> Result<ModuleConfig, String> {
    config::parse_module(s).map_err(|e| e.to_string())
}

fn parse_u64(s: &str) -> Result<u64, String> {
    config::parse_u64(s).map_err(|e| e.to_string())
}

fn parse_serial(s: &str) -> Result<SerialOutput, String> {
    match s {
        "stdio" => Ok(SerialOutput::Stdout),
        "none" => Ok(SerialOutput::Null),
        _ => match s.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(SerialOutput::File(path.into())),
            _ => Err(format!("'{s}' is not stdio, none or file:PATH")),
        },
    }
}

/// `--debug-exit`: kvmini's own exit port (`None`) or QEMU's device.
#[derive(Clone, Copy, Debug)]
struct DebugExitArg(Option<DebugExitConfig>);

fn parse_debug_exit(s: &str) -> Result<DebugExitArg, String> {
    let mut parts = s.split(',');
    match parts.next() {
        Some("kvmini") if parts.clone().next().is_none() => return Ok(DebugExitArg(None)),
        Some("qemu") => {}
        _ => {
            return Err(format!(
                "'{s}' is not kvmini or qemu[,iobase=PORT,iosize=N]"
            ))
        }
    }
    let mut d = DebugExitConfig::default();
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not iobase=PORT or iosize=N"))?;
        let n = config::parse_u64(value).map_err(|e| e.to_string())?;
        match key {
            "iobase" => {
                d.iobase =
                    u16::try_from(n).map_err(|_| format!("iobase {n:#x} is not an I/O port"))?
            }
            "iosize" => {
                d.iosize = u8::try_from(n).map_err(|_| format!("iosize {n} is not 1, 2 or 4"))?
            }
            _ => return Err(format!("'{key}' is not iobase or iosize")),
        }
    }
    Ok(DebugExitArg(Some(d)))
}

fn parse_success_status(s: &str) -> Result<u8, String> {
    config::parse_u64(s)
        .and_then(config::success_status)
        .map_err(|e| e.to_string())
}

fn parse_gdb(s: &str) -> Result<GdbAddress, String> {
    s.parse().map_err(|e: config::Error| e.to_string())
}

fn parse_hidden_feature(f: &str) -> Result<String, String> {
    match f.strip_prefix('-') {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(format!("'{f}': features can only be hidden; write -{f}")),
    }
}

/// The longest `--timeout`, in seconds (about 31 years): far past any run, and well inside
/// what the timer takes.
const MAX_TIMEOUT_SECS: f64 = 1e9;

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .ok()
        .filter(|n: &f64| !n.is_nan())
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))?;
    if secs > MAX_TIMEOUT_SECS {
        return Err(format!(
            "'{s}' is more than the longest timeout, {MAX_TIMEOUT_SECS} seconds (about 31 years)"
        ));
    }
    match Duration::from_secs_f64(secs.max(0.0)) {
        d if d.is_zero() => Err(format!("'{s}' must be more than 0 seconds")),
        d => Ok(d),
    }
}

impl RunArgs {
    fn to_config(&self) -> VmConfig {
        VmConfig {
            image: self.image.clone(),
            format: self.format.map(|f| match f {
                FormatArg::Raw => ImageFormat::Raw,
                FormatArg::Elf => ImageFormat::Elf,
                FormatArg::Bzimage => ImageFormat::BzImage,
                FormatArg::Multiboot => ImageFormat::Multiboot,
                FormatArg::Multiboot1 => ImageFormat::Multiboot1,
                FormatArg::Multiboot2 => ImageFormat::Multiboot2,
            }),
            mem_size: self.mem,
            mode: self.mode.map(|m| match m {
                ModeArg::Real => CpuMode::Real,
                ModeArg::Protected => CpuMode::Protected,
                ModeArg::Long => CpuMode::Long,
            }),
            load_addr: self.load_addr,
            entry: self.entry,
            serial: self.control.serial.clone(),
            serial_limit: self.control.serial_limit,
            timeout: self.control.timeout,
            unclaimed_mmio: match self.unclaimed_mmio {
                MmioArg::Fatal => UnclaimedMmio::Fatal,
                MmioArg::Ignore => UnclaimedMmio::Ignore,
            },
            cmdline: self.cmdline.clone(),
            init_args: self.init_args.clone(),
            initrd: self.initrd.clone(),
            modules: self.modules.clone(),
            cpus: self.cpus,
            hide_cpu_features: self.cpu_features.clone(),
            host_workarounds: match self.host_workarounds {
                WorkaroundsArg::Auto => HostWorkarounds::Auto,
                WorkaroundsArg::On => HostWorkarounds::On,
                WorkaroundsArg::Off => HostWorkarounds::Off,
            },
            serial_input: SerialInput::Stdin,
            // Only --stats shows the split, so only --stats pays for it.
            time_exits: self.control.stats.is_some(),
            snapshot: self.snapshot.clone(),
            snapshot_continue: self.snapshot_continue,
            debug_exit: self.debug_exit.and_then(|d| d.0),
            success_status: self.success_status,
            devices: self.devices.to_config(),
            gdb: self.gdb.clone().map(|address| GdbConfig {
                address,
                wait: self.gdb_wait,
            }),
            seccomp: self.control.seccomp.mode(),
            trace: self.control.trace(),
            debug_forbidden_syscall: self.debug_forbidden_syscall,
        }
    }
}

pub fn main(args: &RunArgs) -> i32 {
    let config = args.to_config();
    let result = Vmm::new(&config).and_then(|vmm| {
        if let Some((target, waits)) = vmm.gdb_target() {
            let note = match waits {
                true => "; the guest waits for it to continue",
                false => "; the guest runs, and stops when a debugger attaches",
            };
            eprintln!("kvmini: gdb: listening; in GDB: target remote {target}{note}");
        }
        vmm.run()
    });
    finish(result, &args.control, args.snapshot.as_deref())
}

/// Where serial output went, for messages.
fn destination(serial: &SerialOutput) -> String {
    match serial {
        SerialOutput::Stdout => "standard output".into(),
        SerialOutput::File(path) => path.display().to_string(),
        SerialOutput::Null | SerialOutput::Buffer(_) => "the output".into(),
    }
}

/// Prints how the VM stopped and its statistics; returns the exit status.
pub fn finish(
    result: Result<RunOutcome, Error>,
    control: &Control,
    snapshot: Option<&Path>,
) -> i32 {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            match e.host_limit() {
                Some(limit) => eprintln!(
                    "kvmini: error: {e}; this is {limit}, a limit of the host, not a fault in the input"
                ),
                None => eprintln!("kvmini: error: {e}"),
            }
            return e.exit_status();
        }
    };
    // Serial output may still sit in stdout's buffer; it belongs before anything on stderr.
    let _ = std::io::stdout().flush();
    match &outcome.reason {
        StopReason::Crash(report) => eprint!("kvmini: {report}"),
        StopReason::Timeout => eprintln!(
            "kvmini: timed out after {} s (--timeout); the guest was still running",
            control.timeout.unwrap_or_default().as_secs_f64()
        ),
        StopReason::OutputLimit(limit) => eprintln!(
            "kvmini: stopped: the guest wrote more than {limit} bytes to the serial port (--serial-limit)"
        ),
        StopReason::OutputFailed(e) if e.is_closed_pipe() => eprintln!(
            "kvmini: stopped: {} was closed ({e}); the guest's serial output had nowhere to go",
            destination(&control.serial)
        ),
        StopReason::OutputFailed(e) => eprintln!(
            "kvmini: stopped: cannot write the guest's serial output to {}: {e}; the rest of it was lost",
            destination(&control.serial)
        ),
        StopReason::UserQuit => eprintln!("kvmini: quit (Ctrl-A x)"),
        StopReason::DebuggerKill => eprintln!("kvmini: killed from the debugger (GDB's kill)"),
        StopReason::Snapshot => eprintln!(
            "kvmini: saved the VM into {}; `kvmini restore {0}` goes on from here",
            snapshot.unwrap_or(Path::new("?")).display()
        ),
        StopReason::DebugExit(v) if outcome.exit_status >= status::FIRST_RESERVED => eprintln!(
            "kvmini: note: the guest's debug-exit value {v:#x} gives status {}, in the range kvmini reserves for its own statuses",
            outcome.exit_status
        ),
        // Only --success-status turns a clean stop into a failure.
        reason
            if status::for_stop(reason) == status::CLEAN
                && outcome.exit_status == status::NOT_SUCCESS =>
        {
            eprintln!(
                "kvmini: the guest stopped without giving the success status (--success-status): {reason}; exit status {}",
                status::NOT_SUCCESS
            )
        }
        StopReason::GuestExit(v) if i32::from(*v) >= status::FIRST_RESERVED => eprintln!(
            "kvmini: note: the guest's exit code {v} is in the range kvmini reserves for its own statuses"
        ),
        _ => {}
    }
    if let Some(failure) = &outcome.trace_failure {
        eprintln!("kvmini: warning: {failure}");
    }
    match control.stats {
        Some(StatsArg::Text) => eprint!("{}", outcome.stats),
        Some(StatsArg::Json) => eprintln!(
            "{}",
            serde_json::to_string(&outcome.stats).unwrap_or_default()
        ),
        None => {}
    }
    outcome.exit_status
}
