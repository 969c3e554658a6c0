/* SPDX-License-Identifier: MIT */
/*
 * cowcore — the ucow image engine. The one public header.
 *
 * Model:
 *   struct cow_image    an open image (ucow or raw) and its backing chain. Shared by every
 *                       thread that serves it; thread-safe.
 *   struct cow_backend  an I/O backend (io_uring, libaio, sync) owned by ONE thread.
 *   struct cow_ctx      one thread's handle on an image: binds the image to that thread's
 *                       backend. Requests are submitted on a ctx and complete through it.
 *   struct cow_req      one request (read, write, write-zeroes, discard, flush). Owned by
 *                       the caller, which must keep it alive until its callback runs.
 *
 * Every function returns 0 or a negative errno. -EUCLEAN means the image is corrupt (such an
 * image is switched to read-only); the image's error text (cow_errmsg) says where.
 * No function touches global state: two images, two contexts, two threads are independent.
 */
#ifndef COWCORE_H
#define COWCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COW_ERRLEN 256		/* a size for error-text buffers that holds every message */

enum cow_fmt {
	COW_FMT_NONE = 0,	/* "probe": a ucow image is recognized by its magic; raw never is */
	COW_FMT_RAW = 1,
	COW_FMT_UCOW = 2,
	COW_FMT_QCOW2 = 3,	/* read-only; probed by its magic like ucow */
};
const char *cow_fmt_name(int fmt);
int cow_fmt_parse(const char *name);	/* "raw" / "ucow" / "qcow2" -> fmt, else -EINVAL */

/* ---- create ---------------------------------------------------------------------------- */

struct cow_create_opts {
	uint64_t size;		/* virtual size in bytes; 0 = backing image's size */
	uint32_t chunk_size;	/* 0 = default (COW_DEFAULT_CHUNK) */
	uint32_t block_size;	/* 0 = default (COW_DEFAULT_BLOCK) */
	uint32_t journal_size;	/* 0 = default */
	const char *backing;	/* backing file name, stored as given; NULL = none */
	int backing_fmt;	/* required with backing: COW_FMT_RAW or COW_FMT_UCOW */
	uint32_t prealloc;	/* COW_PREALLOC_*: what is allocated at once (qemu-img's
				 * preallocation=) */
	uint32_t open_flags;	/* COW_OPEN_ALLOW_NETWORK: backing may be a network URI
				 * (connected to for its size); else such a name is refused */
	uint32_t net_timeout_ms;	/* as in cow_open_opts */
	uint32_t features;	/* COW_CREATE_COPY_ON_READ */
	uint32_t reserved[4];	/* zero (room for later options) */
};
/* The image copies what it reads from its backing chain into itself whenever it is opened
 * read-write (the header's COPY_ON_READ bit, format.md; as COW_OPEN_COPY_ON_READ). Needs a
 * backing image. */
#define COW_CREATE_COPY_ON_READ 0x1u
/*
 * Preallocation (cow_create_opts.prealloc), qemu-img's meanings: OFF allocates nothing;
 * METADATA maps every chunk in the lookup table to its own physical chunk, in order, with
 * no block written (bitmaps clear: the image reads as before, zeros or the backing file's
 * data, and a first write needs no chunk allocation), the data area a hole; FALLOC does
 * that and reserves the data area's space (fallocate); FULL writes it with zeros.
 */
enum { COW_PREALLOC_OFF, COW_PREALLOC_METADATA, COW_PREALLOC_FALLOC, COW_PREALLOC_FULL };
/* "off" / "metadata" / "falloc" / "full" -> COW_PREALLOC_*, else -EINVAL */
int cow_prealloc_parse(const char *name);
#define COW_DEFAULT_CHUNK (1u << 20)
#define COW_DEFAULT_BLOCK (4u << 10)

/* Create a ucow image at path, which must not exist. On failure err (errlen bytes; may be
 * NULL) receives one line naming the file and the reason. */
int cow_create(const char *path, const struct cow_create_opts *o, char *err, size_t errlen);

/* ---- open / close ------------------------------------------------------------------------ */

