/*
 * The engine's backing-chain operations (what ucow commit and rebase are built on):
 * cow_set_backing (a new name or none; only the name under COW_OPEN_NOCHAIN; missing files,
 * loops, bad formats and names outside the folder refused, the header untouched),
 * cow_open_backing, cow_make_empty (every chunk unallocated, chunks freed, a snapshot's
 * chunks kept), cow_map and writes on a read-write image opened without its chain, and
 * power loss (crashsim.h) at every point of cow_set_backing after a rebase's copies (the
 * content never changes; once the new name is on disk, the copies are too) and of
 * cow_make_empty (every chunk reads as before or as the backing file, never a mix).
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

#define CS (64u << 10)		/* chunk size of the overlays */
#define SZ (32 * CS)		/* their virtual size */

static void h_open(struct h *h, const char *path, unsigned flags)
{
	if (cow_open(path, &(struct cow_open_opts){ .flags = flags }, &h->img, err, COW_ERRLEN))
		fail_msg("open %s: %s", path, err);
	assert_int_equal(cow_backend_new("sync", 16, &h->be), 0);
	assert_int_equal(cow_ctx_new(h->img, h->be, &h->ctx), 0);
}

static void h_close(struct h *h)
{
	cow_ctx_free(h->ctx);
	cow_backend_free(h->be);
	assert_int_equal(cow_close(h->img), 0);
}

/* A ucow image of SZ bytes over backing (raw or ucow; NULL: none), 64 KiB chunks. */
static void mk(const char *path, const char *backing, int fmt)
{
	struct cow_create_opts o = { .size = SZ, .chunk_size = CS, .block_size = 4096,
				     .journal_size = 64 << 10, .backing = backing,
				     .backing_fmt = backing ? fmt : 0 };
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create %s: %s", path, err);
}

/* A raw file of size bytes: byte i is seed + i / 4096 (mod 251), never 0. */
static void mk_raw(const char *path, uint64_t size, int seed, uint8_t *model)
{
	uint8_t *b = malloc(size);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_non_null(b);
	assert_true(fd >= 0);
	for (uint64_t i = 0; i < size; i++)
		b[i] = (uint8_t)(1 + (seed + i / 4096) % 251);
	assert_int_equal(pwrite(fd, b, size, 0), (ssize_t)size);
	close(fd);
	if (model)
		memcpy(model, b, size);
	free(b);
}

static void wr(struct h *h, uint8_t pat, uint64_t off, uint64_t len)
{
	char *b = malloc(len);
	memset(b, pat, len);
	assert_int_equal(cow_rw(h->ctx, COW_WRITE, b, len, off, 0), 0);
	free(b);
}

static void read_all(const char *path, unsigned flags, uint8_t *out)
{
	struct h h;
	h_open(&h, path, flags | COW_OPEN_RDONLY);
	assert_int_equal(cow_rw(h.ctx, COW_READ, out, SZ, 0, 0), 0);
	h_close(&h);
}

static void same(const uint8_t *got, const uint8_t *want, const char *what)
{
	if (memcmp(got, want, SZ)) {
		uint64_t k = 0;
		while (got[k] == want[k])
			k++;
		fail_msg("%s: offset %llu holds %02x, want %02x", what, (unsigned long long)k,
			 got[k], want[k]);
	}
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

/* The backing name img's header holds ("" for none). */
static void backing_is(const char *path, const char *want)
{
	struct cow_image *img;
	struct cow_info in;
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY | COW_OPEN_NOCHAIN },
		     &img, err, COW_ERRLEN))
		fail_msg("open %s: %s", path, err);
	cow_get_info(img, &in);
	if (strcmp(in.backing ? in.backing : "", want))
		fail_msg("%s: backing file '%s', want '%s'", path, in.backing ? in.backing : "",
			 want);
	assert_int_equal(in.backing_fmt, *want ? COW_FMT_RAW : 0);
	cow_close(img);
}

static uint8_t ma[SZ], mb[SZ], got[SZ], want[SZ];

/* ---- cow_set_backing, cow_open_backing --------------------------------------------------- */

