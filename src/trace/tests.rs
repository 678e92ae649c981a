//! The trace's lines from fabricated exits, its filter at work, and its turns with serial
//! output on a shared destination.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::tracer::Tracer;
use super::*;
use crate::config::UnclaimedMmio;
use crate::devices::exit_port::{ExitPort, EXIT_PORT};
use crate::devices::serial::SerialSink;
use crate::devices::{Bus, BusDevice, DeviceRequest};
use crate::stats::VcpuStats;
use crate::stop::StopReason;
use crate::vcpu::exit::{Devices, Exit, VcpuEmulation};

/// Reads give 0x5a in each byte; writes are taken.
struct Answer;

impl BusDevice for Answer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0x5a);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) -> Option<DeviceRequest> {
        None
    }
}

struct Machine {
    io: Bus,
    mmio: Bus,
    out: SharedBuffer,
    sink: Arc<Sink>,
    tracer: Tracer,
    stats: VcpuStats,
}

impl Machine {
    fn new(filter: &str) -> Self {
        let mut io = Bus::new();
        io.insert("serial", 0x3f8, 8, Arc::new(Mutex::new(Answer)))
            .unwrap();
        io.insert("exit-port", EXIT_PORT, 1, Arc::new(Mutex::new(ExitPort)))
            .unwrap();
        let mut mmio = Bus::new();
        let name = "virtio-rng@0xd0000000";
        mmio.insert(name, 0xd000_0000, 0x1000, Arc::new(Mutex::new(Answer)))
            .unwrap();
        let out = SharedBuffer::new();
        let config = TraceConfig {
            filter: Filter::parse(filter).unwrap(),
            output: TraceOutput::Buffer(out.clone()),
        };
        let sink = Arc::new(Sink::open(&config, Instant::now()).unwrap());
        Machine {
            io,
            mmio,
            out,
            tracer: Tracer::new(sink.clone(), 3),
            sink,
            stats: VcpuStats::default(),
        }
    }

    fn exit(&mut self, exit: Exit<'_>, unclaimed_mmio: UnclaimedMmio) -> VcpuEmulation {
        let devices = Devices {
            io: &self.io,
            mmio: &self.mmio,
            unclaimed_mmio,
        };
        self.tracer.handle(&devices, exit, &mut self.stats)
    }

    /// The trace's lines so far, without the column heads; each with its columns.
    fn lines(&mut self) -> Vec<Vec<String>> {
        self.tracer.flush();
        let text = self.out.text();
        let mut lines = text.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("#      time ms  cpu  exit"));
        lines
            .map(|l| {
                // The action may have spaces: it is everything after the device column.
                let cols: Vec<&str> = l.split_whitespace().collect();
                let mut v: Vec<String> = cols.iter().take(8).map(|c| c.to_string()).collect();
                v.push(cols[8.min(cols.len())..].join(" "));
                v
            })
            .collect()
    }
}

