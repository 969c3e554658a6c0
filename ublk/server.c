/* SPDX-License-Identifier: MIT */
/*
 * The life of a device in its server process.
 *
 * States and the function for each transition:
 *
 *   (none) --ublk_serve: ctrl open, target open, ADD_DEV, SET_PARAMS, queues FETCH,
 *            START_DEV--> LIVE
 *   QUIESCED (old server died, USER_RECOVERY) --ublk_serve_recover: target open,
 *            START_USER_RECOVERY, queues FETCH, END_USER_RECOVERY--> LIVE
 *   LIVE --SIGTERM/SIGINT/`ucow dev del`/a queue thread failing: serve_shutdown: STOP_DEV
 *            (the driver drains in-flight requests through our still running queues, then
 *            aborts every command), queues end, target closed clean, DEL_DEV--> (none)
 *
 * Invariants:
 *   1. Nothing user-visible exists before the target opened: a missing or corrupt file
 *      fails before ADD_DEV, so errors leave nothing behind.
 *   2. START_DEV (and END_USER_RECOVERY) is sent only after every queue thread reported
 *      that all its FETCHes are in, so it never blocks on a queue that failed.
 *   3. The target is closed only after every queue thread ended: no request is in flight.
 *   4. DEL_DEV only after the char device is closed and unmapped (it waits for that).
 *   5. The state file exists exactly while the device is served (or its server died with
 *      recovery possible).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include "ublk.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif

void ublk_dev_init(struct ublk_dev *dev)
{
	memset(dev, 0, sizeof(*dev));
	dev->ctrl.fd = -1;
	dev->cdev_fd = -1;
	dev->wake_fd = -1;
	dev->ready_fd = -1;
	dev->stop_fd = -1;
	dev->sig_fd = -1;
	dev->pause_ack_fd = -1;
	dev->sidelog_fd = -1;
	dev->o.dev_id = -1;
}

static void dev_fill_params(struct ublk_dev *dev)
{
	struct uk_params *p = &dev->params;
	unsigned lbs_shift = dev->o.block_size == 4096 ? 12 : 9;

	memset(p, 0, sizeof(*p));
	p->types = UK_PARAM_TYPE_BASIC;
	/* an image server has a cache (the host page cache, the journal): the guest's FLUSH
	 * and FUA must reach us */
	p->basic.attrs = UK_ATTR_VOLATILE_CACHE | UK_ATTR_FUA;
	if (dev->o.read_only)
		p->basic.attrs |= UK_ATTR_READ_ONLY;
	p->basic.logical_bs_shift = lbs_shift;
	p->basic.physical_bs_shift = 12;
	p->basic.io_min_shift = lbs_shift;
	p->basic.io_opt_shift = 12;
	p->basic.max_sectors = dev->info.max_io_buf_bytes >> 9;
	p->basic.dev_sectors = dev->size >> 9;
	if (dev->discard_gran && !dev->o.read_only) {
		p->types |= UK_PARAM_TYPE_DISCARD;
		p->discard.discard_granularity = dev->discard_gran;
		p->discard.max_discard_sectors = UINT32_MAX >> 9;
		p->discard.max_write_zeroes_sectors = UINT32_MAX >> 9;
		p->discard.max_discard_segments = 1;
	}
}

static int dev_open_cdev(struct ublk_dev *dev)
{
	char path[64];
	int i, ret = 0;

	snprintf(path, sizeof(path), "/dev/ublkc%u", dev->info.dev_id);
	/* devtmpfs creates the node at once; udev may take a moment */
	for (i = 0; i < 300; i++) {
		dev->cdev_fd = open(path, O_RDWR | O_CLOEXEC);
		if (dev->cdev_fd >= 0)
			return 0;
		ret = -errno;
		if (ret != -ENOENT)
			break;
		usleep(10000);
	}
	snprintf(dev->err, sizeof(dev->err), "cannot open %s: %s", path, strerror(-ret));
	return ret;
}

