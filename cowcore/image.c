/* SPDX-License-Identifier: MIT */
/*
 * Layer 6, the image lifecycle: create, open (lock, header, load.c's sequence, backing
 * chain), close (checkpoint, clean flag), info and statistics.
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compress.h"
#include "image.h"
#include "qcow2.h"

/* The images above one being opened (loop detection). */
struct chain_link {
	dev_t dev;
	ino_t ino;
	const struct chain_link *up;
	const char *root;	/* COW_OPEN_CONFINE: the real path of the top image's folder */
};

static int cow_open_depth(const char *path, int fmt, unsigned flags, struct cow_image **out,
			  char *err, int depth, const struct chain_link *up, int sidelog_fd,
			  uint32_t net_ms);

static bool all_zero(const uint32_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i])
			return false;
	return true;
}

/* The engine's messages are built in a COW_ERRLEN buffer; the caller's may be any size. */
static void give_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
}


const char *cow_errmsg(struct cow_image *img) { return img->err; }

int cow_prealloc_parse(const char *name)
{
	static const char *const names[] = { "off", "metadata", "falloc", "full" };
	for (int i = 0; i < 4; i++)
		if (!strcmp(name, names[i]))
			return i;
	return -EINVAL;
}

/*
 * Preallocation of a new image (before its header is written: a failure leaves no image):
 * table entry i maps physical chunk data_offset / chunk_size + i, written through the
 * table extent; the file grows over the data area (a hole), which falloc reserves and full
 * writes with zeros. The bitmaps stay clear: the content is what it was.
 */
static int prealloc(int fd, const struct ucow_hdr *h, uint32_t mode)
{
	uint64_t first = h->data_offset / h->chunk_size, end;
	uint64_t per = 1u << 16, n = h->nr_chunks;	/* entries per write: 512 KiB */
	uint8_t *t = NULL;
	int r = 0;

	if (mode > COW_PREALLOC_FULL)
		return -EINVAL;
	if (n > (UINT64_MAX - h->data_offset) / h->chunk_size)
		return -EFBIG;
	end = h->data_offset + n * h->chunk_size;
	if (!(t = meta_zalloc(per * 8)))
		return -ENOMEM;
	for (uint64_t i = 0; i < n && !r; i += per) {
		uint64_t k = n - i < per ? n - i : per;
		for (uint64_t j = 0; j < k; j++)
			put_le64(t + j * 8, first + i + j);
		r = io_pwrite_all(fd, t, (size_t)(((k * 8) + 4095) & ~4095ull),
				  h->table_offset + i * 8);
		memset(t, 0, per * 8);
	}
	free(t);
	if (!r && ftruncate(fd, (off_t)end) < 0)
		r = -errno;
	if (!r && mode == COW_PREALLOC_FALLOC) {
		int e = posix_fallocate(fd, (off_t)h->data_offset, (off_t)(end - h->data_offset));
		r = -e;
	}
	if (!r && mode == COW_PREALLOC_FULL) {
		uint8_t *z = meta_zalloc(1u << 20);
		if (!z)
			return -ENOMEM;
		for (uint64_t off = h->data_offset; off < end && !r; off += 1u << 20)
			r = io_pwrite_all(fd, z, end - off < (1u << 20) ? end - off : 1u << 20, off);
		free(z);
	}
	return r;
}

static int create_image(const char *path, const struct cow_create_opts *o, char *err)
{
	struct ucow_hdr h;
	uint64_t size = o->size;
	uint8_t *buf = NULL;
	int fd = -1, r;

	if (o->backing) {
		struct cow_image *b;
		char full[COW_PATH_MAX];
		if (o->backing_fmt != COW_FMT_RAW && o->backing_fmt != COW_FMT_UCOW &&
		    o->backing_fmt != COW_FMT_QCOW2) {
			snprintf(err, COW_ERRLEN, "%s: the backing format must be given "
				 "(-F raw|ucow|qcow2)", path);
			return -EINVAL;
		}
		if (cow_name_is_uri(o->backing) && !(o->open_flags & COW_OPEN_ALLOW_NETWORK)) {
			snprintf(err, COW_ERRLEN, "%s: its backing image '%s' is on the network; "
				 "network backing is not allowed", path, o->backing);
			return -EREMOTE;
		}
		if ((o->open_flags & ~COW_OPEN_ALLOW_NETWORK) ||
		    o->net_timeout_ms > COW_NET_TIMEOUT_MAX_MS) {
			snprintf(err, COW_ERRLEN, "%s: unknown create options", path);
			return -EINVAL;
		}
		if (strlen(o->backing) > UCOW_BACKING_NAME_MAX) {
			snprintf(err, COW_ERRLEN, "%s: backing file name longer than %d bytes", path,
				 UCOW_BACKING_NAME_MAX);
			return -ENAMETOOLONG;
		}
		/* resolve relative to the new image's folder, as open will */
		r = cow_backing_path(path, o->backing, full, sizeof(full));
		if (!r)
			r = cow_open_depth(full, o->backing_fmt, COW_OPEN_RDONLY |
					   (o->open_flags & COW_OPEN_ALLOW_NETWORK), &b, err, 0,
					   NULL, -1, o->net_timeout_ms);
		else
			snprintf(err, COW_ERRLEN, "%s: backing file name too long", path);
		if (r)
			return r;
		if (!size)
			size = b->vsize;
		cow_close(b);
	}
	r = ucow_hdr_init(&h, size, o->chunk_size, o->block_size, o->journal_size, err,
			  COW_ERRLEN);
	if (r) {
		char tmp[COW_ERRLEN];
		snprintf(tmp, sizeof(tmp), "%s: %s", path, err);
		memcpy(err, tmp, COW_ERRLEN);
		return r;
	}
	if (o->features & COW_CREATE_COPY_ON_READ)
		h.compat |= UCOW_COMPAT_COPY_ON_READ;
	if (o->backing) {
		h.backing_fmt = o->backing_fmt;
		h.backing_len = strlen(o->backing);
		memcpy(h.backing, o->backing, h.backing_len + 1);
	}
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
		return r;
	}
	buf = meta_zalloc(UCOW_HDR_SIZE);
	if (!buf) {
		r = -ENOMEM;
		goto fail;
	}
	/* sparse: the metadata regions are holes that read as zeros until written */
	if (ftruncate(fd, (off_t)h.data_offset) < 0) {
		r = -errno;
		goto fail;
	}
	if (o->prealloc != COW_PREALLOC_OFF && (r = prealloc(fd, &h, o->prealloc)))
		goto fail;
	ucow_hdr_encode(&h, buf);
	r = io_pwrite_all(fd, buf, UCOW_HDR_SIZE, (h.generation % UCOW_HDR_SLOTS) * UCOW_HDR_SIZE);
	if (!r && fsync(fd) < 0)
		r = -errno;
	if (r)
		goto fail;
	free(buf);
	close(fd);
	return 0;
