/* SPDX-License-Identifier: MIT */
/*
 * Layer 2: the lookup table and bitmaps in memory (meta.h). Loading reads what the header
 * (validated by ucow_hdr_decode) describes; the entries themselves are validated by load.c,
 * which knows the snapshot structures they must not overlap.
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meta.h"

/*
 * Read a metadata region, skipping its holes (a new image's table is one big hole: a 1 TiB
 * image opens without reading its 8 MiB table). Extents are widened to 4 KiB for O_DIRECT.
 */
static int pread_sparse(int fd, void *buf, uint64_t len, uint64_t off)
{
	uint64_t pos = off, end = off + len;
	while (pos < end) {
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
		if (d < 0 || (uint64_t)d >= end) {
			if (d < 0 && errno != ENXIO)
				return io_pread_all(fd, (char *)buf + (pos - off), end - pos, pos);
			memset((char *)buf + (pos - off), 0, end - pos);
			return 0;
		}
		uint64_t ds = (uint64_t)d & ~(uint64_t)(UCOW_META_ALIGN - 1);
		if (ds < pos)
			ds = pos;
		memset((char *)buf + (pos - off), 0, ds - pos);
		off_t h = lseek(fd, d, SEEK_HOLE);
		uint64_t de = h < 0 ? end : ((uint64_t)h + UCOW_META_ALIGN - 1) &
					    ~(uint64_t)(UCOW_META_ALIGN - 1);
		if (de > end)
			de = end;
		int r = io_pread_all(fd, (char *)buf + (ds - off), de - ds, ds);
		if (r)
			return r;
		pos = de;
	}
	return 0;
}

/*
 * A bitmap group page: 4 KiB of plain heap memory. No I/O is ever done from or into one
 * (reads and writes go through an aligned buffer), so it need not be 4 KiB aligned, and
 * must not be: glibc spends about twice the size on each 4 KiB-aligned 4 KiB block (a fully
 * mapped 1 TiB image held 64 MiB for its 32 MiB of bitmaps).
 */
uint64_t *meta_bm_page(void)
{
	return calloc(1, UCOW_META_ALIGN);
}

/* Read the groups [g0, g0 + n), none loaded yet, through buf (n pages, aligned). */
static int load_groups(struct cow_image *img, uint64_t g0, uint64_t n, uint64_t *buf)
{
	int r = io_pread_all(img->fd, buf, n * UCOW_META_ALIGN,
			     img->hdr.bitmap_offset + g0 * UCOW_META_ALIGN);
	if (r) {
		img_set_err(img, "%s: reading bitmap: %s", img->path, strerror(-r));
		return r;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t *page = meta_bm_page();
		const uint64_t *src = buf + i * (UCOW_META_ALIGN / 8);
		if (!page)
			return -ENOMEM;
		for (unsigned w = 0; w < UCOW_META_ALIGN / 8; w++)
			page[w] = le64toh(src[w]);
		img->bm_groups[g0 + i] = page;
	}
	return 0;
}

/* Read bitmap group g from disk into memory (if not there yet). Under lock or single-threaded. */
static int load_group(struct cow_image *img, uint64_t g)
{
	uint64_t *buf;
	int r;
	if (img->bm_groups[g])
		return 0;
	if (!(buf = meta_zalloc(UCOW_META_ALIGN)))
		return -ENOMEM;
	r = load_groups(img, g, 1, buf);
	free(buf);
	return r;
}

/* At open: every group that holds a mapped chunk, runs of them in reads of up to 1 MiB (a
 * fully mapped 1 TiB image: 32 reads, not 8192). Single-threaded. */
