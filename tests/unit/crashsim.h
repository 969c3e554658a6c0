/*
 * Power-loss simulation for the unit tests (include after unit.h and internal.h).
 *
 * Every write, punch, size change and sync that reaches one image file is recorded: the
 * engine's own metadata I/O through img->tap (synchronous: recorded when made), its data,
 * journal and fsync I/O through a recording backend wrapped around a real one (io_uring,
 * libaio or sync) — recorded when it COMPLETES, in completion order. An fsync makes durable
 * only what had completed when it was issued (a write still in flight then is not covered),
 * and becomes durable itself when it completes. The records drive a model of the disk: the
 * durable content, the completed events since, and the writes in flight.
 *
 * At each crash point (just before a sync completes, and wherever the test asks) crash
 * images are built: nothing since the durable state; everything (in flight too); and random
 * subsets of the events since, in their order, plus random writes still in flight, where an
 * applied write may be torn: each of its 512-byte sectors lands or not. The test's verify
 * callback opens and judges each image.
 */
#ifndef UCOW_CRASHSIM_H
#define UCOW_CRASHSIM_H

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

enum { EV_WRITE, EV_PUNCH, EV_TRUNC };

struct cs_ev {
	int kind;
	uint64_t off, len;
	uint8_t *data;
};

struct crashsim;

/* A recorded backend I/O in flight: its own completion, the cover of an fsync. */
struct cs_flight {
	struct cow_io *io;
	void (*done)(struct cow_io *io, int res);
	uint64_t cover;			/* fsync: events (absolute index) completed at issue */
};

#define CS_MAX_FLIGHT 1024

struct crashsim {
	int fd;				/* the image file whose I/O is recorded */
	uint8_t *dur;			/* durable content */
	uint64_t dur_size, dur_cap;
	struct cs_ev *ev;		/* completed since, not durable yet */
	size_t nev, ev_cap;
	uint64_t ev_base;		/* absolute index of ev[0] */
	struct cs_flight fl[CS_MAX_FLIGHT];
	unsigned nfl;
	uint64_t rng;
	bool in_check;			/* no crash points (inside verify, or asked) */
	unsigned subsets;		/* random subsets per crash point */
	unsigned points, images, torn, inflight_applied;
	char crash[512];		/* where crash images are built */
	void (*verify)(struct crashsim *cs, const char *what);
	struct img_tap tap;
	uint8_t *img_buf;		/* scratch for building images */
	uint64_t img_size, img_cap;
};

struct cs_be {
	struct cow_backend be;
	struct crashsim *cs;
	struct cow_backend *inner;
};

static inline uint64_t cs_rnd(struct crashsim *cs)
{
	cs->rng ^= cs->rng << 13;
	cs->rng ^= cs->rng >> 7;
	cs->rng ^= cs->rng << 17;
	return cs->rng;
}

static void *cs_realloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	assert_non_null(q);
	return q;
}

static void cs_size(uint8_t **b, uint64_t *size, uint64_t *cap, uint64_t want)
{
	if (want > *cap) {
		uint64_t c = *cap ? *cap : 1 << 20;
		while (c < want)
			c *= 2;
		*b = cs_realloc(*b, c);
		*cap = c;
	}
	if (want > *size)
		memset(*b + *size, 0, want - *size);
	*size = want;
}

/* Apply e; torn: each 512-byte sector of a write lands with probability 1/2. */
static void cs_apply(struct crashsim *cs, const struct cs_ev *e, bool torn, uint8_t **b,
		     uint64_t *size, uint64_t *cap)
{
	switch (e->kind) {
	case EV_WRITE:
		if (e->off + e->len > *size)
			cs_size(b, size, cap, e->off + e->len);
		if (!torn) {
			memcpy(*b + e->off, e->data, e->len);
			break;
		}
		for (uint64_t o = 0; o < e->len; o += 512) {
			uint64_t n = e->len - o < 512 ? e->len - o : 512;
			if (cs_rnd(cs) & 1)
				memcpy(*b + e->off + o, e->data + o, n);
		}
		break;
	case EV_PUNCH:
		if (e->off < *size)
			memset(*b + e->off, 0,
			       (e->off + e->len < *size ? e->off + e->len : *size) - e->off);
		break;
	case EV_TRUNC:
		cs_size(b, size, cap, e->off);
		break;
	}
}

