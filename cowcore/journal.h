/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3: the journal (journal.c, invariants J1-J6). Every call is made
 * under img->lock, or single-threaded at open and close. Below: alloc.h, sidelog.h. */
#ifndef COWCORE_JOURNAL_H
#define COWCORE_JOURNAL_H

#include "alloc.h"
#include "sidelog.h"

/* Add a record: chunk's entry and bitmap are now entry and bm (NULL: zeros), and were
 * old_entry and old_bm before. *rec_idx (if not NULL) gets the record's index. */
int jnl_add(struct cow_image *img, uint64_t chunk, uint64_t entry, const uint64_t *bm,
	    uint64_t old_entry, const uint64_t *old_bm, uint64_t *rec_idx);

/* One commit: write len bytes of buf at off and every run (table and bitmap pages of a
 * checkpoint in steps, J7), sync, then jnl_batch_done. */
struct jnl_run {
	uint64_t off;
	uint32_t len;
	uint8_t *buf;		/* inside the batch's pbuf */
};
struct jnl_batch {
	uint8_t *buf;		/* owned until jnl_batch_done */
	uint64_t off;
	uint32_t len;		/* 0: nothing to write */
	uint64_t upto;		/* records below this index are durable once written */
	uint8_t *pbuf;		/* checkpoint pages (owned), npages of them in nruns runs */
	struct jnl_run *runs;
	unsigned nruns, npages;
	bool ck_last, ck_header;	/* carries the last pages / the header (J7) */
};
int jnl_batch_prepare(struct cow_image *img, uint64_t upto, struct jnl_batch *b);
void jnl_batch_done(struct cow_image *img, struct jnl_batch *b, int res);

int jnl_checkpoint(struct cow_image *img);		/* J5 */
int jnl_commit_all(struct cow_image *img);		/* every record durable */
int jnl_checkpoint_all(struct cow_image *img);		/* everything into the table */
int jnl_replay(struct cow_image *img, uint64_t *nrec);	/* J6, at open */
void jnl_init(struct cow_image *img);		/* at open, the header read */
void jnl_normalize(struct cow_image *img);	/* read-write open: J6 layout */
void jnl_free(struct cow_image *img);		/* at close */
/* A journal_seq past every block used, a multiple of the block count (J6), and: the header
 * in force now has journal_seq seq and an empty journal. */
uint64_t jnl_fresh_seq(struct cow_image *img);
void jnl_restarted(struct cow_image *img, uint64_t seq);
/* img_write_header with the side log told (sidelog.c L2). */
int jnl_write_header(struct cow_image *img);
/* Sync, nh as the new header (the other slot), sync; img->hdr unchanged on failure. */
int jnl_switch_header(struct cow_image *img, struct ucow_hdr *nh);

#endif
