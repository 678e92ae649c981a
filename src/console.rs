//! The host side of the serial console: kvmini's standard input feeds the UART's receive
//! FIFO. A terminal is put in raw mode (restored on every way out, signals included) and
//! Ctrl-A x quits, as in QEMU; a pipe is read until it ends.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::devices::lock;
use crate::devices::serial::SerialDevice;
use crate::stop::{SnapshotTrigger, StopLatch, StopReason};

/// Ctrl-A: the escape key.
const ESCAPE: u8 = 0x01;

/// What standard input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdinKind {
    /// A terminal.
    Terminal,
    /// A pipe or FIFO.
    Pipe,
    /// Anything else (a file, /dev/null): not used as console input.
    Other,
}

/// Tells what standard input is.
pub fn stdin_kind() -> StdinKind {
    let fd = libc::STDIN_FILENO;
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(fd) } == 1 {
        return StdinKind::Terminal;
    }
    // SAFETY: an all-zero stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
        return StdinKind::Pipe;
    }
    StdinKind::Other
}

/// The terminal settings to put back.
static SAVED_TERMIOS: OnceLock<libc::termios> = OnceLock::new();

fn restore_terminal() {
    if let Some(t) = SAVED_TERMIOS.get() {
        // SAFETY: tcsetattr with a termios read from this terminal earlier; async-signal-safe.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
    }
}

/// The signals that would end kvmini while the terminal is raw: each puts the terminal back
/// first, then ends the process as it would have. SIGINT and SIGQUIT come from `kill` (raw
/// mode turns off the keys that send them); SIGABRT is a panic in a release build; SIGPIPE
/// is ignored (a closed output is an error kvmini reports); SIGKILL cannot be caught.
pub const RESTORING_SIGNALS: [libc::c_int; 8] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGABRT,
    libc::SIGALRM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

extern "C" fn restore_and_die(sig: libc::c_int) {
    restore_terminal();
    // SAFETY: back to the default action and re-raise, so the process ends as it would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Raw mode on the terminal on standard input while it lives.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    /// Puts the terminal in raw mode: no line editing, no echo, no signals from keys (Ctrl-C
    /// goes to the guest).
    pub fn enter() -> std::io::Result<Self> {
        // SAFETY: an all-zero termios is a valid buffer for tcgetattr to fill.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios buffer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _ = SAVED_TERMIOS.set(t);
        for sig in RESTORING_SIGNALS {
            // SAFETY: installing a handler that only calls async-signal-safe functions.
            unsafe {
                libc::signal(
                    sig,
                    restore_and_die as extern "C" fn(libc::c_int) as libc::sighandler_t,
                )
            };
        }
        let mut raw = t;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: `raw` is a termios derived from the terminal's own.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// What the user asked of kvmini at the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Ctrl-A x: stop the VM.
    Quit,
    /// Ctrl-A s: save the VM (with `--snapshot`).
    Snapshot,
}

/// Turns typed bytes into guest input, catching Ctrl-A x (quit), Ctrl-A s (snapshot) and
/// Ctrl-A Ctrl-A (a literal Ctrl-A).
#[derive(Debug, Default)]
pub struct EscapeFilter {
    pending_escape: bool,
}

impl EscapeFilter {
    /// Filters `input`; returns the bytes for the guest and what the user asked of kvmini,
    /// if anything (what follows a command in the same read is dropped).
    pub fn filter(&mut self, input: &[u8]) -> (Vec<u8>, Option<Command>) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.pending_escape {
                self.pending_escape = false;
                match b {
                    b'x' | b'X' => return (out, Some(Command::Quit)),
                    b's' | b'S' => return (out, Some(Command::Snapshot)),
                    ESCAPE => out.push(ESCAPE),
                    other => out.push(other),
                }
            } else if b == ESCAPE {
                self.pending_escape = true;
            } else {
                out.push(b);
            }
        }
        (out, None)
    }
}

/// The thread that reads standard input.
#[derive(Debug)]
pub struct Console {
    thread: Option<JoinHandle<()>>,
    stop: Arc<EventFd>,
    _raw: Option<RawMode>,
}

