#![no_main]
//! See `kvmini::fuzzing::boot_args` for what it runs and how it reads its input.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvmini::fuzzing::boot_args(data));
