/* SPDX-License-Identifier: MIT */
/*
 * The background fold of a served cow image's underlays (cowcore: cow_fold; format.md and
 * design.md "Underlays"). A first write after a snapshot copies nothing: its chunk holds the
 * blocks written since and reads the others through the parent snapshot's chunk. That costs
 * sequential reads (a chunk's data in two places) and the next snapshot create, which must
 * copy those blocks first, inside its pause of the queues. The control thread copies them
 * ahead of time instead, a few chunks per pause:
 *
 *   idle    once no request has arrived for UBLK_FOLD_IDLE_MS (the queues' request counts
 *           do not move) and first writes made underlays since the last pass began, it
 *           folds UBLK_FOLD_STEP chunks per pause (dev stats: "fold" pauses) with
 *           UBLK_JOB_GAP_MS between, from a cursor over the table, while the device stays
 *           idle; a pass that ends with the count of underlays made unchanged since it
 *           began has left none behind, and the fold rests until first writes make more.
 *   create  before an online snapshot create (or grow) pauses the queues for itself, one
 *           whole pass runs the same way whether the device is idle or not (the guest's
 *           requests go on between the steps), so that the create's own pause folds only
 *           what the guest wrote meanwhile; for at most UBLK_FOLD_PASS_MAX_MS (an image
 *           with more underlays than that folds the rest in the create's pause). A stop
 *           signal (or a queue thread that ended) between two steps ends the pass and
 *           fails the create, so that the device stops at once.
 *
 * Each step's records are committed before the queues resume (cow_fold), so a server that
 * dies keeps every fold it counted; the next server starts a pass of its own. Nothing runs
 * while an online job (job.c) does, or on a device served read-only.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ublk.h"

#define UBLK_FOLD_IDLE_MS 200	/* no request for this long: the device is idle */
#define UBLK_FOLD_STEP 4	/* chunks folded per pause (at most 4 MiB copied at 1 MiB) */
#define UBLK_FOLD_LOOK_MS 1000	/* a device with snapshots: look for new underlays this often */
#define UBLK_FOLD_PAUSE_TIMEOUT_MS 10000
#define UBLK_FOLD_PASS_MAX_MS 120000	/* a pass before a create: then the create folds the rest
					 * (the client waits 300 s; a stop signal ends the pass) */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The image whose underlays this device may fold, or NULL. */
static struct cow_image *fold_img(struct ublk_dev *dev)
{
	if (dev->tgt != &ublk_tgt_cow || !dev->tgt_data || dev->o.read_only || dev->o.snapshot[0] ||
	    dev->fold.failed)
		return NULL;
	return dev->tgt_data;
}

/* One step: a pause, up to UBLK_FOLD_STEP chunks folded. 1: the pass goes on, 0: it ended,
 * -errno (err set). */
static int fold_step(struct ublk_dev *dev, struct cow_image *img, char *err, size_t len)
{
	struct ublk_fold *f = &dev->fold;
	char perr[UBLK_ERRLEN];
	bool done = false;
	int n;

	if (!f->cursor)
		f->made_at_start = cow_underlays_made(img);
	n = ublk_dev_pause(dev, UBLK_PAUSE_FOLD, UBLK_FOLD_PAUSE_TIMEOUT_MS, perr);
	if (n < 0) {
		snprintf(err, len, "cannot pause the device: %s", perr);
		return n;
	}
	n = cow_fold(img, &f->cursor, UBLK_FOLD_STEP, &done);
	ublk_dev_resume(dev);
	if (n < 0) {
		snprintf(err, len, "%s", cow_errmsg(img)[0] ? cow_errmsg(img) : strerror(-n));
		f->failed = true;
		f->cursor = 0;
		fprintf(stderr, "ucow: /dev/ublkb%u: background fold failed (it stops): %s\n",
			dev->info.dev_id, err);
		return n;
	}
	f->chunks += (uint64_t)n;
	f->steps++;
	if (!done)
		return 1;
	f->passes++;
	f->made_done = f->made_at_start;
	f->cursor = 0;
	return 0;
}

int ublk_fold_step(struct ublk_dev *dev)
{
	struct ublk_fold *f = &dev->fold;
	struct cow_image *img = fold_img(dev);
	char err[UBLK_ERRLEN];
	struct cow_info in;
	uint64_t now, ios;

	if (!img)
		return -1;
	if (dev->job && dev->job->state == UBLK_JOB_RUNNING)
		return UBLK_FOLD_LOOK_MS;	/* after the job */
	if (!f->cursor) {
		bool rest = f->passes && cow_underlays_made(img) == f->made_done;
		if (rest || !f->started) {	/* (cow_get_info walks the table: not each look) */
			cow_get_info(img, &in);
			if (!in.nb_snapshots)
				return -1;	/* no parent: no underlay (a create looks again) */
			if (rest)
				return UBLK_FOLD_LOOK_MS;	/* nothing new */
		}
	}
	now = now_ns();
	ios = ublk_dev_ios(dev);
	if (!f->started || ios != f->last_ios) {	/* the guest is busy: wait */
		f->started = true;
		f->last_ios = ios;
		f->idle_since_ns = now;
		return UBLK_FOLD_IDLE_MS;
	}
	if (now - f->idle_since_ns < UBLK_FOLD_IDLE_MS * 1000000ull)
		return (int)((f->idle_since_ns + UBLK_FOLD_IDLE_MS * 1000000ull - now) / 1000000) + 1;
	if (fold_step(dev, img, err, sizeof(err)) < 0)
		return -1;
	return UBLK_JOB_GAP_MS;
}

/* A stop signal or a dying queue waits to be read by the control loop: the pass makes way
 * (the fds are only polled; the loop reads them when the request has been answered). */
static bool stop_pending(struct ublk_dev *dev)
{
	struct pollfd pfd[2] = {
		{ .fd = dev->sig_fd, .events = POLLIN },
		{ .fd = dev->wake_fd, .events = POLLIN },
	};

	return poll(pfd, 2, 0) > 0;
}

int ublk_fold_pass(struct ublk_dev *dev, char *err, size_t len)
{
	struct cow_image *img = fold_img(dev);
	uint64_t end = now_ns() + UBLK_FOLD_PASS_MAX_MS * 1000000ull;
	int r;

	if (!img || (!dev->fold.cursor && dev->fold.passes &&
		     cow_underlays_made(img) == dev->fold.made_done))
		return 0;
	while ((r = fold_step(dev, img, err, len)) > 0 && now_ns() < end) {
		if (stop_pending(dev)) {
			snprintf(err, len, "the device is stopping");
			return -ECANCELED;
		}
		usleep(UBLK_JOB_GAP_MS * 1000);	/* the guest's turn */
	}
	return r < 0 ? r : 0;
}
