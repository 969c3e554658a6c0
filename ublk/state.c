/* SPDX-License-Identifier: MIT */
/*
 * Per-device state: $UCOW_RUN_DIR (default /run/ucow)/dev<ID>.json, written by the server
 * once the device is live (and again after a recovery), removed when the device is deleted.
 * `ucow dev list`, `del` and `recover` read it. It is written whole to a temporary name and
 * renamed, so readers never see half a file. JSON through json-c (json.c); a reader takes the
 * file as hostile: at most UBLK_STATE_MAX bytes, every field checked for its type and range,
 * unknown keys refused, and the error names the file.
 *
 *   {
 *     "version": 2,
 *     "id": 0,                          0..1048575, the N of devN.json
 *     "pid": 1234,                      1..4194304
 *     "target": "cow",                  cow, raw or null
 *     "file": "/images/disk.ucow",      absolute, < 4096 bytes; "" for null
 *     "snapshot": "s1",                 optional: the snapshot served, 1..127 bytes
 *     "name": "vm1",                    optional: ucow dev serve's NAME (ublk_name_valid)
 *     "queues": 2,                      1..4096
 *     "depth": 128,                     1..4096
 *     "block-size": 512,                512 or 4096
 *     "size": 1073741824,               bytes, 4096..2^62
 *     "direct": false, "read-only": false, "recoverable": true,
 *     "allow-backing-outside": false,   backing files outside FILE's folder followed
 *     "allow-network-backing": false,   optional: NBD URIs in FILE's chain followed
 *     "nbd-timeout-ms": 30000,          optional: 1..3600000, the wait for an NBD server
 *     "copy-on-read": false,            optional: reads copy backing data into FILE
 *     "prefetch-rate": 67108864,        optional: 4096..2^40, --prefetch's bytes a second
 *     "features": 72,                   negotiated flags, 0..2^62
 *     "socket": "/run/ucow/dev0.sock"   < 108 bytes; "" if there is none
 *   }
 *
 * "file" and "snapshot" are byte strings: not valid UTF-8, they come with "file-hex" /
 * "snapshot-hex" (json.c), which the reader prefers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "ublk.h"

#define STATE_VERSION 2
#define MAX_DEV_ID 1048575
#define MAX_PID 4194304		/* PID_MAX_LIMIT */
#define MAX_SIZE (1ll << 62)

const char *ublk_run_dir(void)
{
	const char *p = getenv("UCOW_RUN_DIR");

	return p && *p ? p : "/run/ucow";
}

/*
 * The run folder holds the state files and sockets that root's commands trust: it must be
 * a real folder (not a symbolic link), ours, writable by nobody else. Then nobody else can
 * plant a link where a state file or socket is created.
 */
