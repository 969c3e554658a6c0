/* SPDX-License-Identifier: MIT */
/*
 * cowcore internals, layer 3: compressed chunks (compress.c) — raw deflate streams of whole
 * chunks packed into physical chunks, a small cache of decompressed chunks, and the one way
 * a compressed chunk enters an image (cow_put_compressed). Below: journal.h, alloc.h.
 */
#ifndef COWCORE_COMPRESS_H
#define COWCORE_COMPRESS_H

#include "alloc.h"
#include "journal.h"

/* Inflate a raw deflate stream of at most srclen bytes into exactly dstlen bytes: 0, or
 * -EUCLEAN (the stream is damaged or does not give dstlen bytes), -ENOMEM. */
int comp_inflate(const void *src, size_t srclen, void *dst, size_t dstlen);
/* Copy [in, in + len) of the decompressed chunk of compressed entry e from the cache: true
 * when it was there. Any thread. */
bool comp_cache_get(struct cow_image *img, uint64_t e, void *dst, uint32_t in, uint32_t len);
/* Remember the decompressed chunk (chunk_size bytes) of compressed entry e. Any thread;
 * nothing happens when memory is short. */
void comp_cache_put(struct cow_image *img, uint64_t e, const void *chunk);
/* Forget every cached chunk (a new stream may take an old one's place). */
void comp_cache_clear(struct cow_image *img);
/* Free the cache (the image is closing). */
void comp_free(struct cow_image *img);
/* C4: forget the pack being filled (an operation that may free chunks is running). Under
 * lock. */
void comp_forget(struct cow_image *img);
/* Inflate the stream of compressed entry e, read from cbuf (the whole sectors the stream
 * occupies) into chunk (chunk_size bytes); the image's error names it on failure. Not
 * under lock (the failure takes it). */
int comp_chunk_inflate(struct cow_image *img, uint64_t e, const void *cbuf, void *chunk);
/* Remember physical chunk p as a pack (at open, at a put). Under lock. 0 or -ENOMEM. */
int comp_add_pack(struct cow_image *img, uint64_t p);
/* At a clean close, every change durable: punch the packs that nothing maps any more (their
 * streams were all written over, discarded or dropped), so they hold no disk space. */
void comp_punch_dead_packs(struct cow_image *img);
/*
 * The image's inflate pool: threads (one per core, at most 4; none on one core) that run
 * jobs off the serving threads, so the reads of several compressed chunks inflate at once.
 * comp_pool_submit queues j (j->run(j) runs on a pool thread): 0, or -errno when there is no
 * pool (the caller does the work itself). comp_pool_free (at close, no job queued) stops
 * and joins the threads. A pool thread marks corruption under img->lock (comp_corrupt).
 */
struct comp_job {
	struct comp_job *next;
	void (*run)(struct comp_job *j);
};
int comp_pool_submit(struct cow_image *img, struct comp_job *j);
void comp_pool_free(struct cow_image *img);
/* The stream of entry e does not inflate: the image is corrupt (-EUCLEAN). Any thread. */
int comp_corrupt(struct cow_image *img, uint64_t e);
/* Synchronous read of [in, in + len) of the chunk entry e maps (compressed or not): for
 * the maintenance paths (resize), not the request path. Under lock (a stream that does not
 * inflate marks the image corrupt without taking it again). 0 or -errno. */
int comp_chunk_pread(struct cow_image *img, uint64_t e, void *buf, uint32_t len, uint32_t in);

#endif
