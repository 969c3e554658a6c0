/* SPDX-License-Identifier: MIT */
/*
 * The per-device control socket, server side: $UCOW_RUN_DIR/dev<ID>.sock, a unix stream
 * socket, mode 0600 in a 0700 folder, and the peer must be root (or the server's own user).
 *
 * One request per connection: the client sends one JSON object and a newline, the server
 * answers one JSON object and a newline, then closes (messages: sock_proto.c; the client:
 * sock_client.c). A request over UBLK_SOCK_REQ_MAX bytes, malformed, or naming an unknown
 * op gets {"ok": false, "error": ...}; a client that has not sent its request within 3 s
 * is dropped.
 *
 * Snapshot create, delete and apply, and resize, pause the queues (ublk_dev_pause) around the
 * engine call:
 * cowcore wants no request in flight while they switch tables; "pause-us" is the pause in
 * microseconds. A list runs with the queues going (it reads under the image lock, which
 * every table update holds): "pause-us" is 0. Errors carry the engine's text (without the
 * file name in front). Served from the control thread, between signals: never on the data
 * path.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/utsname.h>

#include <inttypes.h>

#include <json-c/json.h>

#include "ublk.h"

#define SOCK_PAUSE_TIMEOUT_MS 10000
#define SOCK_READ_TIMEOUT_S 3		/* for the whole request */

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

/*
 * Apply: the device's size is fixed while it is served, so the snapshot must have it. 0, or
 * -1 with why set (no such snapshot, another size).
 */
static int apply_size_ok(struct ublk_dev *dev, struct cow_image *img, const char *key,
			 char *why, size_t wlen)
{
	struct cow_snap_info *v;
	struct cow_info in;
	uint32_t n;
	int r = cow_snapshot_list(img, &v, &n);
	if (r < 0) {
		snprintf(why, wlen, "%s", eng_err(dev, r));
		return -1;
	}
	cow_get_info(img, &in);
	/* the snapshot a name selects, else one an id in digits does (snap_find's rule) */
	const struct cow_snap_info *s = NULL;
	for (uint32_t i = 0; i < n && !s; i++)
		if (!strcmp(v[i].name, key))
			s = &v[i];
	for (uint32_t i = 0; i < n && !s; i++) {
		char id[16];
		snprintf(id, sizeof(id), "%u", v[i].id);
		if (!strcmp(id, key))
			s = &v[i];
	}
	r = -1;
	if (!s)
		snprintf(why, wlen, "no snapshot '%s'", key);
	else if (s->virtual_size != in.virtual_size)
		snprintf(why, wlen, "snapshot '%s' is %" PRIu64 " bytes, the device %" PRIu64
			 " (ucow dev del %u, then apply it offline)", key, s->virtual_size,
			 in.virtual_size, dev->info.dev_id);
	else
		r = 0;
	free(v);
	return r;
}

