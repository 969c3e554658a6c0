/* SPDX-License-Identifier: MIT */
/*
 * The ublk server: internal interfaces shared by the files in ublk/.
 *
 * Objects (no global state: every device is its own struct ublk_dev):
 *   struct ublk_ctrl   a handle on /dev/ublk-control (ctrl.c)
 *   struct ublk_dev    one served device: options, negotiated dev_info, params, target,
 *                      queues (server.c)
 *   struct ublk_queue  one hardware queue: its thread, its io_uring (ublk commands and the
 *                      target's I/O share it), its tags (queue.c)
 *   struct ublk_tgt_ops  a target (null, raw, cow): const structs in tgt_null.c, tgt_image.c
 *
 * Every function returns 0 or -errno. Functions that can fail for a reason a user must read
 * take a char err[UBLK_ERRLEN] and write one sentence (without "ucow: ") into it.
 */
#ifndef UBLK_H
#define UBLK_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <sched.h>
#include <sys/types.h>
#include <liburing.h>

struct json_object;

#include "cowcore.h"
#include "ublk_uapi.h"

#define UBLK_ERRLEN 256
#define UBLK_DEF_DEPTH 128
#define UBLK_MAX_QUEUES_DEFAULT 4
#define UBLK_DEF_IO_BYTES (512u << 10)	/* per-tag buffer: max request size */

/* ---- control device (ctrl.c) --------------------------------------------------------- */
struct ublk_ctrl {
	int fd;
	struct io_uring ring;
	bool ring_ok;
	bool ioctl_encode;	/* the driver takes ioctl-encoded control commands */
	bool have_features;	/* GET_FEATURES answered (6.5+) */
	bool legacy;		/* UCOW_UBLK_LEGACY=1: behave as on 6.1 (tests) */
	uint64_t features;
};

const char *ublk_control_path(void);	/* $UCOW_UBLK_CONTROL or /dev/ublk-control */
int ublk_ctrl_open(struct ublk_ctrl *c, char *err);
void ublk_ctrl_close(struct ublk_ctrl *c);
int ublk_ctrl_add(struct ublk_ctrl *c, struct uk_dev_info *info);
int ublk_ctrl_del(struct ublk_ctrl *c, unsigned id);
int ublk_ctrl_get_info(struct ublk_ctrl *c, unsigned id, struct uk_dev_info *info);
int ublk_ctrl_set_params(struct ublk_ctrl *c, unsigned id, struct uk_params *p);
int ublk_ctrl_get_params(struct ublk_ctrl *c, unsigned id, struct uk_params *p);
int ublk_ctrl_start(struct ublk_ctrl *c, unsigned id, pid_t pid);
int ublk_ctrl_stop(struct ublk_ctrl *c, unsigned id);
/* UPDATE_SIZE (6.16+, a device added with UK_F_UPDATE_SIZE): the disk's capacity becomes
 * SECTORS (512 B); the driver sends no request past it from then on */
int ublk_ctrl_update_size(struct ublk_ctrl *c, unsigned id, uint64_t sectors);
int ublk_ctrl_start_recovery(struct ublk_ctrl *c, unsigned id);
int ublk_ctrl_end_recovery(struct ublk_ctrl *c, unsigned id, pid_t pid);
int ublk_ctrl_get_affinity(struct ublk_ctrl *c, unsigned id, unsigned q, void *mask,
			   unsigned len);
/* What the driver offers: GET_FEATURES, else a throwaway ADD_DEV (6.1..6.4). */
int ublk_ctrl_probe_features(struct ublk_ctrl *c, uint64_t *features, bool *probed);
const char *ublk_feature_name(unsigned bit);
const char *ublk_state_name(unsigned state);

/* ---- options and device -------------------------------------------------------------- */
/* A device's name (ucow dev serve, /etc/ucow/NAME.conf, /dev/disk/by-ucow/NAME): 1 to 64
 * bytes of A-Z a-z 0-9 _ . - , not starting with '.' or '-'. */
#define UBLK_NAME_MAX 64
bool ublk_name_valid(const char *name);