static void test_set_backing(void **state)
{
	struct cow_image *img;
	struct h h;
	(void)state;
	mk_raw(P("a.raw"), SZ, 0, ma);
	mk_raw(P("b.raw"), SZ, 100, mb);
	mk(P("o.img"), "a.raw", COW_FMT_RAW);
	h_open(&h, P("o.img"), 0);
	wr(&h, 0xee, CS + 100, 5000);
	assert_int_equal(cow_set_backing(h.img, "b.raw", COW_FMT_RAW), 0);
	/* the open image goes on reading the chain it was opened with */
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, SZ, 0, 0), 0);
	memcpy(want, ma, SZ);
	memset(want + CS + 100, 0xee, 5000);
	same(got, want, "after the switch, before a reopen");
	h_close(&h);
	backing_is(P("o.img"), "b.raw");
	read_all(P("o.img"), 0, got);
	memcpy(want, mb, SZ);
	memcpy(want + CS, ma + CS, 8192);	/* the write's two blocks, filled from a.raw */
	memset(want + CS + 100, 0xee, 5000);
	same(got, want, "reopened over b.raw");
	check_ok(P("o.img"), false);

	/* refused: the header keeps its name */
	mk(P("up.img"), "o.img", COW_FMT_UCOW);
	h_open(&h, P("o.img"), 0);
	assert_int_equal(cow_set_backing(h.img, "missing.raw", COW_FMT_RAW), -ENOENT);
	assert_non_null(strstr(cow_errmsg(h.img), "missing.raw' not found"));
	assert_int_equal(cow_set_backing(h.img, "a.raw", 0), -EINVAL);
	assert_int_equal(cow_set_backing(h.img, "o.img", COW_FMT_UCOW), -ELOOP);
	assert_int_equal(cow_set_backing(h.img, "a.raw", COW_FMT_UCOW), -EINVAL);	/* no magic */
	char longname[UCOW_BACKING_NAME_MAX + 2];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(cow_set_backing(h.img, longname, COW_FMT_RAW), -ENAMETOOLONG);
	/* a ucow image above o.img would make a loop through it */
	assert_int_equal(cow_set_backing(h.img, "up.img", COW_FMT_UCOW), -ELOOP);
	h_close(&h);
	backing_is(P("o.img"), "b.raw");

	/* none: what the backing file showed reads as zeros */
	h_open(&h, P("o.img"), 0);
	assert_int_equal(cow_set_backing(h.img, NULL, 0), 0);
	h_close(&h);
	backing_is(P("o.img"), "");
	read_all(P("o.img"), 0, got);
	memset(want, 0, SZ);
	memcpy(want + CS, ma + CS, 8192);
	memset(want + CS + 100, 0xee, 5000);
	same(got, want, "no backing file");
	check_ok(P("o.img"), false);

	/* read-only, raw: refused */
	h_open(&h, P("o.img"), COW_OPEN_RDONLY);
	assert_int_equal(cow_set_backing(h.img, "a.raw", COW_FMT_RAW), -EROFS);
	h_close(&h);
	assert_int_equal(cow_open(P("a.raw"), &(struct cow_open_opts){ .fmt = COW_FMT_RAW }, &img,
				  err, COW_ERRLEN), 0);
	assert_int_equal(cow_set_backing(img, "b.raw", COW_FMT_RAW), -ENOTSUP);
	cow_close(img);
	check_ok(P("o.img"), false);
}

