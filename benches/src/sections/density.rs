//! Density: N VMs of `hello.elf` started at once (all spawned before any is waited for); the
//! wall time from the first spawn to the last exit, and VMs started and finished per second.

use kvmini_measure::runner::{self, Spec, Status};

use super::{ms, Context, Section, GUESTS, RUN_LIMIT};
use crate::host::shown;
use crate::report::{Outcome, Row};

/// The density section; with a count of 0 it does nothing.
pub struct Density {
    kvmini: String,
    /// VMs started at once.
    pub count: usize,
    args: Vec<String>,
    wall_ms: Vec<f64>,
    per_second: Vec<f64>,
    failure: Option<String>,
}

impl Density {
    /// `count` VMs at once.
    pub fn new(cx: &Context, count: usize) -> Density {
        Density {
            kvmini: cx.kvmini(),
            count,
            args: ["run", &format!("{GUESTS}/hello.elf"), "--serial", "none"]
                .map(String::from)
                .to_vec(),
            wall_ms: Vec::new(),
            per_second: Vec::new(),
            failure: None,
        }
    }
}

impl Section for Density {
    fn commands(&self) -> Vec<(String, String)> {
        if self.count == 0 {
            return Vec::new();
        }
        vec![(
            "density".into(),
            format!(
                "{} at once: {}",
                self.count,
                shown(&self.kvmini, &self.args)
            ),
        )]
    }

    fn measure(&mut self, keep: bool) {
        if self.count == 0 || self.failure.is_some() {
            return;
        }
        let mut spec = Spec::new(&self.kvmini, &self.args);
        spec.timeout = RUN_LIMIT;
        let batch = match runner::run_batch(&vec![spec; self.count]) {
            Ok(b) => b,
            Err(e) => {
                self.failure = Some(e.to_string());
                return;
            }
        };
        let bad: Vec<String> = batch
            .runs
            .iter()
            .filter(|r| r.status != Status::Code(0))
            .map(|r| format!("{}: {}", r.status, r.stderr_text().trim()))
            .collect();
        if !bad.is_empty() {
            self.failure = Some(format!(
                "{} of {} VMs failed; first: {}",
                bad.len(),
                self.count,
                bad[0]
            ));
        } else if keep {
            self.wall_ms.push(ms(batch.wall));
            self.per_second
                .push(self.count as f64 / batch.wall.as_secs_f64());
        }
    }

    fn rows(&self) -> Vec<Row> {
        if self.count == 0 {
            return Vec::new();
        }
        let subject = format!("kvmini hello.elf x{} at once", self.count);
        let command = format!("{} VMs of: {}", self.count, shown(&self.kvmini, &self.args));
        vec![
            Row::new(&subject, "wall, first start->last exit", "ms", &command)
                .with(Outcome::unless_failed(&self.failure, &self.wall_ms)),
            Row::new(&subject, "started and finished", "VMs/s", &command)
                .with(Outcome::unless_failed(&self.failure, &self.per_second)),
        ]
    }

    fn failures(&self) -> Vec<String> {
        Vec::new()
    }

    fn fatal(&self) -> bool {
        self.failure.is_some()
    }
}