struct ublk_opts {
	char target[16];	/* "cow", "raw", "null" */
	char file[4096];	/* absolute path, "" for null */
	int dev_id;		/* -1: the kernel picks */
	unsigned nr_queues;	/* 0: one per CPU up to 4 */
	unsigned depth;		/* 0: UBLK_DEF_DEPTH */
	unsigned block_size;	/* logical block size: 512 or 4096 */
	uint64_t size;		/* null target: device size */
	char snapshot[128];	/* cow: serve this snapshot (read-only) instead of the current state */
	char name[UBLK_NAME_MAX + 1];	/* `ucow dev serve NAME`: /dev/disk/by-ucow/NAME; "" none */
	bool direct, read_only, recoverable, foreground;
	bool backing_outside;	/* --allow-backing-outside: no COW_OPEN_CONFINE */
	bool allow_network;	/* --allow-network-backing (or the settings file): a chain may
				 * name an NBD URI (COW_OPEN_ALLOW_NETWORK) */
	uint32_t nbd_timeout_ms;	/* --nbd-timeout: cow_open_opts.net_timeout_ms; 0 default */
	bool copy_on_read;	/* --copy-on-read: COW_OPEN_COPY_ON_READ */
	uint64_t prefetch_rate;	/* --prefetch[=RATE]: bytes/s of the background copy; 0 none
				 * (implies copy_on_read) */
};
#define UBLK_PREFETCH_DEFAULT_RATE (64ull << 20)

enum ublk_op_kind { UBLK_ST_READ, UBLK_ST_WRITE, UBLK_ST_FLUSH, UBLK_ST_DISCARD,
		    UBLK_ST_WZEROES, UBLK_ST_NR };
#define UBLK_LAT_BUCKETS 280	/* latency in ns: 8 buckets per power of two, to ~2 min */

struct ublk_op_stats {
	uint64_t ios, bytes, errors;
	uint64_t lat[UBLK_LAT_BUCKETS];
};

struct ublk_dev;
struct ublk_queue;

/* What a pause of the queues was for (dev stats shows each) */
enum ublk_pause_kind { UBLK_PAUSE_CREATE, UBLK_PAUSE_DELETE, UBLK_PAUSE_APPLY, UBLK_PAUSE_JOB,
		       UBLK_PAUSE_RESIZE, UBLK_PAUSE_FOLD, UBLK_PAUSE_NR };

/* One tag: its buffer and its request. */
struct ublk_io {
	void *buf;
	struct cow_req req;	/* engine targets */
	uint64_t start_ns;
	struct ublk_queue *q;
	uint16_t tag;
	uint8_t op;
	bool in_kernel;		/* a FETCH/COMMIT command for this tag is with the driver */
	bool aborted;		/* the driver answered UBLK_IO_RES_ABORT: no more requests */
	struct ublk_io *held_next;	/* held while the queue is paused (queue.c) */
};

/* A queue's pause state (queue.c: ublk_dev_pause / ublk_dev_resume) */
enum { UBLK_Q_RUNNING, UBLK_Q_PAUSING, UBLK_Q_PAUSED };

struct ublk_queue {
	struct ublk_dev *dev;
	unsigned q_id, depth;
	struct io_uring ring;
	bool ring_ok;
	const struct uk_io_desc *iods;	/* mmapped from /dev/ublkcN, read-only */
	size_t iods_len;
	struct ublk_io *ios;
	void *bufs;
	size_t bufs_len;
	pthread_t thread;
	bool thread_started;
	unsigned in_kernel;	/* commands with the driver */
	unsigned in_target;	/* requests handed to the target, not yet completed */
	bool stopping;		/* stop_fd fired: end once the target is idle */
	int ctl_fd;		/* eventfd: the control thread changed dev->pause_req */
	unsigned pause_state;	/* UBLK_Q_*: this thread only */
	unsigned pause_gen;	/* the dev->pause_req this thread is pausing or paused for */
	struct ublk_io *held_head, *held_tail;	/* requests received while pausing/paused */
	unsigned nheld;
	int ret;		/* thread result */
	void *tgt;		/* the target's per-queue data */
	cpu_set_t cpus;		/* where the driver maps this queue's CPUs */
	struct ublk_op_stats stats[UBLK_ST_NR];	/* written by this thread only (relaxed) */
};

