/* SPDX-License-Identifier: MIT */
/* ucow snapshot: create, list, apply, delete internal snapshots (like qemu-img snapshot). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "cowcore.h"
#include "cmds.h"
#include "json_out.h"
#include "ublk.h"
#include "util.h"

static const char snapshot_help[] =
	"usage: ucow snapshot [-l | -c NAME | -a NAME | -d NAME] [--output=human|json] FILE\n"
	"\n"
	"Internal snapshots of a ucow image. Taking, applying and deleting a snapshot are the\n"
	"only operations that touch the snapshot reference counts: writes after a snapshot cost\n"
	"a copy of the chunk they change, never a refcount update.\n"
	"\n"
	"  -l              list the snapshots (the default): id, name, parent, date, disk usage\n"
	"  -c NAME         create a snapshot of the current state\n"
	"  -a NAME         apply: the current state becomes that snapshot's content (every\n"
	"                  snapshot is kept; later snapshots branch from it). On a served\n"
	"                  image only while nobody holds the device (not mounted, not open)\n"
	"  -d NAME         delete; its space is returned when nothing else references it\n"
	"  --output=FMT    human (default) or json, for -l\n"
	"  --allow-network-backing\n"
	"                  follow a backing image on an NBD server (an\n"
	"                  nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                  a read that needs that server fails after SEC\n"
	"                  seconds without it (default 30)\n"
	"  -h, --help      this help\n"
	"\n"
	"NAME is a snapshot's name or its numeric id. Disk usage is what deleting the snapshot\n"
	"would free.\n"
	"\n"
	"While FILE is served (ucow dev add), -l, -c and -d ask the serving process, which\n"
	"pauses the device's I/O for the moment the operation needs; -a applies only while\n"
	"nobody holds the device (not mounted, not open; the holder is named otherwise).\n";

/*
 * The snapshots as a JSON array, shared with `ucow info` (declared in cmds.h): one object per
 * snapshot, with qemu-img's keys where the meaning is the same (Documentation/cli.md).
 */
json_object *snapshot_list_json(const struct cow_snap_info *v, uint32_t n, bool *ok)
{
	json_object *a = jarr(ok), *o;

	for (uint32_t i = 0; i < n; i++) {
		o = jobj(ok);
		jadd_i64(o, "id", v[i].id, ok);
		jadd_str(o, "name", v[i].name, ok);
		jadd_u64(o, "vm-state-size", 0, ok);	/* a disk snapshot holds no VM state */
		jadd_u64(o, "date-sec", v[i].date_sec, ok);
		jadd_i64(o, "date-nsec", v[i].date_nsec, ok);
		jadd_i64(o, "parent", v[i].parent, ok);
		jadd_u64(o, "virtual-size", v[i].virtual_size, ok);
		jadd_u64(o, "disk-usage", v[i].disk_usage, ok);
		jadd_bool(o, "current-parent", v[i].current_parent, ok);
		jappend(a, o, ok);
	}
	return a;
}

/* `ucow snapshot -l --output=json`: the array and a newline. The exit status. */
static int snapshot_emit_json(const char *file, const struct cow_snap_info *v, uint32_t n)
{
	bool ok = true;
	json_object *a = snapshot_list_json(v, n, &ok);

	return json_emit(a, ok, file);
}

/*
 * The snapshot list: the human table under a "Snapshot list:" line (nothing when n is 0),
 * or the JSON array of snapshot_list_json() without a final newline, its lines after the
 * first prefixed with indent.
 */
void snapshot_print_list(const struct cow_snap_info *v, uint32_t n, bool json,
			 const char *indent)
{
	if (json) {
		bool ok = true;
		json_object *a = snapshot_list_json(v, n, &ok);
		int r = ok ? json_write(stdout, a, indent, false) : -ENOMEM;

		json_object_put(a);
		if (r < 0)
			ucow_err("cannot print the snapshot list: %s", strerror(-r));
		return;
	}
	if (!n)
		return;
	printf("Snapshot list:\n");
	printf("%-6s %-20s %-6s %-19s %12s\n", "ID", "TAG", "PARENT", "DATE", "DISK USAGE");
	for (uint32_t i = 0; i < n; i++) {
		char date[32], size[32], parent[16];
		time_t t = (time_t)v[i].date_sec;
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
		human_size(v[i].disk_usage, size, sizeof(size));
		snprintf(parent, sizeof(parent), "%u", v[i].parent);
		printf("%-6u %-20s %-6s %-19s %12s%s\n", v[i].id, v[i].name,
		       v[i].parent ? parent : "-", date, size, v[i].current_parent ? " *" : "");
	}
}

/*
 * Who holds /dev/ublkbID (whose rdev is dev): a device stacked on it (dm, md), a mount, or a
 * process with it open (not this one). 1 with who set, or 0: nobody that we can see.
 */
