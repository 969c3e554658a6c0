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

/* Make a read-only image show snapshot key's content instead of the current state. */
int snap_view(struct cow_image *img, const char *key, char *err);

#endif
