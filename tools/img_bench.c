/* SPDX-License-Identifier: MIT */
/*
 * ucow bench: qemu-img bench's workload and output, run through the cowcore engine the way
 * the ublk server drives it (asynchronous requests, DEPTH in flight, one backend).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cowcore.h"
#include "cmds.h"
#include "util.h"

static const char bench_help[] =
	"usage: ucow bench [-c COUNT] [-d DEPTH] [-f FMT] [-s SIZE] [-S STEP] [-o OFFSET] [-w]\n"
	"                  [--pattern=N] [--flush-interval=N] [--no-drain] [--latency]\n"
	"                  [-t none|writeback] [-i uring|aio|sync] [-n] [-q] FILE\n"
	"\n"
	"Run COUNT requests of SIZE bytes, DEPTH in flight, at OFFSET, OFFSET+STEP, ... (wrapping\n"
	"at the end of the image), the same workload as qemu-img bench, through the engine.\n"
	"\n"
	"  -c COUNT          requests (default 75000)\n"
	"  -d DEPTH          requests in flight (default 64)\n"
	"  -f FMT            ucow (default, by magic) or raw\n"
	"  -s SIZE           request size (default 4k)\n"
	"  -S STEP           distance between requests (default SIZE)\n"
	"  -o OFFSET         first offset (default 0)\n"
	"  -w                write (default: read)\n"
	"  --pattern=N       byte written (default 0xa5)\n"
	"  --flush-interval=N  flush after every N requests (writes only)\n"
	"  --no-drain        do not wait for requests in flight before such a flush\n"
	"  --latency         also print latency percentiles (one sample per request, from\n"
	"                    its submission to its completion; a flush's time is added to\n"
	"                    the request completed last before it: at -d 1 with\n"
	"                    --flush-interval=1, each sample is a write and its flush)\n"
	"  -t CACHE          none (O_DIRECT) or writeback (default)\n"
	"  -i BACKEND        uring (default), aio or sync\n"
	"  -n                same as -i aio (qemu-img's native AIO)\n"
	"  -q                print only the result lines\n"
	"  --allow-network-backing\n"
	"                    follow a backing image on an NBD server (an\n"
	"                    nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                    a read that needs that server fails after SEC\n"
	"                    seconds without it (default 30)\n"
	"  -h, --help        this help\n"
	"\n"
	"A read run none of whose requests reaches stored data (nothing is allocated where they\n"
	"go, in the image or a backing file) is refused: the engine answers such reads from\n"
	"memory, and the IOPS would measure no storage. Write the range first (-w).\n";

struct bench {
	struct cow_ctx *ctx;
	struct cow_req *reqs;
	int *freelist, nfree;
	uint64_t done, failed;
	int err;
	double *t_sub;		/* --latency: each slot's submission time */
	double *lat;		/* --latency: one sample per completed request (seconds) */
	uint64_t nlat;
};

static double now(void);

