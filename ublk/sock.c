/* SPDX-License-Identifier: MIT */
/*
 * The per-device control socket: $UCOW_RUN_DIR/dev<ID>.sock, a unix stream socket, mode
 * 0600 in a 0700 folder, and the peer must be root (or the server's own user).
 *
 * Protocol (one request per connection, text):
 *   client: one line "<command> [argument]\n"
 *   server: "ok\n" then the payload, or "error <message>\n"; then it closes.
 * Commands:
 *   ping            -> "ok\npong\n"
 *   stats           -> per-operation I/O counts, bytes, latency percentiles (table)
 *   stats-json      -> the same as one JSON object
 *   info            -> the image as the server sees it (engine info and stats), JSON
 *   image-info      -> `ucow info` on a served image: "KEY VALUE" lines (struct cow_info),
 *                      then its snapshots as "snap ..." lines (below), then "pause_us N"
 *   snapshot-list   -> "snap ID PARENT SEC NSEC VSIZE USAGE CURRENT NAME" lines, "pause_us N"
 *   snapshot-create NAME, snapshot-delete NAME -> "pause_us N"
 * Names travel escaped (%XX for '%', controls, space and bytes >= 0x7f). Snapshot create and
 * delete pause the queues (ublk_dev_pause) around the engine call: cowcore wants no request
 * in flight while they switch tables; N is the pause in microseconds. A list runs with the
 * queues going (it reads under the image lock, which every table update holds): N is 0.
 * Errors: "error MESSAGE" with the engine's text (without the file name in front).
 * Served from the control thread, between signals: never on the data path.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#include <inttypes.h>

#include "ublk.h"

#define SOCK_PAUSE_TIMEOUT_MS 10000

/* ---- names on the wire ------------------------------------------------------------------- */

