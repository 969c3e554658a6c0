/* SPDX-License-Identifier: MIT */
/*
 * Layer 6: cow_map (where the data of a range comes from), cow_check (the whole validation
 * of load.c again, on a private copy, counting problems instead of failing) and cow_repair
 * (check -r: what the check found, written back repaired).
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compress.h"
#include "image.h"
#include "qcow2.h"

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
	uint64_t e = ent_load(img, c), p = ent_pcn(img, e);
	uint64_t chunk_left = img->chunk_size - in;
	/* a backing file named but not opened (COW_OPEN_NOCHAIN) holds the data all the same */
	bool backed = img->backing || img->hdr.backing_len;

	if (chunk_left > len)
		chunk_left = len;
	*run = chunk_left;
	if (e & UCOW_E_ZERO) {
		*alloc = true;		/* zeros whatever the backing image holds */
		return COW_MAP_ZERO;
	}
	if (!p) {
		*alloc = false;
		return backed ? COW_MAP_BACKING : COW_MAP_ZERO;
	}
	const uint64_t *bm = meta_bm(img, c, false);
	const uint64_t *ubm = ucow_e_under(e) ? under_bm(img, c) : NULL;
	uint32_t b = in >> img->block_shift;
	bool bit = bm_test(bm, b), under = !bit && bm_test(ubm, b);
	uint32_t n = bm_run(bm, b, ((in + chunk_left - 1) >> img->block_shift) + 1);
	if (!bit && ubm)	/* bit clear: the underlay's block or the backing image's */
		n = bm_run(ubm, b, b + n);
	uint64_t end = (uint64_t)(b + n) << img->block_shift;
	*run = (end < in + chunk_left ? end : in + chunk_left) - in;
	*alloc = bit || under;
	if (under)
		p = under_pcn(img, c);
	if (phys)	/* a compressed chunk's data has no place in the file to give */
		*phys = (e & UCOW_E_COMPRESSED) ? ~0ull : (p << img->chunk_shift) + in;
	return *alloc ? COW_MAP_DATA : (backed ? COW_MAP_BACKING : COW_MAP_ZERO);
}

/*
 * A qcow2 image's run: data (compressed clusters too; *phys is set for uncompressed data
 * only, else left at ~0), zeros (allocated: whatever the backing image holds), unallocated
 * (the backing image's, or zeros). Runs of one kind are joined, data only when contiguous
 * in the file and uncompressed.
 */
