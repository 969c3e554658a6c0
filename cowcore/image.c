/* SPDX-License-Identifier: MIT */
/*
 * Image lifecycle: create, open (lock, header, metadata, journal replay, backing chain),
 * close (checkpoint, clean flag), and the helpers the engine shares.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

void img_set_err(struct cow_image *img, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(img->err, sizeof(img->err), fmt, ap);
	va_end(ap);
}

/* Record a corruption, make the image read-only and flag it on disk where possible. */
int img_mark_corrupt(struct cow_image *img, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(img->err, sizeof(img->err), fmt, ap);
	va_end(ap);
	if (!img->corrupt && !img->read_only) {
		img->hdr.flags |= UCOW_FLAG_CORRUPT;
		img_write_header(img);
	}
	img->corrupt = true;
	img->read_only = true;
	return -EUCLEAN;
}

const char *cow_errmsg(struct cow_image *img) { return img->err; }

const char *cow_fmt_name(int fmt)
{
	return fmt == COW_FMT_RAW ? "raw" : fmt == COW_FMT_UCOW ? "ucow" : "none";
}

int cow_fmt_parse(const char *name)
{
	if (!strcmp(name, "raw"))
		return COW_FMT_RAW;
	if (!strcmp(name, "ucow"))
		return COW_FMT_UCOW;
	return -EINVAL;
}

void *meta_zalloc(size_t size)
{
	void *p;
	size = (size + UCOW_META_ALIGN - 1) / UCOW_META_ALIGN * UCOW_META_ALIGN;
	if (posix_memalign(&p, UCOW_META_ALIGN, size ? size : UCOW_META_ALIGN))
		return NULL;
	memset(p, 0, size ? size : UCOW_META_ALIGN);
	return p;
}

int io_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t r = pwrite(fd, buf, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf = (const char *)buf + r;
		len -= r;
		off += r;
	}
	return 0;
}

int io_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t r = pread(fd, buf, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0) {		/* past EOF reads as zeros */
			memset(buf, 0, len);
			return 0;
		}
		buf = (char *)buf + r;
		len -= r;
		off += r;
	}
	return 0;
}

/* Crash simulation for tests: after crash_after metadata writes, every write "fails". */
bool img_crashed(struct cow_image *img)
{
	if (img->crash_after <= 0)
		return false;
	if (img->crash_after == 1)
		return true;
	img->crash_after--;
	return false;
}

/*
 * Write the header into the slot not holding the current generation. The caller syncs.
 * Atomic switch: readers take the valid slot with the higher generation, so a torn write
 * of the new slot leaves the old one in force.
 */
int img_write_header(struct cow_image *img)
{
	uint8_t *buf = meta_zalloc(UCOW_HDR_SIZE);
	int r;
	if (!buf)
		return -ENOMEM;
	if (img_crashed(img)) {
		free(buf);
		return -EIO;
	}
	img->hdr.generation++;
	sidelog_new_run(img);	/* sidelog.c L2 */
	ucow_hdr_encode(&img->hdr, buf);
	r = img_pwrite(img, buf, UCOW_HDR_SIZE,
		       (img->hdr.generation % UCOW_HDR_SLOTS) * UCOW_HDR_SIZE);
	free(buf);
	STAT_ADD(img, meta_writes, 1);
	STAT_ADD(img, meta_bytes_written, UCOW_HDR_SIZE);
	if (r)
		img_set_err(img, "%s: writing the header: %s", img->path, strerror(-r));
	else
		sidelog_header_written(img);
	return r;
}

uint64_t *img_bm(struct cow_image *img, uint64_t chunk, bool create)
{
	uint64_t g = chunk / img->chunks_per_group;
	uint64_t *page = __atomic_load_n(&img->bm_groups[g], __ATOMIC_ACQUIRE);
	if (!page && create) {
		/* caller holds img->lock: group pages are only ever added under it */
		page = meta_zalloc(UCOW_META_ALIGN);
		if (!page)
			return NULL;
		__atomic_store_n(&img->bm_groups[g], page, __ATOMIC_RELEASE);
	}
	if (!page)
		return NULL;
	return page + (chunk % img->chunks_per_group) * img->bm_words;
}

int img_pwrite(struct cow_image *img, const void *buf, size_t len, uint64_t off)
{
	if (img->tap)
		img->tap->write(img->tap->arg, buf, len, off);
	return io_pwrite_all(img->fd, buf, len, off);
}

int img_sync(struct cow_image *img)
{
	if (img->tap)
		img->tap->sync(img->tap->arg);
	return fdatasync(img->fd) < 0 ? -errno : 0;
}

int img_punch(struct cow_image *img, uint64_t off, uint64_t len)
{
	if (img->tap)
		img->tap->punch(img->tap->arg, off, len);
	return fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			 (off_t)len) < 0 ? -errno : 0;
}

int img_truncate(struct cow_image *img, uint64_t size)
{
	if (img->tap)
		img->tap->truncate(img->tap->arg, size);
	return ftruncate(img->fd, (off_t)size) < 0 ? -errno : 0;
}

