//! The exit path with real KVM: random guests, guests stitched from instructions that exit
//! (port and MMIO writes, `hlt`, resets, instructions the emulator cannot run, faults) and
//! mutated copies of the built guests (bit flips, overwritten bytes, truncations,
//! insertions), each run by the `kvmini` binary in real, protected or long mode (or as an
//! ELF) with a short timeout. Every run must end with a documented status: the guest's own
//! (what it wrote to the exit port), 120 for an image kvmini refuses, 122 crash, 123 output
//! limit, 124 timeout; never a panic, an abort, an internal error or a hang (each run has a
//! hard wall-clock limit).
//!
//! A fixed PRNG makes every guest replayable: case `i` of seed `S` is made from seed `S + i`
//! alone, so `KVMINI_EXIT_FUZZ_SEED=<S + i> KVMINI_EXIT_FUZZ_COUNT=1` runs it again.
//! `KVMINI_EXIT_FUZZ_COUNT` (default 60) sets how many run; `make fuzz` runs more.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{guest, kvm_or_skip, kvmini_bin, scratch};
use kvmini::stats::Stats;
use kvmini::status::{BAD_INPUT, GUEST_CRASH, OUTPUT_LIMIT, TIMEOUT};

/// The seed when none is given: "kvmini" in ASCII.
const DEFAULT_SEED: u64 = 0x6b76_6d69_6e69;
const DEFAULT_COUNT: u64 = 60;
/// kvmini's own timeout for each guest.
const GUEST_TIMEOUT: &str = "1";
/// Past this, a run counts as a hang and is killed.
const WALL_LIMIT: Duration = Duration::from_secs(20);

/// SplitMix64: small, fast and the same everywhere, so a seed means the same guest on every
/// machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Real,
    Protected,
    Long,
    /// No `--mode`: the image says (an ELF).
    Image,
}

impl Mode {
    fn arg(self) -> Option<&'static str> {
        match self {
            Mode::Real => Some("real"),
            Mode::Protected => Some("protected"),
            Mode::Long => Some("long"),
            Mode::Image => None,
        }
    }
}

/// The built guests the mutations start from, with the mode each runs in.
const GUESTS: &[(&str, Mode)] = &[
    ("hello16.bin", Mode::Real),
    ("hello32.bin", Mode::Protected),
    ("hello64.bin", Mode::Long),
    ("modeswitch.bin", Mode::Real),
    ("count.bin", Mode::Long),
    ("mmio.bin", Mode::Long),
    ("exits-pio.bin", Mode::Long),
    ("exits-mmio.bin", Mode::Long),
    ("triple.bin", Mode::Long),
    ("flood.bin", Mode::Real),
    ("hello.elf", Mode::Image),
];

/// Instructions that make exits, as bytes for `mode`; immediates are random.
fn snippet(rng: &mut Rng, mode: Mode) -> Vec<u8> {
    let imm = rng.byte();
    let wide = mode != Mode::Real;
    match rng.below(22) {
        // mov al, imm; out 0xf4, al: the exit port, a status of the guest's choosing.
        0 => vec![0xb0, imm % 120, 0xe6, 0xf4],
        1 => vec![0xb0, imm, 0xe6, 0xf4],
        // mov dx, 0x3f8; mov al, imm; out dx, al: a byte of serial output.
        2 => {
            let mut v = if wide { vec![0x66] } else { vec![] };
            v.extend([0xba, 0xf8, 0x03, 0xb0, imm, 0xee]);
            v
        }
        // hlt, cli; hlt, jmp $.
        3 => vec![0xf4],
        4 => vec![0xfa, 0xf4],
        5 => vec![0xeb, 0xfe],
        // mov al, 0xfe; out 0x64, al: a reset through the i8042.
        6 => vec![0xb0, 0xfe, 0xe6, 0x64],
        // out 0x80, al; in al, imm; in al, dx; out imm, al.
        7 => vec![0xe6, 0x80],
        8 => vec![0xe4, imm],
        9 => vec![0xec],
        10 => vec![0xe6, imm],
        // rep outsb / rep insb on the UART: string I/O of many elements.
        11 => {
            let mut v = if wide { vec![0x66] } else { vec![] };
            v.extend([0xba, 0xf8, 0x03]);
            v.extend([0xb9, imm, rng.byte() & 0x3]);
            if wide {
                v.extend([0, 0]);
            }
            v.extend([0xf3, if rng.chance(50) { 0x6e } else { 0x6c }]);
            v
        }
        // int3, ud2, int imm, into the IDT there is (none).
        12 => vec![0xcc],
        13 => vec![0x0f, 0x0b],
        14 => vec![0xcd, imm],
        // Instructions this host's emulator cannot run: popcnt, fwait, xrstor.
        15 => vec![0xf3, 0x0f, 0xb8, 0xc0],
        16 => vec![0x9b],
        17 => vec![0x0f, 0xae, 0x28],
        // mov [0xd0000000 + small], eax: MMIO, a virtio window or nothing.
        18 if wide => {
            let mut v = vec![0xa3, imm & 0xfc, 0x00, 0x00, 0xd0];
            if mode == Mode::Long {
                v.extend([0, 0, 0, 0]);
            }
            v
        }
        // mov cr0, eax; wrmsr; rdmsr; cpuid; rdtsc: exits KVM handles itself, or not.
        19 => vec![0x0f, 0x22, 0xc0],
        20 => vec![0x0f, *rng.pick(&[0x30, 0x32, 0xa2, 0x31])],
        // lidt/lgdt from wherever the registers point.
        _ => vec![0x0f, 0x01, if rng.chance(50) { 0x18 } else { 0x10 }],
    }
}

