/* SPDX-License-Identifier: MIT */
/*
 * Layer 2: qcow2 images, read-only (qcow2.h). Everything read from the file is checked
 * before it is used: header fields against each other and the file size, the L1 table
 * against the virtual size, each L1 and L2 entry when a lookup meets it (reserved bits,
 * alignment, tables inside the file), compressed sizes by the bits that hold them. Memory
 * is bounded: the L1 entries the virtual size needs (at most 32 MiB, and never more than the
 * file holds), and an L2 cache of at most QCOW2_CACHE_BYTES (QCOW2_CACHE_MIN tables for
 * clusters above 1 MiB).
 *
 * Threads: the engine's contexts run on several threads and look up at once. One mutex
 * guards the cache; a lookup copies what it needs out of a cached table under it, and a
 * miss reads the table with the mutex dropped (two threads missing on one table both read
 * it; the second to return frees its copy).
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "qcow2.h"

/* header extension types (the ones this reader looks at) */
#define EXT_END 0u
#define EXT_BACKING_FMT 0xe2792acau

/* incompatible feature bits */
#define INC_DIRTY (1ull << 0)
#define INC_CORRUPT (1ull << 1)
#define INC_DATA_FILE (1ull << 2)
#define INC_COMPRESSION (1ull << 3)
#define INC_EXTL2 (1ull << 4)
#define INC_KNOWN (INC_DIRTY | INC_CORRUPT | INC_DATA_FILE | INC_COMPRESSION | INC_EXTL2)

/* L1 and L2 entries */
#define L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define L1E_RESERVED 0x7f000000000001ffull
#define L2E_COPIED (1ull << 63)
#define L2E_COMPRESSED (1ull << 62)
#define L2E_ZERO 1ull
#define L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define L2E_RESERVED 0x3f000000000001feull

struct q2_slot {
	uint64_t off;		/* file offset of the table; 0: empty slot */
	uint64_t used;		/* LRU tick */
	uint64_t *t;		/* l2_entries entries, host order */
};

struct qcow2 {
	uint32_t version, cluster_bits, cluster_size, l2_bits, l2_entries;
	bool extl2;		/* 128-bit L2 entries: the entry, then a subcluster bitmap */
	uint32_t sc_bits;	/* extl2: the subcluster size (a 32nd of a cluster) */
	uint32_t refcount_order, nb_snapshots, ctype;
	uint64_t incompat, compat, autoclear;
	uint64_t file_size;
	uint64_t *l1;		/* the entries the virtual size needs, host order */
	uint64_t l1_n;
	uint64_t snap_off;	/* the snapshot table (nb_snapshots entries), validated when read */
	uint32_t csize_shift;	/* compressed entries: offset bits below, sector count above */
	uint64_t csize_mask;
	pthread_mutex_t lock;	/* the cache */
	struct q2_slot *slots;
	unsigned nslots;
	uint64_t tick;
};

static uint32_t be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static uint64_t be64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

bool qcow2_probe(const uint8_t *buf) { return be32(buf) == QCOW2_MAGIC; }

/* end <= limit for [off, off+len), without overflow */
static bool inside(uint64_t off, uint64_t len, uint64_t limit)
{
	return off <= limit && len <= limit - off;
}

#define BAD(...) do { snprintf(why, sizeof(why), __VA_ARGS__); r = -EUCLEAN; goto fail; } while (0)
#define NOTSUP(...) do { snprintf(why, sizeof(why), __VA_ARGS__); r = -ENOTSUP; goto fail; } while (0)

