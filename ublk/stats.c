/* SPDX-License-Identifier: MIT */
/*
 * Per-queue I/O statistics: count, bytes, errors and a latency histogram per operation.
 * Each queue thread writes only its own counters (relaxed atomic stores, no lock on the
 * data path); readers (the control socket) sum the queues and may see a request half
 * accounted, which is fine for statistics.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "ublk.h"

uint64_t ublk_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

unsigned ublk_lat_bucket(uint64_t ns)
{
	unsigned msb, idx;

	if (ns < 8)
		return (unsigned)ns;
	msb = 63 - (unsigned)__builtin_clzll(ns);
	idx = (msb - 2) * 8 + (unsigned)((ns >> (msb - 3)) & 7);
	return idx < UBLK_LAT_BUCKETS ? idx : UBLK_LAT_BUCKETS - 1;
}

uint64_t ublk_lat_value(unsigned idx)
{
	unsigned msb, sub;

	if (idx < 8)
		return idx;
	msb = idx / 8 + 2;
	sub = idx % 8;
	return ((uint64_t)(9 + sub) << (msb - 3)) - 1;
}

static int op_kind(unsigned op)
{
	switch (op) {
	case UK_IO_OP_READ: return UBLK_ST_READ;
	case UK_IO_OP_WRITE: return UBLK_ST_WRITE;
	case UK_IO_OP_FLUSH: return UBLK_ST_FLUSH;
	case UK_IO_OP_DISCARD: return UBLK_ST_DISCARD;
	case UK_IO_OP_WRITE_ZEROES: return UBLK_ST_WZEROES;
	}
	return -1;
}

static void add(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

void ublk_stats_account(struct ublk_queue *q, struct ublk_io *io, int res, uint64_t bytes)
{
	int k = op_kind(io->op);
	struct ublk_op_stats *s;

	if (k < 0)
		return;
	s = &q->stats[k];
	add(&s->ios, 1);
	if (res < 0)
		add(&s->errors, 1);
	else if (k == UBLK_ST_READ || k == UBLK_ST_WRITE)
		add(&s->bytes, bytes);
	add(&s->lat[ublk_lat_bucket(ublk_now_ns() - io->start_ns)], 1);
}

uint64_t ublk_lat_percentile(const uint64_t *lat, double p)
{
	uint64_t total = 0, want, seen = 0;
	unsigned i;

	for (i = 0; i < UBLK_LAT_BUCKETS; i++)
		total += lat[i];
	want = (uint64_t)(total * p + 0.999999);
	if (!total)
		return 0;
	if (want == 0)
		want = 1;
	for (i = 0; i < UBLK_LAT_BUCKETS; i++) {
		seen += lat[i];
		if (seen >= want)
			return ublk_lat_value(i);
	}
	return ublk_lat_value(UBLK_LAT_BUCKETS - 1);
}

static const char *const op_names[UBLK_ST_NR] = {
	"read", "write", "flush", "discard", "write-zeroes",
};
static const char *const pause_names[UBLK_PAUSE_NR] = { "create", "delete", "apply", "job",
								  "resize", "fold" };
static const double pct[] = { 0.50, 0.90, 0.99, 0.999 };

/* Operation k summed over the queues, and its percentiles */
static void sum_op(struct ublk_dev *dev, unsigned k, struct ublk_op_stats *sum, uint64_t p[4])
{
	unsigned qi, i;

	memset(sum, 0, sizeof(*sum));
	for (qi = 0; qi < dev->info.nr_hw_queues; qi++) {
		const struct ublk_op_stats *s = &dev->queues[qi].stats[k];

		sum->ios += __atomic_load_n(&s->ios, __ATOMIC_RELAXED);
		sum->bytes += __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
		sum->errors += __atomic_load_n(&s->errors, __ATOMIC_RELAXED);
		for (i = 0; i < UBLK_LAT_BUCKETS; i++)
			sum->lat[i] += __atomic_load_n(&s->lat[i], __ATOMIC_RELAXED);
	}
	for (i = 0; i < 4; i++)
		p[i] = ublk_lat_percentile(sum->lat, pct[i]);
}

