//! `_start`: where kvmini enters the kernel (the ELF entry point, placed first in .text by
//! kernel.ld). It runs at ring 0 only long enough to set up the machine, then calls
//! `kernel_main` (which each test kernel defines with [`crate::kernel_main!`]) at ring 3.
//!
//! What it sets up, relying on nothing the boot protocol does not promise:
//!
//! - A stack of its own: the protocol promises none.
//! - A GDT of its own, with ring-0 and ring-3 code and data segments.
//! - Page tables of its own: the first GiB identity-mapped with 2 MiB pages that ring 3 may
//!   use (the protocol's identity map is the loader's, with no promise about user access).
//! - SSE on: code built for the x86_64-unknown-linux-gnu target uses SSE registers (core's
//!   formatting and string code does, and so does the compiler to move 16 bytes at a time);
//!   with CR4.OSFXSR clear every SSE instruction faults. As Linux does early on: CR0.EM
//!   clear, CR0.MP and CR4.OSFXSR|OSXMMEXCPT set (Intel SDM vol. 3A, 13.1.3).
//! - The direction flag clear, as the System V ABI expects at every call.
//!
//! Why ring 3: there the tests run natively on any KVM host. On a host where KVM emulates
//! guest ring-0 code instruction by instruction (`kvmini check` says `kvm_pvm`) ring-0 code
//! runs about 1,000 times slower, and the emulator cannot run most SSE instructions, which
//! `core` uses. RFLAGS.IOPL = 3 lets ring 3 reach the serial port and the exit device.
//!
//! Not needed: turning off the red zone (the 128 bytes below RSP that leaf functions may use)
//! matters only when interrupts or exceptions can land on the stack in use. These kernels run
//! with interrupts off and no IDT (an exception ends the VM with a triple fault, which kvmini
//! reports as a crash, status 122), so nothing ever does; a kernel that takes interrupts
//! needs a target without a red zone (x86_64-unknown-none), which the host target is not.
//! Soft-float likewise matters only for saving SSE state around interrupts.

/// Size of the stack.
const STACK_SIZE: usize = 64 * 1024;

/// Segment selectors in the GDT below; ring-3 ones carry RPL 3.
const KERNEL_CODE: usize = 0x08;
const KERNEL_DATA: usize = 0x10;
const USER_DATA: usize = 0x18 | 3;
const USER_CODE: usize = 0x20 | 3;

/// RFLAGS for ring 3: the reserved bit 1 and IOPL = 3 (port I/O allowed); interrupts off.
const USER_RFLAGS: usize = 0x3002;

core::arch::global_asm!(
    // The stack, in .bss.
    ".section .bss.stack, \"aw\", @nobits",
    ".balign 16",
    ".Lstack_bottom:",
    ".skip {stack_size}",
    ".Lstack_top:",
    // The GDT: null, ring-0 code (64-bit) and data, ring-3 data and code (64-bit).
    ".section .rodata.gdt, \"a\"",
    ".balign 16",
    ".Lgdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",
    ".quad 0x00cf92000000ffff",
    ".quad 0x00cff2000000ffff",
    ".quad 0x00affa000000ffff",
    ".Lgdt_end:",
    ".Lgdt_pointer:",
    ".word .Lgdt_end - .Lgdt - 1",
    ".quad .Lgdt",
    // Page tables: PML4 -> one PDPT -> one page directory of 512 2 MiB pages, each present,
    // writable and user (0x7; 0x87 with the page-size bit).
    ".section .data.page_tables, \"aw\"",
    ".balign 4096",
    ".Lpml4:",
    ".quad .Lpdpt + 0x7",
    ".fill 511, 8, 0",
    ".Lpdpt:",
    ".quad .Lpd + 0x7",
    ".fill 511, 8, 0",
    ".Lpd:",
    ".set .Lpage, 0",
    ".rept 512",
    ".quad .Lpage + 0x87",
    ".set .Lpage, .Lpage + 0x200000",
    ".endr",
    // The entry point.
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "cli",
    "cld",
    "lea rsp, [rip + .Lstack_top]",
    // CR0: EM (bit 2) off, MP (bit 1) on. CR4: OSFXSR (bit 9) and OSXMMEXCPT (bit 10) on.
    "mov rax, cr0",
    "and rax, -5",
    "or rax, 2",
    "mov cr0, rax",
    "mov rax, cr4",
    "or rax, 0x600",
    "mov cr4, rax",
    // The GDT, then CS through a far return and the data segments.
    "lgdt [rip + .Lgdt_pointer]",
    "push {kernel_code}",
    "lea rax, [rip + .Lreload_cs]",
    "push rax",
    "retfq",
    ".Lreload_cs:",
    "mov ax, {kernel_data}",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "lea rax, [rip + .Lpml4]",
    "mov cr3, rax",
    // Ring 3 at kernel_main, through the frame iretq takes: SS, RSP, RFLAGS, CS, RIP. RSP
    // is 8 below a 16-byte boundary, as right after a call.
    "lea rax, [rip + .Lstack_top - 8]",
    "push {user_data}",
    "push rax",
    "push {user_rflags}",
    "push {user_code}",
    "lea rax, [rip + kernel_main]",
    "push rax",
    "iretq",
    stack_size = const STACK_SIZE,
    kernel_code = const KERNEL_CODE,
    kernel_data = const KERNEL_DATA,
    user_data = const USER_DATA,
    user_code = const USER_CODE,
    user_rflags = const USER_RFLAGS,
);
