/*
 * start.S — the two ways into hello.elf, and all they need before C runs.
 *
 * hello.elf is a small 64-bit kernel, linked and loaded at 1 MiB with
 * physical address = virtual address.  A VMM can start it in two ways:
 *
 *  1. PVH, the x86/HVM direct boot ABI (Xen docs "x86/boot: PVH", headers
 *     xen/include/public/elfnote.h and arch-x86/hvm/start_info.h).  The
 *     VMM finds the XEN_ELFNOTE_PHYS32_ENTRY note below and starts the vCPU
 *     at pvh_start32 in 32-bit flat protected mode, paging off, interrupts
 *     off, EBX = guest-physical address of struct hvm_start_info, and no
 *     stack.  QEMU -M microvm -kernel, Firecracker and kvmini do this.
 *     pvh_start32 has to climb into long mode itself.
 *
 *  2. The ELF entry point (e_entry = start64).  A VMM that does not look
 *     for the note loads the PT_LOAD segments and starts the vCPU at e_entry
 *     already in 64-bit mode at CPL 0, with its own GDT and page tables
 *     identity-mapping low memory.
 *
 * Both paths switch to this file's own GDT, page tables and stack, so kmain
 * runs in the same world either way, and call
 *
 *     kmain(source, start_info_paddr)   (System V ABI: EDI, RSI)
 *
 * with source = BOOT_VIA_PVH or BOOT_VIA_64BIT_ENTRY (boot.h).
 *
 * Everything here is static: the page tables are assembled into .data with
 * .rept, and .bss (only the stack) is zeroed by the ELF loader, so no loop
 * runs before C.  That matters on hosts where ring-0 code is emulated.
 */

#include "boot.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18     /* xen/include/public/elfnote.h */

#define KERNEL_CS       0x08            /* GDT selectors, see gdt below */
#define KERNEL_DS       0x10

#define CR0_PG          (1 << 31)       /* paging */
#define CR4_PAE         (1 << 5)        /* 64-bit (PAE-format) page table entries */
#define MSR_EFER        0xc0000080      /* IA32_EFER (Intel SDM Vol. 3A §2.2.1) */
#define EFER_LME        (1 << 8)        /* long mode enable */

/* Page-table entry bits (SDM Vol. 3A §4.5, "4-Level Paging"). */
#define PTE_PRESENT     (1 << 0)
#define PTE_WRITABLE    (1 << 1)
#define PTE_PWT         (1 << 3)        /* write-through ... */
#define PTE_PCD         (1 << 4)        /* ... and cache-disable: uncached, for devices */
#define PTE_PAGE_SIZE   (1 << 7)        /* in a page-directory entry: a 2 MiB page */
#define PAGE_2M         0x200000
#define DEVICE_HOLE     0xc0000000      /* 3 GiB .. 4 GiB: where PC-like VMMs put MMIO */

/* ───────────────────────────── The PVH note ───────────────────────────────
 * An ELF note is: namesz, descsz, type (32 bits each), the name (NUL
 * included, padded to 4 bytes), the descriptor (padded to 4 bytes).  The
 * linker script puts this section in its own PT_NOTE segment, which is
 * where loaders look.  The descriptor is the 32-bit physical address of
 * pvh_start32.  (Keep this section 4-byte aligned: some loaders compute the
 * padding from the segment's alignment, not from the note format.)
 */
        .section .note.Xen, "a", @note
        .balign 4
        .long   2f - 1f                 /* namesz: "Xen\0" = 4 */
        .long   4f - 3f                 /* descsz: 4 */
        .long   XEN_ELFNOTE_PHYS32_ENTRY
1:      .asciz  "Xen"
2:      .balign 4
3:      .long   pvh_start32
4:      .balign 4

/* ─────────────────────── Entry 1: PVH, 32-bit ─────────────────────────────
 * Reached in 32-bit protected mode, paging off, CS/DS/ES/SS flat (selector
 * values unspecified), EBX = &hvm_start_info.  The recipe is the SDM's
 * "Initializing IA-32e Mode" (Vol. 3A §9.8.5 in most editions).
 * EBX is left alone all the way to the call of kmain.
 */
        .section .text.boot, "ax", @progbits
        .code32
        .globl  pvh_start32
        .type   pvh_start32, @function
pvh_start32:
        cli                             /* already clear per the ABI; no IDT exists */
        cld

        /* Our own GDT: the VMM's one is unspecified and may vanish.  In
         * 32-bit code LGDT reads a 32-bit base: the low half of gdtr's. */
        lgdt    gdtr
        mov     $KERNEL_DS, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss
        mov     %eax, %fs
        mov     %eax, %gs

        /* PAE, then CR3, then EFER.LME, then CR0.PG: the SDM's order. */
        mov     %cr4, %eax
        or      $CR4_PAE, %eax
        mov     %eax, %cr4

        mov     $pml4, %eax
        mov     %eax, %cr3

        mov     $MSR_EFER, %ecx
        rdmsr                           /* EDX:EAX = EFER; keep the other bits */
        or      $EFER_LME, %eax
        wrmsr

        mov     %cr0, %eax              /* PE is already set (protected mode) */
        or      $CR0_PG, %eax
        mov     %eax, %cr0              /* long mode is active (EFER.LMA = 1) ... */

        ljmp    $KERNEL_CS, $pvh_long_mode  /* ... 64-bit once CS has L = 1 */

        .code64
