/*
 * Injected I/O errors (faults.h): every failure of a read, write, fsync or punch, of the
 * backend or of cowcore's own metadata I/O, reaches the request (or the snapshot call) that
 * caused it, with its errno (a short write is ENOSPC, as from a full disk); nothing flushed
 * before is lost (crash + reopen + read back + check clean); and the engine keeps serving
 * once the fault is gone. Covered: reads of the backing image (a failed one fails the guest
 * read, never returns garbage), reads cut short (read on, never zeros), copy-on-write fills (backing and SHARED chunk), data writes
 * (new chunk, overwrite, bit-setting), punches, flush fsyncs, journal commit writes and
 * fsyncs, checkpoints (table/bitmap pages, header, syncs), snapshot create and delete; on the
 * sync, io_uring and libaio backends.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "internal.h"

#define UNIT_TMP "/dev/shm"
#include "unit.h"
#include "faults.h"
#include "tags.h"

#define VSIZE (4u << 20)
#define NSECT (VSIZE / 512)
#define CHUNK (64u << 10)

/* The guest's view: cur = the last acknowledged value; alt = failed writes' (may or may not
 * have landed); flushed = at the last successful flush, plus the writes since (crash). */
struct model {
	uint32_t cur[NSECT], flushed[NSECT];
	uint32_t alt_lo[NSECT], alt_hi[NSECT];	/* tags of failed writes since the last good one */
	bool alt_zero[NSECT];			/* a failed write-zeroes or discard since */
	uint32_t since_lo[NSECT], since_hi[NSECT];	/* tags written since the last flush */
	bool since_any[NSECT];
	uint32_t tag;
};

struct fh {
	struct cow_image *img;
	struct cow_backend *inner;
	struct fault_be fb;
	struct fault_tap tap;
	struct cow_ctx *ctx;
	struct model *m;
	const char *path;
	const char *bename;
};

static void fh_open(struct fh *h)
{
	if (cow_open(h->path, NULL, &h->img, err, COW_ERRLEN))
		fail_msg("open %s: %s", h->path, err);
	assert_int_equal(cow_backend_new(h->bename, 32, &h->inner), 0);
	fault_be_init(&h->fb, h->inner);
	assert_int_equal(cow_ctx_new(h->img, &h->fb.be, &h->ctx), 0);
	fault_tap_attach(&h->tap, &h->fb, h->img);
}

static void fh_drop(struct fh *h, bool crash)
{
	h->img->tap = NULL;
	cow_ctx_free(h->ctx);
	cow_backend_free(h->inner);
	if (crash)
		img_abandon(h->img);	/* power loss: nothing more is written */
	else
		assert_int_equal(cow_close(h->img), 0);
	h->img = NULL;
}

/* Make path: an overlay over a raw base whose sector i holds tag i + 1 (base != NULL), or a
 * standalone image; minimum journal (checkpoints come often). */
static void fh_create(struct fh *h, struct model *m, const char *path, const char *base,
		      const char *bename)
{
	struct cow_create_opts o = { .size = VSIZE, .chunk_size = CHUNK, .block_size = 4096,
				     .journal_size = UCOW_MIN_JOURNAL, .backing = base,
				     .backing_fmt = base ? COW_FMT_RAW : 0 };
	memset(m, 0, sizeof(*m));
	m->tag = 1u << 20;
	if (base) {
		uint8_t *b = malloc(VSIZE);
		assert_non_null(b);
		for (uint32_t i = 0; i < NSECT; i++) {
			fill(b + i * 512, i, 1, i + 1);
			m->cur[i] = m->flushed[i] = i + 1;
		}
		int fd = open(P(base), O_RDWR | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, b, VSIZE, 0), VSIZE);
		close(fd);
		free(b);
	}
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
	*h = (struct fh){ .m = m, .path = path, .bename = bename };
	fh_open(h);
}

static void since_add(struct model *m, uint32_t lba, uint32_t tag)
{
	m->since_any[lba] = true;
	if (!tag)
		return;
	if (!m->since_lo[lba] || tag < m->since_lo[lba])
		m->since_lo[lba] = tag;
	if (tag > m->since_hi[lba])
		m->since_hi[lba] = tag;
}

/* Write (or write-zeroes: tag 0) n sectors at lba; returns the request's result. */
static int do_write(struct fh *h, int op, uint32_t lba, uint32_t n)
{
	static uint8_t buf[1 << 20];
	struct model *m = h->m;
	uint32_t tag = op == COW_WRITE ? ++m->tag : 0;
	if (op == COW_WRITE)
		fill(buf, lba, n, tag);
	int r = cow_rw(h->ctx, op, op == COW_WRITE ? buf : NULL, n * 512ull, lba * 512ull, 0);
	for (uint32_t i = lba; i < lba + n; i++) {
		if (!r) {
			m->cur[i] = tag;
			m->alt_lo[i] = m->alt_hi[i] = 0;
			m->alt_zero[i] = false;
		} else if (!tag) {	/* it may have landed, in part; each of them */
			m->alt_zero[i] = true;
		} else {
			if (!m->alt_lo[i])
				m->alt_lo[i] = tag;
			m->alt_hi[i] = tag;
		}
		since_add(m, i, tag);
	}
	return r;
}

