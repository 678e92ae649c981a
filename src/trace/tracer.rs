//! One vCPU's tracer: it hands each exit to the dispatch and writes what came of it as a line
//! into a buffer of its own. The buffer goes out in whole lines: when it holds
//! [`FLUSH_BYTES`], when [`FLUSH_EVERY`] has passed since the last write, and when the vCPU
//! stops.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::{ExitKind, Sink};
use crate::stats::VcpuStats;
use crate::vcpu::exit::{handle_exit, Devices, Exit, VcpuEmulation};

/// The dispatch, called from one place: [`handle_exit`] is inlined into its callers, and the
/// tracer's several calls need only one copy.
#[inline(never)]
fn dispatch(devices: &Devices<'_>, exit: Exit<'_>, stats: &mut VcpuStats) -> VcpuEmulation {
    handle_exit(devices, exit, stats)
}

/// Buffered bytes that make a vCPU write its lines out.
const FLUSH_BYTES: usize = 16 << 10;
/// Time after which a vCPU writes its lines out at its next exit, so that a trace on a
/// terminal follows the guest.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes after which the lines go out even while the serial output sharing the
/// destination has a line open (a guest that never ends its lines).
const MAX_BUFFERED: usize = 1 << 20;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Column widths; a longer value pushes the rest of its line right.
const W_KIND: usize = 14;
const W_ADDR: usize = 10;
const W_SIZE: usize = 5;
const W_DATA: usize = 8;
const W_DEVICE: usize = 10;

/// The column heads, in the lines' own layout.
pub(crate) fn header() -> String {
    format!(
        "#{:>10} ms  {:>3}  {:<W_KIND$}  {:<W_ADDR$}  {:<W_SIZE$}  {:<W_DATA$}  {:<W_DEVICE$}  {}\n",
        "time", "cpu", "exit", "port/addr", "size", "data", "device", "what kvmini did"
    )
}

/// Pads what was written to `buf` since `from` to `width`, then leaves the gap between two
/// columns.
fn pad_from(buf: &mut Vec<u8>, from: usize, width: usize) {
    let len = buf.len() - from;
    buf.resize(buf.len() + width.saturating_sub(len) + 2, b' ');
}

/// A vCPU's tracer.
pub(crate) struct Tracer {
    sink: Arc<Sink>,
    vcpu: usize,
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    /// When `buf` was last written out, since the start.
    last_flush: Duration,
}

impl Tracer {
    /// The tracer of vCPU `vcpu`, writing to `sink`.
    pub(crate) fn new(sink: Arc<Sink>, vcpu: usize) -> Self {
        Tracer {
            sink,
            vcpu,
            buf: Vec::with_capacity(FLUSH_BYTES + 512),
            lines: 0,
            last_flush: Duration::ZERO,
        }
    }

    /// Hands `exit` to the dispatch, and traces it when the filter selects it.
    pub(crate) fn handle(
        &mut self,
        devices: &Devices<'_>,
        exit: Exit<'_>,
        stats: &mut VcpuStats,
    ) -> VcpuEmulation {
        let (kind, addr) = ExitKind::of(&exit);
        if !self.sink.filter.matches(kind, addr) {
            return dispatch(devices, exit, stats);
        }
        let at = self.sink.start.elapsed();
        self.begin(at, kind, addr);
        // Reads are traced after the dispatch, with the data the guest gets.
        let (out, claimed) = match exit {
            Exit::IoIn { port, size, data } => {
                let exit = Exit::IoIn {
                    port,
                    size,
                    data: &mut *data,
                };
                let out = dispatch(devices, exit, stats);
                let device = devices.io.claimant(u64::from(port));
                self.access(size, data, device);
                (out, device.is_some())
            }
            Exit::IoOut { port, size, data } => {
                let device = devices.io.claimant(u64::from(port));
                self.access(size, data, device);
                let exit = Exit::IoOut { port, size, data };
                (dispatch(devices, exit, stats), device.is_some())
            }
            Exit::MmioRead(addr, data) => {
                let out = dispatch(devices, Exit::MmioRead(addr, &mut *data), stats);
                let device = devices.mmio.claimant(addr);
                self.access(data.len(), data, device);
                (out, device.is_some())
            }
            Exit::MmioWrite(addr, data) => {
                let device = devices.mmio.claimant(addr);
                self.access(data.len(), data, device);
                (dispatch(devices, exit, stats), device.is_some())
            }
            other => {
                for width in [W_SIZE, W_DATA, W_DEVICE] {
                    let from = self.buf.len();
                    self.buf.push(b'-');
                    pad_from(&mut self.buf, from, width);
                }
                (dispatch(devices, other, stats), true)
            }
        };
        self.action(kind, &out, claimed);
        self.lines += 1;
        // The vCPU may now wait on the debugger: the lines so far go out before it does.
        let waits = matches!(out, VcpuEmulation::Debug(_) | VcpuEmulation::Interrupted);
        self.maybe_flush(at, waits);
        out
    }

