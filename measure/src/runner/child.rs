//! The machinery under [`super::run`]: starting a child with its launch stamped, and one
//! `poll(2)` loop that reads the output of many children, reaps each as it ends and kills
//! each still running at its limit.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{Error, Run, Spec, Status, KEEP, OUTPUT_GRACE};
use crate::memory::{self, Peak};

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

pub(super) fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// A word in a page shared with every child forked from here: the child writes into it the
/// time at which it calls execve. [`SPAWN`] keeps two spawns from using it at once.
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

static SPAWN: Mutex<()> = Mutex::new(());

/// A started process, not yet waited for.
pub struct Running {
    spec: Spec,
    pub(super) pid: libc::pid_t,
    pub(super) fork_ns: u64,
    pub(super) launch_ns: u64,
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
    /// Readable when the process has ended; `None` where pidfds are not available.
    pidfd: Option<OwnedFd>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    arrivals: Vec<(usize, Duration)>,
    exit: Option<Exit>,
    timed_out: bool,
    /// Memory sampled right after the launch, if asked for.
    pub(super) first_sample: Option<Peak>,
}

struct Exit {
    at_ns: u64,
    status: libc::c_int,
    usage: libc::rusage,
}

/// Starts `spec` with standard input `/dev/null` and its output piped. With `sample_first`,
/// samples its memory back to back for its first milliseconds ([`memory::burst`]) before
/// anything else: a process that lives a millisecond may be gone by the time a sampler
/// thread wakes up. (Its output and end are then seen late, so runs that sample are not
/// timed.)
pub fn start(spec: &Spec, sample_first: bool) -> Result<Running, Error> {
    let stamp = launch_stamp();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Runs that sample memory are not timed: they go without the stamp, so that std starts
    // them with posix_spawn (a vfork), which returns sooner after the execve than a fork whose
    // copy of this process must be torn down first; the first sample then comes in time for
    // a process that lives half a millisecond. Their launch is the fork.
    if !sample_first {
        // SAFETY: the hook runs in the forked child just before execve and only calls
        // clock_gettime and stores to shared memory, both async-signal-safe. (Having a hook
        // also makes std fork instead of using posix_spawn; see the module's documentation.)
        unsafe {
            cmd.pre_exec(move || {
                stamp.store(mono_ns(), Ordering::SeqCst);
                Ok(())
            })
        };
    }
    let guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    stamp.store(0, Ordering::SeqCst);
    let fork_ns = mono_ns();
    // std returns from spawn once the child has called execve, so the stamp is written.
    let spawned = cmd.spawn();
    let launch_ns = match stamp.load(Ordering::SeqCst) {
        0 => fork_ns,
        t => t,
    };
    drop(guard);
    let mut child = spawned.map_err(|source| Error::Spawn {
        command: spec.command_line(),
        source,
    })?;
    let pid = child.id() as libc::pid_t;
    let first_sample = sample_first.then(|| memory::burst(pid, memory::BURST));
    // SAFETY: pidfd_open takes a PID and flags and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a new file descriptor that nothing else owns.
    let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    let (out, err) = (child.stdout.take(), child.stderr.take());
    // `child` is dropped without waiting: wait4 reaps the process, with its rusage.
    drop(child);
    Ok(Running {
        spec: spec.clone(),
        pid,
        fork_ns,
        launch_ns,
        out,
        err,
        pidfd,
        stdout: Vec::new(),
        stderr: Vec::new(),
        arrivals: Vec::new(),
        exit: None,
        timed_out: false,
        first_sample,
    })
}

impl Running {
    /// Its process ID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends it `sig`, unless it has been reaped.
    pub fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: kill(2) touches no memory. The PID is our child's and not yet reaped,
            // so the number cannot have been reused.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// Waits for it to end (or kills it at its limit) and collects its output.
    pub fn wait(self) -> Result<Run, Error> {
        let mut all = wait_all(vec![self])?;
        Ok(all.remove(0))
    }

    fn deadline_ns(&self) -> u64 {
        self.launch_ns.saturating_add(ns(self.spec.timeout))
    }

    fn pipes_open(&self) -> bool {
        self.out.is_some() || self.err.is_some()
    }

    /// Whether nothing more is to come at `now`: reaped, and its pipes closed or given up on.
    fn done(&self, now: u64) -> bool {
        self.exit
            .as_ref()
            .is_some_and(|e| !self.pipes_open() || now >= e.at_ns.saturating_add(ns(OUTPUT_GRACE)))
    }