static int do_flush(struct fh *h)
{
	struct model *m = h->m;
	int r = cow_rw(h->ctx, COW_FLUSH, NULL, 0, 0, 0);
	if (!r)
		for (uint32_t i = 0; i < NSECT; i++) {
			if (m->alt_hi[i] || m->alt_zero[i])
				continue;	/* unknown until overwritten */
			m->flushed[i] = m->cur[i];
			m->since_lo[i] = m->since_hi[i] = 0;
			m->since_any[i] = false;
		}
	return r;
}

/* The acknowledged value, or one of the failed writes since (each may have landed). */
static bool may_read(const struct model *m, uint32_t lba, uint32_t t)
{
	return t == m->cur[lba] || (t == 0 && m->alt_zero[lba]) ||
	       (m->alt_hi[lba] && t >= m->alt_lo[lba] && t <= m->alt_hi[lba]);
}

/* Every sector reads its acknowledged value (or a failed write's). */
static void verify_cur(struct fh *h, const char *when)
{
	static uint8_t buf[1 << 20];
	struct model *m = h->m;
	for (uint32_t off = 0; off < VSIZE; off += sizeof(buf)) {
		int r = cow_rw(h->ctx, COW_READ, buf, sizeof(buf), off, 0);
		if (r)
			fail_msg("%s: read at %u: %d", when, off, r);
		for (uint32_t i = 0; i < sizeof(buf) / 512; i++) {
			uint32_t lba = off / 512 + i;
			int64_t t = tag_of(buf + i * 512, lba);
			if (t < 0 || !may_read(m, lba, (uint32_t)t))
				fail_msg("%s: sector %u reads %lld, want %u (or %u..%u)", when, lba,
					 (long long)t, m->cur[lba], m->alt_lo[lba], m->alt_hi[lba]);
		}
	}
}

/* After a crash: the value at the last successful flush, or one written since. */
static void verify_crashed(struct fh *h, const char *when)
{
	static uint8_t buf[1 << 20];
	struct model *m = h->m;
	for (uint32_t off = 0; off < VSIZE; off += sizeof(buf)) {
		assert_int_equal(cow_rw(h->ctx, COW_READ, buf, sizeof(buf), off, 0), 0);
		for (uint32_t i = 0; i < sizeof(buf) / 512; i++) {
			uint32_t lba = off / 512 + i;
			int64_t t = tag_of(buf + i * 512, lba);
			bool ok = t >= 0 && ((uint32_t)t == m->flushed[lba] ||
					     (m->since_any[lba] && ((uint32_t)t == 0 ||
					      ((uint32_t)t >= m->since_lo[lba] &&
					       (uint32_t)t <= m->since_hi[lba]))));
			if (!ok)
				fail_msg("%s: after a crash sector %u reads %lld, flushed %u", when,
					 lba, (long long)t, m->flushed[lba]);
			m->cur[lba] = (uint32_t)t;	/* what it is now */
			m->alt_lo[lba] = m->alt_hi[lba] = 0;
			m->alt_zero[lba] = false;
			m->flushed[lba] = (uint32_t)t;
			m->since_lo[lba] = m->since_hi[lba] = 0;
			m->since_any[lba] = false;
		}
	}
}

static void check_clean(const char *path, const char *when)
{
	struct cow_image *img;
	struct cow_check_result cr;
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		     COW_ERRLEN))
		fail_msg("%s: open for check: %s", when, err);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict == 2 || (cr.verdict == 3 && !cr.reclaimable))
		fail_msg("%s: check verdict %d: %s", when, cr.verdict, cr.first_problem);
	cow_close(img);
}

/*
 * The end of every test: the fault is gone, the engine serves (a write and a flush), then
 * power fails: the reopened image holds every flushed write, checks clean, and takes writes;
 * then a clean close, a reopen, and the acknowledged values.
 */
static void recover_and_verify(struct fh *h, const char *when)
{
	fault_clear(&h->fb);
	if (!h->img->read_only) {
		if (do_write(h, COW_WRITE, 8, 16))
			fail_msg("%s: a write after the fault: %s", when, cow_errmsg(h->img));
		if (do_flush(h))
			fail_msg("%s: a flush after the fault: %s", when, cow_errmsg(h->img));
	}
	verify_cur(h, when);
	fh_drop(h, true);
	check_clean(h->path, when);
	fh_open(h);
	verify_crashed(h, when);
	assert_int_equal(do_write(h, COW_WRITE, 100, 9), 0);
	assert_int_equal(do_flush(h), 0);
	fh_drop(h, false);
	check_clean(h->path, when);
	fh_open(h);
	verify_cur(h, when);
	fh_drop(h, false);
}

