/* SPDX-License-Identifier: MIT */
/*
 * Underlays: the first write into a chunk a snapshot shares allocates a new chunk and writes
 * only the request's blocks into it; the blocks it leaves read through the old chunk, which
 * the parent snapshot's frozen copy maps at the same index (FVD: the snapshot is to the
 * current state what a backing image is to an overlay). The entry carries UNDER.
 *
 * DESIGN NOTES (design.md "Underlays", U1-U5)
 *   U1. The underlay of UNDER entry c is frozen entry c of the parent snapshot (the header's
 *       parent_snapshot) and its bitmap the frozen bitmap of c. Both are immutable while the
 *       parent exists, and the underlay's chunk is referenced by the parent (refcount > 0),
 *       so nothing frees or rewrites it. Reading block b of c: bit b of the entry's bitmap
 *       set: the entry's chunk; else bit b of the frozen bitmap set: the frozen chunk; else
 *       the backing image (or zeros).
 *   U2. A write takes the UNDER path only when the current entry is SHARED, plain, maps the
 *       same chunk as frozen entry c and has the same bitmap as frozen bitmap c: then the
 *       blocks the current state reads from that chunk are exactly those U1 reads from it.
 *       Otherwise it copies, as before.
 *   U3. Nothing but the parent's frozen copy holds the underlay: an operation that changes
 *       the parent (create, delete of the parent) or the table's layout (resize) folds every
 *       UNDER chunk first (snap_fold_all, cow_fold: each into a new chunk, written whole,
 *       then records with the full bitmap and no UNDER, committed; the old chunks are
 *       punched and freed after that); apply drops the current state's UNDER entries.
 *       Frozen tables never hold UNDER entries.
 *   U4. The incompatible bit UNDERLAY is in every header written while the image is open
 *       read-write with snapshots (so before any UNDER record can be durable) and in a
 *       closed image's only while an UNDER entry remains.
 *   U5. Crashes: an UNDER record is a MAP record (J1: after the data it maps is durable);
 *       a fold writes a new chunk (nothing reads it before its record), the commit of its
 *       records syncs it first (J1), and the old chunk is freed only after that commit
 *       (a crash before leaves it mapped, or free with data: punched at the next open);
 *       any prefix of records gives a state some flush saw.
 * The frozen table is read whole (8 bytes per chunk) the first time it is needed; the
 * frozen bitmap a 4 KiB page at a time, each before an UNDER entry of its chunks can be
 * seen. Both are published with release stores, and readers load them after the entry.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "under.h"

struct under {
	uint32_t parent;	/* snapshot id */
	uint64_t *t;		/* its frozen table, decoded and validated (frozen_read) */
	uint64_t **pages;	/* its frozen bitmap, per group; NULL: not read yet */
	uint64_t ngroups;
	uint64_t bm_off;	/* where the frozen bitmap lies in the file */
};

void under_drop(struct cow_image *img)
{
	struct under *u = img->under;
	if (!u)
		return;
	for (uint64_t g = 0; g < u->ngroups; g++)
		free(u->pages[g]);
	free(u->pages);
	free(u->t);
	free(u);
	img->under = NULL;
}

void under_forget(struct cow_image *img)
{
	if (!under_any(img))
		under_drop(img);
}

/* The parent's frozen copy, read the first time: 0 with *out NULL when there is none. */
static int under_get(struct cow_image *img, struct under **out)
{
	uint32_t pid = img->hdr.parent_snapshot;
	const struct snap *s = NULL;
	*out = NULL;
	if (img->under && img->under->parent == pid) {
		*out = img->under;
		return 0;
	}
	under_drop(img);
	for (uint32_t i = 0; pid && i < img->nb_snaps; i++)
		if (img->snaps[i].id == pid)
			s = &img->snaps[i];
	if (!s)
		return 0;
	struct under *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->parent = pid;
	u->ngroups = img->nr_groups;
	u->bm_off = s->table_offset + img->hdr.table_size;
	u->pages = calloc(u->ngroups ? u->ngroups : 1, sizeof(*u->pages));
	int r = u->pages ? frozen_read(img, s, &u->t, NULL) : -ENOMEM;
	if (r) {
		free(u->pages);
		free(u);
		return r;
	}
	__atomic_store_n(&img->under, u, __ATOMIC_RELEASE);
	*out = u;
	return 0;
}

