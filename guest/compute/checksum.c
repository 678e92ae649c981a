/*
 * checksum.c — the shared work of the `compute` workload (see checksum.h).
 *
 * Built freestanding with general-purpose registers only: no C library, no
 * SSE or AVX (the kvmini guest enables neither, and the same object must run
 * in both programs).  The loop is a chain of dependent multiplies, so the
 * compiler cannot turn it into anything that runs faster on one side.
 */

#include "checksum.h"

static uint8_t buf[COMPUTE_BUF_SIZE] __attribute__((aligned(64)));

static void fill(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;     /* xorshift64, fixed seed */
    uint64_t *words = (uint64_t *)buf;

    for (unsigned long i = 0; i < COMPUTE_BUF_SIZE / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        words[i] = x;
    }
}

uint64_t compute_checksum(void)
{
    const uint64_t *words = (const uint64_t *)buf;
    uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a offset basis */

    fill();
    for (unsigned round = 0; round < COMPUTE_ROUNDS; round++) {
        for (unsigned long i = 0; i < COMPUTE_BUF_SIZE / 8; i++) {
            h ^= words[i];
            h *= 0x100000001b3ull;          /* FNV-1a 64-bit prime */
            h = (h << 29) | (h >> 35);
        }
        h += round;
    }
    return h;
}

int compute_format(char *out, uint64_t checksum, uint64_t cycles)
{
    static const char hex[] = "0123456789abcdef";
    static const char head[] = "checksum=";
    static const char mid[] = " cycles=";
    char digits[20];
    int n = 0, d = 0;

    for (const char *s = head; *s; s++)
        out[n++] = *s;
    for (int shift = 60; shift >= 0; shift -= 4)
        out[n++] = hex[(checksum >> shift) & 0xf];
    for (const char *s = mid; *s; s++)
        out[n++] = *s;
    do {
        digits[d++] = (char)('0' + cycles % 10);
        cycles /= 10;
    } while (cycles);
    while (d)
        out[n++] = digits[--d];
    out[n++] = '\n';
    out[n] = '\0';
    return n;
}
