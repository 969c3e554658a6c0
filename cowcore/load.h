/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3 (top): the open sequence of a ucow image (load.c).
 * Below: resize.h, snapshot.h, journal.h, sidelog.h, alloc.h, meta.h. */
#ifndef COWCORE_LOAD_H
#define COWCORE_LOAD_H

#include "resize.h"

/*
 * Load everything img->hdr describes, replaying the journal of a dirty image (and folding a
 * side log), then validate it all together. check_mode counts problems in *cr instead of
 * failing (cow_check, COW_OPEN_CHECK). 0 or -errno with img->err set.
 */
int img_load_meta(struct cow_image *img, bool check_mode, struct cow_check_result *cr);
/* Free what img_load_meta built (table, bitmaps, records, allocator, snapshots). */
void img_unload_meta(struct cow_image *img);

#endif
