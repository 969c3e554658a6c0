/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target 4: journal replay. A base image made at start-up by a process that died
 * (fz_make_dirty: DIRTY flag set, a snapshot, journal records of several flushes) gets the
 * input as its journal region (zeros after it; at most the region's size is used); blocks
 * that start with the journal magic have their CRC repaired. Then: a read-only open (replay
 * in memory), reads and cow_check; a read-write open (replay, checkpoint, unclean reclaim),
 * reads, cow_check and close. The seed is the base image's own journal (mkseed journal).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *base;
static size_t base_len;
static uint64_t joff, jsize;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *p = fz_path("base-dirty.ucow");

	(void)argc;
	(void)argv;
	if (fz_make_dirty(p)) {
		fprintf(stderr, "fuzz_journal: cannot make the base image\n");
		abort();
	}
	base = fz_read_file(p, &base_len);
	base_len = fz_trim_zero_tail(base, base_len);	/* 1.1 MiB -> 640 KiB: faster */
	joff = fz_journal_offset(base, base_len, &jsize);
	if (!joff || joff + jsize > base_len) {
		fprintf(stderr, "fuzz_journal: the base image has no journal\n");
		abort();
	}
	return 0;
}

static void use(struct cow_image *img)
{
	struct cow_check_result res = { 0 };

	fz_read_all(img, FZ_VSIZE);
	cow_check(img, &res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_path("img");
	uint8_t *buf = malloc(base_len);
	struct cow_image *img;
	char err[COW_ERRLEN];

	if (!buf)
		abort();
	memcpy(buf, base, base_len);
	memset(buf + joff, 0, jsize);
	memcpy(buf + joff, data, size < jsize ? size : jsize);
	fz_fix_journal(buf + joff, jsize);
	fz_write_file(path, buf, base_len);
	if (!cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		      sizeof(err))) {
		use(img);
		cow_close(img);
	}
	if (!cow_open(path, NULL, &img, err, sizeof(err))) {
		use(img);
		cow_close(img);
	}
	free(buf);
	return 0;
}
