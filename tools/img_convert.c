/* SPDX-License-Identifier: MIT */
/*
 * ucow convert: copy an image's content (a ucow image's whole backing chain, flattened) to
 * a new raw, ucow or qcow2 file. The output is sparse: runs the source maps as zero are
 * skipped, so are all-zero pieces of data (-S: their size; 0: write everything). DST is
 * built under a temporary name and renamed into place at the end: an error leaves nothing
 * behind. With -l, the source is one of SRC's internal snapshots (opened read-only in place
 * of the current state). With -B, DST is an overlay of the given backing file holding only
 * what differs from it. With -n, DST exists (a file or a block device) and is written in
 * place: zero runs are written as zeros there, unless --target-is-zero.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cowcore.h"
#include "chain.h"
#include "cmds.h"
#include "util.h"

static const char convert_help[] =
	"usage: ucow convert [-p] [-q] [-U] [-c] [-n] [-W] [-m N] [-f FMT] [-l SNAPSHOT]\n"
	"                    [-O raw|ucow|qcow2] [-o OPTIONS] [-B BACKING -F FMT] [-S SIZE]\n"
	"                    [--target-is-zero] [--allow-backing-outside] SRC DST\n"
	"\n"
	"Copy SRC's content to a new file DST (replacing an existing DST). A ucow or qcow2\n"
	"SRC is read through its whole backing chain: DST holds the flattened content and\n"
	"has no backing file. Zero runs are not written, so DST is sparse.\n"
	"\n"
	"  -f FMT        SRC's format: ucow or qcow2 (recognized by their magic) or raw\n"
	"  -l SNAPSHOT   copy this internal snapshot of SRC instead of its current state:\n"
	"                NAME (a name or a numeric id), snapshot.name=NAME or snapshot.id=ID\n"
	"  -O FMT        DST's format: raw (default), ucow, or qcow2 (version 3, for QEMU)\n"
	"  -o OPTIONS    ucow DST: chunk_size=N,block_size=N,journal_size=N,\n"
	"                preallocation=off|metadata|falloc|full,compression_level=N (1-9);\n"
	"                qcow2 DST: cluster_size=N (default 65536),compression_level=N (1-9)\n"
	"  -c            compress where it saves space: zlib-compressed chunks (ucow DST) or\n"
	"                clusters (qcow2 DST); level 6 unless -o compression_level=N\n"
	"  -B BACKING    a ucow DST with this backing file, holding only what differs from\n"
	"                it (BACKING is named as from DST's folder); -F FMT: its format\n"
	"  -F FMT        BACKING's format: ucow, qcow2 or raw\n"
	"  -S SIZE       zero runs of at least SIZE bytes (a multiple of 512, at most 2M;\n"
	"                default 4k) are not written; 0: write everything (fully allocated)\n"
	"  -m N          requests in flight, 1 to 16 (default 8; reads run ahead of writes)\n"
	"  -W            issue writes in any order (default: in order of offset)\n"
	"  -n            DST exists (a file or a block device): write into it in place\n"
	"                (-O: its format, raw by default); it must be at least SRC's size\n"
	"  --target-is-zero\n"
	"                with -n: DST reads as zeros already, zero runs need no writing\n"
	"  -p            show progress on stderr (not with -q)\n"
	"  --allow-backing-outside\n"
	"                follow backing files named by an absolute path or lying outside\n"
	"                SRC's folder (refused by default: an image from elsewhere could\n"
	"                name any file of this machine as its base)\n"
	"  -q            quiet: no progress\n"
	"  -U, --force-share\n"
	"                open SRC without a lock, even while another process writes it\n"
	"                (then a warning says the copy may be inconsistent)\n"
	"  --allow-network-backing\n"
	"                follow a backing image on an NBD server (an\n"
	"                nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                a read that needs that server fails after SEC\n"
	"                seconds without it (default 30)\n"
	"  -h, --help    this help\n";

#define CONV_BUF (2u << 20)	/* bytes per request */
#define CONV_INFLIGHT 8		/* -m default: requests in flight (qemu-img's) */
#define CONV_INFLIGHT_MAX 16
#define CONV_GRAIN 4096u	/* all-zero pieces this big are not written */

struct conv {
	const char *src, *dst;
	const char *snap;		/* -l: what the user asked for (NULL: the current state) */
	char snap_name[512], snap_id[32];	/* -l snapshot.name= / snapshot.id= ("": not given) */
	char tmp[4096];
	struct cow_image *si, *di;
	struct cow_ctx *sc, *dc;
	uint64_t size;
	struct cow_image *chain[COW_MAX_CHAIN + 1];	/* si and its backing images */
	size_t nchain;
	uint8_t *buf;
	struct progress pr;
	bool warned;			/* share_warn said it */
	unsigned share;			/* -U: COW_OPEN_SHARE */
	struct net_opts net;		/* --allow-network-backing, --nbd-timeout */
	unsigned confine;		/* COW_OPEN_CONFINE unless --allow-backing-outside */
	struct cow_qcow2_out *qw;	/* -O qcow2: the writer of DST */
	uint32_t q_cluster;		/* -O qcow2: its cluster size */
	int zlevel;			/* -c: the zlib level; 0: no compression */
	uint32_t grain;			/* -S: zero runs this long are skipped; 0: none */
	bool existing;			/* -n: DST exists, written in place */
	bool target_zero;		/* --target-is-zero */
	const char *bfile;		/* -B: DST's backing file, as named */
	int bfmt;			/* -F */
	struct cow_image *bi;		/* -B: the backing file, opened to compare with */
	struct cow_ctx *bc;
	uint64_t bsize;			/* its virtual size */
	uint8_t *bbuf;			/* what it holds where buf is */
	uint64_t zchunks;		/* -c, ucow DST: chunks stored compressed */
	unsigned inflight;		/* -m: requests (of CONV_BUF bytes) in flight */
	bool unordered;			/* -W: writes in any order */
	struct cow_info dinfo;		/* -c with a ucow DST: its geometry */
};

