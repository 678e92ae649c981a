# hello64.s — the smallest 64-bit long-mode guest for kvmini.
#
# Prints "Hello from long mode" on the serial port and exits with code 64.
#
# Entry state (kvmini --mode long): the file is loaded at guest-physical
# 0x100000 and entered at its first byte in 64-bit mode at CPL 0, with paging
# on and the first 4 GiB identity-mapped, interrupts off.  What this guest
# relies on: 64-bit mode and an identity mapping of its own image (the
# message is read at its physical address).  It does not use the stack.
#
# Build: as --64, ld -m elf_x86_64 -Ttext=0x100000, objcopy -O binary.

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .set EXIT_CODE, 64

        .code64
        .text
        .globl _start
_start:
        cli                             # no IDT of ours: keep maskable interrupts off
        cld                             # print_string's LODSB must walk forwards

        print_string message, %esi      # identity-mapped: the address is the physical one
        exit_with EXIT_CODE             # kvmini stops the VM here

        halt_forever                    # in case a VMM ignores the exit port

message:
        .asciz  "Hello from long mode\n"