#define COW_OPEN_RDONLY  0x1	/* read-only; shared OFD lock, many readers */
#define COW_OPEN_DIRECT  0x2	/* O_DIRECT on image files */
#define COW_OPEN_NOCHAIN 0x4	/* do not open the backing chain (info, check on a broken chain;
				 * commit, rebase -u). Read-write, an image that names a backing
				 * file takes no writes, write-zeroes or discards (-EROFS: they
				 * would need the chain); cow_map says COW_MAP_BACKING all the
				 * same where the data is the backing file's */
#define COW_OPEN_CHECK   0x8	/* for cow_check on a damaged image: read-only, no chain; metadata
				 * problems are tolerated (the image is marked corrupt) so that
				 * cow_check can count them instead of the open failing */
#define COW_OPEN_SIDELOG 0x10	/* use cow_open_opts.sidelog_fd */
#define COW_OPEN_CONFINE 0x20	/* every backing file must be named relative to its image and
				 * lie (links resolved) inside the opened image's folder; else
				 * -EPERM. For images from others: a name like /etc/shadow or a
				 * device must not become a guest-visible base. */
#define COW_OPEN_SHARE   0x40	/* force share (qemu-img -U): take no lock, so an image another
				 * process holds read-write (a ucow dev server) opens, and that
				 * process is not kept from anything. Only with COW_OPEN_RDONLY or
				 * COW_OPEN_CHECK (else -EINVAL); the backing chain is opened the
				 * same way. What it reads is the image as the file held it at
				 * open (a dirty image's journal replayed in memory, as every
				 * read-only open does), possibly half way through a change of
				 * the writer's: for looking at, not for a consistent copy. See
				 * cow_writer_active. Nothing is ever written. */
#define COW_OPEN_ALLOW_NETWORK 0x80	/* a backing name that is a network URI (nbd://,
				 * nbds://, nbd+unix://, nbds+unix://) may be followed: the
				 * engine connects to that server (libnbd), each context on a
				 * connection of its own. Without it such an image is refused
				 * with -EREMOTE before anything connects: an image from
				 * others must not make the host reach out to the network (or
				 * to a local socket). The URI itself may also be opened
				 * (read-only, raw content) with this flag. */

#define COW_OPEN_COPY_ON_READ 0x100	/* copy-on-read: the blocks a read takes from the backing
				 * chain are also written into the image (whole blocks, before
				 * the read completes, never over a newer write), so that each
				 * is read from the chain once. Read-write ucow images with a
				 * backing image; ignored otherwise (also the header's
				 * COPY_ON_READ bit turns it on). See cow_get_cor_info. */

struct cow_open_opts {
	int fmt;		/* COW_FMT_*; COW_FMT_NONE probes for the ucow magic, and raw is
				 * never probed: a file without it is refused */
	unsigned flags;		/* COW_OPEN_* */
	/*
	 * Read-only ucow images: show this snapshot's content (a name, or an id as digits)
	 * instead of the current state. NULL: the current state.
	 */
	const char *snapshot;
	/*
	 * With COW_OPEN_SIDELOG, read-write ucow images: a read-write file the caller owns (on
	 * tmpfs) that receives every journal record before the request it belongs to
	 * completes, so that the next process opening the image with the same file loses no
	 * acknowledged write if this one dies; this open folds in what a dead process left
	 * there. The caller deletes the file after a clean cow_close.
	 */
	int sidelog_fd;
	/*
	 * With COW_OPEN_ALLOW_NETWORK: how long, in milliseconds, a read that needs a network
	 * backing server waits for it (connecting, reconnecting, or its answer) before it fails
	 * with -EIO; also the bound of the connection made at open. 0: COW_NET_TIMEOUT_MS.
	 */
	uint32_t net_timeout_ms;
	uint32_t reserved[7];	/* zero (room for later options) */
};
#define COW_NET_TIMEOUT_MS 30000u
#define COW_NET_TIMEOUT_MAX_MS 3600000u	/* an hour: more is refused (-EINVAL) */

struct cow_image;

