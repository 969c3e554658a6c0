/* SPDX-License-Identifier: MIT */
/*
 * cowcore internals, layer 1: the state of an open image and the image file's own I/O.
 *
 * The layers of cowcore (Documentation/design.md draws them): each file includes and calls
 * only its own layer's header and those below, never one above (tests/check-layers.sh
 * enforces it in `make check`):
 *
 *   0 format.h format.c (codec, CRC), util.c, backend.c (I/O backends)
 *   1 imgio.h imgio.c         the image file: pwrite/sync/punch/truncate, tap, header, errors
 *   2 meta.h meta.c           table and bitmaps in memory: load, look up, apply a record
 *   3 alloc.h alloc.c         physical chunks: allocate, release, quarantine
 *     sidelog.h sidelog.c     the side log of a recoverable server
 *     journal.h journal.c     records, encoding, commit batches, checkpoint, replay
 *     snaptab.h snaptab.c     snapshot structures on disk: load, validate, read, check
 *     snapshot.h snapshot.c   snapshot create, delete, apply, list, view, reclaim
 *     empty.c                 cow_make_empty: every chunk unallocated again
 *     resize.h resize.c       a new virtual size (R1-R4)
 *     load.h load.c           the open sequence: load, replay, fold, validate
 *   4 ctx.h ctx.c             one thread's handle: I/O and buffer pools, hand-over
 *   5 commit.h commit.c       request completion, group commit, FLUSH and FUA
 *     engine.c                the request engine: reads, writes, chunk operations
 *   6 image.c check.c         public open/close/create/info, a new backing file, check, map
 *
 * struct cow_image is defined here, at the bottom, because every layer works on it; each
 * group of fields names the layer that owns it, and only that layer changes it.
 */
#ifndef COWCORE_IMGIO_H
#define COWCORE_IMGIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cowcore.h"
#include "format.h"

/* Tests (test_crash.c, test_faults.c): told of every write, punch, size change and sync the
 * engine makes to an image file outside the backend, in order, before it is made. A callback
 * returns 0 to let the call go ahead, or -errno to fail it with that error without making it
 * (an injected fault); a NULL callback lets the call through. No tap: no change at all. */
struct img_tap {
	int (*write)(void *arg, const void *buf, size_t len, uint64_t off);
	int (*punch)(void *arg, uint64_t off, uint64_t len);
	int (*truncate)(void *arg, uint64_t size);
	int (*sync)(void *arg);
	void *arg;
};

struct comp_cache;
struct comp_pool;
struct jrec;
struct jnl_ckpt;
struct nbd_src;
struct qcow2;
struct quarantined;
struct reclaim_run;
struct snap;
struct under;
struct waiter;
struct cow_req;

struct cow_image {
	/* image.c (open, close) */
	char *path;
	int fd;
	int fmt;
	unsigned open_flags;
	bool read_only;
	bool corrupt;
	struct cow_image *backing;
	struct cow_ctx *ctxs;		/* engine.c: the contexts on this image (under lock),
					 * for cow_backing_reopen */
	uint64_t vsize;
	uint64_t raw_size;		/* raw: size of the file */
	struct ucow_hdr hdr;		/* the header in force (imgio.c writes it); qcow2: only
					 * the backing name and format */
	struct qcow2 *q2;		/* qcow2.c: a qcow2 image's tables and L2 cache */
	struct nbd_src *nbd;		/* nbd.c: a raw image on an NBD server (fd is -1) */
	uint32_t net_timeout_ms;	/* image.c: the open's net_timeout_ms, for the chain */

	/* meta.c: geometry and the in-memory metadata; entries and bitmap words are read
	 * lock-free with atomics and changed under lock */
	uint32_t chunk_size, block_size, chunk_shift, block_shift, bpc, bm_words;
	uint64_t nr_chunks;
	uint64_t data_pcn;		/* first data chunk number */
	uint64_t *table;		/* nr_chunks entries, 4 KiB-aligned allocation */
	uint64_t **bm_groups;		/* one 4 KiB page of bitmaps each, allocated on demand */
	uint64_t nr_groups, chunks_per_group;
	uint8_t *table_dirty, *bm_dirty;	/* per 4 KiB page, since the last checkpoint */
	/* writable images: per virtual chunk, I/Os in flight to its physical chunk that did not
	 * hold the chunk BUSY (fast-path reads and writes); a chunk a discard unmapped is not
	 * reused while its count is not zero (J4, alloc.c) */
	uint32_t *inflight;

	pthread_mutex_t lock;		/* allocator, journal, waits, bitmap group allocation */

	/* alloc.c (under lock) */
	uint64_t next_pcn;		/* first chunk past every used one */
	uint64_t file_pcns;		/* chunks the file is sized for (imgio.c grows it) */
	uint64_t *free_pcns;		/* freed while open; taken first */
	size_t nfree, free_cap;
	struct free_run *free_runs;	/* free at open: runs of chunks, ascending */
	size_t nruns, runs_cap;
	struct quarantined *quar;
	size_t nquar, quar_cap;