fail:
	snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
	free(buf);
	close(fd);
	unlink(path);
	return r;
}

int cow_create(const char *path, const struct cow_create_opts *o, char *err, size_t errlen)
{
	char msg[COW_ERRLEN] = "";
	int r;
	if (!all_zero(o->reserved, sizeof(o->reserved) / sizeof(o->reserved[0])) ||
	    (o->features & ~COW_CREATE_COPY_ON_READ)) {
		snprintf(msg, sizeof(msg), "%s: unknown create options", path);
		r = -EINVAL;
	} else if ((o->features & COW_CREATE_COPY_ON_READ) && !o->backing) {
		snprintf(msg, sizeof(msg), "%s: copy-on-read needs a backing image", path);
		r = -EINVAL;
	} else {
		r = create_image(path, o, msg);
	}
	if (r)
		give_err(err, errlen, msg);
	return r;
}

/* OFD lock: shared for readers, exclusive for the writer. */
/*
 * A process killed while it had io_uring requests in flight releases its files (and so its
 * lock) only when the kernel has torn the ring down, a moment after the process is gone:
 * retry for up to two seconds before calling the image busy.
 */
static int lock_image(struct cow_image *img, char *err)
{
	struct flock fl = { .l_type = img->read_only ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET };
	if (img->open_flags & COW_OPEN_SHARE)
		return 0;	/* force share: no lock, read-only (cow_open checked) */
	for (int i = 0; i < 40; i++) {
		if (fcntl(img->fd, F_OFD_SETLK, &fl) == 0)
			return 0;
		if (errno != EAGAIN && errno != EACCES)
			break;
		usleep(50000);
	}
	if (errno == EAGAIN || errno == EACCES) {
		snprintf(err, COW_ERRLEN, "%s: image is in use by another process (it holds a %s "
			 "lock)", img->path, img->read_only ? "write" : "read or write");
		return -EBUSY;
	}
	snprintf(err, COW_ERRLEN, "%s: locking: %s", img->path, strerror(errno));
	return -errno;
}

static int read_header(struct cow_image *img, uint64_t file_size, char *err)
{
	uint8_t *buf = meta_zalloc(UCOW_HDR_SIZE * UCOW_HDR_SLOTS);
	struct ucow_hdr h[UCOW_HDR_SLOTS];
	char why[UCOW_HDR_SLOTS][COW_ERRLEN];
	int rs[UCOW_HDR_SLOTS], best = -1, r;

	if (!buf)
		return -ENOMEM;
	r = io_pread_all(img->fd, buf, UCOW_HDR_SIZE * UCOW_HDR_SLOTS, 0);
	if (r) {
		snprintf(err, COW_ERRLEN, "%s: reading the header: %s", img->path, strerror(-r));
		free(buf);
		return r;
	}
	if (file_size < UCOW_HDR_SIZE * UCOW_HDR_SLOTS && !memcmp(buf, UCOW_MAGIC, 8)) {
		snprintf(err, COW_ERRLEN, "%s: corrupt image: the file is truncated (%llu bytes)",
			 img->path, (unsigned long long)file_size);
		free(buf);
		return -EUCLEAN;
	}
	for (int i = 0; i < UCOW_HDR_SLOTS; i++) {
		if (memcmp(buf + i * UCOW_HDR_SIZE, UCOW_MAGIC, 8) && i == 0 &&
		    memcmp(buf + UCOW_HDR_SIZE, UCOW_MAGIC, 8)) {
			/* no option named: each caller has its own way to say "raw" */
			snprintf(err, COW_ERRLEN, "%s: not a ucow image (no ucow magic)", img->path);
			free(buf);
			return -EMEDIUMTYPE;
		}
		rs[i] = ucow_hdr_decode(buf + i * UCOW_HDR_SIZE, file_size, &h[i], why[i],
					COW_ERRLEN);
		if (!rs[i] && (best < 0 || h[i].generation > h[best].generation))
			best = i;
	}
	free(buf);
	if (best < 0) {
		/* the most telling reason: an unsupported feature, then a slot whose checksum is
		 * right (what is wrong in it), then slot 0 unless it has no magic */
		int i = rs[0] == -ENOTSUP ? 0 : rs[1] == -ENOTSUP ? 1 : -1;
		for (int k = 0; k < UCOW_HDR_SLOTS && i < 0; k++)
			if (strcmp(why[k], "bad magic") && strcmp(why[k], "header checksum mismatch"))
				i = k;
		if (i < 0)
			i = !memcmp(why[0], "bad magic", 9) ? 1 : 0;
		snprintf(err, COW_ERRLEN, "%s: %s%s", img->path,
			 rs[i] == -ENOTSUP ? "" : "corrupt image: ", why[i]);
		return rs[i];
	}
	img->hdr = h[best];
	return 0;
}

