/* SPDX-License-Identifier: MIT */
/*
 * cowcore internals, layer 3: underlays (under.c). An UNDER entry of the current table maps
 * a chunk that holds only the blocks written since the parent snapshot; its other blocks
 * read from the chunk the parent snapshot's frozen copy maps at the same index, where the
 * frozen bitmap has their bit (format.md "Underlays", design.md U1-U5). Every call but
 * under_pcn and under_bm is made under img->lock or single-threaded. Below: snaptab.h.
 */
#ifndef COWCORE_UNDER_H
#define COWCORE_UNDER_H

#include "snaptab.h"

/* May the first write into chunk c (entry e, SHARED, its bitmap bm) leave the old chunk
 * as the new one's underlay? Reads the parent's frozen table and the bitmap page it needs
 * the first time. false: copy, as before (no parent, another chunk there, a failed read). */
bool under_fits(struct cow_image *img, uint64_t c, uint64_t e, const uint64_t *bm);
/* The underlay of chunk c, whose UNDER entry the caller loaded: its physical chunk and its
 * bitmap (both immutable while the entry can be UNDER; no lock). */
uint64_t under_pcn(struct cow_image *img, uint64_t c);
const uint64_t *under_bm(struct cow_image *img, uint64_t c);
/* At open, after the refcounts: is UNDER entry e of chunk c valid? 0, -EUCLEAN with *why
 * set, or another -errno. */
int under_validate(struct cow_image *img, uint64_t c, uint64_t e, const char **why);
/* Any UNDER entry in the current table? */
bool under_any(struct cow_image *img);
/* Fold up to max (at most 1024) UNDER chunks from chunk *cursor on: each written whole into
 * a new chunk (its own blocks and those only its underlay holds), then mapped there as a plain
 * chunk with both bitmaps' blocks (journal records, durable with the next commit, which
 * syncs the new chunks first). *cursor moves past the last chunk looked at (the chunk count
 * at the end), *folded counts them, and old[0..*folded) (room for max) receives their old
 * chunks (0 for a chunk whose own blocks cover its underlay's: mapped in place): the caller
 * frees them once the records are durable (snapshot.c). No request may be in flight. On an
 * error *folded says how many were mapped anew. */
int under_fold(struct cow_image *img, uint64_t *cursor, uint32_t max, uint32_t *folded,
	       uint64_t *old);
/* Forget the loaded frozen copy: under_forget when no UNDER entry uses it (after a snapshot
 * operation: the parent or its copy's place may have changed), under_drop at close. */
void under_forget(struct cow_image *img);
void under_drop(struct cow_image *img);

#endif
