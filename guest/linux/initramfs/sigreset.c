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

#include "linux_sys.h"

#define NSIG_MAX 64
#define SIG_SETMASK 2

struct kernel_sigaction {
	unsigned long handler;
	unsigned long flags;
	unsigned long restorer;
	unsigned long mask;
};

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
		write_str(2, "usage: sigreset PROG [ARGS...]\n");
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
			unsigned long n = 0, m = str_len(argv[0]);

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
	write_str(2, "sigreset: cannot run ");
	write_str(2, argv[0]);
	write_str(2, "\n");
	sys_exit(127);
}

LINUX_START(sigreset_main);
