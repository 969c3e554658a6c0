/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 5: what the request engine (engine.c) offers the layers above
 * besides the public API. Below: nbd.h (and commit.h under it). */
#ifndef COWCORE_ENGINE_H
#define COWCORE_ENGINE_H

#include "nbd.h"

/*
 * Every context on img moves to nb, img's reopened backing image: each gets a new backing
 * context on nb (on its own backend), and img->backing becomes nb; or, on failure (-ENOMEM),
 * nothing changes. No request may be in flight on img. The old backing contexts are freed;
 * the old backing image is the caller's to close.
 */
int eng_rebind_backing(struct cow_image *img, struct cow_image *nb);

#endif