static int device_holder(int id, dev_t dev, char *who, size_t len)
{
	char path[64], line[4096], link[64];
	struct dirent *d;
	DIR *dir;
	FILE *f;
	int found = 0;

	snprintf(path, sizeof(path), "/sys/block/ublkb%d/holders", id);
	if ((dir = opendir(path))) {
		while (!found && (d = readdir(dir)))
			if (d->d_name[0] != '.') {
				snprintf(who, len, "used by /dev/%s", d->d_name);
				found = 1;
			}
		closedir(dir);
	}
	if (!found && (f = fopen("/proc/self/mountinfo", "r"))) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT ... */
		while (!found && fgets(line, sizeof(line), f)) {
			unsigned ma, mi;
			char mnt[2048];
			if (sscanf(line, "%*d %*d %u:%u %*s %2047s", &ma, &mi, mnt) == 3 &&
			    ma == major(dev) && mi == minor(dev)) {
				snprintf(who, len, "mounted on %s", mnt);
				found = 1;
			}
		}
		fclose(f);
	}
	if (!found && (dir = opendir("/proc"))) {
		while (!found && (d = readdir(dir))) {
			char *end;
			long pid = strtol(d->d_name, &end, 10);
			if (*end || pid <= 0 || pid == getpid())
				continue;
			snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
			DIR *fds = opendir(path);
			struct dirent *e;
			struct stat st;
			while (fds && !found && (e = readdir(fds))) {
				if (e->d_name[0] == '.')
					continue;
				snprintf(link, sizeof(link), "/proc/%ld/fd/%.20s", pid, e->d_name);
				if (stat(link, &st) || !S_ISBLK(st.st_mode) || st.st_rdev != dev)
					continue;
				char comm[64] = "?";
				snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
				FILE *c = fopen(path, "r");
				if (c) {
					if (fgets(comm, sizeof(comm), c))
						comm[strcspn(comm, "\n")] = 0;
					fclose(c);
				}
				snprintf(who, len, "open by %s (pid %ld)", comm, pid);
				found = 1;
			}
			if (fds)
				closedir(fds);
		}
		closedir(dir);
	}
	return found;
}

/*
 * Apply on a served image: the device's content changes at once, so nobody may hold it (a
 * file system or program on it would see its data change under it). The device is opened
 * O_EXCL for the whole operation (no mount can start meanwhile), its page cache written and
 * dropped before and dropped again after (the kernel must not serve what it read before).
 * Returns the exit status.
 */
static int apply_online(const char *file, int id, const char *sock, const char *name)
{
	struct json_object *resp = NULL;
	char dev[32], who[2200];
	struct stat st;
	int fd, r;

	snprintf(dev, sizeof(dev), "/dev/ublkb%d", id);
	fd = open(dev, O_RDONLY | O_EXCL | O_CLOEXEC);
	if (fd < 0) {
		r = errno;
		if (r == EBUSY && stat(dev, &st) == 0 && device_holder(id, st.st_rdev, who,
								       sizeof(who)))
			ucow_err("%s: %s is %s; snapshot -a needs a device nobody holds", file, dev,
				 who);
		else
			ucow_err("%s: %s: %s%s", file, dev, strerror(r), r == EBUSY ?
				 " (held exclusively); snapshot -a needs a device nobody holds" : "");
		return 1;
	}
	if (fstat(fd, &st) == 0 && device_holder(id, st.st_rdev, who, sizeof(who))) {
		ucow_err("%s: %s is %s; snapshot -a needs a device nobody holds", file, dev, who);
		close(fd);
		return 1;
	}
	if (fsync(fd) < 0 || ioctl(fd, BLKFLSBUF, 0) < 0) {
		ucow_err("%s: %s: dropping its page cache: %s", file, dev, strerror(errno));
		close(fd);
		return 1;
	}
	r = ublk_sock_call(sock, UBLK_OP_SNAP_APPLY, name, 300, &resp);
	if (r == -EPROTO && resp) {
		ucow_err("%s: %s", file, ublk_sock_reply_error(resp));
		ublk_sock_reply_free(resp);
		close(fd);
		return 1;
	}
	ublk_sock_reply_free(resp);
	if (r < 0) {
		ucow_err("%s: no answer from the server of %s: %s", file, dev, strerror(-r));
		close(fd);
		return 1;
	}
	r = ioctl(fd, BLKFLSBUF, 0) < 0 ? errno : 0;
	close(fd);
	if (r) {
		ucow_err("%s: applied, but %s kept its page cache (%s): read it with O_DIRECT or "
			 "echo 1 >/proc/sys/vm/drop_caches", file, dev, strerror(r));
		return 1;
	}
	return 0;
}

/*
 * FILE served by a ucow dev server: do it through the server's socket (it holds the image).
 * Returns the exit status, or -1 when FILE is not served (or its server does not answer):
 * then the caller opens the image itself.
 */
