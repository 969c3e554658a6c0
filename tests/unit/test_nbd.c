/* SPDX-License-Identifier: MIT */
/*
 * Network backing names (cowcore/nbd.c, util.c, image.c): which names are URIs, which URIs
 * may be connected to, that such a name is never taken from the image's folder, and that an
 * image naming one is refused without COW_OPEN_ALLOW_NETWORK before anything connects (a
 * listening socket counts the connections), or with it when the URI is hostile. The reads
 * themselves, over real servers, are tests/cli/t_nbd_backing.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#include "unit.h"

static void test_name_is_uri(void **state)
{
	(void)state;
	static const char *const yes[] = {
		"nbd://h/x", "nbds://h:1/x", "nbd+unix:///x?socket=/s", "nbds+unix:///?socket=s",
		"nbd+vsock://1", "nbd+ssh://h/x", "nbds+ssh://h", "nbds+vsock://2",
	};
	static const char *const no[] = {
		"base.raw", "/abs/base.raw", "nbd:/x", "nbd:x", "NBD://h/x", "http://h/x",
		"dir/nbd://x", "xnbd://h", "nbd+://h", "nbd+unixx://h", "", "://h",
	};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_true(cow_name_is_uri(yes[i]));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(cow_name_is_uri(no[i]));
}

static void test_uri_check(void **state)
{
	char why[COW_ERRLEN], big[UCOW_BACKING_NAME_MAX + 16];
	(void)state;
	assert_int_equal(nbd_uri_check("nbd://127.0.0.1:10809/exp", why), 0);
	assert_int_equal(nbd_uri_check("nbds://host/exp", why), 0);
	assert_int_equal(nbd_uri_check("nbd+unix:///exp?socket=/run/x.sock", why), 0);
	assert_int_equal(nbd_uri_check("nbds+unix:///?socket=/run/x.sock", why), 0);
	/* transports that run commands or reach VMs */
	assert_int_equal(nbd_uri_check("nbd+ssh://host/exp", why), -EPROTONOSUPPORT);
	assert_non_null(strstr(why, "transport not allowed"));
	assert_int_equal(nbd_uri_check("nbd+vsock://3:10809", why), -EPROTONOSUPPORT);
	assert_int_equal(nbd_uri_check("nbds+vsock://3", why), -EPROTONOSUPPORT);
	/* bytes that would break a one-line message or hide something */
	assert_int_equal(nbd_uri_check("nbd://host/a b", why), -EINVAL);
	assert_non_null(strstr(why, "at 12"));
	assert_int_equal(nbd_uri_check("nbd://host/a\nb", why), -EINVAL);
	assert_int_equal(nbd_uri_check("nbd://host/\x7f", why), -EINVAL);
	assert_int_equal(nbd_uri_check("nbd://host/\xc3\xa9", why), -EINVAL);
	assert_int_equal(nbd_uri_check("base.raw", why), -EINVAL);
	memcpy(big, "nbd://h/", 8);
	memset(big + 8, 'a', sizeof(big) - 9);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(nbd_uri_check(big, why), -EINVAL);
	assert_non_null(strstr(why, "longer than"));
	/* the query names the socket and nothing else */
	assert_int_equal(nbd_uri_check("nbds://h/x?tls-verify-peer=false", why), -EINVAL);
	assert_string_equal(why, "URI parameter 'tls-verify-peer' not allowed (socket= only)");
	assert_int_equal(nbd_uri_check("nbd+unix:///?socket=/s&tls-psk-file=/etc/k", why),
			 -EINVAL);
	assert_string_equal(why, "URI parameter 'tls-psk-file' not allowed (socket= only)");
	assert_int_equal(nbd_uri_check("nbds://h/x?tls-certificates", why), -EINVAL);
	assert_int_equal(nbd_uri_check("nbd+unix:///e?socket=/run/a&socket=/run/b", why), 0);
}

/*
 * nbds:// over TCP needs the CA libnbd checks the server with: without it (root: no
 * /etc/pki/libnbd/ca-cert.pem) the open is refused before anything connects; with a
 * non-root HOME, ~/.pki/libnbd/ca-cert.pem counts. nbds+unix:// needs none.
 */
