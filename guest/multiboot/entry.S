/*
 * entry.S — what every Multiboot guest does first, included by start1.S
 * and start2.S after their headers: a stack, then kmain(EAX, EBX).
 * The segment registers are flat as the specifications promise; this
 * kernel never reloads them, so it needs no GDT of its own.
 */

        .text
        .code32
        .globl  _start
        .type   _start, @function
_start:
        cli
        cld
        mov     $stack_top, %esp
        push    %ebx                    /* kmain's second argument: the information */
        push    %eax                    /* first: the magic */
        call    kmain
park:
        cli
        hlt
        jmp     park

        /* .data is never empty, so a flattened image ends at _load_end. */
        .data
        .balign 4
        .globl  boot_count
boot_count:
        .long   1

        .bss
        .balign 16
stack:
        .skip   8192
stack_top:

        .section .note.GNU-stack, "", @progbits