/*
 * Open path with the options o (NULL: probe the format, read-write). A read-write open takes
 * an exclusive OFD lock on the file: a second writer gets -EBUSY. Backing images are opened
 * read-only, names resolved relative to the overlay's folder (cow_backing_path), chain depth
 * limited to COW_MAX_CHAIN, loops refused. On failure err (errlen bytes; may be NULL)
 * receives one line naming the file and the reason; -EUCLEAN means the image is corrupt;
 * -EMEDIUMTYPE means path itself has no ucow magic (fmt COW_FMT_NONE or COW_FMT_UCOW): the
 * text names no option, so that the caller can say how its user asks for raw.
 */
#define COW_MAX_CHAIN 64
int cow_open(const char *path, const struct cow_open_opts *o, struct cow_image **out,
	     char *err, size_t errlen);

/* Checkpoint (table written, journal restarted), mark clean, unlock, free. */
int cow_close(struct cow_image *img);

/* Last error text for img (corruption details, I/O errors on metadata). */
const char *cow_errmsg(struct cow_image *img);

struct cow_info {
	int fmt;
	uint64_t virtual_size;
	uint64_t file_size;		/* st_size */
	uint64_t disk_usage;		/* st_blocks * 512 */
	uint32_t chunk_size, block_size;
	uint64_t nr_chunks;		/* entries in the lookup table */
	uint64_t allocated_chunks;	/* chunks mapped by the current state */
	uint64_t zero_chunks;		/* chunks marked "reads as zero" */
	uint64_t journal_size, journal_used;
	uint32_t nb_snapshots;
	bool dirty, corrupt, read_only;
	const char *backing;		/* as stored, or NULL */
	int backing_fmt;
	const char *path;
};
void cow_get_info(struct cow_image *img, struct cow_info *info);
struct cow_image *cow_backing_image(struct cow_image *img);	/* NULL at the chain's end */

/*
 * qcow2 images (COW_FMT_QCOW2) are read-only: a read-write open fails with -EROFS, and
 * cow_info gives chunk_size = the cluster size, nr_chunks = the clusters of the virtual
 * size, dirty and corrupt from the header's incompatible bits, the backing file (and its
 * format: COW_FMT_NONE when the image does not name it, then probed by magic, raw when no
 * magic matches). A corrupt qcow2 image opens only with COW_OPEN_CHECK. The header fields
 * below: 0, or -EINVAL when img is no qcow2 image.
 */
struct cow_qcow2_info {
	uint32_t version;		/* 2 or 3 */
	uint32_t cluster_size;
	uint32_t compression_type;	/* 0 zlib, 1 zstd */
	uint32_t refcount_bits;
	uint32_t nb_snapshots;		/* internal snapshots the header counts (not read) */
	uint64_t incompatible, compatible, autoclear;	/* feature bits */
	bool dirty, corrupt, lazy_refcounts;
	uint32_t reserved[8];		/* set to zero */
};
int cow_get_qcow2_info(struct cow_image *img, struct cow_qcow2_info *qi);

/*
 * A new qcow2 image (version 3, no backing file, no snapshots, 16-bit refcounts) written
 * front to back: ucow convert -O qcow2, so images go back to QEMU. cow_qcow2_out_create
 * makes path (it must not exist: O_EXCL) for a virtual size of size bytes with clusters of
 * cluster_size (a power of two, 512 to 2 MiB); with compress_level 1..9 every cluster that
 * deflates to at least 512 bytes less is stored zlib-compressed (0: none). Data goes in
 * with cow_qcow2_out_write at non-decreasing offsets (-EINVAL for one going back or past the
 * end); clusters never written, or all zeros, stay unallocated and read as zeros.
 * cow_qcow2_out_close with complete writes the tables, then the header, syncs, closes and
 * frees; without, it only frees (the file is no valid image: remove it). 0 or -errno; err
 * (errlen bytes) says why create failed. cow_qcow2_out_counts: clusters stored plain and
 * compressed so far.
 */
struct cow_qcow2_out;
int cow_qcow2_out_create(const char *path, uint64_t size, uint32_t cluster_size,
			 int compress_level, struct cow_qcow2_out **out, char *err,
			 size_t errlen);
int cow_qcow2_out_write(struct cow_qcow2_out *w, const void *buf, uint64_t len, uint64_t off);
int cow_qcow2_out_close(struct cow_qcow2_out *w, bool complete);
void cow_qcow2_out_counts(const struct cow_qcow2_out *w, uint64_t *data, uint64_t *compressed);

