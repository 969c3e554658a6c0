/* SPDX-License-Identifier: MIT */
/*
 * The journal of lookup-table and bitmap updates.
 *
 * DESIGN NOTES — the ordering invariants that make a crash safe. Every path that changes
 * metadata keeps them; the crash tests check them.
 *
 *  J1. A mapping (table entry or bitmap bit) is never durable before the data it points to.
 *      A record is added to the pending list only when the data write it describes has
 *      completed; a commit writes records [committed, want) only after an fdatasync that was
 *      started after all of them were added (the flush that asked for the commit did it).
 *  J2. A journal block, once durable, is never written again until a checkpoint has made
 *      the journal obsolete: every commit starts a fresh block, so a torn write can only hurt
 *      the commit being written, which nobody has been told is durable.
 *  J3. Records are absolute (chunk -> entry, bitmap); replaying a prefix of the journal, or a
 *      record twice, gives a state some flush could have seen.
 *  J4. A chunk unmapped by a discard is reused only after the record unmapping it is durable
 *      (quarantine, see alloc.c) and after its hole punch completed; otherwise a crash could
 *      leave two mappings to one chunk.
 *  J5. Checkpoint: fdatasync (J1) -> write the table and bitmap pages changed since the
 *      last checkpoint, holding the COMMITTED state only (records below rec_committed; a
 *      record not committed yet is undone on the way out with the old value it carries)
 *      -> fdatasync -> header with journal_seq advanced past every used block, written to
 *      the other header slot -> fdatasync. Until that header write lands, the old header's
 *      journal replays over a table of which any subset of pages is new; since every page
 *      holds nothing the old journal does not, any such mix replays to the committed state
 *      (J3). Writing uncommitted changes into the pages would break that: a page with a
 *      new entry and one with the old bitmap of the same chunk, and no record to reconcile
 *      them (test_crash found it). Records not committed stay pending for the new
 *      journal. Close and snapshot S1 need everything in the table: jnl_checkpoint_all
 *      commits in rounds (checkpointing when the journal is full), then checkpoints.
 *  J6. The journal is a ring: the block of seq s lies at s mod the block count (and at
 *      s - journal_seq in an image whose header has no JRING bit and a journal_seq that is
 *      not a multiple of the block count: older versions wrote it so; the next header this
 *      version writes starts a multiple). Replay starts at the block of journal_seq, wraps,
 *      and stops at the first block whose magic, crc or seq is wrong, so stale blocks from
 *      before a checkpoint never replay: seqs only grow, and a block at a given place
 *      carries a seq one or more rounds older than the one replay expects there.
 *  J7. A checkpoint in steps, off the request path (no sync of its own): when half of the
 *      journal is in use, the cut is taken (T = the next block's seq, R = rec_committed;
 *      every block below T holds exactly the records below R) and the pages dirty then
 *      are written, a few with each commit (beside its journal blocks, before its sync),
 *      holding the state at the cut: the live page with every record from R on undone
 *      (the old value of the first of them per chunk, as J5 undoes uncommitted ones), so
 *      records from R on stay in memory until the last page is built. The commit after
 *      the one whose sync covered the last page writes a header with journal_seq = T
 *      (JRING set when T is not a multiple of the block count); its sync makes the blocks
 *      below T free. Meanwhile commits go on into the free half: blocks at or past T never
 *      overwrite one below T while the header before T is the one in force (jblk counts
 *      from the durable header). Until the new header lands, the old one replays from its
 *      journal_seq over pages of which any subset holds the state at T, which that journal
 *      covers (J3, as in J5); after, replay starts at T over pages that all hold T. A
 *      commit that fails abandons the checkpoint (its pages go back to the dirty set); a
 *      full journal, a close or a snapshot operation checkpoints synchronously (J5), which
 *      abandons one in steps first and starts the journal at a multiple of the block count
 *      (JRING clear: a cleanly closed image opens in older versions).
 *  J8. Records not committed stay bounded: once img->rec_bound of them wait (about 8 MiB),
 *      jnl_add raises img->rec_over and the next request to complete runs a flush of its
 *      own before completing (commit.c), which syncs the data first (J1) and commits.
 *
 * State: pending records live in img->recs (index rec_base..rec_added-1); rec_committed is
 * the index below which every record is durable. Layer 3: this file knows records, blocks,
 * checkpoints and replay, never requests: commit.c (layer 5) writes the batches that
 * jnl_batch_prepare builds, through the caller's backend, and completes the flushes that
 * waited for them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array.h"
#include "journal.h"

/* J7: a checkpoint in steps. */
enum { CK_PAGES, CK_SYNCING, CK_DURABLE, CK_HEADER };
enum { CK_TODO = 1, CK_MEMBER = 2 };
struct jnl_ckpt {
	int state;		/* CK_PAGES: pages left to write; CK_SYNCING: the last ones are in
				 * a commit in flight; CK_DURABLE: all synced, the header next;
				 * CK_HEADER: the header is in a commit in flight */
	uint64_t seq;		/* the cut: journal_seq of the header the checkpoint ends with */
	uint64_t rec;		/* the cut: the pages hold the records below this index */
	uint8_t *table_dirty, *bm_dirty;	/* per page: CK_MEMBER (dirty at the cut), and
						 * CK_TODO while not built into a commit yet */
	uint64_t left;		/* how many CK_TODO */
	uint64_t tpos, gpos;	/* where the next step looks */
	uint64_t old_seq, old_incompat;	/* the header's, while the new one is in flight */
};

