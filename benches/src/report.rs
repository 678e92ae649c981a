//! Summaries (median, p90, min, max), the printed table and the results JSON.

use serde_json::{json, Value};

/// p50, p90, min and max of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// The `q`-quantile of sorted samples, interpolating linearly between closest ranks.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The summary of `samples`, or `None` when there are none.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    Some(Summary {
        p50: quantile(&s, 0.5),
        p90: quantile(&s, 0.9),
        min: s[0],
        max: s[s.len() - 1],
    })
}

/// What a row of the table holds.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Samples, one per measured round.
    Measured(Vec<f64>),
    /// The subject is not installed here (why, or how to name it).
    NotInstalled(String),
    /// The subject failed (why).
    Failed(String),
}

/// One subject and measurement.
#[derive(Clone, Debug)]
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
    pub outcome: Outcome,
}

impl Row {
    /// The summary, when measured.
    pub fn summary(&self) -> Option<Summary> {
        match &self.outcome {
            Outcome::Measured(s) => summarize(s),
            _ => None,
        }
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

/// The table: one line per row, numbers right-aligned: p50, p90, min and max.
pub fn table(rows: &[Row]) -> String {
    render(rows, &["p50", "p90", "min", "max"], |_, s| {
        vec![s.p50, s.p90, s.min, s.max]
    })
}

/// The table for few samples: their number, the median, min and max.
pub fn median_table(rows: &[Row]) -> String {
    render(rows, &["n", "median", "min", "max"], |n, s| {
        vec![n as f64, s.p50, s.min, s.max]
    })
}

/// One line per row; `cells` gives the numbers of a measured row from its number of samples
/// and their summary (a first column called "n" is shown as a whole number).
fn render(rows: &[Row], headers: &[&str], cells: fn(usize, &Summary) -> Vec<f64>) -> String {
    let sw = rows
        .iter()
        .map(|r| r.subject.chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    let mw = rows
        .iter()
        .map(|r| r.measurement.chars().count())
        .max()
        .unwrap_or(11)
        .max(11);
    let mut out = format!("{:<sw$}  {:<mw$}  {:<7}", "subject", "measurement", "unit");
    for h in headers {
        out += &format!("  {h:>9}");
    }
    out += "\n";
    out += &format!("{}\n", "-".repeat(sw + mw + 11 + headers.len() * 11));
    let mut last_subject = "";
    for r in rows {
        let subject = if r.subject == last_subject {
            ""
        } else {
            &r.subject
        };
        last_subject = &r.subject;
        let cells = match (&r.outcome, r.summary()) {
            (Outcome::Measured(samples), Some(s)) => cells(samples.len(), &s)
                .iter()
                .zip(headers)
                .map(|(v, h)| match *h {
                    "n" => format!("{v:>9}"),
                    _ => format!("{:>9}", number(*v, r.unit)),
                })
                .collect::<Vec<_>>()
                .join("  "),
            (Outcome::Measured(_), None) => "no samples".into(),
            (Outcome::NotInstalled(why), _) => format!("not installed ({why})"),
            (Outcome::Failed(why), _) => format!("FAILED: {why}"),
        };
        out += &format!(
            "{:<sw$}  {:<mw$}  {:<7}  {cells}\n",
            subject, r.measurement, r.unit
        );
    }
    out
}

/// A row as JSON: everything in the table plus the raw samples.
pub fn row_json(r: &Row) -> Value {
    let mut v = json!({
        "subject": r.subject,
        "measurement": r.measurement,
        "unit": r.unit,
        "command": r.command,
    });
    match &r.outcome {
        Outcome::Measured(samples) => {
            v["status"] = json!("measured");
            if let Some(s) = summarize(samples) {
                v["p50"] = json!(s.p50);
                v["p90"] = json!(s.p90);
                v["min"] = json!(s.min);
                v["max"] = json!(s.max);
            }
            v["samples"] = json!(samples);
        }
        Outcome::NotInstalled(why) => {
            v["status"] = json!("not installed");
            v["reason"] = json!(why);
        }
        Outcome::Failed(why) => {
            v["status"] = json!("failed");
            v["reason"] = json!(why);
        }
    }
    v
}
