/* SPDX-License-Identifier: MIT */
/*
 * ucow map: where each run of an image's content comes from, down its backing chain, like
 * qemu-img map: which image decides it (depth), whether it reads as zeros or as data, and
 * where that data lies in which file.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cowcore.h"
#include "chain.h"
#include "cmds.h"
#include "json_out.h"
#include "util.h"

static const char map_help[] =
	"usage: ucow map [-f FMT] [-U] [--output=human|json] [--start-offset=OFF]\n"
	"                [--max-length=LEN] FILE\n"
	"\n"
	"Show where each run of FILE's content comes from, down its backing chain: which\n"
	"image holds it (depth 0 is FILE), whether it reads as zeros or as data, and for\n"
	"data, the offset in the file that holds it. Runs with the same properties (and\n"
	"data that continues in its file) are joined.\n"
	"\n"
	"  -f FMT             FILE's format: ucow or qcow2 (recognized by\n"
	"                their magic) or raw\n"
	"  -U, --force-share  open FILE without a lock, even while another process writes\n"
	"                     it (then a warning says the map may be inconsistent)\n"
	"  --output=FMT       human (default: the data runs, with the file holding each)\n"
	"                     or json (every run: start, length, depth, present, zero,\n"
	"                     data, offset)\n"
	"  --start-offset=OFF start at byte OFF (default 0)\n"
	"  --max-length=LEN   map at most LEN bytes (default: to the end)\n"
	"  --allow-network-backing\n"
	"                     follow a backing image on an NBD server (an\n"
	"                     nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC  a read that needs that server fails after SEC\n"
	"                     seconds without it (default 30)\n"
	"  -h, --help         this help\n";

struct mapper {
	const char *file;
	struct cow_image *top;
	bool json, have;		/* have: cur holds a run not printed yet */
	uint64_t printed;		/* json: runs printed */
	struct chain_ext cur;
	struct net_opts net;		/* --allow-network-backing, --nbd-timeout */
};

/* qemu-img's rule: one run continues another when everything but the length agrees. */
static bool mergeable(const struct chain_ext *a, const struct chain_ext *b)
{
	if (a->zero != b->zero || a->data != b->data || a->depth != b->depth ||
	    a->present != b->present || a->has_offset != b->has_offset)
		return false;
	return !a->has_offset || a->offset + a->length == b->offset;
}

static const char *file_of(const struct mapper *m, const struct chain_ext *e)
{
	struct cow_info in;

	if (e->img == m->top)
		return m->file;
	cow_get_info(e->img, &in);
	return in.path;
}

/* Print one run. 0, or -errno of stdout. */
static int emit(struct mapper *m, const struct chain_ext *e)
{
	if (m->json) {
		bool ok = true;
		json_object *o = jobj(&ok);
		const char *s;

		jadd_u64(o, "start", e->start, &ok);
		jadd_u64(o, "length", e->length, &ok);
		jadd_u64(o, "depth", e->depth, &ok);
		jadd_bool(o, "present", e->present, &ok);
		jadd_bool(o, "zero", e->zero, &ok);
		jadd_bool(o, "data", e->data, &ok);
		if (e->has_offset)
			jadd_u64(o, "offset", e->offset, &ok);
		s = ok ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_SPACED) : NULL;
		if (s)
			printf("%s%s", m->printed ? ",\n" : "[", s);
		json_object_put(o);
		if (!s)
			return -ENOMEM;
		m->printed++;
	} else if (e->data && !e->zero) {
		printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start, e->length,
		       e->has_offset ? e->offset : 0, file_of(m, e));
	}
	return ferror(stdout) ? -EIO : 0;
}

/* Add the next run: joined to the one pending, or that one printed and this one pending. */
static int add(struct mapper *m, struct chain_ext *e)
{
	int r;

	if (!m->json && (!e->data || e->zero)) {
		/* the human output shows data only: every other run is alike to it */
		e->data = false;
		e->zero = true;
	}
	if (m->have && mergeable(&m->cur, e)) {
		m->cur.length += e->length;
		return 0;
	}
	if (m->have && (r = emit(m, &m->cur)) < 0)
		return r;
	m->cur = *e;
	m->have = true;
	return 0;
}

static int map_range(struct mapper *m, uint64_t off, uint64_t end)
{
	struct cow_image *failed = m->top;
	struct chain_ext e;
	int r;

	if (!m->json)	/* json: "[" comes with the first run */
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	while (off < end) {
		r = chain_extent(m->top, off, end - off, &e, &failed);
		if (r < 0) {
			struct cow_info in;

			cow_get_info(failed, &in);
			fflush(stdout);
			ucow_err("%s: mapping offset %" PRIu64 ": %s", m->file, off,
				 err_text_for(r, cow_errmsg(failed), in.path));
			return r;
		}
		if (!e.length || e.length > end - off)
			e.length = end - off;	/* never loop forever on an odd answer */
		off += e.length;
		if ((r = add(m, &e)) < 0)
			goto out_err;
	}
	if (m->have && (r = emit(m, &m->cur)) < 0)
		goto out_err;
	if (m->json)
		printf("%s\n", m->printed ? "]" : "[]");
	errno = 0;
	if (fflush(stdout) == EOF || ferror(stdout)) {
		r = errno ? -errno : -EIO;
		goto out_err;
	}
	return 0;
out_err:
	ucow_err("%s: cannot print the map: %s", m->file, strerror(-r));
	return r;
}

int cmd_map(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_START, OPT_MAXLEN };
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "start-offset", required_argument, NULL, OPT_START },
		{ "max-length", required_argument, NULL, OPT_MAXLEN },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct mapper m = { 0 };
	char err[COW_ERRLEN] = "";
	struct cow_info in;
	uint64_t start = 0, maxlen = UINT64_MAX, end;
	const char *why;
	unsigned share = 0;
	bool warned = false;
	int c, rc, fmt = COW_FMT_NONE;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:hU", lopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (opt_format("map", optarg, &fmt))
				return 1;
			break;
		case OPT_OUTPUT:
			if (opt_output("map", optarg, &m.json))
				return 1;
			break;
		case OPT_START:
			if (parse_bytes(optarg, &start, &why) < 0)
				return usage_err("map", "invalid start offset '%s': %s", optarg, why);
			break;
		case OPT_MAXLEN:
			if (parse_bytes(optarg, &maxlen, &why) < 0)
				return usage_err("map", "invalid max length '%s': %s", optarg, why);
			break;
		case 'U': share = COW_OPEN_SHARE; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("map", c, optarg, &m.net))
				return 1;
			break;
		case 'h': fputs(map_help, stdout); return 0;
		default: return opt_err("map", c, argv);
		}
	}
	if (optind >= argc)
		return usage_err("map", "no FILE given");
	if (argc - optind > 1)
		return usage_err("map", "too many arguments ('%s')", argv[optind + 1]);
	m.file = argv[optind];

	rc = cow_open(m.file, &(struct cow_open_opts){ .fmt = fmt,
			.flags = COW_OPEN_RDONLY | share | m.net.flags,
			.net_timeout_ms = m.net.timeout_ms }, &m.top, err, COW_ERRLEN);
	if (rc < 0) {
		report_f(m.file, NULL, rc, err);
		return 1;
	}
	if (share)
		share_warn(m.top, m.file, &warned);
	cow_get_info(m.top, &in);
	end = start;
	if (start < in.virtual_size)
		end = maxlen < in.virtual_size - start ? start + maxlen : in.virtual_size;
	rc = map_range(&m, start, end);
	if (share)
		share_warn(m.top, m.file, &warned);
	cow_close(m.top);
	return rc < 0 ? 1 : 0;
}
