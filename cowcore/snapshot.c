/* SPDX-License-Identifier: MIT */
/*
 * Internal snapshots, FVD style: the refcount table counts only snapshot references and is
 * written only here — at create, apply and delete — never on the I/O path. The current
 * state is the lookup table + journal alone; an entry whose chunk a snapshot references is
 * SHARED (derived from the refcounts), and the write path copies such a chunk before
 * changing it (engine.c) without touching any refcount.
 *
 * DESIGN NOTES — every operation is crash-safe the same way:
 *   S1. checkpoint first, so the table on disk equals the table in memory;
 *   S2. write every new structure (frozen table, refcount table, snapshot table, new current
 *       table) into freshly allocated chunks at the end of the file, never over live ones;
 *   S3. fdatasync, then switch with ONE header write (the other header slot), fdatasync;
 *   S4. only then free what the old header referenced: small metadata extents are punched
 *       and join the free list at once; the chunks of data no one references any more are
 *       queued as runs (img->reclaim) and punched after the operation (cow_reclaim), so a
 *       served image's queues are paused only for the switch, not for the punching.
 * A crash before S3 leaves the old header: the new chunks are unreferenced and free at the
 * next open. A crash after S3 leaves chunks that S4 did not free: also free at next open,
 * because free space is computed (current table + refcount > 0 + metadata extents).
 *
 * Create, delete and apply need no request in flight on the image (the server pauses its
 * queues). List may run alongside I/O: it reads the current table under img->lock, and every
 * table update is made under that lock (engine.c).
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "qcow2.h"
#include "compress.h"
#include "snapshot.h"

/* Tables are written through buffers of at most this size. */
#define WRITE_PIECE	(1u << 20)

static uint64_t chunks_for(struct cow_image *img, uint64_t bytes)
{
	return (bytes + img->chunk_size - 1) >> img->chunk_shift;
}

/* Allocate n contiguous chunks at the end of the file. Under lock. */
int snap_alloc_extent(struct cow_image *img, uint64_t n, uint64_t *off)
{
	uint64_t p = img->next_pcn;
	int r = img_grow_file(img, p + n - 1);
	if (r)
		return r;
	img->next_pcn += n;
	*off = p << img->chunk_shift;
	return 0;
}

/* Punch an extent and give its chunks to the free list. Under lock, after the switch. */
void snap_free_extent(struct cow_image *img, uint64_t off, uint64_t size)
{
	if (!size)
		return;
	if (off < img->hdr.data_offset) {	/* a fixed region before the data area */
		img_punch(img, off, size);
		return;
	}
	uint64_t n = chunks_for(img, size);
	img_punch(img, off, n << img->chunk_shift);
	for (uint64_t i = 0; i < n; i++)
		alloc_release(img, (off >> img->chunk_shift) + i);
}

/* Chunks to free after a switch: collected, then punched in runs (one call per run of
 * adjacent chunks, not one per chunk: an apply on a 4 GiB image frees thousands). */
void freeset_add(struct freeset *fs, uint64_t p)
{
	if (ARRAY_ROOM(fs->v, fs->cap, fs->n))
		return;		/* not freed now: free again at the next open */
	fs->v[fs->n++] = p;
}

