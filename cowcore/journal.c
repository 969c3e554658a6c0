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
 *  J6. Blocks carry seq = journal_seq + index; replay stops at the first block whose magic,
 *      crc or seq is wrong, so stale blocks from before a checkpoint never replay.
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
	return 0;
}

/* Drop records below upto from memory (they are durable). Under lock. */
static void drop_records(struct cow_image *img, uint64_t upto)
{
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

static int build_undo(struct cow_image *img, struct undo_set *us)
{
	size_t m = img->rec_added - img->rec_committed, k = 0;
	struct undo *u;
	us->u = NULL;
	us->n = 0;
	if (!m)
		return 0;
	u = malloc(m * sizeof(*u));
	if (!u)
		return -ENOMEM;
	for (uint64_t i = img->rec_committed; i < img->rec_added; i++) {
		const struct jrec *r = &img->recs[i - img->rec_base];
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
	int r = build_undo(img, &us);
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
		uint64_t old_seq = img->hdr.journal_seq;
		img->hdr.journal_seq = img->jseq + img->jblk + 1;
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
			img->jblk = img->hdr.journal_size / UCOW_JBLOCK;
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
	img->jseq = img->hdr.journal_seq;
	img->jblk = 0;
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
	if (!r)
		r = img_sync(img);
	jnl_batch_done(img, &b, r);
	return r;
}

/* How many records fit in the journal's free blocks. */
static uint64_t records_fit(struct cow_image *img)
{
	uint64_t cap = img->hdr.journal_size / UCOW_JBLOCK;
	return img->jblk >= cap ? 0 : (cap - img->jblk) * ((UCOW_JBLOCK - UCOW_JHDR) / rec_size(img));
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
	uint64_t fit = records_fit(img);
	if (upto - img->rec_committed > fit)
		upto = img->rec_committed + fit;	/* the rest in the next round */
	uint64_t nblk = blocks_for(img, upto - img->rec_committed);
	if (posix_memalign((void **)&b->buf, UCOW_META_ALIGN, nblk * UCOW_JBLOCK)) {
		b->buf = NULL;
		return -ENOMEM;
	}
	build_blocks(img, b->buf, img->rec_committed, upto, img->jblk);
	b->off = img->hdr.journal_offset + img->jblk * UCOW_JBLOCK;
	b->len = (uint32_t)(nblk * UCOW_JBLOCK);
	b->upto = upto;
	img->jblk += nblk;	/* J2: never rewrite these blocks, even after a failure */
	return 0;
}

/* Under img->lock: the batch's blocks are written and synced (res 0), or failed. */
void jnl_batch_done(struct cow_image *img, struct jnl_batch *b, int res)
{
	free(b->buf);
	b->buf = NULL;
	if (res) {
		img_set_err(img, "%s: journal write failed: %s", img->path, strerror(-res));
		/* J2/J6: the batch's blocks stay used (never rewritten), but replay stops at the
		 * first of them that did not land: a later batch written after them would never
		 * replay, and the flushes it acknowledged would be lost at the next crash. So
		 * the journal counts as full: the next batch checkpoints first, and the new
		 * journal_seq leaves the failed blocks behind. */
		img->jblk = img->hdr.journal_size / UCOW_JBLOCK;
		return;
	}
	img->rec_committed = b->upto;
	alloc_committed(img, b->upto);
	drop_records(img, b->upto);
	STAT_ADD(img, journal_commits, 1);
}

/* ---- replay ------------------------------------------------------------------------------ */

/* Replay the journal after an unclean shutdown (J6). Single-threaded, at open. */
int jnl_replay(struct cow_image *img, uint64_t *nrec)
{
	uint8_t *blk;
	uint64_t nblocks = img->hdr.journal_size / UCOW_JBLOCK, b;
	uint32_t rsz = rec_size(img);
	int r = 0;

	*nrec = 0;
	if (posix_memalign((void **)&blk, UCOW_META_ALIGN, UCOW_JBLOCK))
		return -ENOMEM;
	for (b = 0; b < nblocks; b++) {
		ssize_t got = pread(img->fd, blk, UCOW_JBLOCK,
				    (off_t)(img->hdr.journal_offset + b * UCOW_JBLOCK));
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