static void bench_cb(struct cow_req *req, int res)
{
	struct bench *b = req->priv;
	if (res < 0 && !b->err)
		b->err = res;
	b->done++;
	if (b->lat)
		b->lat[b->nlat++] = now() - b->t_sub[req - b->reqs];
	b->freelist[b->nfree++] = (int)(req - b->reqs);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Drive the backend until fewer than `until` requests are in flight. */
static int drain(struct bench *b, struct cow_backend *be, unsigned until, unsigned depth)
{
	while ((unsigned)(depth - b->nfree) > until) {
		int r = cow_backend_submit_wait(be, 1);
		if (r < 0)
			return r;
		cow_ctx_poll(b->ctx);
	}
	return 0;
}

struct bench_opts {
	uint64_t count, size, step, offset, flush_interval;
	unsigned depth;
	int fmt, pattern;
	bool write, direct, quiet, nodrain, latency;
	const char *bename;
	const char *file;
	struct net_opts net;	/* --allow-network-backing, --nbd-timeout */
};

/* --latency: 8 bytes a request, 800 MB at most */
#define BENCH_MAX_SAMPLES	100000000ull

/* 0 with o filled, 1 after a usage error, -1 after --help (exit 0). */
static int bench_parse(int argc, char **argv, struct bench_opts *o)
{
	enum { O_PATTERN = 256, O_FLUSH, O_NODRAIN, O_LATENCY };
	static const struct option opts[] = {
		{ "pattern", required_argument, NULL, O_PATTERN },
		{ "flush-interval", required_argument, NULL, O_FLUSH },
		{ "no-drain", no_argument, NULL, O_NODRAIN },
		{ "latency", no_argument, NULL, O_LATENCY },
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	const char *why;
	uint64_t v;
	int c;

	*o = (struct bench_opts){ .count = 75000, .size = 4096, .depth = 64,
				  .fmt = COW_FMT_NONE, .pattern = 0xa5, .bename = "uring" };
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:c:d:f:s:S:o:wt:i:nqh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': case 'd': case 's': case 'S': case 'o': case O_FLUSH:
			if (parse_bytes(optarg, &v, &why) && c == O_FLUSH)
				return usage_err(argv[0], "invalid number '%s' for --flush-interval: "
						 "%s", optarg, why);
			if (parse_bytes(optarg, &v, &why))
				return usage_err(argv[0], "invalid number '%s' for -%c: %s", optarg, c,
						 why);
			if (c == 'c')
				o->count = v;
			else if (c == 'd') {
				if (!v || v > 4096)
					return usage_err(argv[0], "depth must be 1 to 4096");
				o->depth = (unsigned)v;
			} else if (c == 's') {
				if (!v || v > (64u << 20))
					return usage_err(argv[0], "size must be 1 byte to 64M");
				o->size = v;
			} else if (c == 'S')
				o->step = v;
			else if (c == 'o')
				o->offset = v;
			else
				o->flush_interval = v;
			break;
		case 'f':
			if (opt_format(argv[0], optarg, &o->fmt))
				return 1;
			break;
		case 'w':
			o->write = true;
			break;
		case 't':
			if (!strcmp(optarg, "none"))
				o->direct = true;
			else if (strcmp(optarg, "writeback"))
				return usage_err(argv[0], "cache must be none or writeback");
			break;
		case 'i':
			if (strcmp(optarg, "uring") && strcmp(optarg, "aio") && strcmp(optarg, "sync"))
				return usage_err(argv[0], "backend must be uring, aio or sync");
			o->bename = optarg;
			break;
		case 'n':
			o->bename = "aio";
			break;
		case 'q':
			o->quiet = true;
			break;
		case O_PATTERN:
			if (parse_pattern(optarg, &o->pattern))
				return usage_err(argv[0], "invalid pattern '%s'", optarg);
			break;
		case O_NODRAIN:
			o->nodrain = true;
			break;
		case O_LATENCY:
			o->latency = true;
			break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("bench", c, optarg, &o->net))
				return 1;
			break;
		case 'h':
			fputs(bench_help, stdout);
			return -1;
		default:
			return opt_err(argv[0], c, argv);
		}
	}
	if (optind != argc - 1)
		return usage_err(argv[0], optind >= argc ? "missing FILE" : "too many arguments");
	if (!o->step)
		o->step = o->size;
	if (o->flush_interval && !o->write)
		return usage_err(argv[0], "--flush-interval is for write benchmarks (-w)");
	if (o->latency && o->count > BENCH_MAX_SAMPLES)
		return usage_err(argv[0], "--latency keeps a sample per request: at most %llu "
				 "requests", (unsigned long long)BENCH_MAX_SAMPLES);
	o->file = argv[optind];
	return 0;
}

/* Where the content of [off, off+len) comes from, down the chain: 1 stored data, 0 nothing
 * stored (reads as zeros), for *run bytes; or -errno. */
