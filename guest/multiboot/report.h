/*
 * report.h — what the Multiboot guests print, one line per fact, the same
 * for both protocols (report.c):
 *
 *   multiboot1: magic 0x2badb002
 *   boot loader: kvmini
 *   cmdline: <the command line>
 *   memory: lower 639 KiB, upper 15360 KiB
 *   mmap: 0x0000000000000000 0x000000000009fc00 type 1
 *   module: 0x00101000 size 27 sum 0x00000a1b head 68656c6c6f20776f string 'first arg'
 *   modules: N
 *   multiboot1: done
 *
 * `sum` adds the module's bytes (at most its first 64 KiB: ring-0 code is
 * slow where it is emulated), `head` is its first 8 bytes (fewer if it is
 * shorter).
 */
#ifndef KVMINI_GUEST_MULTIBOOT_REPORT_H
#define KVMINI_GUEST_MULTIBOOT_REPORT_H

#include <stdint.h>

/* Exit statuses: the run ends with 10 + the protocol (11 or 12) when the
 * magic was right, with BAD_MAGIC when it was not. */
#define EXIT_OK_BASE    10
#define EXIT_BAD_MAGIC  1

void report_magic(int version, uint32_t magic, uint32_t expected);
void report_string(const char *label, const char *s);
void report_memory(uint32_t lower, uint32_t upper);
void report_mmap(uint64_t base, uint64_t length, uint32_t type);
void report_module(uint32_t start, uint32_t end, const char *string);
void report_count(const char *label, uint32_t n);
void report_done(int version, int status) __attribute__((noreturn));

#endif