static void test_set_backing_confined(void **state)
{
	struct cow_image *img;
	char abs[600];
	(void)state;
	mk_raw(P("a.raw"), SZ, 0, NULL);
	mkdir(P("sub"), 0755);
	mk(P("sub/o.img"), "../a.raw", COW_FMT_RAW);
	snprintf(abs, sizeof(abs), "%s", P("a.raw"));
	/* the folder bounds the new name as it bounds the old chain */
	assert_int_equal(cow_open(P("sub/o.img"), &(struct cow_open_opts){
				.flags = COW_OPEN_CONFINE }, &img, err, COW_ERRLEN), -EPERM);
	assert_int_equal(cow_open(P("sub/o.img"), &(struct cow_open_opts){
				.flags = COW_OPEN_CONFINE | COW_OPEN_NOCHAIN }, &img, err,
				  COW_ERRLEN), 0);
	assert_int_equal(cow_set_backing(img, "../a.raw", COW_FMT_RAW), -EPERM);
	assert_non_null(strstr(cow_errmsg(img), "lies outside the image's folder"));
	assert_int_equal(cow_set_backing(img, abs, COW_FMT_RAW), -EPERM);
	assert_non_null(strstr(cow_errmsg(img), "is absolute"));
	assert_int_equal(cow_set_backing(img, "o.img", COW_FMT_UCOW), -ELOOP);
	/* without its chain, only the name: the file need not exist (qemu-img rebase -u) */
	assert_int_equal(cow_set_backing(img, "later.raw", COW_FMT_RAW), 0);
	assert_int_equal(cow_close(img), 0);
	backing_is(P("sub/o.img"), "later.raw");
	assert_int_equal(cow_open(P("sub/o.img"), NULL, &img, err, COW_ERRLEN), -ENOENT);
	/* and without the policy, an outside name is taken */
	assert_int_equal(cow_open(P("sub/o.img"), &(struct cow_open_opts){
				.flags = COW_OPEN_NOCHAIN }, &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_set_backing(img, "../a.raw", COW_FMT_RAW), 0);
	assert_int_equal(cow_close(img), 0);
	assert_int_equal(cow_open(P("sub/o.img"), NULL, &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_close(img), 0);
}

static void test_open_backing(void **state)
{
	struct cow_image *img, *b;
	struct cow_ctx *ctx;
	struct cow_backend *be;
	struct h h;
	(void)state;
	mk_raw(P("a.raw"), SZ, 0, ma);
	mk_raw(P("b.raw"), SZ / 2, 100, mb);
	mk(P("o.img"), "a.raw", COW_FMT_RAW);
	mk(P("b.img"), "b.raw", COW_FMT_RAW);
	h_open(&h, P("o.img"), 0);
	/* the new chain next to the old one: read b.img, which reads b.raw */
	assert_int_equal(cow_open_backing(h.img, "b.img", COW_FMT_UCOW, &b, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("sync", 4, &be), 0);
	assert_int_equal(cow_ctx_new(b, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, got, SZ, 0, 0), 0);
	memcpy(want, mb, SZ / 2);
	memset(want + SZ / 2, 0, SZ / 2);
	same(got, want, "b.img through cow_open_backing");
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_close(b), 0);
	err[0] = 0;
	assert_int_equal(cow_open_backing(h.img, "o.img", COW_FMT_UCOW, &b, err, COW_ERRLEN),
			 -ELOOP);
	assert_non_null(strstr(err, "loops back"));
	assert_int_equal(cow_open_backing(h.img, "nope", COW_FMT_RAW, &b, err, COW_ERRLEN),
			 -ENOENT);
	h_close(&h);
	/* a raw image has no backing file to open */
	assert_int_equal(cow_open(P("a.raw"), &(struct cow_open_opts){ .fmt = COW_FMT_RAW }, &img,
				  err, COW_ERRLEN), 0);
	assert_int_equal(cow_open_backing(img, "b.raw", COW_FMT_RAW, &b, err, COW_ERRLEN),
			 -ENOTSUP);
	cow_close(img);
}

/* A read-write image opened without its chain: maps what its backing file holds as such,
 * and takes no data requests (they would carry zeros where the backing data belongs). */
static void test_nochain_rw(void **state)
{
	uint64_t run, phys;
	struct h h;
	char b[4096] = { 1 };
	(void)state;
	mk_raw(P("a.raw"), SZ, 0, ma);
	mk(P("o.img"), "a.raw", COW_FMT_RAW);
	h_open(&h, P("o.img"), 0);
	wr(&h, 0x55, 0, 4096);
	h_close(&h);
	h_open(&h, P("o.img"), COW_OPEN_NOCHAIN);
	assert_int_equal(cow_map(h.img, 0, SZ, &run, &phys), COW_MAP_DATA);
	assert_int_equal(run, 4096);
	assert_int_equal(cow_map(h.img, 4096, SZ - 4096, &run, &phys), COW_MAP_BACKING);
	assert_int_equal(cow_map(h.img, 5 * CS, CS, &run, &phys), COW_MAP_BACKING);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, b, 512, 8192, 0), -EROFS);
	assert_int_equal(cow_rw(h.ctx, COW_DISCARD, NULL, CS, 0, 0), -EROFS);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE_ZEROES, NULL, CS, 2 * CS, 0), -EROFS);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	h_close(&h);
	read_all(P("o.img"), 0, got);
	memcpy(want, ma, SZ);
	memset(want, 0x55, 4096);
	same(got, want, "after the refused requests");
	/* without a backing file, zeros are zeros */
	mk(P("solo.img"), NULL, 0);
	h_open(&h, P("solo.img"), COW_OPEN_NOCHAIN);
	assert_int_equal(cow_map(h.img, 0, SZ, &run, &phys), COW_MAP_ZERO);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, b, 512, 8192, 0), 0);
	h_close(&h);
}

/* ---- cow_make_empty ---------------------------------------------------------------------- */

