//! One workload on every side: the probe, the warm-up, the timed runs, the memory runs and
//! the density batches, each interleaved container, vm, (for linux) vm from a snapshot,
//! baseline (for oci: container, kvmini oci); then the summaries. A run that fails is
//! followed by its clean-up command (`delete --force` of its container), so that a failed
//! comparison leaves no container behind.

use std::collections::BTreeSet;

use kvmini_measure::memory::Peak;
use kvmini_measure::runner::Spec;
use kvmini_measure::stats::Summary;

use super::progress::Progress;
use super::report::{Compute, Density, Isolation, SideReport, WorkloadReport};
use super::sample::{self, Sample};
use super::setup::{failed, Setup};
use super::workload::{self, Side, Workload};
use super::{Error, Options};

fn isolation_from_probe(w: Workload, side: Side, sample: &Sample, spec: &Spec) -> Isolation {
    let after = (side == Side::Vm).then_some(workload::USER_SPACE_UP);
    let mut iso = Isolation {
        probe_command: Some(spec.command_line()),
        probe_output: Some(sample.stdout.clone()),
        ..Isolation::default()
    };
    match workload::parse_probe(&sample.stdout, after) {
        Some((kernel, pid, cpus)) => {
            iso.kernel = Some(kernel);
            iso.pid = Some(pid);
            iso.cpus = Some(cpus);
        }
        None => {
            iso.note = Some(format!(
                "the {} probe's output was not understood",
                w.name()
            ))
        }
    }
    iso
}

/// Runs `w` on `side` once (a probe or a run); with `sample_memory`, samples its memory.
fn run_side(
    w: Workload,
    side: Side,
    setup: &Setup,
    probe: bool,
    sample_memory: bool,
) -> Result<(Sample, Spec), Error> {
    let spec = setup.spec(w, side, probe);
    let marker = setup.marker(w, side, probe);
    let s = sample::run_once(&spec, &marker, sample_memory).map_err(|e| {
        spec.clean_up();
        failed(w, side, setup, e)
    })?;
    Ok((s, spec))
}

/// Notes on what this workload runs differently from what was asked.
fn notes(
    w: Workload,
    opts: &Options,
    levels: &[usize],
    parallel: &[usize],
    setup: &Setup,
) -> Vec<String> {
    let runs = w.runs(opts.runs);
    let mut notes = Vec::new();
    if let (true, Some(why)) = (w.sides().contains(&Side::Snapshot), &setup.snapshot_missing) {
        notes.push(why.clone());
    }
    if runs < opts.runs {
        notes.push(format!(
            "{runs} timed runs per side instead of {} ({})",
            opts.runs,
            w.why_fewer_runs()
        ));
    }
    let too_many: Vec<String> = parallel
        .iter()
        .filter(|p| !levels.contains(p))
        .map(|p| format!("P={p}"))
        .collect();
    if !too_many.is_empty() {
        notes.push(format!(
            "{} skipped: at most {} instances of this workload start at once",
            too_many.join(", "),
            w.max_parallel().unwrap_or(0)
        ));
    }
    notes
}

/// Isolation facts: one untimed probe per side; then one untimed warm-up run per side.
fn probe_and_warm_up(
    w: Workload,
    setup: &Setup,
    progress: &mut Progress,
) -> Result<Vec<Isolation>, Error> {
    let mut isolation = Vec::new();
    for side in setup.sides(w) {
        progress.show(&format!("{}: {} probe", w.name(), side.name()));
        let iso = if side == Side::Vm && w != Workload::Linux {
            Isolation {
                kernel: None,
                pid: None,
                cpus: Some("1".into()),
                note: Some("the guest is its own kernel: no kernel under it and no process ID; CPUs from the VM config (kvmini run's default, 1 vCPU)".into()),
                ..Isolation::default()
            }
        } else {
            match run_side(w, side, setup, true, false) {
                Ok((sample, spec)) => isolation_from_probe(w, side, &sample, &spec),
                // A bundle of the user's own need not have a shell: no facts, and why.
                Err(e) if w == Workload::Oci && setup.own_bundle.is_some() => Isolation {
                    note: Some(format!("the probe could not run in this bundle: {e}")),
                    ..Isolation::default()
                },
                Err(e) => return Err(e),
            }
        };
        isolation.push(iso);
        progress.step(1);
    }
    if w.warm_up() {
        for side in setup.sides(w) {
            progress.show(&format!("{}: {} warm-up", w.name(), side.name()));
            run_side(w, side, setup, false, false)?;
            progress.step(1);
        }
    }
    Ok(isolation)
}

