/* SPDX-License-Identifier: MIT */
/*
 * The request engine: maps a request to I/O on the image, its backing chain, or zeros.
 *
 * DESIGN NOTES
 * A request is split at chunk boundaries; each part holds one reference on req->pending
 * (plus one held by cow_submit while it dispatches) and every I/O a part starts holds one
 * more. The request completes when pending drops to zero.
 *
 * Fast path (no lock): a read looks up the entry and bitmap with atomic loads and reads
 * from this image, an UNDER entry's underlay (under.c U1), the backing image or zeros. A
 * write whose chunk is mapped, not SHARED, not BUSY, and whose blocks all hold data here is
 * one write to the file: no metadata.
 *
 * Slow path, one chunk (a "chunk op"), states:
 *   LOCKED    under img->lock: if the entry is BUSY, park on img->waits (resumed when the op
 *             in progress ends); else mark it BUSY, pick the target chunk (the same one, or a
 *             new one if unmapped, ZERO or SHARED) -> FILL
 *   FILL      read what the write does not cover but must carry: partial blocks whose data is
 *             elsewhere (backing image, the old shared chunk or an underlay, zeros), the
 *             blocks of a SHARED chunk that hold data — unless the parent snapshot maps that
 *             chunk, which then stays below the new one as its underlay and nothing is
 *             copied (under.c U2); punch a new chunk that replaces a ZERO entry -> WRITE
 *   WRITE     write data (or punch whole blocks for write-zeroes/discard) and the copies
 *             into the target chunk -> PUBLISH
 *   PUBLISH   under img->lock: store the bitmap, then the entry (clearing BUSY); add a journal
 *             record if either changed (journal.c J1); wake parked parts -> done
 * On an error the entry is restored, a new chunk released, parked parts woken.
 *
 * A part parked by one thread may be woken by another: it is handed back to its own ctx
 * (ready list + eventfd), because a ctx's backend belongs to one thread.
 *
 * Copy-on-read (img->cor): the blocks a read takes from the backing chain are read whole into
 * a buffer, copied to the caller and written into the image by a write of the engine's own
 * (a "fill", req_state.fill) before the read completes, as qemu's copy-on-read does. A fill
 * runs as a chunk op, and only if, under img->lock, the chunk is not BUSY (else it parks),
 * not ZERO, and every one of its blocks still has its bit clear. Every write that sets a bit
 * does so in a chunk op while the image copies on read (the lock-free "bitset" writes are
 * off; writes into blocks whose bit is set stay lock-free), so a write is either published
 * by then (bit set: the fill is dropped), or BUSY (the fill parks, then finds the bit set),
 * or comes later and parks behind the fill's op: a fill never covers a newer write. A
 * dropped fill costs a read of the chain next time; one that fails costs the copy, not the
 * read. Crash rules: those of any write (J1).
 */
#include <errno.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "compress.h"
#include "engine.h"
#include "eread.h"
#include "qcow2.h"

static void do_chunk(struct cow_ctx *ctx, struct cow_req *req, uint64_t c);

/* ---- request references ---------------------------------------------------------------- */

/* Generic completion of one I/O that belongs to a request. */
static void io_part_done(struct eio *e, int res)
{
	struct cow_req *req = e->arg;
	if (e->hold)
		inflight_put(e->ctx->img, e->hold - 1);
	res = eio_short(e, res);
	eio_put(e);
	req_put(req, res < 0 ? res : 0);
}

/* hold: 0, or virtual chunk + 1 of an I/O into this image's chunk whose inflight count the
 * caller took for it (dropped when the I/O completes). */
static void queue_io(struct cow_ctx *ctx, struct cow_req *req, int op, int fd, void *buf,
		     uint64_t len, uint64_t off, uint64_t hold)
{
	struct eio *e = eio_get(ctx);
	if (!e) {
		if (hold)
			inflight_put(ctx->img, hold - 1);
		if (!req_st(req)->res)
			req_st(req)->res = -ENOMEM;
		return;
	}
	e->hold = hold;
	req_st(req)->pending++;
	eio_queue(ctx, e, op, fd, buf, (uint32_t)len, off, io_part_done, req);
}

static void queue_req_io(struct cow_ctx *ctx, struct cow_req *req, int op, int fd, void *buf,
			 uint64_t len, uint64_t off)
{
	queue_io(ctx, req, op, fd, buf, len, off, 0);
}

/* Resume every part parked on chunk c (called after unlocking). */
static void wake_chunk(struct cow_ctx *ctx, struct waiter *list)
{
	while (list) {
		struct waiter *n = list->next;
		if (req_st(list->req)->ctx == ctx)
			do_chunk(ctx, list->req, list->chunk);
		else
			ctx_hand_over(req_st(list->req)->ctx, list->req, W_CHUNK, list->chunk);
		free(list);
		list = n;
	}
}

/* Take the waiters of chunk c off the image's list. Under lock. */
static struct waiter *take_waiters(struct cow_image *img, uint64_t c)
{
	struct waiter *out = NULL, **pp = &img->waits, **tail = &out;
	while (*pp) {
		struct waiter *w = *pp;
		if (w->chunk == c) {
			*pp = w->next;
			w->next = NULL;
			*tail = w;
			tail = &w->next;
		} else {
			pp = &w->next;
		}
	}
	return out;
}

/* Entry e of chunk c (loaded under lock) BUSY: park part (req, c) behind it, unlock, drop the
 * part's reference if parking failed, and return true. Else false, still locked. */
static bool park_if_busy(struct cow_image *img, struct cow_req *req, uint64_t c, uint64_t e);

/* Park part (req, c) until chunk c's operation ends. Under lock. */
static int park(struct cow_image *img, struct cow_req *req, uint64_t c)
{
	struct waiter *w = malloc(sizeof(*w)), **pp = &img->waits;
	if (!w)
		return -ENOMEM;
	*w = (struct waiter){ .req = req, .kind = W_CHUNK, .chunk = c };
	while (*pp)		/* FIFO: parts resume in arrival order */
		pp = &(*pp)->next;
	*pp = w;
	return 0;
}

static bool park_if_busy(struct cow_image *img, struct cow_req *req, uint64_t c, uint64_t e)
{
	if (!(e & UCOW_E_BUSY))
		return false;
	int r = park(img, req, c);
	pthread_mutex_unlock(&img->lock);
	if (r)
		req_put(req, r);
	return true;
}

/* ---- reads ------------------------------------------------------------------------------ */


/* ---- copy-on-read ------------------------------------------------------------------------ */

struct cor {
	struct cow_req w;		/* the fill */
	struct cow_ctx *ctx;
	struct cow_req *req;		/* the read */
	char *buf, *dst;		/* whole blocks from the chain; the read's bytes */
	uint32_t skip, len;		/* the read's part: buf + skip, len bytes */
};

static void submit_fill(struct cow_ctx *ctx, struct cow_req *w);

