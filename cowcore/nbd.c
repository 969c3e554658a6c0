/* SPDX-License-Identifier: MIT */
/*
 * Layer 5: raw images on an NBD server, through libnbd — the backing images whose names are
 * network URIs (nbd://, nbds://, nbd+unix://, nbds+unix://).
 *
 * DESIGN NOTES
 * An image on a server is a raw image with no file (fd -1) and a struct nbd_src: the URI,
 * the export's size, the block sizes, statistics. cow_open connects once (bounded by the
 * timeout), checks what the server says, and keeps that connection for the first context.
 * Every other context (one per thread) makes its own when a read first needs it: libnbd
 * handles are not shared between threads' loops, and several connections let the server
 * work on several threads' reads at once.
 *
 * Reads are asynchronous and go through the loop that drives the context's backend, like
 * file I/O: each read becomes one or more nbd_aio_pread commands (cut at the server's
 * maximum block size, widened to its minimum block size through a bounce buffer), several
 * in flight on one connection. While a command is outstanding, the connection has one
 * COW_IO_POLL queued on its backend (io_uring's POLL_ADD, poll(2) in the others) on an
 * epoll descriptor holding the socket (with the events libnbd's direction asks for) and a
 * timerfd set to the next deadline. When it fires, libnbd is told (nbd_aio_notify_read /
 * _write), finished commands complete their requests, deadlines are checked, and the poll
 * is queued again if anything is still outstanding. Nothing here blocks (but the name
 * lookup of a TCP host name, inside libnbd's connect).
 *
 * Invariant: a poll is queued only while a request is outstanding on the connection, and
 * the last one completes only when no poll is queued (finished otherwise, it is held until
 * the poll, made to fire at once, comes back), so a context freed with no request in
 * flight has no poll left in its backend.
 *
 * Failures. Each command has a deadline (arrival + timeout). A connection that dies
 * (server gone, reset, a protocol error) is closed; reads being idempotent, its unanswered
 * commands wait again for a new connection, made at once the first time and then after a
 * back-off (0.5 s doubling to 10 s) while reads wait. A command past its deadline fails
 * with -EIO: waiting, it is dropped; sent, the connection is given up (NBD cannot cancel
 * one command) and the others wait for the next. A reconnection must find the export the
 * same size, or it counts as failed. An error the server answers on a live connection
 * fails its read at once. When any context's connection comes back, the server is back for
 * all: the others' lost connections stop counting as failed and connect again at their next
 * read without waiting out their back-off (lost_set, server_back).
 *
 * Hostile input: the URI is checked (nbd_uri_check) and libnbd is told to allow TCP and
 * Unix sockets only and never to read local files named in it (TLS key files); the size
 * and block sizes the server gives are checked before use; libnbd checks the replies'
 * offsets and zeroes read buffers before use (pread_initialize), so a short or lying reply
 * cannot show stale memory.
 */
#include <errno.h>
#include <libnbd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

#define NBD_MAX_READ	(32u << 20)	/* commands at most this long (libnbd takes 64 MiB) */
#define NBD_MAX_MINBLK	(64u << 10)	/* the NBD protocol's bound of a minimum block size */
#define BACKOFF_FIRST	500		/* ms */
#define BACKOFF_MAX	10000
#define NBD_MAX_SIZE	((uint64_t)INT64_MAX)

enum { NC_IDLE, NC_CONNECTING, NC_READY, NC_DOWN };

struct nbd_src {
	char *uri;
	uint64_t size;
	uint32_t timeout_ms;
	uint32_t min_block, max_read;	/* the open's connection's: commands are cut so */
	struct nbd_handle *spare;	/* the open's connection, for the first context (lock) */
	pthread_mutex_t lock;		/* what follows, to the counters */
	uint32_t up, connecting, lost;	/* connections ready, connecting, lost and not back */
	uint64_t failed_since;		/* realtime ms when lost went from 0 to 1 */
	uint32_t back;			/* bumped when a connection comes back: lost ones clear */
	char last_error[COW_ERRLEN];
	/* atomics */
	uint64_t reads, read_bytes, read_errors, timeouts, connects, connect_failures,
		 disconnects;
};

struct nbd_cmd {
	struct nbd_conn *c;
	struct cow_req *req;
	char *dst;			/* where the bytes of [off, off + len) go */
	uint64_t off;
	uint32_t len;
	uint64_t deadline;		/* monotonic ms */
	/* while sent */
	char *bounce;			/* NULL: straight into dst */
	uint64_t aoff;			/* what the server was asked for: aligned */
	uint32_t alen;
	int res;			/* the completion callback's (errno, 0 ok) */
	bool sent, answered;
	struct nbd_cmd *next;
};