int ublk_run_dir_make(void)
{
	struct stat st;
	if (mkdir(ublk_run_dir(), 0700) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(ublk_run_dir(), &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (st.st_uid != geteuid() || (st.st_mode & 022))
		return -EPERM;
	return 0;
}

void ublk_state_path(int id, const char *suffix, char *out, size_t len)
{
	snprintf(out, len, "%s/dev%d%s", ublk_run_dir(), id, suffix);
}

bool ublk_name_valid(const char *name)
{
	size_t n = strlen(name), i;

	if (n < 1 || n > UBLK_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
			    name[i]))
			return false;
	return true;
}

char *ublk_state_encode(const struct ublk_state *st)
{
	struct json_object *o = json_object_new_object();
	char *text = NULL;
	int r = 0;

	if (!o)
		return NULL;
	r |= json_object_object_add(o, "version", json_object_new_int(STATE_VERSION));
	r |= json_object_object_add(o, "id", json_object_new_int(st->id));
	r |= json_object_object_add(o, "pid", json_object_new_int((int)st->pid));
	r |= json_object_object_add(o, "target", json_object_new_string(st->o.target));
	r |= ublk_json_add_bytes(o, "file", st->o.file);
	if (st->o.snapshot[0])
		r |= ublk_json_add_bytes(o, "snapshot", st->o.snapshot);
	if (st->o.name[0])
		r |= json_object_object_add(o, "name", json_object_new_string(st->o.name));
	r |= json_object_object_add(o, "queues", json_object_new_int64(st->nr_queues));
	r |= json_object_object_add(o, "depth", json_object_new_int64(st->depth));
	r |= json_object_object_add(o, "block-size", json_object_new_int64(st->o.block_size));
	r |= json_object_object_add(o, "size", json_object_new_int64((int64_t)st->size));
	r |= json_object_object_add(o, "direct", json_object_new_boolean(st->o.direct));
	r |= json_object_object_add(o, "read-only", json_object_new_boolean(st->o.read_only));
	r |= json_object_object_add(o, "recoverable",
				    json_object_new_boolean(st->o.recoverable));
	r |= json_object_object_add(o, "allow-backing-outside",
				    json_object_new_boolean(st->o.backing_outside));
	if (st->o.allow_network)
		r |= json_object_object_add(o, "allow-network-backing",
					    json_object_new_boolean(true));
	if (st->o.nbd_timeout_ms)
		r |= json_object_object_add(o, "nbd-timeout-ms",
					    json_object_new_int64(st->o.nbd_timeout_ms));
	if (st->o.copy_on_read)
		r |= json_object_object_add(o, "copy-on-read", json_object_new_boolean(true));
	if (st->o.prefetch_rate)
		r |= json_object_object_add(o, "prefetch-rate",
					    json_object_new_int64((int64_t)st->o.prefetch_rate));
	r |= json_object_object_add(o, "features", json_object_new_int64((int64_t)st->flags));
	r |= ublk_json_add_bytes(o, "socket", st->sock);
	if (!r) {
		const char *t = ublk_json_text(o, true);

		text = t ? malloc(strlen(t) + 2) : NULL;
		if (text)
			sprintf(text, "%s\n", t);
	}
	json_object_put(o);
	return text;
}

int ublk_state_write(const struct ublk_state *st)
{
	char path[4200], tmp[4300], *text;
	size_t len, off = 0;
	int fd, ret;

	ret = ublk_run_dir_make();
	if (ret < 0)
		return ret;
	text = ublk_state_encode(st);
	if (!text)
		return -ENOMEM;
	len = strlen(text);
	ublk_state_path(st->id, ".json", path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
	unlink(tmp);	/* a leftover of a dead process with our pid */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		free(text);
		return ret;
	}
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	free(text);
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

static const char *const state_keys[] = {
	"version", "id", "pid", "target", "file", "file-hex", "snapshot", "snapshot-hex", "name",
	"queues", "depth", "block-size", "size", "direct", "read-only", "recoverable",
	"allow-backing-outside", "allow-network-backing", "nbd-timeout-ms", "copy-on-read",
	"prefetch-rate", "features", "socket",
	"socket-hex", NULL,
};

int ublk_state_decode(const char *buf, size_t len, struct ublk_state *st, char *err,
		      size_t errlen)
{
	struct json_object *o;
	const struct ublk_tgt_ops *tgt;
	int64_t v;
	int r;

	memset(st, 0, sizeof(*st));
	o = ublk_json_parse(buf, len, UBLK_STATE_MAX, err, errlen);
	if (!o)
		return -EINVAL;
	r = ublk_json_only_keys(o, state_keys, err, errlen);
	if (r)
		goto out;
	r = ublk_json_get_int(o, "version", 0, INT32_MAX, &v, err, errlen);
	if (!r && v != STATE_VERSION) {
		snprintf(err, errlen, "\"version\": %" PRId64 ", this ucow reads %d", v,
			 STATE_VERSION);
		r = -EINVAL;
	}
	if (r)
		goto out;
	if ((r = ublk_json_get_int(o, "id", 0, MAX_DEV_ID, &v, err, errlen)))
		goto out;
	st->id = st->o.dev_id = (int)v;
	if ((r = ublk_json_get_int(o, "pid", 1, MAX_PID, &v, err, errlen)))
		goto out;
	st->pid = (pid_t)v;
	if ((r = ublk_json_get_bytes(o, "target", st->o.target, sizeof(st->o.target), err,
				     errlen)))
		goto out;
	tgt = ublk_tgt_find(st->o.target);
	if (!tgt) {
		snprintf(err, errlen, "\"target\": unknown target");
		r = -EINVAL;
		goto out;
	}
	if ((r = ublk_json_get_bytes(o, "file", st->o.file, sizeof(st->o.file), err, errlen)))
		goto out;
	if (tgt->needs_file ? st->o.file[0] != '/' : st->o.file[0] != 0) {
		snprintf(err, errlen, "\"file\": %s", tgt->needs_file ? "not an absolute path" :
			 "the null target has no file");
		r = -EINVAL;
		goto out;
	}
	r = ublk_json_get_bytes(o, "snapshot", st->o.snapshot, sizeof(st->o.snapshot), err,
				errlen);
	if (r == -ENOENT) {
		r = 0;
		if (err && errlen)
			err[0] = 0;
	} else if (!r && !st->o.snapshot[0]) {
		snprintf(err, errlen, "\"snapshot\": empty");
		r = -EINVAL;
	}
	if (r)
		goto out;
	r = ublk_json_get_bytes(o, "name", st->o.name, sizeof(st->o.name), err, errlen);
	if (r == -ENOENT) {
		r = 0;
		if (err && errlen)
			err[0] = 0;
	} else if (!r && !ublk_name_valid(st->o.name)) {
		snprintf(err, errlen, "\"name\": not a device name (1 to %d bytes of A-Z a-z 0-9 "
			 "_ . -)", UBLK_NAME_MAX);
		r = -EINVAL;
	}
	if (r)
		goto out;
	if ((r = ublk_json_get_int(o, "queues", 1, UK_MAX_NR_QUEUES, &v, err, errlen)))
		goto out;
	st->nr_queues = st->o.nr_queues = (unsigned)v;
	if ((r = ublk_json_get_int(o, "depth", 1, UK_MAX_QUEUE_DEPTH, &v, err, errlen)))
		goto out;
	st->depth = st->o.depth = (unsigned)v;
	if ((r = ublk_json_get_int(o, "block-size", 512, 4096, &v, err, errlen)))
		goto out;
	if (v != 512 && v != 4096) {
		snprintf(err, errlen, "\"block-size\": not 512 or 4096");
		r = -EINVAL;
		goto out;
	}
	st->o.block_size = (unsigned)v;
	if ((r = ublk_json_get_int(o, "size", 4096, MAX_SIZE, &v, err, errlen)))
		goto out;
	st->size = (uint64_t)v;
	if (!tgt->needs_file)
		st->o.size = st->size;
	if ((r = ublk_json_get_bool(o, "direct", &st->o.direct, err, errlen)) ||
	    (r = ublk_json_get_bool(o, "read-only", &st->o.read_only, err, errlen)) ||
	    (r = ublk_json_get_bool(o, "recoverable", &st->o.recoverable, err, errlen)) ||
	    (r = ublk_json_get_bool(o, "allow-backing-outside", &st->o.backing_outside, err,
				    errlen)))
		goto out;
	/* optional (files written before them have neither) */
	if (json_object_object_get_ex(o, "allow-network-backing", NULL) &&
	    (r = ublk_json_get_bool(o, "allow-network-backing", &st->o.allow_network, err,
				    errlen)))
		goto out;
	if (json_object_object_get_ex(o, "copy-on-read", NULL) &&
	    (r = ublk_json_get_bool(o, "copy-on-read", &st->o.copy_on_read, err, errlen)))
		goto out;
	if (json_object_object_get_ex(o, "prefetch-rate", NULL)) {
		if ((r = ublk_json_get_int(o, "prefetch-rate", 4096, 1ll << 40, &v, err, errlen)))
			goto out;
		st->o.prefetch_rate = (uint64_t)v;
	}
	if (json_object_object_get_ex(o, "nbd-timeout-ms", NULL)) {
		if ((r = ublk_json_get_int(o, "nbd-timeout-ms", 1, COW_NET_TIMEOUT_MAX_MS, &v, err,
					   errlen)))
			goto out;
		st->o.nbd_timeout_ms = (uint32_t)v;
	}
	if ((r = ublk_json_get_int(o, "features", 0, MAX_SIZE, &v, err, errlen)))
		goto out;
	st->flags = (uint64_t)v;
	r = ublk_json_get_bytes(o, "socket", st->sock, sizeof(st->sock), err, errlen);
	if (!r && st->sock[0] && st->sock[0] != '/') {
		snprintf(err, errlen, "\"socket\": not an absolute path");
		r = -EINVAL;
	}
out:
	json_object_put(o);
	return r ? (r == -ENOMEM ? r : -EINVAL) : 0;
}

int ublk_state_read(int id, struct ublk_state *st, char *err)
{
	char path[4200], why[UBLK_ERRLEN] = "", *buf;
	struct stat sb;
	ssize_t n;
	size_t off = 0;
	int fd, ret = 0;

	memset(st, 0, sizeof(*st));
	if (err)
		err[0] = 0;
	ublk_state_path(id, ".json", path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		if (err)
			snprintf(err, UBLK_ERRLEN, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &sb) < 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size > UBLK_STATE_MAX) {
		snprintf(why, sizeof(why), !S_ISREG(sb.st_mode) ? "not a regular file" :
			 "too long (%lld bytes, at most %d)", (long long)sb.st_size,
			 UBLK_STATE_MAX);
		ret = -EINVAL;
		goto out;
	}
	buf = malloc(UBLK_STATE_MAX + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	/* the size may change under us: read one byte past the limit at most */
	while (off <= UBLK_STATE_MAX) {
		n = read(fd, buf + off, UBLK_STATE_MAX + 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0)
			break;
		off += (size_t)n;
	}
	if (!ret) {
		ret = ublk_state_decode(buf, off, st, why, sizeof(why));
		if (!ret && st->id != id) {
			snprintf(why, sizeof(why), "\"id\" is %d, not %d", st->id, id);
			ret = -EINVAL;
		}
	}
	free(buf);
out:
	close(fd);
	if (ret < 0) {
		if (err)
			snprintf(err, UBLK_ERRLEN, "%s: %s%s", path, why[0] ? "bad state file: " :
				 "", why[0] ? why : strerror(-ret));
		memset(st, 0, sizeof(*st));
	}
	return ret;
}

void ublk_state_remove(int id)
{
	char path[4200];

	ublk_state_path(id, ".json", path, sizeof(path));
	unlink(path);
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

int ublk_state_ids(int *ids, int max)
{
	DIR *d = opendir(ublk_run_dir());
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) && n < max) {
		char *end;
		long id;

		if (strncmp(de->d_name, "dev", 3))
			continue;
		id = strtol(de->d_name + 3, &end, 10);
		if (end == de->d_name + 3 || strcmp(end, ".json") || id < 0)
			continue;
		ids[n++] = (int)id;
	}
	closedir(d);
	qsort(ids, n, sizeof(*ids), cmp_int);
	return n;
}

int ublk_server_of(const char *file, struct ublk_state *out)
{
	char real[4096];
	int ids[256], n, i, found = -ENOENT;

	if (!realpath(file, real))
		return -errno;
	n = ublk_state_ids(ids, 256);
	for (i = 0; i < n; i++) {
		struct ublk_state st;

		if (ublk_state_read(ids[i], &st, NULL) < 0 || strcmp(st.o.file, real))
			continue;
		if (kill(st.pid, 0) < 0 && errno == ESRCH)
			continue;
		if (found >= 0 && (st.o.read_only || st.o.snapshot[0]))
			continue;	/* a read-write server wins over read-only ones */
		*out = st;
		found = ids[i];
		if (!st.o.read_only && !st.o.snapshot[0])
			break;
	}
	return found;
}

int ublk_served_by(const char *file, char *sock, size_t len)
{
	struct ublk_state st;
	int id = ublk_server_of(file, &st);

	if (id < 0 || !st.sock[0])
		return id < 0 ? id : -ENOENT;
	snprintf(sock, len, "%s", st.sock);
	return id;
}