/* Make the file large enough to hold chunk pcn; grows in steps so this stays rare. */
int img_grow_file(struct cow_image *img, uint64_t pcn)
{
	if (pcn < img->file_pcns)
		return 0;
	uint64_t want = pcn + 1 + (pcn + 1) / 16 + 16;
	int r = img_truncate(img, want << img->chunk_shift);
	if (r) {
		img_set_err(img, "%s: growing the file: %s", img->path, strerror(-r));
		return r;
	}
	img->file_pcns = want;
	return 0;
}

int cow_create(const char *path, const struct cow_create_opts *o, char *err)
{
	struct ucow_hdr h;
	uint64_t size = o->size;
	uint8_t *buf = NULL;
	int fd = -1, r;

	if (o->backing) {
		struct cow_image *b;
		char *dir, *full;
		if (o->backing_fmt != COW_FMT_RAW && o->backing_fmt != COW_FMT_UCOW) {
			snprintf(err, COW_ERRLEN, "%s: the backing format must be given (-F raw|ucow)",
				 path);
			return -EINVAL;
		}
		if (strlen(o->backing) > UCOW_BACKING_NAME_MAX) {
			snprintf(err, COW_ERRLEN, "%s: backing file name longer than %d bytes", path,
				 UCOW_BACKING_NAME_MAX);
			return -ENAMETOOLONG;
		}
		/* resolve relative to the new image's folder, as open will */
		dir = strdup(path);
		if (!dir)
			return -ENOMEM;
		if (o->backing[0] == '/' ||
		    asprintf(&full, "%s/%s", dirname(dir), o->backing) < 0)
			full = strdup(o->backing);
		free(dir);
		if (!full)
			return -ENOMEM;
		r = cow_open(full, o->backing_fmt, COW_OPEN_RDONLY, &b, err);
		free(full);
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

/* OFD lock: shared for readers, exclusive for the writer. */
/*
 * A process killed while it had io_uring requests in flight releases its files (and so its
 * lock) only when the kernel has torn the ring down, a moment after the process is gone:
 * retry for up to two seconds before calling the image busy.
 */
static int lock_image(struct cow_image *img, char *err)
{
	struct flock fl = { .l_type = img->read_only ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET };
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
			snprintf(err, COW_ERRLEN, "%s: not a ucow image (no ucow magic; use -f raw "
				 "for a raw image)", img->path);
			free(buf);
			return -EINVAL;
		}
		rs[i] = ucow_hdr_decode(buf + i * UCOW_HDR_SIZE, file_size, &h[i], why[i],
					COW_ERRLEN);
		if (!rs[i] && (best < 0 || h[i].generation > h[best].generation))
			best = i;
	}
	free(buf);
	if (best < 0) {
		int i = rs[0] == -ENOTSUP ? 0 : rs[1] == -ENOTSUP ? 1 :
			!memcmp(why[0], "bad magic", 9) ? 1 : 0;
		snprintf(err, COW_ERRLEN, "%s: %s%s", img->path,
			 rs[i] == -ENOTSUP ? "" : "corrupt image: ", why[i]);
		return rs[i];
	}
	img->hdr = h[best];
	return 0;
}

static int open_backing(struct cow_image *img, int depth, const struct chain_link *up,
			char *err)
{
	char *dir, *full;
	struct stat st;
	int r;
	if (depth >= COW_MAX_CHAIN) {
		snprintf(err, COW_ERRLEN, "%s: backing chain longer than %d images (a loop?)",
			 img->path, COW_MAX_CHAIN);
		return -ELOOP;
	}
	dir = strdup(img->path);
	if (!dir)
		return -ENOMEM;
	if (img->hdr.backing[0] == '/' ||
	    asprintf(&full, "%s/%s", dirname(dir), img->hdr.backing) < 0)
		full = strdup(img->hdr.backing);
	free(dir);
	if (!full)
		return -ENOMEM;
	/* the same file twice in the chain is a loop: refuse before opening it again */
	if (!stat(full, &st))
		for (const struct chain_link *l = up; l; l = l->up)
			if (l->dev == st.st_dev && l->ino == st.st_ino) {
				snprintf(err, COW_ERRLEN, "%s: backing chain loops back to %s",
					 img->path, full);
				free(full);
				return -ELOOP;
			}
	r = cow_open_depth(full, img->hdr.backing_fmt, COW_OPEN_RDONLY |
			   (img->open_flags & COW_OPEN_DIRECT), &img->backing, err, depth + 1, up, -1);
	if (r == -ENOENT)
		snprintf(err, COW_ERRLEN, "%s: backing file '%s' not found", img->path, full);
	free(full);
	return r;
}

