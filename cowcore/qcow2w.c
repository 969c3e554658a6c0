/* SPDX-License-Identifier: MIT */
/*
 * Writing a new qcow2 image front to back (ucow convert -O qcow2): the way images go back
 * to QEMU. The facts of the format (QEMU's docs/interop/qcow2.txt), as used here:
 *   - the header (version 3, 104 bytes, big-endian) in cluster 0, then the end of the
 *     header extensions (8 zero bytes); no backing file, no snapshots, no feature bits;
 *     refcount_order 4 (16-bit refcounts), compression type zlib (the default);
 *   - the L1 table right after it (clusters 1..), l1_size entries, each the offset of an L2
 *     table with bit 63 (COPIED: refcount 1) or 0 (the range reads as zeros: no backing);
 *   - an L2 table is one cluster of 64-bit entries: a data cluster's offset with bit 63, or
 *     for a compressed cluster bit 62, the number of 512-byte sectors it touches minus one
 *     in bits [62 - (cluster_bits - 8), 61] and its byte offset below them; data compressed
 *     as a raw deflate stream (4 KiB window);
 *   - the refcount table (offsets of refcount blocks) and the blocks (2^(cluster_bits-1)
 *     16-bit counts each) at the end, counting every cluster of the file, themselves too.
 * The layout: header, L1, then L2 tables and data clusters in the order the data comes
 * (each L2 table just before its first data cluster), compressed data packed byte by byte
 * (a host cluster holding parts of k compressed clusters has refcount k), then the
 * refcount blocks and table. Only the L1 table, the current L2 table and one guest cluster
 * are held in memory, plus two bytes of refcount per host cluster; with compression, a
 * batch of Q_BATCH clusters, deflated by up to Q_THREADS threads at once (then placed in
 * order: the output is the same whatever the number of threads).
 * Data comes in at non-decreasing offsets; a cluster never written, or written with zeros
 * only, is left unallocated (reads as zeros). The header is written last, after every
 * table, then the file is synced: an interrupted writer leaves no valid image (convert
 * writes under a temporary name and renames it).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cowcore.h"

#define Q_MAGIC 0x514649fbu		/* "QFI\xfb" */
#define Q_COPIED (1ull << 63)
#define Q_COMPRESSED (1ull << 62)
#define Q_HDR_LEN 104u
#define Q_MAX_L1_BYTES (32u << 20)	/* QEMU refuses larger L1 tables */
#define Q_BATCH 64			/* clusters compressed together */
#define Q_THREADS 8			/* at most this many threads (and the CPUs online) */

struct q_slot {
	uint64_t g;			/* guest cluster */
	uint8_t *data, *z;		/* the cluster; its deflated form */
	size_t zn;			/* 0: store plain */
	int level;
	uint32_t cs;
};

