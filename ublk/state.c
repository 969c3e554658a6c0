/* SPDX-License-Identifier: MIT */
/*
 * Per-device state: $UCOW_RUN_DIR (default /run/ucow)/dev<ID>.json, written by the server
 * once the device is live (and again after a recovery), removed when the device is deleted.
 * `ucow dev list`, `del` and `recover` read it. It is written whole to a temporary name and
 * renamed, so readers never see half a file. One key per line; we parse only what we write.
 *
 *   {
 *     "id": 0,
 *     "pid": 1234,
 *     "target": "cow",
 *     "file": "/images/disk.ucow",
 *     "queues": 2,
 *     "depth": 128,
 *     "block_size": 512,
 *     "size": 1073741824,
 *     "direct": false, "read_only": false, "recoverable": true   (one per line)
 *     "features": 72,
 *     "socket": "/run/ucow/dev0.sock"
 *   }
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

#include "ublk.h"

const char *ublk_run_dir(void)
{
	const char *p = getenv("UCOW_RUN_DIR");

	return p && *p ? p : "/run/ucow";
}

int ublk_run_dir_make(void)
{
	if (mkdir(ublk_run_dir(), 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

void ublk_state_path(int id, const char *suffix, char *out, size_t len)
{
	snprintf(out, len, "%s/dev%d%s", ublk_run_dir(), id, suffix);
}

static void put_str(FILE *f, const char *key, const char *s)
{
	fprintf(f, "  \"%s\": \"", key);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fprintf(f, "\",\n");
}

int ublk_state_write(const struct ublk_state *st)
{
	char path[4200], tmp[4300];
	FILE *f;
	int fd, ret;

	ret = ublk_run_dir_make();
	if (ret < 0)
		return ret;
	ublk_state_path(st->id, ".json", path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		ret = -errno;
		close(fd);
		goto err;
	}
	fprintf(f, "{\n  \"id\": %d,\n  \"pid\": %d,\n", st->id, (int)st->pid);
	put_str(f, "target", st->o.target);
	put_str(f, "file", st->o.file);
	fprintf(f, "  \"queues\": %u,\n  \"depth\": %u,\n  \"block_size\": %u,\n"
		"  \"size\": %" PRIu64 ",\n", st->nr_queues, st->depth, st->o.block_size, st->size);
	fprintf(f, "  \"direct\": %s,\n  \"read_only\": %s,\n  \"recoverable\": %s,\n",
		st->o.direct ? "true" : "false", st->o.read_only ? "true" : "false",
		st->o.recoverable ? "true" : "false");
	fprintf(f, "  \"features\": %" PRIu64 ",\n", st->flags);
	if (st->o.snapshot[0])
		put_str(f, "snapshot", st->o.snapshot);
	put_str(f, "socket", st->sock);
	fprintf(f, "  \"version\": 1\n}\n");
	if (fflush(f) != 0 || ferror(f)) {
		ret = -EIO;
		fclose(f);
		goto err;
	}
	fclose(f);
	if (rename(tmp, path) < 0) {
		ret = -errno;
		goto err;
	}
	return 0;
err:
	unlink(tmp);
	return ret;
}

/* The text after "key": on its line, or NULL. */
static const char *find_key(const char *buf, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(buf, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	return p;
}

static int get_u64(const char *buf, const char *key, uint64_t *v)
{
	const char *p = find_key(buf, key);
	char *end;

	if (!p)
		return -ENOENT;
	*v = strtoull(p, &end, 10);
	return end == p ? -EINVAL : 0;
}

static bool get_bool(const char *buf, const char *key)
{
	const char *p = find_key(buf, key);

	return p && !strncmp(p, "true", 4);
}

static int get_str(const char *buf, const char *key, char *out, size_t len)
{
	const char *p = find_key(buf, key);
	size_t n = 0;

	if (!p || *p != '"')
		return -ENOENT;
	for (p++; *p && *p != '"' && *p != '\n'; p++) {
		char c = *p;

		if (c == '\\' && p[1] == 'u') {
			c = (char)strtol((char[]){ p[4], p[5], 0 }, NULL, 16);
			p += 5;
		} else if (c == '\\' && p[1]) {
			c = *++p;
		}
		if (n + 1 >= len)
			return -ENAMETOOLONG;
		out[n++] = c;
	}
	out[n] = 0;
	return 0;
}

int ublk_state_read(int id, struct ublk_state *st)
{
	char path[4200], buf[16384];
	uint64_t v;
	ssize_t n;
	int fd, ret;

	memset(st, 0, sizeof(*st));
	ublk_state_path(id, ".json", path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	ret = n < 0 ? -errno : 0;
	close(fd);
	if (ret)
		return ret;
	buf[n] = 0;
	if (get_u64(buf, "id", &v) || (int)v != id)
		return -EINVAL;
	st->id = id;
	st->o.dev_id = id;
	if (get_u64(buf, "pid", &v))
		return -EINVAL;
	st->pid = (pid_t)v;
	if (get_str(buf, "target", st->o.target, sizeof(st->o.target)) ||
	    get_str(buf, "file", st->o.file, sizeof(st->o.file)))
		return -EINVAL;
	if (!get_u64(buf, "queues", &v))
		st->nr_queues = st->o.nr_queues = (unsigned)v;
	if (!get_u64(buf, "depth", &v))
		st->depth = st->o.depth = (unsigned)v;
	if (!get_u64(buf, "block_size", &v))
		st->o.block_size = (unsigned)v;
	if (!get_u64(buf, "size", &v))
		st->size = st->o.size = v;
	if (!get_u64(buf, "features", &v))
		st->flags = v;
	st->o.direct = get_bool(buf, "direct");
	st->o.read_only = get_bool(buf, "read_only");
	st->o.recoverable = get_bool(buf, "recoverable");
	get_str(buf, "socket", st->sock, sizeof(st->sock));
	get_str(buf, "snapshot", st->o.snapshot, sizeof(st->o.snapshot));
	return 0;
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

		if (ublk_state_read(ids[i], &st) < 0 || strcmp(st.o.file, real))
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
