/*
 * Compressed chunks (cowcore/compress.c): what cow_put_compressed stores reads back, with
 * partial bitmaps over a backing image, through the cache (a chunk read in pieces inflates
 * once), after a reopen; random writes, discards and write-zeroes over compressed chunks
 * against a model, snapshots across them (created, viewed, applied, deleted), the packs'
 * space given back once nothing maps them, and a clean check; hostile entries (no feature
 * bit, a stream across a chunk boundary, overlapping streams, a stream that does not
 * inflate) refused as corruption; two threads reading compressed chunks at once while the
 * inflate pool works for both (also under TSan).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

#define CS (64u << 10)
#define BS 4096u
#define BPC (CS / BS)
#define VSIZE (4u << 20)
#define NCH (VSIZE / CS)

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return rs;
}

static void h_open(struct h *h, const char *path, unsigned flags, const char *snap)
{
	if (cow_open(path, &(struct cow_open_opts){ .flags = flags, .snapshot = snap }, &h->img,
		     err, COW_ERRLEN))
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

static void mk(const char *path, const char *backing)
{
	struct cow_create_opts o = { .size = VSIZE, .chunk_size = CS, .block_size = BS,
				     .backing = backing, .backing_fmt = backing ? COW_FMT_RAW : 0 };
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
}

/* Compressible content: runs of a byte, varied per 512 bytes. */
static void content(uint8_t *b, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i += 512)
		memset(b + i, (uint8_t)(seed + i / 512 * 7), 512);
}

/* Put chunk c as compressed content(seed) with bitmap bm into the image and the model. */
static void put(struct h *h, uint8_t *model, uint64_t c, uint8_t seed, uint64_t bm)
{
	static uint8_t chunk[CS], z[CS];
	uint32_t zn;
	uint64_t w[16] = { bm };
	content(chunk, CS, seed);
	assert_int_equal(cow_compress_chunk(chunk, CS, 6, z, CS - BS, &zn), 0);
	assert_int_equal(cow_put_compressed(h->img, c, z, zn, w), 0);
	for (unsigned b = 0; b < BPC; b++)
		if ((bm >> b) & 1)
			memcpy(model + c * CS + b * BS, chunk + b * BS, BS);
}

static void verify(struct h *h, const uint8_t *model, const char *what)
{
	static uint8_t got[VSIZE];
	uint64_t off = 0;
	while (off < VSIZE) {	/* pieces of random sizes, across chunks */
		uint64_t n = (1 + rnd() % 40) * 4096;
		if (n > VSIZE - off)
			n = VSIZE - off;
		assert_int_equal(cow_rw(h->ctx, COW_READ, got + off, n, off, 0), 0);
		off += n;
	}
	for (uint64_t i = 0; i < VSIZE; i += 512)
		if (memcmp(got + i, model + i, 512))
			fail_msg("%s: byte %llu differs (got %02x, want %02x)", what,
				 (unsigned long long)i, got[i], model[i]);
}

static void check_clean(const char *path)
{
	struct h h;
	struct cow_check_result cr;
	h_open(&h, path, COW_OPEN_RDONLY, NULL);
	assert_int_equal(cow_check(h.img, &cr), 0);
	if (cr.verdict)
		fail_msg("check %s: verdict %d: %s", path, cr.verdict, cr.first_problem);
	h_close(&h);
}