/*
 * COW_OPEN_CONFINE: a backing file must be named relative to its image and lie, symbolic
 * links resolved, inside root (the folder of the image the caller opened). Otherwise an
 * image from elsewhere could name /etc/shadow, or a device, as its base and hand its
 * content to whoever reads the disk. -EPERM names the file.
 */
static int confined(struct cow_image *img, const char *name, const char *full,
		    const char *root, char *err)
{
	size_t n = strlen(root);
	char *rp;
	bool inside;
	if (name[0] == '/') {
		snprintf(err, COW_ERRLEN, "%s: backing file name '%s' is absolute, outside the "
			 "image's folder", img->path, name);
		return -EPERM;
	}
	rp = realpath(full, NULL);
	if (!rp)
		return 0;	/* not there: the open says so */
	inside = !strncmp(rp, root, n) && (rp[n] == '/' || (n == 1 && root[0] == '/'));
	free(rp);
	if (!inside) {
		snprintf(err, COW_ERRLEN, "%s: backing file '%s' lies outside the image's folder",
			 img->path, name);
		return -EPERM;
	}
	return 0;
}

/*
 * Whether name may be img's backing file: full gets the file it names (from img's folder);
 * confined to up->root when that is set; not a file of the chain above (up), which would
 * be a loop (refused before the file is opened again).
 */
static int vet_backing(struct cow_image *img, const char *name, const struct chain_link *up,
		       char *full, char *err)
{
	struct stat st;
	int r;
	if (cow_name_is_uri(name)) {
		/* a hostile image must not make the host connect anywhere: asked for first */
		char why[COW_ERRLEN];
		if (!(img->open_flags & COW_OPEN_ALLOW_NETWORK)) {
			snprintf(err, COW_ERRLEN, "%s: its backing image '%s' is on the network; "
				 "network backing is not allowed", img->path, name);
			return -EREMOTE;
		}
		if ((r = nbd_uri_check(name, why))) {
			snprintf(err, COW_ERRLEN, "%s: backing '%s': %s", img->path, name, why);
			return r;
		}
		snprintf(full, COW_PATH_MAX, "%s", name);	/* as it is: never a file */
		return 0;
	}
	if ((r = cow_backing_path(img->path, name, full, COW_PATH_MAX))) {
		snprintf(err, COW_ERRLEN, "%s: backing file name too long", img->path);
		return r;
	}
	if (up->root && (r = confined(img, name, full, up->root, err)))
		return r;
	/* the same file twice in the chain is a loop: refuse before opening it again */
	if (!stat(full, &st))
		for (const struct chain_link *l = up; l; l = l->up)
			if (l->dev == st.st_dev && l->ino == st.st_ino) {
				snprintf(err, COW_ERRLEN, "%s: backing chain loops back to %s",
					 img->path, full);
				return -ELOOP;
			}
	return 0;
}

/* Open name (format fmt) and its chain, read-only, as img's backing file (img at depth). */
static int open_chain(struct cow_image *img, const char *name, int fmt, int depth,
		      const struct chain_link *up, struct cow_image **out, char *err)
{
	char full[COW_PATH_MAX];
	struct stat st;
	int r;
	if (depth >= COW_MAX_CHAIN) {
		snprintf(err, COW_ERRLEN, "%s: backing chain longer than %d images (a loop?)",
			 img->path, COW_MAX_CHAIN);
		return -ELOOP;
	}
	if ((r = vet_backing(img, name, up, full, err)))
		return r;
	bool exists = !stat(full, &st);
	unsigned bflags = COW_OPEN_RDONLY | (img->open_flags &
			  (COW_OPEN_DIRECT | COW_OPEN_CONFINE | COW_OPEN_SHARE |
			   COW_OPEN_ALLOW_NETWORK));
	r = cow_open_depth(full, fmt, bflags, out, err, depth + 1, up, -1, img->net_timeout_ms);
	/* a qcow2 image that does not name its backing file's format: probed by magic
	 * (qcow2, ucow), raw when none matches, as qemu does */
	if (r == -EMEDIUMTYPE && fmt == COW_FMT_NONE)
		r = cow_open_depth(full, COW_FMT_RAW, bflags, out, err, depth + 1, up, -1,
				   img->net_timeout_ms);
	/* a file further down missing: its own image's message names it, keep that one */
	if (r == -ENOENT && !exists && !cow_name_is_uri(name))
		snprintf(err, COW_ERRLEN, "%s: backing file '%s' not found", img->path, full);
	if (r == -EMEDIUMTYPE) {	/* the image's own word, not the caller's: no -f hint */
		snprintf(err, COW_ERRLEN, "%s: backing file '%s' is not a %s image (no %s "
			 "magic), though the image names its format %s", img->path, full,
			 cow_fmt_name(fmt), cow_fmt_name(fmt), cow_fmt_name(fmt));
		r = -EINVAL;
	}
	return r;
}

static int open_backing(struct cow_image *img, int depth, const struct chain_link *up,
			char *err)
{
	return open_chain(img, img->hdr.backing, img->hdr.backing_fmt, depth, up, &img->backing,
			  err);
}

