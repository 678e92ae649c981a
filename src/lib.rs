//! kvmini: a tiny KVM virtual machine monitor.
//!
//! A container isolates a program with the host kernel's own features; a virtual machine
//! gives the guest its own CPU state, its own memory and its own kernel. kvmini is the second
//! idea made small. A boot, step by step (each step is one call in [`Vmm::new`], in
//! `src/vmm/mod.rs`; `docs/tour.md` follows two real boots through them with `--trace` and
//! `strace`):
//!
//! 1. [`VmConfig`] says what to run; it is checked once ([`VmConfig::validate`]). With
//!    `--trace` its destination is opened now (`vmm::build::open_trace`).
//! 2. `host::open_kvm` opens `/dev/kvm`, checks the API version and capabilities, and
//!    `KVM_CREATE_VM` makes an empty VM.
//! 3. `boot::open` tells what the image is (raw, ELF, bzImage, Multiboot) from its first
//!    bytes and reads its headers; the options are checked against it
//!    ([`VmConfig::validate_for_image`]).
//!    For a Linux kernel, `host::Workarounds` says once what this host needs on top.
//! 4. `memory::create` maps guest RAM lazily (nothing is touched until used), split around
//!    the 32-bit MMIO hole: guest-physical memory is kvmini's own anonymous memory.
//! 5. `boot::load` copies the image into guest memory with what its boot protocol needs
//!    (command line, initrd or modules, zero page, PVH start info or Multiboot information)
//!    and decides the entry state: real, protected or long mode.
//! 6. `memory::register` hands the memory to KVM (`KVM_SET_USER_MEMORY_REGION`).
//! 7. Linux gets a PC: in-kernel interrupt controllers, the PIT and an MP table.
//! 8. Devices go on the port bus, each under a name: the 8250 UART at 0x3f8 (`serial`), the
//!    exit port at 0xf4 (`exit-port`), the debug port at 0x80 (`debug-port`), the i8042 at
//!    0x60/0x64 (`i8042`); virtio devices on the MMIO bus (`virtio-blk@0xd0000000`).
//! 9. `KVM_CREATE_VCPU` for each vCPU, its CPUID, and for the first the entry state: the GDT,
//!    the identity map and the registers. With `--trace`, each vCPU gets a tracer.
//! 10. [`Vmm::run`] puts each thread under its seccomp filter (when the sandbox is on) and
//!     runs each vCPU's loop on `KVM_RUN`; every exit goes through one dispatch to an
//!     outcome (through the vCPU's tracer, which writes a line for it, with `--trace`; see
//!     [`trace`]), until the guest stops: by the exit port, `hlt`, a reset, a crash (with a
//!     [`crash::CrashReport`]), the serial output limit or the timeout.
//! 11. [`RunOutcome`] carries the [`StopReason`], the process exit status ([`status`]) and the
//!     statistics ([`stats::Stats`]).
//!
//! With `--gdb` ([`config::GdbConfig`]) a GDB thread serves a remote debugger, and the vCPU
//! stops for it (`gdb/`, docs/gdb.md).
//!
//! `kvmini check` is [`check::run`]: whether KVM works here and what kind of host this is.

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod arch;
mod boot;
pub mod check;
pub mod config;
mod console;
pub mod crash;
mod device_access;
mod devices;
mod files;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod gdb;
mod host;
mod kick;
mod memory;
mod sandbox;
mod signal;
mod snapshot;
pub mod stats;
pub mod status;
mod stop;
pub mod trace;
mod vcpu;
mod vmm;

pub use config::RestoreConfig;
pub use config::VmConfig;
pub use devices::serial::WriteFailure;
pub use stop::StopReason;
pub use vmm::{run, Error, RunOutcome, Vmm};
