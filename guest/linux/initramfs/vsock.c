/*
 * vsock connect CID PORT — connect a vsock stream socket to CID:PORT (the host is CID 2).
 * vsock listen PORT      — listen on PORT (any CID of this guest), accept one connection.
 *
 * Then, in both modes, copy standard input to the socket and the socket to standard
 * output at the same time (poll).  At the end of standard input the socket's write side
 * is shut down (the peer reads end-of-file) and the copy from the socket goes on; when
 * the peer closes (or shuts its own write side down), everything it sent has been
 * written to standard output, what standard input has ready is sent (see
 * send_ready_input), and vsock exits 0.  The kvmini guest uses it to talk to the host over a virtio-vsock device
 * (AF_VSOCK: sockets addressed by context id and port, no network set-up).
 *
 * Freestanding: no C library, raw system calls.  CID and PORT are decimal or 0x-prefixed
 * hexadecimal.  Writes block: a peer that sends a lot while it never reads can stall
 * the copy the other way, as with any simple relay.
 * Exit status: 0 when the peer closed, 1 on a socket (or I/O) error, with one line on
 * standard error naming the call and the errno, 2 on bad arguments.
 */

#include "linux_sys.h"

#define AF_VSOCK       40
#define SOCK_STREAM    1
#define VMADDR_CID_ANY 0xffffffffu
#define SHUT_WR        1
#define SIGPIPE        13
#define SIG_IGN        1
#define POLLIN         0x01
#define POLLERR        0x08
#define POLLHUP        0x10
#define POLLNVAL       0x20
#define EINTR          4

/* <linux/vm_sockets.h> */
struct sockaddr_vm {
	unsigned short svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_flags;
	unsigned char svm_zero[3];
};

struct pollfd {
	int fd;
	short events;
	short revents;
};

struct kernel_sigaction {
	unsigned long handler;
	unsigned long flags;
	unsigned long restorer;
	unsigned long mask;
};

static char buf[32768];


static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* The errors a user is likely to meet, by name; others by number only. */
static const char *errno_name(long e)
{
	switch (e) {
	case 19: return "ENODEV";        /* no vsock transport: no virtio-vsock device */
	case 32: return "EPIPE";
	case 97: return "EAFNOSUPPORT";  /* kernel without vsock */
	case 98: return "EADDRINUSE";
	case 104: return "ECONNRESET";
	case 110: return "ETIMEDOUT";
	case 111: return "ECONNREFUSED"; /* nobody listens on that port */
	default: return 0;
	}
}

/* "vsock: CALL: errno N (NAME)" on standard error, then exit 1. */
static void __attribute__((noreturn)) fail(const char *call, long ret)
{
	char num[24], *p = num + sizeof(num);
	unsigned long e = -ret;
	const char *name = errno_name(-ret);

	*--p = 0;
	do
		*--p = '0' + e % 10;
	while (e /= 10);
	write_str(2, "vsock: ");
	write_str(2, call);
	write_str(2, ": errno ");
	write_str(2, p);
	if (name) {
		write_str(2, " (");
		write_str(2, name);
		write_str(2, ")");
	}
	write_str(2, "\n");
	sys_exit(1);
}

/* Writes all of buf[0..n) to fd, or fails naming `call`. */
static void write_all(int fd, long n, const char *call)
{
	long done = 0;

	while (done < n) {
		long w = syscall3(SYS_write, fd, (long)(buf + done), n - done);

		if (w == -EINTR)
			continue;
		if (w < 0)
			fail(call, w);
		done += w;
	}
}

/*
 * After the peer's end of data: send what standard input has ready now (all of a file;
 * nothing of a console nobody types on, which must not keep the VM waiting), so that a
 * peer that only shut its write side down still gets our data.
 */
static void send_ready_input(long s, struct pollfd *in)
{
	while (in->fd >= 0) {
		long n;

		in->revents = 0;
		if (syscall3(SYS_poll, (long)in, 1, 0) <= 0 ||
		    !(in->revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
			return;
		n = syscall3(SYS_read, 0, (long)buf, sizeof(buf));
		if (n == 0)
			return;
		if (n < 0 && n != -EINTR)
			fail("read stdin", n);
		if (n > 0)
			write_all(s, n, "write socket");
	}
}

__attribute__((used)) static void __attribute__((noreturn)) vsock_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	struct sockaddr_vm addr = { AF_VSOCK, 0, 0, 0, 0, { 0, 0, 0 } };
	struct kernel_sigaction ign = { SIG_IGN, 0, 0, 0 };
	struct pollfd fds[2];
	long cid = VMADDR_CID_ANY, port = -1, s, ret;
	int listening = 0;

	if (argc == 4 && same(argv[1], "connect")) {
		cid = parse_number(argv[2], 0xffffffffUL);
		port = parse_number(argv[3], 0xffffffffUL);
	} else if (argc == 3 && same(argv[1], "listen")) {
		listening = 1;
		port = parse_number(argv[2], 0xffffffffUL);
	}
	if (cid < 0 || port < 0) {
		write_str(2, "usage: vsock connect CID PORT | vsock listen PORT\n");
		sys_exit(2);
	}
	addr.svm_cid = cid;
	addr.svm_port = port;

	/* A peer that closes while we write gives EPIPE, reported like any error, not a
	 * silent death by SIGPIPE. */
	syscall4(SYS_rt_sigaction, SIGPIPE, (long)&ign, 0, 8);

	s = syscall3(SYS_socket, AF_VSOCK, SOCK_STREAM, 0);
	if (s < 0)
		fail("socket", s);
	if (listening) {
		long l = s;

		if ((ret = syscall3(SYS_bind, l, (long)&addr, sizeof(addr))) < 0)
			fail("bind", ret);
		if ((ret = syscall3(SYS_listen, l, 1, 0)) < 0)
			fail("listen", ret);
		do
			s = syscall3(SYS_accept, l, 0, 0);
		while (s == -EINTR);
		if (s < 0)
			fail("accept", s);
		syscall3(SYS_close, l, 0, 0);
	} else {
		do
			ret = syscall3(SYS_connect, s, (long)&addr, sizeof(addr));
		while (ret == -EINTR);
		if (ret < 0)
			fail("connect", ret);
	}

	/* A negative fd is one poll() ignores: standard input after its end. */
	fds[0].fd = 0;
	fds[0].events = POLLIN;
	fds[1].fd = s;
	fds[1].events = POLLIN;
	for (;;) {
		long n;

		fds[0].revents = fds[1].revents = 0;
		ret = syscall3(SYS_poll, (long)fds, 2, -1);
		if (ret == -EINTR)
			continue;
		if (ret < 0)
			fail("poll", ret);
		if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = syscall3(SYS_read, s, (long)buf, sizeof(buf));
			if (n == 0) { /* the peer closed, or shut its write side down */
				send_ready_input(s, &fds[0]);
				sys_exit(0);
			}
			if (n < 0 && n != -EINTR)
				fail("read socket", n);
			if (n > 0)
				write_all(1, n, "write stdout");
		}
		/* POLLNVAL (standard input closed): the read fails and says so. */
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
			n = syscall3(SYS_read, 0, (long)buf, sizeof(buf));
			if (n == 0) {
				/* End of input: the peer reads end-of-file, we go on reading. */
				if ((ret = syscall3(SYS_shutdown, s, SHUT_WR, 0)) < 0)
					fail("shutdown", ret);
				fds[0].fd = -1;
			} else if (n < 0 && n != -EINTR) {
				fail("read stdin", n);
			} else if (n > 0) {
				write_all(s, n, "write socket");
			}
		}
	}
}

LINUX_START(vsock_main);
