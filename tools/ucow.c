/* SPDX-License-Identifier: MIT */
/* ucow: copy-on-write virtual disks. The command-line front end: finds the subcommand. */
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "version.h"	/* UCOW_GIT_DESCRIBE, made by the Makefile */
#include "util.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
} cmds[] = {
	{ "create", cmd_create, "create a new image (ucow or raw)" },
	{ "info", cmd_info, "show an image's format, size, backing chain" },
	{ "io", cmd_io, "read, write, zero, discard, flush an image (like qemu-io)" },
	{ "convert", cmd_convert, "copy an image (whole chain, flattened) to a new raw or ucow file" },
	{ "check", cmd_check, "check an image's consistency" },
	{ "map", cmd_map, "show where each run of an image's content comes from" },
	{ "compare", cmd_compare, "compare two images' content" },
	{ "measure", cmd_measure, "the file size a ucow (or raw) image of some content needs" },
	{ "commit", cmd_commit, "write an overlay's data into its backing file, then empty it" },
	{ "rebase", cmd_rebase, "give an overlay another backing file (or none), content kept" },
	{ "snapshot", cmd_snapshot, "create, list, apply, delete internal snapshots" },
	{ "resize", cmd_resize, "change an image's virtual size (grow, or shrink)" },
	{ "bench", cmd_bench, "measure I/O through the engine (like qemu-img bench)" },
	{ "dev", cmd_dev, "serve images as block devices through ublk (see 'ucow dev --help')" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: ucow COMMAND [OPTIONS] ...\n"
		   "       ucow COMMAND --help\n"
		   "       ucow --version\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
	fprintf(f, "\nSee man ucow (ucow-dev for devices, ucow-format for the image format) for the "
		   "details.\n");
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : NULL;

	if (!name) {
		ucow_err("no command given (try 'ucow --help')");
		return 1;
	}
	if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(name, "--version") || !strcmp(name, "-V")) {
		printf("ucow version %s (%s)\n", UCOW_VERSION_STR, UCOW_GIT_DESCRIBE);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(name, cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	if (name[0] == '-')
		ucow_err("unknown option '%s' (try 'ucow --help')", name);
	else
		ucow_err("unknown command '%s' (try 'ucow --help')", name);
	return 1;
}
