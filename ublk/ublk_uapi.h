/* SPDX-License-Identifier: MIT */
/*
 * The ublk kernel interface, written from the kernel's documented UAPI (ublk_cmd.h, 6.1 to
 * 6.16). We carry it ourselves because Debian 12's linux-libc-dev ships 6.1's header (plain
 * opcodes, no GET_FEATURES, no ioctl-encoded commands). Every name is prefixed UK_ so it never
 * clashes with a system header that might be included alongside.
 *
 * Wire facts (see Documentation/ublk.md):
 *   control commands go to /dev/ublk-control as IORING_OP_URING_CMD on a ring set up with
 *   IORING_SETUP_SQE128; the 32-byte struct uk_ctrl_cmd sits in the SQE's command area.
 *   I/O commands go to /dev/ublkcN on a normal 64-byte-SQE ring; the 16-byte struct
 *   uk_io_cmd sits in the command area. cmd_op is either the plain number (6.1..) or the
 *   ioctl encoding _IOWR('u', nr, struct) (6.4.., UK_F_CMD_IOCTL_ENCODE).
 */
#ifndef UBLK_UAPI_H
#define UBLK_UAPI_H

#include <stdint.h>
#include <stddef.h>
#include <sys/ioctl.h>

/* ---- command numbers ------------------------------------------------------------------ */
#define UK_CMD_GET_QUEUE_AFFINITY	0x01
#define UK_CMD_GET_DEV_INFO		0x02
#define UK_CMD_ADD_DEV			0x04
#define UK_CMD_DEL_DEV			0x05
#define UK_CMD_START_DEV		0x06
#define UK_CMD_STOP_DEV			0x07
#define UK_CMD_SET_PARAMS		0x08
#define UK_CMD_GET_PARAMS		0x09
#define UK_CMD_START_USER_RECOVERY	0x10
#define UK_CMD_END_USER_RECOVERY	0x11
#define UK_CMD_GET_DEV_INFO2		0x12
#define UK_CMD_GET_FEATURES		0x13	/* ioctl form only, 6.5+ */
#define UK_CMD_DEL_DEV_ASYNC		0x14	/* ioctl form only, 6.9+ */
#define UK_CMD_UPDATE_SIZE		0x15	/* 6.16+ (UK_F_UPDATE_SIZE): data[0] = sectors */

#define UK_IO_FETCH_REQ			0x20
#define UK_IO_COMMIT_AND_FETCH_REQ	0x21
#define UK_IO_NEED_GET_DATA		0x22

/* Which commands are read-only (_IOR) in the ioctl encoding; all others are _IOWR. */
static inline int uk_ctrl_cmd_is_read(unsigned nr)
{
	return nr == UK_CMD_GET_QUEUE_AFFINITY || nr == UK_CMD_GET_DEV_INFO ||
	       nr == UK_CMD_GET_PARAMS || nr == UK_CMD_GET_DEV_INFO2 ||
	       nr == UK_CMD_GET_FEATURES || nr == UK_CMD_DEL_DEV_ASYNC;
}

/* I/O command results */
#define UK_IO_RES_OK			0
#define UK_IO_RES_NEED_GET_DATA		1
/* UK_IO_RES_ABORT is -ENODEV: the command will not be re-fetched (device stopping) */

#define UK_MAX_QUEUE_DEPTH		4096
#define UK_MAX_NR_QUEUES		4096
#define UK_MAX_IO_BUF_BYTES		(32u << 20)
#define UK_FEATURES_LEN			8

