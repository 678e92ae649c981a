//! What the benchmark reports: rows (one subject and measurement each, with its samples'
//! summary or why there are none), targets, and their tables. Rows and targets serialize
//! as they are into the results file.

use serde::Serialize;

use kvmini_measure::stats::Summary;
use kvmini_measure::table::{Align, Table};

/// What a row holds.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status")]
pub enum Outcome {
    /// The samples, one per measured round, and their summary.
    #[serde(rename = "measured")]
    Measured(Summary),
    /// The subject is not installed here.
    #[serde(rename = "not installed")]
    NotInstalled {
        /// Why, or how to name it.
        reason: String,
    },
    /// The subject failed.
    #[serde(rename = "failed")]
    Failed {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// Measured `samples`.
    pub fn measured(samples: &[f64]) -> Outcome {
        Outcome::Measured(Summary::of(samples))
    }

    /// Measured `samples`, unless the subject failed (`failure`).
    pub fn unless_failed(failure: &Option<String>, samples: &[f64]) -> Outcome {
        match failure {
            Some(why) => Outcome::Failed {
                reason: why.clone(),
            },
            None => Outcome::measured(samples),
        }
    }
}

/// One subject and measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What was run, e.g. "kvmini hello.elf".
    pub subject: String,
    /// What was measured, e.g. "launch->exit".
    pub measurement: String,
    /// Unit of the samples.
    pub unit: &'static str,
    /// The exact command measured (for derived rows: how the number is made).
    pub command: String,
    /// The samples or why there are none.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Row {
    /// A row of `subject`.
    pub fn new(subject: &str, measurement: &str, unit: &'static str, command: &str) -> Row {
        Row {
            subject: subject.into(),
            measurement: measurement.into(),
            unit,
            command: command.into(),
            outcome: Outcome::measured(&[]),
        }
    }

    /// The row with `outcome`.
    pub fn with(mut self, outcome: Outcome) -> Row {
        self.outcome = outcome;
        self
    }
}

fn decimals(unit: &str) -> usize {
    match unit {
        "ns/exit" => 0,
        "VMs/s" => 1,
        "s" => 3,
        _ => 2,
    }
}

/// Formats `v` in `unit` with the precision the table uses.
pub fn number(v: f64, unit: &str) -> String {
    format!("{v:.*}", decimals(unit))
}

/// A ratio with three significant digits, so that one near a target's bound shows which side
/// of it it is on.
pub fn ratio_text(r: f64) -> String {
    match r {
        r if r < 10.0 => format!("{r:.3}x"),
        r if r < 100.0 => format!("{r:.1}x"),
        r => format!("{r:.0}x"),
    }
}

/// The table: one line per row, numbers right-aligned: p50, p90, min and max.
pub fn table(rows: &[Row]) -> String {
    render(rows, &["p50", "p90", "min", "max"], |s| {
        vec![s.p50, s.p90, s.min, s.max]
    })
}

/// The table for few samples: their number, the median, min and max.
pub fn median_table(rows: &[Row]) -> String {
    render(rows, &["n", "median", "min", "max"], |s| {
        vec![s.n as f64, s.p50, s.min, s.max]
    })
}

/// One line per row; `cells` gives the numbers of a measured row from its summary (a column
/// called "n" is shown as a whole number). A subject's name is shown on its first row only.
fn render(rows: &[Row], headers: &[&str], cells: fn(&Summary) -> Vec<f64>) -> String {
    let mut t = Table::new(&[
        ("subject", Align::Left),
        ("measurement", Align::Left),
        ("unit", Align::Left),
    ])
    .min_width(2, 7)
    .rule();
    for (i, h) in headers.iter().enumerate() {
        t = t.column(h, Align::Right).min_width(3 + i, 9);
    }
    let mut last_subject = "";
    for r in rows {
        let subject = if r.subject == last_subject {
            String::new()
        } else {
            r.subject.clone()
        };
        last_subject = &r.subject;
        let head = vec![subject, r.measurement.clone(), r.unit.to_string()];
        let note = match &r.outcome {
            Outcome::Measured(s) if s.n > 0 => None,
            Outcome::Measured(_) => Some("no samples".to_string()),
            Outcome::NotInstalled { reason } => Some(format!("not installed ({reason})")),
            Outcome::Failed { reason } => Some(format!("FAILED: {reason}")),
        };
        match (note, &r.outcome) {
            (Some(note), _) => t.row_with_note(head, note),
            (None, Outcome::Measured(s)) => {
                let numbers = cells(s).into_iter().zip(headers).map(|(v, h)| match *h {
                    "n" => format!("{v}"),
                    _ => number(v, r.unit),
                });
                t.row(head.into_iter().chain(numbers).collect());
            }
            (None, _) => unreachable!("rows that are not measured have a note"),
        }
    }
    t.render()
}

/// A target from the project's issue, with what was measured.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// The goal.
    pub goal: String,
    /// The number measured, if any.
    pub measured: Option<f64>,
    /// It, as shown.
    pub shown: String,
    /// Whether the goal is met, when it says.
    pub met: Option<bool>,
}

/// The targets, one aligned line each, with "met" or "NOT met".
pub fn targets_text(targets: &[Target]) -> String {
    let mut t = Table::new(&[
        ("what", Align::Left),
        ("goal", Align::Left),
        ("shown", Align::Left),
        ("verdict", Align::Left),
    ])
    .min_width(2, 27)
    .headless()
    .indent(2);
    for target in targets {
        let verdict = match target.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "",
        };
        t.row(vec![
            target.what.clone(),
            target.goal.clone(),
            target.shown.clone(),
            verdict.into(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_numbers_or_why_there_are_none() {
        let rows = vec![
            Row::new("kvmini", "launch->exit", "ms", "kvmini run")
                .with(Outcome::measured(&[2.0, 1.0])),
            Row::new("kvmini", "peak RSS", "MiB", "kvmini run").with(Outcome::Failed {
                reason: "exit status 1".into(),
            }),
            Row::new("QEMU", "launch->exit", "ms", "qemu").with(Outcome::NotInstalled {
                reason: "not on PATH".into(),
            }),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("subject  measurement   unit           p50"));
        assert!(lines[1].chars().all(|c| c == '-'));
        assert!(
            lines[2].ends_with("1.50       1.90       1.00       2.00"),
            "{text}"
        );
        assert!(lines[3].starts_with("         peak RSS"), "{text}");
        assert!(
            lines[3].ends_with("MiB      FAILED: exit status 1"),
            "{text}"
        );
        assert!(lines[4].contains("not installed (not on PATH)"), "{text}");
        let text = median_table(&rows[..1]);
        assert!(
            text.lines().nth(2).unwrap().contains("  2       1.50"),
            "{text}"
        );
    }

    #[test]
    fn rows_serialize_with_their_status() {
        let row = Row::new("a", "b", "ms", "c").with(Outcome::measured(&[1.0]));
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["status"], "measured");
        assert_eq!(v["p50"], 1.0);
        assert_eq!(v["samples"], serde_json::json!([1.0]));
        let row = row.with(Outcome::NotInstalled { reason: "x".into() });
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(
            (v["status"].as_str(), v["reason"].as_str()),
            (Some("not installed"), Some("x"))
        );
    }

    #[test]
    fn ratios_keep_three_significant_digits() {
        assert_eq!(ratio_text(1.2345), "1.234x");
        assert_eq!(ratio_text(12.345), "12.3x");
        assert_eq!(ratio_text(123.45), "123x");
        assert_eq!(number(10047.06, "ns/exit"), "10047");
    }
}
