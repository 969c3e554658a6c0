/* SPDX-License-Identifier: MIT */
/*
 * cowcore internals, layer 4: one thread's handle on an image (struct cow_ctx) — its pools
 * of engine I/Os and chunk-sized buffers, its backend, and the list through which other
 * threads hand it work. Also the engine's part of a request (struct req_state, kept in the
 * space struct cow_req reserves for it). Below: load.h and everything under it.
 */
#ifndef COWCORE_CTX_H
#define COWCORE_CTX_H

#include "load.h"

/* The engine's state of a request in flight, in cow_req.engine (reserved for it). */
struct req_state {
	struct cow_ctx *ctx;		/* submitted on this ctx; completes on its thread */
	struct cow_req *next_waiter;	/* img->commit_waiters link (commit.c) */
	uint64_t commit_upto;		/* flush: records below this index must be durable */
	unsigned pending;		/* references: dispatch, chunk parts, I/Os */
	int res;			/* the first error */
	bool synced;			/* FUA write: its flush part has run */
	bool bound;			/* commit.c: it carries a commit nobody asked for */
	bool fill;			/* engine.c: a copy-on-read write, done only where the
					 * blocks still read from the backing chain */
};
_Static_assert(sizeof(struct req_state) <= sizeof(((struct cow_req *)0)->engine),
	       "struct cow_req reserves too little space for the engine");
static inline struct req_state *req_st(struct cow_req *req)
{
	return (struct req_state *)(void *)req->engine;
}

/* A request part handed to a ctx: park behind a BUSY chunk (engine.c) or hand-over. */
enum waiter_kind { W_CHUNK, W_COMPLETE, W_RESULT };	/* W_RESULT: drop one reference of
							 * req with the result in chunk */
struct waiter {
	struct cow_req *req;
	enum waiter_kind kind;
	uint64_t chunk;			/* W_CHUNK: the virtual chunk to run the part of */
	struct waiter *next;
};

struct cow_ctx {
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *backing;	/* same thread, backing image */
	struct cow_ctx *next_ctx;	/* img->ctxs, the image's contexts */
	struct eio *free_eios;
	void *free_bufs;		/* chunk-sized aligned buffers (linked through their
					 * first word) */
	unsigned nfree_bufs;
	struct chunk_op *free_ops;	/* chunk ops for reuse (engine.c owns them) */
	struct nbd_conn *nbd;		/* nbd.c: this thread's connection, for an image on an
					 * NBD server */
	int efd;			/* readable when ready is not empty */
	unsigned pool_jobs;		/* engine.c: reads handed to the inflate pool, not back */
	bool efd_armed;			/* engine.c: a COW_IO_POLL on efd is queued */
	struct waiter *held;		/* engine.c: W_RESULTs kept until that poll is back */
	pthread_mutex_t rlock;
	struct waiter *ready;		/* work handed over by other threads */
};

/* An engine I/O: a backend I/O plus what to do when it finishes. */
struct eio {
	struct cow_io io;
	struct cow_ctx *ctx;
	void (*fn)(struct eio *e, int res);
	void *arg;			/* fn's argument: a request, a chunk op, a commit */
	uint64_t expect;		/* bytes expected: a short read zero-fills, a short write
					 * fails with -ENOSPC (eio_short) */
	uint64_t u[3];			/* per-use scratch (chunk, chunk number, block range) */
	uint64_t hold;			/* virtual chunk + 1 whose inflight count it holds, or 0 */
	uint32_t got;			/* a read cut short: bytes done so far (ctx.c) */
	struct cow_req sub;		/* a read of the backing image made for this I/O */
	struct eio *fnext;		/* ctx's free list */
};

int ctx_init(struct cow_ctx *ctx, struct cow_image *img, struct cow_backend *be);
void ctx_fini(struct cow_ctx *ctx);

struct eio *eio_get(struct cow_ctx *ctx);
void eio_put(struct eio *e);
/* Queue e as one backend I/O; fn(e, res) runs when it completes (or at once on failure). */
void eio_queue(struct cow_ctx *ctx, struct eio *e, int op, int fd, void *buf, uint32_t len,
	       uint64_t off, void (*fn)(struct eio *, int), void *arg);
/* res of a finished I/O with e->expect applied: a short read's tail is zeroed (past the end
 * of the file: a read cut short elsewhere was continued first), a short write is -ENOSPC
 * (what a full disk gives). */
int eio_short(struct eio *e, int res);

void *ctx_buf_get(struct cow_ctx *ctx);		/* chunk_size bytes, 4 KiB aligned */
void ctx_buf_put(struct cow_ctx *ctx, void *b);	/* NULL is fine */

/* Hand a part of req (W_CHUNK: chunk c) or its completion (W_COMPLETE) to ctx `to`, which
 * runs it from its cow_ctx_poll. Any thread. */
void ctx_hand_over(struct cow_ctx *to, struct cow_req *req, enum waiter_kind kind, uint64_t c);
/* Take the work handed to ctx (its own thread), oldest last. */
struct waiter *ctx_take_ready(struct cow_ctx *ctx);

#endif
