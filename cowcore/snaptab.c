/* SPDX-License-Identifier: MIT */
/*
 * Layer 3: the snapshot structures on disk — the snapshot table, the refcount table and the
 * frozen copies of the lookup table — decoded, validated at open (snap_load), listed as
 * metadata extents, read back (frozen_read, frozen_scan), shown read-only (snap_view) and
 * checked against each other (snap_check). The operations that change them (create,
 * delete, apply) are in snapshot.c, one layer step above. Every number read is checked
 * before use; the work is bounded by what the file holds, not by what it claims.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snaptab.h"

#define SBAD(...) do { img_set_err(img, __VA_ARGS__); r = -EUCLEAN; goto out; } while (0)
#define SCAN_BYTES (64u << 10)

static void snap_decode(const uint8_t *b, struct snap *s)
{
	s->id = get_le32(b);
	s->parent = get_le32(b + 4);
	s->date_sec = get_le64(b + 8);
	s->date_nsec = get_le32(b + 16);
	s->name_len = get_le16(b + 20);
	s->vsize = get_le64(b + 24);
	s->table_offset = get_le64(b + 32);
	s->extent_size = get_le64(b + 40);
	memcpy(s->name, b + 64, UCOW_SNAP_NAME_MAX + 1);
}

void snap_encode(const struct snap *s, uint8_t *b)
{
	memset(b, 0, UCOW_SNAP_ENTRY);
	put_le32(b, s->id);
	put_le32(b + 4, s->parent);
	put_le64(b + 8, s->date_sec);
	put_le32(b + 16, s->date_nsec);
	put_le16(b + 20, s->name_len);
	put_le64(b + 24, s->vsize);
	put_le64(b + 32, s->table_offset);
	put_le64(b + 40, s->extent_size);
	memcpy(b + 64, s->name, s->name_len);
	put_le32(b + 252, ucow_crc32c(0, b, UCOW_SNAP_ENTRY));
}

/* Bytes of one frozen copy: table then bitmap. */
uint64_t frozen_bytes(struct cow_image *img)
{
	return img->hdr.table_size + img->hdr.bitmap_size;
}

uint64_t snap_nr(struct cow_image *img, const struct snap *s)
{
	return (s->vsize >> img->chunk_shift) + !!(s->vsize & (img->chunk_size - 1));
}

