/*
 * Underlays (under.c, format.md "Underlays"): the first write into a chunk the parent
 * snapshot shares writes only its own blocks (no copy: counted), the other blocks read
 * through the parent's chunk; partial blocks, write-zeroes and discards into such chunks;
 * replay after a power loss; the folds before a create, a delete of the parent and a resize,
 * none at the delete of another snapshot, apply dropping them; an entry whose writes cover its
 * underlay losing it; a base below both; cow_map; the feature bit on disk; hostile entries.
 * Every step is checked against a model of the disk and of each snapshot.
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

#include "internal.h"

#include "unit.h"

#define CH (64u << 10)		/* chunk */
#define NCH 64u
#define SZ (NCH * CH)

static uint8_t cur[SZ];

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

/* Power loss after the last flush: nothing more reaches the file (DIRTY stays set). */
static void h_crash(struct h *h)
{
	cow_ctx_free(h->ctx);
	cow_backend_free(h->be);
	img_abandon(h->img);
}

static void mk(const char *path, const char *backing)
{
	struct cow_create_opts o = { .size = SZ, .chunk_size = CH, .block_size = 4096,
				     .backing = backing, .backing_fmt = backing ? COW_FMT_RAW : 0 };
	unlink(path);
	memset(cur, 0, SZ);		/* the model of the new image */
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
}

/* len bytes at off: a pattern of its own (pat and the byte's offset), into the model too. */
static void wr(struct h *h, uint8_t pat, uint64_t off, uint64_t len)
{
	uint8_t *b = malloc(len);
	for (uint64_t i = 0; i < len; i++)
		b[i] = (uint8_t)(pat ^ ((off + i) * 7));
	assert_int_equal(cow_rw(h->ctx, COW_WRITE, b, len, off, 0), 0);
	memcpy(cur + off, b, len);
	free(b);
}

static void op0(struct h *h, int op, uint64_t off, uint64_t len)
{
	assert_int_equal(cow_rw(h->ctx, op, NULL, len, off, 0), 0);
	memset(cur + off, 0, len);
}

static void flush(struct h *h)
{
	assert_int_equal(cow_rw(h->ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
}

static void cmp(const uint8_t *got, const uint8_t *want, const char *what)
{
	if (memcmp(got, want, SZ)) {
		uint64_t k = 0;
		while (got[k] == want[k])
			k++;
		fail_msg("%s: mismatch at %llu (chunk %llu): %02x want %02x", what,
			 (unsigned long long)k, (unsigned long long)(k / CH), got[k], want[k]);
	}
}

/* The open image reads model; reads of one block and of whole chunks too. */
static void verify_h(struct h *h, const uint8_t *model, const char *what)
{
	static uint8_t b[SZ];
	assert_int_equal(cow_rw(h->ctx, COW_READ, b, SZ, 0, 0), 0);
	cmp(b, model, what);
	for (uint64_t off = 4096 * 5; off < SZ; off += CH + 4096 * 3) {
		assert_int_equal(cow_rw(h->ctx, COW_READ, b + off, 4096, off, 0), 0);
		assert_memory_equal(b + off, model + off, 4096);
	}
}

/* The file (or its snapshot snap) reads model. */
static void verify(const char *path, const char *snap, const uint8_t *model, const char *what)
{
	struct h h;
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY, .snapshot = snap },
		     &h.img, err, COW_ERRLEN))
		fail_msg("%s: open %s: %s", what, snap ? snap : "", err);
	assert_int_equal(cow_backend_new("sync", 16, &h.be), 0);
	assert_int_equal(cow_ctx_new(h.img, h.be, &h.ctx), 0);
	verify_h(&h, model, what);
	h_close(&h);
}

static void check_ok(const char *path)
{
	struct cow_image *img;
	struct cow_check_result cr;
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		     COW_ERRLEN))
		fail_msg("open for check: %s", err);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict)
		fail_msg("check verdict %d: %s", cr.verdict, cr.first_problem);
	cow_close(img);
}

static unsigned n_under(struct cow_image *img)
{
	unsigned n = 0;
	for (uint64_t c = 0; c < img->nr_chunks; c++)
		n += ucow_e_under(img->table[c]);
	return n;
}