static void test_roundtrip(void **state)
{
	(void)state;
	static uint8_t model[VSIZE], base[VSIZE];
	struct h h;
	struct cow_compress_info ci;
	int fd;

	content(base, VSIZE, 0x5a);
	fd = open(P("base.raw"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, base, VSIZE, 0), VSIZE);
	close(fd);
	mk(P("rt.img"), "base.raw");
	memcpy(model, base, VSIZE);
	h_open(&h, P("rt.img"), 0, NULL);
	for (uint64_t c = 0; c < NCH; c++) {
		uint64_t bm = c % 4 == 0 ? 0xffff : c % 4 == 1 ? rnd() & 0xffff : c % 4 == 2 ? 1 : 0;
		if (c % 8 != 7)
			put(&h, model, c, (uint8_t)c, bm);
	}
	/* a chunk that holds data is refused */
	{
		uint8_t z[8] = { 3, 0 };
		uint64_t bm[16] = { 1 };
		assert_int_equal(cow_put_compressed(h.img, 0, z, 2, bm), -EEXIST);
	}
	cow_get_compress_info(h.img, &ci);
	assert_int_equal(ci.chunks, NCH - NCH / 8);
	assert_true(ci.stored_bytes > 0 && ci.stored_bytes < ci.chunks * CS / 4);
	verify(&h, model, "after put");
	/* chunk 4 (all blocks set) read in 16 pieces: one inflate, 15 cache hits at least */
	cow_get_compress_info(h.img, &ci);
	uint64_t inf0 = ci.inflates, hits0 = ci.cache_hits;
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	comp_cache_clear(h.img);
	for (unsigned b = 0; b < BPC; b++) {
		uint8_t blk[BS];
		assert_int_equal(cow_rw(h.ctx, COW_READ, blk, BS, 4 * CS + b * BS, 0), 0);
		assert_memory_equal(blk, model + 4 * CS + b * BS, BS);
	}
	cow_get_compress_info(h.img, &ci);
	assert_int_equal(ci.inflates - inf0, 1);
	assert_true(ci.cache_hits - hits0 >= BPC - 1);
	h_close(&h);
	check_clean(P("rt.img"));
	h_open(&h, P("rt.img"), COW_OPEN_RDONLY, NULL);
	verify(&h, model, "after reopen");
	/* map: compressed data has no offset in the file to give */
	struct cow_extent x;
	assert_int_equal(cow_map_extent(h.img, 0, CS, &x), 0);
	assert_int_equal(x.status, COW_MAP_DATA);
	assert_true(x.compressed && !x.offset_valid);
	h_close(&h);
}

static void test_writes_snapshots(void **state)
{
	(void)state;
	static uint8_t model[VSIZE], snap_a[VSIZE], buf[256 << 10];
	struct h h;
	struct stat st0, st1;

	memset(model, 0, VSIZE);
	mk(P("ws.img"), NULL);
	h_open(&h, P("ws.img"), 0, NULL);
	for (uint64_t c = 0; c < NCH; c++)
		put(&h, model, c, (uint8_t)(c * 3), c % 3 ? 0xffff : 0x0ff0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	assert_int_equal(cow_snapshot_create(h.img, "a"), 0);
	memcpy(snap_a, model, VSIZE);
	for (int i = 0; i < 300; i++) {
		uint64_t off = (rnd() % (VSIZE / 512)) * 512, len = (1 + rnd() % 256) * 512;
		uint64_t x = rnd() % 10;
		if (off + len > VSIZE)
			len = VSIZE - off;
		if (x < 7) {
			for (uint64_t k = 0; k < len; k++)
				buf[k] = (uint8_t)(rnd() >> 13);
			assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, len, off, 0), 0);
			memcpy(model + off, buf, len);
		} else {
			assert_int_equal(cow_rw(h.ctx, x < 9 ? COW_DISCARD : COW_WRITE_ZEROES, NULL,
						len, off, 0), 0);
			memset(model + off, 0, len);
		}
		if (i == 150)
			assert_int_equal(cow_snapshot_create(h.img, "b"), 0);
	}
	verify(&h, model, "after writes");
	h_close(&h);
	check_clean(P("ws.img"));
	/* the snapshot still reads the compressed chunks */
	h_open(&h, P("ws.img"), COW_OPEN_RDONLY, "a");
	verify(&h, snap_a, "snapshot a");
	h_close(&h);
	/* delete b, apply a, delete a: the packs go once nothing maps them */
	h_open(&h, P("ws.img"), 0, NULL);
	assert_int_equal(cow_snapshot_delete(h.img, "b"), 0);
	assert_int_equal(cow_snapshot_apply(h.img, "a"), 0);
	verify(&h, snap_a, "after apply");
	h_close(&h);
	check_clean(P("ws.img"));
	assert_int_equal(stat(P("ws.img"), &st0), 0);
	h_open(&h, P("ws.img"), 0, NULL);
	/* every chunk written over in full while snapshot a holds the packs; deleting a frees
	 * them, and new chunks (discarded, then written again) may reuse them: a clean close
	 * must not take them for dead packs */
	memset(buf, 0x77, CS);
	for (uint64_t c = 0; c < NCH; c++) {
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, CS, c * CS, 0), 0);
		memcpy(snap_a + c * CS, buf, CS);
	}
	/* discarded chunks join the free list first, the freed packs after them: the writes
	 * below (last freed, first taken) get the packs */
	assert_int_equal(cow_rw(h.ctx, COW_DISCARD, NULL, 16 * CS, 0, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	assert_int_equal(cow_snapshot_delete(h.img, "a"), 0);
	assert_int_equal(cow_reclaim(h.img, 0), 0);
	for (uint64_t c = 0; c < 16; c++) {
		memset(buf, (int)(0x30 + c), CS);
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, CS, c * CS, 0), 0);
		memcpy(snap_a + c * CS, buf, CS);
	}
	struct cow_compress_info ci;
	cow_get_compress_info(h.img, &ci);
	assert_int_equal(ci.chunks, 0);
	h_close(&h);
	check_clean(P("ws.img"));
	assert_int_equal(stat(P("ws.img"), &st1), 0);
	/* 64 plain chunks now; the packs (a few chunks) punched: no more than that plus metadata */
	assert_true((uint64_t)st1.st_blocks * 512 <= (uint64_t)NCH * CS + (1u << 20));
	h_open(&h, P("ws.img"), COW_OPEN_RDONLY, NULL);
	verify(&h, snap_a, "after the last delete");
	h_close(&h);
}

