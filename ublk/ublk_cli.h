/* SPDX-License-Identifier: MIT */
/* ucow dev ...: the command-line entry of the ublk server (tools/dev.c). */
#ifndef UBLK_CLI_H
#define UBLK_CLI_H

int cmd_dev(int argc, char **argv);

#endif