static void cor_end(struct cor *cor, int res)
{
	struct cow_req *req = cor->req;
	ctx_buf_put(cor->ctx, cor->buf);
	free(cor);
	req_put(req, res);
}

static void cor_written(struct cow_req *w, int res)
{
	struct cor *cor = w->priv;
	struct cow_image *img = cor->ctx->img;
	if (res < 0) {
		__atomic_fetch_add(&img->cor_failed, 1, __ATOMIC_RELAXED);
	} else if (res == 0 && req_st(w)->fill) {	/* fill_chunk clears it when it drops one */
		__atomic_fetch_add(&img->cor_copies, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&img->cor_bytes, w->len, __ATOMIC_RELAXED);
	}
	cor_end(cor, 0);	/* the read has its data whatever became of the copy */
}

static void cor_got(struct cor *cor, int res)
{
	if (res < 0) {
		cor_end(cor, res);
		return;
	}
	memcpy(cor->dst, cor->buf + cor->skip, cor->len);
	submit_fill(cor->ctx, &cor->w);
}

static void cor_read_done(struct cow_req *sub, int res)
{
	struct eio *e = sub->priv;
	struct cor *cor = e->arg;
	eio_put(e);
	cor_got(cor, res);
}

/*
 * Read [pos, end) of chunk c (bits clear: the backing chain's data) into dst, then copy the
 * whole blocks around it into the image. Falls back to a plain read when there is nothing
 * to copy from or no memory for it.
 */
static void read_cor(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint32_t pos,
		     uint32_t end, char *dst)
{
	struct cow_image *img = ctx->img;
	uint64_t vbase = c << img->chunk_shift, bend = img->backing->vsize;
	uint32_t bs = img->block_size, as = pos & ~(bs - 1), ae = (end + bs - 1) & ~(bs - 1);
	struct cor *cor = NULL;
	unsigned started = 0;
	if (ae > img->vsize - vbase)
		ae = (uint32_t)(img->vsize - vbase);
	if (vbase + as >= bend || !(cor = calloc(1, sizeof(*cor))) ||
	    !(cor->buf = ctx_buf_get(ctx))) {
		free(cor);
		read_backing(ctx, req, vbase + pos, end - pos, dst);	/* zeros, or no memory */
		return;
	}
	cor->ctx = ctx;
	cor->req = req;
	cor->dst = dst;
	cor->skip = pos - as;
	cor->len = end - pos;
	cor->w = (struct cow_req){ .op = COW_WRITE, .off = vbase + as, .len = ae - as,
				   .buf = cor->buf, .cb = cor_written, .priv = cor };
	req_st(req)->pending++;		/* until the fill is done */
	int r = backing_read(ctx, vbase + as, ae - as, cor->buf, cor_read_done, cor, &started);
	if (r || !started)	/* !started: zeros past the chain's end, in place already */
		cor_got(cor, r);
}


/* Blocks [pos, end) of chunk c with their bit clear: through an UNDER entry's underlay
 * where its bitmap ubm has the bit (under.c U1; the parent snapshot holds that chunk, so
 * no in-flight count), the backing chain elsewhere. */
static void read_clear(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, const uint64_t *ubm,
		       uint32_t pos, uint32_t end, char *dst)
{
	struct cow_image *img = ctx->img;
	uint32_t at = pos;
	while (at < end) {
		uint32_t b = at >> img->block_shift;
		uint32_t run_end = (b + bm_run(ubm, b, ((end - 1) >> img->block_shift) + 1))
				   << img->block_shift;
		if (run_end > end)
			run_end = end;
		char *to = dst + (at - pos);
		if (bm_test(ubm, b)) {
			STAT_ADD(img, data_reads, 1);
			queue_req_io(ctx, req, COW_IO_READ, img->fd, to, run_end - at,
				     (under_pcn(img, c) << img->chunk_shift) + at);
		} else if (img->cor && ctx->backing) {
			read_cor(ctx, req, c, at, run_end, to);
		} else {
			read_backing(ctx, req, (c << img->chunk_shift) + at, run_end - at, to);
		}
		at = run_end;
	}
}

/*
 * A part of an UNDER chunk whose own blocks and underlay blocks alternate, every block in one
 * or the other (a chunk S3's writes left, read sequentially): one read of the underlay over
 * the whole part into the caller's buffer and one of the span of own blocks into a chunk
 * buffer, then the own blocks (the bitmap as at submission) copied over the underlay's —
 * 2 I/Os instead of one per run.
 */
struct uread {
	struct cow_req *req;
	struct cow_ctx *ctx;
	char *dst, *bounce;
	uint32_t in, len;
	unsigned pending;
	int res;
	uint64_t bm[UCOW_BM_WORDS_MAX];
};

static void uread_done(struct eio *e, int res)
{
	struct uread *ur = e->arg;
	struct cow_image *img = ur->ctx->img;
	if (e->hold)
		inflight_put(img, e->hold - 1);
	res = eio_short(e, res);
	eio_put(e);
	if (res < 0 && !ur->res)
		ur->res = res;
	if (--ur->pending)
		return;
	for (uint32_t pos = ur->in, end = ur->in + ur->len; !ur->res && pos < end;) {
		uint32_t b = pos >> img->block_shift;
		uint32_t run_end = (b + bm_run(ur->bm, b, ((end - 1) >> img->block_shift) + 1))
				   << img->block_shift;
		if (run_end > end)
			run_end = end;
		if (bm_test(ur->bm, b))
			memcpy(ur->dst + (pos - ur->in), ur->bounce + pos, run_end - pos);
		pos = run_end;
	}
	struct cow_req *req = ur->req;
	res = ur->res;
	ctx_buf_put(ur->ctx, ur->bounce);
	free(ur);
	req_put(req, res);
}

/* true: queued (chunk c's in-flight count taken over); false: nothing done, read by runs. */
static bool read_merged(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint64_t p,
			const uint64_t *bm, const uint64_t *ubm, uint32_t in, uint32_t len,
			char *buf)
{
	struct cow_image *img = ctx->img;
	uint32_t b0 = in >> img->block_shift, b1 = (in + len - 1) >> img->block_shift;
	uint32_t first = UINT32_MAX, last = 0, runs = 0;
	for (uint32_t b = b0; b <= b1; b++) {
		bool own = bm_test(bm, b);
		if (!own && !bm_test(ubm, b))
			return false;	/* a block of the backing chain: by runs */
		if (own && (b == b0 || !bm_test(bm, b - 1)))
			runs++;
		if (own && first == UINT32_MAX)
			first = b;
		if (own)
			last = b;
	}
	if (runs < 3)
		return false;
	struct uread *ur = malloc(sizeof(*ur));
	struct eio *eu = eio_get(ctx), *ep = eio_get(ctx);
	char *bounce = ctx_buf_get(ctx);
	if (!ur || !eu || !ep || !bounce) {
		free(ur);
		if (eu)
			eio_put(eu);
		if (ep)
			eio_put(ep);
		ctx_buf_put(ctx, bounce);
		return false;
	}
	uint32_t ps = first << img->block_shift, pe = (last + 1) << img->block_shift;
	ps = ps < in ? in : ps;
	pe = pe > in + len ? in + len : pe;
	*ur = (struct uread){ .req = req, .ctx = ctx, .dst = buf, .bounce = bounce, .in = in,
			      .len = len, .pending = 2 };
	bm_copy(img, ur->bm, bm);
	req_st(req)->pending++;
	STAT_ADD(img, data_reads, 2);
	ep->hold = c + 1;	/* the count taken before the lookup */
	eio_queue(ctx, eu, COW_IO_READ, img->fd, buf, len, (under_pcn(img, c) << img->chunk_shift) +
		  in, uread_done, ur);
	eio_queue(ctx, ep, COW_IO_READ, img->fd, bounce + ps, pe - ps, (p << img->chunk_shift) + ps,
		  uread_done, ur);
	return true;
}

