/*
 * Hostile images (issue 11): each one is refused cleanly (-EUCLEAN or -EINVAL, one line
 * naming the file and the problem), in bounded time and memory, by open and by cow_check.
 * A watchdog (alarm) turns a hang into a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

#include "unit.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void mk(const char *path, uint64_t size, uint32_t chunk, const char *backing)
{
	struct cow_create_opts o = { .size = size, .chunk_size = chunk, .block_size = 4096,
				     .backing = backing, .backing_fmt = backing ? COW_FMT_RAW : 0 };
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
}

static struct cow_image *open_img(const char *path, unsigned flags)
{
	struct cow_image *img;
	if (cow_open(path, &(struct cow_open_opts){ .flags = flags }, &img, err, COW_ERRLEN))
		fail_msg("open %s: %s", path, err);
	return img;
}

static void wr(struct cow_image *img, uint8_t pat, uint64_t off, uint64_t len)
{
	struct cow_backend *be;
	struct cow_ctx *ctx;
	char *b = malloc(len);
	memset(b, pat, len);
	assert_int_equal(cow_backend_new("sync", 16, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_WRITE, b, len, off, 0), 0);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	free(b);
}

/* The open must fail with want, its one-line error naming the file and saying what. */
static void expect_refused(const char *path, unsigned flags, int want, const char *what)
{
	struct cow_image *img = NULL;
	err[0] = 0;
	int r = cow_open(path, &(struct cow_open_opts){ .flags = flags }, &img, err, COW_ERRLEN);
	if (!r)
		cow_close(img);
	if (r != want)
		fail_msg("open %s: %d, expected %d (%s)", path, r, want, err);
	if (!strstr(err, path) || !strstr(err, what) || strchr(err, '\n'))
		fail_msg("open %s: error '%s' does not name the file and '%s'", path, err, what);
}

/* cow_check on an image whose open in check mode succeeds: it must count corruption. */
static void expect_check_corrupt(const char *path, const char *what)
{
	struct cow_image *img;
	struct cow_check_result cr;
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_CHECK }, &img, err,
		     COW_ERRLEN))
		fail_msg("open for check %s: %s", path, err);
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict != 2 || !cr.corruptions || !strstr(cr.first_problem, what))
		fail_msg("check %s: verdict %d, %llu corruptions, '%s' (expected '%s')", path,
			 cr.verdict, (unsigned long long)cr.corruptions, cr.first_problem, what);
	cow_close(img);
}

/* Defect 6: a FIFO as a backing file (or as the image) must not block the open. */
static void test_fifo_backing(void **state)
{
	(void)state;
	alarm(10);	/* a blocking open() fails the test instead of hanging it */
	double t0 = now();
	/* create refuses a FIFO backing file; one replaced by a FIFO later is refused at open */
	unlink(P("fifo"));
	assert_int_equal(mkfifo(P("fifo"), 0600), 0);
	struct cow_create_opts o = { .size = 1 << 20, .chunk_size = 64 << 10,
				     .backing = "fifo", .backing_fmt = COW_FMT_RAW };
	assert_int_equal(cow_create(P("ov0.img"), &o, err, COW_ERRLEN), -EINVAL);
	assert_non_null(strstr(err, "not a regular file or block device"));
	unlink(P("fifo"));
	close(open(P("fifo"), O_CREAT | O_WRONLY, 0600));
	mk(P("ov.img"), 1 << 20, 64 << 10, "fifo");
	unlink(P("fifo"));
	assert_int_equal(mkfifo(P("fifo"), 0600), 0);
	struct cow_image *img = NULL;
	err[0] = 0;
	int r = cow_open(P("ov.img"), &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img,
			 err, COW_ERRLEN);
	if (!r)
		cow_close(img);
	assert_int_equal(r, -EINVAL);
	if (!strstr(err, "fifo") || !strstr(err, "not a regular file or block device"))
		fail_msg("error '%s'", err);
	expect_refused(P("fifo"), COW_OPEN_RDONLY, -EINVAL, "not a regular file or block device");
	expect_refused(P("fifo"), 0, -EINVAL, "not a regular file or block device");
	alarm(0);
	assert_true(now() - t0 < 2);
}

/* An image left dirty by a process that died (no close): a side log may be folded into it. */
static void mk_dirty(const char *path, uint64_t size)
{
	mk(path, size, 64 << 10, NULL);
	struct cow_image *img = open_img(path, 0);
	wr(img, 7, 0, 8192);
	img_abandon(img);	/* closed, nothing written on the way out: DIRTY stays set */
}

