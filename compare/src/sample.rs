//! One side's run as a sample of the comparison: the kit's runner ([`kvmini_measure::runner`])
//! starts and times the process; here a run that failed, hung or never printed the
//! workload's line becomes an error that says so, with the end of what it printed.
//! Times count from just before the fork, as the report's method says.

use std::time::Duration;

use serde::Serialize;

use kvmini_measure::memory::Peak;
use kvmini_measure::runner::{self, Marker, Run, Spec, Status};

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Launch to the marker line, milliseconds.
    pub first_output_ms: f64,
    /// Launch to the end of the process, milliseconds.
    pub total_ms: f64,
    /// CPU time in user mode of the process and the descendants it waited for, ms.
    pub user_ms: f64,
    /// CPU time in the kernel, ms.
    pub sys_ms: f64,
    /// `ru_maxrss` from `wait4`: the largest RSS of any one process of the tree, KiB.
    pub maxrss_kib: u64,
    /// Sampled memory of the whole tree, for runs that sample it.
    pub memory: Option<Peak>,
    /// What the process printed.
    #[serde(skip)]
    pub stdout: String,
}

/// Why a run did not give a measurement.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started or waited for.
    #[error(transparent)]
    Run(#[from] runner::Error),
    /// It ended with a failure status or a signal.
    #[error("{command} {how}{}", detail(.stderr, .stdout))]
    Failed {
        /// The command line.
        command: String,
        /// "exited with status N" or "was killed by signal N".
        how: String,
        /// Its standard error.
        stderr: String,
        /// Its standard output.
        stdout: String,
    },
    /// It ended well but never printed the marker line.
    #[error("{command} exited without printing the line it should ({marker:?}){}", detail(.stderr, .stdout))]
    NoMarker {
        /// The command line.
        command: String,
        /// The line looked for.
        marker: Marker,
        /// Its standard error.
        stderr: String,
        /// Its standard output.
        stdout: String,
    },
    /// It ran longer than its timeout and was killed.
    #[error("{command} did not finish within {} s and was killed{}", .timeout.as_secs(), detail(.stderr, .stdout))]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
        /// Its standard error so far.
        stderr: String,
        /// Its standard output so far.
        stdout: String,
    },
}

/// The end of a long text (output can be a whole kernel log).
fn tail(text: &str, max: usize) -> &str {
    let text = text.trim_end();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn detail(stderr: &str, stdout: &str) -> String {
    let mut s = String::new();
    if !stderr.trim().is_empty() {
        s.push_str(&format!("; its stderr:\n{}", tail(stderr, 2000)));
    }
    if !stdout.trim().is_empty() {
        s.push_str(&format!(
            "\n  its stdout ends with:\n{}",
            tail(stdout, 1000)
        ));
    }
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The sample of `run` of `spec`, or why it is none: a failure status, a hang, or no
/// `marker` line.
pub fn sample(spec: &Spec, marker: &Marker, run: Run) -> Result<Sample, RunError> {
    let command = spec.command_line();
    let (stdout, stderr) = (run.stdout_text(), run.stderr_text());
    let how = match run.status {
        Status::Code(0) => None,
        Status::Code(code) => Some(format!("exited with status {code}")),
        Status::Signal(sig) => Some(format!("was killed by signal {sig}")),
        Status::TimedOut => {
            return Err(RunError::Timeout {
                command,
                timeout: spec.timeout,
                stderr,
                stdout,
            })
        }
    };
    if let Some(how) = how {
        return Err(RunError::Failed {
            command,
            how,
            stderr,
            stdout,
        });
    }
    let Some(seen) = run.arrival_of_line(marker) else {
        return Err(RunError::NoMarker {
            command,
            marker: marker.clone(),
            stderr,
            stdout,
        });
    };
    // The line was written before the process ended, even if it was read after the end.
    let seen = seen.min(run.exit);
    Ok(Sample {
        first_output_ms: ms(run.fork_to_exec + seen),
        total_ms: ms(run.fork_to_exec + run.exit),
        user_ms: ms(run.user),
        sys_ms: ms(run.sys),
        maxrss_kib: run.maxrss_kib,
        memory: run.memory,
        stdout,
    })
}

/// Runs `spec` once; with `sample_memory`, samples the memory of its process tree while it
/// runs (the sampler takes CPU time, so timed runs go without it).
pub fn run_once(spec: &Spec, marker: &Marker, sample_memory: bool) -> Result<Sample, RunError> {
    let run = runner::run(spec, sample_memory)?;
    sample(spec, marker, run)
}

/// What starting several instances at once measured.
#[derive(Clone, Debug)]
pub struct Batch {
    /// From the first launch to the end of the last instance, milliseconds.
    pub wall_ms: f64,
    /// Each instance, launch to end.
    pub instances: Vec<Sample>,
}

/// Starts every spec at once (one after the other, without waiting in between), then waits
/// for all of them; the first failure is the error.
pub fn run_batch(specs: &[Spec], marker: &Marker) -> Result<Batch, RunError> {
    let batch = runner::run_batch(specs)?;
    let instances = specs
        .iter()
        .zip(batch.runs)
        .map(|(spec, run)| sample(spec, marker, run))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Batch {
        wall_ms: ms(batch.wall),
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_counts_from_before_the_fork_to_the_marker_line() {
        let s = run_once(
            &Spec::shell("echo start; sleep 0.05; echo done"),
            &Marker::Line("start"),
            true,
        )
        .unwrap();
        assert!(
            s.first_output_ms > 0.0 && s.first_output_ms < s.total_ms,
            "{s:?}"
        );
        assert!(s.total_ms >= 50.0, "{s:?}");
        assert!(s.maxrss_kib > 0);
        assert_eq!(s.stdout, "start\ndone\n");
        assert!(s.memory.unwrap().samples > 0);
    }

    #[test]
    fn failures_say_what_went_wrong() {
        let x = Marker::Line("x");
        let e = run_once(&Spec::shell("echo oops >&2; exit 3"), &x, false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("exited with status 3") && text.contains("oops"),
            "{text}"
        );
        let e = run_once(&Spec::shell("echo other"), &x, false).unwrap_err();
        assert!(matches!(e, RunError::NoMarker { .. }), "{e}");
        let mut slow = Spec::shell("exec sleep 5");
        slow.timeout = Duration::from_millis(100);
        let e = run_once(&slow, &x, false).unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }), "{e}");
        let mut missing = Spec::shell("");
        missing.program = "/nonexistent/program".into();
        assert!(matches!(
            run_once(&missing, &x, false),
            Err(RunError::Run(runner::Error::Spawn { .. }))
        ));
    }

    #[test]
    fn a_batch_runs_instances_at_once() {
        let specs = vec![Spec::shell("sleep 0.2; echo hi"); 3];
        let b = run_batch(&specs, &Marker::Line("hi")).unwrap();
        assert_eq!(b.instances.len(), 3);
        // Together, not one after the other.
        assert!((200.0..550.0).contains(&b.wall_ms), "{}", b.wall_ms);
        let e = run_batch(&specs, &Marker::Line("x")).unwrap_err();
        assert!(matches!(e, RunError::NoMarker { .. }), "{e}");
    }
}
