/*
 * Power loss, with the writes since the last sync persisted in any subset.
 *
 * Every write, punch, size change and sync that reaches the image file is recorded: the
 * engine's own metadata I/O through img->tap, its data and journal I/O through a recording
 * backend (the "sync" backend underneath: one I/O at a time, in queue order). The records
 * drive a model of the disk: the content the last sync made durable, plus the events since.
 * Just before every sync and after every request, crash images are built from the durable
 * content plus a random subset of the events since (in their order: a sector ends up old,
 * or as one of the writes to it), and opened read-write (journal replay, validation,
 * clean-up). Each must open, `check` must find no corruption, and every sector must read a
 * value it may hold: its value at the last completed flush or one written to it since, never
 * another sector's data, never garbage. Workloads: a standalone image and an overlay over a
 * raw base, random writes of 512 B to 64 KiB, discards, write-zeroes, flushes, a journal of
 * the minimum size (so checkpoints run often), snapshot create and delete.
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#define UNIT_TMP "/dev/shm"	/* thousands of fdatasyncs: on tmpfs they cost nothing */
#include "unit.h"

#define VSIZE (4u << 20)
#define NSECT (VSIZE / 512)
#define SUBSETS 2		/* random subsets per crash point, besides "none" and "all" */

enum { EV_WRITE, EV_PUNCH, EV_TRUNC };

struct ev {
	int kind;
	uint64_t off, len;
	uint8_t *data;
};

/* A write the guest made since its last completed flush: [s, s + n) sectors hold tag. */
struct gw {
	uint32_t s, n, tag;
};

struct sim {
	/* the disk */
	int fd;				/* the image file (its I/O is what is recorded) */
	uint8_t *dur;			/* durable content */
	uint64_t dur_size, dur_cap;
	struct ev *ev;
	size_t nev, ev_cap;
	/* the guest's view */
	uint32_t flushed[NSECT];	/* tag at the last completed flush (0: zeros) */
	struct gw *gw;
	size_t ngw, gw_cap;
	/* the run */
	uint64_t rng;
	unsigned checks, crash_opens;
	bool in_check;
	const char *crash;		/* where crash images are built */
	struct cow_backend *inner;
};

static uint64_t rnd(struct sim *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	assert_non_null(q);
	return q;
}

/* ---- the disk model ------------------------------------------------------------------------ */

static void buf_size(uint8_t **b, uint64_t *size, uint64_t *cap, uint64_t want)
{
	if (want > *cap) {
		uint64_t c = *cap ? *cap : 1 << 20;
		while (c < want)
			c *= 2;
		*b = xrealloc(*b, c);
		*cap = c;
	}
	if (want > *size)
		memset(*b + *size, 0, want - *size);
	*size = want;
}

static void ev_apply(const struct ev *e, uint8_t **b, uint64_t *size, uint64_t *cap)
{
	switch (e->kind) {
	case EV_WRITE:
		if (e->off + e->len > *size)
			buf_size(b, size, cap, e->off + e->len);
		memcpy(*b + e->off, e->data, e->len);
		break;
	case EV_PUNCH:
		if (e->off < *size)
			memset(*b + e->off, 0, (e->off + e->len < *size ? e->off + e->len : *size) - e->off);
		break;
	case EV_TRUNC:
		buf_size(b, size, cap, e->off);
		break;
	}
}

static void ev_add(struct sim *s, int kind, uint64_t off, uint64_t len, const void *data)
{
	if (s->nev == s->ev_cap) {
		s->ev_cap = s->ev_cap ? s->ev_cap * 2 : 64;
		s->ev = xrealloc(s->ev, s->ev_cap * sizeof(*s->ev));
	}
	struct ev *e = &s->ev[s->nev++];
	*e = (struct ev){ .kind = kind, .off = off, .len = len };
	if (data) {
		e->data = malloc(len);
		assert_non_null(e->data);
		memcpy(e->data, data, len);
	}
}

