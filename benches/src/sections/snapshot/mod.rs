//! Snapshots: what resuming a saved VM costs against starting it cold, against the least a
//! VMM must do to resume it (`benches/floor_restore.c`), and, for the Linux guest, against a
//! container; what saving costs; and how many restored Linux VMs share their memory.
//!
//! - the tiny guest: `count.bin`, saved after "count 5" into `bench/build/` once before the
//!   rounds; `kvmini restore` of it, the floor resuming the same memory file, and a cold
//!   `kvmini run` of `count.bin`, each launch to first byte and to exit;
//! - saving: `save_ms` from `kvmini run --snapshot --stats=json`, once a round into a
//!   scratch directory; the size on disk (allocated blocks) of both snapshots' files;
//! - Linux ([`linux`]): `kvmini restore guest/build/linux-snapshot -- uname -r` against
//!   `runc` running busybox `uname -r`, a few times; N restores at once for density.

pub mod linux;
mod save;

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{
    failure_lines, header_lines, measure_all, timing_rows, Context, Section, Subject, FLOOR, GUESTS,
};
use crate::report::{Outcome, Row};

pub use linux::LinuxRestores;
use save::{OnDisk, SaveRuns};

/// The floor for resuming count.bin (benches/floor_restore.c, built by make).
pub const FLOOR_RESTORE: &str = "bench/build/floor_restore";
/// Where the bench saves count.bin after "count 5", once before the rounds.
pub const COUNT_SNAPSHOT: &str = "bench/build/count-snapshot";
/// The ELF of count.bin, whose code says where the guest resumes.
pub const COUNT_ELF: &str = "guest/build/raw/count.elf";
/// What a restored count.bin prints first.
const RESUMED: &str = "count 6";
/// What a cold count.bin prints first.
const COLD: &str = "count 1";
/// count.bin's exit status.
const COUNT_STATUS: i32 = 42;
/// Lines count.bin has printed when it asks to be saved (its R12 there).
const COUNT_AT_SAVE: u64 = 5;

/// Options of the section.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    /// Restores of the Linux snapshot (and runs of its container peer).
    pub linux: usize,
    /// Linux restores at once in the density test (0: none).
    pub density: usize,
}

/// The snapshot section.
pub struct Snapshot {
    /// kvmini restore count, floor_restore count, kvmini run count.bin (cold).
    pub tiny: Vec<Subject>,
    save: SaveRuns,
    disk: Vec<OnDisk>,
    /// The Linux restores, their container peer and the density test.
    pub linux: LinuxRestores,
}

impl Snapshot {
    /// Saves count.bin once and sets up the subjects; a failure to save fails the kvmini
    /// and floor subjects.
    pub fn new(cx: &Context, counts: Counts) -> Snapshot {
        let kvmini = cx.kvmini();
        let count = format!("{GUESTS}/count.bin");
        let memory = format!("{COUNT_SNAPSHOT}/memory");
        let prepared = prepare(&kvmini, &count);
        let rip = prepared
            .as_ref()
            .map_or("0".into(), |rip| format!("{rip:#x}"));
        let at_save = COUNT_AT_SAVE.to_string();
        let mut tiny = vec![
            Subject::new(
                "kvmini restore count",
                &kvmini,
                &["restore", COUNT_SNAPSHOT],
                Some(COUNT_STATUS),
            )
            .greeting(RESUMED),
            Subject::new(
                "floor_restore count",
                FLOOR_RESTORE,
                &[&memory, &rip, &at_save],
                Some(COUNT_STATUS),
            )
            .greeting(RESUMED),
            Subject::new(
                "kvmini run count.bin (cold)",
                &kvmini,
                &["run", &count, "--mode", "long"],
                Some(COUNT_STATUS),
            )
            .greeting(COLD),
        ];
        if let Err(why) = &prepared {
            for s in &mut tiny[..2] {
                s.failure = Some(why.clone());
            }
        }
        let mut disk = vec![OnDisk::of("count snapshot", Path::new(COUNT_SNAPSHOT))];
        let linux = LinuxRestores::new(cx, counts);
        if let Some(dir) = linux.snapshot_dir() {
            disk.push(OnDisk::of("linux snapshot", &dir));
        }
        Snapshot {
            tiny,
            save: SaveRuns::new(&kvmini, &count),
            disk,
            linux,
        }
    }