static void read_chunk(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint32_t in,
		       uint32_t len, char *buf)
{
	struct cow_image *img = ctx->img;
	inflight_get(img, c);	/* taken before the lookup; handed to the last read */
	uint64_t e = __atomic_load_n(&img->table[c], __ATOMIC_SEQ_CST) & ~UCOW_E_BUSY;
	uint64_t p = e & UCOW_E_PCN_MASK, vbase = c << img->chunk_shift;

	if (e & UCOW_E_ZERO) {
		inflight_put(img, c);
		memset(buf, 0, len);
		return;
	}
	if (!p) {
		inflight_put(img, c);
		if (img->cor && ctx->backing)
			read_cor(ctx, req, c, in, in + len, buf);
		else
			read_backing(ctx, req, vbase + in, len, buf);
		return;
	}
	if (e & UCOW_E_COMPRESSED) {
		read_compressed(ctx, req, c, e, in, len, buf);
		return;
	}
	const uint64_t *bm = meta_bm(img, c, false);
	const uint64_t *ubm = ucow_e_under(e) ? under_bm(img, c) : NULL;
	if (ubm && read_merged(ctx, req, c, p, bm, ubm, in, len, buf))
		return;
	uint32_t pos = in, end = in + len, rs = 0, rl = 0;	/* the data run not queued yet */
	while (pos < end) {
		uint32_t b = pos >> img->block_shift;
		bool bit = bm_test(bm, b);
		uint32_t run_end = (b + bm_run(bm, b, ((end - 1) >> img->block_shift) + 1))
				   << img->block_shift;
		if (run_end > end)
			run_end = end;
		if (bit) {
			if (rl) {	/* an earlier run: a count of its own (ours is still held) */
				inflight_get(img, c);
				queue_io(ctx, req, COW_IO_READ, img->fd, buf + (rs - in), rl,
					 (p << img->chunk_shift) + rs, c + 1);
			}
			STAT_ADD(img, data_reads, 1);
			rs = pos;
			rl = run_end - pos;
		} else {
			read_clear(ctx, req, c, ubm, pos, run_end, buf + (pos - in));
		}
		pos = run_end;
	}
	if (rl)		/* the last run takes over the count taken before the lookup */
		queue_io(ctx, req, COW_IO_READ, img->fd, buf + (rs - in), rl,
			 (p << img->chunk_shift) + rs, c + 1);
	else
		inflight_put(img, c);
}

/* ---- chunk ops (slow path) -------------------------------------------------------------- */

struct chunk_op {
	struct cow_ctx *ctx;
	struct cow_req *req;
	uint64_t c;
	uint32_t in, len;		/* the part, within the chunk */
	uint32_t ws, we;		/* range written from bounce */
	uint32_t fs, fe;		/* zero ops: whole blocks punched */
	const char *src;		/* data to write; NULL for write-zeroes/discard */
	uint64_t old_e, old_p, np;
	bool new_chunk, shared, was_zero;
	char *bounce;			/* covers [ws, we) */
	char *copybuf;			/* SHARED copies, chunk-sized; a compressed chunk's
					 * content, inflated */
	char *cbuf;			/* a compressed chunk's stream */
	bool compressed;
	bool under;			/* the entry is UNDER afterwards (under.c) */
	uint64_t under_p;		/* an UNDER entry's underlay chunk (0: none), */
	const uint64_t *ubm;		/* and its bitmap */
	uint64_t newbm[UCOW_MAX_BPC / 64];	/* the new bitmap (bm_words used) */
	struct chunk_op *fnext;		/* ctx's free list */
	unsigned pending;
	int res;
	void (*next)(struct chunk_op *op);
};

static void op_publish(struct chunk_op *op);
static void op_write(struct chunk_op *op);

static void op_put(struct chunk_op *op, int res)
{
	if (res < 0 && !op->res)
		op->res = res;
	if (--op->pending == 0)
		op->next(op);
}

static void op_io_done(struct eio *e, int res)
{
	struct chunk_op *op = e->arg;
	res = eio_short(e, res);
	eio_put(e);
	op_put(op, res < 0 ? res : 0);
}

static void op_io(struct chunk_op *op, int iop, void *buf, uint64_t len, uint64_t off)
{
	struct eio *e = eio_get(op->ctx);
	if (!e) {
		if (!op->res)
			op->res = -ENOMEM;
		return;
	}
	op->pending++;
	eio_queue(op->ctx, e, iop, op->ctx->img->fd, buf, (uint32_t)len, off, op_io_done, op);
}

static void op_fill_done(struct cow_req *sub, int res)
{
	struct eio *e = sub->priv;
	struct chunk_op *op = e->arg;
	eio_put(e);
	op_put(op, res);
}

/* Fill buf with the current content of blocks [off, off+len) of the chunk (len <= one block
 * or a run of blocks with the same source). */
static void op_fill(struct chunk_op *op, uint32_t off, uint32_t len, char *buf)
{
	struct cow_image *img = op->ctx->img;
	if (op->was_zero) {
		memset(buf, 0, len);
		return;
	}
	const uint64_t *bm = op->old_p ? meta_bm(img, op->c, false) : NULL;
	if (op->old_p && bm_test(bm, off >> img->block_shift)) {
		if (op->compressed)
			memcpy(buf, op->copybuf + off, len);	/* inflated already */
		else
			op_io(op, COW_IO_READ, buf, len, (op->old_p << img->chunk_shift) + off);
		return;
	}
	if (op->under_p && bm_test(op->ubm, off >> img->block_shift)) {
		op_io(op, COW_IO_READ, buf, len, (op->under_p << img->chunk_shift) + off);
		return;
	}
	int r = backing_read(op->ctx, (op->c << img->chunk_shift) + off, len, buf, op_fill_done,
			     op, &op->pending);
	if (r && !op->res)
		op->res = r;
}

/* Chunk ops come from a per-ctx free list: no allocation per request once warm. */
static struct chunk_op *op_alloc(struct cow_ctx *ctx)
{
	struct chunk_op *op = ctx->free_ops;
	if (op)
		ctx->free_ops = op->fnext;
	else if (!(op = malloc(sizeof(*op))))
		return NULL;
	memset(op, 0, sizeof(*op));
	op->ctx = ctx;
	return op;
}

