/*
 * Reads past the end of a file read zeros: a raw image (or a raw base) that shrank under an
 * open image, read across its new end, returns its data and then zeros, never what the
 * buffer held before. The engine's short-read completion fills the rest (ctx.c eio_short).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cowcore.h"

#include "unit.h"

#define SZ (1u << 20)

static void check_tail(const char *backend, bool overlay)
{
	struct cow_backend *be;
	struct cow_image *img;
	struct cow_ctx *ctx;
	unsigned char *buf = malloc(SZ);
	int fd;

	assert_non_null(buf);
	memset(buf, 0x11, SZ);
	fd = open(P("base.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, SZ), SZ);
	if (overlay) {
		struct cow_create_opts o = { .chunk_size = 64 << 10, .backing = "base.raw",
					     .backing_fmt = COW_FMT_RAW };
		unlink(P("ov.img"));
		if (cow_create(P("ov.img"), &o, err, sizeof(err)))
			fail_msg("create: %s", err);
		if (cow_open(P("ov.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			     &img, err, sizeof(err)))
			fail_msg("open: %s", err);
	} else if (cow_open(P("base.raw"), &(struct cow_open_opts){ .fmt = COW_FMT_RAW,
			    .flags = COW_OPEN_RDONLY }, &img, err, sizeof(err))) {
		fail_msg("open: %s", err);
	}
	assert_int_equal(cow_backend_new(backend, 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(ftruncate(fd, SZ / 2 + 512), 0);	/* shrinks under the open image */
	close(fd);
	memset(buf, 0xee, SZ);
	assert_int_equal(cow_rw(ctx, COW_READ, buf, SZ, 0, 0), 0);
	for (uint32_t i = 0; i < SZ; i++) {
		unsigned char want = i < SZ / 2 + 512 ? 0x11 : 0;
		if (buf[i] != want)
			fail_msg("%s%s: byte %u reads 0x%02x, expected 0x%02x", backend,
				 overlay ? " (overlay)" : "", i, buf[i], want);
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
	free(buf);
}

static void test_raw_sync(void **s) { (void)s; check_tail("sync", false); }
static void test_raw_uring(void **s) { (void)s; check_tail("uring", false); }
static void test_raw_aio(void **s) { (void)s; check_tail("aio", false); }
static void test_overlay_uring(void **s) { (void)s; check_tail("uring", true); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_raw_sync),
		cmocka_unit_test(test_raw_uring),
		cmocka_unit_test(test_raw_aio),
		cmocka_unit_test(test_overlay_uring),
	};
	(void)pass_queue;	/* unit.h's pass-through backend: not needed here */
	(void)pass_submit_wait;
	return UNIT_RUN(tests);
}
