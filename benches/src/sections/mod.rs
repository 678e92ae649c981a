//! The benchmark's sections. Each is a unit with its own commands, its own measure step (one
//! round: every command once) and its own rows of the table; the driver in `main.rs` runs
//! the rounds, interleaving the sections, and prints and saves what they give.
//!
//! - [`startup`]: start-up of kvmini, the floor and the peers;
//! - [`exit_cost`]: the cost of one exit to the VMM, kvmini against the floor;
//! - [`memory`]: what a running kvmini keeps resident beyond its guest's RAM;
//! - [`density`]: many VMs started at once;
//! - [`snapshot`]: restoring saved VMs against cold starts, the floor and a container;
//! - [`linux`]: boots of the Linux guest under kvmini and QEMU (`--linux N`, run alone);
//! - [`devices`]: the Linux guest's virtio devices under kvmini and QEMU (`--devices N`,
//!   run alone).

pub mod density;
pub mod devices;
mod devices_net;
pub mod exit_cost;
pub mod linux;
pub mod memory;
pub mod snapshot;
pub mod startup;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use kvmini_measure::runner::{self, Run, Spec, Status};

use crate::host::shown;
use crate::report::{Outcome, Row};

/// Where the guests are, relative to the checkout.
pub const GUESTS: &str = "guest/build";
/// The floor: the least any VMM must do (benches/floor.c, built by make).
pub const FLOOR: &str = "bench/build/floor";
/// A run that takes longer than this is a hang.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What the sections share: the kvmini binary measured.
#[derive(Clone, Debug)]
pub struct Context {
    /// The kvmini binary (`--kvmini`).
    pub kvmini: PathBuf,
}

impl Context {
    /// The kvmini binary as a program name.
    pub fn kvmini(&self) -> String {
        self.kvmini.display().to_string()
    }
}

/// A section of the benchmark.
pub trait Section {
    /// Its commands, for the header: a label and the command line (with notes).
    fn commands(&self) -> Vec<(String, String)>;
    /// One round: runs each of its commands once; keeps the samples when `keep`.
    fn measure(&mut self, keep: bool);
    /// Its rows of the table.
    fn rows(&self) -> Vec<Row>;
    /// Lines for standard error about what failed.
    fn failures(&self) -> Vec<String>;
    /// Whether a failure here fails the run (kvmini or the floor failed; a peer never does).
    fn fatal(&self) -> bool;
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The last lines of an output, joined with " | ".
pub fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(n)
        .collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// The header lines of `subjects`.
pub fn header_lines(subjects: &[Subject]) -> Vec<(String, String)> {
    subjects.iter().map(Subject::header_line).collect()
}

/// Runs each subject still measured once; keeps the samples when `keep`.
pub fn measure_all(subjects: &mut [Subject], keep: bool) {
    for s in subjects.iter_mut().filter(|s| s.live()) {
        s.measure(keep);
    }
}

/// The rows of `subjects`: launch to first byte (with `first_byte`), to exit, and peak RSS.
pub fn timing_rows(subjects: &[Subject], first_byte: bool) -> Vec<Row> {
    subjects
        .iter()
        .flat_map(|s| {
            let first = first_byte.then(|| s.row("launch->first byte", "ms", &s.first_ms));
            first.into_iter().chain([
                s.row("launch->exit", "ms", &s.exit_ms),
                s.row("peak RSS", "MiB", &s.rss_mib),
            ])
        })
        .collect()
}

/// The lines for standard error of the subjects that failed.
pub fn failure_lines(subjects: &[Subject]) -> Vec<String> {
    subjects.iter().filter_map(Subject::failure_line).collect()
}

/// A command measured for start-up or exit cost.
#[derive(Clone, Debug)]
pub struct Subject {
    /// Its name in the table.
    pub name: String,
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The exit status it must end with (`None`: any; peers end their own way).
    pub status: Option<i32>,
    /// Text its standard output must contain; its first byte is the "first byte".
    pub greeting: Option<&'static str>,
    /// A peer: failing is reported, not fatal.
    pub peer: bool,
    /// Why it cannot run here, if it cannot.
    pub absent: Option<String>,
    /// Launch to the first byte of the greeting, per round, ms.
    pub first_ms: Vec<f64>,
    /// Launch to exit, per round, ms.
    pub exit_ms: Vec<f64>,
    /// Peak RSS, per round, MiB.
    pub rss_mib: Vec<f64>,
    /// Why it stopped being measured, if it did.
    pub failure: Option<String>,
}

/// A subject in the results file.
#[derive(Clone, Debug, Serialize)]
pub struct SubjectResult {
    /// Its name.
    pub name: String,
    /// Its command line.
    pub command: String,
    /// The exit status it must end with.
    pub expected_exit_status: Option<i32>,
    /// Whether it is a peer.
    pub peer: bool,
    /// "measured", "not installed" or "failed".
    pub status: &'static str,
    /// Why it is not measured.
    pub reason: Option<String>,
}

impl Subject {
    /// `program args`, which must end with `status`.
    pub fn new(name: &str, program: &str, args: &[&str], status: Option<i32>) -> Self {
        Subject {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            status,
            greeting: None,
            peer: false,
            absent: None,
            first_ms: Vec::new(),
            exit_ms: Vec::new(),
            rss_mib: Vec::new(),
            failure: None,
        }
    }