static void op_free(struct chunk_op *op)
{
	struct cow_ctx *ctx = op->ctx;
	ctx_buf_put(ctx, op->bounce);
	ctx_buf_put(ctx, op->copybuf);
	ctx_buf_put(ctx, op->cbuf);
	op->fnext = ctx->free_ops;
	ctx->free_ops = op;
}

/* The runs of blocks of a SHARED chunk that hold data here, outside the blocks the write
 * covers: fn(op, byte offset in the chunk, length) for each. */
static void shared_runs(struct chunk_op *op, void (*fn)(struct chunk_op *, uint32_t, uint32_t))
{
	struct cow_image *img = op->ctx->img;
	const uint64_t *bm = meta_bm(img, op->c, false);
	uint32_t bs = img->block_size;
	uint32_t as = (op->in & ~(bs - 1)) >> img->block_shift;	/* written blocks [as, ae) */
	uint32_t ae = ((op->in + op->len + bs - 1) & ~(bs - 1)) >> img->block_shift;
	for (uint32_t b = 0; b < img->bpc;) {
		uint32_t limit = b < as ? as : img->bpc;
		if (b >= as && b < ae) {
			b = ae;
			continue;
		}
		uint32_t n = bm_run(bm, b, limit);
		if (bm_test(bm, b))
			fn(op, b << img->block_shift, n << img->block_shift);
		b += n;
	}
}

/* FILL: a SHARED chunk's data run, from the old chunk into copybuf. */
static void copy_in(struct chunk_op *op, uint32_t o, uint32_t len)
{
	op_io(op, COW_IO_READ, op->copybuf + o, len, (op->old_p << op->ctx->img->chunk_shift) + o);
}

/* WRITE: that run, from copybuf into the new chunk. */
static void copy_out(struct chunk_op *op, uint32_t o, uint32_t len)
{
	STAT_ADD(op->ctx->img, cow_copies, 1);
	op_io(op, COW_IO_WRITE, op->copybuf + o, len, (op->np << op->ctx->img->chunk_shift) + o);
}

/* FILL: gather what the write does not cover. */
static void op_fill_rest(struct chunk_op *op)
{
	struct cow_image *img = op->ctx->img;
	uint32_t bs = img->block_size;

	op->pending = 1;
	op->next = op_write;
	if (op->was_zero)	/* a new chunk standing for a ZERO entry must read as zeros */
		op_io(op, COW_IO_PUNCH, NULL, img->chunk_size, op->np << img->chunk_shift);
	/* partial head and tail blocks of the written range */
	if (op->ws < op->in)
		op_fill(op, op->ws, bs, op->bounce);
	if (op->we > op->in + op->len) {
		uint32_t tb = op->we - bs;
		if (!(op->ws < op->in && tb == op->ws))	/* one block: filled above */
			op_fill(op, tb, bs, op->bounce + (tb - op->ws));
	}
	/* a SHARED chunk: carry every other block that holds data here (a compressed one's
	 * are in copybuf already) */
	if (op->shared && !op->compressed)
		shared_runs(op, copy_in);
	op_put(op, 0);
}

/* FILL of a compressed chunk, after its stream was read: inflate it into copybuf. */
static void op_inflate(struct chunk_op *op)
{
	struct cow_image *img = op->ctx->img;
	if (!op->res)
		op->res = comp_chunk_inflate(img, op->old_e, op->cbuf, op->copybuf);
	ctx_buf_put(op->ctx, op->cbuf);
	op->cbuf = NULL;
	if (op->res)
		op_publish(op);
	else
		op_fill_rest(op);
}

static void op_fill_phase(struct chunk_op *op)
{
	struct cow_image *img = op->ctx->img;
	uint64_t e = op->old_e;
	/* a compressed chunk: its content first (nothing of it survives a whole-chunk write) */
	if (!op->compressed || (op->in == 0 && op->len == img->chunk_size) ||
	    comp_cache_get(img, e, op->copybuf, 0, img->chunk_size)) {
		op_fill_rest(op);
		return;
	}
	op->cbuf = ctx_buf_get(op->ctx);
	if (!op->cbuf) {
		op->res = -ENOMEM;
		op_publish(op);
		return;
	}
	op->pending = 1;
	op->next = op_inflate;
	op_io(op, COW_IO_READ, op->cbuf, ucow_e_clen(e), ucow_e_coff(e));
	op_put(op, 0);
}

/* WRITE: the data (or zeros), and the carried copies. */
static void op_write(struct chunk_op *op)
{
	struct cow_image *img = op->ctx->img;
	uint64_t base = op->np << img->chunk_shift;

	if (op->res) {
		op_publish(op);
		return;
	}
	op->pending = 1;
	op->next = op_publish;
	if (op->src) {
		/* nothing filled around the data: write it from the caller's buffer */
		char *from = (char *)op->src;
		if (op->ws != op->in || op->we != op->in + op->len) {
			memcpy(op->bounce + (op->in - op->ws), op->src, op->len);
			from = op->bounce;
		}
		STAT_ADD(img, data_writes, 1);
		STAT_ADD(img, data_bytes_written, op->we - op->ws);
		op_io(op, COW_IO_WRITE, from, op->we - op->ws, base + op->ws);
	} else {
		memset(op->bounce + (op->in - op->ws), 0, op->len);
		if (op->fs < op->fe) {
			op_io(op, COW_IO_PUNCH, NULL, op->fe - op->fs, base + op->fs);
			if (op->ws < op->fs)
				op_io(op, COW_IO_WRITE, op->bounce, op->fs - op->ws, base + op->ws);
			if (op->fe < op->we)
				op_io(op, COW_IO_WRITE, op->bounce + (op->fe - op->ws),
				      op->we - op->fe, base + op->fe);
		} else {
			op_io(op, COW_IO_WRITE, op->bounce, op->we - op->ws, base + op->ws);
		}
	}
	if (op->shared)
		shared_runs(op, copy_out);
	op_put(op, 0);
}

