/* SPDX-License-Identifier: MIT */
/*
 * Layer 3, emptying the current state (cow_make_empty): every chunk becomes unallocated
 * again, so the image reads its backing file everywhere. The last step of `ucow commit`,
 * once the backing file holds the image's content durably.
 *
 * DESIGN NOTES — crash-safe through the journal, like any other unmapping:
 *   E1. Each chunk is unmapped by a journal record (entry 0, bitmap clear), added before
 *       the table and bitmap in memory change; the records are committed in rounds and
 *       checkpointed at the end (writes made before are committed along, their data synced
 *       first: J1). Records are absolute (J3), so any durable prefix leaves every chunk as
 *       it was or empty, and the table pages a checkpoint writes hold committed state only
 *       (J5). The caller made sure the backing file shows what each chunk held, so every
 *       such state reads the same.
 *   E2. A freed chunk is punched and reused only once the record unmapping it is durable
 *       (J4): after the final checkpoint, through snapshot.c's reclaim runs (cow_reclaim,
 *       and cow_close punches what is left). Punched before, a crash could leave the old
 *       mapping pointing at a hole (test_chain's crash_make_empty sees it). A chunk a
 *       snapshot references (SHARED) leaves the current state only.
 * No request may be in flight: nothing else changes the table meanwhile.
 */
#include <errno.h>
#include <stdlib.h>

#include "snapshot.h"

#define EMPTY_ROUND 4096	/* records held in memory before they are committed */

int cow_make_empty(struct cow_image *img)
{
	uint64_t old_bm[UCOW_BM_WORDS_MAX];
	struct freeset fs = { 0 };
	int r = 0;

	if (img->fmt != COW_FMT_UCOW) {
		img_set_err(img, "%s: only a ucow image can be emptied", img->path);
		return -ENOTSUP;
	}
	if (img->read_only) {
		img_set_err(img, "%s: image is open read-only%s", img->path,
			    img->corrupt ? " (it is marked corrupt)" : "");
		return -EROFS;
	}
	pthread_mutex_lock(&img->lock);
	for (uint64_t c = 0; !r && c < img->nr_chunks; c++) {
		uint64_t e = ent_load(img, c), p = ent_pcn(img, e);
		uint64_t *bm = meta_bm(img, c, false);

		if (!e)
			continue;	/* unallocated already (its bitmap is clear) */
		bm_copy(img, old_bm, bm);
		r = jnl_add(img, c, 0, NULL, e, old_bm, NULL);		/* E1 */
		if (r)
			break;
		if (bm) {
			for (uint32_t i = 0; i < img->bm_words; i++)
				__atomic_store_n(&bm[i], 0, __ATOMIC_RELEASE);
			img->bm_dirty[c / img->chunks_per_group] = 1;
		}
		ent_store(img, c, 0);
		if (p && !(e & (UCOW_E_SHARED | UCOW_E_COMPRESSED)))
			freeset_add(&fs, p);	/* a pack waits for the next open (C1) */
		if (img->rec_added - img->rec_committed >= EMPTY_ROUND)
			r = jnl_commit_all(img);
	}
	if (!r)
		r = jnl_checkpoint_all(img);
	if (!r)
		freeset_reclaim(img, &fs);				/* E2 */
	pthread_mutex_unlock(&img->lock);
	free(fs.v);
	return r;
}
