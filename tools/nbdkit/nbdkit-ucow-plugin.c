/* SPDX-License-Identifier: MIT */
/*
 * nbdkit-ucow-plugin: a ucow image (or one of its snapshots, read-only) served over NBD by
 * nbdkit, to any NBD client: qemu, nbd-client, another host's ucow overlay.
 *
 *   nbdkit ucow [file=]IMAGE [snapshot=NAME] [readonly=true] [allow-backing-outside=true]
 *               [allow-network-backing=true]
 *
 * (nbdkit PATH/nbdkit-ucow-plugin.so IMAGE where the plugin is not in nbdkit's plugin
 * folder.) The image and its backing chain are opened once, when nbdkit is ready, with one
 * engine context driven by one engine thread on an io_uring of its own (the engine's
 * asynchronous path, as a ublk queue thread drives it): nbdkit's worker threads hand their
 * requests to it and wait, so the requests of all connections are in flight together
 * (cow_submit), however many there are. One context, not one per worker thread: contexts
 * owe each other work that only their own thread can run (cow_ctx_poll), and an nbdkit
 * worker that waits for its next request would never run it. Flush, FUA, trim (discard)
 * and zero (write-zeroes) go to the engine as they are; a flush is image-wide, so several
 * connections may share it (can_multi_conn). Block status (extents) says which ranges read
 * as zeros without data, through the whole chain, so clients (qemu-img convert, nbdcopy)
 * skip them.
 * Backing files are confined to the image's folder unless allow-backing-outside=true, and a
 * backing image on an NBD server is followed only with allow-network-backing=true, as for
 * ucow dev add.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <liburing.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cowcore.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static char *file, *snapshot;
static bool readonly_opt, outside, network;
static struct cow_image *img;

/* The engine thread and the requests handed to it. */
#define WAKE_UD 1		/* the CQE of the wake eventfd's read (no COW_UD_ENGINE bit) */
struct job {
	struct cow_req req;
	int res;
	bool done;
	struct job *next;
};
static struct {
	pthread_mutex_t lock;
	pthread_cond_t done;
	struct job *head, *tail;
	bool stopping, running;
	int wake_fd;
	uint64_t wake_val;
	struct io_uring ring;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	pthread_t thread;
} eng = { .lock = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER, .wake_fd = -1 };

static void job_cb(struct cow_req *req, int res)
{
	struct job *j = req->priv;

	pthread_mutex_lock(&eng.lock);
	j->res = res;
	j->done = true;
	pthread_cond_broadcast(&eng.done);
	pthread_mutex_unlock(&eng.lock);
}

static void arm_wake(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&eng.ring);

	if (!sqe) {
		io_uring_submit(&eng.ring);
		sqe = io_uring_get_sqe(&eng.ring);
	}
	io_uring_prep_read(sqe, eng.wake_fd, &eng.wake_val, sizeof(eng.wake_val), 0);
	io_uring_sqe_set_data64(sqe, WAKE_UD);
}

static void *engine_thread(void *arg)
{
	(void)arg;
	arm_wake();
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		bool rearm = false;

		pthread_mutex_lock(&eng.lock);
		struct job *q = eng.head;
		eng.head = eng.tail = NULL;
		bool stop = eng.stopping;
		pthread_mutex_unlock(&eng.lock);
		for (struct job *next; q; q = next) {
			next = q->next;		/* the callback may run (and the job go) at once */
			cow_submit(eng.ctx, &q->req);
		}
		if (stop && !cow_backend_inflight(eng.be))
			break;
		if (io_uring_submit_and_wait(&eng.ring, 1) < 0 && errno != EINTR)
			continue;
		io_uring_for_each_cqe(&eng.ring, head, cqe) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);

			n++;
			if (ud & COW_UD_ENGINE)
				cow_backend_complete(ud, cqe->res);
			else if (ud == WAKE_UD)
				rearm = true;
		}
		io_uring_cq_advance(&eng.ring, n);
		if (rearm)
			arm_wake();
	}
	return NULL;
}

static int engine_start(void)
{
	int r;

	eng.wake_fd = eventfd(0, EFD_CLOEXEC);
	if (eng.wake_fd < 0)
		return -errno;
	if ((r = io_uring_queue_init(256, &eng.ring, 0)) < 0)
		return r;
	if ((r = cow_backend_uring_attach(&eng.ring, &eng.be)) < 0 ||
	    (r = cow_ctx_new(img, eng.be, &eng.ctx)) < 0 ||
	    (r = -pthread_create(&eng.thread, NULL, engine_thread, NULL)) < 0)
		return r;
	eng.running = true;
	return 0;
}

