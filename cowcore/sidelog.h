/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3: the side log of a recoverable server (sidelog.c, L1-L5).
 * Below: meta.h. */
#ifndef COWCORE_SIDELOG_H
#define COWCORE_SIDELOG_H

#include "meta.h"

/* A journal record of the current run (under img->lock; no-op without a side log). */
void sidelog_append(struct cow_image *img, uint64_t chunk, uint64_t entry, const uint64_t *bm);
/* L2: a header of generation gen is about to be written; pending holds the n records not
 * committed yet, which the new run starts with. */
void sidelog_new_run(struct cow_image *img, uint64_t gen, const struct jrec *pending, size_t n);
/* L2: that header is written; uncommitted records left: whether any are. */
void sidelog_header_written(struct cow_image *img, bool uncommitted_left);
/* L3: fold the run of header generation `generation` (at open, after the journal's replay). */
int sidelog_fold(struct cow_image *img, uint64_t generation, uint64_t *nrec);

#endif