/* ---- reads of the backing image ------------------------------------------------------------ */

static void test_backing_read(void **state)
{
	static struct model m;
	struct fh h;
	static uint8_t buf[CHUNK];
	fh_create(&h, &m, P("br.img"), "br.raw", "sync");
	int bfd = h.img->backing->fd;
	/* a chunk with blocks here and there: block 1 of chunk 2 written */
	assert_int_equal(do_write(&h, COW_WRITE, 2 * 128 + 8, 8), 0);
	const int errs[] = { -EIO, -ENOSPC, -EBADMSG };
	for (int k = 0; k < 3; k++) {
		/* an unallocated chunk (all from the backing) and a mixed one */
		for (uint32_t c = 1; c <= 2; c++) {
			struct fault *f = fault_add(&h.fb, COW_IO_READ, bfd, 0, 0, 0, 1, errs[k]);
			int r = cow_rw(h.ctx, COW_READ, buf, CHUNK, c * CHUNK, 0);
			if (r != errs[k])
				fail_msg("a failed backing read gave the guest read %d, want %d", r,
					 errs[k]);
			assert_int_equal(f->hits, 1);
			fault_clear(&h.fb);
		}
	}
	/* by range: only reads of the base's second chunk fail; the first reads fine */
	fault_add(&h.fb, COW_IO_READ, bfd, CHUNK, 2 * CHUNK, 0, 0, -EIO);
	assert_int_equal(cow_rw(h.ctx, COW_READ, buf, CHUNK, 0, 0), 0);
	assert_int_equal(cow_rw(h.ctx, COW_READ, buf, 4096, CHUNK + 8192, 0), -EIO);
	/* one sector of the range in a larger read fails it all */
	assert_int_equal(cow_rw(h.ctx, COW_READ, buf, CHUNK, CHUNK / 2, 0), -EIO);
	fault_clear(&h.fb);
	verify_cur(&h, "backing read");
	recover_and_verify(&h, "backing read");
}

/* Reads cut short (whole sectors, not at the end of the file), of this image and of the
 * backing image, every one of them: the engine reads on, never zeros in place of data. */
static void short_reads(const char *bename)
{
	static struct model m;
	static uint8_t buf[4 * CHUNK];
	struct fh h;
	fh_create(&h, &m, P("sr.img"), "sr.raw", bename);
	for (uint32_t c = 0; c < 8; c++)	/* chunks here, in part, and from the base */
		assert_int_equal(do_write(&h, COW_WRITE, c * 128 + 16 * (c % 4), 32 + 8 * c), 0);
	assert_int_equal(do_flush(&h), 0);
	struct fault *fi = fault_add(&h.fb, COW_IO_READ, h.img->fd, 0, 0, 0, 0, FAULT_SHORT);
	struct fault *fb = fault_add(&h.fb, COW_IO_READ, h.img->backing->fd, 0, 0, 0, 0,
				     FAULT_SHORT);
	verify_cur(&h, "short reads");
	/* a partial write into a fresh chunk fills from a base read cut short */
	assert_int_equal(do_write(&h, COW_WRITE, 20 * 128 + 3, 2), 0);
	assert_int_equal(cow_rw(h.ctx, COW_READ, buf, sizeof(buf), 0, 0), 0);
	verify_cur(&h, "short reads");
	if (!fi->hits || !fb->hits)
		fail_msg("short reads: %u of the image, %u of the base", fi->hits, fb->hits);
	recover_and_verify(&h, "short reads");
}

static void test_short_read_sync(void **state) { short_reads("sync"); }
static void test_short_read_uring(void **state) { short_reads("uring"); }

/* ---- copy-on-write fills ----------------------------------------------------------------- */

static void test_cow_fill(void **state)
{
	static struct model m;
	struct fh h;
	fh_create(&h, &m, P("cf.img"), "cf.raw", "sync");
	int bfd = h.img->backing->fd;
	/* a partial block into a fresh chunk: the rest of the block comes from the base */
	fault_add(&h.fb, COW_IO_READ, bfd, 0, 0, 0, 1, -EIO);
	assert_int_equal(do_write(&h, COW_WRITE, 3 * 128 + 1, 2), -EIO);
	assert_int_equal(h.fb.hits, 1);
	fault_clear(&h.fb);
	/* nothing was published: the chunk still reads from the base */
	verify_cur(&h, "failed backing fill");
	assert_int_equal(do_write(&h, COW_WRITE, 3 * 128 + 1, 2), 0);
	/* a SHARED chunk: a snapshot, then a partial write copies the other blocks over */
	assert_int_equal(do_write(&h, COW_WRITE, 5 * 128, 128), 0);
	assert_int_equal(do_flush(&h), 0);
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	struct fault *f = fault_add(&h.fb, COW_IO_READ, h.img->fd, 0, 0, 0, 1, -EIO);
	assert_int_equal(do_write(&h, COW_WRITE, 5 * 128 + 17, 3), -EIO);
	assert_int_equal(f->hits, 1);
	fault_clear(&h.fb);
	/* the copies' writes into the new chunk */
	fault_add(&h.fb, COW_IO_WRITE, h.img->fd, 0, 0, 0, 1, -ENOSPC);
	assert_int_equal(do_write(&h, COW_WRITE, 5 * 128 + 17, 3), -ENOSPC);
	fault_clear(&h.fb);
	verify_cur(&h, "failed shared copy");
	recover_and_verify(&h, "cow fill");
}

