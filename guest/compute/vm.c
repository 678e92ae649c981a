/*
 * vm.c — the ring-3 part of compute.bin (start.S gets here with IRETQ).
 *
 * Runs the shared checksum at CPL 3, where even a host that emulates guest
 * ring 0 runs code natively, prints "checksum=<hex> cycles=<rdtsc delta>" on
 * the 8250 UART at 0x3f8 (polling LSR.THRE before each byte), and ends the VM
 * by writing 0 to kvmini's exit port 0xf4.  IN and OUT are allowed here
 * because start.S set RFLAGS.IOPL to 3.
 */

#include "checksum.h"
#include "uart.h"

void vm_main(void) __attribute__((noreturn, used));

void vm_main(void)
{
    char line[COMPUTE_LINE_MAX];
    uint64_t start = compute_rdtsc();
    uint64_t sum = compute_checksum();
    uint64_t cycles = compute_rdtsc() - start;

    compute_format(line, sum, cycles);
    uart_puts(line);
    outb(EXIT_PORT, 0);
    for (;;)                            /* HLT would fault at CPL 3 */
        __asm__ volatile("pause");
}
