/* SPDX-License-Identifier: MIT */
/*
 * Online whole-image jobs of a served cow image, run by the control thread in steps between
 * its other work (signals, socket requests, reclaim): one job at a time per device.
 *
 *   flatten   (ucow rebase -b "" on a served overlay) copies into the overlay every range it
 *             still reads from its backing chain and the chain does not read as zeros, then
 *             drops the backing file from the header (cow_set_backing): the overlay stands
 *             alone, the device never stopped.
 *   commit    (ucow commit on a served overlay) reopens the backing file read-write
 *             (cow_backing_reopen: refused while anyone else holds it), writes the overlay's
 *             own data into it (its zeroed ranges as zeros), then copies again what the
 *             guest wrote meanwhile: the queue threads mark the chunks they write
 *             (ublk_job_mark) and the job passes over the marks until a pass finds none
 *             (after 8 passes the last one copies what is left in one step). The last step
 *             flushes the backing file, empties the overlay (cow_make_empty) and reopens
 *             the backing file read-only: the device serves the same content, now from
 *             the backing file through the emptied overlay.
 *
 * Each step is one pause of the queues (ublk_dev_pause): with no request in flight the job
 * reads and writes through its own engine context, and no guest write can slip between its
 * read of a range and its write of it. A step copies at most UBLK_JOB_STEP_BYTES and walks
 * at most UBLK_JOB_WALK_BYTES of the virtual size, so a pause stays short (dev stats counts
 * these pauses under "job"), and the control loop lets UBLK_JOB_GAP_MS pass between steps
 * so the guest's I/O goes on. Guest writes during the job only turn backing ranges into the
 * overlay's own; they never make one read from the backing again, so one pass suffices.
 *
 *   prefetch  (ucow dev add --prefetch[=RATE], on a device that copies on read) streams the
 *             ranges the overlay still reads from its backing chain into it in the
 *             background, FVD's prefetch: through the job's own context, whose reads copy
 *             on read (engine.c), so no pause of the queues is needed (a copy never covers
 *             a guest write: design.md, "Copy-on-read"). It runs only while the device is
 *             idle: a step starts once no request has arrived for UBLK_PREFETCH_IDLE_MS
 *             (the queues' request counts do not move), and the steps keep to RATE bytes a
 *             second. Done, the overlay is self-contained: an online flatten (ucow rebase
 *             -b "") then only drops the backing file. A flatten or commit asked for while
 *             it runs replaces it.
 *
 * A server that dies mid-job leaves an overlay holding part of its backing's data (the same
 * content as before: copies of what it read through) and still naming its backing file:
 * the job can simply be run again. A commit that dies mid-job leaves the overlay whole
 * (it is emptied only after the backing file holds its data durably) and the backing file
 * holding copies of ranges the overlay covers: the overlay shows what it showed; run the
 * commit again (the backing file is no longer what other overlays on it expect, as with
 * every commit).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "ublk.h"

#define UBLK_JOB_STEP_BYTES (4ull << 20)	/* copied per pause */
#define UBLK_JOB_WALK_BYTES (1ull << 30)	/* walked per pause (unallocated or zero ranges) */
#define UBLK_JOB_PAUSE_TIMEOUT_MS 10000

static const char *const kind_names[] = { [UBLK_JOB_FLATTEN] = "flatten",
					  [UBLK_JOB_COMMIT] = "commit",
					  [UBLK_JOB_PREFETCH] = "prefetch" };
#define UBLK_PREFETCH_IDLE_MS 200	/* no request for this long: the device is idle */
#define UBLK_PREFETCH_STEP_BYTES (1ull << 20)	/* read (and copied) per prefetch step */
#define UBLK_JOB_PASSES 8	/* commit: passes over the marks before the last one */
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

/*
 * The commit's start, under a pause: the backing file reopened read-write (the write lock:
 * refused while another process holds it), a context on it, the marks, tracking on. Any
 * write submitted from now on is marked; one submitted before completes before the first
 * step's pause, so the first pass copies it.
 */
