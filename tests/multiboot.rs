//! Multiboot 1 and 2 kernels: the four builds of guest/multiboot/ (each protocol loaded by
//! its ELF program headers and by its address fields) booted with a command line and two
//! modules, through the library and the binary; they print what they were given, and the
//! test checks it against what it gave. Then bad kernels and options, refused with status
//! 120 before anything boots.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config, guest, kvm_or_skip, kvmini_within, run, scratch, status, texts};
use kvmini::config::{ImageFormat, ModuleConfig};
use kvmini::status::BAD_INPUT;
use kvmini::StopReason;

/// Longer than any run here takes.
const HANG: Duration = Duration::from_secs(60);

/// Two module files with known bytes: the initrd and a `--module`. Each test names its own
/// (`tag`), since the tests run at once.
fn module_files(tag: &str) -> (PathBuf, PathBuf) {
    let first = scratch(&format!("mb-{tag}-initrd.txt"));
    let second = scratch(&format!("mb-{tag}-module.bin"));
    std::fs::write(&first, b"the first module: the initrd\n").unwrap();
    std::fs::write(&second, (0u8..=200).collect::<Vec<u8>>()).unwrap();
    (first, second)
}

/// What a guest prints about a module whose file is `path`, after its address: its size,
/// the sum of its bytes and its first 8 bytes.
fn module_line(path: &Path, string: &str) -> String {
    let bytes = std::fs::read(path).unwrap();
    let sum: u32 = bytes.iter().map(|&b| u32::from(b)).sum();
    let head: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "size {} sum {sum:#010x} head {head} string '{string}'",
        bytes.len()
    )
}

/// The lines every guest prints for `mem_mib` of guest memory.
fn memory_lines(mem_mib: u64) -> String {
    let upper = (mem_mib << 20) - 0x10_0000;
    format!(
        "memory: lower 639 KiB, upper {} KiB\n\
         mmap: 0x0000000000000000 0x000000000009fc00 type 1\n\
         mmap: 0x0000000000100000 {upper:#018x} type 1\n",
        upper >> 10
    )
}

/// Checks a guest's report of two modules: the lines in order, each module page-aligned
/// above the kernel's 1 MiB and after the one before.
fn check_modules(text: &str, expected: &[String]) {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("module: ")).collect();
    assert_eq!(lines.len(), expected.len(), "{text}");
    let mut last = 0x10_0000;
    for (line, want) in lines.iter().zip(expected) {
        let (addr, rest) = line["module: ".len()..].split_once(' ').unwrap();
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        assert_eq!(addr % 4096, 0, "{line}");
        assert!(addr > last, "{line} is not above {last:#x}");
        last = addr;
        assert_eq!(rest, want, "{text}");
    }
    assert!(
        text.contains(&format!("\nmodules: {}\n", expected.len())),
        "{text}"
    );
}

#[test]
fn multiboot1_elf_kernel_gets_cmdline_modules_and_memory_map() {
    if !kvm_or_skip() {
        return;
    }
    let (first, second) = module_files("mb1");
    let (mut c, buf) = config(guest("multiboot1.elf"));
    c.cmdline = Some("console=ttyS0 hello, world".into());
    c.initrd = Some(first.clone());
    c.modules = vec![ModuleConfig {
        path: second.clone(),
        string: Some("second module, with an argument".into()),
    }];
    c.mem_size = Some(32 << 20);
    let (outcome, text) = run(&c, &buf);
    let expected = format!(
        "multiboot1: magic 0x2badb002\n\
         boot loader: kvmini\n\
         cmdline: console=ttyS0 hello, world\n\
         {}",
        memory_lines(32)
    );
    assert!(text.starts_with(&expected), "{text}");
    check_modules(
        &text,
        &[
            module_line(&first, &first.display().to_string()),
            module_line(&second, "second module, with an argument"),
        ],
    );
    assert!(text.ends_with("modules: 2\nmultiboot1: done\n"), "{text}");
    assert!(
        matches!(outcome.reason, StopReason::GuestExit(11)),
        "{:?}",
        outcome.reason
    );
    assert_eq!(
        outcome.stats.image,
        "Multiboot 1 kernel (ELF), entry at 0x10000c, 2 modules"
    );
}

