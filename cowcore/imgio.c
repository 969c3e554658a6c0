/* SPDX-License-Identifier: MIT */
/*
 * Layer 1, the image file: the engine's own writes, syncs, punches and truncates of an image
 * file (every one passes the test tap, img->tap), plain whole-buffer I/O helpers, the
 * header write, the error text, and the crash point of the tests. Knows the format codec
 * (layer 0) and nothing above.
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgio.h"

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
		/* no side-log run for this generation: an image marked corrupt is never opened
		 * read-write again, so nothing is ever folded into it */
		img->hdr.flags |= UCOW_FLAG_CORRUPT;
		img_write_header(img);
	}
	img->corrupt = true;
	img->read_only = true;
	return -EUCLEAN;
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
 * Write the header, generation + 1, into the slot not holding the current generation. The
 * caller syncs. A served image's side log must hear of every new generation: such callers
 * use jnl_write_header (journal.c), which wraps this one.
 * Atomic switch: readers take the valid slot with the higher generation, so a torn write
 * of the new slot leaves the old one in force.
 */
int img_write_header(struct cow_image *img)
{
	uint8_t *buf;
	int r;
	if (img->hdr.generation >= UCOW_MAX_GENERATION) {
		/* never wrap: a slot of generation 0 would lose to the stale one after a crash */
		img_set_err(img, "%s: header generation %llu cannot grow any more", img->path,
			    (unsigned long long)img->hdr.generation);
		return -EOVERFLOW;
	}
	buf = meta_zalloc(UCOW_HDR_SIZE);
	if (!buf)
		return -ENOMEM;
	if (img_crashed(img)) {
		free(buf);
		return -EIO;
	}
	img->hdr.generation++;
	ucow_hdr_encode(&img->hdr, buf);
	r = img_pwrite(img, buf, UCOW_HDR_SIZE,
		       (img->hdr.generation % UCOW_HDR_SLOTS) * UCOW_HDR_SIZE);
	free(buf);
	STAT_ADD(img, meta_writes, 1);
	STAT_ADD(img, meta_bytes_written, UCOW_HDR_SIZE);
	if (r) {
		/* the slot may be torn: the header in force stays the one in the other slot,
		 * and the next try goes to this slot again, never over that one */
		img->hdr.generation--;
		img_set_err(img, "%s: writing the header: %s", img->path, strerror(-r));
	}
	return r;
}

int img_pwrite(struct cow_image *img, const void *buf, size_t len, uint64_t off)
{
	if (img->tap && img->tap->write) {
		int r = img->tap->write(img->tap->arg, buf, len, off);
		if (r < 0)
			return r;	/* an injected fault (tests) */
	}
	return io_pwrite_all(img->fd, buf, len, off);
}

int img_meta_write(struct cow_image *img, const void *buf, size_t len, uint64_t off)
{
	if (img_crashed(img))
		return -EIO;
	STAT_ADD(img, meta_writes, 1);
	STAT_ADD(img, meta_bytes_written, len);
	return img_pwrite(img, buf, len, off);
}

int img_sync(struct cow_image *img)
{
	if (img->tap && img->tap->sync) {
		int r = img->tap->sync(img->tap->arg);
		if (r < 0)
			return r;	/* an injected fault (tests) */
	}
	return fdatasync(img->fd) < 0 ? -errno : 0;
}

int img_punch(struct cow_image *img, uint64_t off, uint64_t len)
{
	if (img->tap && img->tap->punch) {
		int r = img->tap->punch(img->tap->arg, off, len);
		if (r < 0)
			return r;	/* an injected fault (tests) */
	}
	return fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			 (off_t)len) < 0 ? -errno : 0;
}

int img_truncate(struct cow_image *img, uint64_t size)
{
	if (img->tap && img->tap->truncate) {
		int r = img->tap->truncate(img->tap->arg, size);
		if (r < 0)
			return r;	/* an injected fault (tests) */
	}
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
