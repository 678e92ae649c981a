//! Running child processes and timing them, the same way for every subject.
//!
//! "Launch" is the moment the child calls `execve`, stamped by the child itself: the fork is
//! the measurer's cost, not the subject's (the time from just before the fork is kept too,
//! as [`Run::fork_to_exec`]). Children are forked, not vforked, because a process's
//! `ru_maxrss` includes the memory it had before `execve`: after a vfork that is the whole
//! measuring process, after a fork only the few pages the copy touches. (Runs that sample
//! memory are not timed and are started with posix_spawn, which returns sooner.)
//!
//! One thread waits for every child at once with `poll(2)`: on their output pipes, whose
//! chunks are kept with their arrival times, and on a pidfd per child (`pidfd_open(2)`), so
//! that the end of a process is seen when it happens even if a descendant still holds its
//! pipes. A child still running at its limit is killed (and its clean-up command run).

mod child;

use std::path::PathBuf;
use std::time::Duration;

use child::ns;
pub use child::{start, wait_all, Running};

use crate::memory::{Peak, Sampler};

/// How long a run may take when its spec does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of each output stream is kept.
pub const KEEP: usize = 1 << 20;
/// How long output may keep arriving after the process ended (a descendant may still hold
/// the pipe).
pub const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// A command line for people: the words joined by spaces, each word that is not made only
/// of letters, digits and `-_./=:,+@` in single quotes (a shell reads it back the same).
pub fn command_line<S: AsRef<str>>(program: &str, args: &[S]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(AsRef::as_ref))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One word as a shell reads it back (see [`command_line`]).
fn quote(w: &str) -> String {
    if !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// A line of output to look for.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// How long it may run before it is killed.
    pub timeout: Duration,
    /// Run after a timeout kill, to clean up what the process left behind (a container).
    pub cleanup: Option<Vec<String>>,
    /// Variables added to the environment the process inherits.
    pub env: Vec<(String, String)>,
}

impl Spec {
    /// `program args`, with the default timeout and no clean-up.
    pub fn new<S: Into<String>>(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = S>,
    ) -> Spec {
        Spec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: DEFAULT_TIMEOUT,
            cleanup: None,
            env: Vec::new(),
        }
    }

    /// `/bin/sh -c script`.
    pub fn shell(script: &str) -> Spec {
        Spec::new("/bin/sh", ["-c", script])
    }

    /// The command line, for messages: the variables it adds to the environment first, as
    /// a shell's assignments.
    pub fn command_line(&self) -> String {
        let line = command_line(&self.program.to_string_lossy(), &self.args);
        self.env
            .iter()
            .map(|(k, v)| format!("{k}={} ", quote(v)))
            .chain([line])
            .collect()
    }

    /// Runs the clean-up command, if there is one, and waits for it; its output and status
    /// are ignored (what it cleans may already be gone).
    pub fn clean_up(&self) {
        if let Some((program, args)) = self.cleanup.as_ref().and_then(|c| c.split_first()) {
            let _ = std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
    /// Still running at its limit; it was killed.
    TimedOut,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Code(c) => write!(f, "exit status {c}"),
            Status::Signal(s) => write!(f, "killed by signal {s}"),
            Status::TimedOut => write!(f, "still running after the deadline (killed)"),
        }
    }
}

/// What one run of a process gave. Times count from its launch (its `execve`).
#[derive(Clone, Debug)]
pub struct Run {
    /// From just before the fork to the launch.
    pub fork_to_exec: Duration,
    /// Launch to the process being reaped.
    pub exit: Duration,
    /// How it ended.
    pub status: Status,
    /// CPU time in user mode of the process and the descendants it waited for.
    pub user: Duration,
    /// CPU time in the kernel, likewise.
    pub sys: Duration,
    /// `ru_maxrss`: the largest RSS of any one process of the tree, KiB.
    pub maxrss_kib: u64,
    /// Standard output, at most [`KEEP`] bytes.
    pub stdout: Vec<u8>,
    /// Standard error, at most [`KEEP`] bytes.
    pub stderr: Vec<u8>,
    /// When each chunk of standard output arrived: (its end offset in `stdout`, time since
    /// launch).
    pub arrivals: Vec<(usize, Duration)>,
    /// The sampled memory of its process tree, for runs that sample it ([`run`]).
    pub memory: Option<Peak>,
}