/* ---- feature flags (ublksrv_ctrl_dev_info.flags), with the first kernel ---------------- */
#define UK_F_SUPPORT_ZERO_COPY		(1ULL << 0)	/* 6.0, never worked before 6.15 */
#define UK_F_URING_CMD_COMP_IN_TASK	(1ULL << 1)	/* 6.0 */
#define UK_F_NEED_GET_DATA		(1ULL << 2)	/* 6.0 */
#define UK_F_USER_RECOVERY		(1ULL << 3)	/* 6.1 */
#define UK_F_USER_RECOVERY_REISSUE	(1ULL << 4)	/* 6.1 */
#define UK_F_UNPRIVILEGED_DEV		(1ULL << 5)	/* 6.3 */
#define UK_F_CMD_IOCTL_ENCODE		(1ULL << 6)	/* 6.4 */
#define UK_F_USER_COPY			(1ULL << 7)	/* 6.5 */
#define UK_F_ZONED			(1ULL << 8)	/* 6.6 */
#define UK_F_USER_RECOVERY_FAIL_IO	(1ULL << 9)	/* 6.13 */
#define UK_F_UPDATE_SIZE		(1ULL << 10)	/* 6.16 */
#define UK_F_AUTO_BUF_REG		(1ULL << 11)
#define UK_F_QUIESCE			(1ULL << 12)
#define UK_F_PER_IO_DAEMON		(1ULL << 13)
#define UK_F_BUF_REG_OFF_DAEMON		(1ULL << 14)
#define UK_F_NR_KNOWN			15

/* device states (dev_info.state) */
#define UK_S_DEV_DEAD			0
#define UK_S_DEV_LIVE			1
#define UK_S_DEV_QUIESCED		2
#define UK_S_DEV_FAIL_IO		3

/* ---- structures ----------------------------------------------------------------------- */

/* In the command area of a 128-byte SQE, for /dev/ublk-control. */
struct uk_ctrl_cmd {
	uint32_t dev_id;	/* (u32)-1 on ADD_DEV: the kernel picks */
	uint16_t queue_id;	/* (u16)-1 unless the command is about a queue */
	uint16_t len;		/* length of the buffer at addr */
	uint64_t addr;		/* command buffer, in or out */
	uint64_t data[1];	/* inline argument (pid for START/END, queue for AFFINITY) */
	uint16_t dev_path_len;	/* unprivileged devices and GET_DEV_INFO2 only */
	uint16_t pad;
	uint32_t reserved;
};

struct uk_dev_info {
	uint16_t nr_hw_queues;
	uint16_t queue_depth;
	uint16_t state;
	uint16_t pad0;
	uint32_t max_io_buf_bytes;
	uint32_t dev_id;
	int32_t ublksrv_pid;
	uint32_t pad1;
	uint64_t flags;
	uint64_t ublksrv_flags;	/* the server's own, the kernel ignores it */
	uint32_t owner_uid;
	uint32_t owner_gid;
	uint64_t reserved1;
	uint64_t reserved2;
};

/* In the command area of a 64-byte SQE, for /dev/ublkcN. */
struct uk_io_cmd {
	uint16_t q_id;
	uint16_t tag;
	int32_t result;		/* COMMIT: bytes done or -errno */
	uint64_t addr;		/* FETCH/COMMIT: the server's buffer for this tag */
};

/* One per tag, in the read-only area mmapped from /dev/ublkcN. */
struct uk_io_desc {
	uint32_t op_flags;	/* op: bits 0-7, flags: bits 8-31 */
	uint32_t nr_sectors;
	uint64_t start_sector;
	uint64_t addr;
};

#define UK_IO_OP_READ			0
#define UK_IO_OP_WRITE			1
#define UK_IO_OP_FLUSH			2
#define UK_IO_OP_DISCARD		3
#define UK_IO_OP_WRITE_SAME		4
#define UK_IO_OP_WRITE_ZEROES		5

#define UK_IO_F_FAILFAST_DEV		(1u << 8)
#define UK_IO_F_FAILFAST_TRANSPORT	(1u << 9)
#define UK_IO_F_FAILFAST_DRIVER		(1u << 10)
#define UK_IO_F_META			(1u << 11)
#define UK_IO_F_FUA			(1u << 13)
#define UK_IO_F_NOUNMAP			(1u << 15)
#define UK_IO_F_SWAP			(1u << 16)

static inline unsigned uk_iod_op(const struct uk_io_desc *iod)
{
	return iod->op_flags & 0xff;
}