static int wait_blockdev(unsigned id)
{
	char path[64];
	struct stat sb;
	int i;

	snprintf(path, sizeof(path), "/dev/ublkb%u", id);
	for (i = 0; i < 500; i++) {
		if (stat(path, &sb) == 0 && S_ISBLK(sb.st_mode))
			return 0;
		usleep(10000);
	}
	return -ENOENT;
}

/* Start one thread per queue and wait until each has its FETCHes in (or failed). */
static int dev_start_queues(struct ublk_dev *dev)
{
	unsigned nr = dev->info.nr_hw_queues, i, ready = 0;
	uint64_t v;
	int ret;

	dev->queues = calloc(nr, sizeof(*dev->queues));
	if (!dev->queues)
		return -ENOMEM;
	for (i = 0; i < nr; i++) {
		ret = ublk_queue_start(dev, &dev->queues[i], i);
		if (ret < 0) {
			snprintf(dev->err, sizeof(dev->err), "queue %u: cannot start: %s", i,
				 strerror(-ret));
			break;
		}
		ready++;	/* counts started threads */
	}
	nr = ready;
	for (ready = 0; ready < nr; ready += (unsigned)v)
		if (read(dev->ready_fd, &v, sizeof(v)) != sizeof(v))
			return -errno;
	if (nr != dev->info.nr_hw_queues)
		return -ENOMEM;
	for (i = 0; i < nr; i++)
		if (dev->queues[i].ret < 0)
			return dev->queues[i].ret;
	return 0;
}

/*
 * Make every queue thread end and join them. A live device is stopped with STOP_DEV: the
 * driver drains in-flight requests through the still running queues, then aborts every
 * command. Before START_DEV/END_USER_RECOVERY (or when recovery must stay possible) the
 * threads are told through stop_fd and their rings' teardown cancels the FETCHes.
 */
static void dev_stop_queues(struct ublk_dev *dev, bool live)
{
	uint64_t one = 1;
	unsigned i;

	if (!dev->queues)
		return;
	if (live)
		ublk_ctrl_stop(&dev->ctrl, dev->info.dev_id);
	else if (write(dev->stop_fd, &one, sizeof(one)) < 0)
		ublk_ctrl_stop(&dev->ctrl, dev->info.dev_id);
	for (i = 0; i < dev->info.nr_hw_queues; i++)
		ublk_queue_join(&dev->queues[i]);
	free(dev->queues);
	dev->queues = NULL;
}

static void lock_memory(void)
{
	/* page reclaim must not wait on our own device: keep our pages resident */
	if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0)
		return;
	if (mlockall(MCL_CURRENT) == 0)
		return;
	fprintf(stderr, "ucow: warning: cannot lock server memory (%s); continuing\n",
		strerror(errno));
}

static void log_to_file(struct ublk_dev *dev)
{
	char path[4200];
	int fd;

	if (dev->o.foreground)
		return;
	ublk_state_path((int)dev->info.dev_id, ".log", path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	dup2(fd, STDERR_FILENO);
	close(fd);
}

static int notify(int fd, const char *msg)
{
	size_t len = strlen(msg);

	if (fd < 0) {
		printf("%s\n", msg);
		fflush(stdout);
		return 0;
	}
	return write(fd, msg, len) == (ssize_t)len ? 0 : -EIO;
}

/* "change" to /sys/block/ublkbN/uevent (no udev, no sysfs: nothing to do). */
static void uevent_change(unsigned id)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/sys/block/ublkb%u/uevent", id);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, "change", 6) < 0) {
		/* best effort: udev sees the next event, `udevadm trigger` fixes it by hand */
	}
	close(fd);
}

int ublk_dev_write_state(struct ublk_dev *dev)
{
	const char *sock = dev->sock_path;
	struct ublk_state st;

	memset(&st, 0, sizeof(st));
	st.id = (int)dev->info.dev_id;
	st.pid = getpid();
	st.o = dev->o;
	st.nr_queues = dev->info.nr_hw_queues;
	st.depth = dev->info.queue_depth;
	st.size = dev->size;
	st.flags = dev->info.flags;
	snprintf(st.sock, sizeof(st.sock), "%s", sock);
	return ublk_state_write(&st);
}

/* Punched per pass of the control loop after an online snapshot delete (cow_reclaim), so that
 * signals and requests are served in between. */