/// `runs[k]` runs of each side `k` of `w`, interleaved; `what` names them in the progress
/// line.
fn interleaved(
    w: Workload,
    setup: &Setup,
    progress: &mut Progress,
    runs: &[usize],
    what: &str,
    sample_memory: bool,
) -> Result<Vec<Vec<Sample>>, Error> {
    let sides = setup.sides(w);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); sides.len()];
    for i in 0..runs.iter().copied().max().unwrap_or(0) {
        for (k, side) in sides.iter().copied().enumerate() {
            if i >= runs[k] {
                continue;
            }
            progress.show(&format!(
                "{}: {what} {}/{}, {}",
                w.name(),
                i + 1,
                runs[k],
                side.name()
            ));
            let (s, _) = run_side(w, side, setup, false, sample_memory)?;
            samples[k].push(s);
            progress.step(1);
        }
    }
    Ok(samples)
}

/// Extra memory runs for a side whose every run ended before the sampler saw it.
const MEMORY_RETRIES: usize = 20;

/// A process that lives half a millisecond can end before its first sample when the machine is
/// busy: while no memory run of `side` saw its process, run it again, up to
/// [`MEMORY_RETRIES`] times.
fn resample_unseen(
    w: Workload,
    side: Side,
    setup: &Setup,
    samples: &mut Vec<Sample>,
) -> Result<(), Error> {
    let seen = |s: &Sample| s.memory.as_ref().is_some_and(|m| m.rss_kib > 0);
    for _ in 0..MEMORY_RETRIES {
        if samples.is_empty() || samples.iter().any(seen) {
            break;
        }
        let (s, _) = run_side(w, side, setup, false, true)?;
        samples.push(s);
    }
    Ok(())
}

/// P instances at once, for each level P, per side.
fn density(
    w: Workload,
    levels: &[usize],
    setup: &Setup,
    progress: &mut Progress,
) -> Result<Vec<Vec<Density>>, Error> {
    let sides = setup.sides(w);
    let mut density: Vec<Vec<Density>> = vec![Vec::new(); sides.len()];
    for &p in levels {
        for (k, side) in sides.iter().copied().enumerate() {
            progress.show(&format!("{}: {p} at once, {}", w.name(), side.name()));
            let specs: Vec<Spec> = (0..p).map(|_| setup.spec(w, side, false)).collect();
            let marker = setup.marker(w, side, false);
            let b = sample::run_batch(&specs, &marker).map_err(|e| {
                specs.iter().for_each(Spec::clean_up);
                failed(w, side, setup, e)
            })?;
            let lat: Vec<f64> = b.instances.iter().map(|s| s.total_ms).collect();
            density[k].push(Density {
                parallel: p,
                wall_ms: b.wall_ms,
                latency_ms: Summary::of(&lat),
                instances: b.instances,
            });
            progress.step(1);
        }
    }
    Ok(density)
}

/// What the `compute` loop printed in `runs`.
fn compute(runs: &[Sample]) -> Compute {
    let parsed: Vec<(String, u64)> = runs
        .iter()
        .filter_map(|s| workload::parse_compute(&s.stdout))
        .collect();
    let mut seen: Vec<String> = parsed.iter().map(|(c, _)| c.clone()).collect();
    seen.dedup();
    seen.sort();
    seen.dedup();
    Compute {
        checksum: parsed.first().map(|(c, _)| c.clone()).unwrap_or_default(),
        checksums_seen: seen,
        cycles: Summary::of(&parsed.iter().map(|(_, c)| *c as f64).collect::<Vec<_>>()),
    }
}

/// What one side measured, summarized.
struct Measured {
    runs: Vec<Sample>,
    memory_runs: Vec<Sample>,
    isolation: Isolation,
    density: Vec<Density>,
}

fn side_report(w: Workload, side: Side, setup: &Setup, m: Measured) -> SideReport {
    let peak = |f: fn(&Peak) -> u64| {
        m.memory_runs
            .iter()
            .filter_map(|s| s.memory.as_ref().map(f))
            .max()
            .unwrap_or(0)
    };
    let col = |f: fn(&Sample) -> f64| Summary::of(&m.runs.iter().map(f).collect::<Vec<_>>());
    SideReport {
        side,
        label: setup.label(side),
        command: setup.spec(w, side, false).command_line(),
        container_args: matches!(side, Side::Container | Side::KvminiOci)
            .then(|| setup.container_args(w, false)),
        first_output_ms: col(|s| s.first_output_ms),
        total_ms: col(|s| s.total_ms),
        cpu_ms: col(|s| s.user_ms + s.sys_ms),
        peak_rss_kib: peak(|m| m.rss_kib),
        peak_pss_kib: peak(|m| m.pss_kib),
        maxrss_kib: m.runs.iter().map(|s| s.maxrss_kib).max().unwrap_or(0),
        isolation: m.isolation,
        compute: (w == Workload::Compute).then(|| compute(&m.runs)),
        density: m.density,
        runs: m.runs,
        memory_runs: m.memory_runs,
    }
}