struct cow_qcow2_out {
	int fd;
	char path[4096];
	uint64_t size;			/* virtual size */
	uint32_t cs;			/* cluster size */
	unsigned cbits;
	int level;			/* zlib level, 0: no compression */
	uint64_t l2e;			/* entries per L2 table */
	uint64_t l1_size, l1_off;
	uint64_t *l1;			/* host order */
	int64_t l2_idx;			/* the L1 index of the table in l2, -1: none */
	uint64_t *l2;			/* host order */
	int64_t cur;			/* the guest cluster in cbuf, -1: none */
	uint8_t *cbuf;
	bool cdirty;
	uint64_t next;			/* the end of the file as laid out so far (bytes) */
	uint16_t *rc;			/* refcount per host cluster */
	uint64_t rc_len;		/* entries in rc */
	uint64_t data_clusters, compressed_clusters;
	struct q_slot batch[Q_BATCH];	/* compression: clusters waiting to be deflated */
	unsigned nbatch, nthreads;
};

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Count one more reference to each host cluster of [off, off + len). */
static int ref(struct cow_qcow2_out *w, uint64_t off, uint64_t len)
{
	uint64_t first = off >> w->cbits, last = (off + len - 1) >> w->cbits;

	if (last >= w->rc_len) {
		uint64_t n = w->rc_len ? w->rc_len : 1024;
		uint16_t *p;

		while (n <= last)
			n *= 2;
		p = realloc(w->rc, n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		memset(p + w->rc_len, 0, (n - w->rc_len) * sizeof(*p));
		w->rc = p;
		w->rc_len = n;
	}
	for (uint64_t c = first; c <= last; c++) {
		if (w->rc[c] == UINT16_MAX)
			return -EOVERFLOW;
		w->rc[c]++;
	}
	return 0;
}

/* A fresh cluster at the end (after packed compressed data, the next cluster boundary). */
static int alloc_cluster(struct cow_qcow2_out *w, uint64_t *off)
{
	uint64_t o = (w->next + w->cs - 1) & ~(uint64_t)(w->cs - 1);
	int r = ref(w, o, w->cs);

	if (r < 0)
		return r;
	w->next = o + w->cs;
	*off = o;
	return 0;
}

static int flush_l2(struct cow_qcow2_out *w)
{
	if (w->l2_idx < 0)
		return 0;
	for (uint64_t i = 0; i < w->l2e; i++)
		w->l2[i] = htobe64(w->l2[i]);
	int r = pwrite_all(w->fd, w->l2, w->cs, w->l1[w->l2_idx] & ~Q_COPIED);
	w->l2_idx = -1;
	return r;
}

/* The L2 table of guest cluster g in w->l2 (allocated when it has none yet). */
static int l2_for(struct cow_qcow2_out *w, uint64_t g)
{
	uint64_t i = g / w->l2e, off;
	int r;

	if (w->l2_idx == (int64_t)i)
		return 0;
	r = flush_l2(w);
	if (r < 0)
		return r;
	/* data comes in order: a table once left is never needed again */
	r = alloc_cluster(w, &off);
	if (r < 0)
		return r;
	w->l1[i] = off | Q_COPIED;
	memset(w->l2, 0, w->cs);
	w->l2_idx = (int64_t)i;
	return 0;
}

static bool zero(const uint8_t *p, size_t n)
{
	return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

/* Raw deflate (4 KiB window, as QEMU) of a slot's cluster: zn, or 0 when it does not pay. */
static void deflate_slot(struct q_slot *sl)
{
	z_stream z;

	sl->zn = 0;
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, sl->level, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return;
	z.next_in = sl->data;
	z.avail_in = sl->cs;
	z.next_out = sl->z;
	z.avail_out = sl->cs - 512;	/* at least one sector smaller, or stored plain */
	if (deflate(&z, Z_FINISH) == Z_STREAM_END)
		sl->zn = sl->cs - 512 - z.avail_out;
	deflateEnd(&z);
}

struct q_job {
	struct q_slot *s;
	unsigned n, step, first;
};

static void *deflate_thread(void *arg)
{
	struct q_job *j = arg;

	for (unsigned i = j->first; i < j->n; i += j->step)
		deflate_slot(&j->s[i]);
	return NULL;
}

/* Store guest cluster g from data: deflated (zn > 0, in z) or plain. */
static int place(struct cow_qcow2_out *w, uint64_t g, const uint8_t *data, const uint8_t *z,
		 size_t zn)
{
	uint64_t off;
	int r = l2_for(w, g);

	if (r < 0)
		return r;
	if (zn) {
		uint64_t x = 62 - (w->cbits - 8);
		uint64_t sectors = ((w->next + zn - 1) >> 9) - (w->next >> 9) + 1;

		off = w->next;
		r = ref(w, off, zn);
		if (r == 0)
			r = pwrite_all(w->fd, z, zn, off);
		if (r < 0)
			return r;
		w->next = off + zn;
		w->l2[g % w->l2e] = Q_COMPRESSED | ((sectors - 1) << x) | off;
		w->compressed_clusters++;
		return 0;
	}
	r = alloc_cluster(w, &off);
	if (r == 0)
		r = pwrite_all(w->fd, data, w->cs, off);
	if (r < 0)
		return r;
	w->l2[g % w->l2e] = off | Q_COPIED;
	w->data_clusters++;
	return 0;
}

/* Deflate the batch (in parallel), then place its clusters in order. */
static int flush_batch(struct cow_qcow2_out *w)
{
	pthread_t t[Q_THREADS];
	struct q_job jobs[Q_THREADS];
	unsigned nt = w->nthreads < w->nbatch ? w->nthreads : w->nbatch, started = 0;
	int r = 0;

	for (unsigned i = 0; i < nt; i++) {
		jobs[i] = (struct q_job){ w->batch, w->nbatch, nt, i };
		if (i && pthread_create(&t[i], NULL, deflate_thread, &jobs[i]) == 0)
			started |= 1u << i;
	}
	if (nt)
		deflate_thread(&jobs[0]);
	for (unsigned i = 1; i < nt; i++) {
		if (started & (1u << i))
			pthread_join(t[i], NULL);
		else
			deflate_thread(&jobs[i]);	/* no thread: do its share here */
	}
	for (unsigned i = 0; i < w->nbatch && !r; i++)
		r = place(w, w->batch[i].g, w->batch[i].data, w->batch[i].z, w->batch[i].zn);
	w->nbatch = 0;
	return r;
}

/* Store the guest cluster held in cbuf (with compression: queue it in the batch). */
static int flush_cluster(struct cow_qcow2_out *w)
{
	uint64_t g = (uint64_t)w->cur;
	int r = 0;

	if (w->cur < 0 || !w->cdirty || zero(w->cbuf, w->cs))
		goto done;			/* unallocated reads as zeros */
	if (!w->level) {
		r = place(w, g, w->cbuf, NULL, 0);
		goto done;
	}
	struct q_slot *sl = &w->batch[w->nbatch++];
	uint8_t *tmp = sl->data;
	sl->data = w->cbuf;		/* the batch takes the buffer, cbuf gets a free one */
	w->cbuf = tmp;
	sl->g = g;
	if (w->nbatch == Q_BATCH)
		r = flush_batch(w);
done:
	w->cur = -1;
	w->cdirty = false;
	return r;
}

int cow_qcow2_out_create(const char *path, uint64_t size, uint32_t cluster_size,
			 int compress_level, struct cow_qcow2_out **out, char *err,
			 size_t errlen)
{
	struct cow_qcow2_out *w;
	uint64_t nclusters, l1_bytes;
	int r;

	*out = NULL;
	if (cluster_size < 512 || cluster_size > (2u << 20) ||
	    (cluster_size & (cluster_size - 1))) {
		snprintf(err, errlen, "%s: cluster size %u is not a power of two from 512 to 2097152",
			 path, cluster_size);
		return -EINVAL;
	}
	if (compress_level < 0 || compress_level > 9) {
		snprintf(err, errlen, "%s: compression level %d is not 0 to 9", path,
			 compress_level);
		return -EINVAL;
	}
	nclusters = size / cluster_size + (size % cluster_size != 0);
	l1_bytes = (nclusters + cluster_size / 8 - 1) / (cluster_size / 8) * 8;
	if (!size || size > (1ull << 61) || l1_bytes > Q_MAX_L1_BYTES) {
		snprintf(err, errlen, "%s: %llu bytes is %s for a qcow2 image with %u-byte clusters",
			 path, (unsigned long long)size, size ? "too large" : "too small",
			 cluster_size);
		return -EFBIG;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	snprintf(w->path, sizeof(w->path), "%s", path);
	w->size = size;
	w->cs = cluster_size;
	w->cbits = (unsigned)__builtin_ctz(cluster_size);
	w->level = compress_level;
	w->l2e = cluster_size / 8;
	w->l1_size = l1_bytes / 8;
	w->l2_idx = -1;
	w->cur = -1;
	w->l1 = calloc(w->l1_size, 8);
	w->l2 = malloc(cluster_size);
	w->cbuf = malloc(cluster_size);
	if (!w->l1 || !w->l2 || !w->cbuf) {
		r = -ENOMEM;
		goto fail;
	}
	if (compress_level) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		w->nthreads = ncpu < 1 ? 1 : ncpu > Q_THREADS ? Q_THREADS : (unsigned)ncpu;
		for (unsigned i = 0; i < Q_BATCH; i++) {
			struct q_slot *sl = &w->batch[i];
			sl->level = compress_level;
			sl->cs = cluster_size;
			if (!(sl->data = malloc(cluster_size)) || !(sl->z = malloc(cluster_size))) {
				r = -ENOMEM;
				goto fail;
			}
		}
	}
	w->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (w->fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: cannot create: %s", path, strerror(-r));
		goto fail;
	}
	/* cluster 0: the header (written last); then the L1 table */
	w->l1_off = cluster_size;
	w->next = cluster_size + ((l1_bytes + cluster_size - 1) & ~(uint64_t)(cluster_size - 1));
	r = ref(w, 0, w->next);
	if (r < 0)
		goto fail;
	*out = w;
	return 0;
fail:
	if (r == -ENOMEM)
		snprintf(err, errlen, "%s: out of memory", path);
	cow_qcow2_out_close(w, false);
	return r;
}

int cow_qcow2_out_write(struct cow_qcow2_out *w, const void *buf, uint64_t len, uint64_t off)
{
	const uint8_t *p = buf;
	int r;

	if (off > w->size || len > w->size - off ||
	    (w->cur >= 0 && (off >> w->cbits) < (uint64_t)w->cur))
		return -EINVAL;		/* past the end, or going back */
	while (len) {
		uint64_t g = off >> w->cbits, in = off & (w->cs - 1);
		uint64_t n = w->cs - in < len ? w->cs - in : len;

		if (w->cur != (int64_t)g) {
			r = flush_cluster(w);
			if (r < 0)
				return r;
			memset(w->cbuf, 0, w->cs);
			w->cur = (int64_t)g;
		}
		memcpy(w->cbuf + in, p, n);
		w->cdirty = true;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* The refcount blocks and table after everything else, the L1 table, then the header. */
static int finish(struct cow_qcow2_out *w)
{
	uint64_t per_block = w->cs / 2, n, rb = 0, rtc = 0, total, rb_off, rt_off;
	uint8_t *hdr = NULL, *blk = NULL;
	uint64_t *rt = NULL;
	int r;

	r = flush_cluster(w);
	if (r == 0 && w->nbatch)
		r = flush_batch(w);
	if (r == 0)
		r = flush_l2(w);
	if (r < 0)
		return r;
	/* the clusters so far, then as many refcount blocks and table clusters as count them
	 * all and themselves */
	n = (w->next + w->cs - 1) >> w->cbits;
	for (;;) {
		total = n + rb + rtc;
		uint64_t nrb = (total + per_block - 1) / per_block;
		uint64_t nrtc = (nrb * 8 + w->cs - 1) / w->cs;

		if (nrb == rb && nrtc == rtc)
			break;
		rb = nrb;
		rtc = nrtc;
	}
	rb_off = n << w->cbits;
	rt_off = rb_off + (rb << w->cbits);
	r = ref(w, rb_off, (rb + rtc) << w->cbits);
	if (r < 0)
		return r;
	blk = malloc(w->cs);
	rt = calloc(rtc, w->cs);
	hdr = calloc(1, w->cs);
	if (!blk || !rt || !hdr) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t b = 0; b < rb && r == 0; b++) {
		uint16_t *e = (uint16_t *)blk;

		for (uint64_t i = 0; i < per_block; i++) {
			uint64_t c = b * per_block + i;

			e[i] = htobe16(c < w->rc_len ? w->rc[c] : 0);
		}
		r = pwrite_all(w->fd, blk, w->cs, rb_off + (b << w->cbits));
		rt[b] = htobe64(rb_off + (b << w->cbits));
	}
	if (r == 0)
		r = pwrite_all(w->fd, rt, rtc << w->cbits, rt_off);
	for (uint64_t i = 0; i < w->l1_size; i++)
		w->l1[i] = htobe64(w->l1[i]);
	if (r == 0)
		r = pwrite_all(w->fd, w->l1, w->l1_size * 8, w->l1_off);
	if (r == 0 && fdatasync(w->fd) < 0)
		r = -errno;
	if (r < 0)
		goto out;
	/* the header, last: before it the file is no image */
	uint32_t v32;
	uint64_t v64;
#define P32(o, v) (v32 = htobe32((uint32_t)(v)), memcpy(hdr + (o), &v32, 4))
#define P64(o, v) (v64 = htobe64((uint64_t)(v)), memcpy(hdr + (o), &v64, 8))
	P32(0, Q_MAGIC);
	P32(4, 3);			/* version */
	P32(20, w->cbits);
	P64(24, w->size);
	P32(36, w->l1_size);
	P64(40, w->l1_off);
	P64(48, rt_off);
	P32(56, rtc);
	P32(96, 4);			/* refcount_order: 16-bit */
	P32(100, Q_HDR_LEN);
#undef P32
#undef P64
	/* header extensions end at once: 8 zero bytes at Q_HDR_LEN (calloc) */
	r = pwrite_all(w->fd, hdr, Q_HDR_LEN + 8, 0);
	if (r == 0 && fsync(w->fd) < 0)
		r = -errno;
out:
	free(hdr);
	free(rt);
	free(blk);
	return r;
}

int cow_qcow2_out_close(struct cow_qcow2_out *w, bool complete)
{
	int r = 0;

	if (!w)
		return 0;
	if (complete)
		r = finish(w);
	if (w->fd >= 0 && close(w->fd) < 0 && r == 0)
		r = -errno;
	free(w->l1);
	free(w->l2);
	free(w->cbuf);
	for (unsigned i = 0; i < Q_BATCH; i++) {
		free(w->batch[i].data);
		free(w->batch[i].z);
	}
	free(w->rc);
	free(w);
	return r;
}

void cow_qcow2_out_counts(const struct cow_qcow2_out *w, uint64_t *data, uint64_t *compressed)
{
	*data = w->data_clusters;
	*compressed = w->compressed_clusters;
}
