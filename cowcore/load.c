/* SPDX-License-Identifier: MIT */
/*
 * Layer 3, the open sequence of a ucow image: geometry and table (meta.c), journal replay
 * after an unclean shutdown, the side log of a dead server, snapshot structures, then the
 * validation of everything together (every mapped chunk inside the data area, mapped once,
 * never over metadata) and the allocator's starting state. Every number read from the image
 * is checked before use. cow_check runs the same sequence in "count, do not fail" mode.
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "load.h"

struct vstate {
	bool check_mode;
	struct cow_check_result *cr;
	uint64_t file_chunks;
	uint8_t *used;		/* one bit per physical chunk below file_chunks: mapped */
	uint8_t *meta;		/* likewise: holds metadata (snapshot structures, moved tables) */
	uint64_t max_used;
	int err;
	struct cow_image *img;
};
static bool bit_get(const uint8_t *m, uint64_t p) { return m[p / 8] & (1u << (p % 8)); }
static void bit_set(uint8_t *m, uint64_t p) { m[p / 8] |= 1u << (p % 8); }

/* Report a problem: at open it fails the open; in check mode it is counted. */
static int problem(struct cow_image *img, struct vstate *v, const char *fmt, uint64_t a,
		   uint64_t b)
{
	char msg[COW_ERRLEN];
	snprintf(msg, sizeof(msg), fmt, (unsigned long long)a, (unsigned long long)b);
	if (v->check_mode) {
		if (!v->cr->corruptions++)
			snprintf(v->cr->first_problem, COW_ERRLEN, "%s", msg);
		return 0;
	}
	img_set_err(img, "%s: corrupt image: %s", img->path, msg);
	return -EUCLEAN;
}