#define RECLAIM_SLICE (64ull << 20)

/* LIVE: wait for a stop signal, a dying queue, or a control-socket request; in between, punch
 * out what online snapshot deletes freed, run the online job's steps and fold underlays. */
static int serve_loop(struct ublk_dev *dev, int sfd, int lfd)
{
	struct pollfd pfd[3] = {
		{ .fd = sfd, .events = POLLIN },
		{ .fd = dev->wake_fd, .events = POLLIN },
		{ .fd = lfd, .events = POLLIN },
	};
	struct cow_image *img = dev->tgt == &ublk_tgt_cow ? dev->tgt_data : NULL;
	int timeout = -1;

	for (;;) {
		if (poll(pfd, lfd >= 0 ? 3 : 2, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pfd[0].revents) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof(si)) == sizeof(si))
				return 0;
		}
		if (pfd[1].revents) {
			fprintf(stderr, "ucow: a queue thread ended; stopping the device\n");
			return -EIO;
		}
		if (lfd >= 0 && pfd[2].revents)
			ublk_sock_serve(dev, lfd);
		timeout = img && cow_reclaim(img, RECLAIM_SLICE) > 0 ? 0 : -1;
		if (ublk_job_step(dev) && timeout < 0)
			timeout = ublk_job_delay_ms(dev);	/* the next step, after the guest's turn */
		int ft = ublk_fold_step(dev);		/* underlays, while the device is idle */
		if (ft >= 0 && (timeout < 0 || ft < timeout))
			timeout = ft;
	}
}

/* Common to add and recover once the target is open and the device exists. */
static int serve_live(struct ublk_dev *dev, int notify_fd, bool recover)
{
	char sock[108] = "", msg[128];
	sigset_t set;
	int sfd, lfd, ret;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		ret = -errno;
		snprintf(dev->err, sizeof(dev->err), "signalfd: %s", strerror(-ret));
		return ret;
	}
	ret = dev_open_cdev(dev);
	if (ret < 0)
		goto out_sfd;
	ret = dev_start_queues(dev);
	if (ret < 0) {
		if (!dev->err[0])
			snprintf(dev->err, sizeof(dev->err), "starting queues: %s", strerror(-ret));
		goto out_queues;
	}
	if (recover)
		ret = ublk_ctrl_end_recovery(&dev->ctrl, dev->info.dev_id, getpid());
	else
		ret = ublk_ctrl_start(&dev->ctrl, dev->info.dev_id, getpid());
	if (ret < 0) {
		snprintf(dev->err, sizeof(dev->err), "%s: %s",
			 recover ? "END_USER_RECOVERY" : "START_DEV", strerror(-ret));
		goto out_queues;
	}
	if (wait_blockdev(dev->info.dev_id) < 0) {
		ret = -ENOENT;
		snprintf(dev->err, sizeof(dev->err), "/dev/ublkb%u did not appear",
			 dev->info.dev_id);
		goto out_queues;
	}
	lfd = ublk_sock_listen(dev, sock, sizeof(sock));
	snprintf(dev->sock_path, sizeof(dev->sock_path), "%s", lfd >= 0 ? sock : "");
	ret = ublk_dev_write_state(dev);
	if (ret < 0) {
		snprintf(dev->err, sizeof(dev->err), "cannot write %s/dev%u.json: %s",
			 ublk_run_dir(), dev->info.dev_id, strerror(-ret));
		goto out_sock;
	}
	if (dev->o.prefetch_rate) {
		char why[UBLK_ERRLEN] = "";
		ret = ublk_job_start(dev, UBLK_JOB_PREFETCH, why, sizeof(why));
		if (ret < 0) {
			snprintf(dev->err, sizeof(dev->err), "--prefetch: %s", why);
			ublk_state_remove((int)dev->info.dev_id);
			goto out_sock;
		}
	}
	/* the disk's uevent came before the state file: a named device (ucow dev serve) asks
	 * udev again, whose rule reads the name with `ucow dev udev-name` (by-ucow/NAME) */
	if (dev->o.name[0])
		uevent_change(dev->info.dev_id);
	snprintf(msg, sizeof(msg), "/dev/ublkb%u", dev->info.dev_id);
	notify(notify_fd, msg);
	if (notify_fd >= 0)
		close(notify_fd);

	dev->live = true;
	dev->sig_fd = sfd;
	ret = serve_loop(dev, sfd, lfd);
	dev->sig_fd = -1;
	dev_stop_queues(dev, true);
	ublk_state_remove((int)dev->info.dev_id);
