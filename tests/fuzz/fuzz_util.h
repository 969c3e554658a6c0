/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the libFuzzer targets (tests/fuzz/fuzz_*.c) and the seed maker
 * (tests/fuzz/mkseed.c). Everything here uses the public cowcore.h only; the few format
 * details the harness needs (field offsets, CRC32C) are restated here from
 * Documentation/format.md, not taken from the engine's internal headers.
 */
#ifndef UCOW_FUZZ_UTIL_H
#define UCOW_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "cowcore.h"

/* Format constants (Documentation/format.md) */
#define FZ_HDR_SIZE 4096u
#define FZ_JBLOCK 4096u
#define FZ_JMAGIC 0x424a4355u	/* "UCJB" */
#define FZ_SLMAGIC 0x4c534355u	/* "UCSL" */
#define FZ_SNAP_ENTRY 256u

/* The geometry of every image the harness builds itself. */
#define FZ_VSIZE (1u << 20)
#define FZ_CHUNK (64u << 10)
#define FZ_BLOCK (4u << 10)
#define FZ_JOURNAL (32u << 10)
/* side-log record size for that geometry: 40-byte head + one u64 bitmap word */
#define FZ_SLREC (40u + 8u)

uint32_t fz_crc32c(const void *buf, size_t len);
uint32_t fz_le32(const uint8_t *p);
uint64_t fz_le64(const uint8_t *p);
void fz_put_le32(uint8_t *p, uint32_t v);

/*
 * The private folder of this process (on tmpfs when there is one: $UCOW_FUZZ_TMP, else
 * /dev/shm, else /tmp), made at first use and removed at exit, and a file name in it.
 */
const char *fz_dir(void);
const char *fz_path(const char *name);
/* Write len bytes to path (created or truncated). Aborts on failure: the harness is broken. */
void fz_write_file(const char *path, const void *buf, size_t len);
/* Read a whole file (malloc'd). Aborts on failure. */
uint8_t *fz_read_file(const char *path, size_t *len);

/*
 * Checksum repair, so that mutations reach the code behind the checks: every header slot
 * that starts with the ucow magic gets its CRC recomputed, then every journal block (in
 * either slot's journal region) that starts with the block magic, then every snapshot table
 * entry with a non-zero id (in either slot's snapshot table).
 */
void fz_fix_image(uint8_t *img, size_t len);
/* The same for the journal blocks of a journal region (starting at block 0). */
void fz_fix_journal(uint8_t *jnl, size_t len);
/* And for side-log records of rec bytes each that start with the side-log magic. */
void fz_fix_sidelog(uint8_t *log, size_t len, size_t rec);

/* Does either header slot name a backing file with a '/' in it (anything outside fz_dir)? */
int fz_backing_escapes(const uint8_t *img, size_t len);

/*
 * Images built with the engine for the journal and side-log targets (and their seeds):
 *   fz_make_dirty: FZ_* geometry, a snapshot, then writes, a discard, write-zeroes and
 *     flushes; the process that did it then died (a child, _exit), so the header is DIRTY
 *     and the journal holds the records of every flush since the snapshot.
 *   fz_make_sidelog: the same geometry, opened with a side log at log; writes with and
 *     without flushes, then the process died: the side log holds the unflushed records.
 * Both are deterministic: the same calls give the same bytes. 0 or -errno.
 */
int fz_make_dirty(const char *path);
int fz_make_sidelog(const char *path, const char *log);
/*
 * The backing files a fuzzed overlay may name (backing names without '/' resolve in
 * fz_dir): "base.raw" (1 MiB, a byte pattern) and "base.ucow" (FZ_* geometry, one chunk
 * written). Made once; aborts on failure.
 */
void fz_setup_backing(void);
/* Open path with flags, plus the backing chain unless its name could leave fz_dir. */
int fz_open(const char *path, unsigned flags, const uint8_t *img, size_t len,
	    struct cow_image **out);

/* The length of buf without its all-zero 4 KiB tail blocks (keeps at least 8 KiB). */
size_t fz_trim_zero_tail(const uint8_t *buf, size_t len);

/* Journal region offset of the image in buf (slot with the higher generation), 0 if none. */
uint64_t fz_journal_offset(const uint8_t *img, size_t len, uint64_t *size);

/*
 * Read the n ranges (off[i], len[i]) of img through a context on a sync backend, and ask
 * cow_map about each. Returns how many reads failed (-EINVAL past the end is expected).
 */
int fz_reads(struct cow_image *img, const uint64_t *off, const uint64_t *len, int n);
/* Read every chunk of img's virtual size (at most max bytes of it). */
int fz_read_all(struct cow_image *img, uint64_t max);

#endif
