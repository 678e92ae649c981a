//! The project's targets, as information (never pass/fail): ratios and figures from the
//! medians of the start-up, exit-cost and memory sections.

use crate::report::{ratio_text, Target};
use crate::sections::exit_cost::ExitCost;
use crate::sections::memory::Memory;
use crate::sections::snapshot::Snapshot;
use crate::sections::startup::Startup;
use crate::sections::Subject;

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn target(what: &str, goal: &str, v: Option<f64>, shown: String, met: Option<bool>) -> Target {
    Target {
        what: what.into(),
        goal: goal.into(),
        measured: v,
        shown,
        met,
    }
}

fn ratio_or(r: Option<f64>, missing: &str) -> String {
    r.map_or(missing.to_string(), ratio_text)
}

/// The start-up targets: kvmini against the floor and QEMU, and its first byte.
fn startup_targets(startup: &Startup) -> Vec<Target> {
    let kv_elf = startup.subject("kvmini hello.elf");
    let kv_real = startup.subject("kvmini hello16.bin");
    let floor = startup.subject("floor hello16.bin");
    let qemu = startup.subject("QEMU microvm hello.elf");
    type Of = fn(&Subject) -> &[f64];
    let vs_floor: [(&str, &str, Of, Option<f64>); 2] = [
        ("launch->exit", "<= 1.3x", |s| &s.exit_ms, Some(1.3)),
        ("launch->first byte", "(reported)", |s| &s.first_ms, None),
    ];
    let mut targets = Vec::new();
    for (what, goal, of, bound) in vs_floor {
        let r = ratio(kv_real.median(of(kv_real)), floor.median(of(floor)));
        targets.push(target(
            &format!("{what} p50, kvmini hello16.bin / floor"),
            goal,
            r,
            ratio_or(r, "n/a"),
            bound.and_then(|b| r.map(|r| r <= b)),
        ));
    }
    let r = ratio(qemu.median(&qemu.exit_ms), kv_elf.median(&kv_elf.exit_ms));
    let why_no_qemu = match (&qemu.absent, &qemu.failure) {
        (Some(_), _) => "n/a: QEMU not installed",
        (_, Some(_)) => "n/a: QEMU failed",
        _ => "n/a",
    };
    targets.push(target(
        "launch->exit p50, QEMU microvm / kvmini (hello.elf)",
        ">= 3x faster",
        r,
        ratio_or(r, why_no_qemu),
        r.map(|r| r >= 3.0),
    ));
    for s in [kv_elf, kv_real] {
        let v = s.median(&s.first_ms);
        targets.push(target(
            &format!("launch->first byte p50, {}", s.name),
            "<= ~10 ms",
            v,
            v.map_or("n/a".into(), |v| format!("{v:.2} ms")),
            v.map(|v| v <= 10.0),
        ));
    }
    targets
}

/// The exit-cost targets: kvmini against the floor, from medians.
fn exit_targets(exits: &ExitCost) -> Vec<Target> {
    let m = exits.cost_from_medians();
    ["pio", "mmio"]
        .into_iter()
        .map(|kind| {
            let (k, f) = (m.get("kvmini", kind), m.get("floor", kind));
            let r = ratio(k, f);
            let shown = match (k, f, r) {
                (Some(k), Some(f), Some(r)) => format!("{} ({k:.0} / {f:.0} ns)", ratio_text(r)),
                _ => "n/a".into(),
            };
            target(
                &format!("{kind} exit cost, kvmini / floor (from medians)"),
                "<= 1.1x",
                r,
                shown,
                r.map(|r| r <= 1.1),
            )
        })
        .collect()
}

/// The memory targets: the VMM's own memory and its growth with the guest's.
fn memory_targets(memory: &Memory) -> Vec<Target> {
    let overheads = memory.overheads();
    let worst = overheads
        .iter()
        .map(|(_, v)| *v)
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
    let mut targets = vec![target(
        "VMM memory (RSS minus guest RAM) p50, largest over sizes",
        "<= 2 MiB",
        worst,
        worst.map_or("n/a".into(), |v| format!("{v:.2} MiB")),
        worst.map(|v| v <= 2.0),
    )];
    if let [first, .., last] = &overheads[..] {
        let growth = last.1 - first.1;
        targets.push(target(
            &format!("VMM memory growth, --mem {} -> {}", first.0, last.0),
            "flat (< 0.25 MiB)",
            Some(growth),
            format!("{growth:+.2} MiB"),
            Some(growth.abs() < 0.25),
        ));
    }
    targets
}

/// One snapshot target: `measured` p50 of subject `a` over that of `b`, at most `bound`
/// (none: only reported).
struct Pair {
    a: &'static str,
    b: &'static str,
    measured: &'static str,
    of: fn(&Subject) -> &[f64],
    bound: Option<f64>,
}

const SNAPSHOT_PAIRS: [Pair; 4] = [
    Pair {
        a: "kvmini restore count",
        b: "floor_restore count",
        measured: "launch->first byte",
        of: |s| &s.first_ms,
        bound: Some(1.3),
    },
    Pair {
        a: "kvmini restore count",
        b: "kvmini run count.bin (cold)",
        measured: "launch->first byte",
        of: |s| &s.first_ms,
        bound: None,
    },
    Pair {
        a: "kvmini restore count",
        b: "kvmini run count.bin (cold)",
        measured: "launch->exit",
        of: |s| &s.exit_ms,
        bound: None,
    },
    Pair {
        a: "kvmini restore linux",
        b: "runc busybox uname -r",
        measured: "launch->exit",
        of: |s| &s.exit_ms,
        bound: None,
    },
];

/// The snapshot targets: ratios of medians between the subjects named.
fn snapshot_targets(snapshot: &Snapshot) -> Vec<Target> {
    SNAPSHOT_PAIRS
        .iter()
        .map(|p| {
            let (a, b) = (snapshot.subject(p.a), snapshot.subject(p.b));
            let r = ratio(a.median((p.of)(a)), b.median((p.of)(b)));
            let why = [a, b]
                .into_iter()
                .find_map(|s| s.absent.as_ref().or(s.failure.as_ref()).map(|w| (s, w)));
            let missing = match why {
                Some((s, w)) if s.absent.is_some() => format!("n/a: {w}"),
                Some((s, _)) => format!("n/a: {} failed", s.name),
                None => "n/a".into(),
            };
            target(
                &format!("{} p50, {} / {}", p.measured, a.name, b.name),
                &p.bound.map_or("(reported)".into(), |b| format!("<= {b}x")),
                r,
                ratio_or(r, &missing),
                p.bound.and_then(|bound| r.map(|r| r <= bound)),
            )
        })
        .collect()
}

/// Every target, with what was measured.
pub fn targets(
    startup: &Startup,
    exits: &ExitCost,
    memory: &Memory,
    snapshot: &Snapshot,
) -> Vec<Target> {
    let mut t = startup_targets(startup);
    t.extend(exit_targets(exits));
    t.extend(memory_targets(memory));
    t.extend(snapshot_targets(snapshot));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_a_positive_divisor() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(
            ratio_or(None, "n/a: QEMU not installed"),
            "n/a: QEMU not installed"
        );
    }
}