void freeset_add_unshared(struct freeset *fs, struct cow_image *img, const uint64_t *table,
			  uint64_t n, bool packs)
{
	for (uint64_t c = 0; c < n; c++) {
		uint64_t p = ent_pcn(img, table[c]);
		if (p && !rc_shared(img, p) && (packs || !(table[c] & UCOW_E_COMPRESSED)))
			freeset_add(fs, p);	/* a pack of several: more than once, see
						 * freeset_reclaim */
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Queue one run for cow_reclaim; false if out of memory. Under lock. */
static bool reclaim_add(struct cow_image *img, uint64_t pcn, uint64_t n)
{
	if (ARRAY_ROOM(img->reclaim, img->reclaim_cap, img->nreclaim))
		return false;
	img->reclaim[img->nreclaim++] = (struct reclaim_run){ .pcn = pcn, .n = n };
	return true;
}

void freeset_reclaim(struct cow_image *img, struct freeset *fs)
{
	if (!fs->n)
		return;
	qsort(fs->v, fs->n, sizeof(*fs->v), cmp_u64);
	size_t k = 0;		/* a pack added once per compressed entry: once */
	for (size_t i = 0; i < fs->n; i++)
		if (!k || fs->v[i] != fs->v[k - 1])
			fs->v[k++] = fs->v[i];
	fs->n = k;
	for (size_t i = 0; i < fs->n;) {
		size_t j = i + 1;
		while (j < fs->n && fs->v[j] == fs->v[j - 1] + 1)
			j++;
		if (!reclaim_add(img, fs->v[i], j - i))
			snap_free_extent(img, fs->v[i] << img->chunk_shift, (j - i) << img->chunk_shift);
		i = j;
	}
	free(fs->v);
	fs->v = NULL;
	fs->n = fs->cap = 0;
}

int cow_reclaim(struct cow_image *img, uint64_t max_bytes)
{
	uint64_t done = 0;
	int r = 0;

	for (;;) {
		pthread_mutex_lock(&img->lock);
		if (!img->nreclaim || (max_bytes && done >= max_bytes)) {
			int left = img->nreclaim != 0;
			pthread_mutex_unlock(&img->lock);
			return r ? r : left;
		}
		/* the tail of the last run: at most what is left of the budget */
		struct reclaim_run *run = &img->reclaim[img->nreclaim - 1];
		uint64_t n = run->n;
		if (max_bytes) {
			uint64_t budget = ((max_bytes - done) + img->chunk_size - 1) >> img->chunk_shift;
			if (n > budget)
				n = budget;
		}
		uint64_t p = run->pcn + run->n - n;
		run->n -= n;
		if (!run->n)
			img->nreclaim--;
		pthread_mutex_unlock(&img->lock);
		/* nothing maps these chunks and they are on no free list: no I/O touches them */
		int pr = img_punch(img, p << img->chunk_shift, n << img->chunk_shift);
		if (pr && !r)
			r = pr;
		pthread_mutex_lock(&img->lock);
		for (uint64_t i = 0; i < n; i++)
			alloc_release(img, p + i);
		pthread_mutex_unlock(&img->lock);
		done += n << img->chunk_shift;
	}
}

/* ---- writing the new structures --------------------------------------------------------- */

int snap_write_snap_table(struct cow_image *img, const struct snap *snaps, uint32_t n,
			  uint64_t *off, uint64_t *size)
{
	uint64_t bytes = (uint64_t)n * UCOW_SNAP_ENTRY;
	uint8_t *buf;
	int r;
	if (!n) {
		*off = *size = 0;
		return 0;
	}
	*size = chunks_for(img, bytes) << img->chunk_shift;
	buf = meta_zalloc(bytes);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		snap_encode(&snaps[i], buf + (uint64_t)i * UCOW_SNAP_ENTRY);
	r = snap_alloc_extent(img, *size >> img->chunk_shift, off);
	if (!r && (r = img_meta_write(img, buf, (bytes + UCOW_META_ALIGN - 1) &
				      ~(uint64_t)(UCOW_META_ALIGN - 1), *off)))
		snap_free_extent(img, *off, *size);	/* nothing references it yet */
	free(buf);
	return r;
}

/* The refcount table covers every chunk up to the end of the allocation, itself included. */
static int write_rc(struct cow_image *img, uint32_t **rcp, uint64_t *rc_len, uint64_t *off,
		    uint64_t *size)
{
	uint64_t len = img->next_pcn + 1;
	uint64_t n = chunks_for(img, len * 4);
	len = img->next_pcn + n;		/* the table's own chunks */
	n = chunks_for(img, len * 4);
	if (n << img->chunk_shift > UCOW_MAX_REFCOUNT) {
		img_set_err(img, "%s: too many physical chunks (%llu) for a refcount table",
			    img->path, (unsigned long long)len);
		return -EFBIG;
	}
	uint32_t *rc = *rcp;
	if (len > *rc_len) {
		uint32_t *g = realloc(rc, len * sizeof(*g));
		if (!g)
			return -ENOMEM;
		memset(g + *rc_len, 0, (len - *rc_len) * sizeof(*g));
		*rcp = rc = g;
		*rc_len = len;
	}
	*size = n << img->chunk_shift;
	uint64_t piece = *size < WRITE_PIECE ? *size : WRITE_PIECE;
	uint8_t *buf = meta_zalloc(piece);
	int r;
	if (!buf)
		return -ENOMEM;
	r = snap_alloc_extent(img, n, off);
	for (uint64_t o = 0; !r && o < *size; o += piece) {
		uint64_t l = *size - o < piece ? *size - o : piece;
		memset(buf, 0, l);
		for (uint64_t p = o / 4; p < *rc_len && p < (o + l) / 4; p++)
			put_le32(buf + (p * 4 - o), rc[p]);
		r = img_meta_write(img, buf, l, *off + o);
	}
	free(buf);
	return r;
}

int snap_write_tables(struct cow_image *img, const uint64_t *table, uint64_t nent,
		      uint64_t *const *groups, uint64_t ngroups, uint64_t ts, uint64_t bs,
		      uint64_t *off, uint64_t *size)
{
	/* through one buffer of at most WRITE_PIECE: a 1 TiB image's 8 MiB table is not
	 * copied whole (its bitmap holes are left unwritten: they read as zeros) */
	uint64_t piece = ts < WRITE_PIECE ? ts : WRITE_PIECE;
	uint64_t *buf = meta_zalloc(piece);
	int r;
	if (!buf)
		return -ENOMEM;
	*size = chunks_for(img, ts + bs) << img->chunk_shift;
	r = snap_alloc_extent(img, *size >> img->chunk_shift, off);
	if (r)
		goto out;
	for (uint64_t o = 0; !r && o < ts; o += piece) {
		uint64_t n = ts - o < piece ? ts - o : piece;
		for (uint64_t i = 0; i < n / 8; i++) {
			uint64_t c = o / 8 + i;
			buf[i] = htole64(c < nent ? __atomic_load_n(&table[c], __ATOMIC_RELAXED) &
					 ~(UCOW_E_BUSY | UCOW_E_SHARED) : 0);
		}
		r = img_meta_write(img, buf, n, *off + o);
	}
	/* bitmap pages: runs of present groups, one write per run of up to a piece; an absent
	 * group is a hole, which reads as zeros */
	uint64_t per = piece / UCOW_META_ALIGN, g0 = 0, n = 0;
	if (ngroups > bs / UCOW_META_ALIGN)
		ngroups = bs / UCOW_META_ALIGN;
	for (uint64_t g = 0; !r && g <= ngroups; g++) {
		bool take = g < ngroups && groups[g];
		if (!take || !n || g0 + n != g || n == per) {
			if (n)
				r = img_meta_write(img, buf, n * UCOW_META_ALIGN,
						   *off + ts + g0 * UCOW_META_ALIGN);
			g0 = g;
			n = 0;
			if (!take || r)
				continue;
		}
		uint64_t *dst = buf + n * (UCOW_META_ALIGN / 8);
		for (unsigned i = 0; i < UCOW_META_ALIGN / 8; i++)
			dst[i] = htole64(groups[g][i]);
		n++;
	}
	if (r)
		snap_free_extent(img, *off, *size);	/* nothing references it yet */
out:
	free(buf);
	return r;
}

/* A copy of the current table + bitmaps (create) in the header's geometry. */
static int write_frozen(struct cow_image *img, const uint64_t *table, uint64_t *const *groups,
			uint64_t *off, uint64_t *size)
{
	return snap_write_tables(img, table, img->nr_chunks, groups, img->nr_groups,
				 img->hdr.table_size, img->hdr.bitmap_size, off, size);
}

/* S3: sync, switch the header, sync. */
int snap_switch_header(struct cow_image *img, struct ucow_hdr *nh)
{
	/* snapshot structures, or a current table that an apply moved into the data area */
	if (nh->nb_snapshots || nh->table_offset >= nh->data_offset)
		nh->incompat |= UCOW_INCOMPAT_SNAPSHOTS;
	else
		nh->incompat &= ~UCOW_INCOMPAT_SNAPSHOTS;
	return jnl_switch_header(img, nh);
}

static int check_writable(struct cow_image *img)
{
	if (img->fmt != COW_FMT_UCOW) {
		img_set_err(img, "%s: snapshots need a ucow image", img->path);
		return -ENOTSUP;
	}
	if (img->read_only) {
		img_set_err(img, "%s: image is open read-only%s", img->path,
			    img->corrupt ? " (it is marked corrupt)" : "");
		return -EROFS;
	}
	return 0;
}

/* Recompute the in-memory SHARED marks from the refcounts. */
void snap_mark_shared(struct cow_image *img)
{
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t e = img->table[c], p = ent_pcn(img, e);
		uint64_t ne = rc_shared(img, p) || (e & UCOW_E_COMPRESSED) ?	/* C1 */
			      e | UCOW_E_SHARED : e & ~UCOW_E_SHARED;
		if (ne != e)
			__atomic_store_n(&img->table[c], ne, __ATOMIC_RELEASE);
	}
}

/* After a switch: the new snapshot and refcount tables become the image's (the caller's
 * pointers are taken, or left to the caller to free when there are no snapshots left). */
static void install_snaps(struct cow_image *img, struct snap **snaps, uint32_t n,
			  uint32_t **rc, uint64_t rc_len)
{
	free(img->snaps);
	free(img->rc);
	img->snaps = NULL;
	img->rc = NULL;
	img->rc_len = 0;
	if (n) {
		img->snaps = *snaps;
		img->rc = *rc;
		img->rc_len = rc_len;
		*snaps = NULL;
		*rc = NULL;
	}
	img->nb_snaps = n;
	under_forget(img);	/* the parent may have changed (and then nothing uses it) */
	snap_mark_shared(img);
}

/* ---- create ------------------------------------------------------------------------------ */

int cow_snapshot_create(struct cow_image *img, const char *name)
{
	struct snap *snaps = NULL;
	uint32_t *rc = NULL;
	uint64_t rc_len = img->rc_len;
	struct ucow_hdr nh;
	struct timespec ts;
	int r = check_writable(img);
	if (r)
		return r;
	size_t nlen = strlen(name);
	if (!nlen || nlen > UCOW_SNAP_NAME_MAX) {
		img_set_err(img, "%s: snapshot name must be 1 to %d bytes", img->path,
			    UCOW_SNAP_NAME_MAX);
		return -EINVAL;
	}
	pthread_mutex_lock(&img->lock);
	if (snap_find(img, name)) {
		img_set_err(img, "%s: a snapshot named '%s' exists already", img->path, name);
		r = -EEXIST;
		goto out;
	}
	if (img->nb_snaps >= UCOW_MAX_SNAPSHOTS) {
		img_set_err(img, "%s: too many snapshots (at most %d)", img->path,
			    UCOW_MAX_SNAPSHOTS);
		r = -ENOSPC;
		goto out;
	}
	r = snap_fold_all(img);			/* U3: the new snapshot becomes the parent */
	if (!r)
		r = jnl_checkpoint_all(img);					/* S1 */
	if (r)
		goto out;
	snaps = calloc(img->nb_snaps + 1, sizeof(*snaps));
	rc = calloc(rc_len ? rc_len : 1, sizeof(*rc));
	if (!snaps || !rc) {
		r = -ENOMEM;
		goto out;
	}
	if (img->nb_snaps)
		memcpy(snaps, img->snaps, img->nb_snaps * sizeof(*snaps));
	if (rc_len)
		memcpy(rc, img->rc, rc_len * sizeof(*rc));
	struct snap *s = &snaps[img->nb_snaps];
	uint32_t maxid = 0;
	for (uint32_t i = 0; i < img->nb_snaps; i++)
		if (snaps[i].id > maxid)
			maxid = snaps[i].id;
	clock_gettime(CLOCK_REALTIME, &ts);
	s->id = maxid + 1;
	s->parent = img->hdr.parent_snapshot;
	s->date_sec = ts.tv_sec;
	s->date_nsec = ts.tv_nsec;
	s->name_len = nlen;
	memcpy(s->name, name, nlen + 1);
	s->vsize = img->vsize;
	r = write_frozen(img, img->table, img->bm_groups, &s->table_offset, &s->extent_size);	/* S2 */
	if (r)
		goto out;
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t p = ent_pcn(img, img->table[c]);
		if (!p)
			continue;
		if (p < rc_len && rc[p] >= UINT32_MAX - 1) {
			img_set_err(img, "%s: chunk %llu has too many references for a snapshot",
				    img->path, (unsigned long long)p);
			r = -EOVERFLOW;
			goto out;
		}
		if (p >= rc_len) {
			uint64_t nl = p + 1 + p / 4;
			uint32_t *g = realloc(rc, nl * sizeof(*g));
			if (!g) {
				r = -ENOMEM;
				goto out;
			}
			memset(g + rc_len, 0, (nl - rc_len) * sizeof(*g));
			rc = g;
			rc_len = nl;
		}
		rc[p]++;
	}
	nh = img->hdr;
	nh.nb_snapshots = img->nb_snaps + 1;
	nh.parent_snapshot = s->id;
	nh.incompat |= UCOW_INCOMPAT_SNAPSHOTS | UCOW_INCOMPAT_UNDERLAY;	/* U4 */
	r = snap_write_snap_table(img, snaps, nh.nb_snapshots, &nh.snap_table_offset, &nh.snap_table_size);
	if (!r)
		r = write_rc(img, &rc, &rc_len, &nh.refcount_offset, &nh.refcount_size);
	struct ucow_hdr oh = img->hdr;
	if (!r)
		r = snap_switch_header(img, &nh);				/* S3 */
	if (r)
		goto out;
	snap_free_extent(img, oh.snap_table_offset, oh.snap_table_size);	/* S4 */
	snap_free_extent(img, oh.refcount_offset, oh.refcount_size);
	install_snaps(img, &snaps, img->nb_snaps + 1, &rc, rc_len);
out:
	pthread_mutex_unlock(&img->lock);
	free(snaps);
	free(rc);
	return r;
}

