/*
 * report.c — the lines report.h describes, over the 8250 at 0x3f8
 * (include/uart.h), and the end of the run through kvmini's exit port.
 */

#include "report.h"
#include "uart.h"

/* Bytes of a module that `sum` covers at most. */
#define SUM_LIMIT       (64u << 10)

static void put_hex32(uint32_t v)
{
    uart_puts("0x");
    uart_put_hex(v, 8);
}

static void put_hex64(uint64_t v)
{
    uart_puts("0x");
    uart_put_hex((uint32_t)(v >> 32), 8);
    uart_put_hex((uint32_t)v, 8);
}

void report_magic(int version, uint32_t magic, uint32_t expected)
{
    uart_puts("multiboot");
    uart_put_dec((uint32_t)version);
    uart_puts(": magic ");
    put_hex32(magic);
    if (magic != expected)
        uart_puts(" (unexpected)");
    uart_putc('\n');
}

void report_string(const char *label, const char *s)
{
    uart_puts(label);
    uart_puts(": ");
    uart_puts(s);
    uart_putc('\n');
}

void report_memory(uint32_t lower, uint32_t upper)
{
    uart_puts("memory: lower ");
    uart_put_dec(lower);
    uart_puts(" KiB, upper ");
    uart_put_dec(upper);
    uart_puts(" KiB\n");
}

void report_mmap(uint64_t base, uint64_t length, uint32_t type)
{
    uart_puts("mmap: ");
    put_hex64(base);
    uart_putc(' ');
    put_hex64(length);
    uart_puts(" type ");
    uart_put_dec(type);
    uart_putc('\n');
}

void report_module(uint32_t start, uint32_t end, const char *string)
{
    const volatile uint8_t *bytes = (const volatile uint8_t *)start;
    uint32_t size = end - start;
    uint32_t summed = size < SUM_LIMIT ? size : SUM_LIMIT;
    uint32_t sum = 0;

    for (uint32_t i = 0; i < summed; i++)
        sum += bytes[i];
    uart_puts("module: ");
    put_hex32(start);
    uart_puts(" size ");
    uart_put_dec(size);
    uart_puts(" sum ");
    put_hex32(sum);
    uart_puts(" head ");
    for (uint32_t i = 0; i < size && i < 8; i++)
        uart_put_hex(bytes[i], 2);
    uart_puts(" string '");
    uart_puts(string);
    uart_puts("'\n");
}

void report_count(const char *label, uint32_t n)
{
    uart_puts(label);
    uart_puts(": ");
    uart_put_dec(n);
    uart_putc('\n');
}

void report_done(int version, int status)
{
    uart_puts("multiboot");
    uart_put_dec((uint32_t)version);
    uart_puts(": done\n");
    outb(EXIT_PORT, (uint8_t)status);
    for (;;)
        __asm__ volatile("cli; hlt");
}
