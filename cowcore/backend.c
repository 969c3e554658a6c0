/* SPDX-License-Identifier: MIT */
/*
 * I/O backends: io_uring (own ring, or attached to a ring the caller owns), libaio, and
 * plain synchronous calls. Each backend belongs to one thread. The engine hands a backend
 * struct cow_io's; the backend performs them and calls io->done(io, res).
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <libaio.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cowcore.h"

#define PUNCH_MODE (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)
#define ZERO_MODE (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)

/* Do one I/O with plain system calls; the result as the kernel would report it. */
static int io_do_sync(struct cow_io *io)
{
	ssize_t r;
	switch (io->op) {
	case COW_IO_READ:
		r = pread(io->fd, io->buf, io->len, io->off);
		break;
	case COW_IO_WRITE:
		r = pwrite(io->fd, io->buf, io->len, io->off);
		break;
	case COW_IO_FSYNC:
		r = fdatasync(io->fd);
		break;
	case COW_IO_PUNCH:
		r = fallocate(io->fd, PUNCH_MODE, io->off, io->len);
		break;
	case COW_IO_ZERO_RANGE:
		r = fallocate(io->fd, ZERO_MODE, io->off, io->len);
		break;
	case COW_IO_POLL: {
		/* waits: the engine arms a poll only with a timer in the set it polls */
		struct pollfd pfd = { .fd = io->fd, .events = (short)io->len };
		do
			r = poll(&pfd, 1, -1);
		while (r < 0 && errno == EINTR);
		if (r >= 0)
			r = pfd.revents;
		break;
	}
	default:
		return -EINVAL;
	}
	return r < 0 ? -errno : (int)r;
}

static void io_finish(struct cow_backend *be, struct cow_io *io, int res)
{
	be->inflight--;
	io->done(io, res);
}

/* ---- sync -------------------------------------------------------------------------------- */

struct sync_be {
	struct cow_backend be;
	struct cow_io *head, *tail;
};

static int sync_queue(struct cow_backend *be, struct cow_io *io)
{
	struct sync_be *s = (struct sync_be *)be;
	io->next = NULL;
	if (s->tail)
		s->tail->next = io;
	else
		s->head = io;
	s->tail = io;
	be->inflight++;
	return 0;
}

static int sync_submit_wait(struct cow_backend *be, unsigned min)
{
	struct sync_be *s = (struct sync_be *)be;
	while (s->head) {
		struct cow_io *io = s->head;
		s->head = io->next;
		if (!s->head)
			s->tail = NULL;
		io_finish(be, io, io_do_sync(io));
	}
	return 0;
}

static void sync_destroy(struct cow_backend *be) { free(be); }

static const struct cow_backend_ops sync_ops = {
	.name = "sync", .queue = sync_queue, .submit_wait = sync_submit_wait,
	.destroy = sync_destroy,
};

/* ---- io_uring ---------------------------------------------------------------------------- */

struct uring_be {
	struct cow_backend be;
	struct io_uring own;
	struct io_uring *ring;
	bool attached;
};

static int uring_queue(struct cow_backend *be, struct cow_io *io)
{
	struct uring_be *u = (struct uring_be *)be;
	struct io_uring_sqe *sqe = io_uring_get_sqe(u->ring);
	if (!sqe) {
		int r = io_uring_submit(u->ring);
		if (r < 0)
			return r;
		sqe = io_uring_get_sqe(u->ring);
		if (!sqe)
			return -EBUSY;
	}
	switch (io->op) {
	case COW_IO_READ:
		io_uring_prep_read(sqe, io->fd, io->buf, io->len, io->off);
		break;
	case COW_IO_WRITE:
		io_uring_prep_write(sqe, io->fd, io->buf, io->len, io->off);
		break;
	case COW_IO_FSYNC:
		io_uring_prep_fsync(sqe, io->fd, IORING_FSYNC_DATASYNC);
		break;
	case COW_IO_PUNCH:
		io_uring_prep_fallocate(sqe, io->fd, PUNCH_MODE, io->off, io->len);
		break;
	case COW_IO_ZERO_RANGE:
		io_uring_prep_fallocate(sqe, io->fd, ZERO_MODE, io->off, io->len);
		break;
	case COW_IO_POLL:
		io_uring_prep_poll_add(sqe, io->fd, io->len);
		break;
	default:
		return -EINVAL;
	}
	sqe->user_data = (uint64_t)(uintptr_t)io | COW_UD_ENGINE;
	io->be = be;
	be->inflight++;
	return 0;
}

