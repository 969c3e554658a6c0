/* SPDX-License-Identifier: MIT */
/*
 * One hardware queue: a thread with its own io_uring.
 *
 * The ring carries the queue's ublk commands (FETCH_REQ, COMMIT_AND_FETCH_REQ on
 * /dev/ublkcN) and the target's I/O (for raw and cow: the cowcore engine's io_uring backend,
 * attached to this same ring). One io_uring_submit_and_wait per loop turn: it submits every
 * COMMIT and every engine I/O queued during the previous turn and waits for the next event.
 *
 * Tag life (per tag, no allocation on the data path; buffer and cow_req are per tag):
 *
 *   FETCH_REQ --> [in kernel] --cqe res 0--> [in target] --ublk_complete_io--> COMMIT_AND_FETCH
 *                     |                                                          |
 *                     +--cqe res -ENODEV (UBLK_IO_RES_ABORT): aborted, tag done <-+
 *
 * The thread ends when every tag is aborted (STOP_DEV or DEL_DEV cancelled the commands, or
 * the ring is torn down) and the target has nothing in flight.
 *
 * The driver binds a queue to the task that completes the queue's FETCHes: everything for
 * this queue (ring setup, FETCH, COMMIT) happens on this thread.
 *
 * Pause (online snapshots; ublk_dev_pause / ublk_dev_resume, called by the control thread):
 *
 *   RUNNING --dev->pause_req set, q->ctl_fd written--> PAUSING: requests the driver hands us
 *     are held in a per-queue list (linked through their tags: no allocation) instead of
 *     going to the target; commits and the target's completions go on
 *   PAUSING --the target has nothing in flight (in_target == nheld, !busy)--> PAUSED: one
 *     count on dev->pause_ack_fd; from now on the thread does not touch the engine
 *   PAUSING/PAUSED --pause_req cleared, ctl_fd written--> RUNNING: the held requests go to
 *     the target in the order they came
 *   PAUSED for pause N, pause_req already N + 1 (the next pause came before this thread ran
 *     a turn) --> RUNNING as above, then PAUSING for N + 1 (each pause is acknowledged)
 *
 * The data path pays one relaxed load of pause_req per loop turn, no lock.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "ublk.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

static bool queue_ioctl_encode(const struct ublk_queue *q)
{
	return q->dev->info.flags & UK_F_CMD_IOCTL_ENCODE;
}

static struct io_uring_sqe *queue_get_sqe(struct ublk_queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	if (!sqe) {
		/* SQ full: push what is queued (rare; the SQ is sized for the depth) */
		io_uring_submit(&q->ring);
		sqe = io_uring_get_sqe(&q->ring);
	}
	return sqe;
}

static int queue_io_cmd(struct ublk_queue *q, struct ublk_io *io, unsigned nr, int result)
{
	struct io_uring_sqe *sqe = queue_get_sqe(q);
	struct uk_io_cmd *cmd;

	if (!sqe)
		return -EBUSY;
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->dev->cdev_fd;
	sqe->cmd_op = uk_io_op(nr, queue_ioctl_encode(q));
	cmd = (struct uk_io_cmd *)sqe->cmd;
	cmd->q_id = q->q_id;
	cmd->tag = io->tag;
	cmd->result = result;
	cmd->addr = (uint64_t)(uintptr_t)io->buf;
	sqe->user_data = UBLK_UD_CMD | io->tag;
	io->in_kernel = true;
	q->in_kernel++;
	return 0;
}

void ublk_complete_io(struct ublk_queue *q, struct ublk_io *io, int res)
{
	const struct uk_io_desc *iod = &q->iods[io->tag];
	uint64_t bytes = (uint64_t)iod->nr_sectors << 9;
	int ret;

	if (res == 0 && (io->op == UK_IO_OP_READ || io->op == UK_IO_OP_WRITE))
		res = (int)bytes;	/* the engine reports 0; the driver wants bytes */
	ublk_stats_account(q, io, res, bytes);
	q->in_target--;
	ret = queue_io_cmd(q, io, UK_IO_COMMIT_AND_FETCH_REQ, res);
	if (ret)
		fprintf(stderr, "ucow: queue %u tag %u: cannot commit: %s\n", q->q_id, io->tag,
			strerror(-ret));
}