out_sock:
	if (lfd >= 0) {
		close(lfd);
		unlink(sock);
	}
out_queues:
	dev_stop_queues(dev, false);
	if (dev->cdev_fd >= 0)
		close(dev->cdev_fd);
	dev->cdev_fd = -1;
out_sfd:
	close(sfd);
	return ret;
}

static int dev_prepare(struct ublk_dev *dev)
{
	sigset_t set;

	/* signals are read from a signalfd by the control thread; threads inherit the mask */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
	lock_memory();

	dev->tgt = ublk_tgt_find(dev->o.target);
	if (!dev->tgt) {
		snprintf(dev->err, sizeof(dev->err), "unknown target '%s' (cow, raw, null)",
			 dev->o.target);
		return -EINVAL;
	}
	int rd = ublk_run_dir_make();
	if (rd < 0)	/* no state file and no socket then: the device still serves */
		fprintf(stderr, "ucow: warning: %s: %s\n", ublk_run_dir(),
			rd == -EPERM ? "not a folder of ours that only we can write" :
			strerror(-rd));
	dev->wake_fd = eventfd(0, EFD_CLOEXEC);
	dev->ready_fd = eventfd(0, EFD_CLOEXEC);
	dev->stop_fd = eventfd(0, EFD_CLOEXEC);
	dev->pause_ack_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (dev->wake_fd < 0 || dev->ready_fd < 0 || dev->stop_fd < 0 || dev->pause_ack_fd < 0)
		return -errno;
	return 0;
}

static void dev_release(struct ublk_dev *dev)
{
	ublk_job_free_io(dev->job);	/* its engine context, before the image goes */
	if (dev->job)
		free(dev->job->dirty);	/* the queues have stopped */
	free(dev->job);
	dev->job = NULL;
	if (dev->tgt_data)
		dev->tgt->close(dev);
	if (dev->wake_fd >= 0)
		close(dev->wake_fd);
	if (dev->ready_fd >= 0)
		close(dev->ready_fd);
	if (dev->stop_fd >= 0)
		close(dev->stop_fd);
	if (dev->pause_ack_fd >= 0)
		close(dev->pause_ack_fd);
	dev->wake_fd = dev->ready_fd = dev->stop_fd = dev->pause_ack_fd = -1;
	ublk_ctrl_close(&dev->ctrl);
}

