//! The 8250/16550 UART at port 0x3f8 (COM1): `vm_superio::Serial` on the port bus, writing
//! to a [`SerialSink`] that counts bytes, enforces the output limit and notes when the first
//! byte arrived. Register map: the National Semiconductor PC16550D datasheet.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::{lock, BusDevice, DeviceRequest};
use crate::trace::SharedLine;

/// Base port of COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// Number of UART registers.
pub const COM1_LEN: u64 = 8;

/// A byte buffer shared between the VM and whoever reads the output (tests, benchmarks).
#[derive(Clone, Debug, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// A new, empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        lock(&self.0).clone()
    }

    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raises the UART's interrupt line: an eventfd wired to the in-kernel irqchip, or nothing
/// for guests that run without interrupts.
#[derive(Debug, Default)]
pub struct IrqTrigger(Option<EventFd>);

impl IrqTrigger {
    /// A trigger that signals `fd`.
    pub fn new(fd: EventFd) -> Self {
        IrqTrigger(Some(fd))
    }
}

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        match &self.0 {
            Some(fd) => fd.write(1),
            None => Ok(()),
        }
    }
}

/// The line Linux prints when it panics: with `panic=-1` the kernel then resets the machine,
/// which alone would look like a clean reboot.
pub const PANIC_BANNER: &[u8] = b"Kernel panic - not syncing";
/// How much of the panic message to keep.
const PANIC_LINE_MAX: usize = 200;

/// Watches an output stream for [`PANIC_BANNER`] and keeps the rest of that line.
#[derive(Debug, Default)]
struct PanicWatch {
    matched: usize,
    line: Option<Vec<u8>>,
    line_done: bool,
}

impl PanicWatch {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(line) = &mut self.line {
                if !self.line_done {
                    if b == b'\n' || b == b'\r' || line.len() >= PANIC_LINE_MAX {
                        self.line_done = true;
                    } else {
                        line.push(b);
                    }
                }
                continue;
            }
            if b == PANIC_BANNER[self.matched] {
                self.matched += 1;
                if self.matched == PANIC_BANNER.len() {
                    self.line = Some(PANIC_BANNER.to_vec());
                }
            } else {
                // The banner has no repeated prefix, so a mismatch restarts the match here.
                self.matched = usize::from(b == PANIC_BANNER[0]);
            }
        }
    }
}

/// Why serial output could not be written: the system's error number, or the kind of error
/// when there is none. Plain data, so that it can travel with the VM's stop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    /// `errno`, when the system gave one (`EPIPE`, `ENOSPC`, `EIO`).
    pub errno: Option<i32>,
    /// The kind of error.
    pub kind: io::ErrorKind,
}

impl WriteFailure {
    /// A closed pipe or terminal: the reader went away.
    pub fn is_closed_pipe(&self) -> bool {
        self.kind == io::ErrorKind::BrokenPipe
    }
}

impl From<&io::Error> for WriteFailure {
    fn from(e: &io::Error) -> Self {
        WriteFailure {
            errno: e.raw_os_error(),
            kind: e.kind(),
        }
    }
}

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.errno {
            Some(errno) => write!(f, "{}", io::Error::from_raw_os_error(errno)),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// Where serial output ends up, with accounting.
pub struct SerialSink {
    out: Box<dyn Write + Send>,
    written: u64,
    limit: Option<u64>,
    first_byte_at: Option<Instant>,
    panic: PanicWatch,
    /// The first write that failed: what follows it is lost, and the VM stops.
    failed: Option<WriteFailure>,
    /// The descriptor written to, when there is one (to tell whether `--trace` shares it).
    fd: Option<RawFd>,
    /// With `--trace` to the same file or terminal: the turns the two take, so that neither
    /// cuts a line of the other.
    line: Option<Arc<SharedLine>>,
}

impl std::fmt::Debug for SerialSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialSink")
            .field("written", &self.written)
            .field("limit", &self.limit)
            .finish()
    }
}

impl SerialSink {
    /// Output to `out`, refused beyond `limit` bytes.
    pub fn new(out: Box<dyn Write + Send>, limit: Option<u64>) -> Self {
        SerialSink {
            out,
            written: 0,
            limit,
            first_byte_at: None,
            panic: PanicWatch::default(),
            failed: None,
            fd: None,
            line: None,
        }
    }

    /// Output to standard output.
    pub fn stdout(limit: Option<u64>) -> Self {
        let mut sink = Self::new(Box::new(io::stdout()), limit);
        sink.fd = Some(libc::STDOUT_FILENO);
        sink
    }

    /// Output to a new or truncated file, or to a character device (`/dev/null`, a
    /// terminal); a FIFO or a directory is refused without waiting on it.
    pub fn file(path: &std::path::Path, limit: Option<u64>) -> io::Result<Self> {
        let file: File = crate::files::create_output_io(path)?;
        let fd = file.as_raw_fd();
        let mut sink = Self::new(Box::new(file), limit);
        sink.fd = Some(fd);
        Ok(sink)
    }

