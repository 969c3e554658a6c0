/*
 * Hostile journals: an image left dirty after a flush has its journal replayed at the next
 * open; a journal block whose checksum is right but whose records are not must be refused
 * as corruption (by open and by cow_check), never applied. Each case plants one bad value
 * into a real journal written by the engine and fixes the block checksum up. And a FUA
 * write's mapping is in the journal when the write completes.
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

/* A 4 MiB image with one flushed write whose record is still only in the journal (the
 * process "crashed": the image is dropped without a checkpoint). Returns the header. */
static struct ucow_hdr dirty_image(const char *path)
{
	struct cow_create_opts o = { .size = 4 << 20, .chunk_size = 64 << 10, .block_size = 4096 };
	struct cow_backend *be;
	struct cow_image *img;
	struct cow_ctx *ctx;
	struct ucow_hdr h;
	char buf[4096];

	unlink(path);
	if (cow_create(path, &o, err, sizeof(err)))
		fail_msg("create: %s", err);
	if (cow_open(path, NULL, &img, err, sizeof(err)))
		fail_msg("open: %s", err);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reserved_bit),
		cmocka_unit_test(test_busy_bit),
		cmocka_unit_test(test_chunk_past_table),
		cmocka_unit_test(test_bad_type),
		cmocka_unit_test(test_bad_count),
		cmocka_unit_test(test_fua_durable),
	};
	(void)pass_queue;	/* unit.h's pass-through backend: not needed here */
	(void)pass_submit_wait;
	return UNIT_RUN(tests);
}