static uint64_t queue_ios(struct ublk_dev *dev, unsigned qi)
{
	uint64_t n = 0;
	unsigned k;

	for (k = 0; k < UBLK_ST_NR; k++)
		n += __atomic_load_n(&dev->queues[qi].stats[k].ios, __ATOMIC_RELAXED);
	return n;
}

uint64_t ublk_dev_ios(struct ublk_dev *dev)
{
	uint64_t n = 0;
	for (unsigned qi = 0; qi < dev->info.nr_hw_queues; qi++)
		n += queue_ios(dev, qi);
	return n;
}

#define ADD(o, k, v) (json_object_object_add((o), (k), (v)) != 0)
#define U64(x) json_object_new_int64((int64_t)(x))

/* The network backing image of an image target's chain, if there is one. */
static bool net_of(struct ublk_dev *dev, struct cow_net_stats *ns)
{
	return dev->tgt->needs_file && dev->tgt_data && cow_net_stats(dev->tgt_data, ns) == 0;
}

/* "network-backing": its URI, connection state and counters; true when building failed */
static bool add_net(struct ublk_dev *dev, struct json_object *o)
{
	struct cow_net_stats *ns = malloc(sizeof(*ns));
	struct json_object *e;
	bool bad;

	if (!ns)
		return true;
	if (!net_of(dev, ns)) {
		free(ns);
		return false;
	}
	e = json_object_new_object();
	bad = !e || ADD(e, "uri", json_object_new_string(ns->uri)) ||
	      ADD(e, "state", json_object_new_string(cow_net_state_name(ns->state))) ||
	      ADD(e, "connections", U64(ns->connections)) ||
	      ADD(e, "timeout-ms", U64(ns->timeout_ms)) ||
	      ADD(e, "reads", U64(ns->reads)) || ADD(e, "read-bytes", U64(ns->read_bytes)) ||
	      ADD(e, "read-errors", U64(ns->read_errors)) || ADD(e, "timeouts", U64(ns->timeouts)) ||
	      ADD(e, "connects", U64(ns->connects)) ||
	      ADD(e, "connect-failures", U64(ns->connect_failures)) ||
	      ADD(e, "disconnects", U64(ns->disconnects));
	if (!bad && ns->failed_since)
		bad = ADD(e, "failed-since-ms", U64(ns->failed_since));
	if (!bad && ns->last_error[0])
		bad = ADD(e, "last-error", json_object_new_string(ns->last_error));
	free(ns);
	if (!bad)
		return ADD(o, "network-backing", e);
	json_object_put(e);
	return true;
}

/* Copy-on-read of an image target, when it is on. */
static bool cor_of(struct ublk_dev *dev, struct cow_cor_info *ci)
{
	if (!dev->tgt->needs_file || !dev->tgt_data)
		return false;
	cow_get_cor_info(dev->tgt_data, ci);
	return ci->enabled;
}

/* "copy-on-read": its counters; true when building failed */
static bool add_cor(struct ublk_dev *dev, struct json_object *o)
{
	struct cow_cor_info ci;
	struct json_object *e;
	if (!cor_of(dev, &ci))
		return false;
	e = json_object_new_object();
	if (!e || ADD(e, "copies", U64(ci.copies)) || ADD(e, "bytes", U64(ci.bytes)) ||
	    ADD(e, "skipped", U64(ci.skipped)) || ADD(e, "failed", U64(ci.failed))) {
		json_object_put(e);
		return true;
	}
	return ADD(o, "copy-on-read", e);
}

struct json_object *ublk_stats_json(struct ublk_dev *dev)
{
	struct json_object *o = json_object_new_object(), *ops = json_object_new_object();
	struct json_object *qs = json_object_new_array(), *ps = json_object_new_object();
	struct ublk_op_stats *sum = malloc(sizeof(*sum));
	bool bad = !o || !ops || !qs || !ps || !sum;
	unsigned k, qi, npauses = 0;
	uint64_t p[4];