static void test_make_empty(void **state)
{
	struct cow_snap_info *si;
	struct cow_info in;
	struct stat st0, st1;
	uint32_t n;
	struct h h;
	(void)state;
	mk_raw(P("a.raw"), SZ, 0, ma);
	mk(P("o.img"), "a.raw", COW_FMT_RAW);
	h_open(&h, P("o.img"), 0);
	wr(&h, 1, 0, 3 * CS);			/* whole chunks */
	wr(&h, 2, 5 * CS + 100, 300);		/* a partial block */
	wr(&h, 3, 9 * CS, 8192);
	assert_int_equal(cow_rw(h.ctx, COW_DISCARD, NULL, CS, 12 * CS, 0), 0);	/* ZERO */
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);	/* holds chunks 0-2, 5, 9 */
	wr(&h, 4, CS, 4096);			/* a copy of a shared chunk */
	wr(&h, 5, 20 * CS, CS);			/* a chunk no snapshot holds */
	/* an unflushed write is made durable first, then emptied like the rest */
	assert_int_equal(cow_make_empty(h.img), 0);
	cow_get_info(h.img, &in);
	assert_int_equal(in.allocated_chunks, 0);
	assert_int_equal(in.zero_chunks, 0);
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, SZ, 0, 0), 0);
	same(got, ma, "emptied, in the same open");
	/* the image works on: a write after the emptying */
	wr(&h, 6, 30 * CS, 4096);
	h_close(&h);
	memcpy(want, ma, SZ);
	memset(want + 30 * CS, 6, 4096);
	read_all(P("o.img"), 0, got);
	same(got, want, "emptied, reopened");
	check_ok(P("o.img"), false);
	/* the snapshot still reads what it held */
	struct cow_image *img;
	assert_int_equal(cow_open(P("o.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY,
				  .snapshot = "s" }, &img, err, COW_ERRLEN), 0);
	struct cow_backend *be;
	struct cow_ctx *ctx;
	assert_int_equal(cow_backend_new("sync", 4, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, got, SZ, 0, 0), 0);
	memcpy(want, ma, SZ);
	memset(want, 1, 3 * CS);
	memset(want + 5 * CS + 100, 2, 300);
	memset(want + 9 * CS, 3, 8192);
	memset(want + 12 * CS, 0, CS);
	same(got, want, "snapshot s after the emptying");
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_snapshot_list(img, &si, &n), 0);
	assert_int_equal(n, 1);
	free(si);
	cow_close(img);

	/* without snapshots the space goes back */
	mk(P("p.img"), "a.raw", COW_FMT_RAW);
	h_open(&h, P("p.img"), 0);
	wr(&h, 7, 0, SZ);
	h_close(&h);
	assert_int_equal(stat(P("p.img"), &st0), 0);
	h_open(&h, P("p.img"), 0);
	assert_int_equal(cow_make_empty(h.img), 0);
	h_close(&h);
	assert_int_equal(stat(P("p.img"), &st1), 0);
	if ((uint64_t)st1.st_blocks * 512 + SZ / 2 > (uint64_t)st0.st_blocks * 512)
		fail_msg("emptying freed too little: %llu bytes used before, %llu after",
			 (unsigned long long)st0.st_blocks * 512,
			 (unsigned long long)st1.st_blocks * 512);
	read_all(P("p.img"), 0, got);
	same(got, ma, "p.img emptied");
	check_ok(P("p.img"), false);
	/* read-only, raw: refused */
	h_open(&h, P("p.img"), COW_OPEN_RDONLY);
	assert_int_equal(cow_make_empty(h.img), -EROFS);
	h_close(&h);
	assert_int_equal(cow_open(P("a.raw"), &(struct cow_open_opts){ .fmt = COW_FMT_RAW }, &img,
				  err, COW_ERRLEN), 0);
	assert_int_equal(cow_make_empty(img), -ENOTSUP);
	cow_close(img);
}

/* ---- power loss -------------------------------------------------------------------------- */

static struct {
	bool returned;
	bool rebase;			/* cow_set_backing; else cow_make_empty */
	unsigned befores, afters;
	uint8_t view[SZ];		/* what the overlay shows throughout */
	uint8_t base[SZ];		/* make_empty: what the backing file shows */
} cr;

