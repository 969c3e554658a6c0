/*
 * qcow2 images, read-only: a small image built here byte by byte (v3, 512-byte clusters: a
 * data cluster, a zlib-compressed one, a zero one) reads right; a table of hostile fields
 * (header, extensions, L1 and L2 entries, compressed data) each gives its clean error, at
 * open or at the read that meets it; random byte changes never crash or hang the reader.
 */
#include <endian.h>
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
#include <zlib.h>

#include <cmocka.h>

#include "cowcore.h"

#include "unit.h"

#define CL 512u
#define VSIZE (16u * CL)
#define FSIZE (5u * CL)
#define L1_OFF (1 * CL)
#define L2_OFF (2 * CL)
#define DATA_OFF (3 * CL)
#define COMP_OFF (4 * CL)

static void put_be32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static void put_be64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }

/* The good image: cluster 0 header, 1 L1, 2 L2, 3 data (0xab), 4 compressed (0xcd). */
static void build(uint8_t *f)
{
	uint8_t plain[CL];
	memset(f, 0, FSIZE);
	put_be32(f, 0x514649fb);
	put_be32(f + 4, 3);
	put_be32(f + 20, 9);			/* cluster bits */
	put_be64(f + 24, VSIZE);
	put_be32(f + 36, 1);			/* L1 entries */
	put_be64(f + 40, L1_OFF);
	put_be32(f + 96, 4);			/* refcount order */
	put_be32(f + 100, 112);			/* header length */
	put_be64(f + L1_OFF, L2_OFF | (1ull << 63));
	put_be64(f + L2_OFF, DATA_OFF | (1ull << 63));
	put_be64(f + L2_OFF + 8, COMP_OFF | (1ull << 62));	/* one sector */
	put_be64(f + L2_OFF + 16, 1);		/* zero cluster */
	memset(f + DATA_OFF, 0xab, CL);
	memset(plain, 0xcd, CL);
	z_stream z = { 0 };
	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = plain;
	z.avail_in = CL;
	z.next_out = f + COMP_OFF;
	z.avail_out = CL;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	deflateEnd(&z);
}

static void write_file(const char *path, const uint8_t *f, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, f, n), (ssize_t)n);
	close(fd);
}

/* Open path read-only (probed) and read it whole: the open's result, else the read's. */
static int open_read(const char *path, uint8_t *out)
{
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	int r = cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
			 sizeof(err));
	if (r)
		return r;
	struct cow_info in;
	cow_get_info(img, &in);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	uint64_t n = in.virtual_size < VSIZE ? in.virtual_size : VSIZE;
	r = cow_rw(ctx, COW_READ, out, n, 0, 0);
	if (!r) {	/* and the map answers every byte */
		for (uint64_t off = 0; off < n && !r;) {
			uint64_t run = 0, phys;
			r = cow_map(img, off, n - off, &run, &phys);
			if (r >= 0) {
				assert_true(run > 0 && run <= n - off);
				off += run;
				r = 0;
			}
		}
	}
	if (r)
		snprintf(err, sizeof(err), "%s", cow_errmsg(img));
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
	return r;
}

static void test_good(void **s)
{
	(void)s;
	uint8_t f[FSIZE], out[VSIZE];
	struct cow_image *img;
	build(f);
	write_file(P("good.qcow2"), f, FSIZE);
	assert_int_equal(open_read(P("good.qcow2"), out), 0);
	for (unsigned i = 0; i < VSIZE; i++)
		assert_int_equal(out[i], i < CL ? 0xab : i < 2 * CL ? 0xcd : 0);
	/* the map: data at its file offset, compressed data without one, zeros */
	assert_int_equal(cow_open(P("good.qcow2"), &(struct cow_open_opts){ .fmt = COW_FMT_QCOW2,
			 .flags = COW_OPEN_RDONLY }, &img, err, sizeof(err)), 0);
	struct cow_extent x;
	assert_int_equal(cow_map_extent(img, 0, VSIZE, &x), 0);
	assert_true(x.status == COW_MAP_DATA && x.offset_valid && x.offset == DATA_OFF &&
		    x.length == CL);
	assert_int_equal(cow_map_extent(img, CL, VSIZE - CL, &x), 0);
	assert_true(x.status == COW_MAP_DATA && !x.offset_valid && x.length == CL);
	assert_int_equal(cow_map_extent(img, 2 * CL, VSIZE - 2 * CL, &x), 0);
	assert_true(x.status == COW_MAP_ZERO && x.allocated && x.length == CL);
	assert_int_equal(cow_map_extent(img, 3 * CL, VSIZE - 3 * CL, &x), 0);
	assert_true(x.status == COW_MAP_ZERO && !x.allocated && x.length == VSIZE - 3 * CL);
	struct cow_qcow2_info qi;
	assert_int_equal(cow_get_qcow2_info(img, &qi), 0);
	assert_true(qi.version == 3 && qi.cluster_size == CL && qi.compression_type == 0);
	cow_close(img);
	/* read-write: refused */
	assert_int_equal(cow_open(P("good.qcow2"), NULL, &img, err, sizeof(err)), -EROFS);
	assert_non_null(strstr(err, "read-only"));
}

struct bad {
	const char *what;
	unsigned off, width;	/* width 1, 4 or 8 (big-endian) */
	uint64_t val;
	int want;		/* the open's or the read's error */
	const char *text;	/* in the message */
};

