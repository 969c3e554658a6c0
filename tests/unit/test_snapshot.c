/*
 * Snapshots: the tree example, random create/apply/delete against per-snapshot models (with
 * and without a backing image), no refcount I/O on the write path (a counting backend),
 * space returned after deletes, and power loss during create, apply and delete (crashsim.h:
 * the image opens as before or as after, and checks without corruption).
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
#include "crashsim.h"

static void h_open(struct h *h, const char *path, unsigned flags)
{
	if (cow_open(path, &(struct cow_open_opts){ .flags = flags }, &h->img, err, COW_ERRLEN))
		fail_msg("open %s: %s", path, err);
	assert_int_equal(cow_backend_new("sync", 16, &h->be), 0);
	assert_int_equal(cow_ctx_new(h->img, h->be, &h->ctx), 0);
}

static void h_ctx(struct h *h)
{
	assert_int_equal(cow_backend_new("sync", 16, &h->be), 0);
	assert_int_equal(cow_ctx_new(h->img, h->be, &h->ctx), 0);
}

static void h_close(struct h *h)
{
	cow_ctx_free(h->ctx);
	cow_backend_free(h->be);
	assert_int_equal(cow_close(h->img), 0);
}

static void mk(const char *path, uint64_t size, const char *backing)
{
	struct cow_create_opts o = { .size = size, .chunk_size = 64 << 10, .block_size = 4096,
				     .backing = backing, .backing_fmt = backing ? COW_FMT_RAW : 0 };
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
}

static void wr(struct h *h, uint8_t pat, uint64_t off, uint64_t len)
{
	char *b = malloc(len);
	memset(b, pat, len);
	assert_int_equal(cow_rw(h->ctx, COW_WRITE, b, len, off, 0), 0);
	free(b);
}

/* Read the whole content of img (or of snapshot snap) and compare with model. */
static void verify(const char *path, const char *snap, const uint8_t *model, uint64_t size)
{
	struct h h;
	uint8_t *b = malloc(size);
	if (snap) {
		if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY,
			     .snapshot = snap }, &h.img, err, COW_ERRLEN))
			fail_msg("open snapshot %s: %s", snap, err);
		h_ctx(&h);
	} else {
		h_open(&h, path, COW_OPEN_RDONLY);
	}
	assert_int_equal(cow_rw(h.ctx, COW_READ, b, size, 0, 0), 0);
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
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err, COW_ERRLEN))
		fail_msg("open for check: %s", err);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict && !(leaks_ok && cr.verdict == 3))
		fail_msg("check verdict %d: %s", cr.verdict, cr.first_problem);
	cow_close(img);
}

#define SZ (4u << 20)