pvh_long_mode:
        mov     $boot_stack_top, %rsp
        mov     $BOOT_VIA_PVH, %edi
        /* A 32-bit move: it zero-extends, and the upper halves of registers
         * are undefined after the switch from compatibility mode. */
        mov     %ebx, %esi
        call    kmain
        jmp     park

/* ─────────────────────── Entry 2: e_entry, 64-bit ─────────────────────────
 * Reached in 64-bit mode at CPL 0 with the VMM's GDT, page tables and
 * (maybe) stack.  The VMM's page tables must map this image 1:1, since it
 * is linked at its physical address and e_entry is one; ours do too, so
 * switching CR3 while running here is safe.  Afterwards the 4 GiB map below
 * is in force, as on the PVH path.  (4-level paging is assumed, as every
 * VMM sets it up: CR4.LA57 = 0.)
 */
        .globl  start64
        .type   start64, @function
start64:
        cli
        cld
        lgdt    gdtr                    /* 64-bit code: LGDT reads the full 64-bit base */
        mov     $pml4, %eax             /* zero-extends into RAX */
        mov     %rax, %cr3
        mov     $boot_stack_top, %rsp

        /* CS still holds the VMM's selector.  There is no far JMP with an
         * immediate 64-bit target, so reload CS with a far return. */
        pushq   $KERNEL_CS
        pushq   $1f
        lretq
1:
        mov     $KERNEL_DS, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss
        mov     %eax, %fs
        mov     %eax, %gs

        mov     $BOOT_VIA_64BIT_ENTRY, %edi
        xor     %esi, %esi              /* no hvm_start_info on this path */
        call    kmain

        /* kmain does not return; should it ever, stop here. */
park:
        cli
        hlt
        jmp     park

/* ──────────────────────────────── The GDT ─────────────────────────────────
 * Descriptor layout: SDM Vol. 3A §3.4.5; the L bit: §5.2.1.  In 64-bit
 * mode base and limit are ignored, but the descriptors must still be
 * present and of the right type.
 */
        .section .data, "aw", @progbits
        .balign 8
gdt:
        .quad   0                       /* 0x00: null descriptor */
        .quad   0x00af9a000000ffff      /* 0x08: code, P, DPL 0, exec/read, L = 1, D = 0 */
        .quad   0x00cf92000000ffff      /* 0x10: data, P, DPL 0, read/write, 4 GiB flat */
gdt_end:

        /* LGDT operand: 16-bit limit, then the base (8 bytes; 32-bit code
         * reads only the low 4, which is the whole address here). */
gdtr:
        .word   gdt_end - gdt - 1
        .quad   gdt

/* ───────────────────────────── Page tables ────────────────────────────────
 * Identity map of the first 4 GiB with 2 MiB pages:
 *
 *   CR3 → PML4[0] → PDPT[0..3] → 4 page directories × 512 entries × 2 MiB
 *
 * 4 GiB rather than just the kernel: hvm_start_info and the memory map can
 * be anywhere below 4 GiB, and QEMU microvm's reset register is at
 * 0xfea00202.  The top GiB (the device hole) is mapped uncached.
 * Filled in by the assembler: 24 KiB of file, not a loop at boot.
 */
        .balign 4096
pml4:
        .quad   pdpt + PTE_PRESENT + PTE_WRITABLE
        .fill   511, 8, 0
pdpt:
        .set    i, 0
        .rept   4
        .quad   pd + i * 4096 + PTE_PRESENT + PTE_WRITABLE
        .set    i, i + 1
        .endr
        .fill   508, 8, 0
pd:
        .set    addr, 0
        .rept   4 * 512
        .if     addr < DEVICE_HOLE
        .quad   addr + PTE_PRESENT + PTE_WRITABLE + PTE_PAGE_SIZE
        .else
        .quad   addr + PTE_PRESENT + PTE_WRITABLE + PTE_PAGE_SIZE + PTE_PCD + PTE_PWT
        .endif
        .set    addr, addr + PAGE_2M
        .endr

/* ─────────────────────────────── The stack ────────────────────────────────
 * In .bss: takes no room in the file; the ELF loader provides zeroed
 * memory for it.  16-byte aligned, as the System V ABI wants at a call.
 */
        .section .bss, "aw", @nobits
        .balign 16
boot_stack:
        .skip   16384
boot_stack_top:

        /* This object needs no executable stack. */
        .section .note.GNU-stack, "", @progbits
