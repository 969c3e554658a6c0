/* SPDX-License-Identifier: MIT */
/*
 * Layer 5: how requests complete, and the group commit that makes FLUSH and FUA durable.
 *
 * A flush syncs the data (J1), then waits on img->commit_waiters until a commit covers
 * every record added before its sync started. One commit runs at a time
 * (img->commit_running): it takes a batch of records from the journal
 * (jnl_batch_prepare, which checkpoints a full journal), writes and syncs it through the
 * backend of the thread that runs it, then completes every waiter it covered — on that
 * waiter's own thread (ctx_hand_over) when it is another's — and starts the next commit if
 * waiters are left. Many flushes arriving together share one journal write and one sync.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commit.h"

struct commit {
	struct cow_image *img;
	struct cow_ctx *ctx;
	struct jnl_batch batch;
	unsigned pending;	/* writes not completed: the journal's and the checkpoint's */
	int res;
};

static void commit_start(struct cow_ctx *ctx);

/* Take every waiter a commit has covered (all of them after a failure). Under lock. */
static struct cow_req *collect_done(struct cow_image *img, int res)
{
	struct cow_req *done = NULL, **pp = &img->commit_waiters;
	while (*pp) {
		struct cow_req *q = *pp;
		struct req_state *qs = req_st(q);
		if (res || qs->commit_upto <= img->rec_committed) {
			*pp = qs->next_waiter;
			qs->res = qs->res ? qs->res : res;
			qs->next_waiter = done;
			done = q;
		} else {
			pp = &qs->next_waiter;
		}
	}
	return done;
}

static void finish_waiters(struct cow_ctx *ctx, struct cow_req *done)
{
	while (done) {
		struct cow_req *q = done;
		struct req_state *qs = req_st(q);
		done = qs->next_waiter;
		if (qs->ctx == ctx)
			req_put(q, qs->res);
		else
			ctx_hand_over(qs->ctx, q, W_COMPLETE, 0);
	}
}

/* The commit is over (res): complete what it covered, start the next one if needed. */
static void commit_end(struct cow_ctx *ctx, struct commit *c, int res)
{
	struct cow_image *img = ctx->img;
	struct cow_req *done;
	bool more;

	pthread_mutex_lock(&img->lock);
	if (c && c->batch.buf)
		jnl_batch_done(img, &c->batch, res);
	done = collect_done(img, res);
	more = !res && img->commit_waiters != NULL;
	img->commit_running = more;
	pthread_mutex_unlock(&img->lock);
	free(c);
	finish_waiters(ctx, done);
	if (more)
		commit_start(ctx);
}

static void commit_synced(struct eio *e, int res)
{
	struct commit *c = e->arg;
	eio_put(e);
	commit_end(c->ctx, c, c->res ? c->res : res < 0 ? res : 0);
}

static void commit_written(struct eio *e, int res)
{
	struct commit *c = e->arg;
	res = eio_short(e, res);
	if (res < 0)
		c->res = res;
	if (--c->pending) {	/* the sync waits for every write of the commit */
		eio_put(e);
		return;
	}
	STAT_ADD(c->img, fsyncs, 1);
	eio_queue(c->ctx, e, COW_IO_FSYNC, c->img->fd, NULL, 0, 0, commit_synced, c);
}

/* Start a commit covering every waiter (img->commit_running already set by the caller). */
static void commit_start(struct cow_ctx *ctx)
{
	struct cow_image *img = ctx->img;
	struct commit *c = calloc(1, sizeof(*c));
	struct eio *e = NULL;
	uint64_t upto = 0;
	int r = 0;

	if (!c || !(e = eio_get(ctx))) {
		free(c);
		commit_end(ctx, NULL, -ENOMEM);
		return;
	}
	c->img = img;
	c->ctx = ctx;
	pthread_mutex_lock(&img->lock);
	for (struct cow_req *q = img->commit_waiters; q; q = req_st(q)->next_waiter)
		if (req_st(q)->commit_upto > upto)
			upto = req_st(q)->commit_upto;
	r = jnl_batch_prepare(img, upto, &c->batch);
	pthread_mutex_unlock(&img->lock);
	if (r || !c->batch.len) {	/* failed, or durable already (a checkpoint ran) */
		eio_put(e);
		commit_end(ctx, c, r);
		return;
	}
	STAT_ADD(img, meta_writes, 1 + c->batch.nruns);
	STAT_ADD(img, meta_bytes_written, c->batch.len +
		 (uint64_t)c->batch.npages * UCOW_META_ALIGN);
	/* the checkpoint's pages (J7) beside the journal blocks, one sync after all of them */
	unsigned n = 1 + c->batch.nruns;
	struct eio *few[8], **es = n <= 8 ? few : malloc(n * sizeof(*es));	/* most: n = 1 */
	unsigned got = 0;
	if (es) {
		es[got++] = e;
		while (got < n && (es[got] = eio_get(ctx)))
			got++;
	}
	if (got < n) {
		for (unsigned i = 0; i < got; i++)
			eio_put(es[i]);
		if (!es)
			eio_put(e);
		if (es != few)
			free(es);
		commit_end(ctx, c, -ENOMEM);
		return;
	}
	c->pending = n;
	/* the last queue may complete the commit (and free c) before it returns */
	for (unsigned i = 0; i < n; i++) {
		const struct jnl_run *run = i ? &c->batch.runs[i - 1] : NULL;
		eio_queue(ctx, es[i], COW_IO_WRITE, img->fd, run ? run->buf : c->batch.buf,
			  run ? run->len : c->batch.len, run ? run->off : c->batch.off,
			  commit_written, c);
	}
	if (es != few)
		free(es);
}

