# debug64.s — a long-mode guest for the debugger (kvmini run --gdb) tests.
#
# Calls `bump` three times; each call adds 1 to the 32-bit `counter`.  Then
# prints "debug64: counted" and exits with the counter's value as its
# status: 3, unless a debugger changed the counter on the way (the tests
# write it through GDB and see the status follow).  The symbols (`_start`,
# `bump`, `counted`, `counter`) are in build/raw/debug64.elf, linked at the
# load address, for GDB's `file`.
#
# Entry state (kvmini --mode long): loaded at guest-physical 0x100000 and
# entered at its first byte in 64-bit mode at CPL 0, first 4 GiB
# identity-mapped, RSP = 0x8ff0 (the stack `call` uses), interrupts off.
# The counter lives in the image itself (a raw image is one .text section);
# the identity map is writable.
#
# Build: as --64, ld -m elf_x86_64 -Ttext=0x100000, objcopy -O binary.

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .set BUMPS, 3

        .code64
        .text
        .globl _start
_start:
        cli                             # no IDT of ours: keep maskable interrupts off
        cld                             # print_string's LODSB must walk forwards
        mov     $BUMPS, %ecx
again:
        call    bump
        dec     %ecx
        jnz     again

        .globl counted
counted:
        print_string message, %esi      # identity-mapped: the address is the physical one
        mov     counter, %eax
        out     %al, $EXIT_PORT         # exit_with takes a constant; this is the counter
        halt_forever                    # in case a VMM ignores the exit port

        .globl bump
bump:
        incl    counter
        ret

        .balign 4
        .globl counter
counter:
        .long   0

message:
        .asciz  "debug64: counted\n"