/// A guest stitched from exiting instructions and random bytes.
fn stitched(rng: &mut Rng, mode: Mode) -> Vec<u8> {
    let mut code = Vec::new();
    for _ in 0..1 + rng.below(12) {
        if rng.chance(70) {
            code.extend(snippet(rng, mode));
        } else {
            let n = 1 + rng.below(16) as usize;
            code.extend(rng.bytes(n));
        }
    }
    if rng.chance(50) {
        code.extend([0xb0, rng.byte() % 120, 0xe6, 0xf4]);
    }
    code
}

/// A built guest with a few changes.
fn mutated(rng: &mut Rng, mut image: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        let len = image.len().max(1) as u64;
        // Headers are where loaders look: half of the changes go to the first 512 bytes.
        let at = if rng.chance(50) {
            rng.below(len.min(512))
        } else {
            rng.below(len)
        } as usize;
        match rng.below(5) {
            0 if !image.is_empty() => image[at] ^= 1 << rng.below(8),
            1 if !image.is_empty() => image[at] = rng.byte(),
            2 => image.truncate(at.max(1)),
            3 => {
                let n = 1 + rng.below(32) as usize;
                let bytes = rng.bytes(n);
                image.splice(at..at, bytes);
            }
            _ => {
                // An interesting number over four bytes: a header field gone wrong.
                let v: u32 = *rng.pick(&[0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x1000]);
                let end = (at + 4).min(image.len());
                image[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
        }
    }
    image
}

/// One generated case: the image and the options it runs with.
struct Case {
    what: String,
    image: Vec<u8>,
    mode: Mode,
    args: Vec<String>,
}

fn make_case(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let mode = *rng.pick(&[Mode::Real, Mode::Protected, Mode::Long]);
    let (what, image, mode) = match rng.below(10) {
        0..=2 => {
            let n = 1 + rng.below(2048) as usize;
            (format!("{n} random bytes"), rng.bytes(n), mode)
        }
        3..=5 => ("stitched exits".to_string(), stitched(&mut rng, mode), mode),
        _ => {
            let &(name, own) = rng.pick(GUESTS);
            let image = std::fs::read(guest(name)).expect("a built guest");
            // Mostly in its own mode; sometimes in another, which it does not expect.
            let mode = if own == Mode::Image || rng.chance(80) {
                own
            } else {
                mode
            };
            (format!("mutated {name}"), mutated(&mut rng, image), mode)
        }
    };
    let mut args = vec![
        "--timeout".to_string(),
        GUEST_TIMEOUT.to_string(),
        "--stats=json".to_string(),
    ];
    let mem = *rng.pick(&["1M", "2M", "4M", "16M"]);
    args.extend(["--mem".to_string(), mem.to_string()]);
    let limit = *rng.pick(&["64", "4096", "65536"]);
    args.extend(["--serial-limit".to_string(), limit.to_string()]);
    if rng.chance(25) {
        args.extend(["--unclaimed-mmio".to_string(), "ignore".to_string()]);
    }
    if let Some(m) = mode.arg() {
        args.extend(["--mode".to_string(), m.to_string()]);
    }
    Case {
        what,
        image,
        mode,
        args,
    }
}

/// How a run ended.
struct Ended {
    status: Option<i32>,
    stderr: String,
    hung: bool,
}

fn run(image: &Path, args: &[String]) -> Ended {
    let mut child = Command::new(kvmini_bin())
        .arg("run")
        .arg(image)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvmini binary runs");
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + WALL_LIMIT;
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kvmini") {
            break status;
        }
        if Instant::now() > deadline {
            hung = true;
            let _ = child.kill();
            break child.wait().expect("wait for kvmini");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ended {
        status: status.code(),
        stderr: reader.join().unwrap_or_default(),
        hung,
    }
}

/// What is wrong with how a run ended, if anything.
fn judge(ended: &Ended) -> Result<i32, String> {
    if ended.hung {
        return Err(format!("no end after {} s", WALL_LIMIT.as_secs()));
    }
    let Some(code) = ended.status else {
        return Err("killed by a signal (an abort?)".into());
    };
    if ended.stderr.contains("panicked") {
        return Err(format!("panicked (status {code})"));
    }
    if code == BAD_INPUT {
        return match ended.stderr.contains("kvmini: error:") {
            true => Ok(code),
            false => Err("status 120 without an error message".into()),
        };
    }
    // Every run that started the guest ends with the statistics, on stderr's last line.
    let last = ended.stderr.lines().last().unwrap_or_default();
    let stats: Stats = serde_json::from_str(last)
        .map_err(|e| format!("status {code} without the statistics ({e})"))?;
    if stats.exit_status != code {
        return Err(format!(
            "status {code}, but the statistics say {}",
            stats.exit_status
        ));
    }
    let guest_said = stats.stop_reason.starts_with("guest wrote");
    match code {
        GUEST_CRASH | OUTPUT_LIMIT | TIMEOUT => Ok(code),
        // Any other status is the guest's, and only the exit port gives one.
        _ if code == 0 || guest_said => Ok(code),
        _ => Err(format!(
            "status {code} for \"{}\", which is no documented status",
            stats.stop_reason
        )),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn every_random_or_mutated_guest_ends_with_a_documented_status() {
    if !kvm_or_skip() {
        return;
    }
    let seed = env_u64("KVMINI_EXIT_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let count = env_u64("KVMINI_EXIT_FUZZ_COUNT").unwrap_or(DEFAULT_COUNT);
    let start = Instant::now();
    let mut statuses = std::collections::BTreeMap::<i32, u32>::new();
    let mut failures = Vec::new();
    let image: PathBuf = scratch("exit-fuzz.img");
    for i in 0..count {
        let case_seed = seed.wrapping_add(i);
        let case = make_case(case_seed);
        std::fs::write(&image, &case.image).unwrap();
        let ended = run(&image, &case.args);
        match judge(&ended) {
            Ok(code) => *statuses.entry(code).or_default() += 1,
            Err(why) => {
                let kept = scratch(&format!("exit-fuzz-{case_seed:#x}.img"));
                std::fs::copy(&image, &kept).unwrap();
                failures.push(format!(
                    "seed {case_seed:#x} ({}, {:?} mode, {} bytes, kept as {}): {why}\n\
                     kvmini run {} {}\n{}",
                    case.what,
                    case.mode,
                    case.image.len(),
                    kept.display(),
                    kept.display(),
                    case.args.join(" "),
                    ended.stderr.trim_end()
                ));
            }
        }
    }
    eprintln!(
        "{count} guests from seed {seed:#x} in {:.1} s; statuses (status: guests): {statuses:?}",
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} guests ended badly; replay one with KVMINI_EXIT_FUZZ_SEED=<seed> \
         KVMINI_EXIT_FUZZ_COUNT=1:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_same_seed_makes_the_same_guest() {
    let a = make_case(7);
    let b = make_case(7);
    assert_eq!((a.image, a.args), (b.image, b.args));
    assert_ne!(make_case(7).image, make_case(8).image);
}

#[test]
fn panics_aborts_hangs_and_undocumented_statuses_are_caught() {
    let ended = |status: Option<i32>, stderr: &str, hung: bool| Ended {
        status,
        stderr: stderr.to_string(),
        hung,
    };
    let stats = |reason: &str, status: i32| {
        let s = Stats {
            stop_reason: reason.to_string(),
            exit_status: status,
            ..Default::default()
        };
        serde_json::to_string(&s).unwrap()
    };
    assert_eq!(
        judge(&ended(
            Some(7),
            &stats("guest wrote 7 to the exit port (0xf4)", 7),
            false
        )),
        Ok(7)
    );
    assert_eq!(
        judge(&ended(Some(124), &stats("timed out", 124), false)),
        Ok(124)
    );
    assert_eq!(
        judge(&ended(Some(120), "kvmini: error: the raw image...", false)),
        Ok(120)
    );
    assert!(judge(&ended(
        Some(101),
        "thread 'main' panicked at src/x.rs",
        false
    ))
    .is_err());
    assert!(judge(&ended(None, "", false)).is_err());
    assert!(judge(&ended(Some(124), &stats("timed out", 124), true)).is_err());
    assert!(judge(&ended(Some(125), "kvmini: error: internal", false)).is_err());
    assert!(judge(&ended(Some(7), &stats("guest halted", 0), false)).is_err());
    assert!(judge(&ended(Some(9), &stats("guest halted", 9), false)).is_err());
}