static uint64_t incompat_on_disk(const char *path)
{
	struct h h;
	h_open(&h, path, COW_OPEN_RDONLY);
	uint64_t f = h.img->hdr.incompat;
	h_close(&h);
	return f;
}

/* Every chunk full, a snapshot, then one 4 KiB write per chunk: no chunk copied, 4 KiB of
 * data written per write, every entry UNDER; the disk and the snapshot read right, after a
 * clean close and after a power loss too. */
static void test_no_copy(void **state)
{
	static uint8_t snap[SZ];
	struct h h;
	struct cow_stats a, b;
	(void)state;
	mk(P("nc.img"), NULL);
	h_open(&h, P("nc.img"), 0);
	wr(&h, 0x11, 0, SZ);
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	memcpy(snap, cur, SZ);
	cow_get_stats(h.img, &a);
	for (unsigned c = 0; c < NCH; c++)
		wr(&h, 0x22, (uint64_t)c * CH + 8192, 4096);
	flush(&h);
	cow_get_stats(h.img, &b);
	assert_int_equal(b.cow_copies - a.cow_copies, 0);
	assert_int_equal(b.data_bytes_written - a.data_bytes_written, NCH * 4096ull);
	assert_int_equal(b.allocations - a.allocations, NCH);
	assert_int_equal(n_under(h.img), NCH);
	assert_int_equal(h.img->under_made, NCH);
	verify_h(&h, cur, "after the first writes");
	/* more writes into the same chunks: whole blocks, and blocks in part */
	for (unsigned c = 0; c < NCH; c += 3)
		wr(&h, 0x33, (uint64_t)c * CH + 4096 * 9, 8192);
	for (unsigned c = 1; c < NCH; c += 5)
		wr(&h, 0x44, (uint64_t)c * CH + 4096 * 12 + 100, 300);
	verify_h(&h, cur, "more writes");
	/* a chunk whose own blocks alternate with the underlay's: read in two I/Os (the
	 * underlay's over the whole part, the own span's), in whole and in part */
	for (unsigned k = 0; k < 16; k += 3)
		wr(&h, 0x45, CH * 7 + 4096 * k, 4096);
	static uint8_t got[CH];
	struct cow_stats r0, r1;
	cow_get_stats(h.img, &r0);
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, CH, CH * 7, 0), 0);
	cow_get_stats(h.img, &r1);
	assert_int_equal(r1.data_reads - r0.data_reads, 2);
	assert_memory_equal(got, cur + CH * 7, CH);
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, 40960 - 1536, CH * 7 + 1536, 0), 0);
	assert_memory_equal(got, cur + CH * 7 + 1536, 40960 - 1536);
	flush(&h);
	h_crash(&h);
	assert_true(incompat_on_disk(P("nc.img")) & UCOW_INCOMPAT_UNDERLAY);
	verify(P("nc.img"), NULL, cur, "replayed");
	verify(P("nc.img"), "s", snap, "snapshot after replay");
	h_open(&h, P("nc.img"), 0);
	assert_int_equal(n_under(h.img), NCH);
	h_close(&h);
	/* a clean close keeps them, and the bit that keeps older versions out */
	assert_true(incompat_on_disk(P("nc.img")) & UCOW_INCOMPAT_UNDERLAY);
	verify(P("nc.img"), NULL, cur, "reopened");
	verify(P("nc.img"), "s", snap, "snapshot");
	check_ok(P("nc.img"));
}

