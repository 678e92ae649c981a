//! Exit cost: `guest/build/exits-{none,pio,mmio}.bin` under kvmini and under the floor. Each
//! makes N port or MMIO writes that exit to the VMM (or none); the cost of one exit is
//! (time(pio or mmio) - time(none)) / N, paired by round. N is what kvmini counts. The same
//! for `exits-{none,pio}.bin` under kvmini with every exit traced to a file (`--trace-file`)
//! gives the cost of a traced exit.

use std::collections::BTreeMap;

use serde::Serialize;

use kvmini_measure::runner::{self, Spec, Status};

use super::{
    failure_lines, header_lines, measure_all, Context, Section, Subject, FLOOR, GUESTS, RUN_LIMIT,
};
use crate::error::Error;
use crate::host::shown;
use crate::kvmini_stats::Unclaimed;
use crate::report::{Outcome, Row};

/// The exit-cost guests and the exit status each ends with (see guest/raw/exits.s).
pub const EXIT_KINDS: [(&str, i32); 3] = [("none", 0x30), ("pio", 0x31), ("mmio", 0x32)];

/// The exit cost per VMM and kind from the medians of launch->exit, ns per exit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FromMedians {
    /// kvmini, port I/O.
    pub kvmini_pio_ns: Option<f64>,
    /// kvmini, MMIO.
    pub kvmini_mmio_ns: Option<f64>,
    /// The floor, port I/O.
    pub floor_pio_ns: Option<f64>,
    /// The floor, MMIO.
    pub floor_mmio_ns: Option<f64>,
}

impl FromMedians {
    /// The figure of `vmm` ("kvmini" or "floor") and `kind` ("pio" or "mmio").
    pub fn get(&self, vmm: &str, kind: &str) -> Option<f64> {
        match (vmm, kind) {
            ("kvmini", "pio") => self.kvmini_pio_ns,
            ("kvmini", _) => self.kvmini_mmio_ns,
            (_, "pio") => self.floor_pio_ns,
            _ => self.floor_mmio_ns,
        }
    }

    fn set(&mut self, vmm: &str, kind: &str, v: Option<f64>) {
        let slot = match (vmm, kind) {
            ("kvmini", "pio") => &mut self.kvmini_pio_ns,
            ("kvmini", _) => &mut self.kvmini_mmio_ns,
            (_, "pio") => &mut self.floor_pio_ns,
            _ => &mut self.floor_mmio_ns,
        };
        *slot = v;
    }
}

/// The exit-cost section.
pub struct ExitCost {
    /// kvmini and the floor on each guest.
    pub subjects: Vec<Subject>,
    /// Exits each exit-making guest makes.
    pub exits: u64,
    /// What kvmini counted for each guest (`--stats=json`'s `unclaimed`).
    pub counts: BTreeMap<&'static str, Unclaimed>,
}

/// Where the traced runs write their trace.
const TRACE_FILE: &str = "bench/build/exits.trace";

/// The subject name of the traced run of `kind`.
fn traced(kind: &str) -> String {
    format!("kvmini exits-{kind}.bin --trace-file")
}

/// kvmini's arguments for the exit-cost guest of `kind`.
fn kvmini_args(kind: &str) -> Vec<String> {
    let image = format!("{GUESTS}/exits-{kind}.bin");
    [
        "run",
        &image,
        "--mode",
        "real",
        "--unclaimed-mmio",
        "ignore",
    ]
    .map(String::from)
    .to_vec()
}