/*
 * -l ARG, as qemu-img takes it: "snapshot.name=NAME", "snapshot.id=ID" (both may be given,
 * comma-separated; ",," is a literal comma), or anything else as a name or id.
 */
static int parse_snap_arg(struct conv *c, const char *arg)
{
	const char *p;
	char key[32];
	size_t k;

	c->snap = arg;
	c->snap_name[0] = c->snap_id[0] = 0;
	if (strncmp(arg, "snapshot.", 9)) {
		if (!*arg)
			return usage_err("convert", "the snapshot name is empty");
		return 0;
	}
	for (p = arg; *p;) {
		char *to, *w;
		size_t cap;

		k = strcspn(p, "=,");
		if (p[k] != '=' || k >= sizeof(key))
			return usage_err("convert", "invalid snapshot option '%.*s' (use "
					 "snapshot.name=NAME or snapshot.id=ID)", (int)strcspn(p, ","), p);
		memcpy(key, p, k);
		key[k] = 0;
		if (!strcmp(key, "snapshot.name"))
			to = c->snap_name, cap = sizeof(c->snap_name);
		else if (!strcmp(key, "snapshot.id"))
			to = c->snap_id, cap = sizeof(c->snap_id);
		else
			return usage_err("convert", "unknown snapshot option '%s' (snapshot.name or "
					 "snapshot.id)", key);
		p += k + 1;
		for (w = to; *p; p++) {
			if (*p == ',' && p[1] != ',')
				break;
			if (*p == ',')
				p++;	/* ",," is a comma */
			if (w == to + cap - 1)
				return usage_err("convert", "%s is too long", key);
			*w++ = *p;
		}
		*w = 0;
		if (*p == ',')
			p++;
		if (!*to)
			return usage_err("convert", "%s is empty", key);
	}
	return 0;
}

/*
 * The key to hand cow_open() as the snapshot: for snapshot.name= / snapshot.id=, the name of
 * the one snapshot that matches exactly (the engine tries names before ids, and names are unique, so
 * its name selects exactly it). 0, or -errno with the error reported.
 */
