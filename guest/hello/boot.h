/*
 * boot.h — what start.S tells kmain.c, shared by both so they cannot drift.
 *
 * kmain(source, start_info_paddr) is called with `source` saying which entry
 * point of hello.elf the VMM used.
 */
#ifndef HELLO_BOOT_H
#define HELLO_BOOT_H

#define BOOT_VIA_64BIT_ENTRY 0  /* e_entry, started directly in long mode */
#define BOOT_VIA_PVH         1  /* the PVH note's 32-bit entry */

#endif