impl ExitCost {
    /// The subjects, once kvmini has counted the exits each guest makes: the N in ns per
    /// exit, and proof that each guest makes the exits it claims.
    pub fn new(cx: &Context) -> Result<ExitCost, Error> {
        let counts = count_exits(cx)?;
        let n = |kind: &str, f: fn(&Unclaimed) -> u64| counts.get(kind).map_or(0, f);
        let (pio, mmio) = (n("pio", |u| u.port_writes), n("mmio", |u| u.mmio_writes));
        let stray = n("none", |u| u.port_writes + u.mmio_writes)
            + n("pio", |u| u.mmio_writes)
            + n("mmio", |u| u.port_writes);
        if pio != mmio || pio == 0 || stray != 0 {
            let seen: Vec<(&str, u64, u64)> = counts
                .iter()
                .map(|(k, u)| (*k, u.port_writes, u.mmio_writes))
                .collect();
            return Err(Error::ExitCounts(format!("{seen:?}")));
        }
        let mut subjects = Vec::new();
        for (vmm, program) in [("kvmini", cx.kvmini()), ("floor", FLOOR.to_string())] {
            for (kind, status) in EXIT_KINDS {
                let args = match vmm {
                    "kvmini" => kvmini_args(kind),
                    _ => vec![format!("{GUESTS}/exits-{kind}.bin")],
                };
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let name = format!("{vmm} exits-{kind}.bin");
                subjects.push(Subject::new(&name, &program, &args, Some(status)));
            }
        }
        for (kind, status) in &EXIT_KINDS[..2] {
            let mut args = kvmini_args(kind);
            args.extend(["--trace-file".to_string(), TRACE_FILE.to_string()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            subjects.push(Subject::new(
                &traced(kind),
                &cx.kvmini(),
                &args,
                Some(*status),
            ));
        }
        Ok(ExitCost {
            subjects,
            exits: pio,
            counts,
        })
    }

    fn subject(&self, name: &str) -> &Subject {
        self.subjects
            .iter()
            .find(|s| s.name == name)
            .expect("subject exists")
    }

    /// The exit cost from the medians of launch->exit.
    pub fn cost_from_medians(&self) -> FromMedians {
        let mut m = FromMedians::default();
        for vmm in ["kvmini", "floor"] {
            let none = self.subject(&format!("{vmm} exits-none.bin"));
            for kind in ["pio", "mmio"] {
                let s = self.subject(&format!("{vmm} exits-{kind}.bin"));
                let v = match (s.median(&s.exit_ms), none.median(&none.exit_ms)) {
                    (Some(k), Some(z)) => Some((k - z) * 1e6 / self.exits as f64),
                    _ => None,
                };
                m.set(vmm, kind, v);
            }
        }
        m
    }

    /// Per-round ns per exit: (time(kind) - time(none)) / n, paired by round.
    fn per_exit_ns(&self, kind: &Subject, none: &Subject) -> Vec<f64> {
        kind.exit_ms
            .iter()
            .zip(&none.exit_ms)
            .map(|(k, z)| (k - z) * 1e6 / self.exits as f64)
            .collect()
    }
}

/// Runs each exit-cost guest once under kvmini with `--stats=json`; what kvmini counted.
fn count_exits(cx: &Context) -> Result<BTreeMap<&'static str, Unclaimed>, Error> {
    let mut counts = BTreeMap::new();
    for (kind, status) in EXIT_KINDS {
        let mut args = kvmini_args(kind);
        args.push("--stats=json".into());
        let command = shown(&cx.kvmini(), &args);
        let mut spec = Spec::new(&cx.kvmini, &args);
        spec.timeout = RUN_LIMIT;
        let run = runner::run(&spec, false)?;
        if run.status != Status::Code(status) {
            return Err(Error::ExitStatus {
                command,
                status: run.status,
                expected: status,
                stderr: run.stderr_text().trim().to_string(),
            });
        }
        let stats = crate::kvmini_stats::from_stderr(&run.stderr_text())
            .ok_or(Error::NoStats { command })?;
        counts.insert(kind, stats.unclaimed);
    }
    Ok(counts)
}

impl Section for ExitCost {
    fn commands(&self) -> Vec<(String, String)> {
        header_lines(&self.subjects)
    }

    fn measure(&mut self, keep: bool) {
        measure_all(&mut self.subjects, keep);
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .subjects
            .iter()
            .map(|s| s.row("launch->exit", "ms", &s.exit_ms))
            .collect();
        for vmm in ["kvmini", "floor"] {
            let none = self.subject(&format!("{vmm} exits-none.bin"));
            for kind in ["pio", "mmio"] {
                let s = self.subject(&format!("{vmm} exits-{kind}.bin"));
                let failed = none.failure.clone().or_else(|| s.failure.clone());
                let how = format!(
                    "(launch->exit of exits-{kind}.bin - of exits-none.bin) / {}, paired by round",
                    self.exits
                );
                rows.push(
                    Row::new(
                        &format!("{vmm} {kind} exit"),
                        "cost per exit",
                        "ns/exit",
                        &how,
                    )
                    .with(Outcome::unless_failed(&failed, &self.per_exit_ns(s, none))),
                );
            }
        }
        let (none, pio) = (self.subject(&traced("none")), self.subject(&traced("pio")));
        let failed = none.failure.clone().or_else(|| pio.failure.clone());
        let how = format!(
            "(launch->exit of exits-pio.bin - of exits-none.bin) / {}, both with --trace-file, paired by round",
            self.exits
        );
        rows.push(
            Row::new("kvmini pio exit, traced", "cost per exit", "ns/exit", &how).with(
                Outcome::unless_failed(&failed, &self.per_exit_ns(pio, none)),
            ),
        );
        rows
    }

    fn failures(&self) -> Vec<String> {
        failure_lines(&self.subjects)
    }

    fn fatal(&self) -> bool {
        self.subjects.iter().any(|s| s.failure.is_some())
    }
}