#define CK_STEP_MIN	16	/* pages a step writes at least ... */
#define CK_STEP_MAX	1024	/* ... and at most (4 MiB) */

static uint64_t nblocks(struct cow_image *img) { return img->hdr.journal_size / UCOW_JBLOCK; }

/* Where the journal block of seq s lies (J6). */
static uint64_t jpos(struct cow_image *img, uint64_t s)
{
	return img->jlegacy ? s - img->jseq : s % nblocks(img);
}

/* A journal_seq for a new journal: past every block used, a multiple of the block count. */
uint64_t jnl_fresh_seq(struct cow_image *img)
{
	uint64_t n = nblocks(img);
	return (img->jseq + img->jblk + n - 1) / n * n;
}

/* The header in force now has journal_seq seq and an empty journal. */
void jnl_restarted(struct cow_image *img, uint64_t seq)
{
	img->jseq = seq;
	img->jblk = 0;
	img->jlegacy = false;
}

/* At open, after the header is read (J6). */
void jnl_init(struct cow_image *img)
{
	img->jseq = img->hdr.journal_seq;
	img->jblk = 0;
	img->jlegacy = !(img->hdr.incompat & UCOW_INCOMPAT_JRING) &&
		       img->hdr.journal_seq % nblocks(img);
}

/* Read-write open, before the header that marks the image in use: a journal of an older
 * version's layout (J6) starts again at a multiple of the block count. Its records, if it
 * had any, were replayed and checkpointed already. */
void jnl_normalize(struct cow_image *img)
{
	if (!img->jlegacy)
		return;
	img->hdr.journal_seq = jnl_fresh_seq(img);
	jnl_restarted(img, img->hdr.journal_seq);
}

static void ck_free(struct cow_image *img)
{
	if (!img->ck)
		return;
	free(img->ck->table_dirty);
	free(img->ck->bm_dirty);
	free(img->ck);
	img->ck = NULL;
}

/* J7: give a checkpoint in steps up; its pages are dirty again, every one (a write of one
 * may have failed or be torn; those that landed hold the state at the cut, which the
 * journal in force covers). */
static void ck_abort(struct cow_image *img)
{
	struct jnl_ckpt *ck = img->ck;
	if (!ck)
		return;
	for (uint64_t p = 0; p < img->hdr.table_size / UCOW_META_ALIGN; p++)
		if (ck->table_dirty[p])
			img->table_dirty[p] = 1;
	for (uint64_t g = 0; g < img->nr_groups; g++)
		if (ck->bm_dirty[g])
			img->bm_dirty[g] = 1;
	ck_free(img);
}

void jnl_free(struct cow_image *img)
{
	ck_free(img);
}

/* Add a record (under img->lock): chunk's entry and bitmap are now entry and bm (NULL:
 * zeros), and were old_entry and old_bm before. */
int jnl_add(struct cow_image *img, uint64_t chunk, uint64_t entry, const uint64_t *bm,
	    uint64_t old_entry, const uint64_t *old_bm, uint64_t *rec_idx)
{
	size_t n = img->rec_added - img->rec_base;
	if (ARRAY_ROOM(img->recs, img->recs_cap, n))
		return -ENOMEM;
	uint64_t *copy = malloc(img->bm_words * 16);
	if (!copy)
		return -ENOMEM;
	bm_copy(img, copy, bm);
	bm_copy(img, copy + img->bm_words, old_bm);
	img->recs[n] = (struct jrec){ .chunk = chunk, .entry = entry & ~UCOW_E_BUSY, .bm = copy,
				      .old_entry = old_entry & ~UCOW_E_BUSY,
				      .old_bm = copy + img->bm_words };
	sidelog_append(img, chunk, entry & ~UCOW_E_BUSY, copy);	/* before the request completes */
	if (rec_idx)
		*rec_idx = img->rec_added;
	img->rec_added++;
	if (img->rec_bound && img->rec_added - img->rec_committed >= img->rec_bound)
		__atomic_store_n(&img->rec_over, true, __ATOMIC_RELAXED);
	return 0;
}

