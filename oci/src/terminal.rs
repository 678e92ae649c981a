//! `process.terminal`: the process runs on a pseudo-terminal in the guest (oci-init opens
//! it); on the host, the holder's standard I/O is one too, as runc's process has.
//!
//! - `create` (and `run -d`) with `--console-socket PATH`: a new host pseudo-terminal whose
//!   master side goes to the engine over PATH (SCM_RIGHTS, with the master's name,
//!   "/dev/ptmx", as the message, as runc sends it) and whose slave side, in raw mode, is the holder's standard
//!   input, output, error and controlling terminal. Raw, because the guest's terminal does
//!   the line discipline (echo, CR-LF): the host's passes bytes unchanged. A closed master
//!   hangs the slave up: SIGHUP reaches the holder, which passes it on to the process; a
//!   resize (SIGWINCH) is passed on as the new size.
//! - `run` in the foreground: the caller's own terminal (in raw mode while the container
//!   runs), or whatever its standard I/O is.
//!
//! Which options go together is runc's rule ([`check`]).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::Error;

/// runc's rule: a detached container with a terminal needs a console socket, and a console
/// socket needs both.
pub fn check(detached: bool, terminal: bool, console_socket: bool) -> Result<(), Error> {
    if detached && terminal && !console_socket {
        return Err(Error::Terminal(
            "cannot allocate tty if runc will detach without setting console socket".into(),
        ));
    }
    if (!detached || !terminal) && console_socket {
        return Err(Error::Terminal(
            "cannot use console socket if runc will not detach or allocate tty".into(),
        ));
    }
    Ok(())
}

/// A new pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// The master side (for the engine).
    pub master: OwnedFd,
    /// The slave side, in raw mode (for the holder).
    pub slave: OwnedFd,
    /// The slave's path, /dev/pts/N.
    pub name: String,
}

fn last_error(what: &str) -> Error {
    Error::io(what.to_string(), std::io::Error::last_os_error())
}

/// Opens a pseudo-terminal of `size` (rows, columns) with its slave side in raw mode.
pub fn open(size: Option<(u16, u16)>) -> Result<Pty, Error> {
    // SAFETY: posix_openpt returns a new descriptor or -1; nothing else is touched.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_error("opening a pseudo-terminal"));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: `master` is a pseudo-terminal master; `name` is writable for its length.
    let ok = unsafe {
        libc::grantpt(fd) == 0
            && libc::unlockpt(fd) == 0
            && libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) == 0
    };
    if !ok {
        return Err(last_error("setting up a pseudo-terminal"));
    }
    // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is a valid C string; open returns a new descriptor or -1.
    let sfd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if sfd < 0 {
        return Err(last_error("opening the pseudo-terminal's slave side"));
    }
    // SAFETY: `sfd` is a new descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(sfd) };
    make_raw(slave.as_raw_fd()).map_err(|e| Error::io("setting the terminal to raw mode", e))?;
    if let Some((rows, cols)) = size {
        set_size(master.as_raw_fd(), rows, cols);
    }
    Ok(Pty {
        master,
        slave,
        name: path.to_string_lossy().into_owned(),
    })
}

/// Puts terminal `fd` in raw mode; returns its settings before.
fn make_raw(fd: i32) -> std::io::Result<libc::termios> {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is valid for tcgetattr to write and for cfmakeraw/tcsetattr to read.
    unsafe {
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = t;
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(before)
    }
}

/// Sets terminal `fd`'s size.
pub fn set_size(fd: i32, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `size` is a valid winsize for TIOCSWINSZ to read.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) };
}

/// Terminal `fd`'s size (rows, columns), if it is a terminal.
pub fn size(fd: i32) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data, written by TIOCGWINSZ.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `size` is valid for TIOCGWINSZ to write.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0)
        .then_some((size.ws_row, size.ws_col))
}