impl Console {
    /// Feeds `initial` to `serial`, then standard input if it is a terminal or a pipe; Ctrl-A x
    /// stops the VM through `latch`. `None` when there is nothing to feed.
    pub fn start(
        serial: Arc<Mutex<SerialDevice>>,
        latch: Arc<StopLatch>,
        initial: Vec<u8>,
        snapshot: SnapshotTrigger,
        seccomp: crate::config::SeccompMode,
    ) -> std::io::Result<Option<Self>> {
        let kind = stdin_kind();
        if kind == StdinKind::Other && initial.is_empty() {
            return Ok(None);
        }
        let raw = match kind {
            StdinKind::Terminal => Some(RawMode::enter()?),
            StdinKind::Pipe | StdinKind::Other => None,
        };
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let stop_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kvmini-stdin".into())
            .spawn(move || {
                crate::sandbox::enter_or_exit(crate::sandbox::Role::Console, seccomp);
                if enqueue(&serial, &initial, &stop_thread) && kind != StdinKind::Other {
                    let terminal = kind == StdinKind::Terminal;
                    feed(serial, latch, &stop_thread, terminal, &snapshot)
                }
            })?;
        Ok(Some(Console {
            thread: Some(thread),
            stop,
            _raw: raw,
        }))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `fd` is readable or `stop` fires; false when it is time to stop.
pub(crate) fn wait_readable(fd: i32, stop: &EventFd, timeout_ms: i32) -> bool {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    n >= 0 && fds[1].revents == 0
}

/// Puts `bytes` into the UART's receive FIFO as the guest drains it; false when it is time to
/// stop.
fn enqueue(serial: &Mutex<SerialDevice>, bytes: &[u8], stop: &EventFd) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let taken = {
            let mut uart = lock(serial);
            if uart.input_ready() {
                uart.enqueue_input(rest)
            } else {
                0
            }
        };
        rest = &rest[taken..];
        // No driver listening yet, or the guest has not drained its FIFO: give it a
        // moment (or stop).
        if !rest.is_empty() && !wait_readable(-1, stop, 5) {
            return false;
        }
    }
    true
}

fn feed(
    serial: Arc<Mutex<SerialDevice>>,
    latch: Arc<StopLatch>,
    stop: &EventFd,
    terminal: bool,
    snapshot: &SnapshotTrigger,
) {
    let mut escape = EscapeFilter::default();
    let mut buf = [0u8; 64];
    while wait_readable(libc::STDIN_FILENO, stop, -1) {
        // SAFETY: reading into a valid buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return; // End of input: the guest simply gets no more.
        }
        let (bytes, command) = if terminal {
            escape.filter(&buf[..n as usize])
        } else {
            (buf[..n as usize].to_vec(), None)
        };
        if !enqueue(&serial, &bytes, stop) {
            return;
        }
        match command {
            Some(Command::Quit) => return latch.stop(StopReason::UserQuit),
            Some(Command::Snapshot) if snapshot.fire() => latch.stop(StopReason::Snapshot),
            // The terminal is raw: a line needs its carriage return.
            Some(Command::Snapshot) => eprint!(
                "\r\nkvmini: Ctrl-A s saves the VM only when it runs with --snapshot DIR, once\r\n"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_that_ends_kvmini_by_default_restores_the_terminal_first() {
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGABRT,
        ] {
            assert!(RESTORING_SIGNALS.contains(&sig), "signal {sig}");
        }
    }

    #[test]
    fn ctrl_a_x_quits_ctrl_a_s_saves_and_ctrl_a_ctrl_a_is_literal() {
        let mut f = EscapeFilter::default();
        assert_eq!(f.filter(b"ls\r"), (b"ls\r".to_vec(), None));
        assert_eq!(
            f.filter(&[ESCAPE, ESCAPE, b'a']),
            (vec![ESCAPE, b'a'], None)
        );
        assert_eq!(f.filter(&[b'q', ESCAPE]), (vec![b'q'], None));
        // The escape spans two reads.
        assert_eq!(f.filter(b"x"), (vec![], Some(Command::Quit)));
        assert_eq!(f.filter(&[ESCAPE, b'c']), (vec![b'c'], None));
        assert_eq!(
            f.filter(&[b'l', ESCAPE, b's', b'x']),
            (vec![b'l'], Some(Command::Snapshot))
        );
    }
}
