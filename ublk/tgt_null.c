/* SPDX-License-Identifier: MIT */
/*
 * null target: no storage. Reads return whatever the tag's buffer holds, writes are dropped,
 * everything completes at once. It measures the ublk transport (driver, ring, copies).
 */
#include <errno.h>
#include <stdio.h>

#include "ublk.h"

static int null_open(struct ublk_dev *dev)
{
	if (!dev->o.size) {
		snprintf(dev->err, sizeof(dev->err), "the null target needs a size (-s SIZE)");
		return -EINVAL;
	}
	dev->size = dev->o.size;
	dev->discard_gran = 4096;
	return 0;
}

static void null_close(struct ublk_dev *dev)
{
}

static int null_queue_init(struct ublk_queue *q)
{
	q->tgt = q;	/* nothing per queue; non-NULL marks it set up */
	return 0;
}

static void null_queue_exit(struct ublk_queue *q)
{
}

static void null_queue_io(struct ublk_queue *q, struct ublk_io *io, const struct uk_io_desc *iod)
{
	switch (io->op) {
	case UK_IO_OP_READ:
	case UK_IO_OP_WRITE:
	case UK_IO_OP_FLUSH:
	case UK_IO_OP_DISCARD:
	case UK_IO_OP_WRITE_ZEROES:
		ublk_complete_io(q, io, 0);
		break;
	default:
		ublk_complete_io(q, io, -EOPNOTSUPP);
	}
}

static void null_handle_cqe(struct ublk_queue *q, const struct io_uring_cqe *cqe)
{
}

const struct ublk_tgt_ops ublk_tgt_null = {
	.name = "null",
	.needs_file = false,
	.open = null_open,
	.close = null_close,
	.queue_init = null_queue_init,
	.queue_exit = null_queue_exit,
	.queue_io = null_queue_io,
	.handle_cqe = null_handle_cqe,
};