static int data_run(struct cow_image *img, uint64_t off, uint64_t len, uint64_t *run)
{
	for (;;) {
		struct cow_info bi;
		int st = cow_map(img, off, len, run, NULL);

		if (st < 0)
			return st;
		if (!*run || *run > len)
			return -EIO;	/* never: keeps the caller's loop finite */
		if (st != COW_MAP_BACKING)
			return st == COW_MAP_DATA;
		img = cow_backing_image(img);
		if (!img)
			return 1;	/* cannot look further: count it as data */
		cow_get_info(img, &bi);
		if (off >= bi.virtual_size)
			return 0;	/* past the backing image's end */
		len = *run < bi.virtual_size - off ? *run : bi.virtual_size - off;
	}
}

/*
 * Does some request of a read run read stored data? The requests are at base + k * step,
 * k = 0 .. n-1, size bytes each (bench_run's order: base is -o, or 0 when -o does not
 * fit; n is COUNT or as many as fit before the run wraps to base again). The engine
 * answers a read of a range nothing holds (not the image, not a backing file) from memory,
 * so a run of only such reads would report IOPS no storage gives. 1 yes, 0 no, -errno.
 */
static int reads_stored_data(struct cow_image *img, const struct bench_opts *o, uint64_t vsize)
{
	uint64_t base = o->offset <= vsize - o->size ? o->offset : 0;
	uint64_t fit = (vsize - o->size - base) / o->step + 1;
	uint64_t n = o->count < fit ? o->count : fit;
	uint64_t off, end, run, k;
	int st;

	if (!n)
		return 1;	/* nothing is sent: nothing to refuse */
	end = base + (n - 1) * o->step + o->size;	/* <= vsize */
	for (off = base; off < end; off += run) {
		st = data_run(img, off, end - off, &run);
		if (st <= 0) {
			if (st < 0)
				return st;
			continue;
		}
		/* the first request that ends after off: does it start before off + run? */
		k = off < base + o->size ? 0 : (off - base - o->size) / o->step + 1;
		if (k < n && base + k * o->step < off + run)
			return 1;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The q-quantile of n sorted samples (nearest rank). */
static double quantile(const double *v, uint64_t n, double q)
{
	uint64_t k = (uint64_t)(q * (double)n + 0.999999);
	return v[k ? (k > n ? n - 1 : k - 1) : 0];
}

static void print_latency(struct bench *b)
{
	double sum = 0;
	uint64_t n = b->nlat;
	if (!n)
		return;
	qsort(b->lat, n, sizeof(*b->lat), cmp_double);
	for (uint64_t i = 0; i < n; i++)
		sum += b->lat[i];
	printf("Latency (us): mean %.1f, p50 %.1f, p99 %.1f, p99.9 %.1f, max %.1f\n",
	       sum / (double)n * 1e6, quantile(b->lat, n, 0.5) * 1e6,
	       quantile(b->lat, n, 0.99) * 1e6, quantile(b->lat, n, 0.999) * 1e6,
	       b->lat[n - 1] * 1e6);
}

/* Keep depth requests in flight until count are done; 0 or -errno (b->err). */
static int bench_run(const struct bench_opts *o, struct bench *b, struct cow_backend *be,
		     char *bufs, size_t bsz, uint64_t vsize)
{
	uint64_t off = o->offset, sent = 0, since_flush = 0;
	int r;
	while (sent < o->count && !b->err) {
		while (b->nfree && sent < o->count) {
			int i = b->freelist[--b->nfree];
			struct cow_req *q = &b->reqs[i];
			memset(q, 0, sizeof(*q));
			q->op = o->write ? COW_WRITE : COW_READ;
			q->off = off;
			q->len = o->size;
			q->buf = bufs + (size_t)i * bsz;
			q->cb = bench_cb;
			q->priv = b;
			if (b->t_sub)
				b->t_sub[i] = now();
			cow_submit(b->ctx, q);
			sent++;
			off += o->step;
			if (off + o->size > vsize)
				off = o->offset + o->size > vsize ? 0 : o->offset;
			if (o->flush_interval && ++since_flush == o->flush_interval) {
				since_flush = 0;
				if (!o->nodrain && (r = drain(b, be, 0, o->depth)))
					break;
				double tf = b->lat ? now() : 0;
				if ((r = cow_rw(b->ctx, COW_FLUSH, NULL, 0, 0, 0)) < 0)
					b->err = r;
				if (b->lat && b->nlat)
					b->lat[b->nlat - 1] += now() - tf;
			}
		}
		if ((r = drain(b, be, o->depth - 1, o->depth)) < 0)
			b->err = r;
	}
	if (!b->err && (r = drain(b, be, 0, o->depth)) < 0)
		b->err = r;
	return b->err;
}

int cmd_bench(int argc, char **argv)
{
	struct bench_opts o;
	struct cow_image *img = NULL;
	struct cow_backend *be = NULL;
	struct bench b = { 0 };
	struct cow_info info;
	char err[COW_ERRLEN] = "";
	char *bufs = NULL;
	int status = 1, r;

	r = bench_parse(argc, argv, &o);
	if (r)
		return r < 0 ? 0 : r;
	const char *file = o.file;
	r = cow_open(file, &(struct cow_open_opts){ .fmt = o.fmt,
			.flags = (o.write ? 0 : COW_OPEN_RDONLY) | (o.direct ? COW_OPEN_DIRECT : 0) |
			 o.net.flags, .net_timeout_ms = o.net.timeout_ms },
			&img, err, COW_ERRLEN);
	if (r) {
		report_f(file, file, r, err);
		return 1;
	}
	cow_get_info(img, &info);
	if (o.size > info.virtual_size) {
		ucow_err("%s: request size is larger than the image", file);
		goto out;
	}
	if (!o.write && (r = reads_stored_data(img, &o, info.virtual_size)) <= 0) {
		if (r < 0)
			report(file, file, r, cow_errmsg(img));
		else
			ucow_err("%s: nothing to measure: the read benchmark reads no stored data "
				 "(nothing is allocated where its requests go, in the image or a "
				 "backing file, and such reads are answered from memory); write there "
				 "first, e.g. with ucow bench -w", file);
		goto out;
	}
	r = cow_backend_new(o.bename, o.depth, &be);
	if (!r)
		r = cow_ctx_new(img, be, &b.ctx);
	if (r) {
		report(file, file, r, "setting up I/O");
		goto out;
	}
	size_t bsz = (o.size + 4095) & ~4095ull;
	b.reqs = calloc(o.depth, sizeof(*b.reqs));
	b.freelist = calloc(o.depth, sizeof(*b.freelist));
	if (o.latency && (!(b.t_sub = calloc(o.depth, sizeof(*b.t_sub))) ||
			  !(b.lat = malloc((o.count ? o.count : 1) * sizeof(*b.lat))))) {
		ucow_err("%s: out of memory for %" PRIu64 " latency samples", file, o.count);
		goto out;
	}
	if (!b.reqs || !b.freelist || posix_memalign((void **)&bufs, 4096, bsz * o.depth)) {
		ucow_err("%s: out of memory", file);
		goto out;
	}
	memset(bufs, o.pattern, bsz * o.depth);
	for (unsigned i = 0; i < o.depth; i++)
		b.freelist[b.nfree++] = (int)i;

	if (!o.quiet)
		printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %u in parallel "
		       "(starting at offset %" PRIu64 ", step size %" PRIu64 ")\n", o.count,
		       o.write ? "write" : "read", o.size, o.depth, o.offset, o.step);
	double t0 = now();
	r = bench_run(&o, &b, be, bufs, bsz, info.virtual_size);
	double t = now() - t0;
	if (r) {
		report(file, file, r, cow_errmsg(img));
		goto out;
	}
	printf("Run completed in %.3f seconds.\n", t);
	printf("IOPS: %.0f\n", (double)o.count / t);
	printf("MiB/s: %.2f\n", (double)o.count * (double)o.size / t / (1 << 20));
	print_latency(&b);
	status = 0;
out:
	cow_ctx_free(b.ctx);
	cow_backend_free(be);
	free(b.reqs);
	free(b.freelist);
	free(b.t_sub);
	free(b.lat);
	free(bufs);
	if (img && cow_close(img) && !status) {
		ucow_err("%s: closing the image failed", file);
		status = 1;
	}
	return status;
}
