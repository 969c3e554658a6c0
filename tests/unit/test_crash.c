/*
 * Power loss, with the writes since the last sync persisted in any subset, torn at 512-byte
 * sectors, and with I/O in flight (tests/unit/crashsim.h records every write, punch, size
 * change and sync that reaches the image file: metadata through img->tap, data, journal and
 * fsyncs through a recording backend, at completion; an fsync covers what had completed
 * when it was issued).
 *
 * Workloads: a standalone image and an overlay over a raw base on the sync backend (random
 * writes of 512 B to 64 KiB, discards, write-zeroes, flushes, bursts that overflow the
 * minimum-size journal so commits run in rounds with checkpoints between, snapshot create
 * and delete, compressed chunks put in as ucow convert -c does, then written over; first
 * writes after a snapshot leave underlays, which later creates and deletes of the parent
 * fold: both counted and asserted); a
 * standalone image whose flushes mostly follow bursts three times the journal's size (a
 * full journal while a checkpoint in steps is under way: synchronous checkpoints undo
 * records not committed yet); and the first two again on io_uring with two contexts on one
 * image, up to 8 requests
 * in flight at once (writes, discards, write-zeroes and flushes side by side, flushes of one
 * context completing the other's through the hand-over; snapshot create and delete between
 * rounds).
 *
 * Each crash image: opened read-only while dirty (replay in memory), every sector must read
 * its value at the last completed flush or one written since (never another sector's or
 * chunk's data, never garbage); each snapshot the model says must exist does, and reads
 * exactly its content; then opened read-write (replay, checkpoint, clean-up) it must read
 * the same; a write and a flush into it, a clean close, and `check` finds no corruption and
 * the write.
 *
 * A different seed every run (printed; UCOW_CRASH_SEED=N replays one). UCOW_CRASH_STATES sets
 * how many crash images a run builds (default 10000; `make crash-long` sweeps 1000000; the
 * ASan run of make check asks for fewer).
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
#include "crashsim.h"
#include "tags.h"

#define VSIZE (4u << 20)
#define NSECT (VSIZE / 512)
#define SUBSETS 2		/* random subsets per crash point, besides "none" and "all" */
#define MAX_SNAPS 64		/* created in a run; at most 2 live at once */

/* A write the guest made since its last completed flush: [s, s + n) sectors hold tag. */
struct gw {
	uint32_t s, n, tag;
	uint64_t id;
	bool done;			/* completed (a flush submitted after covers it) */
};

enum { SN_CREATING, SN_LIVE, SN_DELETING, SN_GONE };
struct snapm {
	char name[16];
	int state;
	uint32_t *v;			/* the content: a tag per sector */
};

struct sim {
	struct crashsim cs;
	/* the guest's view */
	uint32_t flushed[NSECT];	/* tag at the last completed flush (0: zeros) */
	uint32_t cur[NSECT];		/* tag of the last completed write (sync workloads) */
	struct gw *gw;
	size_t ngw, gw_cap;
	uint64_t next_id;
	struct snapm snaps[MAX_SNAPS];
	int nsnaps;
	uint32_t probe_tag;
	uint32_t got[NSECT];		/* scratch: what a crash image reads */
	const char *workload;
};

static struct sim *sim_of(struct crashsim *cs)
{
	return (struct sim *)(void *)((char *)cs - offsetof(struct sim, cs));
}

/* ---- the guest's data ---------------------------------------------------------------------- */

static bool allowed(struct sim *s, uint32_t lba, uint32_t tag)
{
	if (s->flushed[lba] == tag)
		return true;
	for (size_t i = 0; i < s->ngw; i++)
		if (lba >= s->gw[i].s && lba < s->gw[i].s + s->gw[i].n && s->gw[i].tag == tag)
			return true;
	return false;
}

static uint64_t guest_write(struct sim *s, uint32_t lba, uint32_t n, uint32_t tag)
{
	if (s->ngw == s->gw_cap) {
		s->gw_cap = s->gw_cap ? s->gw_cap * 2 : 64;
		s->gw = cs_realloc(s->gw, s->gw_cap * sizeof(*s->gw));
	}
	s->gw[s->ngw++] = (struct gw){ .s = lba, .n = n, .tag = tag, .id = ++s->next_id };
	return s->next_id;
}

