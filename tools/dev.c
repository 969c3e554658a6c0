/* SPDX-License-Identifier: MIT */
/*
 * ucow dev ...: serve images as /dev/ublkbN (the server is in ublk/).
 *
 *   add      start a server (daemon unless --foreground); print the device path when live
 *   del      stop a device: its server flushes, closes the image clean, deletes the device
 *   list     devices, from /run/ucow state files and the driver
 *   recover  start a new server for a recoverable device whose server died
 *   features what the running kernel's ublk driver offers
 *   stats    per-operation I/O counts and latency, asked from the server's socket
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <json-c/json.h>

#include "cmds.h"
#include "ublk.h"
#include "util.h"

/* Each subcommand's --help; `ucow dev --help` prints the overview and every usage line. */
static const char add_help[] =
	"usage: ucow dev add [-t cow|raw|loop|null] [-f FILE] [-n ID] [-q QUEUES] [-d DEPTH]\n"
	"                    [-s SIZE] [--direct] [--read-only] [--recoverable] [--foreground]\n"
	"                    [--block-size 512|4096] [--snapshot NAME] [--allow-backing-outside]\n"
	"                    [--allow-network-backing] [--nbd-timeout SEC] [--copy-on-read]\n"
	"                    [--prefetch[=RATE]] [FILE]\n"
	"\n"
	"Serve FILE as /dev/ublkbN; print the device path once the device is ready. FILE is\n"
	"the last argument, or -f FILE as with ublk's own tool (ublk add -t loop -f FILE).\n"
	"\n"
	"  -t TARGET          cow (default: a ucow image and its backing chain), raw (a plain\n"
	"                     file or block device; 'loop' is the same, ublk's name for it),\n"
	"                     qcow2 (a qcow2 image and its chain, with --read-only) or null\n"
	"                     (no storage; needs -s SIZE)\n"
	"  -f FILE            the file to serve (instead of the last argument)\n"
	"  -n ID              device number (default: the kernel picks)\n"
	"  -q QUEUES          hardware queues, one thread each (default: CPUs, up to 4)\n"
	"  -d DEPTH           requests in flight per queue, 1..4096 (default 128)\n"
	"  -s SIZE            size of a null device, a multiple of 4 KiB (k, M, G, T suffixes)\n"
	"  --direct           open the image files with O_DIRECT\n"
	"  --read-only        a read-only device (the image is opened read-only)\n"
	"  --recoverable      if the server dies, I/O waits for 'ucow dev recover ID'\n"
	"  --foreground       do not become a daemon (Ctrl-C stops and deletes the device)\n"
	"  --block-size N     logical block size: 512 (default) or 4096\n"
	"  --snapshot NAME    serve snapshot NAME of a ucow or qcow2 image, read-only\n"
	"                     (the current state is left as it is; not while the image is\n"
	"                     served read-write)\n"
	"  --allow-backing-outside\n"
	"                     follow backing files named by an absolute path or lying outside\n"
	"                     FILE's folder (refused by default: an image from elsewhere could\n"
	"                     name any file of this machine as the base of a guest's disk)\n"
	"  --allow-network-backing\n"
	"                     follow a backing name that is an NBD URI (nbd://, nbds://,\n"
	"                     nbd+unix://): connect to that server (refused by default: an\n"
	"                     image from elsewhere could make this machine connect anywhere);\n"
	"                     also 'allow-network-backing = yes' in /etc/ucow/ucow.conf\n"
	"  --nbd-timeout SEC  a read that needs the NBD server fails after SEC seconds without\n"
	"                     it (default: nbd-timeout in /etc/ucow/ucow.conf, else 30)\n"
	"  --copy-on-read     what a read takes from the backing chain is also written into\n"
	"                     the image (cow target), so each base block is read once; on\n"
	"                     anyway for an image made with -o copy_on_read=on\n"
	"  --prefetch[=RATE]  while the device is idle, copy the rest of the backing chain\n"
	"                     into the image in the background, at most RATE bytes a second\n"
	"                     (default 64M; k M G suffixes); implies --copy-on-read. Once done\n"
	"                     (dev stats), 'ucow rebase -b \"\" FILE' drops the backing file\n"
	"  -h, --help         this help\n";

static const char del_help[] =
	"usage: ucow dev del [--force] ID|/dev/ublkbN\n"
	"       ucow dev del [--force] -n ID\n"
	"       ucow dev del [--force] -a|--all\n"
	"\n"
	"Stop a device: its server drains the requests in flight, flushes and closes the image\n"
	"clean, and the device is deleted. A device whose server died is deleted and its image\n"
	"closed clean.\n"
	"\n"
	"  -n ID              the device (as ublk del -n ID); or give ID or /dev/ublkbN\n"
	"  -a, --all          every device 'ucow dev add' made\n"
	"  --force            stop the device even when it is mounted\n"
	"  -h, --help         this help\n";

static const char list_help[] =
	"usage: ucow dev list [-n ID] [-v] [--output=human|json]\n"
	"\n"
	"List the ublk devices: ID, state, target, queues, depth, server pid, file, the\n"
	"features negotiated with the driver (devices other programs made have target '-').\n"
	"\n"
	"  -n ID              only this device (an error when there is no such device)\n"
	"  -v, --verbose      also size, block size, largest request, options, state file and\n"
	"                     socket of each device (the human form; JSON always has them)\n"
	"  --output=FMT       human (default) or json\n"
	"  -h, --help         this help\n";

static const char recover_help[] =
	"usage: ucow dev recover [--foreground] ID|/dev/ublkbN\n"
	"       ucow dev recover [--foreground] -n ID\n"
	"\n"
	"Start a new server for a device added with --recoverable whose server died: the\n"
	"requests waiting in the driver go on with it.\n"
	"\n"
	"  -n ID              the device (as ublk recover -n ID); or give ID or /dev/ublkbN\n"
	"  --foreground       do not become a daemon\n"
	"  -h, --help         this help\n";

static const char features_help[] =
	"usage: ucow dev features\n"
	"\n"
	"What the running kernel's ublk driver offers (GET_FEATURES, or a probe before 6.5).\n"
	"\n"
	"  -h, --help         this help\n";

static const char stats_help[] =
	"usage: ucow dev stats [--output=human|json] ID|/dev/ublkbN\n"
	"       ucow dev stats [--output=human|json] -n ID\n"
	"\n"
	"I/O counts, bytes, errors and latency per operation, requests per queue and the\n"
	"pauses of online snapshot operations, asked from the device's server.\n"
	"\n"
	"  -n ID              the device; or give ID or /dev/ublkbN\n"
	"  --output=FMT       human (default) or json\n"
	"  -h, --help         this help\n";