/*
 * Whether another process holds img, or an image of its backing chain, for writing (the
 * exclusive lock of a read-write open) right now: 1 yes, 0 no, or -errno. Meant for
 * COW_OPEN_SHARE opens, which take no lock and so keep no writer away: a caller warns that
 * what it read may be inconsistent.
 */
int cow_writer_active(struct cow_image *img);

/*
 * The layout cow_create gives an image made with o (o->size must be given; backing and
 * backing_fmt are ignored): 0, or -EINVAL / -ERANGE with err (errlen bytes; may be NULL)
 * saying which option is wrong, as cow_create would.
 */
struct cow_layout {
	uint64_t data_offset;	/* headers, table, bitmaps and journal, up to the first data
				 * chunk: the file size of an image with nothing allocated */
	uint64_t nr_chunks;	/* chunks the virtual size spans */
	uint32_t chunk_size, block_size;
	uint64_t full_size;	/* data_offset + nr_chunks x chunk_size: the file size once every
				 * chunk is allocated, as a copy that writes each chunk once
				 * (ucow convert) makes it */
	uint32_t reserved[8];	/* set to zero by the engine (room for more) */
};
int cow_create_layout(const struct cow_create_opts *o, struct cow_layout *out, char *err,
		      size_t errlen);

/*
 * Where the data of [off, off+len) comes from, for the run starting at off: returns the
 * status and sets *run to the length of the run (<= len) that has that status.
 */
enum cow_map_status {
	COW_MAP_DATA = 1,	/* data in this image */
	COW_MAP_ZERO = 2,	/* reads as zeros (zero chunk, or past every image's data) */
	COW_MAP_BACKING = 3,	/* comes from the backing image */
};
int cow_map(struct cow_image *img, uint64_t off, uint64_t len, uint64_t *run, uint64_t *phys);
/*
 * cow_map in more detail (ucow map shows it per layer of a chain): the run from off (at most
 * len bytes, clipped at the virtual size; off must be below it, len non-zero, else -EINVAL)
 * with one status, one "allocated" and, for COW_MAP_DATA, one chunk of this image's file.
 * Unlike cow_map, a run never spans a ZERO chunk and a chunk that is merely unallocated.
 */
struct cow_extent {
	uint64_t length;	/* bytes from off */
	uint64_t offset;	/* offset_valid: where the run's bytes start in this image's file */
	int status;		/* COW_MAP_DATA, COW_MAP_ZERO or COW_MAP_BACKING */
	bool allocated;		/* this image decides what the run reads: its data, a ZERO chunk,
				 * any byte of a raw image. false: the backing image does
				 * (COW_MAP_BACKING), or nothing does and it reads as zeros */
	bool offset_valid;	/* the run's bytes lie at offset of this file, readable as they
				 * are: ucow COW_MAP_DATA, and every byte of a raw image */
	bool compressed;	/* COW_MAP_DATA of a compressed chunk or cluster */
	uint32_t reserved[4];	/* set to zero by the engine */
};
int cow_map_extent(struct cow_image *img, uint64_t off, uint64_t len, struct cow_extent *x);

/* Consistency check (read-only). Exit-code style result in *verdict. */
struct cow_check_result {
	int verdict;		/* 0 clean, 2 corruption, 3 leaks only */
	uint64_t corruptions, leaks;
	uint64_t reclaimable;	/* dirty image: unflushed writes' chunks, freed at next rw open */
	uint64_t allocated_chunks, fragmented;
	char first_problem[COW_ERRLEN];
};
int cow_check(struct cow_image *img, struct cow_check_result *res);

/*
 * check -r: repair the image at path (not open anywhere else; the chain is not opened).
 * COW_REPAIR_LEAKS punches leaked chunks (an image that does not open because it is
 * corrupt is left alone: -EUCLEAN). COW_REPAIR_ALL also rewrites the refcounts from the
 * snapshot tables, drops table entries that fail validation (past the end of the file, over
 * metadata, mapped twice, reserved bits), clears bitmaps of unmapped chunks and the corrupt
 * mark. A damaged snapshot table or header is not repaired (-EUCLEAN, nothing changed).
 * done (may be NULL) receives one line saying what was changed. Check again afterwards.
 */
