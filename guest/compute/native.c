/*
 * native.c — compute-native: the `compute` workload as a static Linux
 * program, for the container and for the plain host process.
 *
 * Prints "checksum=<hex> cycles=<rdtsc delta>" and exits 0, like the kvmini
 * guest compute.bin.  Freestanding: no C library, raw system calls (x86-64
 * Linux ABI: number in RAX, arguments in RDI, RSI, RDX).
 */

#include "checksum.h"

#define SYS_write       1
#define SYS_exit_group  231

static long syscall3(long nr, long a, long b, long c)
{
    long ret;

    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

void native_main(void) __attribute__((noreturn, used));

void native_main(void)
{
    char line[COMPUTE_LINE_MAX];
    uint64_t start = compute_rdtsc();
    uint64_t sum = compute_checksum();
    uint64_t cycles = compute_rdtsc() - start;
    long len = compute_format(line, sum, cycles);
    long done = 0;

    while (done < len) {
        long n = syscall3(SYS_write, 1, (long)(line + done), len - done);
        if (n <= 0)
            break;
        done += n;
    }
    for (;;)
        syscall3(SYS_exit_group, done == len ? 0 : 1, 0, 0);
}

/* The kernel enters at _start with RSP 16-byte aligned; a call keeps the ABI. */
__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    and $-16, %rsp\n"
        "    call native_main\n"
        "    ud2\n");