static void queue_handle_cmd_cqe(struct ublk_queue *q, const struct io_uring_cqe *cqe)
{
	unsigned tag = cqe->user_data & 0xffff;
	struct ublk_io *io;
	const struct uk_io_desc *iod;

	if (tag >= q->depth)
		return;
	io = &q->ios[tag];
	io->in_kernel = false;
	q->in_kernel--;

	if (cqe->res != UK_IO_RES_OK) {
		/* -ENODEV: the device is going away; anything else: the command was refused */
		if (cqe->res != -ENODEV)
			fprintf(stderr, "ucow: queue %u tag %u: ublk command failed: %s\n",
				q->q_id, tag, strerror(-cqe->res));
		io->aborted = true;
		return;
	}
	iod = &q->iods[tag];
	io->op = uk_iod_op(iod);
	io->start_ns = ublk_now_ns();
	q->in_target++;
	if (q->pause_state != UBLK_Q_RUNNING) {
		/* paused: keep it (its time in the list counts in its latency) */
		io->held_next = NULL;
		if (q->held_tail)
			q->held_tail->held_next = io;
		else
			q->held_head = io;
		q->held_tail = io;
		q->nheld++;
		return;
	}
	q->dev->tgt->queue_io(q, io, iod);
}

static void queue_arm_ctl(struct ublk_queue *q)
{
	struct io_uring_sqe *sqe = queue_get_sqe(q);

	if (!sqe)
		return;
	io_uring_prep_poll_add(sqe, q->ctl_fd, POLLIN);
	sqe->user_data = UBLK_UD_CTL;
}

static void queue_ctl_event(struct ublk_queue *q, const struct io_uring_cqe *cqe)
{
	uint64_t v;

	if (read(q->ctl_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: already drained; pause_req is what counts */
	}
	if (cqe->res >= 0)
		queue_arm_ctl(q);
}

static void queue_resume(struct ublk_queue *q);

/*
 * Once per loop turn while a pause is wanted (want: its number) or not yet undone. A pause
 * may end and the next one begin before this thread runs a turn in between (the online jobs
 * pause every few ms): it sees a new number while still paused for the old one, so it
 * resumes first, then pauses (and reports) again.
 */
static void queue_pause_step(struct ublk_queue *q, unsigned want)
{
	struct ublk_dev *dev = q->dev;
	uint64_t one = 1;

	if (want && q->pause_state != UBLK_Q_RUNNING && q->pause_gen != want)
		queue_resume(q);
	if (want) {
		if (q->pause_state == UBLK_Q_RUNNING) {
			q->pause_state = UBLK_Q_PAUSING;
			q->pause_gen = want;
		}
		if (q->pause_state == UBLK_Q_PAUSING && q->in_target == q->nheld &&
		    (!dev->tgt->busy || !dev->tgt->busy(q))) {
			q->pause_state = UBLK_Q_PAUSED;
			if (write(dev->pause_ack_fd, &one, sizeof(one)) < 0)
				fprintf(stderr, "ucow: queue %u: cannot report paused: %s\n",
					q->q_id, strerror(errno));
		}
		return;
	}
	queue_resume(q);
}

/* Out of a pause: what came in meanwhile goes to the target, oldest first. */
static void queue_resume(struct ublk_queue *q)
{
	struct ublk_dev *dev = q->dev;

	if (q->pause_state == UBLK_Q_PAUSED && dev->tgt->resume)
		dev->tgt->resume(q);
	q->pause_state = UBLK_Q_RUNNING;
	while (q->held_head) {
		struct ublk_io *io = q->held_head;

		q->held_head = io->held_next;
		if (!q->held_head)
			q->held_tail = NULL;
		io->held_next = NULL;
		q->nheld--;
		dev->tgt->queue_io(q, io, &q->iods[io->tag]);
	}
}

static int queue_setup(struct ublk_queue *q)
{
	struct ublk_dev *dev = q->dev;
	long page = sysconf(_SC_PAGESIZE);
	struct io_uring_sqe *sqe;
	unsigned entries, i;
	int ret;

	q->iods_len = ((size_t)q->depth * sizeof(struct uk_io_desc) + page - 1) / page * page;
	q->iods = mmap(NULL, q->iods_len, PROT_READ, MAP_SHARED | MAP_POPULATE, dev->cdev_fd,
		       uk_iod_mmap_off(q->q_id, page));
	if (q->iods == MAP_FAILED) {
		q->iods = NULL;
		ret = -errno;
		snprintf(dev->err, sizeof(dev->err), "queue %u: cannot map descriptors: %s",
			 q->q_id, strerror(-ret));
		return ret;
	}

	/* ublk commands (depth) plus engine I/O (a few per request) */
	entries = 1;
	while (entries < q->depth * 4)
		entries <<= 1;
	if (entries > 4096)
		entries = 4096;
	ret = io_uring_queue_init(entries, &q->ring, 0);
	if (ret < 0) {
		snprintf(dev->err, sizeof(dev->err), "queue %u: io_uring setup: %s", q->q_id,
			 strerror(-ret));
		return ret;
	}
	q->ring_ok = true;

	ret = dev->tgt->queue_init(q);
	if (ret < 0) {
		if (!dev->err[0])
			snprintf(dev->err, sizeof(dev->err), "queue %u: target setup: %s",
				 q->q_id, strerror(-ret));
		return ret;
	}
	sqe = queue_get_sqe(q);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, dev->stop_fd, POLLIN);
	sqe->user_data = UBLK_UD_STOP;
	queue_arm_ctl(q);
	for (i = 0; i < q->depth; i++) {
		ret = queue_io_cmd(q, &q->ios[i], UK_IO_FETCH_REQ, 0);
		if (ret < 0)
			return ret;
	}
	ret = io_uring_submit(&q->ring);
	if (ret < 0) {
		snprintf(dev->err, sizeof(dev->err), "queue %u: submitting FETCH: %s", q->q_id,
			 strerror(-ret));
		return ret;
	}
	return 0;
}