static void test_tls_needs_ca(void **state)
{
	char where[512], *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	struct cow_image *img = NULL;
	(void)state;
	assert_int_equal(nbd_tls_ca("nbds+unix:///?socket=/s", where, sizeof(where)), 0);
	assert_int_equal(nbd_tls_ca("nbd://h/x", where, sizeof(where)), 0);
	if (geteuid() == 0 && access("/etc/pki/libnbd/ca-cert.pem", F_OK) == 0) {
		free(home);
		skip();	/* this host has the CA: the refusal cannot be shown here */
	}
	setenv("HOME", dir, 1);
	if (geteuid() == 0) {
		assert_int_equal(nbd_tls_ca("nbds://h/x", where, sizeof(where)), -ENOKEY);
		assert_string_equal(where, "/etc/pki/libnbd/ca-cert.pem");
		assert_int_equal(cow_open("nbds://127.0.0.1:9/x", &(struct cow_open_opts){
					  .fmt = COW_FMT_RAW, .flags = COW_OPEN_RDONLY |
					  COW_OPEN_ALLOW_NETWORK }, &img, err, sizeof(err)), -ENOKEY);
		assert_non_null(strstr(err, "TLS needs a CA certificate to check the server with "
				       "(/etc/pki/libnbd/ca-cert.pem is missing; libnbd would "
				       "accept any server)"));
	} else {
		char d[600];
		assert_int_equal(nbd_tls_ca("nbds://h/x", where, sizeof(where)), -ENOKEY);
		snprintf(d, sizeof(d), "mkdir -p %s/.pki/libnbd && touch %s/.pki/libnbd/ca-cert.pem",
			 dir, dir);
		assert_int_equal(system(d), 0);
		assert_int_equal(nbd_tls_ca("nbds://h/x", where, sizeof(where)), 0);
	}
	if (home) {
		setenv("HOME", home, 1);
		free(home);
	}
}

static void test_backing_path(void **state)
{
	char out[COW_PATH_MAX];
	(void)state;
	assert_int_equal(cow_backing_path("/img/dir/ov.ucow", "nbd://h/x", out, sizeof(out)), 0);
	assert_string_equal(out, "nbd://h/x");	/* never taken from the folder */
	assert_int_equal(cow_backing_path("/img/dir/ov.ucow", "nbd+unix:///?socket=s", out,
					  sizeof(out)), 0);
	assert_string_equal(out, "nbd+unix:///?socket=s");
	assert_int_equal(cow_backing_path("/img/dir/ov.ucow", "b.raw", out, sizeof(out)), 0);
	assert_string_equal(out, "/img/dir/b.raw");
}

