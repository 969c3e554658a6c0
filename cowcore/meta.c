/* SPDX-License-Identifier: MIT */
/*
 * Loading and validating the lookup table and bitmaps, the allocator's starting state,
 * `cow_check` and `cow_map`. Every number read from the image is checked before use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

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

/* Read bitmap group g from disk into memory (if not there yet). Under lock or single-threaded. */
static int load_group(struct cow_image *img, uint64_t g)
{
	uint64_t *page;
	int r;
	if (img->bm_groups[g])
		return 0;
	if (posix_memalign((void **)&page, UCOW_META_ALIGN, UCOW_META_ALIGN))
		return -ENOMEM;
	r = io_pread_all(img->fd, page, UCOW_META_ALIGN, img->hdr.bitmap_offset + g * UCOW_META_ALIGN);
	if (r) {
		free(page);
		img_set_err(img, "%s: reading bitmap: %s", img->path, strerror(-r));
		return r;
	}
	for (unsigned i = 0; i < UCOW_META_ALIGN / 8; i++)
		page[i] = le64toh(page[i]);
	img->bm_groups[g] = page;
	return 0;
}

int img_load_group_for(struct cow_image *img, uint64_t chunk)
{
	return load_group(img, chunk / img->chunks_per_group);
}

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
		if (snap_shared(img, p))
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
		if (bit_get(v->meta, p) || snap_shared(img, p)) {
			v->err = problem(img, v, "chunk %llu is used by two structures (%llu)", p,
					 first);
			return;
		}
		bit_set(v->meta, p);
		if (p > v->max_used)
			v->max_used = p;
	}
}

/* Allocator start: every chunk in the data area below next_pcn that nothing maps is free. */
static int init_free(struct cow_image *img, struct vstate *v)
{
	for (uint64_t p = img->data_pcn; p < img->next_pcn; p++) {
		if (bit_get(v->used, p) || bit_get(v->meta, p) || snap_shared(img, p))
			continue;
		if (img->nfree == img->free_cap) {
			size_t n = img->free_cap ? img->free_cap * 2 : 64;
			uint64_t *f = realloc(img->free_pcns, n * sizeof(*f));
			if (!f)
				return -ENOMEM;
			img->free_pcns = f;
			img->free_cap = n;
		}
		img->free_pcns[img->nfree++] = p;
	}
	return 0;
}

/*
 * After an unclean shutdown, chunks written for mappings that never became durable hold
 * data nothing maps: punch them, and cut the file after the last used chunk.
 */
static void reclaim_unclean(struct cow_image *img, uint64_t file_size)
{
	for (size_t i = 0; i < img->nfree; i++) {
		off_t o = (off_t)(img->free_pcns[i] << img->chunk_shift);
		off_t d = lseek(img->fd, o, SEEK_DATA);
		if (d >= 0 && d < o + (off_t)img->chunk_size)
			img_punch(img, (uint64_t)o, img->chunk_size);
	}
	uint64_t end = img->next_pcn << img->chunk_shift;
	if (end < img->hdr.data_offset)
		end = img->hdr.data_offset;
	if (file_size > end && img_truncate(img, end) == 0)
		img->file_pcns = img->next_pcn;
}

int img_load_meta(struct cow_image *img, bool check_mode, struct cow_check_result *cr)
{
	struct ucow_hdr *h = &img->hdr;
	struct stat st;
	struct vstate v = { .check_mode = check_mode, .cr = cr, .img = img };
	uint64_t nrec = 0;
	int r;

	img->vsize = h->virtual_size;
	img->chunk_size = h->chunk_size;
	img->block_size = h->block_size;
	img->chunk_shift = __builtin_ctz(h->chunk_size);
	img->block_shift = __builtin_ctz(h->block_size);
	img->bpc = h->chunk_size / h->block_size;
	img->bm_words = ucow_bm_bytes(h->chunk_size, h->block_size) / 8;
	img->nr_chunks = h->nr_chunks;
	img->data_pcn = h->data_offset >> img->chunk_shift;
	img->chunks_per_group = UCOW_META_ALIGN / (img->bm_words * 8);
	img->nr_groups = (img->nr_chunks + img->chunks_per_group - 1) / img->chunks_per_group;
	img->jseq = h->journal_seq;

	if (fstat(img->fd, &st) < 0)
		return -errno;
	v.file_chunks = (uint64_t)st.st_size >> img->chunk_shift;
	if (((uint64_t)st.st_size & (h->chunk_size - 1)))
		v.file_chunks++;	/* a last chunk written only in part */
	img->file_pcns = (uint64_t)st.st_size >> img->chunk_shift;

	/* a large table in huge pages: 4 page faults for a 1 TiB image's 8 MiB, not 2048 */
	if (posix_memalign((void **)&img->table, h->table_size >= (2u << 20) ? 2u << 20 :
			   UCOW_META_ALIGN, h->table_size))
		return -ENOMEM;
	if (h->table_size >= (2u << 20))
		madvise(img->table, h->table_size, MADV_HUGEPAGE);	/* a hint; may be off */
	img->table_dirty = calloc(h->table_size / UCOW_META_ALIGN, 1);
	if (!img->read_only && !(img->inflight = calloc(img->nr_chunks ? img->nr_chunks : 1,
							       sizeof(*img->inflight)))) {
		r = -ENOMEM;
		goto out;
	}
	img->bm_groups = calloc(img->nr_groups, sizeof(*img->bm_groups));
	img->bm_dirty = calloc(img->nr_groups, 1);
	v.used = calloc(v.file_chunks / 8 + 1, 1);
	v.meta = calloc(v.file_chunks / 8 + 1, 1);
	if (!img->table_dirty || !img->bm_groups || !img->bm_dirty || !v.used || !v.meta) {
		r = -ENOMEM;
		goto out;
	}
	r = pread_sparse(img->fd, img->table, h->table_size, h->table_offset);
	if (r) {
		img_set_err(img, "%s: reading the lookup table: %s", img->path, strerror(-r));
		goto out;
	}
	for (uint64_t c = 0; c < h->table_size / 8; c++)
		img->table[c] = le64toh(img->table[c]);
	for (uint64_t c = img->nr_chunks; c < h->table_size / 8; c++)
		if (img->table[c] && (r = problem(img, &v, "table padding entry %llu is not zero"
						  " (0x%llx)", c, img->table[c])))
			goto out;
	/* bitmaps: only the groups that hold a mapped chunk (a 1 TiB empty image reads none) */
	for (uint64_t c = 0; c < img->nr_chunks; c++)
		if ((img->table[c] & UCOW_E_PCN_MASK) &&
		    (r = load_group(img, c / img->chunks_per_group)))
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
	r = init_free(img, &v);
	if (r)
		goto out;
	/* a replayed journal is folded into the table at once, so it starts empty */
	if (nrec && !img->read_only)
		r = jnl_checkpoint(img);
	if (!r && (h->flags & UCOW_FLAG_DIRTY) && !img->read_only && !check_mode)
		reclaim_unclean(img, (uint64_t)st.st_size);
out:
	free(v.used);
	free(v.meta);
	return r;
}

