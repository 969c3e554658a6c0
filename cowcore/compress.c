/* SPDX-License-Identifier: MIT */
/*
 * Compressed chunks (Documentation/format.md, "Compressed chunks").
 *
 * DESIGN NOTES
 * A compressed chunk is one raw deflate stream of the whole chunk, stored in whole 512-byte
 * sectors inside a physical chunk, the "pack", which holds the streams of several chunks
 * one after another. Streams come only from cow_put_compressed (ucow convert -c); nothing
 * writes into a stream afterwards:
 *   C1. In memory a compressed entry always carries SHARED, so every write path treats it as
 *       a chunk it must not change or free: the first write into it copies the chunk into a
 *       new normal chunk (engine.c, one journal record), discard and make-empty leave the
 *       pack alone. A pack is freed only when nothing maps it: by a snapshot delete or apply
 *       that drops its last reference, or found free at the next open (free space is
 *       computed: load.c).
 *   C2. cow_put_compressed writes the stream (into the free part of the current pack, or a
 *       new pack) before it adds the record that maps it; the record becomes durable after
 *       an fdatasync that covers the stream (journal.c J1). A crash in between leaves an
 *       unreferenced pack tail (or pack): free space at the next open.
 *   C3. The feature bit INCOMPAT_COMPRESSED is in the header on disk before the first record
 *       that maps a compressed entry, so no reader that does not know the entry kind ever
 *       sees one. It is never cleared (an image that had compressed chunks keeps the bit).
 *   C4. A pack is written only by the image that allocated it since its open, and forgotten
 *       (comp_forget) by every operation that may free chunks, so a pack that was freed and
 *       handed out again is never appended to.
 * Reads inflate a stream once per chunk into a small per-image cache of decompressed
 * chunks (comp_cache_*): sequential reads of a compressed image inflate each chunk once.
 * The inflating runs on the image's pool of threads (engine.c hands the job over and gets
 * the request back through its context), so reads of several chunks inflate at once.
 * The cache is keyed by the stream's place in the file; a put forgets the whole cache, as
 * the place may have held an older stream.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "array.h"
#include "compress.h"

#define CACHE_BYTES (8u << 20)
#define CACHE_MAX_SLOTS 8u
#define E_KEY (UCOW_E_PCN_MASK | UCOW_E_CSECT_MASK | UCOW_E_COMPRESSED)

struct comp_slot {
	uint64_t key;		/* 0: empty */
	uint64_t used;		/* LRU tick */
	void *data;		/* chunk_size bytes */
};

struct comp_cache {
	pthread_mutex_t lock;
	unsigned n;
	uint64_t tick;
	struct comp_slot slot[CACHE_MAX_SLOTS];
};

int comp_inflate(const void *src, size_t srclen, void *dst, size_t dstlen)
{
	z_stream z;
	bool ok;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -15) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)src;
	z.avail_in = (uInt)srclen;
	z.next_out = dst;
	z.avail_out = (uInt)dstlen;
	int zr = inflate(&z, Z_FINISH);
	/* whole sectors are read: the stream ends inside them, or the output fills first */
	ok = (zr == Z_STREAM_END || zr == Z_BUF_ERROR || zr == Z_OK) && z.avail_out == 0;
	inflateEnd(&z);
	return ok ? 0 : -EUCLEAN;
}

int cow_compress_chunk(const void *src, uint32_t len, int level, void *dst, uint32_t cap,
		       uint32_t *out)
{
	z_stream z;
	int r;
	if (level < 1 || level > 9 || !len)
		return -EINVAL;
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, level, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)src;
	z.avail_in = len;
	z.next_out = dst;
	z.avail_out = cap;
	int zr = deflate(&z, Z_FINISH);
	r = zr == Z_STREAM_END ? 0 : (zr == Z_OK || zr == Z_BUF_ERROR) ? -ENOSPC : -EIO;
	if (!r)
		*out = cap - z.avail_out;
	deflateEnd(&z);
	return r;
}

