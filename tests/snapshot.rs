//! Snapshots: a guest saved mid-run goes on in a new process from the next instruction, as
//! often as it is restored, and every damaged or foreign snapshot is refused with status 120.

mod common;

use std::path::{Path, PathBuf};

use common::{guest, kvm_or_skip, kvmini_status, scratch};
use kvmini::status::BAD_INPUT;

const FIRST_HALF: &str = "count 1\ncount 2\ncount 3\ncount 4\ncount 5\n";
const SECOND_HALF: &str = "count 6\ncount 7\ncount 8\ncount 9\n";
/// count.bin's status when it counted to 9 with memory and registers in agreement.
const COUNTED: i32 = 42;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `kvmini run count.bin --snapshot target` with `extra` options: status, stdout, stderr.
fn run_count(target: &Path, extra: &[&str]) -> (i32, String, String) {
    let count = guest("count.bin");
    let mut args = vec!["run", path(&count), "--mode", "long", "--timeout", "30"];
    args.extend(["--snapshot", path(target)]);
    args.extend(extra);
    kvmini_status(&args)
}

/// count.bin saved after "count 5" into a new directory named `name`.
fn saved(name: &str) -> PathBuf {
    let dir = scratch(name);
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out, err) = run_count(&dir, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, FIRST_HALF);
    assert!(err.contains("saved the VM into"), "{err}");
    dir
}

fn restore(dir: &Path) -> (i32, String, String) {
    kvmini_status(&["restore", path(dir), "--timeout", "30"])
}

#[test]
fn a_saved_guest_goes_on_from_the_next_line_every_time_it_is_restored() {
    if !kvm_or_skip() {
        return;
    }
    let dir = saved("count-snapshot");
    let memory = dir.join("memory");
    let before = std::fs::read(&memory).unwrap();
    // Sparse: the guest touched a few pages of its 16 MiB.
    let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&memory).unwrap());
    assert!(
        allocated * 512 < 1 << 20,
        "{allocated} blocks for the memory file"
    );
    for _ in 0..3 {
        let (code, out, err) = restore(&dir);
        assert_eq!(out, SECOND_HALF, "{err}");
        assert_eq!(code, COUNTED, "{err}");
    }
    assert!(
        std::fs::read(&memory).unwrap() == before,
        "restoring never writes the snapshot"
    );
    // Without --snapshot, the guest's request is only a marker.
    let (code, out, _) = kvmini_status(&["run", path(&guest("count.bin")), "--mode", "long"]);
    assert_eq!((code, out), (COUNTED, format!("{FIRST_HALF}{SECOND_HALF}")));
}

#[test]
fn saving_refuses_a_used_or_unwritable_directory_before_the_guest_runs() {
    if !kvm_or_skip() {
        return;
    }
    let used = scratch("used-dir");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("file"), b"x").unwrap();
    for (dir, says) in [
        (used.as_path(), "exists and is not empty"),
        (Path::new("/proc/kvmini-snapshot"), "/proc/kvmini-snapshot"),
    ] {
        let (code, out, err) = run_count(dir, &[]);
        assert_eq!(code, BAD_INPUT, "{err}");
        assert!(err.contains(says), "{err}");
        assert_eq!(out, "", "the guest must not run");
    }
    // A save that did not happen leaves nothing behind, not even an empty directory.
    let fresh = scratch("never-saved");
    let _ = std::fs::remove_dir_all(&fresh);
    let (code, _, _) = kvmini_status(&[
        "run",
        path(&guest("hello64.bin")),
        "--mode",
        "long",
        "--snapshot",
        path(&fresh),
    ]);
    assert_eq!(code, 64);
    assert!(!fresh.exists());
    let leftovers = std::fs::read_dir(fresh.parent().unwrap())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with(".never-saved.tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
}

/// A copy of `dir` named `name`, changed by `damage`.
fn damaged(dir: &Path, name: &str, damage: impl Fn(&Path)) -> PathBuf {
    let copy = scratch(name);
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["state", "memory"] {
        std::fs::copy(dir.join(file), copy.join(file)).unwrap();
    }
    damage(&copy);
    copy
}

