/* SPDX-License-Identifier: MIT */
/*
 * A program that knows cowcore only through its public header and libcowcore.so.1: it
 * creates an overlay on a raw base, writes through the engine, closes, opens the overlay
 * again read-only and reads every byte back through the backing chain, then checks it.
 * Built with only the public header on the include path (Makefile: build/so-include).
 *
 *   so_read DIR      (a scratch folder)  -> exit 0 if every byte read is the expected one
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cowcore.h"

#define SIZE (4u << 20)

static int fail(const char *what, int r, const char *err)
{
	fprintf(stderr, "so_read: %s: %s (%s)\n", what, strerror(-r), err ? err : "");
	return 1;
}

/* What byte i of the disk holds: the base's pattern, overwritten at [1 MiB, 1 MiB + 8 KiB). */
static unsigned char want(uint64_t i)
{
	if (i >= (1u << 20) && i < (1u << 20) + 8192)
		return 0xa5;
	return (unsigned char)(i * 7 + 1);
}

int main(int argc, char **argv)
{
	char base[4096], ovl[4096], err[COW_ERRLEN];
	struct cow_create_opts co = { .backing = "base.raw", .backing_fmt = COW_FMT_RAW };
	struct cow_open_opts ro = { .flags = COW_OPEN_RDONLY };
	struct cow_check_result cr;
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	unsigned char *buf;
	int fd, r;

	if (argc != 2)
		return fail("usage: so_read DIR", -EINVAL, NULL);
	snprintf(base, sizeof(base), "%s/base.raw", argv[1]);
	snprintf(ovl, sizeof(ovl), "%s/ovl.ucow", argv[1]);
	unlink(ovl);
	buf = malloc(SIZE);
	if (!buf)
		return fail("malloc", -ENOMEM, NULL);
	for (uint64_t i = 0; i < SIZE; i++)
		buf[i] = (unsigned char)(i * 7 + 1);
	fd = open(base, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, buf, SIZE) != SIZE || close(fd))
		return fail(base, -EIO, NULL);

	if ((r = cow_create(ovl, &co, err, sizeof(err))))
		return fail("cow_create", r, err);
	if ((r = cow_open(ovl, NULL, &img, err, sizeof(err))))
		return fail("cow_open", r, err);
	if ((r = cow_backend_new("uring", 16, &be)) || (r = cow_ctx_new(img, be, &ctx)))
		return fail("backend/ctx", r, NULL);
	memset(buf, 0xa5, 8192);
	if ((r = cow_rw(ctx, COW_WRITE, buf, 8192, 1u << 20, 0)) ||
	    (r = cow_rw(ctx, COW_FLUSH, NULL, 0, 0, 0)))
		return fail("cow_rw write", r, cow_errmsg(img));
	cow_ctx_free(ctx);
	if ((r = cow_close(img)))
		return fail("cow_close", r, NULL);

	if ((r = cow_open(ovl, &ro, &img, err, sizeof(err))))
		return fail("cow_open read-only", r, err);
	if ((r = cow_ctx_new(img, be, &ctx)))
		return fail("cow_ctx_new", r, NULL);
	memset(buf, 0, SIZE);
	if ((r = cow_rw(ctx, COW_READ, buf, SIZE, 0, 0)))
		return fail("cow_rw read", r, cow_errmsg(img));
	for (uint64_t i = 0; i < SIZE; i++)
		if (buf[i] != want(i)) {
			fprintf(stderr, "so_read: byte %llu is 0x%02x, expected 0x%02x\n",
				(unsigned long long)i, buf[i], want(i));
			return 1;
		}
	if ((r = cow_check(img, &cr)) || cr.verdict != 0)
		return fail("cow_check", r ? r : -EUCLEAN, cr.first_problem);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
	free(buf);
	printf("so_read: %u bytes read back through libcowcore.so.1\n", SIZE);
	return 0;
}