/// For `compute`: whether every run on every side printed the one same checksum.
fn checksums_agree(sides: &[SideReport]) -> bool {
    let all: BTreeSet<&String> = sides
        .iter()
        .filter_map(|s| s.compute.as_ref())
        .flat_map(|c| c.checksums_seen.iter())
        .collect();
    all.len() == 1
        && sides.iter().all(|s| {
            s.compute
                .as_ref()
                .is_some_and(|c| c.checksums_seen.len() == 1)
        })
}

/// The first line of `text`, and a pointer to the rest when there is more.
fn first_line(text: &str) -> String {
    match text.split_once('\n') {
        Some((first, _)) => format!("{first} (the whole message is in the --json report)"),
        None => text.to_string(),
    }
}

/// Measures workload `w` on every side.
pub(crate) fn measure_workload(
    w: Workload,
    opts: &Options,
    levels: &[usize],
    parallel: &[usize],
    setup: &Setup,
    progress: &mut Progress,
) -> Result<WorkloadReport, Error> {
    let runs = w.runs(opts.runs);
    let isolation = probe_and_warm_up(w, setup, progress)?;
    let all = setup.sides(w);
    let timed = interleaved(w, setup, progress, &vec![runs; all.len()], "run", false)?;
    let memory_runs: Vec<usize> = all.iter().map(|s| w.memory_runs(*s, opts.runs)).collect();
    let mut sampled = interleaved(w, setup, progress, &memory_runs, "memory run", true)?;
    for (side, samples) in setup.sides(w).into_iter().zip(&mut sampled) {
        resample_unseen(w, side, setup, samples)?;
    }
    let density = density(w, levels, setup, progress)?;

    let sides: Vec<SideReport> = all
        .into_iter()
        .zip(timed)
        .zip(sampled)
        .zip(isolation)
        .zip(density)
        .map(|((((side, runs), memory_runs), isolation), density)| {
            let m = Measured {
                runs,
                memory_runs,
                isolation,
                density,
            };
            side_report(w, side, setup, m)
        })
        .collect();
    let mut notes = notes(w, opts, levels, parallel, setup);
    for s in sides.iter().filter(|s| s.isolation.kernel.is_none()) {
        if let Some(note) = s.isolation.note.as_ref().filter(|_| s.side != Side::Vm) {
            notes.push(format!("{}: {}", s.side.name(), first_line(note)));
        }
    }
    Ok(WorkloadReport {
        name: w.name(),
        description: w.description(),
        runs,
        skipped: None,
        notes,
        checksums_agree: (w == Workload::Compute).then(|| checksums_agree(&sides)),
        sides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(stdout: &str) -> Sample {
        Sample {
            first_output_ms: 1.0,
            total_ms: 2.0,
            user_ms: 0.0,
            sys_ms: 0.0,
            maxrss_kib: 0,
            memory: None,
            stdout: stdout.into(),
        }
    }

    #[test]
    fn long_notes_are_cut_to_their_first_line() {
        assert_eq!(first_line("one line"), "one line");
        assert_eq!(
            first_line("failed; its stderr:\nmore"),
            "failed; its stderr: (the whole message is in the --json report)"
        );
    }

    #[test]
    fn kvmini_oci_probes_are_the_process_output_alone() {
        // kvmini oci passes on the process's output only, with no boot log before it.
        let spec = Spec::new("kvmini-runtime", ["run"]);
        let iso = isolation_from_probe(
            Workload::Oci,
            Side::KvminiOci,
            &sample("kernel=6.1.172\npid=2\ncpus=1\n"),
            &spec,
        );
        assert_eq!(iso.kernel.as_deref(), Some("6.1.172"));
        assert_eq!(iso.pid.as_deref(), Some("2"));
        assert_eq!(iso.cpus.as_deref(), Some("1"));
        assert_eq!(iso.probe_command.as_deref(), Some("kvmini-runtime run"));
        let iso = isolation_from_probe(Workload::Oci, Side::KvminiOci, &sample("hm\n"), &spec);
        assert!(iso.kernel.is_none());
        assert!(iso.note.unwrap().contains("oci probe"));
    }
}
