# modeswitch.s — the whole x86 boot path in one file.
#
# An x86 CPU wakes up in 16-bit real mode, as it did in 1978.  Getting to
# 64-bit long mode takes two hops, each one a handful of instructions:
#
#   real mode ──(GDT, CR0.PE, far jump)──▶ 32-bit protected mode
#             ──(page tables, CR4.PAE, EFER.LME, CR0.PG, far jump)──▶ long mode
#
# This guest walks that path and reports from each stop on the serial port:
#
#   modeswitch: real mode
#   modeswitch: protected mode
#   modeswitch: long mode
#
# and then exits with code 3 (one for each mode it has run in).
#
# The authoritative recipes are in the Intel SDM, Vol. 3A, chapter
# "Processor Management and Initialization": section "Switching to
# Protected Mode" (9.9.1 in most editions) and section "Initializing IA-32e
# Mode" (9.8.5).  The step numbers in the comments below follow them.
#
# ── Entry state ─────────────────────────────────────────────────────────────
# kvmini --mode real (the kvmtool flat-binary convention): the file is loaded
# at guest-physical 0x10000 and entered at its first byte in real mode, with
# CS = DS = ES = SS = 0x1000, IP = 0, interrupts off.  What this guest relies
# on: it runs in real mode from linear address 0x10000, at file offset 0, and
# guest RAM covers 0x10000–0x14000 (the image).  It sets every segment
# register itself, brings its own GDT and page tables, and needs no stack:
# it never pushes, calls, or takes an interrupt.
#
# ── Addresses: one link address, three ways of using it ────────────────────
# The file is linked at 0x10000, exactly where it is loaded, so every symbol
# is its own physical address.
#   * Protected and long mode use flat segments (base 0) and, in long mode,
#     an identity mapping, so there a symbol's value is the address to use.
#   * Real mode forms addresses as segment * 16 + offset.  With every
#     segment register at 0x1000 (base 0x10000), the offset of a symbol is
#     its value minus LOAD_ADDR.  So the real-mode code below writes
#     "symbol - LOAD_ADDR" wherever it names memory.  (Offsets are 16-bit;
#     the image is far smaller than 64 KiB, so they fit.)
#
# Build: as --64 (the object holds 16-, 32- and 64-bit code; .code16 and
# .code32 switch the encoding), ld -m elf_x86_64 -Ttext=0x10000, objcopy -O
# binary.

        .set LOAD_ADDR, 0x10000         # where the file lives, and its link address
        .set REAL_SEG,  LOAD_ADDR >> 4  # the real-mode segment whose base is LOAD_ADDR

# ── Hardware constants ──────────────────────────────────────────────────────

        .include "uart.inc"             # UART and exit-port constants, print/exit macros

        .set EXIT_CODE, 3

        .set CR0_PE,    1 << 0          # protection enable
        .set CR0_PG,    1 << 31         # paging
        .set CR4_PAE,   1 << 5          # physical address extension: 64-bit page table entries
        .set MSR_EFER,  0xc0000080      # IA32_EFER (SDM Vol. 3A §2.2.1, Vol. 4)
        .set EFER_LME,  1 << 8          # long mode enable (LMA follows once CR0.PG is set)

        # Page-table entry bits (SDM Vol. 3A §4.5, "4-Level Paging").
        .set PTE_PRESENT,   1 << 0
        .set PTE_WRITABLE,  1 << 1
        .set PTE_PAGE_SIZE, 1 << 7      # in a page-directory entry: maps a 2 MiB page
        .set PAGE_2M,       0x200000

# ── GDT selectors ───────────────────────────────────────────────────────────
# A selector is the byte offset of a descriptor in the GDT (index * 8), with
# TI = 0 (GDT) and RPL = 0 in its low three bits.  Checked against the table
# itself near the end of the file.

        .set CODE32_SEL, 0x08
        .set DATA_SEL,   0x10
        .set CODE64_SEL, 0x18

# ── Printing ────────────────────────────────────────────────────────────────
# Every stage prints with print_string (uart.inc) and always passes %esi.
# LODSB reads [SI] in real mode, [ESI] in protected mode and [RSI] in long
# mode; "mov $x, %esi" sets SI in real mode and zero-extends into RSI in long
# mode, so one register serves all three.  Only the address differs: an
# offset ("symbol - LOAD_ADDR") in real mode, the symbol itself after that.

        .text
        .globl _start