/* Walk the chain: the same file twice is a loop. */
static int check_loop(struct cow_image *img, char *err)
{
	for (struct cow_image *a = img; a; a = a->backing) {
		struct stat sa;
		if (a->fd < 0)
			continue;	/* on a server: no file (and no chain below it) */
		if (fstat(a->fd, &sa))
			return -errno;
		for (struct cow_image *b = a->backing; b; b = b->backing) {
			struct stat sb;
			if (b->fd < 0)
				continue;
			if (fstat(b->fd, &sb))
				return -errno;
			if (sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino) {
				snprintf(err, COW_ERRLEN, "%s: backing chain loops back to %s",
					 img->path, a->path);
				return -ELOOP;
			}
		}
	}
	return 0;
}

static void img_free(struct cow_image *img)
{
	if (!img)
		return;
	if (img->backing)
		cow_close(img->backing);
	if (img->fd >= 0)
		close(img->fd);
	nbd_src_free(img);
	qcow2_free(img);
	comp_free(img);
	img_unload_meta(img);
	free(img->path);
	pthread_mutex_destroy(&img->lock);
	free(img);
}

/* Open img->path (img->open_flags), refusing anything but a regular file or a block
 * device; st gets its status. 0 or -errno with err set. */
static int open_file(struct cow_image *img, struct stat *st, char *err)
{
	const char *path = img->path;
	unsigned flags = img->open_flags;
	int r, oflags;

	/* O_NONBLOCK: opening a FIFO (a hostile backing name) must not wait for a writer */
	oflags = (img->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK |
		 ((flags & COW_OPEN_DIRECT) ? O_DIRECT : 0);
	img->fd = open(path, oflags);
	if (img->fd < 0) {
		r = -errno;
		if (r == -EACCES || r == -EROFS)
			snprintf(err, COW_ERRLEN, "%s: %s (open it read-only?)", path,
				 strerror(-r));
		else
			snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
		return r;
	}
	if (fstat(img->fd, st) < 0) {
		r = -errno;
		snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
		return r;
	}
	if (S_ISDIR(st->st_mode)) {
		r = -EISDIR;
		snprintf(err, COW_ERRLEN, "%s: is a directory", path);
		return r;
	}
	if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
		r = -EINVAL;
		snprintf(err, COW_ERRLEN, "%s: not a regular file or block device", path);
		return r;
	}
	if (fcntl(img->fd, F_SETFL, fcntl(img->fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		r = -errno;
		snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
		return r;
	}
	return 0;
}

/* COW_OPEN_CONFINE: the top image's folder, symbolic links resolved, bounds the chain. */
static int folder_of(const char *path, char **root, char *err)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) :
			    strdup(".");
	int r;
	*root = dir ? realpath(dir, NULL) : NULL;
	free(dir);
	if (*root)
		return 0;
	r = errno ? -errno : -ENOMEM;
	snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
	return r;
}

/*
 * An image on an NBD server (path a URI): only with COW_OPEN_ALLOW_NETWORK, only raw
 * content (the engine reads ucow and qcow2 metadata from a file), read-only.
 */
static int open_network(struct cow_image *img, int fmt, char *err)
{
	if (!(img->open_flags & COW_OPEN_ALLOW_NETWORK)) {
		snprintf(err, COW_ERRLEN, "%s: an image on the network; network backing is not "
			 "allowed", img->path);
		return -EREMOTE;
	}
	if (fmt != COW_FMT_RAW) {
		snprintf(err, COW_ERRLEN, "%s: only raw content is supported on an NBD server "
			 "(format %s given)", img->path, fmt == COW_FMT_NONE ? "none (raw is "
			 "never probed)" : cow_fmt_name(fmt));
		return -ENOTSUP;
	}
	return nbd_src_open(img, err);
}

/* 1 when img's file starts with the qcow2 magic, 0 when not, or -errno with err set. */
static int peek_qcow2(struct cow_image *img, const struct stat *st, char *err)
{
	uint8_t *buf = meta_zalloc(512);
	int r;
	(void)st;
	if (!buf)
		return -ENOMEM;
	r = io_pread_all(img->fd, buf, 512, 0);
	if (r)
		snprintf(err, COW_ERRLEN, "%s: reading the header: %s", img->path, strerror(-r));
	else
		r = qcow2_probe(buf);
	free(buf);
	return r;
}

/* The qcow2 image img->fd holds: read-only, refused when marked corrupt (but to check). */
static int open_qcow2(struct cow_image *img, const struct stat *st, char *err)
{
	uint64_t size = st->st_size;
	int r;
	img->fmt = COW_FMT_QCOW2;
	if (!img->read_only) {
		snprintf(err, COW_ERRLEN, "%s: qcow2 images are read-only in ucow (open it "
			 "read-only, or use it as the backing file of a ucow image)", img->path);
		return -EROFS;
	}
	if (S_ISBLK(st->st_mode) && ioctl(img->fd, BLKGETSIZE64, &size) < 0) {
		r = -errno;
		snprintf(err, COW_ERRLEN, "%s: %s", img->path, strerror(-r));
		return r;
	}
	r = qcow2_open(img, size, err);
	if (r)
		return r;
	if (img->corrupt && !(img->open_flags & COW_OPEN_CHECK)) {
		snprintf(err, COW_ERRLEN, "%s: qcow2 image is marked corrupt; it is not read "
			 "(check it with 'qemu-img check')", img->path);
		return -EUCLEAN;
	}
	return 0;
}