/* PUBLISH: make the new mapping visible (memory now, journal at the next flush). */
static void op_publish(struct chunk_op *op)
{
	struct cow_ctx *ctx = op->ctx;
	struct cow_image *img = ctx->img;
	struct cow_req *req = op->req;
	struct waiter *w;
	int res = op->res;

	pthread_mutex_lock(&img->lock);
	if (!res) {
		uint64_t *bm = meta_bm(img, op->c, true);
		uint64_t newe = op->np | (op->under ? UCOW_E_UNDER : 0);
		const uint64_t *ubm = op->under ? under_bm(img, op->c) : NULL;
		bool covered = true;	/* every block of the underlay is here now */
		bool changed = false;
		if (!bm) {
			res = -ENOMEM;
		} else {
			uint64_t old_bm[UCOW_BM_WORDS_MAX];
			uint64_t old_e = ent_load(img, op->c);
			bm_copy(img, old_bm, bm);
			for (uint32_t i = 0; i < img->bm_words; i++) {
				/* same chunk: OR in (other writes may have set bits meanwhile);
				 * new chunk: the bitmap starts from newbm */
				uint64_t nw = op->new_chunk ? op->newbm[i] : bm[i] | op->newbm[i];
				uint64_t keep = i == img->bm_words - 1 && img->bpc % 64 ?
						(1ull << (img->bpc % 64)) - 1 : ~0ull;
				if (ubm && (ubm[i] & keep & ~nw))
					covered = false;
				if (bm[i] != nw)
					changed = true;
				__atomic_store_n(&bm[i], nw, __ATOMIC_RELEASE);
			}
			if (ubm && covered)
				newe &= ~UCOW_E_UNDER;	/* nothing left to read through it */
			changed = changed || newe != (op->old_e & ~UCOW_E_BUSY);
			img->bm_dirty[op->c / img->chunks_per_group] = 1;
			ent_store(img, op->c, newe);
			if (changed)
				res = jnl_add(img, op->c, newe, bm, old_e, old_bm, NULL);
			if (op->new_chunk)
				STAT_ADD(img, allocations, 1);
		}
	}
	if (res) {
		/* nothing was published: put the old entry back */
		__atomic_store_n(&img->table[op->c], op->old_e & ~UCOW_E_BUSY, __ATOMIC_RELEASE);
		if (op->new_chunk)
			alloc_release(img, op->np);
	}
	w = take_waiters(img, op->c);
	pthread_mutex_unlock(&img->lock);
	op_free(op);
	wake_chunk(ctx, w);
	req_put(req, res);
}

/* Start a chunk op for part (req, c, in, len). Called with img->lock held; releases it. */
static void op_start(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint32_t in,
		     uint32_t len, const char *src, uint64_t e)
{
	struct cow_image *img = ctx->img;
	uint32_t bs = img->block_size;
	struct chunk_op *op = op_alloc(ctx);
	const uint64_t *bm;
	int r = -ENOMEM;

	if (!op)
		goto fail;
	op->req = req;
	op->c = c;
	op->in = in;
	op->len = len;
	op->src = src;
	op->old_e = e;
	op->old_p = ent_pcn(img, e);
	op->compressed = (e & UCOW_E_COMPRESSED) != 0;
	op->shared = (e & UCOW_E_SHARED) || op->compressed;	/* C1: compressed is SHARED */
	op->was_zero = (e & UCOW_E_ZERO) != 0;
	op->new_chunk = !op->old_p || op->shared;
	bm = meta_bm(img, c, true);
	if (!bm)
		goto fail;
	if (ucow_e_under(e)) {		/* more blocks into a chunk with an underlay */
		op->under = true;
		op->under_p = under_pcn(img, c);
		op->ubm = under_bm(img, c);
	} else if (op->shared && !op->compressed && under_fits(img, c, e, bm)) {
		op->under = true;	/* U2: the old chunk stays below, nothing copied */
		op->shared = false;
		img->under_made++;
	}
	if (op->new_chunk) {
		r = alloc_chunk(img, &op->np);
		if (r)
			goto fail;
	} else {
		op->np = op->old_p;
	}
	/* partial blocks need their old content unless it is already in place */
	uint32_t as = in & ~(bs - 1), ae = (in + len + bs - 1) & ~(bs - 1);
	bool head_fill = as < in && (op->new_chunk || !bm_test(bm, as >> img->block_shift));
	bool tail_fill = ae > in + len &&
			 (op->new_chunk || !bm_test(bm, (ae - bs) >> img->block_shift));
	op->ws = head_fill ? as : in;
	op->we = tail_fill ? ae : in + len;
	op->fs = (in + bs - 1) & ~(bs - 1);
	op->fe = (in + len) & ~(bs - 1);
	if (op->fs > op->fe)
		op->fs = op->fe;
	/* the new bitmap: every block of [as, ae) holds data here afterwards */
	for (uint32_t i = 0; i < img->bm_words; i++)
		op->newbm[i] = op->was_zero ? ~0ull :
			       (op->old_p && op->new_chunk && !op->under) ? bm[i] : 0;
	if (op->was_zero && img->bpc % 64)
		op->newbm[img->bm_words - 1] &= (1ull << (img->bpc % 64)) - 1;
	for (uint32_t b = as >> img->block_shift; b < ae >> img->block_shift; b++)
		op->newbm[b / 64] |= 1ull << (b % 64);
	/* [ws, we) lies within the chunk: a chunk-sized buffer holds it */
	op->bounce = ctx_buf_get(ctx);
	if (op->shared)
		op->copybuf = ctx_buf_get(ctx);
	if (!op->bounce || (op->shared && !op->copybuf)) {
		if (op->new_chunk)
			alloc_release(img, op->np);
		r = -ENOMEM;
		goto fail;
	}
	__atomic_fetch_or(&img->table[c], UCOW_E_BUSY, __ATOMIC_ACQ_REL);
	pthread_mutex_unlock(&img->lock);
	op_fill_phase(op);
	return;
fail:
	pthread_mutex_unlock(&img->lock);
	if (op)
		op_free(op);
	req_put(req, r);
}

/* Whole-chunk discard / write-zeroes: unmap, no data I/O but a hole punch. */
struct unmap {
	struct cow_req *req;
	uint64_t pcn, rec;
};

static void unmap_punched(struct eio *e, int res)
{
	struct cow_ctx *ctx = e->ctx;
	struct cow_image *img = ctx->img;
	struct cow_req *req = e->arg;
	uint64_t pcn = e->u[0], rec = e->u[1], c = e->u[2];
	eio_put(e);
	pthread_mutex_lock(&img->lock);
	/* J4: reusable only once the unmapping is durable, the punch is done and no I/O that
	 * found the chunk mapped is in flight */
	if (alloc_quarantine(img, pcn, rec, c))
		res = res < 0 ? res : 0;	/* leaked until the next open: never unsafe */
	pthread_mutex_unlock(&img->lock);
	req_put(req, res < 0 ? res : 0);
}

static void unmap_chunk(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint64_t e)
{
	struct cow_image *img = ctx->img;
	uint64_t newe = img->backing ? UCOW_E_ZERO : 0, p = ent_pcn(img, e), rec = 0;
	uint64_t *bm = meta_bm(img, c, false);
	int r = 0;

	if (e != newe) {
		uint64_t old_bm[UCOW_BM_WORDS_MAX];
		bm_copy(img, old_bm, bm);
		if (bm) {
			for (uint32_t i = 0; i < img->bm_words; i++)
				__atomic_store_n(&bm[i], 0, __ATOMIC_RELEASE);
			img->bm_dirty[c / img->chunks_per_group] = 1;
		}
		/* seq_cst, as the inflight count's increment and load (alloc.c): an I/O either
		 * counted itself before this store or finds the chunk unmapped */
		__atomic_store_n(&img->table[c], newe, __ATOMIC_SEQ_CST);
		img->table_dirty[(c * 8) / UCOW_META_ALIGN] = 1;
		r = jnl_add(img, c, newe, NULL, e, old_bm, &rec);
	}
	pthread_mutex_unlock(&img->lock);
	if (!r && p && !(e & (UCOW_E_SHARED | UCOW_E_COMPRESSED))) {
		struct eio *io = eio_get(ctx);
		if (io) {
			io->u[0] = p;
			io->u[1] = rec;
			io->u[2] = c;
			req_st(req)->pending++;
			eio_queue(ctx, io, COW_IO_PUNCH, img->fd, NULL, img->chunk_size,
				  p << img->chunk_shift, unmap_punched, req);
		}
	}
	req_put(req, r);
}

