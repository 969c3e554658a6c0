/* SPDX-License-Identifier: MIT */
/*
 * ucow check: consistency check of an image (read-only), and with -r its repair. Exit status
 * like qemu-img check: 0 clean, 1 the check could not be done, 2 corruption found (left
 * after a repair), 3 only leaks found (left), 63 the format has no checks (raw).
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

static const char check_help[] =
	"usage: ucow check [-f FMT] [-r leaks|all] [-U] [--output=human|json] FILE\n"
	"\n"
	"Check FILE's metadata for consistency. The image is opened read-only; an image\n"
	"that cannot be opened normally because it is corrupt is opened without its backing\n"
	"chain so it can still be checked.\n"
	"\n"
	"  -f FMT          FILE's format: ucow or qcow2 (recognized by\n"
	"                  their magic) or raw\n"
	"  -r leaks        repair: punch out leaked chunks (a corrupt image is left alone)\n"
	"  -r all          repair leaks and what else can be repaired: refcounts rewritten\n"
	"                  from the snapshot tables, table entries that fail validation\n"
	"                  dropped (those ranges then read from the backing or as zeros),\n"
	"                  bitmaps of unmapped chunks cleared, the corrupt mark cleared\n"
	"  --output=FMT    human (default) or json\n"
	"  -U, --force-share\n"
	"                  open FILE without a lock, even while another process writes it\n"
	"                  (then a warning says the result may be inconsistent; not with -r)\n"
	"  --allow-network-backing\n"
	"                  follow a backing image on an NBD server (an\n"
	"                  nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                  a read that needs that server fails after SEC\n"
	"                  seconds without it (default 30)\n"
	"  -h, --help      this help\n"
	"\n"
	"With -r the image must not be in use; it is checked, repaired if needed, and checked\n"
	"again; the status is the second check's.\n"
	"\n"
	"Exit status: 0 no problems, 1 the check could not be done (an error), 2 corruption\n"
	"found, 3 only leaked chunks found (wasted space, no harm to data), 63 the format has\n"
	"no metadata to check (raw).\n";

static void print_human(const char *file, const struct cow_check_result *res,
			const struct cow_info *in)
{
	if (res->corruptions) {
		printf("%" PRIu64 " errors were found on the image.\n"
		       "Data may be corrupted, or further writes to the image may corrupt it.\n",
		       res->corruptions);
	}
	if (res->leaks) {
		printf("%s%" PRIu64 " leaked chunks were found on the image.\n"
		       "This means waste of disk space, but no harm to data.\n",
		       res->corruptions ? "\n" : "", res->leaks);
	}
	if (!res->corruptions && !res->leaks && res->verdict == 0)
		printf("No errors were found on the image.\n");
	if (res->first_problem[0])
		printf("First problem: %s\n", res->first_problem);
	if (res->reclaimable)
		printf("%" PRIu64 " chunks hold writes that were never flushed before an unclean "
		       "shutdown;\nthe next read-write open frees them.\n", res->reclaimable);
	if (in->corrupt)
		printf("Note: the image is marked corrupt: it opens read-only only.\n");
	if (in->nr_chunks)
		printf("%" PRIu64 "/%" PRIu64 " = %.2f%% allocated, %.2f%% fragmented chunks\n",
		       res->allocated_chunks, in->nr_chunks,
		       100.0 * (double)res->allocated_chunks / (double)in->nr_chunks,
		       res->allocated_chunks ?
		       100.0 * (double)res->fragmented / (double)res->allocated_chunks : 0.0);
}

/* The report's first keys, qemu-img's: filename, format, check-errors (0: the check ran). */
static json_object *json_head(const char *file, int fmt, bool *ok)
{
	json_object *o = jobj(ok);

	jadd_str(o, "filename", file, ok);
	jadd_str(o, "format", cow_fmt_name(fmt), ok);
	jadd_u64(o, "check-errors", 0, ok);
	return o;
}