static int commit_start(struct ublk_dev *dev, struct ublk_job *j, struct cow_image *img,
			const struct cow_info *in, char *why, size_t wlen)
{
	char err[UBLK_ERRLEN];
	int r;

	j->chunk_shift = (unsigned)__builtin_ctz(in->chunk_size);
	j->nchunks = (in->virtual_size + in->chunk_size - 1) >> j->chunk_shift;
	j->dirty = calloc((j->nchunks + 63) / 64, sizeof(*j->dirty));
	if (!j->dirty)
		return -ENOMEM;
	r = ublk_dev_pause(dev, UBLK_PAUSE_JOB, UBLK_JOB_PAUSE_TIMEOUT_MS, err);
	if (r < 0) {
		snprintf(why, wlen, "cannot pause the device: %s", err);
		return r;
	}
	r = cow_backing_reopen(img, 1, err, sizeof(err));
	if (r) {
		snprintf(why, wlen, "%s", err);
	} else {
		r = cow_backend_new("sync", 4, &j->bbe);
		if (!r)
			r = cow_ctx_new(cow_backing_image(img), j->bbe, &j->bctx);
		if (r) {
			ublk_job_free_io(j);	/* the context, before the image goes back */
			cow_backing_reopen(img, 0, NULL, 0);
		} else {
			__atomic_store_n(&dev->job_track, 1, __ATOMIC_RELEASE);
		}
	}
	uint64_t ns = ublk_dev_resume(dev);
	j->steps++;
	j->max_pause_ns = j->total_pause_ns = ns;
	return r;
}