/* A Unix socket that listens (and never accepts): a connection attempt is queued on it. */
static int listener(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	unlink(path);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

/* Connections waiting on the listening socket (accepted here, without blocking). */
static int pending(int lfd)
{
	int n = 0, c;
	int fl = fcntl(lfd, F_GETFL);
	fcntl(lfd, F_SETFL, fl | O_NONBLOCK);
	while ((c = accept(lfd, NULL, NULL)) >= 0) {
		close(c);
		n++;
	}
	fcntl(lfd, F_SETFL, fl);
	return n;
}

static void test_refused_without_consent(void **state)
{
	char uri[600];
	struct cow_image *img;
	int lfd = listener(P("l.sock"));
	(void)state;
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", P("l.sock"));

	/* create refuses the name */
	assert_int_equal(cow_create(P("a.ucow"), &(struct cow_create_opts){ .size = 1 << 20,
				    .backing = uri, .backing_fmt = COW_FMT_RAW }, err, sizeof(err)),
			 -EREMOTE);
	assert_non_null(strstr(err, "network backing is not allowed"));
	assert_non_null(strstr(err, uri));
	assert_int_equal(access(P("a.ucow"), F_OK), -1);

	/* an image that names it (written without opening the chain) */
	assert_int_equal(cow_create(P("b.ucow"), &(struct cow_create_opts){ .size = 1 << 20 },
				    err, sizeof(err)), 0);
	assert_int_equal(cow_open(P("b.ucow"), &(struct cow_open_opts){
				  .flags = COW_OPEN_NOCHAIN | COW_OPEN_ALLOW_NETWORK }, &img, err,
				  sizeof(err)), 0);
	assert_int_equal(cow_set_backing(img, uri, COW_FMT_RAW), 0);
	assert_int_equal(cow_close(img), 0);

	/* every open that would follow the chain is refused, naming the image and the URI */
	static const unsigned flags[] = { 0, COW_OPEN_RDONLY, COW_OPEN_RDONLY | COW_OPEN_SHARE,
					  COW_OPEN_CONFINE, COW_OPEN_RDONLY | COW_OPEN_DIRECT };
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		err[0] = 0;
		assert_int_equal(cow_open(P("b.ucow"), &(struct cow_open_opts){ .flags = flags[i] },
					  &img, err, sizeof(err)), -EREMOTE);
		assert_non_null(strstr(err, "b.ucow: its backing image"));
		assert_non_null(strstr(err, uri));
	}
	/* the URI itself, opened directly */
	assert_int_equal(cow_open(uri, &(struct cow_open_opts){ .fmt = COW_FMT_RAW,
				  .flags = COW_OPEN_RDONLY }, &img, err, sizeof(err)), -EREMOTE);
	/* info without the chain is fine */
	assert_int_equal(cow_open(P("b.ucow"), &(struct cow_open_opts){
				  .flags = COW_OPEN_RDONLY | COW_OPEN_NOCHAIN }, &img, err,
				  sizeof(err)), 0);
	cow_close(img);
	assert_int_equal(pending(lfd), 0);	/* nothing connected */

	/* with consent, a connection is made (and fails the handshake: nobody answers) */
	assert_int_not_equal(cow_open(P("b.ucow"), &(struct cow_open_opts){
				      .flags = COW_OPEN_RDONLY | COW_OPEN_ALLOW_NETWORK,
				      .net_timeout_ms = 300 }, &img, err, sizeof(err)), 0);
	assert_non_null(strstr(err, uri));
	assert_true(pending(lfd) >= 1);
	/* only raw content; read-write refused; a bad timeout refused */
	assert_int_equal(cow_open(uri, &(struct cow_open_opts){ .fmt = COW_FMT_UCOW,
				  .flags = COW_OPEN_RDONLY | COW_OPEN_ALLOW_NETWORK }, &img, err,
				  sizeof(err)), -ENOTSUP);
	assert_int_equal(cow_open(uri, &(struct cow_open_opts){ .fmt = COW_FMT_NONE,
				  .flags = COW_OPEN_RDONLY | COW_OPEN_ALLOW_NETWORK }, &img, err,
				  sizeof(err)), -ENOTSUP);
	assert_int_equal(cow_open(uri, &(struct cow_open_opts){ .fmt = COW_FMT_RAW,
				  .flags = COW_OPEN_ALLOW_NETWORK }, &img, err, sizeof(err)),
			 -EROFS);
	assert_int_equal(cow_open(uri, &(struct cow_open_opts){ .fmt = COW_FMT_RAW,
				  .flags = COW_OPEN_RDONLY | COW_OPEN_ALLOW_NETWORK,
				  .net_timeout_ms = COW_NET_TIMEOUT_MAX_MS + 1 }, &img, err,
				  sizeof(err)), -EINVAL);
	assert_int_equal(pending(lfd), 0);	/* none of those connected either */
	close(lfd);
	unlink(P("l.sock"));
}

