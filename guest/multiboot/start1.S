/*
 * start1.S — the Multiboot 1 header and entry of multiboot1.elf and
 * multiboot1-aout.bin (built with -DAOUT_KLUDGE).
 *
 * The Multiboot Specification 0.6.96, 3.1.1 "The layout of Multiboot
 * header": magic, flags, checksum, then (flags bit 16) the address fields.
 * Flags: bit 0, modules page-aligned; bit 1, memory information.  The ELF
 * variant has no address fields, so the boot loader reads the ELF program
 * headers; the a.out variant has them, so it loads the flat file by them.
 *
 * Entry (3.2 "Machine state"): 32-bit protected mode, paging off,
 * interrupts off, EAX = 0x2BADB002, EBX = the multiboot_info's address;
 * ESP is undefined, so this sets its own stack before calling
 *
 *     kmain(magic, info)   (cdecl: both on the stack)
 */

#define MB1_MAGIC        0x1badb002
#define MB1_PAGE_ALIGN   (1 << 0)
#define MB1_MEMORY_INFO  (1 << 1)
#define MB1_ADDRESS      (1 << 16)

#ifdef AOUT_KLUDGE
#define MB1_FLAGS        (MB1_PAGE_ALIGN | MB1_MEMORY_INFO | MB1_ADDRESS)
#else
#define MB1_FLAGS        (MB1_PAGE_ALIGN | MB1_MEMORY_INFO)
#endif

        .section .multiboot, "a"
        .balign 4
mb1_header:
        .long   MB1_MAGIC
        .long   MB1_FLAGS
        .long   0x100000000 - (MB1_MAGIC + MB1_FLAGS)
#ifdef AOUT_KLUDGE
        .long   mb1_header              /* header_addr */
        .long   _load_start             /* load_addr */
        .long   _load_end               /* load_end_addr */
        .long   _bss_end                /* bss_end_addr */
        .long   _start                  /* entry_addr */
#endif

#include "entry.S"
