/* SPDX-License-Identifier: MIT */
/*
 * Layer 4: one thread's handle on an image (ctx.h). Pools of engine I/Os and chunk-sized
 * buffers (no allocation per request once warm), the backend queueing of an engine I/O,
 * and the hand-over list: a part parked by one thread may be woken by another, and a
 * flush may be completed by a commit another thread ran; such work goes back to the ctx
 * it belongs to (ready list + eventfd), because a ctx's backend belongs to one thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ctx.h"

#define CTX_MAX_FREE_BUFS 16

int ctx_init(struct cow_ctx *ctx, struct cow_image *img, struct cow_backend *be)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->img = img;
	ctx->be = be;
	pthread_mutex_init(&ctx->rlock, NULL);
	ctx->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return ctx->efd < 0 ? -errno : 0;
}

void ctx_fini(struct cow_ctx *ctx)
{
	while (ctx->free_eios) {
		struct eio *e = ctx->free_eios;
		ctx->free_eios = e->fnext;
		free(e);
	}
	while (ctx->free_bufs) {
		void *b = ctx->free_bufs;
		ctx->free_bufs = *(void **)b;
		free(b);
	}
	if (ctx->efd >= 0)
		close(ctx->efd);
	pthread_mutex_destroy(&ctx->rlock);
}

struct eio *eio_get(struct cow_ctx *ctx)
{
	struct eio *e = ctx->free_eios;
	if (e)
		ctx->free_eios = e->fnext;
	else if (!(e = malloc(sizeof(*e))))
		return NULL;
	e->ctx = ctx;
	e->hold = 0;
	return e;
}

void eio_put(struct eio *e)
{
	e->fnext = e->ctx->free_eios;
	e->ctx->free_eios = e;
}

static void eio_io_done(struct cow_io *io, int res)
{
	struct eio *e = (struct eio *)io;
	if (io->op == COW_IO_READ && res > 0 && (uint32_t)res < io->len && !(res & 511)) {
		/* A short read that ends on a sector boundary need not be the end of the file
		 * (io_uring may return one): read the rest; only a read that returns 0 (or ends
		 * mid-sector) is the end, whose tail eio_short zero-fills. Zeros in place of data
		 * would be garbage handed to the guest. */
		e->got += (uint32_t)res;
		io->buf = (char *)io->buf + res;
		io->off += (uint32_t)res;
		io->len -= (uint32_t)res;
		int r = e->ctx->be->ops->queue(e->ctx->be, io);
		if (!r)
			return;
		res = r;
	}
	if (e->got) {		/* the whole I/O again, as the caller queued it */
		io->buf = (char *)io->buf - e->got;
		io->off -= e->got;
		io->len += e->got;
		if (res >= 0)
			res += (int)e->got;
		e->got = 0;
	}
	e->fn(e, res);
}

void eio_queue(struct cow_ctx *ctx, struct eio *e, int op, int fd, void *buf, uint32_t len,
	       uint64_t off, void (*fn)(struct eio *, int), void *arg)
{
	int r;
	e->io = (struct cow_io){ .op = op, .fd = fd, .buf = buf, .len = len, .off = off,
				 .done = eio_io_done };
	e->fn = fn;
	e->arg = arg;
	e->expect = len;
	e->got = 0;
	r = ctx->be->ops->queue(ctx->be, &e->io);
	if (r < 0)
		fn(e, r);
}

int eio_short(struct eio *e, int res)
{
	if (res < 0 || (uint64_t)res >= e->expect)
		return res;
	if (e->io.op == COW_IO_READ) {		/* past the end of the file: zeros */
		memset((char *)e->io.buf + res, 0, e->expect - res);
		return res;
	}
	/* a short write is what a full disk gives (the rest of it would fail with ENOSPC):
	 * report it as that, not as an I/O error (issue 11 #8) */
	return e->io.op == COW_IO_WRITE ? -ENOSPC : res;
}

/* A chunk_size buffer, 4 KiB aligned (O_DIRECT); reused, so large writes do not mmap and
 * munmap a fresh buffer each time. */
void *ctx_buf_get(struct cow_ctx *ctx)
{
	void *b = ctx->free_bufs;
	if (b) {
		ctx->free_bufs = *(void **)b;
		ctx->nfree_bufs--;
		return b;
	}
	if (posix_memalign(&b, 4096, ctx->img->chunk_size))
		return NULL;
	return b;
}

void ctx_buf_put(struct cow_ctx *ctx, void *b)
{
	if (!b)
		return;
	if (ctx->nfree_bufs >= CTX_MAX_FREE_BUFS) {
		free(b);
		return;
	}
	*(void **)b = ctx->free_bufs;
	ctx->free_bufs = b;
	ctx->nfree_bufs++;
}

void ctx_hand_over(struct cow_ctx *to, struct cow_req *req, enum waiter_kind kind, uint64_t c)
{
	struct waiter *w = malloc(sizeof(*w));
	uint64_t one = 1;
	if (!w)
		abort();	/* cannot lose a request; out of memory here is fatal */
	*w = (struct waiter){ .req = req, .kind = kind, .chunk = c };
	pthread_mutex_lock(&to->rlock);
	w->next = to->ready;
	__atomic_store_n(&to->ready, w, __ATOMIC_RELEASE);
	/* under the lock: `to` takes the work under it too, so once this thread lets go it
	 * touches `to` no more (the request may complete and `to` be freed right after) */
	if (write(to->efd, &one, sizeof(one)) < 0) {
		/* an eventfd write only fails on counter overflow: the reader is already woken */
	}
	pthread_mutex_unlock(&to->rlock);
}

struct waiter *ctx_take_ready(struct cow_ctx *ctx)
{
	struct waiter *w;
	uint64_t v;
	if (!__atomic_load_n(&ctx->ready, __ATOMIC_ACQUIRE))
		return NULL;
	if (read(ctx->efd, &v, sizeof(v)) < 0) {
		/* nothing to drain: fine, the list is what counts */
	}
	pthread_mutex_lock(&ctx->rlock);
	w = ctx->ready;
	__atomic_store_n(&ctx->ready, NULL, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&ctx->rlock);
	return w;
}
