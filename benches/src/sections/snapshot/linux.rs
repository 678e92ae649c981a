//! The Linux snapshot (`make snapshot` saves it into guest/build/linux-snapshot): restores
//! running `uname -r` against `runc` running busybox `uname -r` on the same initramfs, and N
//! restores alive at once, whose memory the kit samples over their process trees.

use std::path::{Path, PathBuf};

use kvmini_compare::bundle::{default_work_dir, WorkDir};
use kvmini_measure::memory::{Peak, Sampler};
use kvmini_measure::runner::{self, Running, Spec, Status};

use super::{single, Counts};
use crate::host::shown;
use crate::report::{Outcome, Row};
use crate::sections::{
    failure_lines, header_lines, measure_all, timing_rows, Context, Section, Subject, GUESTS,
    RUN_LIMIT,
};

/// The Linux snapshot, relative to the checkout.
pub const LINUX_SNAPSHOT: &str = "guest/build/linux-snapshot";
/// How long each density VM stays alive: long enough for all of them to be up at once.
const DENSITY_SLEEP: &str = "5";

/// The Linux restores, their container peer and the density test.
pub struct LinuxRestores {
    /// kvmini restore linux, runc busybox.
    pub subjects: Vec<Subject>,
    /// Why there is no Linux snapshot, if there is none.
    missing: Option<String>,
    runs: usize,
    done: usize,
    density: Density,
}

/// N restores alive at once, against one alone.
struct Density {
    count: usize,
    spec: Spec,
    one: Option<Result<Peak, String>>,
    all: Option<Result<Peak, String>>,
}

impl LinuxRestores {
    /// `counts.linux` restores and container runs; `counts.density` restores at once.
    pub fn new(cx: &Context, counts: Counts) -> LinuxRestores {
        let dir = Path::new(LINUX_SNAPSHOT);
        let missing = (!dir.join("memory").is_file())
            .then(|| format!("{LINUX_SNAPSHOT} missing: make snapshot saves it"));
        let kvmini = cx.kvmini();
        let mut restore = Subject::new(
            "kvmini restore linux",
            &kvmini,
            &["restore", LINUX_SNAPSHOT, "--", "uname", "-r"],
            Some(0),
        );
        restore.absent = missing.clone();
        let density_args: Vec<String> = [
            "restore",
            LINUX_SNAPSHOT,
            "--serial",
            "none",
            "--",
            "sleep",
            DENSITY_SLEEP,
        ]
        .map(String::from)
        .to_vec();
        let mut spec = Spec::new(&kvmini, &density_args);
        spec.timeout = RUN_LIMIT;
        LinuxRestores {
            subjects: vec![restore, runc()],
            missing,
            runs: counts.linux,
            done: 0,
            density: Density {
                count: counts.density,
                spec,
                one: None,
                all: None,
            },
        }
    }

    /// The Linux snapshot's directory, when it exists.
    pub fn snapshot_dir(&self) -> Option<PathBuf> {
        self.missing
            .is_none()
            .then(|| PathBuf::from(LINUX_SNAPSHOT))
    }
}

impl Section for LinuxRestores {
    /// Its lines in the header.
    fn commands(&self) -> Vec<(String, String)> {
        let mut c = header_lines(&self.subjects);
        if self.density.count > 0 {
            c.push((
                "restore density".into(),
                format!(
                    "1 alone, then {} at once: {}",
                    self.density.count,
                    self.density.spec.command_line()
                ),
            ));
        }
        c
    }

    /// Restores in the first `runs` kept rounds, and the density test in the first.
    fn measure(&mut self, keep: bool) {
        if !keep || self.done >= self.runs {
            return;
        }
        measure_all(&mut self.subjects, true);
        if self.done == 0 && self.density.count > 0 && self.missing.is_none() {
            self.density.measure();
        }
        self.done += 1;
    }

    /// Its rows.
    fn rows(&self) -> Vec<Row> {
        let mut rows = timing_rows(&self.subjects, false);
        rows.extend(self.density.rows(self.missing.as_deref()));
        rows
    }

    /// Lines for standard error about what failed.
    fn failures(&self) -> Vec<String> {
        let mut f = failure_lines(&self.subjects);
        for r in [&self.density.one, &self.density.all].into_iter().flatten() {
            if let Err(why) = r {
                f.push(format!("error: restore density failed: {why}"));
            }
        }
        f
    }

    /// Whether kvmini failed here.
    fn fatal(&self) -> bool {
        let density = [&self.density.one, &self.density.all]
            .into_iter()
            .any(|r| matches!(r, Some(Err(_))));
        density || self.subjects.iter().any(|s| !s.peer && s.failure.is_some())
    }
}

/// runc running busybox `uname -r` in the initramfs unpacked (the bundle code of kvmini
/// compare), when runc is installed and this is root.
fn runc() -> Subject {
    let id = format!("kvmini-bench-{}", std::process::id());
    let (program, bundle, absent) = match runc_bundle() {
        Ok((runc, bundle)) => (runc, bundle, None),
        Err(why) => ("runc".into(), "BUNDLE".into(), Some(why)),
    };
    Subject::new(
        "runc busybox uname -r",
        &program,
        &["run", "--bundle", &bundle, &id],
        Some(0),
    )
    .peer(absent)
}

