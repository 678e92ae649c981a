//! The stream receivers of the devices section: the host's end of the guest's vsock and
//! TCP transfers, each timed from the connection to the end of the data, and the network
//! namespace with the TAP the guest's network device uses.

use std::io::Read;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The namespace and TAP the section makes (and removes).
pub const NETNS: &str = "kvmini-bench";
/// The TAP in it, shared by the subjects one after the other.
pub const TAP: &str = "kbtap0";
/// The host's address on the TAP, and the guest's.
pub const HOST_ADDR: &str = "10.0.2.1";
/// The guest's address.
pub const GUEST_ADDR: &str = "10.0.2.2";
/// The host's TCP port the guest sends to.
pub const TCP_PORT: u16 = 7001;
/// The host's vsock port the guest sends to.
pub const VSOCK_PORT: u32 = 7000;
/// Bytes the guest sends over vsock, and over TCP.
pub const VSOCK_BYTES: u64 = 1 << 20;
/// Bytes the guest sends over TCP.
pub const TCP_BYTES: u64 = 256 << 10;

/// A transfer received: bytes and the time from the connection to their end.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub bytes: u64,
    pub time: Duration,
}

impl Received {
    /// MB/s.
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.time.as_secs_f64() / 1e6
    }
}

/// A receiver running on its own thread until its one connection ends, `limit` passes, or
/// it is told the guest is gone.
pub struct Receiver {
    handle: JoinHandle<Option<Received>>,
    gone: Arc<AtomicBool>,
}

impl Receiver {
    /// What arrived, once the VMM has exited: a receiver still waiting for its connection
    /// then stops waiting.
    pub fn finish(self) -> Option<Received> {
        self.gone.store(true, Ordering::SeqCst);
        self.handle.join().ok().flatten()
    }
}

/// Reads one connection to its end.
fn receive(mut stream: impl Read, start: Instant) -> Option<Received> {
    let mut buf = vec![0u8; 64 << 10];
    let mut bytes = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(Received {
        bytes,
        time: start.elapsed(),
    })
}

/// Waits for one connection on a non-blocking listener, polling until `limit` or until the
/// guest is `gone`.
fn accept_by<S>(
    limit: Duration,
    gone: &AtomicBool,
    mut accept: impl FnMut() -> std::io::Result<S>,
) -> Option<S> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !gone.load(Ordering::SeqCst) {
        match accept() {
            Ok(s) => return Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => return None,
        }
    }
    None
}

/// The vsock receiver at `<uds>_<VSOCK_PORT>`.
pub fn vsock_receiver(uds: &Path, limit: Duration) -> std::io::Result<Receiver> {
    let path = PathBuf::from(format!("{}_{VSOCK_PORT}", uds.display()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    let gone = Arc::new(AtomicBool::new(false));
    let flag = gone.clone();
    let handle = std::thread::spawn(move || {
        let (stream, _) = accept_by(limit, &flag, || listener.accept())?;
        let start = Instant::now();
        stream.set_nonblocking(false).ok()?;
        let got = receive(stream, start);
        let _ = std::fs::remove_file(&path);
        got
    });
    Ok(Receiver { handle, gone })
}

/// The TCP receiver at `HOST_ADDR:TCP_PORT` inside the namespace (the thread enters it).
pub fn tcp_receiver(limit: Duration) -> std::io::Result<Receiver> {
    let ns = std::fs::File::open(format!("/run/netns/{NETNS}"))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let gone = Arc::new(AtomicBool::new(false));
    let flag = gone.clone();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on a namespace file this thread opened; it moves only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let _ = ready_tx.send(Err(std::io::Error::last_os_error()));
            return None;
        }
        let listener = match TcpListener::bind((HOST_ADDR, TCP_PORT)) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return None;
            }
        };
        listener.set_nonblocking(true).ok()?;
        let _ = ready_tx.send(Ok(()));
        let (stream, _) = accept_by(limit, &flag, || listener.accept())?;
        let start = Instant::now();
        stream.set_nonblocking(false).ok()?;
        receive(stream, start)
    });
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("the TCP receiver thread ended"))??;
    Ok(Receiver { handle, gone })
}

/// Runs `ip ARGS`, failing with its message.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespace with its TAP, removed when dropped.
#[derive(Debug)]
pub struct Netns;

impl Netns {
    /// Makes the namespace and the TAP (root and iproute2 needed), or says why not.
    pub fn create() -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (a network namespace and a TAP)".into());
        }
        let _ = ip(&["netns", "del", NETNS]);
        ip(&["netns", "add", NETNS])?;
        let ns = Netns;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", NETNS, "ip"];
            all.extend(args);
            ip(&all)
        };
        inside(&["tuntap", "add", TAP, "mode", "tap"])?;
        inside(&["addr", "add", &format!("{HOST_ADDR}/24"), "dev", TAP])?;
        inside(&["link", "set", TAP, "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", NETNS]);
    }
}
