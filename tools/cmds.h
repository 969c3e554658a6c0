/* SPDX-License-Identifier: MIT */
/* Entry points of the ucow subcommands (tools/ucow.c dispatches to them). */
#ifndef UCOW_CMDS_H
#define UCOW_CMDS_H

/* Each gets argv[0] = the subcommand's name and returns the process exit status. */
int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_io(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_map(int argc, char **argv);		/* tools/img_map.c */
int cmd_compare(int argc, char **argv);	/* tools/img_compare.c */
int cmd_measure(int argc, char **argv);	/* tools/img_measure.c */
int cmd_commit(int argc, char **argv);	/* tools/img_commit.c */
int cmd_rebase(int argc, char **argv);	/* tools/img_rebase.c */
int cmd_snapshot(int argc, char **argv);	/* tools/img_snapshot.c */
int cmd_resize(int argc, char **argv);	/* tools/img_resize.c */
int cmd_bench(int argc, char **argv);	/* tools/img_bench.c */
int cmd_dev(int argc, char **argv);	/* tools/dev.c */

/* The snapshot table of `ucow snapshot -l` and `ucow info` (tools/img_snapshot.c). */
#include <stdbool.h>
#include <stdint.h>
struct cow_snap_info;
struct json_object;
void snapshot_print_list(const struct cow_snap_info *v, uint32_t n, bool json,
			 const char *indent);
/* The same list as a JSON array (json_out.h: *ok false when something could not be built). */
struct json_object *snapshot_list_json(const struct cow_snap_info *v, uint32_t n, bool *ok);

#endif
