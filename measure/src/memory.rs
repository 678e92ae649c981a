//! Memory of processes, from `/proc` (`proc(5)`).
//!
//! - A process tree sampled while it runs (`/proc/PID/task/TID/children`,
//!   `/proc/PID/smaps_rollup`): each sample sums RSS and PSS over the tree; a [`Sampler`] keeps
//!   the largest sums. PSS charges shared pages to each process in proportion, so the PSS of
//!   several processes adds up to what they use together.
//! - One running VMM's resident memory, split at its guest-RAM mapping ([`resident`], from
//!   `/proc/PID/smaps`): what the VMM itself costs beyond the memory it gives the guest.

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

/// Resident memory of a running process, split at its guest-RAM mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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

/// Why a process's resident memory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResidentError {
    /// The smaps file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The process had exited: its smaps file was empty.
    #[error("{path} is empty: the process had already exited")]
    Exited {
        /// The file.
        path: String,
    },
    /// No mapping looks like the guest's RAM.
    #[error("no anonymous private mapping of {bytes} bytes (the guest RAM) in smaps")]
    NoGuestMapping {
        /// The size looked for.
        bytes: u64,
    },
}

/// Reads `/proc/PID/smaps` and finds the guest RAM: the anonymous, private mapping of exactly
/// `guest_bytes`.
pub fn resident(pid: i32, guest_bytes: u64) -> Result<Resident, ResidentError> {
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path).map_err(|source| ResidentError::Read {
        path: path.clone(),
        source,
    })?;
    let parsed = parse_smaps(&text, guest_bytes)?;
    if parsed.total_kib == 0 {
        return Err(ResidentError::Exited { path });
    }
    Ok(parsed)
}

/// Whether a smaps header line (`start-end perms offset dev inode [path]`) is the guest RAM:
/// an anonymous private mapping of `guest_bytes`.
fn is_guest_mapping(line: &str, guest_bytes: u64) -> Option<bool> {
    let mut words = line.split_whitespace();
    let (start, end) = words.next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let perms = words.next().unwrap_or("");
    let inode = words.nth(2).unwrap_or("");
    let path = words.next();
    Some(end - start == guest_bytes && perms.ends_with('p') && inode == "0" && path.is_none())
}

/// The parsing half of [`resident`].
pub fn parse_smaps(text: &str, guest_bytes: u64) -> Result<Resident, ResidentError> {
    let mut r = Resident::default();
    let mut is_guest = false;
    let mut found = false;
    for line in text.lines() {
        if let Some(guest) = is_guest_mapping(line, guest_bytes) {
            is_guest = !found && guest;
            found |= is_guest;
            continue;
        }
        let mut words = line.split_whitespace();
        let field = words.next().unwrap_or("");
        let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match field {
            "Rss:" => {
                r.total_kib += kib;
                if is_guest {
                    r.guest_kib += kib;
                }
            }
            "Anonymous:" if !is_guest => r.anon_kib += kib,
            "Pss:" if !is_guest => r.pss_kib += kib,
            _ => {}
        }
    }
    if !found {
        return Err(ResidentError::NoGuestMapping { bytes: guest_bytes });
    }
    Ok(r)
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

    #[test]
    fn smaps_split_at_the_guest_mapping() {
        let smaps = "\
5567eefa7000-5567eefd1000 r--p 00000000 fe:00 5316891    /usr/bin/x
Rss:                 164 kB
Pss:                  41 kB
Anonymous:             0 kB
7ff90b400000-7ff91b400000 rw-p 00000000 00:00 0 
Rss:                  32 kB
Pss:                  32 kB
Anonymous:            32 kB
7ff91b5f0000-7ff91b5f3000 rw-p 00000000 00:00 0 
Rss:                   8 kB
Pss:                   8 kB
Anonymous:             8 kB
";
        let r = parse_smaps(smaps, 256 << 20).expect("guest mapping found");
        assert_eq!(
            (r.total_kib, r.guest_kib, r.anon_kib, r.pss_kib),
            (204, 32, 8, 49)
        );
        assert!(parse_smaps(smaps, 16 << 20).is_err());
    }

    #[test]
    fn a_running_process_has_resident_memory_but_no_guest_ram() {
        let me = std::process::id() as i32;
        assert!(matches!(
            resident(me, 12_345 << 12),
            Err(ResidentError::NoGuestMapping { .. })
        ));
        assert!(matches!(
            resident(-1, 4096),
            Err(ResidentError::Read { .. })
        ));
    }
}