int meta_load_mapped_groups(struct cow_image *img)
{
	const uint64_t max = (1u << 20) / UCOW_META_ALIGN;
	uint64_t *buf = meta_zalloc(max * UCOW_META_ALIGN), g0 = 0, n = 0;
	int r = buf ? 0 : -ENOMEM;
	for (uint64_t g = 0; !r && g < img->nr_groups; g++) {
		uint64_t end = (g + 1) * img->chunks_per_group;
		bool need = false;
		for (uint64_t c = g * img->chunks_per_group; c < end && c < img->nr_chunks; c++)
			if (ent_pcn(img, img->table[c])) {
				need = !img->bm_groups[g];
				break;
			}
		if (need && n && g0 + n == g && n < max) {
			n++;
			continue;
		}
		if (n)
			r = load_groups(img, g0, n, buf);
		g0 = g;
		n = need;
	}
	if (!r && n)
		r = load_groups(img, g0, n, buf);
	free(buf);
	return r;
}

int meta_load_group_for(struct cow_image *img, uint64_t chunk)
{
	return load_group(img, chunk / img->chunks_per_group);
}


/* ---- cow_map --------------------------------------------------------------------------- */

/* ---- cow_check ------------------------------------------------------------------------- */

uint64_t *meta_bm(struct cow_image *img, uint64_t chunk, bool create)
{
	uint64_t g = chunk / img->chunks_per_group;
	uint64_t *page = __atomic_load_n(&img->bm_groups[g], __ATOMIC_ACQUIRE);
	if (!page && create) {
		/* caller holds img->lock: group pages are only ever added under it */
		page = meta_bm_page();
		if (!page)
			return NULL;
		__atomic_store_n(&img->bm_groups[g], page, __ATOMIC_RELEASE);
	}
	if (!page)
		return NULL;
	return page + (chunk % img->chunks_per_group) * img->bm_words;
}

void bm_copy(struct cow_image *img, uint64_t *to, const uint64_t *bm)
{
	for (uint32_t w = 0; w < img->bm_words; w++)
		to[w] = bm ? __atomic_load_n(&bm[w], __ATOMIC_RELAXED) : 0;
}

int meta_apply(struct cow_image *img, uint64_t c, uint64_t e, const uint8_t *bm_le)
{
	int r = meta_load_group_for(img, c);
	if (r)
		return r;
	img->table[c] = e;
	img->table_dirty[c * 8 / UCOW_META_ALIGN] = 1;
	uint64_t *bm = meta_bm(img, c, false);
	for (uint32_t w = 0; w < img->bm_words; w++)
		bm[w] = get_le64(bm_le + w * 8);
	img->bm_dirty[c / img->chunks_per_group] = 1;
	return 0;
}

void meta_geometry(struct cow_image *img)
{
	const struct ucow_hdr *h = &img->hdr;
	img->vsize = h->virtual_size;
	img->chunk_size = h->chunk_size;
	img->block_size = h->block_size;
	img->chunk_shift = __builtin_ctz(h->chunk_size);
	img->block_shift = __builtin_ctz(h->block_size);
	img->bpc = h->chunk_size / h->block_size;
	img->bm_words = ucow_bm_bytes(h->chunk_size, h->block_size) / 8;
	/* a record in memory: struct jrec + its two bitmaps (journal.c); about 8 MiB of them */
	img->rec_bound = (8u << 20) / (sizeof(struct jrec) + 16 * img->bm_words + 16);
	img->nr_chunks = h->nr_chunks;
	img->data_pcn = h->data_offset >> img->chunk_shift;
	img->chunks_per_group = UCOW_META_ALIGN / (img->bm_words * 8);
	img->nr_groups = (img->nr_chunks + img->chunks_per_group - 1) / img->chunks_per_group;
}