static int cmp_snap_id(const void *a, const void *b)
{
	const struct snap *x = *(const struct snap *const *)a, *y = *(const struct snap *const *)b;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_snap_name(const void *a, const void *b)
{
	return strcmp((*(const struct snap *const *)a)->name, (*(const struct snap *const *)b)->name);
}

static bool id_present(struct snap *const *by_id, uint32_t n, uint32_t id)
{
	struct snap key = { .id = id }, *k = &key;
	return bsearch(&k, by_id, n, sizeof(*by_id), cmp_snap_id) != NULL;
}

/* Unique ids and names, every parent present: O(n log n), not a comparison of every pair. */
static int check_ids_names(struct cow_image *img)
{
	uint32_t n = img->nb_snaps;
	struct snap **v = malloc(n * sizeof(*v));
	int r = 0;
	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		v[i] = &img->snaps[i];
	qsort(v, n, sizeof(*v), cmp_snap_name);
	for (uint32_t i = 1; i < n; i++)
		if (!strcmp(v[i]->name, v[i - 1]->name))
			SBAD("%s: corrupt image: duplicate snapshot id or name '%s'", img->path,
			     v[i]->name);
	qsort(v, n, sizeof(*v), cmp_snap_id);
	for (uint32_t i = 1; i < n; i++)
		if (v[i]->id == v[i - 1]->id)
			SBAD("%s: corrupt image: duplicate snapshot id or name '%s'", img->path,
			     v[i]->name);
	for (uint32_t i = 0; i < n; i++)
		if (img->snaps[i].parent && !id_present(v, n, img->snaps[i].parent))
			SBAD("%s: corrupt image: snapshot '%s' names a missing parent", img->path,
			     img->snaps[i].name);
	if (img->hdr.parent_snapshot && !id_present(v, n, img->hdr.parent_snapshot))
		SBAD("%s: corrupt image: the current state's parent snapshot is missing",
		     img->path);
out:
	free(v);
	return r;
}

int snap_load(struct cow_image *img, uint64_t file_size)
{
	struct ucow_hdr *h = &img->hdr;
	uint8_t *buf = NULL;
	int r = 0;

	img->snaps_valid = false;
	if (!(h->incompat & UCOW_INCOMPAT_SNAPSHOTS) || !h->nb_snapshots) {
		img->snaps_valid = true;
		return 0;
	}
	buf = meta_zalloc(h->snap_table_size);
	img->snaps = calloc(h->nb_snapshots, sizeof(*img->snaps));
	img->rc_len = h->refcount_size / 4;
	img->rc = calloc(img->rc_len, sizeof(*img->rc));
	if (!buf || !img->snaps || !img->rc) {
		r = -ENOMEM;
		goto out;
	}
	img->nb_snaps = h->nb_snapshots;
	r = io_pread_all(img->fd, buf, h->snap_table_size, h->snap_table_offset);
	if (r)
		goto out;
	for (uint32_t i = 0; i < img->nb_snaps; i++) {
		uint8_t *b = buf + (uint64_t)i * UCOW_SNAP_ENTRY;
		struct snap *s = &img->snaps[i];
		uint32_t crc = get_le32(b + 252);
		put_le32(b + 252, 0);
		if (ucow_crc32c(0, b, UCOW_SNAP_ENTRY) != crc)
			SBAD("%s: corrupt image: snapshot table entry %u: checksum mismatch",
			     img->path, i);
		snap_decode(b, s);
		if (!s->id || !s->name_len || s->name_len > UCOW_SNAP_NAME_MAX ||
		    memchr(s->name, 0, s->name_len) || s->name[s->name_len])
			SBAD("%s: corrupt image: snapshot table entry %u is invalid", img->path, i);
		/* a snapshot may be larger than the current state (taken before a shrink), but
		 * its frozen table has the header's geometry, so its chunks must fit in it */
		if (!s->vsize || s->vsize > UCOW_MAX_VSIZE ||
		    snap_nr(img, s) > h->table_size / 8 ||
		    snap_nr(img, s) > h->bitmap_size / (img->bm_words * 8))
			SBAD("%s: corrupt image: snapshot '%s' has an invalid size", img->path,
			     s->name);
		if (s->table_offset < h->data_offset || s->table_offset % img->chunk_size ||
		    s->extent_size < frozen_bytes(img) || s->extent_size % img->chunk_size ||
		    s->extent_size > 2 * (frozen_bytes(img) + img->chunk_size) ||
		    s->extent_size > file_size || s->table_offset > file_size - s->extent_size)
			SBAD("%s: corrupt image: snapshot '%s' has an invalid table extent",
			     img->path, s->name);
	}
	/* ids and names unique, parents present: sorted once, neighbours compared */
	r = check_ids_names(img);
	if (r)
		goto out;
	img->snaps_valid = true;
	/* through an aligned buffer: the file may be open with O_DIRECT */
	free(buf);
	buf = meta_zalloc(h->refcount_size);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	r = io_pread_all(img->fd, buf, h->refcount_size, h->refcount_offset);
	if (r)
		goto out;
	/* a reference per entry: a pack holds at most chunk_size / 512 compressed streams */
	uint64_t max_rc = (uint64_t)img->nb_snaps *
			  ((h->incompat & UCOW_INCOMPAT_COMPRESSED) ? h->chunk_size >> 9 : 1);
	for (uint64_t p = 0; p < img->rc_len; p++) {
		img->rc[p] = get_le32(buf + p * 4);
		if (img->rc[p] > max_rc || img->rc[p] == UINT32_MAX)
			SBAD("%s: corrupt image: refcount of chunk %llu is %u, more than the %u "
			     "snapshots", img->path, (unsigned long long)p, img->rc[p], img->nb_snaps);
		if (img->rc[p] && (p < img->data_pcn || (p << img->chunk_shift) >= file_size))
			SBAD("%s: corrupt image: refcount set for chunk %llu outside the data area",
			     img->path, (unsigned long long)p);
	}
out:
	free(buf);
	return r;
}

/* Calls fn for every metadata extent in the data area (used-space accounting). */
void snap_extents(struct cow_image *img, void (*fn)(void *, uint64_t, uint64_t), void *arg)
{
	struct ucow_hdr *h = &img->hdr;
	if (h->table_offset >= h->data_offset)
		fn(arg, h->table_offset, h->table_size + h->bitmap_size);
	if (!(h->incompat & UCOW_INCOMPAT_SNAPSHOTS) || !h->nb_snapshots)
		return;
	fn(arg, h->snap_table_offset, h->snap_table_size);
	fn(arg, h->refcount_offset, h->refcount_size);
	for (uint32_t i = 0; i < img->nb_snaps; i++)
		fn(arg, img->snaps[i].table_offset, img->snaps[i].extent_size);
}

/* Read and validate a snapshot's frozen table (+ bitmap pages). */
int frozen_read(struct cow_image *img, const struct snap *s, uint64_t **table,
		       uint64_t **bitmap)
{
	uint64_t *t = meta_zalloc(img->hdr.table_size), *b = NULL;
	int r;
	if (!t || (bitmap && !(b = meta_zalloc(img->hdr.bitmap_size)))) {
		free(t);
		free(b);
		return -ENOMEM;
	}
	r = io_pread_all(img->fd, t, img->hdr.table_size, s->table_offset);
	if (!r && b)
		r = io_pread_all(img->fd, b, img->hdr.bitmap_size, s->table_offset + img->hdr.table_size);
	for (uint64_t c = 0; !r && c < img->hdr.table_size / 8; c++) {
		uint64_t e = t[c] = le64toh(t[c]), p = ent_pcn(img, e);
		if (!ent_ok(img, e) || (e & UCOW_E_SHARED) || ucow_e_under(e) ||
		    (c >= snap_nr(img, s) && e) || (p && !rc_shared(img, p))) {
			r = img_mark_corrupt(img, "%s: corrupt image: snapshot '%s' entry %llu is "
					     "invalid (0x%llx)", img->path, s->name,
					     (unsigned long long)c, (unsigned long long)e);
		}
	}
	for (uint64_t i = 0; !r && b && i < img->hdr.bitmap_size / 8; i++)
		b[i] = le64toh(b[i]);
	if (r) {
		free(t);
		free(b);
		return r;
	}
	*table = t;
	if (bitmap)
		*bitmap = b;
	return 0;
}

/*
 * The non-zero entries of s's frozen table, read only where the file holds data (a hole
 * reads as zero entries): list and check of many snapshots of a large virtual size cost what
 * their tables hold, not their virtual size. Each entry is validated as frozen_read does.
 */
static int scan_frozen(struct cow_image *img, const struct snap *s, bool check_rc,
		       void (*fn)(void *arg, uint64_t c, uint64_t p), void *arg)
{
	uint64_t start = s->table_offset, end = start + img->hdr.table_size, off = start;
	uint64_t *buf = meta_zalloc(SCAN_BYTES);
	int r = 0;
	if (!buf)
		return -ENOMEM;
	while (!r && off < end) {
		off_t d = lseek(img->fd, (off_t)off, SEEK_DATA);
		if (d < 0) {
			if (errno != ENXIO)	/* ENXIO: no data up to the end of the file */
				r = -errno;
			break;
		}
		if ((uint64_t)d >= end)
			break;
		off_t hole = lseek(img->fd, d, SEEK_HOLE);
		uint64_t seg = (uint64_t)d & ~(uint64_t)(UCOW_META_ALIGN - 1);
		uint64_t seg_end = hole < 0 || (uint64_t)hole > end ? end :
			((uint64_t)hole + UCOW_META_ALIGN - 1) & ~(uint64_t)(UCOW_META_ALIGN - 1);
		if (seg < off)
			seg = off;
		if (seg_end > end)
			seg_end = end;
		for (uint64_t o = seg; !r && o < seg_end; o += SCAN_BYTES) {
			uint64_t n = seg_end - o < SCAN_BYTES ? seg_end - o : SCAN_BYTES;
			r = io_pread_all(img->fd, buf, n, o);
			for (uint64_t i = 0; !r && i < n / 8; i++) {
				uint64_t c = (o - start) / 8 + i, e = le64toh(buf[i]);
				uint64_t p = ent_pcn(img, e);
				if (!e)
					continue;
				if (!ent_ok(img, e) || (e & UCOW_E_SHARED) || ucow_e_under(e) ||
				    c >= snap_nr(img, s) ||
				    (p && check_rc && !rc_shared(img, p)) ||
				    (p && !check_rc && (p < img->data_pcn ||
							p >= img->file_pcns)))
					r = img_mark_corrupt(img, "%s: corrupt image: snapshot '%s' "
							     "entry %llu is invalid (0x%llx)",
							     img->path, s->name,
							     (unsigned long long)c,
							     (unsigned long long)e);
				else if (p)
					fn(arg, c, p);
			}
		}
		off = seg_end > off ? seg_end : off + UCOW_META_ALIGN;
	}
	free(buf);
	return r;
}

int frozen_scan(struct cow_image *img, const struct snap *s,
		void (*fn)(void *arg, uint64_t c, uint64_t p), void *arg)
{
	return scan_frozen(img, s, true, fn, arg);
}

struct snap *snap_find(struct cow_image *img, const char *key)
{
	for (uint32_t i = 0; i < img->nb_snaps; i++)
		if (!strcmp(img->snaps[i].name, key))
			return &img->snaps[i];
	char *end;
	unsigned long id = strtoul(key, &end, 10);
	if (*key && !*end)
		for (uint32_t i = 0; i < img->nb_snaps; i++)
			if (img->snaps[i].id == id)
				return &img->snaps[i];
	return NULL;
}

struct count_scan {
	struct cow_image *img;
	uint32_t *count;
	uint64_t len;
};

static void count_ref(void *arg, uint64_t c, uint64_t p)
{
	struct count_scan *cs = arg;
	(void)c;
	if (p < cs->len)
		cs->count[p]++;
}

/*
 * check -r: the references the frozen tables make, counted without trusting the stored
 * refcounts (count has len entries; references at len or beyond are not counted). A
 * frozen table with an invalid entry fails (-EUCLEAN, img->err names it).
 */
int snap_count_refs(struct cow_image *img, uint32_t *count, uint64_t len)
{
	struct count_scan cs = { img, count, len };
	int r = 0;
	for (uint32_t i = 0; i < img->nb_snaps && !r; i++)
		r = scan_frozen(img, &img->snaps[i], false, count_ref, &cs);
	return r;
}

/* check: the stored refcounts must equal the references the frozen tables make. */
void snap_check(struct cow_image *img, struct cow_check_result *cr)
{
	uint32_t *count;
	if (!img->nb_snaps)
		return;
	count = calloc(img->rc_len, sizeof(*count));
	if (!count)
		return;
	struct count_scan cs = { img, count, img->rc_len };
	for (uint32_t i = 0; i < img->nb_snaps; i++)
		if (frozen_scan(img, &img->snaps[i], count_ref, &cs) && !cr->corruptions++)
			snprintf(cr->first_problem, COW_ERRLEN, "%s", img->err);
	for (uint64_t p = 0; p < img->rc_len; p++)
		if (count[p] != img->rc[p] && !cr->corruptions++)
			snprintf(cr->first_problem, COW_ERRLEN,
				 "refcount of chunk %llu is %u but snapshots reference it %u times",
				 (unsigned long long)p, img->rc[p], count[p]);
	free(count);
}
