/*
 * Two contexts on one image, as the ublk server runs an online job: context A (io_uring,
 * up to 16 writes in flight, like a queue thread) is drained now and then ("a pause": no new
 * request, every one in flight completed); while it is drained, context B (sync backend,
 * like the control thread) copies backing ranges into the overlay through the engine; then
 * A goes on. A must never be left with a request that does not complete, and at the end
 * the copied ranges read as the base, A's writes as written.
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#include "unit.h"

#define SZ (16u << 20)
#define HALF (SZ / 2)
#define NQ 16

struct wreq {
	struct cow_req req;
	bool busy;
	uint8_t buf[4096] __attribute__((aligned(4096)));
};

static unsigned completed;

static void wcb(struct cow_req *req, int res)
{
	struct wreq *w = req->priv;
	if (res)
		fail_msg("A's write at %llu failed: %d", (unsigned long long)req->off, res);
	w->busy = false;
	completed++;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Poll A until none of its requests is in flight (or fail after 5 s). */
static void drain(struct cow_ctx *a, struct cow_backend *abe, struct wreq *q)
{
	uint64_t t0 = now_ms();
	for (;;) {
		bool any = false;
		for (int i = 0; i < NQ; i++)
			any |= q[i].busy;
		if (!any)
			return;
		if (now_ms() - t0 > 5000)
			fail_msg("context A did not drain in 5 s (a request never completed)");
		cow_ctx_poll(a);
		if (cow_backend_inflight(abe))
			assert_true(cow_backend_submit_wait(abe, 0) >= 0);
		else
			usleep(100);
	}
}