/* A chunk a failed operation gave back holds what it wrote before failing; a new chunk that
 * stands for a ZERO entry must still read as zeros wherever the write did not cover it (the
 * engine punches it first). */
static void test_zero_reuse(void **state)
{
	static struct model m;
	struct fh h;
	fh_create(&h, &m, P("zr.img"), "zr.raw", "sync");
	/* chunk 5, whole, in a snapshot: SHARED */
	assert_int_equal(do_write(&h, COW_WRITE, 5 * 128, 128), 0);
	assert_int_equal(do_flush(&h), 0);
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	h.img->copy_shared = true;	/* the copy path (no underlay) */
	/* a block into it: the new chunk takes the data, then the copy of the rest fails; the
	 * op gives the chunk back with that block written */
	struct fault *f = fault_add(&h.fb, COW_IO_WRITE, h.img->fd, 0, 0, 1, 1, -EIO);
	assert_int_equal(do_write(&h, COW_WRITE, 5 * 128, 8), -EIO);
	assert_int_equal(f->hits, 1);
	fault_clear(&h.fb);
	/* chunk 9 discarded whole over the base: ZERO; a block into it takes the chunk back */
	assert_int_equal(do_write(&h, COW_DISCARD, 9 * 128, 128), 0);
	assert_int_equal(do_write(&h, COW_WRITE, 9 * 128 + 64, 8), 0);
	verify_cur(&h, "a reused chunk under a ZERO entry");
	recover_and_verify(&h, "zero reuse");
}

/* A recoverable server's side log when a header write fails: the disk may hold either
 * header generation, and the records after it go to one run of the log only. The image
 * turns write-through (L4), so a process death right after loses no acknowledged write. */
static void test_sidelog_header_fail(void **state)
{
	struct cow_create_opts o = { .size = 4 << 20, .chunk_size = 64 << 10, .block_size = 4096 };
	char data[4096], got[4096];
	int status;
	memset(data, 0x6b, sizeof(data));
	unlink(P("hf.img"));
	if (cow_create(P("hf.img"), &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
	pid_t pid = fork();
	if (!pid) {
		struct cow_backend *inner;
		struct cow_image *img;
		struct cow_ctx *ctx;
		static struct fault_be fb;
		static struct fault_tap t;
		int sfd = open(P("hf.log"), O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (sfd < 0 || cow_open(P("hf.img"), &(struct cow_open_opts){
				.flags = COW_OPEN_SIDELOG, .sidelog_fd = sfd }, &img, err, COW_ERRLEN))
			_exit(2);
		if (cow_backend_new("sync", 8, &inner))
			_exit(2);
		fault_be_init(&fb, inner);
		if (cow_ctx_new(img, &fb.be, &ctx))
			_exit(2);
		fault_tap_attach(&t, &fb, img);
		/* the header slots: the snapshot's first checkpoint cannot switch its header */
		fault_add(&fb, COW_IO_WRITE, img->fd, 0, UCOW_HDR_SIZE * UCOW_HDR_SLOTS, 0, 1, -EIO);
		if (cow_snapshot_create(img, "s") != -EIO || !fb.hits)
			_exit(3);
		fault_clear(&fb);
		if (cow_rw(ctx, COW_WRITE, data, sizeof(data), 256 << 10, 0))
			_exit(4);
		_exit(0);	/* dies: no flush, no close */
	}
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* the next server opens the image with the same side log */
	struct cow_backend *be;
	struct cow_image *img;
	struct cow_ctx *ctx;
	int sfd = open(P("hf.log"), O_RDWR);
	assert_true(sfd >= 0);
	if (cow_open(P("hf.img"), &(struct cow_open_opts){ .flags = COW_OPEN_SIDELOG,
		     .sidelog_fd = sfd }, &img, err, COW_ERRLEN))
		fail_msg("reopen: %s", err);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, got, sizeof(got), 256 << 10, 0), 0);
	if (memcmp(got, data, sizeof(data)))
		fail_msg("a write acknowledged after a failed header write was lost with the process");
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_close(img), 0);
	close(sfd);
}

/* ---- data writes --------------------------------------------------------------------------- */

