/*
 * mb1.c — the Multiboot 1 guests' kernel: reads the multiboot_info that EBX
 * points at and prints what it holds (report.h), in the order report.h
 * shows, each part only when its flags bit says it is there.
 *
 * Source of truth: the Multiboot Specification 0.6.96, 3.3 "Boot
 * information format".
 */

#include <stddef.h>
#include <stdint.h>

#include "report.h"

#define MB1_BOOT_MAGIC          0x2badb002u

#define INFO_MEMORY             (1u << 0)
#define INFO_CMDLINE            (1u << 2)
#define INFO_MODS               (1u << 3)
#define INFO_MEM_MAP            (1u << 6)
#define INFO_BOOT_LOADER_NAME   (1u << 9)

struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;
    uint32_t mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count;
    uint32_t mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length;
    uint32_t mmap_addr;
    uint32_t drives_length;
    uint32_t drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
};

struct multiboot_mod {
    uint32_t mod_start;
    uint32_t mod_end;
    uint32_t string;
    uint32_t reserved;
};

/* A memory map entry: `size` counts the bytes after itself (20 here). */
struct multiboot_mmap {
    uint32_t size;
    uint64_t base_addr;
    uint64_t length;
    uint32_t type;
} __attribute__((packed));

_Static_assert(offsetof(struct multiboot_info, mmap_addr) == 48, "multiboot_info ABI");
_Static_assert(offsetof(struct multiboot_info, boot_loader_name) == 64, "multiboot_info ABI");
_Static_assert(sizeof(struct multiboot_mmap) == 24, "mmap entry ABI");

void kmain(uint32_t magic, uint32_t info_addr) __attribute__((noreturn));

void kmain(uint32_t magic, uint32_t info_addr)
{
    const struct multiboot_info *info = (const struct multiboot_info *)info_addr;

    report_magic(1, magic, MB1_BOOT_MAGIC);
    if (magic != MB1_BOOT_MAGIC)
        report_done(1, EXIT_BAD_MAGIC);
    if (info->flags & INFO_BOOT_LOADER_NAME)
        report_string("boot loader", (const char *)info->boot_loader_name);
    if (info->flags & INFO_CMDLINE)
        report_string("cmdline", (const char *)info->cmdline);
    if (info->flags & INFO_MEMORY)
        report_memory(info->mem_lower, info->mem_upper);
    if (info->flags & INFO_MEM_MAP) {
        uint32_t at = info->mmap_addr;

        while (at < info->mmap_addr + info->mmap_length) {
            const struct multiboot_mmap *e = (const struct multiboot_mmap *)at;

            report_mmap(e->base_addr, e->length, e->type);
            at += e->size + 4;
        }
    }
    if (info->flags & INFO_MODS) {
        const struct multiboot_mod *mods = (const struct multiboot_mod *)info->mods_addr;

        for (uint32_t i = 0; i < info->mods_count; i++)
            report_module(mods[i].mod_start, mods[i].mod_end, (const char *)mods[i].string);
        report_count("modules", info->mods_count);
    }
    report_done(1, EXIT_OK_BASE + 1);
}
