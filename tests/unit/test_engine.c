/*
 * Engine tests: random operations against an in-memory model over every backend, overlays,
 * re-opens, concurrency on fresh chunks, journal replay after a crash (torn and corrupt
 * blocks), hostile tables, locking, backing-chain resolution, and the I/O-cost claims
 * (verified with the engine's own counters).
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cowcore.h"
#include "format.h"

#include "unit.h"

static void h_open(struct h *h, const char *path, int fmt, unsigned flags, const char *be)
{
	int r = cow_open(path, &(struct cow_open_opts){ .fmt = fmt, .flags = flags },
			&h->img, err, COW_ERRLEN);
	if (r)
		fail_msg("open %s: %d %s", path, r, err);
	assert_int_equal(cow_backend_new(be, 64, &h->be), 0);
	assert_int_equal(cow_ctx_new(h->img, h->be, &h->ctx), 0);
}

static void h_close(struct h *h)
{
	cow_ctx_free(h->ctx);
	cow_backend_free(h->be);
	assert_int_equal(cow_close(h->img), 0);
}

static void mk(const char *path, uint64_t size, uint32_t chunk, uint32_t block,
	       const char *backing, int bfmt)
{
	struct cow_create_opts o = { .size = size, .chunk_size = chunk, .block_size = block,
				     .backing = backing, .backing_fmt = bfmt };
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create %s: %s", path, err);
}

static void mkraw(const char *path, uint64_t size, uint8_t pat)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	char *b = malloc(size);
	assert_true(fd >= 0 && b);
	for (uint64_t i = 0; i < size; i++)
		b[i] = pat ? (char)(pat + i / 4096) : 0;
	assert_int_equal(pwrite(fd, b, size, 0), (ssize_t)size);
	close(fd);
	free(b);
}

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* Random ops vs a model. */
static void random_run(const char *path, int fmt, uint8_t *model, uint64_t size,
		       const char *be, int steps, int reopen_every)
{
	struct h h;
	uint8_t *buf = malloc(4 << 20), *chk = malloc(4 << 20);
	h_open(&h, path, fmt, 0, be);
	for (int i = 0; i < steps; i++) {
		uint64_t len = 1 + rnd() % (rnd() % 4 ? 70000 : (3 << 20));
		if (rnd() % 2)
			len = (len + 511) & ~511ull;
		if (len > size)
			len = size;
		uint64_t off = rnd() % (size - len + 1);
		if (rnd() % 3)
			off &= ~511ull;
		if (off + len > size)
			off = size - len;
		int op = rnd() % 10;
		if (op < 5) {
			for (uint64_t k = 0; k < len; k++)
				buf[k] = (uint8_t)(rnd() >> 20);
			assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, len, off, rnd() % 8 ? 0 : COW_REQ_FUA), 0);
			memcpy(model + off, buf, len);
		} else if (op < 7) {
			int zop = op == 5 ? COW_WRITE_ZEROES : COW_DISCARD;
			assert_int_equal(cow_rw(h.ctx, zop, NULL, len, off, 0), 0);
			memset(model + off, 0, len);
		} else if (op < 9) {
			assert_int_equal(cow_rw(h.ctx, COW_READ, chk, len, off, 0), 0);
			if (memcmp(chk, model + off, len)) {
				uint64_t k = 0;
				while (chk[k] == model[off + k])
					k++;
				fail_msg("step %d: mismatch at %llu (read %llu+%llu): got %02x want %02x",
					 i, (unsigned long long)(off + k), (unsigned long long)off,
					 (unsigned long long)len, chk[k], model[off + k]);
			}
		} else {
			assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
		}
		if (reopen_every && i % reopen_every == reopen_every - 1) {
			h_close(&h);
			h_open(&h, path, fmt, 0, be);
		}
	}
	/* full compare */
	for (uint64_t off = 0; off < size; off += 4 << 20) {
		uint64_t len = size - off < (4u << 20) ? size - off : 4u << 20;
		assert_int_equal(cow_rw(h.ctx, COW_READ, chk, len, off, 0), 0);
		assert_memory_equal(chk, model + off, len);
	}
	h_close(&h);
	free(buf);
	free(chk);
}

static void check_clean(const char *path)
{
	struct cow_image *img;
	struct cow_check_result cr;
	assert_int_equal(cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict)
		fail_msg("%s: check verdict %d: %s", path, cr.verdict, cr.first_problem);
	cow_close(img);
}

static void test_random_standalone(void **state)
{
	const char *bes[] = { "uring", "aio", "sync" };
	uint64_t size = 24 << 20;
	uint8_t *model = calloc(1, size);
	for (int b = 0; b < 3; b++) {
		memset(model, 0, size);
		mk(P("s.img"), size, 64 << 10, 4096, NULL, 0);
		random_run(P("s.img"), COW_FMT_NONE, model, size, bes[b], 300, 60);
		check_clean(P("s.img"));
		mk(P("s2.img"), size, 0, 0, NULL, 0);
		memset(model, 0, size);
		random_run(P("s2.img"), COW_FMT_NONE, model, size, bes[b], 200, 50);
		check_clean(P("s2.img"));
	}
	free(model);
}

static void test_random_overlay_raw(void **state)
{
	uint64_t size = 20 << 20;
	uint8_t *model = malloc(size);
	mkraw(P("base.raw"), size - (1 << 20), 0x30);	/* base smaller than the overlay */
	int fd = open(P("base.raw"), O_RDONLY);
	assert_int_equal(pread(fd, model, size - (1 << 20), 0), (ssize_t)(size - (1 << 20)));
	memset(model + size - (1 << 20), 0, 1 << 20);
	close(fd);
	mk(P("ov.img"), size, 128 << 10, 4096, "base.raw", COW_FMT_RAW);
	random_run(P("ov.img"), COW_FMT_NONE, model, size, "uring", 400, 80);
	check_clean(P("ov.img"));
	/* the base is untouched */
	uint8_t *b = malloc(size);
	fd = open(P("base.raw"), O_RDONLY);
	assert_int_equal(pread(fd, b, 4096, 8192), 4096);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(b[i], (uint8_t)(0x30 + 2));
	close(fd);
	free(b);
	free(model);
}

static void test_random_overlay_ucow(void **state)
{
	uint64_t size = 16 << 20;
	uint8_t *model = calloc(1, size);
	mk(P("b.img"), size, 64 << 10, 512, NULL, 0);
	random_run(P("b.img"), COW_FMT_NONE, model, size, "uring", 150, 0);
	mk(P("o1.img"), 0, 0, 0, "b.img", COW_FMT_UCOW);
	random_run(P("o1.img"), COW_FMT_NONE, model, size, "sync", 150, 40);
	mk(P("o2.img"), 0, 64 << 10, 16384, "o1.img", COW_FMT_UCOW);
	random_run(P("o2.img"), COW_FMT_NONE, model, size, "uring", 250, 50);
	check_clean(P("o2.img"));
	check_clean(P("o1.img"));
	free(model);
}

