/* SPDX-License-Identifier: MIT */
/* ucow info: what an image is (format, sizes, backing file, state), optionally the chain. */
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

static const char info_help[] =
	"usage: ucow info [-f FMT] [--output=human|json] [--backing-chain] FILE\n"
	"\n"
	"Show FILE's format, virtual size, disk usage, chunk and block size, backing file\n"
	"and its format, allocation, snapshots and the dirty and corrupt flags.\n"
	"\n"
	"  -f FMT             FILE's format: ucow (default; recognized by its magic) or raw\n"
	"  --output=FMT       human (default) or json\n"
	"  --backing-chain    also every image down the backing chain (json: an array)\n"
	"  -h, --help         this help\n"
	"\n"
	"An image with snapshots also gets their list (as `ucow snapshot -l` shows it).\n"
	"While FILE is served read-write (ucow dev add), the serving process answers.\n";

/* The image's snapshots (none for raw images). 0 or -errno. */
static int get_snapshots(struct cow_image *img, const struct cow_info *in,
			 struct cow_snap_info **v, uint32_t *n)
{
	*v = NULL;
	*n = 0;
	if (in->fmt != COW_FMT_UCOW || !in->nb_snapshots)
		return 0;
	return cow_snapshot_list(img, v, n);
}

static void print_human_in(const struct cow_info *ip, const struct cow_snap_info *sv,
			   uint32_t ns, const char *name)
{
	const struct cow_info in = *ip;
	char hs[32], full[4096];

	printf("image: %s\n", name);
	printf("file format: %s\n", cow_fmt_name(in.fmt));
	human_size(in.virtual_size, hs, sizeof(hs));
	printf("virtual size: %s (%" PRIu64 " bytes)\n", hs, in.virtual_size);
	human_size(in.disk_usage, hs, sizeof(hs));
	printf("disk size: %s\n", hs);
	if (in.fmt != COW_FMT_UCOW)
		return;
	printf("chunk_size: %" PRIu32 "\n", in.chunk_size);
	printf("block_size: %" PRIu32 "\n", in.block_size);
	if (in.backing) {
		printf("backing file: %s", in.backing);
		if (resolve_near(name, in.backing, full, sizeof(full)) == 0 &&
		    strcmp(full, in.backing))
			printf(" (actual path: %s)", full);
		printf("\n");
		printf("backing file format: %s\n", cow_fmt_name(in.backing_fmt));
	}
	printf("allocated chunks: %" PRIu64 "/%" PRIu64 "\n", in.allocated_chunks, in.nr_chunks);
	printf("zero chunks: %" PRIu64 "\n", in.zero_chunks);
	printf("journal: %" PRIu64 " bytes, %" PRIu64 " used\n", in.journal_size, in.journal_used);
	printf("snapshots: %" PRIu32 "\n", in.nb_snapshots);
	printf("dirty: %s\n", in.dirty ? "true" : "false");
	printf("corrupt: %s\n", in.corrupt ? "true" : "false");
	snapshot_print_list(sv, ns, false, "");
}

static int print_human(struct cow_image *img, const char *name)
{
	struct cow_snap_info *sv;
	struct cow_info in;
	uint32_t ns;
	int rc;

	cow_get_info(img, &in);
	rc = get_snapshots(img, &in, &sv, &ns);	/* before any output: an error is one line */
	if (rc < 0)
		return rc;
	print_human_in(&in, sv, ns, name);
	free(sv);
	return 0;
}

static void print_json_in(const struct cow_info *ip, const struct cow_snap_info *sv,
			  uint32_t ns, const char *name, const char *indent)
{
	const struct cow_info in = *ip;
	char full[4096], ind2[16];

	printf("%s{\n%s    \"filename\": ", indent, indent);
	json_str(stdout, name);
	printf(",\n%s    \"format\": ", indent);
	json_str(stdout, cow_fmt_name(in.fmt));
	printf(",\n%s    \"virtual-size\": %" PRIu64, indent, in.virtual_size);
	printf(",\n%s    \"actual-size\": %" PRIu64, indent, in.disk_usage);
	printf(",\n%s    \"file-size\": %" PRIu64, indent, in.file_size);
	if (in.fmt == COW_FMT_UCOW) {
		printf(",\n%s    \"chunk-size\": %" PRIu32, indent, in.chunk_size);
		printf(",\n%s    \"block-size\": %" PRIu32, indent, in.block_size);
		if (in.backing) {
			printf(",\n%s    \"backing-filename\": ", indent);
			json_str(stdout, in.backing);
			if (resolve_near(name, in.backing, full, sizeof(full)) == 0) {
				printf(",\n%s    \"full-backing-filename\": ", indent);
				json_str(stdout, full);
			}
			printf(",\n%s    \"backing-filename-format\": ", indent);
			json_str(stdout, cow_fmt_name(in.backing_fmt));
		}
		printf(",\n%s    \"nr-chunks\": %" PRIu64, indent, in.nr_chunks);
		printf(",\n%s    \"allocated-chunks\": %" PRIu64, indent, in.allocated_chunks);
		printf(",\n%s    \"zero-chunks\": %" PRIu64, indent, in.zero_chunks);
		printf(",\n%s    \"journal-size\": %" PRIu64, indent, in.journal_size);
		printf(",\n%s    \"journal-used\": %" PRIu64, indent, in.journal_used);
		printf(",\n%s    \"snapshots\": ", indent);
		snprintf(ind2, sizeof(ind2), "%s    ", indent);
		snapshot_print_list(sv, ns, true, ind2);
		printf(",\n%s    \"dirty-flag\": %s", indent, in.dirty ? "true" : "false");
		printf(",\n%s    \"corrupt\": %s", indent, in.corrupt ? "true" : "false");
	}
	printf("\n%s}", indent);
}

