/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3: the snapshot operations (snapshot.c, S1-S4).
 * Below: snaptab.h (the structures they write), journal.h (each checkpoints first). */
#ifndef COWCORE_SNAPSHOT_H
#define COWCORE_SNAPSHOT_H

#include "snaptab.h"

/* A run of chunks freed by a snapshot operation, not punched yet (cow_reclaim). */
struct reclaim_run {
	uint64_t pcn, n;
};

/*
 * Chunks an operation frees once its switch is durable (S4; also cow_make_empty, E3): collect
 * them with freeset_add, then freeset_reclaim queues them, in runs of adjacent chunks, for
 * cow_reclaim to punch and give to the allocator (under lock; it frees fs->v). A chunk that
 * finds no room is freed again at the next open, never unsafe.
 */
struct freeset {
	uint64_t *v;
	size_t n, cap;
};
void freeset_add(struct freeset *fs, uint64_t p);
void freeset_reclaim(struct cow_image *img, struct freeset *fs);

/* Make a read-only image show snapshot key's content instead of the current state. */
int snap_view(struct cow_image *img, const char *key, char *err);

#endif