static int resolve_snap(struct conv *c, char *key, size_t keylen)
{
	char err[COW_ERRLEN] = "";
	struct cow_snap_info *v = NULL;
	struct cow_image *img;
	uint32_t n = 0, i;
	int rc;

	if (!c->snap_name[0] && !c->snap_id[0]) {
		snprintf(key, keylen, "%s", c->snap);
		return 0;
	}
	rc = cow_open(c->src, &(struct cow_open_opts){ .fmt = COW_FMT_NONE,
			.flags = COW_OPEN_RDONLY | COW_OPEN_NOCHAIN | c->share },
			&img, err, COW_ERRLEN);
	if (rc < 0) {
		report(c->src, NULL, rc, err);
		return rc;
	}
	rc = cow_snapshot_list(img, &v, &n);
	if (rc < 0) {
		report(c->src, NULL, rc, cow_errmsg(img));
		cow_close(img);
		return rc;
	}
	cow_close(img);
	for (i = 0; i < n; i++) {
		char id[16];

		snprintf(id, sizeof(id), "%u", v[i].id);
		if ((!c->snap_name[0] || !strcmp(c->snap_name, v[i].name)) &&
		    (!c->snap_id[0] || !strcmp(c->snap_id, id)))
			break;
	}
	if (i == n) {
		if (c->snap_name[0] && c->snap_id[0])
			ucow_err("%s: no snapshot '%s' with id %s", c->src, c->snap_name, c->snap_id);
		else
			ucow_err("%s: no snapshot '%s'", c->src,
				 c->snap_name[0] ? c->snap_name : c->snap_id);
		free(v);
		return -ENOENT;
	}
	snprintf(key, keylen, "%s", v[i].name);
	free(v);
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* One range of DST: write len bytes of data, or zeros (data NULL). */
static int put(struct conv *c, const uint8_t *data, uint64_t len, uint64_t off)
{
	int rc;

	if (c->qw)
		rc = data ? cow_qcow2_out_write(c->qw, data, len, off) : 0;
	else
		rc = cow_rw(c->dc, data ? COW_WRITE : COW_WRITE_ZEROES, (void *)data, len, off, 0);
	if (rc < 0)
		ucow_err("%s: write failed at offset %" PRIu64 ": %s", c->dst, off,
			 err_text_for(rc, c->qw ? "" : cow_errmsg(c->di), c->tmp));
	return rc;
}

/* What DST needs for a piece of SRC: nothing, its data, or zeros written. */
enum { P_SKIP, P_DATA, P_ZERO };

static int piece(struct conv *c, uint64_t i, uint64_t g)
{
	bool zero = all_zero(c->buf + i, g);

	if (c->bi)	/* -B: only what differs from the backing file */
		return !memcmp(c->buf + i, c->bbuf + i, g) ? P_SKIP : zero ? P_ZERO : P_DATA;
	if (!zero || !c->grain)
		return P_DATA;		/* -S 0: everything is written, zeros too */
	return c->existing && !c->target_zero ? P_ZERO : P_SKIP;
}

/* buf holds SRC's [off, off + n): put in DST what it needs, in runs of one kind. */
static int emit(struct conv *c, uint64_t off, uint64_t n)
{
	uint64_t i = 0, gs = c->grain ? c->grain : CONV_GRAIN;
	int rc = c->bi ? read_padded(c->bc, c->bi, c->bfile, c->bsize, c->bbuf, off, n) : 0;

	while (rc == 0 && i < n) {
		uint64_t start = i, g = n - i < gs ? n - i : gs;
		int k = piece(c, i, g);

		for (i += g; i < n; i += g) {
			g = n - i < gs ? n - i : gs;
			if (piece(c, i, g) != k)
				break;
		}
		if (k != P_SKIP)
			rc = put(c, k == P_DATA ? c->buf + start : NULL, i - start, off + start);
	}
	return rc;
}

/*
 * -c with a ucow DST: whole chunks of DST, read in batches, deflated by up to Z_THREADS
 * threads, then stored in chunk order — compressed where the stream is at least a block
 * smaller than the chunk (and within the format's limit), plain otherwise. Which blocks a
 * chunk writes follows the rules of the plain copy at block granularity: with -B the
 * blocks that differ from the backing file, else the blocks that are not zero (every
 * block with -S 0). Chunks with nothing to write are skipped.
 */
#define Z_THREADS 8u
#define Z_BATCH_BYTES (64u << 20)

struct zslot {
	uint64_t chunk;
	uint32_t len;			/* bytes of the virtual size in the chunk */
	uint8_t *data, *z;		/* the chunk, its stream */
	uint32_t zn;			/* stream bytes; 0: store plain */
	uint64_t bm[16];		/* blocks to write (up to 1024) */
	int level;
	uint32_t cs, cap;
};

struct zjob {
	struct zslot *s;
	unsigned n, step, first;
};

static void *zthread(void *arg)
{
	struct zjob *j = arg;

	for (unsigned i = j->first; i < j->n; i += j->step) {
		struct zslot *sl = &j->s[i];

		if (cow_compress_chunk(sl->data, sl->cs, sl->level, sl->z, sl->cap, &sl->zn) < 0)
			sl->zn = 0;
	}
	return NULL;
}

static void zrun(struct zslot *s, unsigned n, unsigned nt)
{
	pthread_t t[Z_THREADS];
	struct zjob jobs[Z_THREADS];
	unsigned started = 0;

	if (nt > n)
		nt = n;
	for (unsigned i = 0; i < nt; i++) {
		jobs[i] = (struct zjob){ s, n, nt, i };
		if (i && pthread_create(&t[i], NULL, zthread, &jobs[i]) == 0)
			started |= 1u << i;
	}
	if (nt)
		zthread(&jobs[0]);
	for (unsigned i = 1; i < nt; i++) {
		if (started & (1u << i))
			pthread_join(t[i], NULL);
		else
			zthread(&jobs[i]);	/* no thread: its share here */
	}
}

/* Read chunk sl->chunk of SRC and decide its blocks; false: nothing to write. */
static int zfill(struct conv *c, struct zslot *sl, bool *any)
{
	uint32_t cs = c->dinfo.chunk_size, bs = c->dinfo.block_size;
	uint64_t off = sl->chunk * cs, run, pos = 0;
	size_t idx;
	int rc = 0;

	*any = false;
	memset(sl->bm, 0, sizeof(sl->bm));
	memset(sl->data, 0, cs);
	/* runs the chain maps as zero need no read (nor a write, without -B or -S 0) */
	while (pos < sl->len) {
		int st = chain_map(c->chain, c->nchain, off + pos, sl->len - pos, &run, &idx);

		if (st < 0) {
			ucow_err("%s: mapping offset %" PRIu64 ": %s", c->src, off + pos,
				 err_text_for(st, cow_errmsg(c->chain[idx]), c->src));
			return st;
		}
		if (st != COW_MAP_ZERO) {
			rc = cow_rw(c->sc, COW_READ, sl->data + pos, run, off + pos, 0);
			if (rc < 0) {
				ucow_err("%s: read failed at offset %" PRIu64 ": %s", c->src,
					 off + pos, err_text_for(rc, cow_errmsg(c->si), c->src));
				return rc;
			}
		}
		pos += run;
	}
	if (c->bi && (rc = read_padded(c->bc, c->bi, c->bfile, c->bsize, c->bbuf, off, sl->len)))
		return rc;
	for (uint32_t b = 0; (uint64_t)b * bs < sl->len; b++) {
		uint8_t *p = sl->data + (uint64_t)b * bs;
		uint32_t n = sl->len - b * bs < bs ? sl->len - b * bs : bs;
		bool zero = all_zero(p, n), want;

		want = c->bi ? memcmp(p, c->bbuf + (uint64_t)b * bs, n) != 0 : !zero || !c->grain;
		if (want) {
			sl->bm[b / 64] |= 1ull << (b % 64);
			*any = true;
		} else if (!zero) {
			memset(p, 0, n);	/* not written: zeros deflate to nothing */
		}
	}
	return 0;
}

/* Store a filled slot: its stream, or its blocks to write in runs. */
static int zstore(struct conv *c, struct zslot *sl)
{
	uint32_t bs = c->dinfo.block_size, nb = (sl->len + bs - 1) / bs;
	uint64_t off = sl->chunk * c->dinfo.chunk_size;
	int rc = 0;

	if (sl->zn) {
		rc = cow_put_compressed(c->di, sl->chunk, sl->z, sl->zn, sl->bm);
		if (rc < 0)
			ucow_err("%s: write failed at offset %" PRIu64 ": %s", c->dst, off,
				 err_text_for(rc, cow_errmsg(c->di), c->tmp));
		else
			c->zchunks++;
		return rc;
	}
	for (uint32_t b = 0; b < nb && rc == 0;) {
		uint32_t e = b;
		bool set = (sl->bm[b / 64] >> (b % 64)) & 1;

		while (e < nb && (((sl->bm[e / 64] >> (e % 64)) & 1) == set))
			e++;
		if (set) {
			uint64_t end = (uint64_t)e * bs < sl->len ? (uint64_t)e * bs : sl->len;

			rc = put(c, sl->data + (uint64_t)b * bs, end - (uint64_t)b * bs,
				 off + (uint64_t)b * bs);
		}
		b = e;
	}
	return rc;
}

static int copy_compressed(struct conv *c)
{
	uint32_t cs = c->dinfo.chunk_size, bs = c->dinfo.block_size;
	uint64_t nchunks = (c->size + cs - 1) / cs, next = 0;
	unsigned nslots = Z_BATCH_BYTES / cs, nt;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct zslot *s;
	int rc = 0;

	nt = ncpu < 1 ? 1 : ncpu > (long)Z_THREADS ? Z_THREADS : (unsigned)ncpu;
	if (nslots < 1)
		nslots = 1;
	if (nslots > 4 * nt)
		nslots = 4 * nt;
	s = calloc(nslots, sizeof(*s));
	if (c->bi) {	/* open_backing's buffer holds CONV_BUF: a chunk may be larger */
		free(c->bbuf);
		if (posix_memalign((void **)&c->bbuf, 4096, cs))
			c->bbuf = NULL;
	}
	for (unsigned i = 0; s && i < nslots; i++) {
		s[i].cs = cs;
		s[i].level = c->zlevel;
		s[i].cap = cs - bs < COW_COMPRESSED_MAX ? cs - bs : COW_COMPRESSED_MAX;
		if (posix_memalign((void **)&s[i].data, 4096, cs) ||
		    posix_memalign((void **)&s[i].z, 4096, s[i].cap)) {
			rc = -ENOMEM;
			break;
		}
	}
	if (!s || (c->bi && !c->bbuf))
		rc = -ENOMEM;
	if (rc < 0)
		ucow_err("%s: out of memory", c->dst);
	progress_show(&c->pr, 0, c->size);
	while (rc == 0 && next < nchunks) {
		unsigned n = 0;

		while (rc == 0 && n < nslots && next < nchunks) {
			struct zslot *sl = &s[n];
			bool any;

			sl->chunk = next++;
			sl->len = c->size - sl->chunk * cs < cs ? (uint32_t)(c->size - sl->chunk * cs) : cs;
			rc = zfill(c, sl, &any);
			n += any;
		}
		if (rc == 0)
			zrun(s, n, nt);
		for (unsigned i = 0; i < n && rc == 0; i++)
			rc = zstore(c, &s[i]);
		progress_show(&c->pr, next * cs < c->size ? next * cs : c->size, c->size);
	}
	for (unsigned i = 0; s && i < nslots; i++) {
		free(s[i].data);
		free(s[i].z);
	}
	free(s);
	if (rc == 0 && (rc = cow_rw(c->dc, COW_FLUSH, NULL, 0, 0, 0)) < 0)
		ucow_err("%s: flush failed: %s", c->dst, err_text_for(rc, cow_errmsg(c->di), c->tmp));
	return rc;
}

/*
 * The plain copy (no -B, no -c, not to qcow2): up to c->inflight slots of CONV_BUF bytes in
 * flight, each a read of SRC, then the writes its content needs, all through the engine's
 * asynchronous path on one thread (both images' contexts share one io_uring). Reads run
 * ahead of writes; a slot's writes are issued once every earlier slot's were (qemu-img's
 * in-order writes), or as soon as its read is done with -W.
 */
enum { S_FREE, S_READING, S_READY, S_WRITING };
#define SLOT_WRITES (CONV_BUF / CONV_GRAIN + 1)

struct pipe;
struct cslot {
	struct conv *c;
	struct pipe *pp;
	struct cow_req rd;
	struct cow_req *wr;		/* SLOT_WRITES */
	uint8_t *buf;
	uint64_t off, len, seq;
	int state, res;
	unsigned pending;
	bool zero_write;		/* a zero run that must be written as zeros (-n) */
};

struct pipe {
	struct cslot *s;
	unsigned n;
	uint64_t next_write;		/* the seq whose writes go next (in order) */
	uint64_t done;			/* bytes written or skipped, for progress */
	int err;
};

static void slot_read_done(struct cow_req *req, int res)
{
	struct cslot *sl = req->priv;

	sl->res = res;
	sl->state = S_READY;
}

static void slot_write_done(struct cow_req *req, int res)
{
	struct cslot *sl = req->priv;

	if (res < 0 && !sl->res)
		sl->res = res;
	if (res < 0 && !sl->pp->err) {	/* the first error only: one line */
		sl->pp->err = res;
		ucow_err("%s: write failed at offset %" PRIu64 ": %s", sl->c->dst, req->off,
			 err_text_for(res, cow_errmsg(sl->c->di), sl->c->tmp));
	}
	if (--sl->pending == 0)
		sl->state = S_FREE;
}

/* Issue the writes a read slot needs (the runs emit would write). */
static void slot_write(struct pipe *pp, struct cslot *sl)
{
	struct conv *c = sl->c;
	uint64_t i = 0, gs = c->grain ? c->grain : CONV_GRAIN;
	unsigned nw = 0;

	if (sl->zero_write) {
		sl->wr[nw++] = (struct cow_req){ .op = COW_WRITE_ZEROES, .off = sl->off,
						  .len = sl->len };
	} else {
		while (i < sl->len && nw < SLOT_WRITES) {
			uint64_t start = i, g = sl->len - i < gs ? sl->len - i : gs;
			uint8_t *save = c->buf;
			int k;

			c->buf = sl->buf;	/* piece() looks at c->buf */
			k = piece(c, i, g);
			for (i += g; i < sl->len; i += g) {
				g = sl->len - i < gs ? sl->len - i : gs;
				if (piece(c, i, g) != k)
					break;
			}
			c->buf = save;
			if (k != P_SKIP)
				sl->wr[nw++] = (struct cow_req){
					.op = k == P_DATA ? COW_WRITE : COW_WRITE_ZEROES,
					.off = sl->off + start, .len = i - start,
					.buf = k == P_DATA ? sl->buf + start : NULL };
		}
	}
	pp->done += sl->len;
	if (!nw) {
		sl->state = S_FREE;
		return;
	}
	sl->state = S_WRITING;
	sl->pending = nw + 1;	/* + 1 while submitting: a write may complete at once */
	for (unsigned k = 0; k < nw; k++) {
		sl->wr[k].cb = slot_write_done;
		sl->wr[k].priv = sl;
		cow_submit(c->dc, &sl->wr[k]);
	}
	if (--sl->pending == 0)
		sl->state = S_FREE;
}

static int copy_pipelined(struct conv *c, struct cow_backend *be)
{
	struct pipe pp = { .n = c->inflight };
	uint64_t off = 0, seq = 0;
	int rc = 0;

	pp.s = calloc(pp.n, sizeof(*pp.s));
	for (unsigned i = 0; pp.s && i < pp.n; i++) {
		pp.s[i].c = c;
		pp.s[i].wr = calloc(SLOT_WRITES, sizeof(*pp.s[i].wr));
		if (!pp.s[i].wr || posix_memalign((void **)&pp.s[i].buf, 4096, CONV_BUF)) {
			pp.s[i].buf = NULL;
			rc = -ENOMEM;
		}
	}
	if (!pp.s || rc < 0) {
		ucow_err("%s: out of memory", c->dst);
		rc = -ENOMEM;
		goto out;
	}
	progress_show(&c->pr, 0, c->size);
	for (;;) {
		bool busy = false;

		/* reads into free slots, in order of offset */
		for (unsigned i = 0; i < pp.n && off < c->size && !pp.err; i++) {
			struct cslot *sl = &pp.s[i];
			uint64_t len = c->size - off < CONV_BUF ? c->size - off : CONV_BUF, run;
			size_t idx;
			int st;

			if (sl->state != S_FREE)
				continue;
			st = chain_map(c->chain, c->nchain, off, len, &run, &idx);
			if (st < 0) {
				ucow_err("%s: mapping offset %" PRIu64 ": %s", c->src, off,
					 err_text_for(st, cow_errmsg(c->chain[idx]), c->src));
				pp.err = st;
				break;
			}
			*sl = (struct cslot){ .c = c, .pp = &pp, .wr = sl->wr, .buf = sl->buf,
					      .off = off, .len = run, .seq = seq++ };
			off += run;
			if (st != COW_MAP_ZERO) {
				sl->state = S_READING;
				sl->rd = (struct cow_req){ .op = COW_READ, .off = sl->off,
							   .len = run, .buf = sl->buf,
							   .cb = slot_read_done, .priv = sl };
				cow_submit(c->sc, &sl->rd);
			} else if (!c->grain) {
				memset(sl->buf, 0, run);	/* -S 0: zeros written out */
				sl->state = S_READY;
			} else {
				sl->zero_write = c->existing && !c->target_zero;
				sl->len = sl->zero_write ? run : 0;	/* else nothing to write */
				if (!sl->zero_write)
					pp.done += run;
				sl->state = S_READY;
			}
		}
		/* writes of the slots whose reads are done: in order, or any with -W */
		for (bool again = true; again && !pp.err;) {
			again = false;
			for (unsigned i = 0; i < pp.n; i++) {
				struct cslot *sl = &pp.s[i];

				if (sl->state != S_READY ||
				    (!c->unordered && sl->seq != pp.next_write))
					continue;
				if (sl->res) {
					ucow_err("%s: read failed at offset %" PRIu64 ": %s", c->src,
						 sl->off, err_text_for(sl->res, cow_errmsg(c->si),
								       c->src));
					pp.err = sl->res;
					sl->state = S_FREE;
					break;
				}
				if (sl->seq == pp.next_write)
					pp.next_write++;
				slot_write(&pp, sl);
				again = !c->unordered;
			}
		}
		progress_show(&c->pr, pp.done < c->size ? pp.done : c->size, c->size);
		for (unsigned i = 0; i < pp.n; i++) {
			if (pp.s[i].state == S_READING || pp.s[i].state == S_WRITING ||
			    (pp.s[i].state == S_READY && !pp.err))
				busy = true;
		}
		if (!busy && (off >= c->size || pp.err))
			break;
		/* -W: a READY slot out of order waits for nothing; in order it waits for the
		 * reads before it, which are in flight */
		cow_ctx_poll(c->sc);
		cow_ctx_poll(c->dc);
		if (cow_backend_inflight(be)) {
			int r = cow_backend_submit_wait(be, 1);

			if (r < 0) {
				ucow_err("%s: I/O failed: %s", c->dst, strerror(-r));
				rc = r;
				goto out;	/* the backend is broken: nothing sane is left */
			}
		}
	}
	rc = pp.err;
	if (rc == 0 && (rc = cow_rw(c->dc, COW_FLUSH, NULL, 0, 0, 0)) < 0)
		ucow_err("%s: flush failed: %s", c->dst, err_text_for(rc, cow_errmsg(c->di), c->tmp));
out:
	for (unsigned i = 0; pp.s && i < pp.n; i++) {
		free(pp.s[i].buf);
		free(pp.s[i].wr);
	}
	free(pp.s);
	return rc;
}

static int copy_all(struct conv *c, struct cow_backend *be)
{
	uint64_t off = 0, run;
	int st, rc = 0;

	if (c->zlevel && !c->qw) {
		cow_get_info(c->di, &c->dinfo);
		return copy_compressed(c);
	}
	if (!c->qw && !c->bi)
		return copy_pipelined(c, be);

	progress_show(&c->pr, 0, c->size);
	while (off < c->size) {
		uint64_t len = c->size - off < CONV_BUF ? c->size - off : CONV_BUF;
		size_t i;

		/* a run the last image leaves to a backing image not open: read it through */
		st = chain_map(c->chain, c->nchain, off, len, &run, &i);
		if (st < 0) {
			ucow_err("%s: mapping offset %" PRIu64 ": %s", c->src, off,
				 err_text_for(st, cow_errmsg(c->chain[i]), c->src));
			return st;
		}
		if (st != COW_MAP_ZERO) {
			rc = cow_rw(c->sc, COW_READ, c->buf, run, off, 0);
			if (rc < 0) {
				ucow_err("%s: read failed at offset %" PRIu64 ": %s", c->src, off,
					 err_text_for(rc, cow_errmsg(c->si), c->src));
				return rc;
			}
			rc = emit(c, off, run);
		} else if (c->bi || !c->grain) {
			/* zeros: still compared with the backing file, or written out */
			memset(c->buf, 0, run);
			rc = emit(c, off, run);
		} else if (c->existing && !c->target_zero) {
			rc = put(c, NULL, run, off);
		}
		if (rc < 0)
			return rc;
		off += run;
		progress_show(&c->pr, off, c->size);
	}
	if (c->qw)
		return 0;	/* written out and synced by cow_qcow2_out_close */
	rc = cow_rw(c->dc, COW_FLUSH, NULL, 0, 0, 0);
	if (rc < 0)
		ucow_err("%s: flush failed: %s", c->dst, err_text_for(rc, cow_errmsg(c->di), c->tmp));
	return rc;
}

/* Make the empty destination (under c->tmp) and open it. */
static int make_dst(struct conv *c, int ofmt, struct cow_create_opts *co)
{
	char err[COW_ERRLEN] = "";
	int rc, fd;

	if (ofmt == COW_FMT_QCOW2) {
		rc = cow_qcow2_out_create(c->tmp, c->size, c->q_cluster, c->zlevel, &c->qw, err,
					  COW_ERRLEN);
		if (rc < 0)
			report(c->dst, c->tmp, rc, err);
		return rc;
	}
	if (ofmt == COW_FMT_RAW) {
		fd = open(c->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (fd < 0)
			rc = -errno;
		else {
			rc = ftruncate(fd, (off_t)c->size) < 0 ? -errno : 0;
			close(fd);
		}
		if (rc < 0) {
			ucow_err("%s: cannot create: %s", c->dst, strerror(-rc));
			return rc;
		}
	} else {
		co->size = c->size;
		co->backing = c->bfile;
		co->backing_fmt = c->bfmt;
		co->open_flags = c->net.flags;
		co->net_timeout_ms = c->net.timeout_ms;
		rc = cow_create(c->tmp, co, err, COW_ERRLEN);
		if (rc < 0) {
			report(c->dst, c->tmp, rc, err);
			return rc;
		}
	}
	rc = cow_open(c->tmp, &(struct cow_open_opts){ .fmt = ofmt, .flags = c->net.flags,
			.net_timeout_ms = c->net.timeout_ms }, &c->di, err, COW_ERRLEN);
	if (rc < 0)
		report(c->dst, c->tmp, rc, err);
	return rc;
}

/* DST must not be SRC or one of its backing files: we would replace what we read. */
static int dst_in_chain(struct conv *c)
{
	struct stat sd, ss;

	if (stat(c->dst, &sd) < 0)
		return 0;
	for (struct cow_image *i = c->si; i; i = cow_backing_image(i)) {
		struct cow_info in;

		cow_get_info(i, &in);
		if (in.path && stat(in.path, &ss) == 0 && ss.st_dev == sd.st_dev &&
		    ss.st_ino == sd.st_ino)
			return 1;
	}
	return 0;
}

/* -n: DST exists; open it read-write in its format (raw unless -O), at least SRC's size. */
static int open_existing(struct conv *c, int ofmt)
{
	char err[COW_ERRLEN] = "";
	struct cow_info in;
	int rc;

	snprintf(c->tmp, sizeof(c->tmp), "%s", c->dst);	/* errors name DST itself */
	if (ofmt == COW_FMT_NONE) {
		/* no -O: raw, but a file that is an image is not overwritten as raw bytes */
		rc = cow_open(c->dst, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY |
				COW_OPEN_SHARE | c->net.flags, .net_timeout_ms = c->net.timeout_ms },
				&c->di, err, COW_ERRLEN);
		if (rc == 0) {
			cow_close(c->di);
			c->di = NULL;
			ucow_err("%s: is an image: give its format (-O ucow), or -O raw to overwrite "
				 "it byte for byte", c->dst);
			return -EINVAL;
		}
		ofmt = COW_FMT_RAW;
	}
	rc = cow_open(c->dst, &(struct cow_open_opts){ .fmt = ofmt, .flags = c->net.flags,
			.net_timeout_ms = c->net.timeout_ms }, &c->di, err, COW_ERRLEN);
	if (rc == -ENOENT) {
		ucow_err("%s: does not exist (-n writes into an existing image)", c->dst);
		return rc;
	}
	if (rc < 0) {
		report(c->dst, c->dst, rc, err);
		return rc;
	}
	cow_get_info(c->di, &in);
	if (in.virtual_size < c->size) {
		ucow_err("%s: is %" PRIu64 " bytes, smaller than %s (%" PRIu64 " bytes)", c->dst,
			 in.virtual_size, c->src, c->size);
		cow_close(c->di);
		c->di = NULL;
		return -ENOSPC;
	}
	return 0;
}

/* -B: the backing file, named as from DST's folder, opened to compare with. */
static int open_backing(struct conv *c, struct cow_backend *be)
{
	char err[COW_ERRLEN] = "", path[8192];
	const char *slash = strrchr(c->dst, '/');
	struct cow_info in;
	int rc;

	if (c->bfile[0] != '/' && slash)
		snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - c->dst), c->dst, c->bfile);
	else
		snprintf(path, sizeof(path), "%s", c->bfile);
	rc = cow_open(path, &(struct cow_open_opts){ .fmt = c->bfmt,
			.flags = COW_OPEN_RDONLY | c->confine | c->net.flags,
			.net_timeout_ms = c->net.timeout_ms }, &c->bi, err, COW_ERRLEN);
	if (rc < 0) {
		report_backing(c->bfile, rc, err);
		return rc;
	}
	cow_get_info(c->bi, &in);
	c->bsize = in.virtual_size;
	rc = cow_ctx_new(c->bi, be, &c->bc);
	if (rc == 0 && posix_memalign((void **)&c->bbuf, 4096, CONV_BUF))
		rc = -ENOMEM;
	if (rc < 0) {
		ucow_err("%s: %s", c->bfile, strerror(-rc));
		if (c->bc)
			cow_ctx_free(c->bc);
		cow_close(c->bi);
		c->bc = NULL;
		c->bi = NULL;
	}
	return rc;
}

