//! Running one process and timing it: launch to its first byte of the expected output and
//! launch to exit, with peak RSS from `wait4`; reading a running process's memory from
//! `/proc/PID/smaps`; starting many processes at once.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What one run of a process gave.
#[derive(Debug)]
pub struct Run {
    /// Launch to the arrival of the first byte of the expected text on standard output
    /// (`None` when it never came).
    pub first_byte: Option<Duration>,
    /// Launch to the process being reaped.
    pub exit: Duration,
    /// How it ended.
    pub status: Status,
    /// Peak resident set size (`ru_maxrss`), KiB.
    pub maxrss_kib: u64,
    /// Standard output, at most [`KEEP`] bytes.
    pub stdout: Vec<u8>,
    /// Standard error, at most [`KEEP`] bytes.
    pub stderr: Vec<u8>,
    /// When each chunk of standard output arrived: (its end offset in `stdout`, time since
    /// launch).
    pub arrivals: Vec<(usize, Duration)>,
}

impl Run {
    /// Launch to the arrival of the first byte of `text` on standard output (`None` when it
    /// never came).
    pub fn arrival_of(&self, text: &str) -> Option<Duration> {
        self.arrival_at(find(&self.stdout, text.as_bytes())?)
    }

    /// Launch to the arrival of the byte at offset `pos` of standard output.
    pub fn arrival_at(&self, pos: usize) -> Option<Duration> {
        self.arrivals
            .iter()
            .find(|(end, _)| *end > pos)
            .map(|&(_, t)| t)
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
    /// Still running at the deadline; it was killed.
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

/// How much of each output stream is kept.
const KEEP: usize = 1 << 20;

fn decode(status: libc::c_int) -> Status {
    if libc::WIFEXITED(status) {
        Status::Code(libc::WEXITSTATUS(status))
    } else {
        Status::Signal(libc::WTERMSIG(status))
    }
}

/// Reaps `pid`; returns how it ended and its peak RSS in KiB.
fn reap(pid: libc::pid_t) -> std::io::Result<(Status, u64)> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid buffer for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, writable; `pid` is our unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((decode(status), usage.ru_maxrss.max(0) as u64));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill has no memory effects; `pid` is our child and not yet reaped, so the
    // number cannot have been reused.
    unsafe { libc::kill(pid, sig) };
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process, so that a child can stamp
/// its own launch.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn since(from_ns: u64) -> Duration {
    Duration::from_nanos(mono_ns().saturating_sub(from_ns))
}

/// A word in a page shared with every child forked from here: the child writes into it the
/// time at which it calls execve.
fn launch_stamp() -> &'static AtomicU64 {
    static PAGE: OnceLock<usize> = OnceLock::new();
    let addr = *PAGE.get_or_init(|| {
        // SAFETY: a fresh anonymous mapping; nothing else refers to that address range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of one shared page failed");
        p as usize
    });
    // SAFETY: the page is mapped for the life of the process, zero-filled and page-aligned,
    // which is a valid, aligned AtomicU64; every access to it is atomic.
    unsafe { &*(addr as *const AtomicU64) }
}