static const char serve_help[] =
	"usage: ucow dev serve [--config-dir DIR] NAME\n"
	"\n"
	"Serve the device described by DIR/NAME.conf (default /etc/ucow/NAME.conf) in the\n"
	"foreground, as ucow@NAME.service does: SIGTERM stops it and deletes the device. A\n"
	"device of that NAME whose server died (recoverable) is recovered, not added again.\n"
	"The device is named: udev links /dev/disk/by-ucow/NAME to it. NAME.conf holds\n"
	"key = value lines: image, target, queues, depth, size, id, block-size, snapshot,\n"
	"options (direct, read-only, allow-backing-outside, not-recoverable); see man ucow-dev.\n"
	"\n"
	"  --config-dir DIR   the folder of NAME.conf (default /etc/ucow)\n"
	"  -h, --help         this help\n";

static const char udev_name_help[] =
	"usage: ucow dev udev-name ID|/dev/ublkbN\n"
	"\n"
	"Print the NAME of a device served by 'ucow dev serve NAME' (udev's rule makes\n"
	"/dev/disk/by-ucow/NAME with it); exit 1 when the device has no name.\n"
	"\n"
	"  -h, --help         this help\n";

static const char dev_help[] =
	"usage: ucow dev add [-t cow|raw|loop|null] [-f FILE] [OPTIONS] [FILE]\n"
	"       ucow dev del ID|/dev/ublkbN|-n ID|-a|--all [--force]\n"
	"       ucow dev list [-n ID] [-v] [--output=human|json]\n"
	"       ucow dev recover ID|-n ID [--foreground]\n"
	"       ucow dev features\n"
	"       ucow dev stats ID|-n ID [--output=human|json]\n"
	"       ucow dev serve [--config-dir DIR] NAME\n"
	"       ucow dev udev-name ID\n"
	"       ucow dev SUBCOMMAND --help     that subcommand's usage and options\n"
	"\n"
	"Serve images as block devices /dev/ublkbN through the kernel's ublk driver.\n"
	"\n"
	"  add       start a server for FILE; print the device path once it is ready\n"
	"  del       stop a device (its server flushes and closes the image clean)\n"
	"  list      the devices, their state, target, file and features\n"
	"  recover   start a new server for a --recoverable device whose server died\n"
	"  features  what the running kernel's ublk driver offers\n"
	"  stats     per-operation I/O counts and latency of a device\n"
	"  serve     serve /etc/ucow/NAME.conf in the foreground (ucow@NAME.service)\n"
	"  udev-name the NAME of a device served so (udev: /dev/disk/by-ucow/NAME)\n";

/* ---- helpers ----------------------------------------------------------------------------- */

static bool pid_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	if (pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Wait up to ms for pid to end. 0 when it did. */
static int wait_pid_exit(pid_t pid, int ms)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int waited = 0;

	if (pfd >= 0) {
		struct pollfd p = { .fd = pfd, .events = POLLIN };
		int r = poll(&p, 1, ms);

		close(pfd);
		if (r == 0)
			return -ETIMEDOUT;
	}
	/* pidfd says "exited" for zombies too; /proc tells the rest (or no pidfd at all) */
	while (pid_alive(pid)) {
		if (waited >= ms)
			return -ETIMEDOUT;
		usleep(20000);
		waited += 20;
	}
	return 0;
}

static int parse_id(const char *s, int *id)
{
	char *end;
	long v;

	if (!strncmp(s, "/dev/", 5))
		s += 5;
	if (!strncmp(s, "ublkb", 5))
		s += 5;
	if (!*s)
		return -EINVAL;
	v = strtol(s, &end, 10);
	if (*end || v < 0 || v > 1048575)
		return -EINVAL;
	*id = (int)v;
	return 0;
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	v = strtoul(s, &end, 10);
	if (*end || v < lo || v > hi)
		return -ERANGE;
	*out = (unsigned)v;
	return 0;
}

/* -n ID of del, list, recover, stats (ublk's tool spells the device so); given twice is an
 * error. 0, or the exit status 1 after a usage error. */
static int opt_dev_id(const char *cmd, const char *arg, int *id)
{
	if (*id >= 0)
		return usage_err(cmd, "-n given twice");
	if (parse_id(arg, id)) {
		*id = -1;
		return usage_err(cmd, "invalid device '%s'", arg);
	}
	return 0;
}

/* The one device del, recover and stats act on: *id from -n (>= 0), or the one argument
 * left (ID or /dev/ublkbN). 0, or the exit status 1 after a usage error. */
static int one_device(const char *cmd, int argc, char **argv, int *id)
{
	if (*id >= 0)
		return optind == argc ? 0 : usage_err(cmd, "the device is given twice (-n %d and "
						      "'%s')", *id, argv[optind]);
	if (optind == argc)
		return usage_err(cmd, "no device given (ID, /dev/ublkbN or -n ID)");
	if (optind + 1 != argc)
		return usage_err(cmd, "too many arguments ('%s')", argv[optind + 1]);
	if (parse_id(argv[optind], id))
		return usage_err(cmd, "invalid device '%s'", argv[optind]);
	return 0;
}