int ublk_serve(struct ublk_dev *dev, int notify_fd)
{
	unsigned ncpu = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	int ret;

	ret = dev_prepare(dev);
	if (ret < 0)
		goto out;
	ret = ublk_ctrl_open(&dev->ctrl, dev->err);
	if (ret < 0)
		goto out;
	ret = dev->tgt->open(dev);		/* invariant 1: before ADD_DEV */
	if (ret < 0)
		goto out;

	if (!dev->o.nr_queues)
		dev->o.nr_queues = ncpu < UBLK_MAX_QUEUES_DEFAULT ? ncpu : UBLK_MAX_QUEUES_DEFAULT;
	if (!dev->o.depth)
		dev->o.depth = UBLK_DEF_DEPTH;
	dev->io_bytes = UBLK_DEF_IO_BYTES;
	memset(&dev->info, 0, sizeof(dev->info));
	dev->info.nr_hw_queues = (uint16_t)dev->o.nr_queues;
	dev->info.queue_depth = (uint16_t)dev->o.depth;
	dev->info.max_io_buf_bytes = dev->io_bytes;
	dev->info.dev_id = (uint32_t)dev->o.dev_id;
	dev->info.flags = UK_F_CMD_IOCTL_ENCODE;
	if (dev->o.recoverable)
		dev->info.flags |= UK_F_USER_RECOVERY | UK_F_USER_RECOVERY_REISSUE;
	/* a served image can grow (ucow resize): the disk follows where the driver can */
	if (dev->ctrl.have_features && (dev->ctrl.features & UK_F_UPDATE_SIZE) &&
	    !dev->o.read_only)
		dev->info.flags |= UK_F_UPDATE_SIZE;
	ret = ublk_ctrl_add(&dev->ctrl, &dev->info);
	if (ret < 0) {
		if (ret == -EEXIST)
			snprintf(dev->err, sizeof(dev->err), "device %d already exists",
				 dev->o.dev_id);
		else
			snprintf(dev->err, sizeof(dev->err), "ADD_DEV: %s", strerror(-ret));
		goto out;
	}
	dev->added = true;
	log_to_file(dev);
	if (dev->o.recoverable && (dev->info.flags & (UK_F_USER_RECOVERY |
	    UK_F_USER_RECOVERY_REISSUE)) != (UK_F_USER_RECOVERY | UK_F_USER_RECOVERY_REISSUE)) {
		ret = -EOPNOTSUPP;
		snprintf(dev->err, sizeof(dev->err),
			 "this kernel's ublk driver has no user recovery (--recoverable)");
		goto out_del;
	}
	dev->io_bytes = dev->info.max_io_buf_bytes;	/* the driver rounds it to pages */
	dev_fill_params(dev);
	ret = ublk_ctrl_set_params(&dev->ctrl, dev->info.dev_id, &dev->params);
	if (ret < 0) {
		snprintf(dev->err, sizeof(dev->err), "SET_PARAMS: %s", strerror(-ret));
		goto out_del;
	}
	ret = serve_live(dev, notify_fd, false);
out_del:
	ublk_ctrl_del(&dev->ctrl, dev->info.dev_id);	/* invariant 4: cdev closed by now */
	if (ret == 0 && !dev->o.foreground) {
		char path[4200];

		ublk_state_path((int)dev->info.dev_id, ".log", path, sizeof(path));
		struct stat sb;
		if (stat(path, &sb) == 0 && sb.st_size == 0)
			unlink(path);
	}
out:
	dev_release(dev);
	return ret;
}

int ublk_serve_recover(struct ublk_dev *dev, unsigned id, int notify_fd)
{
	struct uk_dev_info info;
	int ret, i;

	ret = dev_prepare(dev);
	if (ret < 0)
		goto out;
	ret = ublk_ctrl_open(&dev->ctrl, dev->err);
	if (ret < 0)
		goto out;
	ret = ublk_ctrl_get_info(&dev->ctrl, id, &info);
	if (ret < 0) {
		snprintf(dev->err, sizeof(dev->err), "no ublk device %u", id);
		goto out;
	}
	if (!(info.flags & UK_F_USER_RECOVERY)) {
		ret = -EINVAL;
		snprintf(dev->err, sizeof(dev->err), "device %u was not added with --recoverable",
			 id);
		goto out;
	}
	dev->recovering = true;			/* the target's errors name no add option */
	ret = dev->tgt->open(dev);		/* replays the image's journal if needed */
	if (ret < 0)
		goto out;
	dev->info = info;
	dev->io_bytes = info.max_io_buf_bytes;
	dev->o.nr_queues = info.nr_hw_queues;
	dev->o.depth = info.queue_depth;
	/* the old server must be gone and the driver done quiescing: retry a while */
	for (i = 0; i < 100; i++) {
		ret = ublk_ctrl_start_recovery(&dev->ctrl, id);
		if (ret != -EBUSY)
			break;
		usleep(100000);
	}
	if (ret < 0) {
		snprintf(dev->err, sizeof(dev->err), "START_USER_RECOVERY on device %u: %s%s", id,
			 strerror(-ret), ret == -EBUSY ? " (is its old server still running?)" : "");
		goto out;
	}
	log_to_file(dev);
	ret = serve_live(dev, notify_fd, true);
	/* once live again, ending means the device goes; before that, another recover may try */
	if (dev->live)
		ublk_ctrl_del(&dev->ctrl, id);
out:
	dev_release(dev);
	return ret;
}
