/* SPDX-License-Identifier: MIT */
/*
 * Control plane: commands to /dev/ublk-control.
 *
 * Every command is one IORING_OP_URING_CMD on a private SQE128 ring, waited for at once.
 * Negotiation, from 6.1 to current kernels:
 *   1. GET_FEATURES (ioctl form only, 6.5+). If it answers, the driver takes ioctl-encoded
 *      commands and we use them for everything (kernels built without legacy opcodes
 *      accept nothing else).
 *   2. Otherwise (6.1..6.4) we send plain opcodes, which those kernels always accept.
 *   3. ADD_DEV clears the flags the driver does not know and copies dev_info back: the
 *      negotiated features of the device. UK_F_CMD_IOCTL_ENCODE there decides the encoding
 *      of the device's I/O commands.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ublk.h"

const char *ublk_control_path(void)
{
	const char *p = getenv("UCOW_UBLK_CONTROL");

	return p && *p ? p : "/dev/ublk-control";
}

static int ctrl_cmd(struct ublk_ctrl *c, unsigned nr, struct uk_ctrl_cmd *cmd, bool ioctl_form)
{
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int ret;

	if (!c->ring_ok)	/* never opened (or closed): no command can go */
		return -ENODEV;
	sqe = io_uring_get_sqe(&c->ring);
	if (!sqe)
		return -EBUSY;
	memset(sqe, 0, 2 * sizeof(*sqe));	/* SQE128: the command area runs into the 2nd half */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = c->fd;
	sqe->cmd_op = uk_ctrl_op(nr, ioctl_form);
	memcpy(sqe->cmd, cmd, sizeof(*cmd));
	sqe->user_data = nr;

	ret = io_uring_submit(&c->ring);
	if (ret < 0)
		return ret;
	do {
		ret = io_uring_wait_cqe(&c->ring, &cqe);
	} while (ret == -EINTR);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&c->ring, cqe);
	return ret;
}

static int dev_cmd(struct ublk_ctrl *c, unsigned nr, unsigned id, void *buf, unsigned len,
		   uint64_t data)
{
	struct uk_ctrl_cmd cmd = {
		.dev_id = id,
		.queue_id = (uint16_t)-1,
		.len = len,
		.addr = (uint64_t)(uintptr_t)buf,
		.data = { data },
	};

	return ctrl_cmd(c, nr, &cmd, c->ioctl_encode);
}

int ublk_ctrl_open(struct ublk_ctrl *c, char *err)
{
	const char *path = ublk_control_path();
	struct uk_ctrl_cmd cmd = { .dev_id = (uint32_t)-1, .queue_id = (uint16_t)-1 };
	uint64_t feat = 0;
	int ret;

	memset(c, 0, sizeof(*c));
	c->fd = open(path, O_RDWR | O_CLOEXEC);
	if (c->fd < 0) {
		ret = -errno;
		if (ret == -ENOENT)
			snprintf(err, UBLK_ERRLEN, "%s not found: the ublk driver is not loaded "
				 "(modprobe ublk_drv)", path);
		else
			snprintf(err, UBLK_ERRLEN, "cannot open %s: %s", path, strerror(-ret));
		return ret;
	}
	ret = io_uring_queue_init(4, &c->ring, IORING_SETUP_SQE128);
	if (ret < 0) {
		snprintf(err, UBLK_ERRLEN, "io_uring with 128-byte SQEs unavailable: %s",
			 strerror(-ret));
		goto err_close;
	}
	c->ring_ok = true;

	/* UCOW_UBLK_LEGACY=1: talk like a 6.1 server (plain opcodes, no GET_FEATURES), which a
	 * newer driver built with BLKDEV_UBLK_LEGACY_OPCODES still accepts: tests use it to
	 * prove the old-kernel path on the test bed's kernel */
	c->legacy = getenv("UCOW_UBLK_LEGACY") && !strcmp(getenv("UCOW_UBLK_LEGACY"), "1");
	cmd.addr = (uint64_t)(uintptr_t)&feat;
	cmd.len = sizeof(feat);
	ret = c->legacy ? -EOPNOTSUPP : ctrl_cmd(c, UK_CMD_GET_FEATURES, &cmd, true);
	if (ret == 0) {
		c->have_features = true;
		c->features = feat;
		c->ioctl_encode = true;
	} else if (ret == -EPERM || ret == -EACCES) {
		snprintf(err, UBLK_ERRLEN, "%s: permission denied (run as root)", path);
		goto err_ring;
	}
	/* else: a 6.1..6.4 driver; plain opcodes */
	return 0;

err_ring:
	io_uring_queue_exit(&c->ring);
	c->ring_ok = false;
err_close:
	close(c->fd);
	c->fd = -1;
	return ret;
}

