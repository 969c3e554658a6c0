/* SPDX-License-Identifier: MIT */
/*
 * The image targets, cow and raw: both serve through the cowcore engine, and share
 * everything but the format they state when they open the file.
 *
 *   cow  a ucow image and its backing chain. The format is stated, never probed: a file
 *        that is not a ucow image is refused.
 *   raw  a plain file or block device, opened by the engine as COW_FMT_RAW. Same I/O path
 *        as cow (engine request -> backend on the queue's ring) minus copy-on-write, so raw
 *        vs cow numbers measure exactly the cost of the format.
 *
 * Per device: one struct cow_image (thread-safe, shared by the queues).
 * Per queue: the engine's io_uring backend attached to the queue's own ring, one cow_ctx,
 * and a READ on the ctx's eventfd (other queues hand work to this ctx through it; when the
 * read completes we run cow_ctx_poll and read again).
 * Per tag: the tag's struct cow_req (in struct ublk_io) and the tag's buffer. Nothing is
 * allocated per request.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "ublk.h"

struct eng_queue {
	struct cow_backend *be;
	struct cow_ctx *ctx;
	int evfd;
	bool ev_armed;
	bool ev_deferred;	/* the eventfd fired while the queue was paused */
	uint64_t ev_val;
};

#define ENG_UD_EVENTFD (UBLK_UD_TGT | 1)

/*
 * The side log of a --recoverable cow image: $UCOW_RUN_DIR/side-<st_dev>-<st_ino>.log, named
 * after the image file so that a new server (dev recover, or a later dev add) finds what a
 * dead one left. On failure the device runs write-through instead (a warning says so).
 */
