# spin.s — a long-mode guest that never stops on its own.
#
# Prints "spin: looping forever", then jumps to itself forever with
# interrupts off.  Negative test for the VMM's timeout / kill path.
#
# Entry state (kvmini --mode long): loaded at 0x100000 and entered at its
# first byte in 64-bit mode, CPL 0, first 4 GiB identity-mapped, interrupts
# off.  Relies on: 64-bit mode and an identity mapping of its own image.
# It does not use the stack.
#
# Build: as --64, ld -m elf_x86_64 -Ttext=0x100000, objcopy -O binary.

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .code64
        .text
        .globl _start
_start:
        cli                             # nothing can interrupt the loop below
        cld

        print_string message, %esi

        # A jump to itself: no exit to the VMM, no HLT; only the VMM can end it.
        jmp     .

message:
        .asciz  "spin: looping forever\n"