/* Drop records below upto from memory (they are durable), except those a checkpoint in
 * steps still undoes (J7). Under lock. */
static void drop_records(struct cow_image *img, uint64_t upto)
{
	if (img->ck && img->ck->state == CK_PAGES && upto > img->ck->rec)
		upto = img->ck->rec;
	if (upto <= img->rec_base)
		return;
	size_t k = upto - img->rec_base, n = img->rec_added - img->rec_base;
	for (size_t i = 0; i < k; i++)
		free(img->recs[i].bm);
	if (n > k)
		memmove(img->recs, img->recs + k, (n - k) * sizeof(*img->recs));
	img->rec_base = upto;
}

/*
 * A new header in one step (snapshot S3, a new backing file): fdatasync, so that nothing the
 * new header points to or stands on is less durable than it; nh (generation taken from the
 * header in force) into the other slot; fdatasync. On failure img->hdr stays the old one,
 * which is on disk, or the torn slot is (the next write goes to the same slot again).
 */
int jnl_switch_header(struct cow_image *img, struct ucow_hdr *nh)
{
	struct ucow_hdr old = img->hdr;
	int r = img_sync(img);
	if (r)
		return r;
	nh->generation = img->hdr.generation;
	img->hdr = *nh;
	r = jnl_write_header(img);
	if (!r)
		r = img_sync(img);
	if (r)
		img->hdr = old;		/* the old header is still the one on disk (or torn) */
	STAT_ADD(img, fsyncs, 2);
	return r;
}

/* A header write (generation + 1) that a side log hears of (sidelog.c L2): the new run
 * starts with every record not committed yet. */
int jnl_write_header(struct cow_image *img)
{
	size_t n = img->rec_added - img->rec_committed;
	int r;
	sidelog_new_run(img, img->hdr.generation + 1,
			n ? &img->recs[img->rec_committed - img->rec_base] : NULL, n);
	r = img_write_header(img);
	if (!r)
		sidelog_header_written(img, n != 0);
	else if (img->sidelog_fd >= 0)
		/* L4: the disk may hold either generation now, and the records after this go to
		 * one run only: a fold could miss them. Write-through from here on (each write
		 * completes after a flush), as when the log itself fails. */
		__atomic_store_n(&img->sidelog_failed, true, __ATOMIC_RELAXED);
	return r;
}

static uint32_t rec_size(struct cow_image *img) { return UCOW_JREC_HDR + img->bm_words * 8; }

/* How many journal blocks records [from, to) need. */
static uint64_t blocks_for(struct cow_image *img, uint64_t nrec)
{
	uint64_t per = (UCOW_JBLOCK - UCOW_JHDR) / rec_size(img);
	return (nrec + per - 1) / per;
}

/* Serialize records [from, to) into blocks starting at journal block jblk. */
static void build_blocks(struct cow_image *img, uint8_t *buf, uint64_t from, uint64_t to,
			 uint64_t jblk)
{
	uint64_t per = (UCOW_JBLOCK - UCOW_JHDR) / rec_size(img);
	uint64_t nblk = blocks_for(img, to - from);
	for (uint64_t b = 0; b < nblk; b++) {
		uint8_t *blk = buf + b * UCOW_JBLOCK;
		uint64_t first = from + b * per, last = first + per < to ? first + per : to;
		uint8_t *p = blk + UCOW_JHDR;
		memset(blk, 0, UCOW_JBLOCK);
		for (uint64_t i = first; i < last; i++) {
			struct jrec *r = &img->recs[i - img->rec_base];
			put_le16(p, UCOW_JREC_MAP);
			put_le16(p + 2, rec_size(img));
			put_le64(p + 8, r->chunk);
			put_le64(p + 16, r->entry);
			for (uint32_t w = 0; w < img->bm_words; w++)
				put_le64(p + UCOW_JREC_HDR + w * 8, r->bm[w]);
			p += rec_size(img);
		}
		put_le32(blk, UCOW_JMAGIC);
		put_le64(blk + 8, img->jseq + jblk + b);
		put_le32(blk + 16, (uint32_t)(last - first));
		put_le32(blk + 20, (uint32_t)(p - blk));
		put_le32(blk + 4, ucow_crc32c(0, blk, UCOW_JBLOCK));
	}
}

/* The committed value of a chunk that records not yet committed changed: the old value of
 * the first of them. Sorted by chunk (J5). */
struct undo {
	uint64_t c, e, idx;
	const uint64_t *bm;
};