struct nbd_conn {
	struct cow_ctx *ctx;
	struct nbd_src *src;
	struct nbd_handle *h;
	int state;
	bool lost;			/* counted in src->lost (while lost_back == src->back):
					 * failed, not connected since */
	uint32_t lost_back;		/* src->back when it was lost */
	bool armed;			/* a COW_IO_POLL is queued */
	bool arming;			/* queueing it (a refusal completes at once) */
	int arm_err;
	int epfd, tfd, sock;		/* sock: the descriptor in epfd, or -1 */
	uint64_t timer_at;		/* the deadline tfd is set to (ms), 0: none or fired */
	uint32_t sock_ev;
	uint32_t min_block, max_read;	/* this connection's */
	uint64_t next_try, backoff, connect_deadline;
	struct nbd_cmd *wait_head, *wait_tail;	/* not sent yet, FIFO */
	struct nbd_cmd *sent;		/* with the server */
	struct nbd_cmd *held;		/* done, completed when the queued poll comes back */
	struct nbd_cmd *free_cmds;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define CNT(src, f, v) __atomic_fetch_add(&(src)->f, (v), __ATOMIC_RELAXED)

/* libnbd's last error on this thread, as one line (never NULL). */
static const char *nbd_why(char *buf, size_t len)
{
	const char *e = nbd_get_error();
	snprintf(buf, len, "%s", e && *e ? e : "connection failed");
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	return buf;
}

static void set_err(struct nbd_src *src, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_err(struct nbd_src *src, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&src->lock);
	va_start(ap, fmt);
	vsnprintf(src->last_error, sizeof(src->last_error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&src->lock);
}

/* ---- the URI ------------------------------------------------------------------------------ */

int nbd_uri_check(const char *uri, char *why)
{
	static const char *const ok[] = { "nbd://", "nbds://", "nbd+unix://", "nbds+unix://" };
	size_t n = strlen(uri);
	if (!cow_name_is_uri(uri)) {
		snprintf(why, COW_ERRLEN, "not an NBD URI");
		return -EINVAL;
	}
	if (n > UCOW_BACKING_NAME_MAX) {
		snprintf(why, COW_ERRLEN, "URI longer than %d bytes", UCOW_BACKING_NAME_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)uri[i] <= 0x20 || (unsigned char)uri[i] >= 0x7f) {
			snprintf(why, COW_ERRLEN, "URI has a blank, control or non-ASCII byte "
				 "(at %zu)", i);
			return -EINVAL;
		}
	/* the query may name the socket and nothing else (tls-verify-peer=false, key files) */
	const char *q = strchr(uri, '?');
	for (const char *k = q ? q + 1 : NULL; k; k = strchr(k, '&') ? strchr(k, '&') + 1 : NULL)
		if (strncmp(k, "socket=", 7)) {
			size_t kl = strcspn(k, "=&");
			snprintf(why, COW_ERRLEN, "URI parameter '%.*s' not allowed (socket= only)",
				 (int)(kl < 64 ? kl : 64), k);
			return -EINVAL;
		}
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (!strncmp(uri, ok[i], strlen(ok[i])))
			return 0;
	snprintf(why, COW_ERRLEN, "transport not allowed (nbd://, nbds://, nbd+unix://, "
		 "nbds+unix:// only)");
	return -EPROTONOSUPPORT;
}

/* A handle that will take uri and nothing else risky: TCP and Unix sockets, no local
 * files read for TLS (libnbd's default, made explicit). NULL with why set. */
static struct nbd_handle *handle_new(char *why)
{
	struct nbd_handle *h = nbd_create();
	if (!h) {
		nbd_why(why, COW_ERRLEN);
		return NULL;
	}
	if (nbd_set_uri_allow_transports(h, LIBNBD_ALLOW_TRANSPORT_TCP |
					 LIBNBD_ALLOW_TRANSPORT_UNIX) == -1 ||
	    nbd_set_uri_allow_local_file(h, false) == -1 ||
	    nbd_set_tls_verify_peer(h, true) == -1 ||
	    nbd_set_pread_initialize(h, true) == -1) {
		nbd_why(why, COW_ERRLEN);
		nbd_close(h);
		return NULL;
	}
	return h;
}

/*
 * What a connected server says, checked: the size (equal to want unless want is
 * UINT64_MAX), the minimum block size (a power of two up to 64 KiB; 1 when not given), the
 * maximum (at least the minimum; 32 MiB when not given or larger). 0 or -EPROTO with why.
 */
static int server_props(struct nbd_handle *h, uint64_t want, uint64_t *size, uint32_t *minb,
			uint32_t *maxr, char *why)
{
	int64_t s = nbd_get_size(h);
	int64_t mn = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
	int64_t mx = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
	if (s < 0) {
		nbd_why(why, COW_ERRLEN);
		return -EPROTO;
	}
	if ((uint64_t)s > NBD_MAX_SIZE) {
		snprintf(why, COW_ERRLEN, "the server gives an export size of %lld bytes",
			 (long long)s);
		return -EPROTO;
	}
	if (want != UINT64_MAX && (uint64_t)s != want) {
		snprintf(why, COW_ERRLEN, "the export's size changed from %llu to %llu bytes",
			 (unsigned long long)want, (unsigned long long)s);
		return -EPROTO;
	}
	if (mn <= 0)
		mn = 1;
	if (mn > NBD_MAX_MINBLK || (mn & (mn - 1))) {
		snprintf(why, COW_ERRLEN, "the server gives a minimum block size of %lld (a power "
			 "of two up to 64 KiB expected)", (long long)mn);
		return -EPROTO;
	}
	if ((uint64_t)s & (uint64_t)(mn - 1)) {
		/* its last block could not be read (the protocol says it should not happen) */
		snprintf(why, COW_ERRLEN, "the server gives an export size of %lld bytes, not a "
			 "multiple of its minimum block size %lld", (long long)s, (long long)mn);
		return -EPROTO;
	}
	if (mx <= 0 || mx > NBD_MAX_READ)
		mx = NBD_MAX_READ;
	if (mx < mn) {
		snprintf(why, COW_ERRLEN, "the server gives a maximum block size (%lld) below its "
			 "minimum (%lld)", (long long)mx, (long long)mn);
		return -EPROTO;
	}
	*size = (uint64_t)s;
	*minb = (uint32_t)mn;
	*maxr = (uint32_t)(mx & ~(mn - 1));
	return 0;
}

/* ---- open ----------------------------------------------------------------------------------- */

/* Connect h to uri, waiting at most timeout_ms. 0, or -errno with why. */
static int connect_sync(struct nbd_handle *h, const char *uri, uint32_t timeout_ms, char *why)
{
	uint64_t deadline = now_ms() + timeout_ms;
	if (nbd_aio_connect_uri(h, uri) == -1) {
		int e = nbd_get_errno();
		nbd_why(why, COW_ERRLEN);
		return e > 0 ? -e : -ECONNREFUSED;
	}
	for (;;) {
		uint64_t now = now_ms();
		if (nbd_aio_is_ready(h) == 1)
			return 0;
		if (nbd_aio_is_dead(h) == 1 || nbd_aio_is_closed(h) == 1) {
			nbd_why(why, COW_ERRLEN);
			return -ECONNREFUSED;
		}
		if (now >= deadline) {
			snprintf(why, COW_ERRLEN, "no connection within %u ms", timeout_ms);
			return -ETIMEDOUT;
		}
		if (nbd_poll(h, (int)(deadline - now)) == -1) {
			int e = nbd_get_errno();
			nbd_why(why, COW_ERRLEN);
			return e > 0 ? -e : -EIO;
		}
	}
}

/*
 * nbds:// over TCP: libnbd checks the server's certificate (and its name) only against the
 * CA of its certificate folder: ca-cert.pem in /etc/pki/libnbd for root, else in
 * $HOME/.pki/libnbd or $HOME/.config/pki/libnbd. Without one it falls back on the system's
 * CAs and does not check the certificate at all (libnbd 1.14, lib/crypto.c), which would be
 * encryption with anybody. So such a URI is refused unless that file is there. (Over a Unix
 * socket libnbd checks no certificate: the socket's permissions are the trust.)
 */
int nbd_tls_ca(const char *uri, char *where, size_t wlen)
{
	const char *home = getenv("HOME");
	if (strncmp(uri, "nbds://", 7))
		return 0;
	if (geteuid() == 0 || !home) {
		snprintf(where, wlen, "/etc/pki/libnbd/ca-cert.pem");
		return access(where, R_OK) ? -ENOKEY : 0;
	}
	snprintf(where, wlen, "%s/.pki/libnbd/ca-cert.pem", home);
	if (!access(where, R_OK))
		return 0;
	snprintf(where, wlen, "%s/.config/pki/libnbd/ca-cert.pem", home);
	return access(where, R_OK) ? -ENOKEY : 0;
}

int nbd_src_open(struct cow_image *img, char *err)
{
	char why[COW_ERRLEN];
	struct nbd_src *src;
	int r;

	img->fmt = COW_FMT_RAW;
	if ((r = nbd_uri_check(img->path, why))) {
		snprintf(err, COW_ERRLEN, "%s: %s", img->path, why);
		return r;
	}
	if (!(img->open_flags & COW_OPEN_RDONLY)) {
		snprintf(err, COW_ERRLEN, "%s: an image on an NBD server is opened read-only",
			 img->path);
		return -EROFS;
	}
	if (!(src = calloc(1, sizeof(*src))))
		return -ENOMEM;
	pthread_mutex_init(&src->lock, NULL);
	img->nbd = src;
	src->timeout_ms = img->net_timeout_ms ? img->net_timeout_ms : COW_NET_TIMEOUT_MS;
	if (!(src->uri = strdup(img->path)))
		return -ENOMEM;
	if (!(src->spare = handle_new(why))) {
		snprintf(err, COW_ERRLEN, "%s: %s", img->path, why);
		return -ENOMEM;
	}
	if (!strncmp(img->path, "nbds", 4) && nbd_supports_tls(src->spare) != 1) {
		snprintf(err, COW_ERRLEN, "%s: this libnbd has no TLS", img->path);
		return -EPROTONOSUPPORT;
	}
	if (nbd_supports_uri(src->spare) != 1) {
		snprintf(err, COW_ERRLEN, "%s: this libnbd cannot parse URIs", img->path);
		return -EPROTONOSUPPORT;
	}
	if ((r = nbd_tls_ca(img->path, why, sizeof(why)))) {
		snprintf(err, COW_ERRLEN, "%s: TLS needs a CA certificate to check the server "
			 "with (%s is missing; libnbd would accept any server)", img->path, why);
		return r;
	}
	r = connect_sync(src->spare, img->path, src->timeout_ms, why);
	if (!r)
		r = server_props(src->spare, UINT64_MAX, &src->size, &src->min_block, &src->max_read,
				 why);
	if (r) {
		snprintf(err, COW_ERRLEN, "%s: %s", img->path, why);
		CNT(src, connect_failures, 1);
		return r;
	}
	CNT(src, connects, 1);
	img->raw_size = img->vsize = src->size;
	return 0;
}

void nbd_src_free(struct cow_image *img)
{
	struct nbd_src *src = img->nbd;
	if (!src)
		return;
	if (src->spare)
		nbd_close(src->spare);
	pthread_mutex_destroy(&src->lock);
	free(src->uri);
	free(src);
	img->nbd = NULL;
}

/* ---- a context's connection -------------------------------------------------------------------- */

/* Lost connections: src->lost counts them until one of the source's connections (this
 * context's or another's) comes back. That one clears them all (the server is back), bumping
 * src->back; each other context finds out on its next step (server_back) and connects again
 * at once, without waiting out its back-off. Under src->lock. */
static void lost_set(struct nbd_conn *c, bool lost)
{
	struct nbd_src *src = c->src;
	if (c->lost && c->lost_back != src->back)
		c->lost = false;	/* cleared already, by another's connection */
	if (lost && !c->lost) {
		if (!src->lost++)
			src->failed_since = wall_ms();
		c->lost_back = src->back;
	} else if (!lost && c->lost && !--src->lost) {
		src->failed_since = 0;
	}
	c->lost = lost;
}

static void set_state(struct nbd_conn *c, int state, bool lost)
{
	struct nbd_src *src = c->src;
	pthread_mutex_lock(&src->lock);
	src->up -= c->state == NC_READY;
	src->connecting -= c->state == NC_CONNECTING;
	src->up += state == NC_READY;
	src->connecting += state == NC_CONNECTING;
	lost_set(c, lost);
	if (state == NC_READY && src->lost) {
		src->lost = 0;		/* the others' lost connections: see lost_set */
		src->failed_since = 0;
		src->back++;
	}
	pthread_mutex_unlock(&src->lock);
	c->state = state;
}

/* A connection lost here while another context's connection came back since: the server is
 * up, so this one is idle again (connects at the next read, no back-off). */
static void server_back(struct nbd_conn *c)
{
	struct nbd_src *src = c->src;
	bool back;
	if (c->state != NC_DOWN || !c->lost)
		return;
	pthread_mutex_lock(&src->lock);
	back = c->lost_back != src->back;
	pthread_mutex_unlock(&src->lock);
	if (back) {
		c->backoff = 0;
		set_state(c, NC_IDLE, false);
	}
}

/* Watch the handle's socket for what libnbd waits for (or nothing: no handle). */
static void sync_sock(struct nbd_conn *c)
{
	int fd = c->h ? nbd_aio_get_fd(c->h) : -1;
	uint32_t ev = 0;
	if (fd >= 0) {
		unsigned dir = nbd_aio_get_direction(c->h);
		ev = ((dir & LIBNBD_AIO_DIRECTION_READ) ? EPOLLIN : 0) |
		     ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? EPOLLOUT : 0);
	}
	if (fd != c->sock && c->sock >= 0)
		epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->sock, NULL);	/* may be gone already */
	if (fd >= 0 && (fd != c->sock || ev != c->sock_ev)) {
		struct epoll_event e = { .events = ev, .data.fd = fd };
		if (epoll_ctl(c->epfd, fd != c->sock ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &e) < 0)
			fd = -1;	/* the deadline's timer still fires */
	}
	c->sock = fd;
	c->sock_ev = ev;
}