/* Partial blocks, write-zeroes and discards into chunks with and without an underlay. */
static void test_partial(void **state)
{
	static uint8_t snap[SZ];
	struct h h;
	(void)state;
	mk(P("pa.img"), NULL);
	h_open(&h, P("pa.img"), 0);
	for (unsigned c = 0; c < NCH; c++)	/* some blocks of each chunk */
		wr(&h, (uint8_t)c, (uint64_t)c * CH + (c % 4) * 4096, 4096 * (1 + c % 12));
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	memcpy(snap, cur, SZ);
	for (unsigned c = 0; c < NCH; c++) {
		uint64_t base = (uint64_t)c * CH;
		switch (c % 6) {
		case 0:		/* unaligned, inside one block (its rest from the underlay) */
			wr(&h, 0x51, base + (c % 4) * 4096 + 1000, 77);
			break;
		case 1:		/* unaligned over three blocks, then again in the same chunk */
			wr(&h, 0x52, base + 4096 + 3000, 9000);
			wr(&h, 0x53, base + 4096 * 2 + 5, 10);
			break;
		case 2:		/* write-zeroes of whole and partial blocks */
			op0(&h, COW_WRITE_ZEROES, base + 4096 + 512, 4096 * 3);
			break;
		case 3:		/* a discard of blocks, then a write into its neighbour */
			op0(&h, COW_DISCARD, base + 4096 * 2, 4096 * 2);
			wr(&h, 0x54, base + 4096 * 4 + 2048, 4096);
			break;
		case 4:		/* a block, then the whole chunk discarded */
			wr(&h, 0x55, base, 4096);
			op0(&h, COW_DISCARD, base, CH);
			break;
		default:	/* a block, then a partial discard into the underlay's blocks */
			wr(&h, 0x56, base + 4096 * 15, 4096);
			op0(&h, COW_DISCARD, base + 100, 4096 * 5);
			break;
		}
	}
	assert_true(n_under(h.img) > NCH / 2);
	verify_h(&h, cur, "partial");
	flush(&h);
	h_crash(&h);
	verify(P("pa.img"), NULL, cur, "partial, replayed");
	verify(P("pa.img"), "s", snap, "snapshot");
	check_ok(P("pa.img"));
}

/* Which operations fold (U3), and that the content survives each. */
static void test_fold(void **state)
{
	static uint8_t s1[SZ], s2[SZ], s3[SZ];
	struct h h;
	(void)state;
	mk(P("fo.img"), NULL);
	h_open(&h, P("fo.img"), 0);
	wr(&h, 0x10, 0, SZ);
	assert_int_equal(cow_snapshot_create(h.img, "s1"), 0);
	memcpy(s1, cur, SZ);
	for (unsigned c = 0; c < NCH; c += 2)
		wr(&h, 0x20, (uint64_t)c * CH + 4096 * (c % 16), 4096);
	assert_int_equal(n_under(h.img), NCH / 2);
	/* create: the new snapshot becomes the parent, so the underlays are folded first */
	uint64_t folded = h.img->under_folded;
	assert_int_equal(cow_snapshot_create(h.img, "s2"), 0);
	memcpy(s2, cur, SZ);
	assert_int_equal(n_under(h.img), 0);
	assert_int_equal(h.img->under_folded - folded, NCH / 2);
	verify_h(&h, cur, "after create");
	for (unsigned c = 1; c < NCH; c += 2)
		wr(&h, 0x30, (uint64_t)c * CH + 4096 * 3, 4096);
	assert_int_equal(n_under(h.img), NCH / 2);
	/* delete of another snapshot: the underlays stay */
	assert_int_equal(cow_snapshot_delete(h.img, "s1"), 0);
	assert_int_equal(n_under(h.img), NCH / 2);
	verify_h(&h, cur, "after delete of s1");
	h_close(&h);
	verify(P("fo.img"), NULL, cur, "reopened after delete of s1");
	verify(P("fo.img"), "s2", s2, "s2");
	check_ok(P("fo.img"));
	/* delete of the parent: folded */
	h_open(&h, P("fo.img"), 0);
	assert_int_equal(cow_snapshot_delete(h.img, "s2"), 0);
	assert_int_equal(n_under(h.img), 0);
	verify_h(&h, cur, "after delete of the parent");
	/* apply: the underlays go with the state they belong to */
	assert_int_equal(cow_snapshot_create(h.img, "s3"), 0);
	memcpy(s3, cur, SZ);
	for (unsigned c = 0; c < NCH; c += 3)
		wr(&h, 0x40, (uint64_t)c * CH + 4096, 4096 * 2);
	assert_true(n_under(h.img) > 0);
	assert_int_equal(cow_snapshot_apply(h.img, "s3"), 0);
	memcpy(cur, s3, SZ);
	assert_int_equal(n_under(h.img), 0);
	verify_h(&h, cur, "after apply");
	/* resize: folded before the table changes */
	for (unsigned c = 0; c < NCH; c += 4)
		wr(&h, 0x50, (uint64_t)c * CH + 4096 * 7, 4096);
	assert_true(n_under(h.img) > 0);
	assert_int_equal(cow_resize(h.img, SZ + 4 * CH, 0), 0);
	assert_int_equal(n_under(h.img), 0);
	assert_int_equal(cow_resize(h.img, SZ, COW_RESIZE_SHRINK), 0);
	verify_h(&h, cur, "after resize");
	assert_int_equal(cow_snapshot_delete(h.img, "s3"), 0);
	h_close(&h);
	/* no snapshot and no UNDER entry: the bit is gone, older versions open it */
	assert_false(incompat_on_disk(P("fo.img")) & UCOW_INCOMPAT_UNDERLAY);
	verify(P("fo.img"), NULL, cur, "at the end");
	check_ok(P("fo.img"));
}