static int undo_cmp(const void *a, const void *b)
{
	const struct undo *x = a, *y = b;
	if (x->c != y->c)
		return x->c < y->c ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

struct undo_set {
	struct undo *u;		/* owned */
	size_t n;
};

/* The undo of records [from, rec_added) for chunks in [lo, hi). */
static int build_undo(struct cow_image *img, uint64_t from, uint64_t lo, uint64_t hi,
		      struct undo_set *us)
{
	size_t m = img->rec_added - from, k = 0;
	struct undo *u;
	us->u = NULL;
	us->n = 0;
	if (!m)
		return 0;
	u = malloc(m * sizeof(*u));
	if (!u)
		return -ENOMEM;
	for (uint64_t i = from; i < img->rec_added; i++) {
		const struct jrec *r = &img->recs[i - img->rec_base];
		if (r->chunk >= lo && r->chunk < hi)
			u[k++] = (struct undo){ .c = r->chunk, .e = r->old_entry, .idx = i,
						.bm = r->old_bm };
	}
	qsort(u, k, sizeof(*u), undo_cmp);
	size_t n = 0;
	for (size_t i = 0; i < k; i++)
		if (!n || u[n - 1].c != u[i].c)
			u[n++] = u[i];
	us->u = u;
	us->n = n;
	return 0;
}

/* The first undo entry for a chunk >= c. */
static size_t undo_find(const struct undo *u, size_t n, uint64_t c)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (u[mid].c < c)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void table_undo(struct cow_image *img, uint64_t pg, uint64_t *buf, const struct undo_set *us)
{
	uint64_t first = pg * (UCOW_META_ALIGN / 8), end = first + UCOW_META_ALIGN / 8;
	for (size_t i = undo_find(us->u, us->n, first); i < us->n && us->u[i].c < end; i++)
		buf[us->u[i].c - first] = us->u[i].e & ~UCOW_E_BUSY;
}

static void bm_undo(struct cow_image *img, uint64_t g, uint64_t *buf, const struct undo_set *us)
{
	uint64_t first = g * img->chunks_per_group, end = first + img->chunks_per_group;
	for (size_t i = undo_find(us->u, us->n, first); i < us->n && us->u[i].c < end; i++)
		memcpy(buf + (us->u[i].c - first) * img->bm_words, us->u[i].bm, img->bm_words * 8);
}

/* Dirty pages go out in runs of up to WRITE_RUN pages, one write per run (a checkpoint of
 * a large image writes thousands of pages: one write per page was the most frequent system
 * call of a long run of first writes). */
#define WRITE_RUN	256

static int write_pages(struct cow_image *img, uint64_t region, const uint8_t *dirty,
		       uint64_t npages, const void *(*page_of)(struct cow_image *, uint64_t,
							       uint64_t *),
		       void (*undo)(struct cow_image *, uint64_t, uint64_t *,
				    const struct undo_set *), const struct undo_set *us)
{
	const unsigned words = UCOW_META_ALIGN / 8;
	uint64_t *buf, first = 0, n = 0;
	int r = 0;
	if (posix_memalign((void **)&buf, UCOW_META_ALIGN, WRITE_RUN * UCOW_META_ALIGN))
		return -ENOMEM;
	for (uint64_t pg = 0; pg <= npages && !r; pg++) {
		bool take = pg < npages && dirty[pg];
		if (take && n && first + n == pg && n < WRITE_RUN) {
			/* joins the run below */
		} else {
			if (n)
				r = img_meta_write(img, buf, n * UCOW_META_ALIGN,
						   region + first * UCOW_META_ALIGN);
			first = pg;
			n = 0;
			if (!take || r)
				continue;
		}
		uint64_t *dst = buf + n * words;
		const void *src = page_of(img, pg, dst);
		if (src != dst)
			memcpy(dst, src, UCOW_META_ALIGN);
		undo(img, pg, dst, us);
		for (unsigned i = 0; i < words; i++)
			dst[i] = htole64(dst[i]);
		n++;
	}
	free(buf);
	return r;
}

static const void *table_page(struct cow_image *img, uint64_t pg, uint64_t *buf)
{
	for (unsigned i = 0; i < UCOW_META_ALIGN / 8; i++)
		buf[i] = __atomic_load_n(&img->table[pg * (UCOW_META_ALIGN / 8) + i],
					 __ATOMIC_RELAXED) & ~UCOW_E_BUSY;
	return buf;
}

static const void *bm_page(struct cow_image *img, uint64_t g, uint64_t *buf)
{
	const uint64_t *src = img->bm_groups[g];
	if (!src) {
		memset(buf, 0, UCOW_META_ALIGN);
		return buf;
	}
	for (unsigned i = 0; i < UCOW_META_ALIGN / 8; i++)
		buf[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	return buf;
}

/* ---- a checkpoint in steps (J7) ---------------------------------------------------------- */

/* Take the cut: the pages dirty now are this checkpoint's, the live sets start again with
 * the pages of the records past the cut. Best effort: without memory the journal fills
 * and a synchronous checkpoint runs (J5). */
static void ck_begin(struct cow_image *img)
{
	uint64_t tp = img->hdr.table_size / UCOW_META_ALIGN, ng = img->nr_groups;
	struct jnl_ckpt *ck = calloc(1, sizeof(*ck));
	if (!ck)
		return;
	ck->table_dirty = malloc(tp ? tp : 1);
	ck->bm_dirty = malloc(ng ? ng : 1);
	if (!ck->table_dirty || !ck->bm_dirty) {
		free(ck->table_dirty);
		free(ck->bm_dirty);
		free(ck);
		return;
	}
	for (uint64_t p = 0; p < tp; p++) {
		ck->table_dirty[p] = img->table_dirty[p] ? CK_TODO | CK_MEMBER : 0;
		ck->left += img->table_dirty[p] != 0;
	}
	for (uint64_t g = 0; g < ng; g++) {
		ck->bm_dirty[g] = img->bm_dirty[g] ? CK_TODO | CK_MEMBER : 0;
		ck->left += img->bm_dirty[g] != 0;
	}
	memset(img->table_dirty, 0, tp);
	memset(img->bm_dirty, 0, ng);
	for (uint64_t i = img->rec_committed; i < img->rec_added; i++) {
		uint64_t c = img->recs[i - img->rec_base].chunk;
		img->table_dirty[c * 8 / UCOW_META_ALIGN] = 1;
		img->bm_dirty[c / img->chunks_per_group] = 1;
	}
	ck->seq = img->jseq + img->jblk;
	ck->rec = img->rec_committed;
	ck->state = ck->left ? CK_PAGES : CK_DURABLE;
	img->ck = ck;
}

/* Up to want pages of one region into the batch, built at the cut (J7). */
static int ck_region(struct cow_image *img, struct jnl_batch *b, uint64_t want, bool bitmap)
{
	struct jnl_ckpt *ck = img->ck;
	uint8_t *dirty = bitmap ? ck->bm_dirty : ck->table_dirty;
	uint64_t npages = bitmap ? img->nr_groups : img->hdr.table_size / UCOW_META_ALIGN;
	uint64_t *pos = bitmap ? &ck->gpos : &ck->tpos;
	uint64_t region = bitmap ? img->hdr.bitmap_offset : img->hdr.table_offset;
	uint64_t per = bitmap ? img->chunks_per_group : UCOW_META_ALIGN / 8;
	uint64_t first = UINT64_MAX, last = 0, pg, n = 0, taken = b->npages;
	struct undo_set us;
	int r;

	for (pg = *pos; pg < npages && n < want; pg++)
		if (dirty[pg] & CK_TODO) {
			if (first == UINT64_MAX)
				first = pg;
			last = pg;
			n++;
		}
	if (!n) {
		*pos = npages;
		return 0;
	}
	r = build_undo(img, ck->rec, first * per, (last + 1) * per, &us);
	if (r)
		return r;
	for (pg = first; pg <= last; pg++) {
		if (!(dirty[pg] & CK_TODO))
			continue;
		uint64_t *dst = (uint64_t *)(b->pbuf + b->npages * UCOW_META_ALIGN);
		const void *src = bitmap ? bm_page(img, pg, dst) : table_page(img, pg, dst);
		if (src != dst)
			memcpy(dst, src, UCOW_META_ALIGN);
		if (bitmap)
			bm_undo(img, pg, dst, &us);
		else
			table_undo(img, pg, dst, &us);
		for (unsigned i = 0; i < UCOW_META_ALIGN / 8; i++)
			dst[i] = htole64(dst[i]);
		struct jnl_run *run = b->nruns ? &b->runs[b->nruns - 1] : NULL;
		uint64_t off = region + pg * UCOW_META_ALIGN;
		if (run && b->npages > taken && run->off + run->len == off)
			run->len += UCOW_META_ALIGN;
		else
			b->runs[b->nruns++] = (struct jnl_run){ .off = off, .len = UCOW_META_ALIGN,
				.buf = b->pbuf + b->npages * UCOW_META_ALIGN };
		b->npages++;
		dirty[pg] &= ~CK_TODO;
		ck->left--;
	}
	*pos = last + 1;
	free(us.u);
	return 0;
}

/* This commit's part of the checkpoint (J7): pages, paced so that they are all written
 * when half of the journal's free blocks are used (a commit of nblk blocks writes its
 * share), or the header once the pages are durable. free: the free blocks before this
 * commit takes nblk of them. */
static int ck_step(struct cow_image *img, struct jnl_batch *b, uint64_t nblk, uint64_t free)
{
	struct jnl_ckpt *ck = img->ck;
	int r = 0;

	if (ck->state == CK_PAGES) {
		uint64_t want = (2 * ck->left * nblk + free - 1) / (free ? free : 1);
		if (want < CK_STEP_MIN)
			want = CK_STEP_MIN;
		if (want > CK_STEP_MAX)
			want = CK_STEP_MAX;
		if (want > ck->left)
			want = ck->left;
		if (posix_memalign((void **)&b->pbuf, UCOW_META_ALIGN, want * UCOW_META_ALIGN))
			b->pbuf = NULL;
		b->runs = malloc(want * sizeof(*b->runs));
		if (!b->pbuf || !b->runs)
			return -ENOMEM;
		r = ck_region(img, b, want, false);
		if (!r && b->npages < want)
			r = ck_region(img, b, want - b->npages, true);
		if (r)
			return r;
		if (!ck->left) {
			ck->state = CK_SYNCING;	/* durable with this commit's sync */
			b->ck_last = true;
			drop_records(img, img->rec_committed);	/* no undo needed any more */
		}
	} else if (ck->state == CK_DURABLE) {
		ck->old_seq = img->hdr.journal_seq;
		ck->old_incompat = img->hdr.incompat;
		img->hdr.journal_seq = ck->seq;
		if (ck->seq % nblocks(img))
			img->hdr.incompat |= UCOW_INCOMPAT_JRING;
		else
			img->hdr.incompat &= ~UCOW_INCOMPAT_JRING;
		/* written now, under the lock (the side log's run starts with it, L2); durable
		 * with this commit's sync, which the pages' sync preceded */
		r = jnl_write_header(img);
		if (r) {
			img->hdr.journal_seq = ck->old_seq;
			img->hdr.incompat = ck->old_incompat;
			return r;
		}
		ck->state = CK_HEADER;
		b->ck_header = true;
	}
	return 0;
}

/* A commit that carried part of the checkpoint is over (J7). */
static void ck_done(struct cow_image *img, struct jnl_batch *b, int res)
{
	struct jnl_ckpt *ck = img->ck;
	if (!ck)
		return;
	if (res) {
		if (b->ck_header) {
			/* the new header may or may not be durable: the old one stays in force in
			 * memory, and the next header goes to the same slot (as in J5) */
			img->hdr.journal_seq = ck->old_seq;
			img->hdr.incompat = ck->old_incompat;
			img->hdr.generation--;
		}
		ck_abort(img);
		return;
	}
	if (b->ck_last)
		ck->state = CK_DURABLE;
	if (b->ck_header) {
		img->jblk -= ck->seq - img->jseq;	/* the blocks below the cut are free */
		img->jseq = ck->seq;
		img->jlegacy = false;
		ck_free(img);
		img->ck_finished++;
		STAT_ADD(img, checkpoints, 1);
	}
}

/*
 * Checkpoint (J5): the committed state (records below rec_committed) into the table and
 * bitmap pages in place, then a header that starts the journal again. Under img->lock, or
 * single-threaded at open/close. Synchronous: it runs when the journal is full (once per
 * journal_size of metadata), and through jnl_checkpoint_all at close and snapshot S1.
 * Records not committed yet stay in memory (and their pages dirty) for the next commit.
 */
int jnl_checkpoint(struct cow_image *img)
{
	struct undo_set us;
	int r;
	ck_abort(img);		/* J7: this one writes every dirty page */
	r = build_undo(img, img->rec_committed, 0, UINT64_MAX, &us);
	img->ck_undone += us.n != 0;
	if (!r)
		r = img_sync(img);
	if (!r)
		r = write_pages(img, img->hdr.table_offset, img->table_dirty,
				img->hdr.table_size / UCOW_META_ALIGN, table_page, table_undo, &us);
	if (!r)
		r = write_pages(img, img->hdr.bitmap_offset, img->bm_dirty, img->nr_groups, bm_page,
				bm_undo, &us);
	if (!r)
		r = img_sync(img);
	if (!r) {
		uint64_t old_seq = img->hdr.journal_seq, old_incompat = img->hdr.incompat;
		img->hdr.journal_seq = jnl_fresh_seq(img);	/* J6: JRING not needed */
		img->hdr.incompat &= ~UCOW_INCOMPAT_JRING;
		r = jnl_write_header(img);
		if (!r && (r = img_sync(img)))
			img->hdr.generation--;	/* written, maybe not durable (see below) */
		if (r) {
			/*
			 * J5/J6: the new header may or may not be on disk. In memory the old one
			 * stays in force (img_write_header: the next header goes to the same
			 * slot again, never over the last durable one), and no batch may go to
			 * the journal before a checkpoint succeeds: its blocks would carry the
			 * old journal_seq, which a new header that did land never replays (the
			 * flushes they acknowledge would be lost at the next crash).
			 */
			img->hdr.journal_seq = old_seq;
			img->hdr.incompat = old_incompat;
			img->jblk = nblocks(img);
		}
	}
	free(us.u);
	STAT_ADD(img, fsyncs, 3);
	if (r) {
		img_set_err(img, "%s: checkpoint failed: %s", img->path, strerror(-r));
		return r;
	}
	STAT_ADD(img, checkpoints, 1);
	memset(img->table_dirty, 0, img->hdr.table_size / UCOW_META_ALIGN);
	memset(img->bm_dirty, 0, img->nr_groups);
	for (uint64_t i = img->rec_committed; i < img->rec_added; i++) {
		uint64_t c = img->recs[i - img->rec_base].chunk;
		img->table_dirty[c * 8 / UCOW_META_ALIGN] = 1;
		img->bm_dirty[c / img->chunks_per_group] = 1;
	}
	jnl_restarted(img, img->hdr.journal_seq);
	drop_records(img, img->rec_committed);
	alloc_committed(img, img->rec_committed);
	return 0;
}

/* Records [rec_committed, upto) into the journal, synchronously (data synced first, J1). */
static int commit_sync(struct cow_image *img, uint64_t upto)
{
	struct jnl_batch b;
	int r = img_sync(img);
	if (!r)
		r = jnl_batch_prepare(img, upto, &b);
	if (r || !b.len)
		return r;
	r = img_meta_write(img, b.buf, b.len, b.off);
	for (unsigned i = 0; i < b.nruns && !r; i++)
		r = img_meta_write(img, b.runs[i].buf, b.runs[i].len, b.runs[i].off);
	if (!r)
		r = img_sync(img);
	jnl_batch_done(img, &b, r);
	return r;
}

/* How many records fit in the journal's free blocks, in one write: up to the end of the
 * ring (the rest in the next batch). */
static uint64_t records_fit(struct cow_image *img)
{
	uint64_t cap = nblocks(img), free, end;
	if (img->jblk >= cap)
		return 0;
	free = cap - img->jblk;
	end = cap - jpos(img, img->jseq + img->jblk);
	return (free < end ? free : end) * ((UCOW_JBLOCK - UCOW_JHDR) / rec_size(img));
}

/* Every record in memory durable: commit what fits, checkpoint when the journal is full,
 * until no record is left. */
int jnl_commit_all(struct cow_image *img)
{
	int r = 0;
	while (!r && img->rec_committed < img->rec_added) {
		uint64_t fit = records_fit(img), upto = img->rec_added;
		if (!fit) {
			r = jnl_checkpoint(img);
			continue;
		}
		if (upto - img->rec_committed > fit)
			upto = img->rec_committed + fit;
		r = commit_sync(img, upto);
	}
	return r;
}

/* Everything in memory durable and in the table: every record committed, then one
 * checkpoint more (close, snapshot S1). */
int jnl_checkpoint_all(struct cow_image *img)
{
	int r = jnl_commit_all(img);
	return r ? r : jnl_checkpoint(img);
}

/* ---- commit batches (commit.c writes them through the caller's backend) ---------------- */

/* Under img->lock: serialize records [rec_committed, upto) into fresh journal blocks (J2). A
 * full journal is checkpointed first; what does not fit waits for the next batch. */
int jnl_batch_prepare(struct cow_image *img, uint64_t upto, struct jnl_batch *b)
{
	int r;
	memset(b, 0, sizeof(*b));
	if (upto <= img->rec_committed)
		return 0;		/* already durable (a checkpoint ran meanwhile) */
	if (!records_fit(img) && (r = jnl_checkpoint(img)))
		return r;		/* journal full: fold it into the table first */
	/* J7: half of the journal used, and not in an older version's layout (J6) */
	if (!img->ck && !img->jlegacy && img->jblk >= nblocks(img) / 2)
		ck_begin(img);
	uint64_t fit = records_fit(img);
	if (upto - img->rec_committed > fit)
		upto = img->rec_committed + fit;	/* the rest in the next round */
	uint64_t nblk = blocks_for(img, upto - img->rec_committed);
	if (posix_memalign((void **)&b->buf, UCOW_META_ALIGN, nblk * UCOW_JBLOCK)) {
		b->buf = NULL;
		return -ENOMEM;
	}
	if (img->ck && (r = ck_step(img, b, nblk, nblocks(img) - img->jblk))) {
		/* the checkpoint waits for the journal to fill (J5); this commit goes on */
		ck_abort(img);
		free(b->pbuf);
		free(b->runs);
		b->pbuf = NULL;
		b->runs = NULL;
		b->nruns = b->npages = 0;
		b->ck_last = b->ck_header = false;
		if (r == -EOVERFLOW) {
			free(b->buf);
			b->buf = NULL;
			return r;	/* the generation cannot grow: nothing can be written */
		}
	}
	build_blocks(img, b->buf, img->rec_committed, upto, img->jblk);
	b->off = img->hdr.journal_offset + jpos(img, img->jseq + img->jblk) * UCOW_JBLOCK;
	b->len = (uint32_t)(nblk * UCOW_JBLOCK);
	b->upto = upto;
	img->jblk += nblk;	/* J2: never rewrite these blocks, even after a failure */
	return 0;
}

/* Under img->lock: the batch's blocks are written and synced (res 0), or failed. */
void jnl_batch_done(struct cow_image *img, struct jnl_batch *b, int res)
{
	free(b->buf);
	free(b->pbuf);
	free(b->runs);
	b->buf = b->pbuf = NULL;
	b->runs = NULL;
	ck_done(img, b, res);
	if (res) {
		img_set_err(img, "%s: journal write failed: %s", img->path, strerror(-res));
		/* J2/J6: the batch's blocks stay used (never rewritten), but replay stops at the
		 * first of them that did not land: a later batch written after them would never
		 * replay, and the flushes it acknowledged would be lost at the next crash. So
		 * the journal counts as full: the next batch checkpoints first, and the new
		 * journal_seq leaves the failed blocks behind. */
		img->jblk = nblocks(img);
		return;
	}
	img->rec_committed = b->upto;
	__atomic_store_n(&img->rec_over, img->rec_bound &&
			 img->rec_added - img->rec_committed >= img->rec_bound, __ATOMIC_RELAXED);
	alloc_committed(img, b->upto);
	drop_records(img, b->upto);
	STAT_ADD(img, journal_commits, 1);
}

/* ---- replay ------------------------------------------------------------------------------ */

/* Replay the journal after an unclean shutdown (J6). Single-threaded, at open. */
int jnl_replay(struct cow_image *img, uint64_t *nrec)
{
	uint8_t *blk;
	uint64_t nb = nblocks(img), b;
	uint32_t rsz = rec_size(img);
	int r = 0;

	*nrec = 0;
	if (posix_memalign((void **)&blk, UCOW_META_ALIGN, UCOW_JBLOCK))
		return -ENOMEM;
	for (b = 0; b < nb; b++) {
		ssize_t got = pread(img->fd, blk, UCOW_JBLOCK,
				    (off_t)(img->hdr.journal_offset +
					    jpos(img, img->jseq + b) * UCOW_JBLOCK));
		if (got != UCOW_JBLOCK)
			break;
		uint32_t crc = get_le32(blk + 4);
		memset(blk + 4, 0, 4);
		if (get_le32(blk) != UCOW_JMAGIC || ucow_crc32c(0, blk, UCOW_JBLOCK) != crc ||
		    get_le64(blk + 8) != img->jseq + b)
			break;	/* end of the journal (or a torn block of an unfinished commit) */
		uint32_t n = get_le32(blk + 16), used = get_le32(blk + 20);
		if (used > UCOW_JBLOCK || used < UCOW_JHDR || (uint64_t)n * rsz != used - UCOW_JHDR) {
			r = -EUCLEAN;
			img_set_err(img, "%s: corrupt image: journal block %llu has a bad record count",
				    img->path, (unsigned long long)b);
			break;
		}
		for (uint32_t i = 0; i < n && !r; i++) {
			const uint8_t *p = blk + UCOW_JHDR + i * rsz;
			uint64_t c = get_le64(p + 8), e = get_le64(p + 16);
			if (get_le16(p) != UCOW_JREC_MAP || get_le16(p + 2) != rsz ||
			    c >= img->nr_chunks || !ent_ok(img, e)) {
				r = -EUCLEAN;
				img_set_err(img, "%s: corrupt image: invalid record %u in journal "
					    "block %llu", img->path, i, (unsigned long long)b);
				break;
			}
			r = meta_apply(img, c, e, p + UCOW_JREC_HDR);
			if (r)
				break;
			(*nrec)++;
		}
		if (r)
			break;
	}
	img->jblk = b;
	free(blk);
	return r;
}
