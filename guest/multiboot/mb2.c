/*
 * mb2.c — the Multiboot 2 guests' kernel: walks the boot information tags
 * that EBX points at and prints what they hold (report.h) in the order
 * report.h shows, whatever order the tags come in.
 *
 * Source of truth: the Multiboot2 Specification 2.0, 3.6 "Boot
 * information".
 */

#include <stdint.h>

#include "report.h"

#define MB2_BOOT_MAGIC          0x36d76289u

#define TAG_END                 0
#define TAG_CMDLINE             1
#define TAG_BOOT_LOADER_NAME    2
#define TAG_MODULE              3
#define TAG_BASIC_MEMINFO       4
#define TAG_MMAP                6

struct tag {
    uint32_t type;
    uint32_t size;
};

struct tag_string {                     /* TAG_CMDLINE, TAG_BOOT_LOADER_NAME */
    struct tag tag;
    char string[];
};

struct tag_module {
    struct tag tag;
    uint32_t mod_start;
    uint32_t mod_end;
    char string[];
};

struct tag_meminfo {
    struct tag tag;
    uint32_t mem_lower;
    uint32_t mem_upper;
};

struct mmap_entry {
    uint64_t base_addr;
    uint64_t length;
    uint32_t type;
    uint32_t reserved;
};

struct tag_mmap {
    struct tag tag;
    uint32_t entry_size;
    uint32_t entry_version;
    struct mmap_entry entries[];
};

/* The tag after `t`: tags start on 8-byte boundaries. */
static const struct tag *next(const struct tag *t)
{
    return (const struct tag *)(((uint32_t)t + t->size + 7) & ~7u);
}

/* The first tag of `type` at or after `t`, or NULL at the end tag. */
static const struct tag *find(const struct tag *t, uint32_t type)
{
    for (; t->type != TAG_END; t = next(t))
        if (t->type == type)
            return t;
    return 0;
}

void kmain(uint32_t magic, uint32_t info_addr) __attribute__((noreturn));

void kmain(uint32_t magic, uint32_t info_addr)
{
    /* total_size and reserved, then the tags. */
    const struct tag *tags = (const struct tag *)(info_addr + 8);
    const struct tag *t;
    uint32_t count = 0;

    report_magic(2, magic, MB2_BOOT_MAGIC);
    if (magic != MB2_BOOT_MAGIC)
        report_done(2, EXIT_BAD_MAGIC);
    if ((t = find(tags, TAG_BOOT_LOADER_NAME)))
        report_string("boot loader", ((const struct tag_string *)t)->string);
    if ((t = find(tags, TAG_CMDLINE)))
        report_string("cmdline", ((const struct tag_string *)t)->string);
    if ((t = find(tags, TAG_BASIC_MEMINFO))) {
        const struct tag_meminfo *m = (const struct tag_meminfo *)t;

        report_memory(m->mem_lower, m->mem_upper);
    }
    if ((t = find(tags, TAG_MMAP))) {
        const struct tag_mmap *m = (const struct tag_mmap *)t;
        uint32_t at = (uint32_t)m->entries;

        for (; at + m->entry_size <= (uint32_t)t + t->size; at += m->entry_size) {
            const struct mmap_entry *e = (const struct mmap_entry *)at;

            report_mmap(e->base_addr, e->length, e->type);
        }
    }
    for (t = find(tags, TAG_MODULE); t; t = find(next(t), TAG_MODULE)) {
        const struct tag_module *m = (const struct tag_module *)t;

        report_module(m->mod_start, m->mod_end, m->string);
        count++;
    }
    report_count("modules", count);
    report_done(2, EXIT_OK_BASE + 2);
}