static void crash_check(struct sim *s);

/* A sync: first crash in the window it closes, then everything in it is durable. */
static void disk_sync(struct sim *s)
{
	crash_check(s);
	for (size_t i = 0; i < s->nev; i++) {
		ev_apply(&s->ev[i], &s->dur, &s->dur_size, &s->dur_cap);
		free(s->ev[i].data);
	}
	s->nev = 0;
}

static int tap_write(void *arg, const void *buf, size_t len, uint64_t off)
{
	ev_add(arg, EV_WRITE, off, len, buf);
	return 0;
}

static int tap_punch(void *arg, uint64_t off, uint64_t len)
{
	ev_add(arg, EV_PUNCH, off, len, NULL);
	return 0;
}

static int tap_truncate(void *arg, uint64_t size)
{
	ev_add(arg, EV_TRUNC, size, 0, NULL);
	return 0;
}

static int tap_sync(void *arg)
{
	disk_sync(arg);
	return 0;
}

/* The recording backend: the data and journal I/O of the image file. */
struct rec_be {
	struct cow_backend be;
	struct sim *s;
};

static int rec_queue(struct cow_backend *be, struct cow_io *io)
{
	struct sim *s = ((struct rec_be *)be)->s;
	if (io->fd == s->fd) {
		if (io->op == COW_IO_WRITE)
			ev_add(s, EV_WRITE, io->off, io->len, io->buf);
		else if (io->op == COW_IO_PUNCH || io->op == COW_IO_ZERO_RANGE)
			ev_add(s, EV_PUNCH, io->off, io->len, NULL);
		else if (io->op == COW_IO_FSYNC)
			disk_sync(s);
	}
	return pass_queue(be, s->inner, io);
}

static int rec_submit_wait(struct cow_backend *be, unsigned min)
{
	return pass_submit_wait(be, ((struct rec_be *)be)->s->inner, min);
}

static void rec_destroy(struct cow_backend *be) { (void)be; }

static const struct cow_backend_ops rec_ops = { "recording", rec_queue, rec_submit_wait,
						rec_destroy };

/* ---- the guest's data ---------------------------------------------------------------------- */

/* Sector lba written with tag: (tag, lba) pairs, so misplaced data is told apart. */
static void fill(uint8_t *b, uint32_t lba, uint32_t n, uint32_t tag)
{
	for (uint32_t i = 0; i < n; i++)
		for (unsigned k = 0; k < 512; k += 8) {
			put_le32(b + i * 512 + k, tag);
			put_le32(b + i * 512 + k + 4, lba + i);
		}
}

/* The tag a sector holds, or -1 if it is neither zeros nor a whole (tag, lba) sector. */
static int64_t tag_of(const uint8_t *b, uint32_t lba)
{
	uint32_t tag = get_le32(b);
	bool zero = true;
	for (unsigned k = 0; k < 512; k++)
		if (b[k]) {
			zero = false;
			break;
		}
	if (zero)
		return 0;
	for (unsigned k = 0; k < 512; k += 8)
		if (get_le32(b + k) != tag || get_le32(b + k + 4) != lba)
			return -1;
	return tag;
}

static bool allowed(struct sim *s, uint32_t lba, uint32_t tag)
{
	if (s->flushed[lba] == tag)
		return true;
	for (size_t i = 0; i < s->ngw; i++)
		if (lba >= s->gw[i].s && lba < s->gw[i].s + s->gw[i].n && s->gw[i].tag == tag)
			return true;
	return false;
}

/* ---- crash images ---------------------------------------------------------------------------- */

static void write_image(const char *path, const uint8_t *b, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	for (uint64_t o = 0; o < size; o += 4096) {
		uint64_t n = size - o < 4096 ? size - o : 4096;
		bool zero = true;
		for (uint64_t k = 0; k < n && zero; k++)
			zero = !b[o + k];
		if (!zero)
			assert_int_equal(pwrite(fd, b + o, n, (off_t)o), (ssize_t)n);
	}
	close(fd);
}

