//! What saving costs: `save_ms` of `kvmini run --snapshot --stats=json` once a round, and a
//! snapshot's size on disk (the blocks its files hold: the memory file is sparse).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kvmini_measure::runner::{self, Spec, Status};

use super::single;
use crate::host::shown;
use crate::kvmini_stats;
use crate::report::{Outcome, Row};
use crate::sections::{tail, RUN_LIMIT};

/// The scratch directory the per-round saves go into.
const SCRATCH: &str = "bench/build/count-save";

/// Saves `count` with `kvmini run --mode long --snapshot DIR` into `dir`, emptied first;
/// returns kvmini's report of the run.
fn save(kvmini: &str, args: &[String], dir: &Path) -> Result<kvmini_stats::KvminiStats, String> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot remove {}: {e}", dir.display()))
        }
        _ => {}
    }
    let mut spec = Spec::new(kvmini, args);
    spec.timeout = RUN_LIMIT;
    let run = runner::run(&spec, false).map_err(|e| e.to_string())?;
    if run.status != Status::Code(0) {
        return Err(format!(
            "saving failed: {} (expected exit status 0); stderr: {}",
            run.status,
            tail(&run.stderr, 3)
        ));
    }
    kvmini_stats::from_stderr(&run.stderr_text())
        .filter(|s| s.snapshot.is_some())
        .ok_or_else(|| {
            format!(
                "no snapshot in kvmini's --stats=json; stderr: {}",
                tail(&run.stderr, 3)
            )
        })
}

fn save_args(count: &str, dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    [
        "run",
        count,
        "--mode",
        "long",
        "--snapshot",
        &dir,
        "--stats=json",
    ]
    .map(String::from)
    .to_vec()
}

/// Saves `count` into `dir` once (before the rounds).
pub fn save_once(kvmini: &str, count: &str, dir: &Path) -> Result<(), String> {
    save(kvmini, &save_args(count, dir), dir).map(|_| ())
}

/// The per-round saves.
pub struct SaveRuns {
    kvmini: String,
    args: Vec<String>,
    save_ms: Vec<f64>,
    written_kib: Vec<f64>,
    failure: Option<String>,
}

impl SaveRuns {
    /// Saves of `count` into the scratch directory.
    pub fn new(kvmini: &str, count: &str) -> SaveRuns {
        SaveRuns {
            kvmini: kvmini.into(),
            args: save_args(count, Path::new(SCRATCH)),
            save_ms: Vec::new(),
            written_kib: Vec::new(),
            failure: None,
        }
    }

    fn command(&self) -> String {
        shown(&self.kvmini, &self.args)
    }

    /// Its line in the header.
    pub fn header_line(&self) -> (String, String) {
        ("kvmini save count".into(), self.command())
    }

    /// One save; its figures kept when `keep`.
    pub fn measure(&mut self, keep: bool) {
        if self.failure.is_some() {
            return;
        }
        match save(&self.kvmini, &self.args, Path::new(SCRATCH)) {
            Err(why) => self.failure = Some(why),
            Ok(stats) => {
                if let (true, Some(s)) = (keep, stats.snapshot) {
                    self.save_ms.push(s.save_ms);
                    self.written_kib.push(s.memory_bytes as f64 / 1024.0);
                }
            }
        }
    }

    /// Its rows.
    pub fn rows(&self) -> Vec<Row> {
        let cmd = self.command();
        vec![
            Row::new("kvmini save count", "save_ms (--stats)", "ms", &cmd)
                .with(Outcome::unless_failed(&self.failure, &self.save_ms)),
            Row::new("kvmini save count", "guest memory written", "KiB", &cmd)
                .with(Outcome::unless_failed(&self.failure, &self.written_kib)),
        ]
    }

    /// Whether saving failed.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The line for standard error when it failed.
    pub fn failure_line(&self) -> Option<String> {
        let why = self.failure.as_deref()?;
        Some(format!(
            "error: kvmini save count failed: {why}\n  command: {}",
            self.command()
        ))
    }
}

/// A snapshot's files on disk: allocated bytes of `memory`, and `state`.
pub struct OnDisk {
    name: String,
    dir: PathBuf,
    memory: Result<(u64, u64), String>,
    state: Result<(u64, u64), String>,
}

/// (allocated bytes, apparent size) of `path`.
fn allocated(path: &Path) -> Result<(u64, u64), String> {
    std::fs::metadata(path)
        .map(|m| (m.blocks() * 512, m.len()))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl OnDisk {
    /// The files of the snapshot in `dir`, read now.
    pub fn of(name: &str, dir: &Path) -> OnDisk {
        OnDisk {
            name: name.into(),
            dir: dir.into(),
            memory: allocated(&dir.join("memory")),
            state: allocated(&dir.join("state")),
        }
    }

    /// Its rows: one value each, the memory file in MiB and the state file in KiB.
    pub fn rows(&self) -> Vec<Row> {
        let files = [
            ("memory", &self.memory, "MiB", 1048576.0),
            ("state", &self.state, "KiB", 1024.0),
        ];
        files
            .into_iter()
            .map(|(file, size, unit, per)| {
                let apparent = size
                    .as_ref()
                    .map_or(String::new(), |(_, len)| format!(" ({len} bytes apparent)"));
                let how = format!("du {}/{file}{apparent}", self.dir.display());
                let value = match size {
                    Ok((blocks, _)) => Ok(*blocks as f64 / per),
                    Err(reason) => Err(Outcome::Failed {
                        reason: reason.clone(),
                    }),
                };
                single(
                    &self.name,
                    &format!("{file} file on disk"),
                    unit,
                    &how,
                    value,
                )
            })
            .collect()
    }
}
