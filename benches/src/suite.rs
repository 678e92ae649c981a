//! The two runs of the benchmark: the default one (start-up, exit cost, memory, density,
//! interleaved round by round) and the Linux boots. Each checks its inputs, runs the rounds
//! over its sections, prints a header, the commands, the table and what follows it, and
//! writes its typed results as JSON.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use kvmini_measure::table::{Align, Table};

use crate::error::Error;
use crate::host::{self, Machine};
use crate::kvmini_stats::Unclaimed;
use crate::report::{self, Row, Target};
use crate::sections::density::Density;
use crate::sections::devices::{self, Devices};
use crate::sections::exit_cost::{ExitCost, FromMedians, EXIT_KINDS};
use crate::sections::linux::{self, Linux};
use crate::sections::memory::Memory;
use crate::sections::snapshot::{self, LinuxRestores, Snapshot};
use crate::sections::startup::Startup;
use crate::sections::{Context, Section, SubjectResult, GUESTS};
use crate::{targets, Options};

/// Runs `warmup + runs` rounds of every section, interleaved; with `show`, says which round
/// it is on standard error. Returns the seconds they took.
fn rounds(sections: &mut [&mut dyn Section], warmup: usize, runs: usize, show: bool) -> f64 {
    let total = warmup + runs;
    let tty = show && std::io::stderr().is_terminal();
    let started = Instant::now();
    for round in 0..total {
        let keep = round >= warmup;
        if tty {
            let what = if keep { "" } else { " (warm-up)" };
            eprint!("\rround {}/{total}{what}   ", round + 1);
        } else if show && (round == 0 || (round + 1) % 10 == 0 || round + 1 == total) {
            let secs = started.elapsed().as_secs_f64();
            eprintln!("round {}/{total} ({secs:.0} s)", round + 1);
        }
        let _ = std::io::stderr().flush();
        for s in sections.iter_mut() {
            s.measure(keep);
        }
    }
    if tty {
        eprintln!();
    }
    started.elapsed().as_secs_f64()
}

/// The sections' commands, one aligned line each.
fn commands(sections: &[&dyn Section]) -> String {
    let mut t = Table::new(&[("name", Align::Left), ("command", Align::Left)])
        .headless()
        .indent(2);
    for (name, command) in sections.iter().flat_map(|s| s.commands()) {
        t.row(vec![name, command]);
    }
    format!("\ncommands:\n{}\n", t.render())
}

/// Prints the sections' failures on standard error; whether one fails the run.
fn failures(sections: &[&dyn Section]) -> bool {
    for line in sections.iter().flat_map(|s| s.failures()) {
        eprintln!("{line}");
    }
    sections.iter().any(|s| s.fatal())
}

/// Writes `results` as JSON to `path`.
fn write_json<T: Serialize>(path: &Path, results: &T) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.into(),
            source,
        })?;
    }
    let text = serde_json::to_string_pretty(results)? + "\n";
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.into(),
        source,
    })?;
    println!("\nresults: {}", path.display());
    Ok(())
}

/// The default run's results file.
#[derive(Serialize)]
struct Results<'a> {
    #[serde(flatten)]
    machine: &'a Machine,
    kvmini_check_io_exit_us: Option<f64>,
    runs: usize,
    warmup: usize,
    exits_per_run: u64,
    exit_counts_by_kvmini: &'a BTreeMap<&'static str, Unclaimed>,
    exit_cost_from_medians_ns: FromMedians,
    memory_settle_ms: u64,
    density_vms: usize,
    linux_restores: usize,
    restore_density_vms: usize,
    subjects: Vec<SubjectResult>,
    rows: Vec<Row>,
    targets: Vec<Target>,
    table: String,
}

