/*
 * floor.c: the least any VMM has to do to run a flat real-mode binary.
 *
 *   floor IMAGE
 *
 * Opens /dev/kvm, creates a VM with one memory slot (16 MiB of anonymous memory, mapped
 * lazily, the same size as kvmini's default) and one vCPU, loads IMAGE at guest-physical
 * 0x10000, enters it in real mode at CS:IP = 0x1000:0000 with DS = ES = SS = 0x1000 and
 * SP = 0xfff0 (the kvmtool flat-binary convention kvmini follows too), and runs it
 * with the devices of floor_io.h (COM1 output, the exit port 0xf4); `hlt` ends it with
 * status 0, anything else (a triple fault, an emulation failure) with status 122.
 *
 * The benchmark measures kvmini against this program: whatever kvmini spends beyond it is
 * kvmini's own cost. Interfaces: Documentation/virt/kvm/api.rst in the Linux tree.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "floor_io.h"

#define MEM_SIZE   (16u << 20)
#define LOAD_ADDR  0x10000u
#define LOAD_SEG   (LOAD_ADDR >> 4)
/* Three pages below 4 GiB that KVM on Intel without "unrestricted guest" needs for real mode. */
#define TSS_ADDR   0xfffbd000u

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: floor IMAGE (a flat real-mode binary)\n");
        return STATUS_BAD_INPUT;
    }

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die(STATUS_NO_KVM, "open /dev/kvm");
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        fprintf(stderr, "floor: KVM API version is not %d\n", KVM_API_VERSION);
        return STATUS_NO_KVM;
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die(STATUS_NO_KVM, "KVM_CREATE_VM");
    if (ioctl(vm, KVM_SET_TSS_ADDR, (unsigned long)TSS_ADDR) < 0)
        die(STATUS_NO_KVM, "KVM_SET_TSS_ADDR");

    uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED)
        die(STATUS_CRASH, "mmap guest memory");

    int image = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (image < 0)
        die(STATUS_BAD_INPUT, argv[1]);
    size_t loaded = 0;
    for (;;) {
        ssize_t n = read(image, mem + LOAD_ADDR + loaded, MEM_SIZE - LOAD_ADDR - loaded);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die(STATUS_BAD_INPUT, argv[1]);
        if (n == 0)
            break;
        loaded += (size_t)n;
        if (loaded == MEM_SIZE - LOAD_ADDR) {
            fprintf(stderr, "floor: %s does not fit in guest memory\n", argv[1]);
            return STATUS_BAD_INPUT;
        }
    }
    close(image);

    int vcpu = one_slot_one_vcpu(vm, mem, MEM_SIZE);
    struct kvm_run *run = map_run(kvm, vcpu);

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        die(STATUS_CRASH, "KVM_GET_SREGS");
    struct kvm_segment *segs[] = { &sregs.cs, &sregs.ds, &sregs.es, &sregs.ss };
    for (size_t i = 0; i < sizeof segs / sizeof segs[0]; i++) {
        segs[i]->selector = LOAD_SEG;
        segs[i]->base = LOAD_ADDR;
    }
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
        die(STATUS_CRASH, "KVM_SET_SREGS");
    struct kvm_regs regs = { .rip = 0, .rsp = 0xfff0, .rflags = 0x2 };
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        die(STATUS_CRASH, "KVM_SET_REGS");

    return run_vcpu(vcpu, run);
}