static struct comp_cache *cache_of(struct cow_image *img, bool create)
{
	struct comp_cache *cc = __atomic_load_n(&img->ccache, __ATOMIC_ACQUIRE);
	if (cc || !create)
		return cc;
	cc = calloc(1, sizeof(*cc));
	if (!cc)
		return NULL;
	pthread_mutex_init(&cc->lock, NULL);
	cc->n = CACHE_BYTES / img->chunk_size;
	if (cc->n > CACHE_MAX_SLOTS)
		cc->n = CACHE_MAX_SLOTS;
	if (!cc->n)
		cc->n = 1;
	struct comp_cache *none = NULL;
	if (!__atomic_compare_exchange_n(&img->ccache, &none, cc, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		pthread_mutex_destroy(&cc->lock);
		free(cc);
		cc = none;	/* another thread's */
	}
	return cc;
}

bool comp_cache_get(struct cow_image *img, uint64_t e, void *dst, uint32_t in, uint32_t len)
{
	struct comp_cache *cc = cache_of(img, false);
	bool hit = false;
	if (!cc)
		return false;
	e &= E_KEY;
	pthread_mutex_lock(&cc->lock);
	for (unsigned i = 0; i < cc->n; i++)
		if (cc->slot[i].key == e) {
			memcpy(dst, (char *)cc->slot[i].data + in, len);
			cc->slot[i].used = ++cc->tick;
			hit = true;
			break;
		}
	pthread_mutex_unlock(&cc->lock);
	if (hit)
		__atomic_fetch_add(&img->cache_hits, 1, __ATOMIC_RELAXED);
	return hit;
}

void comp_cache_put(struct cow_image *img, uint64_t e, const void *chunk)
{
	struct comp_cache *cc = cache_of(img, true);
	if (!cc)
		return;
	e &= E_KEY;
	pthread_mutex_lock(&cc->lock);
	struct comp_slot *v = &cc->slot[0];
	for (unsigned i = 0; i < cc->n; i++) {
		if (cc->slot[i].key == e) {	/* another thread inflated it meanwhile */
			v = NULL;
			break;
		}
		if (cc->slot[i].used < v->used)
			v = &cc->slot[i];
	}
	if (v && !v->data && posix_memalign(&v->data, 4096, img->chunk_size))
		v->data = NULL;
	if (v && v->data) {
		memcpy(v->data, chunk, img->chunk_size);
		v->key = e;
		v->used = ++cc->tick;
	}
	pthread_mutex_unlock(&cc->lock);
}

void comp_cache_clear(struct cow_image *img)
{
	struct comp_cache *cc = cache_of(img, false);
	if (!cc)
		return;
	pthread_mutex_lock(&cc->lock);
	for (unsigned i = 0; i < cc->n; i++)
		cc->slot[i].key = 0;
	pthread_mutex_unlock(&cc->lock);
}

void comp_free(struct cow_image *img)
{
	comp_pool_free(img);
	struct comp_cache *cc = img->ccache;
	img->ccache = NULL;
	if (!cc)
		return;
	for (unsigned i = 0; i < cc->n; i++)
		free(cc->slot[i].data);
	pthread_mutex_destroy(&cc->lock);
	free(cc);
}

int comp_add_pack(struct cow_image *img, uint64_t p)
{
	if (img->npacks && img->packs[img->npacks - 1] == p)
		return 0;
	if (ARRAY_ROOM(img->packs, img->packs_cap, img->npacks))
		return -ENOMEM;
	img->packs[img->npacks++] = p;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void comp_punch_dead_packs(struct cow_image *img)
{
	uint64_t *live = NULL;
	size_t nlive = 0;
	if (!img->npacks)
		return;
	live = malloc(img->nr_chunks * sizeof(*live) + 1);
	if (!live)
		return;		/* the space stays in use until a later close */
	/* every chunk the table maps: a pack a snapshot operation freed may have become
	 * another chunk's data since (metadata extents never reuse freed chunks) */
	for (uint64_t c = 0; c < img->nr_chunks; c++)
		if (ent_pcn(img, img->table[c]))
			live[nlive++] = ent_pcn(img, img->table[c]);
	qsort(live, nlive, sizeof(*live), cmp_u64);
	qsort(img->packs, img->npacks, sizeof(*img->packs), cmp_u64);
	for (size_t i = 0; i < img->npacks; i++) {
		uint64_t p = img->packs[i];
		if ((i && p == img->packs[i - 1]) || rc_shared(img, p) ||
		    bsearch(&p, live, nlive, sizeof(*live), cmp_u64))
			continue;
		img_punch(img, p << img->chunk_shift, img->chunk_size);
	}
	free(live);
}

void comp_forget(struct cow_image *img)
{
	img->pack_pcn = 0;
	img->pack_used = 0;
}

static int corrupt_locked(struct cow_image *img, uint64_t e)
{
	return img_mark_corrupt(img, "%s: corrupt image: the compressed chunk at byte %llu "
				"does not inflate to %u bytes", img->path,
				(unsigned long long)ucow_e_coff(e), img->chunk_size);
}

int comp_corrupt(struct cow_image *img, uint64_t e)
{
	pthread_mutex_lock(&img->lock);
	int r = corrupt_locked(img, e);
	pthread_mutex_unlock(&img->lock);
	return r;
}

static int chunk_inflate(struct cow_image *img, uint64_t e, const void *cbuf, void *chunk,
			 bool locked)
{
	int r = comp_inflate(cbuf, ucow_e_clen(e), chunk, img->chunk_size);
	__atomic_fetch_add(&img->inflates, 1, __ATOMIC_RELAXED);
	if (r != -EUCLEAN)
		return r;
	return locked ? corrupt_locked(img, e) : comp_corrupt(img, e);
}

int comp_chunk_inflate(struct cow_image *img, uint64_t e, const void *cbuf, void *chunk)
{
	return chunk_inflate(img, e, cbuf, chunk, false);
}

/* ---- the inflate pool ------------------------------------------------------------------- */

#define POOL_MAX 4u

struct comp_pool {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct comp_job *head, *tail;
	bool stop;
	unsigned n;
	pthread_t th[POOL_MAX];
};

static void *pool_thread(void *arg)
{
	struct comp_pool *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->cv, &p->lock);
		struct comp_job *j = p->head;
		if (j) {
			p->head = j->next;
			if (!p->head)
				p->tail = NULL;
		}
		pthread_mutex_unlock(&p->lock);
		if (!j)
			return NULL;	/* stopped, nothing left */
		j->run(j);
	}
}