static bool queue_done(struct ublk_queue *q)
{
	if (q->in_target || (q->in_kernel && !q->stopping))
		return false;
	return !q->dev->tgt->busy || !q->dev->tgt->busy(q);
}

static void queue_loop(struct ublk_queue *q)
{
	struct io_uring_cqe *cqe;
	unsigned head, n;
	unsigned want;
	int ret;

	while (!queue_done(q)) {
		ret = io_uring_submit_and_wait(&q->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			fprintf(stderr, "ucow: queue %u: io_uring: %s\n", q->q_id, strerror(-ret));
			q->ret = ret;
			break;
		}
		n = 0;
		io_uring_for_each_cqe(&q->ring, head, cqe) {
			if (cqe->user_data & COW_UD_ENGINE)
				q->dev->tgt->handle_cqe(q, cqe);
			else if (UBLK_UD_KIND(cqe->user_data) == UBLK_UD_CMD)
				queue_handle_cmd_cqe(q, cqe);
			else if (cqe->user_data == UBLK_UD_STOP)
				q->stopping = true;
			else if (cqe->user_data == UBLK_UD_CTL)
				queue_ctl_event(q, cqe);
			else
				q->dev->tgt->handle_cqe(q, cqe);
			n++;
		}
		io_uring_cq_advance(&q->ring, n);
		/* the only thing the data path pays for online operations */
		want = __atomic_load_n(&q->dev->pause_req, __ATOMIC_ACQUIRE);	/* a number */
		if (__builtin_expect(want || q->pause_state != UBLK_Q_RUNNING, 0))
			queue_pause_step(q, want);
	}
}

static void queue_teardown(struct ublk_queue *q)
{
	/* ring first: it cancels what is still pending (ublk commands, the target's reads) */
	if (q->ring_ok)
		io_uring_queue_exit(&q->ring);
	q->ring_ok = false;
	if (q->tgt)
		q->dev->tgt->queue_exit(q);
	q->tgt = NULL;
	if (q->iods)
		munmap((void *)q->iods, q->iods_len);
	q->iods = NULL;
}

static void *queue_thread(void *arg)
{
	struct ublk_queue *q = arg;
	uint64_t one = 1;
	char name[16];

	snprintf(name, sizeof(name), "ucow-q%u", q->q_id);
	prctl(PR_SET_NAME, name);
	/* our own page reclaim must never wait on our own device */
	prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
	if (CPU_COUNT(&q->cpus) > 0)
		sched_setaffinity(0, sizeof(q->cpus), &q->cpus);

	q->ret = queue_setup(q);
	/* tell the control thread: ready (all FETCHes in) or failed (q->ret) */
	if (write(q->dev->ready_fd, &one, sizeof(one)) < 0)
		q->ret = q->ret ? q->ret : -errno;
	if (q->ret == 0)
		queue_loop(q);
	queue_teardown(q);
	if (write(q->dev->wake_fd, &one, sizeof(one)) < 0)
		return NULL;
	return NULL;
}