/* The reply line to a snapshot or image request, or an error line (*why set). */
static struct json_object *sock_snapshot(struct ublk_dev *dev, const struct ublk_sock_req *rq,
					 char *why, size_t wlen)
{
	struct cow_image *img = dev->tgt_data;
	struct cow_snap_info *v = NULL;
	struct json_object *reply, *a;
	char err[UBLK_ERRLEN];
	uint32_t n = 0;
	uint64_t ns = 0;
	bool list = rq->op == UBLK_OP_SNAP_LIST || rq->op == UBLK_OP_IMAGE_INFO;
	bool create = rq->op == UBLK_OP_SNAP_CREATE, apply = rq->op == UBLK_OP_SNAP_APPLY;
	struct cow_info in;
	int r = 0;

	if (!img || (dev->tgt != &ublk_tgt_cow && rq->op != UBLK_OP_IMAGE_INFO)) {
		snprintf(why, wlen, "the %s target has no snapshots", dev->tgt->name);
		return NULL;
	}
	cow_get_info(img, &in);
	if (!list && (dev->o.read_only || dev->o.snapshot[0])) {
		snprintf(why, wlen, "served read-only by /dev/ublkb%u (ucow dev del %u first)",
			 dev->info.dev_id, dev->info.dev_id);
		return NULL;
	}
	if (list) {
		if (rq->op == UBLK_OP_SNAP_LIST || in.nb_snapshots)
			r = cow_snapshot_list(img, &v, &n);
	} else {
		if (apply && (r = apply_size_ok(dev, img, rq->name, why, wlen)))
			return NULL;
		/* the create folds every underlay in its pause: most of them before it */
		if (create && (r = ublk_fold_pass(dev, err, sizeof(err))) < 0) {
			snprintf(why, wlen, "folding underlays before the snapshot: %s", err);
			return NULL;
		}
		r = ublk_dev_pause(dev, create ? UBLK_PAUSE_CREATE : apply ? UBLK_PAUSE_APPLY :
				   UBLK_PAUSE_DELETE, SOCK_PAUSE_TIMEOUT_MS, err);
		if (r < 0) {
			snprintf(why, wlen, "cannot pause the device: %s", err);
			return NULL;
		}
		r = create ? cow_snapshot_create(img, rq->name) : apply ?
		    cow_snapshot_apply(img, rq->name) : cow_snapshot_delete(img, rq->name);
		ns = ublk_dev_resume(dev);
	}
	if (r < 0) {
		snprintf(why, wlen, "%s", eng_err(dev, r));
		fprintf(stderr, "ucow: %s failed (pause %.3f ms): %s\n", ublk_sock_op_name(rq->op),
			ns / 1e6, why);
		return NULL;
	}
	reply = ublk_sock_reply_ok();
	if (reply && rq->op == UBLK_OP_IMAGE_INFO &&
	    json_object_object_add(reply, "image", ublk_info_encode(&in)))
		goto nomem;
	if (reply && list) {
		a = ublk_snaps_encode(v, n);
		if (!a || json_object_object_add(reply, "snapshots", a))
			goto nomem;
	}
	free(v);
	if (!reply || json_object_object_add(reply, "pause-us",
					     json_object_new_int64((int64_t)((ns + 500) / 1000))))
		goto nomem;
	return reply;
nomem:
	free(v);
	json_object_put(reply);
	snprintf(why, wlen, "out of memory");
	return NULL;
}

/*
 * Resize: the image grows to rq->size (cow_resize, queues paused), then the disk
 * (UBLK_CMD_UPDATE_SIZE: the driver sends nothing past the old end before it, so the image
 * is always at least the disk's size). Only a grow: a shrink would pull the end of the disk
 * out from under whatever uses it. A size equal to the image's but larger than the disk's
 * (a server that died between the two steps, then recovered) only updates the disk.
 */
