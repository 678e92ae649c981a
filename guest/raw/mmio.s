# mmio.s — a long-mode guest that touches guest-physical memory where
# nothing lives.
#
# Prints "mmio: touching unmapped memory", then writes the 32-bit value
# 0x12345678 to guest-physical 0xd0000000 (neither RAM nor a device) and
# reads 32 bits back from the same address.
#   - kvmini by default stops the VM at the write (unclaimed MMIO).
#   - with unclaimed MMIO tolerated, writes are dropped and reads return
#     all-ones, as on a PC bus with nothing to answer: the guest then exits
#     with code 0x11 if it read 0xffffffff, and 0x12 for any other value.
#
# Entry state (kvmini --mode long): loaded at 0x100000 and entered at its
# first byte in 64-bit mode, CPL 0, first 4 GiB identity-mapped (so the
# virtual address 0xd0000000 reaches guest-physical 0xd0000000), interrupts
# off.  Relies on: 64-bit mode and that identity mapping.  No stack used.
#
# Build: as --64, ld -m elf_x86_64 -Ttext=0x100000, objcopy -O binary.

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .set EXIT_READ_ALL_ONES, 0x11   # the read came back 0xffffffff
        .set EXIT_READ_OTHER,    0x12   # the read came back with anything else
        .set HOLE,      0xd0000000      # guest-physical address with nothing behind it
        .set PATTERN,   0x12345678

        .code64
        .text
        .globl _start
_start:
        cli
        cld

        print_string message, %esi

        # The address goes through a register: in 64-bit mode a 32-bit
        # absolute displacement is sign-extended, so "movl ..., 0xd0000000"
        # would address 0xffffffffd0000000.  "mov $imm32, %eax" zero-extends.
        mov     $HOLE, %eax
        movl    $PATTERN, (%rax)        # 32-bit MMIO write (KVM_EXIT_MMIO, is_write=1)
        mov     (%rax), %ecx            # 32-bit MMIO read  (KVM_EXIT_MMIO, is_write=0)

        mov     $EXIT_READ_ALL_ONES, %al
        cmp     $0xffffffff, %ecx
        je      exit
        mov     $EXIT_READ_OTHER, %al
exit:
        out     %al, $EXIT_PORT

        halt_forever                    # in case a VMM ignores the exit port

message:
        .asciz  "mmio: touching unmapped memory\n"
