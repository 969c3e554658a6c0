/* SPDX-License-Identifier: MIT */
/*
 * The engine's reads that never look at the table (engine.c calls them): reads of the backing
 * image, and a compressed chunk's part, inflated from the cache, on the image's pool or here.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compress.h"
#include "eread.h"

static void backing_sub_done(struct cow_req *sub, int res)
{
	struct eio *e = sub->priv;
	struct cow_req *parent = e->arg;
	eio_put(e);
	req_put(parent, res);
}

/*
 * Read [voff, voff+len) of the backing image of ctx's image (virtual offsets) into buf; what
 * lies past the backing image's end, or everything when there is none, reads as zeros. A
 * read it starts counts in *pending first (it may complete at once) and ends in
 * cb(sub, res), with its eio in sub->priv and arg in that eio's arg. 0 or -ENOMEM.
 */
int backing_read(struct cow_ctx *ctx, uint64_t voff, uint64_t len, char *buf,
		 void (*cb)(struct cow_req *, int), void *arg, unsigned *pending)
{
	struct cow_image *b = ctx->img->backing;
	struct eio *e;
	if (!b || voff >= b->vsize) {
		memset(buf, 0, len);
		return 0;
	}
	if (len > b->vsize - voff) {
		memset(buf + (b->vsize - voff), 0, len - (b->vsize - voff));
		len = b->vsize - voff;
	}
	if (!(e = eio_get(ctx)))
		return -ENOMEM;
	e->arg = arg;
	e->sub = (struct cow_req){ .op = COW_READ, .off = voff, .len = len, .buf = buf,
				   .cb = cb, .priv = e };
	(*pending)++;
	cow_submit(ctx->backing, &e->sub);
	return 0;
}

void read_backing(struct cow_ctx *ctx, struct cow_req *req, uint64_t voff, uint64_t len,
		  char *buf)
{
	struct req_state *st = req_st(req);
	int r = backing_read(ctx, voff, len, buf, backing_sub_done, req, &st->pending);
	if (r && !st->res)
		st->res = r;
}

/*
 * A compressed chunk's part (compress.c): blocks whose bit is set come from the inflated
 * stream — the cache, or one read of the stream inflated when it completes — the others
 * from the backing image. The bitmap is taken at submission: a write that moves the chunk
 * meanwhile changes it, and this read must show one state or the other.
 */
struct cread {
	struct comp_job job;		/* first: the pool's job is the cread */
	struct cow_ctx *ctx;
	struct cow_req *req;
	uint64_t c, e;
	char *cbuf, *dst;
	uint32_t in, len;
	uint64_t bm[UCOW_BM_WORDS_MAX];
};

/* fn for each run of blocks of [in, in + len) with their bit set in bm. */
static void set_runs(struct cow_image *img, const uint64_t *bm, uint32_t in, uint32_t len,
		     void (*fn)(void *arg, uint32_t o, uint32_t l), void *arg)
{
	uint32_t pos = in, end = in + len;
	while (pos < end) {
		uint32_t b = pos >> img->block_shift;
		uint32_t run_end = (b + bm_run(bm, b, ((end - 1) >> img->block_shift) + 1))
				   << img->block_shift;
		if (run_end > end)
			run_end = end;
		if (bm_test(bm, b))
			fn(arg, pos, run_end - pos);
		pos = run_end;
	}
}

struct run_copy {
	struct cow_image *img;
	uint64_t e;
	const char *chunk;	/* NULL: from the cache */
	char *dst;
	uint32_t in;
	bool missed;
};

static void copy_run(void *arg, uint32_t o, uint32_t l)
{
	struct run_copy *rc = arg;
	if (rc->chunk)
		memcpy(rc->dst + (o - rc->in), rc->chunk + o, l);
	else if (!rc->missed && !comp_cache_get(rc->img, rc->e, rc->dst + (o - rc->in), o, l))
		rc->missed = true;
}

/*
 * Inflating on the image's pool (compress.c): the job inflates, copies the part out and
 * hands the request's reference back to its ctx as a W_RESULT. While jobs of a ctx are out,
 * the ctx has a COW_IO_POLL on its eventfd queued on its backend, so that whatever loop
 * drives the backend (a ublk queue, ucow bench, cow_rw) wakes for the hand-over; the last
 * W_RESULT is held until that poll is back (the eventfd is poked to make it fire), so that a
 * ctx with no request in flight has no poll left in its backend.
 */
static void cread_job(struct comp_job *j)
{
	struct cread *cr = (struct cread *)(void *)j;
	struct cow_image *img = cr->ctx->img;
	void *out = NULL;
	int res = posix_memalign(&out, 4096, img->chunk_size) ? -ENOMEM : 0;
	if (!res)
		res = comp_chunk_inflate(img, cr->e, cr->cbuf, out);
	if (!res) {
		struct run_copy rc = { img, cr->e, out, cr->dst, cr->in, false };
		set_runs(img, cr->bm, cr->in, cr->len, copy_run, &rc);
		comp_cache_put(img, cr->e, out);
	}
	free(out);
	free(cr->cbuf);		/* a ctx buffer: plain posix_memalign memory */
	ctx_hand_over(cr->ctx, cr->req, W_RESULT, (uint64_t)(int64_t)res);
	free(cr);
}