/// Sends `pty`'s master side over the console socket at `path`, as runc does.
pub fn send_master(path: &Path, pty: &Pty) -> Result<(), Error> {
    let what = || {
        format!(
            "sending the terminal to the console socket {}",
            path.display()
        )
    };
    let stream = UnixStream::connect(path).map_err(|e| Error::io(what(), e))?;
    // runc sends the name of the file it opened for the master.
    let iov = [IoSlice::new(b"/dev/ptmx")];
    // Room for one descriptor, aligned as cmsghdr wants.
    let mut control = [0u64; 4];
    let fd = pty.master.as_raw_fd();
    // SAFETY: msghdr and cmsghdr are plain data; every pointer set here (the name, the control
    // buffer) outlives the sendmsg call, and CMSG_* stay within `control`.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        libc::sendmsg(stream.as_raw_fd(), &msg, 0)
    };
    if sent < 0 {
        return Err(Error::io(what(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// What a console-socket client (an engine's conmon) receives on `conn`: the message (the
/// master's name) and the terminal's master side.
pub fn receive_master(conn: &UnixStream) -> std::io::Result<(String, OwnedFd)> {
    let mut name = [0u8; 128];
    let mut control = [0u64; 4];
    // SAFETY: every pointer given to recvmsg is valid for the length given with it and the
    // kernel writes within them; CMSG_* stay within `control`; a descriptor in an
    // SCM_RIGHTS message is new and owned by nothing else.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: name.as_mut_ptr().cast(),
            iov_len: name.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(conn.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("no descriptor in the message"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
        let text = String::from_utf8_lossy(&name[..n as usize]).into_owned();
        Ok((text, OwnedFd::from_raw_fd(fd)))
    }
}

/// The caller's terminal in raw mode while a foreground `run` goes on; restored on drop.
#[derive(Debug)]
pub struct RawStdin(libc::termios);

impl RawStdin {
    /// Raw mode on standard input, when it is a terminal.
    pub fn new() -> Option<RawStdin> {
        make_raw(0).ok().map(RawStdin)
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        // SAFETY: self.0 holds the settings tcgetattr returned for standard input.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn runc_s_rule_for_terminals_and_console_sockets() {
        assert!(check(true, true, true).is_ok());
        assert!(check(false, true, false).is_ok());
        assert!(check(true, false, false).is_ok());
        let e = check(true, true, false).unwrap_err().to_string();
        assert!(e.contains("without setting console socket"), "{e}");
        for (detached, terminal) in [(false, true), (true, false), (false, false)] {
            let e = check(detached, terminal, true).unwrap_err().to_string();
            assert!(e.contains("cannot use console socket"), "{e}");
        }
    }

    #[test]
    fn a_pty_passes_bytes_raw_and_has_its_size() {
        let pty = open(Some((33, 101))).unwrap();
        assert!(pty.name.starts_with("/dev/pts/"), "{}", pty.name);
        assert_eq!(size(pty.slave.as_raw_fd()), Some((33, 101)));
        let mut master = std::fs::File::from(pty.master);
        let mut slave = std::fs::File::from(pty.slave);
        // Raw: no echo, no CR added, no line editing of the ^C byte.
        slave.write_all(b"a\nb").unwrap();
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a\nb");
        master.write_all(b"x\x03\n").unwrap();
        let n = slave.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"x\x03\n");
    }

    #[test]
    fn the_master_reaches_the_console_socket_with_the_terminal_s_name() {
        let dir = std::env::temp_dir().join(format!("kvmini-oci-pty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let pty = open(None).unwrap();
        send_master(&path, &pty).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let (name, fd) = receive_master(&conn).unwrap();
        assert_eq!(name, "/dev/ptmx");
        // The received descriptor is the same terminal's master.
        let mut got = std::fs::File::from(fd);
        std::fs::File::from(pty.slave).write_all(b"hi").unwrap();
        let mut buf = [0u8; 4];
        let n = got.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