#[test]
fn each_access_gets_its_port_size_data_device_and_outcome() {
    let mut m = Machine::new("all");
    let fatal = UnclaimedMmio::Fatal;
    m.exit(
        Exit::IoOut {
            port: 0x3f8,
            size: 1,
            data: b"Hi!",
        },
        fatal,
    );
    let mut word = [0u8; 2];
    let read = Exit::IoIn {
        port: 0x3fd,
        size: 2,
        data: &mut word,
    };
    m.exit(read, fatal);
    let mut unclaimed = [0u8; 4];
    let read = Exit::IoIn {
        port: 0x70,
        size: 4,
        data: &mut unclaimed,
    };
    m.exit(read, fatal);
    m.exit(
        Exit::IoOut {
            port: 0x80,
            size: 2,
            data: &[0x34, 0x12],
        },
        fatal,
    );
    let mut quad = [0u8; 8];
    m.exit(Exit::MmioRead(0xd000_0008, &mut quad), fatal);
    m.exit(Exit::MmioWrite(0xfee0_0000, &[1, 0, 0, 0]), fatal);
    let lines = m.lines();
    let at = |i: usize| lines[i][3..].to_vec();
    assert_eq!(lines[0][1..3], ["ms", "3"], "time, then the vCPU");
    assert_eq!(
        at(0),
        ["io-out", "0x3f8", "1x3", "48,69,21", "serial", "handled"]
    );
    assert_eq!(at(1), ["io-in", "0x3fd", "2", "5a5a", "serial", "handled"]);
    assert_eq!(
        at(2),
        [
            "io-in",
            "0x70",
            "4",
            "ffffffff",
            "unclaimed",
            "all-ones read"
        ]
    );
    assert_eq!(
        at(3),
        ["io-out", "0x80", "2", "1234", "unclaimed", "dropped write"]
    );
    assert_eq!(
        at(4),
        [
            "mmio-read",
            "0xd0000008",
            "8",
            "5a5a5a5a5a5a5a5a",
            "virtio-rng@0xd0000000",
            "handled"
        ]
    );
    assert_eq!(
        at(5),
        [
            "mmio-write",
            "0xfee00000",
            "4",
            "00000001",
            "unclaimed",
            "crashed: unclaimed MMIO write at 0xfee00000"
        ]
    );
    // Time goes forward, in fixed-width columns.
    let times: Vec<f64> = lines.iter().map(|l| l[0].parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[test]
fn stops_crashes_and_kicks_say_what_kvmini_did() {
    let mut m = Machine::new("all");
    let ignore = UnclaimedMmio::Ignore;
    m.exit(Exit::MmioWrite(0x1000, &[7]), ignore);
    let out = m.exit(
        Exit::IoOut {
            port: EXIT_PORT as u16,
            size: 1,
            data: &[3],
        },
        ignore,
    );
    assert!(matches!(
        out,
        VcpuEmulation::Stopped(StopReason::GuestExit(3))
    ));
    m.exit(Exit::Hlt, ignore);
    m.exit(Exit::Shutdown, ignore);
    m.exit(Exit::Interrupted, ignore);
    let lines = m.lines();
    let actions: Vec<&str> = lines.iter().map(|l| l[8].as_str()).collect();
    assert_eq!(
        actions,
        [
            "dropped write",
            "stopped: guest wrote 3 to the exit port (0xf4)",
            "stopped: guest halted (hlt with nothing to wake it)",
            "crashed: triple fault",
            "interrupted (kick)"
        ]
    );
    assert_eq!(lines[2][3..8], ["hlt", "-", "-", "-", "-"]);
    assert_eq!(m.stats.exits.total(), 5, "every exit is counted");
}

#[test]
fn the_filter_selects_lines_and_every_exit_is_still_handled() {
    let mut m = Machine::new("io-out:0xf4,mmio:0xd0000000-0xd0000fff");
    let fatal = UnclaimedMmio::Fatal;
    m.exit(
        Exit::IoOut {
            port: 0x3f8,
            size: 1,
            data: b"x",
        },
        fatal,
    );
    let mut byte = [0u8];
    let out = m.exit(Exit::MmioRead(0xd000_1000, &mut byte), fatal);
    assert!(matches!(out, VcpuEmulation::Crashed(_)), "{out:?}");
    m.exit(Exit::MmioRead(0xd000_0fff, &mut byte), fatal);
    assert_eq!(byte, [0x5a]);
    m.exit(Exit::Hlt, fatal);
    let out = m.exit(
        Exit::IoOut {
            port: 0xf4,
            size: 1,
            data: &[0],
        },
        fatal,
    );
    assert!(matches!(
        out,
        VcpuEmulation::Stopped(StopReason::GuestExit(0))
    ));
    let lines = m.lines();
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l[3].as_str(), l[4].as_str()))
        .collect();
    assert_eq!(kinds, [("mmio-read", "0xd0000fff"), ("io-out", "0xf4")]);
    assert_eq!(m.stats.exits.total(), 5);
}