static int cmp_id(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

static void remove_leftovers(int id)
{
	char path[4200];

	ublk_state_remove(id);
	ublk_state_path(id, ".sock", path, sizeof(path));
	unlink(path);
}

/* After a server died: open and close its image, which replays the journal (and folds in the
 * side log a --recoverable server left: its acknowledged writes) and marks it clean. */
static void close_image_of(const struct ublk_state *st)
{
	struct cow_image *img;
	char err[COW_ERRLEN], side[4200];
	int sfd = -1;

	if (strcmp(st->o.target, "cow") || !st->o.file[0] || st->o.read_only)
		return;
	if (ublk_sidelog_path(st->o.file, side, sizeof(side)) == 0)
		sfd = open(side, O_RDWR | O_CLOEXEC);
	if (cow_open(st->o.file, &(struct cow_open_opts){ .fmt = COW_FMT_UCOW,
			.flags = COW_OPEN_SIDELOG, .sidelog_fd = sfd },
			&img, err, COW_ERRLEN) == 0 &&
	    cow_close(img) == 0 && sfd >= 0)
		unlink(side);
	if (sfd >= 0)
		close(sfd);
}

/* Devices whose server died without recovery: finish what the kernel started. */
static void reap_dead(struct ublk_ctrl *c)
{
	int ids[256], n = ublk_state_ids(ids, 256), i;

	for (i = 0; i < n; i++) {
		struct ublk_state st;
		struct uk_dev_info info;

		if (ublk_state_read(ids[i], &st, NULL) < 0 || pid_alive(st.pid))
			continue;	/* a bad state file: list and del say so */
		if (ublk_ctrl_get_info(c, (unsigned)ids[i], &info) == 0) {
			if (info.flags & UK_F_USER_RECOVERY)
				continue;	/* waits for `ucow dev recover` */
			ublk_ctrl_stop(c, (unsigned)ids[i]);
			ublk_ctrl_del(c, (unsigned)ids[i]);
		}
		close_image_of(&st);
		remove_leftovers(ids[i]);
	}
}

/* Run the server in a daemon child; print the device path when it reports live. */
static int spawn_server(struct ublk_dev *dev, bool recover, unsigned id)
{
	char buf[UBLK_ERRLEN + 64];
	size_t off = 0;
	ssize_t n;
	int p[2], status, ret;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		ucow_err("pipe: %s", strerror(errno));
		return 1;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		ucow_err("fork: %s", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		close(p[0]);
		setsid();
		if (chdir("/") < 0)
			_exit(1);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
			close(nul);
		}
		ret = recover ? ublk_serve_recover(dev, id, p[1]) : ublk_serve(dev, p[1]);
		if (ret < 0 && !dev->live) {
			snprintf(buf, sizeof(buf), "E%s", dev->err[0] ? dev->err : strerror(-ret));
			if (write(p[1], buf, strlen(buf)) < 0)
				_exit(1);
		}
		_exit(ret < 0 ? 1 : 0);
	}
	close(p[1]);
	while (off + 1 < sizeof(buf) && (n = read(p[0], buf + off, sizeof(buf) - 1 - off)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += (size_t)n;
	}
	buf[off] = 0;
	close(p[0]);
	if (!strncmp(buf, "/dev/", 5)) {
		printf("%s\n", buf);
		return 0;
	}
	waitpid(pid, &status, 0);
	if (buf[0] == 'E')
		ucow_err("%s", buf + 1);
	else
		ucow_err("the device server exited during startup (status %d)",
			 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return 1;
}

/* ---- add --------------------------------------------------------------------------------- */

enum { OPT_DIRECT = 256, OPT_RO, OPT_RECOVERABLE, OPT_FG, OPT_BS, OPT_OUTPUT, OPT_FORCE,
       OPT_ALL, OPT_SNAPSHOT, OPT_OUTSIDE, OPT_COR, OPT_PREFETCH };

/* dev add's options into dev->o (-f FILE into *file): 0, or the exit status (1 after a usage
 * error, 0 after --help) with *done set. */
static int dev_add_opts(int argc, char **argv, struct ublk_dev *dev, const char **file,
			bool *done)
{
	static const struct option opts[] = {
		{ "target", required_argument, NULL, 't' },
		{ "file", required_argument, NULL, 'f' },
		{ "number", required_argument, NULL, 'n' },
		{ "queues", required_argument, NULL, 'q' },
		{ "depth", required_argument, NULL, 'd' },
		{ "size", required_argument, NULL, 's' },
		{ "direct", no_argument, NULL, OPT_DIRECT },
		{ "read-only", no_argument, NULL, OPT_RO },
		{ "recoverable", no_argument, NULL, OPT_RECOVERABLE },
		{ "foreground", no_argument, NULL, OPT_FG },
		{ "block-size", required_argument, NULL, OPT_BS },
		{ "snapshot", required_argument, NULL, OPT_SNAPSHOT },
		{ "allow-backing-outside", no_argument, NULL, OPT_OUTSIDE },
		{ "copy-on-read", no_argument, NULL, OPT_COR },
		{ "prefetch", optional_argument, NULL, OPT_PREFETCH },
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	const char *why = NULL;
	unsigned v;
	int c;

	*done = true;
	*file = NULL;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":t:f:n:q:d:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			/* ublk's own tool calls a file served as it is "loop" */
			if (!ublk_tgt_find(strcmp(optarg, "loop") ? optarg : "raw"))
				return usage_err("dev add", "unknown target '%s' (cow, raw, loop, "
						 "qcow2, null)", optarg);
			snprintf(dev->o.target, sizeof(dev->o.target), "%s",
				 strcmp(optarg, "loop") ? optarg : "raw");
			break;
		case 'f':
			if (*file)
				return usage_err("dev add", "-f given twice");
			if (!*optarg)
				return usage_err("dev add", "-f needs a FILE");
			*file = optarg;
			break;
		case 'n':
			if (parse_uint(optarg, 0, 1048575, &v))
				return usage_err("dev add", "invalid device ID '%s'", optarg);
			dev->o.dev_id = (int)v;
			break;
		case 'q':
			if (parse_uint(optarg, 1, UK_MAX_NR_QUEUES, &dev->o.nr_queues))
				return usage_err("dev add", "invalid queue count '%s' (1..%u)",
						 optarg, UK_MAX_NR_QUEUES);
			break;
		case 'd':
			if (parse_uint(optarg, 1, UK_MAX_QUEUE_DEPTH, &dev->o.depth))
				return usage_err("dev add", "invalid queue depth '%s' (1..%u)",
						 optarg, UK_MAX_QUEUE_DEPTH);
			break;
		case 's':
			if (parse_bytes(optarg, &dev->o.size, &why))
				return usage_err("dev add", "invalid size '%s' (%s)", optarg, why);
			if (dev->o.size < 4096 || dev->o.size % 4096)
				return usage_err("dev add", "invalid size '%s': must be a multiple of "
						 "4 KiB", optarg);
			break;
		case OPT_DIRECT: dev->o.direct = true; break;
		case OPT_RO: dev->o.read_only = true; break;
		case OPT_RECOVERABLE: dev->o.recoverable = true; break;
		case OPT_FG: dev->o.foreground = true; break;
		case OPT_OUTSIDE: dev->o.backing_outside = true; break;
		case OPT_COR: dev->o.copy_on_read = true; break;
		case OPT_PREFETCH:
			dev->o.prefetch_rate = UBLK_PREFETCH_DEFAULT_RATE;
			if (optarg && (parse_bytes(optarg, &dev->o.prefetch_rate, &why) ||
				       dev->o.prefetch_rate < 4096 ||
				       dev->o.prefetch_rate > (1ull << 40)))
				return usage_err("dev add", "invalid --prefetch rate '%s' (bytes a "
						 "second, 4k to 1T, k M G suffixes)", optarg);
			dev->o.copy_on_read = true;	/* the prefetch's reads copy */
			break;
		case OPT_ALLOW_NET:
			dev->o.allow_network = true;
			break;
		case OPT_NBD_TIMEOUT:
			if (parse_seconds_ms(optarg, &dev->o.nbd_timeout_ms))
				return usage_err("dev add", "invalid --nbd-timeout '%s' (seconds, 0.001 "
						 "to %u, up to 3 decimals)", optarg,
						 COW_NET_TIMEOUT_MAX_MS / 1000);
			break;
		case OPT_SNAPSHOT:
			if (!*optarg || strlen(optarg) >= sizeof(dev->o.snapshot))
				return usage_err("dev add", "invalid snapshot name '%s' (1 to 127 "
						 "bytes)", optarg);
			snprintf(dev->o.snapshot, sizeof(dev->o.snapshot), "%s", optarg);
			break;
		case OPT_BS:
			if (strcmp(optarg, "512") && strcmp(optarg, "4096"))
				return usage_err("dev add", "invalid block size '%s' (512 or 4096)",
						 optarg);
			dev->o.block_size = (unsigned)atoi(optarg);
			break;
		case 'h':
			fputs(add_help, stdout);
			return 0;
		default:
			return opt_err("dev add", c, argv);
		}
	}
	*done = false;
	return 0;
}

/* dev add, or dev serve's add of the device NAME (name non-NULL: a valid name) */
static int dev_add_named(int argc, char **argv, const char *name)
{
	struct ublk_dev *dev = malloc(sizeof(*dev));
	struct ublk_state st;
	int sid;
	const struct ublk_tgt_ops *tgt;
	struct ublk_ctrl ctrl;
	const char *file;
	bool done;
	int ret = 1;

	if (!dev) {
		ucow_err("out of memory");
		return 1;
	}
	ublk_dev_init(dev);
	strcpy(dev->o.target, "cow");
	dev->o.block_size = 512;
	ret = dev_add_opts(argc, argv, dev, &file, &done);
	if (done)
		goto out;
	{
		/* the host's settings: what the command line did not say */
		struct net_opts net = { 0 };
		char why[COW_ERRLEN];
		if (net_conf_read(&net, why, sizeof(why)) < 0) {
			ucow_err("%s", why);
			ret = 1;
			goto out;
		}
		if (net.flags & COW_OPEN_ALLOW_NETWORK)
			dev->o.allow_network = true;
		if (!dev->o.nbd_timeout_ms)
			dev->o.nbd_timeout_ms = net.timeout_ms;
	}
	if (name)
		snprintf(dev->o.name, sizeof(dev->o.name), "%s", name);
	ret = 1;
	tgt = ublk_tgt_find(dev->o.target);
	if (dev->o.snapshot[0]) {
		if (tgt != &ublk_tgt_cow && tgt != &ublk_tgt_qcow2) {
			ret = usage_err("dev add", "--snapshot is for the cow and qcow2 targets");
			goto out;
		}
		if (dev->o.recoverable) {
			ret = usage_err("dev add", "--snapshot and --recoverable do not go together");
			goto out;
		}
		dev->o.read_only = true;	/* a snapshot is served read-only, always */
	}
	if (dev->o.copy_on_read && (tgt != &ublk_tgt_cow || dev->o.read_only)) {
		ret = usage_err("dev add", "%s writes into the image: the cow target, read-write, "
				"only", dev->o.prefetch_rate ? "--prefetch" : "--copy-on-read");
		goto out;
	}
	if (file && optind != argc) {
		ret = usage_err("dev add", "FILE given twice (-f %s and '%s')", file, argv[optind]);
		goto out;
	}
	if (!file && optind < argc)
		file = argv[optind++];
	if (tgt->needs_file) {
		if (!file || optind != argc) {
			ret = usage_err("dev add", !file ? "no FILE given" : "too many arguments");
			goto out;
		}
		if (!realpath(file, dev->o.file)) {
			ucow_err("%s: %s", file, strerror(errno));
			goto out;
		}
		if (dev->o.size) {
			ret = usage_err("dev add", "-s is for the null target");
			goto out;
		}
		/*
		 * One process holds an image read-write (exclusive lock); read-only servers
		 * (snapshot devices too) share it. Name the device in the way instead of
		 * waiting for the lock and reporting it busy.
		 */
		sid = ublk_server_of(dev->o.file, &st);
		if (sid >= 0 && (!dev->o.read_only || (!st.o.read_only && !st.o.snapshot[0]))) {
			if (dev->o.snapshot[0])
				ucow_err("%s: in use by /dev/ublkb%d; a snapshot is served only while "
					 "the image is not served read-write (ucow dev del %d first)",
					 file, sid, sid);
			else
				ucow_err("%s: in use by /dev/ublkb%d (ucow dev del %d first)",
					 file, sid, sid);
			goto out;
		}
	} else if (file) {
		ret = usage_err("dev add", "the %s target takes no FILE", tgt->name);
		goto out;
	} else if (!dev->o.size) {
		ret = usage_err("dev add", "the null target needs a size (-s SIZE)");
		goto out;
	}
	/* a dead device may still hold the ID asked for: finish it first (errors: the server
	 * reports them) */
	if (ublk_ctrl_open(&ctrl, dev->err) == 0) {
		reap_dead(&ctrl);
		ublk_ctrl_close(&ctrl);
	}
	dev->err[0] = 0;
	if (!dev->o.foreground) {
		ret = spawn_server(dev, false, 0);
		goto out;
	}
	ret = ublk_serve(dev, -1);
	if (ret < 0 && !dev->live)
		ucow_err("%s", dev->err[0] ? dev->err : strerror(-ret));
	ret = ret < 0 ? 1 : 0;
out:
	free(dev);
	return ret;
}

static int dev_add(int argc, char **argv)
{
	return dev_add_named(argc, argv, NULL);
}

/* ---- del --------------------------------------------------------------------------------- */

static bool blockdev_busy(int id)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/dev/ublkb%d", id);
	fd = open(path, O_RDONLY | O_EXCL | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		return false;
	}
	return errno == EBUSY;
}

