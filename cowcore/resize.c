/* SPDX-License-Identifier: MIT */
/*
 * Layer 3: changing the virtual size of an image (img_resize; cow_resize in image.c reads
 * what it needs through the engine first and calls it).
 *
 * DESIGN NOTES — the steps of the snapshot operations (snapshot.c S1-S4), one switch:
 *   R1. checkpoint: the table on disk equals the table in memory, the journal is empty.
 *   R2. Only when the lookup table or the bitmap must change beyond the two size fields of
 *       the header: write a new table + bitmap extent into fresh chunks (as an apply does),
 *       never over the live one. That is when the extent has no room for the new chunk
 *       count, when entries past the new end go away (a shrink over mapped chunks), or when
 *       entries of the grown area must be written (below). If the extent's sizes change and
 *       snapshots exist, every frozen copy is written again in the new sizes (a frozen copy
 *       always has the header's table_size and bitmap_size: format.md) and a new snapshot
 *       table points to them. Otherwise nothing is written here: only the header changes.
 *   R3. sync, ONE header write (the other slot: new size, new extents), sync.
 *   R4. free what the old header referenced: the old table extent (punched; in the data
 *       area its chunks are reused), old frozen copies and snapshot table; chunks that only
 *       the dropped entries mapped are queued for cow_reclaim; chunks a snapshot references
 *       stay the snapshot's.
 * A crash before R3 leaves the old header, which references nothing R2 wrote: those chunks
 * are free at the next open (free space is computed). After R3 the new image is complete;
 * what R4 did not get to is free at the next open too. Either way `check` is clean.
 *
 * The grown area reads as zeros whatever lies under it (as qemu-img does since QEMU 5.0):
 *   - a new chunk over data of the backing image gets a ZERO entry;
 *   - the chunk the old size ends in may show something past the old end: data this image
 *     kept there (a shrink leaves the rest of its last chunk), or the backing image's data.
 *     Then it is rebuilt into a fresh chunk (R2): the blocks before the old end as they are
 *     (their bits, their data copied), the block the old end falls in written whole (what it
 *     showed, then zeros: the caller read it), every block after it a hole with its bit
 *     set. The old chunk is freed in R4 unless a snapshot holds it. A ZERO entry, or a tail
 *     that reads zeros already (checked: the bits, the backing image's size, the data
 *     read back), is left alone.
 * A shrink refuses to drop data of this image (a block past the new end whose bit is set,
 * or the bytes past the end in the block it falls in, unless they are zeros) without
 * COW_RESIZE_SHRINK; the backing image's data past the end is not this image's.
 *
 * Snapshots keep their own virtual size (their table entries hold it) and their chunks: a
 * snapshot larger than the image after a shrink still reads at its size, and the table
 * extent stays large enough for its frozen copy. Applying it gives the image its size
 * (snapshot.c).
 *
 * Like create, delete and apply: no request in flight (the server pauses its queues), all
 * under img->lock; the in-memory arrays of the new size are built aside and swapped in after
 * the switch (meta_set_swap), so an error before it leaves the image as it was.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "compress.h"
#include "resize.h"

static uint64_t align4k(uint64_t v)
{
	return (v + UCOW_META_ALIGN - 1) & ~(uint64_t)(UCOW_META_ALIGN - 1);
}

/* The sizes the new state needs: its chunks, and the table and bitmap sizes that hold them
 * and every snapshot's (frozen copies share the header's geometry). */
struct geom {
	uint64_t nr, ts, bs;
};

static int new_geometry(struct cow_image *img, uint64_t size, struct geom *g)
{
	uint64_t bmb = img->bm_words * 8;
	uint64_t max_nr = UCOW_MAX_TABLE / 8 < UCOW_MAX_BITMAP / bmb ? UCOW_MAX_TABLE / 8 :
			  UCOW_MAX_BITMAP / bmb;
	uint64_t max_size = max_nr << img->chunk_shift;
	if (max_size > UCOW_MAX_VSIZE)
		max_size = UCOW_MAX_VSIZE;
	if (size > max_size) {
		img_set_err(img, "%s: %llu bytes is too large for chunk size %u and block size %u "
			    "(at most %llu bytes)", img->path, (unsigned long long)size,
			    img->chunk_size, img->block_size, (unsigned long long)max_size);
		return -EFBIG;
	}
	g->nr = (size >> img->chunk_shift) + !!(size & (img->chunk_size - 1));
	uint64_t need = g->nr;
	for (uint32_t i = 0; i < img->nb_snaps; i++)
		if (snap_nr(img, &img->snaps[i]) > need)
			need = snap_nr(img, &img->snaps[i]);	/* validated at open: fits */
	g->ts = align4k(need * 8);
	g->bs = align4k(need * bmb);
	return 0;
}