static int map_qcow2(struct cow_image *img, uint64_t off, uint64_t len, uint64_t *run,
		     uint64_t *phys, bool *alloc, bool by_alloc)
{
	bool backed = img->backing || img->hdr.backing_len;
	struct q2_run m;
	int st = 0, r;
	uint64_t done = 0;
	(void)by_alloc;		/* the kind decides allocated: one run never mixes them */
	while (done < len) {
		int st2;
		bool alloc2 = true;
		r = qcow2_map(img, off + done, len - done, &m);
		if (r)
			return r;
		st2 = m.kind == Q2_ZERO ? COW_MAP_ZERO : m.kind == Q2_UNALLOC ?
		      (backed ? COW_MAP_BACKING : COW_MAP_ZERO) : COW_MAP_DATA;
		alloc2 = m.kind != Q2_UNALLOC;
		if (!done) {
			st = st2;
			*alloc = alloc2;
			if (phys)
				*phys = m.kind == Q2_DATA ? m.off : ~0ull;
		} else if (st2 != st || alloc2 != *alloc || st == COW_MAP_DATA) {
			break;	/* data runs are not joined across tables (they lie elsewhere) */
		}
		done += m.len;
		if (m.kind == Q2_COMPRESSED)
			break;
	}
	*run = done;
	return st;
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
	if (img->nbd) {		/* on an NBD server: all data, as far as we know */
		*alloc = true;
		if (phys)
			*phys = off;
		*run = len;
		return COW_MAP_DATA;
	}
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
	if (img->fmt == COW_FMT_QCOW2)
		return map_qcow2(img, off, len, run, phys, alloc, by_alloc);
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
	x->offset_valid = img->fmt == COW_FMT_RAW || (st == COW_MAP_DATA && phys != ~0ull);
	x->compressed = img->fmt != COW_FMT_RAW && st == COW_MAP_DATA && phys == ~0ull;
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

/* Every compressed chunk's stream must inflate to a whole chunk (load.c checked where the
 * streams lie). */
static void check_streams(struct cow_image *img, struct cow_check_result *res)
{
	char *cbuf = NULL, *chunk = NULL;
	if (!(img->hdr.incompat & UCOW_INCOMPAT_COMPRESSED))
		return;
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t e = img->table[c];
		if (!(e & UCOW_E_COMPRESSED))
			continue;
		if (!cbuf && (!(cbuf = meta_zalloc(UCOW_MAX_CSECTORS * 512)) ||
			      !(chunk = meta_zalloc(img->chunk_size))))
			break;
		int r = io_pread_all(img->fd, cbuf, ucow_e_clen(e), ucow_e_coff(e));
		if (!r)
			r = comp_inflate(cbuf, ucow_e_clen(e), chunk, img->chunk_size);
		if (r && !res->corruptions++)
			snprintf(res->first_problem, COW_ERRLEN, "compressed chunk %llu (stream at "
				 "byte %llu) %s", (unsigned long long)c,
				 (unsigned long long)ucow_e_coff(e),
				 r == -EUCLEAN ? "does not inflate to a whole chunk" : strerror(-r));
	}
	free(cbuf);
	free(chunk);
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
		check_streams(&tmp, res);
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

/* ---- check -r -------------------------------------------------------------------------- */

struct did {
	char *buf;
	size_t len, used;
};

static void said(struct did *d, const char *fmt, unsigned long long n, const char *what)
{
	if (!n || !d->len || d->used >= d->len - 1)
		return;
	int k = snprintf(d->buf + d->used, d->len - d->used, fmt, d->used ? "; " : "", n, what);
	if (k > 0)
		d->used += (size_t)k < d->len - d->used ? (size_t)k : d->len - d->used - 1;
}

/*
 * Phase 1 of -r all: the refcounts again from the frozen tables (the snapshot entries must
 * be intact). The counts are written over the refcount extent in place: the image is
 * damaged already, a torn write leaves it no worse, and running the repair again finishes
 * it. Then the image is dropped without writing more: its free space was built on the old
 * counts, so phase 2 opens it afresh.
 */
static int repair_refcounts(const char *path, int fmt, struct did *did, char *err)
{
	struct cow_image *img;
	uint32_t *count = NULL;
	uint8_t *buf = NULL;
	uint64_t len, wrong = 0, beyond = 0;
	int r = img_open_repair(path, fmt, &img, err);
	if (r)
		return r;
	if (!img->snaps_valid) {
		snprintf(err, COW_ERRLEN, "%s: not repaired: the snapshot table is damaged (%s); "
			 "nothing was changed", path, img->err);
		r = -EUCLEAN;
		goto out;
	}
	if (!img->nb_snaps)
		goto out;
	len = img->file_pcns + 1;
	count = calloc(len, sizeof(*count));
	if (!count) {
		r = -ENOMEM;
		goto out;
	}
	r = snap_count_refs(img, count, len);
	if (r) {
		snprintf(err, COW_ERRLEN, "%s: not repaired: %s; delete that snapshot's data by "
			 "hand or restore the image", path, img->err);
		goto out;
	}
	/* against the table on disk (a load that failed on a count stopped reading there) */
	uint64_t slots = img->hdr.refcount_size / 4;
	buf = meta_zalloc(img->hdr.refcount_size);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	r = io_pread_all(img->fd, buf, img->hdr.refcount_size, img->hdr.refcount_offset);
	if (r) {
		snprintf(err, COW_ERRLEN, "%s: reading the refcounts: %s", path, strerror(-r));
		goto out;
	}
	for (uint64_t p = 0; p < len || p < slots; p++) {
		uint32_t want = p < len ? count[p] : 0, have = p < slots ? get_le32(buf + p * 4) : 0;
		if (want == have)
			continue;
		wrong++;
		if (p >= slots)
			beyond++;
		else
			put_le32(buf + p * 4, want);
	}
	if (!wrong)
		goto out;
	if (beyond) {
		snprintf(err, COW_ERRLEN, "%s: not repaired: snapshots reference %llu chunks "
			 "beyond the refcount table; nothing was changed", path,
			 (unsigned long long)beyond);
		r = -EUCLEAN;
		goto out;
	}
	r = img_meta_write(img, buf, img->hdr.refcount_size, img->hdr.refcount_offset);
	if (!r)
		r = img_sync(img);
	if (r) {
		snprintf(err, COW_ERRLEN, "%s: writing the refcounts: %s", path, strerror(-r));
		goto out;
	}
	said(did, "%srefcounts of %llu %s rewritten from the snapshot tables", wrong,
	     wrong == 1 ? "chunk" : "chunks");
out:
	free(buf);
	free(count);
	img_abandon(img);
	return r;
}

static void count_chunk(void *arg, uint64_t pcn)
{
	(void)pcn;
	(*(uint64_t *)arg)++;
}

int cow_repair(const char *path, int fmt, unsigned what, char *done, size_t donelen, char *err,
	       size_t errlen)
{
	char msg[COW_ERRLEN] = "";
	struct did did = { done, donelen, 0 };
	struct cow_image *img = NULL;
	uint64_t leaks = 0, bms = 0, pads = 0;
	struct stat st;
	bool write = false;
	int r;

	if (done && donelen)
		done[0] = 0;
	if (!(what & COW_REPAIR_LEAKS) || (what & ~COW_REPAIR_ALL)) {
		snprintf(msg, sizeof(msg), "%s: unknown repair mode", path);
		r = -EINVAL;
		goto out;
	}
	if (fmt == COW_FMT_RAW) {
		snprintf(msg, sizeof(msg), "%s: raw images have no metadata to repair", path);
		r = -ENOTSUP;
		goto out;
	}
	if (what == COW_REPAIR_ALL && (r = repair_refcounts(path, fmt, &did, msg)))
		goto out;
	r = img_open_repair(path, fmt, &img, msg);
	if (r)
		goto out;
	if (what == COW_REPAIR_LEAKS && (img->load_problems ||
					 (img->hdr.flags & UCOW_FLAG_CORRUPT))) {
		/* only leaks: a corrupt image is left alone */
		snprintf(msg, sizeof(msg), "%s: not repaired: the image is corrupt, and '-r leaks' "
			 "repairs leaks only (use '-r all')", path);
		r = -EUCLEAN;
		goto out;
	}
	if (what == COW_REPAIR_ALL) {
		/* the table as validated (dropped entries zero), its padding zero, the bitmaps
		 * of unmapped chunks clear */
		for (uint64_t c = img->nr_chunks; c < img->hdr.table_size / 8; c++)
			if (img->table[c]) {
				img->table[c] = 0;
				pads++;
			}
		for (uint64_t c = 0; c < img->nr_chunks; c++) {
			uint64_t *bm = (img->table[c] & UCOW_E_PCN_MASK) ? NULL :
				       meta_bm(img, c, false);
			bool set = false;
			for (uint32_t w = 0; bm && w < img->bm_words; w++)
				set |= bm[w] != 0;
			if (set) {
				memset(bm, 0, img->bm_words * 8);
				bms++;
			}
		}
		said(&did, "%s%llu table %s past the virtual size cleared", pads,
		     pads == 1 ? "entry" : "entries");
		said(&did, "%sbitmaps of %llu unmapped %s cleared", bms,
		     bms == 1 ? "chunk" : "chunks");
		said(&did, "%s%llu table %s that failed validation dropped", img->load_problems,
		     img->load_problems == 1 ? "entry" : "entries or structures");
		if (img->hdr.flags & UCOW_FLAG_CORRUPT) {
			img->hdr.flags &= ~UCOW_FLAG_CORRUPT;
			said(&did, "%sthe corrupt mark cleared%.0llu%s", 1, "");
		}
		/* (did.used: refcounts rewritten, or the corrupt mark cleared) */
		write = pads || bms || img->load_problems || (img->hdr.flags & UCOW_FLAG_DIRTY) ||
			did.used;
	}
	alloc_free_with_data(img, count_chunk, &leaks);
	if (fstat(img->fd, &st)) {
		r = -errno;
		snprintf(msg, sizeof(msg), "%s: %s", path, strerror(-r));
		goto out;
	}
	if (!write && !leaks && (uint64_t)st.st_size <= (img->next_pcn << img->chunk_shift))
		goto out;	/* nothing to repair: nothing written */
	if (what == COW_REPAIR_ALL) {
		/* every page written back by one checkpoint (a replayed journal with them) */
		memset(img->table_dirty, 1, img->hdr.table_size / UCOW_META_ALIGN);
		memset(img->bm_dirty, 1, img->nr_groups);
		r = jnl_checkpoint(img);
		if (r) {
			snprintf(msg, sizeof(msg), "%s", img->err);
			goto out;
		}
	}
	/* leaks: free chunks that hold data, and the file's tail past the last used chunk */
	alloc_reclaim_unclean(img, (uint64_t)st.st_size);
	said(&did, "%s%llu leaked %s punched out", leaks, leaks == 1 ? "chunk" : "chunks");
	r = cow_close(img);	/* checkpoint, header clean (and not corrupt) */
	img = NULL;
	if (r)
		snprintf(msg, sizeof(msg), "%s: closing the repaired image: %s", path,
			 strerror(-r));
out:
	if (img)
		img_abandon(img);
	if (r && err && errlen)
		snprintf(err, errlen, "%s", msg);
	return r;
}
