//! What a comparison found: plain data that serializes to the `--json` report (everything,
//! raw samples included) and renders as the terminal tables.

use std::fmt;

use serde::Serialize;

use kvmini::check;
use kvmini_measure::stats::Summary;
use kvmini_measure::table::{table, table_mixed};

use super::sample::Sample;
use super::workload::Side;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// kvmini's version.
    pub kvmini_version: &'static str,
    /// When the comparison started, UTC (ISO 8601).
    pub date_utc: String,
    /// The same, seconds since the Unix epoch.
    pub unix_time: u64,
    /// The machine.
    pub host: Host,
    /// The OCI runtime of the container side.
    pub runtime: Runtime,
    /// The kvmini binary of the VM side.
    pub vmm: String,
    /// kvmini oci's runtime (`kvmini-runtime`), when the `oci` workload ran.
    pub oci_runtime: Option<Runtime>,
    /// Where the bundles are.
    pub work_dir: String,
    /// Timed runs per side asked for (some workloads use fewer, see each).
    pub runs: usize,
    /// Instances started at once for the density figures.
    pub parallel: Vec<usize>,
    /// How everything was measured, in words.
    pub method: Vec<&'static str>,
    /// One entry per workload.
    pub workloads: Vec<WorkloadReport>,
}

/// The machine the comparison ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    /// KVM host kind, in words (`kvmini check`).
    pub kind: String,
    /// `pvm`, `hardware`, `nested` or `unknown`.
    pub kind_short: &'static str,
    /// The host kernel's release.
    pub kernel: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Everything `kvmini check` found.
    pub check: check::Report,
}

/// The container runtime.
#[derive(Clone, Debug, Serialize)]
pub struct Runtime {
    /// Its path.
    pub path: String,
    /// First line of `RUNTIME --version`.
    pub version: String,
}

/// One workload on every side.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    /// Its name.
    pub name: &'static str,
    /// What each side runs.
    pub description: &'static str,
    /// Timed runs per side.
    pub runs: usize,
    /// Why it was not run, if it was not.
    pub skipped: Option<String>,
    /// Anything else worth knowing (fewer runs, skipped parallel levels).
    pub notes: Vec<String>,
    /// For `compute`: whether every run on every side printed the same checksum.
    pub checksums_agree: Option<bool>,
    /// Container, VM, baseline.
    pub sides: Vec<SideReport>,
}

/// One side of one workload.
#[derive(Clone, Debug, Serialize)]
pub struct SideReport {
    /// Which side.
    pub side: Side,
    /// Its name in the tables, e.g. `container (runc)`.
    pub label: String,
    /// The command line of a timed run.
    pub command: String,
    /// For the container and kvmini oci: what it runs inside (`process.args` of its
    /// `config.json`).
    pub container_args: Option<Vec<String>>,
    /// Launch to the workload's first line of output, ms.
    pub first_output_ms: Summary,
    /// Launch to the end of the process, ms.
    pub total_ms: Summary,
    /// CPU time, user plus system, of the process and what it waited for, ms.
    pub cpu_ms: Summary,
    /// The largest sum of RSS over the process tree seen in any sample of any memory run, KiB.
    pub peak_rss_kib: u64,
    /// The same for PSS, KiB.
    pub peak_pss_kib: u64,
    /// The largest `ru_maxrss` of any timed run, KiB: one process's peak RSS, which on Linux
    /// includes the launcher's own image between `fork` and `exec`.
    pub maxrss_kib: u64,
    /// What the workload sees from inside.
    pub isolation: Isolation,
    /// For `compute`: the checksum and the cycles the loop took.
    pub compute: Option<Compute>,
    /// Instances started at once.
    pub density: Vec<Density>,
    /// Every timed run.
    pub runs: Vec<Sample>,
    /// Every run whose memory was sampled (not timed: the sampler takes CPU time).
    pub memory_runs: Vec<Sample>,
}

