/* SPDX-License-Identifier: MIT */
/* cowcore internals shared by the engine's files. Not installed, not for tools. */
#ifndef COWCORE_INTERNAL_H
#define COWCORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/types.h>

#include "cowcore.h"
#include "format.h"

struct cow_ctx;

/* One pending journal record: an absolute (entry, bitmap) value for a virtual chunk. */
struct jrec {
	uint64_t chunk;
	uint64_t entry;
	uint64_t *bm;		/* bm_words words, owned (and old_bm after them) */
	/* what the record replaced: a checkpoint writes the state as of rec_committed (J5) */
	uint64_t old_entry;
	uint64_t *old_bm;
};

#define UCOW_BM_WORDS_MAX (UCOW_MAX_BPC / 64)

/* A chunk freed by a discard: reusable once the record that unmapped it is durable and no
 * I/O that found it mapped is still in flight (J4). */
struct quarantined {
	uint64_t pcn;
	uint64_t rec;		/* index of the unmapping record */
	uint64_t chunk;		/* the virtual chunk it was mapped at */
};

/* Tests (test_crash.c): told of every write, punch, size change and sync the engine makes to
 * an image file outside the backend, in order, before it is made. */
struct img_tap {
	void (*write)(void *arg, const void *buf, size_t len, uint64_t off);
	void (*punch)(void *arg, uint64_t off, uint64_t len);
	void (*truncate)(void *arg, uint64_t size);
	void (*sync)(void *arg);
	void *arg;
};

/* A run of chunks freed by a snapshot operation, not punched yet (cow_reclaim). */
struct reclaim_run {
	uint64_t pcn, n;
};

/* A request part parked until a chunk's BUSY operation finishes. */
struct waiter {
	struct cow_req *req;
	uint64_t chunk;
	struct waiter *next;
};

struct cow_image {
	char *path;
	int fd;
	int fmt;
	unsigned open_flags;
	bool read_only;
	bool corrupt;
	struct cow_image *backing;
	uint64_t vsize;
	uint64_t raw_size;		/* raw: size of the file */

	/* ucow geometry */
	struct ucow_hdr hdr;
	uint32_t chunk_size, block_size, chunk_shift, block_shift, bpc, bm_words;
	uint64_t nr_chunks;
	uint64_t data_pcn;		/* first data chunk number */

	/* in-memory metadata; entries and bitmap words read lock-free with atomics */
	uint64_t *table;		/* nr_chunks entries, 4 KiB-aligned allocation */
	uint64_t **bm_groups;		/* one 4 KiB page of bitmaps each, allocated on demand */
	uint64_t nr_groups, chunks_per_group;
	uint8_t *table_dirty, *bm_dirty;	/* per 4 KiB page, since the last checkpoint */
	/* writable images: per virtual chunk, I/Os in flight to its physical chunk that did not
	 * hold the chunk BUSY (fast-path reads and writes); a chunk a discard unmapped is not
	 * reused while its count is not zero (J4, alloc.c) */
	uint32_t *inflight;

	pthread_mutex_t lock;		/* allocator, journal, waits, bitmap group allocation */

	/* allocator (under lock) */
	uint64_t next_pcn;		/* first chunk past every used one */
	uint64_t file_pcns;		/* chunks the file is sized for */
	uint64_t *free_pcns;
	size_t nfree, free_cap;
	struct quarantined *quar;
	size_t nquar, quar_cap;
	struct reclaim_run *reclaim;	/* freed, to punch before reuse (snapshot.c) */
	size_t nreclaim, reclaim_cap;

	/* journal (under lock) */
	struct jrec *recs;		/* pending records, index rec_base .. rec_added-1 */
	size_t recs_cap;
	uint64_t rec_base, rec_added, rec_committed;
	uint64_t jblk;			/* next free journal block */
	uint64_t jseq;			/* seq of journal block 0 */
	bool commit_running;
	struct cow_req *commit_waiters;

	struct waiter *waits;		/* parked request parts (under lock) */

	/* snapshots (snapshot.c); changed only by snapshot operations, under lock */
	struct snap *snaps;
	uint32_t nb_snaps;
	uint32_t *rc;			/* snapshot references per physical chunk */
	uint64_t rc_len;

	/* side log (sidelog.c): -1, or a file the caller owns */
	int sidelog_fd;
	uint64_t sidelog_slot;		/* where the next record goes (under lock) */
	uint64_t sidelog_seq;		/* its seq in the current run */
	bool sidelog_failed;		/* L4: write-through from now on (atomic) */

	struct cow_stats stats;		/* updated with atomics */
	struct img_tap *tap;		/* tests only; NULL */
	int64_t crash_after;		/* tests: > 0 = metadata writes allowed before a "crash" */
	char err[COW_ERRLEN];
};

struct eio;
struct chunk_op;

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

/* Per-thread handle. */
struct cow_ctx {
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *backing;	/* same thread, backing image */
	struct eio *free_eios;
	void *free_bufs;		/* chunk-sized aligned buffers for chunk ops (linked) */
	struct chunk_op *free_ops;	/* chunk ops for reuse (engine.c) */
	unsigned nfree_bufs;
	int efd;
	pthread_mutex_t rlock;
	struct cow_req *ready;		/* requests handed over by other threads */
};