static int del_one(struct ublk_ctrl *c, int id, bool force)
{
	struct ublk_state st;
	struct uk_dev_info info;
	char err[UBLK_ERRLEN];
	int sr = ublk_state_read(id, &st, err);
	bool have_state = sr == 0;
	bool have_dev = ublk_ctrl_get_info(c, (unsigned)id, &info) == 0;
	/* the server is the process the driver knows: a state file's pid may name another
	 * process by now (a reused pid), and is never signalled on its own word */
	pid_t pid = have_dev ? info.ublksrv_pid : 0;

	if (sr < 0 && sr != -ENOENT)
		ucow_err("warning: %s (removed)", err);
	if (have_state && have_dev && st.pid != pid)
		ucow_err("warning: device %d: the state file names pid %d, the driver pid %d "
			 "(the driver's is used)", id, (int)st.pid, (int)pid);

	if (!have_state && !have_dev) {
		ucow_err("no device %d", id);
		return 1;
	}
	if (have_dev && pid_alive(pid)) {
		if (!force && blockdev_busy(id)) {
			ucow_err("/dev/ublkb%d is in use (mounted?); unmount it or use --force", id);
			return 1;
		}
		if (kill(pid, SIGTERM) < 0 && errno != ESRCH) {
			ucow_err("cannot signal the server of device %d (pid %d): %s", id,
				 (int)pid, strerror(errno));
			return 1;
		}
		if (wait_pid_exit(pid, 120000) < 0) {
			ucow_err("the server of device %d (pid %d) did not stop", id, (int)pid);
			return 1;
		}
	}
	/* a dead server (or one that failed to clean up): delete the device ourselves */
	if (ublk_ctrl_get_info(c, (unsigned)id, &info) == 0) {
		ublk_ctrl_stop(c, (unsigned)id);
		ublk_ctrl_del(c, (unsigned)id);
		if (have_state)
			close_image_of(&st);
	}
	remove_leftovers(id);
	return 0;
}

