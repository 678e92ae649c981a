//! What to run and how: plain data, filled in by the command line or by tests, validated once
//! before anything is created.

use std::path::PathBuf;
use std::time::Duration;

mod devices;
mod gdb;
mod modules;
mod numbers;

pub use crate::devices::debug_exit::DebugExitConfig;
pub use crate::devices::serial::SharedBuffer;
pub use crate::sandbox::SeccompMode;
pub use crate::trace::{Filter as TraceFilter, TraceConfig, TraceOutput};
pub use devices::{DeviceConfig, DiskConfig, NetConfig, VsockConfig, MIN_GUEST_CID};
pub use gdb::{GdbAddress, GdbConfig};
pub use modules::{parse_module, ModuleConfig};
pub use numbers::{human_size, parse_byte_count, parse_size, parse_u64};

/// Smallest guest memory kvmini accepts.
pub const MIN_MEM_SIZE: u64 = 1 << 20;
/// Guest memory when none is given: enough for any small guest...
pub const DEFAULT_MEM_SIZE: u64 = 16 << 20;
/// ...and for a Linux kernel with an initramfs (QEMU's and Firecracker's default too).
pub const DEFAULT_LINUX_MEM_SIZE: u64 = 128 << 20;

/// How a kernel image is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// Flat machine code, loaded as is.
    Raw,
    /// ELF64 executable (a vmlinux, or any small kernel).
    Elf,
    /// Linux bzImage (x86 boot protocol).
    BzImage,
    /// A Multiboot kernel: Multiboot 2 when the file has both headers, else Multiboot 1.
    Multiboot,
    /// A Multiboot 1 kernel (header magic 0x1BADB002).
    Multiboot1,
    /// A Multiboot 2 kernel (header magic 0xE85250D6).
    Multiboot2,
}

impl ImageFormat {
    /// One of the Multiboot formats.
    pub fn is_multiboot(self) -> bool {
        matches!(
            self,
            ImageFormat::Multiboot | ImageFormat::Multiboot1 | ImageFormat::Multiboot2
        )
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageFormat::Raw => "a raw image",
            ImageFormat::Elf => "an ELF kernel",
            ImageFormat::BzImage => "a bzImage",
            ImageFormat::Multiboot => "a Multiboot kernel",
            ImageFormat::Multiboot1 => "a Multiboot 1 kernel",
            ImageFormat::Multiboot2 => "a Multiboot 2 kernel",
        })
    }
}

/// The CPU mode a raw image starts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuMode {
    /// 16-bit real mode, kvmtool's flat-binary convention.
    #[default]
    Real,
    /// 32-bit flat protected mode, paging off.
    Protected,
    /// 64-bit long mode, first 4 GiB identity-mapped.
    Long,
}

impl std::fmt::Display for CpuMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CpuMode::Real => "real",
            CpuMode::Protected => "protected",
            CpuMode::Long => "long",
        })
    }
}

/// Where the guest's serial output goes.
#[derive(Clone, Debug, Default)]
pub enum SerialOutput {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// Nowhere (still counted).
    Null,
    /// A file, created or truncated.
    File(PathBuf),
    /// A buffer the caller reads afterwards.
    Buffer(SharedBuffer),
}

/// What a guest access to guest-physical memory that is neither RAM nor a device means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UnclaimedMmio {
    /// Stop the VM and report a crash (the default: such an access is almost always a bug).
    #[default]
    Fatal,
    /// Reads return all-ones, writes are dropped; both are counted, like port I/O.
    Ignore,
}

/// Whether kvmini adds what a software-virtualized host (`kvm_pvm`) needs to Linux guests:
/// kernel parameters and CPUID features to hide, listed in `host::Workarounds::PVM` (`src/host.rs`) and in the README.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostWorkarounds {
    /// Only when `kvmini check` would call this host `kvm_pvm`.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// Where the guest's serial input comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SerialInput {
    /// Nowhere.
    #[default]
    None,
    /// kvmini's standard input, when it is a terminal (put in raw mode; Ctrl-A x quits) or a
    /// pipe; only for guests with interrupts (Linux).
    Stdin,
}

/// Most vCPUs kvmini runs (the MP table must fit in the last KiB of base memory).
pub const MAX_CPUS: u8 = 32;

