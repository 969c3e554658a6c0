/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 6: the image lifecycle (image.c). Below: load.h. */
#ifndef COWCORE_IMAGE_H
#define COWCORE_IMAGE_H

#include "load.h"

/* Tests: drop an image (and its chain) without writing anything, as a crash would. */
void img_abandon(struct cow_image *img);

#endif
