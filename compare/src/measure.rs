//! Running one side's process and measuring it the same way for every side: the time from
//! just before `fork` to the workload's first line of output and to the process's end (as
//! `wait4` reports it), its CPU time and `ru_maxrss`, and, on request, the memory of its
//! process tree ([`super::memory`]). Several instances can run at once ([`run_batch`]).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::memory::{self, Peak, Sampler};

/// How the workload's first line of output is recognised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Marker {
    /// A line that is exactly this text (surrounding white space and `\r` ignored).
    Line(&'static str),
    /// A line that starts with this text.
    Prefix(&'static str),
    /// Any line with something on it.
    Any,
}

impl Marker {
    /// Whether `line` is the marker line.
    pub fn matches(&self, line: &str) -> bool {
        match self {
            Marker::Line(text) => line.trim() == *text,
            Marker::Prefix(text) => line.trim().starts_with(text),
            Marker::Any => !line.trim().is_empty(),
        }
    }
}

/// A process to start.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The first line of the workload's own output.
    pub marker: Marker,
    /// How long it may run before it is killed.
    pub timeout: Duration,
    /// Run after a timeout kill, to clean up what the process left behind (a container).
    pub cleanup: Option<Vec<String>>,
}

impl Spec {
    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().map(|a| {
                if a.is_empty() || a.contains(char::is_whitespace) || a.contains('$') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

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
    /// The program could not be started.
    #[error("cannot start {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
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
    /// Waiting for it failed.
    #[error("waiting for {command}: {source}")]
    Wait {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
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

struct Exit {
    at: Instant,
    status: libc::c_int,
    usage: libc::rusage,
}

/// A started process and the threads collecting its output and its end.
struct Running {
    spec: Spec,
    pid: i32,
    start: Instant,
    exit: mpsc::Receiver<std::io::Result<Exit>>,
    stdout: mpsc::Receiver<(String, Option<Instant>)>,
    stderr: mpsc::Receiver<String>,
    /// Memory sampled right after the launch, if asked for.
    first_sample: Option<Peak>,
}

fn wait4(pid: i32) -> std::io::Result<Exit> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, writable and live for the call; `pid` is a
        // child of this process that nothing else waits for.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let at = Instant::now();
        if r == pid {
            return Ok(Exit { at, status, usage });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Starts `spec`; with `sample_first`, samples its memory back to back for its first
/// milliseconds ([`memory::burst`]) before anything else: a process that lives a millisecond
/// may be gone by the time a sampler thread wakes up. (Its end is then seen late, so runs that
/// sample are not timed.)
fn spawn(spec: &Spec, sample_first: bool) -> Result<Running, RunError> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // The same process group as kvmini compare: Ctrl-C on a terminal stops it too.
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        command: spec.command_line(),
        source,
    })?;
    let pid = child.id() as i32;
    let first_sample = sample_first.then(|| memory::burst(pid, memory::BURST));
    let out = child.stdout.take();
    let err = child.stderr.take();
    // `child` is dropped without waiting: wait4 below reaps the process.
    drop(child);

    let (exit_tx, exit) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(wait4(pid));
    });
    let (out_tx, stdout) = mpsc::channel();
    let marker = spec.marker.clone();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut seen = None;
        if let Some(out) = out {
            let mut reader = BufReader::new(out);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let l = String::from_utf8_lossy(&line);
                if seen.is_none() && marker.matches(&l) {
                    seen = Some(Instant::now());
                }
                text.push_str(&l);
                line.clear();
            }
        }
        let _ = out_tx.send((text, seen));
    });
    let (err_tx, stderr) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut e) = err {
            let _ = e.read_to_end(&mut text);
        }
        let _ = err_tx.send(String::from_utf8_lossy(&text).into_owned());
    });
    Ok(Running {
        spec: spec.clone(),
        pid,
        start,
        exit,
        stdout,
        stderr,
        first_sample,
    })
}

/// How long output readers may lag behind the end of the process (a descendant may still
/// hold the pipe).
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn tv_ms(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 * 1000.0 + tv.tv_usec as f64 / 1000.0
}