static struct ucow_hdr hd;	/* the header of the image set_entry changes (get_hdr) */

static void get_hdr(const char *path)
{
	struct h h;
	h_open(&h, path, COW_OPEN_RDONLY, NULL);
	hd = h.img->hdr;
	h_close(&h);
}

/* Write entry e for chunk c into the table on disk (the image closed); without feature,
 * both header slots lose the COMPRESSED bit. */
static void set_entry(const char *path, uint64_t c, uint64_t e, bool feature)
{
	uint8_t b[8];
	uint64_t toff = hd.table_offset;
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	put_le64(b, e);
	assert_int_equal(pwrite(fd, b, 8, (off_t)(toff + c * 8)), 8);
	if (!feature && (hd.incompat & UCOW_INCOMPAT_COMPRESSED)) {
		uint8_t slot[UCOW_HDR_SIZE];
		hd.incompat &= ~UCOW_INCOMPAT_COMPRESSED;
		hd.generation++;
		ucow_hdr_encode(&hd, slot);
		assert_int_equal(pwrite(fd, slot, UCOW_HDR_SIZE, 0), UCOW_HDR_SIZE);
		assert_int_equal(pwrite(fd, slot, UCOW_HDR_SIZE, UCOW_HDR_SIZE), UCOW_HDR_SIZE);
	}
	close(fd);
}

static uint64_t entry_of(const char *path, uint64_t c)
{
	struct h h;
	h_open(&h, path, COW_OPEN_RDONLY, NULL);
	uint64_t e = h.img->table[c] & ~UCOW_E_SHARED;
	h_close(&h);
	return e;
}

static void expect_corrupt_open(const char *path, const char *want)
{
	struct cow_image *img = NULL;
	int r = cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
			 COW_ERRLEN);
	if (r != -EUCLEAN)
		fail_msg("%s: open gave %d, want -EUCLEAN (%s)", path, r, err);
	if (!strstr(err, want))
		fail_msg("%s: '%s' does not say '%s'", path, err, want);
}