/* The header extensions in [start, end) of the first cluster hdr: the backing format. */
static int read_exts(struct cow_image *img, const uint8_t *hdr, uint32_t start, uint32_t end,
		     char *why, size_t whylen)
{
	uint32_t pos = start;
	while (pos + 8 <= end) {
		uint32_t type = be32(hdr + pos), len = be32(hdr + pos + 4);
		pos += 8;
		if (type == EXT_END)
			return 0;
		if (len > end - pos) {
			snprintf(why, whylen, "header extension 0x%08x of %u bytes runs past the "
				 "first cluster", type, len);
			return -EUCLEAN;
		}
		if (type == EXT_BACKING_FMT) {
			char name[16];
			if (!len || len >= sizeof(name) || memchr(hdr + pos, 0, len)) {
				snprintf(why, whylen, "invalid backing format extension (%u bytes)",
					 len);
				return -EUCLEAN;
			}
			memcpy(name, hdr + pos, len);
			name[len] = 0;
			int f = cow_fmt_parse(name);
			if (f <= 0) {
				snprintf(why, whylen, "backing file format '%s' is not supported "
					 "(raw, qcow2 or ucow)", name);
				return -ENOTSUP;
			}
			img->hdr.backing_fmt = (uint32_t)f;
		}
		pos += (len + 7) & ~7u;
		if (pos < len)	/* wrapped */
			break;
	}
	return 0;	/* the end marker is optional when the extensions fill the area */
}