/* Frozen bitmap of chunk c, its page read if needed. NULL on a failed read. */
static const uint64_t *page_for(struct cow_image *img, struct under *u, uint64_t c)
{
	uint64_t g = c / img->chunks_per_group;
	if (g >= u->ngroups)
		return NULL;
	if (!u->pages[g]) {
		uint64_t *pg = meta_zalloc(UCOW_META_ALIGN);	/* aligned: O_DIRECT */
		if (!pg || io_pread_all(img->fd, pg, UCOW_META_ALIGN,
					u->bm_off + g * UCOW_META_ALIGN)) {
			free(pg);
			return NULL;
		}
		for (unsigned i = 0; i < UCOW_META_ALIGN / 8; i++)
			pg[i] = le64toh(pg[i]);
		__atomic_store_n(&u->pages[g], pg, __ATOMIC_RELEASE);
	}
	return u->pages[g] + (c % img->chunks_per_group) * img->bm_words;
}

bool under_fits(struct cow_image *img, uint64_t c, uint64_t e, const uint64_t *bm)
{
	struct under *u;
	if (!(img->hdr.incompat & UCOW_INCOMPAT_UNDERLAY) || img->copy_shared ||
	    !(e & UCOW_E_SHARED) ||
	    (e & (UCOW_E_COMPRESSED | UCOW_E_ZERO | UCOW_E_UNDER)) || !ent_pcn(img, e))
		return false;
	if (under_get(img, &u) || !u)
		return false;
	uint64_t fe = u->t[c];
	if ((fe & UCOW_E_COMPRESSED) || ent_pcn(img, fe) != ent_pcn(img, e))
		return false;
	const uint64_t *fbm = page_for(img, u, c);
	if (!fbm)
		return false;
	for (uint32_t w = 0; w < img->bm_words; w++)
		if (fbm[w] != (bm ? __atomic_load_n(&bm[w], __ATOMIC_RELAXED) : 0))
			return false;
	return true;
}

uint64_t under_pcn(struct cow_image *img, uint64_t c)
{
	struct under *u = __atomic_load_n(&img->under, __ATOMIC_ACQUIRE);
	return ent_pcn(img, u->t[c]);
}

const uint64_t *under_bm(struct cow_image *img, uint64_t c)
{
	struct under *u = __atomic_load_n(&img->under, __ATOMIC_ACQUIRE);
	const uint64_t *pg = __atomic_load_n(&u->pages[c / img->chunks_per_group],
					     __ATOMIC_ACQUIRE);
	return pg + (c % img->chunks_per_group) * img->bm_words;
}

int under_validate(struct cow_image *img, uint64_t c, uint64_t e, const char **why)
{
	struct under *u;
	uint64_t p = ent_pcn(img, e);
	int r = under_get(img, &u);
	if (r)
		return r;
	*why = NULL;
	if (!(img->hdr.incompat & UCOW_INCOMPAT_UNDERLAY))
		*why = "is an underlay entry in an image without the UNDERLAY feature";
	else if (!u)
		*why = "is an underlay entry, but the image has no parent snapshot";
	else if (!ent_pcn(img, u->t[c]) || (u->t[c] & UCOW_E_COMPRESSED))
		*why = "is an underlay entry, but the parent snapshot maps no plain chunk there";
	else if (ent_pcn(img, u->t[c]) == p)
		*why = "is an underlay entry over its own chunk";
	else if (rc_shared(img, p))
		*why = "is an underlay entry whose own chunk a snapshot references";
	if (*why)
		return -EUCLEAN;
	return page_for(img, u, c) ? 0 : -EIO;
}

bool under_any(struct cow_image *img)
{
	for (uint64_t c = 0; c < img->nr_chunks; c++)
		if (ucow_e_under(__atomic_load_n(&img->table[c], __ATOMIC_RELAXED)))
			return true;
	return false;
}

/* Folds per checkpoint: bounds the records in memory. */
#define FOLD_BATCH 1024u

/* UNDER chunk c's own blocks cover its underlay's (whole-block writes keep UNDER): it is
 * mapped where it is, nothing to copy. */