/* The JSON report (schema in Documentation/cli.md). The exit status. */
static int print_json(const char *file, const struct cow_check_result *res,
		      const struct cow_info *in, const char *repaired, uint64_t leaks_fixed,
		      uint64_t corruptions_fixed)
{
	bool ok = true;
	json_object *o = json_head(file, in->fmt, &ok);

	jadd_u64(o, "image-end-offset", in->file_size, &ok);
	jadd_u64(o, "corruptions", res->corruptions, &ok);
	jadd_u64(o, "leaks", res->leaks, &ok);
	if (in->fmt == COW_FMT_UCOW) {
		jadd_u64(o, "total-clusters", in->nr_chunks, &ok);
		jadd_u64(o, "allocated-clusters", res->allocated_chunks, &ok);
		jadd_u64(o, "fragmented-clusters", res->fragmented, &ok);
		jadd_u64(o, "reclaimable-chunks", res->reclaimable, &ok);
		jadd_bool(o, "marked-corrupt", in->corrupt, &ok);
	}
	if (repaired) {
		jadd_u64(o, "leaks-fixed", leaks_fixed, &ok);
		jadd_u64(o, "corruptions-fixed", corruptions_fixed, &ok);
		jadd_str(o, "repaired", repaired, &ok);
	}
	jadd_i64(o, "verdict", res->verdict, &ok);
	jadd_bool(o, "complete", true, &ok);
	if (res->first_problem[0])
		jadd_str(o, "first-problem", res->first_problem, &ok);
	return json_emit(o, ok, file);
}

/*
 * The engine refused to load the metadata at all: report the first problem it saw.
 * Returns the exit status: 2 (corruption found), or 1 when the JSON could not be printed.
 */
static int report_unopenable(const char *file, const char *why, bool json)
{
	why = err_text_for(-EUCLEAN, why, file);
	if (json) {
		bool ok = true;
		json_object *o = json_head(file, COW_FMT_UCOW, &ok);

		jadd_u64(o, "corruptions", 1, &ok);
		jadd_u64(o, "leaks", 0, &ok);
		jadd_i64(o, "verdict", 2, &ok);
		jadd_bool(o, "complete", false, &ok);
		jadd_str(o, "first-problem", why, &ok);
		return json_emit(o, ok, file) ? 1 : 2;
	}
	printf("ERROR: %s\n"
	       "The image's metadata is corrupt; the check stopped at this first problem.\n"
	       "Data may be corrupted, or further writes to the image may corrupt it.\n", why);
	return 2;
}

/* How one check went. */
enum { CHECKED, UNOPENABLE, NO_CHECKS, FAILED };

/*
 * Open FILE read-only (without its chain if it is corrupt) and check it. share: -U
 * (COW_OPEN_SHARE), with *warned for share_warn.
 */
static int check_once(const char *file, int fmt, struct cow_check_result *res,
		      struct cow_info *in, char *why, unsigned share, const struct net_opts *net,
		      bool *warned)
{
	char err[COW_ERRLEN] = "";
	struct cow_image *img;
	int rc = cow_open(file, &(struct cow_open_opts){ .fmt = fmt,
			  .flags = COW_OPEN_RDONLY | share | net->flags,
			  .net_timeout_ms = net->timeout_ms }, &img, err, COW_ERRLEN);
	if (rc == -EUCLEAN) {
		/* a corrupt image must still be checkable: leave its chain alone */
		char err2[COW_ERRLEN] = "";

		rc = cow_open(file, &(struct cow_open_opts){ .fmt = fmt,
				.flags = COW_OPEN_CHECK | share }, &img, err2, COW_ERRLEN);
		if (rc == -EUCLEAN) {
			/* not even its own metadata loads: corruption found, counting stops (with
			 * -U and a writer at work, perhaps only a state caught half changed) */
			if (share)
				share_warn_file(file, warned);
			snprintf(why, COW_ERRLEN, "%s", err2[0] ? err2 : err);
			return UNOPENABLE;
		}
		if (err2[0])
			memcpy(err, err2, sizeof(err));
	}
	if (rc < 0) {
		report_f(file, NULL, rc, err);
		return FAILED;
	}
	if (share)
		share_warn(img, file, warned);
	cow_get_info(img, in);
	if (in->fmt != COW_FMT_UCOW) {
		cow_close(img);
		if (in->fmt == COW_FMT_QCOW2)
			ucow_err("%s: ucow does not check qcow2 images (use 'qemu-img check')",
				 file);
		else
			ucow_err("%s: a %s image has no metadata to check", file,
				 cow_fmt_name(in->fmt));
		return NO_CHECKS;
	}
	memset(res, 0, sizeof(*res));
	rc = cow_check(img, res);
	if (share)
		share_warn(img, file, warned);
	if (rc < 0) {
		ucow_err("%s: check failed: %s", file, err_text_for(rc, cow_errmsg(img), file));
		cow_close(img);
		return FAILED;
	}
	cow_close(img);
	return CHECKED;
}