	/* journal.c (under lock): pending records, index rec_base .. rec_added-1 */
	struct jrec *recs;
	size_t recs_cap;
	uint64_t rec_base, rec_added, rec_committed;
	uint64_t jseq;			/* journal_seq of the durable header */
	uint64_t jblk;			/* blocks used since: the next has seq jseq + jblk */
	bool jlegacy;			/* block of seq s at s - jseq (no JRING, jseq not a
					 * multiple of the block count; until the next header) */
	struct jnl_ckpt *ck;		/* a checkpoint in steps (J7), or NULL */
	uint64_t ck_finished;		/* how many ended with their header (tests) */
	uint64_t ck_undone;		/* synchronous ones that undid uncommitted records */
	uint64_t rec_bound;		/* records not committed that start a commit nobody
					 * asked for (commit.c): memory stays bounded without
					 * flushes */
	bool rec_over;			/* at least rec_bound of them (read without the lock) */
	bool bound_flush;		/* a request is carrying that commit (atomic) */

	/* commit.c (under lock): flush requests waiting for a commit */
	bool commit_running;
	struct cow_req *commit_waiters;

	/* engine.c (under lock): request parts parked behind a BUSY chunk */
	struct waiter *waits;

	/* snapshot.c; changed only by snapshot operations, under lock */
	struct snap *snaps;
	uint32_t nb_snaps;
	uint32_t *rc;			/* snapshot references per physical chunk */
	uint64_t rc_len;
	bool snaps_valid;		/* snaptab.c: the snapshot entries loaded and validated
					 * (check -r rebuilds refcounts only then) */
	uint64_t load_problems;		/* image.c: problems a check-mode open counted */
	struct reclaim_run *reclaim;	/* freed, to punch before reuse */
	struct under *under;		/* under.c: the parent snapshot's frozen copy, read
					 * when an underlay needs it (under lock; set with a
					 * release store before any UNDER entry that uses it) */
	size_t nreclaim, reclaim_cap;

	/* sidelog.c: -1, or a file the caller owns */
	int sidelog_fd;
	uint64_t sidelog_gen;		/* header generation of the run being written */
	uint64_t sidelog_slot;		/* where the next record goes (under lock) */
	uint64_t sidelog_seq;		/* its seq in the current run */
	bool sidelog_failed;		/* L4: write-through from now on (atomic) */

	/* compress.c: the pack being filled (under lock), the cache of decompressed chunks
	 * (created once, its own lock), counters (atomics) */
	uint64_t pack_pcn;
	uint32_t pack_used;
	uint64_t *packs;		/* every pack mapped at open or filled since */
	size_t npacks, packs_cap;
	struct comp_cache *ccache;
	struct comp_pool *cpool;	/* created once (atomic), threads joined at close */
	uint64_t inflates, cache_hits;

	/* engine.c: copy-on-read on (set at open), its counters (atomics) */
	bool cor;
	uint64_t cor_copies, cor_bytes, cor_skipped, cor_failed;

	struct cow_stats stats;		/* updated with atomics */
	struct img_tap *tap;		/* tests only; NULL */
	int64_t crash_after;		/* tests: > 0 = metadata writes allowed before a "crash" */
	uint64_t under_made, under_folded;	/* under.c (under lock): UNDER entries made by
					 * first writes, and folded (tests count them) */
	bool copy_shared;		/* tests: the first write into a SHARED chunk copies it
					 * (no underlay), as when the parent does not map it */
	char err[COW_ERRLEN];
};

#define STAT_ADD(img, f, v) __atomic_fetch_add(&(img)->stats.f, (v), __ATOMIC_RELAXED)

/* Plain I/O on any descriptor: 0 or -errno, EINTR retried; reads past EOF give zeros. */
int io_pread_all(int fd, void *buf, size_t len, uint64_t off);
int io_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
void *meta_zalloc(size_t size);	/* zeroed, 4 KiB aligned, size rounded up to 4 KiB */

/* The image file's own I/O, seen by img->tap: 0 or -errno. */
int img_pwrite(struct cow_image *img, const void *buf, size_t len, uint64_t off);
int img_sync(struct cow_image *img);
int img_punch(struct cow_image *img, uint64_t off, uint64_t len);
int img_truncate(struct cow_image *img, uint64_t size);
/* A metadata write: -EIO at the simulated crash point, counted in the statistics. */
int img_meta_write(struct cow_image *img, const void *buf, size_t len, uint64_t off);
/* Make the file large enough to hold physical chunk pcn (grows ahead, so this stays rare). */
int img_grow_file(struct cow_image *img, uint64_t pcn);
/* Header of generation + 1 into the other slot (journal.c's jnl_write_header wraps it). */
int img_write_header(struct cow_image *img);

bool img_crashed(struct cow_image *img);	/* tests: the simulated crash point is reached */

void img_set_err(struct cow_image *img, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Record a corruption (-EUCLEAN): the image turns read-only, flagged corrupt on disk. */
int img_mark_corrupt(struct cow_image *img, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
