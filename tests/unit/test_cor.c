/*
 * Copy-on-read (engine.c, COW_OPEN_COPY_ON_READ and the header's COPY_ON_READ bit): reads
 * of an overlay return the base's data and leave whole blocks of it in the overlay, so that
 * the base is read there once (a second pass reads nothing from it; the base changed behind
 * the overlay's back shows that the copied blocks come from the overlay); reads and writes
 * in flight together never let a copy cover a newer write (batches of concurrent requests
 * against a model, on one context and on two threads); snapshots over copied chunks keep
 * their content; the header bit turns it on for read-write opens only; create refuses it
 * without a backing image; the image checks clean.
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
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#include "unit.h"

#define CS (64u << 10)
#define BS 4096u
#define VSIZE (4u << 20)

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint8_t base_data[VSIZE];

/* A raw base of random bytes, an overlay on it. */
static void mk_pair(const char *base, const char *top, uint32_t features)
{
	uint64_t s = 0x1234567;
	for (size_t i = 0; i < VSIZE; i += 8) {
		uint64_t v = rnd(&s);
		memcpy(base_data + i, &v, 8);
	}
	int fd = open(base, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, base_data, VSIZE, 0), VSIZE);
	close(fd);
	unlink(top);
	struct cow_create_opts o = { .chunk_size = CS, .block_size = BS, .backing = base,
				     .backing_fmt = COW_FMT_RAW, .features = features };
	if (cow_create(top, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
}

static void h_open(struct h *h, const char *path, unsigned flags, const char *backend)
{
	if (cow_open(path, &(struct cow_open_opts){ .flags = flags }, &h->img, err, COW_ERRLEN))
		fail_msg("open %s: %s", path, err);
	assert_int_equal(cow_backend_new(backend, 64, &h->be), 0);
	assert_int_equal(cow_ctx_new(h->img, h->be, &h->ctx), 0);
}

static void h_close(struct h *h)
{
	cow_ctx_free(h->ctx);
	cow_backend_free(h->be);
	assert_int_equal(cow_close(h->img), 0);
}

static uint64_t base_reads(struct h *h)
{
	struct cow_stats st;
	cow_get_stats(cow_backing_image(h->img), &st);
	return st.data_reads;
}

/* What cow_map says of [off, off + len): every byte COW_MAP_DATA? */
static bool all_data(struct h *h, uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t run;
		int st = cow_map(h->img, off, len, &run, NULL);
		if (st != COW_MAP_DATA)
			return false;
		off += run;
		len -= run;
	}
	return true;
}

static void check_clean(const char *path)
{
	struct h h;
	struct cow_check_result cr;
	h_open(&h, path, COW_OPEN_RDONLY, "sync");
	assert_int_equal(cow_check(h.img, &cr), 0);
	if (cr.verdict)
		fail_msg("check %s: verdict %d: %s", path, cr.verdict, cr.first_problem);
	h_close(&h);
}

static void test_copies(void **state)
{
	(void)state;
	const char *base = P("base.raw"), *top = P("top.ucow");
	static uint8_t got[VSIZE];
	struct h h;
	struct cow_cor_info ci;
	uint64_t s = 99;
	struct { uint64_t off, len; } rd[60];

	mk_pair(base, top, 0);
	h_open(&h, top, COW_OPEN_COPY_ON_READ, "uring");
	cow_get_cor_info(h.img, &ci);
	assert_true(ci.enabled);
	assert_false(ci.in_header);
	/* a write first: a chunk part data, part backing */
	memset(got, 0xee, 3 * BS);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, got, 3 * BS, 5 * CS + 2 * BS, 0), 0);
	memcpy(base_data + 5 * CS + 2 * BS, got, 3 * BS);
	/* reads of odd sizes at odd places, some across chunks */
	for (int i = 0; i < 60; i++) {
		rd[i].off = rnd(&s) % (VSIZE - 1) / 512 * 512 + (i % 3 ? 0 : 7);
		rd[i].len = 1 + rnd(&s) % (i % 4 ? 9000 : 3 * CS);
		if (rd[i].off + rd[i].len > VSIZE)
			rd[i].len = VSIZE - rd[i].off;
		assert_int_equal(cow_rw(h.ctx, COW_READ, got, rd[i].len, rd[i].off, 0), 0);
		if (memcmp(got, base_data + rd[i].off, rd[i].len))
			fail_msg("read %d at %llu differs from the base", i,
				 (unsigned long long)rd[i].off);
		uint64_t as = rd[i].off & ~(uint64_t)(BS - 1);
		uint64_t ae = (rd[i].off + rd[i].len + BS - 1) & ~(uint64_t)(BS - 1);
		if (!all_data(&h, as, ae - as))
			fail_msg("read %d: blocks %llu..%llu not copied", i,
				 (unsigned long long)as, (unsigned long long)ae);
	}
	cow_get_cor_info(h.img, &ci);
	assert_true(ci.copies > 0);
	assert_true(ci.bytes >= ci.copies * BS);
	assert_int_equal(ci.failed, 0);
	/* the same reads again: nothing from the base */
	uint64_t before = base_reads(&h), copies = ci.copies;
	for (int i = 0; i < 60; i++) {
		assert_int_equal(cow_rw(h.ctx, COW_READ, got, rd[i].len, rd[i].off, 0), 0);
		assert_memory_equal(got, base_data + rd[i].off, rd[i].len);
	}
	assert_int_equal(base_reads(&h), before);
	cow_get_cor_info(h.img, &ci);
	assert_int_equal(ci.copies, copies);
	h_close(&h);

	/* the base changed behind the overlay: the copied blocks still read as they were */
	int fd = open(base, O_RDWR);
	static uint8_t junk[VSIZE];
	memset(junk, 0x5a, VSIZE);
	assert_int_equal(pwrite(fd, junk, VSIZE, 0), VSIZE);
	close(fd);
	h_open(&h, top, COW_OPEN_RDONLY, "sync");
	assert_false(h.img->cor);	/* read-only: no copies */
	for (int i = 0; i < 60; i++) {
		assert_int_equal(cow_rw(h.ctx, COW_READ, got, rd[i].len, rd[i].off, 0), 0);
		assert_memory_equal(got, base_data + rd[i].off, rd[i].len);
	}
	/* and a block never read shows the new base */
	uint64_t never = VSIZE;
	for (uint64_t b = 0; b < VSIZE && never == VSIZE; b += BS)
		if (!all_data(&h, b, BS))
			never = b;
	assert_true(never < VSIZE);
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, BS, never, 0), 0);
	assert_memory_equal(got, junk, BS);
	h_close(&h);
	check_clean(top);
}