static void esc_name(const char *in, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *in && o + 4 < len; in++) {
		unsigned char c = (unsigned char)*in;

		if (c <= ' ' || c == '%' || c >= 0x7f) {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Up to a space, newline or the end. Returns where it stopped. */
static const char *unesc_name(const char *in, char *out, size_t len)
{
	size_t o = 0;

	for (; *in && *in != ' ' && *in != '\n'; in++) {
		char c = *in;

		if (c == '%' && hexval(in[1]) >= 0 && hexval(in[2]) >= 0) {
			c = (char)(hexval(in[1]) << 4 | hexval(in[2]));
			in += 2;
		}
		if (o + 1 < len)
			out[o++] = c;
	}
	out[o] = 0;
	return in;
}

/* ---- the server side --------------------------------------------------------------------- */

struct sbuf {
	char *p;
	size_t len, off;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->off >= b->len)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->off, b->len - b->off, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->off += (size_t)n < b->len - b->off ? (size_t)n : b->len - b->off - 1;
}

/* The engine's error text without "PATH: " in front (the client names the file itself). */
static const char *eng_err(struct ublk_dev *dev, int r)
{
	const char *m = cow_errmsg(dev->tgt_data);
	size_t pl = strlen(dev->o.file);

	if (!m || !*m)
		return strerror(-r);
	if (!strncmp(m, dev->o.file, pl) && !strncmp(m + pl, ": ", 2))
		m += pl + 2;
	return m;
}

static void put_snaps(struct sbuf *b, const struct cow_snap_info *v, uint32_t n)
{
	char name[400];

	for (uint32_t i = 0; i < n; i++) {
		esc_name(v[i].name, name, sizeof(name));
		sb_printf(b, "snap %u %u %" PRIu64 " %u %" PRIu64 " %" PRIu64 " %d %s\n", v[i].id,
			  v[i].parent, v[i].date_sec, v[i].date_nsec, v[i].virtual_size,
			  v[i].disk_usage, v[i].current_parent ? 1 : 0, name);
	}
}

/* A snapshot request, with the queues paused around the engine call. */
static void sock_snapshot(struct ublk_dev *dev, const char *req, struct sbuf *b)
{
	struct cow_image *img = dev->tgt_data;
	struct cow_snap_info *v = NULL;
	char err[UBLK_ERRLEN], name[256] = "";
	uint32_t n = 0;
	uint64_t ns;
	const char *arg = strchr(req, ' ');
	bool list = !strcmp(req, "snapshot-list") || !strcmp(req, "image-info");
	bool create = !strncmp(req, "snapshot-create ", 16);
	bool del = !strncmp(req, "snapshot-delete ", 16);
	struct cow_info in;
	int r = 0;

	if (!img || (dev->tgt != &ublk_tgt_cow && strcmp(req, "image-info"))) {
		sb_printf(b, "error the %s target has no snapshots\n", dev->tgt->name);
		return;
	}
	if (!list && !create && !del) {
		sb_printf(b, "error unknown request '%.64s'\n", req);
		return;
	}
	cow_get_info(img, &in);
	if ((create || del) && (dev->o.read_only || dev->o.snapshot[0])) {
		sb_printf(b, "error served read-only by /dev/ublkb%u (ucow dev del %u first)\n",
			  dev->info.dev_id, dev->info.dev_id);
		return;
	}
	if (arg)
		unesc_name(arg + 1, name, sizeof(name));
	if (!strcmp(req, "image-info")) {
		sb_printf(b, "format %s\nvirtual_size %" PRIu64 "\nfile_size %" PRIu64
			  "\ndisk_usage %" PRIu64 "\nchunk_size %u\nblock_size %u\nnr_chunks %"
			  PRIu64 "\nallocated_chunks %" PRIu64 "\nzero_chunks %" PRIu64
			  "\njournal_size %" PRIu64 "\njournal_used %" PRIu64 "\nsnapshots %u"
			  "\ndirty %d\ncorrupt %d\nread_only %d\nbacking_fmt %d\n",
			  cow_fmt_name(in.fmt), in.virtual_size, in.file_size, in.disk_usage,
			  in.chunk_size, in.block_size, in.nr_chunks, in.allocated_chunks,
			  in.zero_chunks, in.journal_size, in.journal_used, in.nb_snapshots,
			  in.dirty, in.corrupt, in.read_only, in.backing_fmt);
		if (in.backing) {
			char eb[3 * 4096 + 1];

			esc_name(in.backing, eb, sizeof(eb));
			sb_printf(b, "backing %s\n", eb);
		}
		if (!in.nb_snapshots)
			return;
	}
	if (list) {
		r = cow_snapshot_list(img, &v, &n);
		ns = 0;
	} else {
		r = ublk_dev_pause(dev, create ? UBLK_PAUSE_CREATE : UBLK_PAUSE_DELETE,
				   SOCK_PAUSE_TIMEOUT_MS, err);
		if (r < 0) {
			b->off = 0;
			sb_printf(b, "error cannot pause the device: %s\n", err);
			return;
		}
		r = create ? cow_snapshot_create(img, name) : cow_snapshot_delete(img, name);
		ns = ublk_dev_resume(dev);
	}
	if (r < 0) {
		b->off = 0;
		sb_printf(b, "error %s\n", eng_err(dev, r));
		fprintf(stderr, "ucow: %s failed (pause %.3f ms): %s\n", req, ns / 1e6,
			eng_err(dev, r));
		return;
	}
	put_snaps(b, v, n);
	free(v);
	sb_printf(b, "pause_us %" PRIu64 "\n", (ns + 500) / 1000);
}

/* ---- the client side: parsing what sock_snapshot wrote ------------------------------------ */

int ublk_parse_snaps(const char *p, struct cow_snap_info **out, uint32_t *nout)
{
	struct cow_snap_info *v = NULL;
	uint32_t n = 0, cap = 0;

	*out = NULL;
	*nout = 0;
	for (; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		struct cow_snap_info s;
		int cur, k;

		if (strncmp(p, "snap ", 5))
			continue;
		memset(&s, 0, sizeof(s));
		if (sscanf(p + 5, "%u %u %" SCNu64 " %u %" SCNu64 " %" SCNu64 " %d %n", &s.id,
			   &s.parent, &s.date_sec, &s.date_nsec, &s.virtual_size, &s.disk_usage,
			   &cur, &k) != 7) {
			free(v);
			return -EPROTO;
		}
		s.current_parent = cur;
		unesc_name(p + 5 + k, s.name, sizeof(s.name));
		if (n == cap) {
			struct cow_snap_info *g;

			cap = cap ? cap * 2 : 16;
			g = realloc(v, cap * sizeof(*v));
			if (!g) {
				free(v);
				return -ENOMEM;
			}
			v = g;
		}
		v[n++] = s;
	}
	*out = v;
	*nout = n;
	return 0;
}

static const char *payload_val(const char *p, const char *key)
{
	size_t kl = strlen(key);

	for (; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, key, kl) && p[kl] == ' ')
			return p + kl + 1;
	return NULL;
}

static uint64_t payload_u64(const char *p, const char *key)
{
	const char *v = payload_val(p, key);

	return v ? strtoull(v, NULL, 10) : 0;
}

int ublk_parse_info(const char *p, struct cow_info *in, char *backing, size_t blen)
{
	const char *v = payload_val(p, "format");
	char fmt[16] = "";

	memset(in, 0, sizeof(*in));
	if (!v)
		return -EPROTO;
	unesc_name(v, fmt, sizeof(fmt));
	in->fmt = cow_fmt_parse(fmt);
	in->virtual_size = payload_u64(p, "virtual_size");
	in->file_size = payload_u64(p, "file_size");
	in->disk_usage = payload_u64(p, "disk_usage");
	in->chunk_size = (uint32_t)payload_u64(p, "chunk_size");
	in->block_size = (uint32_t)payload_u64(p, "block_size");
	in->nr_chunks = payload_u64(p, "nr_chunks");
	in->allocated_chunks = payload_u64(p, "allocated_chunks");
	in->zero_chunks = payload_u64(p, "zero_chunks");
	in->journal_size = payload_u64(p, "journal_size");
	in->journal_used = payload_u64(p, "journal_used");
	in->nb_snapshots = (uint32_t)payload_u64(p, "snapshots");
	in->dirty = payload_u64(p, "dirty");
	in->corrupt = payload_u64(p, "corrupt");
	in->read_only = payload_u64(p, "read_only");
	in->backing_fmt = (int)payload_u64(p, "backing_fmt");
	v = payload_val(p, "backing");
	if (v && blen) {
		unesc_name(v, backing, blen);
		in->backing = backing;
	}
	return 0;
}

