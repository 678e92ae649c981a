/*
 * checksum.h — the CPU-bound work that `kvmini compare`'s `compute` workload
 * runs, and the one line both of its programs print.
 *
 * checksum.c is compiled once into one object file that is linked into both
 * programs: compute-native (a static Linux program, for the container and the
 * plain host process) and compute.bin (a raw kvmini guest that runs it in
 * ring 3).  So the machine code that does the work is byte for byte the same
 * on every side; only what starts it differs.
 */

#ifndef COMPUTE_CHECKSUM_H
#define COMPUTE_CHECKSUM_H

#include <stdint.h>

/* The buffer the checksum walks: small enough to stay in the L2 cache. */
#define COMPUTE_BUF_SIZE        (64 * 1024)
/* Passes over the buffer: about 0.2 s of work on a current x86 core. */
#define COMPUTE_ROUNDS          12000
/* Longest line compute_format writes, NUL included. */
#define COMPUTE_LINE_MAX        64

/* Fills the buffer from a fixed seed and checksums it COMPUTE_ROUNDS times. */
uint64_t compute_checksum(void);

/* The time-stamp counter (RDTSC, allowed at CPL 3 while CR4.TSD is clear). */
static inline uint64_t compute_rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/*
 * Writes "checksum=<16 hex digits> cycles=<decimal>\n" and a NUL to out
 * (at least COMPUTE_LINE_MAX bytes); returns the length without the NUL.
 */
int compute_format(char *out, uint64_t checksum, uint64_t cycles);

#endif