/* Close the handle (its socket out of the epoll set first). */
static void drop_handle(struct nbd_conn *c)
{
	if (c->sock >= 0)
		epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->sock, NULL);
	c->sock = -1;
	c->sock_ev = 0;
	if (c->h)
		nbd_close(c->h);
	c->h = NULL;
}

static int cmd_cb(void *user_data, int *error)
{
	struct nbd_cmd *cmd = user_data;
	cmd->res = *error;
	cmd->answered = true;
	return 1;	/* retired */
}

static void cmd_free(struct nbd_cmd *cmd)
{
	struct nbd_conn *c = cmd->c;
	free(cmd->bounce);
	cmd->bounce = NULL;
	cmd->next = c->free_cmds;
	c->free_cmds = cmd;
}

static void wait_push(struct nbd_conn *c, struct nbd_cmd *cmd)
{
	cmd->next = NULL;
	if (c->wait_tail)
		c->wait_tail->next = cmd;
	else
		c->wait_head = cmd;
	c->wait_tail = cmd;
}

/* cmd is done with res (0 or -errno): onto the list the caller completes. */
static void cmd_done(struct nbd_cmd *cmd, int res, struct nbd_cmd **done)
{
	struct nbd_src *src = cmd->c->src;
	cmd->res = res;
	if (res)
		CNT(src, read_errors, 1);
	else {
		CNT(src, reads, 1);
		CNT(src, read_bytes, cmd->len);
	}
	cmd->next = *done;
	*done = cmd;
}