static void guest_done(struct sim *s, uint64_t id)
{
	for (size_t i = 0; i < s->ngw; i++)
		if (s->gw[i].id == id) {
			s->gw[i].done = true;
			for (uint32_t k = 0; k < s->gw[i].n; k++)
				s->cur[s->gw[i].s + k] = s->gw[i].tag;
		}
}

/* A flush: covers the writes done when it was submitted (ids in cover). */
static uint64_t *flush_cover(struct sim *s, size_t *n)
{
	uint64_t *c = malloc((s->ngw + 1) * sizeof(*c));
	assert_non_null(c);
	*n = 0;
	for (size_t i = 0; i < s->ngw; i++)
		if (s->gw[i].done)
			c[(*n)++] = s->gw[i].id;
	return c;
}

static void guest_flushed(struct sim *s, const uint64_t *cover, size_t n)
{
	size_t k = 0, j = 0;
	for (size_t i = 0; i < s->ngw; i++) {
		bool covered = false;
		while (j < n && cover[j] < s->gw[i].id)
			j++;
		covered = j < n && cover[j] == s->gw[i].id;
		if (covered)
			for (uint32_t q = 0; q < s->gw[i].n; q++)
				s->flushed[s->gw[i].s + q] = s->gw[i].tag;
		else
			s->gw[k++] = s->gw[i];
	}
	s->ngw = k;
}

/* ---- crash images ---------------------------------------------------------------------------- */

static void read_all(struct sim *s, struct cow_image *img, uint32_t *tags, const char *what,
		     const char *view)
{
	static uint8_t buf[VSIZE];
	struct cow_backend *be;
	struct cow_ctx *ctx;
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	int r = cow_rw(ctx, COW_READ, buf, VSIZE, 0, 0);
	if (r)
		fail_msg("%s crash image (%s, point %u, %s): reading it: %d", s->workload, what,
			 s->cs.points, view, r);
	for (uint32_t lba = 0; lba < NSECT; lba++) {
		int64_t t = tag_of(buf + lba * 512, lba);
		if (t < 0)
			fail_msg("%s crash image (%s, point %u, %s): sector %u reads garbage",
				 s->workload, what, s->cs.points, view, lba);
		tags[lba] = (uint32_t)t;
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
}

static void check_snapshots(struct sim *s, struct cow_image *img, const char *what)
{
	static uint32_t tags[NSECT];
	struct cow_snap_info *si;
	uint32_t ns;
	assert_int_equal(cow_snapshot_list(img, &si, &ns), 0);
	for (int i = 0; i < s->nsnaps; i++) {
		struct snapm *m = &s->snaps[i];
		bool there = false;
		for (uint32_t k = 0; k < ns; k++)
			there |= !strcmp(si[k].name, m->name);
		if ((m->state == SN_LIVE && !there) || (m->state == SN_GONE && there))
			fail_msg("%s crash image (%s, point %u): snapshot %s %s", s->workload, what,
				 s->cs.points, m->name, there ? "is back" : "is lost");
		if (!there)
			continue;
		struct cow_image *v;
		if (cow_open(s->cs.crash, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY,
			     .snapshot = m->name }, &v, err, COW_ERRLEN))
			fail_msg("%s crash image (%s, point %u): snapshot %s: %s", s->workload, what,
				 s->cs.points, m->name, err);
		read_all(s, v, tags, what, m->name);
		for (uint32_t lba = 0; lba < NSECT; lba++)
			if (tags[lba] != m->v[lba])
				fail_msg("%s crash image (%s, point %u): snapshot %s sector %u reads "
					 "%u, want %u", s->workload, what, s->cs.points, m->name, lba,
					 tags[lba], m->v[lba]);
		cow_close(v);
	}
	for (uint32_t k = 0; k < ns; k++) {
		bool known = false;
		for (int i = 0; i < s->nsnaps; i++)
			known |= !strcmp(si[k].name, s->snaps[i].name);
		if (!known)
			fail_msg("%s crash image: unknown snapshot %s", s->workload, si[k].name);
	}
	free(si);
}