/// Facts read from inside the workload by one extra, untimed run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Isolation {
    /// Kernel release it sees; `None` when it is its own kernel.
    pub kernel: Option<String>,
    /// Its process ID; `None` when it is not a process.
    pub pid: Option<String>,
    /// CPUs it sees.
    pub cpus: Option<String>,
    /// Where the facts come from when not from a probe.
    pub note: Option<String>,
    /// The probe's command line.
    pub probe_command: Option<String>,
    /// The probe's output.
    pub probe_output: Option<String>,
}

/// What the `compute` loop printed.
#[derive(Clone, Debug, Serialize)]
pub struct Compute {
    /// The checksum of the first run.
    pub checksum: String,
    /// Every distinct checksum seen (one, when all runs agree).
    pub checksums_seen: Vec<String>,
    /// TSC cycles the loop took (as the side's own RDTSC counts them).
    pub cycles: Summary,
}

/// P instances started at once.
#[derive(Clone, Debug, Serialize)]
pub struct Density {
    /// How many.
    pub parallel: usize,
    /// First launch to the end of the last instance, ms.
    pub wall_ms: f64,
    /// Each instance, launch to end, ms.
    pub latency_ms: Summary,
    /// Every instance.
    pub instances: Vec<Sample>,
}

/// Milliseconds with precision that suits the size.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// KiB as MiB.
pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A sampled peak: MiB, or "not seen" when no sample caught the process alive.
pub fn fmt_peak(kib: u64) -> String {
    if kib == 0 {
        "not seen".into()
    } else {
        fmt_mib(kib)
    }
}

fn isolation_cells(i: &Isolation) -> [String; 3] {
    if i.kernel.is_none() && i.pid.is_none() && i.cpus.is_none() {
        // The probe did not run or was not understood (the report's note says which).
        return ["?", "?", "?"].map(String::from);
    }
    [
        i.kernel
            .clone()
            .unwrap_or_else(|| "none (the guest is the kernel)".into()),
        i.pid.clone().unwrap_or_else(|| "none".into()),
        i.cpus.clone().unwrap_or_else(|| "?".into()),
    ]
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kvmini compare, {}", self.date_utc)?;
        writeln!(f, "host:      {}", self.host.kind)?;
        writeln!(
            f,
            "           Linux {}, {} CPUs",
            self.host.kernel, self.host.cpus
        )?;
        writeln!(
            f,
            "container: {} ({})",
            self.runtime.path, self.runtime.version
        )?;
        let vm_ran = self.workloads.iter().any(|w| {
            w.sides
                .iter()
                .any(|s| matches!(s.side, Side::Vm | Side::Snapshot))
        });
        if vm_ran {
            writeln!(
                f,
                "vm:        {} run ... (from snapshot: {} restore ...)",
                self.vmm, self.vmm
            )?;
        }
        if let Some(oci) = &self.oci_runtime {
            writeln!(f, "oci:       {} ({})", oci.path, oci.version)?;
        }
        writeln!(
            f,
            "runs:      {} per side, interleaved container, vm, (linux) vm from snapshot, baseline; \
             (oci) container, kvmini oci",
            self.runs
        )?;
        let done: Vec<&WorkloadReport> = self
            .workloads
            .iter()
            .filter(|w| w.skipped.is_none())
            .collect();
        for w in self.workloads.iter().filter(|w| w.skipped.is_some()) {
            writeln!(
                f,
                "skipped:   {}: {}",
                w.name,
                w.skipped.as_deref().unwrap_or("")
            )?;
        }
        if done.is_empty() {
            return Ok(());
        }

        latency(f, &done)?;
        memory(f, &done)?;
        checksums(f, &done)?;
        if self.parallel.is_empty() {
            return Ok(());
        }
        density(f, &self.parallel, &done)?;
        for w in &done {
            for note in &w.notes {
                writeln!(f, "note: {}: {note}", w.name)?;
            }
        }
        Ok(())
    }
}