static int dev_del(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "all", no_argument, NULL, OPT_ALL },
		{ "number", required_argument, NULL, 'n' },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char err[UBLK_ERRLEN];
	struct ublk_ctrl c;
	bool all = false, force = false;
	int ids[256], n, i, c_, ret = 0, id = -1;

	opterr = 0;
	while ((c_ = getopt_long(argc, argv, ":an:h", opts, NULL)) != -1) {
		switch (c_) {
		case 'a':
		case OPT_ALL: all = true; break;
		case 'n':
			if (opt_dev_id("dev del", optarg, &id))
				return 1;
			break;
		case OPT_FORCE: force = true; break;
		case 'h': fputs(del_help, stdout); return 0;
		default: return opt_err("dev del", c_, argv);
		}
	}
	if (all && (optind != argc || id >= 0))
		return usage_err("dev del", "--all takes no device");
	if (!all && id < 0 && optind == argc)
		return usage_err("dev del", "no device given (ID, /dev/ublkbN, -n ID or --all)");
	if (!all && one_device("dev del", argc, argv, &id))
		return 1;
	if (ublk_ctrl_open(&c, err) < 0) {
		ucow_err("%s", err);
		return 1;
	}
	if (all) {
		n = ublk_state_ids(ids, 256);
		for (i = 0; i < n; i++)
			ret |= del_one(&c, ids[i], force);
	} else {
		ret = del_one(&c, id, force);
	}
	ublk_ctrl_close(&c);
	return ret;
}

/* ---- list -------------------------------------------------------------------------------- */

static void features_str(uint64_t f, char *buf, size_t len)
{
	size_t off = 0;
	unsigned b;

	buf[0] = 0;
	for (b = 0; b < 64 && off < len; b++) {
		const char *name = ublk_feature_name(b);

		if (!(f & (1ULL << b)))
			continue;
		if (name)
			off += snprintf(buf + off, len - off, "%s%s", off ? "," : "", name);
		else
			off += snprintf(buf + off, len - off, "%sbit%u", off ? "," : "", b);
	}
}

/* Merge the ids of every ublk device the kernel has (/sys/class/ublk-char/ublkcN). */
static int add_kernel_ids(int *ids, int n, int max)
{
	DIR *d = opendir("/sys/class/ublk-char");
	struct dirent *de;
	int i, id;

	if (!d)
		return n;
	while ((de = readdir(d)) && n < max) {
		if (strncmp(de->d_name, "ublkc", 5) || parse_id(de->d_name + 5, &id))
			continue;
		for (i = 0; i < n && ids[i] != id; i++)
			;
		if (i == n)
			ids[n++] = id;
	}
	closedir(d);
	qsort(ids, n, sizeof(*ids), cmp_id);
	return n;
}

/* One device as a JSON object added to arr: 0 or -ENOMEM. */
static int list_json_one(struct json_object *arr, int id, const char *state,
			 const struct ublk_state *st, const struct uk_dev_info *info,
			 const char *feat)
{
	struct json_object *d = json_object_new_object();
	char path[32];

	snprintf(path, sizeof(path), "/dev/ublkb%d", id);
	if (!d)
		return -ENOMEM;
	if (json_object_array_add(arr, d)) {
		json_object_put(d);
		return -ENOMEM;
	}
	if (json_object_object_add(d, "id", json_object_new_int(id)) ||
	    json_object_object_add(d, "state", ublk_json_new_text(state)) ||
	    json_object_object_add(d, "target", ublk_json_new_text(st->o.target)) ||
	    ublk_json_add_bytes(d, "file", st->o.file) ||
	    (st->o.snapshot[0] && ublk_json_add_bytes(d, "snapshot", st->o.snapshot)) ||
	    json_object_object_add(d, "device", json_object_new_string(path)) ||
	    json_object_object_add(d, "queues", json_object_new_int64(info->nr_hw_queues)) ||
	    json_object_object_add(d, "depth", json_object_new_int64(info->queue_depth)) ||
	    json_object_object_add(d, "pid", json_object_new_int((int)st->pid)) ||
	    json_object_object_add(d, "size", json_object_new_int64((int64_t)st->size)) ||
	    json_object_object_add(d, "block-size", json_object_new_int64(st->o.block_size)) ||
	    json_object_object_add(d, "direct", json_object_new_boolean(st->o.direct)) ||
	    json_object_object_add(d, "read-only", json_object_new_boolean(st->o.read_only)) ||
	    json_object_object_add(d, "recoverable",
				   json_object_new_boolean(st->o.recoverable)) ||
	    json_object_object_add(d, "features", ublk_json_new_text(feat)))
		return -ENOMEM;	/* d belongs to arr */
	return 0;
}

/* -v: what the driver's parameters and the state file add to a device's two lines. */
static void list_verbose(struct ublk_ctrl *c, int id, bool ours, const struct ublk_state *st,
			 const struct uk_dev_info *info)
{
	struct uk_params p;
	char hs[32], path[4200], sock[4200];
	uint64_t size = st->size;
	unsigned bs = st->o.block_size;
	bool ro = st->o.read_only;

	if (ublk_ctrl_get_params(c, (unsigned)id, &p) == 0 && p.basic.logical_bs_shift >= 9 &&
	    p.basic.logical_bs_shift <= 16 && p.basic.dev_sectors <= (UINT64_MAX >> 9)) {
		size = p.basic.dev_sectors << 9;
		bs = 1u << p.basic.logical_bs_shift;
		ro = p.basic.attrs & UK_ATTR_READ_ONLY;
	}
	human_size(size, hs, sizeof(hs));
	printf("     size: %" PRIu64 " bytes (%s), logical block: %u bytes, largest request: "
	       "%u bytes\n", size, hs, bs, info->max_io_buf_bytes);
	if (!ours) {
		printf("     options: %s; made by another program (no state file)\n",
		       ro ? "read-only" : "read-write");
		return;
	}
	printf("     options: %s%s%s%s%s%s%s\n", ro ? "read-only" : "read-write",
	       st->o.recoverable ? ", recoverable" : "", st->o.direct ? ", direct" : "",
	       st->o.backing_outside ? ", allow-backing-outside" : "",
	       st->o.allow_network ? ", allow-network-backing" : "",
	       st->o.copy_on_read ? ", copy-on-read" : "", st->o.prefetch_rate ? ", prefetch" : "");
	ublk_state_path(id, ".json", path, sizeof(path));
	snprintf(sock, sizeof(sock), "%s", st->sock[0] ? st->sock : "-");
	printf("     state file: %s, socket: %s\n", path, sock);
}