/* The connection is gone or given up: closed; what was sent and not answered waits for the
 * next one (reads can be sent again) unless its deadline has passed. */
static void conn_fail(struct nbd_conn *c, uint64_t now, const char *why,
		      struct nbd_cmd **done)
{
	struct nbd_src *src = c->src;
	bool was_ready = c->state == NC_READY;
	struct nbd_cmd *cmd;

	set_err(src, "%s: %s", src->uri, why);
	drop_handle(c);		/* no more writes into the buffers of what was sent */
	/* c->sent is newest first: each pushed in front of the waiting ones, the oldest ends
	 * first in line */
	while ((cmd = c->sent)) {
		c->sent = cmd->next;
		if (cmd->answered && !cmd->res) {
			cmd_done(cmd, 0, done);
		} else if (now >= cmd->deadline) {
			CNT(src, timeouts, 1);
			cmd_done(cmd, -EIO, done);
		} else {
			free(cmd->bounce);
			cmd->bounce = NULL;
			cmd->sent = cmd->answered = false;
			cmd->res = 0;
			cmd->next = c->wait_head;
			c->wait_head = cmd;
			if (!c->wait_tail)
				c->wait_tail = cmd;
		}
	}
	CNT(src, disconnects, was_ready);
	CNT(src, connect_failures, !was_ready);
	/* a connection that worked is tried again at once; failures back off */
	c->backoff = was_ready && !c->lost ? 0 :
		     c->backoff ? (c->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : c->backoff * 2) :
				  BACKOFF_FIRST;
	c->next_try = now + c->backoff;
	set_state(c, NC_DOWN, true);
}

