/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 5: request completion, FLUSH and FUA, group commit (commit.c).
 * Below: ctx.h and everything under it. */
#ifndef COWCORE_COMMIT_H
#define COWCORE_COMMIT_H

#include "ctx.h"

/* Drop one reference of req; res < 0 is kept as its error. The last reference completes it:
 * a FUA write (or any write once the side log failed, L4) first runs its flush part. */
void req_put(struct cow_req *req, int res);
/* FLUSH: sync the data, then commit every record added before the sync started (J1); holds
 * the request's one reference. */
void req_flush(struct cow_ctx *ctx, struct cow_req *req);

#endif
