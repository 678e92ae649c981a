/*
 * outb PORT VALUE — write one byte to an x86 I/O port from user space.
 * outb PORT -     — the same, with VALUE read from standard input (one line): started
 *                   ahead of time, it writes the port without an exec when the value comes.
 *
 * The kvmini guest's /init uses it for the boot-time marker (port 0x80) and
 * to end the VM with a status (port 0xf4).  It asks the kernel for access to
 * that one port with ioperm(PORT, 1, 1) (needs CAP_SYS_RAWIO: init is root)
 * and then executes OUT; on hardware or a VMM that enforces the I/O
 * permission bitmap this is what makes the OUT legal.
 *
 * Freestanding: no C library, raw system calls, a few hundred bytes.
 * PORT and VALUE are decimal or 0x-prefixed hexadecimal.
 * Exit status: 0 on success, 1 if ioperm() fails, 2 on bad arguments.
 */

#include "linux_sys.h"


__attribute__((used)) static void __attribute__((noreturn)) outb_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	long port, value;

	int from_stdin = argc == 3 && argv[2][0] == '-' && argv[2][1] == 0;

	if (argc != 3 || (port = parse_number(argv[1], 0xffff)) < 0 ||
	    (!from_stdin && ((value = parse_number(argv[2], 0xffff)) < 0 || value > 0xff))) {
		write_str(2, "usage: outb PORT VALUE|-   (PORT 0-0xffff, VALUE 0-0xff)\n");
		sys_exit(2);
	}
	if (syscall3(SYS_ioperm, port, 1, 1) != 0) {
		write_str(2, "outb: ioperm failed\n");
		sys_exit(1);
	}
	if (from_stdin) {
		char line[16];
		long n = syscall3(SYS_read, 0, (long)line, sizeof(line) - 1);

		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
			n--;
		line[n > 0 ? n : 0] = 0;
		if (n <= 0 || (value = parse_number(line, 0xffff)) < 0 || value > 0xff) {
			write_str(2, "outb: no value 0-0xff on standard input\n");
			sys_exit(2);
		}
	}
	__asm__ volatile("outb %b0, %w1" : : "a"(value), "Nd"(port));
	sys_exit(0);
}

LINUX_START(outb_main);
