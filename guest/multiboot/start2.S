/*
 * start2.S — the Multiboot 2 header and entry of multiboot2.bin (built with
 * -DAOUT_KLUDGE: address and entry address tags) and multiboot2.elf
 * (without them: loaded by its ELF program headers, entered at e_entry).
 *
 * The Multiboot2 Specification 2.0, 3.1 "OS image format": magic,
 * architecture (0, i386), header_length, checksum, then 8-byte aligned
 * tags, each type (16 bits), flags (16 bits, bit 0 = optional), size
 * (32 bits), up to the end tag.  The information request is required: a
 * boot loader that cannot give those tags must refuse the kernel.
 *
 * Entry (3.3 "Machine state"): as for Multiboot 1, with EAX = 0x36D76289
 * and EBX = the boot information's address (8-byte aligned).
 */

#define MB2_MAGIC        0xe85250d6
#define MB2_ARCH_I386    0

        .section .multiboot, "a"
        .balign 8
mb2_header:
        .long   MB2_MAGIC
        .long   MB2_ARCH_I386
        .long   mb2_header_end - mb2_header
        .long   0x100000000 - (MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header))

#ifdef AOUT_KLUDGE
        .balign 8                       /* address tag */
        .short  2, 0
        .long   24
        .long   mb2_header              /* header_addr */
        .long   _load_start             /* load_addr */
        .long   _load_end               /* load_end_addr */
        .long   _bss_end                /* bss_end_addr */

        .balign 8                       /* entry address tag */
        .short  3, 0
        .long   12
        .long   _start
#endif

        .balign 8                       /* information request: what kmain reads */
        .short  1, 0
        .long   8 + 5 * 4
        .long   1, 2, 3, 4, 6           /* cmdline, loader name, modules, meminfo, mmap */

        .balign 8                       /* modules page-aligned */
        .short  6, 0
        .long   8

        .balign 8                       /* end tag */
        .short  0, 0
        .long   8
mb2_header_end:

#include "entry.S"
