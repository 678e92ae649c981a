#![no_main]
//! See `kvmini::fuzzing::image` for what it runs and how it reads its input.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvmini::fuzzing::image(data));
