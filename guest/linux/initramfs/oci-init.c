/*
 * oci-init — runs one OCI container process inside the kvmini Linux guest (`kvmini oci`,
 * docs/oci.md).  /init starts it as its command (`-- /bin/oci-init`) with the console as
 * standard input, output and error.
 *
 *  1. reads the process spec from the spec disk (/dev/vdb): "KVMOCI1\0", a 32-bit length,
 *     then records of a tag byte, a 32-bit length and the bytes (little-endian; written by
 *     oci/src/spec_disk.rs, which lists the tags);
 *  2. mounts the container's root disk (/dev/vda, ext4) on /newroot, the bind-mount disk
 *     (/dev/vdc, when the spec has one) on /oci-binds, and each listed mount below /newroot,
 *     creating missing mount points; sets the host name and the sysctls;
 *  3. puts the console in raw mode (no CR added to output, no line editing of input),
 *     prints the ready line and waits for one byte on the console: the holder on the host
 *     sends it when `kvmini oci start` releases the container;
 *  4. forks: the child changes root to /newroot, the directory, rlimits, groups, gid and uid
 *     and executes the process (args[0] looked up in the spec's PATH) with a pipe as its
 *     standard input and two more as its output and error; or, for process.terminal, in a
 *     session of its own with a pseudo-terminal (the container's devpts when it has one) as
 *     its controlling terminal and its standard input, output and error;
 *  5. the parent copies the console to the input pipe until the process ends, with the
 *     holder's escapes (ESC below): a NUL byte, a signal for the process, the end of its
 *     input; and the output and error pipes to the console, with ESC 1 or ESC 2 where the
 *     stream changes and each NUL byte doubled (a terminal: to and from its master side,
 *     all output as stream 1; the end of input only ends the copy, as for conmon);
 *  6. then it waits for it, syncs a writable root and ends the VM with the process's exit
 *     status (128 + N for a signal) on port 0xf4.
 *
 * With --snapshot (`make oci-snapshot`) it first gets ready without a spec and asks kvmini to
 * save the VM (0x7f on port 0x80, `kvmini run --snapshot`); a container's VM is a restore of
 * that snapshot with the container's images under the disks, and goes on from the port
 * write at step 1. The exec of oci-init itself, and the console set-up, are then paid once
 * for all containers.
 *
 * Freestanding: no C library, raw system calls.  Any failure before the exec ends the VM
 * with status 127 (the exec itself) or 126 (the set-up) and a line "oci-init: ..." on the
 * console.
 */

#include "linux_sys.h"

#define SYS_open       2
#define SYS_ioctl      16
#define SYS_dup2       33
#define SYS_fork       57
#define SYS_kill       62
#define SYS_wait4      61
#define SYS_chdir      80
#define SYS_symlink    88
#define SYS_chmod      90
#define SYS_mkdir      83
#define SYS_umask      95
#define SYS_setresuid  117
#define SYS_mknod      133
#define SYS_setresgid  119
#define SYS_setgroups  116
#define SYS_chroot     161
#define SYS_sync       162
#define SYS_mount      165
#define SYS_sethostname 170
#define SYS_signalfd4  289
#define SYS_pipe2      293
#define SYS_setsid     112
#define SYS_prlimit64  302

#define BLKFLSBUF   0x1261
#define MS_RDONLY   1UL
#define MS_REMOUNT  32UL
#define MS_BIND     4096UL
#define MS_REC      16384UL
#define O_RDONLY    0
#define O_WRONLY    1
#define O_CREAT     0100
#define O_RDWR      2
#define O_NOCTTY    0400
#define ENOENT      2
#define EEXIST      17

#define SPEC_MAX    65536
#define SIGCHLD_BIT (1UL << (17 - 1))
#define SIGPIPE_BIT (1UL << (13 - 1))
#define POLLIN      1
/* The escape byte on the console. From the holder: ESC ESC is a NUL byte of input, ESC N
 * (1-64) signal N for the process, ESC END the end of its input, ESC WINSIZE the size of
 * its terminal (oci/src/console.rs). To the holder: ESC ESC is
 * a NUL byte of output, ESC 1 and ESC 2 say that standard output or error follows. */
#define ESC         0
#define END         0xff
#define WINSIZE     0xfe /* then rows and columns, 16-bit little-endian */
#define MAX_ITEMS   256

