/* SPDX-License-Identifier: MIT */
/*
 * ucow measure: the file size an image needs, like qemu-img measure: "required" for some
 * content (an image of SIZE with nothing written, or FILE's content as convert would copy
 * it) and "fully-allocated" (every chunk written). For ucow the numbers come from the
 * engine's own layout (cow_create_layout) and FILE's map, chunk by chunk of the new image.
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
#include "json_out.h"
#include "util.h"

static const char measure_help[] =
	"usage: ucow measure [--output=human|json] [-O ucow|raw] [-o OPTIONS]\n"
	"                    [--size SIZE | [-f FMT] [-U] FILE]\n"
	"\n"
	"Print the file size a new image needs: \"required\" for an image of SIZE with\n"
	"nothing written (--size), or for FILE's content as 'ucow convert' copies it\n"
	"(FILE's whole backing chain, flattened); \"fully allocated\" once every chunk is\n"
	"written.\n"
	"\n"
	"  --size SIZE   measure an empty image of SIZE bytes\n"
	"  -f FMT        FILE's format: ucow or qcow2 (recognized by\n"
	"                their magic) or raw\n"
	"  -O FMT        the new image's format: ucow (default) or raw\n"
	"  -o OPTIONS    ucow only: chunk_size=N,block_size=N,journal_size=N (as convert)\n"
	"  -U, --force-share\n"
	"                open FILE without a lock, even while another process writes it\n"
	"                (then a warning says the estimate may be off)\n"
	"  --output=FMT  human (default) or json\n"
	"  --allow-network-backing\n"
	"                follow a backing image on an NBD server (an\n"
	"                nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                a read that needs that server fails after SEC\n"
	"                seconds without it (default 30)\n"
	"  -h, --help    this help\n";

/*
 * Chunks of chunk_size bytes that hold some of img's data (runs that do not read as
 * zeros: what convert reads and writes). 0 or -errno (reported).
 */
static int data_chunks(struct cow_image *img, const char *file, uint64_t size,
		       uint32_t chunk_size, uint64_t *count)
{
	uint64_t off = 0, next = 0;	/* next: the first chunk not counted yet */
	struct cow_image *failed = img;
	struct chain_ext e;
	struct cow_info in;
	int r;

	*count = 0;
	while (off < size) {
		r = chain_extent(img, off, size - off, &e, &failed);
		if (r < 0) {
			cow_get_info(failed, &in);
			ucow_err("%s: mapping offset %" PRIu64 ": %s", file, off,
				 err_text_for(r, cow_errmsg(failed), in.path));
			return r;
		}
		if (!e.length || e.length > size - off)
			e.length = size - off;
		if (!e.zero) {
			uint64_t first = off / chunk_size, last = (off + e.length - 1) / chunk_size;

			if (first < next)
				first = next;
			if (last >= first)
				*count += last - first + 1;
			next = last + 1 > next ? last + 1 : next;
		}
		off += e.length;
	}
	return 0;
}

static int print_result(uint64_t required, uint64_t full, bool json, const char *who)
{
	if (json) {
		bool ok = true;
		json_object *o = jobj(&ok);

		jadd_u64(o, "required", required, &ok);
		jadd_u64(o, "fully-allocated", full, &ok);
		return json_emit(o, ok, who);
	}
	printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", required, full);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		ucow_err("%s: cannot print the result: %s", who, strerror(errno ? errno : EIO));
		return 1;
	}
	return 0;
}

int cmd_measure(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_SIZE };
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct cow_create_opts co = { 0 };
	char err[COW_ERRLEN] = "";
	struct cow_image *img = NULL;
	struct cow_layout lay;
	struct cow_info in;
	const char *file = NULL, *why, *who = "measure";
	uint64_t size = 0, required, full, n;
	bool json = false, have_size = false, warned = false;
	int c, rc, fmt = COW_FMT_NONE, ofmt = COW_FMT_UCOW;
	unsigned share = 0;
	struct net_opts net = { 0 };
	char *opts = NULL;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:O:o:Uh", lopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (opt_format("measure", optarg, &fmt))
				return 1;
			break;
		case 'O':
			if (opt_format_out("measure", optarg, &ofmt))
				return 1;
			break;
		case 'o': opts = optarg; break;
		case 'U': share = COW_OPEN_SHARE; break;
		case OPT_OUTPUT:
			if (opt_output("measure", optarg, &json))
				return 1;
			break;
		case OPT_SIZE:
			if (parse_bytes(optarg, &size, &why) < 0)
				return usage_err("measure", "invalid size '%s': %s", optarg, why);
			have_size = true;
			break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("measure", c, optarg, &net))
				return 1;
			break;
		case 'h': fputs(measure_help, stdout); return 0;
		default: return opt_err("measure", c, argv);
		}
	}
	if (argc - optind > 1)
		return usage_err("measure", "too many arguments ('%s')", argv[optind + 1]);
	if (argc - optind == 1)
		file = who = argv[optind];
	if (have_size && file)
		return usage_err("measure", "give --size SIZE or FILE, not both");
	if (!have_size && !file)
		return usage_err("measure", "give --size SIZE or FILE");
	if (have_size && (fmt != COW_FMT_NONE || share))
		return usage_err("measure", "%s is for FILE, not --size", share ? "-U" : "-f");
	if (opts) {
		char *copy;

		if (ofmt != COW_FMT_UCOW)
			return usage_err("measure", "format raw takes no -o options");
		copy = strdup(opts);
		rc = copy ? parse_ucow_opts("measure", copy, &co) : -ENOMEM;
		free(copy);
		if (rc == -ENOMEM)
			ucow_err("measure: out of memory");
		if (rc < 0)
			return 1;
	}
	if (file) {
		rc = cow_open(file, &(struct cow_open_opts){ .fmt = fmt,
				.flags = COW_OPEN_RDONLY | share | net.flags,
				.net_timeout_ms = net.timeout_ms }, &img, err, COW_ERRLEN);
		if (rc < 0) {
			report_f(file, NULL, rc, err);
			return 1;
		}
		if (share)
			share_warn(img, file, &warned);
		cow_get_info(img, &in);
		size = in.virtual_size;
	}
	if (ofmt == COW_FMT_RAW) {
		/* a raw file is as long as the disk, whatever it holds */
		required = full = size;
	} else {
		co.size = size;
		rc = cow_create_layout(&co, &lay, err, COW_ERRLEN);
		if (rc < 0) {
			ucow_err("%s: %s", who, err_text(rc, err));
			goto fail;
		}
		required = lay.data_offset;
		full = lay.full_size;
		if (img) {
			if (data_chunks(img, file, size, lay.chunk_size, &n) < 0)
				goto fail;
			required += n * lay.chunk_size;
		}
	}
	if (img) {
		if (share)
			share_warn(img, file, &warned);
		cow_close(img);
	}
	return print_result(required, full, json, who);
fail:
	cow_close(img);
	return 1;
}
