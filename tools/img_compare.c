/* SPDX-License-Identifier: MIT */
/*
 * ucow compare: whether two images (each through its backing chain) have the same content,
 * like qemu-img compare. Exit status 0 the same, 1 they differ, 2 an error. Runs that read
 * as zeros in both are skipped without reading; everything else is read through the engine.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowcore.h"
#include "chain.h"
#include "cmds.h"
#include "util.h"

static const char compare_help[] =
	"usage: ucow compare [-q] [-s] [-U] [-p] [-f FMT] [-F FMT] A B\n"
	"\n"
	"Compare the content of images A and B, each read through its backing chain.\n"
	"When their sizes differ, the part past the smaller one's end must read as zeros\n"
	"(unless -s). Prints \"Images are identical.\" or where the first difference is.\n"
	"\n"
	"  -f FMT        A's format: ucow or qcow2 (recognized by\n"
	"                their magic) or raw\n"
	"  -F FMT        B's format: ucow or qcow2 (recognized by\n"
	"                their magic) or raw\n"
	"  -s            strict: images of different sizes differ\n"
	"  -q            quiet: print nothing but errors (the exit status says it)\n"
	"  -p            show progress on stderr\n"
	"  -U, --force-share\n"
	"                open A and B without a lock, even while another process writes\n"
	"                one (then a warning says the result may be inconsistent)\n"
	"  --allow-network-backing\n"
	"                follow a backing image on an NBD server (an\n"
	"                nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                a read that needs that server fails after SEC\n"
	"                seconds without it (default 30)\n"
	"  -h, --help    this help\n"
	"\n"
	"Exit status: 0 same content, 1 the content (or with -s the size) differs,\n"
	"2 an error.\n";

#define CMP_BUF (2u << 20)	/* bytes per request and image */

struct side {
	const char *file;
	struct cow_image *img;
	struct cow_ctx *ctx;
	uint64_t size;
	uint8_t *buf;
	bool warned;
};

struct cmp {
	struct side a, b;
	uint64_t total;
	bool quiet;
	struct progress pr;	/* -p */
};

/* The run of s's content at off, at most len bytes: 0 or -errno (reported). */
static int extent(struct side *s, uint64_t off, uint64_t len, struct chain_ext *e)
{
	struct cow_image *failed = s->img;
	struct cow_info in;
	int r = chain_extent(s->img, off, len, e, &failed);

	if (r < 0) {
		cow_get_info(failed, &in);
		ucow_err("%s: mapping offset %" PRIu64 ": %s", s->file, off,
			 err_text_for(r, cow_errmsg(failed), in.path));
		return r;
	}
	if (!e->length || e->length > len)
		e->length = len;	/* never loop forever on an odd answer */
	return 0;
}

/* s's content of [off, off+n) into s->buf: zeros for a zero run, else read. 0 or -errno. */
static int fetch(struct side *s, const struct chain_ext *e, uint64_t off, uint64_t n)
{
	int r;

	if (e->zero) {
		memset(s->buf, 0, n);
		return 0;
	}
	r = cow_rw(s->ctx, COW_READ, s->buf, n, off, 0);
	if (r < 0)
		ucow_err("%s: read failed at offset %" PRIu64 ": %s", s->file, off,
			 err_text_for(r, cow_errmsg(s->img), s->file));
	return r;
}

/* The first byte where x and y differ (n if none). */
static uint64_t first_diff(const uint8_t *x, const uint8_t *y, uint64_t n)
{
	uint64_t i = 0;

	while (i + 4096 <= n && !memcmp(x + i, y + i, 4096))
		i += 4096;
	while (i < n && x[i] == y[i])
		i++;
	return i;
}

static uint64_t first_nonzero(const uint8_t *x, uint64_t n)
{
	uint64_t i = 0;

	while (i < n && !x[i])
		i++;
	return i;
}

/* 0 the same, 1 a difference (printed), or -errno (reported). */
static int compare_all(struct cmp *c)
{
	uint64_t common = c->a.size < c->b.size ? c->a.size : c->b.size;
	struct side *longer = c->a.size > c->b.size ? &c->a : &c->b;
	struct chain_ext ea, eb;
	uint64_t off = 0, n, at;
	int r;

	progress_show(&c->pr, 0, c->total);
	while (off < common) {
		n = common - off < CMP_BUF ? common - off : CMP_BUF;
		if ((r = extent(&c->a, off, n, &ea)) < 0 ||
		    (r = extent(&c->b, off, ea.length, &eb)) < 0)
			return r;
		n = eb.length;
		if (!(ea.zero && eb.zero)) {
			if ((r = fetch(&c->a, &ea, off, n)) < 0 || (r = fetch(&c->b, &eb, off, n)) < 0)
				return r;
			at = first_diff(c->a.buf, c->b.buf, n);
			if (at < n) {
				if (!c->quiet)
					printf("Content mismatch at offset %" PRIu64 "!\n", off + at);
				return 1;
			}
		}
		off += n;
		progress_show(&c->pr, off, c->total);
	}
	/* past the smaller image's end, the larger one must read as zeros */
	while (off < longer->size) {
		n = longer->size - off < CMP_BUF ? longer->size - off : CMP_BUF;
		if ((r = extent(longer, off, n, &ea)) < 0)
			return r;
		n = ea.length;
		if (!ea.zero) {
			if ((r = fetch(longer, &ea, off, n)) < 0)
				return r;
			at = first_nonzero(longer->buf, n);
			if (at < n) {
				if (!c->quiet)
					printf("Content mismatch at offset %" PRIu64 "!\n", off + at);
				return 1;
			}
		}
		off += n;
		progress_show(&c->pr, off, c->total);
	}
	return 0;
}