void ublk_job_mark(struct ublk_dev *dev, uint64_t off, uint64_t len)
{
	struct ublk_job *j = dev->job;
	uint64_t c = off >> j->chunk_shift, end = len ? (off + len - 1) >> j->chunk_shift : c;

	for (; c <= end && c < j->nchunks; c++)
		__atomic_fetch_or(&j->dirty[c / 64], 1ull << (c % 64), __ATOMIC_RELAXED);
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
	if (j && j->state == UBLK_JOB_RUNNING && (j->kind != UBLK_JOB_PREFETCH ||
						  kind == UBLK_JOB_PREFETCH)) {
		snprintf(why, wlen, "a %s job is running on /dev/ublkb%u", kind_names[j->kind],
			 dev->info.dev_id);
		return -EBUSY;
	}
	if (kind == UBLK_JOB_PREFETCH) {
		struct cow_cor_info ci;
		cow_get_cor_info(img, &ci);
		if (!ci.enabled) {
			snprintf(why, wlen, "the device does not copy on read");
			return -EINVAL;
		}
	}
	cow_get_info(img, &in);
	if (!in.backing) {
		snprintf(why, wlen, "the image has no backing file");
		return -EINVAL;
	}
	if (in.nb_snapshots && kind != UBLK_JOB_PREFETCH) {
		snprintf(why, wlen, "the image has internal snapshots (their content would change)");
		return -ENOTSUP;
	}
	if (kind == UBLK_JOB_COMMIT) {
		struct cow_info bi;
		cow_get_info(cow_backing_image(img), &bi);
		if (bi.virtual_size < in.virtual_size) {
			snprintf(why, wlen, "the backing file is smaller than the image (%" PRIu64
				 " < %" PRIu64 " bytes): commit it offline", bi.virtual_size,
				 in.virtual_size);
			return -EINVAL;
		}
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
	free(j->dirty);		/* a failed commit's marks (tracking is off) */
	memset(j, 0, sizeof(*j));
	j->kind = kind;
	j->state = UBLK_JOB_FAILED;	/* until it has started: no step runs */
	j->total = in.virtual_size;
	j->rate = dev->o.prefetch_rate ? dev->o.prefetch_rate : UBLK_PREFETCH_DEFAULT_RATE;
	r = cow_backend_new("sync", 4, &j->be);
	if (!r)
		r = cow_ctx_new(img, j->be, &j->ctx);
	j->buf = r ? NULL : aligned_alloc(4096, UBLK_JOB_STEP_BYTES);
	if (!r && !j->buf)
		r = -ENOMEM;
	if (!r && kind == UBLK_JOB_COMMIT)
		r = commit_start(dev, j, img, &in, why, wlen);
	if (r) {
		ublk_job_free_io(j);
		if (!why[0])
			snprintf(why, wlen, "cannot start the job: %s", strerror(-r));
		snprintf(j->err, sizeof(j->err), "%s", why);
		return r;
	}
	j->state = UBLK_JOB_RUNNING;
	return 0;
}

void ublk_job_free_io(struct ublk_job *j)
{
	if (!j)
		return;
	if (j->bctx)
		cow_ctx_free(j->bctx);
	if (j->bbe)
		cow_backend_free(j->bbe);
	j->bctx = NULL;
	j->bbe = NULL;
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

/*
 * From j->off on, read what the chain gives (and, with write, write it into the overlay: the
 * prefetch's context copies on read by itself) until limit bytes were read or a walk's
 * worth of the virtual size passed. *copied: the bytes read. 0 or -errno.
 */
static int copy_backing(struct ublk_job *j, struct cow_image *img, uint64_t limit, bool write,
			uint64_t *copied)
{
	uint64_t walked = 0;
	*copied = 0;
	while (j->off < j->total && *copied < limit && walked < UBLK_JOB_WALK_BYTES) {
		uint64_t run, want = j->total - j->off;
		int st = chain_status(img, j->off, want, &run);
		if (st < 0)
			return st;
		if (st == COW_MAP_BACKING) {
			if (run > limit - *copied)
				run = limit - *copied;
			int r = cow_rw(j->ctx, COW_READ, j->buf, run, j->off, 0);
			if (!r && write)
				r = cow_rw(j->ctx, COW_WRITE, j->buf, run, j->off, 0);
			if (r)
				return r;
			*copied += run;
			j->copied += run;
		}
		j->off += run;
		walked += run;
	}
	return 0;
}

/* One step of the flatten job, under a pause: copy up to a step's worth of backing data. */
static int flatten_step(struct ublk_job *j, struct cow_image *img, bool *end)
{
	uint64_t copied;
	int r = copy_backing(j, img, UBLK_JOB_STEP_BYTES, true, &copied);
	if (r || j->off < j->total)
		return r;
	/* every range the chain gave is the overlay's own now: durable, then no backing */
	r = cow_rw(j->ctx, COW_FLUSH, NULL, 0, 0, 0);
	if (!r)
		r = cow_set_backing(img, NULL, 0);
	if (!r)
		*end = true;
	return r;
}

/* Commit: the overlay's own runs of [off, off + len) into the backing file (zeroed ranges
 * as zeros); *copied grows by the bytes read and written. */
static int commit_range(struct ublk_job *j, struct cow_image *img, uint64_t off, uint64_t len,
			uint64_t *copied)
{
	while (len) {
		uint64_t run;
		int r = 0, st = cow_map(img, off, len, &run, NULL);
		if (st < 0)
			return st;
		if (st == COW_MAP_DATA) {
			if (run > UBLK_JOB_STEP_BYTES)
				run = UBLK_JOB_STEP_BYTES;
			r = cow_rw(j->ctx, COW_READ, j->buf, run, off, 0);
			if (!r)
				r = cow_rw(j->bctx, COW_WRITE, j->buf, run, off, 0);
			*copied += run;
		} else if (st == COW_MAP_ZERO) {
			r = cow_rw(j->bctx, COW_WRITE_ZEROES, NULL, run, off, 0);
		}
		if (r)
			return r;
		off += run;
		len -= run;
	}
	return 0;
}

/* The chunks marked since their copy, from j->dpos on, copied again (the marks cleared
 * first: a write after this pause marks anew); all of them when last, else a step's worth.
 * *clean: a whole pass found no mark. */
static int commit_marked(struct ublk_job *j, struct cow_image *img, bool last, bool *clean)
{
	uint64_t copied = 0;
	*clean = false;
	for (;;) {
		for (; j->dpos < j->nchunks && (last || copied < UBLK_JOB_STEP_BYTES); j->dpos++) {
			uint64_t *w = &j->dirty[j->dpos / 64], bit = 1ull << (j->dpos % 64);
			if (!(__atomic_load_n(w, __ATOMIC_RELAXED) & bit))
				continue;
			__atomic_fetch_and(w, ~bit, __ATOMIC_RELAXED);
			j->dirty_seen = true;
			uint64_t off = j->dpos << j->chunk_shift, len = 1ull << j->chunk_shift;
			if (len > j->total - off)
				len = j->total - off;
			int r = commit_range(j, img, off, len, &copied);
			if (r)
				return r;
		}
		j->copied += copied;
		if (j->dpos < j->nchunks)
			return 0;			/* a step's worth: on at the next step */
		/* the end of a pass */
		j->dpos = 0;
		j->pass++;
		if (!j->dirty_seen) {
			*clean = true;
			return 0;
		}
		j->dirty_seen = false;
		if (!last)
			return 0;
		copied = 0;	/* last: until a pass finds nothing (no guest I/O: one more) */
	}
}

/* One step of the commit, under a pause. */
static int commit_step(struct ublk_dev *dev, struct ublk_job *j, struct cow_image *img,
		       bool *end)
{
	uint64_t copied = 0, walked = 0;
	bool clean = false;
	int r = 0;

	if (j->off < j->total) {		/* the first pass: everything the overlay holds */
		while (j->off < j->total && copied < UBLK_JOB_STEP_BYTES &&
		       walked < UBLK_JOB_WALK_BYTES) {
			uint64_t len = j->total - j->off;
			if (len > UBLK_JOB_STEP_BYTES - copied)
				len = UBLK_JOB_STEP_BYTES - copied;
			if ((r = commit_range(j, img, j->off, len, &copied)))
				return r;
			j->off += len;
			walked += len;
		}
		j->copied += copied;
		return 0;
	}
	r = commit_marked(j, img, j->pass >= UBLK_JOB_PASSES, &clean);
	if (r || !clean)
		return r;
	/* nothing written since its copy: durable in the backing file, then the overlay
	 * emptied, the backing file read-only again */
	__atomic_store_n(&dev->job_track, 0, __ATOMIC_RELEASE);
	free(j->dirty);		/* paused: no queue thread is marking */
	j->dirty = NULL;
	r = cow_rw(j->bctx, COW_FLUSH, NULL, 0, 0, 0);
	if (r)
		return r;
	cow_ctx_free(j->bctx);
	cow_backend_free(j->bbe);
	j->bctx = NULL;
	j->bbe = NULL;
	r = cow_make_empty(img);
	int r2 = cow_backing_reopen(img, 0, NULL, 0);
	if (!r)
		r = r2;
	if (!r)
		*end = true;
	return r;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * One prefetch step, without a pause: when the device has been idle long enough and the
 * rate allows, read up to a step's worth of what the chain still gives (the job's reads
 * copy it into the overlay). 1 when more is to come, 0 at the end, -errno.
 */
static int prefetch_step(struct ublk_dev *dev, struct ublk_job *j, struct cow_image *img)
{
	uint64_t now = now_ns(), ios = ublk_dev_ios(dev), copied;
	if (ios != j->last_ios || !j->idle_since_ns) {	/* the guest is busy: back off */
		if (j->idle_since_ns && ios != j->last_ios)
			j->backoffs++;
		j->last_ios = ios;
		j->idle_since_ns = now;
		return 1;
	}
	if (now - j->idle_since_ns < UBLK_PREFETCH_IDLE_MS * 1000000ull || now < j->next_ns)
		return 1;
	int r = copy_backing(j, img, UBLK_PREFETCH_STEP_BYTES, false, &copied);
	if (r)
		return r;
	j->steps++;
	j->next_ns = now_ns() + copied * 1000000000ull / j->rate;
	if (j->off < j->total)
		return 1;
	return cow_rw(j->ctx, COW_FLUSH, NULL, 0, 0, 0);	/* the copies durable */
}

int ublk_job_delay_ms(struct ublk_dev *dev)
{
	struct ublk_job *j = dev->job;
	if (!j || j->kind != UBLK_JOB_PREFETCH)
		return UBLK_JOB_GAP_MS;
	uint64_t now = now_ns(), at = j->idle_since_ns + UBLK_PREFETCH_IDLE_MS * 1000000ull;
	if (j->next_ns > at)
		at = j->next_ns;
	/* look at the guest's requests at least every 50 ms, at most every 5 */
	uint64_t ms = at > now ? (at - now) / 1000000 + 1 : 0;
	return ms < UBLK_JOB_GAP_MS ? UBLK_JOB_GAP_MS : ms > 50 ? 50 : (int)ms;
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
	if (j->kind == UBLK_JOB_PREFETCH) {
		r = prefetch_step(dev, j, img);
		if (r < 0) {
			job_fail(j, "prefetching from the backing file", r, img);
			return 0;
		}
		if (!r) {
			j->state = UBLK_JOB_DONE;
			ublk_job_free_io(j);
			fprintf(stderr, "ucow: prefetch of /dev/ublkb%u done: %" PRIu64 " bytes "
				"copied; the backing file can be dropped (ucow rebase -b '' FILE)\n",
				dev->info.dev_id, j->copied);
		}
		return r;
	}
	r = ublk_dev_pause(dev, UBLK_PAUSE_JOB, UBLK_JOB_PAUSE_TIMEOUT_MS, err);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot pause the device: %s", err);
		j->state = UBLK_JOB_FAILED;
		ublk_job_free_io(j);
		return 0;
	}
	r = j->kind == UBLK_JOB_COMMIT ? commit_step(dev, j, img, &end) :
	    flatten_step(j, img, &end);
	uint64_t ns = ublk_dev_resume(dev);
	j->steps++;
	if (ns > j->max_pause_ns)
		j->max_pause_ns = ns;
	j->total_pause_ns += ns;
	if (r < 0) {
		if (j->kind == UBLK_JOB_COMMIT) {
			/* the overlay is whole; the backing file read-only again if it can be */
			__atomic_store_n(&dev->job_track, 0, __ATOMIC_RELEASE);
			job_fail(j, "copying into the backing file", r, img);
			if (ublk_dev_pause(dev, UBLK_PAUSE_JOB, UBLK_JOB_PAUSE_TIMEOUT_MS, err) == 0) {
				cow_backing_reopen(img, 0, NULL, 0);
				ublk_dev_resume(dev);
			}
			return 0;
		}
		job_fail(j, "copying from the backing file", r, img);
		return 0;
	}
	if (end) {
		j->state = UBLK_JOB_DONE;
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
		if (j->kind == UBLK_JOB_PREFETCH)
			bad = bad || json_object_object_add(o, "rate", json_object_new_int64(
								   (int64_t)j->rate)) ||
			      json_object_object_add(o, "backoffs", json_object_new_int64(
							     (int64_t)j->backoffs));
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
