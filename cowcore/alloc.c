/* SPDX-License-Identifier: MIT */
/*
 * Physical chunk allocator. All functions run under img->lock.
 *
 * Free chunks: those below next_pcn that nothing maps (found at open, or returned by
 * discards). A chunk unmapped by a discard waits in quarantine until the record that unmapped
 * it is durable and every I/O that found it mapped has completed (journal.c, J4); only then
 * does it join the free list. Otherwise a write still in flight could land in the chunk after
 * it was handed to another virtual chunk. Allocation prefers the free list (lowest chunk last
 * freed first), then the chunks found free at open (kept as runs: a sparse file whose one
 * mapped chunk lies terabytes in costs one run, not a list of every chunk before it), then
 * grows the file.
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
	if (img->nruns) {	/* the highest chunk free at open first, as a list would */
		struct free_run *run = &img->free_runs[img->nruns - 1];
		*pcn = run->pcn + --run->n;
		if (!run->n)
			img->nruns--;
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

int alloc_add_free_run(struct cow_image *img, uint64_t pcn, uint64_t n)
{
	if (!n)
		return 0;
	if (img->nruns) {
		struct free_run *last = &img->free_runs[img->nruns - 1];
		if (last->pcn + last->n == pcn) {
			last->n += n;
			return 0;
		}
	}
	if (ARRAY_ROOM(img->free_runs, img->runs_cap, img->nruns))
		return -ENOMEM;
	img->free_runs[img->nruns++] = (struct free_run){ .pcn = pcn, .n = n };
	return 0;
}

/* fn for every chunk of [pcn, pcn + n) that holds data; holes are skipped by SEEK_DATA. */
static void data_chunks(struct cow_image *img, uint64_t pcn, uint64_t n,
			void (*fn)(void *arg, uint64_t pcn), void *arg)
{
	uint64_t end = pcn + n;
	while (pcn < end) {
		off_t d = lseek(img->fd, (off_t)(pcn << img->chunk_shift), SEEK_DATA);
		if (d < 0)
			return;		/* ENXIO: no data up to the end of the file */
		uint64_t p = (uint64_t)d >> img->chunk_shift;
		if (p >= end)
			return;
		if (p < pcn)
			p = pcn;
		fn(arg, p);
		pcn = p + 1;
	}
}

void alloc_free_with_data(struct cow_image *img, void (*fn)(void *arg, uint64_t pcn), void *arg)
{
	for (size_t i = 0; i < img->nfree; i++)
		data_chunks(img, img->free_pcns[i], 1, fn, arg);
	for (size_t i = 0; i < img->nruns; i++)
		data_chunks(img, img->free_runs[i].pcn, img->free_runs[i].n, fn, arg);
}

static void punch_chunk(void *arg, uint64_t pcn)
{
	struct cow_image *img = arg;
	img_punch(img, pcn << img->chunk_shift, img->chunk_size);
}

void alloc_reclaim_unclean(struct cow_image *img, uint64_t file_size)
{
	alloc_free_with_data(img, punch_chunk, img);
	uint64_t end = img->next_pcn << img->chunk_shift;
	if (end < img->hdr.data_offset)
		end = img->hdr.data_offset;
	if (file_size > end && img_truncate(img, end) == 0)
		img->file_pcns = img->next_pcn;
}
