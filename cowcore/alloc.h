/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3: the physical chunk allocator (alloc.c). Every call is made
 * under img->lock. Below: meta.h. */
#ifndef COWCORE_ALLOC_H
#define COWCORE_ALLOC_H

#include "meta.h"

/* A chunk freed by a discard: reusable once the record that unmapped it is durable and no
 * I/O that found it mapped is still in flight (J4). */
/* Free chunks pcn .. pcn + n - 1 (found at open). */
struct free_run {
	uint64_t pcn, n;
};

struct quarantined {
	uint64_t pcn;
	uint64_t rec;		/* index of the unmapping record */
	uint64_t chunk;		/* the virtual chunk it was mapped at */
};

int alloc_chunk(struct cow_image *img, uint64_t *pcn);
/* Give back a chunk that never became visible in a durable record. */
void alloc_release(struct cow_image *img, uint64_t pcn);
/* A chunk unmapped by record rec of virtual chunk chunk: free once J4 allows it. */
int alloc_quarantine(struct cow_image *img, uint64_t pcn, uint64_t rec, uint64_t chunk);
/* Records below upto are durable: release the quarantined chunks they unmapped. */
void alloc_committed(struct cow_image *img, uint64_t upto);
/* At open, in ascending order: chunks [pcn, pcn + n) of the data area below next_pcn are
 * free. Kept as one run, so memory grows with the runs, not with the chunks. 0 or -ENOMEM. */
int alloc_add_free_run(struct cow_image *img, uint64_t pcn, uint64_t n);
/* Calls fn(arg, pcn) for every free chunk that holds data (SEEK_DATA: holes are skipped, so
 * the time grows with the data, not with the free chunks). */
void alloc_free_with_data(struct cow_image *img, void (*fn)(void *arg, uint64_t pcn),
			  void *arg);
/* Free space of an unclean shutdown: punch free chunks that hold data (writes whose
 * mappings never became durable), cut the file after the last used chunk. */
void alloc_reclaim_unclean(struct cow_image *img, uint64_t file_size);

#endif