static void engine_stop(void)
{
	uint64_t one = 1;

	if (eng.running) {
		pthread_mutex_lock(&eng.lock);
		eng.stopping = true;
		pthread_mutex_unlock(&eng.lock);
		if (write(eng.wake_fd, &one, sizeof(one)) < 0) {
			/* an eventfd write fails only on overflow: it is readable anyway */
		}
		pthread_join(eng.thread, NULL);
		eng.running = false;
	}
	if (eng.ctx)
		cow_ctx_free(eng.ctx);
	if (eng.be)
		cow_backend_free(eng.be);
	if (eng.ring.ring_fd > 0)
		io_uring_queue_exit(&eng.ring);
	if (eng.wake_fd >= 0)
		close(eng.wake_fd);
	eng.ctx = NULL;
	eng.be = NULL;
	eng.wake_fd = -1;
}

static int bool_value(const char *key, const char *value, bool *out)
{
	int b = nbdkit_parse_bool(value);

	if (b < 0)
		return -1;	/* nbdkit_parse_bool said why */
	*out = b;
	(void)key;
	return 0;
}

static int ucow_config(const char *key, const char *value)
{
	if (!strcmp(key, "file")) {
		free(file);
		file = nbdkit_absolute_path(value);	/* cow_open says if it is missing */
		return file ? 0 : -1;
	}
	if (!strcmp(key, "snapshot")) {
		if (!*value || strlen(value) > 127) {
			nbdkit_error("snapshot: a name or id of 1 to 127 bytes");
			return -1;
		}
		free(snapshot);
		snapshot = strdup(value);
		return snapshot ? 0 : -1;
	}
	if (!strcmp(key, "readonly"))
		return bool_value(key, value, &readonly_opt);
	if (!strcmp(key, "allow-backing-outside"))
		return bool_value(key, value, &outside);
	if (!strcmp(key, "allow-network-backing"))
		return bool_value(key, value, &network);
	nbdkit_error("unknown parameter '%s' (file, snapshot, readonly, allow-backing-outside, "
		     "allow-network-backing)", key);
	return -1;
}

static int ucow_config_complete(void)
{
	if (!file) {
		nbdkit_error("the image is missing: nbdkit ucow [file=]IMAGE");
		return -1;
	}
	return 0;
}

static int ucow_get_ready(void)
{
	char err[COW_ERRLEN] = "";
	unsigned flags = (outside ? 0 : COW_OPEN_CONFINE) |
			 (readonly_opt || snapshot ? COW_OPEN_RDONLY : 0) |
			 (network ? COW_OPEN_ALLOW_NETWORK : 0);
	int r;

	r = cow_open(file, &(struct cow_open_opts){ .flags = flags, .snapshot = snapshot },
		     &img, err, sizeof(err));
	if (r < 0) {
		nbdkit_error("%s", err[0] ? err : strerror(-r));
		return -1;
	}
	if ((r = engine_start()) < 0) {
		nbdkit_error("%s: starting the engine thread: %s", file, strerror(-r));
		return -1;
	}
	return 0;
}

static void ucow_unload(void)
{
	engine_stop();
	if (img) {
		int r = cow_close(img);

		if (r < 0)
			nbdkit_error("%s: closing: %s", file, strerror(-r));
	}
	free(file);
	free(snapshot);
}

/* One request through the engine thread: 0, or -1 with errno and the error said. */
static int ucow_rw(int op, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct job j = { .req = { .op = (uint8_t)op, .off = offset, .len = count, .buf = buf,
				  .flags = flags & NBDKIT_FLAG_FUA ? COW_REQ_FUA : 0,
				  .cb = job_cb, .priv = &j } };
	uint64_t one = 1;

	pthread_mutex_lock(&eng.lock);
	if (eng.tail)
		eng.tail->next = &j;
	else
		eng.head = &j;
	eng.tail = &j;
	pthread_mutex_unlock(&eng.lock);
	if (write(eng.wake_fd, &one, sizeof(one)) < 0) {
		/* overflow only: the engine thread is woken already */
	}
	pthread_mutex_lock(&eng.lock);
	while (!j.done)
		pthread_cond_wait(&eng.done, &eng.lock);
	pthread_mutex_unlock(&eng.lock);
	if (j.res < 0) {
		const char *m = cow_errmsg(img);

		nbdkit_error("%s", m && *m ? m : strerror(-j.res));
		errno = -j.res;
		return -1;
	}
	return 0;
}