/* The physical chunks the current table maps, sorted: O(table), whatever their numbers. */
struct curmap {
	uint64_t *p;
	size_t n;
};

static bool current_map(struct cow_image *img, struct curmap *m)
{
	m->n = 0;
	m->p = malloc((img->nr_chunks ? img->nr_chunks : 1) * sizeof(*m->p));
	if (!m->p)
		return false;
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t p = ent_pcn(img, img->table[c]);
		if (p)
			m->p[m->n++] = p;
	}
	qsort(m->p, m->n, sizeof(*m->p), cmp_u64);
	return true;
}

static bool in_map(const struct curmap *m, uint64_t p)
{
	return m->p && bsearch(&p, m->p, m->n, sizeof(*m->p), cmp_u64);
}

/*
 * The start of delete and apply (under lock): find the snapshot, checkpoint (S1), read its
 * frozen table (t not NULL) and bitmap (b not NULL).
 */
static int begin_on_snapshot(struct cow_image *img, const char *key, struct snap **s,
			     uint64_t **t, uint64_t **b)
{
	int r;
	*s = snap_find(img, key);
	if (!*s) {
		img_set_err(img, "%s: no snapshot '%s'", img->path, key);
		return -ENOENT;
	}
	/* U3: the parent's frozen copy holds the underlays; apply drops them with the state */
	r = !t && (*s)->id == img->hdr.parent_snapshot ? snap_fold_all(img) : 0;
	if (!r)
		r = jnl_checkpoint_all(img);
	return r || !t ? r : frozen_read(img, *s, t, b);
}