static int dev_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "number", required_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char err[UBLK_ERRLEN], serr[UBLK_ERRLEN], feat[512], state[32];
	struct ublk_ctrl c;
	struct json_object *arr = NULL;
	bool json = false, verbose = false, found = false;
	int ids[256], n, i, c_, only = -1, ret = 1;

	opterr = 0;
	while ((c_ = getopt_long(argc, argv, ":n:vh", opts, NULL)) != -1) {
		switch (c_) {
		case OPT_OUTPUT:
			if (opt_output("dev list", optarg, &json))
				return 1;
			break;
		case 'n':
			if (opt_dev_id("dev list", optarg, &only))
				return 1;
			break;
		case 'v': verbose = true; break;
		case 'h': fputs(list_help, stdout); return 0;
		default: return opt_err("dev list", c_, argv);
		}
	}
	if (optind != argc)
		return usage_err("dev list", "too many arguments ('%s')", argv[optind]);
	if (ublk_ctrl_open(&c, err) < 0) {
		ucow_err("%s", err);
		return 1;
	}
	reap_dead(&c);
	n = ublk_state_ids(ids, 256);
	n = add_kernel_ids(ids, n, 256);
	if (json && !(arr = json_object_new_array())) {
		ucow_err("out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct ublk_state st;
		struct uk_dev_info info;
		int sr;
		bool ours;

		if (only >= 0 && ids[i] != only)
			continue;
		sr = ublk_state_read(ids[i], &st, serr);
		ours = sr == 0;
		if (sr < 0 && sr != -ENOENT)
			ucow_err("warning: %s", serr);
		if (ublk_ctrl_get_info(&c, (unsigned)ids[i], &info) < 0) {
			if (ours)
				remove_leftovers(ids[i]);	/* deleted behind our back */
			continue;
		}
		if (!ours) {	/* a device some other server made */
			memset(&st, 0, sizeof(st));
			strcpy(st.o.target, "-");
			st.pid = info.ublksrv_pid;
		}
		snprintf(state, sizeof(state), "%s%s", ublk_state_name(info.state),
			 pid_alive(st.pid) ? "" : ",no-server");
		features_str(info.flags, feat, sizeof(feat));
		if (json) {
			if (list_json_one(arr, ids[i], state, &st, &info, feat) < 0) {
				ucow_err("out of memory");
				goto out;
			}
		} else {
			if (!found)
				printf("%-4s %-20s %-6s %-6s %-5s %-8s %s\n", "ID", "STATE", "TARGET",
				       "QUEUES", "DEPTH", "PID", "FILE / FEATURES");
			printf("%-4d %-20s %-6s %-6u %-5u %-8d %s%s%s\n%52s%s\n", ids[i], state,
			       st.o.target, info.nr_hw_queues, info.queue_depth, (int)st.pid,
			       st.o.file[0] ? st.o.file : "-", st.o.snapshot[0] ? " @" : "",
			       st.o.snapshot, "", feat);
			if (verbose)
				list_verbose(&c, ids[i], ours, &st, &info);
		}
		found = true;
	}
	if (only >= 0 && !found) {
		ucow_err("no device %d", only);
		goto out;
	}
	if (!json && !found)
		printf("%-4s %-20s %-6s %-6s %-5s %-8s %s\n", "ID", "STATE", "TARGET", "QUEUES",
		       "DEPTH", "PID", "FILE / FEATURES");
	if (json)
		printf("%s\n", ublk_json_text(arr, true));
	ret = 0;
out:
	json_object_put(arr);
	ublk_ctrl_close(&c);
	return ret;
}

/* ---- recover, features, stats ------------------------------------------------------------ */

static int dev_recover(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "foreground", no_argument, NULL, OPT_FG },
		{ "number", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ublk_state st;
	struct ublk_dev *dev;
	char err[UBLK_ERRLEN];
	int c, id = -1, ret;
	bool fg = false;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":n:h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_FG: fg = true; break;
		case 'n':
			if (opt_dev_id("dev recover", optarg, &id))
				return 1;
			break;
		case 'h': fputs(recover_help, stdout); return 0;
		default: return opt_err("dev recover", c, argv);
		}
	}
	if (one_device("dev recover", argc, argv, &id))
		return 1;
	ret = ublk_state_read(id, &st, err);
	if (ret == -ENOENT) {
		ucow_err("no state for device %d in %s (was it added with 'ucow dev add'?)", id,
			 ublk_run_dir());
		return 1;
	}
	if (ret < 0) {
		ucow_err("%s", err);
		return 1;
	}
	if (pid_alive(st.pid) && wait_pid_exit(st.pid, 3000) < 0) {
		ucow_err("the server of device %d (pid %d) is still running", id, (int)st.pid);
		return 1;
	}
	dev = malloc(sizeof(*dev));
	if (!dev) {
		ucow_err("out of memory");
		return 1;
	}
	ublk_dev_init(dev);
	dev->o = st.o;
	dev->o.dev_id = id;
	dev->o.foreground = fg;
	if (!fg) {
		ret = spawn_server(dev, true, (unsigned)id);
	} else {
		ret = ublk_serve_recover(dev, (unsigned)id, -1);
		if (ret < 0 && !dev->live)
			ucow_err("%s", dev->err[0] ? dev->err : strerror(-ret));
		ret = ret < 0 ? 1 : 0;
	}
	free(dev);
	return ret;
}

static int dev_features(int argc, char **argv)
{
	char err[UBLK_ERRLEN];
	struct ublk_ctrl c;
	struct utsname u;
	uint64_t f;
	bool probed;
	unsigned b;
	int ret;

	if (argc > 1) {
		if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
			fputs(features_help, stdout);
			return 0;
		}
		if (argv[1][0] == '-' && argv[1][1])
			return usage_err("dev features", "unknown option '%s'", argv[1]);
		return usage_err("dev features", "too many arguments ('%s')", argv[1]);
	}
	if (ublk_ctrl_open(&c, err) < 0) {
		ucow_err("%s", err);
		return 1;
	}
	ret = ublk_ctrl_probe_features(&c, &f, &probed);
	if (ret < 0) {
		ucow_err("cannot query the ublk driver: %s", strerror(-ret));
		ublk_ctrl_close(&c);
		return 1;
	}
	uname(&u);
	printf("kernel: %s\n", u.release);
	printf("source: %s\n", probed ? "probe device (no GET_FEATURES: kernel before 6.5)" :
	       "GET_FEATURES");
	printf("control commands: %s\n", c.ioctl_encode ? "ioctl-encoded" : "plain opcodes");
	printf("features: 0x%" PRIx64 "\n", f);
	for (b = 0; b < 64; b++)
		if (f & (1ULL << b))
			printf("  %s\n", ublk_feature_name(b) ? ublk_feature_name(b) : "(unknown)");
	ublk_ctrl_close(&c);
	return 0;
}

