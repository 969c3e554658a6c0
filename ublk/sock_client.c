/* SPDX-License-Identifier: MIT */
/*
 * The control socket, client side: what tools call to talk to a device's server (the
 * server: sock.c; the messages: sock_proto.c). One request per connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <json-c/json.h>

#include "ublk.h"

static int write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The reply: up to its newline (or the end of the stream); -EBADMSG past UBLK_SOCK_REPLY_MAX */
static int read_reply(int fd, char **out, size_t *outlen)
{
	size_t off = 0, cap = 64 << 10;
	char *buf = malloc(cap), *g, *nl;
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (off == cap) {
			if (off > UBLK_SOCK_REPLY_MAX) {
				free(buf);
				return -EBADMSG;	/* too long: read no further */
			}
			cap = cap * 2 > UBLK_SOCK_REPLY_MAX + 1 ? UBLK_SOCK_REPLY_MAX + 1 : cap * 2;
			g = realloc(buf, cap);
			if (!g) {
				free(buf);
				return -ENOMEM;
			}
			buf = g;
		}
		n = read(fd, buf + off, cap - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int ret = -errno;	/* EAGAIN: the timeout */

			free(buf);
			return ret;
		}
		if (n == 0)
			break;
		nl = memchr(buf + off, '\n', (size_t)n);
		off += (size_t)n;
		if (nl) {
			off = (size_t)(nl - buf) + 1;	/* the answer is the first line */
			break;
		}
	}
	if (!off) {
		free(buf);
		return -ECONNRESET;	/* closed without an answer */
	}
	*out = buf;
	*outlen = off;
	return 0;
}

static int sock_call(const char *path, int op, const char *name, bool has_size, uint64_t size,
		     int timeout_s, struct json_object **reply)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout_s };
	char err[UBLK_ERRLEN], *req, *resp = NULL;
	size_t rlen = 0;
	int fd, ret;

	*reply = NULL;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	req = has_size ? ublk_sock_req_encode_size(op, size, err, sizeof(err)) :
			 ublk_sock_req_encode(op, name, err, sizeof(err));
	if (!req)
		return -EINVAL;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		free(req);
		return ret;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		ret = -errno;
	else
		ret = write_all(fd, req, strlen(req));
	free(req);
	if (!ret)
		ret = read_reply(fd, &resp, &rlen);
	close(fd);
	if (ret)
		return ret;
	ret = ublk_sock_reply_decode(resp, rlen, reply, err, sizeof(err));
	free(resp);
	return ret;
}

int ublk_sock_call(const char *path, int op, const char *name, int timeout_s,
		   struct json_object **reply)
{
	return sock_call(path, op, name, false, 0, timeout_s, reply);
}

int ublk_sock_call_size(const char *path, int op, uint64_t size, int timeout_s,
			struct json_object **reply)
{
	return sock_call(path, op, NULL, true, size, timeout_s, reply);
}
