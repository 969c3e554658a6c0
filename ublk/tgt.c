/* SPDX-License-Identifier: MIT */
/* The table of targets, found by name. */
#include <string.h>

#include "ublk.h"

static const struct ublk_tgt_ops *const targets[] = {
	&ublk_tgt_cow,
	&ublk_tgt_raw,
	&ublk_tgt_qcow2,
	&ublk_tgt_null,
};

const struct ublk_tgt_ops *ublk_tgt_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
		if (!strcmp(targets[i]->name, name))
			return targets[i];
	return NULL;
}
