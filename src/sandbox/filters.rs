//! Which system calls each kind of kvmini thread may make once the guest runs, each with the
//! reason it is there. Everything before (opening /dev/kvm and the images, mapping memory,
//! creating the VM, the vCPUs and the devices) happens before the filters go in, so none of
//! that is here. `docs/security.md` explains the lists.
//!
//! `ioctl` is allowed only for KVM's requests (type 0xAE) and the four terminal requests the
//! console uses; see [`ioctl_rules`].

use super::Role;

/// A system call and why a role needs it.
pub type Entry = (i64, &'static str);

/// What every kvmini thread does, whatever its role: memory for the Rust allocator, locks,
/// signals, its own end, and writing messages.
const COMMON: &[Entry] = &[
    (libc::SYS_brk, "the allocator grows the heap"),
    (
        libc::SYS_mmap,
        "the allocator maps large blocks; a thread maps its signal stack",
    ),
    (
        libc::SYS_munmap,
        "the allocator and a thread's end unmap what they mapped",
    ),
    (
        libc::SYS_mremap,
        "the allocator grows a large block in place",
    ),
    (
        libc::SYS_madvise,
        "the allocator returns freed memory; a thread's end frees its stack",
    ),
    (libc::SYS_mprotect, "a new thread's stack guard page"),
    (
        libc::SYS_futex,
        "locks and condition variables between kvmini's threads",
    ),
    (
        libc::SYS_rt_sigprocmask,
        "blocking signals around critical sections",
    ),
    (
        libc::SYS_rt_sigreturn,
        "returning from kvmini's signal handlers (the vCPU kick)",
    ),
    (
        libc::SYS_rt_sigaction,
        "a fatal signal (SIGINT, SIGTERM...) puts the terminal back, then dies of it",
    ),
    (
        libc::SYS_sigaltstack,
        "the signal stack a thread sets up and removes",
    ),
    (libc::SYS_sched_yield, "spinning locks yield"),
    (
        libc::SYS_gettid,
        "a thread's id, for the vCPU kick and the --timeout timer",
    ),
    (
        libc::SYS_getpid,
        "the process id, to signal a thread (tgkill)",
    ),
    (
        libc::SYS_tgkill,
        "kicking a vCPU thread out of KVM_RUN to stop the VM, or for the debugger",
    ),
    (
        libc::SYS_write,
        "messages on stderr, serial output on stdout, --trace lines (stderr or the trace file, opened before)",
    ),
    (libc::SYS_close, "closing descriptors that go out of use"),
    (
        libc::SYS_fcntl,
        "a debug build's standard library checks a descriptor before closing it",
    ),
    (
        libc::SYS_clock_gettime,
        "timestamps; thread CPU time is a real system call",
    ),
    (libc::SYS_clock_nanosleep, "short waits"),
    (libc::SYS_nanosleep, "short waits"),
    (
        libc::SYS_getrandom,
        "the first hash map of a thread seeds itself",
    ),
    (libc::SYS_exit, "a thread ends"),
    (libc::SYS_exit_group, "the process ends"),
];

/// A vCPU thread: `KVM_RUN` and the exits it handles.
const VCPU: &[Entry] = &[
    (
        libc::SYS_ioctl,
        "KVM_RUN, KVM_GET_* for crash reports; with --gdb KVM_SET_GUEST_DEBUG, KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_FPU (KVM requests only)",
    ),
    (libc::SYS_fsync, "flushing --serial file: output"),
    (
        libc::SYS_epoll_ctl,
        "a device reset by the guest stops watching its descriptors",
    ),
    (libc::SYS_read, "eventfds of devices the guest touches"),
    (
        libc::SYS_timer_create,
        "--timeout: a timer aimed at the boot vCPU's thread",
    ),
    (libc::SYS_timer_settime, "--timeout: arming it"),
    (libc::SYS_timer_delete, "--timeout: removing it"),
];

/// The main thread: it runs the boot vCPU, then saves a snapshot, stops the other threads,
/// tears the VM down and prints the statistics; with `--snapshot-continue` it starts the
/// other vCPUs' threads again.
const MAIN: &[Entry] = &[
    (
        libc::SYS_openat,
        "--snapshot: creating the snapshot's files",
    ),
    (
        libc::SYS_mkdirat,
        "--snapshot: the directory, when it does not exist",
    ),
    (
        libc::SYS_mkdir,
        "--snapshot: the directory, when it does not exist",
    ),
    (
        libc::SYS_pwrite64,
        "--snapshot: writing guest memory into the sparse file",
    ),
    (libc::SYS_ftruncate, "--snapshot: sizing the memory file"),
    (
        libc::SYS_fsync,
        "--snapshot: the files reach the disk before the rename",
    ),
    (libc::SYS_fdatasync, "--snapshot: likewise"),
    (
        libc::SYS_rename,
        "--snapshot: the finished snapshot takes its name",
    ),
    (libc::SYS_renameat, "--snapshot: likewise"),
    (libc::SYS_renameat2, "--snapshot: likewise"),
    (
        libc::SYS_mincore,
        "--snapshot: which pages of guest memory were ever touched",
    ),
    (libc::SYS_lseek, "--snapshot: writing the files"),
    (libc::SYS_statx, "--snapshot: checking the directory"),
    (libc::SYS_newfstatat, "--snapshot: checking the directory"),
    (libc::SYS_fstat, "--snapshot: checking the files"),
    (
        libc::SYS_getdents64,
        "--snapshot: checking that the directory is empty",
    ),
    (
        libc::SYS_unlink,
        "removing the vsock and --gdb sockets and a snapshot's temporary files",
    ),
    (libc::SYS_unlinkat, "likewise"),
    (libc::SYS_rmdir, "a snapshot's temporary directory"),
    (libc::SYS_read, "eventfds"),
    (
        libc::SYS_rt_sigtimedwait,
        "the SIGUSR1 watcher's end drains a pending signal",
    ),
    (
        libc::SYS_clone3,
        "--snapshot-continue: the other vCPUs' threads start again",
    ),
    (libc::SYS_clone, "likewise, with an older C library"),
    (libc::SYS_set_robust_list, "a new thread's start"),
    (libc::SYS_rseq, "a new thread's start"),
    (libc::SYS_prctl, "a new thread names itself"),
    (libc::SYS_sched_getaffinity, "a new thread's start"),
];

/// The I/O thread: the devices' event loop and their files and sockets.
const IO: &[Entry] = &[
    (
        libc::SYS_epoll_wait,
        "waiting for queue notifications and device descriptors",
    ),
    (libc::SYS_epoll_pwait, "likewise"),
    (
        libc::SYS_epoll_ctl,
        "devices watch and stop watching their descriptors",
    ),
    (libc::SYS_read, "eventfds, the TAP, vsock streams"),
    (libc::SYS_readv, "the TAP"),
    (libc::SYS_writev, "the TAP"),
    (libc::SYS_pread64, "virtio-blk reads"),
    (libc::SYS_pwrite64, "virtio-blk writes"),
    (libc::SYS_fdatasync, "virtio-blk flush"),
    (
        libc::SYS_socket,
        "vsock: a guest's connection to a host Unix socket",
    ),
    (libc::SYS_connect, "vsock: likewise"),
    (libc::SYS_accept4, "vsock: a host program's connection"),
    (libc::SYS_accept, "vsock: likewise"),
    (
        libc::SYS_sendto,
        "vsock: data to a host program (MSG_NOSIGNAL)",
    ),
    (libc::SYS_recvfrom, "vsock: data from a host program"),
    (libc::SYS_shutdown, "vsock: half-closing a stream"),
    (
        libc::SYS_ioctl,
        "vsock: FIONBIO makes a new stream non-blocking (nothing else)",
    ),
];

/// The console thread: standard input to the UART.
const CONSOLE: &[Entry] = &[
    (libc::SYS_read, "standard input and its stop eventfd"),
    (libc::SYS_poll, "waiting for standard input"),
    (libc::SYS_ppoll, "likewise"),
    (
        libc::SYS_ioctl,
        "restoring the terminal's settings (TCSETS)",
    ),
];

/// The SIGUSR1 watcher: a signalfd.
const SIGNAL: &[Entry] = &[
    (libc::SYS_read, "the signalfd and its stop eventfd"),
    (libc::SYS_poll, "waiting for SIGUSR1"),
    (libc::SYS_ppoll, "likewise"),
];

/// The GDB stub's thread: its listening socket, one debugger's connection, the vCPU's
/// eventfd. `write` (common) also carries the eventfd.
const GDB: &[Entry] = &[
    (
        libc::SYS_poll,
        "waiting for a debugger, its packets and the vCPU's stops",
    ),
    (libc::SYS_ppoll, "likewise"),
    (libc::SYS_accept4, "a debugger's connection"),
    (libc::SYS_accept, "likewise"),
    (
        libc::SYS_setsockopt,
        "TCP_NODELAY on a debugger's connection (packets are small and answered one by one)",
    ),
    (libc::SYS_recvfrom, "a debugger's packets"),
    (libc::SYS_sendto, "answers to the debugger (MSG_NOSIGNAL)"),
    (libc::SYS_read, "the vCPU's eventfd"),
];

/// What `role` may call, the common part first.
pub fn allowed(role: Role) -> impl Iterator<Item = &'static Entry> {
    let own: &[Entry] = match role {
        Role::Vcpu => VCPU,
        Role::Main => MAIN,
        Role::Io => IO,
        Role::Console => CONSOLE,
        Role::Signal => SIGNAL,
        Role::Gdb => GDB,
    };
    // The main thread runs the boot vCPU.
    let vcpu: &[Entry] = if role == Role::Main { VCPU } else { &[] };
    COMMON.iter().chain(own).chain(vcpu)
}

/// `FIONBIO`: the I/O thread makes a new vsock stream non-blocking.
pub const FIONBIO: u64 = libc::FIONBIO;

/// `ioctl` requests kvmini makes once the guest runs: KVM's (type 0xAE in bits 8-15) and the
/// terminal's.
pub fn ioctl_rules() -> (u64, u64, &'static [u64]) {
    const KVMIO_TYPE_MASK: u64 = 0xff00;
    const KVMIO: u64 = 0xae00;
    const TERMINAL: &[u64] = &[libc::TCGETS, libc::TCSETS, libc::TCSETSW, libc::TCSETSF];
    (KVMIO_TYPE_MASK, KVMIO, TERMINAL)
}