static void data_writes(const char *bename)
{
	static struct model m;
	struct fh h;
	const int errs[] = { -EIO, -ENOSPC, FAULT_SHORT };
	fh_create(&h, &m, P("dw.img"), "dw.raw", bename);
	int fd = h.img->fd;
	for (int k = 0; k < 3; k++) {
		int want = errs[k] == FAULT_SHORT ? -ENOSPC : errs[k];
		uint32_t c = 1 + k * 4;
		/* a fresh chunk (chunk op) */
		fault_add(&h.fb, COW_IO_WRITE, fd, 0, 0, 0, 1, errs[k]);
		assert_int_equal(do_write(&h, COW_WRITE, c * 128 + 8, 8), want);
		fault_clear(&h.fb);
		assert_int_equal(do_write(&h, COW_WRITE, c * 128 + 8, 8), 0);
		/* an overwrite (fast path) */
		fault_add(&h.fb, COW_IO_WRITE, fd, 0, 0, 0, 1, errs[k]);
		assert_int_equal(do_write(&h, COW_WRITE, c * 128 + 8, 8), want);
		fault_clear(&h.fb);
		/* whole new blocks of an allocated chunk (bit-setting write) */
		fault_add(&h.fb, COW_IO_WRITE, fd, 0, 0, 0, 1, errs[k]);
		assert_int_equal(do_write(&h, COW_WRITE, c * 128 + 32, 16), want);
		fault_clear(&h.fb);
		/* a write of two chunks, the second one's I/O fails */
		fault_add(&h.fb, COW_IO_WRITE, fd, 0, 0, 1, 1, errs[k]);
		assert_int_equal(do_write(&h, COW_WRITE, (c + 1) * 128 + 64, 128), want);
		fault_clear(&h.fb);
		verify_cur(&h, "failed data writes");
		assert_int_equal(do_flush(&h), 0);
	}
	recover_and_verify(&h, "data writes");
}

static void test_data_write_sync(void **state) { data_writes("sync"); }
static void test_data_write_uring(void **state) { data_writes("uring"); }
static void test_data_write_aio(void **state) { data_writes("aio"); }

/* A short write then ENOSPC (a disk filling up): both writes say ENOSPC, not EIO. */
static void test_short_then_enospc(void **state)
{
	static struct model m;
	struct fh h;
	fh_create(&h, &m, P("sh.img"), NULL, "uring");
	assert_int_equal(do_write(&h, COW_WRITE, 0, 128), 0);	/* allocated: fast path */
	fault_add(&h.fb, COW_IO_WRITE, h.img->fd, 0, 0, 0, 1, FAULT_SHORT);
	fault_add(&h.fb, COW_IO_WRITE, h.img->fd, 0, 0, 0, 1, -ENOSPC);
	int r1 = do_write(&h, COW_WRITE, 0, 64), r2 = do_write(&h, COW_WRITE, 64, 64);
	if (r1 != -ENOSPC || r2 != -ENOSPC)
		fail_msg("a short write gave %d (%s), then ENOSPC gave %d; want %d twice", r1,
			 strerror(-r1), r2, -ENOSPC);
	assert_int_equal(h.fb.hits, 2);
	/* a metadata write that runs out of space: the flush says so too */
	fault_clear(&h.fb);
	assert_int_equal(do_write(&h, COW_WRITE, 300, 8), 0);
	fault_add(&h.fb, COW_IO_WRITE, h.img->fd, h.img->hdr.journal_offset,
		  h.img->hdr.journal_offset + h.img->hdr.journal_size, 0, 1, FAULT_SHORT);
	assert_int_equal(do_flush(&h), -ENOSPC);
	recover_and_verify(&h, "short write");
}

/* ---- punches ------------------------------------------------------------------------------- */

static void test_punch(void **state)
{
	static struct model m;
	struct fh h;
	fh_create(&h, &m, P("pu.img"), "pu.raw", "sync");
	int fd = h.img->fd;
	assert_int_equal(do_write(&h, COW_WRITE, 0, 512), 0);
	assert_int_equal(do_flush(&h), 0);
	/* write-zeroes over whole blocks of a chunk: the blocks are punched */
	fault_add(&h.fb, COW_IO_PUNCH, fd, 0, 0, 0, 1, -EIO);
	assert_int_equal(do_write(&h, COW_WRITE_ZEROES, 8, 16), -EIO);
	fault_clear(&h.fb);
	verify_cur(&h, "failed block punch");
	/* a whole-chunk discard: unmapped, then punched */
	fault_add(&h.fb, COW_IO_PUNCH, fd, 0, 0, 0, 1, -EOPNOTSUPP);
	assert_int_equal(do_write(&h, COW_DISCARD, 128, 128), -EOPNOTSUPP);
	fault_clear(&h.fb);
	/* a write into a ZERO chunk (the discard above, over a backing image) punches the new
	 * chunk before it writes */
	assert_int_equal(do_write(&h, COW_DISCARD, 256, 128), 0);
	fault_add(&h.fb, COW_IO_PUNCH, fd, 0, 0, 0, 1, -EIO);
	assert_int_equal(do_write(&h, COW_WRITE, 256 + 8, 8), -EIO);
	fault_clear(&h.fb);
	verify_cur(&h, "failed punches");
	recover_and_verify(&h, "punch");
}