void cow_backend_complete(uint64_t user_data, int res)
{
	struct cow_io *io = (struct cow_io *)(uintptr_t)(user_data & ~COW_UD_ENGINE);
	io_finish(io->be, io, res);	/* the CQE names the io, the io its backend */
}

static int uring_submit_wait(struct cow_backend *be, unsigned min)
{
	struct uring_be *u = (struct uring_be *)be;
	struct io_uring_cqe *cqe;
	int r = io_uring_submit_and_wait(u->ring, min);
	if (r < 0 && r != -EINTR)
		return r;
	while (io_uring_peek_cqe(u->ring, &cqe) == 0) {
		uint64_t ud = cqe->user_data;
		int res = cqe->res;
		io_uring_cqe_seen(u->ring, cqe);
		cow_backend_complete(ud, res);
	}
	return 0;
}

static void uring_destroy(struct cow_backend *be)
{
	struct uring_be *u = (struct uring_be *)be;
	if (!u->attached)
		io_uring_queue_exit(&u->own);
	free(u);
}

static const struct cow_backend_ops uring_ops = {
	.name = "uring", .queue = uring_queue, .submit_wait = uring_submit_wait,
	.destroy = uring_destroy,
};

int cow_backend_uring_attach(struct io_uring *ring, struct cow_backend **out)
{
	struct uring_be *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->be.ops = &uring_ops;
	u->ring = ring;
	u->attached = true;
	*out = &u->be;
	return 0;
}

/* ---- libaio ------------------------------------------------------------------------------ */

struct aio_be {
	struct cow_backend be;
	io_context_t aioctx;
	unsigned depth, submitted;
	struct cow_io *head, *tail;	/* queued, not yet submitted */
	struct cow_io *done_head;	/* completed synchronously (fsync, fallocate) */
	struct cow_io *polls;		/* COW_IO_POLL: poll(2)ed in submit_wait */
	unsigned npolls;
	struct iocb *iocbs;
	struct iocb **iocbp;
	struct io_event *events;
};

static int aio_queue(struct cow_backend *be, struct cow_io *io)
{
	struct aio_be *a = (struct aio_be *)be;
	be->inflight++;
	if (io->op == COW_IO_POLL) {
		io->next = a->polls;
		a->polls = io;
		a->npolls++;
		return 0;
	}
	if (io->op != COW_IO_READ && io->op != COW_IO_WRITE) {
		/* libaio has no fallocate, and fsync support depends on the file system */
		io->len = (uint32_t)io_do_sync(io);	/* result parked in len; see below */
		io->next = a->done_head;
		a->done_head = io;
		return 0;
	}
	io->next = NULL;
	if (a->tail)
		a->tail->next = io;
	else
		a->head = io;
	a->tail = io;
	return 0;
}

/* The queued polls, waiting up to timeout ms (-1: no bound) for one: completions run. */
static int aio_run_polls(struct aio_be *a, int timeout, unsigned *got)
{
	struct pollfd pfd[64];
	struct cow_io *io, *ready = NULL, **pp;
	unsigned n = 0;
	int r;
	for (io = a->polls; io && n < 64; io = io->next, n++)
		pfd[n] = (struct pollfd){ .fd = io->fd, .events = (short)io->len };
	r = poll(pfd, n, timeout);
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	if (!r)
		return 0;
	n = 0;
	for (pp = &a->polls; (io = *pp) && n < 64; n++) {
		if (pfd[n].revents) {
			*pp = io->next;
			io->len = (uint32_t)pfd[n].revents;	/* the result, as done_head does */
			io->next = ready;
			ready = io;
			a->npolls--;
		} else {
			pp = &io->next;
		}
	}
	while ((io = ready)) {
		ready = io->next;
		(*got)++;
		io_finish(&a->be, io, (int)io->len);
	}
	return 0;
}

static int aio_reap(struct aio_be *a, unsigned want, struct timespec *ts, unsigned *got)
{
	int n = io_getevents(a->aioctx, want, a->depth, a->events, ts);
	if (n < 0)
		return n == -EINTR ? 0 : n;
	for (int i = 0; i < n; i++) {
		struct cow_io *io = a->events[i].data;
		long res = (long)a->events[i].res;
		a->submitted--;
		(*got)++;
		io_finish(&a->be, io, (int)res);
	}
	return 0;
}

