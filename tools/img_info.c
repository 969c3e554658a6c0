/* SPDX-License-Identifier: MIT */
/* ucow info: what an image is (format, sizes, backing file, state), optionally the chain. */
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
#include "ublk.h"
#include "util.h"

static const char info_help[] =
	"usage: ucow info [-f FMT] [-U] [--output=human|json] [--backing-chain] FILE\n"
	"\n"
	"Show FILE's format, virtual size, disk usage, chunk and block size, backing file\n"
	"and its format, allocation, snapshots and the dirty and corrupt flags.\n"
	"\n"
	"  -f FMT             FILE's format: ucow or qcow2 (recognized by\n"
	"                     their magic) or raw\n"
	"  --output=FMT       human (default) or json\n"
	"  --backing-chain    also every image down the backing chain (json: an array)\n"
	"  -U, --force-share  open FILE without a lock, even while another process writes\n"
	"                     it (then a warning says the output may be inconsistent)\n"
	"  --allow-network-backing\n"
	"                     follow a backing image on an NBD server (an\n"
	"                     nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC  a read that needs that server fails after SEC\n"
	"                     seconds without it (default 30)\n"
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
			   uint32_t ns, const char *name, const struct cow_compress_info *ci,
			   bool cor)
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
	if (cor)
		printf("copy on read: on\n");
	printf("allocated chunks: %" PRIu64 "/%" PRIu64 "\n", in.allocated_chunks, in.nr_chunks);
	printf("zero chunks: %" PRIu64 "\n", in.zero_chunks);
	if (ci && ci->chunks) {
		human_size(ci->stored_bytes, hs, sizeof(hs));
		printf("compressed chunks: %" PRIu64 " (%s stored, ratio %.2f)\n", ci->chunks, hs,
		       (double)(ci->chunks * in.chunk_size) / (double)ci->stored_bytes);
	}
	printf("journal: %" PRIu64 " bytes, %" PRIu64 " used\n", in.journal_size, in.journal_used);
	printf("snapshots: %" PRIu32 "\n", in.nb_snapshots);
	printf("dirty: %s\n", in.dirty ? "true" : "false");
	printf("corrupt: %s\n", in.corrupt ? "true" : "false");
	snapshot_print_list(sv, ns, false, "");
}

/* A qcow2 image's header fields, after the common lines (qemu-img's words). */
static void print_qcow2(struct cow_image *img, const struct cow_info *in, const char *name)
{
	struct cow_qcow2_info qi;
	char full[4096];

	if (cow_get_qcow2_info(img, &qi) < 0)
		return;
	printf("cluster_size: %" PRIu32 "\n", qi.cluster_size);
	if (in->backing) {
		printf("backing file: %s", in->backing);
		if (resolve_near(name, in->backing, full, sizeof(full)) == 0 &&
		    strcmp(full, in->backing))
			printf(" (actual path: %s)", full);
		printf("\n");
		if (in->backing_fmt)	/* else not named by the image: probed */
			printf("backing file format: %s\n", cow_fmt_name(in->backing_fmt));
	}
	printf("qcow2 version: %" PRIu32 "\n", qi.version);
	printf("compression type: %s\n", qi.compression_type ? "zstd" : "zlib");
	printf("refcount bits: %" PRIu32 "\n", qi.refcount_bits);
	printf("lazy refcounts: %s\n", qi.lazy_refcounts ? "true" : "false");
	printf("internal snapshots: %" PRIu32 " (ucow snapshot -l lists them)\n", qi.nb_snapshots);
	printf("dirty: %s\n", qi.dirty ? "true" : "false");
	printf("corrupt: %s\n", qi.corrupt ? "true" : "false");
}

/* The same as JSON, into o (qemu-img's keys where they exist). */
static void qcow2_json(struct cow_image *img, const struct cow_info *in, const char *name,
		       json_object *o, bool *ok)
{
	struct cow_qcow2_info qi;
	json_object *fs, *data;
	char full[4096];

	if (cow_get_qcow2_info(img, &qi) < 0)
		return;
	jadd_u64(o, "cluster-size", qi.cluster_size, ok);
	if (in->backing) {
		jadd_str(o, "backing-filename", in->backing, ok);
		if (resolve_near(name, in->backing, full, sizeof(full)) == 0)
			jadd_str(o, "full-backing-filename", full, ok);
		if (in->backing_fmt)
			jadd_str(o, "backing-filename-format", cow_fmt_name(in->backing_fmt), ok);
	}
	data = jobj(ok);
	jadd_str(data, "compat", qi.version == 2 ? "0.10" : "1.1", ok);
	jadd_str(data, "compression-type", qi.compression_type ? "zstd" : "zlib", ok);
	jadd_bool(data, "lazy-refcounts", qi.lazy_refcounts, ok);
	jadd_u64(data, "refcount-bits", qi.refcount_bits, ok);
	jadd_bool(data, "corrupt", qi.corrupt, ok);
	jadd_u64(data, "internal-snapshots", qi.nb_snapshots, ok);
	fs = jobj(ok);
	jadd_str(fs, "type", "qcow2", ok);
	jadd(fs, "data", data, ok);
	jadd(o, "format-specific", fs, ok);
}