/* ---- delete ------------------------------------------------------------------------------ */

/* The passes of delete over the snapshot's frozen table, read in pieces (frozen_scan):
 * a 1 TiB image's 8 MiB table is never in memory whole. */
struct del_scan {
	uint32_t *rc;
	struct freeset *fs;
	int pass;
};

static void del_visit(void *arg, uint64_t c, uint64_t p)
{
	struct del_scan *d = arg;
	(void)c;
	if (!p)
		return;
	if (d->pass == 0 && d->rc[p])
		d->rc[p]--;		/* frozen_scan checked rc[p] > 0 (per entry: a pack's
					 * count was checked once, hence the test) */
	else if (d->pass == 1 && !d->rc[p])
		d->rc[p] = UINT32_MAX;	/* no reference left: freed unless mapped now */
	else if (d->pass == 2 && d->rc[p] == UINT32_MAX)
		freeset_add(d->fs, p);	/* a pack more than once: freeset_reclaim */
}

int cow_snapshot_delete(struct cow_image *img, const char *key)
{
	struct snap *snaps = NULL, *s;
	uint32_t *rc = NULL;
	uint64_t rc_len = img->rc_len;
	struct ucow_hdr nh, oh;
	uint32_t n = 0;
	int r = check_writable(img);
	if (r)
		return r;
	pthread_mutex_lock(&img->lock);
	r = begin_on_snapshot(img, key, &s, NULL, NULL);		/* S1 */
	if (r)
		goto out;
	snaps = calloc(img->nb_snaps, sizeof(*snaps));
	rc = malloc(rc_len * sizeof(*rc));
	if (!snaps || !rc) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(rc, img->rc, rc_len * sizeof(*rc));
	/* the snapshot's own chunks: it may be larger than the current state */
	struct freeset fs = { 0 };
	struct del_scan ds = { .rc = rc, .fs = &fs, .pass = 0 };
	r = frozen_scan(img, s, del_visit, &ds);
	if (r)
		goto out;
	for (uint32_t i = 0; i < img->nb_snaps; i++) {
		if (&img->snaps[i] == s)
			continue;
		snaps[n] = img->snaps[i];
		if (snaps[n].parent == s->id)	/* children move up to the grandparent */
			snaps[n].parent = s->parent;
		n++;
	}
	nh = img->hdr;
	nh.nb_snapshots = n;
	if (nh.parent_snapshot == s->id)
		nh.parent_snapshot = s->parent;
	if (n) {
		r = snap_write_snap_table(img, snaps, n, &nh.snap_table_offset, &nh.snap_table_size);
		if (!r)
			r = write_rc(img, &rc, &rc_len, &nh.refcount_offset, &nh.refcount_size);
	} else {
		nh.snap_table_offset = nh.snap_table_size = 0;
		nh.refcount_offset = nh.refcount_size = 0;
		nh.parent_snapshot = 0;
		nh.incompat &= ~UCOW_INCOMPAT_UNDERLAY;	/* no parent: no UNDER entry (U3) */
	}
	oh = img->hdr;
	if (!r)
		r = snap_switch_header(img, &nh);				/* S3 */
	if (r)
		goto out;
	/* S4: old tables, the frozen copy, and chunks nobody references any more: marked,
	 * unmarked where the current table maps them, the rest freed (no sorted copy of the
	 * current table). A frozen table that cannot be read again now leaves its chunks
	 * unfreed until the next open, which computes free space afresh. */
	comp_forget(img);		/* C4: a pack may be among them */
	ds.rc = rc;			/* write_rc may have moved it */
	ds.pass = 1;
	bool marked = !frozen_scan(img, s, del_visit, &ds);
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t p = ent_pcn(img, img->table[c]);
		if (p && p < rc_len && rc[p] == UINT32_MAX)
			rc[p] = 0;
	}
	ds.pass = 2;
	if (marked && !frozen_scan(img, s, del_visit, &ds))
		freeset_reclaim(img, &fs);
	free(fs.v);
	for (uint64_t p = 0; p < rc_len; p++)
		if (rc[p] == UINT32_MAX)
			rc[p] = 0;
	snap_free_extent(img, oh.snap_table_offset, oh.snap_table_size);
	snap_free_extent(img, oh.refcount_offset, oh.refcount_size);
	snap_free_extent(img, s->table_offset, s->extent_size);
	install_snaps(img, &snaps, n, &rc, rc_len);
