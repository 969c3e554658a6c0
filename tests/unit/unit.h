/* SPDX-License-Identifier: MIT */
/*
 * What the cmocka unit tests share: a scratch folder and names in it, the handle of an open
 * image, a backend that passes I/O on (tests wrap it to watch or hold I/O), and the runner
 * (UNIT_FILTER=NAME runs the tests whose names match). Included once, by each test file.
 */
#ifndef UCOW_UNIT_H
#define UCOW_UNIT_H

#include <stdio.h>
#include <stdlib.h>

static char dir[256];
static char err[COW_ERRLEN];

/* dir/name, in one of 4 rotating buffers (a call may take up to 4 names). */
static const char *P(const char *name)
{
	static char bufs[4][512];
	static int i;
	char *b = bufs[i++ % 4];
	snprintf(b, 512, "%s/%s", dir, name);
	return b;
}

struct h {
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *ctx;
};

/* A backend over inner: its inflight count follows inner's. */
static inline int pass_queue(struct cow_backend *be, struct cow_backend *inner, struct cow_io *io)
{
	int r = inner->ops->queue(inner, io);
	be->inflight = inner->inflight;
	return r;
}

static inline int pass_submit_wait(struct cow_backend *be, struct cow_backend *inner, unsigned min)
{
	int r = inner->ops->submit_wait(inner, min);
	be->inflight = inner->inflight;
	return r;
}

/* The scratch folder's parent: a test that syncs a lot may pick tmpfs (UNIT_TMP "/dev/shm"). */
#ifndef UNIT_TMP
#define UNIT_TMP "/tmp"
#endif

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/ucow-unit-XXXXXX", UNIT_TMP);
	if (mkdtemp(dir))
		return 0;
	snprintf(dir, sizeof(dir), "/tmp/ucow-unit-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void unit_filter(void)
{
	if (getenv("UNIT_FILTER"))
		cmocka_set_test_filter(getenv("UNIT_FILTER"));
}
#define UNIT_RUN(tests) (unit_filter(), cmocka_run_group_tests(tests, setup, teardown))

#endif
