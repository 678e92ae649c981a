/*
 * linux_sys.h — what kvmini's freestanding Linux programs (the initramfs helpers, the
 * compute workload) need instead of a C library: the few system calls they make (x86-64
 * ABI: number in RAX, arguments in RDI, RSI, RDX, R10; RCX and R11 clobbered) and the entry
 * point.
 */
#ifndef KVMINI_GUEST_LINUX_SYS_H
#define KVMINI_GUEST_LINUX_SYS_H

#define SYS_read            0
#define SYS_write           1
#define SYS_close           3
#define SYS_poll            7
#define SYS_rt_sigaction    13
#define SYS_rt_sigprocmask  14
#define SYS_socket          41
#define SYS_connect         42
#define SYS_accept          43
#define SYS_shutdown        48
#define SYS_bind            49
#define SYS_listen          50
#define SYS_execve          59
#define SYS_ioperm          173
#define SYS_exit_group      231

static inline long syscall4(long nr, long a, long b, long c, long d)
{
	long ret;
	register long r10 __asm__("r10") = d;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

static inline long syscall3(long nr, long a, long b, long c)
{
	return syscall4(nr, a, b, c, 0);
}

static inline void __attribute__((noreturn)) sys_exit(int status)
{
	for (;;)
		syscall3(SYS_exit_group, status, 0, 0);
}

static inline unsigned long str_len(const char *s)
{
	unsigned long n = 0;

	while (s[n])
		n++;
	return n;
}

/*
 * Parses decimal or 0x-prefixed hexadecimal up to `max`; returns -1 unless the whole string
 * is such a number.
 */
static inline long parse_number(const char *s, unsigned long max)
{
	unsigned long v = 0, base = 10;
	int digits = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (; *s; s++, digits++) {
		unsigned long d;

		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = *s - 'a' + 10;
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = *s - 'A' + 10;
		else
			return -1;
		v = v * base + d;
		if (v > max)
			return -1;
	}
	return digits ? (long)v : -1;
}

/* Writes a NUL-terminated string to a file descriptor (best effort). */
static inline void write_str(int fd, const char *s)
{
	syscall3(SYS_write, fd, (long)s, (long)str_len(s));
}

/*
 * LINUX_START(fn): the program's entry point. The kernel starts it with argc, argv[] and
 * envp[] on the stack; fn(long *sp) gets a pointer to them, with the stack aligned as the
 * ABI wants for a call.
 */
#define LINUX_START(fn)                 \
	__asm__(".text\n"               \
		".globl _start\n"       \
		"_start:\n"             \
		"	xor %ebp, %ebp\n" \
		"	mov %rsp, %rdi\n" \
		"	and $-16, %rsp\n" \
		"	call " #fn "\n"   \
		"	ud2\n")

#endif
