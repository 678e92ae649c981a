# flood.s — a long-mode guest that floods the serial port.
#
# Prints "flood: writing forever" (politely, polling the UART), then writes
# the byte 'x' to the UART's transmit register in an endless loop, as fast
# as it can and without polling LSR.  Negative test: the VMM must cope with
# a guest that never stops producing output (bounded buffering, output
# limits, timeouts).
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
        cli
        cld

        print_string message, %esi      # politely: polls LSR.THRE before every byte

        # From here on: one OUT per iteration, no LSR poll.  Each OUT is a
        # port-I/O exit to the VMM, so this is the fastest a guest can push
        # bytes at it.
        mov     $UART_THR, %dx
        mov     $'x', %al
flood:
        out     %al, %dx
        jmp     flood

message:
        .asciz  "flood: writing forever\n"
