/*
 * Hostile journals: an image left dirty after a flush has its journal replayed at the next
 * open; a journal block whose checksum is right but whose records are not must be refused
 * as corruption (by open and by cow_check), never applied. Each case plants one bad value
 * into a real journal written by the engine and fixes the block checksum up. And a FUA
 * write's mapping is in the journal when the write completes. And the ring (journal.c J6,
 * J7): a process that dies after any number of flushes, with checkpoints in steps moving
 * the journal's start round the ring, leaves an image whose every flushed write replays;
 * a journal in an older version's layout replays and is started again at a multiple of the
 * block count; a clean close leaves no JRING bit. And writes never flushed are committed
 * once enough of them wait (memory stays bounded).
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

/* A fresh 4 MiB image (64 KiB chunks, 4 KiB blocks; journal 0: the default), open
 * read-write with a context on the sync backend. */
static void fresh_image(const char *path, uint32_t journal, struct cow_image **img,
			struct cow_backend **be, struct cow_ctx **ctx)
{
	struct cow_create_opts o = { .size = 4 << 20, .chunk_size = 64 << 10, .block_size = 4096,
				     .journal_size = journal };
	unlink(path);
	if (cow_create(path, &o, err, sizeof(err)))
		fail_msg("create: %s", err);
	if (cow_open(path, NULL, img, err, sizeof(err)))
		fail_msg("open: %s", err);
	assert_int_equal(cow_backend_new("sync", 8, be), 0);
	assert_int_equal(cow_ctx_new(*img, *be, ctx), 0);
}

/* A 4 MiB image with one flushed write whose record is still only in the journal (the
 * process "crashed": the image is dropped without a checkpoint). Returns the header. */
static struct ucow_hdr dirty_image(const char *path)
{
	struct cow_backend *be;
	struct cow_image *img;
	struct cow_ctx *ctx;
	struct ucow_hdr h;
	char buf[4096];

	fresh_image(path, 0, &img, &be, &ctx);
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(cow_rw(ctx, COW_WRITE, buf, sizeof(buf), 128 << 10, 0), 0);
	assert_int_equal(cow_rw(ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	h = img->hdr;
	cow_ctx_free(ctx);
	cow_backend_free(be);
	img_abandon(img);
	assert_true(h.flags & UCOW_FLAG_DIRTY);
	return h;
}

/* Rewrite journal block 0 through fn, with a correct checksum. */
static void patch_block0(const char *path, const struct ucow_hdr *h, void (*fn)(uint8_t *blk))
{
	uint8_t blk[UCOW_JBLOCK];
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, blk, sizeof(blk), (off_t)h->journal_offset), sizeof(blk));
	assert_int_equal(get_le32(blk), UCOW_JMAGIC);	/* the flush did write a block */
	assert_true(get_le32(blk + 16) >= 1);
	fn(blk);
	memset(blk + 4, 0, 4);
	put_le32(blk + 4, ucow_crc32c(0, blk, UCOW_JBLOCK));
	assert_int_equal(pwrite(fd, blk, sizeof(blk), (off_t)h->journal_offset), sizeof(blk));
	close(fd);
}

static void rec_reserved_bit(uint8_t *blk)
{
	put_le64(blk + UCOW_JHDR + 16, get_le64(blk + UCOW_JHDR + 16) | (1ull << 50));
}

static void rec_busy_bit(uint8_t *blk)
{
	put_le64(blk + UCOW_JHDR + 16, get_le64(blk + UCOW_JHDR + 16) | UCOW_E_BUSY);
}

static void rec_chunk_past_table(uint8_t *blk)
{
	put_le64(blk + UCOW_JHDR + 8, 1ull << 40);
}

static void rec_bad_type(uint8_t *blk)
{
	put_le16(blk + UCOW_JHDR, 7);
}

static void rec_bad_count(uint8_t *blk)
{
	put_le32(blk + 16, get_le32(blk + 16) + 1);
}

