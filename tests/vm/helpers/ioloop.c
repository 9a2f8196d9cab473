// SPDX-License-Identifier: GPL-2.0
/*
 * ioloop: direct 4 KiB reads or writes over the first BLOCKS blocks of a
 * block device, round and round, going on after errors (what fio does with
 * continue_on_error), for SECONDS or until every I/O failed for a whole
 * second. The VM bench runs it while a disk is deleted under it, so that
 * I/O is still being submitted while the kernel tears the disk down, from
 * the first failures (the SCSI device goes offline) to the last (the disk
 * is dead, or has no capacity left).
 *
 *   ioloop read|write DEVICE BLOCKS SECONDS
 *
 * Prints one line: how many I/Os succeeded, failed (and the first errno),
 * or came back short (end of a shrunk device).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define FAILING_SECONDS 1.0

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long ios = 0, errors = 0, short_ios = 0, blocks, block = 0;
	int write_mode, fd, first_errno = 0;
	double deadline, failing_since = 0;
	void *buf;

	if (argc != 5 || (strcmp(argv[1], "read") && strcmp(argv[1], "write"))) {
		fprintf(stderr, "usage: ioloop read|write DEVICE BLOCKS SECONDS\n");
		return 2;
	}
	write_mode = !strcmp(argv[1], "write");
	blocks = atol(argv[3]);
	deadline = now() + atof(argv[4]);
	if (blocks <= 0) {
		fprintf(stderr, "ioloop: BLOCKS must be positive: %s\n", argv[3]);
		return 2;
	}
	fd = open(argv[2], (write_mode ? O_WRONLY : O_RDONLY) | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "ioloop: cannot open %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	if (posix_memalign(&buf, BLOCK, BLOCK)) {
		fprintf(stderr, "ioloop: out of memory\n");
		return 1;
	}
	memset(buf, 0x5a, BLOCK);
	for (;;) {
		off_t off = (off_t)block * BLOCK;
		ssize_t n = write_mode ? pwrite(fd, buf, BLOCK, off) : pread(fd, buf, BLOCK, off);
		double t = now();

		if (t >= deadline || (failing_since && t - failing_since >= FAILING_SECONDS))
			break;
		block = (block + 1) % blocks;
		if (n == BLOCK) {
			ios++;
			failing_since = 0;
			continue;
		}
		if (!failing_since)
			failing_since = t;
		if (n < 0) {
			errors++;
			if (!first_errno)
				first_errno = errno;
		} else {
			short_ios++;
		}
	}
	printf("ioloop %s %s: ios %ld errors %ld short %ld first_error %s\n", argv[1], argv[2],
	       ios, errors, short_ios, first_errno ? strerror(first_errno) : "none");
	close(fd);
	return 0;
}