/* ---- flush: the data fsync, the journal write, the commit fsync ------------------------- */

static void test_flush(void **state)
{
	static struct model m;
	struct fh h;
	fh_create(&h, &m, P("fl.img"), NULL, "sync");
	int fd = h.img->fd;
	uint64_t jo = h.img->hdr.journal_offset, je = jo + h.img->hdr.journal_size;
	struct { int op; uint64_t lo, hi; unsigned skip; int err; const char *what; } cases[] = {
		{ COW_IO_FSYNC, 0, 0, 0, -EIO, "the data fsync" },
		{ COW_IO_WRITE, jo, je, 0, -EIO, "the journal write" },
		{ COW_IO_WRITE, jo, je, 0, FAULT_SHORT, "a short journal write" },
		{ COW_IO_FSYNC, 0, 0, 1, -EIO, "the commit fsync" },
	};
	for (unsigned k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		int want = cases[k].err == FAULT_SHORT ? -ENOSPC : cases[k].err;
		for (int i = 0; i < 6; i++)	/* new chunks: journal records */
			assert_int_equal(do_write(&h, COW_WRITE, (k * 6 + i) * 128 + 8, 8), 0);
		struct fault *f = fault_add(&h.fb, cases[k].op, fd, cases[k].lo, cases[k].hi,
					    cases[k].skip, 1, cases[k].err);
		int r = do_flush(&h);
		if (r != want)
			fail_msg("a flush whose %s failed: %d, want %d", cases[k].what, r, want);
		assert_int_equal(f->hits, 1);
		fault_clear(&h.fb);
		/* the engine goes on: more writes, a flush that works, then power loss: every
		 * write the good flush covered is there */
		assert_int_equal(do_write(&h, COW_WRITE, (k * 6 + 5) * 128 + 64, 8), 0);
		assert_int_equal(do_write(&h, COW_WRITE, 40 * 128 + k * 8, 8), 0);
		assert_int_equal(do_flush(&h), 0);
		fh_drop(&h, true);
		check_clean(h.path, cases[k].what);
		fh_open(&h);
		verify_crashed(&h, cases[k].what);
	}
	recover_and_verify(&h, "flush");
}

/* ---- checkpoints: table and bitmap pages, syncs, the header (metadata I/O, the tap) ----- */

static void test_checkpoint(void **state)
{
	static struct model m;
	struct fh h;
	fh_create(&h, &m, P("cp.img"), NULL, "sync");
	int fd = h.img->fd;
	uint64_t to = h.img->hdr.table_offset, bo = h.img->hdr.bitmap_offset;
	struct { int op; uint64_t lo, hi; unsigned skip; int err; const char *what; } cases[] = {
		{ COW_IO_WRITE, to, to + h.img->hdr.table_size, 0, -EIO, "a table page" },
		{ COW_IO_WRITE, bo, bo + h.img->hdr.bitmap_size, 0, -ENOSPC, "a bitmap page" },
		{ COW_IO_WRITE, 0, 8192, 0, -EIO, "the header" },
		{ COW_IO_FSYNC, 0, 0, 3, -EIO, "a checkpoint sync" },
	};
	for (unsigned k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		uint64_t cps;
		struct cow_stats st;
		/* more records than the minimum journal holds: the flush checkpoints */
		for (int i = 0; i < 700; i++)
			assert_int_equal(do_write(&h, COW_WRITE, (uint32_t)(i % 60) * 128 +
						  (uint32_t)(i / 60) * 8, 8), 0);
		cow_get_stats(h.img, &st);
		cps = st.checkpoints;
		struct fault *f = fault_add(&h.fb, cases[k].op, fd, cases[k].lo, cases[k].hi,
					    cases[k].skip, 1, cases[k].err);
		int r = do_flush(&h);
		if (r != cases[k].err)
			fail_msg("a flush whose checkpoint's %s failed: %d, want %d", cases[k].what,
				 r, cases[k].err);
		assert_int_equal(f->hits, 1);
		cow_get_stats(h.img, &st);
		assert_int_equal(st.checkpoints, cps);
		fault_clear(&h.fb);
		assert_int_equal(do_write(&h, COW_WRITE, 62 * 128 + k * 8, 8), 0);
		if (do_flush(&h))
			fail_msg("%s: the flush after the fault: %s", cases[k].what,
				 cow_errmsg(h.img));
		fh_drop(&h, true);
		check_clean(h.path, cases[k].what);
		fh_open(&h);
		verify_crashed(&h, cases[k].what);
		for (uint32_t i = 0; i < 60; i++)	/* fresh chunks next round */
			assert_int_equal(do_write(&h, COW_DISCARD, i * 128, 128), 0);
		assert_int_equal(do_flush(&h), 0);
	}
	recover_and_verify(&h, "checkpoint");
}

/*
 * A header write that fails, then one that tears (its first sector is lost): the header
 * in force (the snapshot create's) must survive both, so the second try must go to the slot
 * the first one failed on, never over the last good header.
 */
