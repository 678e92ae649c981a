//! The kvmini benchmark: what a VM costs to start, to exit to the VMM and to keep, measured
//! against QEMU's microvm (and Firecracker, when named), and against `benches/floor.c`, the
//! least any VMM has to do.
//!
//! ```text
//! make bench                                   # builds what it needs, 30 rounds
//! make bench BENCH_ARGS="--runs 5 --warmup 1 --density 10"
//! cargo run --release -p kvmini-bench -- --help
//! make bench-linux                             # only the Linux boots: --linux 5
//! make bench-devices                           # only the virtio devices: --devices 3
//! ```
//!
//! The benchmark is made of sections (`sections/`: start-up, exit cost, memory, density,
//! snapshot),
//! each with its own commands, measure step and rows. Every measured command runs once per
//! round and the rounds repeat (A B C A B C ...), so slow drift of the machine spreads over
//! all subjects alike. The first `--warmup` rounds are thrown away. It prints p50, p90, min
//! and max of each measurement, the targets as information, and writes everything, raw
//! samples included, to `--json`. Numbers never fail it: only a subject that breaks (wrong
//! output, wrong exit status, a hang) does, and for peers (QEMU, Firecracker) not even that.
//!
//! `--linux N` runs the Linux boot section instead (`sections/linux/`): N boots of the guest
//! kernel under kvmini and QEMU, with its own table and `bench/build/linux-results.json`.
//! `--devices N` runs the devices section (`sections/devices.rs`) the same way, into
//! `bench/build/devices-results.json`.

#![deny(clippy::undocumented_unsafe_blocks)]

mod error;
mod host;
mod kvmini_stats;
mod report;
mod sections;
mod suite;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use error::Error;
use sections::memory::{parse_mem_size, MemSize};
use sections::Context;

/// The kvmini binary `make build` builds (release settings, statically linked).
const KVMINI: &str = "target/x86_64-unknown-linux-gnu/release/kvmini";

/// What the benchmark measures and how often.
#[derive(Parser, Debug)]
#[command(
    name = "kvmini-bench",
    about = "The kvmini benchmark: start-up, exit cost, memory and density of kvmini against the floor and its peers (make bench runs it with the defaults)",
    after_help = "Peers: QEMU (qemu-system-x86_64 on PATH, or QEMU=/path) and Firecracker\n(FIRECRACKER=/path/to/firecracker) are measured when present."
)]
struct Options {
    /// Measured rounds.
    #[arg(long, default_value_t = 30, value_name = "N", value_parser = at_least_one)]
    runs: usize,
    /// Rounds run first and thrown away.
    #[arg(long, default_value_t = 3, value_name = "N")]
    warmup: usize,
    /// Where the results go, relative to the checkout [default: bench/results.json; with
    /// --linux, bench/build/linux-results.json].
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// VMs started at once in the density test (0: no density test).
    #[arg(long, default_value_t = 50, value_name = "N")]
    density: usize,
    /// Guest sizes of the memory test, comma-separated, in kvmini's --mem syntax.
    #[arg(long = "mem-sizes", value_name = "LIST", value_delimiter = ',',
          default_value = "16M,256M,2G", value_parser = parse_mem_size)]
    mem_sizes: Vec<MemSize>,
    /// How long a memory-test VM runs before its memory is read, ms.
    #[arg(long = "settle-ms", default_value_t = 500, value_name = "N")]
    settle_ms: u64,
    /// Restores of guest/build/linux-snapshot (`make snapshot` saves it) running `uname -r`,
    /// and as many runs of its container peer, in the first rounds.
    #[arg(long = "linux-restores", default_value_t = 5, value_name = "N")]
    linux_restores: usize,
    /// Restores of the Linux snapshot alive at once in the snapshot density test (0: none).
    #[arg(long = "restore-density", default_value_t = 10, value_name = "N")]
    restore_density: usize,
    /// Run only the Linux boot section: N interleaved boots each of kvmini and QEMU on
    /// guest/build/vmlinux (PVH) and bzImage with initramfs.cpio (make linux builds them).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    linux: Option<usize>,
    /// Run only the devices section: N rounds of the Linux guest's disk benchmark under
    /// kvmini and QEMU's microvm (make linux builds the guest).
    #[arg(long, value_name = "N", value_parser = at_least_one, conflicts_with = "linux")]
    devices: Option<usize>,
    /// Seconds after which a Linux boot counts as hung.
    #[arg(long = "linux-timeout", default_value_t = 600, value_name = "S", value_parser = at_least_one)]
    linux_timeout: usize,
    /// The kvmini binary measured, relative to the checkout (`make build` builds the default).
    #[arg(long, value_name = "PATH", default_value = KVMINI)]
    kvmini: PathBuf,
}

/// A whole number of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

impl Options {
    fn json_path(&self) -> PathBuf {
        self.json.clone().unwrap_or_else(|| {
            PathBuf::from(if self.linux.is_some() {
                "bench/build/linux-results.json"
            } else if self.devices.is_some() {
                "bench/build/devices-results.json"
            } else {
                "bench/results.json"
            })
        })
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }

    fn snapshot_counts(&self) -> sections::snapshot::Counts {
        sections::snapshot::Counts {
            linux: self.linux_restores,
            density: self.restore_density,
        }
    }

    fn linux_timeout(&self) -> Duration {
        Duration::from_secs(self.linux_timeout as u64)
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let result = std::env::set_current_dir(&root)
        .map_err(|source| Error::Chdir {
            dir: root.clone(),
            source,
        })
        .and_then(|()| {
            let cx = Context {
                kvmini: options.kvmini.clone(),
            };
            match (options.linux, options.devices) {
                (Some(boots), _) => suite::linux(&options, &cx, boots),
                (None, Some(rounds)) => suite::devices(&options, &cx, rounds),
                (None, None) => suite::default(&options, &cx, &root),
            }
        });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("kvmini-bench").chain(args.iter().copied()))
    }

    #[test]
    fn options_have_their_defaults_and_checks() {
        let o = parse(&["--runs", "2", "--density=5"]).expect("options parse");
        assert_eq!((o.runs, o.warmup, o.density), (2, 3, 5));
        assert_eq!(
            (o.linux, o.json_path()),
            (None, "bench/results.json".into())
        );
        assert_eq!(o.kvmini, PathBuf::from(KVMINI));
        let sizes: Vec<u64> = o.mem_sizes.iter().map(|s| s.bytes).collect();
        assert_eq!(sizes, [16 << 20, 256 << 20, 2 << 30]);
        assert_eq!((o.settle_ms, o.linux_timeout), (500, 600));
        assert_eq!((o.linux_restores, o.restore_density), (5, 10));
        let o = parse(&["--linux", "5"]).expect("options parse");
        assert_eq!(o.linux, Some(5));
        assert_eq!(
            o.json_path(),
            PathBuf::from("bench/build/linux-results.json")
        );
        assert!(parse(&["--linux=0"]).is_err());
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--mem-sizes", "16M,x"]).is_err());
        assert!(parse(&["--nope"]).is_err());
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
    }
}
