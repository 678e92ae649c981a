use super::*;

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("fuzz/regressions/{name}: no such fuzz target"))
}

/// Every crash a fuzz target found is kept in `fuzz/regressions/<target>/` and must run
/// clean through the same entry point.
#[test]
fn saved_fuzz_crashes_run_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut ran = 0;
    for dir in std::fs::read_dir(&root).expect("fuzz/regressions") {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let run = target(&dir.file_name().unwrap().to_string_lossy());
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".gitkeep") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| run(&bytes));
            assert!(result.is_ok(), "{} panics again", path.display());
            ran += 1;
        }
    }
    eprintln!("{ran} saved fuzz inputs ran clean");
}

/// Each target takes the inputs a fuzzer starts from: nothing, zeros, ones.
#[test]
fn every_target_takes_trivial_inputs() {
    for (_, run) in TARGETS {
        for input in [&[][..], &[0; 64], &[0xff; 64]] {
            run(input);
        }
    }
}

/// A seed for the image target is an image behind 12 zero bytes: detected, loaded into
/// the default memory.
#[test]
fn the_image_target_loads_an_image_behind_a_zero_header() {
    let mut input = vec![0u8; 12];
    input.extend([0xfa, 0xf4]);
    assert_eq!(image_run(&input).as_deref(), Some("raw image, real mode"));
    input[0] = 0x09;
    assert_eq!(image_run(&input).as_deref(), Some("raw image, long mode"));
    let elf = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build/hello.elf");
    if let Ok(bytes) = std::fs::read(elf) {
        let mut input = vec![0u8; 12];
        input.extend(bytes);
        let summary = image_run(&input).expect("hello.elf loads");
        assert!(summary.starts_with("ELF"), "{summary}");
    }
}

/// The virtio target reaches the devices' work: a set-up queue and a chain get an answer.
#[test]
fn the_virtio_target_drives_a_device_to_work() {
    // rng; queue 0 of 16 at 0x1000/0x2000/0x3000; DRIVER_OK; one writable chain of 64
    // bytes at 0x10000; the I/O thread's turn.
    let mut input = vec![0u8];
    input.extend([3, 0, 16, 0, 0x00, 0x01, 0x00, 0x02, 0x00, 0x03]);
    input.push(4);
    input.extend([5, 0, 0]);
    input.extend(0x10000u32.to_le_bytes());
    input.extend(64u16.to_le_bytes());
    input.push(2);
    input.push(6);
    assert_eq!(virtio_run(&input), 1);
}