	for (k = 0; k < UBLK_ST_NR && !bad; k++) {
		struct json_object *e = json_object_new_object(), *lat = json_object_new_object();

		sum_op(dev, k, sum, p);
		bad = !e || !lat || ADD(lat, "p50", U64(p[0])) || ADD(lat, "p90", U64(p[1])) ||
		      ADD(lat, "p99", U64(p[2])) || ADD(lat, "p99.9", U64(p[3]));
		if (!bad)
			bad = ADD(e, "ios", U64(sum->ios)) || ADD(e, "bytes", U64(sum->bytes)) ||
			      ADD(e, "errors", U64(sum->errors)) || ADD(e, "lat-ns", lat);
		else
			json_object_put(lat);
		if (!bad)
			bad = ADD(ops, op_names[k], e);
		else
			json_object_put(e);
	}
	for (qi = 0; qi < dev->info.nr_hw_queues && !bad; qi++)
		bad = json_object_array_add(qs, U64(queue_ios(dev, qi))) != 0;
	for (k = 0; k < UBLK_PAUSE_NR && !bad; k++) {
		const struct ublk_pause_stats *st = &dev->pause_st[k];
		struct json_object *e;

		if (!st->count)
			continue;
		e = json_object_new_object();
		bad = !e || ADD(e, "count", U64(st->count)) ||
		      ADD(e, "last-us", U64(st->last_ns / 1000)) ||
		      ADD(e, "max-us", U64(st->max_ns / 1000)) ||
		      ADD(e, "total-us", U64(st->total_ns / 1000)) || ADD(ps, pause_names[k], e);
		npauses++;
	}
	free(sum);
	if (!bad)
		bad = ADD(o, "id", U64(dev->info.dev_id)) || ADD(o, "ops", ops);
	else
		json_object_put(ops);
	if (!bad)
		bad = ADD(o, "queue-ios", qs);
	else
		json_object_put(qs);
	if (!bad && npauses)
		bad = ADD(o, "pauses", ps);
	else
		json_object_put(ps);
	if (!bad && dev->fold.steps) {
		struct json_object *e = json_object_new_object();
		bad = !e || ADD(e, "chunks", U64(dev->fold.chunks)) ||
		      ADD(e, "steps", U64(dev->fold.steps)) ||
		      ADD(e, "passes", U64(dev->fold.passes)) ||
		      ADD(e, "failed", json_object_new_boolean(dev->fold.failed));
		if (!bad)
			bad = ADD(o, "fold", e);
		else
			json_object_put(e);
	}
	if (!bad)
		bad = add_net(dev, o);
	if (!bad)
		bad = add_cor(dev, o);
	if (!bad && dev->job && dev->job->kind == UBLK_JOB_PREFETCH) {
		struct json_object *e = ublk_job_encode(dev->job);
		bad = !e || ADD(o, "prefetch", e);
		if (bad)
			json_object_put(e);
	}
	if (bad) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

int ublk_stats_format(struct ublk_dev *dev, char *buf, size_t len)
{
	struct ublk_op_stats *sum = malloc(sizeof(*sum));
	size_t off = 0;
	unsigned k, qi, j;
	uint64_t p[4];

	if (!sum)
		return -ENOMEM;
	off += snprintf(buf + off, len - off, "%-13s %12s %14s %8s %9s %9s %9s %9s\n", "op",
			"ios", "bytes", "errors", "p50_us", "p90_us", "p99_us", "p99.9_us");
	for (k = 0; k < UBLK_ST_NR && off < len; k++) {
		sum_op(dev, k, sum, p);
		off += snprintf(buf + off, len - off, "%-13s %12" PRIu64 " %14" PRIu64 " %8" PRIu64
				" %9.1f %9.1f %9.1f %9.1f\n", k == UBLK_ST_WZEROES ?
				"write_zeroes" : op_names[k], sum->ios, sum->bytes, sum->errors,
				p[0] / 1e3, p[1] / 1e3, p[2] / 1e3, p[3] / 1e3);
	}
	free(sum);
	/* requests per queue: shows the queues share the load */
	if (off < len)
		off += snprintf(buf + off, len - off, "per queue:");
	for (qi = 0; qi < dev->info.nr_hw_queues && off < len; qi++)
		off += snprintf(buf + off, len - off, " q%u=%" PRIu64, qi, queue_ios(dev, qi));
	if (off < len)
		off += snprintf(buf + off, len - off, "\n");
	/* online snapshot operations: how long the queues were held, per operation */
	for (k = 0, j = 0; k < UBLK_PAUSE_NR && off < len; k++) {
		const struct ublk_pause_stats *ps = &dev->pause_st[k];

		if (!ps->count)
			continue;
		off += snprintf(buf + off, len - off, "%s %s %" PRIu64 " (last %.1f ms, max %.1f ms, "
				"mean %.1f ms)", j++ ? "," : "pauses:", pause_names[k], ps->count,
				ps->last_ns / 1e6, ps->max_ns / 1e6,
				ps->total_ns / 1e6 / (double)ps->count);
	}
	if (j && off < len)
		off += snprintf(buf + off, len - off, "\n");
	if (dev->fold.steps && off < len)
		off += snprintf(buf + off, len - off, "underlays folded: %" PRIu64 " chunks in %" PRIu64
				" steps, %" PRIu64 " passes%s\n", dev->fold.chunks, dev->fold.steps,
				dev->fold.passes, dev->fold.failed ? " (failed: stopped)" : "");
	struct cow_net_stats *ns = malloc(sizeof(*ns));
	if (ns && net_of(dev, ns) && off < len) {
		off += snprintf(buf + off, len - off, "network backing: %s: %s (%u connection%s), "
				"reads %" PRIu64 " (%" PRIu64 " bytes), read errors %" PRIu64
				" (timeouts %" PRIu64 "), connects %" PRIu64 " (failed %" PRIu64
				"), disconnects %" PRIu64 "\n", ns->uri,
				cow_net_state_name(ns->state), ns->connections,
				ns->connections == 1 ? "" : "s", ns->reads, ns->read_bytes,
				ns->read_errors, ns->timeouts, ns->connects, ns->connect_failures,
				ns->disconnects);
		if (ns->failed_since && off < len) {
			time_t t = (time_t)(ns->failed_since / 1000);
			struct tm tm;
			char when[64] = "?";
			if (localtime_r(&t, &tm))
				strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
			off += snprintf(buf + off, len - off, "  failing since %s\n", when);
		}
		if (ns->last_error[0] && off < len)
			off += snprintf(buf + off, len - off, "  last error: %s\n", ns->last_error);
	}
	free(ns);
	struct cow_cor_info ci;
	if (cor_of(dev, &ci) && off < len)
		off += snprintf(buf + off, len - off, "copy-on-read: %" PRIu64 " copies (%" PRIu64
				" bytes), %" PRIu64 " skipped, %" PRIu64 " failed\n", ci.copies,
				ci.bytes, ci.skipped, ci.failed);
	const struct ublk_job *pj = dev->job;
	if (pj && pj->kind == UBLK_JOB_PREFETCH && off < len) {
		static const char *const states[] = { "running", "done", "failed" };
		off += snprintf(buf + off, len - off, "prefetch: %s, %" PRIu64 "%% (%" PRIu64 " of %"
				PRIu64 " bytes walked), %" PRIu64 " bytes copied, rate %" PRIu64
				" bytes/s, %" PRIu64 " back-offs%s%s\n", states[pj->state],
				pj->total ? pj->off * 100 / pj->total : 100, pj->off, pj->total,
				pj->copied, pj->rate, pj->backoffs,
				pj->state == UBLK_JOB_FAILED ? ": " : "",
				pj->state == UBLK_JOB_FAILED ? pj->err : "");
	}
	return off < len ? 0 : -ENOSPC;
}
