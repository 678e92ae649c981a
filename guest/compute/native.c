/*
 * native.c — compute-native: the `compute` workload as a static Linux
 * program, for the container and for the plain host process.
 *
 * Prints "checksum=<hex> cycles=<rdtsc delta>" and exits 0, like the kvmini
 * guest compute.bin.  Freestanding: no C library, raw system calls (x86-64
 * Linux ABI: number in RAX, arguments in RDI, RSI, RDX).
 */

#include "checksum.h"

#include "linux_sys.h"

void native_main(long *sp) __attribute__((noreturn, used));

void native_main(long *sp)
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
    (void)sp;
    sys_exit(done == len ? 0 : 1);
}

LINUX_START(native_main);