/* Open one crash image and hold it to the guest's view. */
static void verify_crash(struct crashsim *cs, const char *what)
{
	struct sim *s = sim_of(cs);
	static uint32_t rw[NSECT];
	static uint8_t probe[4096];
	struct cow_image *img;
	struct cow_check_result cr;

	/* dirty, read-only: the journal replays in memory */
	int r = cow_open(cs->crash, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
			 COW_ERRLEN);
	if (r)
		fail_msg("%s crash image (%s, point %u) does not open read-only: %d %s",
			 s->workload, what, cs->points, r, err);
	read_all(s, img, s->got, what, "read-only");
	for (uint32_t lba = 0; lba < NSECT; lba++)
		if (!allowed(s, lba, s->got[lba]))
			fail_msg("%s crash image (%s, point %u): sector %u reads tag %u, flushed %u",
				 s->workload, what, cs->points, lba, s->got[lba], s->flushed[lba]);
	check_snapshots(s, img, what);
	cow_close(img);

	/* read-write: replay, checkpoint, clean-up; the same content */
	r = cow_open(cs->crash, NULL, &img, err, COW_ERRLEN);
	if (r)
		fail_msg("%s crash image (%s, point %u) does not open: %d %s", s->workload, what,
			 cs->points, r, err);
	read_all(s, img, rw, what, "read-write");
	for (uint32_t lba = 0; lba < NSECT; lba++)
		if (rw[lba] != s->got[lba])
			fail_msg("%s crash image (%s, point %u): sector %u reads %u read-write, %u "
				 "read-only", s->workload, what, cs->points, lba, rw[lba],
				 s->got[lba]);
	/* it takes writes */
	uint32_t plba = (uint32_t)(cs_rnd(cs) % (NSECT / 8)) * 8;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	fill(probe, plba, 8, ++s->probe_tag);
	assert_int_equal(cow_rw(ctx, COW_WRITE, probe, sizeof(probe), plba * 512ull, 0), 0);
	assert_int_equal(cow_rw(ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_close(img), 0);
	assert_int_equal(cow_open(cs->crash, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY },
			&img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict == 2)
		fail_msg("%s crash image (%s, point %u): corrupt: %s", s->workload, what,
			 cs->points, cr.first_problem);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, probe, sizeof(probe), plba * 512ull, 0), 0);
	for (uint32_t k = 0; k < 8; k++)
		if (tag_of(probe + k * 512, plba + k) != s->probe_tag)
			fail_msg("%s crash image (%s, point %u): the write after recovery is lost",
				 s->workload, what, cs->points);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
}

/* ---- the run ------------------------------------------------------------------------------- */

static unsigned crash_states(void)
{
	const char *e = getenv("UCOW_CRASH_STATES");
	return e ? (unsigned)strtoul(e, NULL, 0) : 10000;
}

static struct sim *sim_new(const char *workload, const char *crash, const char *base,
			   uint64_t seed)
{
	struct sim *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	s->workload = workload;
	s->cs.rng = seed;
	s->cs.subsets = SUBSETS;
	s->cs.verify = verify_crash;
	s->probe_tag = 1u << 30;
	snprintf(s->cs.crash, sizeof(s->cs.crash), "%s", crash);
	if (base) {	/* the base: sector i holds tag i + 1 */
		uint8_t *b = malloc(VSIZE);
		assert_non_null(b);
		for (uint32_t i = 0; i < NSECT; i++) {
			fill(b + i * 512, i, 1, i + 1);
			s->flushed[i] = s->cur[i] = i + 1;
		}
		int fd = open(P(base), O_RDWR | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, b, VSIZE, 0), VSIZE);
		close(fd);
		free(b);
	}
	return s;
}

static void sim_free(struct sim *s)
{
	cs_free(&s->cs);
	for (int i = 0; i < s->nsnaps; i++)
		free(s->snaps[i].v);
	free(s->gw);
	free(s);
}

static void mk_image(const char *path, const char *base)
{
	struct cow_create_opts o = { .size = VSIZE, .chunk_size = 64 << 10, .block_size = 4096,
				     .journal_size = UCOW_MIN_JOURNAL, .backing = base,
				     .backing_fmt = base ? COW_FMT_RAW : 0 };
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
}