/* ---- writes into an allocated chunk that only set bits ----------------------------------- */

/*
 * A write of whole blocks (or of blocks that already hold data here) into a chunk that is
 * allocated and not SHARED needs no copy and no exclusive op: write, then OR the blocks' bits
 * in and journal the new bitmap. Many such writes into one chunk run at once.
 */
static void bitset_done(struct eio *e, int res)
{
	struct cow_ctx *ctx = e->ctx;
	struct cow_image *img = ctx->img;
	struct cow_req *req = e->arg;
	uint64_t c = e->u[0], p = e->u[1];
	uint32_t b0 = (uint32_t)(e->u[2] >> 32), b1 = (uint32_t)e->u[2];
	res = eio_short(e, res);
	eio_put(e);
	if (res >= 0) {
		pthread_mutex_lock(&img->lock);
		uint64_t now = ent_load(img, c);
		uint64_t *bm = meta_bm(img, c, true);
		/* a discard that raced with this write unmapped the chunk: nothing to publish */
		if ((now & UCOW_E_PCN_MASK) == p && !(now & (UCOW_E_SHARED | UCOW_E_COMPRESSED)) &&
		    bm) {
			uint64_t old_bm[UCOW_BM_WORDS_MAX];
			bool changed = false;
			bm_copy(img, old_bm, bm);
			for (uint32_t b = b0; b < b1; b++)
				if (!bm_test(bm, b)) {
					__atomic_fetch_or(&bm[b / 64], 1ull << (b % 64), __ATOMIC_ACQ_REL);
					changed = true;
				}
			if (changed) {
				img->bm_dirty[c / img->chunks_per_group] = 1;
				res = jnl_add(img, c, now, bm, now, old_bm, NULL);
			}
		}
		pthread_mutex_unlock(&img->lock);
	}
	inflight_put(img, c);	/* after the publish: p cannot have been reused meanwhile */
	req_put(req, res < 0 ? res : 0);
}

static void bitset_write(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint64_t p,
			 uint32_t in, uint32_t len, char *buf)
{
	struct cow_image *img = ctx->img;
	struct eio *e = eio_get(ctx);
	if (!e) {
		inflight_put(img, c);
		req_put(req, -ENOMEM);
		return;
	}
	uint32_t b0 = in >> img->block_shift, b1 = (in + len - 1) / img->block_size + 1;
	e->u[0] = c;
	e->u[1] = p;
	e->u[2] = (uint64_t)b0 << 32 | b1;
	STAT_ADD(img, data_writes, 1);
	STAT_ADD(img, data_bytes_written, len);
	eio_queue(ctx, e, COW_IO_WRITE, img->fd, buf, len, (p << img->chunk_shift) + in,
		  bitset_done, req);
}

/* ---- copy-on-read fills ----------------------------------------------------------------- */

/* The fill's part in chunk c: a chunk op if every block of it still reads from the backing
 * chain; else dropped (req_st(req)->fill cleared). */
static void fill_chunk(struct cow_ctx *ctx, struct cow_req *req, uint64_t c, uint32_t in,
		       uint32_t len, char *buf)
{
	struct cow_image *img = ctx->img;
	pthread_mutex_lock(&img->lock);
	uint64_t e = ent_load(img, c);
	if (park_if_busy(img, req, c, e))
		return;
	const uint64_t *bm = meta_bm(img, c, false);
	const uint64_t *ubm = ucow_e_under(e) ? under_bm(img, c) : NULL;
	bool clear = !(e & UCOW_E_ZERO) && !img->read_only;
	if (clear && ent_pcn(img, e) && bm)
		for (uint32_t b = in >> img->block_shift; clear && b <= (in + len - 1) >>
		     img->block_shift; b++)
			clear = !bm_test(bm, b) && !bm_test(ubm, b);
	if (!clear) {
		pthread_mutex_unlock(&img->lock);
		__atomic_fetch_add(&img->cor_skipped, 1, __ATOMIC_RELAXED);
		req_st(req)->fill = false;	/* not counted as a copy */
		req_put(req, 0);
		return;
	}
	op_start(ctx, req, c, in, len, buf, e);	/* unlocks */
}

/* A fill: w covers whole blocks (but at the image's end) of one chunk. */
static void submit_fill(struct cow_ctx *ctx, struct cow_req *w)
{
	struct req_state *st = req_st(w);
	*st = (struct req_state){ .ctx = ctx, .pending = 1, .fill = true };
	if (ctx->img->read_only) {
		req_put(w, -EROFS);
		return;
	}
	st->pending++;
	do_chunk(ctx, w, w->off >> ctx->img->chunk_shift);
	req_put(w, 0);
}

/* ---- dispatch of one chunk's part -------------------------------------------------------- */

static bool all_bits(const uint64_t *bm, uint32_t from, uint32_t to)
{
	for (uint32_t b = from; b < to; b++)
		if (!bm_test(bm, b))
			return false;
	return true;
}

/* Handle the part of req that falls in chunk c. Holds one reference on req, dropped here or
 * by the operation it starts. */
