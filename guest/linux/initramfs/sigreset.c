/*
 * sigreset PROG ARGS... — run PROG with every signal at its default action
 * and none blocked.
 *
 * The kvmini guest's /init starts the interactive shell as a background job
 * (so that PID 1 can wait and still act on poweroff/reboot signals at once).
 * A shell ignores SIGINT and SIGQUIT in background jobs, and a shell that
 * starts with SIGINT ignored keeps it ignored for good: Ctrl-C would do
 * nothing.  This helper undoes that before the shell starts.
 *
 * PROG is looked up in PATH when it has no "/"; a name not found there is
 * run as a busybox applet (/bin/busybox with argv[0] = PROG), since the
 * guest has no symlink per applet.
 *
 * Freestanding: no C library, raw system calls.  Exit status 127 if PROG
 * cannot be run, 2 without PROG.
 */

#define SYS_write        1
#define SYS_rt_sigaction 13
#define SYS_rt_sigprocmask 14
#define SYS_execve       59
#define SYS_exit         60

#define NSIG_MAX 64
#define SIG_SETMASK 2

struct kernel_sigaction {
	unsigned long handler;
	unsigned long flags;
	unsigned long restorer;
	unsigned long mask;
};

static long syscall4(long nr, long a, long b, long c, long d)
{
	long ret;
	register long r10 __asm__("r10") = d;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

static void __attribute__((noreturn)) sys_exit(int status)
{
	for (;;)
		syscall4(SYS_exit, status, 0, 0, 0);
}

static unsigned long len(const char *s)
{
	unsigned long n = 0;

	while (s[n])
		n++;
	return n;
}

static void say(const char *s)
{
	syscall4(SYS_write, 2, (long)s, len(s), 0);
}

static int has_slash(const char *s)
{
	for (; *s; s++)
		if (*s == '/')
			return 1;
	return 0;
}

__attribute__((used)) static void __attribute__((noreturn)) sigreset_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	struct kernel_sigaction dfl = { 0, 0, 0, 0 };
	unsigned long none = 0;
	const char *path = 0;
	char buf[512];
	int sig;

	if (argc < 2) {
		say("usage: sigreset PROG [ARGS...]\n");
		sys_exit(2);
	}
	for (sig = 1; sig <= NSIG_MAX; sig++)
		if (sig != 9 && sig != 19) /* SIGKILL, SIGSTOP */
			syscall4(SYS_rt_sigaction, sig, (long)&dfl, 0, 8);
	syscall4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, 8);

	argv++;
	if (has_slash(argv[0]))
		syscall4(SYS_execve, (long)argv[0], (long)argv, (long)envp, 0);
	else {
		char **e;

		for (e = envp; *e; e++) {
			const char *p = *e;

			if (p[0] == 'P' && p[1] == 'A' && p[2] == 'T' &&
			    p[3] == 'H' && p[4] == '=') {
				path = p + 5;
				break;
			}
		}
		while (path && *path) {
			unsigned long n = 0, m = len(argv[0]);

			while (path[n] && path[n] != ':')
				n++;
			if (n && n + 1 + m < sizeof(buf)) {
				unsigned long i;

				for (i = 0; i < n; i++)
					buf[i] = path[i];
				buf[n] = '/';
				for (i = 0; i <= m; i++)
					buf[n + 1 + i] = argv[0][i];
				syscall4(SYS_execve, (long)buf, (long)argv,
					 (long)envp, 0);
			}
			path += n;
			if (*path == ':')
				path++;
		}
		syscall4(SYS_execve, (long)"/bin/busybox", (long)argv,
			 (long)envp, 0);
	}
	say("sigreset: cannot run ");
	say(argv[0]);
	say("\n");
	sys_exit(127);
}

/* The kernel starts us with argc, argv[] and envp[] on the stack. */
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call sigreset_main\n"
	"	hlt\n");