/* A target: a const struct (tgt_null.c, tgt_image.c), found by name (ublk_tgt_find). */
struct ublk_tgt_ops {
	const char *name;
	bool needs_file;
	/* open storage; set dev->size and dev->discard_gran; error text in dev->err */
	int (*open)(struct ublk_dev *dev);
	void (*close)(struct ublk_dev *dev);	/* flush and close (clean) */
	int (*queue_init)(struct ublk_queue *q);	/* on the queue's thread, ring ready */
	void (*queue_exit)(struct ublk_queue *q);	/* on the queue's thread */
	/* start a request; finish it with ublk_complete_io (maybe from inside this call) */
	void (*queue_io)(struct ublk_queue *q, struct ublk_io *io, const struct uk_io_desc *iod);
	/* a CQE whose user_data is not a ublk command: engine or target */
	void (*handle_cqe)(struct ublk_queue *q, const struct io_uring_cqe *cqe);
	/* true while the target still has I/O of its own in flight on this queue's ring */
	bool (*busy)(struct ublk_queue *q);
	/* online query for the control socket ("info"): a JSON object, NULL if none; may be NULL */
	struct json_object *(*info)(struct ublk_dev *dev);
	/* the queue leaves a pause: catch up on what was deferred; may be NULL */
	void (*resume)(struct ublk_queue *q);
};

const struct ublk_tgt_ops *ublk_tgt_find(const char *name);
extern const struct ublk_tgt_ops ublk_tgt_null, ublk_tgt_raw, ublk_tgt_cow, ublk_tgt_qcow2;

struct ublk_dev {
	struct ublk_opts o;
	struct ublk_ctrl ctrl;
	struct uk_dev_info info;	/* as negotiated */
	struct uk_params params;
	const struct ublk_tgt_ops *tgt;
	void *tgt_data;
	uint64_t size;
	uint32_t discard_gran;	/* 0: no discard / write-zeroes */
	unsigned io_bytes;	/* per-tag buffer */
	int cdev_fd;
	struct ublk_queue *queues;
	int wake_fd;		/* eventfd: a queue thread ended */
	int ready_fd;		/* eventfd: one count per queue that finished its FETCHes */
	int stop_fd;		/* eventfd: queues end without STOP_DEV (setup failed) */
	int sig_fd;		/* LIVE: the control thread's signalfd (a stop signal), or -1 */
	bool live;		/* START_DEV / END_USER_RECOVERY done */
	bool write_through;	/* every write FUA (recoverable cow without a side log) */
	int sidelog_fd;		/* recoverable cow: the image's side log (tgt_image.c), or -1 */
	char sidelog_path[4200];	/* ublk_sidelog_path */
	bool added;		/* ADD_DEV done: undo with DEL_DEV */
	bool recovering;	/* ublk_serve_recover: target errors must not name add options */
	/* online operations (control thread; queues read pause_req once per loop turn) */
	unsigned pause_req;	/* atomic: while the control thread wants the queues paused, the
				 * pause's number (never 0), else 0 */
	unsigned pause_seq;	/* the last pause's number */
	int pause_ack_fd;	/* eventfd: one count per queue that reached UBLK_Q_PAUSED */
	uint64_t pause_t0;	/* when the current pause was requested (ns) */
	int pause_kind;		/* enum ublk_pause_kind of the current pause */
	struct ublk_pause_stats {
		uint64_t count, last_ns, max_ns, total_ns;
	} pause_st[UBLK_PAUSE_NR];
	struct ublk_job *job;	/* job.c: the online job (control thread), NULL before one */
	struct ublk_fold {	/* fold.c: the background fold of underlays (control thread) */
		uint64_t cursor;	/* the pass's next chunk (0: none under way) */
		uint64_t made_at_start;	/* cow_underlays_made when the pass began */
		uint64_t made_done;	/* ... when the last pass that ended began */
		uint64_t last_ios, idle_since_ns;	/* the guest's requests at the last look */
		uint64_t chunks, steps, passes;	/* folded, pauses, passes ended */
		bool started;	/* idleness is being watched */
		bool failed;	/* a fold failed: no more (stderr said why) */
	} fold;
	int job_track;		/* atomic: queue threads mark what they write (ublk_job_mark) */
	char sock_path[108];	/* the control socket ("" if none), for the state file */
	char err[UBLK_ERRLEN];
};

/* fold.c: the background fold of underlays. ublk_fold_step (the control loop, each turn)
 * folds a step when the device is idle and has underlays to fold; returns the ms until it
 * wants to look again, or -1. ublk_fold_pass (before an online snapshot create) runs a whole
 * pass in steps, idle or not; 0 or -errno with err set. */
int ublk_fold_step(struct ublk_dev *dev);
int ublk_fold_pass(struct ublk_dev *dev, char *err, size_t len);