#define COW_REPAIR_LEAKS 0x1
#define COW_REPAIR_ALL   0x3
int cow_repair(const char *path, int fmt, unsigned what, char *done, size_t donelen, char *err,
	       size_t errlen);

/* ---- the backing chain (no request may be in flight on img during these) ---------------- */

/*
 * Open name (format fmt: COW_FMT_RAW or COW_FMT_UCOW) with its chain as img's backing file
 * would be opened were the name in img's header: taken from img's folder (cow_backing_path),
 * read-only, with img's COW_OPEN_DIRECT and COW_OPEN_CONFINE (bounded by img's folder); a
 * chain that reaches img is refused (-ELOOP). img: a ucow image cow_open returned. The
 * caller closes *out. For a safe rebase, which reads the old chain and the new one side by
 * side. On failure err (errlen bytes; may be NULL) receives one line naming img.
 */
int cow_open_backing(struct cow_image *img, const char *name, int fmt, struct cow_image **out,
		     char *err, size_t errlen);

/*
 * Make img (a read-write ucow image) name another backing file: name (stored as given, at
 * most 1023 bytes; a relative name is taken from img's folder) in format fmt, or no backing
 * file for name NULL or "" (fmt ignored). Nothing is copied: the caller makes the content
 * right first (ucow rebase). The new chain must open as cow_open_backing opens it, except
 * when img was opened with COW_OPEN_NOCHAIN: then only the name is checked (COW_OPEN_CONFINE,
 * not img itself) and the file need not exist yet (qemu-img rebase -u). Crash-safe: every
 * write made before is made durable first (a checkpoint), then the header switches in one
 * write to its other slot, so a crash leaves the old name or the new one. img reads through
 * the chain it was opened with until it is closed; reopen it to read through the new one.
 */
int cow_set_backing(struct cow_image *img, const char *name, int fmt);

/*
 * Empty img's current state (a read-write ucow image): every chunk becomes unallocated, so
 * img reads its backing file (zeros without one) everywhere; chunks no snapshot holds are
 * freed. The last step of a commit, once the backing file holds img's content durably.
 * Crash-safe: writes made before are made durable first, and a crash leaves every chunk as
 * it was or empty (each chunk's unmapping is one journal record).
 */
int cow_make_empty(struct cow_image *img);

/*
 * Reopen img's backing file (the first of its chain) read-write (writable != 0: an online
 * commit writes into it through a context on cow_backing_image(img)) or read-only again.
 * Every context on img follows: its backing reads go to the reopened image. No request may
 * be in flight on img. Read-write takes the file's write lock: -EBUSY while another process
 * holds it. On failure nothing changed and err (errlen bytes; may be NULL) says why.
 */
int cow_backing_reopen(struct cow_image *img, int writable, char *err, size_t errlen);

/* ---- snapshots (no request may be in flight on img during these) ------------------------ */

struct cow_snap_info {
	uint32_t id, parent;		/* parent 0: none */
	char name[128];
	uint64_t date_sec;
	uint32_t date_nsec;
	uint64_t virtual_size;
	uint64_t disk_usage;		/* bytes that deleting it would free */
	bool current_parent;		/* the current state descends from it */
};
/* Names are unique; id (a number) or name selects a snapshot in apply/delete/view. */
int cow_snapshot_create(struct cow_image *img, const char *name);
int cow_snapshot_delete(struct cow_image *img, const char *name_or_id);
int cow_snapshot_apply(struct cow_image *img, const char *name_or_id);
/*
 * Underlays (format.md "Underlays"): a first write after a snapshot leaves the old chunk
 * below the new one, which holds only the blocks written since; reads take the others from
 * the parent snapshot's chunk. Snapshot create (and a delete of the parent, resize) folds
 * them first: copies those blocks into the new chunks. cow_fold does that piece by piece,
 * ahead of time: up to max_chunks (1 to 1024; 0: 1024) of them from chunk *cursor on
 * (0 starts a pass), their journal records committed; *cursor moves past the last chunk
 * looked at, and *pass_done says a pass is over (*cursor is 0 again). Returns how many it
 * folded, or -errno. No request may be in flight (a server pauses its queues); an image with
 * nothing to fold (no underlay, not ucow, read-only) ends its pass at once.
 * cow_underlays_made counts the underlays first writes made since the open: a pass that
 * began at that count and ended with it unchanged left none behind.
 */
