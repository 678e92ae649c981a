//! x86-64 set-up as pure functions over guest memory and register structures. Nothing here
//! needs `/dev/kvm`, so all of it is unit-tested.

pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod paging;
pub mod regs;