void ublk_ctrl_close(struct ublk_ctrl *c)
{
	if (c->ring_ok)
		io_uring_queue_exit(&c->ring);
	c->ring_ok = false;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

int ublk_ctrl_add(struct ublk_ctrl *c, struct uk_dev_info *info)
{
	int ret;

	if (c->legacy)
		info->flags &= ~UK_F_CMD_IOCTL_ENCODE;
	ret = dev_cmd(c, UK_CMD_ADD_DEV, info->dev_id, info, sizeof(*info), 0);
	if (c->legacy)
		info->flags &= ~UK_F_CMD_IOCTL_ENCODE;	/* I/O commands: plain opcodes too */
	return ret;
}

int ublk_ctrl_del(struct ublk_ctrl *c, unsigned id)
{
	return dev_cmd(c, UK_CMD_DEL_DEV, id, NULL, 0, 0);
}

int ublk_ctrl_get_info(struct ublk_ctrl *c, unsigned id, struct uk_dev_info *info)
{
	memset(info, 0, sizeof(*info));
	return dev_cmd(c, UK_CMD_GET_DEV_INFO, id, info, sizeof(*info), 0);
}

int ublk_ctrl_set_params(struct ublk_ctrl *c, unsigned id, struct uk_params *p)
{
	p->len = sizeof(*p);
	return dev_cmd(c, UK_CMD_SET_PARAMS, id, p, sizeof(*p), 0);
}

int ublk_ctrl_get_params(struct ublk_ctrl *c, unsigned id, struct uk_params *p)
{
	memset(p, 0, sizeof(*p));
	p->len = sizeof(*p);
	return dev_cmd(c, UK_CMD_GET_PARAMS, id, p, sizeof(*p), 0);
}

int ublk_ctrl_start(struct ublk_ctrl *c, unsigned id, pid_t pid)
{
	return dev_cmd(c, UK_CMD_START_DEV, id, NULL, 0, (uint64_t)pid);
}

int ublk_ctrl_stop(struct ublk_ctrl *c, unsigned id)
{
	return dev_cmd(c, UK_CMD_STOP_DEV, id, NULL, 0, 0);
}

int ublk_ctrl_update_size(struct ublk_ctrl *c, unsigned id, uint64_t sectors)
{
	return dev_cmd(c, UK_CMD_UPDATE_SIZE, id, NULL, 0, sectors);
}

int ublk_ctrl_start_recovery(struct ublk_ctrl *c, unsigned id)
{
	return dev_cmd(c, UK_CMD_START_USER_RECOVERY, id, NULL, 0, 0);
}

int ublk_ctrl_end_recovery(struct ublk_ctrl *c, unsigned id, pid_t pid)
{
	return dev_cmd(c, UK_CMD_END_USER_RECOVERY, id, NULL, 0, (uint64_t)pid);
}

int ublk_ctrl_get_affinity(struct ublk_ctrl *c, unsigned id, unsigned q, void *mask,
			   unsigned len)
{
	return dev_cmd(c, UK_CMD_GET_QUEUE_AFFINITY, id, mask, len, q);
}

int ublk_ctrl_probe_features(struct ublk_ctrl *c, uint64_t *features, bool *probed)
{
	struct uk_dev_info info = {
		.nr_hw_queues = 1,
		.queue_depth = 1,
		.max_io_buf_bytes = 4096,
		.dev_id = (uint32_t)-1,
		.flags = (1ULL << UK_F_NR_KNOWN) - 1,
	};
	int ret;

	*probed = false;
	if (c->have_features) {
		*features = c->features;
		return 0;
	}
	/* Old driver: ask for everything on a throwaway device and read back what stuck. Not
	 * FAIL_IO: a driver that knows it refuses it beside REISSUE (and has GET_FEATURES) */
	info.flags &= ~(UK_F_UNPRIVILEGED_DEV | UK_F_ZONED | UK_F_SUPPORT_ZERO_COPY |
			UK_F_USER_RECOVERY_FAIL_IO);
	ret = dev_cmd(c, UK_CMD_ADD_DEV, info.dev_id, &info, sizeof(info), 0);
	if (ret < 0)
		return ret;
	*features = info.flags;
	*probed = true;
	ublk_ctrl_del(c, info.dev_id);
	return 0;
}

const char *ublk_feature_name(unsigned bit)
{
	static const char *const names[] = {
		"zero_copy", "comp_in_task", "need_get_data", "user_recovery",
		"user_recovery_reissue", "unprivileged_dev", "cmd_ioctl_encode", "user_copy",
		"zoned", "user_recovery_fail_io", "update_size", "auto_buf_reg", "quiesce",
		"per_io_daemon", "buf_reg_off_daemon", "batch_io", "integrity", "safe_stop_dev",
		"no_auto_part_scan", "shmem_zc",
	};

	return bit < sizeof(names) / sizeof(names[0]) ? names[bit] : NULL;
}

const char *ublk_state_name(unsigned state)
{
	switch (state) {
	case UK_S_DEV_DEAD: return "dead";
	case UK_S_DEV_LIVE: return "live";
	case UK_S_DEV_QUIESCED: return "quiesced";
	case UK_S_DEV_FAIL_IO: return "fail_io";
	}
	return "unknown";
}