/// Fails with how to build what the default run needs, when something is missing.
fn preflight(o: &Options) -> Result<(), Error> {
    host::require(&o.kvmini, "make build first")?;
    for floor in snapshot::floors() {
        host::require(&floor, "make bench (it builds benches/floor*.c with gcc)")?;
    }
    host::require(Path::new(snapshot::COUNT_ELF), "make guests first")?;
    for g in ["hello.elf", "hello16.bin", "spin.bin", "count.bin"]
        .into_iter()
        .map(String::from)
        .chain(EXIT_KINDS.iter().map(|(k, _)| format!("exits-{k}.bin")))
    {
        host::require(&Path::new(GUESTS).join(g), "make guests first")?;
    }
    Ok(())
}

/// Runs the default benchmark; `Ok(false)` when kvmini or the floor failed somewhere.
pub fn default(o: &Options, cx: &Context, root: &Path) -> Result<bool, Error> {
    if !host::kvm_usable()? {
        return Ok(true);
    }
    preflight(o)?;
    let check = host::check(&o.kvmini)?;
    let mut machine = Machine::before(&check);
    let mut startup = Startup::new(cx, root, &host::qemu());
    let mut exits = ExitCost::new(cx)?;
    let mut memory = Memory::new(cx, &o.mem_sizes, o.settle());
    let mut density = Density::new(cx, o.density);
    let mut snapshot = Snapshot::new(cx, o.snapshot_counts());
    let elapsed = rounds(
        &mut [
            &mut startup,
            &mut exits,
            &mut memory,
            &mut density,
            &mut snapshot,
        ],
        o.warmup,
        o.runs,
        true,
    );
    machine.after(elapsed);

    let sections: [&dyn Section; 5] = [&startup, &exits, &memory, &density, &snapshot];
    let rows: Vec<Row> = sections.iter().flat_map(|s| s.rows()).collect();
    let targets = targets::targets(&startup, &exits, &memory, &snapshot);
    let io_exit_us = check.measurements.io_exit_us;
    let mut text = format!("kvmini benchmark, {}\n", machine.date);
    text += &format!(
        "host kind: {} ({})\n",
        check.host_kind_short, check.host_kind
    );
    if let Some(us) = io_exit_us {
        text += &format!("kvmini check: port-I/O exit round trip {us:.1} us\n");
    }
    text += &machine.line("rounds");
    text += &format!(
        "{} measured rounds after {} warm-up rounds, interleaved; exit-cost guests make {} exits each\n",
        o.runs, o.warmup, exits.exits
    );
    text += &commands(&sections);
    text += &report::table(&rows);
    text += "\ntargets (information, never pass/fail):\n";
    text += &report::targets_text(&targets);
    print!("{text}");
    let fatal = failures(&sections);

    let results = Results {
        machine: &machine,
        kvmini_check_io_exit_us: io_exit_us,
        runs: o.runs,
        warmup: o.warmup,
        exits_per_run: exits.exits,
        exit_counts_by_kvmini: &exits.counts,
        exit_cost_from_medians_ns: exits.cost_from_medians(),
        memory_settle_ms: o.settle_ms,
        density_vms: o.density,
        linux_restores: o.linux_restores,
        restore_density_vms: o.restore_density,
        subjects: startup
            .subjects
            .iter()
            .chain(&exits.subjects)
            .chain(&snapshot.tiny)
            .chain(&snapshot.linux.subjects)
            .map(|s| s.result())
            .collect(),
        rows,
        targets,
        table: text,
    };
    write_json(&o.json_path(), &results)?;
    Ok(!fatal)
}

/// The cold boot of vmlinux against the restore, launch->exit medians.
fn restore_vs_cold(section: &Linux, restores: &LinuxRestores) -> String {
    let restore = restores.subjects.iter().find(|s| !s.peer);
    let restored = restore.and_then(|s| s.median(&s.exit_ms));
    let shown = match (section.kvmini_exit_median_s("vmlinux"), restored) {
        (Some(cold), Some(ms)) => format!(
            "cold {cold:.1} s / restored {:.2} s = {}",
            ms / 1e3,
            report::ratio_text(cold * 1e3 / ms.max(1e-9))
        ),
        _ => match restore.and_then(|s| s.absent.clone()) {
            Some(why) => format!("n/a: {why}"),
            None => "n/a: no good boot or restore".into(),
        },
    };
    format!("  kvmini vmlinux, launch->exit, cold boot / restore: {shown}\n")
}