static void test_hostile_names_with_consent(void **state)
{
	static const char *const bad[] = { "nbd+ssh://evil/x", "nbd+vsock://1:2",
					   "nbd://h/a\tb", "nbds+ssh://h" };
	struct cow_image *img;
	(void)state;
	assert_int_equal(cow_create(P("c.ucow"), &(struct cow_create_opts){ .size = 1 << 20 },
				    err, sizeof(err)), 0);
	assert_int_equal(cow_open(P("c.ucow"), &(struct cow_open_opts){
				  .flags = COW_OPEN_NOCHAIN | COW_OPEN_ALLOW_NETWORK }, &img, err,
				  sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_true(cow_set_backing(img, bad[i], COW_FMT_RAW) < 0);
	cow_close(img);
}

/* nbdkit serving 1 MiB of memory on sock, in the foreground; its pid, or -1 without nbdkit */
static pid_t nbdkit_start(const char *sock)
{
	pid_t pid;
	unlink(sock);
	if (system("command -v nbdkit >/dev/null 2>&1") != 0)
		return -1;
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		execlp("nbdkit", "nbdkit", "-f", "-U", sock, "memory", "1M", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && access(sock, F_OK); i++)
		usleep(20000);
	assert_int_equal(access(sock, F_OK), 0);
	return pid;
}

static void nbdkit_kill(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* cow_net_stats through a connection's life: connected, lost (reads fail after the timeout,
 * the state says since when), back (the same context reconnects). */
static void test_stats_and_reconnect(void **state)
{
	char uri[600];
	struct cow_net_stats ns;
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	char *buf = malloc(65536);
	pid_t pid = nbdkit_start(P("m.sock"));
	(void)state;
	if (pid < 0) {
		free(buf);
		skip();
	}
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", P("m.sock"));
	assert_int_equal(cow_open(uri, &(struct cow_open_opts){ .fmt = COW_FMT_RAW,
				  .flags = COW_OPEN_RDONLY | COW_OPEN_ALLOW_NETWORK,
				  .net_timeout_ms = 500 }, &img, err, sizeof(err)), 0);
	assert_int_equal(cow_net_stats(img, &ns), 0);
	assert_string_equal(ns.uri, uri);
	assert_int_equal(ns.state, COW_NET_CONNECTED);
	assert_int_equal(ns.connects, 1);
	assert_int_equal(ns.timeout_ms, 500);
	assert_int_equal(cow_backend_new("uring", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, buf, 65536, 4096, 0), 0);
	assert_int_equal(cow_net_stats(img, &ns), 0);
	assert_int_equal(ns.state, COW_NET_CONNECTED);
	assert_int_equal(ns.connections, 1);
	assert_int_equal(ns.reads, 1);
	assert_int_equal(ns.read_bytes, 65536);
	assert_int_equal(ns.failed_since, 0);

	nbdkit_kill(pid);
	assert_int_equal(cow_rw(ctx, COW_READ, buf, 4096, 0, 0), -EIO);
	assert_int_equal(cow_backend_inflight(be), 0);	/* no poll left queued */
	assert_int_equal(cow_net_stats(img, &ns), 0);
	assert_true(ns.state == COW_NET_FAILED || ns.state == COW_NET_RECONNECTING);
	assert_true(ns.failed_since > 0);
	assert_int_equal(ns.disconnects, 1);
	assert_true(ns.read_errors >= 1 && ns.timeouts >= 1);
	assert_true(ns.connect_failures >= 1);
	assert_non_null(strstr(ns.last_error, uri));
	assert_int_equal(ns.connections, 0);

	pid = nbdkit_start(P("m.sock"));
	assert_int_equal(cow_rw(ctx, COW_READ, buf, 4096, 0, 0), 0);
	assert_int_equal(cow_backend_inflight(be), 0);
	assert_int_equal(cow_net_stats(img, &ns), 0);
	assert_int_equal(ns.state, COW_NET_CONNECTED);
	assert_int_equal(ns.failed_since, 0);
	assert_int_equal(ns.connects, 2);
	assert_int_equal(ns.reads, 2);
	/* reads past the export's end: refused for the image itself (a base reads zeros) */
	assert_int_equal(cow_rw(ctx, COW_READ, buf, 4096, (1 << 20) - 2048, 0), -EINVAL);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
	nbdkit_kill(pid);
	free(buf);
	unlink(P("m.sock"));
	/* an image without a network backing has no such statistics */
	assert_int_equal(cow_create(P("d.ucow"), &(struct cow_create_opts){ .size = 1 << 20 },
				    err, sizeof(err)), 0);
	assert_int_equal(cow_open(P("d.ucow"), NULL, &img, err, sizeof(err)), 0);
	assert_int_equal(cow_net_stats(img, &ns), -ENOENT);
	cow_close(img);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Two contexts (a device's two queues), each with its connection. The server goes: one
 * context's reads fail and it backs off; the other stays idle. The server comes back and the
 * idle context's connection reconnects: the state is "connected" again although the first
 * context's connection is still down (it was the vm test 67's flake: "failed (1
 * connection)" with the server back), and the first context's next read reconnects at once
 * instead of waiting out its back-off. */
static void test_two_contexts_server_back(void **state)
{
	char uri[600];
	struct cow_net_stats ns;
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *a, *b;
	char *buf = malloc(4096);
	uint64_t t0;
	pid_t pid = nbdkit_start(P("t.sock"));
	(void)state;
	if (pid < 0) {
		free(buf);
		skip();
	}
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", P("t.sock"));
	assert_int_equal(cow_open(uri, &(struct cow_open_opts){ .fmt = COW_FMT_RAW,
				  .flags = COW_OPEN_RDONLY | COW_OPEN_ALLOW_NETWORK,
				  .net_timeout_ms = 4000 }, &img, err, sizeof(err)), 0);
	assert_int_equal(cow_backend_new("uring", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &a), 0);
	assert_int_equal(cow_ctx_new(img, be, &b), 0);
	assert_int_equal(cow_rw(a, COW_READ, buf, 4096, 0, 0), 0);
	assert_int_equal(cow_rw(b, COW_READ, buf, 4096, 4096, 0), 0);
	assert_int_equal(cow_net_stats(img, &ns), 0);
	assert_int_equal(ns.connections, 2);

	nbdkit_kill(pid);
	/* b: tries at once, then 0.5, 1.5 and 3.5 s later; its read fails at its deadline (4 s)
	 * with the next try 3.5 s away (7.5 s) */
	assert_int_equal(cow_rw(b, COW_READ, buf, 4096, 0, 0), -EIO);
	assert_int_equal(cow_net_stats(img, &ns), 0);
	assert_int_equal(ns.state, COW_NET_FAILED);
	assert_true(ns.failed_since > 0);
	assert_true(ns.connect_failures >= 2);

	pid = nbdkit_start(P("t.sock"));
	assert_int_equal(cow_rw(a, COW_READ, buf, 4096, 0, 0), 0);	/* its dead one replaced */
	assert_int_equal(cow_net_stats(img, &ns), 0);
	assert_int_equal(ns.state, COW_NET_CONNECTED);
	assert_int_equal(ns.failed_since, 0);
	assert_int_equal(ns.connections, 1);
	t0 = mono_ms();
	assert_int_equal(cow_rw(b, COW_READ, buf, 4096, 0, 0), 0);
	assert_true(mono_ms() - t0 < 1500);	/* not the rest of its back-off (3.5 s) */
	assert_int_equal(cow_net_stats(img, &ns), 0);
	assert_int_equal(ns.state, COW_NET_CONNECTED);
	assert_int_equal(ns.connections, 2);
	assert_int_equal(cow_backend_inflight(be), 0);
	cow_ctx_free(a);
	cow_ctx_free(b);
	cow_backend_free(be);
	cow_close(img);
	nbdkit_kill(pid);
	free(buf);
	unlink(P("t.sock"));
}

/* cow_backing_reopen (an online commit) with a network base: the image over it is reopened
 * read-write with its chain (the consent and timeout follow); the base itself refuses. */
static void test_backing_reopen(void **state)
{
	char uri[600];
	struct cow_image *img, *mid;
	pid_t pid = nbdkit_start(P("r.sock"));
	(void)state;
	if (pid < 0)
		skip();
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", P("r.sock"));
	unlink(P("mid.ucow"));
	unlink(P("top.ucow"));
	assert_int_equal(cow_create(P("mid.ucow"), &(struct cow_create_opts){ .backing = uri,
				    .backing_fmt = COW_FMT_RAW, .open_flags = COW_OPEN_ALLOW_NETWORK },
				    err, sizeof(err)), 0);
	assert_int_equal(cow_create(P("top.ucow"), &(struct cow_create_opts){ .backing = "mid.ucow",
				    .backing_fmt = COW_FMT_UCOW, .open_flags = COW_OPEN_ALLOW_NETWORK },
				    err, sizeof(err)), 0);
	assert_int_equal(cow_open(P("top.ucow"), &(struct cow_open_opts){
				  .flags = COW_OPEN_ALLOW_NETWORK, .net_timeout_ms = 700 }, &img, err,
				  sizeof(err)), 0);
	assert_int_equal(cow_backing_reopen(img, 1, err, sizeof(err)), 0);
	mid = cow_backing_image(img);
	assert_false(mid->read_only);
	assert_int_equal(mid->backing->net_timeout_ms, 700);
	assert_int_equal(cow_backing_reopen(img, 0, err, sizeof(err)), 0);
	assert_int_equal(cow_backing_reopen(cow_backing_image(img), 1, err, sizeof(err)), -EROFS);
	assert_non_null(strstr(err, "an image on an NBD server is read-only"));
	assert_int_equal(cow_close(img), 0);
	nbdkit_kill(pid);
	unlink(P("r.sock"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_is_uri),
		cmocka_unit_test(test_uri_check),
		cmocka_unit_test(test_tls_needs_ca),
		cmocka_unit_test(test_backing_path),
		cmocka_unit_test(test_refused_without_consent),
		cmocka_unit_test(test_hostile_names_with_consent),
		cmocka_unit_test(test_stats_and_reconnect),
		cmocka_unit_test(test_two_contexts_server_back),
		cmocka_unit_test(test_backing_reopen),
	};
	(void)pass_queue;	/* unit.h's pass-through backend: not needed here */
	(void)pass_submit_wait;
	return UNIT_RUN(tests);
}