int cow_fold(struct cow_image *img, uint64_t *cursor, uint32_t max_chunks, bool *pass_done);
uint64_t cow_underlays_made(struct cow_image *img);
/* list may run while I/O does (create, delete and apply want none in flight) */
int cow_snapshot_list(struct cow_image *img, struct cow_snap_info **out, uint32_t *n);
/*
 * Chunks a snapshot delete or apply frees are punched out of the file after it returns, not
 * inside it (punching gigabytes can take seconds; the server serves I/O meanwhile): they are
 * reused only once punched. cow_reclaim punches up to max_bytes of them (0: all) and returns
 * 1 if some are left, 0 if none are, or -errno (the chunks are reusable all the same; their
 * space is not returned). Safe while I/O runs on other threads; cow_close reclaims the rest.
 */
int cow_reclaim(struct cow_image *img, uint64_t max_bytes);
/* ---- resize (no request may be in flight on img, as for the snapshot operations) -------- */

#define COW_RESIZE_SHRINK 0x1	/* a shrink may drop data past the new end */
/*
 * Make img's virtual size new_size bytes (any size from 1 byte; ucow images up to the limit
 * of their chunk and block sizes, format.md). The image must be open read-write.
 * Growing: the new area reads as zeros, even where the backing image has data. Shrinking
 * drops what lies past the new end; a ucow image refuses with -ENOTEMPTY when that is data
 * of this image, a raw image always, unless flags has COW_RESIZE_SHRINK (the backing
 * image's data is not this image's). Chunks only the current state mapped there are freed
 * (punched by cow_reclaim or at close); chunks a snapshot references stay the snapshot's,
 * which keeps its own size (applying it gives the image that size again).
 * Crash-safe: a power loss at any point leaves the image as it was or as it is after.
 * Takes the image's lock; like snapshot create/delete/apply it wants no request in flight (a
 * server serving img must pause its queues around it). A raw image must be a regular file.
 * A ucow image with a backing file needs its chain open (not COW_OPEN_NOCHAIN).
 * -EINVAL (size 0, unknown flags, no chain), -EFBIG (too large), -ENOTEMPTY, -EROFS,
 * -ENOTSUP (a raw block device), or an I/O error; cow_errmsg says why.
 */
int cow_resize(struct cow_image *img, uint64_t new_size, unsigned flags);

/* ---- I/O backends ------------------------------------------------------------------------ */

/* One I/O the engine asks a backend to do. */
/*
 * COW_IO_POLL waits until fd is ready for the poll(2) events in len (one-shot, like
 * IORING_OP_POLL_ADD): res is the revents mask. The engine uses it for the socket of a
 * network backing image (an epoll descriptor that also holds a timer), so that its
 * replies are read from the loop that drives the backend. A backend that does not know
 * it refuses it from queue (-EINVAL): network backing images then fail their reads.
 */
enum cow_io_op { COW_IO_READ, COW_IO_WRITE, COW_IO_FSYNC, COW_IO_PUNCH, COW_IO_ZERO_RANGE,
		 COW_IO_POLL };
struct cow_io {
	uint8_t op;
	int fd;
	void *buf;
	uint32_t len;
	uint64_t off;
	void (*done)(struct cow_io *io, int res);	/* res: bytes or -errno */
	/* the backend's, while the I/O is queued there */
	struct cow_io *next;	/* its queue link */
	struct cow_backend *be;	/* the backend that queued it (for completions) */
};

struct cow_backend;
struct cow_backend_ops {
	const char *name;
	/* queue one I/O; it is submitted at the latest by the next submit_wait */
	int (*queue)(struct cow_backend *be, struct cow_io *io);
	/* submit what is queued, wait for at least min completions, run their done() */
	int (*submit_wait)(struct cow_backend *be, unsigned min);
	void (*destroy)(struct cow_backend *be);
};
/* The head of every backend; callers use the functions below, backends (backend.c, the
 * unit tests' own) fill it in and keep inflight. */
