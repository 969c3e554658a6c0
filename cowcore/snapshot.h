/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3: snapshots and their refcounts (snapshot.c, S1-S4).
 * Below: journal.h (a snapshot operation checkpoints first). */
#ifndef COWCORE_SNAPSHOT_H
#define COWCORE_SNAPSHOT_H

#include "journal.h"

/* A snapshot table entry, decoded. */
struct snap {
	uint32_t id, parent;
	uint64_t date_sec;
	uint32_t date_nsec;
	uint16_t name_len;
	uint64_t vsize;
	uint64_t table_offset, extent_size;
	char name[UCOW_SNAP_NAME_MAX + 1];
};

/* A run of chunks freed by a snapshot operation, not punched yet (cow_reclaim). */
struct reclaim_run {
	uint64_t pcn, n;
};

/* Read and validate the snapshot and refcount tables (at open). */
int snap_load(struct cow_image *img, uint64_t file_size);
/* fn(arg, offset, size) for every metadata extent in the data area. */
void snap_extents(struct cow_image *img, void (*fn)(void *, uint64_t, uint64_t), void *arg);
/* Make a read-only image show snapshot key's content instead of the current state. */
int snap_view(struct cow_image *img, const char *key, char *err);
/* cow_check's part for snapshots: frozen tables and refcounts against each other. */
void snap_check(struct cow_image *img, struct cow_check_result *cr);

#endif