impl Running {
    fn kill(&self) {
        // SAFETY: kill(2) touches no memory. The PID is our child's: the waiter thread has not
        // reported reaping it (only in the instant between its reaping and its report could
        // the PID be reused).
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        if let Some(cleanup) = &self.spec.cleanup {
            if let Some((program, args)) = cleanup.split_first() {
                let _ = Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Waits for the end, at most until `deadline`; returns the sample and when it ended.
    fn finish(self, deadline: Instant) -> Result<(Sample, Instant), RunError> {
        let command = self.spec.command_line();
        let exit = match self
            .exit
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(Ok(exit)) => exit,
            Ok(Err(source)) => return Err(RunError::Wait { command, source }),
            Err(_) => {
                self.kill();
                let _ = self.exit.recv_timeout(OUTPUT_GRACE);
                let (stdout, _) = self.stdout.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
                let stderr = self.stderr.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
                return Err(RunError::Timeout {
                    command,
                    timeout: self.spec.timeout,
                    stderr,
                    stdout,
                });
            }
        };
        let (stdout, seen) = self.stdout.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
        let stderr = self.stderr.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
        let status = exit.status;
        let how = if libc::WIFEXITED(status) {
            match libc::WEXITSTATUS(status) {
                0 => None,
                code => Some(format!("exited with status {code}")),
            }
        } else {
            Some(format!("was killed by signal {}", libc::WTERMSIG(status)))
        };
        if let Some(how) = how {
            return Err(RunError::Failed {
                command,
                how,
                stderr,
                stdout,
            });
        }
        let Some(seen) = seen else {
            return Err(RunError::NoMarker {
                command,
                marker: self.spec.marker.clone(),
                stderr,
                stdout,
            });
        };
        // The line was written before the process ended, even if this process's reader thread
        // got to it after the waiter thread saw the end.
        let seen = seen.min(exit.at);
        let sample = Sample {
            first_output_ms: ms(seen.duration_since(self.start)),
            total_ms: ms(exit.at.duration_since(self.start)),
            user_ms: tv_ms(exit.usage.ru_utime),
            sys_ms: tv_ms(exit.usage.ru_stime),
            maxrss_kib: exit.usage.ru_maxrss.max(0) as u64,
            memory: None,
            stdout,
        };
        Ok((sample, exit.at))
    }
}

/// Runs `spec` once; with `sample_memory`, samples the memory of its process tree while it
/// runs (the sampler takes CPU time, so timed runs go without it).
pub fn run_once(spec: &Spec, sample_memory: bool) -> Result<Sample, RunError> {
    let sampler = sample_memory.then(|| Sampler::start().ok()).flatten();
    let running = spawn(spec, sampler.is_some())?;
    let deadline = running.start + spec.timeout;
    let first = running.first_sample;
    if let Some(s) = &sampler {
        s.watch(vec![running.pid]);
    }
    let result = running.finish(deadline);
    let peak = sampler.map(Sampler::finish).map(|mut p| {
        if let Some(f) = first {
            p.rss_kib = p.rss_kib.max(f.rss_kib);
            p.pss_kib = p.pss_kib.max(f.pss_kib);
            p.processes = p.processes.max(f.processes);
            p.samples += f.samples;
        }
        p
    });
    result.map(|(mut s, _)| {
        s.memory = peak;
        s
    })
}

/// What starting several instances at once measured.
#[derive(Clone, Debug, Serialize)]
pub struct Batch {
    /// From the first launch to the end of the last instance, milliseconds.
    pub wall_ms: f64,
    /// Each instance, launch to end.
    pub instances: Vec<Sample>,
}

/// Starts every spec at once (one after the other, without waiting in between), then waits
/// for all of them.
pub fn run_batch(specs: &[Spec]) -> Result<Batch, RunError> {
    let start = Instant::now();
    let mut running = Vec::with_capacity(specs.len());
    for spec in specs {
        match spawn(spec, false) {
            Ok(r) => running.push(r),
            Err(e) => {
                for r in running {
                    r.kill();
                    let _ = r.finish(Instant::now());
                }
                return Err(e);
            }
        }
    }
    let mut instances = Vec::with_capacity(running.len());
    let mut error = None;
    let mut end = start;
    for r in running {
        let deadline = r.start + r.spec.timeout;
        match r.finish(deadline) {
            Ok((sample, at)) => {
                end = end.max(at);
                instances.push(sample);
            }
            Err(e) => error = error.or(Some(e)),
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    Ok(Batch {
        wall_ms: ms(end.duration_since(start)),
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, marker: Marker) -> Spec {
        Spec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            marker,
            timeout: Duration::from_secs(10),
            cleanup: None,
        }
    }

    #[test]
    fn markers_match_lines_with_line_endings() {
        assert!(Marker::Line("hello").matches("hello\r\n"));
        assert!(!Marker::Line("hello").matches("hello world\n"));
        assert!(Marker::Prefix("checksum=").matches("checksum=00ff cycles=1\n"));
    }

    #[test]
    fn a_run_measures_first_output_before_the_end() {
        let spec = sh("echo start; sleep 0.05; echo done", Marker::Line("start"));
        let s = run_once(&spec, true).unwrap();
        assert!(
            s.first_output_ms > 0.0 && s.first_output_ms < s.total_ms,
            "{s:?}"
        );
        assert!(s.total_ms >= 50.0, "{s:?}");
        assert!(s.maxrss_kib > 0);
        assert_eq!(s.stdout, "start\ndone\n");
        let peak = s.memory.unwrap();
        assert!(peak.samples > 0);
        assert!(run_once(&spec, false).unwrap().memory.is_none());
    }

    #[test]
    fn failures_say_what_went_wrong() {
        let e = run_once(&sh("echo oops >&2; exit 3", Marker::Line("x")), false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("exited with status 3") && text.contains("oops"),
            "{text}"
        );
        let e = run_once(&sh("echo other", Marker::Line("x")), false).unwrap_err();
        assert!(matches!(e, RunError::NoMarker { .. }), "{e}");
        let mut slow = sh("exec sleep 5", Marker::Line("x"));
        slow.timeout = Duration::from_millis(100);
        let e = run_once(&slow, false).unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }), "{e}");
        let mut missing = sh("", Marker::Line("x"));
        missing.program = "/nonexistent/program".into();
        assert!(matches!(
            run_once(&missing, false),
            Err(RunError::Spawn { .. })
        ));
    }

    #[test]
    fn a_batch_runs_instances_at_once() {
        let specs = vec![sh("sleep 0.2; echo hi", Marker::Line("hi")); 3];
        let b = run_batch(&specs).unwrap();
        assert_eq!(b.instances.len(), 3);
        // Together, not one after the other.
        assert!(b.wall_ms >= 200.0 && b.wall_ms < 550.0, "{}", b.wall_ms);
    }
}
