//! `--trace`: one line per VM exit, written as the vCPU handles it. A line says when the exit
//! came (since kvmini started building the VM), on which vCPU, what kind it was, the port or
//! guest-physical address, the access size, the data (hex; each element of string I/O), the
//! device that took it (by its name on the bus, or `unclaimed`) and what kvmini did:
//!
//! ```text
//! #       time ms  cpu  exit            port/addr   size   data      device      what kvmini did
//!       1.093 ms    0  io-out          0x3f8       1      48        serial      handled
//!       1.187 ms    0  io-out          0xf4        1      03        exit-port   stopped: guest wrote 3 to the exit port (0xf4)
//! ```
//!
//! Each vCPU formats its lines into a buffer of its own and writes it out in whole lines
//! (`tracer::Tracer`); all of them, and the end line, go through one [`Sink`]. Serial output
//! that reaches the same file or terminal takes turns with the trace through a [`SharedLine`],
//! so that neither cuts a line of the other. With tracing off a vCPU holds no tracer, and the
//! run loop's only cost is the test of that empty `Option`.
//!
//! The filter's grammar is in [`filter`].

pub mod filter;
pub(crate) mod tracer;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use filter::{ExitKind, Filter, FilterError};

use crate::devices::lock;
use crate::devices::serial::SharedBuffer;
use crate::stop::StopReason;

/// Where trace lines go.
#[derive(Clone, Debug, Default)]
pub enum TraceOutput {
    /// kvmini's standard error.
    #[default]
    Stderr,
    /// A file, created or truncated (or a character device); opened before the guest runs.
    File(PathBuf),
    /// A buffer the caller reads afterwards.
    Buffer(SharedBuffer),
}

/// `--trace`: which exits to show, and where.
#[derive(Clone, Debug, Default)]
pub struct TraceConfig {
    /// Which exits.
    pub filter: Filter,
    /// Where the lines go.
    pub output: TraceOutput,
}

/// Serial output and trace lines that reach the same file or terminal take turns here: the
/// flag says the serial output's last line is still open (its last byte was not a newline),
/// and the trace waits for its end before it writes.
#[derive(Debug, Default)]
pub struct SharedLine(Mutex<bool>);

impl SharedLine {
    /// Writes serial `bytes` to `out` in turn with the trace, and notes whether they leave a
    /// line open.
    pub fn write_serial(&self, out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
        let mut open = lock(&self.0);
        let result = out.write_all(bytes);
        if let Some(&last) = bytes.last() {
            *open = last != b'\n';
        }
        result
    }
}

/// The trace's one destination, shared by every vCPU and the main thread.
pub struct Sink {
    out: Mutex<Out>,
    /// Which exits are shown.
    pub(crate) filter: Filter,
    /// When the VM's construction began: lines count time from there.
    pub(crate) start: Instant,
    line: Arc<SharedLine>,
    fd: Option<RawFd>,
    /// The trace file, when the trace goes to one.
    path: Option<PathBuf>,
    /// Lines written so far (or lost to a write error).
    lines: AtomicU64,
}

struct Out {
    writer: Box<dyn Write + Send>,
    /// The column heads are out: they go with the first lines, so that a VM that is never
    /// built leaves no trace behind its error.
    started: bool,
    /// The destination, for messages.
    name: String,
    /// The first write that failed: the trace stops there.
    failed: Option<io::Error>,
}

impl Sink {
    /// Opens the destination (before the sandbox goes in).
    pub fn open(config: &TraceConfig, start: Instant) -> io::Result<Self> {
        let (writer, name, fd): (Box<dyn Write + Send>, String, Option<RawFd>) =
            match &config.output {
                TraceOutput::Stderr => (Box::new(io::stderr()), "standard error".into(), Some(2)),
                TraceOutput::Buffer(buf) => (Box::new(buf.clone()), "the buffer".into(), None),
                TraceOutput::File(path) => {
                    let file = crate::files::create_output_io(path)?;
                    let fd = file.as_raw_fd();
                    (Box::new(file), path.display().to_string(), Some(fd))
                }
            };
        Ok(Sink {
            out: Mutex::new(Out {
                writer,
                started: false,
                name,
                failed: None,
            }),
            filter: config.filter.clone(),
            start,
            line: Arc::new(SharedLine::default()),
            fd,
            path: match &config.output {
                TraceOutput::File(path) => Some(path.clone()),
                _ => None,
            },
            lines: AtomicU64::new(0),
        })
    }

    /// The trace file, when the trace goes to one.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The turn-taking a serial output on descriptor `fd` must join: when it is the trace's
    /// own file or terminal.
    pub fn shared_line(&self, fd: Option<RawFd>) -> Option<Arc<SharedLine>> {
        match (self.fd, fd) {
            (Some(a), Some(b)) if same_file(a, b) => Some(self.line.clone()),
            _ => None,
        }
    }

    /// Writes `block`, `lines` whole lines. Unless `force`, waits (returns false) while the
    /// serial output sharing the destination has a line open; forced, it ends that line first.
    pub(crate) fn write(&self, block: &[u8], lines: u64, force: bool) -> bool {
        let mut open = lock(&self.line.0);
        if *open && !force {
            return false;
        }
        let mut out = lock(&self.out);
        self.lines.fetch_add(lines, Ordering::Relaxed);
        if out.failed.is_some() {
            return true;
        }
        let newline: &[u8] = if *open { b"\n" } else { b"" };
        *open = false;
        let header = match out.started {
            true => String::new(),
            false => tracer::header(),
        };
        out.started = true;
        let result = out
            .writer
            .write_all(newline)
            .and_then(|()| out.writer.write_all(header.as_bytes()))
            .and_then(|()| out.writer.write_all(block))
            .and_then(|()| out.writer.flush());
        out.failed = result.err();
        true
    }

    /// Writes the end line: when the run ended (`end`, as `--stats` counts its total), how,
    /// and how many exits it made and the trace showed.
    pub fn finish(&self, end: Instant, reason: &StopReason, status: i32, exits: u64) {
        let ms = end.saturating_duration_since(self.start).as_secs_f64() * 1e3;
        let reason = match reason {
            StopReason::Crash(report) => format!("guest crashed: {}", report.kind.brief()),
            other => other.to_string(),
        };
        let lines = self.lines.load(Ordering::Relaxed);
        let end = format!(
            "#{ms:>10.3} ms  end: {reason}; exit status {status}; {exits} exits, {lines} traced\n"
        );
        self.write(end.as_bytes(), 0, true);
    }

    /// What went wrong with the trace, for a message after the run: the first write that
    /// failed, and where it was going.
    pub fn failure(&self) -> Option<String> {
        let out = lock(&self.out);
        let e = out.failed.as_ref()?;
        Some(format!(
            "cannot write the trace to {}: {e}; it stops where that write failed",
            out.name
        ))
    }
}

/// Whether two descriptors reach the same file or terminal.
fn same_file(a: RawFd, b: RawFd) -> bool {
    let stat = |fd| {
        // SAFETY: an all-zero `stat` is a valid buffer for fstat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes only into `st`, a valid buffer; a bad descriptor is an error.
        (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
    };
    matches!((stat(a), stat(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests;
