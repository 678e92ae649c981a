//! The GDB thread: the listening socket, one debugger connection at a time, and gdbstub's
//! state machine over it (`run_blocking` with an event loop that polls the connection and
//! the vCPU's wake eventfd together). Between connections it waits on the listener and the
//! same eventfd, so that the end of the VM ends it too.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub};

use super::link::Shared;
use super::session::{GdbStop, Session};
use super::target::Fatal;
use crate::config::SeccompMode;
use crate::sandbox::Role;

/// How long the end of a run waits for the GDB thread to tell GDB the exit status.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// A bound, listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket.
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<OwnedFd> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                // Packets are small and GDB waits for each answer.
                stream.set_nodelay(true)?;
                Ok(stream.into())
            }
            Listener::Unix(l) => Ok(l.accept()?.0.into()),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// Waits until one of `fds` is readable; its index.
fn poll_readable(fds: &[RawFd]) -> io::Result<usize> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `polls` is a valid array of `polls.len()` pollfd structures.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if let Some(i) = polls.iter().position(|p| p.revents != 0) {
            return Ok(i);
        }
    }
}

/// A debugger's connection: buffered both ways, read while watching the vCPU's eventfd.
pub struct Conn {
    fd: OwnedFd,
    shared: Arc<Shared>,
    input: Vec<u8>,
    taken: usize,
    output: Vec<u8>,
}

impl Conn {
    fn new(fd: OwnedFd, shared: Arc<Shared>) -> Self {
        Conn {
            fd,
            shared,
            input: Vec::new(),
            taken: 0,
            output: Vec::new(),
        }
    }

    /// The next byte from GDB, or None when the vCPU's eventfd fired first.
    fn next_or_wake(&mut self) -> io::Result<Option<u8>> {
        if let Some(&b) = self.input.get(self.taken) {
            self.taken += 1;
            return Ok(Some(b));
        }
        let wake = self.shared.wake.as_raw_fd();
        if poll_readable(&[self.fd.as_raw_fd(), wake])? == 1 {
            let _ = self.shared.wake.read();
            return Ok(None);
        }
        let mut buf = [0u8; 4096];
        let n = loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.input = buf[1..n].to_vec();
        self.taken = 0;
        Ok(Some(buf[0]))
    }
}

impl Connection for Conn {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.output.push(byte);
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.output.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            let rest = &self.output[sent..];
            // SAFETY: `rest` is valid for reads of its length; MSG_NOSIGNAL: a closed
            // connection is an error, not a SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.output.clear();
                return Err(e);
            }
            sent += n as usize;
        }
        self.output.clear();
        Ok(())
    }
}

impl ConnectionExt for Conn {
    /// Blocks for GDB's next byte; fails once the VM has ended (GDB is then told by the
    /// connection closing).
    fn read(&mut self) -> io::Result<u8> {
        loop {
            if let Some(b) = self.next_or_wake()? {
                return Ok(b);
            }
            if self.shared.ended.load(Ordering::SeqCst) {
                return Err(io::Error::other("the VM ended"));
            }
        }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(self.input.get(self.taken).copied())
    }
}

/// gdbstub's blocking event loop over [`Conn`] and the vCPU's events.
enum EventLoop {}

impl BlockingEventLoop for EventLoop {
    type Target = Session;
    type Connection = Conn;
    type StopReason = GdbStop;

    fn wait_for_stop_reason(
        target: &mut Session,
        conn: &mut Conn,
    ) -> Result<Event<GdbStop>, WaitForStopReasonError<Fatal, io::Error>> {
        loop {
            if let Some(stop) = target.take_pending().or_else(|| target.try_event()) {
                return Ok(Event::TargetStopped(stop));
            }
            match conn.next_or_wake() {
                Ok(Some(byte)) => return Ok(Event::IncomingData(byte)),
                Ok(None) => {}
                Err(e) => return Err(WaitForStopReasonError::Connection(e)),
            }
        }
    }

    fn on_interrupt(target: &mut Session) -> Result<Option<GdbStop>, Fatal> {
        target.interrupt();
        Ok(None)
    }
}

/// The running GDB thread.
#[derive(Debug)]
pub struct Server {
    thread: std::thread::JoinHandle<()>,
    done: Receiver<()>,
}

impl Server {
    /// Starts the GDB thread, which confines itself to its role's filter.
    pub fn start(listener: Listener, session: Session, seccomp: SeccompMode) -> io::Result<Self> {
        let (tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kvmini-gdb".into())
            .spawn(move || {
                crate::sandbox::enter_or_exit(Role::Gdb, seccomp);
                serve(&listener, session);
                let _ = tx.send(());
            })?;
        Ok(Server { thread, done })
    }

    /// Once the VM has ended: waits (a little) for the thread to report the exit to GDB.
    /// A thread still stuck writing to an unresponsive debugger is left behind.
    pub fn finish(self) {
        match self.done.recv_timeout(FINISH_WAIT) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = self.thread.join();
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Serves one debugger after another until the VM ends.
fn serve(listener: &Listener, mut session: Session) {
    let wake = session.link.shared.wake.as_raw_fd();
    loop {
        session.between_sessions();
        if session.ended().is_some() {
            return;
        }
        match poll_readable(&[listener.raw_fd(), wake]) {
            Ok(0) => {}
            Ok(_) => {
                let _ = session.link.shared.wake.read();
                continue;
            }
            Err(e) => {
                eprintln!("kvmini: gdb: stopped listening: {e}");
                return;
            }
        }
        match listener.accept() {
            Ok(fd) => {
                let conn = Conn::new(fd, session.link.shared.clone());
                run_session(&mut session, conn);
            }
            Err(e) => {
                eprintln!("kvmini: gdb: cannot accept a debugger: {e}; stopped listening");
                return;
            }
        }
    }
}

/// One debugger, from its connection to its end.
fn run_session(session: &mut Session, conn: Conn) {
    if !session.attach() {
        return;
    }
    let result = GdbStub::new(conn).run_blocking::<EventLoop>(session);
    match result {
        Ok(DisconnectReason::Kill) => session.kill(),
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {}
        Ok(DisconnectReason::Disconnect) => session.detach(),
        Err(e) => {
            if session.ended().is_none() && !e.is_connection_error() {
                eprintln!("kvmini: gdb: the debugger session failed: {e}; the guest runs on");
            }
            session.detach();
        }
    }
}