    /// The descriptor the output goes to, when it is one.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd
    }

    /// Takes turns with the trace, which writes to the same file or terminal.
    pub fn share_lines(&mut self, line: Arc<SharedLine>) {
        self.line = Some(line);
    }

    /// Output discarded (but counted).
    pub fn null(limit: Option<u64>) -> Self {
        Self::new(Box::new(io::sink()), limit)
    }

    fn over_limit(&self) -> bool {
        self.limit.is_some_and(|l| self.written > l)
    }

    /// Writes to the output, remembering the first failure and writing nothing after it.
    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(f) = self.failed {
            return Err(io::Error::from(f.kind));
        }
        let result = match &self.line {
            Some(line) => line.write_serial(&mut *self.out, bytes),
            None => self.out.write_all(bytes),
        };
        result.inspect_err(|e| {
            self.failed = Some(WriteFailure::from(e));
        })
    }
}

impl Write for SerialSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.first_byte_at.is_none() && !buf.is_empty() {
            self.first_byte_at = Some(Instant::now());
        }
        let room = match self.limit {
            Some(l) => l.saturating_sub(self.written).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        // Count what the guest sent even past the limit, so the device can tell.
        self.written += buf.len() as u64;
        self.panic.feed(buf);
        if room < buf.len() {
            self.emit(&buf[..room])?;
            return Err(io::Error::other("serial output limit reached"));
        }
        self.emit(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(f) = self.failed {
            return Err(io::Error::from(f.kind));
        }
        self.out.flush().inspect_err(|e| {
            self.failed = Some(WriteFailure::from(e));
        })
    }
}

/// Interrupt enable register offset.
const IER_OFFSET: u64 = 1;
/// IER bit 0: interrupt when received data is available.
const IER_RDA: u8 = 0x01;

/// The UART on the port bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, SerialSink>,
    /// The guest has enabled the receive interrupt at least once: a driver is listening.
    input_ready: bool,
}

impl SerialDevice {
    /// A UART writing to `sink`, interrupting through `irq`.
    pub fn new(irq: IrqTrigger, sink: SerialSink) -> Self {
        SerialDevice {
            uart: Serial::new(irq, sink),
            input_ready: false,
        }
    }

    /// A UART with saved registers and receive FIFO.
    pub fn from_state(
        state: &crate::snapshot::state::SerialState,
        irq: IrqTrigger,
        sink: SerialSink,
    ) -> Result<Self, vm_superio::serial::Error<io::Error>> {
        let saved = vm_superio::serial::SerialState {
            baud_divisor_low: state.baud_divisor[0],
            baud_divisor_high: state.baud_divisor[1],
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.in_buffer.clone(),
        };
        Ok(SerialDevice {
            uart: Serial::from_state(&saved, irq, NoEvents, sink)?,
            input_ready: state.input_ready,
        })
    }

    /// The registers and receive FIFO, to save.
    pub fn state(&self) -> crate::snapshot::state::SerialState {
        let s = self.uart.state();
        crate::snapshot::state::SerialState {
            baud_divisor: [s.baud_divisor_low, s.baud_divisor_high],
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
            input_ready: self.input_ready,
        }
    }

    /// When the guest wrote its first byte.
    pub fn first_byte_at(&self) -> Option<Instant> {
        self.uart.writer().first_byte_at
    }

    /// Bytes the guest has written.
    pub fn bytes_written(&self) -> u64 {
        self.uart.writer().written
    }

    /// Writes out what the output still buffers; the first write that failed, if one did.
    pub fn flush(&mut self) -> Option<WriteFailure> {
        let _ = self.uart.writer_mut().flush();
        self.uart.writer().failed
    }

    /// The kernel panic line, if the guest printed one.
    pub fn panic_line(&self) -> Option<String> {
        let line = self.uart.writer().panic.line.as_ref()?;
        Some(String::from_utf8_lossy(line).trim_end().to_string())
    }

    /// Whether a guest driver has enabled the receive interrupt. Input queued before that
    /// would be thrown away: drivers clear the receive buffer when they start (Linux's 8250
    /// reads RBR a few times), exactly as a real UART's typed-ahead bytes would be lost.
    pub fn input_ready(&self) -> bool {
        self.input_ready
    }