static int dev_stats(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "number", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ublk_state st;
	struct json_object *reply = NULL, *v;
	bool json = false;
	char err[UBLK_ERRLEN];
	int c, id = -1, ret;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":n:h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_OUTPUT:
			if (opt_output("dev stats", optarg, &json))
				return 1;
			break;
		case 'n':
			if (opt_dev_id("dev stats", optarg, &id))
				return 1;
			break;
		case 'h': fputs(stats_help, stdout); return 0;
		default: return opt_err("dev stats", c, argv);
		}
	}
	if (one_device("dev stats", argc, argv, &id))
		return 1;
	ret = ublk_state_read(id, &st, err);
	if (ret < 0 && ret != -ENOENT) {
		ucow_err("%s", err);
		return 1;
	}
	if (ret < 0 || !st.sock[0]) {
		ucow_err("no served device %d", id);
		return 1;
	}
	ret = ublk_sock_call(st.sock, UBLK_OP_STATS, NULL, 5, &reply);
	if (ret == -EPROTO) {
		ucow_err("device %d: %s", id, ublk_sock_reply_error(reply));
	} else if (ret < 0) {
		ucow_err("device %d: cannot ask its server: %s", id, ret == -EBADMSG ?
			 "bad answer" : strerror(-ret));
	} else if (!json_object_object_get_ex(reply, json ? "stats" : "text", &v) ||
		   !json_object_is_type(v, json ? json_type_object : json_type_string)) {
		ucow_err("device %d: bad answer from its server", id);
		ret = -EBADMSG;
	} else if (json) {
		printf("%s\n", ublk_json_text(v, true));
	} else {
		fputs(json_object_get_string(v), stdout);
	}
	json_object_put(reply);
	return ret < 0 ? 1 : 0;
}

/* ---- serve, udev-name -------------------------------------------------------------------- */

#define CONF_MAX	(64 << 10)	/* bytes of NAME.conf */
#define CONF_ARGS	24

/* NAME.conf as the arguments of dev add: kept in one buffer, argv points into it */
struct conf_args {
	char buf[CONF_MAX + 1];
	char *argv[CONF_ARGS];
	int argc;
	bool recoverable;
	char prefetch[48];	/* "--prefetch" or "--prefetch=RATE" */
};

static int conf_push(struct conf_args *a, char *s)
{
	if (a->argc + 1 >= CONF_ARGS)
		return -E2BIG;
	a->argv[a->argc++] = s;
	a->argv[a->argc] = NULL;
	return 0;
}

/* One "key = value" of path:line into a: 0, or 1 after a one-line error. */
static int conf_entry(struct conf_args *a, const char *path, int line, char *key, char *val,
		      unsigned *seen)
{
	static const struct {
		const char *key, *opt;
		unsigned lo, hi;	/* a number's range; hi 0: not a number */
	} keys[] = {
		{ "image", NULL, 0, 0 }, { "target", "-t", 0, 0 },
		{ "queues", "-q", 1, UK_MAX_NR_QUEUES }, { "depth", "-d", 1, UK_MAX_QUEUE_DEPTH },
		{ "id", "-n", 0, 1048575 }, { "size", "-s", 0, 0 },
		{ "block-size", "--block-size", 0, 0 }, { "snapshot", "--snapshot", 0, 0 },
		{ "options", NULL, 0, 0 }, { "prefetch", NULL, 0, 0 },
	};
	unsigned i, v;
	char *p, *opt;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]) && strcmp(key, keys[i].key); i++)
		;
	if (i == sizeof(keys) / sizeof(keys[0])) {
		ucow_err("%s:%d: unknown key '%s' (image, target, queues, depth, id, size, "
			 "block-size, snapshot, options, prefetch)", path, line, key);
		return 1;
	}
	if (*seen & (1u << i)) {
		ucow_err("%s:%d: '%s' given twice", path, line, key);
		return 1;
	}
	*seen |= 1u << i;
	if (!*val) {
		ucow_err("%s:%d: '%s' has no value", path, line, key);
		return 1;
	}
	if (keys[i].hi && parse_uint(val, keys[i].lo, keys[i].hi, &v)) {
		ucow_err("%s:%d: invalid %s '%s' (%u..%u)", path, line, key, val, keys[i].lo,
			 keys[i].hi);
		return 1;
	}
	if (!strcmp(key, "image")) {
		if (val[0] != '/') {
			ucow_err("%s:%d: image '%s' is not an absolute path", path, line, val);
			return 1;
		}
		return conf_push(a, "-f") || conf_push(a, val) ? 1 : 0;
	}
	if (!strcmp(key, "prefetch")) {	/* on, or a rate: dev add checks the rate */
		if (strlen(val) > 32 || strchr(val, '=')) {
			ucow_err("%s:%d: invalid prefetch '%s' (on, or a rate such as 64M)", path,
				 line, val);
			return 1;
		}
		snprintf(a->prefetch, sizeof(a->prefetch), "--prefetch%s%s",
			 strcmp(val, "on") ? "=" : "", strcmp(val, "on") ? val : "");
		return conf_push(a, a->prefetch) ? 1 : 0;
	}
	if (strcmp(key, "options"))
		return conf_push(a, (char *)keys[i].opt) || conf_push(a, val) ? 1 : 0;
	for (p = val; (opt = strsep(&p, ","));) {
		static const char *const flags[] = { "--direct", "--read-only",
						     "--allow-backing-outside",
						     "--allow-network-backing", "--copy-on-read" };

		if (!strcmp(opt, "not-recoverable")) {
			a->recoverable = false;
			continue;
		}
		for (i = 0; i < 5 && strcmp(opt, flags[i] + 2); i++)
			;
		if (i == 5) {
			ucow_err("%s:%d: unknown option '%s' (direct, read-only, "
				 "allow-backing-outside, allow-network-backing, copy-on-read, "
				 "not-recoverable)", path, line, opt);
			return 1;
		}
		if (conf_push(a, (char *)flags[i]))
			return 1;
	}
	return 0;
}

/*
 * Read dir/name.conf into a (the arguments of dev add). A line is "key = value" (blanks
 * around either are dropped), a comment "# ..." or blank. 0, or 1 after a one-line error.
 */