struct cow_backend {
	const struct cow_backend_ops *ops;
	unsigned inflight;	/* I/Os queued or submitted, not yet done */
};

/* name: "uring" (default), "aio", "sync". depth: queue depth hint. */
int cow_backend_new(const char *name, unsigned depth, struct cow_backend **out);
void cow_backend_free(struct cow_backend *be);
/* Submit what is queued and wait for at least min completions, running their callbacks. */
int cow_backend_submit_wait(struct cow_backend *be, unsigned min);
/* I/Os queued or submitted and not completed yet. */
unsigned cow_backend_inflight(const struct cow_backend *be);

/*
 * An io_uring backend on a ring the caller owns (the ublk server's per-queue ring). SQEs it
 * adds carry user_data with COW_UD_ENGINE set; the caller hands such CQEs to
 * cow_backend_complete() and submits the ring itself.
 */
struct io_uring;
#define COW_UD_ENGINE (1ULL << 63)
int cow_backend_uring_attach(struct io_uring *ring, struct cow_backend **out);
void cow_backend_complete(uint64_t user_data, int res);

/* ---- requests ---------------------------------------------------------------------------- */
/*
 * Alignment: an image opened with COW_OPEN_DIRECT takes only requests whose offset, length
 * and buffer address are multiples of 512 (-EINVAL otherwise). Without it, any byte range.
 */

enum cow_op { COW_READ, COW_WRITE, COW_WRITE_ZEROES, COW_DISCARD, COW_FLUSH };
#define COW_REQ_FUA 0x1		/* write durable (data and mapping) before completion */

struct cow_ctx;
struct cow_req {
	uint8_t op;		/* enum cow_op */
	uint32_t flags;		/* COW_REQ_* */
	uint64_t off, len;
	void *buf;
	void (*cb)(struct cow_req *req, int res);	/* res: 0 or -errno */
	void *priv;		/* the caller's */
	/* Reserved for the engine from cow_submit until the callback runs: the caller
	 * neither reads nor writes it. */
	uint64_t engine[6];
};

/* One thread's handle on an image (and, inside, on each backing image). */
int cow_ctx_new(struct cow_image *img, struct cow_backend *be, struct cow_ctx **out);
void cow_ctx_free(struct cow_ctx *ctx);

/*
 * Start a request. The callback runs from cow_submit() itself (when no I/O is needed) or from
 * the backend's completion processing, on this ctx's thread.
 */
void cow_submit(struct cow_ctx *ctx, struct cow_req *req);

/* Work owed by other threads to this ctx (waits on chunks they allocated) — run it. */
void cow_ctx_poll(struct cow_ctx *ctx);
/* An eventfd that becomes readable when cow_ctx_poll has work; for callers with own loops. */
int cow_ctx_eventfd(struct cow_ctx *ctx);

/* Synchronous convenience on top of cow_submit (tools): submit and drive the backend. */
int cow_rw(struct cow_ctx *ctx, int op, void *buf, uint64_t len, uint64_t off, uint32_t flags);

/* ---- statistics (tests and benchmarks verify I/O claims with these) ---------------------- */
struct cow_stats {
	uint64_t data_reads, data_writes, data_bytes_written;
	uint64_t meta_writes, meta_bytes_written;	/* journal, table, header, bitmap */
	uint64_t journal_commits, checkpoints;
	uint64_t allocations, cow_copies, fsyncs;
};
void cow_get_stats(struct cow_image *img, struct cow_stats *st);

/*
 * Compressed chunks of a ucow image (Documentation/format.md): ucow convert -c.
 * cow_compress_chunk deflates len bytes (a whole chunk) at level 1..9 into dst (cap bytes):
 * 0 with *out set, -ENOSPC when the stream does not fit in cap (store the chunk plain).
 * cow_put_compressed makes virtual chunk `chunk` (which must hold no data yet: unallocated
 * or zero, else -EEXIST) the compressed chunk of stream (len bytes, at most 2 MiB and less
 * than a chunk), whose blocks with their bit set in bm (the chunk's bitmap words, bit i =
 * block i) read from it, the others from the backing image as before. Durable at the next
 * flush, like a write. No other request on that chunk meanwhile. 0 or -errno.
 * cow_get_compress_info: the compressed chunks the current state maps, the sectors their
 * streams take, and how often reads inflated a stream or found it in the cache.
 */