/* Overwriting allocated data costs no metadata I/O; a 4 KiB write into a fresh overlay
 * writes 4 KiB of data plus its share of a batched journal record. */
static void test_io_cost(void **state)
{
	struct h h;
	struct cow_stats a, b;
	char *buf = malloc(4096);
	memset(buf, 0x5a, 4096);
	mkraw(P("cb.raw"), 64 << 20, 0x10);
	mk(P("cov.img"), 0, 0, 0, "cb.raw", COW_FMT_RAW);
	h_open(&h, P("cov.img"), COW_FMT_NONE, 0, "uring");
	cow_get_stats(h.img, &a);
	const int n = 1000;	/* one every 64 KiB */
	for (int i = 0; i < n; i++)
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 4096, (uint64_t)i * 65536, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	cow_get_stats(h.img, &b);
	assert_int_equal(b.data_bytes_written - a.data_bytes_written, (uint64_t)n * 4096);
	/* 1000 records of 56 bytes: 14 journal blocks, one commit */
	uint64_t meta = b.meta_bytes_written - a.meta_bytes_written;
	printf("fresh overlay: %d x 4 KiB data, %llu metadata bytes, %llu commits\n", n,
	       (unsigned long long)meta, (unsigned long long)(b.journal_commits - a.journal_commits));
	assert_true(meta <= 16 * 4096);
	assert_int_equal(b.journal_commits - a.journal_commits, 1);
	/* overwrite: zero metadata */
	a = b;
	for (int i = 0; i < n; i++)
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 4096, (uint64_t)i * 65536, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	cow_get_stats(h.img, &b);
	assert_int_equal(b.meta_bytes_written, a.meta_bytes_written);
	assert_int_equal(b.meta_writes, a.meta_writes);
	assert_int_equal(b.allocations, a.allocations);
	assert_int_equal(b.data_bytes_written - a.data_bytes_written, (uint64_t)n * 4096);
	h_close(&h);
	free(buf);
}

/* Threads writing distinct blocks of the same fresh chunks: no chunk allocated twice. */
struct thr {
	const char *path;
	struct cow_image *img;
	int id, nthr;
	struct cow_backend *be;	/* freed by main after every thread ended: liburing maps its
				 * rings with raw syscalls TSan cannot see, so a ring freed while
				 * another thread maps a new one at the same address looks racy */
	struct cow_ctx *ctx;
};

static void *writer(void *arg)
{
	struct thr *t = arg;
	char buf[4096];
	if (cow_backend_new("uring", 32, &t->be) || cow_ctx_new(t->img, t->be, &t->ctx))
		return (void *)1;
	struct cow_ctx *ctx = t->ctx;
	for (int blk = t->id; blk < 8 * 256; blk += t->nthr) {
		memset(buf, blk & 0xff, sizeof(buf));
		if (cow_rw(ctx, COW_WRITE, buf, 4096, (uint64_t)blk * 4096, 0))
			return (void *)2;
	}
	return NULL;
}

static void test_concurrent_alloc(void **state)
{
	struct cow_image *img;
	pthread_t th[4];
	struct thr t[4];
	struct cow_stats st;
	mkraw(P("cc.raw"), 8 << 20, 0x40);
	mk(P("cc.img"), 0, 1 << 20, 4096, "cc.raw", COW_FMT_RAW);
	assert_int_equal(cow_open(P("cc.img"), NULL, &img, err, COW_ERRLEN), 0);
	for (int i = 0; i < 4; i++) {
		t[i] = (struct thr){ .img = img, .id = i, .nthr = 4 };
		pthread_create(&th[i], NULL, writer, &t[i]);
	}
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(th[i], &r);
		assert_null(r);
	}
	for (int i = 0; i < 4; i++) {
		cow_ctx_free(t[i].ctx);
		cow_backend_free(t[i].be);
	}
	cow_get_stats(img, &st);
	assert_int_equal(st.allocations, 8);	/* 8 chunks, each allocated once */
	assert_int_equal(cow_close(img), 0);
	check_clean(P("cc.img"));
	struct h h;
	char buf[4096];
	h_open(&h, P("cc.img"), COW_FMT_NONE, COW_OPEN_RDONLY, "sync");
	for (int blk = 0; blk < 8 * 256; blk++) {
		assert_int_equal(cow_rw(h.ctx, COW_READ, buf, 4096, (uint64_t)blk * 4096, 0), 0);
		for (int k = 0; k < 4096; k++)
			if ((uint8_t)buf[k] != (blk & 0xff))
				fail_msg("block %d byte %d: %02x", blk, k, (uint8_t)buf[k]);
	}
	h_close(&h);
}

/* Crash after a flush: the flushed writes survive via journal replay. */
static void test_replay(void **state)
{
	mk(P("j.img"), 32 << 20, 64 << 10, 4096, NULL, 0);
	pid_t pid = fork();
	if (!pid) {
		struct h h;
		char a[8192], b[8192];
		memset(a, 0xaa, sizeof(a));
		memset(b, 0xbb, sizeof(b));
		if (cow_open(P("j.img"), NULL, &h.img, err, COW_ERRLEN) ||
		    cow_backend_new("uring", 8, &h.be) || cow_ctx_new(h.img, h.be, &h.ctx))
			_exit(2);
		for (int i = 0; i < 100; i++)
			if (cow_rw(h.ctx, COW_WRITE, a, sizeof(a), (uint64_t)i * 65536 * 3, 0))
				_exit(3);
		if (cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0))
			_exit(4);
		for (int i = 0; i < 10; i++)
			if (cow_rw(h.ctx, COW_WRITE, b, sizeof(b), 65536 + (uint64_t)i * 65536 * 3, 0))
				_exit(5);
		if (cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0))
			_exit(6);
		/* unflushed: may or may not survive */
		cow_rw(h.ctx, COW_WRITE, b, sizeof(b), 2 * 65536, 0);
		_exit(0);	/* crash: no close */
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* the image is dirty; a read-only open replays in memory */
	struct h h;
	struct cow_info info;
	const uint64_t size = 32 << 20;
	uint8_t *buf = malloc(size), *want = calloc(1, size);
	assert_non_null(buf);
	assert_non_null(want);
	for (int i = 0; i < 100; i++)
		memset(want + (uint64_t)i * 65536 * 3, 0xaa, 8192);
	for (int i = 0; i < 10; i++)
		memset(want + 65536 + (uint64_t)i * 65536 * 3, 0xbb, 8192);
	h_open(&h, P("j.img"), COW_FMT_NONE, COW_OPEN_RDONLY, "sync");
	cow_get_info(h.img, &info);
	assert_true(info.dirty);
	/* every sector: its flushed value; the unflushed write may have landed or not, whole
	 * sectors at a time */
	assert_int_equal(cow_rw(h.ctx, COW_READ, buf, size, 0, 0), 0);
	for (uint64_t s = 0; s < size; s += 512) {
		bool unflushed = s >= 2 * 65536 && s < 2 * 65536 + 8192;
		if (!memcmp(buf + s, want + s, 512))
			continue;
		if (unflushed && buf[s] == 0xbb && !memcmp(buf + s, buf + s + 1, 511))
			continue;
		fail_msg("after replay, sector %llu reads 0x%02x.., expected 0x%02x..",
			 (unsigned long long)(s / 512), buf[s], want[s]);
	}
	free(buf);
	free(want);
	h_close(&h);
	check_clean(P("j.img"));
}

