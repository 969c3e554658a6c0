/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 5: the engine's reads of the backing image and of compressed
 * chunks (eread.c), beside engine.c. Below: nbd.h (and commit.h under it). */
#ifndef COWCORE_EREAD_H
#define COWCORE_EREAD_H

#include "nbd.h"

/*
 * Read [voff, voff+len) of the backing image of ctx's image (virtual offsets) into buf; what
 * lies past the backing image's end, or everything when there is none, reads as zeros. A
 * read it starts counts in *pending first (it may complete at once) and ends in
 * cb(sub, res), with its eio in sub->priv and arg in that eio's arg. 0 or -ENOMEM.
 */
int backing_read(struct cow_ctx *ctx, uint64_t voff, uint64_t len, char *buf,
		 void (*cb)(struct cow_req *, int), void *arg, unsigned *pending);
/* The same as a part of req (one reference of req per read started; errors in its res). */
void read_backing(struct cow_ctx *ctx, struct cow_req *req, uint64_t voff, uint64_t len,
		  char *buf);
/* Part [in, in + len) of compressed chunk c (entry e) into buf; chunk c counted in flight,
 * dropped here or when the stream's read ends. */
void read_compressed(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint64_t e,
		     uint32_t in, uint32_t len, char *buf);
/* cow_ctx_poll's W_RESULT: one inflate back from the pool (w freed or kept). */
void pool_result(struct cow_ctx *ctx, struct waiter *w);

#endif