/*
 * Batches of concurrent requests: reads anywhere, writes of whole or partial blocks (no two
 * writes of a batch touch one block), submitted at once; after each batch the model takes
 * the writes; reads that overlap no write of their batch must match the model. Ends with a
 * full read against the model, with copy-on-read off.
 */
struct breq {
	struct cow_req r;
	bool done;
	int res;
	uint8_t *buf;
};

static void b_cb(struct cow_req *r, int res)
{
	struct breq *b = r->priv;
	b->done = true;
	b->res = res;
}

static void run_batch(struct cow_ctx *ctx, struct cow_backend *be, struct breq *q, int n)
{
	for (int i = 0; i < n; i++)
		cow_submit(ctx, &q[i].r);
	for (;;) {
		int left = 0;
		for (int i = 0; i < n; i++)
			left += !q[i].done;
		if (!left)
			break;
		cow_ctx_poll(ctx);
		if (cow_backend_inflight(be))
			assert_true(cow_backend_submit_wait(be, 1) >= 0);
		else
			usleep(100);
	}
	for (int i = 0; i < n; i++)
		assert_int_equal(q[i].res, 0);
}

struct racer {
	const char *path;
	struct cow_image *img;
	uint8_t *model;
	uint64_t lo, hi;	/* the racer's range: its writes and checked reads */
	uint64_t seed;
	int batches;
};

static void race(struct racer *a, struct cow_ctx *ctx, struct cow_backend *be)
{
	enum { N = 24 };
	static __thread struct breq q[N];
	static __thread uint8_t bufs[N][3 * BS];
	uint64_t span = a->hi - a->lo;
	for (int bt = 0; bt < a->batches; bt++) {
		int n = 2 + rnd(&a->seed) % (N - 2);
		uint8_t wblk[VSIZE / BS / 8] = { 0 };
		for (int i = 0; i < n; i++) {
			bool w = rnd(&a->seed) % 3 == 0;
			uint64_t len = 512 * (1 + rnd(&a->seed) % (3 * BS / 512));
			uint64_t off = a->lo + rnd(&a->seed) % (span - len) / 512 * 512;
			if (w) {
				bool clash = false;
				for (uint64_t b = off / BS; b <= (off + len - 1) / BS; b++)
					clash |= (wblk[b / 8] >> (b % 8)) & 1;
				if (clash)
					w = false;
				else
					for (uint64_t b = off / BS; b <= (off + len - 1) / BS; b++)
						wblk[b / 8] |= 1 << (b % 8);
			}
			q[i] = (struct breq){ .buf = bufs[i] };
			q[i].r = (struct cow_req){ .op = w ? COW_WRITE : COW_READ, .off = off,
						   .len = len, .buf = bufs[i], .cb = b_cb,
						   .priv = &q[i] };
			if (w)
				memset(bufs[i], (int)(1 + rnd(&a->seed) % 250), len);
		}
		run_batch(ctx, be, q, n);
		for (int i = 0; i < n; i++)
			if (q[i].r.op == COW_WRITE)
				memcpy(a->model + q[i].r.off, q[i].buf, q[i].r.len);
		for (int i = 0; i < n; i++) {
			if (q[i].r.op != COW_READ)
				continue;
			bool clash = false;
			for (uint64_t b = q[i].r.off / BS; b <= (q[i].r.off + q[i].r.len - 1) / BS; b++)
				clash |= (wblk[b / 8] >> (b % 8)) & 1;
			if (!clash && memcmp(q[i].buf, a->model + q[i].r.off, q[i].r.len))
				fail_msg("batch %d: read at %llu differs", bt,
					 (unsigned long long)q[i].r.off);
		}
	}
}