static void snap_create(struct sim *s, struct cow_image *img, int n)
{
	struct snapm *m = &s->snaps[s->nsnaps++];
	snprintf(m->name, sizeof(m->name), "s%d", n);
	m->v = malloc(sizeof(s->cur));
	assert_non_null(m->v);
	memcpy(m->v, s->cur, sizeof(s->cur));
	m->state = SN_CREATING;
	assert_int_equal(cow_snapshot_create(img, m->name), 0);
	m->state = SN_LIVE;
}

static void snap_delete(struct sim *s, struct cow_image *img)
{
	for (int i = 0; i < s->nsnaps; i++)
		if (s->snaps[i].state == SN_LIVE) {
			s->snaps[i].state = SN_DELETING;
			assert_int_equal(cow_snapshot_delete(img, s->snaps[i].name), 0);
			s->snaps[i].state = SN_GONE;
			assert_true(cow_reclaim(img, 0) >= 0);
			return;
		}
}

static int live_snaps(struct sim *s)
{
	int n = 0;
	for (int i = 0; i < s->nsnaps; i++)
		n += s->snaps[i].state == SN_LIVE;
	return n;
}

/* Make the chunk lba falls in a compressed chunk of new data (cow_put_compressed, as ucow
 * convert -c does); one that holds data is discarded first (put needs a chunk without). */
static void put_compressed(struct sim *s, struct cow_image *img, struct cow_ctx *ctx,
			   uint32_t lba, uint32_t *tag)
{
	static uint8_t chunk[64 << 10], z[64 << 10];
	uint32_t first = lba & ~127u, zn;
	uint64_t c = first / 128, bm[16];
	if (img->table[c] & ~UCOW_E_ZERO) {
		uint64_t id = guest_write(s, first, 128, 0);
		assert_int_equal(cow_rw(ctx, COW_DISCARD, NULL, 65536, first * 512ull, 0), 0);
		guest_done(s, id);
		assert_int_equal(img->table[c] & ~UCOW_E_ZERO, 0);
	}
	memset(bm, 0, sizeof(bm));
	bm[0] = (1ull << img->bpc) - 1;		/* 16 blocks of 4 KiB: all of them */
	fill(chunk, first, 128, ++*tag);
	assert_int_equal(cow_compress_chunk(chunk, sizeof(chunk), 1 + (int)(cs_rnd(&s->cs) % 9), z,
					    sizeof(chunk) - 4096, &zn), 0);
	uint64_t id = guest_write(s, first, 128, *tag);
	assert_int_equal(cow_put_compressed(img, c, z, zn, bm), 0);
	guest_done(s, id);
}