static int print_human(struct cow_image *img, const char *name)
{
	struct cow_snap_info *sv;
	struct cow_compress_info ci;
	struct cow_info in;
	uint32_t ns;
	int rc;

	cow_get_info(img, &in);
	cow_get_compress_info(img, &ci);
	rc = get_snapshots(img, &in, &sv, &ns);	/* before any output: an error is one line */
	if (rc < 0)
		return rc;
	struct cow_cor_info cr;
	cow_get_cor_info(img, &cr);
	print_human_in(&in, sv, ns, name, &ci, cr.in_header);
	print_qcow2(img, &in, name);
	free(sv);
	return 0;
}

/*
 * One image's JSON object: qemu-img's keys where the meaning is the same, ucow's own fields
 * under "format-specific" (the schema is in Documentation/cli.md).
 */
static json_object *info_json(const struct cow_info *in, const struct cow_snap_info *sv,
			      uint32_t ns, const char *name, const struct cow_compress_info *ci,
			      bool cor, bool *ok)
{
	json_object *o = jobj(ok), *fs, *data;
	char full[4096];

	jadd_str(o, "filename", name, ok);
	jadd_str(o, "format", cow_fmt_name(in->fmt), ok);
	jadd_u64(o, "virtual-size", in->virtual_size, ok);
	jadd_u64(o, "actual-size", in->disk_usage, ok);
	jadd_u64(o, "file-size", in->file_size, ok);
	jadd_bool(o, "dirty-flag", in->dirty, ok);
	if (in->fmt != COW_FMT_UCOW)
		return o;
	jadd_u64(o, "cluster-size", in->chunk_size, ok);
	if (in->backing) {
		jadd_str(o, "backing-filename", in->backing, ok);
		if (resolve_near(name, in->backing, full, sizeof(full)) == 0)
			jadd_str(o, "full-backing-filename", full, ok);
		jadd_str(o, "backing-filename-format", cow_fmt_name(in->backing_fmt), ok);
	}
	jadd(o, "snapshots", snapshot_list_json(sv, ns, ok), ok);
	data = jobj(ok);
	jadd_u64(data, "chunk-size", in->chunk_size, ok);
	jadd_u64(data, "block-size", in->block_size, ok);
	jadd_u64(data, "nr-chunks", in->nr_chunks, ok);
	jadd_u64(data, "allocated-chunks", in->allocated_chunks, ok);
	jadd_u64(data, "zero-chunks", in->zero_chunks, ok);
	if (cor)	/* only an image with the bit has the key */
		jadd_bool(data, "copy-on-read", true, ok);
	if (ci && ci->chunks) {	/* only an image with compressed chunks has the keys */
		jadd_u64(data, "compressed-chunks", ci->chunks, ok);
		jadd_u64(data, "compressed-bytes", ci->stored_bytes, ok);
	}
	jadd_u64(data, "journal-size", in->journal_size, ok);
	jadd_u64(data, "journal-used", in->journal_used, ok);
	jadd_bool(data, "corrupt", in->corrupt, ok);
	fs = jobj(ok);
	jadd_str(fs, "type", "ucow", ok);
	jadd(fs, "data", data, ok);
	jadd(o, "format-specific", fs, ok);
	return o;
}

/* The JSON document: one image's object, or with --backing-chain the array of them. */
static void json_put(json_object **doc, bool chain, json_object *o, bool *ok)
{
	if (chain)
		jappend(*doc, o, ok);
	else
		*doc = o;
}

static int add_json(struct cow_image *img, const char *name, json_object **doc, bool chain,
		    bool *ok)
{
	struct cow_snap_info *sv = NULL;
	struct cow_compress_info ci;
	struct cow_info in;
	uint32_t ns = 0;
	int rc;

	cow_get_info(img, &in);
	cow_get_compress_info(img, &ci);
	rc = get_snapshots(img, &in, &sv, &ns);
	if (rc < 0)
		return rc;
	struct cow_cor_info cr;
	cow_get_cor_info(img, &cr);
	json_object *o = info_json(&in, sv, ns, name, &ci, cr.in_header, ok);
	if (o && in.fmt == COW_FMT_QCOW2)
		qcow2_json(img, &in, name, o, ok);
	json_put(doc, chain, o, ok);
	free(sv);
	return 0;
}

