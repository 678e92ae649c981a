# triple.s — a long-mode guest that triple-faults on purpose.
#
# Prints "triple: faulting now", then makes every exception undeliverable
# and executes UD2.  Negative test: the VMM must report the guest's death
# (KVM_EXIT_SHUTDOWN on hardware; this software KVM may report an emulation
# failure instead), not hang.  If execution somehow continues, it exits with
# code 1 so that the test fails visibly.
#
# Entry state (kvmini --mode long): loaded at 0x100000 and entered at its
# first byte in 64-bit mode, CPL 0, first 4 GiB identity-mapped, interrupts
# off.  Relies on: 64-bit mode and an identity mapping of its own image.
# It loads its own IDT (limit 0) and does not use the stack.
#
# Why UD2 ends in a triple fault (Intel SDM Vol. 3A, chapter "Interrupt and
# Exception Handling"):
#   1. UD2 raises #UD (vector 6).  The IDT limit is 0, so gate 6 lies beyond
#      the limit, and delivering it raises #GP ("IDT" section).
#   2. #UD is a benign exception, so the #GP is delivered on its own; gate 13
#      is beyond the limit as well, so that raises another #GP.
#   3. A contributory exception (#GP) while delivering a contributory one is
#      a double fault, #DF (table "Conditions for Generating a Double Fault").
#   4. Gate 8 is beyond the limit too; a fault while delivering #DF puts the
#      processor into shutdown ("Interrupt 8—Double Fault Exception").
#      Under KVM that shutdown ends KVM_RUN with KVM_EXIT_SHUTDOWN.
#
# Build: as --64, ld -m elf_x86_64 -Ttext=0x100000, objcopy -O binary.

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .set EXIT_CODE, 1               # only reached if the triple fault did not happen

        .code64
        .text
        .globl _start
_start:
        cli
        cld

        print_string message, %esi

        lidt    empty_idt               # limit 0: no gate can be fetched
        ud2                             # #UD -> #GP -> #DF -> shutdown

        # Not reached on a correct CPU/VMM.
        exit_with EXIT_CODE
        halt_forever

        # The IDTR image for LIDT in 64-bit mode: a 16-bit limit and a 64-bit
        # base.  Limit 0 (and base 0) means not a single 16-byte gate fits.
        .balign 8
empty_idt:
        .word   0                       # limit
        .quad   0                       # base

message:
        .asciz  "triple: faulting now\n"