static void conn_start(struct nbd_conn *c, uint64_t now, struct nbd_cmd **done)
{
	char why[COW_ERRLEN];
	c->connect_deadline = now + c->src->timeout_ms;
	if (!(c->h = handle_new(why))) {
		conn_fail(c, now, why, done);
		return;
	}
	set_state(c, NC_CONNECTING, c->lost);
	if (nbd_aio_connect_uri(c->h, c->src->uri) == -1)
		conn_fail(c, now, nbd_why(why, sizeof(why)), done);
}

/* Send cmd on the ready connection. */
static void cmd_send(struct nbd_conn *c, struct nbd_cmd *cmd, struct nbd_cmd **done)
{
	uint64_t m = c->min_block, end = cmd->off + cmd->len;
	char why[COW_ERRLEN];
	char *buf = cmd->dst;

	cmd->aoff = cmd->off & ~(m - 1);
	end = (end + m - 1) & ~(m - 1);	/* within the size: a multiple of m (server_props) */
	cmd->alen = (uint32_t)(end - cmd->aoff);
	if (cmd->alen > c->max_read) {
		set_err(c->src, "%s: the server's maximum block size shrank to %u bytes",
			c->src->uri, c->max_read);
		cmd_done(cmd, -EIO, done);
		return;
	}
	if (cmd->aoff != cmd->off || cmd->alen != cmd->len) {
		if (posix_memalign((void **)&cmd->bounce, 4096, cmd->alen)) {
			cmd->bounce = NULL;
			cmd_done(cmd, -ENOMEM, done);
			return;
		}
		buf = cmd->bounce;
	}
	cmd->sent = true;
	cmd->answered = false;
	cmd->res = 0;
	cmd->next = c->sent;
	c->sent = cmd;
	if (nbd_aio_pread(c->h, buf, cmd->alen, cmd->aoff,
			  (nbd_completion_callback){ .callback = cmd_cb, .user_data = cmd },
			  0) == -1) {
		/* refused before it went out (a dead handle: found by the caller's step) */
		cmd->answered = true;
		cmd->res = nbd_get_errno() > 0 ? nbd_get_errno() : EIO;
		if (nbd_aio_is_dead(c->h) != 1 && nbd_aio_is_closed(c->h) != 1)
			set_err(c->src, "%s: %s", c->src->uri, nbd_why(why, sizeof(why)));
	}
}

