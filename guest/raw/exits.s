# exits.s — a guest that makes COUNT VM exits of one kind, to measure what an
# exit costs the VMM.
#
# Assembled three ways, chosen with `as --defsym ACCESS=N` (see Makefile):
#
#   ACCESS=0  exits-none.bin  the loop below with nothing in it     exit code 0x30
#   ACCESS=1  exits-pio.bin   COUNT `out` writes to port 0x99        exit code 0x31
#   ACCESS=2  exits-mmio.bin  COUNT 32-bit writes to 0xd0000000      exit code 0x32
#
# Nothing lives at port 0x99 or at guest-physical 0xd0000000 (not RAM, not a
# device), so each access is one exit that the VMM must answer by dropping the
# write and resuming the guest (kvmini: `--unclaimed-mmio ignore` for MMIO).
# The cost of one exit is (time(pio or mmio) - time(none)) / COUNT: the none
# variant runs the same loop, so the loop's own cost cancels out.  The guest
# prints nothing: its only other exit is the final write to the exit port.
#
# The accesses are made from 32-bit flat protected mode, which the guest
# enters itself with its own GDT, as modeswitch.s does (Intel SDM Vol. 3A,
# "Switching to Protected Mode").
#
# Entry state (kvmini --mode real, the kvmtool flat-binary convention): the
# file is loaded at guest-physical 0x10000 and entered at its first byte in
# real mode with CS = DS = 0x1000, IP = 0, interrupts off.  It relies on that
# and on RAM covering its own image; it uses no stack.
#
# Build: as --32 --defsym ACCESS=N, ld -m elf_i386 -Ttext=0x10000,
# objcopy -O binary.

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .ifndef ACCESS
        .error "assemble with --defsym ACCESS=0 (none), 1 (port I/O) or 2 (MMIO)"
        .endif
        .if ACCESS < 0 || ACCESS > 2
        .error "ACCESS must be 0, 1 or 2"
        .endif

        .ifndef COUNT
        .set COUNT, 20000               # exits per run: 0.1-0.4 s on a kvm_pvm host (5-20 us each)
        .endif
        .set UNROLL, 10                 # accesses per loop iteration
        .if COUNT % UNROLL
        .error "COUNT must be a multiple of UNROLL"
        .endif

        .set EXIT_CODE, 0x30 + ACCESS
        .set IDLE_PORT, 0x99            # no device on it, in kvmini or on a PC
        .set HOLE,      0xd0000000      # guest-physical address with nothing behind it

        .set LOAD_ADDR, 0x10000         # where the file lives, and its link address
        .set REAL_SEG,  LOAD_ADDR >> 4
        .set CR0_PE,    1 << 0
        .set CODE_SEL,  0x08
        .set DATA_SEL,  0x10

        .text
        .globl _start

# ── Real mode: into 32-bit protected mode ──────────────────────────────────

        .code16
_start:
        cli
        # Pin CS to REAL_SEG, whichever CS:IP name of 0x10000 the loader used, so
        # that "symbol - _start" is the offset the CPU uses.  (_start is the
        # first byte, at LOAD_ADDR; the difference needs no relocation, which a
        # 32-bit object could not hold in 16 bits.)
        ljmp    $REAL_SEG, $real_mode - _start
real_mode:
        mov     %cs, %ax
        mov     %ax, %ds
        lgdtl   gdtr - _start           # full 32-bit base: "l" suffix
        mov     %cr0, %eax
        or      $CR0_PE, %eax
        mov     %eax, %cr0
        ljmpl   $CODE_SEL, $protected_mode

# ── 32-bit protected mode: COUNT exits ──────────────────────────────────────

        .code32
protected_mode:
        mov     $DATA_SEL, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss

        mov     $COUNT / UNROLL, %ecx
        mov     $IDLE_PORT, %edx
        mov     $HOLE, %ebx
        xor     %eax, %eax
loop:
        .rept   UNROLL
        .if ACCESS == 1
        out     %al, %dx                # KVM_EXIT_IO, direction out
        .elseif ACCESS == 2
        movl    %eax, (%ebx)            # KVM_EXIT_MMIO, is_write = 1
        .endif
        .endr
        dec     %ecx
        jnz     loop

        exit_with EXIT_CODE             # the VMM stops here
        halt_forever                    # in case a VMM ignores the exit port

# ── GDT: null, flat 32-bit code, flat data (layout as in modeswitch.s) ──────

        .balign 8
gdt:
        .quad   0
        .quad   0x00cf9a000000ffff      # 0x08: code, base 0, limit 4 GiB, 32-bit, readable
        .quad   0x00cf92000000ffff      # 0x10: data, base 0, limit 4 GiB, writable
gdt_end:

gdtr:
        .word   gdt_end - gdt - 1
        .long   gdt                     # linear address: linked where it is loaded