/// A VM to run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Kernel or raw image.
    pub image: PathBuf,
    /// Image format; detected from the file when `None`.
    pub format: Option<ImageFormat>,
    /// Guest RAM in bytes; [`DEFAULT_MEM_SIZE`], or [`DEFAULT_LINUX_MEM_SIZE`] for Linux,
    /// when `None`.
    pub mem_size: Option<u64>,
    /// Start mode of raw images; real mode when `None`.
    pub mode: Option<CpuMode>,
    /// Where a raw image is loaded; the mode's default when `None`.
    pub load_addr: Option<u64>,
    /// Entry point of a raw image; its load address when `None`.
    pub entry: Option<u64>,
    /// Serial output.
    pub serial: SerialOutput,
    /// Stop the VM when the guest writes more than this many bytes to the serial port.
    pub serial_limit: Option<u64>,
    /// Stop the VM after this long.
    pub timeout: Option<Duration>,
    /// Meaning of accesses to unclaimed guest-physical addresses.
    pub unclaimed_mmio: UnclaimedMmio,
    /// Kernel command line; kvmini's default for Linux when `None`.
    pub cmdline: Option<String>,
    /// Arguments for the guest's init, after ` -- ` on the command line.
    pub init_args: Vec<String>,
    /// Initial ramdisk (for a Multiboot kernel: the first module, its path as its string).
    pub initrd: Option<PathBuf>,
    /// Modules for a Multiboot kernel, after the initrd.
    pub modules: Vec<ModuleConfig>,
    /// Number of vCPUs.
    pub cpus: u8,
    /// CPUID features to hide from the guest, by name (`cx16`, `avx2`, ...).
    pub hide_cpu_features: Vec<String>,
    /// Host-specific additions for Linux guests.
    pub host_workarounds: HostWorkarounds,
    /// Serial input.
    pub serial_input: SerialInput,
    /// Time every `KVM_RUN` (two clock reads per exit) to split the run into time in the
    /// guest and time in kvmini for the statistics.
    pub time_exits: bool,
    /// Save the VM into this directory when the guest asks for it (the value
    /// `SNAPSHOT_NOW`, 0x7f, on port 0x80), SIGUSR1 arrives or the user types Ctrl-A s;
    /// then stop.
    pub snapshot: Option<PathBuf>,
    /// After the snapshot, go on running instead of stopping.
    pub snapshot_continue: bool,
    /// QEMU's debug-exit device instead of kvmini's exit port (`--debug-exit qemu`).
    pub debug_exit: Option<DebugExitConfig>,
    /// The status that means success, for test runners (`--success-status`): a run that ends
    /// with it exits 0, and one that would exit 0 exits 1; 1 to 119. See
    /// [`status::with_success`](crate::status::with_success).
    pub success_status: Option<u8>,
    /// Virtio devices (Linux guests).
    pub devices: DeviceConfig,
    /// A GDB remote stub for the guest (`--gdb`, `--gdb-wait`; docs/gdb.md).
    pub gdb: Option<GdbConfig>,
    /// The sandbox: a seccomp filter on each of kvmini's threads once the guest runs,
    /// including the calling thread, which runs the boot vCPU and stays confined afterwards.
    /// On, it also has threads started from then on share glibc's main malloc arena
    /// (`M_ARENA_MAX` 1, for the whole process; see docs/security.md). Off by default in the
    /// library; the `kvmini` binary turns it on.
    pub seccomp: SeccompMode,
    /// `--trace`: a line for each exit the filter selects; `None`, no trace and no cost.
    pub trace: Option<TraceConfig>,
    /// Makes a system call no filter allows once the sandbox is in place (tests the sandbox).
    #[doc(hidden)]
    pub debug_forbidden_syscall: bool,
}

