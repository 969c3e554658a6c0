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
 *   snapshot-create NAME, snapshot-list   -> hooks for `ucow snapshot` on a served image;
 *                      answered "error not supported yet" until the engine offers them
 * Served from the control thread, between signals: never on the data path.
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

#include "ublk.h"

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
	} else if (!strncmp(req, "snapshot-", 9)) {
		snprintf(resp, rlen, "error not supported yet\n");
	} else {
		snprintf(resp, rlen, "error unknown request '%.64s'\n", req);
	}
	sock_reply(fd, resp);
	free(resp);
out:
	close(fd);
}

int ublk_sock_request(const char *path, const char *req, char *resp, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	char line[512];
	size_t off = 0;
	ssize_t n;
	int fd, ret = 0;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
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
	while (off + 1 < len && (n = read(fd, resp + off, len - off - 1)) > 0)
		off += (size_t)n;
	resp[off] = 0;
	if (strncmp(resp, "ok\n", 3)) {
		ret = -EPROTO;
		goto out;
	}
	memmove(resp, resp + 3, off - 2);
out:
	close(fd);
	return ret;
}