static bool all_zero(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/*
 * In physical chunk p of virtual chunk c, from byte `from` of the chunk on: the blocks whose
 * bit is set hold only zeros (a block's bytes before `from` do not count). *zero false at
 * the first that does not; *at gets its virtual offset. -errno on a read error.
 */
static int tail_zero(struct cow_image *img, uint64_t c, uint64_t e, uint32_t from, bool *zero,
		     uint64_t *at)
{
	const uint64_t *bm = meta_bm(img, c, false);
	uint8_t *buf = meta_zalloc(img->block_size);
	int r = 0;
	*zero = true;
	if (!buf)
		return -ENOMEM;
	for (uint32_t j = from >> img->block_shift; j < img->bpc && *zero; j++) {
		if (!bm_test(bm, j))
			continue;
		uint32_t skip = j == from >> img->block_shift ? from & (img->block_size - 1) : 0;
		r = comp_chunk_pread(img, e, buf, img->block_size, j << img->block_shift);
		if (r) {
			if (r != -EUCLEAN)	/* corruption: the image's error says where */
				img_set_err(img, "%s: reading chunk %llu: %s", img->path,
					    (unsigned long long)ent_pcn(img, e), strerror(-r));
			break;
		}
		if (!all_zero(buf + skip, img->block_size - skip)) {
			*zero = false;
			*at = (c << img->chunk_shift) + ((uint64_t)j << img->block_shift) + skip;
		}
	}
	free(buf);
	return r;
}

/* Shrinking to size: the first byte of this image's data past the new end, if any. */
static int data_past(struct cow_image *img, uint64_t size, bool *found, uint64_t *at)
{
	*found = false;
	for (uint64_t c = size >> img->chunk_shift; c < img->nr_chunks; c++) {
		uint64_t e = img->table[c] & ~UCOW_E_BUSY, p = ent_pcn(img, e);
		uint32_t from = c == size >> img->chunk_shift ? size & (img->chunk_size - 1) : 0;
		bool zero;
		if (!p)
			continue;	/* ZERO or unmapped: nothing of this image */
		if (from) {
			/* the chunk the new end falls in: past the end, bytes that are not zero */
			int r = tail_zero(img, c, e, from, &zero, at);
			if (r)
				return r;
			if (!zero) {
				*found = true;
				return 0;
			}
			continue;
		}
		const uint64_t *bm = meta_bm(img, c, false);
		for (uint32_t j = 0; j < img->bpc; j++)
			if (bm_test(bm, j)) {
				*found = true;
				*at = (c << img->chunk_shift) + ((uint64_t)j << img->block_shift);
				return 0;
			}
	}
	return 0;
}

/* Growing: whether the chunk the old size ends in could show anything but zeros past it. */
static int edge_dirty(struct cow_image *img, bool *dirty)
{
	uint64_t c = img->vsize >> img->chunk_shift;
	uint32_t from = img->vsize & (img->chunk_size - 1);
	uint64_t e = img->table[c] & ~UCOW_E_BUSY, p = ent_pcn(img, e), at;
	bool backing = img->backing && img->backing->vsize > img->vsize, zero;
	*dirty = false;
	if (!from || (e & UCOW_E_ZERO))
		return 0;
	if (!p) {
		*dirty = backing;	/* the backing image's data past the old end */
		return 0;
	}
	const uint64_t *bm = meta_bm(img, c, false);
	for (uint32_t j = from >> img->block_shift; j < img->bpc && backing; j++)
		if (!bm_test(bm, j)) {
			*dirty = true;
			return 0;
		}
	int r = tail_zero(img, c, e, from, &zero, &at);
	*dirty = !zero;
	return r;
}

/*
 * Rebuild the chunk the old size ends in (see the notes) into a fresh chunk *np with bitmap
 * nbm. edge: what its block across the old end shows up to that end.
 */
static int edge_rebuild(struct cow_image *img, const uint8_t *edge, uint32_t edge_len,
			uint64_t *np, uint64_t *nbm)
{
	uint64_t c = img->vsize >> img->chunk_shift;
	uint32_t from = img->vsize & (img->chunk_size - 1), bsz = img->block_size;
	uint32_t j0 = from >> img->block_shift, part = from & (bsz - 1);
	uint64_t e = img->table[c] & ~UCOW_E_BUSY, p = ent_pcn(img, e), q;
	const uint64_t *bm = p ? meta_bm(img, c, false) : NULL;
	uint8_t *buf;
	int r;
	if (part && (!edge || edge_len != part)) {
		img_set_err(img, "%s: resize: the content of the last block is missing", img->path);
		return -EINVAL;
	}
	buf = meta_zalloc(bsz);
	if (!buf)
		return -ENOMEM;
	r = alloc_chunk(img, &q);
	if (r) {
		free(buf);
		return r;
	}
	memset(nbm, 0, img->bm_words * 8);
	uint64_t base = q << img->chunk_shift;
	/* the blocks before the old end: the same bits, this image's data copied */
	for (uint32_t j = 0; !r && j < j0; j++) {
		if (!bm_test(bm, j))
			continue;
		r = comp_chunk_pread(img, e, buf, bsz, j << img->block_shift);
		if (!r)
			r = img_meta_write(img, buf, bsz, base + ((uint64_t)j << img->block_shift));
		nbm[j / 64] |= 1ull << (j % 64);
	}
	/* the block the old end falls in: what it showed, then zeros */
	if (!r && part) {
		memset(buf, 0, bsz);
		memcpy(buf, edge, part);
		r = img_meta_write(img, buf, bsz, base + ((uint64_t)j0 << img->block_shift));
		nbm[j0 / 64] |= 1ull << (j0 % 64);
		j0++;
	}
	/* every block after: zeros here (a hole), the bit set so nothing shows through */
	if (!r && j0 < img->bpc) {
		r = img_punch(img, base + ((uint64_t)j0 << img->block_shift),
			      (uint64_t)(img->bpc - j0) << img->block_shift);
		for (uint32_t j = j0; j < img->bpc; j++)
			nbm[j / 64] |= 1ull << (j % 64);
	}
	free(buf);
	if (r) {
		snap_free_extent(img, base, img->chunk_size);	/* punched, free again */
		img_set_err(img, "%s: resize: writing the last chunk: %s", img->path, strerror(-r));
		return r;
	}
	*np = q;
	return 0;
}

/* Raw images: the file is the disk. */
static int resize_raw(struct cow_image *img, uint64_t size, unsigned flags)
{
	struct stat st;
	int r;
	if (fstat(img->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		img_set_err(img, "%s: only a regular file can be resized", img->path);
		return -ENOTSUP;
	}
	if (size > (uint64_t)INT64_MAX) {
		img_set_err(img, "%s: %llu bytes is too large for a file", img->path,
			    (unsigned long long)size);
		return -EFBIG;
	}
	if (size < img->vsize && !(flags & COW_RESIZE_SHRINK)) {
		img_set_err(img, "%s: shrinking a raw image drops whatever lies past the new end",
			    img->path);
		return -ENOTEMPTY;
	}
	r = img_truncate(img, size);
	if (!r)
		r = img_sync(img);
	if (r) {
		img_set_err(img, "%s: resizing: %s", img->path, strerror(-r));
		return r;
	}
	img->vsize = img->raw_size = size;
	return 0;
}

/* The frozen copies again in the new sizes (R2), into snaps (a copy of img->snaps); *done
 * of them were written (their extents are the caller's to give back on a later failure). */
static int rewrite_frozen(struct cow_image *img, const struct geom *g, struct snap *snaps,
			  uint32_t *done)
{
	uint64_t nent = (img->hdr.table_size < g->ts ? img->hdr.table_size : g->ts) / 8;
	uint64_t ngroups = (img->hdr.bitmap_size < g->bs ? img->hdr.bitmap_size : g->bs) /
			   UCOW_META_ALIGN;
	uint64_t **groups = calloc(ngroups ? ngroups : 1, sizeof(*groups));
	int r = groups ? 0 : -ENOMEM;
	for (uint32_t i = 0; !r && i < img->nb_snaps; i++) {
		uint64_t *t, *b;
		r = frozen_read(img, &img->snaps[i], &t, &b);
		if (r)
			break;
		/* entries past the snapshot's chunks are zero (frozen_read): nothing is cut */
		for (uint64_t k = 0; k < ngroups; k++) {
			uint64_t *page = b + k * (UCOW_META_ALIGN / 8);
			groups[k] = all_zero((const uint8_t *)page, UCOW_META_ALIGN) ? NULL : page;
		}
		r = snap_write_tables(img, t, nent, groups, ngroups, g->ts, g->bs,
				      &snaps[i].table_offset, &snaps[i].extent_size);
		*done += !r;
		free(t);
		free(b);
	}
	free(groups);
	return r;
}

/* The state of the new size in memory (m, built aside, table of ts bytes): the entries and
 * bitmaps kept, ZERO entries over the backing image's data in the grown area, the rebuilt
 * last chunk of the old size (edge_bm, edge_p) if there is one. */
static int build_set(struct cow_image *img, uint64_t size, uint64_t ts, const uint64_t *edge_bm,
		     uint64_t edge_p, struct meta_set *m)
{
	uint64_t nr = (size >> img->chunk_shift) + !!(size & (img->chunk_size - 1));
	uint64_t keep = nr < img->nr_chunks ? nr : img->nr_chunks;
	uint64_t bmb = img->bm_words * 8;
	int r = meta_set_alloc(img, nr, ts, true, m);
	if (r)
		return r;
	for (uint64_t c = 0; c < keep; c++)
		m->table[c] = img->table[c] & ~UCOW_E_BUSY;
	for (uint64_t c = keep; c < nr; c++)	/* grown: zeros over the backing image */
		m->table[c] = img->backing && img->backing->vsize > c << img->chunk_shift ?
			      UCOW_E_ZERO : 0;
	for (uint64_t g = 0; g < m->nr_groups && g < img->nr_groups; g++) {
		if (!img->bm_groups[g])
			continue;
		if (!(m->bm_groups[g] = meta_bm_page()))
			goto nomem;
		memcpy(m->bm_groups[g], img->bm_groups[g], UCOW_META_ALIGN);
		/* chunks past those kept: no bits (they are unmapped, or gone) */
		uint64_t first = g * img->chunks_per_group;
		uint64_t from = keep > first ? keep - first : 0;
		uint8_t *pg = (uint8_t *)m->bm_groups[g];
		if (from < img->chunks_per_group &&
		    !all_zero(pg + from * bmb, (img->chunks_per_group - from) * bmb)) {
			memset(pg + from * bmb, 0, (img->chunks_per_group - from) * bmb);
			m->bm_dirty[g] = 1;	/* header-only growth: the next checkpoint */
		}
	}
	if (edge_bm) {
		uint64_t c = img->vsize >> img->chunk_shift, g = c / img->chunks_per_group;
		if (!m->bm_groups[g] && !(m->bm_groups[g] = meta_bm_page()))
			goto nomem;
		memcpy(m->bm_groups[g] + (c % img->chunks_per_group) * img->bm_words, edge_bm, bmb);
		m->table[c] = edge_p;
	}
	return 0;
nomem:
	meta_set_free(m);
	return -ENOMEM;
}

int img_resize(struct cow_image *img, uint64_t size, unsigned flags, const uint8_t *edge,
	       uint32_t edge_len)
{
	struct meta_set m = { 0 };
	struct snap *snaps = NULL;
	struct ucow_hdr nh, oh;
	struct geom g;
	uint64_t edge_bm[UCOW_BM_WORDS_MAX], edge_p = 0, off = 0, esize = 0, at = 0;
	uint32_t nsnaps_done = 0;
	bool grow = size > img->vsize, found, dirty = false, in_place, moved_snaps = false;
	int r;

	if (flags & ~COW_RESIZE_SHRINK) {
		img_set_err(img, "%s: unknown resize flags 0x%x", img->path, flags);
		return -EINVAL;
	}
	if (img->read_only) {
		img_set_err(img, "%s: image is open read-only%s", img->path,
			    img->corrupt ? " (it is marked corrupt)" : "");
		return -EROFS;
	}
	if (!size) {
		img_set_err(img, "%s: the size must be greater than zero", img->path);
		return -EINVAL;
	}
	if (img->hdr.backing_len && !img->backing) {
		/* the grown area must hide the backing image's data: its size is needed */
		img_set_err(img, "%s: resizing needs the backing chain open", img->path);
		return -EINVAL;
	}
	pthread_mutex_lock(&img->lock);
	if (size == img->vsize) {
		r = 0;
		goto out;
	}
	if (img->fmt == COW_FMT_RAW) {
		r = resize_raw(img, size, flags);
		goto out;
	}
	if ((r = new_geometry(img, size, &g)))
		goto out;
	/* U3: no underlays across a new layout (the frozen copies may move) */
	if ((r = snap_fold_all(img)))
		goto out;
	under_forget(img);
	if (!grow) {
		if ((r = data_past(img, size, &found, &at)))
			goto out;
		if (found && !(flags & COW_RESIZE_SHRINK)) {
			img_set_err(img, "%s: data lies past the new end (at byte %llu)", img->path,
				    (unsigned long long)at);
			r = -ENOTEMPTY;
			goto out;
		}
	}
	r = jnl_checkpoint_all(img);						/* R1 */
	if (r)
		goto out;
	bool changed = false;	/* an entry other than the ones past both ends changes */
	if (grow) {
		if ((r = edge_dirty(img, &dirty)))
			goto out;
		for (uint64_t c = img->nr_chunks; c < g.nr && !changed; c++)
			changed = img->backing && img->backing->vsize > c << img->chunk_shift;
	} else {
		for (uint64_t c = g.nr; c < img->nr_chunks && !changed; c++)
			changed = img->table[c] != 0;
	}
	in_place = !changed && !dirty && g.ts <= img->hdr.table_size &&
		   g.bs <= img->hdr.bitmap_size &&
		   (grow || (g.ts == img->hdr.table_size && g.bs == img->hdr.bitmap_size));
	if (dirty && (r = edge_rebuild(img, edge, edge_len, &edge_p, edge_bm)))	/* R2 */
		goto out;
	r = build_set(img, size, in_place ? img->hdr.table_size : g.ts, dirty ? edge_bm : NULL,
		      edge_p, &m);
	nh = img->hdr;
	nh.virtual_size = size;
	nh.nr_chunks = g.nr;
	if (!r && !in_place) {
		r = snap_write_tables(img, m.table, m.nr_chunks, m.bm_groups, m.nr_groups, g.ts,
				      g.bs, &off, &esize);
		if (r)
			off = 0;	/* given back already */
		nh.table_offset = off;
		nh.table_size = g.ts;
		nh.bitmap_offset = off + g.ts;
		nh.bitmap_size = g.bs;
		moved_snaps = img->nb_snaps && (g.ts != img->hdr.table_size ||
						g.bs != img->hdr.bitmap_size);
	}
	if (!r && moved_snaps) {
		snaps = malloc(img->nb_snaps * sizeof(*snaps));
		r = snaps ? 0 : -ENOMEM;
		if (!r) {
			memcpy(snaps, img->snaps, img->nb_snaps * sizeof(*snaps));
			r = rewrite_frozen(img, &g, snaps, &nsnaps_done);
		}
		if (!r)
			r = snap_write_snap_table(img, snaps, img->nb_snaps, &nh.snap_table_offset,
						  &nh.snap_table_size);
	}
	if (r) {
		/* nothing references what R2 wrote: give it back (a failed switch below may
		 * have left a header that does, so that case keeps it until the next open) */
		if (edge_p)
			snap_free_extent(img, edge_p << img->chunk_shift, img->chunk_size);
		if (off)
			snap_free_extent(img, off, esize);
		for (uint32_t i = 0; i < nsnaps_done; i++)
			snap_free_extent(img, snaps[i].table_offset, snaps[i].extent_size);
		goto out;
	}
	oh = img->hdr;
	r = snap_switch_header(img, &nh);					/* R3 */
	if (r)
		goto out;
	/* R4: the new arrays in, the old extents and the chunks only dropped entries held out */
	meta_set_swap(img, &m, size);		/* m: the old arrays */
	if (!in_place) {
		if (oh.table_offset >= oh.data_offset) {
			snap_free_extent(img, oh.table_offset, oh.table_size + oh.bitmap_size);
		} else {
			snap_free_extent(img, oh.table_offset, oh.table_size);
			snap_free_extent(img, oh.bitmap_offset, oh.bitmap_size);
		}
	}
	if (moved_snaps) {
		snap_free_extent(img, oh.snap_table_offset, oh.snap_table_size);
		for (uint32_t i = 0; i < img->nb_snaps; i++)
			snap_free_extent(img, img->snaps[i].table_offset, img->snaps[i].extent_size);
		free(img->snaps);
		img->snaps = snaps;
		snaps = NULL;
	}
	struct freeset fs = { 0 };
	if (m.nr_chunks > g.nr)					/* shrink: the dropped entries */
		freeset_add_unshared(&fs, img, m.table + g.nr, m.nr_chunks - g.nr, false);
	if (edge_p)						/* grow: the rebuilt chunk's old one */
		freeset_add_unshared(&fs, img, m.table + (oh.virtual_size >> img->chunk_shift), 1,
				     false);
	freeset_reclaim(img, &fs);
	snap_mark_shared(img);
out:
	pthread_mutex_unlock(&img->lock);
	meta_set_free(&m);
	free(snaps);
	return r;
}
