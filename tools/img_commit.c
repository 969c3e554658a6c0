/* SPDX-License-Identifier: MIT */
/*
 * ucow commit: write an overlay's content into its backing file (or a deeper image of its
 * chain), then empty the overlay (like qemu-img commit).
 *
 * DESIGN NOTES — the order that makes it safe to interrupt at any point (kill -9, power
 * loss) and to run again:
 *   C1. copy: every run of the content above BASE (the data of FILE and of the images
 *       between, zeros where they say zero) is written into BASE; runs they leave to BASE
 *       are not touched. FILE reads the same throughout: it still holds all of its data.
 *   C2. flush BASE: its data and, for a ucow BASE, the mappings that point at it are
 *       durable. Nothing in FILE has changed yet.
 *   C3. only then empty FILE (cow_make_empty): a chunk leaves FILE only when BASE durably
 *       holds what it showed, so every crash state of the emptying reads the same; never
 *       base data older than FILE's.
 * Interrupted anywhere, FILE reads the same: before C3 it is whole (and BASE partly
 * written, with FILE's own content); during C3 each chunk is whole or empty, and BASE
 * holds what an empty one showed. Run again, it copies what FILE still holds once more and
 * empties it. With -b, FILE is not emptied at all (qemu-img's rule, -b implies -d):
 * emptying it would uncover the images between, whose older data would then shadow what
 * went into BASE.
 *
 * Locks: FILE holds its backing files read-only, and BASE must be opened read-write, so
 * the chain is first opened read-only to find its files and apply the backing-file policy,
 * then closed. Then BASE is opened read-write with its own chain (first: when another
 * process holds it, even read-only, e.g. serving another overlay of it, the open fails and
 * nothing above has been opened for writing), then FILE and the images between without
 * their chains (COW_OPEN_NOCHAIN; FILE read-write unless it stays as it is).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cowcore.h"
#include "cmds.h"
#include "ublk.h"
#include "util.h"

static const char commit_help[] =
	"usage: ucow commit [-q] [-p] [-d] [-f FMT] [-b BASE] [--allow-backing-outside] FILE\n"
	"\n"
	"Write the content of FILE, an overlay, into its backing file, then empty FILE so that\n"
	"it reads its backing file everywhere again (like qemu-img commit). Runs FILE discarded\n"
	"or zeroed become zeros in the backing file. Safe to interrupt: nothing is lost, and\n"
	"running it again finishes the job.\n"
	"\n"
	"  -b BASE       commit into BASE, an image deeper in FILE's backing chain: the content\n"
	"                of FILE and of every image between goes into BASE. Implies -d; the\n"
	"                images between no longer show their old content. BASE is a name as\n"
	"                stored in the chain (taken from FILE's folder) or a path\n"
	"  -d            do not empty FILE (when it is dropped afterwards)\n"
	"  -f FMT        FILE's format: ucow (default; recognized by its magic)\n"
	"  -p            show progress on stderr\n"
	"  -q            quiet: no 'Image committed.' line\n"
	"  --allow-backing-outside\n"
	"                follow backing files named by an absolute path or lying outside\n"
	"                FILE's folder (refused by default: an image from elsewhere could name\n"
	"                any file of this machine as its base, and commit writes into it)\n"
	"  --allow-network-backing\n"
	"                follow a backing image on an NBD server (an\n"
	"                nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                a read that needs that server fails after SEC\n"
	"                seconds without it (default 30)\n"
	"  -h, --help    this help\n"
	"\n"
	"FILE must not have internal snapshots (they read from the backing file too, and would\n"
	"change). A raw BASE smaller than FILE grows to FILE's size; a ucow BASE must be as\n"
	"large already.\n";

#define COMMIT_BUF (2u << 20)	/* bytes per request */
#define COMMIT_GRAIN 4096u	/* all-zero pieces this big are written as zeroes */