static void do_chunk(struct cow_ctx *ctx, struct cow_req *req, uint64_t c)
{
	struct cow_image *img = ctx->img;
	uint64_t cstart = c << img->chunk_shift;
	uint64_t s = req->off > cstart ? req->off : cstart;
	uint64_t end = req->off + req->len < cstart + img->chunk_size ?
		       req->off + req->len : cstart + img->chunk_size;
	uint32_t in = (uint32_t)(s - cstart), len = (uint32_t)(end - s);
	char *buf = req->buf ? (char *)req->buf + (s - req->off) : NULL;
	bool zero = req->op != COW_WRITE;

	if (req->op == COW_READ) {
		read_chunk(ctx, req, c, in, len, buf);
		req_put(req, 0);
		return;
	}
	if (req_st(req)->fill) {
		fill_chunk(ctx, req, c, in, len, buf);
		return;
	}
	/* fast path: overwrite of data already here (counted in flight before the lookup) */
	uint64_t e, p;
	if (!zero) {
		inflight_get(img, c);
		e = __atomic_load_n(&img->table[c], __ATOMIC_SEQ_CST);
		p = e & UCOW_E_PCN_MASK;
		if (p && !(e & (UCOW_E_BUSY | UCOW_E_SHARED | UCOW_E_COMPRESSED)) &&
		    all_bits(meta_bm(img, c, false), in >> img->block_shift,
			     (in + len - 1) / img->block_size + 1)) {
			STAT_ADD(img, data_writes, 1);
			STAT_ADD(img, data_bytes_written, len);
			queue_io(ctx, req, COW_IO_WRITE, img->fd, buf, len,
				 (p << img->chunk_shift) + in, c + 1);
			req_put(req, 0);
			return;
		}
		inflight_put(img, c);
	}
	pthread_mutex_lock(&img->lock);
	e = ent_load(img, c);
	p = ent_pcn(img, e);
	if (park_if_busy(img, req, c, e))
		return;
	if (zero) {
		if (!p && ((e & UCOW_E_ZERO) || !img->backing)) {
			pthread_mutex_unlock(&img->lock);	/* reads as zeros already */
			req_put(req, 0);
			return;
		}
		if (len == img->chunk_size) {
			unmap_chunk(ctx, req, c, e);	/* unlocks */
			return;
		}
	} else if (p && !(e & (UCOW_E_SHARED | UCOW_E_COMPRESSED))) {
		const uint64_t *bm = meta_bm(img, c, false);
		uint32_t bs = img->block_size, pend = in + len;
		bool head_ok = !(in & (bs - 1)) || bm_test(bm, in >> img->block_shift);
		bool tail_ok = !(pend & (bs - 1)) || bm_test(bm, pend >> img->block_shift);
		bool all = all_bits(bm, in >> img->block_shift, (pend - 1) / bs + 1);
		/* with copy-on-read, a write that sets bits holds the chunk BUSY (a chunk op), so
		 * that a fill checking the bits under lock cannot miss it */
		if (head_ok && tail_ok && (all || !img->cor)) {
			inflight_get(img, c);	/* under lock: an unmap comes after, and sees it */
			pthread_mutex_unlock(&img->lock);
			if (all) {
				queue_io(ctx, req, COW_IO_WRITE, img->fd, buf, len,
					 (p << img->chunk_shift) + in, c + 1);
				req_put(req, 0);
			} else {
				bitset_write(ctx, req, c, p, in, len, buf);
			}
			return;
		}
	}
	op_start(ctx, req, c, in, len, buf, e);	/* unlocks */
}

/* ---- requests ---------------------------------------------------------------------------- */

/* Raw images: the file is the disk. */
static void submit_raw(struct cow_ctx *ctx, struct cow_req *req)
{
	struct cow_image *img = ctx->img;
	switch (req->op) {
	case COW_READ:
		STAT_ADD(img, data_reads, 1);
		queue_req_io(ctx, req, COW_IO_READ, img->fd, req->buf, req->len, req->off);
		break;
	case COW_WRITE:
		STAT_ADD(img, data_writes, 1);
		STAT_ADD(img, data_bytes_written, req->len);
		queue_req_io(ctx, req, COW_IO_WRITE, img->fd, req->buf, req->len, req->off);
		break;
	default:
		queue_req_io(ctx, req, COW_IO_PUNCH, img->fd, NULL, req->len, req->off);
		break;
	}
}

/*
 * qcow2 images (read-only): the request's runs as qcow2_map finds them. Data is one read of
 * the file per run, unallocated runs go to the backing image, zero runs are zeros, and a
 * compressed cluster's part is one read of its compressed bytes (whole sectors, so O_DIRECT
 * takes it) inflated on completion into a chunk buffer of the ctx, from which the part is
 * copied out.
 */
struct q2_cread {
	struct cow_req *req;
	char *cbuf;		/* the compressed sectors */
	uint32_t skip, clen;	/* the stream: from cbuf + skip, clen bytes */
	char *dst;
	uint32_t in, len;	/* the part: from the cluster's byte in, len bytes */
};

static void q2_cread_done(struct eio *e, int res)
{
	struct cow_ctx *ctx = e->ctx;
	struct q2_cread *cr = e->arg;
	struct cow_req *req = cr->req;
	res = eio_short(e, res);
	eio_put(e);
	if (res >= 0) {
		char *out = ctx_buf_get(ctx);
		res = out ? qcow2_inflate(ctx->img, cr->cbuf + cr->skip, cr->clen, out) : -ENOMEM;
		if (!res)
			memcpy(cr->dst, out + cr->in, cr->len);
		ctx_buf_put(ctx, out);
	}
	free(cr->cbuf);
	free(cr);
	req_put(req, res < 0 ? res : 0);
}

static int q2_compressed(struct cow_ctx *ctx, struct cow_req *req, const struct q2_run *m,
			 char *dst)
{
	struct cow_image *img = ctx->img;
	uint64_t start = m->off & ~511ull;
	uint32_t skip = (uint32_t)(m->off - start), total = skip + m->csize;	/* sectors */
	struct q2_cread *cr = malloc(sizeof(*cr));
	struct eio *e = NULL;
	if (!cr)
		return -ENOMEM;
	*cr = (struct q2_cread){ .req = req, .skip = skip, .clen = m->csize, .dst = dst,
				 .in = m->in, .len = (uint32_t)m->len };
	cr->cbuf = meta_zalloc(total);
	if (!cr->cbuf || !(e = eio_get(ctx))) {
		free(cr->cbuf);
		free(cr);
		return -ENOMEM;
	}
	STAT_ADD(img, data_reads, 1);
	req_st(req)->pending++;
	eio_queue(ctx, e, COW_IO_READ, img->fd, cr->cbuf, total, start, q2_cread_done, cr);
	return 0;
}

static void submit_qcow2(struct cow_ctx *ctx, struct cow_req *req)
{
	struct cow_image *img = ctx->img;
	struct req_state *st = req_st(req);
	uint64_t pos = req->off, end = req->off + req->len;
	while (pos < end && !st->res) {
		struct q2_run m;
		char *buf = (char *)req->buf + (pos - req->off);
		int r = qcow2_map(img, pos, end - pos, &m);
		if (!r) {
			switch (m.kind) {
			case Q2_DATA:
				STAT_ADD(img, data_reads, 1);
				queue_req_io(ctx, req, COW_IO_READ, img->fd, buf, m.len, m.off);
				break;
			case Q2_COMPRESSED:
				r = q2_compressed(ctx, req, &m, buf);
				break;
			case Q2_ZERO:
				memset(buf, 0, m.len);
				break;
			default:
				read_backing(ctx, req, pos, m.len, buf);
				break;
			}
		}
		if (r && !st->res)
			st->res = r;
		pos += m.len;
	}
}