int meta_load_table(struct cow_image *img)
{
	const struct ucow_hdr *h = &img->hdr;
	int r;
	/* a large table in huge pages: 4 page faults for a 1 TiB image's 8 MiB, not 2048 */
	if (posix_memalign((void **)&img->table, h->table_size >= (2u << 20) ? 2u << 20 :
			   UCOW_META_ALIGN, h->table_size))
		return -ENOMEM;
	if (h->table_size >= (2u << 20))
		madvise(img->table, h->table_size, MADV_HUGEPAGE);	/* a hint; may be off */
	img->table_dirty = calloc(h->table_size / UCOW_META_ALIGN, 1);
	if (!img->read_only && !(img->inflight = calloc(img->nr_chunks ? img->nr_chunks : 1,
							       sizeof(*img->inflight))))
		return -ENOMEM;
	img->bm_groups = calloc(img->nr_groups, sizeof(*img->bm_groups));
	img->bm_dirty = calloc(img->nr_groups, 1);
	if (!img->table_dirty || !img->bm_groups || !img->bm_dirty)
		return -ENOMEM;
	r = pread_sparse(img->fd, img->table, h->table_size, h->table_offset);
	if (r) {
		img_set_err(img, "%s: reading the lookup table: %s", img->path, strerror(-r));
		return r;
	}
	for (uint64_t c = 0; c < h->table_size / 8; c++)
		img->table[c] = le64toh(img->table[c]);
	return 0;
}

int meta_set_alloc(struct cow_image *img, uint64_t nr_chunks, uint64_t table_size,
		   bool with_table, struct meta_set *m)
{
	memset(m, 0, sizeof(*m));
	m->nr_chunks = nr_chunks;
	m->table_size = table_size;
	m->nr_groups = (nr_chunks + img->chunks_per_group - 1) / img->chunks_per_group;
	if (with_table) {
		if (posix_memalign((void **)&m->table, table_size >= (2u << 20) ? 2u << 20 :
				   UCOW_META_ALIGN, table_size)) {
			m->table = NULL;
			return -ENOMEM;
		}
		memset(m->table, 0, table_size);
	}
	m->table_dirty = calloc(table_size / UCOW_META_ALIGN, 1);
	m->bm_groups = calloc(m->nr_groups ? m->nr_groups : 1, sizeof(*m->bm_groups));
	m->bm_dirty = calloc(m->nr_groups ? m->nr_groups : 1, 1);
	if (!img->read_only)
		m->inflight = calloc(nr_chunks ? nr_chunks : 1, sizeof(*m->inflight));
	if (!m->table_dirty || !m->bm_groups || !m->bm_dirty ||
	    (!img->read_only && !m->inflight)) {
		meta_set_free(m);
		return -ENOMEM;
	}
	return 0;
}

void meta_set_free(struct meta_set *m)
{
	if (m->bm_groups)
		for (uint64_t g = 0; g < m->nr_groups; g++)
			free(m->bm_groups[g]);
	free(m->bm_groups);
	free(m->table);
	free(m->table_dirty);
	free(m->bm_dirty);
	free(m->inflight);
	memset(m, 0, sizeof(*m));
}

void meta_set_swap(struct cow_image *img, struct meta_set *m, uint64_t vsize)
{
	struct meta_set old = {
		.nr_chunks = img->nr_chunks, .nr_groups = img->nr_groups,
		.table_size = 0, .table = img->table, .bm_groups = img->bm_groups,
		.table_dirty = img->table_dirty, .bm_dirty = img->bm_dirty,
		.inflight = img->inflight,
	};
	img->nr_chunks = m->nr_chunks;
	img->nr_groups = m->nr_groups;
	img->table = m->table;
	img->bm_groups = m->bm_groups;
	img->table_dirty = m->table_dirty;
	img->bm_dirty = m->bm_dirty;
	img->inflight = m->inflight;
	img->vsize = vsize;
	*m = old;
}

void meta_free(struct cow_image *img)
{
	if (img->bm_groups)
		for (uint64_t g = 0; g < img->nr_groups; g++)
			free(img->bm_groups[g]);
	free(img->bm_groups);
	free(img->table);
	free(img->table_dirty);
	free(img->inflight);
	free(img->bm_dirty);
	img->bm_groups = NULL;
	img->table = NULL;
	img->table_dirty = img->bm_dirty = NULL;
	img->inflight = NULL;
}