int ublk_sidelog_path(const char *file, char *out, size_t len)
{
	struct stat st;

	if (stat(file, &st) < 0)
		return -errno;
	snprintf(out, len, "%s/side-%llu-%llu.log", ublk_run_dir(),
		 (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	return 0;
}

static int sidelog_open(struct ublk_dev *dev)
{
	if (ublk_sidelog_path(dev->o.file, dev->sidelog_path, sizeof(dev->sidelog_path)) < 0)
		return -errno;
	dev->sidelog_fd = open(dev->sidelog_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (dev->sidelog_fd < 0) {
		int ret = -errno;

		fprintf(stderr, "ucow: warning: %s: %s; --recoverable writes are write-through\n",
			dev->sidelog_path, strerror(-ret));
		return ret;
	}
	return 0;
}

static void eng_close(struct ublk_dev *dev);

static int eng_open(struct ublk_dev *dev, int fmt)
{
	struct cow_image *img = NULL;
	struct cow_info info;
	char err[COW_ERRLEN] = "";
	unsigned flags = 0;
	int ret;

	if (dev->o.read_only)
		flags |= COW_OPEN_RDONLY;
	if (dev->o.direct)
		flags |= COW_OPEN_DIRECT;
	if (!dev->o.backing_outside)
		flags |= COW_OPEN_CONFINE;	/* backing files inside the image's folder */
	if (dev->o.allow_network)
		flags |= COW_OPEN_ALLOW_NETWORK;	/* a backing image on an NBD server */
	if (dev->o.copy_on_read)
		flags |= COW_OPEN_COPY_ON_READ;
	if (dev->o.snapshot[0])	/* a snapshot's content, read-only; the current state untouched */
		ret = cow_open(dev->o.file, &(struct cow_open_opts){ .flags = flags | COW_OPEN_RDONLY,
				.snapshot = dev->o.snapshot, .net_timeout_ms = dev->o.nbd_timeout_ms },
				&img, err, COW_ERRLEN);
	else if (dev->o.recoverable && fmt != COW_FMT_RAW && !dev->o.read_only &&
		 sidelog_open(dev) == 0)
		ret = cow_open(dev->o.file, &(struct cow_open_opts){ .fmt = fmt,
				.flags = flags | COW_OPEN_SIDELOG, .sidelog_fd = dev->sidelog_fd,
				.net_timeout_ms = dev->o.nbd_timeout_ms },
				&img, err, COW_ERRLEN);
	else
		ret = cow_open(dev->o.file, &(struct cow_open_opts){ .fmt = fmt, .flags = flags,
				.net_timeout_ms = dev->o.nbd_timeout_ms },
				&img, err, COW_ERRLEN);
	if (ret < 0) {
		if (dev->sidelog_fd >= 0) {	/* kept: it may hold a dead server's mappings */
			close(dev->sidelog_fd);
			dev->sidelog_fd = -1;
		}
		if (err[0] && ret == -EPERM && (flags & COW_OPEN_CONFINE) && dev->recovering)
			snprintf(dev->err, sizeof(dev->err), "%s (the device was added without "
				 "--allow-backing-outside)", err);
		else if (err[0] && ret == -EPERM && (flags & COW_OPEN_CONFINE))
			snprintf(dev->err, sizeof(dev->err), "%s; add --allow-backing-outside if "
				 "it is trusted", err);
		else if (err[0] && ret == -EREMOTE && dev->recovering)
			snprintf(dev->err, sizeof(dev->err), "%s (the device was added without "
				 "--allow-network-backing)", err);
		else if (err[0] && ret == -EREMOTE)
			snprintf(dev->err, sizeof(dev->err), "%s (--allow-network-backing allows "
				 "it)", err);
		else if (err[0] && ret == -EMEDIUMTYPE && !dev->o.snapshot[0] && !dev->recovering)
			snprintf(dev->err, sizeof(dev->err), "%s; use -t raw for a raw file", err);
		else if (err[0])
			snprintf(dev->err, sizeof(dev->err), "%s", err);
		else
			snprintf(dev->err, sizeof(dev->err), "%s: %s", dev->o.file,
				 strerror(-ret));
		return ret;
	}
	cow_get_info(img, &info);
	if (info.virtual_size < 4096) {
		snprintf(dev->err, sizeof(dev->err), "%s: too small to serve (%" PRIu64
			 " bytes)", dev->o.file, info.virtual_size);
		dev->tgt_data = img;
		eng_close(dev);
		return -EINVAL;
	}
	dev->tgt_data = img;
	dev->size = info.virtual_size;
	/*
	 * The engine journals a new mapping at the next flush. A server that dies would lose the
	 * mappings of writes it acknowledged since, although their data is in the file. With
	 * --recoverable the promise is that a new server continues with nothing lost: the side
	 * log (cowcore/sidelog.c, on tmpfs) holds those mappings and the next open folds them
	 * in. Without a side log (it could not be created), every write is made durable before
	 * it is acknowledged instead (FUA: data, then the journal commit).
	 */
	dev->write_through = dev->o.recoverable && fmt == COW_FMT_UCOW && dev->sidelog_fd < 0;
	/* discard granularity: the engine's block for ucow (it tracks blocks), 4 KiB for raw */
	dev->discard_gran = dev->o.read_only ? 0 :
		(fmt == COW_FMT_UCOW && info.block_size ? info.block_size : 4096);
	return 0;
}

static void eng_close(struct ublk_dev *dev)
{
	struct cow_image *img = dev->tgt_data;
	int ret;

	if (!img)
		return;
	dev->tgt_data = NULL;
	ret = cow_close(img);
	if (ret < 0)
		fprintf(stderr, "ucow: %s: closing the image: %s\n", dev->o.file, strerror(-ret));
	if (dev->sidelog_fd >= 0) {
		if (ret == 0)	/* closed clean: every mapping is in the image */
			unlink(dev->sidelog_path);
		close(dev->sidelog_fd);
		dev->sidelog_fd = -1;
	}
}

/*
 * Wait for the ctx's eventfd with a poll, not a read: the engine's eventfd is non-blocking,
 * and io_uring completes a read on a non-blocking fd with -EAGAIN at once instead of
 * waiting (a busy loop). When the poll fires we drain the counter ourselves (a
 * non-blocking read, so a wakeup whose work was already done cannot fire forever) and run
 * cow_ctx_poll.
 */
static void eng_arm_eventfd(struct ublk_queue *q, struct eng_queue *e)
{
	struct io_uring_sqe *sqe;

	if (e->evfd < 0 || e->ev_armed)
		return;
	sqe = io_uring_get_sqe(&q->ring);
	if (!sqe)
		return;		/* re-armed at the next completion */
	io_uring_prep_poll_add(sqe, e->evfd, POLLIN);
	sqe->user_data = ENG_UD_EVENTFD;
	e->ev_armed = true;
}

static int eng_queue_init(struct ublk_queue *q)
{
	struct eng_queue *e = calloc(1, sizeof(*e));
	int ret;

	if (!e)
		return -ENOMEM;
	e->evfd = -1;
	ret = cow_backend_uring_attach(&q->ring, &e->be);
	if (ret < 0)
		goto err;
	ret = cow_ctx_new(q->dev->tgt_data, e->be, &e->ctx);
	if (ret < 0)
		goto err_be;
	e->evfd = cow_ctx_eventfd(e->ctx);
	q->tgt = e;
	eng_arm_eventfd(q, e);
	return 0;

err_be:
	cow_backend_free(e->be);
err:
	free(e);
	return ret;
}

static void eng_queue_exit(struct ublk_queue *q)
{
	struct eng_queue *e = q->tgt;

	cow_ctx_free(e->ctx);
	cow_backend_free(e->be);
	free(e);
}

static void eng_done(struct cow_req *req, int res)
{
	struct ublk_io *io = (struct ublk_io *)((char *)req - offsetof(struct ublk_io, req));

	ublk_complete_io(io->q, io, res);
}

static void eng_queue_io(struct ublk_queue *q, struct ublk_io *io, const struct uk_io_desc *iod)
{
	struct eng_queue *e = q->tgt;
	struct cow_req *req = &io->req;
	uint32_t flags = iod->op_flags >> 8 << 8;

	memset(req, 0, sizeof(*req));
	req->off = iod->start_sector << 9;
	req->len = (uint64_t)iod->nr_sectors << 9;
	req->buf = io->buf;
	req->cb = eng_done;
	req->priv = io;
	switch (io->op) {
	case UK_IO_OP_READ:
		req->op = COW_READ;
		break;
	case UK_IO_OP_WRITE:
		req->op = COW_WRITE;
		if ((flags & UK_IO_F_FUA) || q->dev->write_through)
			req->flags |= COW_REQ_FUA;
		break;
	case UK_IO_OP_FLUSH:
		req->op = COW_FLUSH;
		req->off = 0;
		req->len = 0;
		break;
	case UK_IO_OP_DISCARD:
		req->op = COW_DISCARD;
		if (q->dev->write_through)
			req->flags |= COW_REQ_FUA;
		break;
	case UK_IO_OP_WRITE_ZEROES:
		req->op = COW_WRITE_ZEROES;
		if (q->dev->write_through)
			req->flags |= COW_REQ_FUA;
		break;
	default:
		ublk_complete_io(q, io, -EOPNOTSUPP);
		return;
	}
	if (req->len > q->dev->io_bytes && (io->op == UK_IO_OP_READ || io->op == UK_IO_OP_WRITE)) {
		ublk_complete_io(q, io, -EINVAL);	/* the driver never sends these */
		return;
	}
	/* an online commit copies again what changes behind it (job.c) */
	if (req->op != COW_READ && req->op != COW_FLUSH &&
	    __builtin_expect(__atomic_load_n(&q->dev->job_track, __ATOMIC_ACQUIRE), 0))
		ublk_job_mark(q->dev, req->off, req->len);
	cow_submit(e->ctx, req);
}

static void eng_handle_cqe(struct ublk_queue *q, const struct io_uring_cqe *cqe)
{
	struct eng_queue *e = q->tgt;

	if (cqe->user_data & COW_UD_ENGINE) {
		cow_backend_complete(cqe->user_data, cqe->res);
		return;
	}
	if (cqe->user_data == ENG_UD_EVENTFD) {
		e->ev_armed = false;
		if (q->pause_state == UBLK_Q_PAUSED) {
			/* the control thread owns the engine now: poll at resume */
			e->ev_deferred = true;
			return;
		}
		if (read(e->evfd, &e->ev_val, sizeof(e->ev_val)) < 0) {
			/* EAGAIN: already drained; the ready list is what counts */
		}
		cow_ctx_poll(e->ctx);
		if (cqe->res >= 0)
			eng_arm_eventfd(q, e);
	}
}

static void eng_resume(struct ublk_queue *q)
{
	struct eng_queue *e = q->tgt;

	if (!e || !e->ev_deferred)
		return;
	e->ev_deferred = false;
	if (read(e->evfd, &e->ev_val, sizeof(e->ev_val)) < 0) {
		/* EAGAIN: nothing */
	}
	cow_ctx_poll(e->ctx);
	eng_arm_eventfd(q, e);
}

static bool eng_busy(struct ublk_queue *q)
{
	struct eng_queue *e = q->tgt;

	return e && cow_backend_inflight(e->be) > 0;
}

#define ADD(o, k, v) (json_object_object_add((o), (k), (v)) != 0)
#define U64(x) json_object_new_int64((int64_t)(x))

static struct json_object *eng_info(struct ublk_dev *dev)
{
	struct cow_image *img = dev->tgt_data;
	struct json_object *o;
	struct cow_info in;
	struct cow_stats st;

	if (!img)
		return NULL;
	cow_get_info(img, &in);
	cow_get_stats(img, &st);
	o = json_object_new_object();
	if (!o || ADD(o, "format", json_object_new_string(cow_fmt_name(in.fmt))) ||
	    ADD(o, "virtual-size", U64(in.virtual_size)) ||
	    ADD(o, "disk-usage", U64(in.disk_usage)) ||
	    ADD(o, "allocated-chunks", U64(in.allocated_chunks)) ||
	    ADD(o, "snapshots", U64(in.nb_snapshots)) ||
	    ADD(o, "dirty", json_object_new_boolean(in.dirty)) ||
	    ADD(o, "corrupt", json_object_new_boolean(in.corrupt)) ||
	    ADD(o, "data-writes", U64(st.data_writes)) ||
	    ADD(o, "meta-writes", U64(st.meta_writes)) ||
	    ADD(o, "journal-commits", U64(st.journal_commits)) ||
	    ADD(o, "allocations", U64(st.allocations)) ||
	    ADD(o, "cow-copies", U64(st.cow_copies)) || ADD(o, "fsyncs", U64(st.fsyncs))) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static int cow_tgt_open(struct ublk_dev *dev)
{
	return eng_open(dev, COW_FMT_UCOW);
}

static int raw_tgt_open(struct ublk_dev *dev)
{
	return eng_open(dev, COW_FMT_RAW);
}

/* a qcow2 image (and its chain), read-only: cowcore reads qcow2, it does not write it */
static int qcow2_tgt_open(struct ublk_dev *dev)
{
	if (!dev->o.read_only) {
		snprintf(dev->err, sizeof(dev->err), "%s: the qcow2 target is read-only: add "
			 "--read-only (or serve a ucow overlay of it with -t cow)", dev->o.file);
		return -EROFS;
	}
	return eng_open(dev, COW_FMT_QCOW2);
}

/* The three targets on the engine differ only in how they open their file. */
#define ENG_TARGET(tname, topen) {					\
	.name = tname, .needs_file = true, .open = topen, .close = eng_close,	\
	.queue_init = eng_queue_init, .queue_exit = eng_queue_exit,		\
	.queue_io = eng_queue_io, .handle_cqe = eng_handle_cqe, .busy = eng_busy, \
	.info = eng_info, .resume = eng_resume,					\
}

const struct ublk_tgt_ops ublk_tgt_cow = ENG_TARGET("cow", cow_tgt_open);
const struct ublk_tgt_ops ublk_tgt_qcow2 = ENG_TARGET("qcow2", qcow2_tgt_open);
const struct ublk_tgt_ops ublk_tgt_raw = ENG_TARGET("raw", raw_tgt_open);