static int validate_table(struct cow_image *img, struct vstate *v)
{
	uint64_t max_used = v->max_used;
	int r;
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t e = img->table[c] &= ~UCOW_E_SHARED;	/* derived from refcounts below */
		uint64_t p = e & UCOW_E_PCN_MASK;
		if (e & (UCOW_E_RESERVED | UCOW_E_BUSY)) {
			if ((r = problem(img, v, "table entry %llu has reserved bits set (0x%llx)",
					 c, e)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if ((e & UCOW_E_ZERO) && p) {
			if ((r = problem(img, v, "table entry %llu is both zero and mapped (0x%llx)",
					 c, e)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if (!p)
			continue;
		if (p < img->data_pcn || p >= v->file_chunks) {
			if ((r = problem(img, v, "table entry %llu points to chunk %llu, outside the "
					 "data area of the file", c, p)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if (bit_get(v->used, p)) {
			if ((r = problem(img, v, "chunk %llu is mapped twice (again by entry %llu)",
					 p, c)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if (bit_get(v->meta, p)) {
			if ((r = problem(img, v, "chunk %llu holds metadata but entry %llu maps it",
					 p, c)))
				return r;
			img->table[c] = 0;
			continue;
		}
		bit_set(v->used, p);
		if (rc_shared(img, p))
			img->table[c] |= UCOW_E_SHARED;
		if (p > max_used)
			max_used = p;
	}
	for (uint64_t p = 0; p < img->rc_len; p++)
		if (img->rc[p] && p > max_used)
			max_used = p;
	img->next_pcn = max_used ? max_used + 1 : img->data_pcn;
	return 0;
}

/* Mark a metadata extent's chunks; two extents on one chunk, or past the file, is corrupt. */
static void mark_extent(void *arg, uint64_t off, uint64_t size)
{
	struct vstate *v = arg;
	struct cow_image *img = v->img;
	uint64_t first = off >> img->chunk_shift;
	uint64_t n = (size + img->chunk_size - 1) >> img->chunk_shift;
	for (uint64_t p = first; p < first + n && !v->err; p++) {
		if (p >= v->file_chunks || p < img->data_pcn) {
			v->err = problem(img, v, "metadata extent at chunk %llu (+%llu) is outside "
					 "the data area", first, n);
			return;
		}
		if (bit_get(v->meta, p) || rc_shared(img, p)) {
			v->err = problem(img, v, "chunk %llu is used by two structures (%llu)", p,
					 first);
			return;
		}
		bit_set(v->meta, p);
		if (p > v->max_used)
			v->max_used = p;
	}
}

/* Used at open: mapped, metadata, or referenced by a snapshot (alloc_init_free). */
static bool chunk_used(void *arg, uint64_t p)
{
	struct vstate *v = arg;
	return bit_get(v->used, p) || bit_get(v->meta, p) || rc_shared(v->img, p);
}

int img_load_meta(struct cow_image *img, bool check_mode, struct cow_check_result *cr)
{
	struct ucow_hdr *h = &img->hdr;
	struct stat st;
	struct vstate v = { .check_mode = check_mode, .cr = cr, .img = img };
	uint64_t nrec = 0;
	int r;

	meta_geometry(img);
	img->jseq = h->journal_seq;
	if (fstat(img->fd, &st) < 0)
		return -errno;
	v.file_chunks = (uint64_t)st.st_size >> img->chunk_shift;
	if (((uint64_t)st.st_size & (h->chunk_size - 1)))
		v.file_chunks++;	/* a last chunk written only in part */
	img->file_pcns = (uint64_t)st.st_size >> img->chunk_shift;
	r = meta_load_table(img);
	if (r)
		return r;
	v.used = calloc(v.file_chunks / 8 + 1, 1);
	v.meta = calloc(v.file_chunks / 8 + 1, 1);
	if (!v.used || !v.meta) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t c = img->nr_chunks; c < h->table_size / 8; c++)
		if (img->table[c] && (r = problem(img, &v, "table padding entry %llu is not zero"
						  " (0x%llx)", c, img->table[c])))
			goto out;
	/* bitmaps: only the groups that hold a mapped chunk (a 1 TiB empty image reads none) */
	for (uint64_t c = 0; c < img->nr_chunks; c++)
		if ((img->table[c] & UCOW_E_PCN_MASK) &&
		    (r = meta_load_group_for(img, c)))
			goto out;
	if (h->flags & UCOW_FLAG_DIRTY) {
		r = jnl_replay(img, &nrec);
		if (r && !check_mode)
			goto out;
		if (r && check_mode && !cr->corruptions++)
			snprintf(cr->first_problem, COW_ERRLEN, "%s", img->err);
		/* a dead server's acknowledged mappings (sidelog.c L3); checkpointed below */
		if (!r && img->sidelog_fd >= 0 && !check_mode &&
		    (r = sidelog_fold(img, h->generation, &nrec)))
			goto out;
	}
	r = snap_load(img, (uint64_t)st.st_size);
	if (r) {
		if (!check_mode)
			goto out;
		if (!cr->corruptions++)
			snprintf(cr->first_problem, COW_ERRLEN, "%s", img->err);
		r = 0;
	}
	snap_extents(img, mark_extent, &v);
	if (v.err) {
		r = v.err;
		goto out;
	}
	r = validate_table(img, &v);
	if (r)
		goto out;
	r = alloc_init_free(img, chunk_used, &v);
	if (r)
		goto out;
	/* a replayed journal is folded into the table at once, so it starts empty */
	if (nrec && !img->read_only)
		r = jnl_checkpoint(img);
	if (!r && (h->flags & UCOW_FLAG_DIRTY) && !img->read_only && !check_mode)
		alloc_reclaim_unclean(img, (uint64_t)st.st_size);
out:
	free(v.used);
	free(v.meta);
	return r;
}

void img_unload_meta(struct cow_image *img)
{
	meta_free(img);
	for (uint64_t i = img->rec_base; i < img->rec_added; i++)
		free(img->recs[i - img->rec_base].bm);
	free(img->recs);
	free(img->free_pcns);
	free(img->quar);
	free(img->reclaim);
	free(img->snaps);
	free(img->rc);
	img->recs = NULL;
	img->free_pcns = NULL;
	img->quar = NULL;
	img->reclaim = NULL;
	img->snaps = NULL;
	img->rc = NULL;
	img->rec_base = img->rec_added = 0;
}