/// The latency table.
fn latency(f: &mut fmt::Formatter<'_>, done: &[&WorkloadReport]) -> fmt::Result {
    writeln!(
        f,
        "\nLatency, ms: launch to the workload's first line / to the end of the process"
    )?;
    let mut rows = Vec::new();
    for w in done {
        for (i, s) in w.sides.iter().enumerate() {
            rows.push(vec![
                if i == 0 {
                    format!("{} ({}x)", w.name, w.runs)
                } else {
                    String::new()
                },
                s.label.clone(),
                fmt_ms(s.first_output_ms.p50),
                fmt_ms(s.first_output_ms.p90),
                fmt_ms(s.first_output_ms.p99),
                fmt_ms(s.total_ms.p50),
                fmt_ms(s.total_ms.p90),
                fmt_ms(s.total_ms.p99),
                fmt_ms(s.cpu_ms.p50),
            ]);
        }
    }
    f.write_str(&table(
        &[
            "workload",
            "side",
            "first p50",
            "p90",
            "p99",
            "end p50",
            "p90",
            "p99",
            "CPU p50",
        ],
        &rows,
        2,
    ))?;

    Ok(())
}

/// The memory table, with what each side sees from inside.
fn memory(f: &mut fmt::Formatter<'_>, done: &[&WorkloadReport]) -> fmt::Result {
    writeln!(
        f,
        "\nMemory (peak sum over the whole process tree, sampled) and what the workload sees"
    )?;
    let mut rows = Vec::new();
    for w in done {
        for (i, s) in w.sides.iter().enumerate() {
            let [kernel, pid, cpus] = isolation_cells(&s.isolation);
            rows.push(vec![
                if i == 0 {
                    w.name.to_string()
                } else {
                    String::new()
                },
                s.label.clone(),
                fmt_peak(s.peak_rss_kib),
                fmt_peak(s.peak_pss_kib),
                kernel,
                pid,
                cpus,
            ]);
        }
    }
    f.write_str(&table_mixed(
        &[
            "workload",
            "side",
            "RSS",
            "PSS",
            "kernel it sees",
            "PID",
            "CPUs",
        ],
        &rows,
        &[false, false, true, true, false, true, true],
    ))?;

    Ok(())
}

/// For `compute`: whether the checksums agree.
fn checksums(f: &mut fmt::Formatter<'_>, done: &[&WorkloadReport]) -> fmt::Result {
    for w in done.iter().filter(|w| w.checksums_agree.is_some()) {
        let sums: Vec<String> = w
            .sides
            .iter()
            .filter_map(|s| {
                s.compute.as_ref().map(|c| {
                    format!(
                        "{} {} ({:.0} M cycles)",
                        s.side.name(),
                        c.checksums_seen.join("/"),
                        c.cycles.p50 / 1e6
                    )
                })
            })
            .collect();
        writeln!(
            f,
            "\n{}: checksums {}: {}",
            w.name,
            if w.checksums_agree == Some(true) {
                "agree"
            } else {
                "DIFFER"
            },
            sums.join(", ")
        )?;
    }

    Ok(())
}

