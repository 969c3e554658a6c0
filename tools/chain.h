/* SPDX-License-Identifier: MIT */
/*
 * What a range of an image's content is, looked for down its backing chain: which image
 * decides it (depth), whether it reads as zeros or as data, and where that data lies. The
 * walk behind ucow map, and what compare, measure and convert skip or read.
 */
#ifndef UCOW_CHAIN_H
#define UCOW_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

struct cow_image;

/* One run of content; the fields of qemu-img map's JSON. */
struct chain_ext {
	uint64_t start, length;
	uint64_t offset;		/* has_offset: where the bytes lie in img's file */
	unsigned depth;			/* img's place in the chain: 0 = the top image */
	bool present;			/* img decides the content (its data, a zero chunk, raw) */
	bool zero;			/* reads as zeros */
	bool data;			/* img's file holds the bytes */
	bool has_offset;
	struct cow_image *img;		/* the image at depth */
};

/*
 * The run of top's content from off (below top's virtual size), at most len (> 0) bytes.
 * Past a backing image's end the content is zeros, decided by the image above it (present
 * false). 0, or -errno with *failed set to the image whose map failed (cow_errmsg).
 */
int chain_extent(struct cow_image *top, uint64_t off, uint64_t len, struct chain_ext *e,
		 struct cow_image **failed);

/*
 * -U (force share): when another process holds img or its chain for writing, say once (on
 * stderr, one line) that what was read may be inconsistent. Call after the open and again
 * when done; *warned keeps it to one line.
 */
void share_warn(struct cow_image *img, const char *file, bool *warned);
/* The same for a file that could not be opened as an image (check -U of a corrupt one). */
void share_warn_file(const char *file, bool *warned);

#endif