/* Defect 9: a 64 GiB sparse side log is refused at once, not read to its end. */
static void test_sidelog_huge(void **state)
{
	(void)state;
	mk_dirty(P("sl.img"), 4 << 20);
	unlink(P("side.log"));
	int sfd = open(P("side.log"), O_RDWR | O_CREAT, 0600);
	assert_true(sfd >= 0);
	assert_int_equal(ftruncate(sfd, 64ull << 30), 0);
	alarm(20);
	double t0 = now();
	struct cow_image *img = NULL;
	int r = cow_open(P("sl.img"), &(struct cow_open_opts){ .flags = COW_OPEN_SIDELOG,
			 .sidelog_fd = sfd }, &img, err, COW_ERRLEN);
	if (!r)
		cow_close(img);
	alarm(0);
	if (r != -EUCLEAN || !strstr(err, P("sl.img")) || !strstr(err, "side log"))
		fail_msg("open with a 64 GiB side log: %d '%s'", r, err);
	assert_true(now() - t0 < 2);
	/* within the bound, a sparse log whose holes hold no run folds nothing, quickly */
	assert_int_equal(ftruncate(sfd, 0), 0);
	assert_int_equal(ftruncate(sfd, 1 << 20), 0);
	assert_int_equal(pwrite(sfd, "x", 1, 600 << 10), 1);
	t0 = now();
	if (cow_open(P("sl.img"), &(struct cow_open_opts){ .flags = COW_OPEN_SIDELOG,
		     .sidelog_fd = sfd }, &img, err, COW_ERRLEN))
		fail_msg("open with a small sparse side log: %s", err);
	assert_true(now() - t0 < 2);
	assert_int_equal(cow_close(img), 0);
	close(sfd);
}

static long peak_rss_mib(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss / 1024;
}

/* The image's header (as the open decoded it). */
static struct ucow_hdr hdr_of(const char *path)
{
	struct cow_image *img = open_img(path, COW_OPEN_RDONLY);
	struct ucow_hdr h = img->hdr;
	cow_close(img);
	return h;
}

static void set_entry(const char *path, const struct ucow_hdr *h, uint64_t c, uint64_t e)
{
	uint8_t b[8];
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	put_le64(b, e);
	assert_int_equal(pwrite(fd, b, 8, (off_t)(h->table_offset + c * 8)), 8);
	close(fd);
}

/*
 * Defect 4: one 64 KiB-chunk entry ~16 TiB into a sparse file. Nothing is sized by its chunk
 * number: open, check and close take the time and memory of a small image. One past the end
 * of the file is refused at once, and cow_check counts it.
 */
static void test_far_entry(void **state)
{
	(void)state;
	const uint64_t fsize = (16ull << 40) - (64 << 10);	/* ext4's largest file */
	const uint64_t far = fsize / (64 << 10) - 1;		/* the file's last chunk */
	mk(P("far.img"), 4 << 20, 64 << 10, NULL);
	struct cow_image *img = open_img(P("far.img"), 0);
	wr(img, 5, 0, 64 << 10);
	assert_int_equal(cow_close(img), 0);
	struct ucow_hdr h = hdr_of(P("far.img"));
	set_entry(P("far.img"), &h, 1, far);
	if (truncate(P("far.img"), (off_t)fsize))
		skip();		/* a file system without 16 TiB files */
	alarm(30);
	long rss0 = peak_rss_mib();
	double t0 = now();
	img = open_img(P("far.img"), COW_OPEN_RDONLY);
	struct cow_check_result cr;
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict)
		fail_msg("check: verdict %d: %s", cr.verdict, cr.first_problem);
	assert_int_equal(cr.allocated_chunks, 2);
	cow_close(img);
	double t = now() - t0;
	long rss = peak_rss_mib() - rss0;
	if (t > 2 || rss > 64)
		fail_msg("open and check of one far entry: %.2f s, %ld MiB more memory", t, rss);

	/* past the end of the file: refused at once, counted by check */
	set_entry(P("far.img"), &h, 1, far + 1);
	t0 = now();
	expect_refused(P("far.img"), COW_OPEN_RDONLY, -EUCLEAN, "table entry 1 points to chunk");
	expect_check_corrupt(P("far.img"), "table entry 1 points to chunk");
	set_entry(P("far.img"), &h, 1, UCOW_E_PCN_MASK);
	expect_refused(P("far.img"), COW_OPEN_RDONLY, -EUCLEAN, "table entry 1 points to chunk");
	alarm(0);
	assert_true(now() - t0 < 2);
	assert_true(peak_rss_mib() - rss0 <= 64);
	unlink(P("far.img"));
}

