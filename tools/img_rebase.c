/* SPDX-License-Identifier: MIT */
/*
 * ucow rebase: give an overlay another backing file (like qemu-img rebase).
 *
 * DESIGN NOTES
 *   Safe mode keeps what FILE shows: wherever FILE itself holds no data (the runs cow_map
 *   gives to the backing file; without an old backing file, its zero runs too), the old
 *   chain's content is compared with NEW's, and what differs is written into FILE (zeros
 *   as zeroes). -b "" flattens: everything the old chain shows through FILE is written into
 *   it. Then FILE is flushed and cow_set_backing switches the name: a checkpoint makes the
 *   copies durable first, and the header switch is one write (cowcore/image.c, B1-B2).
 *   Interrupted before the switch, FILE still names the old chain and shows the same
 *   content (what was copied equals what it covers); after it, FILE shows the same content
 *   through NEW. Run again, it finds nothing (or less) to copy and switches.
 *   -u only rewrites the name: FILE is opened without its chain (the old backing file may
 *   be gone), and NEW need not exist.
 * The backing-file policy applies to the old chain and to NEW alike: both are opened as
 * FILE's backing files are (COW_OPEN_CONFINE unless --allow-backing-outside).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowcore.h"
#include "cmds.h"
#include "ublk.h"
#include "util.h"

static const char rebase_help[] =
	"usage: ucow rebase [-q] [-p] [-u] [-f FMT] -b NEW [-F FMT] [--allow-backing-outside]\n"
	"                   FILE\n"
	"\n"
	"Make NEW the backing file of FILE (like qemu-img rebase). By default (safe mode) what\n"
	"FILE shows does not change: where FILE has no data of its own, whatever differs\n"
	"between its old backing chain and NEW is first copied into FILE. With -b \"\" FILE\n"
	"gets everything from its chain and no backing file afterwards. Safe to interrupt:\n"
	"FILE keeps its content, and running it again finishes the job.\n"
	"\n"
	"  -b NEW        the new backing file, stored as given: a relative name is taken from\n"
	"                FILE's folder; \"\" for none\n"
	"  -F FMT        NEW's format, raw, ucow or qcow2 (required unless NEW is \"\")\n"
	"  -u            unsafe: only change the name; nothing is compared or copied, and\n"
	"                neither the old backing file nor NEW needs to exist\n"
	"  -f FMT        FILE's format: ucow (default; recognized by its magic)\n"
	"  -p            show progress on stderr\n"
	"  -q            quiet (the default; accepted for qemu-img compatibility)\n"
	"  --allow-backing-outside\n"
	"                follow, and name, backing files given by an absolute path or lying\n"
	"                outside FILE's folder (refused by default)\n"
	"  --allow-network-backing\n"
	"                follow a backing image on an NBD server (an\n"
	"                nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                a read that needs that server fails after SEC\n"
	"                seconds without it (default 30)\n"
	"  -h, --help    this help\n"
	"\n"
	"In safe mode FILE must not have internal snapshots (what they read from the backing\n"
	"file would change); -u accepts them.\n";

#define REBASE_BUF (2u << 20)	/* bytes per request */
#define REBASE_GRAIN 4096u	/* the unit compared and copied */

struct rebase {
	const char *file, *newb;
	int fmt, newfmt;
	bool unsafe;
	unsigned confine;		/* COW_OPEN_CONFINE unless --allow-backing-outside */
	struct net_opts net;		/* --allow-network-backing, --nbd-timeout */
	struct cow_image *img, *nimg;	/* FILE (with its old chain), NEW (with its chain) */
	struct cow_ctx *ctx, *nctx;
	uint64_t size, nsize;
	bool backed;			/* FILE has an old backing file */
	uint8_t *buf, *nbuf, *zero;
	struct progress pr;
};

static int file_io(struct rebase *r, int op, void *buf, uint64_t len, uint64_t off)
{
	int rc = cow_rw(r->ctx, op, buf, len, off, 0);

	if (rc < 0)
		ucow_err("%s: %s failed at offset %" PRIu64 ": %s", r->file,
			 op == COW_READ ? "read" : op == COW_FLUSH ? "flush" : "write", off,
			 err_text_for(rc, cow_errmsg(r->img), r->file));
	return rc;
}

/* The grain of [off + i, off + n) that starts at i: up to the next multiple of the grain. */
static uint64_t grain(uint64_t off, uint64_t i, uint64_t n)
{
	uint64_t g = REBASE_GRAIN - (off + i) % REBASE_GRAIN;

	return g < n - i ? g : n - i;
}

