//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): each takes arbitrary
//! bytes, reads a small configuration from their start, and runs kvmini's own code on the
//! rest, the way a VM build or a running guest would reach it, but without `/dev/kvm`.
//!
//! **Not a stable API.** It exists only with the `fuzzing` feature (and in the library's own
//! tests, which run the saved crashes under `fuzz/regressions/` through it) and changes with
//! the code it reaches. Each entry point panics only when kvmini does, or when one of the few
//! properties checked here fails; an error kvmini returns for bad input is a normal outcome.
//!
//! The input layout of each target is documented on its function; fuzz/README.md tells how
//! to run them and how a crash becomes a regression test.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::kvm_sregs;
use vmm_sys_util::epoll::Epoll;

use crate::arch::x86_64::layout::{CMDLINE_MAX_SIZE, VIRTIO_MMIO_BASE};
use crate::boot::cmdline::{self, CmdlineArgs};
use crate::boot::raw::RawArgs;
use crate::boot::{self, initrd, pvh, zero_page, BootArgs, Entry};
use crate::config::{
    self, CpuMode, DebugExitConfig, DeviceConfig, DiskConfig, ImageFormat, NetConfig, SerialOutput,
    UnclaimedMmio, VmConfig, VsockConfig,
};
use crate::devices::serial::{IrqTrigger, SharedBuffer};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::{EventRegistry, Interrupt};
use crate::devices::{lock, BusDevice};
use crate::memory::{self, contains_range};
use crate::snapshot;
use crate::stats::VcpuStats;
use crate::stop::SnapshotTrigger;
use crate::trace::{self, tracer::Tracer, Filter, TraceConfig, TraceOutput};
use crate::vcpu::exit::{self, Exit, VcpuEmulation};
use crate::vmm::build::{self, DeviceArgs};
use crate::vmm::Devices;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its file in `fuzz/fuzz_targets/` and of its directory
/// in `fuzz/regressions/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("image", image),
    ("boot_args", boot_args),
    ("options", options),
    ("buses", buses),
    ("snapshot_state", snapshot_state),
    ("virtio", virtio),
];

/// The bytes of an input, consumed from the front; past the end every number reads 0.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        let head = self.take(N);
        a[..head.len()].copy_from_slice(head);
        a
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}