/* Open one image; opt is its format option ("-f" for A, "-F" for B), for the hint. */
static int open_side(struct side *s, int fmt, const char *opt, unsigned share,
		     const struct net_opts *net, struct cow_backend *be)
{
	char err[COW_ERRLEN] = "";
	struct cow_info in;
	int r;

	r = cow_open(s->file, &(struct cow_open_opts){ .fmt = fmt,
			.flags = COW_OPEN_RDONLY | share | net->flags,
			.net_timeout_ms = net->timeout_ms }, &s->img, err, COW_ERRLEN);
	if (r < 0) {
		report_fopt(s->file, NULL, r, err, opt);
		return r;
	}
	if (share)
		share_warn(s->img, s->file, &s->warned);
	cow_get_info(s->img, &in);
	s->size = in.virtual_size;
	r = cow_ctx_new(s->img, be, &s->ctx);
	if (r < 0)
		ucow_err("%s: %s", s->file, err_text_for(r, cow_errmsg(s->img), s->file));
	return r;
}

static void close_side(struct side *s, unsigned share)
{
	if (!s->img)
		return;
	if (share)
		share_warn(s->img, s->file, &s->warned);
	if (s->ctx)
		cow_ctx_free(s->ctx);
	cow_close(s->img);
}

int cmd_compare(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmp c = { .pr = { .last = -1 } };
	struct cow_backend *be = NULL;
	int ch, r, afmt = COW_FMT_NONE, bfmt = COW_FMT_NONE;
	unsigned share = 0;
	struct net_opts net = { 0 };
	bool strict = false;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":f:F:qspUh", lopts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			if (opt_format("compare", optarg, &afmt))
				return 2;
			break;
		case 'F':
			if (opt_format("compare", optarg, &bfmt))
				return 2;
			break;
		case 'q': c.quiet = true; break;
		case 's': strict = true; break;
		case 'p': c.pr.on = true; break;
		case 'U': share = COW_OPEN_SHARE; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("compare", ch, optarg, &net))
				return 1;
			break;
		case 'h': fputs(compare_help, stdout); return 0;
		default: opt_err("compare", ch, argv); return 2;
		}
	}
	if (argc - optind < 2) {
		usage_err("compare", "expected two images, A B");
		return 2;
	}
	if (argc - optind > 2) {
		usage_err("compare", "too many arguments ('%s')", argv[optind + 2]);
		return 2;
	}
	c.a.file = argv[optind];
	c.b.file = argv[optind + 1];
	r = cow_backend_new("uring", 32, &be);
	if (r < 0) {
		ucow_err("%s: cannot set up the I/O backend: %s", c.a.file, strerror(-r));
		return 2;
	}
	if (posix_memalign((void **)&c.a.buf, 4096, CMP_BUF) ||
	    posix_memalign((void **)&c.b.buf, 4096, CMP_BUF)) {
		ucow_err("%s: out of memory", c.a.file);
		r = -ENOMEM;
		goto out;
	}
	if ((r = open_side(&c.a, afmt, "-f", share, &net, be)) < 0 ||
	    (r = open_side(&c.b, bfmt, "-F", share, &net, be)) < 0)
		goto out;
	c.total = c.a.size > c.b.size ? c.a.size : c.b.size;
	if (c.a.size != c.b.size) {
		if (strict) {
			if (!c.quiet)
				printf("Strict mode: Image size mismatch!\n");
			r = 1;
			goto out;
		}
		if (!c.quiet)
			printf("Warning: Image size mismatch!\n");
	}
	r = compare_all(&c);
	if (r != 0 && c.pr.last >= 0 && c.pr.last != 10000)
		fputc('\n', stderr);	/* end the progress line */
	if (r == 0 && !c.quiet)
		printf("Images are identical.\n");
out:
	close_side(&c.b, share);
	close_side(&c.a, share);
	cow_backend_free(be);
	free(c.a.buf);
	free(c.b.buf);
	if (fflush(stdout) == EOF && r >= 0) {
		ucow_err("%s: cannot print the result: %s", c.a.file, strerror(errno));
		return 2;
	}
	return r < 0 ? 2 : r;
}