/// A VM to restore from a snapshot: the snapshot holds the machine, this says how to run it.
#[derive(Clone, Debug)]
pub struct RestoreConfig {
    /// The snapshot directory.
    pub dir: PathBuf,
    /// Serial output.
    pub serial: SerialOutput,
    /// Stop the VM when the guest writes more than this many bytes to the serial port.
    pub serial_limit: Option<u64>,
    /// Stop the VM after this long.
    pub timeout: Option<Duration>,
    /// Serial input.
    pub serial_input: SerialInput,
    /// Bytes for the guest's serial input before anything else (kvmini's Linux guest reads
    /// its command from there after a restore).
    pub input: Vec<u8>,
    /// Time every `KVM_RUN` for the statistics.
    pub time_exits: bool,
    /// The virtio devices' backing files, sockets and TAPs: the snapshot's devices in kind
    /// and order, on new files if need be (a disk image of the saved size). None at all:
    /// the snapshot's own.
    pub devices: DeviceConfig,
    /// The sandbox, as for [`VmConfig::seccomp`].
    pub seccomp: SeccompMode,
    /// `--trace`, as for [`VmConfig::trace`].
    pub trace: Option<TraceConfig>,
}

impl RestoreConfig {
    /// Restoring `dir` with every default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RestoreConfig {
            dir: dir.into(),
            serial: SerialOutput::default(),
            serial_limit: None,
            timeout: None,
            serial_input: SerialInput::default(),
            input: Vec::new(),
            time_exits: true,
            devices: DeviceConfig::default(),
            seccomp: SeccompMode::Off,
            trace: None,
        }
    }
}

impl VmConfig {
    /// A configuration for `image` with every default.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        VmConfig {
            image: image.into(),
            format: None,
            mem_size: None,
            mode: None,
            load_addr: None,
            entry: None,
            serial: SerialOutput::default(),
            serial_limit: None,
            timeout: None,
            unclaimed_mmio: UnclaimedMmio::default(),
            cmdline: None,
            init_args: Vec::new(),
            initrd: None,
            modules: Vec::new(),
            cpus: 1,
            hide_cpu_features: Vec::new(),
            host_workarounds: HostWorkarounds::default(),
            serial_input: SerialInput::default(),
            time_exits: true,
            snapshot: None,
            snapshot_continue: false,
            debug_exit: None,
            success_status: None,
            devices: DeviceConfig::default(),
            gdb: None,
            seccomp: SeccompMode::Off,
            trace: None,
            debug_forbidden_syscall: false,
        }
    }

    /// Checks what can be checked before touching the host.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(size) = self.mem_size {
            validate_mem_size(size, host_memory())?;
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::ZeroTimeout);
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(Error::BadCpus(self.cpus));
        }
        if let Some(d) = self.debug_exit {
            validate_debug_exit(d)?;
        }
        if let Some(s) = self.success_status {
            success_status(u64::from(s))?;
        }
        self.devices.validate()?;
        for module in &self.modules {
            module.validate()?;
        }
        if self.gdb.is_some() {
            if self.cpus > 1 {
                return Err(Error::GdbCpus(self.cpus));
            }
            if self.snapshot.is_some() {
                return Err(Error::GdbSnapshot);
            }
        }
        for name in &self.hide_cpu_features {
            if crate::arch::x86_64::cpuid::feature(name).is_none() {
                return Err(Error::UnknownCpuFeature(name.clone()));
            }
        }
        Ok(())
    }

    /// Checks the options that depend on what the image turned out to be: kernel options for
    /// kernels, raw-image options for raw images, several vCPUs for Linux only.
    pub fn validate_for_image(&self, format: ImageFormat, linux: bool) -> Result<(), Error> {
        let kernel_only = [
            ("--cmdline", self.cmdline.is_some()),
            ("--initrd", self.initrd.is_some()),
            ("init arguments after --", !self.init_args.is_empty()),
        ];
        let raw_only = [
            ("--mode", self.mode.is_some()),
            ("--load-addr", self.load_addr.is_some()),
            ("--entry", self.entry.is_some()),
        ];
        let misplaced = |options: &[(&'static str, bool)]| {
            options.iter().find(|(_, set)| *set).map(|(o, _)| *o)
        };
        let path = self.image.clone();
        if !self.modules.is_empty() && !format.is_multiboot() {
            return Err(Error::ModuleNeedsMultiboot { path, format });
        }
        if format == ImageFormat::Raw {
            if let Some(option) = misplaced(&kernel_only) {
                return Err(Error::KernelOnlyOption { option, path });
            }
        } else if let Some(option) = misplaced(&raw_only) {
            return Err(Error::RawOnlyOption {
                option,
                path,
                format,
            });
        }
        if self.cpus > 1 && !linux {
            return Err(Error::CpusNeedLinux(self.cpus));
        }
        if let (false, Some(option)) = (linux, self.devices.first_option()) {
            return Err(Error::DevicesNeedLinux(option));
        }
        Ok(())
    }

    /// Guest memory for an image: what the user asked for, else the default for its kind.
    pub fn mem_size_for(&self, linux: bool) -> u64 {
        self.mem_size.unwrap_or(if linux {
            DEFAULT_LINUX_MEM_SIZE
        } else {
            DEFAULT_MEM_SIZE
        })
    }
}