# ═══ Stage 1: real mode ═════════════════════════════════════════════════════

        .code16
_start:
        cli                             # no interrupt tables exist for any mode we visit
        cld                             # LODSB walks forwards

        # Linear 0x10000 has several CS:IP names (0x1000:0000, 0x0fff:0010,
        # ...).  A far jump pins CS to REAL_SEG so that the CPU's offsets are
        # the "symbol - LOAD_ADDR" offsets used below, whatever name the
        # loader picked.
        ljmp    $REAL_SEG, $real_mode - LOAD_ADDR
real_mode:
        mov     %cs, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss

        print_string "msg_real - LOAD_ADDR", %esi

        # (No A20 dance: everything this guest touches lies below 1 MiB, so
        # the state of the A20 gate cannot matter.)

        # Step 1 (SDM "Switching to Protected Mode"): load GDTR.  The "l"
        # suffix (operand-size prefix) makes LGDT take the full 32-bit base;
        # without it, 16-bit code loads only 24 bits of it.  GDTR holds a
        # linear address: gdt's value, not its real-mode offset.
        lgdtl   gdtr - LOAD_ADDR

        # Step 2: set CR0.PE.  From the next instruction on the CPU is in
        # protected mode, but CS still holds its real-mode contents ...
        mov     %cr0, %eax
        or      $CR0_PE, %eax
        mov     %eax, %cr0

        # Step 3: ... until a far jump loads CS from the GDT: 32-bit code.
        # The target is above 64 KiB, so it needs the 32-bit offset form
        # (ljmpl = operand-size prefix + ptr16:32).
        ljmpl   $CODE32_SEL, $protected_mode

# ═══ Stage 2: 32-bit protected mode ═════════════════════════════════════════

        .code32
protected_mode:
        # Step 4: the data segment registers still hold real-mode contents
        # (base 0x10000); reload them all with the flat data segment.
        mov     $DATA_SEL, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %fs
        mov     %ax, %gs
        mov     %ax, %ss

        print_string msg_protected, %esi

        # Now to long mode (SDM "Initializing IA-32e Mode").  Step 1 of that
        # recipe, "be in protected mode with paging off", is where we are.

        # Step 2: enable PAE.  Long mode walks 4-level tables of 64-bit
        # entries, the PAE format.
        mov     %cr4, %eax
        or      $CR4_PAE, %eax
        mov     %eax, %cr4

        # Step 3: point CR3 at the top-level table (PML4), built below.
        mov     $pml4, %eax
        mov     %eax, %cr3

        # Step 4: set EFER.LME.  Read-modify-write keeps the other bits.
        mov     $MSR_EFER, %ecx
        rdmsr
        or      $EFER_LME, %eax
        wrmsr

        # Step 5: set CR0.PG.  With LME set, enabling paging activates long
        # mode (the CPU sets EFER.LMA).  We keep running because this code is
        # identity-mapped: its virtual address is its physical address.
        mov     %cr0, %eax
        or      $CR0_PG, %eax
        mov     %eax, %cr0

        # The CPU is now in compatibility mode: long mode, but still running
        # the 32-bit CS.  A far jump to a descriptor with L = 1 enters
        # 64-bit mode proper.
        ljmp    $CODE64_SEL, $long_mode

# ═══ Stage 3: 64-bit long mode ══════════════════════════════════════════════

        .code64
long_mode:
        # DS, ES and SS still hold the flat data selector from stage 2; in
        # 64-bit mode the CPU ignores their base and limit anyway.
        print_string msg_long, %esi

        exit_with EXIT_CODE             # kvmini stops the VM here

        halt_forever                    # in case a VMM ignores the exit port

# ═══ Data ═══════════════════════════════════════════════════════════════════

msg_real:       .asciz "modeswitch: real mode\n"
msg_protected:  .asciz "modeswitch: protected mode\n"
msg_long:       .asciz "modeswitch: long mode\n"