struct commit {
	const char *file, *base_arg;
	int fmt;
	bool drop, quiet;
	unsigned confine;		/* COW_OPEN_CONFINE unless --allow-backing-outside */
	struct net_opts net;		/* --allow-network-backing, --nbd-timeout */
	/* FILE's chain down to BASE: v[0] = FILE, v[nv - 1] = BASE */
	char *path[COW_MAX_CHAIN + 1];
	int vfmt[COW_MAX_CHAIN + 1];
	uint64_t vsize[COW_MAX_CHAIN + 1];
	struct cow_image *v[COW_MAX_CHAIN + 1];
	struct cow_ctx *ctx[COW_MAX_CHAIN + 1];
	size_t nv;
	struct cow_backend *be;
	uint8_t *buf;
	struct progress pr;
};

static bool same_file(const char *a, const struct stat *sb)
{
	struct stat sa;

	return a && stat(a, &sa) == 0 && sa.st_dev == sb->st_dev && sa.st_ino == sb->st_ino;
}

/* Does the -b argument name this file: as a backing name from FILE's folder, or a path? */
static bool is_base(struct commit *c, const char *path)
{
	char near[COW_PATH_MAX];
	struct stat st;

	if (stat(path, &st) < 0)
		return false;
	if (!resolve_near(c->file, c->base_arg, near, sizeof(near)) && same_file(near, &st))
		return true;
	return same_file(c->base_arg, &st);
}

/*
 * Open FILE with its whole chain, read-only, under the backing-file policy: check it can be
 * committed and note the files down to BASE. Closes it again (BASE is opened read-write
 * later, and this open holds it read-only).
 */
static int plan(struct commit *c)
{
	char err[COW_ERRLEN] = "";
	struct cow_image *top, *i;
	struct cow_info in;
	size_t n = 0;
	int rc;

	rc = cow_open(c->file, &(struct cow_open_opts){ .fmt = c->fmt,
			.flags = COW_OPEN_RDONLY | c->confine | c->net.flags,
			.net_timeout_ms = c->net.timeout_ms }, &top, err, COW_ERRLEN);
	if (rc < 0) {
		report_backing(c->file, rc, err);
		return rc;
	}
	cow_get_info(top, &in);
	if (in.fmt != COW_FMT_UCOW || !cow_backing_image(top)) {
		ucow_err("%s: has no backing file: nothing to commit into", c->file);
		rc = -EINVAL;
		goto out;
	}
	if (in.nb_snapshots) {
		ucow_err("%s: has %u internal snapshot%s: a commit would change what %s from "
			 "the backing file (delete %s first)", c->file, in.nb_snapshots,
			 in.nb_snapshots == 1 ? "" : "s", in.nb_snapshots == 1 ? "it reads" :
			 "they read", in.nb_snapshots == 1 ? "it" : "them");
		rc = -ENOTSUP;
		goto out;
	}
	for (i = top; i; i = cow_backing_image(i)) {
		cow_get_info(i, &in);
		c->path[n] = strdup(in.path);
		c->vfmt[n] = in.fmt;
		c->vsize[n] = in.virtual_size;
		if (!c->path[n]) {
			ucow_err("%s: out of memory", c->file);
			rc = -ENOMEM;
			goto out;
		}
		c->nv = ++n;
		if (n == 2 && !c->base_arg)
			break;		/* BASE: FILE's backing file */
		if (n >= 2 && c->base_arg && is_base(c, in.path))
			break;
	}
	if (!i) {
		ucow_err("%s: '%s' is not a backing file of this image", c->file, c->base_arg);
		rc = -ENOENT;
	}
out:
	cow_close(top);
	return rc;
}

/* BASE read-write with its own chain (first: when it is held, nothing above is touched),
 * then FILE and the images between without their chains. */