/* Torn second commit: replay keeps the first commit only; the image stays consistent. */
static void test_torn_commit(void **state)
{
	mk(P("t.img"), 8 << 20, 64 << 10, 4096, NULL, 0);
	pid_t pid = fork();
	if (!pid) {
		struct h h;
		char a[4096];
		memset(a, 0xaa, sizeof(a));
		if (cow_open(P("t.img"), NULL, &h.img, err, COW_ERRLEN) ||
		    cow_backend_new("sync", 8, &h.be) || cow_ctx_new(h.img, h.be, &h.ctx))
			_exit(2);
		if (cow_rw(h.ctx, COW_WRITE, a, 4096, 0, 0) || cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0))
			_exit(3);
		if (cow_rw(h.ctx, COW_WRITE, a, 4096, 1 << 20, 0) || cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0))
			_exit(4);
		_exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* find the journal and break block 1 (the second commit) */
	int fd = open(P("t.img"), O_RDWR);
	uint8_t hb[4096];
	struct ucow_hdr hdr;
	char why[COW_ERRLEN];
	assert_int_equal(pread(fd, hb, 4096, 4096 * 0), 4096);
	if (ucow_hdr_decode(hb, 1ull << 40, &hdr, why, sizeof(why))) {
		assert_int_equal(pread(fd, hb, 4096, 4096), 4096);
		assert_int_equal(ucow_hdr_decode(hb, 1ull << 40, &hdr, why, sizeof(why)), 0);
	} else {
		struct ucow_hdr h2;
		uint8_t hb2[4096];
		assert_int_equal(pread(fd, hb2, 4096, 4096), 4096);
		if (!ucow_hdr_decode(hb2, 1ull << 40, &h2, why, sizeof(why)) && h2.generation > hdr.generation)
			hdr = h2;
	}
	uint8_t x = 0x55;
	assert_int_equal(pwrite(fd, &x, 1, (off_t)(hdr.journal_offset + 4096 + 100)), 1);
	close(fd);
	struct h h;
	char buf[4096];
	h_open(&h, P("t.img"), COW_FMT_NONE, 0, "sync");	/* read-write: replay + checkpoint */
	assert_int_equal(cow_rw(h.ctx, COW_READ, buf, 4096, 0, 0), 0);
	assert_int_equal((uint8_t)buf[0], 0xaa);
	assert_int_equal(cow_rw(h.ctx, COW_READ, buf, 4096, 1 << 20, 0), 0);
	assert_int_equal((uint8_t)buf[0], 0);	/* lost with its torn commit */
	h_close(&h);
	struct cow_image *img;
	struct cow_check_result cr;
	assert_int_equal(cow_open(P("t.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_check(img, &cr), 0);
	assert_int_equal(cr.corruptions, 0);
	/* the read-write open punched the lost commit's chunk: nothing leaked */
	assert_int_equal(cr.leaks, 0);
	assert_int_equal(cr.reclaimable, 0);
	assert_int_equal(cr.verdict, 0);
	cow_close(img);
}

static uint64_t table_off(const char *path)
{
	int fd = open(path, O_RDONLY);
	uint8_t hb[4096];
	struct ucow_hdr h;
	char why[COW_ERRLEN];
	assert_int_equal(pread(fd, hb, 4096, 0), 4096);
	if (ucow_hdr_decode(hb, 1ull << 40, &h, why, sizeof(why))) {
		assert_int_equal(pread(fd, hb, 4096, 4096), 4096);
		assert_int_equal(ucow_hdr_decode(hb, 1ull << 40, &h, why, sizeof(why)), 0);
	}
	close(fd);
	return h.table_offset;
}

static void poke64(const char *path, uint64_t off, uint64_t v)
{
	uint8_t b[8];
	int fd = open(path, O_RDWR);
	put_le64(b, v);
	assert_int_equal(pwrite(fd, b, 8, (off_t)off), 8);
	close(fd);
}

static void test_hostile_table(void **state)
{
	struct h h;
	struct cow_image *img;
	char buf[4096] = { 1 };
	mk(P("x.img"), 8 << 20, 64 << 10, 4096, NULL, 0);
	h_open(&h, P("x.img"), COW_FMT_NONE, 0, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 4096, 0, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 4096, 65536, 0), 0);
	h_close(&h);
	uint64_t t = table_off(P("x.img"));
	int fd = open(P("x.img"), O_RDONLY);
	uint8_t e0[8];
	assert_int_equal(pread(fd, e0, 8, (off_t)t), 8);
	close(fd);
	/* past the end of the file */
	poke64(P("x.img"), t + 16, 1ull << 40);
	assert_int_equal(cow_open(P("x.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), -EUCLEAN);
	assert_non_null(strstr(err, "corrupt"));
	/* the same chunk twice */
	poke64(P("x.img"), t + 16, get_le64(e0));
	assert_int_equal(cow_open(P("x.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), -EUCLEAN);
	assert_non_null(strstr(err, "twice"));
	/* pointing into metadata */
	poke64(P("x.img"), t + 16, 1);
	assert_int_equal(cow_open(P("x.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), -EUCLEAN);
	/* reserved bits */
	poke64(P("x.img"), t + 16, get_le64(e0) | (1ull << 50));
	assert_int_equal(cow_open(P("x.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), -EUCLEAN);
	/* a check still opens it and counts the problem */
	struct cow_check_result cr;
	assert_int_equal(cow_open(P("x.img"), &(struct cow_open_opts){ .flags = COW_OPEN_CHECK },
			&img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_check(img, &cr), 0);
	assert_int_equal(cr.verdict, 2);
	assert_true(cr.corruptions >= 1);
	assert_non_null(strstr(cr.first_problem, "reserved"));
	cow_close(img);
}

static void test_locking(void **state)
{
	struct cow_image *a, *b;
	mk(P("l.img"), 1 << 20, 0, 0, NULL, 0);
	assert_int_equal(cow_open(P("l.img"), NULL, &a, err, COW_ERRLEN), 0);
	assert_int_equal(cow_open(P("l.img"), NULL, &b, err, COW_ERRLEN), -EBUSY);
	assert_non_null(strstr(err, "in use"));
	assert_int_equal(cow_open(P("l.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&b, err, COW_ERRLEN), -EBUSY);
	cow_close(a);
	assert_int_equal(cow_open(P("l.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&a, err, COW_ERRLEN), 0);
	assert_int_equal(cow_open(P("l.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&b, err, COW_ERRLEN), 0);
	struct cow_image *c;
	assert_int_equal(cow_open(P("l.img"), NULL, &c, err, COW_ERRLEN), -EBUSY);
	cow_close(a);
	cow_close(b);
	/* raw is never probed */
	mkraw(P("r.raw"), 1 << 20, 0);
	assert_int_equal(cow_open(P("r.raw"), NULL, &a, err, COW_ERRLEN), -EMEDIUMTYPE);
	assert_non_null(strstr(err, "not a ucow image"));
	/* options are the tools' to name (after the path: the scratch folder's random name may
	 * hold "-f" itself) */
	assert_true(!strncmp(err, P("r.raw"), strlen(P("r.raw"))));
	assert_null(strstr(err + strlen(P("r.raw")), "-f"));
	assert_int_equal(cow_open(P("r.raw"), &(struct cow_open_opts){ .fmt = COW_FMT_UCOW },
			&a, err, COW_ERRLEN), -EMEDIUMTYPE);
	/* a backing file the image says is ucow but is not: the image's fault, not the
	 * caller's (no -EMEDIUMTYPE, which would make a tool suggest -f raw) */
	mk(P("rb.img"), 1 << 20, 0, 0, "l.img", COW_FMT_UCOW);
	rename(P("r.raw"), P("l.img"));
	assert_int_equal(cow_open(P("rb.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&a, err, COW_ERRLEN), -EINVAL);
	if (!strstr(err, "backing file") || !strstr(err, "not a ucow image") || strstr(err, "-f raw"))
		fail_msg("error '%s'", err);
}

static void test_backing_chain(void **state)
{
	char sub[512];
	struct h h;
	char buf[4096];
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	mkdir(sub, 0755);
	mkraw(P("cb2.raw"), 4 << 20, 0x60);
	/* relative to the overlay's own folder, whatever the current directory */
	mk(P("sub/ov.img"), 0, 0, 0, "../cb2.raw", COW_FMT_RAW);
	h_open(&h, P("sub/ov.img"), COW_FMT_NONE, COW_OPEN_RDONLY, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_READ, buf, 4096, 4096, 0), 0);
	assert_int_equal((uint8_t)buf[0], 0x61);
	struct cow_info info;
	cow_get_info(h.img, &info);
	assert_string_equal(info.backing, "../cb2.raw");
	assert_int_equal(info.virtual_size, 4 << 20);
	h_close(&h);
	/* missing backing file: a clear error naming it */
	struct cow_image *img;
	unlink(P("cb2.raw"));
	assert_int_equal(cow_open(P("sub/ov.img"), &(struct cow_open_opts){
			.flags = COW_OPEN_RDONLY }, &img, err, COW_ERRLEN), -ENOENT);
	assert_non_null(strstr(err, "cb2.raw"));
	/* backing format must be given */
	struct cow_create_opts o = { .backing = "x", .backing_fmt = 0 };
	assert_int_equal(cow_create(P("nofmt.img"), &o, err, COW_ERRLEN), -EINVAL);
	assert_int_equal(access(P("nofmt.img"), F_OK), -1);
	/* a loop a -> b -> a */
	mk(P("la.img"), 1 << 20, 0, 0, NULL, 0);
	mk(P("lb.img"), 0, 0, 0, "la.img", COW_FMT_UCOW);
	{
		int fd = open(P("la.img"), O_RDWR);
		uint8_t hb[4096];
		struct ucow_hdr hd;
		char why[COW_ERRLEN];
		int slot = 0;
		assert_int_equal(pread(fd, hb, 4096, 0), 4096);
		if (ucow_hdr_decode(hb, 1ull << 40, &hd, why, sizeof(why))) {
			slot = 1;
			assert_int_equal(pread(fd, hb, 4096, 4096), 4096);
			assert_int_equal(ucow_hdr_decode(hb, 1ull << 40, &hd, why, sizeof(why)), 0);
		}
		hd.backing_fmt = COW_FMT_UCOW;
		strcpy(hd.backing, "lb.img");
		hd.backing_len = 6;
		ucow_hdr_encode(&hd, hb);
		assert_int_equal(pwrite(fd, hb, 4096, slot * 4096), 4096);
		close(fd);
	}
	assert_int_equal(cow_open(P("lb.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), -ELOOP);
	assert_non_null(strstr(err, "loops back"));
}

static void test_map(void **state)
{
	struct h h;
	uint64_t run, phys;
	char buf[8192];
	memset(buf, 7, sizeof(buf));
	mkraw(P("mb.raw"), 4 << 20, 0x10);
	mk(P("m.img"), 0, 64 << 10, 4096, "mb.raw", COW_FMT_RAW);
	h_open(&h, P("m.img"), COW_FMT_NONE, 0, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 8192, 65536 + 4096, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE_ZEROES, NULL, 65536, 3 * 65536, 0), 0);
	assert_int_equal(cow_map(h.img, 0, 4 << 20, &run, &phys), COW_MAP_BACKING);
	assert_int_equal(run, 65536 + 4096);
	assert_int_equal(cow_map(h.img, 65536 + 4096, 4 << 20, &run, &phys), COW_MAP_DATA);
	assert_int_equal(run, 8192);
	assert_int_equal(cow_map(h.img, 3 * 65536, 65536, &run, &phys), COW_MAP_ZERO);
	assert_int_equal(run, 65536);
	h_close(&h);
}

/*
 * cow_map_extent: what decides each run (allocated), where its data lies (offset), and runs
 * split where cow_map joins a ZERO chunk and a merely unallocated one.
 */
static void test_map_extent(void **state)
{
	const uint64_t cs = 64 << 10;
	struct cow_extent x;
	uint64_t run, phys;
	struct h h;
	char buf[8192];
	memset(buf, 7, sizeof(buf));
	/* a standalone image with a ZERO entry (only a backing image makes them; set by hand
	 * below, as an image made elsewhere may hold one) */
	mk(P("me.img"), 8 * cs, cs, 4096, NULL, 0);
	h_open(&h, P("me.img"), COW_FMT_NONE, 0, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 8192, cs + 4096, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 8192, 2 * cs, 0), 0);
	h_close(&h);
	{
		struct cow_image *img;
		assert_int_equal(cow_open(P("me.img"), &(struct cow_open_opts){
				.flags = COW_OPEN_RDONLY }, &img, err, COW_ERRLEN), 0);
		cow_close(img);
		int fd = open(P("me.img"), O_RDWR);
		uint8_t hb[4096], e[8];
		struct ucow_hdr hd;
		char why[COW_ERRLEN];
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, hb, 4096, 0), 4096);
		if (ucow_hdr_decode(hb, 1ull << 40, &hd, why, sizeof(why))) {
			assert_int_equal(pread(fd, hb, 4096, 4096), 4096);
			assert_int_equal(ucow_hdr_decode(hb, 1ull << 40, &hd, why, sizeof(why)), 0);
		}
		put_le64(e, UCOW_E_ZERO);	/* chunk 4 reads as zeros */
		assert_int_equal(pwrite(fd, e, 8, hd.table_offset + 4 * 8), 8);
		close(fd);
	}
	h_open(&h, P("me.img"), COW_FMT_NONE, COW_OPEN_RDONLY, "sync");
	/* unallocated, no backing: zeros nothing decides */
	assert_int_equal(cow_map_extent(h.img, 0, 8 * cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_ZERO);
	assert_false(x.allocated);
	assert_false(x.offset_valid);
	assert_int_equal(x.length, cs + 4096);	/* chunk 0 and chunk 1's clear first block */
	/* data: its place in the file, one chunk at most */
	assert_int_equal(cow_map_extent(h.img, cs + 4096, 8 * cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_DATA);
	assert_true(x.allocated && x.offset_valid);
	assert_int_equal(x.length, 8192);
	assert_int_equal(cow_map(h.img, cs + 4096, 8 * cs, &run, &phys), COW_MAP_DATA);
	assert_int_equal(x.offset, phys);
	assert_int_equal(x.offset % cs, 4096);
	/* the engine reads those bytes from there */
	{
		int fd = open(P("me.img"), O_RDONLY);
		char got[8192];
		assert_int_equal(pread(fd, got, 8192, (off_t)x.offset), 8192);
		assert_memory_equal(got, buf, 8192);
		close(fd);
	}
	assert_int_equal(cow_map_extent(h.img, 2 * cs + 100, cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_DATA);
	assert_int_equal(x.length, 8192 - 100);
	assert_int_equal(x.offset % cs, 100);
	/* chunk 2's clear blocks and chunk 3 (unallocated) join; the ZERO chunk 4 does not */
	assert_int_equal(cow_map_extent(h.img, 2 * cs + 8192, 8 * cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_ZERO);
	assert_false(x.allocated);
	assert_int_equal(x.length, 2 * cs - 8192);
	assert_int_equal(cow_map_extent(h.img, 4 * cs, 8 * cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_ZERO);
	assert_true(x.allocated);
	assert_false(x.offset_valid);
	assert_int_equal(x.length, cs);
	assert_int_equal(cow_map_extent(h.img, 5 * cs, 8 * cs, &x), 0);
	assert_false(x.allocated);
	assert_int_equal(x.length, 3 * cs);	/* clipped at the end */
	/* cow_map keeps joining by status alone */
	assert_int_equal(cow_map(h.img, 2 * cs + 8192, 8 * cs, &run, &phys), COW_MAP_ZERO);
	assert_int_equal(run, 6 * cs - 8192);
	assert_int_equal(cow_map_extent(h.img, 8 * cs, 1, &x), -EINVAL);
	assert_int_equal(cow_map_extent(h.img, 0, 0, &x), -EINVAL);
	h_close(&h);

	/* an overlay: backing runs decide nothing; a raw image decides every byte, in place */
	mkraw(P("mx.raw"), 4 * cs, 0x10);
	mk(P("mx.img"), 0, cs, 4096, "mx.raw", COW_FMT_RAW);
	h_open(&h, P("mx.img"), COW_FMT_NONE, 0, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 4096, cs, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE_ZEROES, NULL, cs, 2 * cs, 0), 0);
	assert_int_equal(cow_map_extent(h.img, 0, 4 * cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_BACKING);
	assert_false(x.allocated);
	assert_int_equal(x.length, cs);
	assert_int_equal(cow_map_extent(h.img, cs + 4096, 4 * cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_BACKING);	/* an allocated chunk's clear blocks */
	assert_false(x.allocated);
	assert_int_equal(x.length, cs - 4096);
	assert_int_equal(cow_map_extent(h.img, 2 * cs, 4 * cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_ZERO);	/* hides the backing image: decided here */
	assert_true(x.allocated);
	struct cow_image *b = cow_backing_image(h.img);
	assert_int_equal(cow_map_extent(b, 5000, 4 * cs, &x), 0);
	assert_int_equal(x.status, COW_MAP_DATA);
	assert_true(x.allocated && x.offset_valid);
	assert_int_equal(x.offset, 5000);
	assert_int_equal(x.length, 4 * cs - 5000);
	h_close(&h);
	/* a raw hole: zeros, decided by the raw file, in place */
	int fd = open(P("mh.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4 << 20), 0);
	assert_int_equal(pwrite(fd, buf, 4096, 2 << 20), 4096);
	close(fd);
	h_open(&h, P("mh.raw"), COW_FMT_RAW, COW_OPEN_RDONLY, "sync");
	assert_int_equal(cow_map_extent(h.img, 4096, 4 << 20, &x), 0);
	assert_int_equal(x.status, COW_MAP_ZERO);
	assert_true(x.allocated && x.offset_valid);
	assert_int_equal(x.offset, 4096);
	assert_int_equal(x.length, (2 << 20) - 4096);
	h_close(&h);
}

/*
 * COW_OPEN_SHARE: a read-only open that takes no lock. It opens an image a writer holds
 * (its flushed writes replayed from the journal in memory), keeps no writer away, writes
 * nothing, and cow_writer_active tells whether a writer holds the image or its chain.
 */
static void test_force_share(void **state)
{
	struct cow_image *w, *r, *r2;
	struct h h;
	char buf[65536], got[65536];
	struct stat st0, st1;
	memset(buf, 0x3c, sizeof(buf));
	mkraw(P("fs.raw"), 1 << 20, 0);
	mk(P("fs.img"), 0, 64 << 10, 4096, "fs.raw", COW_FMT_RAW);
	h_open(&h, P("fs.img"), COW_FMT_NONE, 0, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, sizeof(buf), 128 << 10, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	/* without SHARE the writer keeps readers out */
	assert_int_equal(cow_open(P("fs.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&r, err, COW_ERRLEN), -EBUSY);
	/* SHARE only read-only */
	assert_int_equal(cow_open(P("fs.img"), &(struct cow_open_opts){ .flags = COW_OPEN_SHARE },
			&r, err, COW_ERRLEN), -EINVAL);
	assert_non_null(strstr(err, "read-only"));
	assert_int_equal(cow_open(P("fs.img"), &(struct cow_open_opts){
			.flags = COW_OPEN_RDONLY | COW_OPEN_SHARE }, &r, err, COW_ERRLEN), 0);
	assert_int_equal(cow_writer_active(r), 1);
	struct cow_info in;
	cow_get_info(r, &in);
	assert_true(in.dirty && in.read_only);
	/* the writer's flushed data, from its journal (the table on disk does not have it) */
	struct cow_backend *be;
	struct cow_ctx *ctx;
	assert_int_equal(cow_backend_new("sync", 4, &be), 0);
	assert_int_equal(cow_ctx_new(r, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, got, sizeof(got), 128 << 10, 0), 0);
	assert_memory_equal(got, buf, sizeof(got));
	assert_int_equal(cow_rw(ctx, COW_WRITE, got, 512, 0, 0), -EROFS);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	/* COW_OPEN_CHECK takes SHARE too (ucow check -U) */
	assert_int_equal(cow_open(P("fs.img"), &(struct cow_open_opts){
			.flags = COW_OPEN_CHECK | COW_OPEN_SHARE }, &r2, err, COW_ERRLEN), 0);
	cow_close(r2);
	h_close(&h);
	assert_int_equal(cow_writer_active(r), 0);
	/* a SHARE reader keeps no writer away; it sees it come */
	assert_int_equal(cow_open(P("fs.img"), NULL, &w, err, COW_ERRLEN), 0);
	assert_int_equal(cow_writer_active(r), 1);
	assert_int_equal(cow_close(w), 0);
	assert_int_equal(cow_writer_active(r), 0);
	cow_close(r);
	/* a writer of a backing image: the chain opens with SHARE, and counts */
	mk(P("fs2.img"), 0, 64 << 10, 4096, "fs.img", COW_FMT_UCOW);
	assert_int_equal(cow_open(P("fs.img"), NULL, &w, err, COW_ERRLEN), 0);
	assert_int_equal(cow_open(P("fs2.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&r, err, COW_ERRLEN), -EBUSY);
	assert_int_equal(cow_open(P("fs2.img"), &(struct cow_open_opts){
			.flags = COW_OPEN_RDONLY | COW_OPEN_SHARE }, &r, err, COW_ERRLEN), 0);
	assert_int_equal(cow_writer_active(r), 1);
	assert_int_equal(cow_close(w), 0);
	assert_int_equal(cow_writer_active(r), 0);
	cow_close(r);
	/* a plain read-only open holds a shared lock: its own lock is no writer */
	assert_int_equal(cow_open(P("fs2.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&r, err, COW_ERRLEN), 0);
	assert_int_equal(cow_writer_active(r), 0);
	cow_close(r);
	/* a dirty image (a writer that died after a flush) is left exactly as it was */
	pid_t pid = fork();
	if (!pid) {
		if (cow_open(P("fs.img"), NULL, &h.img, err, COW_ERRLEN) ||
		    cow_backend_new("sync", 4, &h.be) || cow_ctx_new(h.img, h.be, &h.ctx) ||
		    cow_rw(h.ctx, COW_WRITE, buf, 4096, 512 << 10, 0) ||
		    cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0))
			_exit(2);
		_exit(0);	/* no close */
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	int fd = open(P("fs.img"), O_RDONLY);
	assert_int_equal(fstat(fd, &st0), 0);
	char *before = malloc(st0.st_size), *after = malloc(st0.st_size);
	assert_non_null(before);
	assert_non_null(after);
	assert_int_equal(pread(fd, before, st0.st_size, 0), st0.st_size);
	h_open(&h, P("fs.img"), COW_FMT_NONE, COW_OPEN_RDONLY | COW_OPEN_SHARE, "sync");
	assert_int_equal(cow_rw(h.ctx, COW_READ, got, 4096, 512 << 10, 0), 0);
	assert_memory_equal(got, buf, 4096);
	h_close(&h);
	assert_int_equal(fstat(fd, &st1), 0);
	assert_int_equal(st1.st_size, st0.st_size);
	assert_int_equal(pread(fd, after, st1.st_size, 0), st1.st_size);
	assert_memory_equal(before, after, st0.st_size);
	close(fd);
	free(before);
	free(after);
}

/* cow_create_layout: what cow_create makes, and the file of an image with every chunk written. */
static void test_create_layout(void **state)
{
	struct cow_create_opts o = { .size = 5 * (64 << 10) + 1000, .chunk_size = 64 << 10,
				     .block_size = 512, .journal_size = 64 << 10 };
	struct cow_layout l;
	struct stat st;
	struct h h;
	char *buf = malloc(64 << 10);
	assert_non_null(buf);
	memset(buf, 0x11, 64 << 10);
	assert_int_equal(cow_create_layout(&o, &l, err, COW_ERRLEN), 0);
	assert_int_equal(l.chunk_size, 64 << 10);
	assert_int_equal(l.block_size, 512);
	assert_int_equal(l.nr_chunks, 6);
	assert_int_equal(l.full_size, l.data_offset + 6 * (64 << 10));
	unlink(P("cl.img"));
	assert_int_equal(cow_create(P("cl.img"), &o, err, COW_ERRLEN), 0);
	assert_int_equal(stat(P("cl.img"), &st), 0);
	assert_int_equal(st.st_size, l.data_offset);	/* an empty image */
	h_open(&h, P("cl.img"), COW_FMT_NONE, 0, "sync");
	for (uint64_t off = 0; off < o.size; off += 64 << 10) {
		uint64_t n = o.size - off < (64 << 10) ? o.size - off : 64 << 10;
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, n, off, 0), 0);
	}
	h_close(&h);
	assert_int_equal(stat(P("cl.img"), &st), 0);
	assert_int_equal(st.st_size, l.full_size);	/* every chunk written once */
	/* the defaults, and the errors cow_create gives */
	assert_int_equal(cow_create_layout(&(struct cow_create_opts){ .size = 1 << 30 }, &l, err,
			COW_ERRLEN), 0);
	assert_int_equal(l.chunk_size, COW_DEFAULT_CHUNK);
	assert_int_equal(l.block_size, COW_DEFAULT_BLOCK);
	assert_int_equal(l.nr_chunks, 1024);
	assert_int_equal(l.data_offset % COW_DEFAULT_CHUNK, 0);
	assert_int_equal(cow_create_layout(&(struct cow_create_opts){ .size = 0 }, &l, err,
			COW_ERRLEN), -EINVAL);
	assert_non_null(strstr(err, "greater than zero"));
	assert_int_equal(cow_create_layout(&(struct cow_create_opts){ .size = 1 << 20,
			.chunk_size = 3000 }, &l, err, COW_ERRLEN), -EINVAL);
	assert_non_null(strstr(err, "chunk_size"));
	assert_int_equal(cow_create_layout(&(struct cow_create_opts){ .size = 1ull << 60 }, &l,
			err, COW_ERRLEN), -ERANGE);
	assert_int_equal(cow_create_layout(&(struct cow_create_opts){ .size = 1 << 20,
			.reserved = { 1 } }, &l, err, COW_ERRLEN), -EINVAL);
	free(buf);
}

/* A backend that holds back the next write into [lo, hi): an I/O still in flight. */
struct hold_be {
	struct cow_backend be;
	struct cow_backend *inner;
	uint64_t lo, hi;
	bool holding;
	struct cow_io *held;
};

static int hold_queue(struct cow_backend *be, struct cow_io *io)
{
	struct hold_be *h = (struct hold_be *)be;
	if (h->holding && io->op == COW_IO_WRITE && io->off < h->hi && io->off + io->len > h->lo) {
		h->holding = false;
		h->held = io;
		return 0;
	}
	return pass_queue(be, h->inner, io);
}

static int hold_submit_wait(struct cow_backend *be, unsigned min)
{
	return pass_submit_wait(be, ((struct hold_be *)be)->inner, min);
}

static void hold_destroy(struct cow_backend *be) { (void)be; }

static const struct cow_backend_ops hold_ops = { "hold", hold_queue, hold_submit_wait,
						 hold_destroy };

struct req_wait {
	bool done;
	int res;
};

static void req_wait_cb(struct cow_req *req, int res)
{
	struct req_wait *w = req->priv;
	w->done = true;
	w->res = res;
}

/*
 * A write still in flight to a chunk that a discard unmaps must land before the chunk is
 * given to another virtual chunk (J4): otherwise it overwrites that chunk's new data.
 */
static void test_discard_inflight(void **state)
{
	struct h h;
	struct hold_be hb = { .be.ops = &hold_ops };
	struct req_wait w = { 0 };
	uint64_t run, p0, p5, p7;
	const uint32_t cs = 64 << 10;
	char *a = malloc(cs), *b = malloc(cs);
	assert_true(a && b);

	mk(P("if.img"), 4 << 20, cs, 4096, NULL, 0);
	h_open(&h, P("if.img"), COW_FMT_NONE, 0, "sync");
	cow_ctx_free(h.ctx);
	hb.inner = h.be;
	assert_int_equal(cow_ctx_new(h.img, &hb.be, &h.ctx), 0);
	memset(a, 1, cs);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, a, cs, 0, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	assert_int_equal(cow_map(h.img, 0, cs, &run, &p0), COW_MAP_DATA);

	/* an overwrite of chunk 0 (the lock-free path), held in flight */
	hb.lo = p0;
	hb.hi = p0 + cs;
	hb.holding = true;
	memset(b, 9, 4096);
	struct cow_req wr = { .op = COW_WRITE, .off = 0, .len = 4096, .buf = b,
			      .cb = req_wait_cb, .priv = &w };
	cow_submit(h.ctx, &wr);
	assert_false(w.done);
	assert_non_null(hb.held);

	/* discard chunk 0 and make that durable; then a fresh chunk is allocated */
	assert_int_equal(cow_rw(h.ctx, COW_DISCARD, NULL, cs, 0, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	memset(a, 5, cs);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, a, cs, 5 * cs, 0), 0);
	assert_int_equal(cow_map(h.img, 5 * cs, cs, &run, &p5), COW_MAP_DATA);
	assert_true(p5 != p0);		/* not the chunk the held write goes to */

	/* the held write lands now */
	assert_int_equal(hold_queue(&hb.be, hb.held), 0);
	while (!w.done)
		assert_true(hb.be.ops->submit_wait(&hb.be, 1) >= 0);
	assert_int_equal(w.res, 0);
	assert_int_equal(cow_rw(h.ctx, COW_READ, b, cs, 5 * cs, 0), 0);
	assert_memory_equal(a, b, cs);		/* chunk 5 kept its data */

	/* once no I/O is in flight, the next commit frees the chunk, and it is reused */
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, a, cs, 9 * cs, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, a, cs, 7 * cs, 0), 0);
	assert_int_equal(cow_map(h.img, 7 * cs, cs, &run, &p7), COW_MAP_DATA);
	assert_int_equal(p7, p0);
	memset(a, 0, cs);
	assert_int_equal(cow_rw(h.ctx, COW_READ, b, cs, 0, 0), 0);
	assert_memory_equal(a, b, cs);		/* chunk 0 stays discarded */
	h_close(&h);
	free(a);
	free(b);
}

/* Copy a file (the state a dead process left, to look at it twice). */
static void copy_file(const char *from, const char *to)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
	assert_int_equal(system(cmd), 0);
}

static void expect_fill(struct h *h, uint64_t off, uint8_t v)
{
	char buf[8192];
	assert_int_equal(cow_rw(h->ctx, COW_READ, buf, sizeof(buf), off, 0), 0);
	for (size_t k = 0; k < sizeof(buf); k++)
		if ((uint8_t)buf[k] != v)
			fail_msg("offset %llu + %zu: 0x%02x, expected 0x%02x",
				 (unsigned long long)off, k, (uint8_t)buf[k], v);
}

/* Open img with the side log at log (h_open's sync backend); returns the log's fd. */
static int h_open_sidelog(struct h *h, const char *img, const char *log)
{
	int sfd = open(log, O_RDWR);
	assert_true(sfd >= 0);
	if (cow_open(img, &(struct cow_open_opts){ .flags = COW_OPEN_SIDELOG, .sidelog_fd = sfd },
			&h->img, err, COW_ERRLEN))
		fail_msg("open %s with %s: %s", img, log, err);
	assert_int_equal(cow_backend_new("sync", 8, &h->be), 0);
	assert_int_equal(cow_ctx_new(h->img, h->be, &h->ctx), 0);
	return sfd;
}

/*
 * The side log (sidelog.c): a process dies with acknowledged, unflushed writes and a discard;
 * the image's journal alone loses them, the next open with the side log has every one. A
 * side log older than the image's last read-write open is ignored.
 */
static void test_sidelog(void **state)
{
	const uint64_t cs = 64 << 10;
	mk(P("sl.img"), 8 << 20, cs, 4096, NULL, 0);
	unlink(P("side.log"));
	pid_t pid = fork();
	if (!pid) {
		struct h h;
		char a[8192];
		int sfd = open(P("side.log"), O_RDWR | O_CREAT, 0600);
		if (sfd < 0 || cow_open(P("sl.img"), &(struct cow_open_opts){
				.flags = COW_OPEN_SIDELOG, .sidelog_fd = sfd }, &h.img, err, COW_ERRLEN) ||
		    cow_backend_new("uring", 8, &h.be) || cow_ctx_new(h.img, h.be, &h.ctx))
			_exit(2);
		for (int i = 0; i < 100; i++) {
			memset(a, 1 + i, sizeof(a));
			if (cow_rw(h.ctx, COW_WRITE, a, sizeof(a), (uint64_t)i * cs + 4096, 0))
				_exit(3);
			if (i == 39 && cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0))
				_exit(4);
		}
		/* a flushed chunk discarded, two written again: none of it flushed */
		if (cow_rw(h.ctx, COW_DISCARD, NULL, cs, 5 * cs, 0))
			_exit(5);
		memset(a, 0xee, sizeof(a));
		if (cow_rw(h.ctx, COW_WRITE, a, sizeof(a), 7 * cs + 4096, 0) ||
		    cow_rw(h.ctx, COW_WRITE, a, sizeof(a), 77 * cs + 4096, 0))
			_exit(6);
		_exit(0);	/* the process dies: no flush, no close */
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	copy_file(P("sl.img"), P("sl-nolog.img"));
	copy_file(P("side.log"), P("side-old.log"));
	copy_file(P("sl.img"), P("sl-torn.img"));
	copy_file(P("side.log"), P("side-torn.log"));

	/* the journal alone: the flushed writes are there, the later ones are not */
	struct h h;
	h_open(&h, P("sl-nolog.img"), COW_FMT_NONE, COW_OPEN_RDONLY, "sync");
	expect_fill(&h, 4096, 1);
	expect_fill(&h, 39 * cs + 4096, 40);
	expect_fill(&h, 40 * cs + 4096, 0);
	expect_fill(&h, 77 * cs + 4096, 0);
	h_close(&h);

	/* with the side log: every acknowledged write and the discard */
	int sfd = h_open_sidelog(&h, P("sl.img"), P("side.log"));
	for (int i = 0; i < 100; i++)
		if (i != 5 && i != 7 && i != 77)
			expect_fill(&h, (uint64_t)i * cs + 4096, (uint8_t)(1 + i));
	expect_fill(&h, 5 * cs + 4096, 0);
	expect_fill(&h, 7 * cs + 4096, 0xee);
	expect_fill(&h, 77 * cs + 4096, 0xee);
	struct stat st;
	assert_int_equal(fstat(sfd, &st), 0);
	assert_int_equal(st.st_size, 0);	/* folded, made durable, started again */
	h_close(&h);
	close(sfd);
	check_clean(P("sl.img"));

	/* a damaged record ends the log: what comes before it is folded, nothing after it */
	sfd = open(P("side-torn.log"), O_RDWR);
	assert_true(sfd >= 0);
	assert_int_equal(fstat(sfd, &st), 0);
	assert_int_equal(st.st_size % 101, 0);		/* 100 writes and the discard */
	off_t rsz = st.st_size / 101;
	char byte;
	assert_int_equal(pread(sfd, &byte, 1, 60 * rsz + 30), 1);
	byte ^= 0x10;
	assert_int_equal(pwrite(sfd, &byte, 1, 60 * rsz + 30), 1);
	close(sfd);
	sfd = h_open_sidelog(&h, P("sl-torn.img"), P("side-torn.log"));
	expect_fill(&h, 59 * cs + 4096, 60);
	for (int i = 60; i < 100; i++)
		expect_fill(&h, (uint64_t)i * cs + 4096, 0);
	h_close(&h);
	close(sfd);
	check_clean(P("sl-torn.img"));

	/* a stale log is not folded: another process opened the image read-write since (it
	 * reused the chunks the log maps, flushed, and died too) */
	pid = fork();
	if (!pid) {
		char a[8192];
		memset(a, 0x55, sizeof(a));
		if (cow_open(P("sl-nolog.img"), NULL, &h.img, err, COW_ERRLEN) ||
		    cow_backend_new("uring", 8, &h.be) || cow_ctx_new(h.img, h.be, &h.ctx))
			_exit(2);
		for (int i = 120; i < 128; i++)
			if (cow_rw(h.ctx, COW_WRITE, a, sizeof(a), (uint64_t)i * cs + 4096, 0))
				_exit(3);
		_exit(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0) ? 4 : 0);
	}
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	sfd = h_open_sidelog(&h, P("sl-nolog.img"), P("side-old.log"));
	expect_fill(&h, 39 * cs + 4096, 40);
	for (int i = 40; i < 100; i++)
		expect_fill(&h, (uint64_t)i * cs + 4096, 0);
	for (int i = 120; i < 128; i++)
		expect_fill(&h, (uint64_t)i * cs + 4096, 0x55);
	h_close(&h);
	close(sfd);
	check_clean(P("sl-nolog.img"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_standalone),
		cmocka_unit_test(test_random_overlay_raw),
		cmocka_unit_test(test_random_overlay_ucow),
		cmocka_unit_test(test_io_cost),
		cmocka_unit_test(test_concurrent_alloc),
		cmocka_unit_test(test_replay),
		cmocka_unit_test(test_torn_commit),
		cmocka_unit_test(test_hostile_table),
		cmocka_unit_test(test_locking),
		cmocka_unit_test(test_backing_chain),
		cmocka_unit_test(test_map),
		cmocka_unit_test(test_map_extent),
		cmocka_unit_test(test_force_share),
		cmocka_unit_test(test_create_layout),
		cmocka_unit_test(test_discard_inflight),
		cmocka_unit_test(test_sidelog),
	};
	return UNIT_RUN(tests);
}
