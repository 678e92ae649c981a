/*
 * blkbench DEVICE MIB READS — how fast the guest reads and writes a block device, with
 * direct I/O (O_DIRECT: no page cache in the guest, every request reaches the VMM):
 *   1. sequential read of the first MIB MiB, 1 MiB per read();
 *   2. sequential write of the same MiB (zeros), 1 MiB per write(), then fdatasync();
 *   3. READS reads of 4 KiB each at pseudo-random 4 KiB-aligned offsets in those MiB.
 * Prints one line per step, the time in nanoseconds from CLOCK_MONOTONIC:
 *   blkbench: seq-read BYTES NS
 *   blkbench: seq-write BYTES NS
 *   blkbench: rand-read COUNT NS
 * The benchmark (`make bench-devices`) turns them into MB/s and requests per second.
 * The write overwrites the device's first MIB MiB: give it a scratch disk.
 *
 * Freestanding, like outb.c. Exit status: 0, 1 on an I/O error (with a line on stderr),
 * 2 on bad arguments.
 */

#include "linux_sys.h"

#define SYS_pread64       17
#define SYS_pwrite64      18
#define SYS_open          2
#define SYS_fdatasync     75
#define SYS_clock_gettime 228
#define O_RDWR            02
#define O_DIRECT          040000
#define CLOCK_MONOTONIC   1

#define CHUNK (1L << 20)
#define BLOCK 4096L

static char buf[CHUNK] __attribute__((aligned(4096)));

static long parse(const char *s)
{
	long v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > 1000000)
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

static long now_ns(void)
{
	long ts[2];

	syscall3(SYS_clock_gettime, CLOCK_MONOTONIC, (long)ts, 0);
	return ts[0] * 1000000000L + ts[1];
}

/* Writes "blkbench: NAME A B\n". */
static void report(const char *name, long a, long b)
{
	char line[96], *p = line;
	const char *parts[] = { "blkbench: ", name, " " };
	long nums[] = { a, b };

	for (int i = 0; i < 3; i++)
		for (const char *s = parts[i]; *s; s++)
			*p++ = *s;
	for (int i = 0; i < 2; i++) {
		char digits[24];
		int n = 0;
		long v = nums[i];

		do {
			digits[n++] = '0' + v % 10;
			v /= 10;
		} while (v);
		while (n)
			*p++ = digits[--n];
		*p++ = i ? '\n' : ' ';
	}
	syscall3(SYS_write, 1, (long)line, p - line);
}

static void fail(const char *what)
{
	write_str(2, "blkbench: ");
	write_str(2, what);
	write_str(2, " failed\n");
	sys_exit(1);
}

__attribute__((used)) static void __attribute__((noreturn)) blkbench_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	long mib, reads, fd, start;
	unsigned long seed = 12345;

	if (argc != 4 || (mib = parse(argv[2])) <= 0 || (reads = parse(argv[3])) < 0) {
		write_str(2, "usage: blkbench DEVICE MIB READS\n");
		sys_exit(2);
	}
	fd = syscall3(SYS_open, (long)argv[1], O_RDWR | O_DIRECT, 0);
	if (fd < 0)
		fail("open");

	start = now_ns();
	for (long i = 0; i < mib; i++)
		if (syscall4(SYS_pread64, fd, (long)buf, CHUNK, i * CHUNK) != CHUNK)
			fail("sequential read");
	report("seq-read", mib * CHUNK, now_ns() - start);

	for (long i = 0; i < CHUNK; i++)
		buf[i] = 0;
	start = now_ns();
	for (long i = 0; i < mib; i++)
		if (syscall4(SYS_pwrite64, fd, (long)buf, CHUNK, i * CHUNK) != CHUNK)
			fail("sequential write");
	if (syscall3(SYS_fdatasync, fd, 0, 0) != 0)
		fail("fdatasync");
	report("seq-write", mib * CHUNK, now_ns() - start);

	start = now_ns();
	for (long i = 0; i < reads; i++) {
		seed = seed * 6364136223846793005UL + 1442695040888963407UL;
		long block = (long)((seed >> 33) % (unsigned long)(mib * (CHUNK / BLOCK)));

		if (syscall4(SYS_pread64, fd, (long)buf, BLOCK, block * BLOCK) != BLOCK)
			fail("random read");
	}
	report("rand-read", reads, now_ns() - start);
	sys_exit(0);
}

LINUX_START(blkbench_main);