static void test_tree(void **state)
{
	struct h h;
	static uint8_t m[6][SZ], cur[SZ];
	const char *names[] = { NULL, "s1", "s2", "s3", "s4", "s5" };
	mk(P("tree.img"), SZ, NULL);
	h_open(&h, P("tree.img"), 0);
	for (int i = 1; i <= 4; i++) {
		/* unaligned, and each over the last one's chunks: the first writes after a
		 * create copy SHARED chunks in the same open */
		wr(&h, 0x10 * i, (uint64_t)i * 150000, 200000);
		memset(cur + i * 150000, 0x10 * i, 200000);
		memcpy(m[i], cur, SZ);
		assert_int_equal(cow_snapshot_create(h.img, names[i]), 0);
	}
	assert_int_equal(cow_snapshot_create(h.img, "s1"), -EEXIST);
	assert_int_equal(cow_snapshot_apply(h.img, "s2"), 0);
	memcpy(cur, m[2], SZ);
	wr(&h, 0x77, 100, 3000000);
	memset(cur + 100, 0x77, 3000000);
	memcpy(m[5], cur, SZ);
	assert_int_equal(cow_snapshot_create(h.img, "s5"), 0);
	assert_int_equal(cow_snapshot_apply(h.img, "4"), 0);	/* by id */
	memcpy(cur, m[4], SZ);
	wr(&h, 0x99, 65536 * 3 + 7, 5000);
	memset(cur + 65536 * 3 + 7, 0x99, 5000);
	struct cow_snap_info *si;
	uint32_t n;
	assert_int_equal(cow_snapshot_list(h.img, &si, &n), 0);
	assert_int_equal(n, 5);
	assert_string_equal(si[4].name, "s5");
	assert_int_equal(si[4].parent, 2);	/* s5 branched from s2 */
	assert_int_equal(si[1].parent, 1);
	assert_true(si[3].current_parent);	/* the current state descends from s4 */
	free(si);
	h_close(&h);
	/* an image with snapshots opens with O_DIRECT too, and its first writes copy */
	assert_int_equal(cow_open(P("tree.img"), &(struct cow_open_opts){
			 .flags = COW_OPEN_DIRECT }, &h.img, err, COW_ERRLEN), 0);
	h_ctx(&h);
	char *d = NULL;
	assert_int_equal(posix_memalign((void **)&d, 4096, 8192), 0);
	memset(d, 0x5e, 8192);
	assert_int_equal(cow_rw(h.ctx, COW_WRITE, d, 8192, 1 << 20, 0), 0);
	memset(cur + (1 << 20), 0x5e, 8192);
	free(d);
	h_close(&h);
	verify(P("tree.img"), NULL, cur, SZ);
	for (int i = 1; i <= 5; i++)
		verify(P("tree.img"), names[i], m[i], SZ);
	check_ok(P("tree.img"), false);
	/* delete them all after an apply: the moved table stays valid, the image opens */
	h_open(&h, P("tree.img"), 0);
	for (int i = 1; i <= 5; i++)
		assert_int_equal(cow_snapshot_delete(h.img, names[i]), 0);
	h_close(&h);
	verify(P("tree.img"), NULL, cur, SZ);
	check_ok(P("tree.img"), false);
	h_open(&h, P("tree.img"), 0);	/* and it takes new snapshots */
	assert_int_equal(cow_snapshot_create(h.img, "again"), 0);
	h_close(&h);
	verify(P("tree.img"), "again", cur, SZ);
}

/* Random operations with snapshot create/apply/delete; every live snapshot checked. */
static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return rs;
}

static void random_snaps(const char *path, const char *base, uint8_t fill)
{
	struct h h;
	enum { MAXS = 6 };
	static uint8_t cur[SZ], snapm[MAXS][SZ];
	char sname[MAXS][16];
	bool live[MAXS] = { 0 };
	int counter = 0;
	memset(cur, 0, SZ);
	if (base) {
		int fd = open(base, O_RDONLY);
		assert_int_equal(pread(fd, cur, SZ, 0), SZ);
		close(fd);
	}
	(void)fill;
	mk(path, SZ, base ? "rbase.raw" : NULL);
	h_open(&h, path, 0);
	for (int step = 0; step < 300; step++) {
		int op = rnd() % 20;
		if (op < 10) {
			uint64_t len = 1 + rnd() % 200000, off = rnd() % (SZ - len);
			uint8_t pat = rnd();
			wr(&h, pat, off, len);
			memset(cur + off, pat, len);
		} else if (op < 13) {
			uint64_t len = 1 + rnd() % 300000, off = rnd() % (SZ - len);
			assert_int_equal(cow_rw(h.ctx, rnd() % 2 ? COW_DISCARD : COW_WRITE_ZEROES, NULL,
						len, off, 0), 0);
			memset(cur + off, 0, len);
		} else if (op < 15) {
			int k = rnd() % MAXS;
			if (live[k])
				continue;
			snprintf(sname[k], sizeof(sname[k]), "snap%d", counter++);
			assert_int_equal(cow_snapshot_create(h.img, sname[k]), 0);
			memcpy(snapm[k], cur, SZ);
			live[k] = true;
		} else if (op < 17) {
			int k = rnd() % MAXS;
			if (!live[k])
				continue;
			assert_int_equal(cow_snapshot_apply(h.img, sname[k]), 0);
			memcpy(cur, snapm[k], SZ);
		} else if (op < 18) {
			int k = rnd() % MAXS;
			if (!live[k])
				continue;
			assert_int_equal(cow_snapshot_delete(h.img, sname[k]), 0);
			live[k] = false;
		} else {
			cow_ctx_free(h.ctx);
			cow_backend_free(h.be);
			assert_int_equal(cow_close(h.img), 0);
			verify(path, NULL, cur, SZ);
			for (int k = 0; k < MAXS; k++)
				if (live[k])
					verify(path, sname[k], snapm[k], SZ);
			check_ok(path, false);
			h_open(&h, path, 0);
		}
	}
	h_close(&h);
	verify(path, NULL, cur, SZ);
	for (int k = 0; k < MAXS; k++)
		if (live[k])
			verify(path, sname[k], snapm[k], SZ);
	check_ok(path, false);
}