int ublk_queue_start(struct ublk_dev *dev, struct ublk_queue *q, unsigned q_id)
{
	unsigned i;
	int ret;

	q->dev = dev;
	q->q_id = q_id;
	q->depth = dev->info.queue_depth;
	q->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->ctl_fd < 0)
		return -errno;
	q->ios = calloc(q->depth, sizeof(*q->ios));
	if (!q->ios)
		return -ENOMEM;
	q->bufs_len = (size_t)q->depth * dev->io_bytes;
	q->bufs = mmap(NULL, q->bufs_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (q->bufs == MAP_FAILED) {
		q->bufs = NULL;
		return -ENOMEM;
	}
	for (i = 0; i < q->depth; i++) {
		q->ios[i].buf = (char *)q->bufs + (size_t)i * dev->io_bytes;
		q->ios[i].q = q;
		q->ios[i].tag = i;
	}
	/* the driver maps CPUs to queues; run the queue's thread on those CPUs */
	CPU_ZERO(&q->cpus);
	if (ublk_ctrl_get_affinity(&dev->ctrl, dev->info.dev_id, q_id, &q->cpus,
				   sizeof(q->cpus)) < 0)
		CPU_ZERO(&q->cpus);
	ret = pthread_create(&q->thread, NULL, queue_thread, q);
	if (ret)
		return -ret;
	q->thread_started = true;
	return 0;
}

void ublk_queue_join(struct ublk_queue *q)
{
	if (q->thread_started)
		pthread_join(q->thread, NULL);
	q->thread_started = false;
	if (q->bufs)
		munmap(q->bufs, q->bufs_len);
	q->bufs = NULL;
	free(q->ios);
	q->ios = NULL;
	if (q->ctl_fd > 0)
		close(q->ctl_fd);
	q->ctl_fd = -1;
	q->dev = NULL;
}

/* ---- pause / resume (control thread) ----------------------------------------------------- */

static void dev_kick_queues(struct ublk_dev *dev)
{
	uint64_t one = 1;
	unsigned i;

	for (i = 0; i < dev->info.nr_hw_queues; i++)
		if (dev->queues[i].ctl_fd > 0 &&
		    write(dev->queues[i].ctl_fd, &one, sizeof(one)) < 0)
			fprintf(stderr, "ucow: queue %u: cannot wake: %s\n", i, strerror(errno));
}

int ublk_dev_pause(struct ublk_dev *dev, int kind, int timeout_ms, char *err)
{
	unsigned nr = dev->info.nr_hw_queues, acked = 0;
	uint64_t v, deadline;
	struct pollfd pfd[2] = {
		{ .fd = dev->pause_ack_fd, .events = POLLIN },
		{ .fd = dev->wake_fd, .events = POLLIN },
	};

	if (!dev->queues || dev->pause_ack_fd < 0) {
		snprintf(err, UBLK_ERRLEN, "the device is not running");
		return -ENODEV;
	}
	while (read(dev->pause_ack_fd, &v, sizeof(v)) == sizeof(v))
		;	/* a late report of an abandoned pause */
	dev->pause_kind = kind;
	dev->pause_t0 = ublk_now_ns();
	deadline = dev->pause_t0 + (uint64_t)timeout_ms * 1000000;
	if (!++dev->pause_seq)
		dev->pause_seq = 1;	/* 0 means "no pause" */
	__atomic_store_n(&dev->pause_req, dev->pause_seq, __ATOMIC_RELEASE);
	dev_kick_queues(dev);
	while (acked < nr) {
		uint64_t now = ublk_now_ns();
		int r;

		if (now >= deadline) {
			snprintf(err, UBLK_ERRLEN, "the queues did not become idle within %d ms "
				 "(%u of %u paused)", timeout_ms, acked, nr);
			ublk_dev_resume(dev);
			return -ETIMEDOUT;
		}
		r = poll(pfd, 2, (int)((deadline - now) / 1000000) + 1);
		if (r < 0 && errno != EINTR) {
			snprintf(err, UBLK_ERRLEN, "poll: %s", strerror(errno));
			ublk_dev_resume(dev);
			return -errno;
		}
		if (pfd[1].revents) {
			snprintf(err, UBLK_ERRLEN, "a queue thread ended");
			ublk_dev_resume(dev);
			return -EIO;
		}
		if (pfd[0].revents && read(dev->pause_ack_fd, &v, sizeof(v)) == sizeof(v))
			acked += (unsigned)v;
	}
	/* every queue's engine work happened before its eventfd write: the engine is ours */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return 0;
}

uint64_t ublk_dev_resume(struct ublk_dev *dev)
{
	struct ublk_pause_stats *ps = &dev->pause_st[dev->pause_kind];
	uint64_t d;

	__atomic_store_n(&dev->pause_req, 0, __ATOMIC_RELEASE);
	dev_kick_queues(dev);
	d = ublk_now_ns() - dev->pause_t0;
	ps->count++;
	ps->last_ns = d;
	ps->total_ns += d;
	if (d > ps->max_ns)
		ps->max_ns = d;
	return d;
}
