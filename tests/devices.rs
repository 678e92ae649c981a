//! Virtio devices with the Linux guest: a root file system on a disk, a data disk whose
//! bytes are checked from the host after the run (after a clean end and after SIGTERM), the
//! entropy device, and vsock in both directions; and device options kvmini must refuse before
//! the guest starts. A boot costs tens of seconds on a host that emulates guest ring 0, so
//! one boot checks several devices.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{guest, kvmini_bin, kvmini_status, linux_or_skip, scratch, Transcript};
use kvmini::status::BAD_INPUT;

const BOOT_TIMEOUT: &str = "600";

/// A file of `sectors` 512-byte sectors, the first holding `marker`.
fn data_disk(name: &str, sectors: usize, marker: &[u8]) -> PathBuf {
    let path = scratch(name);
    let mut bytes = vec![0u8; sectors * 512];
    bytes[..marker.len()].copy_from_slice(marker);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A copy of the root file system image `make linux` built, for a test to write.
fn root_copy(name: &str) -> PathBuf {
    let path = scratch(name);
    std::fs::copy(guest("rootfs.ext4"), &path).unwrap();
    path
}

/// `kvmini run vmlinux --initrd initramfs.cpio` with `args`, then `-- sh -c script`.
fn command(args: &[&str], script: &str) -> Command {
    let mut c = Command::new(kvmini_bin());
    c.arg("run")
        .arg(guest("vmlinux"))
        .arg("--initrd")
        .arg(guest("initramfs.cpio"))
        .args(["--timeout", BOOT_TIMEOUT, "--stats"])
        .args(args)
        .args(["--", "sh", "-c", script]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Sector `n` of `path`.
fn sector(path: &Path, n: usize) -> Vec<u8> {
    std::fs::read(path).unwrap()[n * 512..(n + 1) * 512].to_vec()
}

/// The content of `file` inside the ext4 image `image`, read with e2fsprogs' debugfs once
/// e2fsck has replayed the journal of the file system the guest left mounted (and found it
/// sound).
fn ext4_file(image: &Path, file: &str) -> String {
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
fn host_listener(uds: &Path, port: u32, reply: &'static str) -> std::thread::JoinHandle<String> {
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

/// Connects to the guest's vsock port `port` through `uds` (`CONNECT`), retrying while
/// the guest is not listening yet; sends `message`, closes the sending side and returns the
/// `OK` line and everything the guest sent back.
fn connect_to_guest(uds: &Path, port: u32, message: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut stream = UnixStream::connect(uds).unwrap();
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut ok = String::new();
        // Before the guest listens, kvmini closes (or resets) the stream: try again.
        let answered = reader.read_line(&mut ok).is_ok();
        if answered && ok.starts_with("OK ") {
            stream.write_all(message.as_bytes()).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = String::new();
            reader.read_to_string(&mut answer).unwrap();
            return (ok, answer);
        }
        assert!(
            Instant::now() < deadline,
            "the guest never accepted on port {port}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether the guest printed `line` as a whole line (the console ends lines with CR LF).
fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|l| l.trim_end() == line)
}

/// What the guest runs: every program is one exec, about a second under emulation. The
/// kernel prints its command line, script included, so the markers the test waits for are
/// put together by the guest (`$m`) and appear only when the guest prints them. Programs run
/// one at a time, fed from files rather than pipes: on a software-virtualized host, busybox
/// processes that run side by side are sometimes killed by a segmentation fault in the guest
/// (with or without devices, with kvmini builds from before the devices too: see "On a
/// software-virtualized host" in docs/devices.md).
const GUEST_SCRIPT: &str = "\
m=kvmini-test; B=/bin/busybox; \
cat /etc/kvmini-rootfs; \
cat /sys/block/vda/serial; echo; cat /sys/block/vdb/serial; echo; \
$B head -c 64 /dev/hwrng >/tmp/random; $B wc -c /tmp/random; \
$B head -c 19 /dev/vdb; echo; \
echo kvmini-root-file >/hello.txt; \
printf guest-wrote-this >/tmp/w; \
$B dd if=/tmp/w of=/dev/vdb bs=512 seek=1 conv=fsync 2>/dev/null; \
echo from-guest >/tmp/v; vsock connect 2 6000 </tmp/v; \
echo from-guest-listener >/tmp/l; echo $m: listening; vsock listen 5001 </tmp/l; \
sync; echo $m: done";

#[test]
fn root_disk_data_disk_entropy_and_vsock_work_in_one_boot() {
    if !linux_or_skip(&["rootfs.ext4"]) {
        return;
    }
    let root = root_copy("root.ext4");
    let data = data_disk("data.img", 64, b"written-by-the-host");
    let uds = scratch("vsock.sock");
    let _ = std::fs::remove_file(&uds);
    let from_guest = host_listener(&uds, 6000, "from-host\n");
    let mut child = command(
        &[
            "--root",
            root.to_str().unwrap(),
            "--disk",
            &format!("{},id=kvmini-data", data.display()),
            "--rng",
            "--vsock",
            &format!("cid=3,uds={}", uds.display()),
        ],
        GUEST_SCRIPT,
    )
    .spawn()
    .unwrap();
    let transcript = Transcript::start(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let at = transcript.wait_for("kvmini-test: listening", 0);
    // The sandbox: the main (boot vCPU) and I/O threads are filtered while the guest runs.
    let threads = common::thread_seccomp(child.id());
    assert!(threads.iter().any(|t| t.0 == "kvmini-io"), "{threads:?}");
    for (name, mode, _) in threads.iter().filter(|t| !t.0.starts_with("kvm-")) {
        assert_eq!(*mode, 2, "thread {name} is not filtered: {threads:?}");
    }
    let (ok, answer) = connect_to_guest(&uds, 5001, "from-host-connector\n");
    transcript.wait_for("kvmini-test: done", at);
    let status = child.wait().unwrap();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    let out = transcript.text.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{out}\n{err}");

    // Root: the disk's /init ran the command; the file it wrote is in the image.
    assert!(has_line(&out, "kvmini root file system"), "{out}");
    assert_eq!(ext4_file(&root, "/hello.txt"), "kvmini-root-file\n");
    // Block: serials, a read of the host's bytes, and the guest's write on the disk.
    assert!(has_line(&out, "root.ext4"), "{out}");
    assert!(has_line(&out, "kvmini-data"), "{out}");
    assert!(has_line(&out, "written-by-the-host"), "{out}");
    assert_eq!(&sector(&data, 1)[..16], b"guest-wrote-this");
    assert!(sector(&data, 1)[16..].iter().all(|&b| b == 0));
    // Entropy.
    assert!(has_line(&out, "64 /tmp/random"), "{out}");
    // vsock, guest to host and host to guest.
    assert_eq!(from_guest.join().unwrap(), "from-guest\n");
    assert!(has_line(&out, "from-host"), "{out}");
    assert!(ok.starts_with("OK "), "{ok}");
    assert_eq!(answer, "from-guest-listener\n");
    assert!(has_line(&out, "from-host-connector"), "{out}");
    assert!(err.contains("devices:   virtio-blk"), "{err}");
}

#[test]
fn flushed_writes_survive_sigterm() {
    if !linux_or_skip(&["rootfs.ext4"]) {
        return;
    }
    let data = data_disk("sigterm.img", 16, b"");
    let script = "printf kvmini-sigterm-data >/tmp/w; /bin/busybox dd if=/tmp/w of=/dev/vda \
                  bs=512 seek=2 conv=fsync 2>/dev/null; m=kvmini-test; echo $m: flushed; \
                  sleep 600";
    let mut child = command(&["--disk", data.to_str().unwrap()], script)
        .spawn()
        .unwrap();
    let transcript = Transcript::start(child.stdout.take().unwrap());
    transcript.wait_for("kvmini-test: flushed", 0);
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert_eq!(&sector(&data, 2)[..19], b"kvmini-sigterm-data");
}

/// A device option kvmini must refuse with status 120 before the guest starts.
fn refused(args: &[&str], image: &str, says: &str) {
    let image = guest(image);
    let mut all = vec!["run", image.to_str().unwrap(), "--timeout", "60"];
    all.extend(args);
    let (status, _, err) = kvmini_status(&all);
    assert_eq!(status, BAD_INPUT, "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: want {says:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_device_options_are_refused_before_the_guest_starts() {
    if !linux_or_skip(&["rootfs.ext4"]) {
        return;
    }
    let disk = data_disk("bad.img", 8, b"");
    let disk = disk.to_str().unwrap();
    let link = scratch("bad-link.img");
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(disk, &link).unwrap();
    let dir = std::env::temp_dir();
    let not_socket = data_disk("not-a-socket", 1, b"");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--disk", "/nonexistent/disk.img"],
            "--disk /nonexistent/disk.img: No such file or directory",
        ),
        (
            &["--disk", dir.to_str().unwrap()],
            "not a regular file or a block device",
        ),
        (&["--disk", disk, "--disk", disk], "given twice"),
        (
            &["--disk", disk, "--disk", link.to_str().unwrap()],
            "the same file is already a disk of this VM",
        ),
        (&["--disk", "a.img,rx"], "unknown setting 'rx'"),
        (
            &["--vsock", "cid=2,uds=/tmp/kvmini-v.sock"],
            "a guest's cid is 3 or more",
        ),
        (
            &["--vsock", &format!("cid=3,uds={}", not_socket.display())],
            "exists and is not a Unix socket",
        ),
        (
            &["--disk", disk, "--snapshot", "/tmp/kvmini-no-snapshot"],
            "--snapshot cannot save a VM with virtio devices",
        ),
    ];
    for (args, says) in cases {
        refused(args, "vmlinux", says);
    }
    refused(&["--rng"], "hello.elf", "--rng needs a Linux kernel");

    // An image another program holds a lock on.
    let mut holder = Command::new("flock")
        .args([disk, "sleep", "60"])
        .spawn()
        .expect("flock (util-linux) runs");
    std::thread::sleep(Duration::from_millis(300));
    refused(&["--disk", disk], "vmlinux", "in use");
    let _ = holder.kill();
    let _ = holder.wait();
}