static void test_header_slots(void **state)
{
	static struct model m;
	struct fh h;
	struct cow_snap_info *si;
	uint32_t ns;
	fh_create(&h, &m, P("hs.img"), NULL, "sync");
	assert_int_equal(do_write(&h, COW_WRITE, 0, 1024), 0);
	assert_int_equal(do_flush(&h), 0);
	assert_int_equal(cow_snapshot_create(h.img, "s"), 0);
	for (int i = 0; i < 700; i++)	/* the next flush checkpoints */
		assert_int_equal(do_write(&h, COW_WRITE, (uint32_t)(i % 60) * 128 +
					  (uint32_t)(i / 60) * 8, 8), 0);
	fault_add(&h.fb, COW_IO_WRITE, h.img->fd, 0, 2 * UCOW_HDR_SIZE, 0, 1, -EIO);
	fault_add(&h.fb, COW_IO_WRITE, h.img->fd, 0, 2 * UCOW_HDR_SIZE, 0, 1, FAULT_TORN);
	assert_int_equal(do_flush(&h), -EIO);
	assert_int_equal(do_flush(&h), -EIO);
	assert_int_equal(h.fb.hits, 2);
	fault_clear(&h.fb);
	fh_drop(&h, true);
	check_clean(h.path, "torn header");
	fh_open(&h);
	verify_crashed(&h, "torn header");
	assert_int_equal(cow_snapshot_list(h.img, &si, &ns), 0);
	free(si);
	if (ns != 1)
		fail_msg("a failed then a torn header write lost the snapshot (%u left)", ns);
	fh_drop(&h, false);
	fh_open(&h);
	recover_and_verify(&h, "torn header");
}

/* ---- snapshot create and delete: each metadata I/O in turn fails --------------------------- */

static void snap_op(bool create)
{
	static struct model m;
	static uint8_t buf[VSIZE];
	struct fh h;
	int n;
	for (n = 0; n < 100; n++) {
		fh_create(&h, &m, P("sn.img"), NULL, "sync");
		assert_int_equal(do_write(&h, COW_WRITE, 0, 2048), 0);
		if (!create)
			assert_int_equal(cow_snapshot_create(h.img, "old"), 0);
		assert_int_equal(do_write(&h, COW_WRITE, 1024, 2048), 0);
		assert_int_equal(do_flush(&h), 0);
		/* the n-th metadata write, sync, punch or size change fails */
		fault_add(&h.fb, FAULT_ANY, h.img->fd, 0, 0, (unsigned)n, 1, -EIO);
		int r = create ? cow_snapshot_create(h.img, "new") : cow_snapshot_delete(h.img, "old");
		bool hit = h.fb.hits > 0;
		fault_clear(&h.fb);
		if (!hit) {
			assert_int_equal(r, 0);
			fh_drop(&h, false);
			break;
		}
		/* a punch of space the operation freed may fail: the space stays in use, the
		 * operation is done (cow_reclaim's contract) */
		if (r != -EIO && !(r == 0 && h.fb.last_op == COW_IO_PUNCH))
			fail_msg("%s: metadata I/O %d (op %d) failed, the call returned %d",
				 create ? "create" : "delete", n, h.fb.last_op, r);
		/* the engine serves on (or has turned read-only: never silently wrong) */
		if (!h.img->read_only) {
			assert_int_equal(do_write(&h, COW_WRITE, 4000, 8), 0);
			assert_int_equal(do_flush(&h), 0);
		}
		verify_cur(&h, "after a failed snapshot op");
		/* power loss: the snapshot is there or not, whole */
		print_message("%s: metadata I/O %d failed\n", create ? "create" : "delete", n);
		fh_drop(&h, true);
		check_clean(h.path, "failed snapshot op");
		fh_open(&h);
		verify_crashed(&h, "failed snapshot op");
		struct cow_snap_info *si;
		uint32_t ns;
		assert_int_equal(cow_snapshot_list(h.img, &si, &ns), 0);
		free(si);
		fh_drop(&h, false);
		if (ns) {	/* a snapshot there holds the content of its time */
			struct cow_image *img;
			struct cow_backend *be;
			struct cow_ctx *ctx;
			const char *name = create ? "new" : "old";
			assert_int_equal(ns, 1);
			if (cow_open(h.path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY,
				     .snapshot = name }, &img, err, COW_ERRLEN))
				fail_msg("snapshot %s after failure %d: %s", name, n, err);
			assert_int_equal(cow_backend_new("sync", 8, &be), 0);
			assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
			assert_int_equal(cow_rw(ctx, COW_READ, buf, VSIZE, 0, 0), 0);
			for (uint32_t i = 0; i < NSECT; i++) {
				int64_t t = tag_of(buf + i * 512, i);
				bool ok = create ? (i >= 1024 && i < 3072 ? t > (1 << 20) + 1 :
						    i < 1024 ? t == (1 << 20) + 1 : t == 0)
						 : (i < 2048 ? t == (1 << 20) + 1 : t == 0);
				if (!ok)
					fail_msg("snapshot %s, failure %d: sector %u reads %lld", name,
						 n, i, (long long)t);
			}
			cow_ctx_free(ctx);
			cow_backend_free(be);
			cow_close(img);
		}
	}
	assert_true(n > 3);
	fh_open(&h);
	recover_and_verify(&h, "snapshot op");
}