out:
	pthread_mutex_unlock(&img->lock);
	free(snaps);
	free(rc);
	return r;
}

/* ---- apply ------------------------------------------------------------------------------- */

/*
 * In-memory arrays holding a frozen copy (t: table_size bytes, as frozen_read gives it; the
 * bitmap pages read here, in pieces, a page only for a group that is not all zeros) as the
 * current state of a disk of snapshot s's size; t is taken over on success. Built aside, so
 * that nothing can fail once the header is switched.
 */
static int frozen_set(struct cow_image *img, const struct snap *s, uint64_t *t,
		      struct meta_set *m)
{
	const uint64_t per = WRITE_PIECE / UCOW_META_ALIGN;
	uint64_t *buf = NULL;
	int r = meta_set_alloc(img, snap_nr(img, s), img->hdr.table_size, false, m);
	if (!r && !(buf = meta_zalloc(WRITE_PIECE)))
		r = -ENOMEM;
	for (uint64_t g0 = 0; !r && g0 < m->nr_groups; g0 += per) {
		uint64_t n = m->nr_groups - g0 < per ? m->nr_groups - g0 : per;
		r = io_pread_all(img->fd, buf, n * UCOW_META_ALIGN, s->table_offset +
				 img->hdr.table_size + g0 * UCOW_META_ALIGN);
		for (uint64_t k = 0; !r && k < n; k++) {
			const uint64_t *src = buf + k * (UCOW_META_ALIGN / 8);
			unsigned w = 0;
			while (w < UCOW_META_ALIGN / 8 && !src[w])
				w++;
			if (w == UCOW_META_ALIGN / 8)
				continue;	/* all zeros: no page */
			if (!(m->bm_groups[g0 + k] = meta_bm_page())) {
				r = -ENOMEM;
				break;
			}
			for (unsigned i = 0; i < UCOW_META_ALIGN / 8; i++)
				m->bm_groups[g0 + k][i] = le64toh(src[i]);
		}
	}
	free(buf);
	if (r) {
		meta_set_free(m);
		return r;
	}
	m->table = t;
	return 0;
}

