/* SPDX-License-Identifier: MIT */
/*
 * Layer 6: cow_map (where the data of a range comes from) and cow_check (the whole
 * validation of load.c again, on a private copy, counting problems instead of failing).
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "load.h"

/*
 * One piece of [off, off+len) of a ucow image, inside one chunk: its status, the length with
 * that status (and, for an allocated chunk, one bitmap bit), whether this image decides it
 * (*alloc), and for an allocated chunk where it lies in the file (*phys).
 */
static int map_piece(struct cow_image *img, uint64_t off, uint64_t len, uint64_t *run,
		     uint64_t *phys, bool *alloc)
{
	uint64_t c = off >> img->chunk_shift;
	uint32_t in = off & (img->chunk_size - 1);
	uint64_t e = ent_load(img, c), p = e & UCOW_E_PCN_MASK;
	uint64_t chunk_left = img->chunk_size - in;

	if (chunk_left > len)
		chunk_left = len;
	*run = chunk_left;
	if (e & UCOW_E_ZERO) {
		*alloc = true;		/* zeros whatever the backing image holds */
		return COW_MAP_ZERO;
	}
	if (!p) {
		*alloc = false;
		return img->backing ? COW_MAP_BACKING : COW_MAP_ZERO;
	}
	const uint64_t *bm = meta_bm(img, c, false);
	uint32_t b = in >> img->block_shift;
	bool bit = bm_test(bm, b);
	uint64_t end = (uint64_t)(b + bm_run(bm, b, ((in + chunk_left - 1) >>
						 img->block_shift) + 1)) << img->block_shift;
	*run = (end < in + chunk_left ? end : in + chunk_left) - in;
	*alloc = bit;
	if (phys)
		*phys = (p << img->chunk_shift) + in;
	return bit ? COW_MAP_DATA : (img->backing ? COW_MAP_BACKING : COW_MAP_ZERO);
}

/*
 * The run from off: a raw file's data or hole, or ucow pieces joined while their status
 * stays the same (and, with by_alloc, their allocated flag too). DATA is never joined across
 * chunks: the next chunk's data lies elsewhere in the file.
 */
static int map_run(struct cow_image *img, uint64_t off, uint64_t len, uint64_t *run,
		   uint64_t *phys, bool *alloc, bool by_alloc)
{
	if (off >= img->vsize || !len)
		return -EINVAL;
	if (len > img->vsize - off)
		len = img->vsize - off;
	if (img->fmt == COW_FMT_RAW) {
		/* holes in a raw file read as zeros */
		off_t d = lseek(img->fd, (off_t)off, SEEK_DATA);
		*alloc = true;
		if (phys)
			*phys = off;
		if (d < 0 && errno == ENXIO) {
			*run = len;
			return COW_MAP_ZERO;
		}
		if (d < 0 || (uint64_t)d <= off) {
			off_t hole = lseek(img->fd, (off_t)off, SEEK_HOLE);
			*run = (hole > (off_t)off && (uint64_t)(hole - off) < len) ? hole - off : len;
			return COW_MAP_DATA;
		}
		*run = ((uint64_t)d - off) < len ? (uint64_t)d - off : len;
		return COW_MAP_ZERO;
	}
	int st = map_piece(img, off, len, run, phys, alloc);
	/* the current run continues into following chunks with the same status */
	while (st != COW_MAP_DATA && *run < len) {
		uint64_t run2;
		bool alloc2;
		int st2 = map_piece(img, off + *run, len - *run, &run2, NULL, &alloc2);
		if (st2 != st || (by_alloc && alloc2 != *alloc))
			break;
		*run += run2;
	}
	return st;
}

int cow_map(struct cow_image *img, uint64_t off, uint64_t len, uint64_t *run, uint64_t *phys)
{
	bool alloc;
	return map_run(img, off, len, run, phys, &alloc, false);
}

int cow_map_extent(struct cow_image *img, uint64_t off, uint64_t len, struct cow_extent *x)
{
	uint64_t phys = 0;
	bool alloc = false;
	int st;

	memset(x, 0, sizeof(*x));
	st = map_run(img, off, len, &x->length, &phys, &alloc, true);
	if (st < 0)
		return st;
	x->status = st;
	x->allocated = alloc;
	x->offset_valid = img->fmt == COW_FMT_RAW || st == COW_MAP_DATA;
	x->offset = x->offset_valid ? phys : 0;
	return 0;
}

/* A free chunk that holds data: a leak, or after an unclean shutdown writes never flushed
 * (the next read-write open punches them, alloc_reclaim_unclean). */
struct leak_scan {
	struct cow_check_result *res;
	bool dirty;
};

static void leak_chunk(void *arg, uint64_t pcn)
{
	struct leak_scan *ls = arg;
	struct cow_check_result *res = ls->res;
	if (ls->dirty) {
		res->reclaimable++;
		return;
	}
	if (!res->leaks++ && !res->corruptions)
		snprintf(res->first_problem, COW_ERRLEN, "chunk %llu holds data but nothing maps it",
			 (unsigned long long)pcn);
}

int cow_check(struct cow_image *img, struct cow_check_result *res)
{
	struct cow_image tmp;
	char err[COW_ERRLEN];
	int r;

	memset(res, 0, sizeof(*res));
	if (img->fmt != COW_FMT_UCOW)
		return 0;
	/* re-run the whole validation on a private copy, counting problems instead of failing */
	memset(&tmp, 0, sizeof(tmp));
	tmp.fd = img->fd;
	tmp.path = img->path;
	tmp.hdr = img->hdr;
	tmp.read_only = true;
	pthread_mutex_init(&tmp.lock, NULL);
	r = img_load_meta(&tmp, true, res);
	if (!r) {
		res->allocated_chunks = 0;
		for (uint64_t c = 0; c < tmp.nr_chunks; c++)
			if (tmp.table[c] & UCOW_E_PCN_MASK)
				res->allocated_chunks++;
		/* leaks: chunks nothing maps that still hold disk space (holes skipped) */
		struct leak_scan ls = { res, tmp.hdr.flags & UCOW_FLAG_DIRTY };
		alloc_free_with_data(&tmp, leak_chunk, &ls);
		snap_check(&tmp, res);
		/* bitmap bits of unmapped chunks must be clear */
		for (uint64_t c = 0; c < tmp.nr_chunks; c++) {
			if (tmp.table[c] & UCOW_E_PCN_MASK)
				continue;
			const uint64_t *bm = meta_bm(&tmp, c, false);
			for (uint32_t w = 0; bm && w < tmp.bm_words; w++)
				if (bm[w]) {
					if (!res->corruptions++)
						snprintf(res->first_problem, COW_ERRLEN,
							 "bitmap of unmapped chunk %llu is not clear",
							 (unsigned long long)c);
					break;
				}
		}
	} else {
		snprintf(err, sizeof(err), "%s", tmp.err);
		if (!res->corruptions++)
			snprintf(res->first_problem, COW_ERRLEN, "%s", err);
	}
	tmp.fd = -1;
	img_unload_meta(&tmp);
	pthread_mutex_destroy(&tmp.lock);
	res->verdict = res->corruptions ? 2 : res->leaks ? 3 : 0;
	return r == -ENOMEM ? r : 0;
}