/* An engine I/O: a backend I/O plus what to do when it finishes. */
struct eio {
	struct cow_io io;
	struct cow_ctx *ctx;
	void (*fn)(struct eio *e, int res);
	void *arg;
	uint64_t want;			/* bytes expected (short reads zero-fill) */
	uint64_t u[3];			/* per-use scratch (chunk, chunk number, block range) */
	uint64_t hold;			/* virtual chunk + 1 whose inflight count it holds, or 0 */
	struct cow_req sub;		/* for reads from the backing image */
	struct eio *fnext;
};

#define STAT_ADD(img, f, v) __atomic_fetch_add(&(img)->stats.f, (v), __ATOMIC_RELAXED)

/* image.c: plain I/O helpers for metadata (EINTR retried; reads past EOF give zeros) */
int io_pread_all(int fd, void *buf, size_t len, uint64_t off);
int io_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* The image file's own metadata I/O (seen by img->tap): 0 or -errno. */
int img_pwrite(struct cow_image *img, const void *buf, size_t len, uint64_t off);
int img_sync(struct cow_image *img);
int img_punch(struct cow_image *img, uint64_t off, uint64_t len);
int img_truncate(struct cow_image *img, uint64_t size);
void *meta_zalloc(size_t size);	/* zeroed, 4 KiB aligned, size rounded up to 4 KiB */

/* image.c */
bool img_crashed(struct cow_image *img);	/* tests: the simulated crash point is reached */
void img_abandon(struct cow_image *img);	/* tests: drop without writing (a crash) */
struct chain_link {		/* the images above one being opened (loop detection) */
	dev_t dev;
	ino_t ino;
	const struct chain_link *up;
};
int cow_open_depth(const char *path, int fmt, unsigned flags, struct cow_image **out,
		   char *err, int depth, const struct chain_link *up, int sidelog_fd);
void img_set_err(struct cow_image *img, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int img_mark_corrupt(struct cow_image *img, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int img_write_header(struct cow_image *img);
uint64_t *img_bm(struct cow_image *img, uint64_t chunk, bool create);
int img_grow_file(struct cow_image *img, uint64_t pcn);
int img_load_meta(struct cow_image *img, bool check_mode, struct cow_check_result *cr);
int img_load_group_for(struct cow_image *img, uint64_t chunk);

/* sidelog.c */
void sidelog_append(struct cow_image *img, uint64_t chunk, uint64_t entry, const uint64_t *bm);
void sidelog_new_run(struct cow_image *img);
void sidelog_header_written(struct cow_image *img);
int sidelog_fold(struct cow_image *img, uint64_t generation, uint64_t *nrec);

static inline uint64_t ent_load(struct cow_image *img, uint64_t c)
{
	return __atomic_load_n(&img->table[c], __ATOMIC_ACQUIRE);
}
static inline void ent_store(struct cow_image *img, uint64_t c, uint64_t e)
{
	__atomic_store_n(&img->table[c], e, __ATOMIC_RELEASE);
	img->table_dirty[(c * 8) / UCOW_META_ALIGN] = 1;
}
/* Count an I/O into virtual chunk c's physical chunk: taken BEFORE the entry is loaded (or
 * under img->lock), so that an unmap either sees the count or the I/O sees the unmapping. */
static inline void inflight_get(struct cow_image *img, uint64_t c)
{
	if (img->inflight)
		__atomic_fetch_add(&img->inflight[c], 1, __ATOMIC_SEQ_CST);
}
static inline void inflight_put(struct cow_image *img, uint64_t c)
{
	if (img->inflight)
		__atomic_fetch_sub(&img->inflight[c], 1, __ATOMIC_RELEASE);
}
static inline bool bm_test(const uint64_t *bm, uint32_t i)
{
	return bm && (__atomic_load_n(&bm[i / 64], __ATOMIC_ACQUIRE) >> (i % 64)) & 1;
}

/* journal.c */
int jnl_add(struct cow_image *img, uint64_t chunk, uint64_t entry, const uint64_t *bm,
	    uint64_t old_entry, const uint64_t *old_bm, uint64_t *rec_idx);
void bm_copy(struct cow_image *img, uint64_t *to, const uint64_t *bm);	/* NULL: zeros */
void jnl_flush(struct cow_ctx *ctx, struct cow_req *req, uint64_t want);
int jnl_checkpoint(struct cow_image *img);
int jnl_checkpoint_all(struct cow_image *img);
int jnl_replay(struct cow_image *img, uint64_t *nrec);
int jnl_apply(struct cow_image *img, uint64_t c, uint64_t e, const uint8_t *bm_le);

/* snapshot.c */
int snap_load(struct cow_image *img, uint64_t file_size);
void snap_extents(struct cow_image *img, void (*fn)(void *, uint64_t, uint64_t), void *arg);
bool snap_shared(struct cow_image *img, uint64_t p);
int snap_view(struct cow_image *img, const char *key, char *err);
void snap_check(struct cow_image *img, struct cow_check_result *cr);

/* alloc.c (under img->lock) */
int alloc_chunk(struct cow_image *img, uint64_t *pcn);
void alloc_release(struct cow_image *img, uint64_t pcn);
int alloc_quarantine(struct cow_image *img, uint64_t pcn, uint64_t rec, uint64_t chunk);
void alloc_committed(struct cow_image *img, uint64_t upto);

/* engine.c */
struct eio *eio_get(struct cow_ctx *ctx);
void eio_put(struct eio *e);
void eng_queue(struct cow_ctx *ctx, struct eio *e, int op, int fd, void *buf, uint32_t len,
	       uint64_t off, void (*fn)(struct eio *, int), void *arg);
void req_put(struct cow_req *req, int res);
void ctx_hand_over(struct cow_ctx *to, struct cow_req *req);

#endif