/* One request at a time on the sync backend, crash points at every sync and between. */
static void run_sync(const char *workload, const char *path, const char *base, uint64_t seed,
		     unsigned budget, bool bursty)
{
	struct sim *s = sim_new(workload, P(base ? "crash-overlay.img" : bursty ? "crash-full.img"
					    : "crash-standalone.img"), base, seed);
	struct crashsim *cs = &s->cs;
	struct cs_be rb;
	struct cow_backend *inner;
	static uint8_t data[64 << 10];
	struct cow_image *img;
	struct cow_ctx *ctx;
	uint32_t tag = 1000;
	int nreq = 0, nsnap = 0, nput = 0;

	mk_image(path, base);
	assert_int_equal(cow_open(path, NULL, &img, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("sync", 8, &inner), 0);
	cs_be_init(&rb, cs, inner);
	assert_int_equal(cow_ctx_new(img, &rb.be, &ctx), 0);
	cs_attach(cs, img);

	/* until the budget is spent and what the workload is for happened (a small budget, as
	 * the ASan run's, could end before the first checkpoint in steps) */
	for (; cs->images < budget || nreq < 20 ||
	       ((bursty ? img->ck_undone : img->ck_finished) == 0 && nreq < 20000) ||
	       (!bursty && !(img->under_made && img->under_folded) && nreq < 20000); nreq++) {
		uint64_t x = cs_rnd(cs) % 100;
		if (bursty && x < 50)
			x = 94;		/* mostly bursts: flushes that fill the journal */
		uint32_t lba = (uint32_t)(cs_rnd(cs) % NSECT);
		uint32_t n = 1 + (uint32_t)(cs_rnd(cs) % 128);
		if (cs_rnd(cs) % 4 == 0) {	/* whole chunks sometimes: unmaps, no partial blocks */
			lba &= ~127u;
			n = 128;
		}
		if (lba + n > NSECT)
			n = NSECT - lba;
		if (x < 3 || nreq == 5) {	/* at least one in every run */
			put_compressed(s, img, ctx, lba, &tag);
			nput++;		/* later writes into it copy it into a plain chunk */
		} else if (x < 62) {
			fill(data, lba, n, ++tag);
			uint64_t id = guest_write(s, lba, n, tag);
			assert_int_equal(cow_rw(ctx, COW_WRITE, data, n * 512ull, lba * 512ull, 0), 0);
			guest_done(s, id);
		} else if (x < 72) {
			int op = x < 67 ? COW_DISCARD : COW_WRITE_ZEROES;
			uint64_t id = guest_write(s, lba, n, 0);
			assert_int_equal(cow_rw(ctx, op, NULL, n * 512ull, lba * 512ull, 0), 0);
			guest_done(s, id);
		} else if (x < 94) {
			size_t nc;
			uint64_t *cover = flush_cover(s, &nc);
			assert_int_equal(cow_rw(ctx, COW_FLUSH, NULL, 0, 0, 0), 0);
			guest_flushed(s, cover, nc);
			free(cover);
		} else if (x < 96) {
			/* a burst of 4 KiB writes, more records than the journal holds: the flush
			 * after it commits in rounds, with checkpoints between them (bursty: three
			 * times the journal, so that it fills while a checkpoint in steps is under
			 * way and a synchronous one (J5) must undo records not committed yet) */
			cs->in_check = true;	/* crash points: at the syncs of the flush */
			for (int k = 0; k < (bursty ? 1200 : 400); k++) {
				/* bursty: into the lower half only (see below) */
				uint32_t l = (uint32_t)(cs_rnd(cs) % (NSECT / (bursty ? 16 : 8))) * 8;
				uint64_t id;
				if (k % (bursty ? 4 : 10) == 0) {	/* unmap chunks: writes map new ones */
					l &= ~127u;
					id = guest_write(s, l, 128, 0);
					assert_int_equal(cow_rw(ctx, COW_DISCARD, NULL, 65536,
								l * 512ull, 0), 0);
					guest_done(s, id);
					continue;
				}
				fill(data, l, 8, ++tag);
				id = guest_write(s, l, 8, tag);
				assert_int_equal(cow_rw(ctx, COW_WRITE, data, 4096, l * 512ull, 0), 0);
				guest_done(s, id);
			}
			/* bursty: then chunks of the upper half unmapped, whose records are still
			 * uncommitted when the journal fills and which no record in the journal
			 * names: a checkpoint that wrote them (not undone) could land an entry page
			 * without its bitmap page, and nothing would replay over them */
			for (int k = 0; bursty && k < 16; k++) {
				uint32_t l = (uint32_t)(NSECT / 256 + cs_rnd(cs) % (NSECT / 256)) * 128;
				uint64_t id = guest_write(s, l, 128, 0);
				assert_int_equal(cow_rw(ctx, COW_DISCARD, NULL, 65536, l * 512ull, 0),
						 0);
				guest_done(s, id);
			}
			cs->in_check = false;
		} else if ((x < 98 || live_snaps(s) < 1) && live_snaps(s) < 2 &&
			   s->nsnaps < MAX_SNAPS) {
			snap_create(s, img, nsnap++);
		} else {
			snap_delete(s, img);
		}
		cs_crash_point(cs);		/* between requests too */
	}
	print_message("%s: %d requests, %d snapshots, %d compressed chunks, %llu checkpoints in "
		      "steps, %llu that undid records, %llu underlays made, %llu folded, %u crash "
		      "points, %u crash images (%u torn writes, %u writes in flight applied)\n",
		      workload, nreq, s->nsnaps, nput, (unsigned long long)img->ck_finished,
		      (unsigned long long)img->ck_undone, (unsigned long long)img->under_made,
		      (unsigned long long)img->under_folded, cs->points, cs->images, cs->torn,
		      cs->inflight_applied);
	assert_true(nput > 0);
	if (!bursty) {		/* first writes after a snapshot: underlays, folded later */
		assert_true(img->under_made > 0);
		assert_true(img->under_folded > 0);
	}
	if (bursty)
		assert_true(img->ck_undone > 0);	/* J5's undo under test */
	else
		assert_true(img->ck_finished > 0);	/* J7 under test, not only J5 */
	img->tap = NULL;
	cow_ctx_free(ctx);
	assert_int_equal(cow_close(img), 0);
	cow_backend_free(inner);
	sim_free(s);
}

/* ---- io_uring, two contexts, several requests in flight ------------------------------------ */

struct areq {
	struct cow_req req;
	struct sim *s;
	uint64_t id;			/* writes: the guest write */
	uint64_t *cover;		/* flushes: the writes it covers */
	size_t ncover;
	bool done;
};

static void areq_cb(struct cow_req *req, int res)
{
	struct areq *a = req->priv;
	if (res)
		fail_msg("%s: request op %d at %llu failed: %d", a->s->workload, req->op,
			 (unsigned long long)req->off, res);
	if (req->op == COW_FLUSH) {
		guest_flushed(a->s, a->cover, a->ncover);
		free(a->cover);
		a->cover = NULL;
	} else {
		guest_done(a->s, a->id);
	}
	a->done = true;
}

#define NCTX 2
#define MAXQ 8

static void run_async(const char *workload, const char *path, const char *base, uint64_t seed,
		      unsigned budget)
{
	struct sim *s = sim_new(workload, P(base ? "crash-aoverlay.img" : "crash-astandalone.img"),
				base, seed);
	struct crashsim *cs = &s->cs;
	struct cs_be rb[NCTX];
	struct cow_backend *inner[NCTX];
	struct cow_ctx *ctx[NCTX];
	static uint8_t data[MAXQ][64 << 10];
	struct areq q[MAXQ];
	struct cow_image *img;
	uint32_t tag = 1000;
	unsigned rounds = 0, reqs = 0, maxflight = 0;

	mk_image(path, base);
	assert_int_equal(cow_open(path, NULL, &img, err, COW_ERRLEN), 0);
	for (int i = 0; i < NCTX; i++) {
		assert_int_equal(cow_backend_new("uring", 32, &inner[i]), 0);
		cs_be_init(&rb[i], cs, inner[i]);
		assert_int_equal(cow_ctx_new(img, &rb[i].be, &ctx[i]), 0);
	}
	cs_attach(cs, img);

	for (; cs->images < budget || rounds < 20 ||
	     ((img->ck_finished == 0 || img->under_made == 0) && rounds < 5000); rounds++) {
		unsigned n = 2 + (unsigned)(cs_rnd(cs) % (MAXQ - 1));
		uint32_t ls[MAXQ], ln[MAXQ];
		unsigned nw = 0;
		/* a round: n requests on both contexts at once, writes never on one sector */
		for (unsigned i = 0; i < n; i++) {
			struct areq *a = &q[i];
			uint64_t x = cs_rnd(cs) % 100;
			*a = (struct areq){ .s = s };
			a->req = (struct cow_req){ .cb = areq_cb, .priv = a };
			if (x < 25) {
				a->req.op = COW_FLUSH;
				a->cover = flush_cover(s, &a->ncover);
				continue;
			}
			uint32_t lba = 0, len = 0;
			for (int tries = 0; tries < 20 && !len; tries++) {
				lba = (uint32_t)(cs_rnd(cs) % NSECT);
				len = 1 + (uint32_t)(cs_rnd(cs) % 128);
				if (cs_rnd(cs) % 4 == 0) {
					lba &= ~127u;
					len = 128;
				}
				if (lba + len > NSECT)
					len = NSECT - lba;
				for (unsigned k = 0; k < nw; k++)
					if (lba < ls[k] + ln[k] && ls[k] < lba + len)
						len = 0;
			}
			if (!len) {
				a->req.op = COW_FLUSH;
				a->cover = flush_cover(s, &a->ncover);
				continue;
			}
			ls[nw] = lba;
			ln[nw++] = len;
			a->req.off = lba * 512ull;
			a->req.len = len * 512ull;
			if (x < 85) {
				a->req.op = COW_WRITE;
				a->req.buf = data[i];
				fill(data[i], lba, len, ++tag);
				a->id = guest_write(s, lba, len, tag);
			} else {
				a->req.op = x < 92 ? COW_DISCARD : COW_WRITE_ZEROES;
				a->id = guest_write(s, lba, len, 0);
			}
		}
		for (unsigned i = 0; i < n; i++) {
			cow_submit(ctx[i % NCTX], &q[i].req);
			reqs++;
		}
		/* drive both rings until the round is done */
		for (;;) {
			unsigned left = 0, flight = 0;
			for (unsigned i = 0; i < n; i++)
				left += !q[i].done;
			if (!left)
				break;
			for (int i = 0; i < NCTX; i++) {
				cow_ctx_poll(ctx[i]);
				flight += cow_backend_inflight(&rb[i].be);
			}
			if (flight > maxflight)
				maxflight = flight;
			for (int i = 0; i < NCTX; i++)
				if (cow_backend_inflight(&rb[i].be))
					assert_int_equal(cow_backend_submit_wait(&rb[i].be, 0), 0);
		}
		/* between rounds (the image quiet), a snapshot operation now and then */
		uint64_t x = cs_rnd(cs) % 100;
		if (x < 3 && live_snaps(s) < 2 && s->nsnaps < MAX_SNAPS)
			snap_create(s, img, s->nsnaps);
		else if (x < 5)
			snap_delete(s, img);
		cs_crash_point(cs);
	}
	print_message("%s: %u rounds, %u requests (up to %u I/Os in flight), %d snapshots, %llu "
		      "checkpoints in steps, %llu underlays made, %u crash points, %u crash images "
		      "(%u torn writes, %u writes in flight applied)\n", workload, rounds, reqs,
		      maxflight, s->nsnaps, (unsigned long long)img->ck_finished,
		      (unsigned long long)img->under_made, cs->points, cs->images, cs->torn,
		      cs->inflight_applied);
	assert_true(maxflight > 2);
	assert_true(img->under_made > 0);	/* first writes after a snapshot, side by side */
	assert_true(img->ck_finished > 0);	/* J7 under test, not only J5 */
	assert_true(cs->inflight_applied > 0);
	img->tap = NULL;
	for (int i = 0; i < NCTX; i++)
		cow_ctx_free(ctx[i]);
	assert_int_equal(cow_close(img), 0);
	for (int i = 0; i < NCTX; i++)
		cow_backend_free(inner[i]);
	sim_free(s);
}

/* UCOW_CRASH_STATES crash images in all: a fifth each workload. */
static uint64_t run_seed;

static void test_crash_standalone(void **state)
{
	run_sync("standalone", P("cs.img"), NULL, run_seed, crash_states() / 5, false);
}

static void test_crash_overlay(void **state)
{
	run_sync("overlay", P("co.img"), "cbase.raw", run_seed ^ 0x9e3779b97f4a7c15ull,
		 crash_states() / 5, false);
}

static void test_crash_full_journal(void **state)
{
	run_sync("full journal", P("cf.img"), NULL, run_seed ^ 0x2545f4914f6cdd1dull,
		 crash_states() / 5, true);
}

static void test_crash_async_standalone(void **state)
{
	run_async("async standalone", P("cas.img"), NULL, run_seed ^ 0xc2b2ae3d27d4eb4full,
		  crash_states() / 5);
}

static void test_crash_async_overlay(void **state)
{
	run_async("async overlay", P("cao.img"), "cabase.raw", run_seed ^ 0x165667b19e3779f9ull,
		  crash_states() / 5);
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
		cmocka_unit_test(test_crash_full_journal),
		cmocka_unit_test(test_crash_async_standalone),
		cmocka_unit_test(test_crash_async_overlay),
		cmocka_unit_test(test_sidelog_checkpoint),
	};
	run_seed = cs_seed("test_crash");
	print_message("test_crash: %u crash states (UCOW_CRASH_STATES)\n", crash_states());
	return UNIT_RUN(tests);
}
