/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target 5: side-log fold. A base image made at start-up by a process that died while
 * it had a side log (fz_make_sidelog: DIRTY, unflushed records only in the log) is opened
 * read-write with COW_OPEN_SIDELOG and the input as the side-log file; records that start
 * with the side-log magic have their CRC repaired. After the fold: reads, cow_check, close.
 * The seed is the base image's own side log (mkseed sidelog).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *base;
static size_t base_len;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *p = fz_path("base-side.ucow"), *l = fz_path("base-side.log");

	(void)argc;
	(void)argv;
	if (fz_make_sidelog(p, l)) {
		fprintf(stderr, "fuzz_sidelog: cannot make the base image\n");
		abort();
	}
	base = fz_read_file(p, &base_len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_path("img"), *log = fz_path("log");
	struct cow_check_result res = { 0 };
	uint8_t *buf = malloc(size ? size : 1);
	struct cow_image *img;
	char err[COW_ERRLEN];
	int fd;

	if (!buf)
		abort();
	memcpy(buf, data, size);
	fz_fix_sidelog(buf, size, FZ_SLREC);
	fz_write_file(log, buf, size);
	fz_write_file(path, base, base_len);
	fd = open(log, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		abort();
	if (!cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_SIDELOG, .sidelog_fd = fd },
		      &img, err, sizeof(err))) {
		fz_read_all(img, FZ_VSIZE);
		cow_check(img, &res);
		cow_close(img);
	}
	close(fd);
	free(buf);
	return 0;
}