static void *racer_thread(void *p)
{
	struct racer *a = p;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	assert_int_equal(cow_backend_new("uring", 64, &be), 0);
	assert_int_equal(cow_ctx_new(a->img, be, &ctx), 0);
	race(a, ctx, be);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	return NULL;
}

static void final_compare(const char *top, const uint8_t *model)
{
	static uint8_t got[VSIZE];
	struct h h;
	h_open(&h, top, COW_OPEN_RDONLY, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, VSIZE, 0, 0), 0);
	for (uint64_t i = 0; i < VSIZE; i += 512)
		if (memcmp(got + i, model + i, 512))
			fail_msg("byte %llu: got %02x, want %02x (a copy covered a write?)",
				 (unsigned long long)i, got[i], model[i]);
	h_close(&h);
	check_clean(top);
}

static void test_race_one_ctx(void **state)
{
	(void)state;
	const char *base = P("rb.raw"), *top = P("rt.ucow");
	static uint8_t model[VSIZE];
	struct h h;
	struct cow_cor_info ci;
	mk_pair(base, top, COW_CREATE_COPY_ON_READ);
	memcpy(model, base_data, VSIZE);
	h_open(&h, top, 0, "uring");
	cow_get_cor_info(h.img, &ci);
	assert_true(ci.enabled && ci.in_header);
	/* a few chunks only, so that reads and writes meet */
	struct racer a = { .img = h.img, .model = model, .lo = 3 * CS, .hi = 7 * CS,
			   .seed = 7, .batches = 300 };
	race(&a, h.ctx, h.be);
	cow_get_cor_info(h.img, &ci);
	assert_true(ci.copies > 0);
	h_close(&h);
	final_compare(top, model);
}

static void test_race_threads(void **state)
{
	(void)state;
	const char *base = P("tb.raw"), *top = P("tt.ucow");
	static uint8_t model[VSIZE];
	struct h h;
	mk_pair(base, top, 0);
	memcpy(model, base_data, VSIZE);
	h_open(&h, top, COW_OPEN_COPY_ON_READ, "uring");
	/* two threads on disjoint ranges that share chunk 4 (each its own blocks of it) */
	struct racer a[2] = {
		{ .img = h.img, .model = model, .lo = 2 * CS, .hi = 4 * CS + CS / 2, .seed = 3,
		  .batches = 150 },
		{ .img = h.img, .model = model, .lo = 4 * CS + CS / 2, .hi = 7 * CS, .seed = 5,
		  .batches = 150 },
	};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, racer_thread, &a[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	h_close(&h);
	final_compare(top, model);
}

static void test_snapshots_and_options(void **state)
{
	(void)state;
	const char *base = P("sb.raw"), *top = P("st.ucow");
	static uint8_t got[2 * CS], before[2 * CS];
	struct h h;
	mk_pair(base, top, 0);
	h_open(&h, top, 0, "sync");
	assert_false(h.img->cor);	/* neither the flag nor the header bit */
	memset(got, 0x11, BS);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, got, BS, 9 * CS, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_READ, before, 2 * CS, 9 * CS, 0), 0);
	assert_int_equal(cow_snapshot_create(h.img, "s1"), 0);
	h_close(&h);
	/* the chunk is SHARED now: the copy goes to a new chunk, the snapshot keeps its own */
	h_open(&h, top, COW_OPEN_COPY_ON_READ, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, 2 * CS, 9 * CS, 0), 0);
	assert_memory_equal(got, before, 2 * CS);
	assert_true(all_data(&h, 9 * CS, 2 * CS));
	h_close(&h);
	{
		struct h s;
		if (cow_open(top, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY,
							   .snapshot = "s1" }, &s.img, err,
			     COW_ERRLEN))
			fail_msg("open s1: %s", err);
		uint64_t run;
		assert_int_equal(cow_map(s.img, 9 * CS + BS, CS - BS, &run, NULL),
				 COW_MAP_BACKING);
		cow_close(s.img);
	}
	check_clean(top);
	/* create: the bit needs a backing image */
	struct cow_create_opts o = { .size = VSIZE, .features = COW_CREATE_COPY_ON_READ };
	unlink(P("nb.ucow"));
	assert_int_equal(cow_create(P("nb.ucow"), &o, err, COW_ERRLEN), -EINVAL);
	assert_non_null(strstr(err, "needs a backing image"));
	o.features = 0x2;
	assert_int_equal(cow_create(P("nb.ucow"), &o, err, COW_ERRLEN), -EINVAL);
	/* an image without a backing file: the flag does nothing */
	o.features = 0;
	assert_int_equal(cow_create(P("nb.ucow"), &o, err, COW_ERRLEN), 0);
	h_open(&h, P("nb.ucow"), COW_OPEN_COPY_ON_READ, "sync");
	assert_false(h.img->cor);
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, BS, 0, 0), 0);
	h_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copies),
		cmocka_unit_test(test_race_one_ctx),
		cmocka_unit_test(test_race_threads),
		cmocka_unit_test(test_snapshots_and_options),
	};
	return UNIT_RUN(tests);
}