static long syscall5(long nr, long a, long b, long c, long d, long e)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
			 : "rcx", "r11", "memory");
	return ret;
}

static char spec[SPEC_MAX];
static char *args[MAX_ITEMS + 1], *envs[MAX_ITEMS + 1];
static int nargs, nenvs;
static char *cwd = "/", *hostname;
static unsigned long uid, gid, groups[MAX_ITEMS];
static int ngroups, readonly_root, binds_disk, terminal;
/* The terminal's size (process.consoleSize): rows, columns; 0 when not given. */
static unsigned long term_rows, term_cols;
static long umask = -1;
/* sysctls: the record of each (key NUL value). */
static char *sysctls[MAX_ITEMS];
static int nsysctls;
/* rlimits: resource, soft, hard. */
static unsigned long limits[64][3];
static int nlimits;
/* mounts: the record of each (type NUL source NUL target NUL flags NUL data NUL). */
static char *mounts[MAX_ITEMS];
static int nmounts;
static char path_buf[4096];

static int in_child;

static void outb(unsigned short port, unsigned char value)
{
	syscall3(SYS_ioperm, port, 1, 1);
	__asm__ volatile("outb %b0, %w1" : : "a"(value), "Nd"(port));
}

/*
 * Phase markers on the debug port (0x80, user-space values): kvmini notes when each is
 * written, and `kvmini restore ... --trace=io:0x80` shows them with their times, so the
 * guest's share of a container's start can be read phase by phase (docs/oci.md).
 */
enum phase {
	SPEC_READ = 0x61,  /* the spec disk read */
	ROOT_MOUNTED,      /* the root image mounted on /newroot */
	READY,             /* every mount, node and sysctl done: the ready line next */
	STARTED,           /* the holder's start byte read */
	FORKED,            /* the process forked (its exec follows in the child) */
	ENDED,             /* the process ended and its output passed on */
};

static void mark(enum phase p)
{
	outb(0x80, (unsigned char)p);
}

static void __attribute__((noreturn)) fail(const char *what, const char *detail, int status)
{
	write_str(2, "oci-init: ");
	write_str(2, what);
	if (detail) {
		write_str(2, ": ");
		write_str(2, detail);
	}
	write_str(2, "\n");
	/* The process's side: its parent reports the status after passing the message on. */
	if (in_child)
		sys_exit(status);
	/* Status 126/127 on the exit port: the holder passes it on as the container's. */
	outb(0xf4, (unsigned char)status);
	sys_exit(status);
}

static unsigned long parse_u64(const char *s)
{
	unsigned long v = 0;

	if (!*s)
		fail("bad number in the spec", s, 126);
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			fail("bad number in the spec", s, 126);
		v = v * 10 + (unsigned long)(*s - '0');
	}
	return v;
}

