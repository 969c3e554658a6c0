/*
 * cow_resize: growing in place and into a new table extent, with and without a backing image
 * (the grown area reads zeros even over the backing image's data), sizes that end inside a
 * block, after an apply moved the table, shrinking with and without snapshots (refused over
 * data without COW_RESIZE_SHRINK; snapshots keep their size and chunks; apply gives the
 * snapshot's size back), hostile sizes and snapshot entries, and power loss at every sync of
 * a resize (crashsim.h): each crash image opens as before or as after, checks clean, and
 * reads the right data, its snapshot too.
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#include "unit.h"
#include "crashsim.h"

#define CH (64u << 10)		/* chunk size of the test images */

static void h_ctx(struct h *h)
{
	assert_int_equal(cow_backend_new("sync", 16, &h->be), 0);
	assert_int_equal(cow_ctx_new(h->img, h->be, &h->ctx), 0);
}

static void h_open(struct h *h, const char *path, unsigned flags)
{
	if (cow_open(path, &(struct cow_open_opts){ .flags = flags }, &h->img, err, COW_ERRLEN))
		fail_msg("open %s: %s", path, err);
	h_ctx(h);
}

static void h_close(struct h *h)
{
	cow_ctx_free(h->ctx);
	cow_backend_free(h->be);
	assert_int_equal(cow_close(h->img), 0);
}

/* A ucow image of 64 KiB chunks, 4 KiB blocks, over a raw backing file (or none). */
static void mk(const char *path, uint64_t size, const char *backing)
{
	struct cow_create_opts o = { .size = size, .chunk_size = CH, .block_size = 4096,
				     .backing = backing, .backing_fmt = backing ? COW_FMT_RAW : 0 };
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
}

/* A raw file of size bytes, byte i = (i / 4096) % 251 + 1 (never zero). */
static void mk_base(const char *path, uint64_t size, uint8_t *model)
{
	uint8_t *b = malloc(size);
	for (uint64_t i = 0; i < size; i++)
		b[i] = (uint8_t)((i / 4096) % 251 + 1);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, b, size, 0), (ssize_t)size);
	close(fd);
	if (model)
		memcpy(model, b, size);
	free(b);
}

static void wr(struct h *h, uint8_t *model, uint8_t pat, uint64_t off, uint64_t len)
{
	char *b = malloc(len);
	memset(b, pat, len);
	assert_int_equal(cow_rw(h->ctx, COW_WRITE, b, len, off, 0), 0);
	free(b);
	if (model)
		memset(model + off, pat, len);
}

static uint64_t vsize_of(struct cow_image *img)
{
	struct cow_info in;
	cow_get_info(img, &in);
	return in.virtual_size;
}

/* The image (or snapshot snap) has size bytes, reading model. */
static void verify(const char *path, const char *snap, const uint8_t *model, uint64_t size)
{
	struct h h;
	uint8_t *b = malloc(size + 1);
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY, .snapshot = snap },
		     &h.img, err, COW_ERRLEN))
		fail_msg("open %s %s: %s", path, snap ? snap : "", err);
	h_ctx(&h);
	if (vsize_of(h.img) != size)
		fail_msg("%s: size %llu, want %llu", snap ? snap : "current",
			 (unsigned long long)vsize_of(h.img), (unsigned long long)size);
	assert_int_equal(cow_rw(h.ctx, COW_READ, b, size, 0, 0), 0);
	/* nothing past the end */
	assert_int_equal(cow_rw(h.ctx, COW_READ, b, 1, size, 0), -EINVAL);
	if (memcmp(b, model, size)) {
		uint64_t k = 0;
		while (b[k] == model[k])
			k++;
		fail_msg("%s: mismatch at %llu: %02x want %02x", snap ? snap : "current",
			 (unsigned long long)k, b[k], model[k]);
	}
	h_close(&h);
	free(b);
}

static void check_ok(const char *path, bool leaks_ok)
{
	struct cow_image *img;
	struct cow_check_result cr;
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		     COW_ERRLEN))
		fail_msg("open for check: %s", err);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict && !(leaks_ok && cr.verdict == 3))
		fail_msg("check verdict %d: %s", cr.verdict, cr.first_problem);
	cow_close(img);
}

