/*
 * floor_restore.c: the least a VMM has to do to resume the saved count.bin guest.
 *
 *   floor_restore MEMORY RIP R12
 *
 * MEMORY is the `memory` file of a snapshot that `kvmini run guest/build/count.bin --mode
 * long --snapshot DIR` saved after "count 5": guest RAM from guest-physical 0, one region.
 * The program opens /dev/kvm, creates a VM, maps MEMORY MAP_PRIVATE (the guest's writes
 * never reach the file) as one memory slot, creates one vCPU and puts it where the guest
 * stopped:
 *
 *   - the special registers of kvmini's 64-bit entry (src/arch/x86_64/regs.rs,
 *     long_mode_sregs; addresses from src/arch/x86_64/layout.rs): the GDT at 0x500 with
 *     the 64-bit code segment at selector 0x08 and flat data at 0x10, the page tables at
 *     CR3 = 0x9000 (both already in the saved memory), CR0 = PE|ET|NE|PG, CR4 = PAE,
 *     EFER = LME|LMA, an empty IDT;
 *   - RIP (just past the guest's `out` to port 0x80) and R12 (the lines already printed,
 *     5), given on the command line; RFLAGS with interrupts off;
 *
 * and runs it with the devices of floor_io.h (COM1 output, the exit port 0xf4). It prints
 * "count 6" to "count 9" and exits with 42, as `kvmini restore DIR` does.
 *
 * What it does not do: read the snapshot's `state` file, or set anything the guest does
 * not need (the other general registers, FPU, MSRs, LAPIC, interrupt controller, clock,
 * pending events). It is the floor, not a full restore: whatever `kvmini restore` spends
 * beyond it is the price of restoring every piece of state generally.
 * Interfaces: Documentation/virt/kvm/api.rst in the Linux tree; Intel SDM Vol. 3A, 9.8.5.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>

#include "floor_io.h"

#define GDT_START      0x500u
#define GDT_ENTRIES    6
#define PML4_START     0x9000u
#define SEL_CODE64     0x08
#define SEL_DATA       0x10

#define CR0_PE   (1ull << 0)
#define CR0_ET   (1ull << 4)
#define CR0_NE   (1ull << 5)
#define CR0_PG   (1ull << 31)
#define CR4_PAE  (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

/* A flat segment as the descriptor at `selector` in kvmini's boot GDT describes it. */
static struct kvm_segment flat_segment(uint16_t selector, int code)
{
    struct kvm_segment s = {
        .base = 0,
        .limit = 0xffffffff,
        .selector = selector,
        .type = code ? 0xb : 0x3, /* execute/read or read/write, accessed */
        .present = 1,
        .dpl = 0,
        .db = code ? 0 : 1,
        .s = 1,
        .l = code ? 1 : 0,
        .g = 1,
    };
    return s;
}

static void long_mode(int vcpu)
{
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        die(STATUS_CRASH, "KVM_GET_SREGS");
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = GDT_ENTRIES * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = flat_segment(SEL_CODE64, 1);
    struct kvm_segment *data[] = { &sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss };
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++)
        *data[i] = flat_segment(SEL_DATA, 0);
    sregs.cr3 = PML4_START;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
        die(STATUS_CRASH, "KVM_SET_SREGS");
}

static uint64_t number(const char *text)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 0);
    if (errno != 0 || *text == '\0' || *end != '\0') {
        fprintf(stderr, "floor: '%s' is not a number\n", text);
        exit(STATUS_BAD_INPUT);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: floor_restore MEMORY RIP R12 (a count.bin snapshot's memory file)\n");
        return STATUS_BAD_INPUT;
    }
    uint64_t rip = number(argv[2]);
    uint64_t r12 = number(argv[3]);

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die(STATUS_NO_KVM, "open /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die(STATUS_NO_KVM, "KVM_CREATE_VM");

    int file = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (file < 0)
        die(STATUS_BAD_INPUT, argv[1]);
    struct stat st;
    if (fstat(file, &st) < 0 || st.st_size <= 0 || st.st_size % 4096 != 0) {
        fprintf(stderr, "floor: %s is not a snapshot's memory file\n", argv[1]);
        return STATUS_BAD_INPUT;
    }
    uint8_t *mem = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_NORESERVE, file, 0);
    if (mem == MAP_FAILED)
        die(STATUS_CRASH, "mmap the memory file");
    close(file);

    int vcpu = one_slot_one_vcpu(vm, mem, (uint64_t)st.st_size);
    struct kvm_run *run = map_run(kvm, vcpu);

    long_mode(vcpu);
    struct kvm_regs regs = { .rip = rip, .r12 = r12, .rflags = 0x2 };
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        die(STATUS_CRASH, "KVM_SET_REGS");

    return run_vcpu(vcpu, run);
}