#[test]
fn a_debug_exit_goes_to_the_debugger_and_out_at_once() {
    let mut m = Machine::new("debug");
    m.exit(Exit::Hlt, UnclaimedMmio::Fatal);
    let arch = kvm_bindings::kvm_debug_exit_arch {
        exception: 1,
        pc: 0x10_0000,
        ..Default::default()
    };
    let out = m.exit(Exit::Debug(arch), UnclaimedMmio::Fatal);
    assert!(matches!(out, VcpuEmulation::Debug(d) if d.pc == 0x10_0000));
    // Written out without a flush: the vCPU may now wait on the debugger.
    let text = m.out.text();
    let line = text.lines().last().unwrap();
    assert!(line.contains(" debug "), "{text}");
    assert!(line.ends_with("to the debugger: #DB at 0x100000"), "{text}");
    assert_eq!(
        text.lines().count(),
        2,
        "the heads and the debug line: {text}"
    );
    assert_eq!(m.stats.exits.debug, 1);
    assert_eq!(m.stats.exits.of(ExitKind::Debug), 1);
}

#[test]
fn the_end_line_counts_exits_and_traced_lines() {
    let mut m = Machine::new("hlt");
    m.exit(Exit::Hlt, UnclaimedMmio::Fatal);
    m.exit(Exit::Interrupted, UnclaimedMmio::Fatal);
    m.tracer.flush();
    m.sink.finish(Instant::now(), &StopReason::Halted, 0, 2);
    let text = m.out.text();
    let end = text.lines().last().unwrap();
    assert!(
        end.starts_with('#') && end.contains(" ms  end: guest halted"),
        "{end}"
    );
    assert!(end.ends_with("; exit status 0; 2 exits, 1 traced"), "{end}");
    assert_eq!(m.sink.failure(), None);
}

#[test]
fn lines_wait_for_the_end_of_a_serial_line_on_the_same_destination() {
    let mut m = Machine::new("all");
    let mut serial = SerialSink::new(Box::new(m.out.clone()), None);
    serial.share_lines(m.sink.line.clone());
    assert!(m.sink.write(b"", 0, true), "the column heads");
    let start = m.out.contents().len();
    serial.write_all(b"Hel").unwrap();
    m.exit(Exit::Hlt, UnclaimedMmio::Fatal);
    // An unforced write waits while the serial line is open...
    assert!(!m.sink.write(b"early\n", 1, false));
    serial.write_all(b"lo\n").unwrap();
    // ...and goes once it has ended.
    assert!(m.sink.write(b"then\n", 1, false));
    // At the stop the lines go out regardless, on a line of their own.
    serial.write_all(b"part").unwrap();
    m.tracer.flush();
    let text = String::from_utf8(m.out.contents()[start..].to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..3], ["Hello", "then", "part"]);
    assert!(lines[3].contains(" hlt "), "{text}");
    assert_eq!(lines.len(), 4, "{text}");
}

#[test]
fn the_column_heads_wait_for_the_first_line() {
    let m = Machine::new("all");
    assert!(
        m.out.contents().is_empty(),
        "a VM never built leaves nothing"
    );
    m.sink.finish(Instant::now(), &StopReason::Halted, 0, 0);
    let text = m.out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("#      time ms  cpu  exit"), "{text}");
}

#[test]
fn a_failed_write_is_kept_for_the_end() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let config = TraceConfig {
        filter: Filter::all(),
        output: TraceOutput::Buffer(SharedBuffer::new()),
    };
    let sink = Sink::open(&config, Instant::now()).unwrap();
    *lock(&sink.out) = Out {
        writer: Box::new(Full),
        started: false,
        name: "trace.txt".into(),
        failed: None,
    };
    assert!(sink.write(b"a line\n", 1, false));
    let failure = sink.failure().unwrap();
    assert!(
        failure.starts_with("cannot write the trace to trace.txt: No space left on device"),
        "{failure}"
    );
}

#[test]
fn a_descriptor_shares_the_trace_only_when_it_is_the_same_file() {
    let dir = std::env::temp_dir().join(format!("kvmini-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.txt");
    let config = TraceConfig {
        filter: Filter::all(),
        output: TraceOutput::File(path.clone()),
    };
    let sink = Sink::open(&config, Instant::now()).unwrap();
    let again = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let other = std::fs::File::create(dir.join("serial.txt")).unwrap();
    use std::os::fd::AsRawFd;
    assert!(sink.shared_line(Some(again.as_raw_fd())).is_some());
    assert!(sink.shared_line(Some(other.as_raw_fd())).is_none());
    assert!(sink.shared_line(None).is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