/// Configuration errors.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Too little memory.
    #[error("guest memory of {} is too small; kvmini needs at least {}", human_size(*.0), human_size(MIN_MEM_SIZE))]
    MemTooSmall(u64),
    /// More memory than the host has.
    #[error("guest memory of {} is more than this host's {} of RAM; lower --mem", human_size(*.requested), human_size(*.host))]
    MemTooLarge {
        /// Asked for.
        requested: u64,
        /// Host RAM.
        host: u64,
    },
    /// Not whole pages.
    #[error("guest memory of {0} bytes is not a multiple of 4 KiB")]
    MemNotAligned(u64),
    /// A size that does not parse.
    #[error(
        "'{0}' is not a size; write a number with an optional K, M, G or T suffix (e.g. 16M, 1G)"
    )]
    BadSize(String),
    /// A size past what 64 bits count.
    #[error("'{0}' is too large; sizes go up to 16 EiB (2^64 bytes) less one")]
    SizeTooLarge(String),
    /// A number that does not parse.
    #[error("'{0}' is not a number; write it in decimal or with a 0x prefix")]
    BadNumber(String),
    /// A zero timeout.
    #[error("--timeout must be more than 0 seconds")]
    ZeroTimeout,
    /// Too few or too many vCPUs.
    #[error("--cpus {0} is out of range; kvmini runs 1 to {MAX_CPUS} vCPUs")]
    BadCpus(u8),
    /// Several vCPUs for a guest that cannot start them.
    #[error("--cpus {0} needs a Linux kernel: other vCPUs are started by the guest through the in-kernel local APICs, which kvmini sets up for Linux only")]
    CpusNeedLinux(u8),
    /// A kernel option given for a raw image.
    #[error("{option} applies to kernels (ELF, bzImage or Multiboot) only, and {} is a raw image", .path.display())]
    KernelOnlyOption {
        /// The option.
        option: &'static str,
        /// Image path.
        path: PathBuf,
    },
    /// Modules for an image that is not a Multiboot kernel.
    #[error("--module applies to Multiboot kernels only, and {} is {format} (other kernels take a single --initrd)", .path.display())]
    ModuleNeedsMultiboot {
        /// Image path.
        path: PathBuf,
        /// Its format.
        format: ImageFormat,
    },
    /// A module option without a path.
    #[error("--module '{0}' names no file; write PATH or PATH,STRING")]
    BadModule(String),
    /// A module string the kernel could not read whole.
    #[error("the string of module {} contains a NUL byte, where the kernel would cut it short", .0.display())]
    ModuleString(PathBuf),
    /// A raw-image option given for a kernel.
    #[error("{option} applies to raw images only, and {} is {format} (--format raw boots it as raw code)", .path.display())]
    RawOnlyOption {
        /// The option.
        option: &'static str,
        /// Image path.
        path: PathBuf,
        /// Its format.
        format: ImageFormat,
    },
    /// A success status that a guest cannot give, or that is kvmini's own.
    #[error("--success-status {0} is not a status a guest gives; use 1 to 119 (0 is success already, 120 and above are kvmini's own statuses)")]
    BadSuccessStatus(u64),
    /// A debug-exit width QEMU's device does not have.
    #[error("--debug-exit iosize={0} is not 1, 2 or 4")]
    DebugExitSize(u8),
    /// A debug-exit port range that collides.
    #[error("--debug-exit iobase={0:#x} runs into {1}; choose other ports")]
    DebugExitPorts(u16, &'static str),
    /// A command for a restored guest that has no console input.
    #[error("a command after -- goes to the guest's console, which only a Linux guest's snapshot reads ({} is not one)", .0.display())]
    CommandNeedsLinux(PathBuf),
    /// A device option that does not parse or does not add up.
    #[error("{option} {value}: {why}")]
    DeviceOption {
        /// The option.
        option: &'static str,
        /// What it was given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// More devices than there are MMIO windows and interrupt lines.
    #[error("{0} virtio devices are more than the {max} kvmini has room for", max = crate::arch::x86_64::layout::VIRTIO_MMIO_MAX_DEVICES)]
    TooManyDevices(usize),
    /// Devices for a guest that is not Linux.
    #[error("{0} needs a Linux kernel: virtio devices are announced on its command line and interrupt through the IO-APIC kvmini sets up for Linux only")]
    DevicesNeedLinux(&'static str),
    /// A `--gdb` address that does not parse.
    #[error("--gdb {value}: {why}")]
    GdbAddress {
        /// What it was given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A debugger for a VM with several vCPUs.
    #[error(
        "--gdb debugs one vCPU; --cpus {0} asks for more (run the guest with --cpus 1 to debug it)"
    )]
    GdbCpus(u8),
    /// A debugger and a snapshot at once.
    #[error("--gdb and --snapshot cannot be used together: a VM stopped in the debugger cannot be saved consistently; debug the guest, or save it, in separate runs")]
    GdbSnapshot,
    /// A CPUID feature name kvmini does not know.
    #[error("unknown CPU feature '{0}'; known: {known}", known = crate::arch::x86_64::cpuid::feature_names().join(", "))]
    UnknownCpuFeature(String),
}

/// The ports of kvmini's other devices, which the debug-exit device must leave alone.
const FIXED_PORTS: [(&str, u64, u64); 4] = [
    (
        "the serial port",
        crate::devices::serial::COM1_PORT,
        crate::devices::serial::COM1_LEN,
    ),
    (
        "the boot-marker port",
        crate::devices::debug_port::DEBUG_PORT,
        1,
    ),
    ("the i8042", crate::devices::i8042::I8042_DATA_PORT, 1),
    ("the i8042", crate::devices::i8042::I8042_COMMAND_PORT, 1),
];

/// Checks a `--success-status`: a status a guest can end with (1 to 119), not 0 and not one of
/// kvmini's own.
pub fn success_status(n: u64) -> Result<u8, Error> {
    match u8::try_from(n) {
        Ok(s) if s != 0 && i32::from(s) < crate::status::FIRST_RESERVED => Ok(s),
        _ => Err(Error::BadSuccessStatus(n)),
    }
}

fn validate_debug_exit(d: DebugExitConfig) -> Result<(), Error> {
    if ![1, 2, 4].contains(&d.iosize) {
        return Err(Error::DebugExitSize(d.iosize));
    }
    let (start, end) = (
        u64::from(d.iobase),
        u64::from(d.iobase) + u64::from(d.iosize),
    );
    if end > 0x1_0000 {
        return Err(Error::DebugExitPorts(d.iobase, "the end of the I/O space"));
    }
    match FIXED_PORTS
        .iter()
        .find(|(_, base, len)| start < base + len && *base < end)
    {
        Some((name, _, _)) => Err(Error::DebugExitPorts(d.iobase, name)),
        None => Ok(()),
    }
}

fn validate_mem_size(size: u64, host: Option<u64>) -> Result<(), Error> {
    if size < MIN_MEM_SIZE {
        return Err(Error::MemTooSmall(size));
    }
    if size % 4096 != 0 {
        return Err(Error::MemNotAligned(size));
    }
    if let Some(host) = host {
        if size > host {
            return Err(Error::MemTooLarge {
                requested: size,
                host,
            });
        }
    }
    Ok(())
}

/// Total RAM of the host (`sysinfo(2)`: one system call, where `/proc/meminfo` takes several).
pub fn host_memory() -> Option<u64> {
    // SAFETY: an all-zero sysinfo is a valid buffer for the call to fill.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo buffer.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    info.totalram.checked_mul(u64::from(info.mem_unit))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