int qcow2_open(struct cow_image *img, uint64_t file_size, char *err)
{
	struct qcow2 *q = calloc(1, sizeof(*q));
	uint8_t *hdr = NULL, *l1raw = NULL;
	char why[COW_ERRLEN - 64] = "";
	uint32_t hlen, bname_len;
	uint64_t bname_off, l1_off, vsize, l1_size, hbytes;
	int r;

	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->lock, NULL);
	img->q2 = q;
	q->file_size = file_size;
	if (file_size < 512) {
		if (file_size < 72)
			BAD("the file is truncated (%llu bytes)", (unsigned long long)file_size);
	}
	/* the first sector first: it holds the cluster size */
	hdr = meta_zalloc(512);
	if (!hdr) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = io_pread_all(img->fd, hdr, 512, 0))) {
		snprintf(why, sizeof(why), "reading the header: %s", strerror(-r));
		goto fail;
	}
	if (!qcow2_probe(hdr)) {
		/* no option named: each caller has its own way to say "raw" */
		snprintf(why, sizeof(why), "not a qcow2 image (no qcow2 magic)");
		r = -EMEDIUMTYPE;
		goto fail;
	}
	q->version = be32(hdr + 4);
	if (q->version != 2 && q->version != 3)
		NOTSUP("qcow2 version %u is not supported (2 or 3)", q->version);
	q->cluster_bits = be32(hdr + 20);
	if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS || q->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		BAD("invalid cluster bits %u (9 to 21)", q->cluster_bits);
	q->cluster_size = 1u << q->cluster_bits;
	q->extl2 = q->version == 3 && (be64(hdr + 72) & INC_EXTL2);
	if (q->extl2 && q->cluster_bits < 14)
		BAD("extended L2 entries with %u-byte clusters (subclusters under 512 bytes)",
		    q->cluster_size);
	q->sc_bits = q->cluster_bits - 5;
	q->l2_bits = q->cluster_bits - (q->extl2 ? 4 : 3);
	q->l2_entries = 1u << q->l2_bits;
	/* the first cluster, and room for a backing name that starts at its end */
	hbytes = ((uint64_t)q->cluster_size + QCOW2_MAX_BACKING_NAME + 4095) & ~4095ull;
	free(hdr);
	hdr = meta_zalloc(hbytes);
	if (!hdr) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = io_pread_all(img->fd, hdr, hbytes, 0))) {
		snprintf(why, sizeof(why), "reading the header: %s", strerror(-r));
		goto fail;
	}
	bname_off = be64(hdr + 8);
	bname_len = be32(hdr + 16);
	vsize = be64(hdr + 24);
	uint32_t crypt = be32(hdr + 32);
	l1_size = be32(hdr + 36);
	l1_off = be64(hdr + 40);
	q->nb_snapshots = be32(hdr + 60);
	q->snap_off = be64(hdr + 64);
	if (q->version == 3) {
		q->incompat = be64(hdr + 72);
		q->compat = be64(hdr + 80);
		q->autoclear = be64(hdr + 88);
		q->refcount_order = be32(hdr + 96);
		hlen = be32(hdr + 100);
		if (hlen < 104 || hlen > q->cluster_size || hlen % 8)
			BAD("invalid header length %u", hlen);
		if (q->refcount_order > 6)
			BAD("invalid refcount order %u", q->refcount_order);
		if (hlen > 104)
			q->ctype = hdr[104];
	} else {
		hlen = 72;
		q->refcount_order = 4;
	}
	if (crypt)
		NOTSUP("encrypted qcow2 images are not supported (encryption method %u)", crypt);
	if (q->incompat & INC_DATA_FILE)
		NOTSUP("qcow2 images with an external data file are not supported");
	if (q->incompat & ~INC_KNOWN)
		NOTSUP("unknown qcow2 incompatible features 0x%llx",
		       (unsigned long long)(q->incompat & ~INC_KNOWN));
	if (!(q->incompat & INC_COMPRESSION) && q->ctype)
		BAD("compression type %u without the compression type feature bit", q->ctype);
	if (q->ctype > 1)
		NOTSUP("unknown qcow2 compression type %u", q->ctype);
	/* the L1 table: every entry the virtual size needs, inside the file */
	uint64_t l2_span = (uint64_t)q->cluster_size << q->l2_bits;	/* <= 2^39 */
	if (vsize > (1ull << 62))
		BAD("virtual size %llu is too large", (unsigned long long)vsize);
	q->l1_n = (vsize + l2_span - 1) / l2_span;
	if (l1_size < q->l1_n)
		BAD("L1 table of %llu entries is too small for the virtual size %llu (needs %llu)",
		    (unsigned long long)l1_size, (unsigned long long)vsize,
		    (unsigned long long)q->l1_n);
	if (l1_size > QCOW2_MAX_L1_BYTES / 8)
		BAD("L1 table of %llu entries is too large", (unsigned long long)l1_size);
	if (q->l1_n && (!l1_off || l1_off % q->cluster_size ||
			!inside(l1_off, q->l1_n * 8, file_size)))
		BAD("invalid L1 table offset %llu (%llu entries, file of %llu bytes)",
		    (unsigned long long)l1_off, (unsigned long long)q->l1_n,
		    (unsigned long long)file_size);
	/* the backing file name: in the first cluster (as qemu places it), NUL-free */
	if (bname_off || bname_len) {
		if (!bname_len || bname_len > QCOW2_MAX_BACKING_NAME || bname_off > q->cluster_size ||
		    bname_off < hlen || !inside(bname_off, bname_len, file_size))
			BAD("invalid backing file name at %llu (%u bytes)",
			    (unsigned long long)bname_off, bname_len);
		if (memchr(hdr + bname_off, 0, bname_len))
			BAD("backing file name contains a NUL byte");
		memcpy(img->hdr.backing, hdr + bname_off, bname_len);
		img->hdr.backing[bname_len] = 0;
		img->hdr.backing_len = (uint16_t)bname_len;
	}
	r = read_exts(img, hdr, hlen, bname_len && bname_off < q->cluster_size ?
		      (uint32_t)bname_off : q->cluster_size, why, sizeof(why));
	if (r)
		goto fail;
	if (!img->hdr.backing_len)
		img->hdr.backing_fmt = 0;
	if (q->l1_n) {
		size_t bytes = (q->l1_n * 8 + 511) & ~511ull;
		l1raw = meta_zalloc(bytes);
		if (!l1raw) {
			r = -ENOMEM;
			goto fail;
		}
		if ((r = io_pread_all(img->fd, l1raw, bytes, l1_off))) {
			snprintf(why, sizeof(why), "reading the L1 table: %s", strerror(-r));
			goto fail;
		}
		q->l1 = malloc(q->l1_n * 8);
		if (!q->l1) {
			r = -ENOMEM;
			goto fail;
		}
		for (uint64_t i = 0; i < q->l1_n; i++)
			q->l1[i] = be64(l1raw + i * 8);
	}
	q->nslots = QCOW2_CACHE_BYTES / q->cluster_size;
	q->nslots = q->nslots < QCOW2_CACHE_MIN ? QCOW2_CACHE_MIN :
		    q->nslots > QCOW2_CACHE_MAX ? QCOW2_CACHE_MAX : q->nslots;
	q->slots = calloc(q->nslots, sizeof(*q->slots));
	if (!q->slots) {
		r = -ENOMEM;
		goto fail;
	}
	q->csize_shift = 62 - (q->cluster_bits - 8);
	q->csize_mask = (1ull << (q->cluster_bits - 8)) - 1;
	img->vsize = vsize;
	img->chunk_size = q->cluster_size;
	img->chunk_shift = q->cluster_bits;
	img->corrupt = q->incompat & INC_CORRUPT;
	free(hdr);
	free(l1raw);
	return 0;
