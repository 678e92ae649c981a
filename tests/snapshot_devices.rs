//! Snapshots of the Linux guest with virtio devices, restored onto new backing files. One
//! boot (a root disk the guest mounted before the save, a data disk it never touched, vsock)
//! is saved once user space is ready, and goes on using its disk (`--snapshot-continue`);
//! then each restore gives the data disk another image of
//! the same size, a copy of the root disk as it was at the save and a new vsock socket, and
//! the guest reads its own image's file, writes into the right image and talks over vsock.
//! Restores whose devices differ from the snapshot's are refused with status 120 before the
//! guest runs. A boot costs tens of seconds on a host that emulates guest ring 0, a restore
//! milliseconds: everything here shares the one boot.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::linux::{ext4_file, has_line, host_listener, root_copy};
use common::{
    guest, kvmini_bin, kvmini_within, linux_or_skip, output_within_child, scratch, texts,
};
use kvmini::status::BAD_INPUT;

/// The data disk's size: every image a restore gives it has this size.
const DATA_SIZE: u64 = 8 << 20;
/// The guest's vsock context ID.
const CID: &str = "3";

/// The saved VM and the files around it.
struct Saved {
    /// The snapshot directory.
    dir: PathBuf,
    /// The root disk as it was when the VM was saved: each restore gets a copy.
    root: PathBuf,
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An ext4 image of [`DATA_SIZE`] whose `/hello` holds `hello`.
fn data_image(name: &str, hello: &str) -> PathBuf {
    let tree = scratch(&format!("{name}.d"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("hello"), hello).unwrap();
    let image = scratch(name);
    let _ = std::fs::remove_file(&image);
    sized(&image, DATA_SIZE);
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-d",
            path(&tree),
            path(&image),
        ])
        .output()
        .expect("mkfs.ext4 (e2fsprogs) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// A sparse file of `size` bytes at `file`.
fn sized(file: &Path, size: u64) {
    std::fs::File::create(file).unwrap().set_len(size).unwrap();
}

/// Boots the guest with its devices and saves it once user space is ready (the first test to
/// get here does it; the others wait for it). With `--snapshot-continue` the VM goes on after
/// the save: its command, sent once the snapshot is there, reads the data disk (past the
/// guest's cache), so the devices work on in the VM that was saved.
fn saved() -> &'static Saved {
    static SAVED: OnceLock<Saved> = OnceLock::new();
    SAVED.get_or_init(|| {
        let dir = scratch("linux-devices-snapshot");
        let _ = std::fs::remove_dir_all(&dir);
        let root = root_copy("boot-root.ext4");
        let placeholder = scratch("placeholder.img");
        sized(&placeholder, DATA_SIZE);
        let uds = scratch("boot.sock");
        let mut child = Command::new(kvmini_bin())
            .arg("run")
            .arg(guest("vmlinux"))
            .arg("--initrd")
            .arg(guest("initramfs.cpio"))
            .args([
                "--cmdline",
                "console=ttyS0 reboot=k panic=-1 kvmini.snapshot=1",
            ])
            .args(["--root", path(&root), "--disk", path(&placeholder)])
            .arg("--vsock")
            .arg(format!("cid={CID},uds={}", uds.display()))
            .args(["--snapshot", path(&dir), "--snapshot-continue"])
            .args(["--timeout", "600"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kvmini runs");
        let deadline = Instant::now() + Duration::from_secs(600);
        // Until the snapshot is there (or kvmini ended, which the status below tells).
        while !dir.join("state").exists()
            && Instant::now() < deadline
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        // The root disk as the saved guest left it: every restore starts from a copy.
        let root_at_save = scratch("root-at-save.ext4");
        std::fs::copy(&root, &root_at_save).unwrap();
        let read = "m=kvmini-test; /bin/busybox dd if=/dev/vdb of=/dev/null bs=4096 count=1 \
                    iflag=direct && echo $m: read after the save";
        let mut stdin = child.stdin.take().unwrap();
        // (A kvmini that ended early has closed its end: the status below tells why.)
        let _ = stdin.write_all(format!("sh -c '{read}'\n").as_bytes());
        drop(stdin);
        let out = output_within_child(child, Duration::from_secs(700));
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(dir.join("state").exists(), "no snapshot: {stderr}");
        assert!(
            has_line(&stdout, "kvmini-test: read after the save"),
            "{stdout}"
        );
        Saved {
            dir,
            root: root_at_save,
        }
    })
}

/// `kvmini restore` of the saved VM with `devices`, then `-- sh -c script`: status, stdout,
/// stderr.
fn restore(devices: &[String], script: &str) -> (i32, String, String) {
    let saved = saved();
    let mut args = vec!["restore", path(&saved.dir), "--timeout", "300"];
    args.extend(devices.iter().map(String::as_str));
    args.extend(["--", "sh", "-c", script]);
    let out = kvmini_within(&args, Duration::from_secs(400));
    let (stdout, stderr) = texts(&out);
    (common::status(&out), stdout, stderr)
}

/// The device options of a restore: a copy of the root disk as saved, `data` as the data
/// disk, vsock on `uds`.
fn devices(name: &str, data: &Path, uds: &Path) -> Vec<String> {
    let root = scratch(&format!("{name}-root.ext4"));
    std::fs::copy(&saved().root, &root).unwrap();
    [
        "--root".into(),
        root.display().to_string(),
        "--disk".into(),
        data.display().to_string(),
        "--vsock".into(),
        format!("cid={CID},uds={}", uds.display()),
    ]
    .into()
}

/// What each restored guest runs. The markers are put together by the guest (`$m`): the
/// kernel command line, which a crash report would print, holds the script itself.
fn script(n: u32) -> String {
    format!(
        "m=kvmini; B=/bin/busybox; \
         cat /etc/kvmini-rootfs; echo restore-{n} >/on-root; sync; \
         cat /sys/block/vdb/serial; echo; \
         $B mkdir -p /tmp/d; $B mount -t ext4 /dev/vdb /tmp/d; cat /tmp/d/hello; \
         echo written-{n} >/tmp/d/written; $B umount /tmp/d; \
         echo from-guest-{n} >/tmp/v; vsock connect 2 6000 </tmp/v; \
         echo $m-test: done"
    )
}

#[test]
fn each_restore_uses_the_images_and_socket_it_is_given() {
    if !linux_or_skip(&["rootfs.ext4"]) {
        return;
    }
    let images = [
        data_image("first.img", "first image\n"),
        data_image("second.img", "second image\n"),
    ];
    for (n, image) in (1..).zip(&images) {
        let uds = scratch(&format!("restore-{n}.sock"));
        let from_guest = host_listener(&uds, 6000, "from-host\n");
        let devices = devices(&format!("restore-{n}"), image, &uds);
        let (code, out, err) = restore(&devices, &script(n));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(has_line(&out, "kvmini-test: done"), "{out}");
        // The root disk, used before the save, goes on: the guest's file is in this
        // restore's copy.
        assert!(has_line(&out, "kvmini root file system"), "{out}");
        assert_eq!(
            ext4_file(Path::new(&devices[1]), "/on-root"),
            format!("restore-{n}\n")
        );
        // The data disk keeps the ID the guest knew (the placeholder's name) and reads this
        // restore's image; the guest's write lands in it.
        assert!(has_line(&out, "placeholder.img"), "{out}");
        let hello = if n == 1 {
            "first image"
        } else {
            "second image"
        };
        assert!(has_line(&out, hello), "{out}");
        assert_eq!(ext4_file(image, "/written"), format!("written-{n}\n"));
        // vsock, on this restore's socket.
        assert_eq!(from_guest.join().unwrap(), format!("from-guest-{n}\n"));
        assert!(has_line(&out, "from-host"), "{out}");
    }
    assert_eq!(ext4_file(&images[0], "/written"), "written-1\n");
}

#[test]
fn restores_whose_devices_differ_are_refused_before_the_guest_runs() {
    if !linux_or_skip(&["rootfs.ext4"]) {
        return;
    }
    let good = data_image("good.img", "good\n");
    let small = scratch("small.img");
    sized(&small, DATA_SIZE / 2);
    let uds = scratch("refused.sock");
    let base = devices("refused", &good, &uds);
    let with = |change: &dyn Fn(&mut Vec<String>)| {
        let mut d = base.clone();
        change(&mut d);
        d
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            with(&|d| d[3] = small.display().to_string()),
            "holds 4 MiB (8192 sectors), and the snapshot's disk held 8 MiB (16384 sectors)",
        ),
        (
            with(&|d| d.truncate(4)),
            "device 2, a virtio-vsock (--vsock cid=3,uds=",
        ),
        (
            with(&|d| d.push("--rng".into())),
            "device 3, a virtio-rng (--rng), is not in the snapshot",
        ),
        (
            with(&|d| {
                d.drain(2..4);
            }),
            "device 1 is a virtio-blk in the snapshot",
        ),
        (
            with(&|d| d[3] = "/nonexistent/data.img".into()),
            "--disk /nonexistent/data.img: No such file or directory",
        ),
        (
            with(&|d| d[5] = format!("cid=4,uds={}", uds.display())),
            "give cid=3",
        ),
    ];
    for (devices, says) in cases {
        let (code, out, err) = restore(&devices, "echo the-guest-ran");
        assert_eq!(code, BAD_INPUT, "{devices:?}: {err}");
        assert!(err.contains(says), "{devices:?}: want {says:?} in: {err}");
        assert!(
            err.contains("The snapshot's devices, in order: --disk") || says.starts_with("--disk"),
            "{err}"
        );
        assert_eq!(out, "", "{devices:?}: no guest runs");
    }
    // Without device options a restore takes the snapshot's own files...
    let (code, out, err) = restore(&[], "cat /sys/block/vdb/size");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(has_line(&out, &(DATA_SIZE / 512).to_string()), "{out}");
    // ...and says so when one of them is gone.
    std::fs::remove_file(scratch("placeholder.img")).unwrap();
    let (code, out, err) = restore(&[], "echo the-guest-ran");
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.contains("placeholder.img is not there any more"),
        "{err}"
    );
    assert_eq!(out, "");
}