    /// The subject called `name`.
    pub fn subject(&self, name: &str) -> &Subject {
        self.tiny
            .iter()
            .chain(self.linux.subjects.iter())
            .find(|s| s.name == name)
            .expect("subject exists")
    }
}

/// Saves count.bin after "count 5" into [`COUNT_SNAPSHOT`]; returns where it resumes (RIP).
fn prepare(kvmini: &str, count: &str) -> Result<u64, String> {
    let rip = resume_rip(Path::new(COUNT_ELF))?;
    save::save_once(kvmini, count, Path::new(COUNT_SNAPSHOT))?;
    Ok(rip)
}

/// The address just after count.bin's `out` to port 0x80: where a VM saved there resumes
/// (at a port-I/O exit RIP is already past the instruction). Read from `objdump -d`.
pub fn resume_rip(elf: &Path) -> Result<u64, String> {
    let out = Command::new("objdump")
        .arg("-d")
        .arg(elf)
        .output()
        .map_err(|e| {
            format!(
                "cannot run objdump -d {}: {e} (install binutils)",
                elf.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "objdump -d {} failed: {}",
            elf.display(),
            out.status
        ));
    }
    rip_after_marker_out(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        format!(
            "no `out %al,$0x80` followed by an instruction in {} (make guests)",
            elf.display()
        )
    })
}

/// In an `objdump -d` listing: the address of the instruction after `out %al,$0x80`.
fn rip_after_marker_out(listing: &str) -> Option<u64> {
    let address = |line: &str| {
        let (addr, _) = line.trim().split_once(':')?;
        u64::from_str_radix(addr.trim(), 16).ok()
    };
    let mut lines = listing.lines();
    lines.find(|l| l.contains("out") && l.contains("%al,$0x80"))?;
    lines.find_map(address)
}

impl Section for Snapshot {
    fn commands(&self) -> Vec<(String, String)> {
        let mut c = header_lines(&self.tiny);
        c.push(self.save.header_line());
        c.extend(self.linux.commands());
        c
    }

    fn measure(&mut self, keep: bool) {
        measure_all(&mut self.tiny, keep);
        self.save.measure(keep);
        self.linux.measure(keep);
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = timing_rows(&self.tiny, true);
        rows.extend(self.save.rows());
        rows.extend(self.disk.iter().flat_map(OnDisk::rows));
        rows.extend(self.linux.rows());
        rows
    }

    fn failures(&self) -> Vec<String> {
        let mut f = failure_lines(&self.tiny);
        f.extend(self.save.failure_line());
        f.extend(self.linux.failures());
        f
    }

    fn fatal(&self) -> bool {
        self.tiny.iter().any(|s| s.failure.is_some()) || self.save.failed() || self.linux.fatal()
    }
}

/// A row with one value, or why there is none.
pub fn single(
    subject: &str,
    measurement: &str,
    unit: &'static str,
    how: &str,
    v: Result<f64, Outcome>,
) -> Row {
    let outcome = v.map_or_else(|why| why, |v| Outcome::measured(&[v]));
    Row::new(subject, measurement, unit, how).with(outcome)
}

/// Both floors (start-up and restore), which the default run needs built.
pub fn floors() -> [PathBuf; 2] {
    [PathBuf::from(FLOOR), PathBuf::from(FLOOR_RESTORE)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_address_follows_the_marker_out() {
        let listing = "0000000000100000 <_start>:\n  100000:\tfa                   \tcli\n\
                       \x20 100033:\tb0 7f                \tmov    $0x7f,%al\n\
                       \x20 100035:\te6 80                \tout    %al,$0x80\n\
                       \x20 100037:\t0f b6 04 25 63 00 10 \tmovzbl 0x100063,%eax\n";
        assert_eq!(rip_after_marker_out(listing), Some(0x100037));
        assert_eq!(
            rip_after_marker_out("  100035:\te6 80 \tout %al,$0x80\n"),
            None
        );
        assert_eq!(rip_after_marker_out("nothing\n"), None);
    }
}