/* More UNDER chunks than one fold batch (1024): every batch copied, published and
 * checkpointed, none left or mixed up. 2048 chunks of 64 KiB, two blocks each checked. */
static void test_fold_batches(void **state)
{
	const uint64_t n = 2048, size = n * CH;
	struct h h;
	uint8_t b[4096], want[4096];
	(void)state;
	struct cow_create_opts o = { .size = size, .chunk_size = CH, .block_size = 4096 };
	unlink(P("fb.img"));
	if (cow_create(P("fb.img"), &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
	h_open(&h, P("fb.img"), 0);
	for (uint64_t c = 0; c < n; c++) {
		memset(b, (int)(c * 3 + 1), sizeof(b));
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, b, 4096, c * CH, 0), 0);
	}
	assert_int_equal(cow_snapshot_create(h.img, "s1"), 0);
	for (uint64_t c = 0; c < n; c++) {
		memset(b, (int)(c * 5 + 2), sizeof(b));
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, b, 4096, c * CH + 4096 * 7, 0), 0);
	}
	assert_int_equal(n_under(h.img), n);
	uint64_t folded = h.img->under_folded;
	assert_int_equal(cow_snapshot_create(h.img, "s2"), 0);
	assert_int_equal(h.img->under_folded - folded, n);
	assert_int_equal(n_under(h.img), 0);
	h_close(&h);
	h_open(&h, P("fb.img"), COW_OPEN_RDONLY);
	for (uint64_t c = 0; c < n; c++) {
		assert_int_equal(cow_rw(h.ctx, COW_READ, b, 4096, c * CH, 0), 0);
		memset(want, (int)(c * 3 + 1), sizeof(want));
		assert_memory_equal(b, want, 4096);
		assert_int_equal(cow_rw(h.ctx, COW_READ, b, 4096, c * CH + 4096 * 7, 0), 0);
		memset(want, (int)(c * 5 + 2), sizeof(want));
		assert_memory_equal(b, want, 4096);
	}
	h_close(&h);
	check_ok(P("fb.img"));
}

/* cow_fold, the piecewise fold a server runs between guest requests: steps of 3 chunks from a
 * cursor, each step's records committed (a power loss after a step keeps its folds); writes
 * between steps (an underlay made behind the cursor moves cow_underlays_made, so a second
 * pass is due; a chunk folded and written again stays plain); a pass that ends with the
 * count unchanged has left none; an image without underlays, or read-only, ends at once. */