/* ---- cow_map --------------------------------------------------------------------------- */

int cow_map(struct cow_image *img, uint64_t off, uint64_t len, uint64_t *run, uint64_t *phys)
{
	if (off >= img->vsize || !len)
		return -EINVAL;
	if (len > img->vsize - off)
		len = img->vsize - off;
	if (img->fmt == COW_FMT_RAW) {
		/* holes in a raw file read as zeros */
		off_t d = lseek(img->fd, (off_t)off, SEEK_DATA);
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
	uint64_t c = off >> img->chunk_shift;
	uint32_t in = off & (img->chunk_size - 1);
	uint64_t e = ent_load(img, c), p = e & UCOW_E_PCN_MASK;
	uint64_t chunk_left = img->chunk_size - in;
	int st;
	if (chunk_left > len)
		chunk_left = len;
	if (e & UCOW_E_ZERO || (!p && !img->backing)) {
		st = COW_MAP_ZERO;
		*run = chunk_left;
	} else if (!p) {
		st = COW_MAP_BACKING;
		*run = chunk_left;
	} else {
		const uint64_t *bm = img_bm(img, c, false);
		uint32_t b = in >> img->block_shift;
		bool bit = bm_test(bm, b);
		uint64_t end = ((uint64_t)b + 1) << img->block_shift;
		while (end < in + chunk_left && bm_test(bm, end >> img->block_shift) == bit)
			end += img->block_size;
		*run = (end < in + chunk_left ? end : in + chunk_left) - in;
		st = bit ? COW_MAP_DATA : (img->backing ? COW_MAP_BACKING : COW_MAP_ZERO);
		if (phys)
			*phys = (p << img->chunk_shift) + in;
	}
	/* the current run continues into following chunks with the same status */
	while (st != COW_MAP_DATA && *run < len) {
		uint64_t run2, off2 = off + *run;
		int st2 = cow_map(img, off2, len - *run, &run2, NULL);
		if (st2 != st)
			break;
		*run += run2;
	}
	return st;
}

/* ---- cow_check ------------------------------------------------------------------------- */

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
		/* leaks: chunks nothing maps that still hold disk space */
		for (size_t i = 0; i < tmp.nfree; i++) {
			off_t o = (off_t)(tmp.free_pcns[i] << tmp.chunk_shift);
			off_t d = lseek(tmp.fd, o, SEEK_DATA);
			if (d >= 0 && d < o + (off_t)tmp.chunk_size) {
				/* after an unclean shutdown: writes never flushed; the next
				 * read-write open punches them (reclaim_unclean) */
				if (tmp.hdr.flags & UCOW_FLAG_DIRTY) {
					res->reclaimable++;
					continue;
				}
				if (!res->leaks++ && !res->corruptions)
					snprintf(res->first_problem, COW_ERRLEN,
						 "chunk %llu holds data but nothing maps it",
						 (unsigned long long)tmp.free_pcns[i]);
			}
		}
		snap_check(&tmp, res);
		/* bitmap bits of unmapped chunks must be clear */
		for (uint64_t c = 0; c < tmp.nr_chunks; c++) {
			if (tmp.table[c] & UCOW_E_PCN_MASK)
				continue;
			const uint64_t *bm = img_bm(&tmp, c, false);
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
	if (tmp.bm_groups)
		for (uint64_t g = 0; g < tmp.nr_groups; g++)
			free(tmp.bm_groups[g]);
	for (uint64_t i = tmp.rec_base; i < tmp.rec_added; i++)
		free(tmp.recs[i - tmp.rec_base].bm);
	free(tmp.recs);
	free(tmp.bm_groups);
	free(tmp.table);
	free(tmp.table_dirty);
	free(tmp.bm_dirty);
	free(tmp.free_pcns);
	free(tmp.snaps);
	free(tmp.rc);
	pthread_mutex_destroy(&tmp.lock);
	res->verdict = res->corruptions ? 2 : res->leaks ? 3 : 0;
	return r == -ENOMEM ? r : 0;
}