static void crash_verify(struct crashsim *cs, const char *what)
{
	struct cow_image *img;
	struct cow_info in;
	bool after;
	if (cow_open(cs->crash, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		     COW_ERRLEN))
		fail_msg("crash point %u (%s): open: %s", cs->points, what, err);
	cow_get_info(img, &in);
	if (cr.rebase) {
		if (!in.backing || (strcmp(in.backing, "a.raw") && strcmp(in.backing, "b.raw")))
			fail_msg("crash point %u (%s): backing file '%s'", cs->points, what,
				 in.backing ? in.backing : "");
		after = !strcmp(in.backing, "b.raw");
	} else {
		after = in.allocated_chunks == 0;
	}
	cow_close(img);
	check_ok(cs->crash, true);
	read_all(cs->crash, 0, got);
	if (cr.rebase) {
		/* the content never changes: with the new name, the copies are there too */
		if (memcmp(got, cr.view, SZ))
			same(got, cr.view, after ? "the new backing file without the copies" :
			     "the old backing file");
	} else {
		/* every chunk as before or empty: reading the backing file, never a mix */
		for (uint64_t c = 0; c < SZ / CS; c++)
			if (memcmp(got + c * CS, cr.view + c * CS, CS) &&
			    memcmp(got + c * CS, cr.base + c * CS, CS))
				fail_msg("crash point %u (%s): chunk %llu is neither as before nor "
					 "empty", cs->points, what, (unsigned long long)c);
	}
	if (cr.returned && !after)
		fail_msg("crash point %u (%s): the operation returned, the image is as before",
			 cs->points, what);
	cr.befores += !after;
	cr.afters += after;
}

static void crash_run(bool rebase)
{
	static struct crashsim cs;
	struct cs_be rb;
	struct h h;
	uint64_t run, phys;
	mk_raw(P("a.raw"), SZ, 0, cr.base);
	mk_raw(P("b.raw"), SZ, 0, mb);
	for (uint64_t c = 0; c < SZ / CS; c += 3)	/* b.raw differs from a.raw in every third */
		memset(mb + c * CS + 1000, 0x77, CS / 2);
	int fd = open(P("b.raw"), O_WRONLY);
	assert_int_equal(pwrite(fd, mb, SZ, 0), (ssize_t)SZ);
	close(fd);
	mk(P("cr.img"), "a.raw", COW_FMT_RAW);
	h_open(&h, P("cr.img"), 0);
	wr(&h, 0x31, 0, 2 * CS);
	wr(&h, 0x32, 4 * CS + 512, 3000);
	wr(&h, 0x33, 10 * CS + 4096, CS);
	assert_int_equal(cow_rw(h.ctx, COW_DISCARD, NULL, CS, 15 * CS, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_READ, cr.view, SZ, 0, 0), 0);
	/* closed and opened again: the mappings are in the table, the journal is empty (a
	 * crash cannot fall back on records of these writes) */
	h_close(&h);
	h_open(&h, P("cr.img"), 0);
	if (rebase) {
		/* what a safe rebase copies, left unflushed: the old content wherever the
		 * overlay has none and b.raw differs */
		for (uint64_t off = 0; off < SZ; off += run) {
			int st = cow_map(h.img, off, SZ - off, &run, &phys);
			assert_true(st > 0 && run > 0);
			if (st == COW_MAP_BACKING && memcmp(cr.view + off, mb + off, run))
				assert_int_equal(cow_rw(h.ctx, COW_WRITE, cr.view + off, run, off, 0), 0);
		}
	}
	cr.rebase = rebase;
	cr.returned = false;
	cr.befores = cr.afters = 0;
	cs_free(&cs);
	memset(&cs, 0, sizeof(cs));
	cs.rng = cs_seed(rebase ? "crash set_backing" : "crash make_empty");
	cs.subsets = 12;
	cs.verify = crash_verify;
	snprintf(cs.crash, sizeof(cs.crash), "%s", P("cr-crash.img"));
	cs_be_init(&rb, &cs, h.be);
	cow_ctx_free(h.ctx);
	assert_int_equal(cow_ctx_new(h.img, &rb.be, &h.ctx), 0);
	cs_attach(&cs, h.img);
	if (rebase)
		assert_int_equal(cow_set_backing(h.img, "b.raw", COW_FMT_RAW), 0);
	else
		assert_int_equal(cow_make_empty(h.img), 0);
	cr.returned = true;
	cs_crash_point(&cs);
	print_message("%u crash points, %u crash images (%u torn writes): %u before, %u after\n",
		      cs.points, cs.images, cs.torn, cr.befores, cr.afters);
	assert_true(cs.points > 2);
	assert_true(cr.befores > 0 && cr.afters > 0);
	h.img->tap = NULL;
	h_close(&h);
	cs_free(&cs);
}

static void test_crash_set_backing(void **state) { (void)state; crash_run(true); }
static void test_crash_make_empty(void **state) { (void)state; crash_run(false); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_backing),
		cmocka_unit_test(test_set_backing_confined),
		cmocka_unit_test(test_open_backing),
		cmocka_unit_test(test_nochain_rw),
		cmocka_unit_test(test_make_empty),
		cmocka_unit_test(test_crash_set_backing),
		cmocka_unit_test(test_crash_make_empty),
	};
	return UNIT_RUN(tests);
}