    /// Time, vCPU, kind, and the port or address.
    fn begin(&mut self, at: Duration, kind: ExitKind, addr: Option<u64>) {
        // Integer milliseconds and microseconds: a float's formatting costs more.
        let (ms, us) = (at.as_millis(), at.subsec_micros() % 1000);
        let buf = &mut self.buf;
        let _ = write!(
            buf,
            "{ms:>7}.{us:03} ms  {:>3}  {:<W_KIND$}  ",
            self.vcpu,
            kind.name()
        );
        let _ = match addr {
            Some(addr) => write!(buf, "{addr:<#W_ADDR$x}  "),
            None => write!(buf, "{:<W_ADDR$}  ", "-"),
        };
    }

    /// Size, data (each element's value, hex) and the device, for port I/O and MMIO.
    fn access(&mut self, size: usize, data: &[u8], device: Option<&str>) {
        let size = size.max(1);
        let count = data.len() / size;
        let buf = &mut self.buf;
        let from = buf.len();
        let _ = match count {
            1 => write!(buf, "{size}"),
            _ => write!(buf, "{size}x{count}"),
        };
        pad_from(buf, from, W_SIZE);
        let from = buf.len();
        for (i, element) in data.chunks(size).enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            // Little-endian: the value the guest wrote or read.
            for byte in element.iter().rev() {
                buf.push(HEX[usize::from(byte >> 4)]);
                buf.push(HEX[usize::from(byte & 0xf)]);
            }
        }
        pad_from(buf, from, W_DATA);
        let from = buf.len();
        buf.extend_from_slice(device.unwrap_or("unclaimed").as_bytes());
        pad_from(buf, from, W_DEVICE);
    }

    /// What kvmini did, and the end of the line.
    fn action(&mut self, kind: ExitKind, out: &VcpuEmulation, claimed: bool) {
        let write = matches!(kind, ExitKind::IoOut | ExitKind::MmioWrite);
        let buf = &mut self.buf;
        let _ = match out {
            VcpuEmulation::Handled if claimed => write!(buf, "handled"),
            VcpuEmulation::Handled if write => write!(buf, "dropped write"),
            VcpuEmulation::Handled => write!(buf, "all-ones read"),
            VcpuEmulation::Interrupted => write!(buf, "interrupted (kick)"),
            VcpuEmulation::Stopped(reason) => write!(buf, "stopped: {reason}"),
            VcpuEmulation::Crashed(kind) => write!(buf, "crashed: {}", kind.brief()),
            VcpuEmulation::Debug(arch) => write!(
                buf,
                "to the debugger: {} at {:#x}",
                match arch.exception {
                    1 => "#DB",
                    3 => "#BP",
                    _ => "exception",
                },
                arch.pc
            ),
        };
        buf.push(b'\n');
    }

    /// Writes the lines out when enough of them, or of time, has gathered, or `now`.
    fn maybe_flush(&mut self, at: Duration, now: bool) {
        let due = now
            || self.buf.len() >= FLUSH_BYTES
            || at.saturating_sub(self.last_flush) >= FLUSH_EVERY;
        if !due {
            return;
        }
        let force = self.buf.len() >= MAX_BUFFERED;
        if self.sink.write(&self.buf, self.lines, force) {
            self.buf.clear();
            self.lines = 0;
            self.last_flush = at;
        }
    }

    /// Writes out every line still buffered: the vCPU has stopped.
    pub(crate) fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.sink.write(&self.buf, self.lines, true);
            self.buf.clear();
            self.lines = 0;
        }
    }
}