/// The runtime and the bundle; why not, if they cannot be had.
fn runc_bundle() -> Result<(String, String), String> {
    let runtime = kvmini_compare::find_runtime(None).map_err(|e| e.to_string())?;
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err("runc needs root".into());
    }
    let work = WorkDir::open(&default_work_dir(None)).map_err(|e| e.to_string())?;
    let rootfs = work
        .initramfs_rootfs(&Path::new(GUESTS).join("initramfs.cpio"))
        .map_err(|e| e.to_string())?;
    let args = ["busybox", "uname", "-r"].map(String::from);
    let bundle = work
        .bundle("bench-uname", &rootfs, &args)
        .map_err(|e| e.to_string())?;
    Ok((runtime.display().to_string(), bundle.display().to_string()))
}

/// Runs `n` of `spec` at once, sampling the memory of all their process trees together;
/// the peak, or why they failed.
fn batch_peak(spec: &Spec, n: usize) -> Result<Peak, String> {
    let sampler = Sampler::start().map_err(|e| format!("cannot start the sampler: {e}"))?;
    let mut children: Vec<Running> = Vec::with_capacity(n);
    let mut error = None;
    for _ in 0..n {
        match runner::start(spec, false) {
            Ok(c) => children.push(c),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    sampler.watch(children.iter().map(Running::pid).collect());
    let runs = runner::wait_all(children);
    let peak = sampler.finish();
    if let Some(why) = error {
        return Err(why);
    }
    let runs = runs.map_err(|e| e.to_string())?;
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| r.status != Status::Code(0))
        .map(|r| format!("{}: {}", r.status, r.stderr_text().trim()))
        .collect();
    match bad.first() {
        Some(first) => Err(format!(
            "{} of {n} restores failed; first: {first}",
            bad.len()
        )),
        None => Ok(peak),
    }
}

impl Density {
    fn measure(&mut self) {
        let one = batch_peak(&self.spec, 1);
        let ok = one.is_ok();
        self.one = Some(one);
        if ok {
            self.all = Some(batch_peak(&self.spec, self.count));
        }
    }

    fn rows(&self, missing: Option<&str>) -> Vec<Row> {
        if self.count == 0 {
            return Vec::new();
        }
        let state = |r: &Option<Result<Peak, String>>| match (missing, r) {
            (Some(m), _) => Err(Outcome::NotInstalled { reason: m.into() }),
            (None, Some(Ok(peak))) => Ok(*peak),
            (None, Some(Err(why))) => Err(Outcome::Failed {
                reason: why.clone(),
            }),
            (None, None) => Err(Outcome::Failed {
                reason: "not measured: the restore alone failed".into(),
            }),
        };
        let (one, all) = (state(&self.one), state(&self.all));
        let mib = |kib: u64| kib as f64 / 1024.0;
        let n = self.count;
        let cmd = shown(&self.spec.program.display().to_string(), &self.spec.args);
        let one_name = "kvmini restore linux, one alone".to_string();
        let all_name = format!("kvmini restore linux x{n} at once");
        type Figure = fn(&Peak) -> u64;
        let (rss, pss): (Figure, Figure) = (|p| p.rss_kib, |p| p.pss_kib);
        let figures = [
            (&one_name, "peak RSS (process tree)", &one, rss),
            (&one_name, "peak PSS (process tree)", &one, pss),
            (&all_name, "peak PSS, all together", &all, pss),
            (&all_name, "peak RSS, all together", &all, rss),
        ];
        let mut rows: Vec<Row> = figures
            .into_iter()
            .map(|(name, what, peak, figure)| {
                let v = peak.as_ref().map(|p| mib(figure(p))).map_err(Clone::clone);
                single(name, what, "MiB", &cmd, v)
            })
            .collect();
        let per_vm = match (&one, &all) {
            (Ok(o), Ok(a)) if n > 1 => {
                Ok(mib(a.pss_kib.saturating_sub(o.pss_kib)) / (n - 1) as f64)
            }
            (Ok(_), Ok(_)) => Err(Outcome::NotInstalled {
                reason: "needs at least 2 restores at once (--restore-density)".into(),
            }),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        let how = format!("(PSS of {n} - PSS of 1) / {}", n.saturating_sub(1));
        rows.push(single(
            &all_name,
            "extra PSS per added VM",
            "MiB",
            &how,
            per_vm,
        ));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak(rss_mib: u64, pss_mib: u64) -> Option<Result<Peak, String>> {
        Some(Ok(Peak {
            rss_kib: rss_mib << 10,
            pss_kib: pss_mib << 10,
            ..Peak::default()
        }))
    }

    fn p50(row: &Row) -> Option<f64> {
        match &row.outcome {
            Outcome::Measured(s) => Some(s.p50),
            _ => None,
        }
    }

    #[test]
    fn density_rows_give_the_pss_each_further_restore_adds() {
        let mut d = Density {
            count: 3,
            spec: Spec::new("kvmini", ["restore"]),
            one: peak(8, 8),
            all: peak(24, 10),
        };
        let rows = d.rows(None);
        let values: Vec<Option<f64>> = rows.iter().map(p50).collect();
        assert_eq!(
            values,
            [Some(8.0), Some(8.0), Some(10.0), Some(24.0), Some(1.0)]
        );
        assert!(rows[4].subject.contains("x3 at once"));
        let missing = d.rows(Some("no snapshot"));
        assert!(missing.iter().all(
            |r| matches!(&r.outcome, Outcome::NotInstalled { reason } if reason == "no snapshot")
        ));
        d.all = Some(Err("2 of 3 restores failed".into()));
        let rows = d.rows(None);
        assert!(p50(&rows[0]).is_some());
        assert!(
            matches!(&rows[4].outcome, Outcome::Failed { reason } if reason.contains("2 of 3"))
        );
    }
}