/* Move answered commands off the sent list: done, or (connection dead) left for
 * conn_fail to send again. */
static void sweep(struct nbd_conn *c, struct nbd_cmd **done)
{
	char why[COW_ERRLEN];
	bool dead = nbd_aio_is_dead(c->h) == 1 || nbd_aio_is_closed(c->h) == 1;
	for (struct nbd_cmd **pp = &c->sent, *cmd; (cmd = *pp);) {
		if (!cmd->answered || (cmd->res && dead)) {
			pp = &cmd->next;
			continue;
		}
		*pp = cmd->next;
		if (cmd->res)
			set_err(c->src, "%s: the server answered a read of %u bytes at %llu with: %s",
				c->src->uri, cmd->alen, (unsigned long long)cmd->aoff,
				strerror(cmd->res));
		cmd_done(cmd, cmd->res ? -EIO : 0, done);
	}
	if (dead)
		conn_fail(c, now_ms(), nbd_why(why, sizeof(why)), done);
}

/* Everything that can move without waiting: connection state, deadlines, sending. */
static void step(struct nbd_conn *c, uint64_t now, struct nbd_cmd **done)
{
	char why[COW_ERRLEN];
	struct nbd_cmd *cmd;

	server_back(c);
	if (c->state == NC_CONNECTING) {
		if (nbd_aio_is_ready(c->h) == 1) {
			uint64_t size;
			int r = server_props(c->h, c->src->size, &size, &c->min_block, &c->max_read,
					     why);
			if (r) {
				conn_fail(c, now, why, done);
			} else {
				CNT(c->src, connects, 1);
				c->backoff = 0;
				set_state(c, NC_READY, false);
			}
		} else if (nbd_aio_is_dead(c->h) == 1 || nbd_aio_is_closed(c->h) == 1) {
			conn_fail(c, now, nbd_why(why, sizeof(why)), done);
		} else if (now >= c->connect_deadline) {
			snprintf(why, sizeof(why), "no connection within %u ms", c->src->timeout_ms);
			conn_fail(c, now, why, done);
		}
	}
	if (c->state == NC_READY)
		sweep(c, done);
	if (c->state == NC_READY)
		for (cmd = c->sent; cmd; cmd = cmd->next)
			if (!cmd->answered && now >= cmd->deadline) {
				snprintf(why, sizeof(why), "no answer within %u ms",
					 c->src->timeout_ms);
				conn_fail(c, now, why, done);
				break;
			}
	/* waiting reads past their deadline, or whose deadline comes before the next try */
	for (struct nbd_cmd **pp = &c->wait_head, *prev = NULL; (cmd = *pp);) {
		if (now >= cmd->deadline || (c->state == NC_DOWN && cmd->deadline <= c->next_try)) {
			*pp = cmd->next;
			if (c->wait_tail == cmd)
				c->wait_tail = prev;
			CNT(c->src, timeouts, 1);
			cmd_done(cmd, -EIO, done);
		} else {
			prev = cmd;
			pp = &cmd->next;
		}
	}
	if (c->wait_head && (c->state == NC_IDLE || (c->state == NC_DOWN && now >= c->next_try)))
		conn_start(c, now, done);
	if (!c->wait_head && !c->sent && c->state == NC_CONNECTING) {
		/* nobody waits for it any more: no poll may stay queued (see the invariant) */
		drop_handle(c);
		set_state(c, c->lost ? NC_DOWN : NC_IDLE, c->lost);
	}
	while (c->state == NC_READY && (cmd = c->wait_head)) {
		c->wait_head = cmd->next;
		if (!c->wait_head)
			c->wait_tail = NULL;
		cmd_send(c, cmd, done);
	}
	if (c->state == NC_READY)
		sweep(c, done);		/* refused at once */
}

static void poll_done(struct eio *e, int res);

