/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 3: the snapshot structures on disk (snaptab.c): decode, load,
 * validate, read back, view, check. Below: journal.h. */
#ifndef COWCORE_SNAPTAB_H
#define COWCORE_SNAPTAB_H

#include "journal.h"

/* A snapshot table entry, decoded. */
struct snap {
	uint32_t id, parent;
	uint64_t date_sec;
	uint32_t date_nsec;
	uint16_t name_len;
	uint64_t vsize;
	uint64_t table_offset, extent_size;
	char name[UCOW_SNAP_NAME_MAX + 1];
};

/* Read and validate the snapshot and refcount tables (at open). */
int snap_load(struct cow_image *img, uint64_t file_size);
/* fn(arg, offset, size) for every metadata extent in the data area. */
void snap_extents(struct cow_image *img, void (*fn)(void *, uint64_t, uint64_t), void *arg);
/* cow_check's part for snapshots: frozen tables and refcounts against each other. */
void snap_check(struct cow_image *img, struct cow_check_result *cr);
int snap_count_refs(struct cow_image *img, uint32_t *count, uint64_t len);

/* An entry of the snapshot table, encoded (with its checksum). */
void snap_encode(const struct snap *s, uint8_t *b);
/* Bytes of one frozen copy: table then bitmap. Every frozen copy has the header's
 * table_size and bitmap_size, whatever its snapshot's virtual size (a resize that changes
 * them writes every frozen copy again). */
uint64_t frozen_bytes(struct cow_image *img);
/* The chunks of s's virtual size: its frozen table's entries past them are zero. */
uint64_t snap_nr(struct cow_image *img, const struct snap *s);
/* Read and validate a snapshot's frozen table and bitmap pages (allocated; caller frees):
 * table_size / 8 entries and bitmap_size bytes, of the header's geometry (bitmap NULL: the
 * table only). */
int frozen_read(struct cow_image *img, const struct snap *s, uint64_t **table,
		uint64_t **bitmap);
/* fn(arg, virtual chunk, physical chunk) for every mapped entry of s's frozen table. */
int frozen_scan(struct cow_image *img, const struct snap *s,
		void (*fn)(void *arg, uint64_t c, uint64_t p), void *arg);
/* The snapshot a name (or, if none has it, an id in digits) selects, or NULL. */
struct snap *snap_find(struct cow_image *img, const char *key);

#endif