static void test_fold_steps(void **state)
{
	struct h h;
	uint64_t cursor = 0, made;
	bool done = false;
	int n, steps = 0, total = 0;
	uint8_t snap[SZ];
	(void)state;
	mk(P("fs.img"), NULL);
	h_open(&h, P("fs.img"), 0);
	assert_int_equal(cow_fold(h.img, &cursor, 4, &done), 0);	/* nothing yet */
	assert_true(done);
	assert_int_equal(cursor, 0);
	for (unsigned c = 0; c < NCH; c++)
		wr(&h, (uint8_t)(0x10 + c), (uint64_t)c * CH, CH);
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	memcpy(snap, cur, SZ);
	for (unsigned c = 0; c < 20; c++)	/* 20 underlays: chunks 0, 3, ..., 57 */
		wr(&h, (uint8_t)(0x80 + c), (uint64_t)c * 3 * CH + 4096 * (c % 16), 4096);
	assert_int_equal(n_under(h.img), 20);
	made = cow_underlays_made(h.img);
	assert_int_equal(made, 20);
	uint64_t p0 = h.img->table[0] & UCOW_E_PCN_MASK;
	n = cow_fold(h.img, &cursor, 3, &done);
	assert_int_equal(n, 3);
	/* chunk 0 now lives in a new chunk written whole: one extent, no hole in it */
	uint64_t p1 = h.img->table[0] & UCOW_E_PCN_MASK;
	assert_true(p1 && p1 != p0);
	assert_true(lseek(h.img->fd, (off_t)(p1 * CH), SEEK_HOLE) >= (off_t)((p1 + 1) * CH));
	assert_false(done);
	assert_int_equal(cursor, 2 * 3 + 1);	/* past chunk 6, the third */
	assert_int_equal(n_under(h.img), 17);
	verify_h(&h, cur, "after a step");
	/* the step's records are durable: a power loss now keeps its three folds */
	h_crash(&h);
	h_open(&h, P("fs.img"), 0);
	assert_int_equal(n_under(h.img), 17);
	for (unsigned c = 0; c < 3; c++)
		assert_false(ucow_e_under(h.img->table[c * 3]));
	verify_h(&h, cur, "a step, a power loss");
	made = cow_underlays_made(h.img);		/* 0 after the open */
	for (steps = 0, total = 0; !done || !steps; steps++) {
		n = cow_fold(h.img, &cursor, 3, &done);
		assert_true(n >= 0 && n <= 3);
		total += n;
		if (steps == 1) {
			/* behind the cursor: chunk 1 (shared, so a new underlay) and chunk 0
			 * (folded already: a plain write) */
			wr(&h, 0xe1, CH + 4096, 4096);
			wr(&h, 0xe0, 4096 * 9, 4096);
		}
		assert_true(steps < 10);
	}
	assert_int_equal(total, 17);
	assert_int_equal(cursor, 0);
	assert_int_equal(cow_underlays_made(h.img), made + 1);	/* a pass more is due */
	assert_int_equal(n_under(h.img), 1);
	assert_true(ucow_e_under(h.img->table[1]));
	made = cow_underlays_made(h.img);
	assert_int_equal(cow_fold(h.img, &cursor, 0, &done), 1);
	assert_true(done);
	assert_int_equal(cow_underlays_made(h.img), made);	/* none left */
	assert_int_equal(n_under(h.img), 0);
	verify_h(&h, cur, "after the passes");
	assert_int_equal(cow_fold(h.img, &cursor, 3, &done), 0);
	assert_true(done);
	h_close(&h);
	verify(P("fs.img"), NULL, cur, "folded, reopened");
	verify(P("fs.img"), "s", snap, "the snapshot, after the folds");
	check_ok(P("fs.img"));
	/* read-only: nothing to do */
	h_open(&h, P("fs.img"), COW_OPEN_RDONLY);
	cursor = 5;
	assert_int_equal(cow_fold(h.img, &cursor, 3, &done), 0);
	assert_true(done);
	assert_int_equal(cursor, 0);
	h_close(&h);
}

/* A chunk written over whole in whole blocks (writes that only set bits keep UNDER) folds
 * where it is: no new chunk, nothing copied. */
static void test_fold_covered(void **state)
{
	struct h h;
	uint64_t cursor = 0;
	bool done;
	(void)state;
	mk(P("fc.img"), NULL);
	h_open(&h, P("fc.img"), 0);
	wr(&h, 0x31, 0, CH);
	wr(&h, 0x32, CH, CH);
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	wr(&h, 0x33, 0, 4096);			/* chunk 0: an underlay */
	wr(&h, 0x34, 4096, CH - 4096);		/* the rest, whole blocks */
	wr(&h, 0x35, CH, 4096);			/* chunk 1: an underlay, 4 KiB of its own */
	uint64_t p0 = h.img->table[0] & UCOW_E_PCN_MASK, p1 = h.img->table[1] & UCOW_E_PCN_MASK;
	assert_true(ucow_e_under(h.img->table[1]));
	assert_true(ucow_e_under(h.img->table[0]));	/* bits set, UNDER kept */
	assert_int_equal(cow_fold(h.img, &cursor, 0, &done), 2);
	assert_true(done);
	assert_int_equal(n_under(h.img), 0);
	assert_int_equal(h.img->table[0] & UCOW_E_PCN_MASK, p0);	/* in place */
	assert_true((h.img->table[1] & UCOW_E_PCN_MASK) != p1);	/* moved */
	verify_h(&h, cur, "folded");
	h_close(&h);
	verify(P("fc.img"), NULL, cur, "folded, reopened");
	check_ok(P("fc.img"));
}