static int open_all(struct commit *c)
{
	char err[COW_ERRLEN] = "";
	size_t b = c->nv - 1;
	int rc;

	if (cow_name_is_uri(c->path[b])) {
		ucow_err("%s: cannot commit into '%s': an image on an NBD server is read-only",
			 c->file, c->path[b]);
		return -EROFS;
	}
	if (c->vsize[b] < c->vsize[0]) {
		/* qemu-img grows the base; a raw file simply is longer */
		struct stat st;
		const char *why = NULL;

		if (c->vfmt[b] != COW_FMT_RAW || stat(c->path[b], &st) < 0 || !S_ISREG(st.st_mode)) {
			ucow_err("%s: is smaller (%" PRIu64 " bytes) than %s (%" PRIu64 " bytes); "
				 "grow it first", c->path[b], c->vsize[b], c->file, c->vsize[0]);
			return -EFBIG;
		}
		rc = check_replaceable(c->path[b], &why);
		if (!rc && truncate(c->path[b], (off_t)c->vsize[0]) < 0)
			rc = -errno;
		if (rc < 0) {
			ucow_err("%s: cannot grow it to %" PRIu64 " bytes: %s", c->path[b],
				 c->vsize[0], why ? why : strerror(-rc));
			return rc;
		}
	}
	/* the policy was applied to this very chain by plan() */
	rc = cow_open(c->path[b], &(struct cow_open_opts){ .fmt = c->vfmt[b],
		      .flags = c->net.flags, .net_timeout_ms = c->net.timeout_ms }, &c->v[b], err,
		      COW_ERRLEN);
	if (rc < 0) {
		report(c->path[b], NULL, rc, err);
		return rc;
	}
	for (size_t k = 0; k < b; k++) {
		unsigned fl = COW_OPEN_NOCHAIN | (k || c->drop ? COW_OPEN_RDONLY : 0);

		rc = cow_open(c->path[k], &(struct cow_open_opts){ .fmt = c->vfmt[k],
				.flags = fl }, &c->v[k], err, COW_ERRLEN);
		if (rc < 0) {
			report(k ? c->path[k] : c->file, c->path[k], rc, err);
			return rc;
		}
	}
	rc = cow_backend_new("uring", 32, &c->be);
	if (rc < 0) {
		ucow_err("%s: cannot set up the I/O backend: %s", c->file, strerror(-rc));
		return rc;
	}
	for (size_t k = 0; k < c->nv; k++) {
		rc = cow_ctx_new(c->v[k], c->be, &c->ctx[k]);
		if (rc < 0) {
			ucow_err("%s: %s", c->path[k], err_text_for(rc, cow_errmsg(c->v[k]),
								  c->path[k]));
			return rc;
		}
	}
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int base_io(struct commit *c, int op, void *buf, uint64_t len, uint64_t off)
{
	size_t b = c->nv - 1;
	int rc = cow_rw(c->ctx[b], op, buf, len, off, 0);

	if (rc < 0)
		ucow_err("%s: %s failed at offset %" PRIu64 ": %s", c->path[b],
			 op == COW_FLUSH ? "flush" : "write", off,
			 err_text_for(rc, cow_errmsg(c->v[b]), c->path[b]));
	return rc;
}

/* buf holds [off, off+n): into BASE, its all-zero grains as zeroes (holes where they can be). */
static int put_data(struct commit *c, uint64_t off, uint64_t n)
{
	uint64_t i = 0;

	while (i < n) {
		uint64_t start = i, g = 0;
		bool zero = all_zero(c->buf + i, n - i < COMMIT_GRAIN ? n - i : COMMIT_GRAIN);
		int rc;

		for (; i < n; i += g) {
			g = n - i < COMMIT_GRAIN ? n - i : COMMIT_GRAIN;
			if (all_zero(c->buf + i, g) != zero)
				break;
		}
		rc = base_io(c, zero ? COW_WRITE_ZEROES : COW_WRITE, zero ? NULL : c->buf + start,
			     i - start, off + start);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* C1, C2: everything above BASE into BASE, then BASE durable. */
static int copy_down(struct commit *c)
{
	uint64_t off = 0, size = c->vsize[0], run;
	size_t i;
	int st, rc;

	progress_show(&c->pr, 0, size);
	while (off < size) {
		uint64_t len = size - off < COMMIT_BUF ? size - off : COMMIT_BUF;

		st = chain_map(c->v, c->nv - 1, off, len, &run, &i);
		if (st < 0) {
			ucow_err("%s: mapping offset %" PRIu64 ": %s", c->path[i], off,
				 err_text_for(st, cow_errmsg(c->v[i]), c->path[i]));
			return st;
		}
		if (st == COW_MAP_DATA) {
			rc = cow_rw(c->ctx[i], COW_READ, c->buf, run, off, 0);
			if (rc < 0) {
				ucow_err("%s: read failed at offset %" PRIu64 ": %s", c->path[i], off,
					 err_text_for(rc, cow_errmsg(c->v[i]), c->path[i]));
				return rc;
			}
			rc = put_data(c, off, run);
		} else if (st == COW_MAP_ZERO) {
			rc = base_io(c, COW_WRITE_ZEROES, NULL, run, off);
		} else {
			rc = 0;		/* BASE's own content */
		}
		if (rc < 0)
			return rc;
		off += run;
		progress_show(&c->pr, off, size);
	}
	return base_io(c, COW_FLUSH, NULL, 0, 0);			/* C2 */
}

static int close_all(struct commit *c, int rc)
{
	for (size_t k = 0; k < c->nv; k++)
		cow_ctx_free(c->ctx[k]);
	cow_backend_free(c->be);
	for (size_t k = c->nv; k-- > 0;) {
		int r2 = cow_close(c->v[k]);

		if (r2 < 0 && rc == 0) {
			ucow_err("%s: closing: %s", c->path[k], strerror(-r2));
			rc = r2;
		}
		free(c->path[k]);
	}
	return rc;
}

static int commit(struct commit *c)
{
	int rc = plan(c);

	if (rc == 0)
		rc = open_all(c);
	if (rc == 0)
		rc = copy_down(c);					/* C1, C2 */
	if (rc == 0 && !c->drop) {
		rc = cow_make_empty(c->v[0]);				/* C3 */
		if (rc < 0)
			ucow_err("%s: emptying it: %s", c->file,
				 err_text_for(rc, cow_errmsg(c->v[0]), c->path[0]));
	}
	return close_all(c, rc);
}

int cmd_commit(int argc, char **argv)
{
	enum { OPT_OUTSIDE = 256 };
	static const struct option lopts[] = {
		{ "allow-backing-outside", no_argument, NULL, OPT_OUTSIDE },
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct commit c = { .pr.last = -1, .confine = COW_OPEN_CONFINE };
	int ch, rc;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":b:df:pqh", lopts, NULL)) != -1) {
		switch (ch) {
		case 'b':
			if (!*optarg)
				return usage_err("commit", "the base image name is empty");
			c.base_arg = optarg;
			c.drop = true;		/* qemu-img: -b implies -d */
			break;
		case 'd': c.drop = true; break;
		case 'f':
			if (opt_format("commit", optarg, &c.fmt))
				return 1;
			break;
		case 'p': c.pr.on = true; break;
		case 'q': c.quiet = true; break;
		case OPT_OUTSIDE: c.confine = 0; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("commit", ch, optarg, &c.net))
				return 1;
			break;
		case 'h': fputs(commit_help, stdout); return 0;
		default: return opt_err("commit", ch, argv);
		}
	}
	if (argc - optind < 1)
		return usage_err("commit", "expected FILE");
	if (argc - optind > 1)
		return usage_err("commit", "too many arguments ('%s')", argv[optind + 1]);
	c.file = argv[optind];
	struct ublk_state st;
	int id = ublk_server_of(c.file, &st);
	if (id >= 0) {
		/* served: the server's commit job (ublk/job.c), the device serving on */
		if (c.base_arg || c.drop || !st.sock[0] || st.o.read_only || st.o.snapshot[0]) {
			ucow_err("%s: in use by /dev/ublkb%d (ucow dev del %d first; online, only "
				 "'commit [-p] FILE' into its backing file runs)", c.file, id, id);
			return 1;
		}
		rc = online_job(c.file, id, st.sock, UBLK_OP_COMMIT, &c.pr);
		if (!rc && !c.quiet)
			printf("Image committed.\n");
		return rc;
	}
	if (posix_memalign((void **)&c.buf, 4096, COMMIT_BUF)) {
		ucow_err("%s: out of memory", c.file);
		return 1;
	}
	rc = commit(&c);
	free(c.buf);
	if (rc < 0)
		return 1;
	if (!c.quiet)
		printf("Image committed.\n");
	return 0;
}