int ublk_parse_pause_us(const char *p, uint64_t *us)
{
	const char *v = payload_val(p, "pause_us");

	if (!v)
		return -ENOENT;
	*us = strtoull(v, NULL, 10);
	return 0;
}

int ublk_sock_listen(struct ublk_dev *dev, char *path, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	ublk_state_path((int)dev->info.dev_id, ".sock", path, len);
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 8) < 0) {
		int ret = -errno;

		close(fd);
		unlink(path);
		return ret;
	}
	return fd;
}

static void sock_reply(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len) {
		ssize_t n = write(fd, s, len);

		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

void ublk_sock_serve(struct ublk_dev *dev, int lfd)
{
	struct timeval tv = { .tv_sec = 3 };
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	char req[512], *resp;
	size_t rlen = 64 << 10;
	ssize_t n;
	int fd;

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		sock_reply(fd, "error permission denied\n");
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	n = read(fd, req, sizeof(req) - 1);
	if (n <= 0)
		goto out;
	req[n] = 0;
	req[strcspn(req, "\r\n")] = 0;
	if (dev->tgt == &ublk_tgt_cow && dev->tgt_data) {
		struct cow_info in;

		cow_get_info(dev->tgt_data, &in);
		rlen += (size_t)in.nb_snapshots * 512;	/* a "snap" line each */
	}
	resp = malloc(rlen);
	if (!resp)
		goto out;
	strcpy(resp, "ok\n");
	if (!strcmp(req, "ping")) {
		strcat(resp, "pong\n");
	} else if (!strcmp(req, "stats") || !strcmp(req, "stats-json")) {
		ublk_stats_format(dev, resp + 3, rlen - 3, !strcmp(req, "stats-json"));
	} else if (!strcmp(req, "info")) {
		if (!dev->tgt->info || dev->tgt->info(dev, resp + 3, rlen - 4) < 0)
			snprintf(resp, rlen, "error the %s target has no image\n", dev->tgt->name);
		else
			strcat(resp, "\n");
	} else if (!strncmp(req, "snapshot-", 9) || !strcmp(req, "image-info")) {
		struct sbuf b = { resp + 3, rlen - 3, 0 };

		sock_snapshot(dev, req, &b);
		if (!strncmp(resp + 3, "error ", 6))
			memmove(resp, resp + 3, strlen(resp + 3) + 1);
	} else {
		snprintf(resp, rlen, "error unknown request '%.64s'\n", req);
	}
	sock_reply(fd, resp);
	free(resp);
out:
	close(fd);
}

/* ublk_sock_call into a caller's buffer (truncated to len), with a 5 s timeout. */
int ublk_sock_request(const char *path, const char *req, char *resp, size_t len)
{
	char *out = NULL;
	int ret = ublk_sock_call(path, req, 5, &out);

	if (len)
		snprintf(resp, len, "%s", out ? out : "");
	free(out);
	return ret;
}

int ublk_sock_call(const char *path, const char *req, int timeout_s, char **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout_s };
	size_t off = 0, cap = 64 << 10;
	char line[1024], *resp;
	ssize_t n;
	int fd, ret = 0;

	*out = NULL;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (strlen(req) + 2 > sizeof(line) || strlen(req) + 2 > 512)
		return -E2BIG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		goto out;
	}
	snprintf(line, sizeof(line), "%s\n", req);
	sock_reply(fd, line);
	resp = malloc(cap);
	if (!resp) {
		ret = -ENOMEM;
		goto out;
	}
	for (;;) {
		if (off + 1 >= cap) {
			char *g = realloc(resp, cap * 2);

			if (!g) {
				free(resp);
				ret = -ENOMEM;
				goto out;
			}
			resp = g;
			cap *= 2;
		}
		n = read(fd, resp + off, cap - off - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;	/* EAGAIN: the timeout */
			free(resp);
			goto out;
		}
		if (n == 0)
			break;
		off += (size_t)n;
	}
	resp[off] = 0;
	if (!strncmp(resp, "ok\n", 3)) {
		memmove(resp, resp + 3, off - 2);
	} else if (!strncmp(resp, "error ", 6)) {
		memmove(resp, resp + 6, off - 5);
		resp[strcspn(resp, "\n")] = 0;
		ret = -EPROTO;
	} else {
		free(resp);
		ret = off ? -EPROTO : -ECONNRESET;
		goto out;
	}
	*out = resp;
out:
	close(fd);
	return ret;
}

void ublk_sock_escape(const char *name, char *out, size_t len)
{
	esc_name(name, out, len);
}