/// The density table: one column per parallel level.
fn density(
    f: &mut fmt::Formatter<'_>,
    parallel: &[usize],
    done: &[&WorkloadReport],
) -> fmt::Result {
    writeln!(
        f,
        "\nDensity: P instances started at once; ms until all ended / per-instance p50 / p90"
    )?;
    let mut header = vec!["workload".to_string(), "side".to_string()];
    header.extend(parallel.iter().map(|p| format!("P={p}")));
    let mut rows = Vec::new();
    for w in done {
        for (i, s) in w.sides.iter().enumerate() {
            let mut row = vec![
                if i == 0 {
                    w.name.to_string()
                } else {
                    String::new()
                },
                s.label.clone(),
            ];
            for p in parallel {
                row.push(match s.density.iter().find(|d| d.parallel == *p) {
                    Some(d) => format!(
                        "{} / {} / {}",
                        fmt_ms(d.wall_ms),
                        fmt_ms(d.latency_ms.p50),
                        fmt_ms(d.latency_ms.p90)
                    ),
                    None => "-".into(),
                });
            }
            rows.push(row);
        }
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    f.write_str(&table(&header, &rows, 2))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(side: Side, label: &str, kernel: &str, pid: &str, ms: &[f64]) -> SideReport {
        SideReport {
            side,
            label: label.into(),
            command: String::new(),
            container_args: Some(vec!["/bin/busybox".into(), "echo".into(), "hello".into()]),
            first_output_ms: Summary::of(ms),
            total_ms: Summary::of(ms),
            cpu_ms: Summary::of(ms),
            peak_rss_kib: 12 << 10,
            peak_pss_kib: 11 << 10,
            maxrss_kib: 0,
            isolation: Isolation {
                kernel: Some(kernel.into()),
                pid: Some(pid.into()),
                cpus: Some("1".into()),
                ..Isolation::default()
            },
            compute: None,
            density: vec![Density {
                parallel: 1,
                wall_ms: ms[0],
                latency_ms: Summary::of(&ms[..1]),
                instances: Vec::new(),
            }],
            runs: Vec::new(),
            memory_runs: Vec::new(),
        }
    }

    #[test]
    fn a_probe_that_told_nothing_is_not_taken_for_a_guest_that_is_its_own_kernel() {
        assert_eq!(isolation_cells(&Isolation::default()), ["?", "?", "?"]);
        let tiny = Isolation {
            cpus: Some("1".into()),
            ..Isolation::default()
        };
        assert_eq!(
            isolation_cells(&tiny),
            ["none (the guest is the kernel)", "none", "1"]
        );
    }

    /// The tables of `done`, as the report prints them after its header.
    struct Tables<'a>(&'a [&'a WorkloadReport]);

    impl fmt::Display for Tables<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            latency(f, self.0)?;
            memory(f, self.0)?;
            density(f, &[1, 2], self.0)
        }
    }

    #[test]
    fn the_oci_workload_has_a_row_per_runtime_in_every_table() {
        let w = WorkloadReport {
            name: "oci",
            description: "",
            runs: 3,
            skipped: None,
            notes: Vec::new(),
            checksums_agree: None,
            sides: vec![
                side(
                    Side::Container,
                    "container (runc)",
                    "6.18.44",
                    "1",
                    &[20.0, 22.0, 24.0],
                ),
                side(
                    Side::KvminiOci,
                    "vm (kvmini oci)",
                    "6.1.172",
                    "2",
                    &[5000.0, 5100.0, 5200.0],
                ),
            ],
        };
        let text = Tables(&[&w]).to_string();
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("(kvmini oci)"))
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        // Latency: the median of each side; memory: the guest's kernel, its PID and CPUs;
        // density: P=2 was not run.
        assert!(rows[0].contains("5100"), "{}", rows[0]);
        assert!(
            rows[1].contains("12.0 MiB")
                && rows[1].contains("6.1.172")
                && rows[1].ends_with(" 2     1"),
            "{}",
            rows[1]
        );
        assert!(rows[2].trim_end().ends_with('-'), "{}", rows[2]);
        assert!(text.contains("oci (3x)  container (runc)"), "{text}");
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["sides"][1]["side"], "kvmini-oci");
        assert_eq!(json["sides"][1]["isolation"]["kernel"], "6.1.172");
    }

    #[test]
    fn numbers_are_shown_with_sensible_precision() {
        assert_eq!(fmt_ms(1.234), "1.23");
        assert_eq!(fmt_ms(12.34), "12.3");
        assert_eq!(fmt_ms(123.4), "123");
        assert_eq!(fmt_mib(2048), "2.0 MiB");
        assert_eq!(fmt_peak(0), "not seen");
    }
}