static void *ucow_open(int readonly)
{
	static int handle;	/* every connection shares the image */

	(void)readonly;
	return &handle;
}

static int64_t ucow_get_size(void *h)
{
	struct cow_info in;

	(void)h;
	cow_get_info(img, &in);
	return (int64_t)in.virtual_size;
}

static int ucow_can_write(void *h)
{
	(void)h;
	return !(readonly_opt || snapshot);
}

static int ucow_yes(void *h)
{
	(void)h;
	return 1;
}

static int ucow_can_fua(void *h)
{
	(void)h;
	return NBDKIT_FUA_NATIVE;
}

static int ucow_pread(void *h, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
	(void)h;
	(void)flags;
	return ucow_rw(COW_READ, buf, count, offset, 0);
}

static int ucow_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset,
		       uint32_t flags)
{
	(void)h;
	return ucow_rw(COW_WRITE, (void *)buf, count, offset, flags);
}

static int ucow_zero(void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	(void)h;
	return ucow_rw(COW_WRITE_ZEROES, NULL, count, offset, flags);
}

static int ucow_trim(void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	(void)h;
	return ucow_rw(COW_DISCARD, NULL, count, offset, flags);
}

static int ucow_flush(void *h, uint32_t flags)
{
	(void)h;
	(void)flags;
	return ucow_rw(COW_FLUSH, NULL, 0, 0, 0);
}

/*
 * Block status: what the whole chain reads at off, for the first run of at most len bytes:
 * COW_MAP_ZERO (reads as zeros without data: a ZERO chunk, unallocated to the end of the
 * chain, a hole of a raw base, past a shorter base's end) or COW_MAP_DATA. cow_map reads the
 * metadata lock-free: with writes in flight the answer is as stale as any NBD block status.
 */
static int chain_kind(uint64_t off, uint64_t len, uint64_t *run)
{
	struct cow_image *i = img;
	for (;;) {
		int st = cow_map(i, off, len, run, NULL);
		if (st != COW_MAP_BACKING)
			return st;
		struct cow_image *b = cow_backing_image(i);
		struct cow_info bi;
		if (!b)
			return COW_MAP_ZERO;
		cow_get_info(b, &bi);
		if (off >= bi.virtual_size)
			return COW_MAP_ZERO;
		len = *run < bi.virtual_size - off ? *run : bi.virtual_size - off;
		i = b;
	}
}

static int ucow_extents(void *h, uint32_t count, uint64_t offset, uint32_t flags,
			struct nbdkit_extents *ext)
{
	uint64_t end = offset + count;
	(void)h;
	while (offset < end) {
		uint64_t run;
		int st = chain_kind(offset, end - offset, &run);
		if (st < 0) {
			nbdkit_error("%s: block status at %llu: %s", file,
				     (unsigned long long)offset, strerror(-st));
			errno = -st;
			return -1;
		}
		if (nbdkit_add_extent(ext, offset, run, st == COW_MAP_ZERO ?
				      NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0) == -1)
			return -1;
		offset += run;
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
	}
	return 0;
}

static struct nbdkit_plugin plugin = {
	.name = "ucow",
	.longname = "ucow copy-on-write images",
	.version = UCOW_PLUGIN_VERSION,
	.description = "Serve a ucow image (or one of its snapshots, read-only) over NBD.",
	.config = ucow_config,
	.config_complete = ucow_config_complete,
	.config_help = "[file=]IMAGE                 the ucow image (required)\n"
		       "snapshot=NAME                serve this internal snapshot, read-only\n"
		       "readonly=true                open the image read-only\n"
		       "allow-backing-outside=true   follow backing files outside IMAGE's folder\n"
		       "allow-network-backing=true   follow a backing image on an NBD server",
	.magic_config_key = "file",
	.get_ready = ucow_get_ready,
	.unload = ucow_unload,
	.open = ucow_open,
	.get_size = ucow_get_size,
	.can_write = ucow_can_write,
	.can_flush = ucow_yes,
	.can_trim = ucow_can_write,
	.can_zero = ucow_can_write,
	.can_fua = ucow_can_fua,
	.can_multi_conn = ucow_yes,
	.can_extents = ucow_yes,
	.extents = ucow_extents,
	.pread = ucow_pread,
	.pwrite = ucow_pwrite,
	.zero = ucow_zero,
	.trim = ucow_trim,
	.flush = ucow_flush,
	.errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN(plugin)