static int cow_open_depth(const char *path, int fmt, unsigned flags, struct cow_image **out,
		   char *err, int depth, const struct chain_link *up, int sidelog_fd,
		   uint32_t net_ms)
{
	char *root = NULL;
	struct cow_image *img = calloc(1, sizeof(*img));
	struct stat st;
	int r;

	if (!img)
		return -ENOMEM;
	pthread_mutex_init(&img->lock, NULL);
	img->fd = -1;
	img->sidelog_fd = (flags & COW_OPEN_RDONLY) ? -1 : sidelog_fd;
	if (flags & COW_OPEN_CHECK)
		flags |= COW_OPEN_RDONLY | COW_OPEN_NOCHAIN;
	if (flags & IMG_OPEN_REPAIR)
		flags = (flags | COW_OPEN_NOCHAIN | COW_OPEN_CHECK) & ~COW_OPEN_RDONLY;
	img->open_flags = flags;
	img->read_only = flags & COW_OPEN_RDONLY;
	img->path = strdup(path);
	img->net_timeout_ms = net_ms;
	if (!img->path) {
		r = -ENOMEM;
		goto fail;
	}
	if (cow_name_is_uri(path)) {
		r = open_network(img, fmt, err);
		if (r)
			goto fail;
		*out = img;
		return 0;
	}
	r = open_file(img, &st, err);
	if (r)
		goto fail;
	r = lock_image(img, err);
	if (r)
		goto fail;
	struct chain_link self = { .dev = st.st_dev, .ino = st.st_ino, .up = up,
				   .root = up ? up->root : NULL };

	if (fmt == COW_FMT_RAW) {
		img->fmt = COW_FMT_RAW;
		img->raw_size = st.st_size;
		if (S_ISBLK(st.st_mode) && ioctl(img->fd, BLKGETSIZE64, &img->raw_size) < 0) {
			r = -errno;
			snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
			goto fail;
		}
		img->vsize = img->raw_size;
		*out = img;
		return 0;
	}
	if (fmt == COW_FMT_NONE || fmt == COW_FMT_QCOW2) {
		r = peek_qcow2(img, &st, err);
		if (r < 0)
			goto fail;
		if (r || fmt == COW_FMT_QCOW2) {
			r = open_qcow2(img, &st, err);
			if (r)
				goto fail;
			goto chain;
		}
	}
	img->fmt = COW_FMT_UCOW;
	r = read_header(img, st.st_size, err);
	if (r)
		goto fail;
	if ((img->hdr.flags & UCOW_FLAG_CORRUPT) && !img->read_only &&
	    !(flags & COW_OPEN_NOCHAIN)) {
		snprintf(err, COW_ERRLEN, "%s: image is marked corrupt; it can only be opened "
			 "read-only (run 'ucow check')", path);
		r = -EUCLEAN;
		goto fail;
	}
	img->corrupt = img->hdr.flags & UCOW_FLAG_CORRUPT;
	if (flags & COW_OPEN_CHECK) {
		struct cow_check_result scratch = { 0 };
		r = img_load_meta(img, true, &scratch);
		img->load_problems = scratch.corruptions;
		if (!r && (flags & IMG_OPEN_REPAIR)) {
			img->corrupt = false;	/* what the load dropped is written back */
		} else if (!r && scratch.corruptions) {
			img->corrupt = true;
			snprintf(img->err, sizeof(img->err), "%s: corrupt image: %s", path,
				 scratch.first_problem);
		}
	} else {
		r = img_load_meta(img, false, NULL);
	}
	if (r) {
		snprintf(err, COW_ERRLEN, "%s", img->err);
		goto fail;
	}
chain:
	if (img->hdr.backing_len && !(flags & COW_OPEN_NOCHAIN)) {
		if (!up && (flags & COW_OPEN_CONFINE)) {
			if ((r = folder_of(path, &root, err)))
				goto fail;
			self.root = root;
		}
		r = open_backing(img, depth, &self, err);
		free(root);
		root = NULL;
		if (r)
			goto fail;
		r = check_loop(img, err);
		if (r)
			goto fail;
	}
	if (img->fmt == COW_FMT_UCOW && !img->read_only && !(flags & IMG_OPEN_REPAIR)) {
		/* from here on the journal may hold records the table does not */
		img->hdr.autoclear = 0;
		img->hdr.flags |= UCOW_FLAG_DIRTY;
		if (img->nb_snaps)	/* under.c U4: before any UNDER record */
			img->hdr.incompat |= UCOW_INCOMPAT_UNDERLAY;
		jnl_normalize(img);
		r = jnl_write_header(img);
		if (!r)
			r = img_sync(img);
		if (r == -EOVERFLOW) {
			snprintf(err, COW_ERRLEN, "%s", img->err);	/* the generation */
			goto fail;
		}
		if (r) {
			snprintf(err, COW_ERRLEN, "%s: marking the image in use: %s", path,
				 strerror(-r));
			goto fail;
		}
		img->cor = img->backing && !(flags & COW_OPEN_NOCHAIN) &&
			   ((flags & COW_OPEN_COPY_ON_READ) ||
			    (img->hdr.compat & UCOW_COMPAT_COPY_ON_READ));
	}
	*out = img;
	return 0;
fail:
	free(root);
	img_free(img);
	return r;
}

void img_abandon(struct cow_image *img)
{
	img->read_only = true;	/* nothing is written on the way out */
	if (img->backing)
		img_abandon(img->backing);
	img->backing = NULL;
	img_free(img);
}

int cow_close(struct cow_image *img)
{
	int r = 0;
	if (!img)
		return 0;
	if (img->fmt == COW_FMT_UCOW && !img->read_only && !img->corrupt) {
		cow_reclaim(img, 0);	/* a failed punch only leaves the space in use */
		r = jnl_checkpoint_all(img);
		if (!r)		/* after the checkpoint: no record maps them any more */
			comp_punch_dead_packs(img);
		if (!r) {
			/* drop the file's unused tail (grown ahead of allocation) */
			uint64_t end = img->next_pcn << img->chunk_shift;
			if (end < img->hdr.data_offset)
				end = img->hdr.data_offset;
			r = img_truncate(img, end);
		}
		if (!r) {
			img->hdr.flags &= ~UCOW_FLAG_DIRTY;
			if (!under_any(img))	/* U4: older versions open it again */
				img->hdr.incompat &= ~UCOW_INCOMPAT_UNDERLAY;
			r = jnl_write_header(img);
		}
		if (!r)
			r = img_sync(img);
	}
	img_free(img);
	return r;
}