/* job.c: online whole-image jobs, run in steps by the control thread (one pause each) */
enum { UBLK_JOB_FLATTEN, UBLK_JOB_COMMIT, UBLK_JOB_PREFETCH };
enum { UBLK_JOB_RUNNING, UBLK_JOB_DONE, UBLK_JOB_FAILED };
#define UBLK_JOB_GAP_MS 5		/* between two steps: the guest's I/O runs */
struct ublk_job {
	int kind, state;
	uint64_t off, total;		/* walked so far, of the virtual size */
	uint64_t copied;		/* bytes copied */
	uint64_t steps, max_pause_ns, total_pause_ns;
	struct cow_backend *be;		/* the job's own engine context, while it runs */
	struct cow_ctx *ctx;
	void *buf;
	/* commit: a context on the backing file (reopened read-write), the chunks written
	 * since they were copied (bits set by the queue threads), the passes over them */
	struct cow_backend *bbe;
	struct cow_ctx *bctx;
	uint64_t *dirty, nchunks, dpos;
	unsigned chunk_shift, pass;
	bool dirty_seen;
	/* prefetch: the rate, the guest's request count at the last look and when it last
	 * changed, the earliest time of the next step (CLOCK_MONOTONIC ns) */
	uint64_t rate, last_ios, idle_since_ns, next_ns, backoffs;
	char err[UBLK_ERRLEN];
};
/* Start a job (no other running); 0, or -errno with why set. */
int ublk_job_start(struct ublk_dev *dev, int kind, char *why, size_t wlen);
/* One step (one pause; none for a prefetch) of the running job: 1 if more steps are to come
 * (ublk_job_delay_ms: after how long), else 0. */
int ublk_job_step(struct ublk_dev *dev);
int ublk_job_delay_ms(struct ublk_dev *dev);
void ublk_job_free_io(struct ublk_job *j);
/* A queue thread: [off, off + len) is being written while a commit job tracks writes. */
void ublk_job_mark(struct ublk_dev *dev, uint64_t off, uint64_t len);
/* The job's state for the socket: {"kind", "state", ..., "error"}, or {"state": "none"} */
struct json_object *ublk_job_encode(const struct ublk_job *j);

/* queue.c */
int ublk_queue_start(struct ublk_dev *dev, struct ublk_queue *q, unsigned q_id);
void ublk_queue_join(struct ublk_queue *q);
void ublk_complete_io(struct ublk_queue *q, struct ublk_io *io, int res);
/*
 * Quiesce the device for an engine operation that needs the image to itself (snapshots):
 * every queue stops handing new requests to the target (it holds them, no allocation), waits
 * until its target has nothing in flight while it still completes ublk commands, and reports.
 * Control thread only. 0, or -errno with the queues running again (err: why).
 */
int ublk_dev_pause(struct ublk_dev *dev, int kind, int timeout_ms, char *err);
/* Let the queues go on (they submit what they held). Returns the pause's length in ns. */
uint64_t ublk_dev_resume(struct ublk_dev *dev);

/* user_data of our own SQEs (the engine's carry COW_UD_ENGINE, bit 63) */
#define UBLK_UD_KIND_SHIFT 56
#define UBLK_UD_CMD	(1ULL << UBLK_UD_KIND_SHIFT)	/* ublk command, low 16 bits: tag */
#define UBLK_UD_TGT	(2ULL << UBLK_UD_KIND_SHIFT)	/* target's own, low bits its choice */
#define UBLK_UD_STOP	(3ULL << UBLK_UD_KIND_SHIFT)	/* poll on dev->stop_fd */
#define UBLK_UD_CTL	(4ULL << UBLK_UD_KIND_SHIFT)	/* poll on q->ctl_fd */
#define UBLK_UD_KIND(ud) ((ud) & (0x7fULL << UBLK_UD_KIND_SHIFT))

/* server.c: the life of a device, in the server process */
int ublk_serve(struct ublk_dev *dev, int notify_fd);
int ublk_serve_recover(struct ublk_dev *dev, unsigned id, int notify_fd);
/* Rewrite the device's state file (run dir dev<ID>.json) from dev: after its size changed */
int ublk_dev_write_state(struct ublk_dev *dev);
void ublk_dev_init(struct ublk_dev *dev);

/* tgt_image.c: the cow and raw targets (both on the cowcore engine).
 * $UCOW_RUN_DIR/side-<dev>-<ino>.log: the side log of a --recoverable cow image */