/* Set a u64 header field in both slots (checksums recomputed): no older slot to fall to. */
static void patch_hdr64(const char *path, unsigned field, uint64_t v)
{
	uint8_t b[UCOW_HDR_SIZE];
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	for (int i = 0; i < UCOW_HDR_SLOTS; i++) {
		assert_int_equal(pread(fd, b, sizeof(b), i * UCOW_HDR_SIZE), (ssize_t)sizeof(b));
		put_le64(b + field, v);
		put_le32(b + 44, 0);
		put_le32(b + 44, ucow_crc32c(0, b, sizeof(b)));
		assert_int_equal(pwrite(fd, b, sizeof(b), i * UCOW_HDR_SIZE), (ssize_t)sizeof(b));
	}
	close(fd);
}

static uint64_t pcn_of(const char *path, uint64_t c)
{
	struct cow_image *img = open_img(path, COW_OPEN_RDONLY);
	uint64_t p = img->table[c] & UCOW_E_PCN_MASK;
	cow_close(img);
	assert_true(p != 0);
	return p;
}

static void copy(const char *from, const char *to)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
	assert_int_equal(system(cmd), 0);
}

/*
 * Defect 2: after a snapshot apply the table lives in the data area. A metadata region moved
 * onto a mapped data chunk (valid checksums, both slots) is refused by open and counted by
 * check: the journal (it never lies in the data area), and the refcount table.
 */
static void test_metadata_over_data(void **state)
{
	(void)state;
	char base[512];
	snprintf(base, sizeof(base), "%s", P("md.img"));
	mk(base, 4 << 20, 64 << 10, NULL);
	struct cow_image *img = open_img(base, 0);
	wr(img, 1, 0, 256 << 10);
	assert_int_equal(cow_snapshot_create(img, "s1"), 0);
	assert_int_equal(cow_snapshot_apply(img, "s1"), 0);
	wr(img, 2, 1 << 20, 64 << 10);		/* chunk 16 */
	wr(img, 0, 2 << 20, 64 << 10);		/* chunk 32: zeros, so it reads as refcounts 0 */
	struct ucow_hdr h = img->hdr;
	assert_int_equal(cow_close(img), 0);
	assert_true(h.table_offset >= h.data_offset);
	uint64_t p16 = pcn_of(base, 16), p32 = pcn_of(base, 32);

	/* the journal on chunk 16, the file long enough to hold it all */
	copy(base, P("md1.img"));
	assert_int_equal(truncate(P("md1.img"), 16 << 20), 0);
	patch_hdr64(P("md1.img"), 104, p16 << 16);
	expect_refused(P("md1.img"), COW_OPEN_RDONLY, -EUCLEAN, "journal region");
	expect_refused(P("md1.img"), 0, -EUCLEAN, "journal region");

	/* the refcount table on chunk 32 */
	copy(base, P("md2.img"));
	patch_hdr64(P("md2.img"), 152, p32 << 16);
	expect_refused(P("md2.img"), COW_OPEN_RDONLY, -EUCLEAN, "holds metadata");
	expect_check_corrupt(P("md2.img"), "holds metadata");
}

/*
 * Defect 5: 65535 snapshots of a 64 GiB disk (64 KiB chunks: 16 MiB frozen copies) in a file
 * of about 1 TiB that holds 16 MiB of data. Open, list and check cost what the file holds:
 * no comparison of every pair of snapshots, no reading of every frozen table in full.
 */