/* A snapshot's content, read-only (the current state is left as it is). */
static int open_snapshot(const char *path, const struct cow_open_opts *o,
			 struct cow_image **out, char *err)
{
	struct cow_image *img;
	int r;
	if (!(o->flags & COW_OPEN_RDONLY)) {
		snprintf(err, COW_ERRLEN, "%s: a snapshot can only be opened read-only", path);
		return -EINVAL;
	}
	if (o->fmt != COW_FMT_NONE && o->fmt != COW_FMT_UCOW && o->fmt != COW_FMT_QCOW2) {
		snprintf(err, COW_ERRLEN, "%s: only ucow and qcow2 images have snapshots", path);
		return -EINVAL;
	}
	/* probed: a ucow or a qcow2 image (a file with neither magic is no image to look in) */
	r = cow_open_depth(path, o->fmt, o->flags, &img, err, 0, NULL, -1, o->net_timeout_ms);
	if (r)
		return r;
	r = img->fmt == COW_FMT_QCOW2 ? qcow2_use_snapshot(img, o->snapshot, err) :
	    snap_view(img, o->snapshot, err);
	if (r) {
		cow_close(img);
		return r;
	}
	*out = img;
	return 0;
}

int cow_open(const char *path, const struct cow_open_opts *o, struct cow_image **out,
	     char *err, size_t errlen)
{
	static const struct cow_open_opts defaults;
	char msg[COW_ERRLEN] = "";
	int r;
	if (!o)
		o = &defaults;
	if (!all_zero(o->reserved, sizeof(o->reserved) / sizeof(o->reserved[0])) ||
	    (o->flags & ~(COW_OPEN_RDONLY | COW_OPEN_DIRECT | COW_OPEN_NOCHAIN | COW_OPEN_CHECK |
			  COW_OPEN_SIDELOG | COW_OPEN_CONFINE | COW_OPEN_SHARE |
			  COW_OPEN_ALLOW_NETWORK | COW_OPEN_COPY_ON_READ)) ||
	    o->net_timeout_ms > COW_NET_TIMEOUT_MAX_MS) {
		snprintf(msg, sizeof(msg), "%s: unknown open options", path);
		r = -EINVAL;
	} else if ((o->flags & COW_OPEN_SHARE) &&
		   !(o->flags & (COW_OPEN_RDONLY | COW_OPEN_CHECK))) {
		/* without a lock, a second writer would corrupt the image */
		snprintf(msg, sizeof(msg), "%s: an image opened without a lock (force share) "
			 "can only be opened read-only", path);
		r = -EINVAL;
	} else if (o->snapshot) {
		r = open_snapshot(path, o, out, msg);
	} else {
		r = cow_open_depth(path, o->fmt, o->flags, out, msg, 0, NULL,
				   (o->flags & COW_OPEN_SIDELOG) ? o->sidelog_fd : -1,
				   o->net_timeout_ms);
	}
	if (r)
		give_err(err, errlen, msg);
	return r;
}

/*
 * A new backing file for img (an image cow_open returned, so at the top of its chain): the
 * name checked, or with open the file and its chain opened into *out, as cow_open would
 * open them were the name in img's header — bounded by img's folder under COW_OPEN_CONFINE,
 * and never reaching img itself.
 */
static int new_backing(struct cow_image *img, const char *name, int fmt, bool open,
		       struct cow_image **out, char *err)
{
	char full[COW_PATH_MAX], *root = NULL;
	struct stat st;
	int r;
	if (img->fmt != COW_FMT_UCOW) {
		snprintf(err, COW_ERRLEN, "%s: a %s image has no backing file ucow can change",
			 img->path, cow_fmt_name(img->fmt));
		return -ENOTSUP;
	}
	if (fmt != COW_FMT_RAW && fmt != COW_FMT_UCOW && fmt != COW_FMT_QCOW2) {
		snprintf(err, COW_ERRLEN, "%s: the backing format must be given (raw, ucow or "
			 "qcow2)", img->path);
		return -EINVAL;
	}
	if (!name[0] || strlen(name) > UCOW_BACKING_NAME_MAX) {
		snprintf(err, COW_ERRLEN, "%s: a backing file name must be 1 to %d bytes",
			 img->path, UCOW_BACKING_NAME_MAX);
		return name[0] ? -ENAMETOOLONG : -EINVAL;
	}
	if (fstat(img->fd, &st) < 0) {
		r = -errno;
		snprintf(err, COW_ERRLEN, "%s: %s", img->path, strerror(-r));
		return r;
	}
	if ((img->open_flags & COW_OPEN_CONFINE) && (r = folder_of(img->path, &root, err)))
		return r;
	struct chain_link self = { .dev = st.st_dev, .ino = st.st_ino, .root = root };
	r = open ? open_chain(img, name, fmt, 0, &self, out, err)
		 : vet_backing(img, name, &self, full, err);
	free(root);
	return r;
}

int cow_open_backing(struct cow_image *img, const char *name, int fmt, struct cow_image **out,
		     char *err, size_t errlen)
{
	char msg[COW_ERRLEN] = "";
	int r = new_backing(img, name, fmt, true, out, msg);
	if (r)
		give_err(err, errlen, msg);
	return r;
}