/*
 * Apply: the snapshot's frozen copy becomes the current table, in a new extent, and the
 * image takes the snapshot's virtual size (a snapshot taken before a resize keeps the size
 * it had; its frozen copy has the header's geometry, so the table extent stays as large).
 */
int cow_snapshot_apply(struct cow_image *img, const char *key)
{
	struct snap *s;
	uint64_t *t = NULL;
	struct ucow_hdr nh, oh;
	struct meta_set m = { 0 };
	uint64_t off, size;
	int r = check_writable(img);
	if (r)
		return r;
	pthread_mutex_lock(&img->lock);
	r = begin_on_snapshot(img, key, &s, &t, NULL);		/* S1 */
	if (r)
		goto out;
	/* S2: the snapshot's table becomes the current table, in a new extent */
	r = frozen_set(img, s, t, &m);
	if (!r)
		r = snap_write_tables(img, t, img->hdr.table_size / 8, m.bm_groups, m.nr_groups,
				      img->hdr.table_size, img->hdr.bitmap_size, &off, &size);
	if (r) {
		m.table = NULL;		/* still t */
		goto out;
	}
	t = NULL;		/* m's now */
	nh = img->hdr;
	nh.virtual_size = s->vsize;
	nh.nr_chunks = m.nr_chunks;
	nh.table_offset = off;
	nh.bitmap_offset = off + img->hdr.table_size;
	nh.parent_snapshot = s->id;
	nh.journal_seq = jnl_fresh_seq(img);	/* the journal describes the old table */
	nh.incompat &= ~UCOW_INCOMPAT_JRING;
	oh = img->hdr;
	r = snap_switch_header(img, &nh);				/* S3 */
	if (r)
		goto out;
	jnl_restarted(img, nh.journal_seq);
	/* S4: the new arrays in; chunks of the old state that no snapshot references */
	meta_set_swap(img, &m, s->vsize);
	under_forget(img);	/* a new parent; the old state's UNDER entries are gone */
	if (oh.table_offset != img->hdr.table_offset)
		snap_free_extent(img, oh.table_offset, oh.table_offset >= oh.data_offset ?
			    oh.table_size + oh.bitmap_size : oh.table_size);
	if (oh.bitmap_offset < oh.data_offset)
		snap_free_extent(img, oh.bitmap_offset, oh.bitmap_size);
	struct freeset fs = { 0 };
	comp_forget(img);		/* C4: a pack may be among them */
	freeset_add_unshared(&fs, img, m.table, m.nr_chunks, true);	/* m: the old arrays now */
	freeset_reclaim(img, &fs);
	snap_mark_shared(img);
out:
	pthread_mutex_unlock(&img->lock);
	meta_set_free(&m);
	free(t);
	return r;
}