static void test_many_snapshots(void **state)
{
	(void)state;
	const uint32_t n = UCOW_MAX_SNAPSHOTS, cs = 64 << 10;
	char path[512];
	snprintf(path, sizeof(path), "%s", P("many.img"));
	mk(path, 64ull << 30, cs, NULL);
	struct ucow_hdr h = hdr_of(path);
	uint64_t ext = (h.table_size + h.bitmap_size + cs - 1) / cs * cs;
	h.incompat |= UCOW_INCOMPAT_SNAPSHOTS;
	h.nb_snapshots = n;
	h.parent_snapshot = n;
	h.snap_table_offset = h.data_offset;
	h.snap_table_size = ((uint64_t)n * UCOW_SNAP_ENTRY + cs - 1) / cs * cs;
	h.refcount_offset = h.snap_table_offset + h.snap_table_size;
	h.refcount_size = cs;	/* all zero: the frozen tables map nothing */
	uint64_t frozen0 = h.refcount_offset + h.refcount_size;
	uint64_t fsize = frozen0 + n * ext;
	uint8_t *st = calloc(1, h.snap_table_size);
	assert_non_null(st);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *b = st + (uint64_t)i * UCOW_SNAP_ENTRY;
		int len = snprintf((char *)b + 64, UCOW_SNAP_NAME_MAX + 1, "snap%u", i + 1);
		put_le32(b, i + 1);
		put_le32(b + 4, i);			/* a chain: each the child of the previous */
		put_le64(b + 8, 1700000000 + i);
		put_le16(b + 20, len);
		put_le64(b + 24, h.virtual_size);
		put_le64(b + 32, frozen0 + i * ext);
		put_le64(b + 40, ext);
		put_le32(b + 252, ucow_crc32c(0, b, UCOW_SNAP_ENTRY));
	}
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, st, h.snap_table_size, h.snap_table_offset),
			 (ssize_t)h.snap_table_size);
	free(st);
	if (ftruncate(fd, (off_t)fsize)) {
		close(fd);
		skip();		/* a file system without 1 TiB files */
	}
	uint8_t hb[UCOW_HDR_SIZE];
	h.generation++;
	ucow_hdr_encode(&h, hb);
	for (int i = 0; i < UCOW_HDR_SLOTS; i++)
		assert_int_equal(pwrite(fd, hb, sizeof(hb), i * UCOW_HDR_SIZE), (ssize_t)sizeof(hb));
	close(fd);

	alarm(SANITIZED ? 120 : 60);
	double t0 = now();
	struct cow_image *img = open_img(path, COW_OPEN_RDONLY);
	double t_open = now() - t0;
	struct cow_snap_info *si;
	uint32_t ns;
	assert_int_equal(cow_snapshot_list(img, &si, &ns), 0);
	assert_int_equal(ns, n);
	assert_int_equal(si[n - 1].disk_usage, ext);	/* its frozen copy only */
	free(si);
	double t_list = now() - t0 - t_open;
	struct cow_check_result cr;
	assert_int_equal(cow_check(img, &cr), 0);
	if (cr.verdict)
		fail_msg("check: verdict %d: %s", cr.verdict, cr.first_problem);
	cow_close(img);
	double t = now() - t0;
	alarm(0);
	/* linear work takes about a second (a pairwise check took minutes); sanitizers slow
	 * every step 5-30x */
	if (t > (SANITIZED ? 45 : 5))
		fail_msg("%u snapshots: open %.2f s, list %.2f s, all %.2f s", n, t_open, t_list, t);

	/* a duplicate name among them is still found (sorted, neighbours compared) */
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t b[UCOW_SNAP_ENTRY];
	uint64_t at = h.snap_table_offset + 40000ull * UCOW_SNAP_ENTRY;
	assert_int_equal(pread(fd, b, sizeof(b), at), (ssize_t)sizeof(b));
	memset(b + 64, 0, UCOW_SNAP_NAME_MAX + 1);
	put_le16(b + 20, snprintf((char *)b + 64, UCOW_SNAP_NAME_MAX + 1, "snap7"));
	put_le32(b + 252, 0);
	put_le32(b + 252, ucow_crc32c(0, b, sizeof(b)));
	assert_int_equal(pwrite(fd, b, sizeof(b), at), (ssize_t)sizeof(b));
	close(fd);
	alarm(60);
	t0 = now();
	expect_refused(path, COW_OPEN_RDONLY, -EUCLEAN, "duplicate snapshot id or name 'snap7'");
	alarm(0);
	assert_true(now() - t0 < 5);

	/* a frozen extent whose offset + size wraps past 2^64 (defect 1) */
	memset(b + 64, 0, UCOW_SNAP_NAME_MAX + 1);
	put_le16(b + 20, snprintf((char *)b + 64, UCOW_SNAP_NAME_MAX + 1, "wrap"));
	put_le64(b + 32, 0 - ext);
	put_le32(b + 252, 0);
	put_le32(b + 252, ucow_crc32c(0, b, sizeof(b)));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, b, sizeof(b), at), (ssize_t)sizeof(b));
	close(fd);
	expect_refused(path, COW_OPEN_RDONLY, -EUCLEAN, "'wrap' has an invalid table extent");
	unlink(path);
}

int main(void)
{
	(void)pass_queue;	/* unit.h's pass-through backend: not used here */
	(void)pass_submit_wait;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifo_backing),
		cmocka_unit_test(test_sidelog_huge),
		cmocka_unit_test(test_far_entry),
		cmocka_unit_test(test_metadata_over_data),
		cmocka_unit_test(test_many_snapshots),
	};
	return UNIT_RUN(tests);
}