/*
 * FILE served read-write by a ucow dev server (which holds it locked): the server answers
 * for FILE itself; the backing chain is opened here (servers open it read-only, shared).
 * Returns the exit status, or -1 when FILE is not served that way.
 */
static int info_online(const char *file, int fmt, bool json, bool chain,
		       const struct net_opts *net)
{
	struct ublk_state st;
	struct cow_snap_info *sv = NULL;
	struct cow_image *bimg = NULL, *i;
	struct cow_info in;
	char backing[4096], full[4096], err[COW_ERRLEN] = "";
	struct json_object *resp = NULL;
	uint32_t ns = 0;
	int id = ublk_server_of(file, &st), r;
	json_object *doc = NULL;
	bool ok = true;

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
		r = cow_open(full, &(struct cow_open_opts){ .fmt = in.backing_fmt,
				.flags = COW_OPEN_RDONLY | net->flags,
				.net_timeout_ms = net->timeout_ms },
				&bimg, err, COW_ERRLEN);
		if (r < 0) {
			report(file, NULL, r, err);
			free(sv);
			return 1;
		}
	}
	if (json && chain)
		doc = jarr(&ok);
	if (json)
		json_put(&doc, chain, info_json(&in, sv, ns, file, NULL, false, &ok), &ok);
	else
		print_human_in(&in, sv, ns, file, NULL, false);
	free(sv);
	for (i = bimg; i; i = cow_backing_image(i)) {
		struct cow_info bi;

		cow_get_info(i, &bi);
		if (json) {
			r = add_json(i, bi.path, &doc, chain, &ok);
		} else {
			printf("\n");
			r = print_human(i, bi.path);
		}
		if (r < 0) {
			ucow_err("%s: cannot read the snapshot list: %s", bi.path,
				 err_text_for(r, cow_errmsg(i), bi.path));
			json_object_put(doc);
			cow_close(bimg);
			return 1;
		}
	}
	if (bimg)
		cow_close(bimg);
	return json ? json_emit(doc, ok, file) : 0;
}


int cmd_info(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_CHAIN };
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "backing-chain", no_argument, NULL, OPT_CHAIN },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	char err[COW_ERRLEN] = "";
	struct cow_image *img, *i;
	bool json = false, chain = false, ok = true, warned = false;
	int c, rc, fmt = COW_FMT_NONE;
	unsigned share = 0;
	struct net_opts net = { 0 };
	json_object *doc = NULL;
	const char *file;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:hU", lopts, NULL)) != -1) {
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
		case 'U': share = COW_OPEN_SHARE; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("info", c, optarg, &net))
				return 1;
			break;
		case 'h': fputs(info_help, stdout); return 0;
		default: return opt_err("info", c, argv);
		}
	}
	if (optind >= argc)
		return usage_err("info", "no FILE given");
	if (argc - optind > 1)
		return usage_err("info", "too many arguments ('%s')", argv[optind + 1]);
	file = argv[optind];

	rc = info_online(file, fmt, json, chain, &net);
	if (rc >= 0)
		return rc;
	rc = cow_open(file, &(struct cow_open_opts){ .fmt = fmt,
			.flags = COW_OPEN_RDONLY | (chain ? 0 : COW_OPEN_NOCHAIN) | share | net.flags,
			.net_timeout_ms = net.timeout_ms },
			&img, err, COW_ERRLEN);
	if (rc < 0) {
		report_f(file, NULL, rc, err);
		return 1;
	}
	if (share)
		share_warn(img, file, &warned);
	if (json && chain)
		doc = jarr(&ok);
	for (i = img; i; i = chain ? cow_backing_image(i) : NULL) {
		struct cow_info in;
		const char *name;

		cow_get_info(i, &in);
		name = i == img ? file : in.path;
		if (json) {
			rc = add_json(i, name, &doc, chain, &ok);
		} else {
			if (i != img)
				printf("\n");
			rc = print_human(i, name);
		}
		if (rc < 0) {
			ucow_err("%s: cannot read the snapshot list: %s", name,
				 err_text_for(rc, cow_errmsg(i), in.path));
			json_object_put(doc);
			cow_close(img);
			return 1;
		}
	}
	if (share)
		share_warn(img, file, &warned);
	cow_close(img);
	return json ? json_emit(doc, ok, file) : 0;
}