static uint64_t usage(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

#define MB (1u << 20)

/* Grow in place (the table's padding has room: only the header changes), then past it (a new
 * table + bitmap extent in the data area); the data stays, the new area reads zeros. */
static void test_grow(void **state)
{
	struct h h;
	uint64_t big = 48 * MB;
	uint8_t *m = calloc(1, big);
	mk(P("g.img"), 1 * MB, NULL);
	h_open(&h, P("g.img"), 0);
	wr(&h, m, 0x11, 1000, 300000);
	wr(&h, m, 0x12, MB - 5000, 5000);
	uint64_t toff = h.img->hdr.table_offset, tsize = h.img->hdr.table_size;
	uint64_t next = h.img->next_pcn;
	assert_int_equal(cow_resize(h.img, 2 * MB, 0), 0);
	assert_int_equal(h.img->hdr.table_offset, toff);	/* in place */
	assert_int_equal(h.img->hdr.table_size, tsize);
	assert_int_equal(h.img->next_pcn, next);		/* no extent written */
	assert_int_equal(h.img->hdr.virtual_size, 2 * MB);
	assert_int_equal(h.img->nr_chunks, 32);
	wr(&h, m, 0x13, 2 * MB - 7, 7);			/* the new end is writable */
	wr(&h, m, 0x14, MB - 100, 200);		/* across the old end */
	/* no room in the 4 KiB table page: a new extent */
	assert_int_equal(cow_resize(h.img, big, 0), 0);
	assert_true(h.img->hdr.table_offset >= h.img->hdr.data_offset);
	assert_int_equal(h.img->hdr.bitmap_offset, h.img->hdr.table_offset + h.img->hdr.table_size);
	assert_int_equal(h.img->hdr.table_size, 8192);	/* 768 entries */
	assert_true(h.img->hdr.incompat & UCOW_INCOMPAT_SNAPSHOTS);
	wr(&h, m, 0x15, big - 70000, 70000);
	h_close(&h);
	verify(P("g.img"), NULL, m, big);
	check_ok(P("g.img"), false);
	/* and once more from the data area (the old extent is freed) */
	h_open(&h, P("g.img"), 0);
	assert_int_equal(cow_resize(h.img, 100 * MB, 0), 0);
	h_close(&h);
	m = realloc(m, 100 * MB);
	memset(m + big, 0, 100 * MB - big);
	verify(P("g.img"), NULL, m, 100 * MB);
	check_ok(P("g.img"), false);
	free(m);
}

/* Sizes that end inside a block: the old end's block keeps what it showed, zeros after. */
static void test_unaligned(void **state)
{
	struct h h;
	uint64_t sizes[] = { 100001, 300007, 150011, 400000, 65536 * 3 + 1, 1234567, 77 };
	uint8_t *m = calloc(1, 2 * MB);
	uint64_t cur = 100001;
	mk(P("u.img"), cur, NULL);
	h_open(&h, P("u.img"), 0);
	wr(&h, m, 0x21, 0, cur);
	for (unsigned i = 1; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t n = sizes[i];
		int r = cow_resize(h.img, n, 0);
		if (n < cur) {
			assert_int_equal(r, -ENOTEMPTY);	/* data past the new end */
			assert_int_equal(vsize_of(h.img), cur);
			assert_int_equal(cow_resize(h.img, n, COW_RESIZE_SHRINK), 0);
			memset(m + n, 0, cur - n);	/* gone: a later grow reads zeros there */
		} else {
			assert_int_equal(r, 0);
		}
		cur = n;
		assert_int_equal(vsize_of(h.img), cur);
		wr(&h, m, 0x30 + i, cur > 3000 ? cur - 3000 : 0, cur > 3000 ? 3000 : cur);
	}
	h_close(&h);
	verify(P("u.img"), NULL, m, cur);
	check_ok(P("u.img"), false);
	free(m);
}

/*
 * Over a raw backing image larger than the old size: the grown area reads zeros, not the
 * backing data (ZERO entries; the last chunk of the old size rebuilt, its block across the
 * old end carrying what it showed, from the backing image or from this one). Over a smaller
 * backing image: nothing but the header changes.
 */
static void grow_over_backing(const char *name, uint64_t old, bool write_edge, uint64_t nsize)
{
	struct h h;
	uint64_t bsize = 8 * MB;
	uint8_t *m = calloc(1, nsize > bsize ? nsize : bsize);
	mk_base(P("base.raw"), bsize, m);
	memset(m + old, 0, bsize - old);		/* the overlay ends at old */
	mk(P(name), old, "base.raw");
	h_open(&h, P(name), 0);
	wr(&h, m, 0x41, 5000, 10000);
	if (write_edge)		/* the chunk the old size ends in, mapped; its end block's bit
				 * set or not */
		wr(&h, m, 0x42, (old & ~(uint64_t)(CH - 1)) + 100,
		   old - (old & ~(uint64_t)(CH - 1)) - 100 < 3000 ?
		   old - (old & ~(uint64_t)(CH - 1)) - 100 : 3000);
	assert_int_equal(cow_resize(h.img, nsize, 0), 0);
	for (uint64_t c = (old + CH - 1) / CH; c < nsize / CH; c++)
		assert_int_equal(h.img->table[c], c * CH < bsize ? UCOW_E_ZERO : 0);
	h_close(&h);
	verify(P(name), NULL, m, nsize);
	check_ok(P(name), false);
	/* reopened and written across the old end */
	h_open(&h, P(name), 0);
	wr(&h, m, 0x43, old - 10, 20);
	h_close(&h);
	verify(P(name), NULL, m, nsize);
	check_ok(P(name), false);
	free(m);
}

static void test_grow_backing(void **state)
{
	grow_over_backing("b1.img", MB + 1000, false, 3 * MB);	/* edge from the backing */
	grow_over_backing("b2.img", MB + 1000, true, 3 * MB);	/* edge block holds data here */
	grow_over_backing("b3.img", MB + 6000, true, 3 * MB);	/* data here, end block from base */
	grow_over_backing("b4.img", 2 * MB, false, 12 * MB);	/* chunk aligned, past the base */
	grow_over_backing("b5.img", 3 * MB + 512, false, 3 * MB + 4096);	/* within a block */
	/* a backing image smaller than the old size: header only */
	struct h h;
	uint8_t *m = calloc(1, 4 * MB);
	mk_base(P("small.raw"), MB, m);
	mk(P("b6.img"), 2 * MB, "small.raw");
	h_open(&h, P("b6.img"), 0);
	uint64_t toff = h.img->hdr.table_offset;
	assert_int_equal(cow_resize(h.img, 4 * MB, 0), 0);
	assert_int_equal(h.img->hdr.table_offset, toff);
	h_close(&h);
	verify(P("b6.img"), NULL, m, 4 * MB);
	check_ok(P("b6.img"), false);
	free(m);
}

/* After an apply the table lives in the data area; a grow moves it again, writes every
 * frozen copy in the new sizes, and each snapshot keeps its own size. */
static void test_grow_after_apply(void **state)
{
	struct h h;
	uint64_t big = 40 * MB;
	uint8_t *m1 = calloc(1, big), *cur = calloc(1, big), *m2 = calloc(1, big);
	mk(P("a.img"), 2 * MB, NULL);
	h_open(&h, P("a.img"), 0);
	wr(&h, cur, 0x51, 0, 2 * MB);
	memcpy(m1, cur, 2 * MB);
	assert_int_equal(cow_snapshot_create(h.img, "s1"), 0);
	wr(&h, cur, 0x52, 4096, MB);
	assert_int_equal(cow_snapshot_apply(h.img, "s1"), 0);
	memcpy(cur, m1, 2 * MB);
	assert_true(h.img->hdr.table_offset >= h.img->hdr.data_offset);
	uint64_t s1_off = h.img->snaps[0].table_offset;
	assert_int_equal(cow_resize(h.img, 3 * MB, 0), 0);	/* room: in place */
	assert_int_equal(h.img->snaps[0].table_offset, s1_off);
	assert_int_equal(cow_resize(h.img, big, 0), 0);	/* 640 chunks: new sizes */
	assert_true(h.img->snaps[0].table_offset != s1_off);	/* the frozen copy moved */
	wr(&h, cur, 0x53, big - MB, MB);
	memcpy(m2, cur, big);
	assert_int_equal(cow_snapshot_create(h.img, "s2"), 0);
	struct cow_snap_info *si;
	uint32_t n;
	assert_int_equal(cow_snapshot_list(h.img, &si, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(si[0].virtual_size, 2 * MB);
	assert_int_equal(si[1].virtual_size, big);
	free(si);
	h_close(&h);
	verify(P("a.img"), NULL, cur, big);
	verify(P("a.img"), "s1", m1, 2 * MB);
	verify(P("a.img"), "s2", m2, big);
	check_ok(P("a.img"), false);
	/* applying the older, smaller snapshot gives the image its size; the larger one back */
	h_open(&h, P("a.img"), 0);
	assert_int_equal(cow_snapshot_apply(h.img, "s1"), 0);
	assert_int_equal(vsize_of(h.img), 2 * MB);
	wr(&h, m1, 0x54, 2 * MB - 10, 10);	/* the image's own, not s1's */
	h_close(&h);
	verify(P("a.img"), NULL, m1, 2 * MB);
	check_ok(P("a.img"), false);
	h_open(&h, P("a.img"), 0);
	assert_int_equal(cow_snapshot_apply(h.img, "s2"), 0);
	assert_int_equal(vsize_of(h.img), big);
	h_close(&h);
	verify(P("a.img"), NULL, m2, big);
	check_ok(P("a.img"), false);
	free(m1);
	free(m2);
	free(cur);
}

/* Shrink without snapshots: refused over data, dropped with the flag (chunks freed), a
 * regrow reads zeros; a shrink over nothing needs no flag. */
static void test_shrink(void **state)
{
	struct h h;
	uint8_t *m = calloc(1, 48 * MB);
	mk(P("s.img"), 48 * MB, NULL);
	h_open(&h, P("s.img"), 0);
	wr(&h, m, 0x61, 0, 48 * MB);
	uint64_t toff = h.img->hdr.table_offset;
	assert_int_equal(cow_resize(h.img, MB, 0), -ENOTEMPTY);
	assert_non_null(strstr(cow_errmsg(h.img), "data lies past the new end (at byte 1048576)"));
	assert_int_equal(vsize_of(h.img), 48 * MB);
	assert_int_equal(h.img->hdr.table_offset, toff);	/* nothing was written */
	h_close(&h);
	verify(P("s.img"), NULL, m, 48 * MB);
	uint64_t before = usage(P("s.img"));
	h_open(&h, P("s.img"), 0);
	assert_int_equal(cow_resize(h.img, MB + 777, COW_RESIZE_SHRINK), 0);
	assert_int_equal(h.img->hdr.table_size, 4096);	/* the table shrank: a new extent */
	h_close(&h);
	verify(P("s.img"), NULL, m, MB + 777);
	check_ok(P("s.img"), false);
	assert_true(usage(P("s.img")) < before - 40 * MB);	/* the chunks were given back */
	/* regrown: zeros past the shrunk end, in its last chunk too */
	h_open(&h, P("s.img"), 0);
	assert_int_equal(cow_resize(h.img, 4 * MB, 0), 0);
	h_close(&h);
	memset(m + MB + 777, 0, 4 * MB - MB - 777);
	verify(P("s.img"), NULL, m, 4 * MB);
	check_ok(P("s.img"), false);
	/* nothing of this image past the new end: no flag needed; zeros written past the end
	 * inside the last block count as nothing either */
	h_open(&h, P("s.img"), 0);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE_ZEROES, NULL, 3 * MB, MB, 0), 0);
	memset(m + MB, 0, 3 * MB);
	assert_int_equal(cow_resize(h.img, 2 * MB + 100, 0), 0);
	assert_int_equal(cow_resize(h.img, MB + 10, 0), 0);
	assert_int_equal(cow_resize(h.img, MB - 10, 0), -ENOTEMPTY);	/* 0x61 there */
	wr(&h, m, 0, MB - 3996, 3996);		/* zeros, with their bits set */
	assert_int_equal(cow_resize(h.img, MB - 3996, 0), 0);
	assert_int_equal(cow_resize(h.img, MB - 3997, 0), -ENOTEMPTY);
	h_close(&h);
	verify(P("s.img"), NULL, m, MB - 3996);
	check_ok(P("s.img"), false);
	free(m);
}

/* Shrink with snapshots: each keeps its size and chunks; dropped chunks no snapshot holds are
 * freed; apply brings the larger size back; a later shrink of the sizes rewrites the frozen
 * copies once the larger snapshot is gone. */
static void test_shrink_snapshots(void **state)
{
	struct h h;
	uint64_t big = 40 * MB;
	uint8_t *ma = calloc(1, big), *cur = calloc(1, big), *mb = calloc(1, big);
	mk(P("ss.img"), big, NULL);
	h_open(&h, P("ss.img"), 0);
	wr(&h, cur, 0x71, 0, big);
	memcpy(ma, cur, big);
	assert_int_equal(cow_snapshot_create(h.img, "a"), 0);
	wr(&h, cur, 0x72, 10 * MB, 20 * MB);	/* copies: chunks only the current state maps */
	uint64_t ts = h.img->hdr.table_size;
	assert_int_equal(cow_resize(h.img, 2 * MB + 3, COW_RESIZE_SHRINK), 0);
	assert_int_equal(h.img->hdr.table_size, ts);	/* a's frozen copy needs it */
	assert_int_equal(cow_reclaim(h.img, 0), 0);
	h_close(&h);
	memset(cur + 2 * MB + 3, 0, big - 2 * MB - 3);
	verify(P("ss.img"), NULL, cur, 2 * MB + 3);
	verify(P("ss.img"), "a", ma, big);		/* the larger snapshot, whole */
	check_ok(P("ss.img"), false);
	/* the 20 MiB of copies were freed; a's 40 MiB stay */
	uint64_t u = usage(P("ss.img"));
	assert_true(u < 44 * MB);
	assert_true(u > 40 * MB);
	h_open(&h, P("ss.img"), 0);
	wr(&h, cur, 0x73, MB, MB + 3);
	memcpy(mb, cur, 2 * MB + 3);
	assert_int_equal(cow_snapshot_create(h.img, "b"), 0);
	assert_int_equal(cow_snapshot_apply(h.img, "a"), 0);	/* a's size again */
	assert_int_equal(vsize_of(h.img), big);
	h_close(&h);
	verify(P("ss.img"), NULL, ma, big);
	verify(P("ss.img"), "b", mb, 2 * MB + 3);
	check_ok(P("ss.img"), false);
	/* a gone: a shrink makes the sizes smaller, b's frozen copy is written again */
	h_open(&h, P("ss.img"), 0);
	assert_int_equal(cow_snapshot_apply(h.img, "b"), 0);
	assert_int_equal(cow_snapshot_delete(h.img, "a"), 0);
	uint64_t boff = h.img->snaps[0].table_offset;
	assert_int_equal(cow_resize(h.img, MB, COW_RESIZE_SHRINK), 0);
	assert_int_equal(h.img->hdr.table_size, 4096);
	assert_true(h.img->snaps[0].table_offset != boff);
	h_close(&h);
	verify(P("ss.img"), NULL, mb, MB);
	verify(P("ss.img"), "b", mb, 2 * MB + 3);	/* larger than the image, whole */
	check_ok(P("ss.img"), false);
	h_open(&h, P("ss.img"), 0);
	assert_int_equal(cow_snapshot_delete(h.img, "b"), 0);
	h_close(&h);
	verify(P("ss.img"), NULL, mb, MB);
	check_ok(P("ss.img"), false);
	assert_true(usage(P("ss.img")) < 2 * MB);
	free(ma);
	free(mb);
	free(cur);
}

/* Sizes and flags that must be refused, leaving the image as it was; a raw file. */
static void test_hostile_sizes(void **state)
{
	struct h h;
	uint8_t *m = calloc(1, MB);
	mk(P("h.img"), MB, NULL);
	h_open(&h, P("h.img"), 0);
	wr(&h, m, 0x81, 0, MB);
	assert_int_equal(cow_resize(h.img, 0, 0), -EINVAL);
	assert_int_equal(cow_resize(h.img, 2 * MB, 0x80), -EINVAL);
	assert_int_equal(cow_resize(h.img, UINT64_MAX, 0), -EFBIG);
	assert_int_equal(cow_resize(h.img, UCOW_MAX_VSIZE + 1, 0), -EFBIG);
	/* 64 KiB chunks: at most 16 Mi chunks (the table limit), 1 TiB */
	assert_int_equal(cow_resize(h.img, (1ull << 40) + 1, 0), -EFBIG);
	assert_non_null(strstr(cow_errmsg(h.img), "at most 1099511627776 bytes"));
	assert_int_equal(vsize_of(h.img), MB);
	h_close(&h);
	h_open(&h, P("h.img"), COW_OPEN_RDONLY);
	assert_int_equal(cow_resize(h.img, 2 * MB, 0), -EROFS);
	h_close(&h);
	verify(P("h.img"), NULL, m, MB);
	check_ok(P("h.img"), false);
	/* raw: the file's size; a shrink only with the flag */
	int fd = open(P("r.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_int_equal(pwrite(fd, m, MB, 0), MB);
	close(fd);
	struct cow_image *img;
	assert_int_equal(cow_open(P("r.raw"), &(struct cow_open_opts){ .fmt = COW_FMT_RAW }, &img,
				  err, COW_ERRLEN), 0);
	assert_int_equal(cow_resize(img, MB / 2, 0), -ENOTEMPTY);
	assert_int_equal(cow_resize(img, 3 * MB + 1, 0), 0);
	assert_int_equal(vsize_of(img), 3 * MB + 1);
	assert_int_equal(cow_resize(img, MB / 2, COW_RESIZE_SHRINK), 0);
	assert_int_equal(cow_close(img), 0);
	struct stat st;
	assert_int_equal(stat(P("r.raw"), &st), 0);
	assert_int_equal(st.st_size, MB / 2);
	free(m);
}

/* Rewrite snapshot entry 0 of path's snapshot table (at byte at) with field at off (8
 * bytes) = v, and its checksum. */
static void poke_snap(const char *path, uint64_t at, unsigned off, uint64_t v)
{
	uint8_t e[UCOW_SNAP_ENTRY];
	int fd = open(path, O_RDWR);
	assert_int_equal(pread(fd, e, sizeof(e), (off_t)at), (ssize_t)sizeof(e));
	put_le64(e + off, v);
	put_le32(e + 252, 0);
	put_le32(e + 252, ucow_crc32c(0, e, sizeof(e)));
	assert_int_equal(pwrite(fd, e, sizeof(e), (off_t)at), (ssize_t)sizeof(e));
	close(fd);
}

/*
 * Hostile snapshot entries: a virtual size larger than the table extent holds is refused at
 * open; an entry of a frozen table past its snapshot's own chunks is corruption (it would be
 * inside the table of a larger current state).
 */
static void test_hostile_snapshots(void **state)
{
	struct h h;
	struct cow_image *img;
	mk(P("hs.img"), 2 * MB, NULL);
	h_open(&h, P("hs.img"), 0);
	wr(&h, NULL, 0x91, 0, 2 * MB);
	assert_int_equal(cow_snapshot_create(h.img, "a"), 0);
	uint64_t at = h.img->hdr.snap_table_offset;
	h_close(&h);
	/* 4 KiB table: 512 chunks of 64 KiB; 32 MiB fits, 32 MiB + 1 does not */
	poke_snap(P("hs.img"), at, 24, 32 * MB);
	assert_int_equal(cow_open(P("hs.img"), NULL, &img, err, COW_ERRLEN), 0);
	cow_close(img);
	/* a snapshot larger than the image is fine: it reads its 32 MiB */
	uint8_t *m = calloc(1, 32 * MB);
	memset(m, 0x91, 2 * MB);
	verify(P("hs.img"), "a", m, 32 * MB);
	check_ok(P("hs.img"), false);
	free(m);
	poke_snap(P("hs.img"), at, 24, 32 * MB + 1);
	assert_int_equal(cow_open(P("hs.img"), NULL, &img, err, COW_ERRLEN), -EUCLEAN);
	assert_non_null(strstr(err, "snapshot 'a' has an invalid size"));
	poke_snap(P("hs.img"), at, 24, 0);
	assert_int_equal(cow_open(P("hs.img"), NULL, &img, err, COW_ERRLEN), -EUCLEAN);
	/* a 1 MiB snapshot whose frozen table maps chunks 16-31: corrupt */
	poke_snap(P("hs.img"), at, 24, MB);
	struct cow_check_result cr;
	assert_int_equal(cow_open(P("hs.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
				  &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_check(img, &cr), 0);
	assert_int_equal(cr.verdict, 2);
	assert_non_null(strstr(cr.first_problem, "snapshot 'a' entry 16 is invalid"));
	cow_close(img);
	assert_int_equal(cow_open(P("hs.img"), &(struct cow_open_opts){
			 .flags = COW_OPEN_RDONLY, .snapshot = "a" }, &img, err, COW_ERRLEN),
			 -EUCLEAN);
	assert_non_null(strstr(err, "snapshot 'a' entry 16 is invalid"));
}

/*
 * A failed write at each metadata write of a resize in turn (img->crash_after: that write and
 * every later one fail with EIO): the resize fails, the image serves on at its old size with
 * its content and snapshot, takes writes, closes; what the resize had written is given back
 * (check finds no leak) unless the failure hit the header switch itself, which may have
 * landed, and keeps it until the next open.
 */
static void test_write_errors(void **state)
{
	uint64_t old = MB + 1000, big = 40 * MB;
	uint8_t *m = calloc(1, big), *ma = calloc(1, big), *b = malloc(big);
	int last_verdict = 0, k;
	for (k = 1; k < 200; k++) {
		struct h h;
		struct cow_image *img;
		struct cow_check_result res;
		memset(m, 0, big);
		mk_base(P("fbase.raw"), 4 * MB, m);
		memset(m + old, 0, 4 * MB - old);
		mk(P("f.img"), old, "fbase.raw");
		h_open(&h, P("f.img"), 0);
		wr(&h, m, 0xb1, 3000, 200000);
		memcpy(ma, m, old);
		assert_int_equal(cow_snapshot_create(h.img, "a"), 0);
		wr(&h, m, 0xb2, 100000, 300000);
		h.img->crash_after = k;
		int r = cow_resize(h.img, big, 0);
		h.img->crash_after = 0;
		if (!r) {
			memset(m + old, 0, big - old);
			h_close(&h);
			verify(P("f.img"), NULL, m, big);
			verify(P("f.img"), "a", ma, old);
			check_ok(P("f.img"), false);
			break;
		}
		assert_int_equal(r, -EIO);
		assert_int_equal(vsize_of(h.img), old);
		assert_int_equal(cow_rw(h.ctx, COW_READ, b, old, 0, 0), 0);
		assert_memory_equal(b, m, old);
		wr(&h, m, 0xb3, old - 5000, 5000);
		assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
		h_close(&h);
		verify(P("f.img"), NULL, m, old);
		verify(P("f.img"), "a", ma, old);
		assert_int_equal(cow_open(P("f.img"), &(struct cow_open_opts){
				 .flags = COW_OPEN_RDONLY }, &img, err, COW_ERRLEN), 0);
		assert_int_equal(cow_check(img, &res), 0);
		cow_close(img);
		if (res.verdict && (res.verdict != 3 || last_verdict == 3))
			fail_msg("write %d failed: check verdict %d: %s", k, res.verdict,
				 res.first_problem);
		last_verdict = res.verdict;	/* a leak: only where the switch failed */
	}
	print_message("a failed write at each of %d metadata writes of the resize\n", k - 1);
	assert_true(k > 5 && k < 200);
	free(m);
	free(ma);
	free(b);
}

/* ---- power loss during a resize (crashsim.h) ------------------------------------------- */

enum rv { RV_IN_PLACE, RV_GROW, RV_GROW_SNAP, RV_GROW_EDGE, RV_SHRINK_SNAP, RV_SHRINK,
	  RV_PENDING };

static struct {
	enum rv v;
	bool returned;
	bool pending;			/* an unflushed write when the resize starts */
	bool wrote, flushed;		/* a write after the resize; its flush returned */
	uint64_t old, new;
	unsigned befores, afters;
	uint8_t *before, *after, *before_w, *after5, *snap, *cur;
	uint64_t snap_size;
	bool has_snap;
} cr;

static void crash_verify(struct crashsim *cs, const char *what)
{
	struct cow_image *img;
	struct h v;
	/* a read-write open: replay, reclaim, a clean close */
	if (cow_open(cs->crash, NULL, &img, err, COW_ERRLEN))
		fail_msg("crash point %u (%s): open: %s", cs->points, what, err);
	uint64_t size = vsize_of(img);
	assert_int_equal(cow_close(img), 0);
	check_ok(cs->crash, true);
	bool after = size == cr.new;
	if (size != cr.old && size != cr.new)
		fail_msg("crash point %u (%s): size %llu is neither %llu nor %llu", cs->points,
			 what, (unsigned long long)size, (unsigned long long)cr.old,
			 (unsigned long long)cr.new);
	if (cr.returned && !after)
		fail_msg("crash point %u (%s): the resize returned, the image is as before",
			 cs->points, what);
	h_open(&v, cs->crash, COW_OPEN_RDONLY);
	assert_int_equal(cow_rw(v.ctx, COW_READ, cr.cur, size, 0, 0), 0);
	h_close(&v);
	/*
	 * before: the pending write (if any) may have landed, or some sectors of it (it is an
	 * overwrite in place); after: it did (the resize's checkpoint made it durable). The
	 * write after the resize likewise, until its flush returned; then it must be there.
	 */
	const uint8_t *c1 = after ? cr.after : cr.before, *c2 = after ? cr.after5 : cr.before_w;
	bool may2 = after ? cr.wrote : cr.pending, must2 = after && cr.flushed;
	for (uint64_t k = 0; k < size; k++) {
		if ((!must2 && cr.cur[k] == c1[k]) || (may2 && cr.cur[k] == c2[k]))
			continue;
		fail_msg("crash point %u (%s): the %s image differs at %llu: %02x want %02x",
			 cs->points, what, after ? "resized" : "old", (unsigned long long)k,
			 cr.cur[k], must2 ? c2[k] : c1[k]);
	}
	cr.befores += !after;
	cr.afters += after;
	if (cr.has_snap)
		verify(cs->crash, "a", cr.snap, cr.snap_size);
}

static void crash_resize(enum rv v)
{
	static struct crashsim cs;
	struct cs_be rb;
	struct h h;
	uint64_t big = 40 * MB, bsize = 8 * MB;
	const char *base = NULL;
	memset(&cr, 0, sizeof(cr));
	cr.v = v;
	cr.before = calloc(1, big);
	cr.after = calloc(1, big);
	cr.before_w = calloc(1, big);
	cr.after5 = calloc(1, big);
	cr.snap = calloc(1, big);
	cr.cur = calloc(1, big);
	switch (v) {
	case RV_IN_PLACE: cr.old = MB; cr.new = 2 * MB - 5; break;
	case RV_GROW: cr.old = 2 * MB; cr.new = big; break;
	case RV_GROW_SNAP: cr.old = 2 * MB; cr.new = big; break;
	case RV_GROW_EDGE: case RV_PENDING: cr.old = MB + 1000; cr.new = 3 * MB; break;
	case RV_SHRINK_SNAP: cr.old = 4 * MB; cr.new = MB + 5000; break;
	case RV_SHRINK: cr.old = big; cr.new = MB + 5000; break;
	}
	if (v == RV_GROW_EDGE || v == RV_PENDING) {
		mk_base(P("cbase.raw"), bsize, cr.before);
		memset(cr.before + cr.old, 0, bsize - cr.old);
		base = "cbase.raw";
	}
	mk(P("cr.img"), cr.old, base);
	h_open(&h, P("cr.img"), 0);
	wr(&h, cr.before, 0xa1, 3000, cr.old / 2);
	if (v == RV_GROW_SNAP || v == RV_SHRINK_SNAP) {
		cr.has_snap = true;
		cr.snap_size = cr.old;
		memcpy(cr.snap, cr.before, cr.old);
		assert_int_equal(cow_snapshot_create(h.img, "a"), 0);
		wr(&h, cr.before, 0xa2, cr.old / 4, cr.old / 2);	/* copies */
	}
	if (v == RV_SHRINK || v == RV_SHRINK_SNAP)
		wr(&h, cr.before, 0xa3, cr.old - 3 * CH - 10, 3 * CH);	/* data past the end */
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	memcpy(cr.before_w, cr.before, big);
	if (v == RV_PENDING) {
		cr.pending = true;
		wr(&h, cr.before_w, 0xa4, 70000, 9000);	/* not flushed */
	}
	memcpy(cr.after, cr.before_w, cr.old < cr.new ? cr.old : cr.new);

	cs_free(&cs);
	memset(&cs, 0, sizeof(cs));
	cs.rng = cs_seed("crash resize");
	cs.subsets = 12;
	cs.verify = crash_verify;
	snprintf(cs.crash, sizeof(cs.crash), "%s", P("cr-crash.img"));
	cs_be_init(&rb, &cs, h.be);
	cow_ctx_free(h.ctx);
	assert_int_equal(cow_ctx_new(h.img, &rb.be, &h.ctx), 0);
	cs_attach(&cs, h.img);
	assert_int_equal(cow_resize(h.img, cr.new, COW_RESIZE_SHRINK), 0);
	cr.returned = true;
	cs_crash_point(&cs);
	/* and the resized image in use: a write near the new end, a flush */
	memcpy(cr.after5, cr.after, cr.new);
	wr(&h, cr.after5, 0xa5, cr.new - 5000, 4000);
	cr.wrote = true;
	cs_crash_point(&cs);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	cr.flushed = true;
	cs_crash_point(&cs);
	print_message("%u crash points, %u crash images (%u torn writes): %u before, %u after\n",
		      cs.points, cs.images, cs.torn, cr.befores, cr.afters);
	assert_true(cs.points > 2);
	assert_true(cr.befores > 0 && cr.afters > 0);
	h.img->tap = NULL;
	h_close(&h);
	cs_free(&cs);
	free(cr.before);
	free(cr.after);
	free(cr.before_w);
	free(cr.after5);
	free(cr.snap);
	free(cr.cur);
}

static void test_crash_in_place(void **state) { crash_resize(RV_IN_PLACE); }
static void test_crash_grow(void **state) { crash_resize(RV_GROW); }
static void test_crash_grow_snapshot(void **state) { crash_resize(RV_GROW_SNAP); }
static void test_crash_grow_edge(void **state) { crash_resize(RV_GROW_EDGE); }
static void test_crash_grow_pending(void **state) { crash_resize(RV_PENDING); }
static void test_crash_shrink(void **state) { crash_resize(RV_SHRINK); }
static void test_crash_shrink_snapshot(void **state) { crash_resize(RV_SHRINK_SNAP); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grow),
		cmocka_unit_test(test_unaligned),
		cmocka_unit_test(test_grow_backing),
		cmocka_unit_test(test_grow_after_apply),
		cmocka_unit_test(test_shrink),
		cmocka_unit_test(test_shrink_snapshots),
		cmocka_unit_test(test_hostile_sizes),
		cmocka_unit_test(test_hostile_snapshots),
		cmocka_unit_test(test_write_errors),
		cmocka_unit_test(test_crash_in_place),
		cmocka_unit_test(test_crash_grow),
		cmocka_unit_test(test_crash_grow_snapshot),
		cmocka_unit_test(test_crash_grow_edge),
		cmocka_unit_test(test_crash_grow_pending),
		cmocka_unit_test(test_crash_shrink),
		cmocka_unit_test(test_crash_shrink_snapshot),
	};
	return UNIT_RUN(tests);
}