fail:
	if (r == -ENOMEM)
		snprintf(why, sizeof(why), "%s", strerror(ENOMEM));
	snprintf(err, COW_ERRLEN, "%s: %s%s", img->path, r == -EUCLEAN ? "corrupt qcow2 image: " :
		 "", why);
	free(hdr);
	free(l1raw);
	qcow2_free(img);
	return r;
}

void qcow2_free(struct cow_image *img)
{
	struct qcow2 *q = img->q2;
	if (!q)
		return;
	for (unsigned i = 0; i < q->nslots; i++)
		free(q->slots[i].t);
	free(q->slots);
	free(q->l1);
	pthread_mutex_destroy(&q->lock);
	free(q);
	img->q2 = NULL;
}

/* The cached table at file offset off, or NULL. Under q->lock. */
static uint64_t *cache_find(struct qcow2 *q, uint64_t off)
{
	for (unsigned i = 0; i < q->nslots; i++)
		if (q->slots[i].off == off) {
			q->slots[i].used = ++q->tick;
			return q->slots[i].t;
		}
	return NULL;
}

/* Put t (the table at off) into the least recently used slot. Under q->lock. */
static void cache_insert(struct qcow2 *q, uint64_t off, uint64_t *t)
{
	unsigned v = 0;
	for (unsigned i = 1; i < q->nslots; i++)
		if (q->slots[i].used < q->slots[v].used)
			v = i;
	free(q->slots[v].t);
	q->slots[v] = (struct q2_slot){ .off = off, .used = ++q->tick, .t = t };
}

/*
 * With q->lock held on return (0 only), the L2 table at off in *t: from the cache, or read
 * (the lock dropped meanwhile) and put in it.
 */
static int l2_get(struct cow_image *img, uint64_t off, uint64_t **t)
{
	struct qcow2 *q = img->q2;
	pthread_mutex_lock(&q->lock);
	if ((*t = cache_find(q, off)))
		return 0;
	pthread_mutex_unlock(&q->lock);
	uint64_t *n = meta_zalloc(q->cluster_size);
	if (!n)
		return -ENOMEM;
	int r = io_pread_all(img->fd, n, q->cluster_size, off);
	if (r) {
		img_set_err(img, "%s: reading the L2 table at %llu: %s", img->path,
			    (unsigned long long)off, strerror(-r));
		free(n);
		return r;
	}
	for (uint32_t i = 0; i < q->cluster_size / 8; i++)	/* entries, or entry/bitmap pairs */
		n[i] = be64toh(n[i]);
	pthread_mutex_lock(&q->lock);
	if ((*t = cache_find(q, off))) {	/* another thread was quicker */
		free(n);
		return 0;
	}
	cache_insert(q, off, n);
	*t = n;
	return 0;
}

/* The kind of L2 entry e, validated: 0 or -EUCLEAN. */
static int entry_kind(struct cow_image *img, uint64_t e, uint64_t voff, int *kind)
{
	struct qcow2 *q = img->q2;
	if (e & L2E_COMPRESSED) {
		*kind = Q2_COMPRESSED;
		return 0;
	}
	if (e & L2E_RESERVED) {
		img_set_err(img, "%s: corrupt qcow2 image: L2 entry 0x%llx of offset %llu has "
			    "reserved bits set", img->path, (unsigned long long)e,
			    (unsigned long long)voff);
		return -EUCLEAN;
	}
	uint64_t off = e & L2E_OFFSET_MASK;
	if (off & (q->cluster_size - 1)) {
		img_set_err(img, "%s: corrupt qcow2 image: cluster offset %llu of offset %llu is "
			    "not aligned to the cluster size", img->path, (unsigned long long)off,
			    (unsigned long long)voff);
		return -EUCLEAN;
	}
	*kind = (e & L2E_ZERO) ? Q2_ZERO : off ? Q2_DATA : Q2_UNALLOC;
	return 0;
}