static uint64_t fixed(uint64_t before, uint64_t after)
{
	return before > after ? before - after : 0;
}

int cmd_check(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256 };
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "repair", required_argument, NULL, 'r' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct cow_check_result res, res2;
	char why[COW_ERRLEN] = "", done[COW_ERRLEN] = "", err[COW_ERRLEN] = "";
	struct cow_info in, in2;
	int c, st, fmt = COW_FMT_NONE;
	unsigned repair = 0, share = 0;
	struct net_opts net = { 0 };
	bool json = false, warned = false;
	const char *file;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:r:hU", lopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (opt_format("check", optarg, &fmt))
				return 1;
			break;
		case 'r':
			if (!strcmp(optarg, "leaks"))
				repair = COW_REPAIR_LEAKS;
			else if (!strcmp(optarg, "all"))
				repair = COW_REPAIR_ALL;
			else
				return usage_err("check", "-r takes 'leaks' or 'all', not '%s'",
						 optarg);
			break;
		case OPT_OUTPUT:
			if (opt_output("check", optarg, &json))
				return 1;
			break;
		case 'U': share = COW_OPEN_SHARE; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("check", c, optarg, &net))
				return 1;
			break;
		case 'h': fputs(check_help, stdout); return 0;
		default: return opt_err("check", c, argv);
		}
	}
	if (optind >= argc)
		return usage_err("check", "no FILE given");
	if (argc - optind > 1)
		return usage_err("check", "too many arguments ('%s')", argv[optind + 1]);
	file = argv[optind];
	if (repair && share)
		return usage_err("check", "-r repairs the image: it cannot go with -U, which "
				 "opens it while another process may write it");

	st = check_once(file, fmt, &res, &in, why, share, &net, &warned);
	if (st == NO_CHECKS)
		return 63;
	if (st == FAILED)
		return 1;
	/* a clean image needs nothing, unless -r all is to lift a corrupt mark it carries; a
	 * refused repair leaves the first check's report */
	int rc = 0;
	if (repair && !(st == CHECKED && res.verdict == 0 &&
			!(repair == COW_REPAIR_ALL && in.corrupt))) {
		rc = cow_repair(file, fmt == COW_FMT_NONE ? COW_FMT_UCOW : fmt, repair, done,
				sizeof(done), err, sizeof(err));
		if (rc)
			report(file, NULL, rc, err);
	}
	if (!repair || rc || (st == CHECKED && res.verdict == 0 && !done[0] &&
			      !(repair == COW_REPAIR_ALL && in.corrupt))) {
		if (st == UNOPENABLE)
			return report_unopenable(file, why, json);
		if (json)
			return print_json(file, &res, &in, NULL, 0, 0) ? 1 : res.verdict;
		print_human(file, &res, &in);
		return res.verdict;
	}
	st = check_once(file, fmt, &res2, &in2, why, 0, &net, &warned);
	if (st == FAILED || st == NO_CHECKS)
		return 1;
	uint64_t before_c = st == UNOPENABLE ? 1 : 0;
	if (!json) {
		uint64_t lf = fixed(res.leaks, res2.leaks);
		uint64_t cf = fixed(res.corruptions + before_c, res2.corruptions);
		printf("The following inconsistencies were found and repaired:\n\n"
		       "    %" PRIu64 " leaked chunks\n    %" PRIu64 " corruptions\n\n",
		       lf, cf);
		if (done[0])
			printf("Repaired: %s.\n\n", done);
		printf("Double checking the fixed image now...\n");
	}
	if (st == UNOPENABLE)
		return report_unopenable(file, why, json);
	if (json)
		return print_json(file, &res2, &in2, done, fixed(res.leaks, res2.leaks),
				  fixed(res.corruptions, res2.corruptions)) ? 1 : res2.verdict;
	print_human(file, &res2, &in2);
	return res2.verdict;
}
