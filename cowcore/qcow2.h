/* SPDX-License-Identifier: MIT */
/*
 * cowcore internals, layer 2 (beside meta.h): qcow2 images, read-only. The header and its
 * extensions decoded and validated, the L1 table in memory, L2 tables through a small
 * bounded cache (one mutex around it: every lookup, hit or miss, copies what it needs out
 * under the lock; a miss reads the table outside it), and the inflation of compressed
 * clusters. Documentation/qcow2.md lists the subset read and the byte offsets relied on.
 * Below: imgio.h.
 */
#ifndef COWCORE_QCOW2_H
#define COWCORE_QCOW2_H

#include "imgio.h"

#define QCOW2_MAGIC 0x514649fbu		/* "QFI\xfb" */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32u << 20)	/* as qemu: larger L1 tables are refused */
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_CACHE_BYTES (4u << 20)	/* L2 cache per image: at most this (and >= 4 tables) */
#define QCOW2_CACHE_MIN 4
#define QCOW2_CACHE_MAX 64
#define QCOW2_MAX_SNAPSHOTS 65536	/* as qemu */
#define QCOW2_MAX_SNAP_TABLE (64u << 20)	/* bytes of snapshot table read at most */
#define QCOW2_MAX_SNAP_EXTRA 1024	/* as qemu: extra data per entry */

/* The kind of a run of virtual bytes (qcow2_map). */
enum q2_kind { Q2_UNALLOC, Q2_ZERO, Q2_DATA, Q2_COMPRESSED };

struct q2_run {
	int kind;
	uint64_t len;		/* bytes from the offset asked for (never past the len asked) */
	uint64_t off;		/* Q2_DATA: file offset of the run's first byte;
				 * Q2_COMPRESSED: file offset of the compressed data */
	uint32_t csize;		/* Q2_COMPRESSED: bytes of compressed data from off (the last
				 * sector's end; it may hold padding after the stream) */
	uint32_t in;		/* Q2_COMPRESSED: the run's first byte within its cluster */
};

/* 1 when buf (at least 4 bytes) starts with the qcow2 magic. */
bool qcow2_probe(const uint8_t *buf);

/*
 * Read and validate the header of img (img->fd open, img->path set), file_size bytes long.
 * Sets img->vsize, img->chunk_size/chunk_shift (the cluster size), img->hdr.backing,
 * backing_len and backing_fmt (COW_FMT_NONE when the image does not name the format: the
 * caller probes), img->corrupt (the header's corrupt bit), img->q2. 0, or -errno with err
 * (COW_ERRLEN) naming the file: -EUCLEAN for a damaged image, -ENOTSUP for a feature not read
 * (encryption, an external data file, extended L2, unknown incompatible bits).
 */
int qcow2_open(struct cow_image *img, uint64_t file_size, char *err);
void qcow2_free(struct cow_image *img);

/*
 * The run of [voff, voff+len) (inside the virtual size, len > 0) starting at voff: data in the
 * file, zeros, unallocated (the backing image's, or zeros), or one compressed cluster's part.
 * 0, or -EUCLEAN (a table entry that fails validation; img's error text says which),
 * -ENOMEM or a read error of an L2 table.
 */
int qcow2_map(struct cow_image *img, uint64_t voff, uint64_t len, struct q2_run *m);

/*
 * Decompress one cluster: src (srclen bytes, possibly followed by padding) into dst
 * (cluster_size bytes, filled completely or an error). 0 or -EUCLEAN with img's error text.
 */
int qcow2_inflate(struct cow_image *img, const void *src, size_t srclen, void *dst);

/*
 * The internal snapshots (qemu-img snapshot -c): id (its id string when all digits, else 0),
 * name, date, virtual size; parent and disk usage 0 (qcow2 records neither). 0 or -errno
 * (-EUCLEAN: a malformed table, img's error set); *out malloc'd (NULL when none).
 */
int qcow2_snapshot_list(struct cow_image *img, struct cow_snap_info **out, uint32_t *n);
/*
 * Make img (just opened, no I/O yet) read snapshot KEY (a name, else an id string) instead of
 * the current state: its L1 table and its virtual size. 0 or -errno with err (COW_ERRLEN).
 */
int qcow2_use_snapshot(struct cow_image *img, const char *key, char *err);

/* The fields ucow info shows (cowcore.h, struct cow_qcow2_info). */
void qcow2_get_info(struct cow_image *img, struct cow_qcow2_info *qi);

#endif