static const struct bad bads[] = {
	{ "magic (probed: no format)", 0, 4, 0x514649fa, -EMEDIUMTYPE, "no ucow magic" },
	{ "version 4", 4, 4, 4, -ENOTSUP, "version 4" },
	{ "version 1", 4, 4, 1, -ENOTSUP, "version 1" },
	{ "cluster bits 8", 20, 4, 8, -EUCLEAN, "cluster bits" },
	{ "cluster bits 22", 20, 4, 22, -EUCLEAN, "cluster bits" },
	{ "cluster bits huge", 20, 4, 0xffffffff, -EUCLEAN, "cluster bits" },
	{ "encrypted", 32, 4, 1, -ENOTSUP, "encrypted" },
	{ "L1 too small", 36, 4, 0, -EUCLEAN, "too small" },
	{ "L1 too large", 36, 4, 0x1000000, -EUCLEAN, "too large" },
	{ "L1 past the end", 40, 8, 0x100000, -EUCLEAN, "L1 table offset" },
	{ "L1 unaligned", 40, 8, L1_OFF + 8, -EUCLEAN, "L1 table offset" },
	{ "L1 at 0 offset", 40, 8, 0, -EUCLEAN, "L1 table offset" },
	{ "virtual size huge", 24, 8, 1ull << 63, -EUCLEAN, "virtual size" },
	{ "virtual size past L1", 24, 8, 1ull << 40, -EUCLEAN, "too small" },
	{ "header length short", 100, 4, 96, -EUCLEAN, "header length" },
	{ "header length past cluster", 100, 4, 1024, -EUCLEAN, "header length" },
	{ "header length unaligned", 100, 4, 113, -EUCLEAN, "header length" },
	{ "refcount order", 96, 4, 7, -EUCLEAN, "refcount order" },
	{ "external data file", 79, 1, 4, -ENOTSUP, "external data file" },
	{ "extended L2 with 4 KiB clusters", 79, 1, 16, -EUCLEAN, "extended L2 entries with" },
	{ "unknown incompatible", 79, 1, 128, -ENOTSUP, "unknown qcow2 incompatible" },
	{ "corrupt bit", 79, 1, 2, -EUCLEAN, "marked corrupt" },
	{ "zstd without its bit", 104, 1, 1, -EUCLEAN, "compression type" },
	{ "backing name past the end", 8, 8, 0x100000, -EUCLEAN, "backing file name" },
	{ "backing name too long", 16, 4, 2000, -EUCLEAN, "backing file name" },
	{ "extension runs past the cluster", 112, 8, 0xe2792acafffffff0ull, -EUCLEAN,
	  "header extension" },
	{ "backing format unknown", 112, 8, 0xe2792aca00000004ull, -EUCLEAN,
	  "backing format extension" },	/* four NUL bytes */
	{ "L1 entry past the end", L1_OFF, 8, 0x100000, -EUCLEAN, "L1 entry" },
	{ "L1 entry reserved bit", L1_OFF, 8, L2_OFF | 1, -EUCLEAN, "L1 entry" },
	{ "L1 entry unaligned", L1_OFF, 8, L2_OFF + 8, -EUCLEAN, "L1 entry" },
	{ "L2 entry low bits", L2_OFF, 8, DATA_OFF + 8, -EUCLEAN, "reserved bits" },
	{ "L2 entry reserved bit", L2_OFF, 8, DATA_OFF | (1ull << 56), -EUCLEAN, "reserved" },
	{ "compressed past the end", L2_OFF + 8, 8, (1ull << 62) | 0x100000, -EUCLEAN,
	  "outside the file" },
	{ "compressed at 0", L2_OFF + 8, 8, 1ull << 62, -EUCLEAN, "outside the file" },
	{ "compressed garbage", COMP_OFF, 8, 0xffffffffffffffffull, -EUCLEAN, "decompress" },
	{ "compressed too short", L2_OFF + 8, 8, (1ull << 62) | (COMP_OFF + 510), -EUCLEAN,
	  "decompress" },
};

static void test_hostile(void **s)
{
	(void)s;
	uint8_t f[FSIZE], out[VSIZE];
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		const struct bad *b = &bads[i];
		build(f);
		if (b->width == 1)
			f[b->off] = (uint8_t)b->val;
		else if (b->width == 4)
			put_be32(f + b->off, (uint32_t)b->val);
		else
			put_be64(f + b->off, b->val);
		if (b->off == 104)	/* a longer header holds the compression type */
			put_be32(f + 100, 112);
		write_file(P("bad.qcow2"), f, FSIZE);
		err[0] = 0;
		int r = open_read(P("bad.qcow2"), out);
		if (r != b->want || !strstr(err, b->text))
			fail_msg("%s: got %d (%s), want %d with '%s'", b->what, r, err, b->want,
				 b->text);
	}
}

/* Random changes of the metadata and data: a clean result or a clean error, nothing else. */
static void test_fuzz(void **s)
{
	(void)s;
	uint8_t f[FSIZE], out[VSIZE];
	unsigned seed = getenv("QCOW2_SEED") ? (unsigned)atoi(getenv("QCOW2_SEED")) : 1;
	srand(seed);
	for (int it = 0; it < 3000; it++) {
		build(f);
		int n = 1 + rand() % 4;
		for (int k = 0; k < n; k++) {
			/* mostly the header and tables, where the numbers are */
			unsigned off = rand() % 3 ? (unsigned)rand() % 120 : (unsigned)rand() % FSIZE;
			if (rand() % 4 == 0)
				off = L1_OFF + (unsigned)rand() % 8;
			else if (rand() % 4 == 0)
				off = L2_OFF + (unsigned)rand() % 24;
			f[off] = (uint8_t)rand();
		}
		write_file(P("fuzz.qcow2"), f, FSIZE);
		int r = open_read(P("fuzz.qcow2"), out);
		assert_true(r <= 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_fuzz),
	};
	(void)pass_queue;	/* unit.h's pass-through backend: not needed here */
	(void)pass_submit_wait;
	return UNIT_RUN(tests);
}
