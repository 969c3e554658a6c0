/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3: the snapshot operations (snapshot.c, S1-S4).
 * Below: snaptab.h (the structures they write), journal.h (each checkpoints first). */
#ifndef COWCORE_SNAPSHOT_H
#define COWCORE_SNAPSHOT_H

#include "under.h"

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
/* freeset_add of every chunk table[0 .. n) maps that no snapshot references (rc_shared);
 * the packs of compressed entries only with packs (the caller drops every entry that may
 * share them: an apply's whole table, not a resize's cut), else they wait for the next open */
void freeset_add_unshared(struct freeset *fs, struct cow_image *img, const uint64_t *table,
			  uint64_t n, bool packs);
void freeset_reclaim(struct cow_image *img, struct freeset *fs);
/* Fold every UNDER chunk (under_fold, in batches of 1024, each checkpointed; the old chunks
 * queued for cow_reclaim after that). No request may be in flight; under lock. Before an
 * operation that changes the parent snapshot or the table's layout (U3). */
int snap_fold_all(struct cow_image *img);

/* Make a read-only image show snapshot key's content instead of the current state. */
int snap_view(struct cow_image *img, const char *key, char *err);

/*
 * The steps S2-S4 that every operation which replaces metadata structures follows (the
 * snapshot operations here, a resize in resize.c). All under img->lock, no request in
 * flight.
 */
/* S2: n contiguous fresh chunks at the end of the file; *off their first byte. The writers
 * below give their extent back themselves when a write into it fails. */
int snap_alloc_extent(struct cow_image *img, uint64_t n, uint64_t *off);
/* S2: a lookup table (its first nent entries from table, SHARED and BUSY dropped, the rest
 * zero; ts bytes) followed by bitmap pages (groups[g] for g < ngroups; NULL: a hole, which
 * reads as zeros; bs bytes) into one fresh extent; *size its bytes (whole chunks). */
int snap_write_tables(struct cow_image *img, const uint64_t *table, uint64_t nent,
		      uint64_t *const *groups, uint64_t ngroups, uint64_t ts, uint64_t bs,
		      uint64_t *off, uint64_t *size);
/* S2: a snapshot table of n entries into a fresh extent (n == 0: none, 0 and 0). */
int snap_write_snap_table(struct cow_image *img, const struct snap *snaps, uint32_t n,
			  uint64_t *off, uint64_t *size);
/* S3: sync, one header write (the other slot) making *nh the image's header, sync. The
 * SNAPSHOTS feature bit follows what nh describes. On failure the old header stays. */
int snap_switch_header(struct cow_image *img, struct ucow_hdr *nh);
/* S4: punch an extent the old header referenced; its chunks (in the data area) are free. */
void snap_free_extent(struct cow_image *img, uint64_t off, uint64_t size);

/* The in-memory SHARED marks, recomputed from the refcounts. */
void snap_mark_shared(struct cow_image *img);

#endif