/* The open must fail with -EUCLEAN naming the problem; check must count it. */
static void expect_refused(void (*fn)(uint8_t *), const char *why)
{
	struct cow_check_result cr;
	struct cow_image *img = NULL;
	struct ucow_hdr h = dirty_image(P("j.img"));
	int r;

	/* unpatched, the image opens and replays (the case is about the patch alone) */
	r = cow_open(P("j.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		     sizeof(err));
	assert_int_equal(r, 0);
	cow_close(img);

	patch_block0(P("j.img"), &h, fn);
	r = cow_open(P("j.img"), NULL, &img, err, sizeof(err));
	if (r != -EUCLEAN || !strstr(err, why))
		fail_msg("open of a journal with %s: %d '%s'", why, r, err);
	r = cow_open(P("j.img"), &(struct cow_open_opts){ .flags = COW_OPEN_CHECK }, &img, err,
		     sizeof(err));
	assert_int_equal(r, 0);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict != 2 || !cr.corruptions)
		fail_msg("check of a journal with %s: verdict %d, %llu corruptions", why, cr.verdict,
			 (unsigned long long)cr.corruptions);
	cow_close(img);
}

static void test_reserved_bit(void **s) { (void)s; expect_refused(rec_reserved_bit, "invalid record"); }
static void test_busy_bit(void **s) { (void)s; expect_refused(rec_busy_bit, "invalid record"); }
static void test_chunk_past_table(void **s) { (void)s; expect_refused(rec_chunk_past_table, "invalid record"); }
static void test_bad_type(void **s) { (void)s; expect_refused(rec_bad_type, "invalid record"); }
static void test_bad_count(void **s) { (void)s; expect_refused(rec_bad_count, "bad record count"); }

/* A FUA write is durable when it completes: its data and its mapping survive a crash that
 * comes right after it, with no flush. */
static void test_fua_durable(void **s)
{
	struct cow_create_opts o = { .size = 4 << 20, .chunk_size = 64 << 10, .block_size = 4096 };
	struct cow_backend *be;
	struct cow_image *img;
	struct cow_ctx *ctx;
	char buf[8192], got[8192];
	(void)s;

	unlink(P("f.img"));
	if (cow_create(P("f.img"), &o, err, sizeof(err)))
		fail_msg("create: %s", err);
	if (cow_open(P("f.img"), NULL, &img, err, sizeof(err)))
		fail_msg("open: %s", err);
	assert_int_equal(cow_backend_new("uring", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	memset(buf, 0xc3, sizeof(buf));
	assert_int_equal(cow_rw(ctx, COW_WRITE, buf, sizeof(buf), 256 << 10, COW_REQ_FUA), 0);
	cow_ctx_free(ctx);
	img_abandon(img);		/* no flush, no checkpoint, no clean close */

	if (cow_open(P("f.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		     sizeof(err)))
		fail_msg("reopen: %s", err);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, got, sizeof(got), 256 << 10, 0), 0);
	if (memcmp(got, buf, sizeof(buf)))
		fail_msg("a FUA write was lost by a crash right after it completed");
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
}

/* Writes with no flush at all: once img->rec_bound records are not committed, a request
 * carries a commit (commit.c), so memory stays bounded; and those commits are real (J1):
 * after a crash, every write but the last few that no commit covered reads back. */
static void test_bound_without_flush(void **s)
{
	struct cow_backend *be;
	struct cow_image *img;
	struct cow_ctx *ctx;
	char buf[4096], got[4096];
	const int n = 200, bound = 8;
	(void)s;

	fresh_image(P("b.img"), 0, &img, &be, &ctx);
	assert_true(img->rec_bound > 1000);	/* the default: about 8 MiB of records */
	img->rec_bound = bound;
	for (int i = 0; i < n; i++) {
		memset(buf, i + 1, sizeof(buf));
		/* a new block each: every write adds a record */
		assert_int_equal(cow_rw(ctx, COW_WRITE, buf, sizeof(buf), (uint64_t)i * 4096, 0), 0);
		if (img->rec_added - img->rec_committed >= (uint64_t)bound)
			fail_msg("write %d: %llu records not committed (bound %d)", i,
				 (unsigned long long)(img->rec_added - img->rec_committed), bound);
	}
	assert_true(img->stats.journal_commits >= (uint64_t)(n / bound));
	cow_ctx_free(ctx);
	img_abandon(img);		/* no flush, no close */

	if (cow_open(P("b.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		     sizeof(err)))
		fail_msg("reopen: %s", err);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	for (int i = 0; i < n - bound; i++) {
		memset(buf, i + 1, sizeof(buf));
		assert_int_equal(cow_rw(ctx, COW_READ, got, sizeof(got), (uint64_t)i * 4096, 0), 0);
		if (memcmp(got, buf, sizeof(buf)))
			fail_msg("write %d (of %d, never flushed) was not committed by the bound", i, n);
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
}

#define RING_N 4	/* blocks in a 16 KiB journal */

/* k flushed 4 KiB writes (block i holds byte i + 1) into a fresh image with the smallest
 * journal, then the process dies. What the last header says comes back in *h. */
static void ring_run(const char *path, int k, struct ucow_hdr *h, uint64_t *steps, bool *wrapped)
{
	struct cow_backend *be;
	struct cow_image *img;
	struct cow_ctx *ctx;
	char buf[4096];

	fresh_image(path, RING_N * UCOW_JBLOCK, &img, &be, &ctx);
	*wrapped = false;
	for (int i = 0; i < k; i++) {
		memset(buf, i + 1, sizeof(buf));
		/* one block per chunk: every flush commits one record in one journal block */
		assert_int_equal(cow_rw(ctx, COW_WRITE, buf, sizeof(buf), (uint64_t)i << 16, 0), 0);
		assert_int_equal(cow_rw(ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
		if (img->hdr.incompat & UCOW_INCOMPAT_JRING) {
			assert_true(img->hdr.journal_seq % RING_N != 0);
			if (img->jseq % RING_N + img->jblk > RING_N)
				*wrapped = true;	/* the used blocks run past the end */
		}
	}
	*h = img->hdr;
	*steps = img->ck_finished;
	cow_ctx_free(ctx);
	cow_backend_free(be);
	img_abandon(img);
}

static void expect_blocks(const char *path, int k, unsigned flags)
{
	struct cow_backend *be;
	struct cow_image *img;
	struct cow_ctx *ctx;
	char got[4096], want[4096];
	if (cow_open(path, &(struct cow_open_opts){ .flags = flags }, &img, err, sizeof(err)))
		fail_msg("reopen: %s", err);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	for (int i = 0; i < k + 2; i++) {
		memset(want, i < k ? i + 1 : 0, sizeof(want));
		assert_int_equal(cow_rw(ctx, COW_READ, got, sizeof(got), (uint64_t)i << 16, 0), 0);
		if (memcmp(got, want, sizeof(got)))
			fail_msg("%s: after %d flushed writes and a crash, write %d reads wrong",
				 path, k, i);
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_close(img), 0);
}

static void test_ring_crash(void **s)
{
	bool any_wrap = false;
	uint64_t most = 0;
	(void)s;
	for (int k = 1; k <= 40; k++) {
		struct ucow_hdr h;
		uint64_t steps;
		bool wrapped;
		ring_run(P("ring.img"), k, &h, &steps, &wrapped);
		any_wrap |= wrapped;
		most = steps > most ? steps : most;
		expect_blocks(P("ring.img"), k, COW_OPEN_RDONLY);	/* replay in memory */
		expect_blocks(P("ring.img"), k, 0);	/* replay, checkpoint, clean close */
		struct cow_image *img;
		if (cow_open(P("ring.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			     &img, err, sizeof(err)))
			fail_msg("open: %s", err);
		/* a clean close starts the journal at a multiple: older versions open it */
		assert_false(img->hdr.incompat & UCOW_INCOMPAT_JRING);
		assert_int_equal(img->hdr.journal_seq % RING_N, 0);
		assert_false(img->hdr.flags & UCOW_FLAG_DIRTY);
		cow_close(img);
	}
	assert_true(most >= 10);	/* checkpoints in steps ran, ... */
	assert_true(any_wrap);		/* ... and moved the journal's start round the ring */
}

/* Rewrite journal block b's seq (checksum fixed up). */
static void patch_block_seq(const char *path, const struct ucow_hdr *h, uint64_t b, uint64_t seq)
{
	uint8_t blk[UCOW_JBLOCK];
	int fd = open(path, O_RDWR);
	off_t off = (off_t)(h->journal_offset + b * UCOW_JBLOCK);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, blk, sizeof(blk), off), sizeof(blk));
	assert_int_equal(get_le32(blk), UCOW_JMAGIC);
	put_le64(blk + 8, seq);
	memset(blk + 4, 0, 4);
	put_le32(blk + 4, ucow_crc32c(0, blk, UCOW_JBLOCK));
	assert_int_equal(pwrite(fd, blk, sizeof(blk), off), sizeof(blk));
	close(fd);
}

/* Set the header's journal_seq in both slots (checksums recomputed). */
static void patch_jseq(const char *path, uint64_t seq)
{
	uint8_t b[UCOW_HDR_SIZE];
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	for (int i = 0; i < UCOW_HDR_SLOTS; i++) {
		assert_int_equal(pread(fd, b, sizeof(b), i * UCOW_HDR_SIZE), (ssize_t)sizeof(b));
		put_le64(b + 120, seq);
		put_le32(b + 44, 0);
		put_le32(b + 44, ucow_crc32c(0, b, sizeof(b)));
		assert_int_equal(pwrite(fd, b, sizeof(b), i * UCOW_HDR_SIZE), (ssize_t)sizeof(b));
	}
	close(fd);
}

/* An older version's journal: block 0 holds seq journal_seq, which is not a multiple of
 * the block count, and there is no JRING bit. It replays; a read-write open starts the
 * journal again at a multiple. */
static void test_legacy_layout(void **s)
{
	struct ucow_hdr h;
	uint64_t steps;
	bool wrapped;
	struct cow_image *img;
	(void)s;
	ring_run(P("old.img"), 1, &h, &steps, &wrapped);
	assert_false(h.incompat & UCOW_INCOMPAT_JRING);
	assert_int_equal(h.journal_seq % RING_N, 0);	/* block 0 holds this seq */
	patch_block_seq(P("old.img"), &h, 0, 4 * RING_N + 1);
	patch_jseq(P("old.img"), 4 * RING_N + 1);
	expect_blocks(P("old.img"), 1, COW_OPEN_RDONLY);
	if (cow_open(P("old.img"), NULL, &img, err, sizeof(err)))
		fail_msg("open: %s", err);
	assert_int_equal(img->hdr.journal_seq % RING_N, 0);
	assert_true(img->hdr.journal_seq > 4 * RING_N + 1);
	assert_int_equal(cow_close(img), 0);
	expect_blocks(P("old.img"), 1, 0);
	unlink(P("old.img"));
	unlink(P("ring.img"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reserved_bit),
		cmocka_unit_test(test_busy_bit),
		cmocka_unit_test(test_chunk_past_table),
		cmocka_unit_test(test_bad_type),
		cmocka_unit_test(test_bad_count),
		cmocka_unit_test(test_fua_durable),
		cmocka_unit_test(test_bound_without_flush),
		cmocka_unit_test(test_ring_crash),
		cmocka_unit_test(test_legacy_layout),
	};
	(void)pass_queue;	/* unit.h's pass-through backend: not needed here */
	(void)pass_submit_wait;
	return UNIT_RUN(tests);
}
