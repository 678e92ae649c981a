//! A test kernel that fails on purpose, to show what a failure looks like:
//! `cargo test --features failing --test failing` reports it and exits non-zero.

#![no_std]
#![no_main]

fn passes() {
    assert!(core::hint::black_box(1) < 2);
}

fn fails() {
    let answer = core::hint::black_box(41);
    assert_eq!(answer, 42, "the answer is off by one");
}

fn never_runs() {}

kernel_tests::kernel_main!(passes, fails, never_runs);
