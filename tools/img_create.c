/* SPDX-License-Identifier: MIT */
/* ucow create: a new ucow image (optionally over a backing image) or a sparse raw file. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cowcore.h"
#include "cmds.h"
#include "util.h"

static const char create_help[] =
	"usage: ucow create [-q] [-f ucow|raw] [-b BACKING -F FMT] [-o OPTIONS] FILE [SIZE]\n"
	"\n"
	"Create FILE, replacing an existing file of that name (like qemu-img create). The\n"
	"file is built under a temporary name and renamed into place, so an error leaves\n"
	"nothing behind and an existing FILE untouched.\n"
	"\n"
	"  SIZE             virtual size: bytes or k, M, G, T (binary units); defaults to\n"
	"                   the backing image's size when -b is given\n"
	"  -f FMT           ucow (default) or raw (a sparse file of SIZE bytes)\n"
	"  -b BACKING       backing image; a relative name is taken from FILE's folder; an NBD\n"
	"                   URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH,\n"
	"                   nbds://...) is recorded as it is (-F raw; needs\n"
	"                   --allow-network-backing)\n"
	"  -F FMT           the backing image's format, raw, ucow or qcow2 (required with -b;\n"
	"                   formats are never guessed)\n"
	"  -o OPTIONS       comma-separated: chunk_size=N, block_size=N, journal_size=N,\n"
	"                   backing_file=NAME, backing_fmt=FMT, preallocation=MODE (raw:\n"
	"                   preallocation= only); -o help lists them\n"
	"  -q               quiet: no 'Formatting ...' line\n"
	"  --allow-network-backing  BACKING (or the chain below it) may be an NBD URI:\n"
	"                   connect to it (refused otherwise)\n"
	"  --nbd-timeout SEC  give up on an NBD server after SEC seconds (default 30)\n"
	"  -h, --help       this help\n";

struct create_args {
	int fmt;
	const char *file, *backing, *opts;
	char *opts_copy;	/* -o values point into it (backing_file=) */
	int backing_fmt;
	uint64_t size;
	bool have_size;
	struct cow_create_opts co;
	struct net_opts net;	/* --allow-network-backing, --nbd-timeout */
};