    /// The subject, whose output must contain `text`.
    pub fn greeting(mut self, text: &'static str) -> Self {
        self.greeting = Some(text);
        self
    }

    /// The subject as a peer, absent for the reason given.
    pub fn peer(mut self, absent: Option<String>) -> Self {
        self.peer = true;
        self.absent = absent;
        self
    }

    /// Its command line as shown.
    pub fn command(&self) -> String {
        shown(&self.program, &self.args)
    }

    /// Its command line for the header, with why it is not installed.
    pub fn header_line(&self) -> (String, String) {
        let cmd = match &self.absent {
            Some(why) => format!("{}   [not installed: {why}]", self.command()),
            None => self.command(),
        };
        (self.name.clone(), cmd)
    }

    /// Whether it is still measured.
    pub fn live(&self) -> bool {
        self.absent.is_none() && self.failure.is_none()
    }

    /// Runs it once; records the sample when `keep`.
    pub fn measure(&mut self, keep: bool) {
        let mut spec = Spec::new(&self.program, &self.args);
        spec.timeout = RUN_LIMIT;
        match runner::run(&spec, false) {
            Err(e) => self.failure = Some(e.to_string()),
            Ok(run) => {
                if let Some(why) = self.check(&run) {
                    self.failure = Some(why);
                } else if keep {
                    self.exit_ms.push(ms(run.exit));
                    let first = match self.greeting {
                        Some(text) => run.arrival_of(text),
                        None => run.first_byte(),
                    };
                    if let Some(first) = first {
                        self.first_ms.push(ms(first));
                    }
                    self.rss_mib.push(run.maxrss_kib as f64 / 1024.0);
                }
            }
        }
    }

    /// Why `run` is not what this subject must do, if it is not.
    fn check(&self, run: &Run) -> Option<String> {
        let status_ok = match (self.status, run.status) {
            (_, Status::TimedOut) => false,
            (Some(want), got) => got == Status::Code(want),
            (None, _) => true,
        };
        if !status_ok {
            return Some(format!(
                "{} (expected exit status {}); stderr: {}",
                run.status,
                self.status.map_or("any".into(), |s| s.to_string()),
                tail(&run.stderr, 3)
            ));
        }
        if let Some(text) = self.greeting {
            if runner::find(&run.stdout, text.as_bytes()).is_none() {
                return Some(format!(
                    "output lacks '{text}' ({}); stdout: {}; stderr: {}",
                    run.status,
                    tail(&run.stdout, 3),
                    tail(&run.stderr, 3)
                ));
            }
        }
        None
    }

    /// What a row of these samples holds.
    pub fn outcome(&self, samples: &[f64]) -> Outcome {
        match (&self.absent, &self.failure) {
            (Some(why), _) => Outcome::NotInstalled {
                reason: why.clone(),
            },
            (_, Some(why)) => Outcome::Failed {
                reason: why.clone(),
            },
            _ => Outcome::measured(samples),
        }
    }

    /// A row of this subject.
    pub fn row(&self, measurement: &str, unit: &'static str, samples: &[f64]) -> Row {
        Row::new(&self.name, measurement, unit, &self.command()).with(self.outcome(samples))
    }

    /// The median of `samples`, when the subject was measured.
    pub fn median(&self, samples: &[f64]) -> Option<f64> {
        if self.live() {
            kvmini_measure::stats::median(samples)
        } else {
            None
        }
    }

    /// The line for standard error when it failed.
    pub fn failure_line(&self) -> Option<String> {
        let why = self.failure.as_deref()?;
        let kind = if self.peer { "warning: peer" } else { "error:" };
        Some(format!(
            "{kind} {} failed: {why}\n  command: {}",
            self.name,
            self.command()
        ))
    }

    /// It in the results file.
    pub fn result(&self) -> SubjectResult {
        SubjectResult {
            name: self.name.clone(),
            command: self.command(),
            expected_exit_status: self.status,
            peer: self.peer,
            status: if self.absent.is_some() {
                "not installed"
            } else if self.failure.is_some() {
                "failed"
            } else {
                "measured"
            },
            reason: self.absent.clone().or_else(|| self.failure.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_fails_on_a_wrong_status_or_a_missing_greeting() {
        let mut s = Subject::new("sh", "/bin/sh", &["-c", "echo hi; exit 3"], Some(3));
        s.measure(true);
        assert_eq!(s.failure, None);
        assert_eq!((s.exit_ms.len(), s.first_ms.len()), (1, 1));
        let mut s = s.greeting("hello");
        s.measure(true);
        assert!(s
            .failure
            .as_deref()
            .unwrap()
            .contains("output lacks 'hello'"));
        let mut s = Subject::new("sh", "/bin/sh", &["-c", "echo oops >&2; exit 1"], Some(0));
        s.measure(true);
        let why = s.failure.clone().unwrap();
        assert!(why.contains("exit status 1 (expected exit status 0)") && why.contains("oops"));
        assert!(s.failure_line().unwrap().starts_with("error: sh failed"));
        assert_eq!(s.result().status, "failed");
    }

    #[test]
    fn tails_keep_the_last_lines() {
        assert_eq!(tail(b"a\r\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail(b"", 2), "");
    }
}