static void cs_add(struct crashsim *cs, int kind, uint64_t off, uint64_t len, const void *data)
{
	if (cs->nev == cs->ev_cap) {
		cs->ev_cap = cs->ev_cap ? cs->ev_cap * 2 : 64;
		cs->ev = cs_realloc(cs->ev, cs->ev_cap * sizeof(*cs->ev));
	}
	struct cs_ev *e = &cs->ev[cs->nev++];
	*e = (struct cs_ev){ .kind = kind, .off = off, .len = len };
	if (data) {
		e->data = malloc(len);
		assert_non_null(e->data);
		memcpy(e->data, data, len);
	}
}

static void cs_write_image(const char *path, const uint8_t *b, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	for (uint64_t o = 0; o < size; o += 4096) {
		uint64_t n = size - o < 4096 ? size - o : 4096;
		bool zero = true;
		for (uint64_t k = 0; k < n && zero; k += 8)
			zero = n - k < 8 ? !b[o + k] : !*(const uint64_t *)(const void *)(b + o + k);
		if (!zero)
			assert_int_equal(pwrite(fd, b + o, n, (off_t)o), (ssize_t)n);
	}
	close(fd);
}

/* A crash point: build the crash images and have the test judge each. */
static void cs_crash_point(struct crashsim *cs)
{
	unsigned nwrites_in_flight = 0;
	if (cs->in_check)
		return;
	cs->in_check = true;
	cs->points++;
	for (unsigned i = 0; i < cs->nfl; i++)
		nwrites_in_flight += cs->fl[i].io->op == COW_IO_WRITE;
	for (unsigned k = 0; k < cs->subsets + 2; k++) {
		const char *what = k == 0 ? "nothing since the sync" : k == 1 ? "everything" :
				   "a subset, maybe torn";
		if (k == 1 && !cs->nev && !nwrites_in_flight)
			break;	/* nothing pending: one image says it all */
		cs_size(&cs->img_buf, &cs->img_size, &cs->img_cap, cs->dur_size);
		cs->img_size = cs->dur_size;
		memcpy(cs->img_buf, cs->dur, cs->dur_size);
		for (size_t i = 0; k && i < cs->nev; i++) {
			if (k >= 2 && (cs_rnd(cs) & 1))
				continue;
			bool torn = k >= 2 && cs->ev[i].kind == EV_WRITE && cs_rnd(cs) % 4 == 0;
			cs->torn += torn;
			cs_apply(cs, &cs->ev[i], torn, &cs->img_buf, &cs->img_size, &cs->img_cap);
		}
		for (unsigned i = 0; k && i < cs->nfl; i++) {	/* writes in flight may land */
			struct cow_io *io = cs->fl[i].io;
			if (io->op != COW_IO_WRITE || (k >= 2 && (cs_rnd(cs) & 1)))
				continue;
			struct cs_ev e = { EV_WRITE, io->off, io->len, io->buf };
			bool torn = k >= 2 && cs_rnd(cs) % 2 == 0;
			cs->torn += torn;
			cs->inflight_applied++;
			cs_apply(cs, &e, torn, &cs->img_buf, &cs->img_size, &cs->img_cap);
		}
		cs_write_image(cs->crash, cs->img_buf, cs->img_size);
		cs->verify(cs, what);
		cs->images++;
	}
	cs->in_check = false;
}

/* A sync completes: crash points first, then events below cover are durable. */
static void cs_sync(struct crashsim *cs, uint64_t cover)
{
	size_t n;
	cs_crash_point(cs);
	n = cover > cs->ev_base ? cover - cs->ev_base : 0;
	if (n > cs->nev)
		n = cs->nev;
	for (size_t i = 0; i < n; i++) {
		cs_apply(cs, &cs->ev[i], false, &cs->dur, &cs->dur_size, &cs->dur_cap);
		free(cs->ev[i].data);
	}
	if (n && cs->nev > n)
		memmove(cs->ev, cs->ev + n, (cs->nev - n) * sizeof(*cs->ev));
	cs->nev -= n;
	cs->ev_base += n;
}

/* ---- the image's tap: metadata I/O, synchronous ------------------------------------------ */

static int cs_tap_write(void *arg, const void *buf, size_t len, uint64_t off)
{
	cs_add(arg, EV_WRITE, off, len, buf);
	return 0;
}

static int cs_tap_punch(void *arg, uint64_t off, uint64_t len)
{
	cs_add(arg, EV_PUNCH, off, len, NULL);
	return 0;
}

static int cs_tap_truncate(void *arg, uint64_t size)
{
	cs_add(arg, EV_TRUNC, size, 0, NULL);
	return 0;
}

static int cs_tap_sync(void *arg)
{
	struct crashsim *cs = arg;
	cs_sync(cs, cs->ev_base + cs->nev);	/* every completed event */
	return 0;
}

/* ---- the recording backend: events at completion ------------------------------------------ */