static int convert(struct conv *c, int sfmt, int ofmt, struct cow_create_opts *co)
{
	char err[COW_ERRLEN] = "";
	struct cow_backend *be = NULL;
	struct cow_info in;
	const char *why;
	int rc;

	if (c->snap) {
		char key[256];

		if (sfmt == COW_FMT_RAW) {
			ucow_err("%s: a raw image has no snapshots", c->src);
			return -EINVAL;
		}
		rc = resolve_snap(c, key, sizeof(key));
		if (rc < 0)
			return rc;
		rc = cow_open(c->src, &(struct cow_open_opts){
				.flags = COW_OPEN_RDONLY | c->confine | c->share | c->net.flags,
				.net_timeout_ms = c->net.timeout_ms, .snapshot = key },
				&c->si, err, COW_ERRLEN);
	} else {
		rc = cow_open(c->src, &(struct cow_open_opts){ .fmt = sfmt,
				.flags = COW_OPEN_RDONLY | c->confine | c->share | c->net.flags,
				.net_timeout_ms = c->net.timeout_ms },
				&c->si, err, COW_ERRLEN);
	}
	if (rc < 0 && c->snap && rc == -EMEDIUMTYPE)
		report(c->src, NULL, rc, err);	/* -f raw would not help: raw has no snapshots */
	else if (rc < 0)
		report_backing(c->src, rc, err);
	if (rc < 0)
		return rc;
	if (c->share)
		share_warn(c->si, c->src, &c->warned);
	cow_get_info(c->si, &in);
	c->size = in.virtual_size;
	for (struct cow_image *i = c->si; i; i = cow_backing_image(i))
		c->chain[c->nchain++] = i;	/* at most COW_MAX_CHAIN + 1: open limits it */
	if (dst_in_chain(c)) {
		ucow_err("%s: is the source image or one of its backing files", c->dst);
		rc = -EINVAL;
		goto close_src;
	}
	if (c->existing) {
		rc = open_existing(c, ofmt);
		if (rc < 0)
			goto close_src;
		goto copy;
	}
	rc = check_replaceable(c->dst, &why);
	if (rc < 0) {
		ucow_err("%s: cannot replace: %s", c->dst, why ? why : strerror(-rc));
		goto close_src;
	}
	rc = tmp_sibling(c->dst, c->tmp, sizeof(c->tmp));
	if (rc < 0) {
		ucow_err("%s: cannot create: %s", c->dst, strerror(-rc));
		goto close_src;
	}
	tmp_guard(c->tmp);
	rc = make_dst(c, ofmt, co);
	if (rc < 0)
		goto remove_tmp;
copy:
	rc = cow_backend_new("uring", 64, &be);
	if (rc < 0) {
		ucow_err("%s: cannot set up the I/O backend: %s", c->dst, strerror(-rc));
		goto close_dst;
	}
	rc = cow_ctx_new(c->si, be, &c->sc);
	if (rc < 0) {
		ucow_err("%s: %s", c->src, err_text_for(rc, cow_errmsg(c->si), c->src));
		goto free_be;
	}
	if (!c->qw) {
		rc = cow_ctx_new(c->di, be, &c->dc);
		if (rc < 0) {
			ucow_err("%s: %s", c->dst, err_text_for(rc, cow_errmsg(c->di), c->tmp));
			goto free_sc;
		}
	}
	if (c->bfile) {
		rc = open_backing(c, be);
		if (rc < 0)
			goto free_dc;
	}
	rc = copy_all(c, be);
	if (c->bc)
		cow_ctx_free(c->bc);
	if (c->bi)
		cow_close(c->bi);
free_dc:
	if (c->dc)
		cow_ctx_free(c->dc);
free_sc:
	cow_ctx_free(c->sc);
free_be:
	cow_backend_free(be);
close_dst:
	{
		int r2 = c->qw ? cow_qcow2_out_close(c->qw, rc == 0) : cow_close(c->di);

		if (r2 < 0 && rc == 0) {
			ucow_err("%s: closing: %s", c->dst, strerror(-r2));
			rc = r2;
		}
	}
	if (c->existing)
		goto close_src;		/* written in place: nothing to rename or remove */
	if (rc == 0) {
		rc = replace_file(c->tmp, c->dst);
		if (rc < 0)
			ucow_err("%s: cannot create: %s", c->dst, strerror(-rc));
	}
remove_tmp:
	if (rc < 0)
		unlink(c->tmp);
	tmp_guard(NULL);
close_src:
	if (c->share)
		share_warn(c->si, c->src, &c->warned);
	cow_close(c->si);
	return rc;
}

