//! Memory of everything a side started: the process tree under the process kvmini spawned,
//! sampled from `/proc` while it runs (`proc(5)`: `/proc/PID/task/TID/children`,
//! `/proc/PID/smaps_rollup`). Each sample sums RSS and PSS over the tree; the sampler keeps
//! the largest sums. PSS charges shared pages to each process in proportion, so the PSS of
//! several processes adds up to what they use together.

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

/// Pause between samples at first: short, to see a process that lives a few milliseconds. (A
/// sample itself takes from tens of microseconds to a few hundred for a large process:
/// reading `smaps_rollup` walks its page tables.)
pub const INTERVAL: Duration = Duration::from_micros(100);
/// The pause grows with the time sampled so far (1 % of it), up to this, so that sampling a
/// process that runs for seconds does not take a CPU away from it.
pub const MAX_INTERVAL: Duration = Duration::from_millis(10);

/// The pause before the next sample, `elapsed` after sampling started.
pub fn interval(elapsed: Duration) -> Duration {
    (elapsed / 100).clamp(INTERVAL, MAX_INTERVAL)
}

/// The peak a sampler saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Peak {
    /// Largest sum of RSS over the tree, KiB.
    pub rss_kib: u64,
    /// Largest sum of PSS over the tree, KiB.
    pub pss_kib: u64,
    /// Most processes seen in the tree at once.
    pub processes: usize,
    /// Samples taken.
    pub samples: usize,
}

/// RSS and PSS (KiB) from the text of a `smaps_rollup` file.
pub fn parse_rollup(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// Children of `pid` from `/proc/PID/task/*/children`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// `roots` and all their descendants that exist now.
pub fn tree(roots: &[i32]) -> Vec<i32> {
    let mut seen: HashSet<i32> = HashSet::new();
    let mut todo: Vec<i32> = roots.to_vec();
    let mut out = Vec::new();
    while let Some(pid) = todo.pop() {
        if seen.insert(pid) {
            out.push(pid);
            todo.extend(children(pid));
        }
    }
    out
}

/// One sample: (RSS KiB, PSS KiB, processes) summed over the trees under `roots`.
pub fn sample(roots: &[i32]) -> (u64, u64, usize) {
    let mut rss = 0;
    let mut pss = 0;
    let mut n = 0;
    for pid in tree(roots) {
        // A zombie or a process that just exited has no (or an empty) rollup.
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            let (r, p) = parse_rollup(&text);
            if r > 0 {
                rss += r;
                pss += p;
                n += 1;
            }
        }
    }
    (rss, pss, n)
}

/// How long [`burst`] samples.
pub const BURST: Duration = Duration::from_millis(2);

/// Samples process `pid` alone (not its children: the sampler thread sees those) back to
/// back for `length`, or until it has been seen and is gone: a process that lives less than a
/// millisecond is over before a sampler thread could wake up. The caller must not reap `pid`
/// meanwhile, so that the PID stays its.
pub fn burst(pid: i32, length: Duration) -> Peak {
    let start = std::time::Instant::now();
    let path = format!("/proc/{pid}/smaps_rollup");
    let mut peak = Peak::default();
    while start.elapsed() < length {
        let (rss, pss) = fs::read_to_string(&path)
            .map(|t| parse_rollup(&t))
            .unwrap_or((0, 0));
        peak.samples += 1;
        if rss == 0 {
            if peak.processes > 0 {
                break; // it has exited
            }
            continue;
        }
        peak.rss_kib = peak.rss_kib.max(rss);
        peak.pss_kib = peak.pss_kib.max(pss);
        peak.processes = 1;
    }
    peak
}

/// A thread sampling process trees until stopped. It is started before the processes it
/// watches, so that the first sample follows their launch without the delay of starting a
/// thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    roots: mpsc::Sender<Vec<i32>>,
    thread: JoinHandle<Peak>,
}

impl Sampler {
    /// Starts the thread; it waits for [`Sampler::watch`].
    pub fn start() -> std::io::Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (roots, rx) = mpsc::channel::<Vec<i32>>();
        let thread = std::thread::Builder::new()
            .name("kvmini-memory-sampler".into())
            .spawn(move || {
                let mut peak = Peak::default();
                let Ok(roots) = rx.recv() else {
                    return peak;
                };
                let start = std::time::Instant::now();
                loop {
                    // Read the flag first: one last sample after the processes ended is harmless.
                    let last = flag.load(Ordering::Acquire);
                    let (rss, pss, n) = sample(&roots);
                    peak.rss_kib = peak.rss_kib.max(rss);
                    peak.pss_kib = peak.pss_kib.max(pss);
                    peak.processes = peak.processes.max(n);
                    peak.samples += 1;
                    if last {
                        return peak;
                    }
                    std::thread::sleep(interval(start.elapsed()));
                }
            })?;
        Ok(Sampler {
            stop,
            roots,
            thread,
        })
    }

    /// Starts sampling the trees under `roots`.
    pub fn watch(&self, roots: Vec<i32>) {
        let _ = self.roots.send(roots);
    }

    /// Stops sampling; returns the peak.
    pub fn finish(self) -> Peak {
        self.stop.store(true, Ordering::Release);
        drop(self.roots);
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_fields_are_read_in_kib() {
        let text = "55d0c0a8e000-7ffd5b7e5000 ---p 00000000 00:00 0  [rollup]\n\
                    Rss:                2048 kB\nPss:                 1536 kB\n\
                    Pss_Anon:            512 kB\n";
        assert_eq!(parse_rollup(text), (2048, 1536));
        assert_eq!(parse_rollup(""), (0, 0));
    }

    #[test]
    fn a_burst_sees_a_short_process() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let peak = burst(child.id() as i32, Duration::from_millis(5));
        child.wait().unwrap();
        assert!(
            peak.samples > 1 && peak.rss_kib > 0 && peak.processes == 1,
            "{peak:?}"
        );
    }

    #[test]
    fn sampling_slows_down_for_long_runs() {
        assert_eq!(interval(Duration::ZERO), INTERVAL);
        assert_eq!(
            interval(Duration::from_millis(100)),
            Duration::from_millis(1)
        );
        assert_eq!(interval(Duration::from_secs(60)), MAX_INTERVAL);
    }

    #[test]
    fn this_process_is_in_its_own_tree_and_uses_memory() {
        let me = std::process::id() as i32;
        assert!(tree(&[me]).contains(&me));
        let (rss, pss, n) = sample(&[me]);
        assert!(rss > 0 && pss > 0 && pss <= rss, "rss {rss} pss {pss}");
        assert!(n >= 1);
        let sampler = Sampler::start().unwrap();
        sampler.watch(vec![me]);
        std::thread::sleep(Duration::from_millis(5));
        let peak = sampler.finish();
        assert!(peak.samples >= 2 && peak.rss_kib >= peak.pss_kib && peak.pss_kib > 0);
        assert!(peak.processes >= 1);
        // Stopped before it was given anything to watch: no samples.
        assert_eq!(Sampler::start().unwrap().finish(), Peak::default());
    }
}