static int opt_u32(const char *file, const char *key, const char *val, uint32_t *out)
{
	const char *why;
	uint64_t v;

	if (!val) {
		ucow_err("%s: option '%s' needs a value (%s=N)", file, key, key);
		return -EINVAL;
	}
	if (parse_bytes(val, &v, &why) < 0 || v > UINT32_MAX) {
		ucow_err("%s: invalid %s '%s': %s", file, key, val, v > UINT32_MAX ? "too large" : why);
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

/* Apply -o OPTIONS. 1 = "help" was asked for, 0 = fine, <0 = error already reported. */
static int apply_opts(struct create_args *a)
{
	char *copy, *p, *key, *val;
	int rc = 0;

	if (!a->opts)
		return 0;
	if (a->fmt == COW_FMT_RAW && strcmp(a->opts, "help") &&
	    strncmp(a->opts, "preallocation=", 14)) {
		ucow_err("%s: format raw takes no -o options but preallocation=", a->file);
		return -EINVAL;
	}
	copy = strdup(a->opts);
	if (!copy)
		return -ENOMEM;
	a->opts_copy = copy;
	p = copy;
	while (rc == 0 && opt_next(&p, &key, &val)) {
		if (!strcmp(key, "help") || !strcmp(key, "?")) {
			printf("Supported options (ucow):\n"
			       "  chunk_size=N     allocation unit, power of two, 64k..64M (default 1M)\n"
			       "  block_size=N     copy-on-write unit, power of two, 512..chunk_size,\n"
			       "                   at most 1024 blocks per chunk (default 4k)\n"
			       "  journal_size=N   metadata journal size (default chosen by the engine)\n"
			       "  backing_file=NAME  same as -b\n"
			       "  backing_fmt=FMT    same as -F\n"
			       "  preallocation=MODE off (default), metadata (every chunk mapped),\n"
			       "                   falloc (and its space reserved), full (and\n"
			       "                   written with zeros); raw: off, falloc, full\n"
			       "  copy_on_read=on|off  read-write opens copy what they read from the\n"
			       "                   backing chain into the image (needs -b; off)\n");
			rc = 1;
		} else if (!strcmp(key, "chunk_size") || !strcmp(key, "cluster_size")) {
			rc = opt_u32(a->file, key, val, &a->co.chunk_size);
		} else if (!strcmp(key, "block_size")) {
			rc = opt_u32(a->file, key, val, &a->co.block_size);
		} else if (!strcmp(key, "journal_size")) {
			rc = opt_u32(a->file, key, val, &a->co.journal_size);
		} else if (!strcmp(key, "preallocation")) {
			int m = val ? cow_prealloc_parse(val) : -EINVAL;
			if (m < 0 || (a->fmt == COW_FMT_RAW && m == COW_PREALLOC_METADATA)) {
				ucow_err("%s: invalid preallocation '%s' (%s)", a->file, val ? val : "",
					 a->fmt == COW_FMT_RAW ? "off, falloc or full for raw" :
					 "off, metadata, falloc or full");
				rc = -EINVAL;
			} else {
				a->co.prealloc = (uint32_t)m;
			}
		} else if (a->fmt == COW_FMT_RAW) {
			ucow_err("%s: format raw takes no -o options but preallocation=", a->file);
			rc = -EINVAL;
		} else if (!strcmp(key, "copy_on_read")) {
			if (val && (!strcmp(val, "on") || !strcmp(val, "off"))) {
				a->co.features = !strcmp(val, "on") ? COW_CREATE_COPY_ON_READ : 0;
			} else {
				ucow_err("%s: invalid copy_on_read '%s' (on or off)", a->file,
					 val ? val : "");
				rc = -EINVAL;
			}
		} else if (!strcmp(key, "backing_file") && val) {
			a->backing = val;
		} else if (!strcmp(key, "backing_fmt") && val) {
			a->backing_fmt = cow_fmt_parse(val);
			if (a->backing_fmt <= 0) {
				ucow_err("%s: unknown backing format '%s' (use raw, ucow or qcow2)",
					 a->file, val);
				rc = -EINVAL;
			}
		} else {
			ucow_err("%s: unknown option '%s' for format ucow (see -o help)", a->file, key);
			rc = -EINVAL;
		}
	}
	return rc;
}

/* The backing image must open; its size is the default size. */
static int probe_backing(struct create_args *a)
{
	char path[4096], err[COW_ERRLEN] = "";
	struct cow_image *img;
	struct cow_info info;
	int rc;

	rc = resolve_near(a->file, a->backing, path, sizeof(path));
	if (rc == 0)
		rc = cow_open(path, &(struct cow_open_opts){ .fmt = a->backing_fmt,
				.flags = COW_OPEN_RDONLY | a->net.flags,
				.net_timeout_ms = a->net.timeout_ms },
				&img, err, COW_ERRLEN);
	if (rc < 0) {
		ucow_err("%s: cannot open backing file '%s': %s%s", a->file, a->backing,
			 err_text_for(rc, err, path), rc == -EMEDIUMTYPE ?
			 "; use -F raw for a raw backing file" : rc == -EREMOTE ?
			 " (--allow-network-backing allows it)" : "");
		return rc;
	}
	cow_get_info(img, &info);
	if (!a->have_size)
		a->size = info.virtual_size;
	cow_close(img);
	return 0;
}

static int create_raw(const char *tmp, uint64_t size, uint32_t prealloc)
{
	int fd, rc = 0;

	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0)
		return -errno;
	if (size > INT64_MAX)
		rc = -EFBIG;
	else if (ftruncate(fd, (off_t)size) < 0)
		rc = -errno;
	if (!rc && prealloc == COW_PREALLOC_FALLOC)
		rc = -posix_fallocate(fd, 0, (off_t)size);
	if (!rc && prealloc == COW_PREALLOC_FULL) {
		static const uint8_t zero[65536];
		for (uint64_t off = 0; off < size && !rc; off += sizeof(zero)) {
			size_t n = size - off < sizeof(zero) ? size - off : sizeof(zero);
			ssize_t w = pwrite(fd, zero, n, (off_t)off);
			if (w < 0 && errno == EINTR) {
				off -= sizeof(zero);
				continue;
			}
			rc = w < 0 ? -errno : (size_t)w != n ? -EIO : 0;
		}
	}
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
	return rc;
}

static int do_create(struct create_args *a)
{
	char tmp[4096], err[COW_ERRLEN] = "";
	const char *why;
	int rc;

	rc = check_replaceable(a->file, &why);
	if (rc < 0) {
		ucow_err("%s: cannot replace: %s", a->file, why ? why : strerror(-rc));
		return rc;
	}
	rc = tmp_sibling(a->file, tmp, sizeof(tmp));
	if (rc < 0) {
		ucow_err("%s: cannot create: %s", a->file, strerror(-rc));
		return rc;
	}
	tmp_guard(tmp);
	if (a->fmt == COW_FMT_RAW) {
		rc = create_raw(tmp, a->size, a->co.prealloc);
	} else {
		a->co.size = a->size;
		a->co.backing = a->backing;
		a->co.backing_fmt = a->backing ? a->backing_fmt : 0;
		a->co.open_flags = a->net.flags;
		a->co.net_timeout_ms = a->net.timeout_ms;
		rc = cow_create(tmp, &a->co, err, COW_ERRLEN);
		if (rc < 0)
			unlink(tmp);	/* the engine should not leave it; make sure */
	}
	if (rc < 0) {
		tmp_guard(NULL);
		report(a->file, tmp, rc, err);
		return rc;
	}
	rc = replace_file(tmp, a->file);
	tmp_guard(NULL);
	if (rc < 0)
		ucow_err("%s: cannot create: %s", a->file, strerror(-rc));
	return rc;
}

/* Everything after option parsing; a->opts_copy is freed by the caller. */
static int create_checked(struct create_args *a, const char *size_arg, bool quiet)
{
	const char *why;

	if (a->backing && a->fmt == COW_FMT_RAW) {
		ucow_err("%s: a raw image cannot have a backing file", a->file);
		return 1;
	}
	if (a->backing && !a->backing_fmt) {
		ucow_err("%s: -F FMT is required with -b (a backing format is never guessed)",
			 a->file);
		return 1;
	}
	if (!a->backing && a->backing_fmt) {
		ucow_err("%s: -F given without -b", a->file);
		return 1;
	}
	if (a->backing && !a->backing[0]) {
		ucow_err("%s: empty backing file name", a->file);
		return 1;
	}
	if (size_arg) {
		const char *s = size_arg;

		if (parse_bytes(s, &a->size, &why) < 0) {
			ucow_err("%s: invalid size '%s': %s", a->file, s, why);
			return 1;
		}
		a->have_size = true;
	}
	if (!a->have_size && !a->backing) {
		ucow_err("%s: no SIZE given (needed without a backing file)", a->file);
		return 1;
	}
	if (a->have_size && a->size == 0 && !a->backing) {
		ucow_err("%s: size must be greater than 0", a->file);
		return 1;
	}
	if ((a->co.features & COW_CREATE_COPY_ON_READ) && !a->backing) {
		ucow_err("%s: copy_on_read=on needs a backing file (-b)", a->file);
		return 1;
	}
	if (a->have_size && a->size == 0)
		a->have_size = false;	/* 0 with a backing file: take the backing size */
	if (a->backing && probe_backing(a) < 0)
		return 1;
	if (!quiet) {
		printf("Formatting '%s', fmt=%s size=%llu", a->file, cow_fmt_name(a->fmt),
		       (unsigned long long)a->size);
		if (a->backing)
			printf(" backing_file=%s backing_fmt=%s", a->backing,
			       cow_fmt_name(a->backing_fmt));
		if (a->fmt == COW_FMT_UCOW)
			printf(" chunk_size=%u block_size=%u",
			       a->co.chunk_size ? a->co.chunk_size : COW_DEFAULT_CHUNK,
			       a->co.block_size ? a->co.block_size : COW_DEFAULT_BLOCK);
		if (a->co.prealloc)
			printf(" preallocation=%s", (const char *[]){ "off", "metadata", "falloc",
								     "full" }[a->co.prealloc]);
		if (a->co.features & COW_CREATE_COPY_ON_READ)
			printf(" copy_on_read=on");
		printf("\n");
		fflush(stdout);
	}
	return do_create(a) < 0 ? 1 : 0;
}

int cmd_create(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct create_args a = { .fmt = COW_FMT_UCOW };
	const char *fmt = NULL, *bfmt = NULL;
	char *opts = NULL;
	bool quiet = false;
	int c, rc;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:b:F:o:qh", lopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'b': a.backing = optarg; break;
		case 'F': bfmt = optarg; break;
		case 'o':
			/* several -o add up, like qemu-img */
			if (opts) {
				char *n;
				if (asprintf(&n, "%s,%s", opts, optarg) < 0)
					return 1;
				free(opts);
				opts = n;
			} else {
				opts = strdup(optarg);
			}
			break;
		case 'q': quiet = true; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("create", c, optarg, &a.net))
				return 1;
			break;
		case 'h': fputs(create_help, stdout); return 0;
		default: free(opts); return opt_err("create", c, argv);
		}
	}
	a.opts = opts;
	if (optind >= argc) {
		free(opts);
		return usage_err("create", "no FILE given");
	}
	if (argc - optind > 2) {
		free(opts);
		return usage_err("create", "too many arguments ('%s')", argv[optind + 2]);
	}
	a.file = argv[optind];
	if (fmt && opt_format_out("create", fmt, &a.fmt)) {
		free(opts);
		return 1;
	}
	if (bfmt) {
		a.backing_fmt = cow_fmt_parse(bfmt);
		if (a.backing_fmt <= 0) {
			free(opts);
			return usage_err("create", "unknown backing format '%s' (use raw, ucow or qcow2)",
					 bfmt);
		}
	}
	rc = apply_opts(&a);
	free(opts);
	a.opts = NULL;
	if (rc) {
		free(a.opts_copy);
		return rc > 0 ? 0 : 1;
	}

	rc = create_checked(&a, optind + 1 < argc ? argv[optind + 1] : NULL, quiet);
	free(a.opts_copy);
	return rc;
}