static void efd_polled(struct eio *e, int res);

static void efd_arm(struct cow_ctx *ctx, struct eio *e)
{
	ctx->efd_armed = true;
	eio_queue(ctx, e, COW_IO_POLL, ctx->efd, NULL, POLLIN, 0, efd_polled, ctx);
}

static void efd_polled(struct eio *e, int res)
{
	struct cow_ctx *ctx = e->arg;
	struct waiter *w = ctx->held;
	ctx->efd_armed = false;
	ctx->held = NULL;
	while (w) {		/* results held for this poll's return */
		struct waiter *n = w->next;
		req_put(w->req, (int)(int64_t)w->chunk);
		free(w);
		w = n;
	}
	cow_ctx_poll(ctx);
	if (ctx->pool_jobs && res >= 0)
		efd_arm(ctx, e);	/* more to wait for: the same eio again */
	else
		eio_put(e);	/* (a poll that failed: the loop's own cow_ctx_poll collects) */
}

/* cow_ctx_poll's W_RESULT: one job back from the pool. */
void pool_result(struct cow_ctx *ctx, struct waiter *w)
{
	ctx->pool_jobs--;
	if (ctx->efd_armed && !ctx->pool_jobs) {
		uint64_t one = 1;
		w->next = ctx->held;	/* completed when the poll is back */
		ctx->held = w;
		if (write(ctx->efd, &one, sizeof(one)) < 0) {
			/* only on counter overflow: readable already */
		}
		return;
	}
	req_put(w->req, (int)(int64_t)w->chunk);
	free(w);
}

/* Hand cr's inflate to the pool: true, or false to do it here. */
static bool cread_to_pool(struct cow_ctx *ctx, struct cread *cr)
{
	struct eio *pe = ctx->efd_armed ? NULL : eio_get(ctx);
	if (!ctx->efd_armed && !pe)
		return false;
	cr->ctx = ctx;
	cr->job.run = cread_job;
	if (comp_pool_submit(ctx->img, &cr->job)) {
		if (pe)
			eio_put(pe);
		return false;
	}
	ctx->pool_jobs++;
	if (pe)
		efd_arm(ctx, pe);
	return true;
}

static void cread_done(struct eio *e, int res)
{
	struct cow_ctx *ctx = e->ctx;
	struct cow_image *img = ctx->img;
	struct cread *cr = e->arg;
	struct cow_req *req = cr->req;
	res = eio_short(e, res);
	eio_put(e);
	inflight_put(img, cr->c);
	if (res >= 0 && cread_to_pool(ctx, cr))
		return;		/* the request's reference comes back as a W_RESULT */
	if (res >= 0) {
		char *out = ctx_buf_get(ctx);
		res = out ? comp_chunk_inflate(img, cr->e, cr->cbuf, out) : -ENOMEM;
		if (!res) {
			struct run_copy rc = { img, cr->e, out, cr->dst, cr->in, false };
			set_runs(img, cr->bm, cr->in, cr->len, copy_run, &rc);
			comp_cache_put(img, cr->e, out);
		}
		ctx_buf_put(ctx, out);
	}
	ctx_buf_put(ctx, cr->cbuf);
	free(cr);
	req_put(req, res < 0 ? res : 0);
}

/* Called with chunk c counted in flight (dropped here or when the stream read ends). */
void read_compressed(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint64_t e,
		     uint32_t in, uint32_t len, char *buf)
{
	struct cow_image *img = ctx->img;
	struct req_state *st = req_st(req);
	uint64_t vbase = c << img->chunk_shift, bm[UCOW_BM_WORDS_MAX];
	struct cread *cr = NULL;
	struct eio *io = NULL;
	uint32_t pos = in, end = in + len;

	bm_copy(img, bm, meta_bm(img, c, false));
	while (pos < end) {	/* the backing image's runs */
		uint32_t b = pos >> img->block_shift;
		uint32_t run_end = (b + bm_run(bm, b, ((end - 1) >> img->block_shift) + 1))
				   << img->block_shift;
		if (run_end > end)
			run_end = end;
		if (!bm_test(bm, b))
			read_backing(ctx, req, vbase + pos, run_end - pos, buf + (pos - in));
		pos = run_end;
	}
	struct run_copy rc = { img, e, NULL, buf, in, false };
	set_runs(img, bm, in, len, copy_run, &rc);
	if (!rc.missed) {
		inflight_put(img, c);
		return;
	}
	cr = malloc(sizeof(*cr));
	if (cr)
		*cr = (struct cread){ .req = req, .c = c, .e = e, .dst = buf, .in = in,
				      .len = len };
	if (!cr || !(cr->cbuf = ctx_buf_get(ctx)) || !(io = eio_get(ctx))) {
		if (cr)
			ctx_buf_put(ctx, cr->cbuf);
		free(cr);
		inflight_put(img, c);
		if (!st->res)
			st->res = -ENOMEM;
		return;
	}
	memcpy(cr->bm, bm, sizeof(bm));
	STAT_ADD(img, data_reads, 1);
	st->pending++;
	eio_queue(ctx, io, COW_IO_READ, img->fd, cr->cbuf, ucow_e_clen(e), ucow_e_coff(e),
		  cread_done, cr);
}