/* Queue the poll (and set the timer) while anything is outstanding. */
static void arm(struct nbd_conn *c, uint64_t now, struct nbd_cmd **done)
{
	uint64_t next = UINT64_MAX;
	struct nbd_cmd *cmd;
	struct eio *e;

	sync_sock(c);
	if (!c->wait_head && !c->sent)
		return;
	for (cmd = c->wait_head; cmd; cmd = cmd->next)
		next = cmd->deadline < next ? cmd->deadline : next;
	for (cmd = c->sent; cmd; cmd = cmd->next)
		next = cmd->deadline < next ? cmd->deadline : next;
	if (c->state == NC_CONNECTING && c->connect_deadline < next)
		next = c->connect_deadline;
	if (c->state == NC_DOWN && c->next_try < next)
		next = c->next_try;
	if (next <= now)
		next = now + 1;
	if (next != c->timer_at) {	/* a syscall only when the deadline moves */
		struct itimerspec its = { .it_value = { .tv_sec = (time_t)(next / 1000),
						       .tv_nsec = (long)(next % 1000) * 1000000 } };
		timerfd_settime(c->tfd, TFD_TIMER_ABSTIME, &its, NULL);
		c->timer_at = next;
	}
	if (c->armed)
		return;
	if (!(e = eio_get(c->ctx))) {
		c->arm_err = -ENOMEM;
	} else {
		c->armed = c->arming = true;
		c->arm_err = 0;
		eio_queue(c->ctx, e, COW_IO_POLL, c->epfd, NULL, POLLIN, 0, poll_done, c);
		c->arming = false;
	}
	if (c->arm_err) {
		/* the backend cannot wait for the socket: nothing can complete; fail all */
		set_err(c->src, "%s: the I/O backend cannot wait for the connection: %s",
			c->src->uri, strerror(-c->arm_err));
		while ((cmd = c->wait_head)) {
			c->wait_head = cmd->next;
			cmd_done(cmd, -EIO, done);
		}
		c->wait_tail = NULL;
		if (c->sent)
			conn_fail(c, now, "given up", done);
		while ((cmd = c->wait_head)) {
			c->wait_head = cmd->next;
			cmd_done(cmd, -EIO, done);
		}
		c->wait_tail = NULL;
	}
}

/* Complete the requests of done, in order of completion. */
static void complete(struct nbd_cmd *done)
{
	struct nbd_cmd *cmd;
	while ((cmd = done)) {
		struct cow_req *req = cmd->req;
		int res = cmd->res;
		done = cmd->next;
		if (!res && cmd->bounce)
			memcpy(cmd->dst, cmd->bounce + (cmd->off - cmd->aoff), cmd->len);
		cmd_free(cmd);
		req_put(req, res);
	}
}

static void conn_run(struct nbd_conn *c, bool polled)
{
	struct nbd_cmd *done = c->held;
	uint64_t now;

	c->held = NULL;
	if (polled) {
		uint64_t ticks;
		if (read(c->tfd, &ticks, sizeof(ticks)) > 0)
			c->timer_at = 0;	/* fired: set it again */
		if (c->h && c->sock >= 0) {
			struct pollfd p = { .fd = c->sock, .events = POLLIN | POLLOUT };
			unsigned dir = nbd_aio_get_direction(c->h);
			/* a large reply comes in several pieces: take what has come meanwhile
			 * before waiting again (a few rounds, not a busy loop) */
			for (int k = 0; k < 4 && poll(&p, 1, 0) > 0; k++) {
				if ((dir & LIBNBD_AIO_DIRECTION_READ) &&
				    (p.revents & (POLLIN | POLLHUP | POLLERR)))
					nbd_aio_notify_read(c->h);
				else if ((dir & LIBNBD_AIO_DIRECTION_WRITE) &&
					 (p.revents & (POLLOUT | POLLHUP | POLLERR)))
					nbd_aio_notify_write(c->h);
				else
					break;
				if (!c->h || (p.revents & (POLLHUP | POLLERR)))
					break;
				dir = nbd_aio_get_direction(c->h);
			}
		}
	}
	now = now_ms();
	step(c, now, &done);
	arm(c, now, &done);
	if (done && c->armed && !c->wait_head && !c->sent) {
		/* the last requests finished another way than through the queued poll (a
		 * deadline seen on a new request's way in): they complete when it comes back,
		 * made to at once, so that no poll stays queued once they all have */
		struct itimerspec its = { .it_value = { .tv_nsec = 1 } };
		timerfd_settime(c->tfd, 0, &its, NULL);
		c->timer_at = 0;
		c->held = done;
		return;
	}
	complete(done);
}

static void poll_done(struct eio *e, int res)
{
	struct nbd_conn *c = e->arg;
	eio_put(e);
	if (c->arming && res < 0) {	/* refused by the backend: arm() handles it */
		c->armed = false;
		c->arm_err = res;
		return;
	}
	c->armed = false;
	conn_run(c, true);
}