/* ---- list and views ---------------------------------------------------------------------- */

struct usage_scan {
	struct cow_image *img;
	const struct curmap *cur;
	uint64_t bytes;
};

static void usage_add(void *arg, uint64_t c, uint64_t p)
{
	struct usage_scan *us = arg;
	(void)c;
	if (us->img->rc[p] == 1 && !in_map(us->cur, p))
		us->bytes += us->img->chunk_size;
}

/* Fold up to max UNDER chunks from *cursor (under_fold), commit (durable: checkpoint too),
 * then queue their old chunks for cow_reclaim (punched, then free). Under lock. */
static int fold_some(struct cow_image *img, uint64_t *cursor, uint32_t max, bool checkpoint,
		     uint32_t *n)
{
	struct freeset fs = { 0 };
	uint64_t *old = malloc((max < 1024 ? max : 1024) * sizeof(*old));
	int r = old ? under_fold(img, cursor, max, n, old) : -ENOMEM;
	int c = *n ? jnl_commit_all(img) : 0;
	/* the old chunks are free once no durable record can map them any more (a failed
	 * commit leaves them allocated: a leak that check reports and check -r repairs) */
	for (uint32_t i = 0; !c && i < *n; i++)
		if (old[i])
			freeset_add(&fs, old[i]);
	freeset_reclaim(img, &fs);
	free(old);
	if (!c && *n && checkpoint)
		c = jnl_checkpoint(img);
	return r ? r : c;
}