    /// Queues host input for the guest to read; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(input).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(b) = data.first_mut() {
            *b = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        let &value = data.first()?;
        // A failed host write (a closed pipe, a full disk) loses the output: the VM stops,
        // as for the output limit, so that the user learns of it.
        let _ = self.uart.write(offset as u8, value);
        if offset == IER_OFFSET && !self.input_ready {
            // The same offset is the divisor latch's high byte while DLAB is set: ask the
            // UART what IER really holds now (rare: drivers write IER a few times).
            self.input_ready = self.uart.state().interrupt_enable & IER_RDA != 0;
        }
        let sink = self.uart.writer();
        if let Some(f) = sink.failed {
            return Some(DeviceRequest::OutputFailed(f));
        }
        sink.over_limit()
            .then(|| DeviceRequest::OutputLimit(sink.limit.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(limit: Option<u64>) -> (SerialDevice, SharedBuffer) {
        let buf = SharedBuffer::new();
        let sink = SerialSink::new(Box::new(buf.clone()), limit);
        (SerialDevice::new(IrqTrigger::default(), sink), buf)
    }

    #[test]
    fn bytes_written_to_thr_reach_the_sink() {
        let (mut d, buf) = device(None);
        assert!(d.first_byte_at().is_none());
        for &b in b"hi\n" {
            assert_eq!(d.write(0, &[b]), None);
        }
        assert_eq!(buf.text(), "hi\n");
        assert_eq!(d.bytes_written(), 3);
        assert!(d.first_byte_at().is_some());
    }

    #[test]
    fn lsr_reports_the_transmitter_empty() {
        let (mut d, _) = device(None);
        let mut lsr = [0];
        d.read(5, &mut lsr);
        assert_eq!(lsr[0] & 0x20, 0x20);
    }

    #[test]
    fn output_beyond_the_limit_is_cut_and_reported() {
        let (mut d, buf) = device(Some(4));
        for &b in b"abcd" {
            assert_eq!(d.write(0, &[b]), None);
        }
        assert_eq!(d.write(0, b"e"), Some(DeviceRequest::OutputLimit(4)));
        assert_eq!(buf.text(), "abcd");
    }

    /// An output that takes `room` bytes, then fails as a closed pipe does.
    struct ClosedPipe {
        room: usize,
    }

    impl Write for ClosedPipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::EPIPE));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_that_cannot_be_written_stops_the_vm() {
        let sink = SerialSink::new(Box::new(ClosedPipe { room: 2 }), None);
        let mut d = SerialDevice::new(IrqTrigger::default(), sink);
        assert_eq!(d.write(0, b"a"), None);
        assert_eq!(d.write(0, b"b"), None);
        let failure = WriteFailure {
            errno: Some(libc::EPIPE),
            kind: io::ErrorKind::BrokenPipe,
        };
        assert_eq!(d.write(0, b"c"), Some(DeviceRequest::OutputFailed(failure)));
        assert!(failure.is_closed_pipe());
        assert_eq!(failure.to_string(), "Broken pipe (os error 32)");
        // Nothing more is tried, and the failure stays.
        assert_eq!(d.write(0, b"d"), Some(DeviceRequest::OutputFailed(failure)));
        assert_eq!(d.flush(), Some(failure));
        assert_eq!(d.bytes_written(), 4);
    }

    #[test]
    fn a_failed_flush_is_a_failure_too() {
        // vm-superio flushes after every byte, so the failure stops the VM at that byte.
        struct FailsToFlush;
        impl Write for FailsToFlush {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
        }
        let mut d = SerialDevice::new(
            IrqTrigger::default(),
            SerialSink::new(Box::new(FailsToFlush), None),
        );
        let Some(DeviceRequest::OutputFailed(f)) = d.write(0, b"x") else {
            panic!("a failed flush must stop the VM");
        };
        assert_eq!(f.errno, Some(libc::ENOSPC));
        assert_eq!(d.flush(), Some(f));
        let (mut fine, _) = device(None);
        assert_eq!(fine.flush(), None);
    }

    #[test]
    fn a_kernel_panic_line_is_recognised_across_writes() {
        let (mut d, _) = device(None);
        let text =
            b"[ 1.0] Kernel Kernel panic - not syncing: No working init found.\r\n[ 1.1] more\n";
        for &b in text.iter() {
            d.write(0, &[b]);
        }
        assert_eq!(
            d.panic_line().as_deref(),
            Some("Kernel panic - not syncing: No working init found.")
        );
        let (mut quiet, _) = device(None);
        for &b in b"Kernel panic - not sync\n".iter() {
            quiet.write(0, &[b]);
        }
        assert_eq!(quiet.panic_line(), None);
    }

    #[test]
    fn input_is_ready_once_the_guest_enables_the_receive_interrupt() {
        let (mut d, _) = device(None);
        assert!(!d.input_ready());
        // DLAB set: offset 1 is the divisor's high byte, not IER.
        d.write(3, &[0x80]);
        d.write(1, &[0x01]);
        assert!(!d.input_ready());
        d.write(3, &[0x03]);
        d.write(1, &[0x01]);
        assert!(d.input_ready());
        // Masking it again later (the Linux console does, around each write) changes nothing.
        d.write(1, &[0x00]);
        assert!(d.input_ready());
    }

    #[test]
    fn host_input_is_read_from_the_receive_buffer() {
        let (mut d, _) = device(None);
        assert_eq!(d.enqueue_input(b"ok"), 2);
        let mut b = [0];
        d.read(0, &mut b);
        assert_eq!(b[0], b'o');
    }
}
