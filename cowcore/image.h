/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 6: the image lifecycle (image.c). Below: engine.h. */
#ifndef COWCORE_IMAGE_H
#define COWCORE_IMAGE_H

#include "engine.h"

/*
 * check -r: open read-write without the chain, loading as cow_check does (problems counted
 * in img->load_problems, entries that fail validation dropped from the table in memory)
 * instead of failing; the corrupt flag is ignored. Nothing is written at open, not even a
 * replayed journal or the in-use mark. Only for cow_repair, which writes the result back
 * (or drops the image with img_abandon when it writes nothing).
 */
#define IMG_OPEN_REPAIR 0x80000000u
int img_open_repair(const char *path, int fmt, struct cow_image **out, char *err);

/* Tests: drop an image (and its chain) without writing anything, as a crash would. */
void img_abandon(struct cow_image *img);

#endif