static struct crashsim *cs_done_sim;	/* the sim of the I/O completing (one at a time) */

static void cs_io_done(struct cow_io *io, int res);

static inline void cs_be_sync(struct cs_be *b)
{
	b->be.inflight = b->inner->inflight;
}

static int cs_queue(struct cow_backend *be, struct cow_io *io)
{
	struct cs_be *b = (struct cs_be *)be;
	struct crashsim *cs = b->cs;
	int r;
	if (io->fd == cs->fd) {
		assert_true(cs->nfl < CS_MAX_FLIGHT);
		cs->fl[cs->nfl++] = (struct cs_flight){ .io = io, .done = io->done,
							.cover = cs->ev_base + cs->nev };
		io->done = cs_io_done;
		cs_done_sim = cs;
	}
	r = b->inner->ops->queue(b->inner, io);
	if (r < 0 && io->fd == cs->fd) {	/* not queued: the caller completes it */
		io->done = cs->fl[--cs->nfl].done;
	}
	cs_be_sync(b);
	return r;
}

static void cs_io_done(struct cow_io *io, int res)
{
	struct crashsim *cs = cs_done_sim;
	struct cs_flight f = { 0 };
	unsigned i;
	for (i = 0; i < cs->nfl && cs->fl[i].io != io; i++)
		;
	assert_true(i < cs->nfl);
	f = cs->fl[i];
	cs->fl[i] = cs->fl[--cs->nfl];
	io->done = f.done;
	if (res >= 0) {
		switch (io->op) {
		case COW_IO_WRITE:
			if (res > 0)
				cs_add(cs, EV_WRITE, io->off, (uint64_t)res, io->buf);
			break;
		case COW_IO_PUNCH:
		case COW_IO_ZERO_RANGE:
			cs_add(cs, EV_PUNCH, io->off, io->len, NULL);
			break;
		case COW_IO_FSYNC:
			cs_sync(cs, f.cover);
			break;
		}
	}
	f.done(io, res);
}

static int cs_submit_wait(struct cow_backend *be, unsigned min)
{
	struct cs_be *b = (struct cs_be *)be;
	int r = b->inner->ops->submit_wait(b->inner, min);
	cs_be_sync(b);
	return r;
}

static void cs_destroy(struct cow_backend *be) { (void)be; }

static const struct cow_backend_ops cs_ops = { "crashsim", cs_queue, cs_submit_wait,
					       cs_destroy };

static inline void cs_be_init(struct cs_be *b, struct crashsim *cs, struct cow_backend *inner)
{
	*b = (struct cs_be){ .be.ops = &cs_ops, .cs = cs, .inner = inner };
}

/* Start recording img: its file as it is now is the durable state (the caller synced it). */
static inline void cs_attach(struct crashsim *cs, struct cow_image *img)
{
	struct stat st;
	cs->fd = img->fd;
	assert_int_equal(fsync(cs->fd), 0);
	assert_int_equal(fstat(cs->fd, &st), 0);
	cs_size(&cs->dur, &cs->dur_size, &cs->dur_cap, (uint64_t)st.st_size);
	cs->dur_size = (uint64_t)st.st_size;
	assert_int_equal(pread(cs->fd, cs->dur, cs->dur_size, 0), (ssize_t)cs->dur_size);
	cs->tap = (struct img_tap){ cs_tap_write, cs_tap_punch, cs_tap_truncate, cs_tap_sync, cs };
	img->tap = &cs->tap;
}

static inline void cs_free(struct crashsim *cs)
{
	for (size_t i = 0; i < cs->nev; i++)
		free(cs->ev[i].data);
	free(cs->ev);
	free(cs->dur);
	free(cs->img_buf);
	cs->ev = NULL;
	cs->dur = cs->img_buf = NULL;
	cs->nev = cs->ev_cap = 0;
	cs->dur_size = cs->dur_cap = cs->img_size = cs->img_cap = 0;
}

/* The seed of a run: UCOW_CRASH_SEED, or a new one each run (printed, to replay it). */
static inline uint64_t cs_seed(const char *what)
{
	const char *e = getenv("UCOW_CRASH_SEED");
	uint64_t seed;
	if (e) {
		seed = strtoull(e, NULL, 0);
	} else {
		int fd = open("/dev/urandom", O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(read(fd, &seed, sizeof(seed)), (ssize_t)sizeof(seed));
		close(fd);
	}
	if (!seed)
		seed = 1;
	print_message("%s: seed %llu (replay: UCOW_CRASH_SEED=%llu)\n", what,
		      (unsigned long long)seed, (unsigned long long)seed);
	return seed;
}

#endif
