/* SPDX-License-Identifier: MIT */
/*
 * cowcore internals, layer 2: the lookup table and the block bitmaps in memory — geometry,
 * loading from the file, lock-free lookups, and applying a record (journal replay and side
 * log fold both go through meta_apply). Below: imgio.h. Nothing here knows of journals,
 * snapshots or requests.
 */
#ifndef COWCORE_META_H
#define COWCORE_META_H

#include "imgio.h"

/* One metadata change of one virtual chunk, as the journal keeps it until a checkpoint:
 * the chunk's entry and bitmap now, and what they were before (J5, journal.c). */
struct jrec {
	uint64_t chunk;
	uint64_t entry;
	uint64_t *bm;		/* bm_words words, owned (and old_bm after them) */
	uint64_t old_entry;
	uint64_t *old_bm;
};

#define UCOW_BM_WORDS_MAX (UCOW_MAX_BPC / 64)

static inline uint64_t ent_load(struct cow_image *img, uint64_t c)
{
	return __atomic_load_n(&img->table[c], __ATOMIC_ACQUIRE);
}
static inline void ent_store(struct cow_image *img, uint64_t c, uint64_t e)
{
	__atomic_store_n(&img->table[c], e, __ATOMIC_RELEASE);
	img->table_dirty[(c * 8) / UCOW_META_ALIGN] = 1;
}
/* Count an I/O into virtual chunk c's physical chunk: taken BEFORE the entry is loaded (or
 * under img->lock), so that an unmap either sees the count or the I/O sees the unmapping. */
static inline void inflight_get(struct cow_image *img, uint64_t c)
{
	if (img->inflight)
		__atomic_fetch_add(&img->inflight[c], 1, __ATOMIC_SEQ_CST);
}
static inline void inflight_put(struct cow_image *img, uint64_t c)
{
	if (img->inflight)
		__atomic_fetch_sub(&img->inflight[c], 1, __ATOMIC_RELEASE);
}
static inline bool bm_test(const uint64_t *bm, uint32_t i)
{
	return bm && (__atomic_load_n(&bm[i / 64], __ATOMIC_ACQUIRE) >> (i % 64)) & 1;
}
/* From block b (< end), how many blocks in a row have the bit block b has (at least 1). */
static inline uint32_t bm_run(const uint64_t *bm, uint32_t b, uint32_t end)
{
	bool bit = bm_test(bm, b);
	uint32_t n = 1;
	while (b + n < end && bm_test(bm, b + n) == bit)
		n++;
	return n;
}
/* The physical chunk entry e uses: its data chunk, or a compressed one's pack. 0: none. */
static inline uint64_t ent_pcn(const struct cow_image *img, uint64_t e)
{
	return ucow_e_pcn(e, img->chunk_shift);
}
/* An entry read from the file (table, journal, side log, frozen table) is well formed, and
 * compressed or UNDER only in an image with the feature. Ranges are the caller's to check. */
static inline bool ent_ok(const struct cow_image *img, uint64_t e)
{
	return !(e & UCOW_E_BUSY) && ucow_e_wellformed(e, img->chunk_shift) &&
	       (!(e & UCOW_E_COMPRESSED) || (img->hdr.incompat & UCOW_INCOMPAT_COMPRESSED)) &&
	       (!ucow_e_under(e) || (img->hdr.incompat & UCOW_INCOMPAT_UNDERLAY));
}
/* A snapshot references physical chunk p (the refcounts are snapshot.c's). */
static inline bool rc_shared(const struct cow_image *img, uint64_t p)
{
	return p < img->rc_len && img->rc[p];
}

/* The image's geometry from img->hdr (validated by ucow_hdr_decode). */
void meta_geometry(struct cow_image *img);
/* Allocate the in-memory table, bitmap group pointers, dirty maps and in-flight counts and
 * read the table (little endian on disk). 0 or -errno with img->err set. */
int meta_load_table(struct cow_image *img);
/* Chunk c's bitmap words; with create, allocate its group page (under lock). NULL: none. */
uint64_t *meta_bm(struct cow_image *img, uint64_t chunk, bool create);
/* Read the bitmap group of chunk from the file if not in memory yet. */
int meta_load_group_for(struct cow_image *img, uint64_t chunk);
int meta_load_mapped_groups(struct cow_image *img);
uint64_t *meta_bm_page(void);	/* a zeroed bitmap group page (plain heap memory) */
void bm_copy(struct cow_image *img, uint64_t *to, const uint64_t *bm);	/* NULL: zeros */
/* Set chunk c's entry and bitmap (bm_words little-endian words at bm_le) from a record whose
 * chunk and entry flags the caller validated. At open, single-threaded. */
int meta_apply(struct cow_image *img, uint64_t c, uint64_t e, const uint8_t *bm_le);
/* Free what meta_load_table allocated. */
void meta_free(struct cow_image *img);

/*
 * The in-memory arrays of one geometry, built aside while the image keeps its own, then
 * swapped in at once (a resize, a snapshot apply or view changes the number of chunks, and
 * the arrays must not be half changed when an earlier step fails).
 */
struct meta_set {
	uint64_t nr_chunks, nr_groups, table_size;
	uint64_t *table;		/* table_size bytes, zeroed (entries past nr_chunks: 0) */
	uint64_t **bm_groups;		/* nr_groups pointers, NULL: no page (all zero) */
	uint8_t *table_dirty, *bm_dirty;
	uint32_t *inflight;		/* writable images only */
};
/* Zeroed arrays for nr_chunks chunks and a table of table_size bytes (>= nr_chunks x 8,
 * a multiple of 4 KiB); with_table false leaves m->table NULL (the caller puts its own,
 * table_size bytes, 4 KiB aligned). 0 or -ENOMEM (m then holds nothing). */
int meta_set_alloc(struct cow_image *img, uint64_t nr_chunks, uint64_t table_size,
		   bool with_table, struct meta_set *m);
/* Free m's arrays and bitmap pages. */
void meta_set_free(struct meta_set *m);
/* Make m the image's arrays and vsize its virtual size (no request in flight, under lock or
 * single-threaded); m receives the arrays the image had, for the caller to free. */
void meta_set_swap(struct cow_image *img, struct meta_set *m, uint64_t vsize);

#endif
