/* SPDX-License-Identifier: MIT */
/*
 * cow target: a ucow image and its backing chain, through the cowcore engine. The format is
 * stated, never probed: a file that is not a ucow image is refused.
 */
#include "ublk.h"

static int cow_tgt_open(struct ublk_dev *dev)
{
	return ublk_engine_open(dev, COW_FMT_UCOW);
}

const struct ublk_tgt_ops ublk_tgt_cow = {
	.name = "cow",
	.needs_file = true,
	.open = cow_tgt_open,
	.close = ublk_engine_close,
	.queue_init = ublk_engine_queue_init,
	.queue_exit = ublk_engine_queue_exit,
	.queue_io = ublk_engine_queue_io,
	.handle_cqe = ublk_engine_handle_cqe,
	.busy = ublk_engine_busy,
	.info = ublk_engine_info,
	.resume = ublk_engine_resume,
};
