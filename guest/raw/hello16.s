# hello16.s — the smallest real-mode guest for kvmini.
#
# Prints "Hello from real mode" on the serial port and exits with code 16.
#
# Entry state (kvmini --mode real, the kvmtool flat-binary convention):
#   the file is loaded at guest-physical 0x10000 and entered at its first
#   byte, in real-address mode, with CS = DS = ES = SS = 0x1000, IP = 0 and
#   interrupts off.  What this guest relies on: the image is at linear
#   0x10000 and execution starts at offset 0 in real mode.  It sets its own
#   CS:IP and DS, and it never touches the stack.
#
# Layout: linked at address 0, so every symbol's value is its offset in the
# file, which is also its offset in segment 0x1000 (segment base = 0x1000 * 16
# = 0x10000 = where the file is loaded).  See Intel SDM Vol. 3A, chapter
# "8086 Emulation", section "Real-Address Mode" for the segment:offset rule.
#
# Build: as --32, ld -m elf_i386 -Ttext=0, objcopy -O binary (see Makefile).

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .set EXIT_CODE, 16

        .code16
        .text
        .globl _start
_start:
        cli                             # no IDT of ours: keep maskable interrupts off
        cld                             # print_string's LODSB must walk forwards

        # Linear 0x10000 has more than one CS:IP name (0x1000:0x0000 and
        # 0x0fff:0x0010 are the same byte).  A far jump pins CS to 0x1000,
        # so the link-time offsets below are the offsets the CPU uses,
        # whichever name the loader picked.
        ljmp    $0x1000, $1f
1:
        mov     %cs, %ax
        mov     %ax, %ds                # print_string reads DS:SI

        print_string message, %si       # linked at 0: message's value is its offset in DS
        exit_with EXIT_CODE             # kvmini stops the VM here

        halt_forever                    # in case a VMM ignores the exit port

message:
        .asciz  "Hello from real mode\n"
