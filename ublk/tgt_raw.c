/* SPDX-License-Identifier: MIT */
/*
 * raw target: a plain file or block device, through the cowcore engine opened as
 * COW_FMT_RAW. Same I/O path as the cow target (engine request -> backend on the queue's
 * ring) minus copy-on-write, so raw vs cow numbers measure exactly the cost of the format.
 */
#include "ublk.h"

static int raw_open(struct ublk_dev *dev)
{
	return ublk_engine_open(dev, COW_FMT_RAW);
}

const struct ublk_tgt_ops ublk_tgt_raw = {
	.name = "raw",
	.needs_file = true,
	.open = raw_open,
	.close = ublk_engine_close,
	.queue_init = ublk_engine_queue_init,
	.queue_exit = ublk_engine_queue_exit,
	.queue_io = ublk_engine_queue_io,
	.handle_cqe = ublk_engine_handle_cqe,
	.busy = ublk_engine_busy,
	.info = ublk_engine_info,
	.resume = ublk_engine_resume,
};