static unsigned long read_u32(const unsigned char *p)
{
	return p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 |
	       (unsigned long)p[3] << 24;
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* The next NUL-terminated field after s (fields of a mount record). */
static char *next_field(char *s)
{
	return s + str_len(s) + 1;
}

static void read_spec(void)
{
	long fd = syscall3(SYS_open, (long)"/dev/vdb", O_RDONLY, 0), got = 0, n;
	unsigned long len, at;

	if (fd < 0)
		fail("cannot open the spec disk /dev/vdb", 0, 126);
	/* The first block, then only as much of the rest as the spec's length asks for: every
	 * byte read is the guest kernel's (emulated, here) work. */
	for (unsigned long want = 4096; got < (long)want;) {
		n = syscall3(SYS_read, fd, (long)spec + got, (long)want - got);
		if (n <= 0)
			break;
		got += n;
		if (got >= 12 && want == 4096) {
			len = read_u32((unsigned char *)spec + 8) + 12;
			want = len > want ? (len < SPEC_MAX ? len : SPEC_MAX) : want;
		}
	}
	syscall3(SYS_close, fd, 0, 0);
	for (int i = 0; i < 8; i++)
		if (got < 12 || spec[i] != "KVMOCI1"[i])
			fail("the spec disk holds no kvmini OCI spec", 0, 126);
	len = read_u32((unsigned char *)spec + 8);
	if (len > (unsigned long)got - 12)
		fail("the spec is longer than its disk", 0, 126);
	for (at = 12; at + 5 <= 12 + len;) {
		char tag = spec[at];
		unsigned long n = read_u32((unsigned char *)spec + at + 1);
		char *v = spec + at + 5;

		if (at + 5 + n + 1 > 12 + len)
			fail("a spec record runs past its end", 0, 126);
		/* Each record's bytes end with a NUL that the writer adds. */
		at += 5 + n + 1;
		if ((tag == 'A' && nargs == MAX_ITEMS) || (tag == 'E' && nenvs == MAX_ITEMS) ||
		    (tag == 'g' && ngroups == MAX_ITEMS) || (tag == 'L' && nlimits == 64) ||
		    (tag == 'M' && nmounts == MAX_ITEMS) || (tag == 'S' && nsysctls == MAX_ITEMS))
			fail("too many items in the spec", 0, 126);
		switch (tag) {
		case 'A': args[nargs++] = v; break;
		case 'E': envs[nenvs++] = v; break;
		case 'C': cwd = v; break;
		case 'H': hostname = v; break;
		case 'U': uid = parse_u64(v); break;
		case 'G': gid = parse_u64(v); break;
		case 'g': groups[ngroups++] = parse_u64(v); break;
		case 'K': umask = (long)parse_u64(v); break;
		case 'R': readonly_root = 1; break;
		case 'B': binds_disk = 1; break;
		case 'T': terminal = 1; break;
		case 'W': term_rows = parse_u64(v); term_cols = parse_u64(next_field(v)); break;
		case 'M': mounts[nmounts++] = v; break;
		case 'S': sysctls[nsysctls++] = v; break;
		case 'L': {
			char *soft = next_field(v), *hard = next_field(soft);

			limits[nlimits][0] = parse_u64(v);
			limits[nlimits][1] = parse_u64(soft);
			limits[nlimits][2] = parse_u64(hard);
			nlimits++;
			break;
		}
		default: fail("unknown record in the spec", 0, 126);
		}
	}
	if (nargs == 0)
		fail("the spec has no process args", 0, 126);
}

/* path_buf = a + b (b absolute), or fail. */
static char *join(const char *a, const char *b)
{
	unsigned long la = str_len(a), lb = str_len(b);

	if (la + lb + 1 > sizeof(path_buf))
		fail("path too long", b, 126);
	for (unsigned long i = 0; i < la; i++)
		path_buf[i] = a[i];
	for (unsigned long i = 0; i <= lb; i++)
		path_buf[la + i] = b[i];
	return path_buf;
}

/* mkdir -p of path (in place: slashes are put back). */
static void make_dirs(char *path)
{
	for (char *p = path + 1;; p++) {
		if (*p == '/' || *p == 0) {
			char c = *p;
			long r;

			*p = 0;
			r = syscall3(SYS_mkdir, (long)path, 0755, 0);
			*p = c;
			if (r < 0 && r != -EEXIST)
				fail("cannot create the mount point", path, 126);
			if (!c)
				return;
		}
	}
}

/* A missing mount point for a bind of a file is an empty file; otherwise a directory. */
static void make_mount_point(char *target, int for_file)
{
	long fd;

	if (!for_file) {
		make_dirs(target);
		return;
	}
	fd = syscall3(SYS_open, (long)target, O_RDONLY, 0);
	if (fd >= 0) {
		syscall3(SYS_close, fd, 0, 0);
		return;
	}
	for (char *p = target + str_len(target); p > target; p--) {
		if (*p == '/') {
			*p = 0;
			make_dirs(target);
			*p = '/';
			break;
		}
	}
	fd = syscall3(SYS_open, (long)target, O_WRONLY | O_CREAT, 0644);
	if (fd < 0)
		fail("cannot create the mount point", target, 126);
	syscall3(SYS_close, fd, 0, 0);
}

/* A character device node "MAJOR:MINOR" at target, mode 0666 whatever the umask. */
static void make_device(char *numbers, const char *target)
{
	char *minor = numbers;
	unsigned long major, min, dev;

	while (*minor && *minor != ':')
		minor++;
	if (!*minor)
		fail("bad device numbers in the spec", numbers, 126);
	*minor++ = 0;
	major = parse_u64(numbers);
	min = parse_u64(minor);
	dev = (major << 8) | (min & 0xff) | ((min & ~0xffUL) << 12);
	if (syscall3(SYS_mknod, (long)target, 0020000 | 0666, (long)dev) < 0 ||
	    syscall3(SYS_chmod, (long)target, 0666, 0) < 0)
		fail("cannot make the device node", target, 126);
}

static void do_mount(const char *src, const char *target, const char *type, unsigned long flags,
		     const char *data)
{
	if (syscall5(SYS_mount, (long)src, (long)target, (long)type, (long)flags, (long)data) < 0)
		fail("cannot mount", target, 126);
}

static void mount_all(void)
{
	/* Without the map of metadata blocks that block_validity checks against, nor the cache
	 * for sharing extended-attribute blocks: 0.6 -> 0.5 s of the mount here. The image is
	 * kvmini's own mkfs of the bundle's tree, and the guest is the boundary either way. */
	do_mount("/dev/vda", "/newroot", "ext4", readonly_root ? MS_RDONLY : 0,
		 "noblock_validity,nombcache");
	mark(ROOT_MOUNTED);
	if (binds_disk) {
		syscall3(SYS_mkdir, (long)"/oci-binds", 0755, 0);
		do_mount("/dev/vdc", "/oci-binds", "ext4", MS_RDONLY, "");
	}
	for (int i = 0; i < nmounts; i++) {
		char *type = mounts[i], *src = next_field(type), *dst = next_field(src);
		char *flags_s = next_field(dst), *data = next_field(flags_s);
		unsigned long flags = parse_u64(flags_s);
		int bind = same(type, "bind"), file = same(type, "file");
		char *target = join("/newroot", dst);

		if (same(type, "device")) {
			make_device(src, target);
		} else if (same(type, "link")) {
			if (syscall3(SYS_symlink, (long)src, (long)target, 0) < 0)
				fail("cannot make the link", target, 126);
		} else if (bind || file) {
			make_mount_point(target, file);
			do_mount(src, target, 0, MS_BIND | MS_REC, 0);
			if (flags & MS_RDONLY)
				do_mount(0, target, 0, MS_REMOUNT | MS_BIND | MS_RDONLY, 0);
		} else {
			make_mount_point(target, 0);
			do_mount(type, target, type, flags, data);
		}
	}
	if (hostname && syscall3(SYS_sethostname, (long)hostname, (long)str_len(hostname), 0) < 0)
		fail("cannot set the host name", hostname, 126);
}

/* Each sysctl key (dots or slashes) written to its file under the guest's /proc/sys. */
static void set_sysctls(void)
{
	for (int i = 0; i < nsysctls; i++) {
		char *key = sysctls[i], *value = next_field(key), *path;
		long fd;
		unsigned long n = str_len(value);

		path = join("/proc/sys/", key);
		for (char *p = path + 10; *p; p++)
			if (*p == '.')
				*p = '/';
		fd = syscall3(SYS_open, (long)path, O_WRONLY, 0);
		if (fd < 0)
			fail("this guest kernel has no sysctl", key, 126);
		if (syscall3(SYS_write, fd, (long)value, (long)n) != (long)n)
			fail("cannot set the sysctl", key, 126);
		syscall3(SYS_close, fd, 0, 0);
	}
}

/* No CR before each LF, no echo, no line editing or signal characters: a byte pipe. */
static void console_raw(void)
{
	struct {
		unsigned int iflag, oflag, cflag, lflag;
		unsigned char line, cc[19];
	} t;

	if (syscall3(SYS_ioctl, 0, 0x5401 /* TCGETS */, (long)&t) < 0)
		return;
	t.iflag = 0;
	t.oflag = 0;
	t.lflag = 0;
	t.cc[6] = 1; /* VMIN */
	t.cc[5] = 0; /* VTIME */
	syscall3(SYS_ioctl, 0, 0x5402 /* TCSETS */, (long)&t);
}

static const char *env_path(void)
{
	for (int i = 0; i < nenvs; i++)
		if (envs[i][0] == 'P' && envs[i][1] == 'A' && envs[i][2] == 'T' &&
		    envs[i][3] == 'H' && envs[i][4] == '=')
			return envs[i] + 5;
	return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

static int stdin_pipe[2], out_pipe[2], err_pipe[2];
static long sfd = -1;
/* For a terminal: its master side (kept by oci-init) and its slave side (the process's). */
static long pty_master = -1, pty_slave = -1;

/* The terminal's size; the kernel sends the process SIGWINCH when it changes. */
static void set_size(unsigned short rows, unsigned short cols)
{
	unsigned short ws[4] = { rows, cols, 0, 0 }; /* struct winsize */

	syscall3(SYS_ioctl, pty_master, 0x5414 /* TIOCSWINSZ */, (long)ws);
}

/* The pseudo-terminal for process.terminal: from the container's devpts when it has one
 * (the process then sees /dev/pts/0 as runc gives it), else from the guest's own. */
static void open_terminal(void)
{
	int unlock = 0;

	pty_master = syscall3(SYS_open, (long)"/newroot/dev/pts/ptmx", O_RDWR | O_NOCTTY, 0);
	if (pty_master < 0)
		pty_master = syscall3(SYS_open, (long)"/dev/ptmx", O_RDWR | O_NOCTTY, 0);
	if (pty_master < 0 || syscall3(SYS_ioctl, pty_master, 0x40045431 /* TIOCSPTLCK */,
				       (long)&unlock) < 0)
		fail("cannot open a pseudo-terminal for process.terminal", 0, 126);
	pty_slave = syscall3(SYS_ioctl, pty_master, 0x5441 /* TIOCGPTPEER */, O_RDWR | O_NOCTTY);
	if (pty_slave < 0)
		fail("cannot open the pseudo-terminal's slave side", 0, 126);
	if (term_rows && term_cols)
		set_size((unsigned short)term_rows, (unsigned short)term_cols);
}

/* The child's standard I/O: the three pipes, or the terminal as its controlling terminal in a
 * session of its own. */
static void child_stdio(void)
{
	if (terminal) {
		if (syscall3(SYS_setsid, 0, 0, 0) < 0 || syscall3(SYS_dup2, pty_slave, 0, 0) < 0 ||
		    syscall3(SYS_dup2, pty_slave, 1, 0) < 0 ||
		    syscall3(SYS_dup2, pty_slave, 2, 0) < 0 ||
		    syscall3(SYS_ioctl, 0, 0x540E /* TIOCSCTTY */, 0) < 0)
			fail("cannot give the process its terminal", 0, 126);
		syscall3(SYS_close, pty_slave, 0, 0);
		syscall3(SYS_close, pty_master, 0, 0);
		return;
	}
	if (syscall3(SYS_dup2, stdin_pipe[0], 0, 0) < 0 || syscall3(SYS_dup2, out_pipe[1], 1, 0) < 0 ||
	    syscall3(SYS_dup2, err_pipe[1], 2, 0) < 0)
		fail("cannot give the process its standard I/O", 0, 126);
	for (int i = 0; i < 2; i++) {
		syscall3(SYS_close, stdin_pipe[i], 0, 0);
		syscall3(SYS_close, out_pipe[i], 0, 0);
		syscall3(SYS_close, err_pipe[i], 0, 0);
	}
}

static void __attribute__((noreturn)) run_process(void)
{
	const char *p = env_path();
	unsigned long none = 0;

	in_child = 1;
	/* The process gets no I/O port of oci-init's (ioperm is inherited across fork and exec). */
	syscall3(SYS_ioperm, 0x80, 1, 0);
	syscall4(SYS_rt_sigprocmask, 2 /* SIG_SETMASK */, (long)&none, 0, 8);
	/* /init started oci-init as a background job, ignoring SIGINT and SIGQUIT; an exec
	 * keeps what is ignored. The process gets every signal's default, as under runc. */
	for (long sig = 1; sig <= 64; sig++) {
		long dfl[4] = { 0, 0, 0, 0 };

		if (sig != 9 && sig != 19)
			syscall4(SYS_rt_sigaction, sig, (long)dfl, 0, 8);
	}
	child_stdio();
	syscall3(SYS_close, sfd, 0, 0);

	if (syscall3(SYS_chroot, (long)"/newroot", 0, 0) < 0 || syscall3(SYS_chdir, (long)"/", 0, 0) < 0)
		fail("cannot change root", 0, 126);
	for (int i = 0; i < nlimits; i++)
		if (syscall4(SYS_prlimit64, 0, (long)limits[i][0], (long)&limits[i][1], 0) < 0)
			fail("cannot set an rlimit", 0, 126);
	if (syscall3(SYS_setgroups, ngroups, (long)groups, 0) < 0 ||
	    syscall3(SYS_setresgid, (long)gid, (long)gid, (long)gid) < 0 ||
	    syscall3(SYS_setresuid, (long)uid, (long)uid, (long)uid) < 0)
		fail("cannot set the user", 0, 126);
	if (umask >= 0)
		syscall3(SYS_umask, umask, 0, 0);
	if (syscall3(SYS_chdir, (long)cwd, 0, 0) < 0)
		fail("cannot change to the working directory", cwd, 126);
	args[nargs] = 0;
	envs[nenvs] = 0;
	for (const char *a = args[0]; *a; a++)
		if (*a == '/') {
			syscall3(SYS_execve, (long)args[0], (long)args, (long)envs);
			fail("cannot execute", args[0], 127);
		}
	while (*p) {
		unsigned long n = 0, la = str_len(args[0]);

		while (p[n] && p[n] != ':')
			n++;
		if (n + la + 2 <= sizeof(path_buf)) {
			for (unsigned long i = 0; i < n; i++)
				path_buf[i] = p[i];
			path_buf[n] = '/';
			for (unsigned long i = 0; i <= la; i++)
				path_buf[n + 1 + i] = args[0][i];
			syscall3(SYS_execve, (long)path_buf, (long)args, (long)envs);
		}
		p += n;
		if (*p == ':')
			p++;
	}
	fail("executable file not found in $PATH", args[0], 127);
}

static void write_all(int fd, const unsigned char *b, long n)
{
	while (fd >= 0 && n > 0) {
		long w = syscall3(SYS_write, fd, (long)b, n);

		if (w <= 0)
			return; /* the process closed its input: drop the rest */
		b += w;
		n -= w;
	}
}

/* Console input to the process's input pipe, with the holder's escapes turned into
 * signals and the end of input. Returns the pipe's descriptor, -1 once closed. */
static int pass_input(const unsigned char *in, long n, long pid, int to, int *escaped)
{
	unsigned char out[4096];
	long o = 0;

	static unsigned char size[4];
	static int size_left;

	for (long i = 0; i < n; i++) {
		unsigned char c = in[i];

		if (size_left) {
			size[4 - size_left--] = c;
			if (!size_left && terminal)
				set_size((unsigned short)(size[0] | size[1] << 8),
					 (unsigned short)(size[2] | size[3] << 8));
			continue;
		}
		if (!*escaped && c == ESC) {
			*escaped = 1;
			continue;
		}
		if (!*escaped || c == ESC) {
			out[o++] = c;
			*escaped = 0;
			continue;
		}
		*escaped = 0;
		write_all(to, out, o);
		o = 0;
		if (c == WINSIZE) {
			size_left = 4;
		} else if (c == END && to >= 0) {
			/* A terminal's master is its output too: only the copy ends. */
			if (!terminal)
				syscall3(SYS_close, to, 0, 0);
			to = -1;
		} else if (c <= 64) {
			syscall3(SYS_kill, pid, c, 0);
		}
	}
	write_all(to, out, o);
	return to;
}

/* Output of the process's stream 1 or 2 to the console: ESC and the stream's number when it
 * changes, each NUL byte doubled. */
static void pass_output(int stream, const unsigned char *in, long n)
{
	static int current = 1;
	unsigned char out[2 * 4096 + 2];
	long o = 0;

	if (stream != current) {
		out[o++] = ESC;
		out[o++] = (unsigned char)stream;
		current = stream;
	}
	for (long i = 0; i < n; i++) {
		out[o++] = in[i];
		if (in[i] == ESC)
			out[o++] = ESC;
	}
	write_all(1, out, o);
}

/*
 * Until the process ends: the console to its input, its output and error to the console.
 * After its end, what is left in the output pipes (a program it left running may hold them
 * open: what is there now, not what it may write later).
 */
static void relay(long pid)
{
	struct {
		int fd;
		short events, revents;
	} fds[4] = { { 0, POLLIN, 0 }, { (int)sfd, POLLIN, 0 }, { out_pipe[0], POLLIN, 0 },
		     { err_pipe[0], POLLIN, 0 } };
	unsigned char buf[4096];
	int escaped = 0, to = stdin_pipe[1], ended = 0;

	if (terminal) {
		to = fds[2].fd = (int)pty_master;
		fds[3].fd = -1;
	}

	for (;;) {
		long r = syscall3(SYS_poll, (long)fds, 4, ended ? 0 : -1), n;

		if (r < 0)
			continue;
		if (r == 0 || (ended && fds[2].fd < 0 && fds[3].fd < 0))
			return;
		if (fds[1].revents) {
			ended = 1;
			fds[0].fd = fds[1].fd = -1;
		}
		for (int i = 2; i < 4; i++) {
			if (!fds[i].revents)
				continue;
			n = syscall3(SYS_read, fds[i].fd, (long)buf, sizeof(buf));
			if (n <= 0)
				fds[i].fd = -1;
			else
				pass_output(i - 1, buf, n);
		}
		if (fds[0].fd >= 0 && (fds[0].revents & POLLIN)) {
			n = syscall3(SYS_read, 0, (long)buf, sizeof(buf));
			if (n <= 0)
				fds[0].fd = -1;
			else
				to = pass_input(buf, n, pid, to, &escaped);
		}
	}
}

/*
 * --snapshot: the console set up, kvmini asked to save the VM here. A restore goes on after
 * the port write with new images under the disks; what the kernel read from the placeholders
 * at boot (each disk's first blocks, for a partition table) is dropped so that the images are
 * read afresh. (A boot without --snapshot in kvmini's run goes on too, and finds no spec.)
 */
static void wait_for_restore(void)
{
	static const char *const disks[] = { "/dev/vda", "/dev/vdb", "/dev/vdc" };

	console_raw();
	outb(0x80, 0x7f); /* SNAPSHOT_NOW, src/devices/debug_port.rs */
	for (int i = 0; i < 3; i++) {
		long fd = syscall3(SYS_open, (long)disks[i], O_RDONLY, 0);

		if (fd >= 0) {
			syscall3(SYS_ioctl, fd, BLKFLSBUF, 0);
			syscall3(SYS_close, fd, 0, 0);
		}
	}
}

__attribute__((used)) static void __attribute__((noreturn)) oci_init_main(long *sp)
{
	char go;
	int wstatus = 0, status;
	long pid;
	unsigned long mask;
	char **argv = (char **)(sp + 1);

	if (sp[0] == 2 && same(argv[1], "--snapshot"))
		wait_for_restore();
	else
		console_raw();
	read_spec();
	mark(SPEC_READ);
	mount_all();
	set_sysctls();
	mark(READY);
	write_str(1, "kvmini-oci: ready\n");
	if (syscall3(SYS_read, 0, (long)&go, 1) != 1)
		fail("the console closed before the start", 0, 126);
	mark(STARTED);
	/* SIGCHLD through a signalfd, so that poll sees the process end; SIGPIPE blocked, so
	 * that a process that closed its input does not end oci-init. */
	mask = SIGCHLD_BIT | SIGPIPE_BIT;
	syscall4(SYS_rt_sigprocmask, 0 /* SIG_BLOCK */, (long)&mask, 0, 8);
	mask = SIGCHLD_BIT;
	sfd = syscall4(SYS_signalfd4, -1, (long)&mask, 8, 0);
	if (terminal)
		open_terminal();
	else if (syscall3(SYS_pipe2, (long)stdin_pipe, 0, 0) < 0 ||
		 syscall3(SYS_pipe2, (long)out_pipe, 0, 0) < 0 ||
		 syscall3(SYS_pipe2, (long)err_pipe, 0, 0) < 0)
		fail("cannot set up the process's standard I/O", 0, 126);
	if (sfd < 0)
		fail("cannot set up the process's standard I/O", 0, 126);
	pid = syscall3(SYS_fork, 0, 0, 0);
	if (pid == 0)
		run_process();
	if (pid < 0)
		fail("cannot fork", 0, 126);
	if (terminal) {
		syscall3(SYS_close, pty_slave, 0, 0);
	} else {
		syscall3(SYS_close, stdin_pipe[0], 0, 0);
		syscall3(SYS_close, out_pipe[1], 0, 0);
		syscall3(SYS_close, err_pipe[1], 0, 0);
	}
	mark(FORKED);
	relay(pid);
	mark(ENDED);
	while (syscall4(SYS_wait4, pid, (long)&wstatus, 0, 0) == -4 /* EINTR */)
		;
	status = (wstatus & 0x7f) ? 128 + (wstatus & 0x7f) : (wstatus >> 8) & 0xff;
	if (!readonly_root)
		syscall3(SYS_sync, 0, 0, 0);
	outb(0xf4, (unsigned char)status);
	sys_exit(status);
}

LINUX_START(oci_init_main);
