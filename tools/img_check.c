/* SPDX-License-Identifier: MIT */
/*
 * ucow check: consistency check of an image (read-only). Exit status like qemu-img check:
 * 0 clean, 1 the check could not be done, 2 corruption found, 3 only leaks found.
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
	"usage: ucow check [-f FMT] [-U] [--output=human|json] FILE\n"
	"\n"
	"Check FILE's metadata for consistency. The image is opened read-only; an image\n"
	"that cannot be opened normally because it is corrupt is opened without its backing\n"
	"chain so it can still be checked.\n"
	"\n"
	"  -f FMT          FILE's format: ucow (default; recognized by its magic) or raw\n"
	"  --output=FMT    human (default) or json\n"
	"  -U, --force-share\n"
	"                  open FILE without a lock, even while another process writes it\n"
	"                  (then a warning says the result may be inconsistent)\n"
	"  -h, --help      this help\n"
	"\n"
	"Exit status: 0 no problems, 1 the check could not be done (an error), 2 corruption\n"
	"found, 3 only leaked chunks found (wasted space, no harm to data).\n";

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
		      const struct cow_info *in)
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

int cmd_check(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256 };
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct cow_check_result res;
	char err[COW_ERRLEN] = "";
	struct cow_image *img;
	struct cow_info in;
	int c, rc, fmt = COW_FMT_NONE;
	bool json = false, warned = false;
	unsigned share = 0;
	const char *file;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:hU", lopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (opt_format("check", optarg, &fmt))
				return 1;
			break;
		case OPT_OUTPUT:
			if (opt_output("check", optarg, &json))
				return 1;
			break;
		case 'U': share = COW_OPEN_SHARE; break;
		case 'h': fputs(check_help, stdout); return 0;
		default: return opt_err("check", c, argv);
		}
	}
	if (optind >= argc)
		return usage_err("check", "no FILE given");
	if (argc - optind > 1)
		return usage_err("check", "too many arguments ('%s')", argv[optind + 1]);
	file = argv[optind];

	rc = cow_open(file, &(struct cow_open_opts){ .fmt = fmt,
			.flags = COW_OPEN_RDONLY | share }, &img, err, COW_ERRLEN);
	if (rc == -EUCLEAN) {
		/* a corrupt image must still be checkable: leave its chain alone */
		char err2[COW_ERRLEN] = "";

		rc = cow_open(file, &(struct cow_open_opts){ .fmt = fmt,
				.flags = COW_OPEN_CHECK | share }, &img, err2, COW_ERRLEN);
		if (rc == -EUCLEAN) {
			/* not even its own metadata loads: corruption found, counting stops (with
			 * -U and a writer at work, perhaps only a state caught half changed) */
			if (share)
				share_warn_file(file, &warned);
			return report_unopenable(file, err2[0] ? err2 : err, json);
		}
		if (err2[0])
			memcpy(err, err2, sizeof(err));
	}
	if (rc < 0) {
		report(file, NULL, rc, err);
		return 1;
	}
	if (share)
		share_warn(img, file, &warned);
	cow_get_info(img, &in);
	memset(&res, 0, sizeof(res));
	rc = cow_check(img, &res);
	if (share)
		share_warn(img, file, &warned);
	if (rc < 0) {
		ucow_err("%s: check failed: %s", file, err_text_for(rc, cow_errmsg(img), file));
		cow_close(img);
		return 1;
	}
	if (json && print_json(file, &res, &in)) {
		cow_close(img);
		return 1;
	}
	if (!json)
		print_human(file, &res, &in);
	cow_close(img);
	return res.verdict == 0 || res.verdict == 2 || res.verdict == 3 ? res.verdict : 1;
}