int snap_fold_all(struct cow_image *img)
{
	uint64_t c = 0;
	uint32_t n;
	int r = 0;
	if (!under_any(img))
		return 0;
	while (!r && c < img->nr_chunks)	/* a checkpoint per batch bounds the records */
		r = fold_some(img, &c, 1024, true, &n);
	return r;
}

int cow_fold(struct cow_image *img, uint64_t *cursor, uint32_t max_chunks, bool *pass_done)
{
	uint32_t n = 0;
	int r = 0;
	*pass_done = true;
	if (img->fmt != COW_FMT_UCOW || img->read_only) {
		*cursor = 0;
		return 0;
	}
	pthread_mutex_lock(&img->lock);
	if (*cursor < img->nr_chunks)	/* (a resize may have shrunk the table since) */
		r = fold_some(img, cursor, max_chunks ? max_chunks : 1024, false, &n);
	else
		*cursor = img->nr_chunks;
	if (!r && *cursor < img->nr_chunks)
		*pass_done = false;
	else if (!r)
		*cursor = 0;
	pthread_mutex_unlock(&img->lock);
	return r ? r : (int)n;
}

uint64_t cow_underlays_made(struct cow_image *img)
{
	pthread_mutex_lock(&img->lock);
	uint64_t n = img->under_made;
	pthread_mutex_unlock(&img->lock);
	return n;
}

int cow_snapshot_list(struct cow_image *img, struct cow_snap_info **out, uint32_t *n)
{
	struct cow_snap_info *v = NULL;
	struct snap *snaps = NULL;
	struct curmap cur = { 0 };
	uint32_t ns, parent;
	int r = 0;
	*n = 0;
	*out = NULL;
	if (img->fmt == COW_FMT_QCOW2)
		return qcow2_snapshot_list(img, out, n);
	/*
	 * Under the lock only what I/O changes: the current table's mapped chunks and a copy of
	 * the snapshot entries. The frozen tables are read after it (they never change while
	 * their snapshot exists, and create, delete and apply run with no request in flight),
	 * so a list of many snapshots does not hold up the writers while it reads the file.
	 */
	pthread_mutex_lock(&img->lock);
	ns = img->nb_snaps;
	parent = img->hdr.parent_snapshot;
	if (ns && (!(snaps = malloc(ns * sizeof(*snaps))) || !current_map(img, &cur)))
		r = -ENOMEM;
	else if (ns)
		memcpy(snaps, img->snaps, ns * sizeof(*snaps));
	pthread_mutex_unlock(&img->lock);
	if (!r && ns && !(v = calloc(ns, sizeof(*v))))
		r = -ENOMEM;
	for (uint32_t i = 0; i < ns && !r; i++) {
		const struct snap *s = &snaps[i];
		struct usage_scan us = { img, &cur, 0 };
		v[i].id = s->id;
		v[i].parent = s->parent;
		v[i].date_sec = s->date_sec;
		v[i].date_nsec = s->date_nsec;
		v[i].virtual_size = s->vsize;
		v[i].current_parent = s->id == parent;
		snprintf(v[i].name, sizeof(v[i].name), "%s", s->name);
		/* disk usage: what deleting it would free (chunks only it references) */
		r = frozen_scan(img, s, usage_add, &us);
		v[i].disk_usage = us.bytes + frozen_bytes(img);	/* + its frozen table, bitmap */
	}
	free(cur.p);
	free(snaps);
	if (r) {
		free(v);
		return r;
	}
	*out = v;
	*n = ns;
	return 0;
}

/* A read-only view of a snapshot: the image's tables replaced by the frozen ones. */
int snap_view(struct cow_image *img, const char *key, char *err)
{
	struct snap *s = snap_find(img, key);
	uint64_t *t = NULL;
	int r;
	if (!s) {
		snprintf(err, COW_ERRLEN, "%s: no snapshot '%s'", img->path, key);
		return -ENOENT;
	}
	struct meta_set m;
	r = frozen_read(img, s, &t, NULL);
	if (!r && (r = frozen_set(img, s, t, &m)))
		free(t);
	if (r) {
		snprintf(err, COW_ERRLEN, "%s", img->err[0] ? img->err : strerror(-r));
		return r;
	}
	meta_set_swap(img, &m, s->vsize);
	under_forget(img);	/* a new parent; the old state's UNDER entries are gone */	/* the snapshot's size, with its chunks */
	meta_set_free(&m);
	snap_mark_shared(img);
	return 0;
}