static void test_snapshot_create(void **state) { snap_op(true); }
static void test_snapshot_delete(void **state) { snap_op(false); }

/* ---- a storm: random requests, random faults, crashes ------------------------------------- */

static uint64_t xs(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}
#define RND() xs(&x)

static void storm(const char *bename, uint64_t seed)
{
	static struct model m;
	struct fh h;
	uint64_t x = getenv("UCOW_FAULT_SEED") ? strtoull(getenv("UCOW_FAULT_SEED"), NULL, 0) : seed;
	unsigned fails = 0;
	fh_create(&h, &m, P("st.img"), "st.raw", bename);
	for (int i = 0; i < 600; i++) {
		if (RND() % 4 == 0) {
			static const int ops[] = { COW_IO_READ, COW_IO_WRITE, COW_IO_FSYNC,
						   COW_IO_PUNCH };
			static const int errs[] = { -EIO, -ENOSPC, FAULT_SHORT };
			int op = ops[RND() % 4];
			int fd = RND() % 3 == 0 && op == COW_IO_READ ? h.img->backing->fd : h.img->fd;
			fault_add(&h.fb, op, fd, 0, 0, (unsigned)(RND() % 4), 1, errs[RND() % 3]);
		}
		uint32_t lba = (uint32_t)(RND() % NSECT), n = 1 + (uint32_t)(RND() % 256);
		if (lba + n > NSECT)
			n = NSECT - lba;
		uint64_t what = RND() % 100;
		int r;
		if (what < 55) {
			r = do_write(&h, COW_WRITE, lba, n);
		} else if (what < 65) {
			r = do_write(&h, what < 60 ? COW_DISCARD : COW_WRITE_ZEROES, lba, n);
		} else if (what < 85) {
			r = do_flush(&h);
		} else if (what < 97) {
			static uint8_t buf[256 * 512];
			r = cow_rw(h.ctx, COW_READ, buf, n * 512ull, lba * 512ull, 0);
			for (uint32_t k = 0; !r && k < n; k++) {
				int64_t t = tag_of(buf + k * 512, lba + k);
				if (t < 0 || !may_read(&m, lba + k, (uint32_t)t))
					fail_msg("storm %d: sector %u reads %lld, want %u", i, lba + k,
						 (long long)t, m.cur[lba + k]);
			}
		} else {
			fault_clear(&h.fb);
			fh_drop(&h, true);
			check_clean(h.path, "storm");
			fh_open(&h);
			verify_crashed(&h, "storm");
			r = 0;
		}
		if (r) {
			fails++;
			if (r != -EIO && r != -ENOSPC)
				fail_msg("storm %d: error %d", i, r);
		}
		if (h.fb.nf > 2)
			fault_clear(&h.fb);
		if (h.img->read_only)
			fail_msg("storm %d: the image turned read-only: %s", i, cow_errmsg(h.img));
	}
	print_message("storm (%s, seed %llu; UCOW_FAULT_SEED=N for another): %u requests failed\n",
		      bename, (unsigned long long)(getenv("UCOW_FAULT_SEED") ?
		      strtoull(getenv("UCOW_FAULT_SEED"), NULL, 0) : seed), fails);
	assert_true(fails > 20);
	recover_and_verify(&h, "storm");
}

static void test_storm_sync(void **state) { storm("sync", 0x1234567887654321ull); }
static void test_storm_uring(void **state) { storm("uring", 0xfeedfacecafebeefull); }
static void test_storm_aio(void **state) { storm("aio", 0x0123456789abcdefull); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backing_read),
		cmocka_unit_test(test_short_read_sync),
		cmocka_unit_test(test_short_read_uring),
		cmocka_unit_test(test_cow_fill),
		cmocka_unit_test(test_zero_reuse),
		cmocka_unit_test(test_sidelog_header_fail),
		cmocka_unit_test(test_data_write_sync),
		cmocka_unit_test(test_data_write_uring),
		cmocka_unit_test(test_data_write_aio),
		cmocka_unit_test(test_short_then_enospc),
		cmocka_unit_test(test_punch),
		cmocka_unit_test(test_flush),
		cmocka_unit_test(test_checkpoint),
		cmocka_unit_test(test_header_slots),
		cmocka_unit_test(test_snapshot_create),
		cmocka_unit_test(test_snapshot_delete),
		cmocka_unit_test(test_storm_sync),
		cmocka_unit_test(test_storm_uring),
		cmocka_unit_test(test_storm_aio),
	};
	return UNIT_RUN(tests);
}