#define Z_DEFAULT_LEVEL 6	/* zlib's default */

/*
 * -o for a qcow2 DST: cluster_size=N (bytes, k/M suffixes: a power of two from 512 to
 * 2 MiB) and compression_level=N (1-9, with -c). 0, or -1 with the error said.
 */
static int parse_qcow2_opts(const char *dst, const char *opts, uint32_t *cs, int *level,
			    bool compress)
{
	char *copy = strdup(opts), *save = NULL, *tok;
	int rc = 0;

	if (!copy) {
		ucow_err("%s: out of memory", dst);
		return -1;
	}
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		char *v = strchr(tok, '=');
		const char *why = NULL;
		uint64_t n;

		if (!v) {
			ucow_err("%s: -o '%s': expected KEY=VALUE", dst, tok);
			rc = -1;
			break;
		}
		*v++ = 0;
		if (!strcmp(tok, "cluster_size")) {
			if (parse_bytes(v, &n, &why) < 0 || n < 512 || n > (2u << 20) ||
			    (n & (n - 1))) {
				if (parse_bytes(v, &n, &why) == 0)
					why = "not a power of two from 512 to 2M";
				ucow_err("%s: -o cluster_size=%s: %s", dst, v, why);
				rc = -1;
			} else {
				*cs = (uint32_t)n;
			}
		} else if (!strcmp(tok, "compression_level")) {
			if (!compress || strlen(v) != 1 || v[0] < '1' || v[0] > '9') {
				ucow_err("%s: -o compression_level=%s: %s", dst, v, compress ?
					 "not 1 to 9" : "needs -c");
				rc = -1;
			} else {
				*level = v[0] - '0';
			}
		} else {
			ucow_err("%s: -o '%s': unknown option for qcow2 (cluster_size, "
				 "compression_level)", dst, tok);
			rc = -1;
		}
	}
	free(copy);
	return rc;
}