# ── The Global Descriptor Table ─────────────────────────────────────────────
# One 8-byte descriptor per segment (SDM Vol. 3A §3.4.5, "Segment
# Descriptors"):
#
#   bytes 0-1  limit[15:0]
#   bytes 2-4  base[23:0]
#   byte  5    access:  P | DPL (2 bits) | S | type (4 bits)
#   byte  6    flags:   G | D/B | L | AVL  (high nibble)  +  limit[19:16] (low)
#   byte  7    base[31:24]

        .set ACC_PRESENT, 0x80          # P: the segment exists
        .set ACC_CODEDATA,0x10          # S: a code/data segment, not a system one
        .set ACC_EXEC,    0x08          # type: executable (code)
        .set ACC_RW,      0x02          # type: readable (code) / writable (data)
        .set FLAG_4K,     0x8           # G: limit counts 4 KiB units (0xfffff → 4 GiB)
        .set FLAG_32BIT,  0x4           # D/B: 32-bit default operand size
        .set FLAG_64BIT,  0x2           # L: 64-bit code (then D must be 0; §5.2.1)

# (Arguments are wrapped in parentheses: macro arguments are pasted in as
# text, and "FLAG_4K | FLAG_32BIT << 4" would shift only the second flag.)
.macro descriptor base, limit, access, flags
        .word   (\limit) & 0xffff
        .word   (\base) & 0xffff
        .byte   ((\base) >> 16) & 0xff
        .byte   (\access)
        .byte   ((\flags) << 4) | (((\limit) >> 16) & 0x0f)
        .byte   ((\base) >> 24) & 0xff
.endm

        .balign 8
gdt:
        .quad   0                       # 0x00: the null descriptor (required, never used)
gdt_code32:                             # 0x08: 32-bit code, base 0, limit 4 GiB
        descriptor 0, 0xfffff, ACC_PRESENT | ACC_CODEDATA | ACC_EXEC | ACC_RW, FLAG_4K | FLAG_32BIT
gdt_data:                               # 0x10: data, base 0, limit 4 GiB
        descriptor 0, 0xfffff, ACC_PRESENT | ACC_CODEDATA | ACC_RW, FLAG_4K | FLAG_32BIT
gdt_code64:                             # 0x18: 64-bit code (base/limit ignored in 64-bit mode)
        descriptor 0, 0xfffff, ACC_PRESENT | ACC_CODEDATA | ACC_EXEC | ACC_RW, FLAG_4K | FLAG_64BIT
gdt_end:

        # The selectors used above must name these descriptors.
        .if (gdt_code32 - gdt) != CODE32_SEL || (gdt_data - gdt) != DATA_SEL || (gdt_code64 - gdt) != CODE64_SEL
        .error "GDT layout and *_SEL constants disagree"
        .endif

        # The operand of LGDT: a 16-bit limit (size - 1), then the base.
gdtr:
        .word   gdt_end - gdt - 1
        .long   gdt                     # linear address (= physical: segments are flat)

# ── Page tables ─────────────────────────────────────────────────────────────
# Long mode cannot run with paging off, so we need at least an identity
# mapping of this code.  Three 4 KiB tables, one entry each at the top two
# levels (SDM Vol. 3A §4.5):
#
#   CR3 → PML4[0] → PDPT[0] → PD[0..511]: 512 pages of 2 MiB = the first 1 GiB
#
# The tables are filled in by the assembler (.rept), not by a loop at run
# time: they are just bytes of this file.  Each must be 4 KiB-aligned, and
# because the file is loaded at a 4 KiB-aligned address, .balign in the file
# is alignment in memory.  The CPU sets Accessed/Dirty bits in these entries,
# which is fine: they are in RAM like the rest of the image.

        .balign 4096
pml4:
        .quad   pdpt + PTE_PRESENT + PTE_WRITABLE      # covers 0 .. 512 GiB
        .fill   511, 8, 0
pdpt:
        .quad   pd + PTE_PRESENT + PTE_WRITABLE        # covers 0 .. 1 GiB
        .fill   511, 8, 0
pd:
        .set    page, 0
        .rept   512
        .quad   page + PTE_PRESENT + PTE_WRITABLE + PTE_PAGE_SIZE
        .set    page, page + PAGE_2M
        .endr