/* Offset of queue q's descriptor area in /dev/ublkcN (the kernel sizes it for the max depth). */
#define UK_CMD_BUF_OFFSET		0ULL
static inline uint64_t uk_iod_mmap_off(unsigned q_id, unsigned page_size)
{
	uint64_t per_q = (uint64_t)UK_MAX_QUEUE_DEPTH * sizeof(struct uk_io_desc);

	per_q = (per_q + page_size - 1) / page_size * page_size;
	return UK_CMD_BUF_OFFSET + q_id * per_q;
}

struct uk_param_basic {
#define UK_ATTR_READ_ONLY		(1u << 0)
#define UK_ATTR_ROTATIONAL		(1u << 1)
#define UK_ATTR_VOLATILE_CACHE		(1u << 2)
#define UK_ATTR_FUA			(1u << 3)
	uint32_t attrs;
	uint8_t logical_bs_shift;
	uint8_t physical_bs_shift;
	uint8_t io_opt_shift;
	uint8_t io_min_shift;
	uint32_t max_sectors;
	uint32_t chunk_sectors;
	uint64_t dev_sectors;
	uint64_t virt_boundary_mask;
};

struct uk_param_discard {
	uint32_t discard_alignment;
	uint32_t discard_granularity;
	uint32_t max_discard_sectors;
	uint32_t max_write_zeroes_sectors;
	uint16_t max_discard_segments;	/* must be 1 */
	uint16_t reserved0;
};

struct uk_param_devt {		/* read-only: filled by GET_PARAMS */
	uint32_t char_major;
	uint32_t char_minor;
	uint32_t disk_major;
	uint32_t disk_minor;
};

struct uk_param_zoned {
	uint32_t max_open_zones;
	uint32_t max_active_zones;
	uint32_t max_zone_append_sectors;
	uint8_t reserved[20];
};

struct uk_params {
	uint32_t len;		/* sizeof what we send; the kernel clamps to what it knows */
#define UK_PARAM_TYPE_BASIC		(1u << 0)
#define UK_PARAM_TYPE_DISCARD		(1u << 1)
#define UK_PARAM_TYPE_DEVT		(1u << 2)
#define UK_PARAM_TYPE_ZONED		(1u << 3)
	uint32_t types;
	struct uk_param_basic basic;
	struct uk_param_discard discard;
	struct uk_param_devt devt;
	struct uk_param_zoned zoned;
};

_Static_assert(sizeof(struct uk_ctrl_cmd) == 32, "ublksrv_ctrl_cmd is 32 bytes");
_Static_assert(sizeof(struct uk_dev_info) == 64, "ublksrv_ctrl_dev_info is 64 bytes");
_Static_assert(sizeof(struct uk_io_cmd) == 16, "ublksrv_io_cmd is 16 bytes");
_Static_assert(sizeof(struct uk_io_desc) == 24, "ublksrv_io_desc is 24 bytes");
_Static_assert(offsetof(struct uk_params, basic) == 8, "basic at 8");
_Static_assert(offsetof(struct uk_params, discard) == 40, "discard at 40");
_Static_assert(offsetof(struct uk_params, devt) == 60, "devt at 60");
_Static_assert(offsetof(struct uk_params, zoned) == 76, "zoned at 76");

/* The cmd_op for a control command: ioctl-encoded when the driver offers it. */
static inline uint32_t uk_ctrl_op(unsigned nr, int ioctl_encode)
{
	if (!ioctl_encode)
		return nr;
	if (uk_ctrl_cmd_is_read(nr))
		return _IOR('u', nr, struct uk_ctrl_cmd);
	return _IOWR('u', nr, struct uk_ctrl_cmd);
}

/* The cmd_op for an I/O command. */
static inline uint32_t uk_io_op(unsigned nr, int ioctl_encode)
{
	return ioctl_encode ? (uint32_t)_IOWR('u', nr, struct uk_io_cmd) : nr;
}

#endif