/* 512-byte blocks: the fold reads the own chunk's runs widened to 4 KiB (O_DIRECT) and takes
 * only the own blocks from them; the underlay's blocks around them (and the chunk's last
 * block) come through right, on the folded image and in the snapshot. */
static void test_fold_small_blocks(void **state)
{
	static uint8_t s[SZ];
	struct cow_create_opts o = { .size = SZ, .chunk_size = CH, .block_size = 512 };
	struct h h;
	uint64_t cursor = 0;
	bool done;
	(void)state;
	unlink(P("fs.img"));
	memset(cur, 0, SZ);
	if (cow_create(P("fs.img"), &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
	h_open(&h, P("fs.img"), 0);
	wr(&h, 0x61, 0, SZ);
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	memcpy(s, cur, SZ);
	for (unsigned c = 0; c < NCH; c++) {
		uint64_t base = (uint64_t)c * CH;
		wr(&h, 0x62, base + 512 * (1 + c % 7), 512);	/* inside a 4 KiB page */
		wr(&h, 0x63, base + 4096 + 512 * (c % 3), 512);
		wr(&h, 0x64, base + 3 * 4096 - 512, 1024);	/* across a page boundary */
		wr(&h, 0x65, base + CH - 512, 512);		/* the chunk's last block */
	}
	assert_int_equal(n_under(h.img), NCH);
	assert_int_equal(cow_fold(h.img, &cursor, 0, &done), NCH);
	assert_true(done);
	assert_int_equal(n_under(h.img), 0);
	verify_h(&h, cur, "folded");
	h_close(&h);
	verify(P("fs.img"), NULL, cur, "folded, reopened");
	verify(P("fs.img"), "s", s, "the snapshot");
	check_ok(P("fs.img"));
}

/* Writes that cover every block the underlay holds leave a plain entry. */
static void test_covered(void **state)
{
	struct h h;
	(void)state;
	mk(P("cv.img"), NULL);
	h_open(&h, P("cv.img"), 0);
	wr(&h, 0x61, 0, 4096 * 6);		/* chunk 0: blocks 0-5 */
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	wr(&h, 0x62, 4096 * 2, 4096);
	assert_true(ucow_e_under(h.img->table[0]));
	wr(&h, 0x63, 0, 4096 * 2);
	assert_true(ucow_e_under(h.img->table[0]));
	wr(&h, 0x64, 4096 * 3 + 10, 4096 * 3 - 10);	/* the rest (block 3 in part) */
	assert_false(ucow_e_under(h.img->table[0]));
	verify_h(&h, cur, "covered");
	h_close(&h);
	verify(P("cv.img"), NULL, cur, "covered, reopened");
	check_ok(P("cv.img"));
}

/* An overlay: blocks neither the chunk nor its underlay holds come from the base; cow_map
 * says where each block lies. */
static void test_base(void **state)
{
	static uint8_t base[SZ];
	struct h h;
	uint64_t run, phys;
	(void)state;
	for (uint64_t i = 0; i < SZ; i++)
		base[i] = (uint8_t)(i * 13 + 5);
	int fd = open(P("base.raw"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, base, SZ), (ssize_t)SZ);
	close(fd);
	mk(P("ov.img"), P("base.raw"));
	memcpy(cur, base, SZ);
	h_open(&h, P("ov.img"), 0);
	wr(&h, 0x71, CH * 2 + 4096, 4096 * 2);		/* chunk 2: blocks 1, 2 */
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	wr(&h, 0x72, CH * 2 + 4096 * 5, 4096);		/* block 5: UNDER */
	assert_true(ucow_e_under(h.img->table[2]));
	verify_h(&h, cur, "overlay");
	uint64_t p = ent_pcn(h.img, h.img->table[2]), u = under_pcn(h.img, 2);
	assert_int_equal(cow_map(h.img, CH * 2, CH, &run, &phys), COW_MAP_BACKING);
	assert_int_equal(run, 4096);
	assert_int_equal(cow_map(h.img, CH * 2 + 4096, CH, &run, &phys), COW_MAP_DATA);
	assert_int_equal(run, 8192);
	assert_int_equal(phys, u * CH + 4096);
	assert_int_equal(cow_map(h.img, CH * 2 + 4096 * 5, CH, &run, &phys), COW_MAP_DATA);
	assert_int_equal(run, 4096);
	assert_int_equal(phys, p * CH + 4096 * 5);
	assert_int_equal(cow_map(h.img, CH * 2 + 4096 * 6, CH - 4096 * 6, &run, &phys),
			 COW_MAP_BACKING);
	h_close(&h);
	verify(P("ov.img"), NULL, cur, "overlay, reopened");
	check_ok(P("ov.img"));
}

/* Patch byte-exact values into a closed image's table entry. */
static void patch_entry(const char *path, uint64_t c, uint64_t e)
{
	struct h h;
	h_open(&h, path, COW_OPEN_RDONLY);
	uint64_t off = h.img->hdr.table_offset + c * 8;
	h_close(&h);
	uint8_t le[8];
	put_le64(le, e);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, le, 8, (off_t)off), 8);
	close(fd);
}