/* Make records below upto durable, then complete req. The caller has already synced the
 * data those records describe (J1). */
static void commit_wait(struct cow_ctx *ctx, struct cow_req *req, uint64_t upto)
{
	struct cow_image *img = ctx->img;
	struct req_state *st = req_st(req);
	bool start;
	pthread_mutex_lock(&img->lock);
	if (upto <= img->rec_committed) {
		pthread_mutex_unlock(&img->lock);
		req_put(req, 0);
		return;
	}
	st->commit_upto = upto;
	st->next_waiter = img->commit_waiters;
	img->commit_waiters = req;
	start = !img->commit_running;
	img->commit_running = true;
	pthread_mutex_unlock(&img->lock);
	if (start)
		commit_start(ctx);
}

static void flush_synced(struct eio *e, int res)
{
	struct cow_req *req = e->arg;
	struct cow_ctx *ctx = e->ctx;
	eio_put(e);
	if (res < 0 || ctx->img->fmt != COW_FMT_UCOW) {
		req_put(req, res < 0 ? res : 0);
		return;
	}
	commit_wait(ctx, req, req_st(req)->commit_upto);
}

void req_flush(struct cow_ctx *ctx, struct cow_req *req)
{
	struct cow_image *img = ctx->img;
	struct req_state *st = req_st(req);
	struct eio *e = eio_get(ctx);
	pthread_mutex_lock(&img->lock);
	st->commit_upto = img->rec_added;
	pthread_mutex_unlock(&img->lock);
	st->pending = 1;
	if (!e) {
		req_put(req, -ENOMEM);
		return;
	}
	STAT_ADD(img, fsyncs, 1);
	eio_queue(ctx, e, COW_IO_FSYNC, img->fd, NULL, 0, 0, flush_synced, req);
}

/*
 * Without flushes, records would pile up in memory for ever (a guest or fio writing with
 * no flush: ~100 bytes per first write into a block). Once img->rec_bound of them are not
 * committed, the next request to complete (one at a time) first runs a flush of its own,
 * as a FUA write does: data synced, then a commit (J1 as for any flush). Committing early
 * is always allowed (a flush could have come); the request's own result is not changed by
 * that commit's (nobody asked for it). A failed commit keeps its records pending (the
 * journal counts as full: jnl_batch_done), so the next commit tries them again.
 */
static bool bound_due(struct cow_image *img)
{
	return __atomic_load_n(&img->rec_over, __ATOMIC_RELAXED) &&
	       !__atomic_exchange_n(&img->bound_flush, true, __ATOMIC_ACQ_REL);
}

static void req_done(struct cow_req *req)
{
	struct req_state *st = req_st(req);
	struct cow_image *img = st->ctx->img;
	if (!st->synced && !st->res && req->op != COW_FLUSH) {
		bool fua = req->op != COW_READ &&
			   ((req->flags & COW_REQ_FUA) ||
			    __atomic_load_n(&img->sidelog_failed, __ATOMIC_RELAXED));	/* L4 */
		if (!fua && bound_due(img))
			st->bound = fua = true;
		if (fua) {
			st->synced = true;	/* second pass: the flush part */
			req_flush(st->ctx, req);
			return;
		}
	}
	if (st->bound) {
		st->res = 0;
		__atomic_store_n(&img->bound_flush, false, __ATOMIC_RELEASE);
	}
	req->cb(req, st->res);
}

void req_put(struct cow_req *req, int res)
{
	struct req_state *st = req_st(req);
	if (res < 0 && !st->res)
		st->res = res;
	if (--st->pending == 0)
		req_done(req);
}