/* Walk the chain: the same file twice is a loop. */
static int check_loop(struct cow_image *img, char *err)
{
	for (struct cow_image *a = img; a; a = a->backing) {
		struct stat sa;
		if (fstat(a->fd, &sa))
			return -errno;
		for (struct cow_image *b = a->backing; b; b = b->backing) {
			struct stat sb;
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
	if (img->bm_groups)
		for (uint64_t g = 0; g < img->nr_groups; g++)
			free(img->bm_groups[g]);
	for (uint64_t i = img->rec_base; i < img->rec_added; i++)
		free(img->recs[i - img->rec_base].bm);
	free(img->recs);
	free(img->bm_groups);
	free(img->table);
	free(img->table_dirty);
	free(img->inflight);
	free(img->bm_dirty);
	free(img->free_pcns);
	free(img->quar);
	free(img->reclaim);
	free(img->snaps);
	free(img->rc);
	free(img->path);
	pthread_mutex_destroy(&img->lock);
	free(img);
}

int cow_open_depth(const char *path, int fmt, unsigned flags, struct cow_image **out,
		   char *err, int depth, const struct chain_link *up, int sidelog_fd)
{
	struct cow_image *img = calloc(1, sizeof(*img));
	struct stat st;
	int r, oflags;

	if (!img)
		return -ENOMEM;
	pthread_mutex_init(&img->lock, NULL);
	img->fd = -1;
	img->sidelog_fd = (flags & COW_OPEN_RDONLY) ? -1 : sidelog_fd;
	if (flags & COW_OPEN_CHECK)
		flags |= COW_OPEN_RDONLY | COW_OPEN_NOCHAIN;
	img->open_flags = flags;
	img->read_only = flags & COW_OPEN_RDONLY;
	img->path = strdup(path);
	if (!img->path) {
		r = -ENOMEM;
		goto fail;
	}
	oflags = (img->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC |
		 ((flags & COW_OPEN_DIRECT) ? O_DIRECT : 0);
	img->fd = open(path, oflags);
	if (img->fd < 0) {
		r = -errno;
		if (r == -EACCES || r == -EROFS)
			snprintf(err, COW_ERRLEN, "%s: %s (open it read-only?)", path,
				 strerror(-r));
		else
			snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
		goto fail;
	}
	if (fstat(img->fd, &st) < 0) {
		r = -errno;
		snprintf(err, COW_ERRLEN, "%s: %s", path, strerror(-r));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		r = -EISDIR;
		snprintf(err, COW_ERRLEN, "%s: is a directory", path);
		goto fail;
	}
	r = lock_image(img, err);
	if (r)
		goto fail;
	struct chain_link self = { .dev = st.st_dev, .ino = st.st_ino, .up = up };

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
		if (!r && scratch.corruptions) {
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
	if (img->hdr.backing_len && !(flags & COW_OPEN_NOCHAIN)) {
		r = open_backing(img, depth, &self, err);
		if (r)
			goto fail;
		r = check_loop(img, err);
		if (r)
			goto fail;
	}
	if (!img->read_only) {
		/* from here on the journal may hold records the table does not */
		img->hdr.autoclear = 0;
		img->hdr.flags |= UCOW_FLAG_DIRTY;
		r = img_write_header(img);
		if (!r)
			r = img_sync(img);
		if (r) {
			snprintf(err, COW_ERRLEN, "%s: marking the image in use: %s", path,
				 strerror(-r));
			goto fail;
		}
	}
	*out = img;
	return 0;
fail:
	img_free(img);
	return r;
}

int cow_open(const char *path, int fmt, unsigned flags, struct cow_image **out, char *err)
{
	return cow_open_depth(path, fmt, flags, out, err, 0, NULL, -1);
}

int cow_open_sidelog(const char *path, int fmt, unsigned flags, int sidelog_fd,
		     struct cow_image **out, char *err)
{
	return cow_open_depth(path, fmt, flags, out, err, 0, NULL, sidelog_fd);
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
		if (!r) {
			/* drop the file's unused tail (grown ahead of allocation) */
			uint64_t end = img->next_pcn << img->chunk_shift;
			if (end < img->hdr.data_offset)
				end = img->hdr.data_offset;
			r = img_truncate(img, end);
		}
		if (!r) {
			img->hdr.flags &= ~UCOW_FLAG_DIRTY;
			r = img_write_header(img);
		}
		if (!r)
			r = img_sync(img);
	}
	img_free(img);
	return r;
}

int cow_open_snapshot(const char *path, const char *name_or_id, unsigned flags,
		      struct cow_image **out, char *err)
{
	struct cow_image *img;
	int r;
	if (!(flags & COW_OPEN_RDONLY)) {
		snprintf(err, COW_ERRLEN, "%s: a snapshot can only be opened read-only", path);
		return -EINVAL;
	}
	r = cow_open(path, COW_FMT_UCOW, flags, &img, err);
	if (r)
		return r;
	r = snap_view(img, name_or_id, err);
	if (r) {
		cow_close(img);
		return r;
	}
	*out = img;
	return 0;
}

struct cow_image *cow_backing_image(struct cow_image *img) { return img->backing; }

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

int cow_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;
	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return errno == ERANGE ? -ERANGE : -EINVAL;
	switch (*end) {
	case 0: break;
	case 'b': case 'B': shift = 0; end++; break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	case 'p': case 'P': shift = 50; end++; break;
	default: return -EINVAL;
	}
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}
