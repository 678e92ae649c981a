//! kvmini: a tiny KVM virtual machine monitor.
//!
//! A container isolates a program with the host kernel's own features; a virtual machine
//! gives the guest its own CPU state, its own memory and its own kernel. kvmini is the second
//! idea made small. A boot, step by step:
//!
//! 1. [`config::VmConfig`] says what to run; it is checked once ([`config::VmConfig::validate`]).
//! 2. [`host::open_kvm`] opens `/dev/kvm`, checks the API version and capabilities, and
//!    `KVM_CREATE_VM` makes an empty VM.
//! 3. [`memory::create`] maps guest RAM lazily (nothing is touched until used), split around
//!    the 32-bit MMIO hole.
//! 4. [`boot::load`] tells the image format (raw, ELF, bzImage), copies it into guest memory
//!    and decides the entry state: real, protected or long mode ([`boot::Entry`]).
//! 5. [`memory::register`] hands the memory to KVM (`KVM_SET_USER_MEMORY_REGION`).
//! 6. Devices go on the port bus ([`devices::Bus`]): the 8250 UART at 0x3f8, the exit port at
//!    0xf4, the i8042 at 0x60/0x64.
//! 7. `KVM_CREATE_VCPU`, then CPUID ([`arch::x86_64::cpuid`]), and the entry state: the GDT,
//!    the identity map and the registers ([`boot::setup_entry`], [`arch::x86_64::regs`]).
//! 8. [`vcpu::Vcpu::run`] loops on `KVM_RUN`; each exit becomes a [`vcpu::VcpuEmulation`]
//!    outcome until the guest stops: by the exit port, `hlt`, a reset, a crash (with a
//!    [`crash::CrashReport`]), the serial output limit or `--timeout` ([`kick`]).
//! 9. [`vmm::RunOutcome`] carries the reason, the process exit status ([`status`]) and the
//!    statistics ([`stats::Stats`]).

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arch;
pub mod boot;
pub mod check;
pub mod config;
pub mod console;
pub mod crash;
pub mod devices;
pub mod host;
pub mod kick;
pub mod memory;
pub mod stats;
pub mod status;
pub mod vcpu;
pub mod vmm;

pub use config::VmConfig;
pub use vcpu::StopReason;
pub use vmm::{run, RunOutcome, Vmm};