int ublk_sidelog_path(const char *file, char *out, size_t len);

/*
 * json.c: JSON through json-c. Parsing is for hostile input: at most MAX bytes, strict,
 * valid UTF-8, no NUL, nesting at most UBLK_JSON_DEPTH, one object and only white space
 * after it; NULL and a reason in err otherwise. Byte strings (paths, names) are written as
 * "KEY": S when S is valid UTF-8, else as "KEY-hex": the bytes in hex plus "KEY": S with
 * U+FFFD for each invalid byte (for display); ublk_json_get_bytes prefers KEY-hex.
 * The getters check type and range: 0, -ENOENT (missing) or -EINVAL/-ERANGE, err says why
 * (integers: lo > INT64_MIN and hi < INT64_MAX, which is where json-c saturates).
 */
struct json_object;
#define UBLK_JSON_DEPTH 8
bool ublk_utf8_valid(const char *s, size_t len);
struct json_object *ublk_json_parse(const char *buf, size_t len, size_t max, char *err,
				    size_t errlen);
const char *ublk_json_text(struct json_object *o, bool pretty);	/* owned by o */
int ublk_json_add_bytes(struct json_object *o, const char *key, const char *s);
/* a JSON string of S for display (messages): invalid UTF-8 bytes become U+FFFD */
struct json_object *ublk_json_new_text(const char *s);
int ublk_json_get_bytes(struct json_object *o, const char *key, char *out, size_t len,
			char *err, size_t errlen);
int ublk_json_get_int(struct json_object *o, const char *key, int64_t lo, int64_t hi,
		      int64_t *v, char *err, size_t errlen);
int ublk_json_get_bool(struct json_object *o, const char *key, bool *v, char *err,
		       size_t errlen);
/* -EINVAL if O has a key not in KEYS (NULL-terminated) */
int ublk_json_only_keys(struct json_object *o, const char *const *keys, char *err,
			size_t errlen);

/* state.c: /run/ucow/dev<ID>.json, written by the server, read by list/del/recover */
struct ublk_state {
	int id;
	pid_t pid;
	struct ublk_opts o;
	unsigned nr_queues, depth;
	uint64_t size;
	uint64_t flags;		/* negotiated features */
	char sock[108];		/* control socket path */
};
const char *ublk_run_dir(void);	/* $UCOW_RUN_DIR or /run/ucow */
int ublk_run_dir_make(void);
#define UBLK_STATE_MAX (32 << 10)	/* a state file is refused above this many bytes */
int ublk_state_write(const struct ublk_state *st);
/* 0, or -errno with err (UBLK_ERRLEN, may be NULL): "PATH: why" (-ENOENT: no such device) */
int ublk_state_read(int id, struct ublk_state *st, char *err);
/* The file's text (malloc'd, NULL: out of memory) and back: 0 or -EINVAL with err (why) */
char *ublk_state_encode(const struct ublk_state *st);
int ublk_state_decode(const char *buf, size_t len, struct ublk_state *st, char *err,
		      size_t errlen);
void ublk_state_remove(int id);
int ublk_state_ids(int *ids, int max);	/* returns how many, sorted */
void ublk_state_path(int id, const char *suffix, char *out, size_t len);

/*
 * Is FILE served right now? Returns the device id and its control socket path, or -ENOENT.
 * The hook for `ucow info` / `ucow snapshot` on a served image: they send a request with
 * ublk_sock_call() instead of opening the image (which the server holds locked).
 */
int ublk_served_by(const char *file, char *sock, size_t len);
/*
 * The same with the server's whole state: the device serving FILE read-write if there is
 * one, else a read-only one (a snapshot device: st->o.snapshot). Its id, or -ENOENT.
 */
int ublk_server_of(const char *file, struct ublk_state *st);

/* sock.c: the per-device control socket, the server side (online operations) */
int ublk_sock_listen(struct ublk_dev *dev, char *path, size_t len);
void ublk_sock_serve(struct ublk_dev *dev, int lfd);

