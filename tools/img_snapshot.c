/* SPDX-License-Identifier: MIT */
/* ucow snapshot: create, list, apply, delete internal snapshots (like qemu-img snapshot). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cowcore.h"
#include "cmds.h"
#include "util.h"

static const char snapshot_help[] =
	"usage: ucow snapshot [-l | -c NAME | -a NAME | -d NAME] [--output=human|json] FILE\n"
	"\n"
	"Internal snapshots of a ucow image. Taking, applying and deleting a snapshot are the\n"
	"only operations that touch the snapshot reference counts: writes after a snapshot cost\n"
	"a copy of the chunk they change, never a refcount update.\n"
	"\n"
	"  -l              list the snapshots (the default): id, name, parent, date, disk usage\n"
	"  -c NAME         create a snapshot of the current state\n"
	"  -a NAME         apply: the current state becomes that snapshot's content (every\n"
	"                  snapshot is kept; later snapshots branch from it)\n"
	"  -d NAME         delete; its space is returned when nothing else references it\n"
	"  --output=FMT    human (default) or json, for -l\n"
	"  -h, --help      this help\n"
	"\n"
	"NAME is a snapshot's name or its numeric id. Disk usage is what deleting the snapshot\n"
	"would free.\n";

static void print_list(const char *file, const struct cow_snap_info *v, uint32_t n, bool json)
{
	if (json) {
		printf("[");
		for (uint32_t i = 0; i < n; i++) {
			printf("%s\n    {\n        \"id\": %u,\n        \"name\": ", i ? "," : "",
			       v[i].id);
			json_str(stdout, v[i].name);
			printf(",\n        \"parent\": %u,\n        \"date-sec\": %" PRIu64
			       ",\n        \"date-nsec\": %u,\n        \"virtual-size\": %" PRIu64
			       ",\n        \"disk-usage\": %" PRIu64 ",\n        \"current-parent\": %s\n    }",
			       v[i].parent, v[i].date_sec, v[i].date_nsec, v[i].virtual_size,
			       v[i].disk_usage, v[i].current_parent ? "true" : "false");
		}
		printf("%s]\n", n ? "\n" : "");
		return;
	}
	if (!n)
		return;
	printf("Snapshot list:\n");
	printf("%-6s %-20s %-6s %-19s %12s\n", "ID", "TAG", "PARENT", "DATE", "DISK USAGE");
	for (uint32_t i = 0; i < n; i++) {
		char date[32], size[32], parent[16];
		time_t t = (time_t)v[i].date_sec;
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
		human_size(v[i].disk_usage, size, sizeof(size));
		snprintf(parent, sizeof(parent), "%u", v[i].parent);
		printf("%-6u %-20s %-6s %-19s %12s%s\n", v[i].id, v[i].name,
		       v[i].parent ? parent : "-", date, size, v[i].current_parent ? " *" : "");
	}
}

int cmd_snapshot(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char action = 'l', err[COW_ERRLEN] = "";
	const char *name = NULL, *file;
	bool json = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "+lc:a:d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': case 'c': case 'a': case 'd':
			if (action != 'l' && action != c)
				return usage_err(argv[0], "give only one of -l, -c, -a, -d");
			action = (char)c;
			name = optarg;
			break;
		case 'O':
			if (!strcmp(optarg, "json"))
				json = true;
			else if (strcmp(optarg, "human"))
				return usage_err(argv[0], "--output must be human or json, not '%s'",
						 optarg);
			break;
		case 'h':
			fputs(snapshot_help, stdout);
			return 0;
		default:
			return opt_err(argv[0], c, argv);
		}
	}
	if (optind != argc - 1)
		return usage_err(argv[0], optind >= argc ? "missing FILE" : "too many arguments");
	file = argv[optind];
	if (name && !*name)
		return usage_err(argv[0], "the snapshot name is empty");

	struct cow_image *img;
	r = cow_open(file, COW_FMT_UCOW, action == 'l' ? COW_OPEN_RDONLY : 0, &img, err);
	if (r) {
		report(file, file, r, err);
		return 1;
	}
	switch (action) {
	case 'c':
		r = cow_snapshot_create(img, name);
		break;
	case 'a':
		r = cow_snapshot_apply(img, name);
		break;
	case 'd':
		r = cow_snapshot_delete(img, name);
		break;
	default: {
		struct cow_snap_info *v;
		uint32_t n;
		r = cow_snapshot_list(img, &v, &n);
		if (!r) {
			print_list(file, v, n, json);
			free(v);
		}
	}
	}
	if (r) {
		report(file, file, r, cow_errmsg(img));
		cow_close(img);
		return 1;
	}
	r = cow_close(img);
	if (r) {
		report(file, file, r, "");
		return 1;
	}
	return 0;
}