/* UNDER entries that do not hold: refused as corrupt at open, counted by check. */
static void test_hostile(void **state)
{
	struct h h;
	struct cow_image *img;
	struct cow_check_result cr;
	(void)state;
	mk(P("ho.img"), NULL);
	h_open(&h, P("ho.img"), 0);
	wr(&h, 0x81, 0, CH * 4);
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	wr(&h, 0x82, 4096, 4096);			/* chunk 0: UNDER */
	wr(&h, 0x83, CH * 10, 4096);			/* chunk 10: plain, new */
	uint64_t e0 = h.img->table[0], e1 = h.img->table[1] & ~UCOW_E_SHARED;
	(void)e0;
	uint64_t e10 = h.img->table[10], u0 = under_pcn(h.img, 0);
	assert_true(ucow_e_under(e0));
	h_close(&h);
	const struct { uint64_t c, e; const char *why; } bad[] = {
		{ 10, e10 | UCOW_E_UNDER, "maps no plain chunk there" },	/* parent: none */
		{ 1, e1 | UCOW_E_UNDER, "over its own chunk" },
		{ 1, UCOW_E_UNDER | u0, "snapshot references" },	/* chunk 0's underlay */
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char name[32];
		snprintf(name, sizeof(name), "ho%u.img", i);
		char cmd[1200];
		snprintf(cmd, sizeof(cmd), "cp %s %s", P("ho.img"), P(name));
		assert_int_equal(system(cmd), 0);
		patch_entry(P(name), bad[i].c, bad[i].e);
		assert_int_equal(cow_open(P(name), &(struct cow_open_opts){
				 .flags = COW_OPEN_RDONLY }, &img, err, COW_ERRLEN), -EUCLEAN);
		if (!strstr(err, bad[i].why))
			fail_msg("case %u: '%s' does not say '%s'", i, err, bad[i].why);
		assert_int_equal(cow_open(P(name), &(struct cow_open_opts){
				 .flags = COW_OPEN_RDONLY | COW_OPEN_CHECK }, &img, err,
				 COW_ERRLEN), 0);
		assert_int_equal(cow_check(img, &cr), 0);
		assert_true(cr.corruptions > 0);
		cow_close(img);
	}
	/* and no UNDER entry in a frozen table: the snapshot's first entry made UNDER */
	check_ok(P("ho.img"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_copy),
		cmocka_unit_test(test_partial),
		cmocka_unit_test(test_fold),
		cmocka_unit_test(test_fold_batches),
		cmocka_unit_test(test_fold_steps),
		cmocka_unit_test(test_fold_covered),
		cmocka_unit_test(test_fold_small_blocks),
		cmocka_unit_test(test_covered),
		cmocka_unit_test(test_base),
		cmocka_unit_test(test_hostile),
	};
	return UNIT_RUN(tests);
}
