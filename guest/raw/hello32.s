# hello32.s — the smallest 32-bit protected-mode guest for kvmini.
#
# Prints "Hello from protected mode" on the serial port and exits with code 32.
#
# Entry state (kvmini --mode protected): the file is loaded at guest-physical
# 0x100000 and entered at its first byte in 32-bit flat protected mode: CS is
# a 32-bit code segment and DS/ES/SS flat data segments (base 0, limit
# 4 GiB), paging off, interrupts off.  What this guest relies on: a 32-bit CS
# and a flat DS (it reads its message through DS with a linear address).  It
# does not use the stack, so it does not care what ESP holds.
#
# Build: as --32, ld -m elf_i386 -Ttext=0x100000, objcopy -O binary.

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .set EXIT_CODE, 32

        .code32
        .text
        .globl _start
_start:
        cli                             # no IDT of ours: keep maskable interrupts off
        cld                             # print_string's LODSB must walk forwards

        print_string message, %esi      # linked at 0x100000, so this is the linear address
        exit_with EXIT_CODE             # kvmini stops the VM here

        halt_forever                    # in case a VMM ignores the exit port

message:
        .asciz  "Hello from protected mode\n"
