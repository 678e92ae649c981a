/*
 * floor_io.h: what the two floor programs (floor.c, floor_restore.c) share: failing with a
 * message, the serial port's output and the exit port. Only these devices exist:
 *
 *   - a write to port 0x3f8 (COM1 THR) goes to standard output, unbuffered;
 *   - a read of port 0x3fd (COM1 LSR) returns 0x20: the transmitter is always empty;
 *   - a write of V to port 0xf4 ends the program with status V;
 *   - any other port read returns all-ones and any other port write is dropped.
 */
#ifndef FLOOR_IO_H
#define FLOOR_IO_H

#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define COM1_THR   0x3f8
#define COM1_LSR   0x3fd
#define LSR_THRE   0x20
#define EXIT_PORT  0xf4

#define STATUS_BAD_INPUT 120
#define STATUS_NO_KVM    121
#define STATUS_CRASH     122

static void die(int status, const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(status);
}

static void serial_out(const uint8_t *bytes, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, bytes, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* nobody reads our output: the guest still runs to its end */
        bytes += n;
        len -= (size_t)n;
    }
}

/* One KVM_EXIT_IO: `count` accesses of `size` bytes each, the data at `data` in kvm_run. */
static void port_io(struct kvm_run *run)
{
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    size_t len = (size_t)run->io.size * run->io.count;

    if (run->io.direction == KVM_EXIT_IO_OUT) {
        switch (run->io.port) {
        case COM1_THR:
            serial_out(data, len);
            break;
        case EXIT_PORT:
            exit(data[0]);
        default:
            break; /* nothing there: the write is dropped */
        }
    } else {
        memset(data, run->io.port == COM1_LSR ? LSR_THRE : 0xff, len);
    }
}

/* Gives the VM `size` bytes at `mem` as guest RAM from guest-physical 0 (slot 0) and creates
 * its one vCPU; returns the vCPU's descriptor. */
static int one_slot_one_vcpu(int vm, uint8_t *mem, uint64_t size)
{
    struct kvm_userspace_memory_region region = {
        .slot = 0,
        .guest_phys_addr = 0,
        .memory_size = size,
        .userspace_addr = (uintptr_t)mem,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die(STATUS_CRASH, "KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        die(STATUS_CRASH, "KVM_CREATE_VCPU");
    return vcpu;
}

/* The vCPU's kvm_run area. */
static struct kvm_run *map_run(int kvm, int vcpu)
{
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run))
        die(STATUS_CRASH, "KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                               vcpu, 0);
    if (run == MAP_FAILED)
        die(STATUS_CRASH, "mmap kvm_run");
    return run;
}

/* Runs the vCPU until the guest ends: by the exit port, `hlt` (status 0), or anything else
 * (a triple fault, an emulation failure: status 122). MMIO outside RAM reads all-ones and
 * drops writes. */
static int run_vcpu(int vcpu, struct kvm_run *run)
{
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            die(STATUS_CRASH, "KVM_RUN");
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            port_io(run);
            break;
        case KVM_EXIT_MMIO:
            if (!run->mmio.is_write)
                memset(run->mmio.data, 0xff, run->mmio.len);
            break;
        case KVM_EXIT_HLT:
            return 0;
        default:
            fprintf(stderr, "floor: guest stopped: KVM exit reason %u\n", run->exit_reason);
            return STATUS_CRASH;
        }
    }
}

#endif
