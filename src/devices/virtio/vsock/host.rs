//! The host side's Unix sockets: the listener host programs connect to, the `CONNECT
//! <port>\n` line they start with, and the connection to `<uds>_<port>` for a guest that
//! connects to the host.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest `CONNECT <port>\n` line, newline included.
pub const MAX_CONNECT_LINE: usize = 32;

/// The listening socket at `uds`; the socket file goes when it does.
#[derive(Debug)]
pub struct HostListener {
    listener: UnixListener,
    path: PathBuf,
}

impl HostListener {
    /// Binds a non-blocking listener at `path`, removing a socket file left there before.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    "the path exists and is not a socket",
                ))
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(HostListener {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next host program that connected, as a non-blocking stream; `None` when none
    /// waits.
    pub fn accept(&self) -> std::io::Result<Option<UnixStream>> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(true)?;
                    return Ok(Some(stream));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for HostListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where a guest's connection to the host's `port` goes: `<uds>_<port>`.
pub fn port_path(uds: &Path, port: u32) -> PathBuf {
    let mut path = uds.as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

/// Connects to the Unix socket at `path` without blocking: a listener whose backlog is full
/// refuses (`EAGAIN`) rather than stalls the I/O thread.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data, for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, &from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = from as libc::c_char;
    }
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) with constant arguments; the descriptor is owned just below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size (checked
    // above); the kernel only reads it.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            len as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

/// A host program that connected and has not finished its `CONNECT` line.
#[derive(Debug)]
pub struct PendingHost {
    /// Its stream.
    pub stream: UnixStream,
    line: Vec<u8>,
}

/// What a pending host program said so far.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectLine {
    /// Not the whole line yet.
    Incomplete,
    /// `CONNECT <port>`.
    Port(u32),
    /// Something else, too long, or the program went away: close its stream.
    Bad,
}

impl PendingHost {
    /// A host program that just connected.
    pub fn new(stream: UnixStream) -> Self {
        PendingHost {
            stream,
            line: Vec::with_capacity(MAX_CONNECT_LINE),
        }
    }

    /// Reads what the program sent, a byte at a time so that nothing after the line is
    /// taken from the stream (the data that follows belongs to the guest).
    pub fn read_line(&mut self) -> ConnectLine {
        let mut byte = [0u8];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return ConnectLine::Bad,
                Ok(_) if byte[0] == b'\n' => return parse_connect(&self.line),
                Ok(_) if self.line.len() + 1 >= MAX_CONNECT_LINE => return ConnectLine::Bad,
                Ok(_) => self.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ConnectLine::Incomplete,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return ConnectLine::Bad,
            }
        }
    }
}

/// `CONNECT <port>` (without its newline).
pub fn parse_connect(line: &[u8]) -> ConnectLine {
    let port = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u32>().ok());
    port.map_or(ConnectLine::Bad, ConnectLine::Port)
}
