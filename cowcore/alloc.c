/* SPDX-License-Identifier: MIT */
/*
 * Physical chunk allocator. All functions run under img->lock.
 *
 * Free chunks: those below next_pcn that nothing maps (found at open, or returned by
 * discards). A chunk unmapped by a discard waits in quarantine until the record that unmapped
 * it is durable and every I/O that found it mapped has completed (journal.c, J4); only then
 * does it join the free list. Otherwise a write still in flight could land in the chunk after
 * it was handed to another virtual chunk. Allocation prefers the free list (lowest chunk last
 * freed first), then grows the file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "alloc.h"
#include "array.h"

int alloc_chunk(struct cow_image *img, uint64_t *pcn)
{
	if (img->nfree) {
		*pcn = img->free_pcns[--img->nfree];
		return 0;
	}
	if (img->next_pcn > UCOW_E_PCN_MASK)
		return -ENOSPC;
	int r = img_grow_file(img, img->next_pcn);
	if (r)
		return r;
	*pcn = img->next_pcn++;
	return 0;
}

/* Give back a chunk that was allocated but never became visible in any durable record. */
void alloc_release(struct cow_image *img, uint64_t pcn)
{
	if (ARRAY_ROOM(img->free_pcns, img->free_cap, img->nfree))
		return;		/* leaked until the next open; never unsafe */
	img->free_pcns[img->nfree++] = pcn;
}

static bool quiet(struct cow_image *img, uint64_t chunk)
{
	return !img->inflight || !__atomic_load_n(&img->inflight[chunk], __ATOMIC_SEQ_CST);
}

int alloc_quarantine(struct cow_image *img, uint64_t pcn, uint64_t rec, uint64_t chunk)
{
	if (rec < img->rec_committed && quiet(img, chunk)) {
		alloc_release(img, pcn);
		return 0;
	}
	if (ARRAY_ROOM(img->quar, img->quar_cap, img->nquar))
		return -ENOMEM;
	img->quar[img->nquar++] = (struct quarantined){ .pcn = pcn, .rec = rec, .chunk = chunk };
	return 0;
}

/* Records below upto are durable: release what they unmapped, once no I/O is in flight to
 * it (a chunk still busy waits for a later commit; at worst it is free at the next open). */
void alloc_committed(struct cow_image *img, uint64_t upto)
{
	size_t k = 0;
	for (size_t i = 0; i < img->nquar; i++) {
		if (img->quar[i].rec < upto && quiet(img, img->quar[i].chunk))
			alloc_release(img, img->quar[i].pcn);
		else
			img->quar[k++] = img->quar[i];
	}
	img->nquar = k;
}

int alloc_init_free(struct cow_image *img, bool (*used)(void *arg, uint64_t pcn), void *arg)
{
	for (uint64_t p = img->data_pcn; p < img->next_pcn; p++) {
		if (used(arg, p))
			continue;
		if (ARRAY_ROOM(img->free_pcns, img->free_cap, img->nfree))
			return -ENOMEM;
		img->free_pcns[img->nfree++] = p;
	}
	return 0;
}

void alloc_reclaim_unclean(struct cow_image *img, uint64_t file_size)
{
	for (size_t i = 0; i < img->nfree; i++) {
		off_t o = (off_t)(img->free_pcns[i] << img->chunk_shift);
		off_t d = lseek(img->fd, o, SEEK_DATA);
		if (d >= 0 && d < o + (off_t)img->chunk_size)
			img_punch(img, (uint64_t)o, img->chunk_size);
	}
	uint64_t end = img->next_pcn << img->chunk_shift;
	if (end < img->hdr.data_offset)
		end = img->hdr.data_offset;
	if (file_size > end && img_truncate(img, end) == 0)
		img->file_pcns = img->next_pcn;
}