/* Stop the threads (the jobs queued still run), join them, free the pool. */
static void pool_destroy(struct comp_pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->n; i++)
		pthread_join(p->th[i], NULL);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static struct comp_pool *pool_of(struct cow_image *img)
{
	struct comp_pool *p = __atomic_load_n(&img->cpool, __ATOMIC_ACQUIRE);
	if (p)
		return p;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu < 2 || !(p = calloc(1, sizeof(*p))))
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cv, NULL);
	unsigned want = ncpu > (long)POOL_MAX ? POOL_MAX : (unsigned)ncpu;
	while (p->n < want && pthread_create(&p->th[p->n], NULL, pool_thread, p) == 0)
		p->n++;
	struct comp_pool *none = NULL;
	if (!p->n || !__atomic_compare_exchange_n(&img->cpool, &none, p, false, __ATOMIC_ACQ_REL,
						  __ATOMIC_ACQUIRE)) {
		pool_destroy(p);
		p = none;	/* another thread's, or none */
	}
	return p;
}

int comp_pool_submit(struct cow_image *img, struct comp_job *j)
{
	struct comp_pool *p = pool_of(img);
	if (!p)
		return -ENOTSUP;
	j->next = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

void comp_pool_free(struct cow_image *img)
{
	struct comp_pool *p = img->cpool;
	img->cpool = NULL;
	if (p)
		pool_destroy(p);
}

int comp_chunk_pread(struct cow_image *img, uint64_t e, void *buf, uint32_t len, uint32_t in)
{
	if (!(e & UCOW_E_COMPRESSED))
		return io_pread_all(img->fd, buf, len,
				    ((e & UCOW_E_PCN_MASK) << img->chunk_shift) + in);
	if (comp_cache_get(img, e, buf, in, len))
		return 0;
	char *cbuf = meta_zalloc(ucow_e_clen(e)), *chunk = meta_zalloc(img->chunk_size);
	int r = cbuf && chunk ? 0 : -ENOMEM;
	if (!r)
		r = io_pread_all(img->fd, cbuf, ucow_e_clen(e), ucow_e_coff(e));
	if (!r)
		r = chunk_inflate(img, e, cbuf, chunk, true);
	if (!r) {
		comp_cache_put(img, e, chunk);
		memcpy(buf, chunk + in, len);
	}
	free(cbuf);
	free(chunk);
	return r;
}

/* C3: the feature bit on disk before the first compressed record. Under lock. */
static int set_feature(struct cow_image *img)
{
	if (img->hdr.incompat & UCOW_INCOMPAT_COMPRESSED)
		return 0;
	struct ucow_hdr nh = img->hdr;
	nh.incompat |= UCOW_INCOMPAT_COMPRESSED;
	return jnl_switch_header(img, &nh);
}

int cow_put_compressed(struct cow_image *img, uint64_t chunk, const void *stream, uint32_t len,
		       const uint64_t *bm)
{
	uint32_t slen = (len + 511) & ~511u;
	uint64_t old_bm[UCOW_BM_WORDS_MAX], newbm[UCOW_BM_WORDS_MAX] = { 0 }, off, e;
	char *buf = NULL;
	int r = 0;

	if (img->fmt != COW_FMT_UCOW || img->read_only) {
		img_set_err(img, "%s: compressed chunks need a ucow image open read-write",
			    img->path);
		return img->fmt != COW_FMT_UCOW ? -ENOTSUP : -EROFS;
	}
	if (chunk >= img->nr_chunks || !len || slen >> 9 > UCOW_MAX_CSECTORS ||
	    slen >= img->chunk_size)
		return -EINVAL;
	memcpy(newbm, bm, img->bm_words * 8);
	if (img->bpc % 64)
		newbm[img->bm_words - 1] &= (1ull << (img->bpc % 64)) - 1;
	buf = meta_zalloc(slen);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, stream, len);

	pthread_mutex_lock(&img->lock);
	e = ent_load(img, chunk);
	if (e & ~UCOW_E_ZERO) {
		img_set_err(img, "%s: chunk %llu already holds data", img->path,
			    (unsigned long long)chunk);
		r = -EEXIST;
		goto out;
	}
	r = set_feature(img);						/* C3 */
	if (r)
		goto out;
	if (!img->pack_pcn || img->pack_used + slen > img->chunk_size) {	/* C4 */
		uint64_t p;
		r = alloc_chunk(img, &p);
		if (r)
			goto out;
		img->pack_pcn = p;
		img->pack_used = 0;
		if ((r = comp_add_pack(img, p))) {	/* unknown, it would never be punched */
			alloc_release(img, p);
			img->pack_pcn = 0;
			goto out;
		}
	}
	off = (img->pack_pcn << img->chunk_shift) + img->pack_used;
	img->pack_used += slen;
	ent_store(img, chunk, e | UCOW_E_BUSY);	/* no other put or write meanwhile */
	pthread_mutex_unlock(&img->lock);

	r = img_pwrite(img, buf, slen, off);				/* C2 */

	pthread_mutex_lock(&img->lock);
	if (r) {
		ent_store(img, chunk, e);
		img_set_err(img, "%s: writing a compressed chunk: %s", img->path, strerror(-r));
		goto out;
	}
	uint64_t ne = ucow_e_compressed(off, slen);
	uint64_t *cur = meta_bm(img, chunk, true);
	if (!cur) {
		ent_store(img, chunk, e);
		r = -ENOMEM;
		goto out;
	}
	bm_copy(img, old_bm, cur);
	for (uint32_t i = 0; i < img->bm_words; i++)
		__atomic_store_n(&cur[i], newbm[i], __ATOMIC_RELEASE);
	img->bm_dirty[chunk / img->chunks_per_group] = 1;
	comp_cache_clear(img);		/* the place may have held an older stream */
	ent_store(img, chunk, ne | UCOW_E_SHARED);			/* C1 */
	r = jnl_add(img, chunk, ne, newbm, e, old_bm, NULL);
	if (r) {	/* nothing was published: the old state back (the sectors leak) */
		for (uint32_t i = 0; i < img->bm_words; i++)
			__atomic_store_n(&cur[i], old_bm[i], __ATOMIC_RELEASE);
		ent_store(img, chunk, e);
	} else {
		STAT_ADD(img, allocations, 1);
		STAT_ADD(img, data_bytes_written, slen);
	}
out:
	pthread_mutex_unlock(&img->lock);
	free(buf);
	return r;
}

void cow_get_compress_info(struct cow_image *img, struct cow_compress_info *ci)
{
	memset(ci, 0, sizeof(*ci));
	if (img->fmt != COW_FMT_UCOW)
		return;
	pthread_mutex_lock(&img->lock);
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t e = ent_load(img, c);
		if (e & UCOW_E_COMPRESSED) {
			ci->chunks++;
			ci->stored_bytes += ucow_e_clen(e);
		}
	}
	pthread_mutex_unlock(&img->lock);
	ci->inflates = __atomic_load_n(&img->inflates, __ATOMIC_RELAXED);
	ci->cache_hits = __atomic_load_n(&img->cache_hits, __ATOMIC_RELAXED);
}