/*
 * The piece of cluster entry i of table t from byte `in` of the cluster: its kind, its file
 * offset (Q2_DATA), and how many bytes of the cluster from `in` it covers (the whole rest of
 * the cluster, or with extended L2 entries the subclusters of that kind in a row). 0 or
 * -EUCLEAN.
 */
static int piece_kind(struct cow_image *img, const uint64_t *t, uint32_t i, uint32_t in,
		      uint64_t voff, int *kind, uint64_t *host, uint32_t *plen)
{
	struct qcow2 *q = img->q2;
	uint64_t e = t[q->extl2 ? 2 * i : i];
	int r;

	*plen = q->cluster_size - in;
	*host = 0;
	if (!q->extl2 || (e & L2E_COMPRESSED)) {
		if ((r = entry_kind(img, e, voff, kind)))
			return r;
		if (*kind == Q2_DATA)
			*host = (e & L2E_OFFSET_MASK) + in;
		return 0;
	}
	/* extended: bit 0 of the entry is reserved, the bitmap says allocated (bits 0-31) or
	 * zero (bits 32-63) per subcluster, never both */
	uint64_t bm = t[2 * i + 1], off = e & L2E_OFFSET_MASK;
	uint32_t alloc = (uint32_t)bm, zero = (uint32_t)(bm >> 32), sc = in >> q->sc_bits, last;
	if ((e & (L2E_RESERVED | L2E_ZERO)) || (alloc & zero) || (alloc && !off) ||
	    (off & (q->cluster_size - 1))) {
		img_set_err(img, "%s: corrupt qcow2 image: extended L2 entry 0x%llx/0x%llx of offset "
			    "%llu is invalid", img->path, (unsigned long long)e,
			    (unsigned long long)bm, (unsigned long long)voff);
		return -EUCLEAN;
	}
	*kind = (zero >> sc) & 1 ? Q2_ZERO : (alloc >> sc) & 1 ? Q2_DATA : Q2_UNALLOC;
	for (last = sc + 1; last < 32; last++) {
		int k = (zero >> last) & 1 ? Q2_ZERO : (alloc >> last) & 1 ? Q2_DATA : Q2_UNALLOC;
		if (k != *kind)
			break;
	}
	*plen = (last << q->sc_bits) - in;
	if (*kind == Q2_DATA)
		*host = off + in;
	return 0;
}