    /// Kills it at its limit and runs its clean-up command.
    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.timed_out = true;
        self.spec.clean_up();
    }

    /// Reaps it; with `block` false, only if it has ended.
    fn reap(&mut self, block: bool) -> Result<(), Error> {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if block { 0 } else { libc::WNOHANG };
        loop {
            // SAFETY: `status` and `usage` are valid and writable for the call; `pid` is a
            // child of this process that nothing else waits for.
            let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut usage) };
            if r == self.pid {
                let at_ns = mono_ns();
                self.exit = Some(Exit {
                    at_ns,
                    status,
                    usage,
                });
                self.pidfd = None;
                return Ok(());
            }
            if r == 0 {
                return Ok(());
            }
            let source = std::io::Error::last_os_error();
            if source.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Wait {
                    command: self.spec.command_line(),
                    source,
                });
            }
        }
    }

    /// Stops waiting for it after waiting failed (the error says so).
    fn give_up(&mut self) {
        self.exit = Some(Exit {
            at_ns: mono_ns(),
            status: 0,
            // SAFETY: an all-zero rusage is a valid value of this plain C struct.
            usage: unsafe { std::mem::zeroed() },
        });
        self.pidfd = None;
    }

    /// Reads what one of its pipes has; `stream` 0 is standard output, 1 standard error.
    fn read(&mut self, stream: usize, buf: &mut [u8]) {
        let at = Duration::from_nanos(mono_ns().saturating_sub(self.launch_ns));
        let read = match stream {
            0 => self.out.as_mut().map(|p| p.read(buf)),
            _ => self.err.as_mut().map(|p| p.read(buf)),
        };
        match read {
            Some(Ok(len)) if len > 0 => {
                let sink = if stream == 0 {
                    &mut self.stdout
                } else {
                    &mut self.stderr
                };
                let room = KEEP.saturating_sub(sink.len());
                sink.extend_from_slice(&buf[..len.min(room)]);
                if stream == 0 {
                    self.arrivals.push((self.stdout.len(), at));
                }
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ if stream == 0 => self.out = None,
            _ => self.err = None,
        }
    }

    fn into_run(self) -> Run {
        let exit = self.exit.as_ref().expect("a finished process was reaped");
        let status = if self.timed_out {
            Status::TimedOut
        } else if libc::WIFEXITED(exit.status) {
            Status::Code(libc::WEXITSTATUS(exit.status))
        } else {
            Status::Signal(libc::WTERMSIG(exit.status))
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Run {
            fork_to_exec: Duration::from_nanos(self.launch_ns - self.fork_ns),
            exit: Duration::from_nanos(exit.at_ns.saturating_sub(self.launch_ns)),
            status,
            user: tv(exit.usage.ru_utime),
            sys: tv(exit.usage.ru_stime),
            maxrss_kib: exit.usage.ru_maxrss.max(0) as u64,
            stdout: self.stdout,
            stderr: self.stderr,
            arrivals: self.arrivals,
            memory: self.first_sample,
        }
    }
}

/// Which descriptor of which child a pollfd is.
#[derive(Clone, Copy)]
enum Watched {
    Pipe(usize, usize),
    End(usize),
}

/// Waits for every child in one `poll` loop: reads their output, reaps each as it ends and
/// kills each still running at its limit. The first error is returned after all are done.
pub fn wait_all(mut children: Vec<Running>) -> Result<Vec<Run>, Error> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut error = None;
    loop {
        let now = mono_ns();
        let mut fds = Vec::new();
        let mut watched = Vec::new();
        let mut wake = u64::MAX;
        for (i, c) in children.iter_mut().enumerate() {
            if c.done(now) {
                continue;
            }
            if let Some(e) = &c.exit {
                wake = wake.min(e.at_ns.saturating_add(ns(OUTPUT_GRACE)));
            } else {
                if now >= c.deadline_ns() && !c.timed_out {
                    c.kill();
                }
                if !c.timed_out {
                    wake = wake.min(c.deadline_ns());
                }
                match &c.pidfd {
                    Some(fd) => {
                        fds.push(pollfd(fd.as_raw_fd()));
                        watched.push(Watched::End(i));
                    }
                    // Without a pidfd: look again soon.
                    None => wake = wake.min(now + 1_000_000),
                }
            }
            let pipes = [
                c.out.as_ref().map(|p| p.as_raw_fd()),
                c.err.as_ref().map(|p| p.as_raw_fd()),
            ];
            for (stream, fd) in pipes.into_iter().enumerate() {
                if let Some(fd) = fd {
                    fds.push(pollfd(fd));
                    watched.push(Watched::Pipe(i, stream));
                }
            }
        }
        if children.iter().all(|c| c.done(now)) {
            break;
        }
        let wait_ms = match wake {
            u64::MAX => 100,
            t => (t.saturating_sub(now) / 1_000_000).clamp(1, 100) as libc::c_int,
        };
        // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // Cannot poll (too many descriptors?): look for the ends without pidfds.
                for c in children.iter_mut() {
                    c.pidfd = None;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        for (fd, w) in fds.iter().zip(&watched) {
            if fd.revents == 0 {
                continue;
            }
            match *w {
                Watched::Pipe(i, stream) => children[i].read(stream, &mut buf),
                Watched::End(i) => {
                    if let Err(e) = children[i].reap(true) {
                        error = error.or(Some(e));
                        children[i].give_up();
                    }
                }
            }
        }
        for c in children
            .iter_mut()
            .filter(|c| c.exit.is_none() && c.pidfd.is_none())
        {
            if let Err(e) = c.reap(false) {
                error = error.or(Some(e));
                c.give_up();
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(children.into_iter().map(Running::into_run).collect()),
    }
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