static void test_hostile(void **state)
{
	(void)state;
	static uint8_t model[VSIZE];
	const char *path = P("ho.img");
	struct h h;
	uint8_t blk[BS];

	mk(path, NULL);
	h_open(&h, path, 0, NULL);
	put(&h, model, 0, 1, 0xffff);
	put(&h, model, 1, 2, 0xffff);
	h_close(&h);
	uint64_t e0 = entry_of(path, 0), e1 = entry_of(path, 1);
	get_hdr(path);
	assert_true((e0 & UCOW_E_COMPRESSED) && (e1 & UCOW_E_COMPRESSED));

	/* a compressed entry in an image without the feature bit */
	set_entry(path, 0, e0, false);
	expect_corrupt_open(path, "not a valid compressed entry");
	/* the rest on a fresh image (with the bit) */
	mk(path, NULL);
	h_open(&h, path, 0, NULL);
	put(&h, model, 0, 1, 0xffff);
	put(&h, model, 1, 2, 0xffff);
	h_close(&h);
	e0 = entry_of(path, 0);
	e1 = entry_of(path, 1);
	get_hdr(path);

	/* a stream that runs past its chunk's end */
	uint64_t pack_end = ((ucow_e_coff(e0) / CS) + 1) * CS;
	set_entry(path, 2, ucow_e_compressed(pack_end - 512, 1024), true);
	expect_corrupt_open(path, "not a valid compressed entry");
	set_entry(path, 2, 0, true);
	/* two streams overlapping */
	set_entry(path, 2, ucow_e_compressed(ucow_e_coff(e0), ucow_e_clen(e0) + 512), true);
	expect_corrupt_open(path, "overlapping compressed chunks");
	/* a normal entry on a pack */
	set_entry(path, 2, ucow_e_coff(e0) / CS, true);
	expect_corrupt_open(path, "mapped twice");
	set_entry(path, 2, 0, true);
	/* reserved bits in a compressed entry */
	set_entry(path, 1, e1 | (1ull << 62), true);
	expect_corrupt_open(path, "not a valid compressed entry");
	set_entry(path, 1, e1, true);
	check_clean(path);

	/* a stream that does not inflate: its reads fail as corruption, check says so */
	{
		int fd = open(path, O_RDWR);
		uint8_t junk[512];
		memset(junk, 0xa5, sizeof(junk));
		assert_int_equal(pwrite(fd, junk, 512, (off_t)ucow_e_coff(e1)), 512);
		close(fd);
	}
	h_open(&h, path, COW_OPEN_RDONLY, NULL);
	struct cow_check_result cr;
	assert_int_equal(cow_check(h.img, &cr), 0);
	assert_int_equal(cr.verdict, 2);
	assert_non_null(strstr(cr.first_problem, "does not inflate"));
	assert_int_equal(cow_rw(h.ctx, COW_READ, blk, BS, CS, 0), -EUCLEAN);
	assert_int_equal(cow_rw(h.ctx, COW_READ, blk, BS, 0, 0), 0);	/* chunk 0 is fine */
	assert_memory_equal(blk, model, BS);
	h_close(&h);
	/* a shrink that rebuilds that chunk (under the image lock) fails as corruption too,
	 * on a copy: the image turns read-only (it once deadlocked on the lock it held) */
	{
		const char *cp = P("ho2.img");
		char cmd[512];
		snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", path, cp);
		assert_int_equal(system(cmd), 0);
		h_open(&h, cp, 0, NULL);
		assert_int_equal(cow_resize(h.img, CS + 1024, COW_RESIZE_SHRINK), -EUCLEAN);
		if (!strstr(cow_errmsg(h.img), "does not inflate"))
			fail_msg("resize: %s", cow_errmsg(h.img));
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, blk, 512, 2 * CS, 0), -EROFS);
		h_close(&h);
	}
	/* read-write: a write into it fails as well and the image turns read-only */
	h_open(&h, path, 0, NULL);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, blk, 512, CS + 512, 0), -EUCLEAN);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, blk, 512, 2 * CS, 0), -EROFS);
	h_close(&h);
}

/* Two threads, each with its own context (and io_uring) on one image, read compressed
 * chunks at random while the pool inflates for both; every read is checked. */
struct rd_arg {
	struct cow_image *img;
	const uint8_t *model;
	unsigned seed;
	int bad;
};

static void *reader(void *p)
{
	struct rd_arg *a = p;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	static __thread uint8_t buf[3 * CS];
	uint64_t x = a->seed;
	if (cow_backend_new("uring", 16, &be) || cow_ctx_new(a->img, be, &ctx)) {
		a->bad = -1;
		return NULL;
	}
	for (int i = 0; i < 300 && !a->bad; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t off = (x % (VSIZE / 512)) * 512, len = (1 + (x >> 40) % (3 * CS / 512)) * 512;
		if (off + len > VSIZE)
			len = VSIZE - off;
		if (i % 50 == 0)
			comp_cache_clear(a->img);	/* inflate again now and then */
		if (cow_rw(ctx, COW_READ, buf, len, off, 0) || memcmp(buf, a->model + off, len))
			a->bad = i + 1;
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	static uint8_t model[VSIZE];
	struct h h;
	pthread_t t[2];
	struct rd_arg a[2];
	mk(P("th.img"), NULL);
	memset(model, 0, VSIZE);
	h_open(&h, P("th.img"), 0, NULL);
	for (uint64_t c = 0; c < NCH; c++)
		put(&h, model, c, (uint8_t)(c * 5 + 1), c % 5 ? 0xffff : 0xf0f0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	for (int i = 0; i < 2; i++) {
		a[i] = (struct rd_arg){ h.img, model, 7u + (unsigned)i * 1000, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, reader, &a[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		if (a[i].bad)
			fail_msg("reader %d: read %d wrong", i, a[i].bad);
	}
	struct cow_compress_info ci;
	cow_get_compress_info(h.img, &ci);
	assert_true(ci.inflates > 0);
	h_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_writes_snapshots),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_threads),
	};
	return UNIT_RUN(tests);
}
