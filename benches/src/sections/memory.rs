//! Memory: what a running kvmini keeps resident beyond its guest's RAM, for several guest
//! sizes. `spin.bin` loops forever; after `--settle-ms` its VMM's `/proc/PID/smaps` is read
//! and split at the guest-RAM mapping, then it is stopped with SIGTERM.

use std::time::Duration;

use kvmini_measure::memory;
use kvmini_measure::runner::{self, Spec, Status};

use super::{Context, Section, GUESTS, RUN_LIMIT};
use crate::host::shown;
use crate::report::{Outcome, Row};

/// A guest size: as given (`16M`) and in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemSize {
    /// As given, for kvmini's `--mem`.
    pub text: String,
    /// In bytes.
    pub bytes: u64,
}

/// Parses a size with kvmini's own grammar (`kvmini::config::parse_size`: a number with an
/// optional K/M/G/T suffix, a plain number is MiB); zero is refused.
pub fn parse_mem_size(s: &str) -> Result<MemSize, String> {
    match kvmini::config::parse_size(s) {
        Ok(0) => Err(format!("'{s}' is not a guest size: it is zero")),
        Ok(bytes) => Ok(MemSize {
            text: s.trim().to_string(),
            bytes,
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// The memory test for one guest size.
struct Probe {
    size: MemSize,
    args: Vec<String>,
    overhead_mib: Vec<f64>,
    anon_mib: Vec<f64>,
    pss_mib: Vec<f64>,
    guest_mib: Vec<f64>,
    failure: Option<String>,
}

/// The memory section.
pub struct Memory {
    kvmini: String,
    settle: Duration,
    probes: Vec<Probe>,
}

impl Memory {
    /// One probe per size; each VM runs `settle` before its memory is read.
    pub fn new(cx: &Context, sizes: &[MemSize], settle: Duration) -> Memory {
        let spin = format!("{GUESTS}/spin.bin");
        let probes = sizes
            .iter()
            .map(|size| Probe {
                size: size.clone(),
                args: [
                    "run",
                    &spin,
                    "--mode",
                    "long",
                    "--mem",
                    &size.text,
                    "--timeout",
                    "2",
                    "--serial",
                    "none",
                ]
                .map(String::from)
                .to_vec(),
                overhead_mib: Vec::new(),
                anon_mib: Vec::new(),
                pss_mib: Vec::new(),
                guest_mib: Vec::new(),
                failure: None,
            })
            .collect();
        Memory {
            kvmini: cx.kvmini(),
            settle,
            probes,
        }
    }

    /// The median VMM memory (RSS minus guest RAM) of each size measured, MiB.
    pub fn overheads(&self) -> Vec<(String, f64)> {
        self.probes
            .iter()
            .filter(|p| p.failure.is_none())
            .filter_map(|p| {
                kvmini_measure::stats::median(&p.overhead_mib).map(|v| (p.size.text.clone(), v))
            })
            .collect()
    }

    /// Runs the VM of `p`, reads its memory after the settle time and stops it.
    fn measure_one(kvmini: &str, settle: Duration, p: &mut Probe, keep: bool) {
        let mut spec = Spec::new(kvmini, &p.args);
        spec.timeout = RUN_LIMIT;
        let running = match runner::start(&spec, false) {
            Ok(r) => r,
            Err(e) => {
                p.failure = Some(e.to_string());
                return;
            }
        };
        std::thread::sleep(settle);
        let sample = memory::resident(running.pid(), p.size.bytes);
        running.signal(libc::SIGTERM);
        let run = match running.wait() {
            Ok(run) => run,
            Err(e) => {
                p.failure = Some(e.to_string());
                return;
            }
        };
        let r = match sample {
            Err(e) => {
                let stderr = run.stderr_text();
                p.failure = Some(format!("{e} ({}; stderr: {})", run.status, stderr.trim()));
                return;
            }
            Ok(r) => r,
        };
        if !matches!(
            run.status,
            Status::Signal(libc::SIGTERM) | Status::Code(124)
        ) {
            p.failure = Some(format!(
                "{} (expected to be stopped by SIGTERM, or by --timeout: 124)",
                run.status
            ));
        } else if keep {
            let mib = |kib: u64| kib as f64 / 1024.0;
            p.overhead_mib.push(mib(r.total_kib - r.guest_kib));
            p.anon_mib.push(mib(r.anon_kib));
            p.pss_mib.push(mib(r.pss_kib));
            p.guest_mib.push(mib(r.guest_kib));
        }
    }
}

impl Section for Memory {
    fn commands(&self) -> Vec<(String, String)> {
        self.probes
            .iter()
            .map(|p| {
                (
                    format!("memory --mem {}", p.size.text),
                    format!(
                        "{}   (smaps after {} ms)",
                        shown(&self.kvmini, &p.args),
                        self.settle.as_millis()
                    ),
                )
            })
            .collect()
    }

    fn measure(&mut self, keep: bool) {
        for p in self.probes.iter_mut().filter(|p| p.failure.is_none()) {
            Memory::measure_one(&self.kvmini, self.settle, p, keep);
        }
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for p in &self.probes {
            let subject = format!("kvmini spin.bin --mem {}", p.size.text);
            let command = shown(&self.kvmini, &p.args);
            let row = |measurement: &str, samples: &[f64]| {
                Row::new(&subject, measurement, "MiB", &command)
                    .with(Outcome::unless_failed(&p.failure, samples))
            };
            rows.extend([
                row("RSS minus guest RAM", &p.overhead_mib),
                row("  of it anonymous", &p.anon_mib),
                row("PSS minus guest RAM", &p.pss_mib),
                row("guest RAM resident", &p.guest_mib),
            ]);
        }
        rows
    }

    fn failures(&self) -> Vec<String> {
        Vec::new()
    }

    fn fatal(&self) -> bool {
        self.probes.iter().any(|p| p.failure.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_kvmini_s_grammar() {
        assert_eq!(parse_mem_size("2G").map(|s| s.bytes), Ok(2 << 30));
        assert_eq!(parse_mem_size("256").map(|s| s.bytes), Ok(256 << 20));
        assert_eq!(parse_mem_size("512KiB").map(|s| s.bytes), Ok(512 << 10));
        assert!(parse_mem_size("x").is_err());
        assert!(parse_mem_size("0").is_err());
    }
}