static int print_json(struct cow_image *img, const char *name, const char *indent)
{
	struct cow_snap_info *sv = NULL;
	struct cow_info in;
	uint32_t ns = 0;
	int rc;

	cow_get_info(img, &in);
	rc = get_snapshots(img, &in, &sv, &ns);
	if (rc < 0)
		return rc;
	print_json_in(&in, sv, ns, name, indent);
	free(sv);
	return 0;
}

/*
 * FILE served read-write by a ucow dev server (which holds it locked): the server answers
 * for FILE itself; the backing chain is opened here (servers open it read-only, shared).
 * Returns the exit status, or -1 when FILE is not served that way.
 */
static int info_online(const char *file, int fmt, bool json, bool chain)
{
	struct ublk_state st;
	struct cow_snap_info *sv = NULL;
	struct cow_image *bimg = NULL, *i;
	struct cow_info in;
	char backing[4096], full[4096], err[COW_ERRLEN] = "";
	struct json_object *resp = NULL;
	uint32_t ns = 0;
	int id = ublk_server_of(file, &st), r;

	if (id < 0 || st.o.read_only || st.o.snapshot[0] || !st.sock[0] ||
	    (fmt == COW_FMT_RAW && strcmp(st.o.target, "raw")) ||
	    (fmt == COW_FMT_UCOW && strcmp(st.o.target, "cow")))
		return -1;
	r = ublk_sock_call(st.sock, UBLK_OP_IMAGE_INFO, NULL, 300, &resp);
	if (r == -ENOENT || r == -ECONNREFUSED)
		return -1;
	if (r == -EPROTO && resp) {
		ucow_err("%s: %s", file, ublk_sock_reply_error(resp));
		ublk_sock_reply_free(resp);
		return 1;
	}
	if (r < 0 || ublk_parse_info(resp, &in, backing, sizeof(backing)) < 0 ||
	    ublk_parse_snaps(resp, &sv, &ns) < 0) {
		ucow_err("%s: no answer from the server of /dev/ublkb%d: %s", file, id,
			 r < 0 ? strerror(-r) : "bad answer");
		ublk_sock_reply_free(resp);
		return 1;
	}
	ublk_sock_reply_free(resp);
	if (chain && in.backing) {
		if (resolve_near(file, in.backing, full, sizeof(full)) < 0)
			snprintf(full, sizeof(full), "%s", in.backing);
		r = cow_open(full, in.backing_fmt, COW_OPEN_RDONLY, &bimg, err);
		if (r < 0) {
			report(file, NULL, r, err);
			free(sv);
			return 1;
		}
	}
	if (json && chain)
		printf("[\n");
	if (json) {
		print_json_in(&in, sv, ns, file, chain ? "    " : "");
		printf("%s\n", chain && bimg ? "," : "");
	} else {
		print_human_in(&in, sv, ns, file);
	}
	free(sv);
	for (i = bimg; i; i = cow_backing_image(i)) {
		struct cow_info bi;

		cow_get_info(i, &bi);
		if (json) {
			r = print_json(i, bi.path, "    ");
			if (r == 0)
				printf("%s\n", cow_backing_image(i) ? "," : "");
		} else {
			printf("\n");
			r = print_human(i, bi.path);
		}
		if (r < 0) {
			ucow_err("%s: cannot read the snapshot list: %s", bi.path,
				 err_text_for(r, cow_errmsg(i), bi.path));
			cow_close(bimg);
			return 1;
		}
	}
	if (json && chain)
		printf("]\n");
	if (bimg)
		cow_close(bimg);
	return 0;
}


int cmd_info(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_CHAIN };
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "backing-chain", no_argument, NULL, OPT_CHAIN },
		{ NULL, 0, NULL, 0 },
	};
	char err[COW_ERRLEN] = "";
	struct cow_image *img, *i;
	bool json = false, chain = false;
	int c, rc, fmt = COW_FMT_NONE;
	const char *file;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (opt_format("info", optarg, &fmt))
				return 1;
			break;
		case OPT_OUTPUT:
			if (opt_output("info", optarg, &json))
				return 1;
			break;
		case OPT_CHAIN: chain = true; break;
		case 'h': fputs(info_help, stdout); return 0;
		default: return opt_err("info", c, argv);
		}
	}
	if (optind >= argc)
		return usage_err("info", "no FILE given");
	if (argc - optind > 1)
		return usage_err("info", "too many arguments ('%s')", argv[optind + 1]);
	file = argv[optind];

	rc = info_online(file, fmt, json, chain);
	if (rc >= 0)
		return rc;
	rc = cow_open(file, fmt, COW_OPEN_RDONLY | (chain ? 0 : COW_OPEN_NOCHAIN), &img, err);
	if (rc < 0) {
		report(file, NULL, rc, err);
		return 1;
	}
	if (json && chain)
		printf("[\n");
	for (i = img; i; i = chain ? cow_backing_image(i) : NULL) {
		struct cow_info in;
		const char *name;

		cow_get_info(i, &in);
		name = i == img ? file : in.path;
		if (json) {
			rc = print_json(i, name, chain ? "    " : "");
			if (rc == 0)
				printf("%s\n", chain && cow_backing_image(i) ? "," : "");
		} else {
			if (i != img)
				printf("\n");
			rc = print_human(i, name);
		}
		if (rc < 0) {
			ucow_err("%s: cannot read the snapshot list: %s", name,
				 err_text_for(rc, cow_errmsg(i), in.path));
			cow_close(img);
			return 1;
		}
	}
	if (json && chain)
		printf("]\n");
	cow_close(img);
	return 0;
}