/*
 * buf holds FILE's content of [off, off+n), where FILE has no data of its own: write the
 * grains that NEW would show differently (flattening: the grains that are not zero), in
 * runs of grains that are all zeros or all not.
 */
static int keep_grains(struct rebase *r, uint64_t off, uint64_t n)
{
	const uint8_t *want = r->nimg ? r->nbuf : r->zero;
	uint64_t i = 0, g;

	while (i < n) {
		uint64_t start = i;
		bool zero;
		int rc;

		g = grain(off, i, n);
		if (!memcmp(r->buf + i, want + i, g)) {
			i += g;
			continue;
		}
		zero = !memcmp(r->buf + i, r->zero, g);
		for (i += g; i < n; i += g) {
			g = grain(off, i, n);
			if (!memcmp(r->buf + i, want + i, g) || !memcmp(r->buf + i, r->zero, g) != zero)
				break;
		}
		/* zeros: write-zeroes where a backing file would otherwise show through; an image
		 * without one reads zeros there already (write-zeroes would change nothing), so
		 * they are written as data */
		if (zero && r->backed)
			rc = file_io(r, COW_WRITE_ZEROES, NULL, i - start, off + start);
		else
			rc = file_io(r, COW_WRITE, r->buf + start, i - start, off + start);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Copy into FILE what NEW (or, flattening, no backing file) would show differently. */
static int copy_diff(struct rebase *r)
{
	uint64_t off = 0, run, phys;
	int st, rc;

	progress_show(&r->pr, 0, r->size);
	while (off < r->size) {
		uint64_t len = r->size - off < REBASE_BUF ? r->size - off : REBASE_BUF;

		st = cow_map(r->img, off, len, &run, &phys);
		if (st < 0) {
			ucow_err("%s: mapping offset %" PRIu64 ": %s", r->file, off,
				 err_text_for(st, cow_errmsg(r->img), r->file));
			return st;
		}
		if (run == 0 || run > len)
			run = len;	/* never loop forever on an odd answer */
		if (st == COW_MAP_BACKING || (st == COW_MAP_ZERO && !r->backed)) {
			rc = file_io(r, COW_READ, r->buf, run, off);
			if (!rc && r->nimg)
				rc = read_padded(r->nctx, r->nimg, r->newb, r->nsize, r->nbuf, off, run);
			if (!rc)
				rc = keep_grains(r, off, run);
			if (rc < 0)
				return rc;
		}
		off += run;
		progress_show(&r->pr, off, r->size);
	}
	return file_io(r, COW_FLUSH, NULL, 0, 0);
}

static int safe_copy(struct rebase *r)
{
	char err[COW_ERRLEN] = "";
	struct cow_backend *be = NULL;
	struct cow_info in;
	int rc;

	cow_get_info(r->img, &in);
	r->size = in.virtual_size;
	r->backed = cow_backing_image(r->img) != NULL;
	if (in.nb_snapshots) {
		ucow_err("%s: has %u internal snapshot%s: a safe rebase would change what %s from "
			 "the backing file (delete %s first, or use -u)", r->file, in.nb_snapshots,
			 in.nb_snapshots == 1 ? "" : "s", in.nb_snapshots == 1 ? "it reads" :
			 "they read", in.nb_snapshots == 1 ? "it" : "them");
		return -ENOTSUP;
	}
	if (!*r->newb && !r->backed)
		return 0;		/* nothing to pull in */
	if (*r->newb) {
		rc = cow_open_backing(r->img, r->newb, r->newfmt, &r->nimg, err, COW_ERRLEN);
		if (rc < 0) {
			report_backing(r->file, rc, err);
			return rc;
		}
		cow_get_info(r->nimg, &in);
		r->nsize = in.virtual_size;
	}
	rc = cow_backend_new("uring", 32, &be);
	if (rc < 0) {
		ucow_err("%s: cannot set up the I/O backend: %s", r->file, strerror(-rc));
		goto out;
	}
	rc = cow_ctx_new(r->img, be, &r->ctx);
	if (!rc && r->nimg && (rc = cow_ctx_new(r->nimg, be, &r->nctx)) < 0)
		ucow_err("%s: %s", r->newb, err_text_for(rc, cow_errmsg(r->nimg), r->newb));
	else if (rc < 0)
		ucow_err("%s: %s", r->file, err_text_for(rc, cow_errmsg(r->img), r->file));
	if (!rc)
		rc = copy_diff(r);
	cow_ctx_free(r->nctx);
	cow_ctx_free(r->ctx);
	cow_backend_free(be);
out:
	cow_close(r->nimg);
	return rc;
}

static int rebase(struct rebase *r)
{
	char err[COW_ERRLEN] = "";
	struct cow_info in;
	int rc, r2;

	/* -u: without the old chain, which may be gone */
	rc = cow_open(r->file, &(struct cow_open_opts){ .fmt = r->fmt,
			.flags = r->confine | (r->unsafe ? COW_OPEN_NOCHAIN : 0) | r->net.flags,
			.net_timeout_ms = r->net.timeout_ms },
			&r->img, err, COW_ERRLEN);
	if (rc < 0) {
		report_backing(r->file, rc, err);
		return rc;
	}
	cow_get_info(r->img, &in);
	if (in.fmt != COW_FMT_UCOW) {
		ucow_err("%s: a raw image has no backing file", r->file);
		rc = -ENOTSUP;
		goto out;
	}
	if (!r->unsafe)
		rc = safe_copy(r);
	if (rc == 0) {
		rc = cow_set_backing(r->img, r->newb, r->newfmt);
		if (rc < 0)
			report_backing(r->file, rc, cow_errmsg(r->img));
	}
out:
	r2 = cow_close(r->img);
	if (r2 < 0 && rc == 0) {
		ucow_err("%s: closing: %s", r->file, strerror(-r2));
		rc = r2;
	}
	return rc;
}

/*
 * -b "" on a served overlay: the server's flatten job (ublk/job.c) copies the backing data
 * in, one short pause of the device at a time, then drops the backing file; this waits for
 * it, showing progress. Other rebases of a served image are refused (they would change the
 * chain under the device). Returns the exit status, or -1 when FILE is not served.
 */
static int rebase_online(struct rebase *r)
{
	struct ublk_state st;
	int id = ublk_server_of(r->file, &st);

	if (id < 0)
		return -1;
	if (*r->newb || r->unsafe || !st.sock[0] || st.o.read_only || st.o.snapshot[0]) {
		ucow_err("%s: in use by /dev/ublkb%d (ucow dev del %d first; online, only "
			 "'rebase -b \"\"' (flatten) runs)", r->file, id, id);
		return 1;
	}
	return online_job(r->file, id, st.sock, UBLK_OP_FLATTEN, &r->pr);
}

int cmd_rebase(int argc, char **argv)
{
	enum { OPT_OUTSIDE = 256 };
	static const struct option lopts[] = {
		{ "allow-backing-outside", no_argument, NULL, OPT_OUTSIDE },
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct rebase r = { .pr.last = -1, .confine = COW_OPEN_CONFINE };
	int ch, rc;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":b:F:f:upqh", lopts, NULL)) != -1) {
		switch (ch) {
		case 'b': r.newb = optarg; break;
		case 'F':
			if (opt_format("rebase", optarg, &r.newfmt))
				return 1;
			break;
		case 'f':
			if (opt_format("rebase", optarg, &r.fmt))
				return 1;
			break;
		case 'u': r.unsafe = true; break;
		case 'p': r.pr.on = true; break;
		case 'q': break;
		case OPT_OUTSIDE: r.confine = 0; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("rebase", ch, optarg, &r.net))
				return 1;
			break;
		case 'h': fputs(rebase_help, stdout); return 0;
		default: return opt_err("rebase", ch, argv);
		}
	}
	if (argc - optind < 1)
		return usage_err("rebase", "expected FILE");
	if (argc - optind > 1)
		return usage_err("rebase", "too many arguments ('%s')", argv[optind + 1]);
	if (!r.newb)
		return usage_err("rebase", "the new backing file must be given (-b NEW, or -b \"\" "
				 "for none)");
	if (*r.newb && !r.newfmt)
		return usage_err("rebase", "the new backing file's format must be given (-F raw|ucow|qcow2)");
	r.file = argv[optind];
	rc = rebase_online(&r);
	if (rc >= 0)
		return rc;
	if (posix_memalign((void **)&r.buf, 4096, REBASE_BUF) ||
	    posix_memalign((void **)&r.nbuf, 4096, REBASE_BUF) ||
	    !(r.zero = calloc(1, REBASE_BUF))) {
		ucow_err("%s: out of memory", r.file);
		rc = -ENOMEM;
	} else {
		rc = rebase(&r);
	}
	free(r.buf);
	free(r.nbuf);
	free(r.zero);
	return rc < 0 ? 1 : 0;
}
