/*
 * I/O error injection for the unit tests (include after unit.h and internal.h).
 *
 * A fault rule picks I/Os by operation, file (an fd: the image's or its backing image's),
 * offset range and count (let `skip` matching I/Os through, then fail the next `count`, 0 =
 * every later one) and says how they fail: -EIO, -ENOSPC or any -errno, or FAULT_SHORT (a
 * read or write that does only its first half, whole sectors, for real, and reports that
 * count: a write as on a full disk, a read as io_uring may cut one short; an I/O of one
 * sector goes through; other operations fail with -EIO). Rules apply to two paths:
 *  - the backend's I/O (data, journal commits, fsyncs of flushes, punches): a fault backend
 *    wraps a real one; a failed I/O never reaches it and completes from the next
 *    submit_wait with the error;
 *  - cowcore's own metadata I/O (img_pwrite/img_sync/img_punch/img_truncate: checkpoints,
 *    headers, snapshot operations, file growth): the image's test tap (imgio.h), for rules
 *    whose fd is the image's (a FAULT_SHORT write there writes the first half, then fails
 *    with -ENOSPC, as io_pwrite_all's retry of the rest would).
 */
#ifndef UCOW_FAULTS_H
#define UCOW_FAULTS_H

#include <errno.h>
#include <string.h>

#define FAULT_SHORT 1		/* err: do half the bytes and report that */
#define FAULT_TORN 2		/* err, metadata writes: all of it lands but its first sector
				 * (zeros), then -EIO: a sector torn by a power cut */
#define FAULT_ANY (-1)		/* op or fd: any */
#define FAULT_RULES 8

struct fault {
	int op;			/* COW_IO_* or FAULT_ANY */
	int fd;			/* FAULT_ANY or one file */
	uint64_t lo, hi;	/* offsets: the I/O overlaps [lo, hi); hi == 0: any */
	unsigned skip;		/* matching I/Os let through first */
	unsigned count;		/* then this many fail; 0: every later one */
	int err;		/* -errno, or FAULT_SHORT */
	unsigned seen, hits;	/* matching I/Os so far, failed so far */
};

struct fault_be {
	struct cow_backend be;
	struct cow_backend *inner;
	struct fault f[FAULT_RULES];
	int nf;
	struct cow_io *failed;		/* failed at queue time, completed by submit_wait */
	unsigned nfailed;
	struct {			/* I/Os cut short: their own completion and length */
		struct cow_io *io;
		void (*done)(struct cow_io *io, int res);
		uint32_t len;
	} cut[64];
	unsigned ncut;
	unsigned hits;			/* every injected fault (backend and tap) */
	int last_op;			/* the operation of the last one */
};

static inline void fault_clear(struct fault_be *fb)
{
	fb->nf = 0;
}

/* Add a rule; returns it (its hits count what it failed). */
static inline struct fault *fault_add(struct fault_be *fb, int op, int fd, uint64_t lo,
				      uint64_t hi, unsigned skip, unsigned count, int e)
{
	struct fault *f = &fb->f[fb->nf++];
	*f = (struct fault){ .op = op, .fd = fd, .lo = lo, .hi = hi, .skip = skip,
			     .count = count, .err = e };
	return f;
}

/* The error an I/O (op, fd, off, len) gets: 0, -errno or FAULT_SHORT. Counts it. */
static inline int fault_match(struct fault_be *fb, int op, int fd, uint64_t off, uint64_t len)
{
	for (int i = 0; i < fb->nf; i++) {
		struct fault *f = &fb->f[i];
		if (f->op != FAULT_ANY && f->op != op)
			continue;
		if (f->fd != FAULT_ANY && f->fd != fd)
			continue;
		if (f->hi && (op != COW_IO_FSYNC) && (off >= f->hi || off + (len ? len : 1) <= f->lo))
			continue;
		if (f->seen++ < f->skip)
			continue;
		if (f->count && f->hits >= f->count)
			continue;
		f->hits++;
		fb->hits++;
		fb->last_op = op;
		return f->err;
	}
	return 0;
}

static void fault_sync_be(struct fault_be *fb)
{
	fb->be.inflight = fb->inner->inflight + fb->nfailed;
}

static struct fault_be *fault_cut_be;	/* the fault backend of the I/Os cut short */

/* A short I/O completes: its length as the engine queued it, the count the inner did. */
static void fault_cut_done(struct cow_io *io, int res)
{
	struct fault_be *fb = fault_cut_be;
	unsigned i;
	for (i = 0; i < fb->ncut && fb->cut[i].io != io; i++)
		;
	assert_true(i < fb->ncut);
	io->done = fb->cut[i].done;
	io->len = fb->cut[i].len;
	fb->cut[i] = fb->cut[--fb->ncut];
	io->done(io, res);
}