static int aio_submit_wait(struct cow_backend *be, unsigned min)
{
	struct aio_be *a = (struct aio_be *)be;
	unsigned got = 0;

	while (a->done_head) {
		struct cow_io *io = a->done_head;
		a->done_head = io->next;
		io_finish(be, io, (int)io->len);
		got++;
	}
	while (a->head && a->submitted < a->depth) {
		unsigned n = 0;
		while (a->head && a->submitted + n < a->depth) {
			struct cow_io *io = a->head;
			struct iocb *cb = &a->iocbs[n];
			a->head = io->next;
			if (io->op == COW_IO_READ)
				io_prep_pread(cb, io->fd, io->buf, io->len, io->off);
			else
				io_prep_pwrite(cb, io->fd, io->buf, io->len, io->off);
			cb->data = io;
			a->iocbp[n++] = cb;
		}
		if (!a->head)
			a->tail = NULL;
		int r = io_submit(a->aioctx, n, a->iocbp);
		if (r < 0)
			return r;
		a->submitted += n;
		if ((unsigned)r < n)
			return -EIO;
	}
	if (a->polls) {
		/* polls and kernel AIO together: look at each in turn, sleeping in poll(2)
		 * (1 ms at a time while AIO is in flight) until min have completed */
		struct timespec zero = { 0, 0 };
		int r = 0;
		while (!r && (a->polls || a->submitted)) {
			if (a->submitted)
				r = aio_reap(a, 0, &zero, &got);
			if (r || got >= min)
				break;
			if (a->polls)
				r = aio_run_polls(a, a->submitted ? 1 : -1, &got);
			if (got >= min)
				break;
		}
		return r;
	}
	if (!a->submitted)
		return 0;
	unsigned want = min > got ? min - got : 0;
	if (want > a->submitted)
		want = a->submitted;
	return aio_reap(a, want, NULL, &got);
}

static void aio_destroy(struct cow_backend *be)
{
	struct aio_be *a = (struct aio_be *)be;
	io_destroy(a->aioctx);
	free(a->iocbs);
	free(a->iocbp);
	free(a->events);
	free(a);
}

static const struct cow_backend_ops aio_ops = {
	.name = "aio", .queue = aio_queue, .submit_wait = aio_submit_wait,
	.destroy = aio_destroy,
};

/* ---- construction ------------------------------------------------------------------------ */

int cow_backend_new(const char *name, unsigned depth, struct cow_backend **out)
{
	int r;
	if (!depth)
		depth = 64;
	if (!name || !strcmp(name, "uring")) {
		struct uring_be *u = calloc(1, sizeof(*u));
		if (!u)
			return -ENOMEM;
		r = io_uring_queue_init(depth * 2, &u->own, 0);
		if (r < 0) {
			free(u);
			return r;
		}
		u->be.ops = &uring_ops;
		u->ring = &u->own;
		*out = &u->be;
		return 0;
	}
	if (!strcmp(name, "aio")) {
		struct aio_be *a = calloc(1, sizeof(*a));
		if (!a)
			return -ENOMEM;
		a->depth = depth;
		a->iocbs = calloc(depth, sizeof(*a->iocbs));
		a->iocbp = calloc(depth, sizeof(*a->iocbp));
		a->events = calloc(depth, sizeof(*a->events));
		r = (a->iocbs && a->iocbp && a->events) ? io_setup(depth, &a->aioctx) : -ENOMEM;
		if (r < 0) {
			free(a->iocbs);
			free(a->iocbp);
			free(a->events);
			free(a);
			return r;
		}
		a->be.ops = &aio_ops;
		*out = &a->be;
		return 0;
	}
	if (!strcmp(name, "sync")) {
		struct sync_be *s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		s->be.ops = &sync_ops;
		*out = &s->be;
		return 0;
	}
	return -EINVAL;
}

void cow_backend_free(struct cow_backend *be)
{
	if (be)
		be->ops->destroy(be);
}

int cow_backend_submit_wait(struct cow_backend *be, unsigned min)
{
	return be->ops->submit_wait(be, min);
}

unsigned cow_backend_inflight(const struct cow_backend *be)
{
	return be->inflight;
}