void cow_submit(struct cow_ctx *ctx, struct cow_req *req)
{
	struct cow_image *img = ctx->img;
	struct req_state *st = req_st(req);
	*st = (struct req_state){ .ctx = ctx, .pending = 1 };	/* held while dispatching */
	if (req->op > COW_FLUSH) {
		req_put(req, -EINVAL);
		return;
	}
	if (req->op == COW_FLUSH) {
		if (img->read_only) {
			req_put(req, 0);
			return;
		}
		req_flush(ctx, req);
		return;
	}
	if (req->off > img->vsize || req->len > img->vsize - req->off ||
	    req->len > UINT32_MAX || (req->op <= COW_WRITE && req->len && !req->buf)) {
		req_put(req, -EINVAL);
		return;
	}
	if ((img->open_flags & COW_OPEN_DIRECT) &&
	    ((req->off | req->len | (uintptr_t)req->buf) & 511)) {
		req_put(req, -EINVAL);	/* O_DIRECT: whole sectors in aligned buffers only */
		return;
	}
	if (req->op != COW_READ && (img->read_only ||
	    ((img->open_flags & COW_OPEN_NOCHAIN) && img->hdr.backing_len))) {
		/* without its chain, an image cannot carry backing data into what it writes */
		req_put(req, -EROFS);
		return;
	}
	if (!req->len) {
		req_put(req, 0);
		return;
	}
	if (img->nbd && req->op == COW_READ) {
		nbd_read(ctx, req);	/* an image on an NBD server (read-only, like a base) */
		req_put(req, 0);
		return;
	}
	if (img->fmt == COW_FMT_RAW) {
		submit_raw(ctx, req);
		req_put(req, 0);
		return;
	}
	if (img->fmt == COW_FMT_QCOW2) {
		submit_qcow2(ctx, req);
		req_put(req, 0);
		return;
	}
	for (uint64_t c = req->off >> img->chunk_shift;
	     c <= (req->off + req->len - 1) >> img->chunk_shift; c++) {
		req_st(req)->pending++;
		do_chunk(ctx, req, c);
	}
	req_put(req, 0);
}

/* ---- contexts ---------------------------------------------------------------------------- */

int cow_ctx_new(struct cow_image *img, struct cow_backend *be, struct cow_ctx **out)
{
	struct cow_ctx *ctx = malloc(sizeof(*ctx));
	int r;
	if (!ctx)
		return -ENOMEM;
	r = ctx_init(ctx, img, be);
	if (!r && img->nbd)
		r = nbd_ctx_init(ctx);
	if (!r && img->backing)
		r = cow_ctx_new(img->backing, be, &ctx->backing);
	if (r) {
		cow_ctx_free(ctx);
		return r;
	}
	pthread_mutex_lock(&img->lock);
	ctx->next_ctx = img->ctxs;
	img->ctxs = ctx;
	pthread_mutex_unlock(&img->lock);
	*out = ctx;
	return 0;
}

void cow_ctx_free(struct cow_ctx *ctx)
{
	if (!ctx)
		return;
	pthread_mutex_lock(&ctx->img->lock);
	for (struct cow_ctx **pp = &ctx->img->ctxs; *pp; pp = &(*pp)->next_ctx)
		if (*pp == ctx) {
			*pp = ctx->next_ctx;
			break;
		}
	pthread_mutex_unlock(&ctx->img->lock);
	cow_ctx_free(ctx->backing);
	nbd_ctx_fini(ctx);
	while (ctx->free_ops) {
		struct chunk_op *op = ctx->free_ops;
		ctx->free_ops = op->fnext;
		free(op);
	}
	ctx_fini(ctx);
	free(ctx);
}

/*
 * cow_backing_reopen: every context on img moves to the reopened backing image nb (a new
 * backing context each, on the context's own backend), or none does. No request in flight.
 */
int eng_rebind_backing(struct cow_image *img, struct cow_image *nb)
{
	size_t n = 0, i = 0;
	int r = 0;
	pthread_mutex_lock(&img->lock);
	for (struct cow_ctx *c = img->ctxs; c; c = c->next_ctx)
		n++;
	struct cow_ctx **fresh = calloc(n ? n : 1, sizeof(*fresh));
	if (!fresh)
		r = -ENOMEM;
	for (struct cow_ctx *c = img->ctxs; !r && c; c = c->next_ctx, i++)
		r = cow_ctx_new(nb, c->be, &fresh[i]);
	if (r) {
		while (fresh && i--)
			cow_ctx_free(fresh[i]);
	} else {
		i = 0;
		for (struct cow_ctx *c = img->ctxs; c; c = c->next_ctx, i++) {
			struct cow_ctx *old = c->backing;
			c->backing = fresh[i];
			fresh[i] = old;	/* freed below, outside img's lock */
		}
		img->backing = nb;
	}
	pthread_mutex_unlock(&img->lock);
	for (i = 0; !r && i < n; i++)
		cow_ctx_free(fresh[i]);
	free(fresh);
	return r;
}

/* Work other threads handed to this ctx: parts to run, requests to complete. */
void cow_ctx_poll(struct cow_ctx *ctx)
{
	struct waiter *w = ctx_take_ready(ctx);
	while (w) {
		struct waiter *n = w->next;
		if (w->kind == W_RESULT) {
			pool_result(ctx, w);	/* frees or keeps w */
			w = n;
			continue;
		}
		if (w->kind == W_COMPLETE)
			req_put(w->req, req_st(w->req)->res);
		else
			do_chunk(ctx, w->req, w->chunk);
		free(w);
		w = n;
	}
}

int cow_ctx_eventfd(struct cow_ctx *ctx) { return ctx->efd; }

struct rw_wait {
	bool done;
	int res;
};

static void rw_cb(struct cow_req *req, int res)
{
	struct rw_wait *w = req->priv;
	w->done = true;
	w->res = res;
}

int cow_rw(struct cow_ctx *ctx, int op, void *buf, uint64_t len, uint64_t off, uint32_t flags)
{
	struct rw_wait w = { 0 };
	struct cow_req req = { .op = (uint8_t)op, .flags = flags, .off = off, .len = len,
			       .buf = buf, .cb = rw_cb, .priv = &w };
	cow_submit(ctx, &req);
	while (!w.done) {
		cow_ctx_poll(ctx);
		if (w.done)
			break;
		if (cow_backend_inflight(ctx->be)) {
			int r = cow_backend_submit_wait(ctx->be, 1);
			if (r < 0)
				return r;	/* the backend is broken; nothing sane is left */
		} else {
			struct pollfd pfd = { .fd = ctx->efd, .events = POLLIN };
			poll(&pfd, 1, 100);
		}
	}
	return w.res;
}

void cow_get_cor_info(struct cow_image *img, struct cow_cor_info *ci)
{
	memset(ci, 0, sizeof(*ci));
	ci->enabled = img->cor;
	ci->in_header = img->fmt == COW_FMT_UCOW && (img->hdr.compat & UCOW_COMPAT_COPY_ON_READ);
	ci->copies = __atomic_load_n(&img->cor_copies, __ATOMIC_RELAXED);
	ci->bytes = __atomic_load_n(&img->cor_bytes, __ATOMIC_RELAXED);
	ci->skipped = __atomic_load_n(&img->cor_skipped, __ATOMIC_RELAXED);
	ci->failed = __atomic_load_n(&img->cor_failed, __ATOMIC_RELAXED);
}