static int fault_queue(struct cow_backend *be, struct cow_io *io)
{
	struct fault_be *fb = (struct fault_be *)be;
	int e = fault_match(fb, io->op, io->fd, io->off, io->len);
	int r;
	if (e == FAULT_TORN)
		e = -EIO;	/* backend I/O: plain EIO */
	if (e == FAULT_SHORT && (io->op == COW_IO_WRITE || io->op == COW_IO_READ)) {
		/* the inner backend does the first half (whole sectors), for real, and says so */
		if (io->len >= 1024) {
			assert_true(fb->ncut < 64);
			fault_cut_be = fb;
			fb->cut[fb->ncut].io = io;
			fb->cut[fb->ncut].done = io->done;
			fb->cut[fb->ncut++].len = io->len;
			io->done = fault_cut_done;
			io->len = io->len / 2 & ~511u;
		}
	} else if (e) {
		if (e == FAULT_SHORT)
			e = io->op == COW_IO_WRITE ? -ENOSPC : -EIO;
		io->len = (uint32_t)e;	/* the result, parked in len */
		io->next = NULL;
		struct cow_io **pp = &fb->failed;
		while (*pp)
			pp = &(*pp)->next;
		*pp = io;
		fb->nfailed++;
		fault_sync_be(fb);
		return 0;
	}
	r = fb->inner->ops->queue(fb->inner, io);
	if (r < 0 && io->done == fault_cut_done) {	/* not queued after all */
		fb->ncut--;
		io->done = fb->cut[fb->ncut].done;
		io->len = fb->cut[fb->ncut].len;
	}
	fault_sync_be(fb);
	return r;
}

static int fault_submit_wait(struct cow_backend *be, unsigned min)
{
	struct fault_be *fb = (struct fault_be *)be;
	unsigned got = 0;
	int r = 0;
	while (fb->failed) {
		struct cow_io *io = fb->failed;
		fb->failed = io->next;
		fb->nfailed--;
		fault_sync_be(fb);
		io->done(io, (int)io->len);
		got++;
	}
	if (fb->inner->inflight)
		r = fb->inner->ops->submit_wait(fb->inner, got >= min ? 0 : min - got);
	fault_sync_be(fb);
	return r;
}

static void fault_destroy(struct cow_backend *be) { (void)be; }

static const struct cow_backend_ops fault_ops = { "faults", fault_queue, fault_submit_wait,
						  fault_destroy };

/* Over inner (not owned). */
static inline void fault_be_init(struct fault_be *fb, struct cow_backend *inner)
{
	memset(fb, 0, sizeof(*fb));
	fb->be.ops = &fault_ops;
	fb->inner = inner;
}

/* ---- the image's tap: the same rules for cowcore's own metadata I/O ---------------------- */

struct fault_tap {
	struct img_tap tap;
	struct fault_be *fb;
	int fd;				/* the image's */
};

static inline int fault_tap_err(struct fault_tap *t, int op, uint64_t off, uint64_t len)
{
	int e = fault_match(t->fb, op, t->fd, off, len);
	return e == FAULT_SHORT ? (op == COW_IO_WRITE ? -ENOSPC : -EIO) : e;
}

/* A short metadata write: the first half lands (a torn header or page), then ENOSPC, as
 * io_pwrite_all's retry of the rest would get. */
static int fault_tap_write(void *arg, const void *buf, size_t len, uint64_t off)
{
	struct fault_tap *t = arg;
	int e = fault_match(t->fb, COW_IO_WRITE, t->fd, off, len);
	if (e == FAULT_SHORT) {
		if (pwrite(t->fd, buf, len / 2 & ~(size_t)511, (off_t)off) < 0)
			return -errno;
		return -ENOSPC;
	}
	if (e == FAULT_TORN) {
		static const uint8_t zero[512];
		if (len > 512 && pwrite(t->fd, (const uint8_t *)buf + 512, len - 512,
					(off_t)off + 512) < 0)
			return -errno;
		if (pwrite(t->fd, zero, len < 512 ? len : 512, (off_t)off) < 0)
			return -errno;
		return -EIO;
	}
	return e;
}

static int fault_tap_punch(void *arg, uint64_t off, uint64_t len)
{
	return fault_tap_err(arg, COW_IO_PUNCH, off, len);
}

static int fault_tap_truncate(void *arg, uint64_t size)
{
	return fault_tap_err(arg, COW_IO_WRITE, size, 0);	/* a size change: a "write" */
}

static int fault_tap_sync(void *arg)
{
	return fault_tap_err(arg, COW_IO_FSYNC, 0, 0);
}

/* Route img's metadata I/O through fb's rules (img->tap; undone by img->tap = NULL). */
static inline void fault_tap_attach(struct fault_tap *t, struct fault_be *fb,
				    struct cow_image *img)
{
	*t = (struct fault_tap){ .tap = { fault_tap_write, fault_tap_punch, fault_tap_truncate,
					  fault_tap_sync, t },
				 .fb = fb, .fd = img->fd };
	img->tap = &t->tap;
}

#endif