impl Run {
    /// Launch to the arrival of the byte at offset `pos` of standard output.
    pub fn arrival_at(&self, pos: usize) -> Option<Duration> {
        self.arrivals
            .iter()
            .find(|(end, _)| *end > pos)
            .map(|&(_, t)| t)
    }

    /// Launch to the arrival of the first byte of standard output.
    pub fn first_byte(&self) -> Option<Duration> {
        self.arrival_at(0)
    }

    /// Launch to the arrival of the first byte of `text` on standard output.
    pub fn arrival_of(&self, text: &str) -> Option<Duration> {
        self.arrival_at(find(&self.stdout, text.as_bytes())?)
    }

    /// Launch to the arrival of the whole first line that `marker` matches (its last byte).
    pub fn arrival_of_line(&self, marker: &Marker) -> Option<Duration> {
        let mut start = 0;
        for line in self.stdout.split_inclusive(|b| *b == b'\n') {
            if marker.matches(&String::from_utf8_lossy(line)) {
                return self.arrival_at(start + line.len() - 1);
            }
            start += line.len();
        }
        None
    }

    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Why a process gave no run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// It could not be started.
    #[error("cannot start {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
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

/// Runs `spec` once; with `sample_memory`, samples the memory of its process tree while it
/// runs (the sampler takes CPU time, so timed runs go without it).
pub fn run(spec: &Spec, sample_memory: bool) -> Result<Run, Error> {
    let sampler = sample_memory.then(|| Sampler::start().ok()).flatten();
    let running = start(spec, sampler.is_some())?;
    if let Some(s) = &sampler {
        s.watch(vec![running.pid]);
    }
    let first = running.first_sample;
    let mut run = running.wait()?;
    run.memory = sampler.map(Sampler::finish).map(|mut p| {
        if let Some(f) = first {
            p.rss_kib = p.rss_kib.max(f.rss_kib);
            p.pss_kib = p.pss_kib.max(f.pss_kib);
            p.processes = p.processes.max(f.processes);
            p.samples += f.samples;
        }
        p
    });
    Ok(run)
}

/// What starting several processes at once gave.
#[derive(Clone, Debug)]
pub struct Batch {
    /// From just before the first fork to the end of the last process.
    pub wall: Duration,
    /// Each process, in the order of the specs.
    pub runs: Vec<Run>,
}

/// Starts every spec at once (one after the other, without waiting in between), then waits
/// for all of them.
pub fn run_batch(specs: &[Spec]) -> Result<Batch, Error> {
    let mut running: Vec<Running> = Vec::with_capacity(specs.len());
    for spec in specs {
        match start(spec, false) {
            Ok(r) => running.push(r),
            Err(e) => {
                for r in &mut running {
                    r.signal(libc::SIGKILL);
                }
                let _ = wait_all(running);
                return Err(e);
            }
        }
    }
    let first_fork = running.first().map_or(0, |r| r.fork_ns);
    let launches: Vec<u64> = running.iter().map(|r| r.launch_ns).collect();
    let runs = wait_all(running)?;
    let end = runs
        .iter()
        .zip(&launches)
        .map(|(r, launch)| launch + ns(r.exit))
        .max()
        .unwrap_or(first_fork);
    Ok(Batch {
        wall: Duration::from_nanos(end.saturating_sub(first_fork)),
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Spec {
        Spec {
            timeout: Duration::from_secs(10),
            ..Spec::shell(script)
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
        let spec = sh("echo start; sleep 0.05; echo done");
        let s = run(&spec, true).unwrap();
        let first = s.arrival_of_line(&Marker::Line("start")).unwrap();
        assert!(first > Duration::ZERO && first < s.exit, "{s:?}");
        assert!(s.exit >= Duration::from_millis(50), "{s:?}");
        assert!(s.maxrss_kib > 0);
        assert_eq!(s.stdout, b"start\ndone\n");
        assert_eq!(s.status, Status::Code(0));
        assert!(s.arrival_of("done").unwrap() >= first, "{s:?}");
        let peak = s.memory.unwrap();
        assert!(peak.samples > 0);
        assert!(run(&spec, false).unwrap().memory.is_none());
    }

    #[test]
    fn endings_are_told_apart() {
        let r = run(&sh("echo oops >&2; exit 3"), false).unwrap();
        assert_eq!(r.status, Status::Code(3));
        assert_eq!(r.stderr_text(), "oops\n");
        assert!(r.first_byte().is_none());
        assert_eq!(r.arrival_of_line(&Marker::Any), None);
        let r = run(&sh("kill -9 $$"), false).unwrap();
        assert_eq!(r.status, Status::Signal(9));
        let mut slow = sh("exec sleep 5");
        slow.timeout = Duration::from_millis(100);
        let r = run(&slow, false).unwrap();
        assert_eq!(r.status, Status::TimedOut);
        assert!(r.exit < Duration::from_secs(2), "{r:?}");
        let missing = Spec::new("/nonexistent/program", Vec::<String>::new());
        assert!(matches!(run(&missing, false), Err(Error::Spawn { .. })));
    }

    #[test]
    fn the_end_is_seen_while_a_descendant_holds_the_pipe() {
        let r = run(&sh("(sleep 0.5; echo late) & echo early"), false).unwrap();
        assert!(r.exit < Duration::from_millis(400), "{r:?}");
        assert_eq!(r.stdout_text(), "early\nlate\n");
    }

    #[test]
    fn the_environment_is_added_to_and_the_clean_up_runs_on_a_timeout() {
        let mut spec = sh("echo \"$KVMINI_MEASURE_TEST\"; echo \"$PATH\" | grep -c /");
        spec.env = vec![("KVMINI_MEASURE_TEST".into(), "given".into())];
        let r = run(&spec, false).unwrap();
        // The variable is added; the inherited environment (PATH) is kept.
        assert_eq!(r.stdout_text(), "given\n1\n");

        let mark = std::env::temp_dir().join(format!("kvmini-cleanup-{}", std::process::id()));
        let _ = std::fs::remove_file(&mark);
        let mut slow = sh("exec sleep 5");
        slow.timeout = Duration::from_millis(100);
        let touch = ["/bin/sh", "-c", "echo done > \"$0\""];
        slow.cleanup = Some(
            touch
                .iter()
                .map(|s| s.to_string())
                .chain([mark.display().to_string()])
                .collect(),
        );
        assert_eq!(run(&slow, false).unwrap().status, Status::TimedOut);
        assert_eq!(std::fs::read_to_string(&mark).unwrap(), "done\n");
        std::fs::remove_file(&mark).unwrap();
    }

    #[test]
    fn a_batch_runs_instances_at_once() {
        let specs = vec![sh("sleep 0.2; echo hi"); 3];
        let b = run_batch(&specs).unwrap();
        assert_eq!(b.runs.len(), 3);
        // Together, not one after the other.
        let wall_ms = b.wall.as_secs_f64() * 1e3;
        assert!((200.0..550.0).contains(&wall_ms), "{wall_ms}");
    }

    #[test]
    fn output_is_found_by_text_and_by_offset() {
        assert_eq!(find(b"log line\nHello", b"Hello"), Some(9));
        assert_eq!(find(b"nothing", b"Hello"), None);
        let run = Run {
            fork_to_exec: Duration::ZERO,
            exit: Duration::from_secs(30),
            status: Status::Code(0),
            user: Duration::ZERO,
            sys: Duration::ZERO,
            maxrss_kib: 0,
            stdout: b"boot log\nkvmini-init: user space up\n".to_vec(),
            stderr: Vec::new(),
            arrivals: vec![(9, Duration::from_secs(3)), (36, Duration::from_secs(25))],
            memory: None,
        };
        assert_eq!(run.first_byte(), Some(Duration::from_secs(3)));
        // The line arrived in the second chunk.
        assert_eq!(
            run.arrival_of("kvmini-init: user space up"),
            Some(Duration::from_secs(25))
        );
        assert_eq!(
            run.arrival_of_line(&Marker::Prefix("boot")),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        assert_eq!(
            command_line("a/b", &["--x", "two words"]),
            "a/b --x 'two words'"
        );
        assert_eq!(
            command_line("sh", &["-c", "echo '$HOME'", ""]),
            r"sh -c 'echo '\''$HOME'\''' ''"
        );
        let mut spec = Spec::new("/bin/prog", ["x"]);
        spec.env = vec![("A".into(), "/a b".into()), ("B".into(), "2".into())];
        assert_eq!(spec.command_line(), "A='/a b' B=2 /bin/prog x");
    }
}