/* Open one crash image and hold it to the guest's view. */
static void verify_crash(struct sim *s, const char *what)
{
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	struct cow_check_result cr;
	static uint8_t buf[64 << 10];

	s->in_check = true;
	int r = cow_open(s->crash, NULL, &img, err, COW_ERRLEN);
	if (r)
		fail_msg("crash image (%s, check %u) does not open: %d %s", what, s->checks, r, err);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	for (uint32_t off = 0; off < VSIZE; off += sizeof(buf)) {
		assert_int_equal(cow_rw(ctx, COW_READ, buf, sizeof(buf), off, 0), 0);
		for (uint32_t i = 0; i < sizeof(buf) / 512; i++) {
			uint32_t lba = off / 512 + i;
			int64_t t = tag_of(buf + i * 512, lba);
			if (t < 0 || !allowed(s, lba, (uint32_t)t))
				fail_msg("crash image (%s, check %u): sector %u reads %s%lld, flushed "
					 "%u", what, s->checks, lba, t < 0 ? "garbage " : "tag ",
					 (long long)t, s->flushed[lba]);
		}
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_close(img), 0);
	assert_int_equal(cow_open(s->crash, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict == 2)
		fail_msg("crash image (%s, check %u): corrupt: %s", what, s->checks,
			 cr.first_problem);
	cow_close(img);
	s->crash_opens++;
	s->in_check = false;
}

static void crash_check(struct sim *s)
{
	uint8_t *b = NULL;
	uint64_t size = 0, cap = 0;
	if (s->in_check)
		return;
	s->checks++;
	for (int k = 0; k < SUBSETS + 2; k++) {
		if (k == 1 && !s->nev)
			break;	/* nothing pending: one image says it all */
		buf_size(&b, &size, &cap, s->dur_size);
		memcpy(b, s->dur, s->dur_size);
		for (size_t i = 0; i < s->nev; i++)
			if (k == 1 || (k >= 2 && (rnd(s) & 1)))
				ev_apply(&s->ev[i], &b, &size, &cap);
		write_image(s->crash, b, size);
		verify_crash(s, k == 0 ? "none since the sync" : k == 1 ? "all" : "a subset");
	}
	free(b);
}

/* ---- the run ------------------------------------------------------------------------------- */

static void guest_write(struct sim *s, uint32_t lba, uint32_t n, uint32_t tag)
{
	if (s->ngw == s->gw_cap) {
		s->gw_cap = s->gw_cap ? s->gw_cap * 2 : 64;
		s->gw = xrealloc(s->gw, s->gw_cap * sizeof(*s->gw));
	}
	s->gw[s->ngw++] = (struct gw){ .s = lba, .n = n, .tag = tag };
}

static void guest_flushed(struct sim *s)
{
	for (size_t i = 0; i < s->ngw; i++)
		for (uint32_t k = 0; k < s->gw[i].n; k++)
			s->flushed[s->gw[i].s + k] = s->gw[i].tag;
	s->ngw = 0;
}

static void run(const char *path, const char *base, uint64_t seed, int nreq)
{
	struct sim *s = calloc(1, sizeof(*s));
	struct rec_be rb = { .be.ops = &rec_ops, .s = s };
	struct img_tap tap = { tap_write, tap_punch, tap_truncate, tap_sync, s };
	struct cow_create_opts o = { .size = VSIZE, .chunk_size = 64 << 10, .block_size = 4096,
				     .journal_size = UCOW_MIN_JOURNAL, .backing = base,
				     .backing_fmt = base ? COW_FMT_RAW : 0 };
	static uint8_t data[64 << 10];
	struct cow_image *img;
	struct cow_ctx *ctx;
	uint32_t tag = 1000;
	int nsnap = 0, first = 0;

	assert_non_null(s);
	s->rng = seed;
	s->crash = strdup(P(base ? "crash-overlay.img" : "crash-standalone.img"));
	assert_non_null(s->crash);
	if (base) {	/* the base: sector i holds tag i + 1 */
		uint8_t *b = malloc(VSIZE);
		assert_non_null(b);
		for (uint32_t i = 0; i < NSECT; i++) {
			fill(b + i * 512, i, 1, i + 1);
			s->flushed[i] = i + 1;
		}
		int fd = open(P(base), O_RDWR | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, b, VSIZE, 0), VSIZE);
		close(fd);
		free(b);
	}
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
	assert_int_equal(cow_open(path, NULL, &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("sync", 8, &s->inner), 0);
	assert_int_equal(cow_ctx_new(img, &rb.be, &ctx), 0);
	/* the durable start: the file as the open left it (synced) */
	s->fd = img->fd;
	struct stat st;
	assert_int_equal(fstat(s->fd, &st), 0);
	buf_size(&s->dur, &s->dur_size, &s->dur_cap, (uint64_t)st.st_size);
	assert_int_equal(pread(s->fd, s->dur, s->dur_size, 0), (ssize_t)s->dur_size);
	img->tap = &tap;

	for (int i = 0; i < nreq; i++) {
		uint64_t x = rnd(s) % 100;
		uint32_t lba = (uint32_t)(rnd(s) % NSECT);
		uint32_t n = 1 + (uint32_t)(rnd(s) % 128);
		if (rnd(s) % 4 == 0) {	/* whole chunks sometimes: unmaps, no partial blocks */
			lba &= ~127u;
			n = 128;
		}
		if (lba + n > NSECT)
			n = NSECT - lba;
		if (x < 62) {
			fill(data, lba, n, ++tag);
			assert_int_equal(cow_rw(ctx, COW_WRITE, data, n * 512ull, lba * 512ull, 0), 0);
			guest_write(s, lba, n, tag);
		} else if (x < 72) {
			int op = x < 67 ? COW_DISCARD : COW_WRITE_ZEROES;
			assert_int_equal(cow_rw(ctx, op, NULL, n * 512ull, lba * 512ull, 0), 0);
			guest_write(s, lba, n, 0);
		} else if (x < 94) {
			assert_int_equal(cow_rw(ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
			guest_flushed(s);
		} else if (x < 96) {
			/* a burst of 4 KiB writes, more records than the journal holds: the flush
			 * after it commits in rounds, with checkpoints between them */
			s->in_check = true;	/* crash points: at the syncs of the flush */
			for (int k = 0; k < 400; k++) {
				uint32_t l = (uint32_t)(rnd(s) % (NSECT / 8)) * 8;
				if (k % 10 == 0) {	/* unmap chunks, so writes map new ones */
					l &= ~127u;
					assert_int_equal(cow_rw(ctx, COW_DISCARD, NULL, 65536,
								l * 512ull, 0), 0);
					guest_write(s, l, 128, 0);
					continue;
				}
				fill(data, l, 8, ++tag);
				assert_int_equal(cow_rw(ctx, COW_WRITE, data, 4096, l * 512ull, 0), 0);
				guest_write(s, l, 8, tag);
			}
			s->in_check = false;
		} else if (x < 98 || nsnap - first < 1) {
			char name[32];
			snprintf(name, sizeof(name), "s%d", nsnap++);
			assert_int_equal(cow_snapshot_create(img, name), 0);
		} else {
			char name[32];
			snprintf(name, sizeof(name), "s%d", first++);
			assert_int_equal(cow_snapshot_delete(img, name), 0);
			assert_true(cow_reclaim(img, 0) >= 0);
		}
		crash_check(s);		/* between requests too */
	}
	print_message("%s: %d requests, %u crash points, %u crash images opened and checked\n",
		      base ? "overlay" : "standalone", nreq, s->checks, s->crash_opens);
	assert_true(s->crash_opens > (unsigned)nreq);
	img->tap = NULL;
	cow_ctx_free(ctx);
	assert_int_equal(cow_close(img), 0);
	cow_backend_free(s->inner);
	for (size_t i = 0; i < s->nev; i++)
		free(s->ev[i].data);
	free(s->ev);
	free(s->gw);
	free(s->dur);
	free((void *)s->crash);
	free(s);
}

static void test_crash_standalone(void **state)
{
	run(P("cs.img"), NULL, 0x9e3779b97f4a7c15ull, 150);
}

static void test_crash_overlay(void **state)
{
	run(P("co.img"), "cbase.raw", 0xc2b2ae3d27d4eb4full, 150);
}

/* ---- the side log across a checkpoint ------------------------------------------------------ */

static int syncs_left;
static int die_sync(void *arg)
{
	if (--syncs_left == 0)
		_exit(0);	/* the process dies here */
	return 0;
}

/*
 * A flush of more records than the minimum journal holds commits in rounds with a checkpoint
 * between them; the checkpoint writes only the committed records into the table and leaves
 * the rest pending. The process dies right after that checkpoint's header write: the side
 * log's run of the new generation must hold the pending records (sidelog.c L2).
 */
static void test_sidelog_checkpoint(void **state)
{
	struct cow_create_opts o = { .size = VSIZE, .chunk_size = 64 << 10, .block_size = 4096,
				     .journal_size = UCOW_MIN_JOURNAL };
	const int n = 900;	/* records: the minimum journal holds about 500 */
	unlink(P("slc.img"));
	unlink(P("slc.log"));
	assert_int_equal(cow_create(P("slc.img"), &o, err, COW_ERRLEN), 0);
	pid_t pid = fork();
	if (!pid) {
		struct img_tap tap = { .sync = die_sync };
		struct cow_image *img;
		struct cow_backend *be;
		struct cow_ctx *ctx;
		uint8_t b[4096];
		int sfd = open(P("slc.log"), O_RDWR | O_CREAT, 0600);
		if (sfd < 0 || cow_open(P("slc.img"), &(struct cow_open_opts){ .flags = COW_OPEN_SIDELOG,
				.sidelog_fd = sfd },
				&img, err, COW_ERRLEN) ||
		    cow_backend_new("sync", 8, &be) || cow_ctx_new(img, be, &ctx))
			_exit(2);
		for (int i = 0; i < n; i++) {
			fill(b, (uint32_t)i * 8, 8, 5000 + (uint32_t)i);
			if (cow_rw(ctx, COW_WRITE, b, 4096, (uint64_t)i * 4096, 0))
				_exit(3);
		}
		img->tap = &tap;
		syncs_left = 3;		/* checkpoint: sync, pages, sync, header, [sync] */
		cow_rw(ctx, COW_FLUSH, NULL, 0, 0, 0);
		_exit(4);
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	uint8_t b[4096];
	int sfd = open(P("slc.log"), O_RDWR);
	assert_true(sfd >= 0);
	assert_int_equal(cow_open(P("slc.img"), &(struct cow_open_opts){ .flags = COW_OPEN_SIDELOG,
			.sidelog_fd = sfd },
			&img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(cow_rw(ctx, COW_READ, b, 4096, (uint64_t)i * 4096, 0), 0);
		for (uint32_t k = 0; k < 8; k++)
			if (tag_of(b + k * 512, (uint32_t)i * 8 + k) != 5000 + i)
				fail_msg("write %d lost (sector %u reads %lld)", i, i * 8 + k,
					 (long long)tag_of(b + k * 512, (uint32_t)i * 8 + k));
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_close(img), 0);
	close(sfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crash_standalone),
		cmocka_unit_test(test_crash_overlay),
		cmocka_unit_test(test_sidelog_checkpoint),
	};
	return UNIT_RUN(tests);
}
