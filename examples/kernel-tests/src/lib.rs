//! Support code for x86-64 test kernels that run under kvmini: the entry point, the serial
//! port, the exit device, the panic handler and a small test harness.
//!
//! A test kernel is a test target with `harness = false` that names its test functions:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! fn adds() { assert_eq!(2 + 2, 4); }
//!
//! kernel_tests::kernel_main!(adds);
//! ```
//!
//! What the kernel may rely on when it starts: kvmini enters an ELF64 file that has no PVH
//! note the way Linux's 64-bit boot protocol says (Documentation/arch/x86/boot.rst, "64-bit
//! Boot Protocol"): long mode, paging on with the memory it was loaded into identity-mapped,
//! interrupts off, RSI = the zero page (`struct boot_params`). Nothing else: the stack, the
//! SSE state and the direction flag are the kernel's own business. src/entry.rs sets them up
//! and runs the tests at ring 3 (natively, even where KVM emulates ring-0 code); the serial
//! port and the exit device are reached from there by port I/O (IOPL 3).

#![no_std]

mod entry;
pub mod exit;
pub mod harness;
mod mem;
pub mod serial;

use core::panic::PanicInfo;

/// A panic anywhere in the kernel fails the run: the message on the serial port, then the
/// failure code through the exit device.
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    harness::fail(info)
}
