//! Opening the files a user names without waiting on them. Opening a FIFO blocks until the
//! other end shows up, which would hang kvmini before `--timeout` is even armed; so every file
//! is opened with `O_NONBLOCK` (which never blocks the open itself), its type is checked with
//! `fstat`, and only then is the flag cleared for ordinary, blocking I/O.
//!
//! Source of truth: open(2) (`O_NONBLOCK` on FIFOs: `ENXIO` for a writer without a reader),
//! fifo(7).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The system refused.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// It is a FIFO, a device or a directory where kvmini needs a file.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
}

/// What kind of file this is, in words ("a FIFO").
pub fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Opens `options` at `path` without blocking, then keeps the file only if `accept` takes
/// its type; the file is left in blocking mode.
fn open_checked(
    options: &mut OpenOptions,
    path: &Path,
    accept: fn(std::fs::FileType) -> bool,
) -> Result<File, OpenError> {
    let file = options
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let t = file.metadata()?.file_type();
    if !accept(t) {
        return Err(OpenError::NotRegular(kind(t)));
    }
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL on a descriptor this function owns; no memory is involved.
    let cleared = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(file)
}

/// Opens a regular file for reading: an image, an initrd. FIFOs, devices (`/dev/zero`) and
/// directories are refused, never waited on.
pub fn open_regular(path: &Path) -> Result<File, OpenError> {
    open_checked(OpenOptions::new().read(true), path, |t| t.is_file())
}

/// Creates (or truncates) a regular file for output, or opens a character device
/// (`/dev/null`, a terminal). A FIFO is refused before it is opened: opened for writing, it
/// would wait for a reader.
pub fn create_output(path: &Path) -> Result<File, OpenError> {
    match std::fs::metadata(path) {
        Ok(m) if !(m.is_file() || m.file_type().is_char_device()) => {
            return Err(OpenError::NotRegular(kind(m.file_type())))
        }
        _ => {}
    }
    open_checked(
        OpenOptions::new().write(true).create(true).truncate(true),
        path,
        |t| t.is_file() || t.is_char_device(),
    )
}

/// [`create_output`], with a refusal as an `io::Error` (`InvalidInput`) that names what the
/// file is and what an output may be.
pub fn create_output_io(path: &Path) -> std::io::Result<File> {
    create_output(path).map_err(|e| match e {
        OpenError::Io(e) => e,
        other => std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{other} or a character device"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("kvmini-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        path
    }

    #[test]
    fn fifos_are_refused_without_waiting_for_the_other_end() {
        let path = fifo("in");
        assert!(matches!(
            open_regular(&path),
            Err(OpenError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            create_output(&path),
            Err(OpenError::NotRegular("a FIFO"))
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn devices_are_inputs_for_nothing_and_outputs_for_serial() {
        let err = open_regular(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is a character device, not a regular file"
        );
        assert!(matches!(
            open_regular(Path::new("/tmp")),
            Err(OpenError::NotRegular("a directory"))
        ));
        let null = create_output(Path::new("/dev/null")).unwrap();
        // SAFETY: F_GETFL on a descriptor the test owns.
        let flags = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "left in blocking mode");
    }
}