/// Runs only the Linux boot section (`--linux N`); `Ok(false)` when a kvmini boot failed.
pub fn linux(o: &Options, cx: &Context, boots: usize) -> Result<bool, Error> {
    if !host::kvm_usable()? {
        return Ok(true);
    }
    host::require(&o.kvmini, "make build first")?;
    for p in linux::inputs() {
        host::require(&p, "make linux first")?;
    }
    let check = host::check(&o.kvmini)?;
    let mut machine = Machine::before(&check);
    let mut section = Linux::new(cx, boots, o.linux_timeout(), &host::qemu());
    let counts = snapshot::Counts {
        linux: boots,
        density: 0,
    };
    let mut restores = LinuxRestores::new(cx, counts);
    let elapsed = rounds(&mut [&mut section, &mut restores], 0, boots, false);
    machine.after(elapsed);

    let mut rows = section.rows();
    let restore_rows = restores.rows();
    let mut text = format!("kvmini Linux boot benchmark, {}\n", machine.date);
    text += &format!(
        "host kind: {} ({})\n",
        check.host_kind_short, check.host_kind
    );
    text += &machine.line("boots");
    text += &section.header();
    text += &commands(&[&section, &restores]);
    text += &report::median_table(&rows);
    text += &section.after_table();
    text += "\nthe same guest restored from guest/build/linux-snapshot, in the same rounds:\n";
    text += &report::median_table(&restore_rows);
    text += &restore_vs_cold(&section, &restores);
    rows.extend(restore_rows);
    print!("{text}");
    let fatal = failures(&[&section, &restores]);
    write_json(&o.json_path(), &section.results(&machine, rows, text))?;
    Ok(!fatal)
}

/// The devices section alone (`--devices N`): N rounds of the disk benchmark under kvmini and
/// QEMU's microvm, with its own table and results file.
pub fn devices(o: &Options, cx: &Context, rounds_n: usize) -> Result<bool, Error> {
    if !host::kvm_usable()? {
        return Ok(true);
    }
    host::require(&o.kvmini, "make build first")?;
    for p in devices::inputs() {
        host::require(&p, "make linux first")?;
    }
    let check = host::check(&o.kvmini)?;
    let mut machine = Machine::before(&check);
    let mut section = Devices::new(cx, o.linux_timeout(), &host::qemu());
    let elapsed = rounds(&mut [&mut section], 0, rounds_n, true);
    machine.after(elapsed);
    let rows = section.rows();
    let mut text = format!("kvmini devices benchmark, {}\n", machine.date);
    text += &format!(
        "host kind: {} ({})\n",
        check.host_kind_short, check.host_kind
    );
    text += &machine.line("rounds");
    text += &format!(
        "guest: blkbench /dev/vda {} {} (direct I/O; {} MiB sequential, {} random 4 KiB reads)\n",
        devices::SEQ_MIB,
        devices::RANDOM_READS,
        devices::SEQ_MIB,
        devices::RANDOM_READS
    );
    text += &format!(
        "then guest->host: {} KiB over vsock (kvmini), {} KiB over TCP{}\n",
        devices::VSOCK_KIB,
        devices::TCP_KIB,
        section
            .no_network()
            .map_or(String::new(), |why| format!(" (not measured: {why})"))
    );
    text += &commands(&[&section]);
    text += &report::median_table(&rows);
    for what in [
        "sequential read, direct, 1 MiB",
        "sequential write, direct, 1 MiB",
        "random read, direct, 4 KiB",
        "TCP guest->host (virtio-net)",
    ] {
        if let Some(r) = devices::ratio(&rows, what) {
            text += &format!("kvmini / QEMU, {what}: {}\n", report::ratio_text(r));
        }
    }
    print!("{text}");
    let fatal = failures(&[&section]);
    let results = serde_json::json!({
        "machine": machine,
        "section": section.results(),
        "rows": rows,
        "table": text,
    });
    write_json(&o.json_path(), &results)?;
    Ok(!fatal)
}
