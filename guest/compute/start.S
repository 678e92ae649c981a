/*
 * start.S — the ring-0 part of compute.bin: everything before ring 3.
 *
 * compute.bin is a raw 64-bit guest: `kvmini run compute.bin --mode long`
 * loads it at 1 MiB and enters its first byte at CPL 0, with kvmini's GDT
 * and identity map and interrupts off.  Those page tables are supervisor
 * only, and kvmini's GDT has no ring-3 segments, so this file brings both:
 *
 *   - a GDT with 64-bit code and data segments for ring 0 and ring 3
 *     (Intel SDM Vol. 3A §3.4.5, §5.2.1);
 *   - page tables mapping the first 1 GiB with 2 MiB pages that ring 3 may
 *     use: the U/S bit set at every level (SDM Vol. 3A §4.5, §4.6);
 *
 * loads them, and leaves ring 0 with IRETQ to vm_main at CPL 3 with
 * RFLAGS.IOPL = 3, so that IN and OUT to the UART and the exit port are
 * allowed in ring 3 (SDM Vol. 1 §18.5.1) and the guest needs no TSS I/O
 * bitmap.  Interrupts stay off; there is no IDT, and ring 3 never comes
 * back: it ends the VM through port 0xf4.
 *
 * Every table is assembled (.rept), not computed, and the ring-0 path is a
 * handful of instructions with no loop: on a host that emulates guest ring 0
 * (kvm_pvm) each of them costs about a microsecond, while ring-3 code runs
 * natively.
 */

#define KERNEL_CS       0x08
#define KERNEL_DS       0x10
#define USER_DS         (0x18 | 3)      /* RPL 3 */
#define USER_CS         (0x20 | 3)

#define RFLAGS_RESERVED (1 << 1)        /* bit 1 always reads as 1 */
#define RFLAGS_IOPL3    (3 << 12)

#define PTE_PRESENT     (1 << 0)
#define PTE_WRITABLE    (1 << 1)
#define PTE_USER        (1 << 2)
#define PTE_PAGE_SIZE   (1 << 7)        /* in a page-directory entry: a 2 MiB page */
#define PTE_TABLE       (PTE_PRESENT | PTE_WRITABLE | PTE_USER)

#define USER_STACK_SIZE 16384

        .section .text.entry, "ax"
        .code64
        .globl _start
_start:
        cli
        lgdt    gdt_descriptor
        mov     $pml4, %eax
        mov     %rax, %cr3              /* our tables map this code too: identity, 1 GiB */

        /* An interrupt-return frame for CPL 3: SS, RSP, RFLAGS, CS, RIP. */
        pushq   $USER_DS
        pushq   $(user_stack_top - 8)   /* as if vm_main had been called */
        pushq   $(RFLAGS_RESERVED | RFLAGS_IOPL3)
        pushq   $USER_CS
        pushq   $vm_main
        iretq

        .section .data.tables, "aw"
        .balign 8
gdt:
        .quad   0                       /* null */
        .quad   0x00af9a000000ffff      /* 0x08 ring-0 code, 64-bit */
        .quad   0x00cf92000000ffff      /* 0x10 ring-0 data */
        .quad   0x00cff2000000ffff      /* 0x18 ring-3 data (DPL 3) */
        .quad   0x00affa000000ffff      /* 0x20 ring-3 code, 64-bit (DPL 3) */
gdt_end:

        .balign 8
gdt_descriptor:
        .word   gdt_end - gdt - 1
        .quad   gdt

        .balign 4096
pml4:
        .quad   pdpt + PTE_TABLE
        .fill   511, 8, 0
pdpt:
        .quad   pd + PTE_TABLE
        .fill   511, 8, 0
pd:                                     /* 512 x 2 MiB = the first 1 GiB */
        .set    page, 0
        .rept   512
        .quad   (page << 21) | PTE_TABLE | PTE_PAGE_SIZE
        .set    page, page + 1
        .endr

        .section .bss.stack, "aw", @nobits
        .balign 16
user_stack:
        .skip   USER_STACK_SIZE
user_stack_top:

        .section .note.GNU-stack, "", @progbits