static int snapshot_online(const char *file, char action, const char *name, bool json)
{
	struct ublk_state st;
	struct json_object *resp = NULL;
	int id = ublk_server_of(file, &st), r;
	bool ro;

	if (id < 0)
		return -1;
	ro = st.o.read_only || st.o.snapshot[0];
	if (ro) {
		if (action == 'l')
			return -1;	/* read-only servers share the image with readers */
		ucow_err("%s: in use by /dev/ublkb%d, read-only (ucow dev del %d first)", file, id,
			 id);
		return 1;
	}
	if (!st.sock[0]) {
		if (action != 'a')
			return -1;
		ucow_err("%s: in use by /dev/ublkb%d, which has no control socket (ucow dev del %d "
			 "first)", file, id, id);
		return 1;
	}
	if (action == 'a')
		return apply_online(file, id, st.sock, name);
	r = ublk_sock_call(st.sock, action == 'c' ? UBLK_OP_SNAP_CREATE : action == 'd' ?
			   UBLK_OP_SNAP_DELETE : UBLK_OP_SNAP_LIST, name, 300, &resp);
	if (r == -EPROTO && resp) {
		ucow_err("%s: %s", file, ublk_sock_reply_error(resp));
		ublk_sock_reply_free(resp);
		return 1;
	}
	if (r == -ENOENT || r == -ECONNREFUSED)
		return -1;	/* the server just went away: the image is free again */
	if (r < 0) {
		ucow_err("%s: no answer from the server of /dev/ublkb%d: %s", file, id,
			 strerror(-r));
		return 1;
	}
	if (action == 'l') {
		struct cow_snap_info *v;
		uint32_t n;

		r = ublk_parse_snaps(resp, &v, &n);
		if (r < 0) {
			ucow_err("%s: bad answer from the server of /dev/ublkb%d", file, id);
			ublk_sock_reply_free(resp);
			return 1;
		}
		r = 0;
		if (json)
			r = snapshot_emit_json(file, v, n);
		else
			snapshot_print_list(v, n, false, "");
		free(v);
		free(resp);
		return r;
	}
	ublk_sock_reply_free(resp);
	return 0;
}

int cmd_snapshot(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256 };
	static const struct option opts[] = {
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	char action = 'l', err[COW_ERRLEN] = "";
	const char *name = NULL, *file;
	bool json = false;
	struct net_opts net = { 0 };
	int c, r, nactions = 0;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":lc:a:d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': case 'c': case 'a': case 'd':
			if (nactions++ && (action != 'l' || c != 'l'))
				return usage_err(argv[0], "give only one of -l, -c, -a, -d");
			action = (char)c;
			name = c == 'l' ? NULL : optarg;
			break;
		case OPT_OUTPUT:
			if (opt_output(argv[0], optarg, &json))
				return 1;
			break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("snapshot", c, optarg, &net))
				return 1;
			break;
		case 'h':
			fputs(snapshot_help, stdout);
			return 0;
		default:
			return opt_err(argv[0], c, argv);
		}
	}
	if (optind != argc - 1)
		return usage_err(argv[0], optind >= argc ? "missing FILE" : "too many arguments");
	file = argv[optind];
	if (name && !*name)
		return usage_err(argv[0], "the snapshot name is empty");
	if (action == 'c' && strlen(name) > 127) {
		/* the engine says the same; refusing here leaves the file unopened */
		ucow_err("%s: snapshot name must be 1 to 127 bytes", file);
		return 1;
	}

	r = snapshot_online(file, action, name, json);
	if (r >= 0)
		return r;

	struct cow_image *img;
	r = cow_open(file, &(struct cow_open_opts){ .fmt = COW_FMT_NONE,
			.flags = (action == 'l' ? COW_OPEN_RDONLY : 0) | net.flags,
			.net_timeout_ms = net.timeout_ms },
			&img, err, COW_ERRLEN);
	if (r) {
		report(file, file, r, err);
		return 1;
	}
	switch (action) {
	case 'c':
		r = cow_snapshot_create(img, name);
		break;
	case 'a':
		r = cow_snapshot_apply(img, name);
		break;
	case 'd':
		r = cow_snapshot_delete(img, name);
		break;
	default: {
		struct cow_snap_info *v;
		uint32_t n;
		r = cow_snapshot_list(img, &v, &n);
		if (!r) {
			if (json && snapshot_emit_json(file, v, n)) {
				free(v);
				cow_close(img);
				return 1;
			}
			if (!json)
				snapshot_print_list(v, n, false, "");
			free(v);
		}
	}
	}
	if (r) {
		report(file, file, r, cow_errmsg(img));
		cow_close(img);
		return 1;
	}
	r = cow_close(img);
	if (r) {
		report(file, file, r, "");
		return 1;
	}
	return 0;
}
