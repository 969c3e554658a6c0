/* SPDX-License-Identifier: MIT */
/* ucow dev ...: serve images as /dev/ublkbN (placeholder until the server lands). */
#include <stdio.h>
#include "ublk_cli.h"
#if __has_include("cmds.h")
#include "cmds.h"
#endif

int cmd_dev(int argc, char **argv)
{
	fprintf(stderr, "ucow: dev: not yet implemented\n");
	return 1;
}