int qcow2_map(struct cow_image *img, uint64_t voff, uint64_t len, struct q2_run *m)
{
	struct qcow2 *q = img->q2;
	uint64_t l1i = voff >> (q->cluster_bits + q->l2_bits);
	uint32_t l2i = (voff >> q->cluster_bits) & (q->l2_entries - 1);
	uint32_t in = voff & (q->cluster_size - 1);
	uint64_t span_left = ((uint64_t)(q->l2_entries - l2i) << q->cluster_bits) - in;
	uint64_t *t;
	int r;

	memset(m, 0, sizeof(*m));
	if (span_left > len)
		span_left = len;
	uint64_t l1e = l1i < q->l1_n ? q->l1[l1i] : 0;
	uint64_t l2off = l1e & L1E_OFFSET_MASK;
	if (!l2off) {
		m->kind = Q2_UNALLOC;
		m->len = span_left;
		return 0;
	}
	if ((l1e & L1E_RESERVED) || l2off & (q->cluster_size - 1) ||
	    !inside(l2off, q->cluster_size, q->file_size)) {
		img_set_err(img, "%s: corrupt qcow2 image: L1 entry %llu (0x%llx) is invalid or "
			    "points past the end of the file", img->path, (unsigned long long)l1i,
			    (unsigned long long)l1e);
		return -EUCLEAN;
	}
	if ((r = l2_get(img, l2off, &t)))
		return r;
	/* under q->lock from here */
	uint64_t e = t[q->extl2 ? 2 * l2i : l2i], host;
	uint32_t plen;
	if ((r = piece_kind(img, t, l2i, in, voff, &m->kind, &host, &plen)))
		goto out;
	if (m->kind == Q2_COMPRESSED) {
		uint64_t coff = e & ((1ull << q->csize_shift) - 1);
		uint64_t nsect = ((e >> q->csize_shift) & q->csize_mask) + 1;
		/* the data runs to the end of the last sector it touches */
		uint64_t csize = nsect * 512 - (coff & 511);
		if (!coff || coff >= q->file_size) {
			img_set_err(img, "%s: corrupt qcow2 image: compressed cluster of offset %llu "
				    "at %llu lies outside the file", img->path,
				    (unsigned long long)voff, (unsigned long long)coff);
			r = -EUCLEAN;
			goto out;
		}
		m->off = coff;
		m->csize = (uint32_t)csize;	/* at most 2 cluster sizes (the sector bits) */
		m->in = in;
		m->len = q->cluster_size - in < len ? q->cluster_size - in : len;
		goto out;
	}
	m->off = host;
	m->len = plen;
	/* join the following clusters of this table of the same kind (data: contiguous), as
	 * long as each piece runs to the end of its cluster */
	for (uint32_t i = l2i + 1; i < q->l2_entries && m->len < span_left &&
	     in + plen == q->cluster_size; i++) {
		int k;
		uint64_t v2 = voff + m->len, h2;
		in = 0;
		if (piece_kind(img, t, i, 0, v2, &k, &h2, &plen) || k != m->kind)
			break;	/* a bad entry is reported when a lookup starts there */
		if (k == Q2_DATA && h2 != m->off + m->len)
			break;
		m->len += plen;
	}
	if (m->len > span_left)
		m->len = span_left;
	if (m->kind != Q2_DATA)
		m->off = 0;
out:
	pthread_mutex_unlock(&q->lock);
	return r;
}

int qcow2_inflate(struct cow_image *img, const void *src, size_t srclen, void *dst)
{
	struct qcow2 *q = img->q2;
	bool ok = false;
	if (q->ctype == 0) {
		z_stream z;
		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, -12) != Z_OK)	/* raw deflate, 4 KiB window */
			return -ENOMEM;
		z.next_in = (Bytef *)src;
		z.avail_in = (uInt)srclen;
		z.next_out = dst;
		z.avail_out = q->cluster_size;
		int zr = inflate(&z, Z_FINISH);
		/* the stream may end exactly at the cluster's end, or the buffer fill first */
		ok = (zr == Z_STREAM_END || zr == Z_BUF_ERROR) && z.avail_out == 0;
		inflateEnd(&z);
	} else {
		ZSTD_DCtx *d = ZSTD_createDCtx();
		if (!d)
			return -ENOMEM;
		ZSTD_inBuffer ib = { src, srclen, 0 };
		ZSTD_outBuffer ob = { dst, q->cluster_size, 0 };
		/* the padding after the frame is not read: stop once the cluster is full */
		while (ob.pos < ob.size) {
			size_t in0 = ib.pos, out0 = ob.pos;
			size_t zr = ZSTD_decompressStream(d, &ob, &ib);
			if (ZSTD_isError(zr) || (ib.pos == in0 && ob.pos == out0))
				break;	/* an error, or no progress: a short stream */
		}
		ok = ob.pos == ob.size;
		ZSTD_freeDCtx(d);
	}
	if (!ok) {
		img_set_err(img, "%s: corrupt qcow2 image: a compressed cluster does not decompress "
			    "to %u bytes", img->path, q->cluster_size);
		return -EUCLEAN;
	}
	return 0;
}