static bool fold_covered(struct cow_image *img, uint64_t c)
{
	const uint64_t *ubm = under_bm(img, c), *bm = meta_bm(img, c, false);
	uint32_t w;
	for (w = 0; bm && w < img->bm_words && !(ubm[w] & ~bm[w]); w++)
		;
	return bm && w == img->bm_words;
}

/* The own chunk's runs of blocks a fold reads, each widened to 4 KiB (O_DIRECT), those
 * that then touch merged: call fn(img, off, len, arg) for each, offsets within the chunk
 * (at most one call per 4 KiB, however the bits alternate). */
static int own_runs(struct cow_image *img, const uint64_t *bm,
		    int (*fn)(struct cow_image *, uint64_t, uint64_t, void *), void *arg)
{
	uint64_t po = 0, pend = 0;	/* the range not yet passed to fn */
	uint32_t bs = img->block_size, n;
	int r = 0;
	for (uint32_t b = 0; bm && !r && b < img->bpc; b += n) {
		n = bm_run(bm, b, img->bpc);
		if (!bm_test(bm, b))
			continue;
		uint64_t o = (uint64_t)b * bs & ~4095ull;
		uint64_t end = ((uint64_t)(b + n) * bs + 4095) & ~4095ull;
		if (end > img->chunk_size)
			end = img->chunk_size;
		if (pend && o <= pend) {
			pend = end;
			continue;
		}
		if (pend)
			r = fn(img, po, pend - po, arg);
		po = o;
		pend = end;
	}
	if (!r && pend)
		r = fn(img, po, pend - po, arg);
	return r;
}

struct fold_io {
	uint64_t base;		/* the own chunk's file offset */
	char *obuf;
};

static int advise_run(struct cow_image *img, uint64_t o, uint64_t len, void *arg)
{
	struct fold_io *io = arg;
	posix_fadvise(img->fd, (off_t)(io->base + o), (off_t)len, POSIX_FADV_WILLNEED);
	return 0;
}

static int read_run(struct cow_image *img, uint64_t o, uint64_t len, void *arg)
{
	struct fold_io *io = arg;
	return io_pread_all(img->fd, io->obuf + o, len, io->base + o);
}

/* Chunks ahead of the one being folded whose data the kernel is asked to read meanwhile,
 * looked for among at most FOLD_SCAN entries past it. */
#define FOLD_AHEAD 8u
#define FOLD_SCAN 65536u

/* Ask the kernel to read what the fold of UNDER chunk c will read (a hint: the reads then
 * find it cached instead of waiting for each in turn; nothing for an O_DIRECT image). */
static void fold_advise(struct cow_image *img, uint64_t c)
{
	struct fold_io io = { .base = ent_pcn(img, img->table[c]) << img->chunk_shift };
	if ((img->open_flags & COW_OPEN_DIRECT) || fold_covered(img, c))
		return;
	posix_fadvise(img->fd, (off_t)(under_pcn(img, c) << img->chunk_shift),
		      (off_t)img->chunk_size, POSIX_FADV_WILLNEED);
	own_runs(img, meta_bm(img, c, false), advise_run, &io);
}

/* Write UNDER chunk c whole into a new chunk *np (0: none needed, fold_covered): its own
 * blocks, the blocks only its underlay holds, zeros elsewhere (nothing reads them) — one
 * extent of the file again, as before the first write (filling the old chunk's holes in
 * place leaves the own blocks and the copies interleaved on disk: 3x the device reads of a
 * 1 MiB read, S4c). The underlay's chunk is read whole, the own chunk's runs of blocks only
 * (reading its holes would fill the page cache with zeros: a third of the fold's time);
 * fold_advise asked for both ahead. buf, obuf: a chunk each. */
