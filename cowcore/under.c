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
 *       UNDER chunk first (under_fold_all: copy, then records with the full bitmap and
 *       no UNDER, checkpointed); apply drops the current state's UNDER entries with it.
 *       Frozen tables never hold UNDER entries.
 *   U4. The incompatible bit UNDERLAY is in every header written while the image is open
 *       read-write with snapshots (so before any UNDER record can be durable) and in a
 *       closed image's only while an UNDER entry remains.
 *   U5. Crashes: an UNDER record is a MAP record (J1: after the data it maps is durable);
 *       a fold's copies go into blocks whose bit is clear (nothing reads them), and the
 *       commit of its records syncs them first (J1); any prefix of records gives a state
 *       some flush saw.
 * The frozen table is read whole (8 bytes per chunk) the first time it is needed; the
 * frozen bitmap a 4 KiB page at a time, each before an UNDER entry of its chunks can be
 * seen. Both are published with release stores, and readers load them after the entry.
 */
#include <errno.h>
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

/* Copy the blocks of UNDER chunk c that only its underlay holds into its own chunk. */
static int fold_copy(struct cow_image *img, uint64_t c, char *buf)
{
	uint64_t e = img->table[c], p = ent_pcn(img, e), up = under_pcn(img, c);
	const uint64_t *ubm = under_bm(img, c), *bm = meta_bm(img, c, false);
	int r = 0;
	for (uint32_t b = 0; !r && b < img->bpc;) {
		uint32_t n = 0;
		while (b + n < img->bpc && bm_test(ubm, b + n) && !bm_test(bm, b + n))
			n++;
		if (!n) {
			b++;
			continue;
		}
		uint64_t o = (uint64_t)b << img->block_shift, len = (uint64_t)n << img->block_shift;
		r = io_pread_all(img->fd, buf, len, (up << img->chunk_shift) + o);
		if (!r)
			r = img_pwrite(img, buf, len, (p << img->chunk_shift) + o);
		b += n;
	}
	return r;
}

/* Map UNDER chunk c (its copies durable) as a plain chunk with both bitmaps' blocks. */
static int fold_publish(struct cow_image *img, uint64_t c)
{
	uint64_t e = img->table[c], ne = e & ~UCOW_E_UNDER, old_bm[UCOW_BM_WORDS_MAX];
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
	ent_store(img, c, ne);
	img->under_folded++;
	return jnl_add(img, c, ne, bm, e, old_bm, NULL);
}

int under_fold(struct cow_image *img, uint64_t *cursor, uint32_t max, uint32_t *folded)
{
	struct under *u = NULL;
	char *buf = NULL;
	uint64_t c0 = *cursor, c = c0;
	uint32_t n = 0;
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
			if (!(buf = meta_zalloc(img->chunk_size))) {
				r = -ENOMEM;
				break;
			}
		}
		r = fold_copy(img, c, buf);
		n++;
	}
	/* U5: the commit that makes these records durable syncs the copies first (J1) */
	for (uint64_t k = c0; !r && k < c; k++)
		if (ucow_e_under(img->table[k]))
			r = fold_publish(img, k);
	free(buf);
	if (!r) {
		*cursor = c;
		*folded = n;
	}
	return r;
}

int under_fold_all(struct cow_image *img)
{
	uint64_t c = 0;
	uint32_t n;
	int r = 0;
	if (!under_any(img))
		return 0;
	while (!r && c < img->nr_chunks) {
		r = under_fold(img, &c, FOLD_BATCH, &n);
		if (!r && n)
			r = jnl_checkpoint_all(img);	/* bounds the records in memory */
	}
	return r;
}
