/* SPDX-License-Identifier: MIT */
/*
 * Online whole-image jobs of a served cow image, run by the control thread in steps between
 * its other work (signals, socket requests, reclaim): one job at a time per device.
 *
 *   flatten   (ucow rebase -b "" on a served overlay) copies into the overlay every range it
 *             still reads from its backing chain and the chain does not read as zeros, then
 *             drops the backing file from the header (cow_set_backing): the overlay stands
 *             alone, the device never stopped.
 *
 * Each step is one pause of the queues (ublk_dev_pause): with no request in flight the job
 * reads and writes through its own engine context, and no guest write can slip between its
 * read of a range and its write of it. A step copies at most UBLK_JOB_STEP_BYTES and walks
 * at most UBLK_JOB_WALK_BYTES of the virtual size, so a pause stays short (dev stats counts
 * these pauses under "job"), and the control loop lets UBLK_JOB_GAP_MS pass between steps
 * so the guest's I/O goes on. Guest writes during the job only turn backing ranges into the
 * overlay's own; they never make one read from the backing again, so one pass suffices.
 *
 * A server that dies mid-job leaves an overlay holding part of its backing's data (the same
 * content as before: copies of what it read through) and still naming its backing file:
 * the job can simply be run again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ublk.h"

#define UBLK_JOB_STEP_BYTES (4ull << 20)	/* copied per pause */
#define UBLK_JOB_WALK_BYTES (1ull << 30)	/* walked per pause (unallocated or zero ranges) */
#define UBLK_JOB_PAUSE_TIMEOUT_MS 10000

static const char *const kind_names[] = { [UBLK_JOB_FLATTEN] = "flatten" };
static const char *const state_names[] = { "running", "done", "failed" };

/* Where [off, off + len) of img reads from: its own data, zeros, or (COW_MAP_BACKING) data
 * of the chain below that is not all zeros. *run: the length of the first such run. */
static int chain_status(struct cow_image *img, uint64_t off, uint64_t len, uint64_t *run)
{
	int st = cow_map(img, off, len, run, NULL);
	if (st != COW_MAP_BACKING)
		return st;
	struct cow_image *b = cow_backing_image(img);
	struct cow_info bi;
	if (!b)
		return COW_MAP_ZERO;
	cow_get_info(b, &bi);
	if (off >= bi.virtual_size)
		return COW_MAP_ZERO;	/* past the backing's end: zeros */
	uint64_t brun, blen = *run < bi.virtual_size - off ? *run : bi.virtual_size - off;
	int bst = chain_status(b, off, blen, &brun);
	if (bst < 0)
		return bst;
	*run = brun;
	return bst == COW_MAP_ZERO ? COW_MAP_ZERO : COW_MAP_BACKING;
}

int ublk_job_start(struct ublk_dev *dev, int kind, char *why, size_t wlen)
{
	struct cow_image *img = dev->tgt_data;
	struct ublk_job *j = dev->job;
	struct cow_info in;
	int r;

	if (dev->tgt != &ublk_tgt_cow || !img) {
		snprintf(why, wlen, "the %s target has no backing chain", dev->tgt->name);
		return -ENOTSUP;
	}
	if (dev->o.read_only || dev->o.snapshot[0]) {
		snprintf(why, wlen, "served read-only by /dev/ublkb%u (ucow dev del %u first)",
			 dev->info.dev_id, dev->info.dev_id);
		return -EROFS;
	}
	if (j && j->state == UBLK_JOB_RUNNING) {
		snprintf(why, wlen, "a %s job is running on /dev/ublkb%u", kind_names[j->kind],
			 dev->info.dev_id);
		return -EBUSY;
	}
	cow_get_info(img, &in);
	if (!in.backing) {
		snprintf(why, wlen, "the image has no backing file");
		return -EINVAL;
	}
	if (in.nb_snapshots) {
		snprintf(why, wlen, "the image has internal snapshots (their content would change)");
		return -ENOTSUP;
	}
	if (!j) {
		j = calloc(1, sizeof(*j));
		if (!j) {
			snprintf(why, wlen, "out of memory");
			return -ENOMEM;
		}
		dev->job = j;
	}
	ublk_job_free_io(j);
	memset(j, 0, sizeof(*j));
	j->kind = kind;
	j->total = in.virtual_size;
	r = cow_backend_new("sync", 4, &j->be);
	if (!r)
		r = cow_ctx_new(img, j->be, &j->ctx);
	j->buf = r ? NULL : aligned_alloc(4096, UBLK_JOB_STEP_BYTES);
	if (r || !j->buf) {
		ublk_job_free_io(j);
		snprintf(why, wlen, "cannot start the job: %s", strerror(r ? -r : ENOMEM));
		return r ? r : -ENOMEM;
	}
	j->state = UBLK_JOB_RUNNING;
	j->t0 = ublk_now_ns();
	return 0;
}