fn rewrite(file: PathBuf, change: impl Fn(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(&file).unwrap();
    change(&mut bytes);
    std::fs::write(&file, bytes).unwrap();
}

#[test]
fn damaged_or_foreign_snapshots_are_refused_with_status_120() {
    if !kvm_or_skip() {
        return;
    }
    let dir = saved("count-for-damage");
    let empty = scratch("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (scratch("no-such-snapshot"), "does not exist"),
        (empty, "is not a kvmini snapshot"),
        (
            damaged(&dir, "other-version", |d| {
                rewrite(d.join("state"), |b| b[8] = 9)
            }),
            "format version 9",
        ),
        (
            damaged(&dir, "other-build", |d| {
                rewrite(d.join("state"), |b| b[12] ^= 0xff)
            }),
            "kvmini build whose state layout differs",
        ),
        (
            damaged(&dir, "truncated-state", |d| {
                rewrite(d.join("state"), |b| b.truncate(b.len() - 100))
            }),
            "the state file is truncated",
        ),
        (
            damaged(&dir, "corrupt-state", |d| {
                rewrite(d.join("state"), |b| {
                    let last = b.len() - 1;
                    b[last] ^= 0x5a
                })
            }),
            "checksum does not match",
        ),
        (
            // count.bin itself, at 1 MiB in guest memory, is part of the saved data.
            damaged(&dir, "corrupt-memory", |d| {
                rewrite(d.join("memory"), |b| b[0x10_0010] ^= 0x01)
            }),
            "the memory file's data does not match its checksum",
        ),
        (
            damaged(&dir, "short-memory", |d| {
                rewrite(d.join("memory"), |b| b.truncate(1 << 20))
            }),
            "the memory file is 1048576 bytes",
        ),
        (
            damaged(&dir, "no-memory", |d| {
                std::fs::remove_file(d.join("memory")).unwrap()
            }),
            "memory",
        ),
    ];
    let (code, _, err) = kvmini_status(&["restore", path(&dir), "--", "uname"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("only a Linux guest's snapshot reads"), "{err}");
    for (snapshot, says) in cases {
        let (code, out, err) = restore(&snapshot);
        assert_eq!(code, BAD_INPUT, "{}: {err}", snapshot.display());
        assert!(
            err.contains(says),
            "{}: expected {says:?}: {err}",
            snapshot.display()
        );
        assert_eq!(out, "", "no guest runs on a refused snapshot");
    }
}

#[test]
fn sigusr1_saves_a_running_guest_wherever_it_is() {
    if !kvm_or_skip() {
        return;
    }
    let dir = scratch("spin-snapshot");
    let _ = std::fs::remove_dir_all(&dir);
    let spin = guest("spin.bin");
    let mut child = std::process::Command::new(common::kvmini_bin())
        .args(["run", path(&spin), "--mode", "long", "--timeout", "30"])
        .args(["--snapshot", path(&dir)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the guest has printed its line it loops in ring 0, with nothing to save it but
    // the signal.
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "spin: looping forever\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("saved the VM into"), "{err}");
    // Restored, it loops on without printing its line again, until the timeout.
    let (code, out, err) = kvmini_status(&["restore", path(&dir), "--timeout", "1"]);
    assert_eq!(code, kvmini::status::TIMEOUT, "{err}");
    assert_eq!(out, "");
}

#[test]
fn with_snapshot_continue_the_saved_guest_also_runs_to_its_end() {
    if !kvm_or_skip() {
        return;
    }
    let dir = scratch("count-continue");
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out, err) = run_count(&dir, &["--snapshot-continue"]);
    assert_eq!(code, COUNTED, "{err}");
    assert_eq!(out, format!("{FIRST_HALF}{SECOND_HALF}"));
    let (code, out, err) = restore(&dir);
    assert_eq!((code, out), (COUNTED, SECOND_HALF.to_string()), "{err}");
}

#[test]
fn a_full_disk_fails_the_save_with_status_120_and_leaves_nothing() {
    if !kvm_or_skip() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: mounting a tiny tmpfs needs root");
        return;
    }
    let disk = scratch("tiny-disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs", path(&disk)])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a 16 KiB tmpfs");
    let (code, out, err) = run_count(&disk.join("snap"), &[]);
    let left = std::fs::read_dir(&disk).unwrap().count();
    let _ = std::process::Command::new("umount").arg(&disk).status();
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(out, FIRST_HALF);
    assert_eq!(left, 0, "a failed save leaves nothing behind");
}