/// A file in memory holding `bytes`, and a path that opens it (the loaders and devices take
/// paths).
fn memfd(bytes: &[u8]) -> (File, PathBuf) {
    // SAFETY: the name is a NUL-terminated string; the call takes no other pointer.
    let fd = unsafe { libc::memfd_create(c"kvmini-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a new descriptor owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes).expect("write to a memfd");
    let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
    (file, path)
}

/// Guest memory sizes the targets choose from: the default (0, so that a seed behind a zero
/// header gets it), tiny, a Linux guest's, and one that spans the 32-bit MMIO hole (two
/// regions; mapped lazily, so nearly free).
const MEM_SIZES: [u64; 4] = [16 << 20, 1 << 20, 64 << 20, (4 << 30) + (16 << 20)];

/// Image detection, the raw, ELF, bzImage and Multiboot loaders (headers, segments, notes,
/// PVH, setup header, Multiboot header and information, command line, initrd, zero page or
/// start info) and the entry state, as `Vmm::new` runs them.
///
/// Input: a 12-byte header, then the command line, the initrd and the image:
///
/// | byte | meaning |
/// |---|---|
/// | 0 | bits 0-1: format (detected, raw, ELF, bzImage); 2-3: raw mode (real, protected, long, real); 4-5: memory (16, 1, 64 MiB, 4 GiB + 16 MiB); 6: a load address is given; 7: an entry is given |
/// | 1 | command line length (0: none) |
/// | 2-3 | initrd length, little-endian (0: none) |
/// | 4-7 | load address |
/// | 8-11 | entry point |
///
/// A real image becomes a seed behind 12 zero bytes (`make fuzz` does that).
pub fn image(data: &[u8]) {
    image_run(data);
}

/// [`image`]; returns the loaded image's summary.
fn image_run(data: &[u8]) -> Option<String> {
    let mut input = Input(data);
    let flags = input.u8();
    let cmdline_len = usize::from(input.u8());
    let initrd_len = usize::from(input.u16());
    let load_addr = input.u32();
    let entry = input.u32();
    let format = match flags & 3 {
        0 => None,
        1 => Some(ImageFormat::Raw),
        2 => Some(ImageFormat::Elf),
        _ => Some(ImageFormat::BzImage),
    };
    let mode = match (flags >> 2) & 3 {
        1 => CpuMode::Protected,
        2 => CpuMode::Long,
        _ => CpuMode::Real,
    };
    let mem_size = MEM_SIZES[usize::from(flags >> 4) & 3];
    let cmdline_text = String::from_utf8_lossy(input.take(cmdline_len)).into_owned();
    let initrd_bytes = input.take(initrd_len);
    let (_image_file, image_path) = memfd(input.rest());
    let initrd = (initrd_len > 0).then(|| memfd(initrd_bytes));

    let image = boot::open(&image_path, format).ok()?;
    let linux = image.kind.is_linux();
    let mem = memory::create(mem_size).expect("map guest memory");
    let args = BootArgs {
        raw: RawArgs {
            mode,
            load_addr: (flags & 0x40 != 0).then_some(u64::from(load_addr)),
            entry: (flags & 0x80 != 0).then_some(u64::from(entry)),
        },
        cmdline: CmdlineArgs {
            base: (cmdline_len > 0).then_some(cmdline_text.as_str()),
            ..Default::default()
        },
        initrd: initrd.as_ref().map(|(_, path)| path.as_path()),
        modules: &[],
    };
    let boot = boot::load(image, &mem, &args).ok()?;
    assert_eq!(boot.linux, linux);
    // The loaders promise an entry point in guest memory.
    let first = match boot.entry {
        Entry::Real { segment, ip } => u64::from(segment) * 16 + u64::from(ip),
        Entry::Protected { eip, .. } => u64::from(eip),
        Entry::Long { rip, .. } => rip,
    };
    assert!(contains_range(&mem, first, 1), "entry {first:#x} outside");
    let mut sregs = kvm_sregs::default();
    boot::setup_entry(&mem, &boot.entry, &mut sregs).expect("entry state");
    Some(boot.summary)
}

/// The kernel command line (kvmini's default, the host's parameters, the devices', init's
/// arguments) and where it goes; where an initrd goes; the zero page and the PVH start info
/// that carry both.
///
/// Input: byte 0: bit 0: a capacity of 256 bytes instead of 64 KiB; 1: a Linux kernel; 2: the
/// host's parameters; 3: init arguments; 4-5: memory as in [`image`]; 6: no user command
/// line. Then the initrd's size, the kernel's end and the initrd's limit (u64 each,
/// little-endian), then lines of text: the user's command line, the device parameters, and
/// init's arguments, one a line (so that seeds are text files).
pub fn boot_args(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let capacity = if flags & 1 != 0 {
        256
    } else {
        CMDLINE_MAX_SIZE
    };
    let linux = flags & 2 != 0;
    let host_params = if flags & 4 != 0 {
        crate::host::Workarounds::PVM.cmdline
    } else {
        None
    };
    let mem_size = MEM_SIZES[usize::from(flags >> 4) & 3];
    let (initrd_size, kernel_end, max_end) = (input.u64(), input.u64(), input.u64());
    let text = String::from_utf8_lossy(input.rest()).into_owned();
    let mut parts = text.split('\n');
    let base = parts.next().filter(|_| flags & 0x40 == 0);
    let device_params = parts.next().unwrap_or("");
    let init_args: Vec<String> = match flags & 8 {
        0 => Vec::new(),
        _ => parts.map(String::from).collect(),
    };

    let mem = memory::create(mem_size).expect("map guest memory");
    let args = CmdlineArgs {
        base,
        host_params,
        device_params,
        init_args: &init_args,
    };
    let placed = match args.build(linux, capacity) {
        Ok(Some(c)) => {
            let len = cmdline::len(&c).expect("a built command line has a length");
            assert!(
                len < capacity,
                "{len} bytes in a command line of {capacity}"
            );
            let _ = cmdline::text(&c);
            cmdline::write_cmdline(&mem, &c).ok()
        }
        Ok(None) => None,
        Err(e) => {
            let _ = e.to_string();
            None
        }
    };
    // `load_initrd` refuses an empty file before it places anything.
    let placed_initrd = match initrd::place_initrd(&mem, initrd_size.max(1), kernel_end, max_end) {
        Ok(addr) => {
            assert_eq!(addr % 4096, 0, "initrd at {addr:#x}");
            assert!(addr >= kernel_end, "initrd at {addr:#x} under the kernel");
            let size = initrd_size.max(1);
            let end = addr.checked_add(size).expect("initrd end");
            assert!(end <= max_end, "initrd ends at {end:#x} past {max_end:#x}");
            assert!(contains_range(&mem, addr, size), "initrd outside");
            Some(initrd::Initrd { addr, size })
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    };
    let _ = initrd::summary(placed_initrd);
    zero_page::write_boot_params(&mem, None, placed, placed_initrd).expect("zero page");
    pvh::write_start_info(&mem, placed.map(|c| c.addr), placed_initrd).expect("start info");
}

/// The size and number parsers of the command line (`--mem`, `--serial-limit`,
/// `--load-addr`) and the device options (`--disk`, `--net`, `--vsock`), on the whole input
/// as text; then the device list they make, validated.
pub fn options(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    if let Ok(n) = config::parse_size(s) {
        let _ = config::human_size(n);
    }
    if let Ok(n) = config::parse_byte_count(s) {
        assert_eq!(config::parse_byte_count(&n.to_string()), Ok(n));
    }
    if let Ok(n) = config::parse_u64(s) {
        assert_eq!(config::parse_u64(&n.to_string()), Ok(n));
        assert_eq!(config::parse_u64(&format!("{n:#x}")), Ok(n));
    }
    let disk = s.parse::<DiskConfig>();
    let net = s.parse::<NetConfig>();
    let vsock = s.parse::<VsockConfig>();
    if let Ok(d) = &disk {
        assert!(d.id.as_ref().is_none_or(|id| (1..=20).contains(&id.len())));
    }
    if let Ok(n) = &net {
        assert!((1..16).contains(&n.tap.len()));
    }
    if let Ok(v) = &vsock {
        assert!(v.cid >= config::MIN_GUEST_CID);
    }
    for e in [
        disk.as_ref().err(),
        net.as_ref().err(),
        vsock.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = e.to_string();
    }
    let devices = DeviceConfig {
        root: disk.as_ref().ok().cloned(),
        disks: disk.ok().into_iter().collect(),
        nets: net.ok().into_iter().collect(),
        vsock: vsock.ok(),
        rng: true,
    };
    let _ = devices.first_option();
    let _ = devices.count();
    if let Err(e) = devices.validate() {
        let _ = e.to_string();
    }
}

/// The vCPU's exit dispatch as the bus target drives it, through a tracer when the input asks
/// for one (as `--trace` does).
struct Dispatch<'a> {
    buses: exit::Devices<'a>,
    stats: VcpuStats,
    trace: Option<(Tracer, SharedBuffer)>,
}

impl<'a> Dispatch<'a> {
    fn new(devices: &'a Devices, unclaimed_mmio: UnclaimedMmio, traced: bool) -> Self {
        let trace = traced.then(|| {
            let out = SharedBuffer::new();
            let config = TraceConfig {
                filter: Filter::all(),
                output: TraceOutput::Buffer(out.clone()),
            };
            let sink = trace::Sink::open(&config, Instant::now()).expect("a buffer opens");
            (Tracer::new(Arc::new(sink), 0), out)
        });
        Dispatch {
            buses: exit::Devices {
                io: &devices.io_bus,
                mmio: &devices.mmio_bus,
                unclaimed_mmio,
            },
            stats: VcpuStats::default(),
            trace,
        }
    }

    /// Runs `exit` through the dispatch; a stop gives a documented status.
    fn exit(&mut self, exit: Exit<'_>) {
        let outcome = match &mut self.trace {
            Some((tracer, _)) => tracer.handle(&self.buses, exit, &mut self.stats),
            None => exit::handle_exit(&self.buses, exit, &mut self.stats),
        };
        match outcome {
            VcpuEmulation::Stopped(reason) => {
                let status = crate::status::for_stop(&reason);
                assert!((0..=255).contains(&status), "status {status}");
                let _ = reason.to_string();
            }
            VcpuEmulation::Crashed(kind) => {
                let _ = kind.to_string();
            }
            VcpuEmulation::Handled | VcpuEmulation::Interrupted | VcpuEmulation::Debug(_) => {}
        }
    }

    /// With a tracer: one whole line for each exit, after the column heads.
    fn check_trace(mut self) {
        if let Some((tracer, out)) = &mut self.trace {
            tracer.flush();
            let text = out.contents();
            assert!(text.is_empty() || text.ends_with(b"\n"));
            let lines = text
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            assert_eq!(lines as u64, 1 + self.stats.exits.total());
        }
    }
}

/// The port-I/O and MMIO buses with every device a VM has (the UART, the exit port or QEMU's
/// debug-exit device, the debug port, the i8042, and a virtio transport), driven through the
/// vCPU's exit dispatch by a sequence of accesses.
///
/// Input: byte 0: bit 0: QEMU's debug-exit device, at the port and of the width of the next
/// three bytes; 1: a serial limit (the next u16); 2: unclaimed MMIO is ignored; 3: snapshots
/// armed; 4: every exit goes through a tracer. Then operations, each a byte: bits 0-2: port write, port read, MMIO write, MMIO
/// read, serial input (others: port write, read); 3-4: access size (port: 1, 2, 4, 4; MMIO:
/// 1, 2, 4, 8); 5-7: repeat count - 1 (string port I/O). A port is a u16, an MMIO address a
/// u16 (an offset into the first virtio window, or with bit 15 an unclaimed address); writes
/// carry their bytes.
pub fn buses(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let debug_exit = (flags & 1 != 0).then(|| DebugExitConfig {
        iobase: input.u16(),
        iosize: input.u8(),
    });
    let serial_limit = (flags & 2 != 0).then(|| u64::from(input.u16()));
    let unclaimed_mmio = if flags & 4 != 0 {
        UnclaimedMmio::Ignore
    } else {
        UnclaimedMmio::Fatal
    };
    let mut config = VmConfig::new("fuzz");
    config.debug_exit = debug_exit;
    if config.validate().is_err() {
        return;
    }
    let epoll = Arc::new(Epoll::new().expect("epoll"));
    let mem = memory::create(1 << 20).expect("map guest memory");
    let rng = MmioTransport::new(
        Box::new(Rng),
        mem,
        Interrupt::new(None),
        EventRegistry::new(epoll, 0),
    )
    .expect("eventfd");
    let virtio = [Arc::new(Mutex::new(rng))];
    let devices = build::create_devices(DeviceArgs {
        serial: &SerialOutput::Null,
        serial_limit,
        serial_irq: IrqTrigger::default(),
        serial_state: None,
        snapshot: SnapshotTrigger::new(flags & 8 != 0),
        debug_exit,
        virtio: &virtio,
        trace: None,
    })
    .expect("a validated configuration builds its devices");
    let mut dispatch = Dispatch::new(&devices, unclaimed_mmio, flags & 16 != 0);
    while !input.is_empty() {
        let op = input.u8();
        let size_bits = usize::from(op >> 3) & 3;
        let count = usize::from(op >> 5) + 1;
        let port_size = [1, 2, 4, 4][size_bits];
        let mmio_size = [1, 2, 4, 8][size_bits];
        match op & 7 {
            2 | 3 => {
                let at = input.u16();
                let addr = if at & 0x8000 != 0 {
                    u64::from(at) << 16
                } else {
                    VIRTIO_MMIO_BASE + u64::from(at & 0xfff)
                };
                if op & 7 == 2 {
                    let mut bytes = input.take(mmio_size).to_vec();
                    bytes.resize(mmio_size, 0);
                    dispatch.exit(Exit::MmioWrite(addr, &bytes));
                } else {
                    let mut bytes = vec![0u8; mmio_size];
                    dispatch.exit(Exit::MmioRead(addr, &mut bytes));
                }
            }
            4 => {
                let bytes = input.take(count * 4);
                lock(&devices.serial).enqueue_input(bytes);
            }
            kind => {
                let port = input.u16();
                let mut bytes = vec![0u8; port_size * count];
                if kind % 2 == 0 {
                    let given = input.take(bytes.len());
                    bytes[..given.len()].copy_from_slice(given);
                    let exit = Exit::IoOut {
                        port,
                        size: port_size,
                        data: &bytes,
                    };
                    dispatch.exit(exit);
                } else {
                    let exit = Exit::IoIn {
                        port,
                        size: port_size,
                        data: &mut bytes,
                    };
                    dispatch.exit(exit);
                }
            }
        }
    }
    dispatch.check_trace();
    let serial = lock(&devices.serial);
    let _ = (serial.bytes_written(), serial.panic_line(), serial.state());
}

/// The snapshot state file: its header checks on the input as it is, then the decoder and
/// what a restore builds from a state before it needs KVM (the machine checks, the UART from
/// its saved registers, the devices on their buses, the virtio devices' saved state, guest
/// memory mapped from a memory file of the right length), on the input as the payload behind
/// a valid header.
pub fn snapshot_state(data: &[u8]) {
    let dir = Path::new("fuzz-snapshot");
    if let Err(e) = snapshot::decode(data, dir) {
        let _ = e.to_string();
    }
    let state = match snapshot::decode(&snapshot::frame(data), dir) {
        Ok(state) => state,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = snapshot::check_host_kind(&state.host, "pvm");
    let _ = snapshot::check_tsc_khz(&state.host, 2_445_412);
    let (machine, layout) = (&state.machine, &state.memory);
    if layout.file_len() != machine.mem_size || state.vcpus.len() != usize::from(machine.cpus) {
        return;
    }
    if let Ok(devices) = build::create_devices(DeviceArgs {
        serial: &SerialOutput::Null,
        serial_limit: None,
        serial_irq: IrqTrigger::default(),
        serial_state: Some(&state.serial),
        snapshot: SnapshotTrigger::default(),
        debug_exit: machine.debug_exit,
        virtio: &[],
        trace: None,
    }) {
        let mut uart = lock(&devices.serial);
        for offset in 0..8 {
            let mut byte = [0];
            uart.read(offset, &mut byte);
        }
    }
    snapshot_devices(&state.devices);
    // Guest memory from a memory file of the length the state says, when that is small.
    if layout.file_len() <= 64 << 20 {
        let (file, _) = memfd(&[]);
        file.set_len(layout.file_len()).expect("size a memfd");
        if let Ok(mem) = snapshot::memory::map(file, layout) {
            assert_eq!(memory::size(&mem), machine.mem_size);
        }
    }
}

/// A snapshot's virtio devices: a restore's defaults taken from them, and each transport's
/// saved registers and queues taken by an entropy device over a small guest memory, which
/// then resumes (its queues looked at, its interrupt raised again).
fn snapshot_devices(devices: &[crate::devices::virtio::state::VirtioState]) {
    let _ = snapshot::devices::resolve(devices, &DeviceConfig::default());
    let epoll = Arc::new(Epoll::new().expect("epoll"));
    let mem = memory::create(1 << 20).expect("map guest memory");
    for saved in devices.iter().take(4) {
        let mut transport = MmioTransport::new(
            Box::new(Rng),
            mem.clone(),
            Interrupt::new(None),
            EventRegistry::new(epoll.clone(), 0),
        )
        .expect("eventfds");
        if transport.restore(saved).is_ok() {
            transport.resume();
            let _ = transport.save();
        }
    }
}

mod virtio;

pub use virtio::virtio;
#[cfg(test)]
use virtio::virtio_run;

#[cfg(test)]
mod tests;