/* sock_proto.c: its messages, one JSON object per request and per reply (newline-ended) */
#define UBLK_SOCK_REQ_MAX 4096			/* bytes of a request, newline included */
#define UBLK_SOCK_REPLY_MAX (64u << 20)		/* bytes of a reply */
#define UBLK_SNAP_NAME_MAX 128			/* a name: 1..127 bytes, no NUL */
enum { UBLK_OP_PING, UBLK_OP_STATS, UBLK_OP_INFO, UBLK_OP_IMAGE_INFO, UBLK_OP_SNAP_LIST,
       UBLK_OP_SNAP_CREATE, UBLK_OP_SNAP_DELETE, UBLK_OP_SNAP_APPLY, UBLK_OP_FLATTEN,
       UBLK_OP_JOB, UBLK_OP_COMMIT, UBLK_OP_RESIZE, UBLK_OP_NR };
struct ublk_sock_req {
	int op;			/* UBLK_OP_*; -1 if the request was refused */
	char name[UBLK_SNAP_NAME_MAX];	/* snapshot-create/-delete/-apply */
	uint64_t size;		/* resize: the new virtual size in bytes */
};
const char *ublk_sock_op_name(int op);	/* "snapshot-create" ..., NULL if unknown */
/* The request line (malloc'd); NAME only for snapshot-create/-delete/-apply. NULL: err says
 * why */
char *ublk_sock_req_encode(int op, const char *name, char *err, size_t errlen);
/* The request line of an op that takes a size (resize); NULL: err says why */
char *ublk_sock_req_encode_size(int op, uint64_t size, char *err, size_t errlen);
/* 0, or -EINVAL with err: malformed, over-long, unknown op, bad or missing name ... */
int ublk_sock_req_decode(const char *buf, size_t len, struct ublk_sock_req *r, char *err,
			 size_t errlen);
struct json_object *ublk_sock_reply_ok(void);	/* {"ok": true}, to add the payload to */
char *ublk_sock_reply_text(struct json_object *reply);	/* the reply line, malloc'd */
char *ublk_sock_error_text(const char *msg);		/* {"ok": false, "error": MSG} line */
/*
 * A reply line: 0 ("ok": true) or -EPROTO ("ok": false; err holds the server's message)
 * with *reply set (json_object_put it), or -EBADMSG (malformed; err says why).
 */
int ublk_sock_reply_decode(const char *buf, size_t len, struct json_object **reply, char *err,
			   size_t errlen);
const char *ublk_sock_reply_error(struct json_object *reply);	/* "error" of a reply */
void ublk_sock_reply_free(struct json_object *reply);	/* json_object_put */
struct json_object *ublk_snaps_encode(const struct cow_snap_info *v, uint32_t n);
struct json_object *ublk_info_encode(const struct cow_info *in);
/* A reply's "snapshots" (malloc'd; none: 0 and *n 0), "image", "pause-us": 0 or -EBADMSG */
int ublk_parse_snaps(struct json_object *reply, struct cow_snap_info **v, uint32_t *n);
int ublk_parse_info(struct json_object *reply, struct cow_info *in, char *backing, size_t blen);
int ublk_parse_pause_us(struct json_object *reply, uint64_t *us);	/* -ENOENT: none */

/*
 * sock_client.c: what tools call. Sends OP (and NAME, for snapshot-create/-delete) to the
 * server at PATH and waits up to timeout_s for the whole reply. 0: *reply is the reply
 * ("ok": true); -EPROTO: the server refused, *reply holds its "error"
 * (ublk_sock_reply_error); other -errno: no usable answer (*reply NULL; -EBADMSG: malformed
 * or too long, -EAGAIN: timeout). json_object_put(*reply) when done.
 */
int ublk_sock_call(const char *path, int op, const char *name, int timeout_s,
		   struct json_object **reply);
/* The same for an op that takes a size (resize) */
int ublk_sock_call_size(const char *path, int op, uint64_t size, int timeout_s,
			struct json_object **reply);

/* stats */
void ublk_stats_account(struct ublk_queue *q, struct ublk_io *io, int res, uint64_t bytes);
int ublk_stats_format(struct ublk_dev *dev, char *buf, size_t len);	/* the table */
struct json_object *ublk_stats_json(struct ublk_dev *dev);	/* NULL: out of memory */
uint64_t ublk_dev_ios(struct ublk_dev *dev);	/* requests of every kind, every queue */
/* The latency histogram: the bucket of a latency, the upper bound (ns) of a bucket, and the
 * bound of the bucket where fraction p of the counts lies (0 when there are none) */
unsigned ublk_lat_bucket(uint64_t ns);
uint64_t ublk_lat_value(unsigned idx);
uint64_t ublk_lat_percentile(const uint64_t *lat, double p);
uint64_t ublk_now_ns(void);

#endif