static int conf_read(const char *dir, const char *name, struct conf_args *a)
{
	char path[4200], *p, *nl, *eq, *key, *val, *end;
	unsigned seen = 0;
	ssize_t n;
	size_t len = 0;
	int fd, line = 0, i;

	snprintf(path, sizeof(path), "%s/%s.conf", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ucow_err("%s: %s", path, strerror(errno));
		return 1;
	}
	while ((n = read(fd, a->buf + len, CONF_MAX - len)) > 0)
		len += (size_t)n;
	close(fd);
	if (n < 0) {
		ucow_err("%s: %s", path, strerror(errno));
		return 1;
	}
	if (len >= CONF_MAX) {
		ucow_err("%s: too large (at most %d bytes)", path, CONF_MAX - 1);
		return 1;
	}
	a->buf[len] = 0;
	if (strlen(a->buf) != len) {
		ucow_err("%s: a NUL byte in the file (not a text file)", path);
		return 1;
	}
	a->argc = 0;
	a->recoverable = true;
	if (conf_push(a, "dev add"))
		return 1;
	for (p = a->buf; p && *p; p = nl) {
		line++;
		nl = strchr(p, '\n');
		if (nl)
			*nl++ = 0;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '#')
			continue;
		eq = strchr(p, '=');
		if (!eq) {
			ucow_err("%s:%d: not 'key = value'", path, line);
			return 1;
		}
		key = p;
		for (end = eq; end > key && (end[-1] == ' ' || end[-1] == '\t'); end--)
			;
		*end = 0;
		for (val = eq + 1; *val == ' ' || *val == '\t'; val++)
			;
		for (end = val + strlen(val); end > val && strchr(" \t\r", end[-1]); end--)
			;
		*end = 0;
		if (conf_entry(a, path, line, key, val, &seen))
			return 1;
	}
	if (!(seen & 1)) {
		for (i = 1; i < a->argc; i++)
			if (!strcmp(a->argv[i], "-t") && !strcmp(a->argv[i + 1], "null"))
				break;
		if (i == a->argc) {
			ucow_err("%s: no 'image = FILE' (needed unless target = null)", path);
			return 1;
		}
	}
	/* a snapshot is served read-only and cannot be recovered (dev add refuses both) */
	if (a->recoverable && !(seen & (1u << 7)) && conf_push(a, "--recoverable"))
		return 1;
	if (conf_push(a, "--foreground")) {
		ucow_err("%s: too many keys", path);
		return 1;
	}
	return 0;
}

/* The device a `ucow dev serve NAME` made: its id, or -1. */
static int find_named(const char *name, struct ublk_state *st)
{
	int ids[256], n = ublk_state_ids(ids, 256), i;

	for (i = 0; i < n; i++)
		if (ublk_state_read(ids[i], st, NULL) == 0 && !strcmp(st->o.name, name))
			return ids[i];
	return -1;
}

static int dev_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config-dir", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = "/etc/ucow", *name;
	struct conf_args *a = NULL;
	struct ublk_state st;
	struct ublk_dev *dev;
	int c, id, ret = 1;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'C': dir = optarg; break;
		case 'h': fputs(serve_help, stdout); return 0;
		default: return opt_err("dev serve", c, argv);
		}
	}
	if (optind == argc)
		return usage_err("dev serve", "no NAME given");
	if (optind + 1 != argc)
		return usage_err("dev serve", "too many arguments ('%s')", argv[optind + 1]);
	name = argv[optind];
	if (!ublk_name_valid(name))
		return usage_err("dev serve", "invalid name '%s' (1 to %d bytes of A-Z a-z 0-9 _ . "
				 "-, not starting with . or -)", name, UBLK_NAME_MAX);
	if (!strcmp(name, "ucow"))	/* DIR/ucow.conf: the host's settings (net_conf_read) */
		return usage_err("dev serve", "the name 'ucow' is reserved (ucow.conf holds the "
				 "host's settings)");
	a = malloc(sizeof(*a));
	if (!a) {
		ucow_err("out of memory");
		return 1;
	}
	if (conf_read(dir, name, a))
		goto out;
	id = find_named(name, &st);
	if (id >= 0 && pid_alive(st.pid)) {
		ucow_err("%s is served already: /dev/ublkb%d (pid %d)", name, id, (int)st.pid);
		goto out;
	}
	if (id >= 0 && st.o.recoverable) {
		/* the server died (a crash, a kill): recover the device, do not add another */
		dev = malloc(sizeof(*dev));
		if (!dev) {
			ucow_err("out of memory");
			goto out;
		}
		ublk_dev_init(dev);
		dev->o = st.o;
		dev->o.dev_id = id;
		dev->o.foreground = true;
		ret = ublk_serve_recover(dev, (unsigned)id, -1);
		if (ret < 0 && !dev->live)
			ucow_err("%s: recovering /dev/ublkb%d: %s", name, id,
				 dev->err[0] ? dev->err : strerror(-ret));
		ret = ret < 0 ? 1 : 0;
		free(dev);
		goto out;
	}
	optind = 1;
	ret = dev_add_named(a->argc, a->argv, name);
out:
	free(a);
	return ret;
}

static int dev_udev_name(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ublk_state st;
	char err[UBLK_ERRLEN];
	int c, id = -1;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(udev_name_help, stdout);
			return 0;
		}
		return opt_err("dev udev-name", c, argv);
	}
	if (one_device("dev udev-name", argc, argv, &id))
		return 1;
	if (ublk_state_read(id, &st, err) < 0) {
		ucow_err("device %d: %s", id, err[0] ? err : "no state file");
		return 1;
	}
	if (!st.o.name[0]) {
		ucow_err("device %d has no name (not served by 'ucow dev serve')", id);
		return 1;
	}
	printf("%s\n", st.o.name);
	return 0;
}

int cmd_dev(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} sub[] = {
		{ "add", dev_add }, { "del", dev_del }, { "list", dev_list },
		{ "recover", dev_recover }, { "features", dev_features }, { "stats", dev_stats },
		{ "serve", dev_serve }, { "udev-name", dev_udev_name },
	};
	size_t i;

	if (argc < 2) {
		ucow_err("dev: no subcommand: add, del, list, recover, features, stats, serve or "
			 "udev-name (try "
			 "'ucow dev --help')");
		return 1;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		fputs(dev_help, stdout);
		return 0;
	}
	for (i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
		if (!strcmp(argv[1], sub[i].name)) {
			optind = 1;
			return sub[i].fn(argc - 1, argv + 1);
		}
	if (argv[1][0] == '-')
		ucow_err("dev: unknown option '%s' (try 'ucow dev --help')", argv[1]);
	else
		ucow_err("dev: unknown subcommand '%s': add, del, list, recover, features, "
			 "stats, serve or udev-name (try 'ucow dev --help')", argv[1]);
	return 1;
}