void qcow2_get_info(struct cow_image *img, struct cow_qcow2_info *qi)
{
	struct qcow2 *q = img->q2;
	memset(qi, 0, sizeof(*qi));
	qi->version = q->version;
	qi->cluster_size = q->cluster_size;
	qi->compression_type = q->ctype;
	qi->refcount_bits = 1u << q->refcount_order;
	qi->nb_snapshots = q->nb_snapshots;
	qi->incompatible = q->incompat;
	qi->compatible = q->compat;
	qi->autoclear = q->autoclear;
	qi->dirty = q->incompat & INC_DIRTY;
	qi->corrupt = q->incompat & INC_CORRUPT;
	qi->lazy_refcounts = q->compat & 1;
}

/*
 * The snapshot table (QEMU's docs/interop/qcow2.txt, "Snapshots"): nb_snapshots entries from
 * snapshots_offset (cluster-aligned), each 8-byte aligned: l1_table_offset u64, l1_size
 * u32, id_str_size u16, name_size u16, date_sec u32, date_nsec u32, vm_clock_nsec u64,
 * vm_state_size u32, extra_data_size u32, extra data (version 3: vm_state_size_large u64,
 * disk_size u64, ...), the id string, the name, padding. Read in one bounded piece and
 * every field checked: a hostile table cannot make this allocate more than
 * QCOW2_MAX_SNAP_TABLE, nor read outside it.
 */
struct q2_snap {
	uint64_t l1_off, disk_size;
	uint32_t l1_size, date_sec, date_nsec;
	char id[128], name[128];
};

static int snap_table(struct cow_image *img, struct q2_snap **out, uint32_t *n)
{
	struct qcow2 *q = img->q2;
	uint8_t *t = NULL;
	struct q2_snap *v = NULL;
	uint64_t len;
	uint32_t pos = 0;
	int r = 0;

	*out = NULL;
	*n = 0;
	if (!q->nb_snapshots)
		return 0;
	if (q->nb_snapshots > QCOW2_MAX_SNAPSHOTS || q->snap_off % q->cluster_size ||
	    q->snap_off >= q->file_size) {
		img_set_err(img, "%s: corrupt qcow2 image: snapshot table of %u entries at %llu",
			    img->path, q->nb_snapshots, (unsigned long long)q->snap_off);
		return -EUCLEAN;
	}
	len = q->file_size - q->snap_off;
	if (len > QCOW2_MAX_SNAP_TABLE)
		len = QCOW2_MAX_SNAP_TABLE;
	len &= ~511ull;
	if (!len || !(t = meta_zalloc(len)) || !(v = calloc(q->nb_snapshots, sizeof(*v)))) {
		r = len ? -ENOMEM : -EUCLEAN;
		goto out;
	}
	if ((r = io_pread_all(img->fd, t, len, q->snap_off))) {
		img_set_err(img, "%s: reading the snapshot table: %s", img->path, strerror(-r));
		goto out;
	}
	for (uint32_t i = 0; i < q->nb_snapshots; i++) {
		if (len - pos < 40) {
			r = -EUCLEAN;
			break;
		}
		const uint8_t *e = t + pos;
		uint32_t idl = (uint32_t)e[12] << 8 | e[13], nl = (uint32_t)e[14] << 8 | e[15];
		uint32_t extra = be32(e + 36);
		uint64_t end = 40ull + extra + idl + nl;
		end = (end + 7) & ~7ull;
		if (extra > QCOW2_MAX_SNAP_EXTRA || idl == 0 || idl >= sizeof(v[i].id) ||
		    nl >= sizeof(v[i].name) || end > len - pos) {
			r = -EUCLEAN;
			break;
		}
		v[i].l1_off = be64(e);
		v[i].l1_size = be32(e + 8);
		v[i].date_sec = be32(e + 16);
		v[i].date_nsec = be32(e + 20);
		v[i].disk_size = extra >= 16 ? be64(e + 48) : img->vsize;
		memcpy(v[i].id, e + 40 + extra, idl);
		memcpy(v[i].name, e + 40 + extra + idl, nl);
		if (memchr(v[i].id, 0, idl) || memchr(v[i].name, 0, nl)) {
			r = -EUCLEAN;
			break;
		}
		pos += (uint32_t)end;
	}
	if (r == -EUCLEAN)
		img_set_err(img, "%s: corrupt qcow2 image: snapshot table entry out of bounds or "
			    "malformed", img->path);
out:
	free(t);
	if (r) {
		free(v);
		return r;
	}
	*out = v;
	*n = q->nb_snapshots;
	return 0;
}