/*
 * DESIGN NOTES — a new backing file name, crash-safe in two steps:
 *   B1. a checkpoint (as snapshot S1): every write made before (what a safe rebase copied
 *       in, above all) is durable and in the table before the name changes;
 *   B2. the new name in one header write to the other slot (jnl_switch_header): a crash
 *       leaves the old header or the new one, never a torn name.
 */
int cow_set_backing(struct cow_image *img, const char *name, int fmt)
{
	char err[COW_ERRLEN] = "";
	struct cow_image *b = NULL;
	struct ucow_hdr nh;
	int r;
	if (name && !name[0])
		name = NULL;
	if (img->read_only) {
		img_set_err(img, "%s: image is open read-only%s", img->path,
			    img->corrupt ? " (it is marked corrupt)" : "");
		return -EROFS;
	}
	if (name || img->fmt != COW_FMT_UCOW) {
		/* the new chain must open, unless img was opened without its chain */
		r = new_backing(img, name ? name : "", fmt,
				!(img->open_flags & COW_OPEN_NOCHAIN), &b, err);
		if (r) {
			img_set_err(img, "%s", err);
			return r;
		}
		cow_close(b);
	}
	pthread_mutex_lock(&img->lock);
	r = jnl_checkpoint_all(img);					/* B1 */
	if (!r) {
		nh = img->hdr;
		nh.backing_fmt = name ? (uint32_t)fmt : 0;
		nh.backing_len = name ? (uint16_t)strlen(name) : 0;
		memset(nh.backing, 0, sizeof(nh.backing));
		if (name)
			memcpy(nh.backing, name, nh.backing_len);
		r = jnl_switch_header(img, &nh);			/* B2 */
		if (r)
			img_set_err(img, "%s: writing the new backing file name: %s", img->path,
				    strerror(-r));
	}
	pthread_mutex_unlock(&img->lock);
	return r;
}

int img_open_repair(const char *path, int fmt, struct cow_image **out, char *err)
{
	return cow_open_depth(path, fmt, IMG_OPEN_REPAIR, out, err, 0, NULL, -1, 0);
}

/*
 * Growing a ucow image whose size ends inside a block: what that block shows up to the end
 * (it may come from the backing chain: read through the engine, on a ctx of our own), for
 * img_resize to keep when it makes the rest of the block read as zeros (resize.c).
 */
static int read_edge(struct cow_image *img, uint8_t **edge, uint32_t *len)
{
	struct cow_backend *be = NULL;
	struct cow_ctx *ctx = NULL;
	uint32_t n = img->vsize & (img->block_size - 1);
	uint8_t *buf = meta_zalloc(img->block_size);
	int r = buf ? cow_backend_new("sync", 4, &be) : -ENOMEM;
	if (!r)
		r = cow_ctx_new(img, be, &ctx);
	if (!r)
		r = cow_rw(ctx, COW_READ, buf, n, img->vsize - n, 0);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	if (r) {
		if (r == -EINVAL && (img->open_flags & COW_OPEN_DIRECT))
			img_set_err(img, "%s: with O_DIRECT, the size (%llu) must be a multiple of "
				    "512 to grow", img->path, (unsigned long long)img->vsize);
		else
			img_set_err(img, "%s: reading the last block: %s", img->path, strerror(-r));
		free(buf);
		return r;
	}
	*edge = buf;
	*len = n;
	return 0;
}

int cow_resize(struct cow_image *img, uint64_t new_size, unsigned flags)
{
	uint8_t *edge = NULL;
	uint32_t len = 0;
	int r = 0;
	if (img->fmt == COW_FMT_UCOW && !img->read_only && new_size > img->vsize &&
	    (img->vsize & (img->block_size - 1)))
		r = read_edge(img, &edge, &len);
	if (!r)
		r = img_resize(img, new_size, flags, edge, len);
	free(edge);
	return r;
}

/*
 * DESIGN NOTES — the backing file reopened in place (an online commit writes into it):
 *   read-write: our read lock on the old open is dropped, the file opened again read-write
 *     (the write lock: -EBUSY while anyone else holds it); on failure the read lock is
 *     taken back and nothing changed;
 *   read-only again: the write lock is downgraded in place (no one can slip in), the file
 *     opened read-only beside it, then the read-write one closed (its checkpoint, clean
 *     header; the new open replayed its journal, so both see the same table);
 *   then every context on img is given a context on the new image (eng_rebind_backing) and
 *   the old image is closed. No request may be in flight on img.
 */
