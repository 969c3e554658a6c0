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

#include "ublk.h"

uint64_t ublk_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static unsigned lat_bucket(uint64_t ns)
{
	unsigned msb, idx;

	if (ns < 8)
		return (unsigned)ns;
	msb = 63 - (unsigned)__builtin_clzll(ns);
	idx = (msb - 2) * 8 + (unsigned)((ns >> (msb - 3)) & 7);
	return idx < UBLK_LAT_BUCKETS ? idx : UBLK_LAT_BUCKETS - 1;
}

static uint64_t lat_value(unsigned idx)	/* upper bound of bucket idx */
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
	add(&s->lat[lat_bucket(ublk_now_ns() - io->start_ns)], 1);
}

static uint64_t percentile(const uint64_t *lat, uint64_t total, double p)
{
	uint64_t want = (uint64_t)(total * p + 0.999999), seen = 0;
	unsigned i;

	if (!total)
		return 0;
	if (want == 0)
		want = 1;
	for (i = 0; i < UBLK_LAT_BUCKETS; i++) {
		seen += lat[i];
		if (seen >= want)
			return lat_value(i);
	}
	return lat_value(UBLK_LAT_BUCKETS - 1);
}

int ublk_stats_format(struct ublk_dev *dev, char *buf, size_t len, bool json)
{
	static const char *const names[UBLK_ST_NR] = {
		"read", "write", "flush", "discard", "write_zeroes",
	};
	static const double pct[] = { 0.50, 0.90, 0.99, 0.999 };
	size_t off = 0;
	unsigned k, qi, i, j;

	if (json)
		off += snprintf(buf + off, len - off, "{\"id\": %u, \"ops\": {", dev->info.dev_id);
	else
		off += snprintf(buf + off, len - off,
				"%-13s %12s %14s %8s %9s %9s %9s %9s\n", "op", "ios", "bytes",
				"errors", "p50_us", "p90_us", "p99_us", "p99.9_us");
	for (k = 0; k < UBLK_ST_NR && off < len; k++) {
		struct ublk_op_stats sum;
		uint64_t p[4];

		memset(&sum, 0, sizeof(sum));
		for (qi = 0; qi < dev->info.nr_hw_queues; qi++) {
			const struct ublk_op_stats *s = &dev->queues[qi].stats[k];

			sum.ios += __atomic_load_n(&s->ios, __ATOMIC_RELAXED);
			sum.bytes += __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
			sum.errors += __atomic_load_n(&s->errors, __ATOMIC_RELAXED);
			for (i = 0; i < UBLK_LAT_BUCKETS; i++)
				sum.lat[i] += __atomic_load_n(&s->lat[i], __ATOMIC_RELAXED);
		}
		uint64_t total = 0;
		for (i = 0; i < UBLK_LAT_BUCKETS; i++)
			total += sum.lat[i];
		for (j = 0; j < 4; j++)
			p[j] = percentile(sum.lat, total, pct[j]);
		if (json)
			off += snprintf(buf + off, len - off,
					"%s\"%s\": {\"ios\": %" PRIu64 ", \"bytes\": %" PRIu64
					", \"errors\": %" PRIu64 ", \"lat_ns\": {\"p50\": %" PRIu64
					", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64
					", \"p99.9\": %" PRIu64 "}}", k ? ", " : "", names[k],
					sum.ios, sum.bytes, sum.errors, p[0], p[1], p[2], p[3]);
		else
			off += snprintf(buf + off, len - off,
					"%-13s %12" PRIu64 " %14" PRIu64 " %8" PRIu64
					" %9.1f %9.1f %9.1f %9.1f\n", names[k], sum.ios, sum.bytes,
					sum.errors, p[0] / 1e3, p[1] / 1e3, p[2] / 1e3, p[3] / 1e3);
	}
	/* requests per queue: shows the queues share the load */
	if (off >= len)
		return -ENOSPC;
	off += snprintf(buf + off, len - off, json ? "}, \"queue_ios\": [" : "per queue:");
	for (qi = 0; qi < dev->info.nr_hw_queues && off < len; qi++) {
		uint64_t n = 0;

		for (k = 0; k < UBLK_ST_NR; k++)
			n += __atomic_load_n(&dev->queues[qi].stats[k].ios, __ATOMIC_RELAXED);
		if (json)
			off += snprintf(buf + off, len - off, "%s%" PRIu64, qi ? ", " : "", n);
		else
			off += snprintf(buf + off, len - off, " q%u=%" PRIu64, qi, n);
	}
	if (off < len)
		off += snprintf(buf + off, len - off, json ? "]" : "\n");
	/* online snapshot operations: how long the queues were held, per operation */
	for (k = 0, j = 0; k < UBLK_PAUSE_NR && off < len; k++) {
		static const char *const pnames[UBLK_PAUSE_NR] = { "create", "delete" };
		const struct ublk_pause_stats *ps = &dev->pause_st[k];

		if (!ps->count)
			continue;
		if (json)
			off += snprintf(buf + off, len - off, "%s\"%s\": {\"count\": %" PRIu64
					", \"last_us\": %" PRIu64 ", \"max_us\": %" PRIu64
					", \"total_us\": %" PRIu64 "}", j++ ? ", " : ", \"pauses\": {",
					pnames[k], ps->count, ps->last_ns / 1000, ps->max_ns / 1000,
					ps->total_ns / 1000);
		else
			off += snprintf(buf + off, len - off, "%s %s %" PRIu64 " (last %.1f ms, "
					"max %.1f ms, mean %.1f ms)", j++ ? "," : "pauses:", pnames[k],
					ps->count, ps->last_ns / 1e6, ps->max_ns / 1e6,
					ps->total_ns / 1e6 / (double)ps->count);
	}
	if (j && off < len)
		off += snprintf(buf + off, len - off, json ? "}" : "\n");
	if (off < len && json)
		off += snprintf(buf + off, len - off, "}\n");
	return off < len ? 0 : -ENOSPC;
}