static int fold_copy(struct cow_image *img, uint64_t c, char *buf, char *obuf, uint64_t *np)
{
	uint64_t e = img->table[c], p = ent_pcn(img, e), up = under_pcn(img, c);
	const uint64_t *ubm = under_bm(img, c), *bm = meta_bm(img, c, false);
	struct fold_io io = { .base = p << img->chunk_shift, .obuf = obuf };
	uint32_t bs = img->block_size;
	if (fold_covered(img, c)) {
		*np = 0;
		return 0;
	}
	int r = io_pread_all(img->fd, buf, img->chunk_size, up << img->chunk_shift);
	if (!r)
		r = own_runs(img, bm, read_run, &io);
	for (uint32_t b = 0; !r && b < img->bpc; b++) {
		uint64_t o = (uint64_t)b * bs;
		if (bm_test(bm, b))
			memcpy(buf + o, obuf + o, bs);
		else if (!bm_test(ubm, b))
			memset(buf + o, 0, bs);
	}
	if (!r)
		r = alloc_chunk(img, np);
	if (!r && (r = img_pwrite(img, buf, img->chunk_size, *np << img->chunk_shift)))
		alloc_release(img, *np);
	return r;
}

/* Map UNDER chunk c as plain chunk np (its data durable before the record: the commit syncs
 * first) with both bitmaps' blocks; its old chunk is the caller's to free once durable. */
static int fold_publish(struct cow_image *img, uint64_t c, uint64_t np)
{
	uint64_t e = img->table[c], old_bm[UCOW_BM_WORDS_MAX];
	const uint64_t *ubm = under_bm(img, c);
	uint64_t *bm = meta_bm(img, c, true);
	if (!bm)
		return -ENOMEM;
	bm_copy(img, old_bm, bm);
	for (uint32_t w = 0; w < img->bm_words; w++) {
		uint64_t keep = w == img->bm_words - 1 && img->bpc % 64 ?
				(1ull << (img->bpc % 64)) - 1 : ~0ull;
		__atomic_store_n(&bm[w], bm[w] | (ubm[w] & keep), __ATOMIC_RELEASE);
	}
	img->bm_dirty[c / img->chunks_per_group] = 1;
	ent_store(img, c, np);
	img->under_folded++;
	return jnl_add(img, c, np, bm, e, old_bm, NULL);
}

int under_fold(struct cow_image *img, uint64_t *cursor, uint32_t max, uint32_t *folded,
	       uint64_t *old)
{
	struct under *u = NULL;
	char *buf = NULL, *obuf = NULL;
	uint64_t c0 = *cursor, c = c0, *np = NULL, ahead = c0;
	uint32_t n = 0, k = 0, queued = 0;
	int r = 0;
	*folded = 0;
	if (max > FOLD_BATCH)
		max = FOLD_BATCH;
	for (; !r && c < img->nr_chunks && n < max; c++) {
		if (!ucow_e_under(img->table[c]))
			continue;
		if (!buf) {
			if ((r = under_get(img, &u)))
				break;
			if (!u) {	/* validated at open: UNDER entries have a parent */
				r = img_mark_corrupt(img, "%s: corrupt image: underlay entries "
						     "without a parent snapshot", img->path);
				break;
			}
			buf = meta_zalloc(img->chunk_size);
			obuf = meta_zalloc(img->chunk_size);
			np = malloc(max * sizeof(*np));
			if (!buf || !obuf || !np) {
				r = -ENOMEM;
				break;
			}
		}
		/* this chunk and the next FOLD_AHEAD UNDER ones asked for (the caller holds the
		 * image: no entry changes meanwhile) */
		if (ahead < c)
			ahead = c;
		for (; queued <= FOLD_AHEAD && ahead < img->nr_chunks && ahead - c < FOLD_SCAN;
		     ahead++)
			if (ucow_e_under(img->table[ahead])) {
				fold_advise(img, ahead);
				queued++;
			}
		queued -= queued > 0;	/* c's, asked for when ahead passed it */
		r = fold_copy(img, c, buf, obuf, &np[n]);
		if (!r)
			n++;
	}
	/* U5: the commit that makes these records durable syncs the copies first (J1) */
	for (uint64_t i = c0; !r && i < c; i++)
		if (ucow_e_under(img->table[i])) {
			uint64_t own = ent_pcn(img, img->table[i]);
			old[k] = np[k] ? own : 0;
			if (!(r = fold_publish(img, i, np[k] ? np[k] : own)))
				k++;
		}
	for (uint32_t i = k; i < n; i++)	/* copies not published: never visible */
		if (np[i])
			alloc_release(img, np[i]);
	free(buf);
	free(obuf);
	free(np);
	*folded = k;
	if (!r)
		*cursor = c;
	return r;
}
