/*
 * kmain.c — the C part of hello.elf.
 *
 * Runs in 64-bit mode at CPL 0, on the stack and page tables start.S set
 * up (first 4 GiB identity-mapped), interrupts off, no IDT.  It says hello
 * on the serial port, reports what the PVH start info says about memory,
 * and ends the VM.
 *
 * Output (one of):
 *   Hello from a 64-bit ELF kernel (entered via PVH)
 *   memory map: N entries                 (PVH, valid start info v1+ with a map)
 * or
 *   Hello from a 64-bit ELF kernel (entered via 64-bit entry)
 *
 * Exit status 0 (kvmini's exit port).  Built freestanding with
 * general-purpose registers only: no libc, no SSE (no FPU state is set up,
 * and some emulated hosts cannot run it), no red zone.
 */

#include <stddef.h>
#include <stdint.h>

#include "boot.h"
#include "uart.h"

/* The ways VMMs let a guest end the VM, tried in this order after kvmini's EXIT_PORT. */
#define I8042_COMMAND_PORT      0x64        /* PS/2 controller command register */
#define I8042_CMD_RESET         0xfe        /* pulse the CPU reset line: ends Firecracker */
#define MICROVM_GED_RESET_REG   0xfea00202u /* QEMU microvm ACPI GED reset register */
#define MICROVM_GED_RESET_VALUE 0x42        /* with -no-reboot, QEMU exits */

#define EXIT_OK 0

/*
 * struct hvm_start_info, from xen/include/public/arch-x86/hvm/start_info.h.
 * EBX points at it on PVH entry.  Fields after rsdp_paddr exist only from
 * version 1 on.
 */
#define HVM_START_MAGIC_VALUE 0x336ec578u

struct hvm_start_info {
    uint32_t magic;             /* HVM_START_MAGIC_VALUE */
    uint32_t version;           /* 0 or 1 */
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    /* version >= 1: */
    uint64_t memmap_paddr;      /* array of struct hvm_memmap_table_entry */
    uint32_t memmap_entries;
    uint32_t reserved;
};

_Static_assert(offsetof(struct hvm_start_info, memmap_paddr) == 40, "start_info ABI");
_Static_assert(offsetof(struct hvm_start_info, memmap_entries) == 48, "start_info ABI");
_Static_assert(sizeof(struct hvm_start_info) == 56, "start_info ABI");

void kmain(uint32_t source, uint64_t start_info_paddr) __attribute__((noreturn));

/* PVH only: say how many memory-map entries the VMM handed over. */
static void report_start_info(uint64_t paddr)
{
    /* EBX is 32 bits, so the struct is below 4 GiB: inside our mapping. */
    const struct hvm_start_info *si = (const struct hvm_start_info *)(uintptr_t)paddr;

    if (paddr == 0) {
        uart_puts("hvm_start_info: none (EBX = 0)\n");
        return;
    }
    if (si->magic != HVM_START_MAGIC_VALUE) {
        uart_puts("hvm_start_info: bad magic ");
        uart_puts("0x");
        uart_put_hex(si->magic, 8);
        uart_putc('\n');
        return;
    }
    if (si->version >= 1 && si->memmap_paddr != 0) {
        uart_puts("memory map: ");
        uart_put_dec(si->memmap_entries);
        uart_puts(" entries\n");
    }
}

/*
 * End the VM with status `code` on kvmini; on other VMMs, end it the way
 * they understand.  Each step is harmless where it is not understood: an
 * unclaimed port write is dropped, and so is a write to the GED address.
 */
static void __attribute__((noreturn)) power_off(uint8_t code)
{
    outb(EXIT_PORT, code);

    /* Firecracker emulates just enough of an i8042 to see this.  No wait
     * for the controller's input buffer: a VMM without an i8042 reads port
     * 0x64 as 0xff, "busy" forever. */
    outb(I8042_COMMAND_PORT, I8042_CMD_RESET);

    /* QEMU microvm: ACPI GED reset register (mapped uncached by start.S). */
    *(volatile uint8_t *)(uintptr_t)MICROVM_GED_RESET_REG = MICROVM_GED_RESET_VALUE;

    for (;;)
        __asm__ volatile("cli; hlt");
}

void kmain(uint32_t source, uint64_t start_info_paddr)
{
    if (source == BOOT_VIA_PVH) {
        uart_puts("Hello from a 64-bit ELF kernel (entered via PVH)\n");
        report_start_info(start_info_paddr);
    } else {
        uart_puts("Hello from a 64-bit ELF kernel (entered via 64-bit entry)\n");
    }
    power_off(EXIT_OK);
}