int cow_backing_reopen(struct cow_image *img, int writable, char *err, size_t errlen)
{
	char msg[COW_ERRLEN] = "";
	struct cow_image *old = img->backing, *nb = NULL;
	struct flock fl = { .l_whence = SEEK_SET };
	int r;

	if (!old) {
		snprintf(msg, sizeof(msg), "%s: the image has no backing file", img->path);
		r = -EINVAL;
		goto out;
	}
	if (!old->read_only == !!writable)
		return 0;
	if (old->nbd) {
		snprintf(msg, sizeof(msg), "%s: an image on an NBD server is read-only", old->path);
		r = -EROFS;
		goto out;
	}
	if (writable) {
		/* anyone else's lock refuses at once (the caller pauses a device meanwhile: no
		 * lock retries here) */
		fl.l_type = F_WRLCK;
		if (fcntl(old->fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
			snprintf(msg, sizeof(msg), "%s: image is in use by another process (it holds "
				 "a read or write lock)", old->path);
			r = -EBUSY;
			goto out;
		}
		fl = (struct flock){ .l_whence = SEEK_SET };
	}
	fl.l_type = writable ? F_UNLCK : F_RDLCK;
	if (fcntl(old->fd, F_OFD_SETLK, &fl) < 0) {
		r = -errno;
		snprintf(msg, sizeof(msg), "%s: %s", old->path, strerror(-r));
		goto out;
	}
	r = cow_open_depth(old->path, old->fmt, (writable ? 0 : COW_OPEN_RDONLY) |
			   (img->open_flags & (COW_OPEN_DIRECT | COW_OPEN_ALLOW_NETWORK)), &nb, msg,
			   1, NULL, -1, img->net_timeout_ms);
	if (!r && (r = eng_rebind_backing(img, nb)))
		snprintf(msg, sizeof(msg), "%s: %s", old->path, strerror(-r));
	if (r) {
		if (nb)
			cow_close(nb);
		fl.l_type = writable ? F_RDLCK : F_WRLCK;	/* as it was */
		if (fcntl(old->fd, F_OFD_SETLK, &fl) < 0 && !msg[0])
			snprintf(msg, sizeof(msg), "%s: %s", old->path, strerror(errno));
		goto out;
	}
	if (cow_close(old) < 0 && !writable)
		fprintf(stderr, "ucow: %s: closing the read-write open failed; the file stays "
			"dirty until its next open\n", nb->path);
out:
	if (r)
		give_err(err, errlen, msg);
	return r;
}

struct cow_image *cow_backing_image(struct cow_image *img) { return img->backing; }

int cow_writer_active(struct cow_image *img)
{
	for (; img; img = img->backing) {
		/* a read lock conflicts only with another's write lock; our own OFD's (a shared
		 * lock, or none under COW_OPEN_SHARE) never counts */
		struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
		if (img->fd < 0)
			continue;	/* on a server: no lock to look at */
		if (fcntl(img->fd, F_OFD_GETLK, &fl) < 0)
			return -errno;
		if (fl.l_type != F_UNLCK)
			return 1;
	}
	return 0;
}

int cow_create_layout(const struct cow_create_opts *o, struct cow_layout *out, char *err,
		      size_t errlen)
{
	char msg[COW_ERRLEN] = "";
	struct ucow_hdr h;
	int r;

	memset(out, 0, sizeof(*out));
	if (!all_zero(o->reserved, sizeof(o->reserved) / sizeof(o->reserved[0]))) {
		give_err(err, errlen, "unknown create options");
		return -EINVAL;
	}
	r = ucow_hdr_init(&h, o->size, o->chunk_size, o->block_size, o->journal_size, msg,
			  sizeof(msg));
	if (r) {
		give_err(err, errlen, msg);
		return r;
	}
	out->data_offset = h.data_offset;
	out->nr_chunks = h.nr_chunks;
	out->chunk_size = h.chunk_size;
	out->block_size = h.block_size;
	/* at most 16 Mi chunks of at most 64 MiB: no overflow */
	out->full_size = h.data_offset + h.nr_chunks * h.chunk_size;
	return 0;
}

void cow_get_info(struct cow_image *img, struct cow_info *info)
{
	struct stat st;
	memset(info, 0, sizeof(*info));
	info->fmt = img->fmt;
	info->path = img->path;
	info->virtual_size = img->vsize;
	info->read_only = img->read_only;
	if (!fstat(img->fd, &st)) {
		info->file_size = st.st_size;
		info->disk_usage = (uint64_t)st.st_blocks * 512;
	}
	if (img->fmt == COW_FMT_QCOW2) {
		struct cow_qcow2_info qi;
		qcow2_get_info(img, &qi);
		info->chunk_size = img->chunk_size;
		info->nr_chunks = (img->vsize + img->chunk_size - 1) >> img->chunk_shift;
		info->nb_snapshots = qi.nb_snapshots;
		info->dirty = qi.dirty;
		info->corrupt = qi.corrupt;
		info->backing = img->hdr.backing_len ? img->hdr.backing : NULL;
		info->backing_fmt = img->hdr.backing_fmt;
		return;
	}
	if (img->fmt != COW_FMT_UCOW)
		return;
	info->chunk_size = img->chunk_size;
	info->block_size = img->block_size;
	info->nr_chunks = img->nr_chunks;
	uint64_t alloc = 0, zero = 0, n = img->nr_chunks;
	const uint64_t *t = img->table;
	for (uint64_t c = 0; c < n; c++) {
		uint64_t e = __atomic_load_n(&t[c], __ATOMIC_RELAXED);	/* a statistic */
		alloc += (e & UCOW_E_PCN_MASK) != 0;
		zero += (e & UCOW_E_ZERO) != 0;
	}
	info->allocated_chunks = alloc;
	info->zero_chunks = zero;
	pthread_mutex_lock(&img->lock);
	info->journal_size = img->hdr.journal_size;
	info->journal_used = img->jblk * UCOW_JBLOCK;
	pthread_mutex_unlock(&img->lock);
	info->nb_snapshots = img->nb_snaps;
	info->dirty = img->hdr.flags & UCOW_FLAG_DIRTY;
	info->corrupt = img->corrupt;
	info->backing = img->hdr.backing_len ? img->hdr.backing : NULL;
	info->backing_fmt = img->hdr.backing_fmt;
}

void cow_get_stats(struct cow_image *img, struct cow_stats *st)
{
	uint64_t *d = (uint64_t *)st, *s = (uint64_t *)&img->stats;
	for (size_t i = 0; i < sizeof(*st) / 8; i++)
		d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

int cow_get_qcow2_info(struct cow_image *img, struct cow_qcow2_info *qi)
{
	if (img->fmt != COW_FMT_QCOW2)
		return -EINVAL;
	qcow2_get_info(img, qi);
	return 0;
}