#define COW_COMPRESSED_MAX (2u << 20)	/* the longest stream of a compressed chunk */
int cow_compress_chunk(const void *src, uint32_t len, int level, void *dst, uint32_t cap,
		       uint32_t *out);
int cow_put_compressed(struct cow_image *img, uint64_t chunk, const void *stream, uint32_t len,
		       const uint64_t *bm);
struct cow_compress_info {
	uint64_t chunks;		/* compressed chunks mapped by the current state */
	uint64_t stored_bytes;		/* the sectors their streams take */
	uint64_t inflates, cache_hits;	/* since open */
	uint64_t reserved[4];		/* zero */
};
void cow_get_compress_info(struct cow_image *img, struct cow_compress_info *ci);

/*
 * Copy-on-read (COW_OPEN_COPY_ON_READ): whether it is on for img, whether the header asks
 * for it, and since open: the copies written (and their bytes), the ranges not copied
 * because a write to their chunk was in flight or had written them first (read again from
 * the chain next time), and copies that failed (the read itself did not).
 */
struct cow_cor_info {
	bool enabled, in_header;
	uint64_t copies, bytes, skipped, failed;
	uint64_t reserved[4];		/* zero */
};
void cow_get_cor_info(struct cow_image *img, struct cow_cor_info *ci);

/*
 * A network backing image of img's chain (the first one, from the top): its URI and the
 * state of its connections (each context has its own). 0, or -ENOENT when the chain has
 * none. Safe while I/O runs.
 */
enum cow_net_state {
	COW_NET_IDLE = 0,	/* no connection open (none needed yet) */
	COW_NET_CONNECTED = 1,	/* connected, and no connection is lost */
	COW_NET_CONNECTING = 2,	/* a first connection is being made */
	COW_NET_RECONNECTING = 3,	/* a connection was lost; a new one is being made */
	COW_NET_FAILED = 4,	/* a connection was lost and is not back; reads that need it
				 * fail, the next one after a back-off tries again */
};
const char *cow_net_state_name(int state);	/* "idle", "connected", ... */
struct cow_net_stats {
	const char *uri;		/* as the image names it */
	int state;			/* enum cow_net_state */
	uint64_t failed_since;		/* state FAILED or RECONNECTING: since when (Unix time,
					 * milliseconds); else 0 */
	uint32_t connections;		/* open and ready now */
	uint32_t timeout_ms;
	uint64_t reads, read_bytes;	/* commands sent and answered */
	uint64_t read_errors;		/* reads that failed (server errors, lost connections,
					 * timeouts) */
	uint64_t timeouts;		/* of those: no answer or connection within the timeout */
	uint64_t connects;		/* connections made (the open's included) */
	uint64_t connect_failures;	/* attempts that failed */
	uint64_t disconnects;		/* ready connections lost */
	char last_error[COW_ERRLEN];	/* the last failure, one line; "" none */
	uint32_t reserved[8];		/* set to zero by the engine */
};
int cow_net_stats(struct cow_image *img, struct cow_net_stats *st);

/* ---- utilities shared by tools ----------------------------------------------------------- */
/* Parse "512", "4k", "1M", "2G", "1T" (binary units). -EINVAL / -ERANGE. */
int cow_parse_size(const char *s, uint64_t *out);
/*
 * The file a backing name stored in image names: an absolute name as it is, a relative one
 * taken from image's folder (as open does). 0 or -ENAMETOOLONG when out (outlen bytes)
 * cannot hold it.
 */
#define COW_PATH_MAX 4096
int cow_backing_path(const char *image, const char *name, char *out, size_t outlen);
/*
 * Whether a backing name is a network URI (its scheme one of nbd, nbds, nbd+unix,
 * nbds+unix, nbd+vsock, nbds+vsock, nbd+ssh, nbds+ssh, followed by "://"; the last four
 * are refused when opened): such a name is never taken from the image's folder
 * (cow_backing_path gives it as it is) and is opened only with COW_OPEN_ALLOW_NETWORK.
 */
bool cow_name_is_uri(const char *name);

#endif