int qcow2_snapshot_list(struct cow_image *img, struct cow_snap_info **out, uint32_t *n)
{
	struct q2_snap *s;
	uint32_t ns;
	int r = snap_table(img, &s, &ns);

	*out = NULL;
	*n = 0;
	if (r || !ns)
		return r;
	struct cow_snap_info *v = calloc(ns, sizeof(*v));
	if (!v) {
		free(s);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < ns; i++) {
		char *end;
		unsigned long id = strtoul(s[i].id, &end, 10);

		v[i].id = *end || id > UINT32_MAX ? 0 : (uint32_t)id;	/* ids are digits */
		snprintf(v[i].name, sizeof(v[i].name), "%s", s[i].name);
		v[i].date_sec = s[i].date_sec;
		v[i].date_nsec = s[i].date_nsec;
		v[i].virtual_size = s[i].disk_size;
	}
	free(s);
	*out = v;
	*n = ns;
	return 0;
}

int qcow2_use_snapshot(struct cow_image *img, const char *key, char *err)
{
	struct qcow2 *q = img->q2;
	struct q2_snap *s, *hit = NULL;
	uint8_t *raw = NULL;
	uint64_t *l1 = NULL, n, span, bytes;
	uint32_t ns;
	int r = snap_table(img, &s, &ns);

	if (r) {
		snprintf(err, COW_ERRLEN, "%s", img->err[0] ? img->err : strerror(-r));
		return r;
	}
	/* a name first, then an id (as for ucow images) */
	for (uint32_t i = 0; i < ns && !hit; i++)
		if (!strcmp(s[i].name, key))
			hit = &s[i];
	for (uint32_t i = 0; i < ns && !hit; i++)
		if (!strcmp(s[i].id, key))
			hit = &s[i];
	if (!hit) {
		snprintf(err, COW_ERRLEN, "%s: no snapshot '%s'", img->path, key);
		r = -ENOENT;
		goto out;
	}
	span = (uint64_t)q->cluster_size << q->l2_bits;
	if (hit->disk_size > (1ull << 62)) {
		r = -EUCLEAN;
		goto bad;
	}
	n = (hit->disk_size + span - 1) / span;
	if (hit->l1_size < n || hit->l1_size > QCOW2_MAX_L1_BYTES / 8 ||
	    (n && (!hit->l1_off || hit->l1_off % q->cluster_size ||
		   !inside(hit->l1_off, n * 8, q->file_size)))) {
		r = -EUCLEAN;
		goto bad;
	}
	if (n) {
		bytes = (n * 8 + 511) & ~511ull;
		if (!(raw = meta_zalloc(bytes)) || !(l1 = malloc(n * 8))) {
			r = -ENOMEM;
			snprintf(err, COW_ERRLEN, "%s: %s", img->path, strerror(ENOMEM));
			goto out;
		}
		if ((r = io_pread_all(img->fd, raw, bytes, hit->l1_off))) {
			snprintf(err, COW_ERRLEN, "%s: reading the L1 table of snapshot '%s': %s",
				 img->path, key, strerror(-r));
			goto out;
		}
		for (uint64_t i = 0; i < n; i++)
			l1[i] = be64(raw + i * 8);
	}
	free(q->l1);
	q->l1 = l1;
	l1 = NULL;
	q->l1_n = n;
	img->vsize = hit->disk_size;
	goto out;
bad:
	snprintf(err, COW_ERRLEN, "%s: corrupt qcow2 image: the L1 table of snapshot '%s' (%u "
		 "entries at %llu) is invalid for its size %llu", img->path, key, hit->l1_size,
		 (unsigned long long)hit->l1_off, (unsigned long long)hit->disk_size);
out:
	free(l1);
	free(raw);
	free(s);
	return r;
}
