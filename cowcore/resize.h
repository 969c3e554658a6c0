/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3: changing an image's virtual size (resize.c, steps R1-R4).
 * Below: snapshot.h (the S2-S4 steps it shares with the snapshot operations). */
#ifndef COWCORE_RESIZE_H
#define COWCORE_RESIZE_H

#include "snapshot.h"

/*
 * Make img's virtual size new_size (cow_resize's flags). No request may be in flight; takes
 * img->lock. Growing a ucow image whose size ends inside a block needs what that block
 * shows up to the old end: edge (edge_len = old size % block size bytes), read through the
 * engine by the caller (it may come from the backing chain); NULL otherwise. 0 or -errno
 * with img->err set.
 */
int img_resize(struct cow_image *img, uint64_t new_size, unsigned flags, const uint8_t *edge,
	       uint32_t edge_len);

#endif
