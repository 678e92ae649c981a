# count.s — a long-mode guest that counts, and asks for a snapshot halfway.
#
# Prints "count 1" to "count 9", one line each, and exits with code 42.
# After "count 5" it writes SNAPSHOT_NOW to the boot-marker port 0x80: under
# `kvmini run --snapshot DIR` kvmini saves the VM there and stops, and
# `kvmini restore DIR` goes on with "count 6".  Without --snapshot the write
# is only a marker and the guest counts to 9 in one run.
#
# The count lives in guest memory (the digit inside the message) and in R12,
# so a restored VM continues from the right line only if both its memory and
# its registers came back.
#
# Entry state (kvmini --mode long): loaded at 0x100000 and entered at its
# first byte in 64-bit mode, CPL 0, first 4 GiB identity-mapped, interrupts
# off.  It does not use the stack.
#
# Build: as --64, ld -m elf_x86_64 -Ttext=0x100000, objcopy -O binary.

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .set MARKER_PORT, 0x80          # kvmini's boot-marker port
        .set SNAPSHOT_NOW, 0x7f         # "save me here" (see kvmini's README)
        .set EXIT_CODE, 42

        .code64
        .text
        .globl _start
_start:
        cli
        cld
        xor     %r12d, %r12d            # lines printed so far

next:
        incb    digit                   # '0' -> '1' -> ...
        inc     %r12
        print_string message, %esi
        cmp     $5, %r12
        jne     1f
        mov     $SNAPSHOT_NOW, %al
        out     %al, $MARKER_PORT       # a snapshot taken here resumes just after this OUT
1:
        # Memory and register must agree: a restore that brought back one and not the
        # other ends with status 1 instead of 42.
        movzbl  digit, %eax
        sub     $'0', %eax
        cmp     %r12, %rax
        jne     mismatch
        cmp     $9, %r12
        jne     next
        exit_with EXIT_CODE
        halt_forever

mismatch:
        exit_with 1
        halt_forever

message:
        .ascii  "count "
digit:
        .byte   '0'
        .asciz  "\n"