static void test_random(void **state)
{
	random_snaps(P("rs.img"), NULL, 0);
	int fd = open(P("rbase.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	uint8_t *b = malloc(SZ);
	for (unsigned i = 0; i < SZ; i++)
		b[i] = (uint8_t)(i / 4096 + 1);
	assert_int_equal(pwrite(fd, b, SZ, 0), SZ);
	close(fd);
	free(b);
	random_snaps(P("rso.img"), P("rbase.raw"), 1);
}

/* A backend that counts the writes that land in a byte range, then does them. */
struct counting_be {
	struct cow_backend be;
	struct cow_backend *inner;
	uint64_t lo, hi, hits, writes;
};

static int cnt_queue(struct cow_backend *be, struct cow_io *io)
{
	struct counting_be *c = (struct counting_be *)be;
	if (io->op == COW_IO_WRITE || io->op == COW_IO_PUNCH || io->op == COW_IO_ZERO_RANGE) {
		c->writes++;
		if (io->off < c->hi && io->off + io->len > c->lo)
			c->hits++;
	}
	return pass_queue(be, c->inner, io);
}

static int cnt_submit_wait(struct cow_backend *be, unsigned min)
{
	return pass_submit_wait(be, ((struct counting_be *)be)->inner, min);
}

static void cnt_destroy(struct cow_backend *be) { (void)be; }

static const struct cow_backend_ops cnt_ops = { "counting", cnt_queue, cnt_submit_wait, cnt_destroy };

static void test_no_refcount_io(void **state)
{
	struct h h;
	struct counting_be cb = { .be.ops = &cnt_ops };
	mk(P("rc.img"), 32 << 20, NULL);
	h_open(&h, P("rc.img"), 0);
	for (int i = 0; i < 32 * 16; i++)	/* fill every chunk */
		wr(&h, 1, (uint64_t)i * 65536, 65536);
	assert_int_equal(cow_snapshot_create(h.img, "one"), 0);
	cb.lo = h.img->hdr.refcount_offset;
	cb.hi = cb.lo + h.img->hdr.refcount_size;
	assert_true(cb.hi > cb.lo);
	cow_ctx_free(h.ctx);
	cow_backend_free(h.be);
	assert_int_equal(cow_backend_new("sync", 16, &cb.inner), 0);
	assert_int_equal(cow_ctx_new(h.img, &cb.be, &h.ctx), 0);
	struct cow_stats a, b;
	cow_get_stats(h.img, &a);
	char buf[4096];
	memset(buf, 2, sizeof(buf));
	for (int i = 0; i < 32 * 16; i++)	/* first write after the snapshot: copy */
		assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, 4096, (uint64_t)i * 65536, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	cow_get_stats(h.img, &b);
	assert_int_equal(b.allocations - a.allocations, 32 * 16);
	assert_true(cb.writes >= 32 * 16);
	assert_int_equal(cb.hits, 0);		/* no refcount table I/O at all */
	assert_int_equal(b.checkpoints, a.checkpoints);
	cow_ctx_free(h.ctx);
	cow_backend_free(cb.inner);
	h.ctx = NULL;
	h.be = NULL;
	assert_int_equal(cow_close(h.img), 0);
	check_ok(P("rc.img"), false);
}

static uint64_t usage(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

static void test_delete_reclaims(void **state)
{
	struct h h;
	mk(P("del.img"), 16 << 20, NULL);
	h_open(&h, P("del.img"), 0);
	wr(&h, 1, 0, 16 << 20);
	for (int s = 0; s < 5; s++) {
		char n[8];
		snprintf(n, sizeof(n), "s%d", s);
		assert_int_equal(cow_snapshot_create(h.img, n), 0);
		wr(&h, 2 + s, 0, 16 << 20);	/* every chunk copied again */
	}
	h_close(&h);
	uint64_t before = usage(P("del.img"));
	assert_true(before > 90ull << 20);
	h_open(&h, P("del.img"), 0);
	for (int s = 0; s < 5; s++) {
		char n[8];
		snprintf(n, sizeof(n), "s%d", s);
		assert_int_equal(cow_snapshot_delete(h.img, n), 0);
	}
	/* the freed chunks are punched after the deletes, by cow_reclaim, in slices */
	uint64_t pending = usage(P("del.img"));
	assert_true(pending > 80ull << 20);
	assert_int_equal(cow_reclaim(h.img, 1 << 20), 1);
	assert_true(usage(P("del.img")) < pending);
	assert_true(usage(P("del.img")) > pending - (2u << 20));	/* about one slice */
	assert_int_equal(cow_reclaim(h.img, 0), 0);
	assert_int_equal(cow_reclaim(h.img, 0), 0);
	uint64_t after = usage(P("del.img"));
	assert_true(after < (16u << 20) + (2u << 20));	/* data + metadata */
	/* reclaimed chunks are reused: one more snapshot generation does not grow the file */
	struct stat st0, st1;
	assert_int_equal(stat(P("del.img"), &st0), 0);
	assert_int_equal(cow_snapshot_create(h.img, "again"), 0);
	wr(&h, 6, 0, 16 << 20);
	assert_int_equal(cow_snapshot_delete(h.img, "again"), 0);
	h_close(&h);	/* close punches what is left */
	assert_int_equal(stat(P("del.img"), &st1), 0);
	assert_true(st1.st_size <= st0.st_size);
	after = usage(P("del.img"));
	printf("disk usage: %llu KiB with 5 snapshots, %llu KiB after deleting them\n",
	       (unsigned long long)(before >> 10), (unsigned long long)(after >> 10));
	assert_true(after < (16u << 20) + (2u << 20));
	check_ok(P("del.img"), false);
	uint8_t *m = malloc(16 << 20);
	memset(m, 6, 16 << 20);
	verify(P("del.img"), NULL, m, 16 << 20);
	free(m);
}

/*
 * Power loss during each snapshot operation (crashsim.h): every write, punch, size change and
 * sync of the operation is recorded; at each of its syncs, after it returned, and after a
 * flush that follows it, crash images are built from the durable state plus subsets of the
 * events since, torn at 512-byte sectors. Each opens as before the operation or as after it
 * (after, once it returned), never in between; no corruption; snapshot "a" (unless deleted)
 * and a created "new" read exactly their content.
 *
 * The "pending" runs leave a write unflushed when the operation starts: it copies on write a
 * chunk that "a" holds, so its journal record is not committed yet. The operation's
 * checkpoint (S1) must make it durable before anything else changes: a delete that freed
 * a's chunk on the strength of the new mapping in memory would leave the image on disk
 * pointing at a hole, and an apply that kept the record queued would later commit a mapping
 * of the old table on top of the snapshot's. The current state may show the write or not;
 * "new" must hold it (it was taken from the state in memory).
 */
enum sop { OP_CREATE, OP_APPLY, OP_DELETE };

static struct {
	enum sop op;
	bool returned;			/* the operation returned: only "after" is allowed */
	unsigned befores, afters;
	bool pending;			/* a write was left unflushed before the operation */
	uint8_t before[SZ], after_a[SZ], snap_a[SZ], cur[SZ];
	uint8_t before_w[SZ], after_w[SZ];	/* pending: before and after with that write */
} co;

static int do_op(struct cow_image *img, enum sop op)
{
	switch (op) {
	case OP_CREATE: return cow_snapshot_create(img, "new");
	case OP_APPLY: return cow_snapshot_apply(img, "a");
	default: {	/* and hand the freed chunks back to the file system, as the server does */
		int r = cow_snapshot_delete(img, "a");
		return r ? r : cow_reclaim(img, 0);
	}
	}
}

static void crash_op_verify(struct crashsim *cs, const char *what)
{
	struct cow_image *img;
	struct cow_snap_info *si;
	uint32_t ns;
	struct h v;
	if (cow_open(cs->crash, NULL, &img, err, COW_ERRLEN))
		fail_msg("crash point %u (%s): open: %s", cs->points, what, err);
	assert_int_equal(cow_snapshot_list(img, &si, &ns), 0);
	bool has_a = false, has_new = false;
	for (uint32_t i = 0; i < ns; i++) {
		has_a |= !strcmp(si[i].name, "a");
		has_new |= !strcmp(si[i].name, "new");
	}
	free(si);
	assert_int_equal(cow_close(img), 0);
	check_ok(cs->crash, true);
	h_open(&v, cs->crash, COW_OPEN_RDONLY);
	assert_int_equal(cow_rw(v.ctx, COW_READ, co.cur, SZ, 0, 0), 0);
	h_close(&v);
	bool is_before = !memcmp(co.cur, co.before, SZ) ||
			 (co.pending && !memcmp(co.cur, co.before_w, SZ));
	bool is_after = !memcmp(co.cur, co.after_a, SZ) ||
			(co.pending && !memcmp(co.cur, co.after_w, SZ));
	if (!is_before && !is_after)
		fail_msg("crash point %u (%s): the current state is neither before nor after",
			 cs->points, what);
	/* the snapshot list says which side of the switch (S3) the image is on */
	bool after = co.op == OP_CREATE ? has_new : co.op == OP_DELETE ? !has_a : is_after;
	if (co.op != OP_DELETE && !has_a)
		fail_msg("crash point %u (%s): snapshot a is gone", cs->points, what);
	if (co.op != OP_APPLY && !is_before)
		fail_msg("crash point %u (%s): the current state changed", cs->points, what);
	if (co.returned && !after)
		fail_msg("crash point %u (%s): the operation returned, the image is as before",
			 cs->points, what);
	co.befores += !after;
	co.afters += after;
	if (has_a)
		verify(cs->crash, "a", co.snap_a, SZ);
	if (has_new)
		verify(cs->crash, "new", co.pending ? co.before_w : co.before, SZ);
}

static void crash_op(enum sop op, bool pending)
{
	static struct crashsim cs;
	struct cs_be rb;
	struct h h;
	mk(P("cr.img"), SZ, NULL);
	h_open(&h, P("cr.img"), 0);
	wr(&h, 0xa, 0, SZ / 2);
	assert_int_equal(cow_snapshot_create(h.img, "a"), 0);
	wr(&h, 0xb, SZ / 4, SZ / 2);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	memset(co.snap_a, 0, SZ);
	memset(co.snap_a, 0xa, SZ / 2);
	memcpy(co.before, co.snap_a, SZ);
	memset(co.before + SZ / 4, 0xb, SZ / 2);
	memcpy(co.after_a, op == OP_APPLY ? co.snap_a : co.before, SZ);
	memcpy(co.before_w, co.before, SZ);
	memset(co.before_w + 4096, 0xc, 8192);	/* in chunk 0, which "a" holds */
	memcpy(co.after_w, op == OP_APPLY ? co.snap_a : co.before_w, SZ);
	if (pending)
		wr(&h, 0xc, 4096, 8192);
	co.pending = pending;
	co.op = op;
	co.returned = false;
	co.befores = co.afters = 0;

	cs_free(&cs);
	memset(&cs, 0, sizeof(cs));
	cs.rng = cs_seed(op == OP_CREATE ? "crash create" : op == OP_APPLY ? "crash apply" :
			 "crash delete");
	cs.subsets = 12;
	cs.verify = crash_op_verify;
	snprintf(cs.crash, sizeof(cs.crash), "%s", P("cr-crash.img"));
	cs_be_init(&rb, &cs, h.be);
	cow_ctx_free(h.ctx);
	assert_int_equal(cow_ctx_new(h.img, &rb.be, &h.ctx), 0);
	cs_attach(&cs, h.img);
	assert_int_equal(do_op(h.img, op), 0);
	co.returned = true;
	cs_crash_point(&cs);
	assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	cs_crash_point(&cs);
	print_message("%u crash points, %u crash images (%u torn writes): %u before, %u after\n",
		      cs.points, cs.images, cs.torn, co.befores, co.afters);
	assert_true(cs.points > 2);
	assert_true(co.befores > 0 && co.afters > 0);
	h.img->tap = NULL;
	h_close(&h);
	cs_free(&cs);
}

static void test_crash_create(void **state) { crash_op(OP_CREATE, false); }
static void test_crash_apply(void **state) { crash_op(OP_APPLY, false); }
static void test_crash_delete(void **state) { crash_op(OP_DELETE, false); }
static void test_crash_create_pending(void **state) { crash_op(OP_CREATE, true); }
static void test_crash_apply_pending(void **state) { crash_op(OP_APPLY, true); }
static void test_crash_delete_pending(void **state) { crash_op(OP_DELETE, true); }

/* cow_snapshot_list needs no pause: it runs while another thread writes, allocates and
 * discards (the TSan build checks the sharing). */
struct lister_arg {
	struct cow_image *img;
	int stop;
	int rounds;
};

static void *lister(void *arg)
{
	struct lister_arg *a = arg;
	while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
		struct cow_snap_info *v;
		uint32_t n;
		if (cow_snapshot_list(a->img, &v, &n) || n != 2)
			return (void *)1;
		free(v);
		a->rounds++;
	}
	return NULL;
}

static void test_list_under_io(void **state)
{
	struct h h;
	struct lister_arg a = { 0 };
	pthread_t t;
	char buf[8192];
	mk(P("lio.img"), 8 << 20, NULL);
	h_open(&h, P("lio.img"), 0);
	wr(&h, 1, 0, 8 << 20);
	assert_int_equal(cow_snapshot_create(h.img, "a"), 0);
	assert_int_equal(cow_snapshot_create(h.img, "b"), 0);
	a.img = h.img;
	assert_int_equal(pthread_create(&t, NULL, lister, &a), 0);
	uint64_t x = 12345;
	for (int i = 0; i < 3000; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t off = (x >> 20) % ((8 << 20) / 4096) * 4096;
		int op = (int)((x >> 12) % 8);
		if (op == 0)	/* whole-chunk discard: unmap */
			assert_int_equal(cow_rw(h.ctx, COW_DISCARD, NULL, 65536, off & ~65535ull, 0), 0);
		else if (op == 1)
			assert_int_equal(cow_rw(h.ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
		else if (off + sizeof(buf) <= (8u << 20)) {
			memset(buf, (int)i, sizeof(buf));
			assert_int_equal(cow_rw(h.ctx, COW_WRITE, buf, sizeof(buf), off, 0), 0);
		}
	}
	__atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
	void *ret;
	assert_int_equal(pthread_join(t, &ret), 0);
	assert_null(ret);
	assert_true(a.rounds > 0);
	h_close(&h);
	check_ok(P("lio.img"), false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tree),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_no_refcount_io),
		cmocka_unit_test(test_delete_reclaims),
		cmocka_unit_test(test_list_under_io),
		cmocka_unit_test(test_crash_create),
		cmocka_unit_test(test_crash_apply),
		cmocka_unit_test(test_crash_delete),
		cmocka_unit_test(test_crash_create_pending),
		cmocka_unit_test(test_crash_apply_pending),
		cmocka_unit_test(test_crash_delete_pending),
	};
	return UNIT_RUN(tests);
}