#[test]
fn multiboot2_aout_kernel_through_the_binary() {
    if !kvm_or_skip() {
        return;
    }
    let (first, second) = module_files("mb2");
    let module = format!("{},two", second.display());
    let out = kvmini_within(
        &[
            "run",
            guest("multiboot2.bin").to_str().unwrap(),
            "--mem",
            "24M",
            "--cmdline",
            "root=none quiet",
            "--module",
            first.to_str().unwrap(),
            "--module",
            &module,
        ],
        HANG,
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(status(&out), 12, "{stderr}");
    let expected = format!(
        "multiboot2: magic 0x36d76289\n\
         boot loader: kvmini\n\
         cmdline: root=none quiet\n\
         {}",
        memory_lines(24)
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
    check_modules(
        &stdout,
        &[
            module_line(&first, &first.display().to_string()),
            module_line(&second, "two"),
        ],
    );
    assert!(stdout.ends_with("multiboot2: done\n"), "{stdout}");
}

#[test]
fn the_other_two_builds_boot_by_the_other_loading_path() {
    if !kvm_or_skip() {
        return;
    }
    // Multiboot 1 by its address fields, Multiboot 2 by its ELF program headers; no command
    // line and no modules: an empty command line and an empty module list.
    for (name, version, how) in [
        ("multiboot1-aout.bin", 1, "address fields"),
        ("multiboot2.elf", 2, "ELF"),
    ] {
        let (c, buf) = config(guest(name));
        let (outcome, text) = run(&c, &buf);
        let magic = if version == 1 {
            "0x2badb002"
        } else {
            "0x36d76289"
        };
        let expected = format!(
            "multiboot{version}: magic {magic}\n\
             boot loader: kvmini\n\
             cmdline: \n\
             {}\
             modules: 0\n\
             multiboot{version}: done\n",
            memory_lines(16)
        );
        assert_eq!(text, expected, "{name}");
        assert_eq!(outcome.exit_status, 10 + version, "{name}");
        assert!(
            outcome.stats.image.contains(how),
            "{name}: {}",
            outcome.stats.image
        );
    }
}

#[test]
fn a_forced_format_boots_the_same_kernel() {
    if !kvm_or_skip() {
        return;
    }
    for format in [ImageFormat::Multiboot, ImageFormat::Multiboot1] {
        let (mut c, buf) = config(guest("multiboot1.elf"));
        c.format = Some(format);
        let (outcome, text) = run(&c, &buf);
        assert!(text.starts_with("multiboot1: magic 0x2badb002\n"), "{text}");
        assert_eq!(outcome.exit_status, 11);
    }
}

/// A kernel file made for a case from a built guest.
fn made(name: &str, from: &str, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(guest(from)).unwrap();
    change(&mut bytes);
    let path = scratch(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Where `magic` is in `bytes` (4-byte aligned).
fn find_magic(bytes: &[u8], magic: u32) -> usize {
    (0..bytes.len())
        .step_by(4)
        .find(|&i| bytes[i..i + 4] == magic.to_le_bytes())
        .expect("a Multiboot header")
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// A case of bad input: what it is, the arguments after `run`, what stderr must say.
type Case = (&'static str, Vec<String>, Vec<&'static str>);

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Kernels made bad from the built guests, and kernels too large for `--mem`.
fn bad_kernels() -> Vec<Case> {
    let bad_checksum = made("mb-checksum.elf", "multiboot1.elf", |b| {
        let at = find_magic(b, 0x1bad_b002);
        b[at + 8] ^= 0x40;
    });
    let cut_elf = made("mb-cut.elf", "multiboot1.elf", |b| b.truncate(0x1800));
    let cut_aout = made("mb-cut.bin", "multiboot2.bin", |b| b.truncate(0x800));
    // The address tag moved to 0x40000: into kvmini's Multiboot information.
    let low = made("mb-low.bin", "multiboot2.bin", |b| {
        // The address tag is the first tag: header_addr, load_addr, load_end, bss_end.
        for (i, v) in [0x4_0000, 0x4_0000, 0x4_1004, 0x4_3010]
            .into_iter()
            .enumerate()
        {
            put_u32(b, 24 + 4 * i, v);
        }
    });
    let video = made("mb-video.elf", "multiboot1.elf", |b| {
        let at = find_magic(b, 0x1bad_b002);
        let flags = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) | 4;
        put_u32(b, at + 4, flags);
        put_u32(
            b,
            at + 8,
            0u32.wrapping_sub(0x1bad_b002u32.wrapping_add(flags)),
        );
    });
    let mb1 = path(&guest("multiboot1.elf"));
    let mb2 = path(&guest("multiboot2.bin"));
    vec![
        (
            "a corrupt checksum",
            vec![path(&bad_checksum)],
            vec!["has a bad checksum", "not 0"],
        ),
        (
            "an ELF kernel cut inside its segment",
            vec![path(&cut_elf)],
            vec!["is truncated: ELF segment 0 needs bytes up to offset 0x1"],
        ),
        (
            "an a.out kernel cut short",
            vec![path(&cut_aout)],
            vec!["is truncated: what the Multiboot address fields load needs bytes up to offset 0x1004, but the file has 0x800"],
        ),
        (
            "segments that do not fit in --mem",
            vec![mb1, "--mem".into(), "1M".into()],
            vec!["ELF segment 0", "does not fit in 1 MiB of guest memory; raise --mem"],
        ),
        (
            "an a.out kernel that does not fit in --mem",
            vec![mb2, "--mem".into(), "1M".into()],
            vec!["what the Multiboot address fields load", "does not fit in 1 MiB"],
        ),
        (
            "a kernel over kvmini's structures",
            vec![path(&low)],
            vec!["overlaps kvmini's boot structures and Multiboot information at 0x500..0x80000"],
        ),
        (
            "a required video mode",
            vec![path(&video)],
            vec!["requires a video mode (Multiboot 1 flags bit 2)"],
        ),
    ]
}

/// Modules and formats that do not suit the image.
fn bad_options() -> Vec<Case> {
    let (first, _) = module_files("bad");
    // 1 MiB of zeros (sparse): more than the room above the kernel in 2 MiB of memory.
    let big = scratch("mb-big-module");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let mb1 = path(&guest("multiboot1.elf"));
    let mb2 = path(&guest("multiboot2.bin"));
    let module = |image: String, module: String| vec![image, "--module".into(), module];
    vec![
        (
            "a missing module file",
            module(mb1.clone(), "/nonexistent/module.bin".into()),
            vec!["cannot read /nonexistent/module.bin"],
        ),
        (
            "a device as a module",
            module(mb2.clone(), "/dev/zero".into()),
            vec!["/dev/zero is not a regular file: it is a character device"],
        ),
        (
            "a module that does not fit",
            [module(mb1, path(&big)), vec!["--mem".into(), "2M".into()]].concat(),
            vec![
                "(1 MiB) does not fit in 2 MiB of guest memory",
                "would start at 0x104000 and must end by 0x200000; raise --mem",
            ],
        ),
        (
            "a module for a raw image",
            module(path(&guest("hello16.bin")), path(&first)),
            vec![
                "--module applies to Multiboot kernels only",
                "is a raw image",
            ],
        ),
        (
            "a module for an ELF kernel",
            module(path(&guest("hello.elf")), path(&first)),
            vec![
                "--module applies to Multiboot kernels only",
                "is an ELF kernel",
            ],
        ),
        (
            "--format multiboot for a kernel without a header",
            vec![
                path(&guest("hello.elf")),
                "--format".into(),
                "multiboot".into(),
            ],
            vec!["has no Multiboot header"],
        ),
        (
            "--format multiboot1 for a Multiboot 2 kernel",
            vec![mb2.clone(), "--format".into(), "multiboot1".into()],
            vec!["has no Multiboot header: Multiboot 1 needs magic 0x1BADB002"],
        ),
        (
            "a raw-image option for a Multiboot kernel",
            vec![mb2, "--mode".into(), "protected".into()],
            vec![
                "--mode applies to raw images only",
                "is a Multiboot 2 kernel (--format raw boots it as raw code)",
            ],
        ),
    ]
}

#[test]
fn bad_kernels_and_options_are_refused_with_status_120() {
    if !kvm_or_skip() {
        return;
    }
    for (case, args, says) in bad_kernels().into_iter().chain(bad_options()) {
        let mut argv = vec!["run"];
        argv.extend(args.iter().map(String::as_str));
        let out = kvmini_within(&argv, HANG);
        let (stdout, stderr) = texts(&out);
        assert_eq!(status(&out), BAD_INPUT, "{case}: {stderr}");
        assert!(stdout.is_empty(), "{case}: the guest ran: {stdout}");
        for s in says {
            assert!(stderr.contains(s), "{case}: expected {s:?} in: {stderr}");
        }
    }
}
