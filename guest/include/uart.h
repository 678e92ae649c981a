/*
 * uart.h — the 8250/16550 UART at COM1 and kvmini's exit port, for the C guests
 * (the assembly guests have raw/uart.inc).  Port I/O only: works at CPL 0, and at
 * CPL 3 when RFLAGS.IOPL is 3.
 */
#ifndef KVMINI_GUEST_UART_H
#define KVMINI_GUEST_UART_H

#include <stdint.h>

#define UART_THR        0x3f8   /* transmit holding register */
#define UART_LSR        0x3fd   /* line status register */
#define LSR_THRE        0x20    /* THR empty: ready for the next byte */
#define EXIT_PORT       0xf4    /* kvmini: outb V here, kvmini exits with status V */

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t value;

    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

static inline void uart_putc(char c)
{
    /* A real 16550 drops bytes written while THR is still full. */
    while (!(inb(UART_LSR) & LSR_THRE))
        ;
    outb(UART_THR, (uint8_t)c);
}

static inline void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

/* The low `digits` hexadecimal digits of `v`, without a prefix. */
static inline void uart_put_hex(uint32_t v, int digits)
{
    while (digits-- > 0)
        uart_putc("0123456789abcdef"[(v >> (4 * digits)) & 0xf]);
}

/* `n` in decimal (32-bit division only: no libgcc in 32-bit guests). */
static inline void uart_put_dec(uint32_t n)
{
    char digits[10];            /* 4294967295 has 10 digits */
    int count = 0;

    do {
        digits[count++] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    while (count > 0)
        uart_putc(digits[--count]);
}

#endif