/// Spawns `program args` in `dir` with standard output and error piped, reads both until
/// they close, and reaps it. `expect` is the text whose first byte's arrival is the "first
/// byte" time (the guest's greeting: a VMM that logs to standard output before the guest
/// speaks is not credited for it); `None` takes the first byte of any output. A process
/// still running at `limit` is killed.
///
/// Launch is the moment the child calls execve, stamped by the child itself: the fork is
/// the benchmark's cost, not the subject's. The child is forked, not vforked, because a
/// process's `ru_maxrss` includes the memory it had before execve: after a vfork that is
/// the whole benchmark process, after a fork only the few pages the copy holds.
pub fn run(
    dir: &Path,
    program: &str,
    args: &[String],
    expect: Option<&str>,
    limit: Duration,
) -> std::io::Result<Run> {
    let stamp = launch_stamp();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the hook runs in the forked child just before execve and only calls
    // clock_gettime and stores to shared memory, both async-signal-safe. (Having a hook
    // also makes std fork instead of using posix_spawn; see above.)
    unsafe {
        cmd.pre_exec(move || {
            stamp.store(mono_ns(), Ordering::SeqCst);
            Ok(())
        })
    };
    stamp.store(0, Ordering::SeqCst);
    let spawn_ns = mono_ns();
    // std returns from spawn once the child has called execve, so the stamp is written.
    let mut child = cmd.spawn()?;
    let launch = match stamp.load(Ordering::SeqCst) {
        0 => spawn_ns,
        t => t,
    };
    let pid = child.id() as libc::pid_t;
    let deadline = launch + limit.as_nanos() as u64;

    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    // When each chunk of standard output arrived: (its end offset, time since launch).
    let mut arrivals: Vec<(usize, Duration)> = Vec::new();
    let mut open = [true, true];
    let mut timed_out = false;
    let mut buf = vec![0u8; 64 * 1024];
    while open[0] || open[1] {
        let now = mono_ns();
        if now >= deadline {
            timed_out = true;
            break;
        }
        let mut fds = [
            libc::pollfd {
                fd: if open[0] { out.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if open[1] { err.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let wait_ms = ((deadline - now) / 1_000_000).clamp(1, i32::MAX as u64) as libc::c_int;
        // SAFETY: `fds` is a valid array of two pollfd; negative fds are ignored by poll.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            signal(pid, libc::SIGKILL);
            let _ = reap(pid);
            return Err(e);
        }
        let at = since(launch);
        for (i, fd) in fds.iter().enumerate() {
            if !open[i] || fd.revents == 0 {
                continue;
            }
            let read = if i == 0 {
                out.read(&mut buf)
            } else {
                err.read(&mut buf)
            };
            match read {
                Ok(0) | Err(_) => open[i] = false,
                Ok(len) => {
                    let sink = if i == 0 { &mut stdout } else { &mut stderr };
                    let room = KEEP.saturating_sub(sink.len());
                    sink.extend_from_slice(&buf[..len.min(room)]);
                    if i == 0 {
                        arrivals.push((stdout.len(), at));
                    }
                }
            }
        }
    }
    if timed_out {
        signal(pid, libc::SIGKILL);
    }
    let (status, maxrss_kib) = reap(pid)?;
    let exit = since(launch);
    drop(child);

    let mut run = Run {
        first_byte: None,
        exit,
        status: if timed_out { Status::TimedOut } else { status },
        maxrss_kib,
        stdout,
        stderr,
        arrivals,
    };
    run.first_byte = match expect {
        Some(text) => run.arrival_of(text),
        None => run.arrival_at(0),
    };
    Ok(run)
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Resident memory of a running process, split at its guest-RAM mapping.
#[derive(Debug, Default, Clone, Copy)]
pub struct Resident {
    /// Rss of every mapping, KiB.
    pub total_kib: u64,
    /// Rss of the guest-RAM mapping, KiB.
    pub guest_kib: u64,
    /// Anonymous pages outside the guest-RAM mapping (heap, stacks, kvm_run), KiB.
    pub anon_kib: u64,
    /// Pss outside the guest-RAM mapping: pages shared with other processes (libc's) count
    /// in part, KiB.
    pub pss_kib: u64,
}

/// Reads `/proc/PID/smaps` and finds the guest RAM: the anonymous, private mapping of exactly
/// `guest_bytes`.
pub fn resident(pid: u32, guest_bytes: u64) -> Result<Resident, String> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let parsed = parse_smaps(&text, guest_bytes)?;
    if parsed.total_kib == 0 {
        return Err(format!("{path} is empty: the process had already exited"));
    }
    Ok(parsed)
}

/// The parsing half of [`resident`].
pub fn parse_smaps(text: &str, guest_bytes: u64) -> Result<Resident, String> {
    let mut r = Resident::default();
    let mut is_guest = false;
    let mut found = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                // start-end perms offset dev inode [path]
                let perms = words.next().unwrap_or("");
                let inode = words.nth(2).unwrap_or("");
                let path = words.next();
                is_guest = !found
                    && end - start == guest_bytes
                    && perms.ends_with('p')
                    && inode == "0"
                    && path.is_none();
                found |= is_guest;
                continue;
            }
        }
        let kib = |w: &mut std::str::SplitWhitespace| -> u64 {
            w.next().and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        match first {
            "Rss:" => {
                let v = kib(&mut words);
                r.total_kib += v;
                if is_guest {
                    r.guest_kib += v;
                }
            }
            "Anonymous:" if !is_guest => r.anon_kib += kib(&mut words),
            "Pss:" if !is_guest => r.pss_kib += kib(&mut words),
            _ => {}
        }
    }
    if !found {
        return Err(format!(
            "no anonymous private mapping of {guest_bytes} bytes (the guest RAM) in smaps"
        ));
    }
    Ok(r)
}

/// How one of many processes ended: its status and standard error.
pub type Ended = (Status, Vec<u8>);

/// Starts `count` copies of `program args` before waiting for any, then waits for them all.
/// Returns the wall time from the first spawn to the last reap and how each one ended.
pub fn start_many(
    dir: &Path,
    program: &str,
    args: &[String],
    count: usize,
) -> std::io::Result<(Duration, Vec<Ended>)> {
    let launch = Instant::now();
    let mut children: Vec<Child> = Vec::with_capacity(count);
    for _ in 0..count {
        let spawned = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                for mut c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(e);
            }
        }
    }
    let mut results = Vec::with_capacity(count);
    for mut child in children {
        let mut stderr = Vec::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut stderr);
        }
        let status = child.wait()?;
        let status = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => Status::Code(c),
            (None, Some(s)) => Status::Signal(s),
            (None, None) => Status::Signal(0),
        };
        results.push((status, stderr));
    }
    Ok((launch.elapsed(), results))
}

/// Spawns `program args` with output discarded (standard error kept for a failure message),
/// lets it run for `settle`, reads its memory, stops it with SIGTERM and reaps it.
pub fn resident_while_running(
    dir: &Path,
    program: &str,
    args: &[String],
    guest_bytes: u64,
    settle: Duration,
) -> Result<(Resident, Status), String> {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid = child.id();
    std::thread::sleep(settle);
    let sample = resident(pid, guest_bytes);
    signal(pid as libc::pid_t, libc::SIGTERM);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let (status, _) = reap(pid as libc::pid_t).map_err(|e| format!("wait4: {e}"))?;
    drop(child);
    match sample {
        Ok(r) => Ok((r, status)),
        Err(e) => Err(format!("{e} ({status}; stderr: {})", stderr.trim())),
    }
}