/*
 * -o for a ucow DST: take compression_level=N (1-9, with -c) out of opts (in place), leave
 * the rest to parse_ucow_opts. 0, or -1 with the error said.
 */
static int take_level(const char *dst, char *opts, int *level, bool compress)
{
	char *p = opts;

	while (p && *p) {
		char *end = strchr(p, ','), *next = end ? end + 1 : NULL;
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n > 18 && !strncmp(p, "compression_level=", 18)) {
			const char *v = p + 18;

			if (!compress || n != 19 || v[0] < '1' || v[0] > '9') {
				ucow_err("%s: -o compression_level=%.*s: %s", dst, (int)(n - 18), v,
					 compress ? "not 1 to 9" : "needs -c");
				return -1;
			}
			*level = v[0] - '0';
			if (next) {
				memmove(p, next, strlen(next) + 1);
				continue;	/* the next option is at p now */
			}
			if (p > opts)
				p[-1] = 0;	/* the last option: drop it and its comma */
			else
				*p = 0;
			break;
		}
		p = next;
	}
	return 0;
}

int cmd_convert(int argc, char **argv)
{
	enum { OPT_OUTSIDE = 256, OPT_TZERO };
	static const struct option lopts[] = {
		{ "allow-backing-outside", no_argument, NULL, OPT_OUTSIDE },
		{ "target-is-zero", no_argument, NULL, OPT_TZERO },
		{ "force-share", no_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct cow_create_opts co = { 0 };
	struct conv c = { .pr.last = -1, .confine = COW_OPEN_CONFINE };
	int ch, rc, sfmt = COW_FMT_NONE, ofmt = COW_FMT_RAW;
	bool compress = false, quiet = false, fmt_given = false;
	const char *why;
	uint64_t v;
	char *opts = NULL;

	opterr = 0;
	c.grain = CONV_GRAIN;
	c.bfmt = COW_FMT_NONE;
	c.inflight = CONV_INFLIGHT;
	while ((ch = getopt_long(argc, argv, ":cnWf:l:m:O:o:pqUhB:F:S:", lopts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			if (opt_format("convert", optarg, &sfmt))
				return 1;
			break;
		case 'O':
			ofmt = cow_fmt_parse(optarg);
			if (ofmt <= 0)
				return usage_err("convert", "unknown format '%s' (use raw, ucow or "
						 "qcow2)", optarg);
			fmt_given = true;
			break;
		case 'B': c.bfile = optarg; break;
		case 'F':
			if (opt_format("convert", optarg, &c.bfmt))
				return 1;
			break;
		case 'S':
			if (parse_bytes(optarg, &v, &why) < 0)
				return usage_err("convert", "-S '%s': %s", optarg, why);
			if (v % 512 || v > CONV_BUF)
				return usage_err("convert", "-S '%s': not a multiple of 512 up to 2M",
						 optarg);
			c.grain = (uint32_t)v;
			break;
		case 'n': c.existing = true; break;
		case 'W': c.unordered = true; break;
		case 'm':
			if (parse_bytes(optarg, &v, &why) < 0 || v < 1 || v > CONV_INFLIGHT_MAX ||
			    !isdigit((unsigned char)optarg[strlen(optarg) - 1]))
				return usage_err("convert", "-m '%s': not a number of requests from "
						 "1 to %u", optarg, CONV_INFLIGHT_MAX);
			c.inflight = (unsigned)v;
			break;
		case OPT_TZERO: c.target_zero = true; break;
		case 'c': compress = true; break;
		case 'o': opts = optarg; break;
		case 'l':
			if (parse_snap_arg(&c, optarg))
				return 1;
			break;
		case 'p': c.pr.on = true; break;
		case 'q': quiet = true; break;
		case 'U': c.share = COW_OPEN_SHARE; break;
		case OPT_OUTSIDE: c.confine = 0; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("convert", ch, optarg, &c.net))
				return 1;
			break;
		case 'h': fputs(convert_help, stdout); return 0;
		default: return opt_err("convert", ch, argv);
		}
	}
	if (argc - optind < 2)
		return usage_err("convert", "expected SRC DST");
	if (argc - optind > 2)
		return usage_err("convert", "too many arguments ('%s')", argv[optind + 2]);
	c.src = argv[optind];
	c.dst = argv[optind + 1];
	c.q_cluster = 65536;
	if (quiet)
		c.pr.on = false;
	if (c.target_zero && !c.existing)
		return usage_err("convert", "--target-is-zero needs -n");
	if (c.bfmt != COW_FMT_NONE && !c.bfile)
		return usage_err("convert", "-F needs -B BACKING");
	if (c.bfile && c.bfmt == COW_FMT_NONE)
		return usage_err("convert", "-B needs -F FMT (the backing file's format)");
	if (c.bfile && (ofmt != COW_FMT_UCOW || c.existing)) {
		ucow_err("%s: -B makes a new ucow image (-O ucow, not with -n)", c.dst);
		return 1;
	}
	if (c.existing && (ofmt == COW_FMT_QCOW2 || opts || compress)) {
		ucow_err("%s: -n writes into an existing raw or ucow image (no -O qcow2, -o or -c)",
			 c.dst);
		return 1;
	}
	if (c.existing && !fmt_given)
		ofmt = COW_FMT_NONE;	/* raw, but not over an image (open_existing) */
	if (compress && ofmt == COW_FMT_RAW) {
		ucow_err("%s: -c needs a format with compression (-O ucow or -O qcow2)", c.dst);
		return 1;
	}
	if (compress)
		c.zlevel = Z_DEFAULT_LEVEL;
	if (opts && ofmt == COW_FMT_QCOW2) {
		if (parse_qcow2_opts(c.dst, opts, &c.q_cluster, &c.zlevel, compress) < 0)
			return 1;
	} else if (opts) {
		char *copy;

		if (ofmt != COW_FMT_UCOW) {
			ucow_err("%s: format raw takes no -o options", c.dst);
			return 1;
		}
		copy = strdup(opts);
		rc = copy ? take_level(c.dst, copy, &c.zlevel, compress) : -ENOMEM;
		if (rc == 0)
			rc = parse_ucow_opts(c.dst, copy, &co);
		free(copy);
		if (rc < 0)
			return 1;
	}
	if (posix_memalign((void **)&c.buf, 4096, CONV_BUF)) {
		ucow_err("%s: out of memory", c.dst);
		return 1;
	}
	rc = convert(&c, sfmt, ofmt, &co);
	free(c.buf);
	free(c.bbuf);
	return rc < 0 ? 1 : 0;
}