int nbd_ctx_init(struct cow_ctx *ctx)
{
	struct nbd_src *src = ctx->img->nbd;
	struct nbd_conn *c = calloc(1, sizeof(*c));
	struct epoll_event ev = { .events = EPOLLIN };
	if (!c)
		return -ENOMEM;
	c->ctx = ctx;
	c->src = src;
	c->sock = -1;
	c->min_block = 1;
	c->max_read = src->max_read;
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	ctx->nbd = c;
	ev.data.fd = c->tfd;
	if (c->epfd < 0 || c->tfd < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->tfd, &ev) < 0)
		return -errno;
	pthread_mutex_lock(&src->lock);
	c->h = src->spare;
	src->spare = NULL;
	pthread_mutex_unlock(&src->lock);
	if (c->h) {
		uint64_t size;
		char why[COW_ERRLEN];
		if (nbd_aio_is_ready(c->h) == 1 &&
		    !server_props(c->h, src->size, &size, &c->min_block, &c->max_read, why)) {
			set_state(c, NC_READY, false);
		} else {
			nbd_close(c->h);
			c->h = NULL;
		}
	}
	return 0;
}

void nbd_ctx_fini(struct cow_ctx *ctx)
{
	struct nbd_conn *c = ctx->nbd;
	struct nbd_cmd *cmd;
	if (!c)
		return;
	drop_handle(c);
	set_state(c, NC_IDLE, false);
	/* no request is in flight when a context is freed: these lists are empty */
	while ((cmd = c->wait_head)) {
		c->wait_head = cmd->next;
		cmd_free(cmd);
	}
	while ((cmd = c->sent)) {
		c->sent = cmd->next;
		cmd_free(cmd);
	}
	while ((cmd = c->held)) {
		c->held = cmd->next;
		cmd_free(cmd);
	}
	while ((cmd = c->free_cmds)) {
		c->free_cmds = cmd->next;
		free(cmd);
	}
	if (c->epfd >= 0)
		close(c->epfd);
	if (c->tfd >= 0)
		close(c->tfd);
	free(c);
	ctx->nbd = NULL;
}

void nbd_read(struct cow_ctx *ctx, struct cow_req *req)
{
	struct nbd_conn *c = ctx->nbd;
	struct req_state *st = req_st(req);
	uint64_t pos = req->off, end = req->off + req->len, deadline;

	deadline = now_ms() + c->src->timeout_ms;
	while (pos < end) {
		struct nbd_cmd *cmd = c->free_cmds;
		/* cut at the largest read from the block pos is in: widened to whole blocks,
		 * a piece is still no longer than that */
		uint64_t n = (pos & ~((uint64_t)c->src->min_block - 1)) + c->src->max_read;
		n = (n < end ? n : end) - pos;
		if (cmd)
			c->free_cmds = cmd->next;
		else if (!(cmd = malloc(sizeof(*cmd)))) {
			if (!st->res)
				st->res = -ENOMEM;
			break;
		}
		*cmd = (struct nbd_cmd){ .c = c, .req = req, .off = pos, .len = (uint32_t)n,
					 .dst = (char *)req->buf + (pos - req->off),
					 .deadline = deadline };
		st->pending++;
		wait_push(c, cmd);
		pos += n;
	}
	conn_run(c, false);	/* sent now when the connection is ready */
}

/* ---- statistics ---------------------------------------------------------------------------- */

const char *cow_net_state_name(int state)
{
	static const char *const names[] = { "idle", "connected", "connecting", "reconnecting",
					     "failed" };
	return state >= 0 && state <= COW_NET_FAILED ? names[state] : "unknown";
}

int cow_net_stats(struct cow_image *img, struct cow_net_stats *st)
{
	struct nbd_src *src;
	memset(st, 0, sizeof(*st));
	while (img && !img->nbd)
		img = img->backing;
	if (!img)
		return -ENOENT;
	src = img->nbd;
	st->uri = src->uri;
	st->timeout_ms = src->timeout_ms;
	pthread_mutex_lock(&src->lock);
	st->connections = src->up;
	st->state = src->lost ? (src->connecting ? COW_NET_RECONNECTING : COW_NET_FAILED) :
		    src->up ? COW_NET_CONNECTED : src->connecting ? COW_NET_CONNECTING :
		    COW_NET_IDLE;
	st->failed_since = src->lost ? src->failed_since : 0;
	memcpy(st->last_error, src->last_error, sizeof(st->last_error));
	if (src->spare)
		st->connections++;
	pthread_mutex_unlock(&src->lock);
	if (st->state == COW_NET_IDLE && st->connections)
		st->state = COW_NET_CONNECTED;
#define GET(f) __atomic_load_n(&src->f, __ATOMIC_RELAXED)
	st->reads = GET(reads);
	st->read_bytes = GET(read_bytes);
	st->read_errors = GET(read_errors);
	st->timeouts = GET(timeouts);
	st->connects = GET(connects);
	st->connect_failures = GET(connect_failures);
	st->disconnects = GET(disconnects);
#undef GET
	return 0;
}