static void test_job_between_drains(void **state)
{
	static uint8_t base[SZ], got[SZ];
	struct cow_create_opts o = { .size = SZ, .chunk_size = 64 << 10, .block_size = 4096,
				     .backing = P("tb.raw"), .backing_fmt = COW_FMT_RAW };
	struct cow_backend *abe, *bbe;
	struct cow_ctx *a, *b;
	struct cow_image *img;
	static struct wreq q[NQ];
	uint64_t rs = 0x1234567;
	uint32_t *owner = calloc(HALF / 4096, sizeof(*owner));	/* A's last tag per block */
	void *buf = aligned_alloc(4096, 256 << 10);

	assert_non_null(owner);
	assert_non_null(buf);
	for (uint32_t i = 0; i < SZ; i++)
		base[i] = (uint8_t)(i * 2654435761u >> 13);
	int fd = open(P("tb.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, base, SZ, 0), SZ);
	close(fd);
	unlink(P("tb.img"));
	assert_int_equal(cow_create(P("tb.img"), &o, err, COW_ERRLEN), 0);
	assert_int_equal(cow_open(P("tb.img"), NULL, &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("uring", 32, &abe), 0);
	assert_int_equal(cow_ctx_new(img, abe, &a), 0);
	assert_int_equal(cow_backend_new("sync", 4, &bbe), 0);
	assert_int_equal(cow_ctx_new(img, bbe, &b), 0);

	uint32_t tag = 0;
	uint64_t copy_off = 0;
	for (int round = 0; copy_off < HALF; round++) {
		/* A runs: submit into free slots, poll, a few hundred completions */
		unsigned goal = completed + 200;
		while (completed < goal) {
			for (int i = 0; i < NQ; i++) {
				if (q[i].busy)
					continue;
				rs = rs * 6364136223846793005ull + 1442695040888963407ull;
				uint64_t blk = (rs >> 33) % (HALF / 4096);
				/* one request per block at a time: the last tag is what it holds */
				bool taken = false;
				for (int k = 0; k < NQ; k++)
					taken |= q[k].busy && q[k].req.off == HALF + blk * 4096;
				if (taken)
					continue;
				memset(q[i].buf, 0, sizeof(q[i].buf));
				memcpy(q[i].buf, &(uint32_t){ ++tag }, 4);
				owner[blk] = tag;
				q[i].req = (struct cow_req){ .op = COW_WRITE, .off = HALF + blk * 4096,
							     .len = 4096, .buf = q[i].buf,
							     .cb = wcb, .priv = &q[i] };
				q[i].busy = true;
				cow_submit(a, &q[i].req);
			}
			cow_ctx_poll(a);
			if (cow_backend_inflight(abe))
				assert_true(cow_backend_submit_wait(abe, 1) >= 0);
		}
		drain(a, abe, q);
		/* B, "the job", while A is drained: 256 KiB of backing data copied in */
		assert_int_equal(cow_rw(b, COW_READ, buf, 256 << 10, copy_off, 0), 0);
		assert_int_equal(cow_rw(b, COW_WRITE, buf, 256 << 10, copy_off, 0), 0);
		copy_off += 256 << 10;
		if (round % 8 == 7)
			assert_int_equal(cow_rw(b, COW_FLUSH, NULL, 0, 0, 0), 0);
	}
	drain(a, abe, q);
	assert_int_equal(cow_rw(a, COW_FLUSH, NULL, 0, 0, 0), 0);
	assert_int_equal(cow_rw(a, COW_READ, got, SZ, 0, 0), 0);
	assert_memory_equal(got, base, HALF);
	for (uint64_t blk = 0; blk < HALF / 4096; blk++) {
		uint32_t t;
		memcpy(&t, got + HALF + blk * 4096, 4);
		if (owner[blk] ? t != owner[blk] : memcmp(got + HALF + blk * 4096,
							  base + HALF + blk * 4096, 4096))
			fail_msg("block %llu of A's half reads tag %u, want %u",
				 (unsigned long long)blk, t, owner[blk]);
	}
	cow_ctx_free(a);
	cow_ctx_free(b);
	cow_backend_free(abe);
	cow_backend_free(bbe);
	assert_int_equal(cow_close(img), 0);
	free(owner);
	free(buf);
}

/*
 * An online commit by hand, as ublk/job.c runs it: the overlay's backing file reopened
 * read-write under two live contexts (refused while another open holds it), the overlay's
 * data written into it through a context on the reopened image, the overlay emptied, the
 * backing file reopened read-only: both contexts read the same content all along, now from
 * the base, and the base file holds it after close.
 */
static void test_backing_reopen(void **state)
{
	static uint8_t base[SZ], got[SZ], want[SZ];
	struct cow_create_opts bo = { .size = SZ, .chunk_size = 64 << 10, .block_size = 4096 };
	struct cow_create_opts o = bo;
	struct cow_backend *abe, *bbe, *cbe;
	struct cow_ctx *a, *b, *c;
	struct cow_image *img, *other;
	void *buf = aligned_alloc(4096, 64 << 10);

	assert_non_null(buf);
	o.backing = P("rb.img");
	o.backing_fmt = COW_FMT_UCOW;
	unlink(P("rb.img"));
	unlink(P("ro.img"));
	assert_int_equal(cow_create(P("rb.img"), &bo, err, COW_ERRLEN), 0);
	for (uint32_t i = 0; i < SZ; i++)
		base[i] = (uint8_t)(i * 2654435761u >> 11);
	assert_int_equal(cow_open(P("rb.img"), NULL, &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("sync", 4, &abe), 0);
	assert_int_equal(cow_ctx_new(img, abe, &a), 0);
	assert_int_equal(cow_rw(a, COW_WRITE, base, SZ, 0, 0), 0);
	cow_ctx_free(a);
	cow_backend_free(abe);
	assert_int_equal(cow_close(img), 0);
	assert_int_equal(cow_create(P("ro.img"), &o, err, COW_ERRLEN), 0);

	assert_int_equal(cow_open(P("ro.img"), NULL, &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("uring", 32, &abe), 0);
	assert_int_equal(cow_ctx_new(img, abe, &a), 0);
	assert_int_equal(cow_backend_new("sync", 4, &bbe), 0);
	assert_int_equal(cow_ctx_new(img, bbe, &b), 0);
	/* the overlay's own data: 3 chunks and a partial block run, and a zeroed range */
	memcpy(want, base, SZ);
	memset(want + (1 << 20), 0x5a, 192 << 10);
	memset(want + (3 << 20) + 4096, 0xa5, 8192);
	memset(want + (5 << 20), 0, 128 << 10);
	assert_int_equal(cow_rw(a, COW_WRITE, want + (1 << 20), 192 << 10, 1 << 20, 0), 0);
	assert_int_equal(cow_rw(b, COW_WRITE, want + (3 << 20) + 4096, 8192, (3 << 20) + 4096,
				0), 0);
	assert_int_equal(cow_rw(a, COW_WRITE_ZEROES, NULL, 128 << 10, 5 << 20, 0), 0);

	/* another open of the base (read-only, as another overlay's server has it) blocks
	 * the read-write reopen, which then changes nothing */
	assert_int_equal(cow_open(P("rb.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
				  &other, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backing_reopen(img, 1, err, COW_ERRLEN), -EBUSY);
	assert_non_null(strstr(err, "in use"));
	cow_close(other);
	assert_int_equal(cow_rw(a, COW_READ, got, SZ, 0, 0), 0);
	assert_memory_equal(got, want, SZ);

	assert_int_equal(cow_backing_reopen(img, 1, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("sync", 4, &cbe), 0);
	assert_int_equal(cow_ctx_new(cow_backing_image(img), cbe, &c), 0);
	/* copy what the overlay holds itself into the base */
	for (uint64_t off = 0; off < SZ;) {
		uint64_t run;
		int st = cow_map(img, off, SZ - off, &run, NULL);
		assert_true(st > 0);
		if (run > (64 << 10))
			run = 64 << 10;
		if (st == COW_MAP_DATA) {
			assert_int_equal(cow_rw(b, COW_READ, buf, run, off, 0), 0);
			assert_int_equal(cow_rw(c, COW_WRITE, buf, run, off, 0), 0);
		} else if (st == COW_MAP_ZERO) {
			assert_int_equal(cow_rw(c, COW_WRITE_ZEROES, NULL, run, off, 0), 0);
		}
		off += run;
	}
	assert_int_equal(cow_rw(c, COW_FLUSH, NULL, 0, 0, 0), 0);
	assert_int_equal(cow_rw(a, COW_READ, got, SZ, 0, 0), 0);
	assert_memory_equal(got, want, SZ);
	assert_int_equal(cow_make_empty(img), 0);
	assert_int_equal(cow_rw(b, COW_READ, got, SZ, 0, 0), 0);	/* from the base now */
	assert_memory_equal(got, want, SZ);
	cow_ctx_free(c);
	cow_backend_free(cbe);
	assert_int_equal(cow_backing_reopen(img, 0, err, COW_ERRLEN), 0);
	assert_int_equal(cow_rw(a, COW_READ, got, SZ, 0, 0), 0);
	assert_memory_equal(got, want, SZ);
	/* read-only again: another reader may open the base now */
	assert_int_equal(cow_open(P("rb.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
				  &other, err, COW_ERRLEN), 0);
	cow_close(other);
	cow_ctx_free(a);
	cow_ctx_free(b);
	cow_backend_free(abe);
	cow_backend_free(bbe);
	assert_int_equal(cow_close(img), 0);
	/* the base alone holds it all */
	assert_int_equal(cow_open(P("rb.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
				  &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("sync", 4, &abe), 0);
	assert_int_equal(cow_ctx_new(img, abe, &a), 0);
	assert_int_equal(cow_rw(a, COW_READ, got, SZ, 0, 0), 0);
	assert_memory_equal(got, want, SZ);
	cow_ctx_free(a);
	cow_backend_free(abe);
	cow_close(img);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_job_between_drains),
		cmocka_unit_test(test_backing_reopen),
	};
	(void)pass_queue, (void)pass_submit_wait;
	return UNIT_RUN(tests);
}