void ublk_job_free_io(struct ublk_job *j)
{
	if (!j)
		return;
	if (j->ctx)
		cow_ctx_free(j->ctx);
	if (j->be)
		cow_backend_free(j->be);
	free(j->buf);
	j->ctx = NULL;
	j->be = NULL;
	j->buf = NULL;
}

static void job_fail(struct ublk_job *j, const char *what, int r, struct cow_image *img)
{
	const char *m = img ? cow_errmsg(img) : NULL;
	snprintf(j->err, sizeof(j->err), "%s: %s", what, m && *m ? m : strerror(-r));
	j->state = UBLK_JOB_FAILED;
	ublk_job_free_io(j);
	fprintf(stderr, "ucow: %s job failed: %s\n", kind_names[j->kind], j->err);
}

/* One step of the flatten job, under a pause: copy up to a step's worth of backing data. */
static int flatten_step(struct ublk_job *j, struct cow_image *img, bool *end)
{
	uint64_t copied = 0, walked = 0;
	int r = 0;

	while (j->off < j->total && copied < UBLK_JOB_STEP_BYTES && walked < UBLK_JOB_WALK_BYTES) {
		uint64_t run, want = j->total - j->off;
		int st = chain_status(img, j->off, want, &run);
		if (st < 0)
			return st;
		if (st == COW_MAP_BACKING) {
			if (run > UBLK_JOB_STEP_BYTES - copied)
				run = UBLK_JOB_STEP_BYTES - copied;
			r = cow_rw(j->ctx, COW_READ, j->buf, run, j->off, 0);
			if (!r)
				r = cow_rw(j->ctx, COW_WRITE, j->buf, run, j->off, 0);
			if (r)
				return r;
			copied += run;
			j->copied += run;
		}
		j->off += run;
		walked += run;
	}
	if (j->off < j->total)
		return 0;
	/* every range the chain gave is the overlay's own now: durable, then no backing */
	r = cow_rw(j->ctx, COW_FLUSH, NULL, 0, 0, 0);
	if (!r)
		r = cow_set_backing(img, NULL, 0);
	if (!r)
		*end = true;
	return r;
}

int ublk_job_step(struct ublk_dev *dev)
{
	struct ublk_job *j = dev->job;
	struct cow_image *img = dev->tgt_data;
	char err[UBLK_ERRLEN];
	bool end = false;
	int r;

	if (!j || j->state != UBLK_JOB_RUNNING)
		return 0;
	r = ublk_dev_pause(dev, UBLK_PAUSE_JOB, UBLK_JOB_PAUSE_TIMEOUT_MS, err);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot pause the device: %s", err);
		j->state = UBLK_JOB_FAILED;
		ublk_job_free_io(j);
		return 0;
	}
	r = flatten_step(j, img, &end);
	uint64_t ns = ublk_dev_resume(dev);
	j->steps++;
	if (ns > j->max_pause_ns)
		j->max_pause_ns = ns;
	j->total_pause_ns += ns;
	if (r < 0) {
		job_fail(j, "copying from the backing file", r, img);
		return 0;
	}
	if (end) {
		j->state = UBLK_JOB_DONE;
		j->t1 = ublk_now_ns();
		ublk_job_free_io(j);
		fprintf(stderr, "ucow: %s of /dev/ublkb%u done: %" PRIu64 " bytes copied in %"
			PRIu64 " steps, longest pause %.3f ms\n", kind_names[j->kind],
			dev->info.dev_id, j->copied, j->steps, j->max_pause_ns / 1e6);
		return 0;
	}
	return 1;
}

struct json_object *ublk_job_encode(const struct ublk_job *j)
{
	struct json_object *o = json_object_new_object();
	bool bad = !o;

	if (!j) {
		bad = bad || json_object_object_add(o, "state", json_object_new_string("none"));
	} else {
		bad = bad || json_object_object_add(o, "kind", json_object_new_string(
							   kind_names[j->kind]));
		bad = bad || json_object_object_add(o, "state", json_object_new_string(
							   state_names[j->state]));
		bad = bad || json_object_object_add(o, "done-bytes", json_object_new_int64(
							   (int64_t)j->off));
		bad = bad || json_object_object_add(o, "total-bytes", json_object_new_int64(
							   (int64_t)j->total));
		bad = bad || json_object_object_add(o, "copied-bytes", json_object_new_int64(
							   (int64_t)j->copied));
		bad = bad || json_object_object_add(o, "steps", json_object_new_int64(
							   (int64_t)j->steps));
		bad = bad || json_object_object_add(o, "max-pause-us", json_object_new_int64(
							   (int64_t)(j->max_pause_ns / 1000)));
		bad = bad || json_object_object_add(o, "total-pause-us", json_object_new_int64(
							   (int64_t)(j->total_pause_ns / 1000)));
		if (j->state == UBLK_JOB_FAILED)
			bad = bad || json_object_object_add(o, "error",
							    json_object_new_string(j->err));
	}
	if (bad) {
		json_object_put(o);
		return NULL;
	}
	return o;
}
