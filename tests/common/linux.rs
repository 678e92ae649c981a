//! What the tests that boot the Linux guest with devices share: disk images, the guest's
//! ext4 files read from the host, the host's end of a vsock connection, the guest's lines.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{guest, scratch};

/// A file of `sectors` 512-byte sectors, the first holding `marker`.
pub fn data_disk(name: &str, sectors: usize, marker: &[u8]) -> PathBuf {
    let path = scratch(name);
    let mut bytes = vec![0u8; sectors * 512];
    bytes[..marker.len()].copy_from_slice(marker);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A copy of the root file system image `make linux` built, for a test to write.
pub fn root_copy(name: &str) -> PathBuf {
    let path = scratch(name);
    std::fs::copy(guest("rootfs.ext4"), &path).unwrap();
    path
}

/// The content of `file` inside the ext4 image `image`, read with e2fsprogs' debugfs once
/// e2fsck has replayed the journal of the file system the guest left mounted (and found it
/// sound).
pub fn ext4_file(image: &Path, file: &str) -> String {
    let fsck = Command::new("e2fsck")
        .arg("-fy")
        .arg(image)
        .output()
        .expect("e2fsck (e2fsprogs) runs");
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's end of a guest's vsock connection to port `port`: accepts one connection on
/// `<uds>_<port>`, reads a line, answers `reply` and returns what it read.
pub fn host_listener(
    uds: &Path,
    port: u32,
    reply: &'static str,
) -> std::thread::JoinHandle<String> {
    let path = PathBuf::from(format!("{}_{port}", uds.display()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(reply.as_bytes()).unwrap();
        line
    })
}

/// Whether the guest printed `line` as a whole line (the console ends lines with CR LF).
pub fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|l| l.trim_end() == line)
}