static struct json_object *sock_resize(struct ublk_dev *dev, const struct ublk_sock_req *rq,
				       char *why, size_t wlen)
{
	struct cow_image *img = dev->tgt_data;
	struct json_object *reply;
	struct uk_params p;
	struct cow_info in;
	struct utsname u;
	char err[UBLK_ERRLEN];
	unsigned id = dev->info.dev_id;
	uint64_t ns = 0;
	int r;

	if (!img || (dev->tgt != &ublk_tgt_cow && dev->tgt != &ublk_tgt_raw)) {
		snprintf(why, wlen, "the %s target cannot be resized", dev->tgt->name);
		return NULL;
	}
	if (dev->o.read_only || dev->o.snapshot[0]) {
		snprintf(why, wlen, "served read-only by /dev/ublkb%u (ucow dev del %u first)", id,
			 id);
		return NULL;
	}
	if (!(dev->info.flags & UK_F_UPDATE_SIZE)) {
		if (uname(&u) < 0)
			snprintf(u.release, sizeof(u.release), "unknown");
		if (dev->ctrl.features & UK_F_UPDATE_SIZE)
			snprintf(why, wlen, "in use by /dev/ublkb%u, which was added without "
				 "UBLK_F_UPDATE_SIZE (by an older ucow): its size cannot change "
				 "while served (ucow dev del %u, resize, dev add)", id, id);
		else
			snprintf(why, wlen, "in use by /dev/ublkb%u, whose size cannot change while "
				 "served: that needs Linux 6.16 or later (UBLK_F_UPDATE_SIZE), this "
				 "kernel is %s (ucow dev del %u, resize, dev add)", id, u.release, id);
		return NULL;
	}
	if (dev->job && dev->job->state == UBLK_JOB_RUNNING) {
		snprintf(why, wlen, "an online %s is running on /dev/ublkb%u: resize when it has "
			 "ended", dev->job->kind == UBLK_JOB_COMMIT ? "commit" :
			 dev->job->kind == UBLK_JOB_PREFETCH ? "prefetch" : "flatten", id);
		return NULL;
	}
	cow_get_info(img, &in);
	if (rq->size < in.virtual_size) {
		snprintf(why, wlen, "/dev/ublkb%u is %" PRIu64 " bytes and a served device can only "
			 "grow (ucow dev del %u, resize --shrink, dev add)", id, in.virtual_size, id);
		return NULL;
	}
	if (rq->size % dev->o.block_size) {
		snprintf(why, wlen, "%" PRIu64 " bytes is not a multiple of the block size of "
			 "/dev/ublkb%u (%u bytes)", rq->size, id, dev->o.block_size);
		return NULL;
	}
	/* the resize folds every underlay in its pause: most of them before it (first of all:
	 * a pass is never wasted, whatever the driver says next) */
	if (rq->size > in.virtual_size && (r = ublk_fold_pass(dev, err, sizeof(err))) < 0) {
		snprintf(why, wlen, "folding underlays before the resize: %s", err);
		return NULL;
	}
	r = ublk_ctrl_get_params(&dev->ctrl, id, &p);
	if (r < 0) {
		snprintf(why, wlen, "GET_PARAMS: %s", strerror(-r));
		return NULL;
	}
	if (rq->size > in.virtual_size) {
		r = ublk_dev_pause(dev, UBLK_PAUSE_RESIZE, SOCK_PAUSE_TIMEOUT_MS, err);
		if (r < 0) {
			snprintf(why, wlen, "cannot pause the device: %s", err);
			return NULL;
		}
		r = cow_resize(img, rq->size, 0);
		ns = ublk_dev_resume(dev);
		if (r < 0) {
			snprintf(why, wlen, "%s", eng_err(dev, r));
			fprintf(stderr, "ucow: resize failed (pause %.3f ms): %s\n", ns / 1e6, why);
			return NULL;
		}
	}
	if (p.basic.dev_sectors != rq->size >> 9) {
		r = ublk_ctrl_update_size(&dev->ctrl, id, rq->size >> 9);
		if (r < 0) {
			snprintf(why, wlen, "the image is %" PRIu64 " bytes now, but the driver "
				 "refused the new size of /dev/ublkb%u: UPDATE_SIZE: %s (run the "
				 "resize again)", rq->size, id, strerror(-r));
			return NULL;
		}
	}
	dev->size = rq->size;
	dev->params.basic.dev_sectors = rq->size >> 9;
	r = ublk_dev_write_state(dev);
	if (r < 0)
		fprintf(stderr, "ucow: resize: cannot rewrite the state file: %s\n", strerror(-r));
	reply = ublk_sock_reply_ok();
	if (!reply || json_object_object_add(reply, "virtual-size",
					     json_object_new_int64((int64_t)rq->size)) ||
	    json_object_object_add(reply, "pause-us",
				   json_object_new_int64((int64_t)((ns + 500) / 1000)))) {
		json_object_put(reply);
		snprintf(why, wlen, "out of memory");
		return NULL;
	}
	return reply;
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

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

/*
 * Read one request: up to the newline, the end of the stream, or UBLK_SOCK_REQ_MAX bytes
 * (then -E2BIG: the rest is not read), within SOCK_READ_TIMEOUT_S in all (a client sending
 * a byte now and then does not hold the control thread). Returns its length, or -errno.
 */
static ssize_t read_request(int fd, char *buf)
{
	uint64_t deadline = ublk_now_ns() + SOCK_READ_TIMEOUT_S * 1000000000ull;
	size_t off = 0;

	while (off <= UBLK_SOCK_REQ_MAX) {
		ssize_t n;

		if (ublk_now_ns() > deadline)
			return -ETIMEDOUT;
		n = read(fd, buf + off, UBLK_SOCK_REQ_MAX + 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		if (memchr(buf + off, '\n', (size_t)n)) {
			off += (size_t)n;
			if (memchr(buf, '\n', off) != buf + off - 1)
				return -EBADMSG;	/* data after the line: not ours */
			return (ssize_t)off;
		}
		off += (size_t)n;
	}
	return off > UBLK_SOCK_REQ_MAX ? -E2BIG : (ssize_t)off;
}

/* The answer to one decoded request: a reply line (malloc'd) */
static char *sock_answer(struct ublk_dev *dev, const struct ublk_sock_req *rq)
{
	struct json_object *reply = NULL, *v;
	char why[UBLK_ERRLEN] = "out of memory", *text = NULL, *line;

	switch (rq->op) {
	case UBLK_OP_PING:
		reply = ublk_sock_reply_ok();
		if (reply && json_object_object_add(reply, "pong", json_object_new_boolean(1)))
			goto nomem;
		break;
	case UBLK_OP_STATS:
		text = malloc(64 << 10);
		reply = ublk_sock_reply_ok();
		v = ublk_stats_json(dev);
		if (!text || !reply || !v || ublk_stats_format(dev, text, 64 << 10) < 0 ||
		    json_object_object_add(reply, "stats", v)) {
			json_object_put(v);
			goto nomem;
		}
		if (json_object_object_add(reply, "text", json_object_new_string(text)))
			goto nomem;
		break;
	case UBLK_OP_FLATTEN:
	case UBLK_OP_COMMIT:
		if (ublk_job_start(dev, rq->op == UBLK_OP_COMMIT ? UBLK_JOB_COMMIT :
				   UBLK_JOB_FLATTEN, why, sizeof(why)) < 0)
			break;
		/* the answer is the job's state */
		__attribute__((fallthrough));
	case UBLK_OP_JOB:
		v = ublk_job_encode(dev->job);
		reply = v ? ublk_sock_reply_ok() : NULL;
		if (!reply || json_object_object_add(reply, "job", v)) {
			json_object_put(v);
			goto nomem;
		}
		break;
	case UBLK_OP_RESIZE:
		reply = sock_resize(dev, rq, why, sizeof(why));
		break;
	case UBLK_OP_INFO:
		v = dev->tgt->info ? dev->tgt->info(dev) : NULL;
		if (!v) {
			snprintf(why, sizeof(why), "the %s target has no image", dev->tgt->name);
			break;
		}
		reply = ublk_sock_reply_ok();
		if (!reply || json_object_object_add(reply, "info", v)) {
			json_object_put(v);
			goto nomem;
		}
		break;
	default:
		reply = sock_snapshot(dev, rq, why, sizeof(why));
	}
	free(text);
	line = reply ? ublk_sock_reply_text(reply) : ublk_sock_error_text(why);
	json_object_put(reply);
	return line;
nomem:
	free(text);
	json_object_put(reply);
	return ublk_sock_error_text("out of memory");
}

void ublk_sock_serve(struct ublk_dev *dev, int lfd)
{
	struct timeval tv = { .tv_sec = SOCK_READ_TIMEOUT_S };
	struct ucred cred;
	struct ublk_sock_req rq;
	socklen_t clen = sizeof(cred);
	char why[UBLK_ERRLEN], *req = NULL, *line = NULL;
	ssize_t n;
	int fd;

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		line = ublk_sock_error_text("permission denied");
		goto reply;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	req = malloc(UBLK_SOCK_REQ_MAX + 1);
	if (!req)
		goto out;
	n = read_request(fd, req);
	if (n == -E2BIG) {
		snprintf(why, sizeof(why), "request too long (more than %d bytes)",
			 UBLK_SOCK_REQ_MAX);
		line = ublk_sock_error_text(why);
	} else if (n == -EBADMSG) {
		line = ublk_sock_error_text("malformed request: data after the first line");
	} else if (n <= 0) {
		goto out;	/* nothing came (or the timeout): no one to answer */
	} else if (ublk_sock_req_decode(req, (size_t)n, &rq, why, sizeof(why)) < 0) {
		char msg[UBLK_ERRLEN + 32];

		snprintf(msg, sizeof(msg), "bad request: %s", why);
		line = ublk_sock_error_text(msg);
	} else {
		line = sock_answer(dev, &rq);
	}
reply:
	if (line)
		sock_reply(fd, line);
out:
	free(line);
	free(req);
	close(fd);
}
