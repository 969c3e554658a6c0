/*
 * check -r (cow_repair) on images the command-line test cannot make: an image left dirty by
 * a crash, whose journal holds flushed writes the table does not, and that also has a table
 * entry pointing past the end of the file. The repair must keep every flushed write (it
 * folds the journal in), drop the bad entry, leave a clean image that checks clean, and
 * write nothing at all when it refuses (a damaged snapshot table). Running it again on the
 * repaired image changes nothing.
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#include "unit.h"

#define SZ (4u << 20)

static void mk(const char *path)
{
	struct cow_create_opts o = { .size = SZ, .chunk_size = 64 << 10, .block_size = 4096 };
	unlink(path);
	if (cow_create(path, &o, err, COW_ERRLEN))
		fail_msg("create: %s", err);
}

static void rw(struct cow_image *img, int op, uint8_t pat, uint64_t off, uint64_t len)
{
	struct cow_backend *be;
	struct cow_ctx *ctx;
	uint8_t *b = malloc(len ? len : 1);
	assert_non_null(b);
	memset(b, pat, len);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, op, op == COW_FLUSH ? NULL : b, len, off, 0), 0);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	free(b);
}

/* Read [off, off+len) of path and expect every byte to be pat. */
static void expect(const char *path, uint8_t pat, uint64_t off, uint64_t len)
{
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	uint8_t *b = malloc(len);
	assert_non_null(b);
	if (cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
		     COW_ERRLEN))
		fail_msg("open %s: %s", path, err);
	assert_int_equal(cow_backend_new("sync", 8, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, b, len, off, 0), 0);
	for (uint64_t i = 0; i < len; i++)
		if (b[i] != pat)
			fail_msg("%s: byte %llu reads %02x, want %02x", path,
				 (unsigned long long)(off + i), b[i], pat);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
	free(b);
}

static int verdict(const char *path)
{
	struct cow_image *img;
	struct cow_check_result cr;
	int r = cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img, err,
			 COW_ERRLEN);
	if (r == -EUCLEAN)
		return 2;
	assert_int_equal(r, 0);
	assert_int_equal(cow_check(img, &cr), 0);
	cow_close(img);
	return cr.verdict;
}

/* Write v as table entry c of the image at path (the header's table, on disk). */
static void poke_entry(const char *path, uint64_t c, uint64_t v)
{
	struct cow_image *img;
	uint8_t le[8];
	assert_int_equal(cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_CHECK }, &img,
				  err, COW_ERRLEN), 0);
	uint64_t off = img->hdr.table_offset + c * 8;
	cow_close(img);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	put_le64(le, v);
	assert_int_equal(pwrite(fd, le, 8, (off_t)off), 8);
	close(fd);
}

static char *slurp(const char *path, size_t *n)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0 && !fstat(fd, &st));
	char *b = malloc(st.st_size ? st.st_size : 1);
	assert_non_null(b);
	assert_int_equal(pread(fd, b, st.st_size, 0), st.st_size);
	close(fd);
	*n = st.st_size;
	return b;
}

static void test_dirty_image(void **state)
{
	const char *path = P("dirty.img");
	char done[COW_ERRLEN];
	struct cow_image *img;
	mk(path);
	assert_int_equal(cow_open(path, NULL, &img, err, COW_ERRLEN), 0);
	rw(img, COW_WRITE, 0x11, 0, 64 << 10);
	rw(img, COW_WRITE, 0x22, 1 << 20, 8192);
	rw(img, COW_FLUSH, 0, 0, 0);	/* into the journal, not the table */
	img_abandon(img);		/* power loss: DIRTY stays set, the table is stale */
	poke_entry(path, 40, 1ull << 40);	/* and a bad entry on top */
	assert_int_equal(verdict(path), 2);

	assert_int_equal(cow_repair(path, COW_FMT_UCOW, COW_REPAIR_LEAKS, done, sizeof(done),
				    err, COW_ERRLEN), -EUCLEAN);	/* leaks only: refused */
	assert_non_null(strstr(err, "use '-r all'"));
	assert_int_equal(cow_repair(path, COW_FMT_UCOW, COW_REPAIR_ALL, done, sizeof(done), err,
				    COW_ERRLEN), 0);
	assert_int_equal(verdict(path), 0);
	expect(path, 0x11, 0, 64 << 10);	/* the journal's writes were kept */
	expect(path, 0x22, 1 << 20, 8192);
	expect(path, 0, 40ull << 16, 64 << 10);	/* the dropped entry reads as unallocated */

	/* clean now: a second repair writes nothing */
	size_t n1, n2;
	char *a = slurp(path, &n1);
	assert_int_equal(cow_repair(path, COW_FMT_UCOW, COW_REPAIR_ALL, done, sizeof(done), err,
				    COW_ERRLEN), 0);
	assert_string_equal(done, "");
	char *b = slurp(path, &n2);
	assert_true(n1 == n2 && !memcmp(a, b, n1));
	free(a);
	free(b);
}

/* A refusal writes nothing: not even the header's in-use mark. */
static void test_refusal_writes_nothing(void **state)
{
	const char *path = P("snapbad.img");
	struct cow_image *img;
	char done[COW_ERRLEN];
	mk(path);
	assert_int_equal(cow_open(path, NULL, &img, err, COW_ERRLEN), 0);
	rw(img, COW_WRITE, 0x33, 0, 64 << 10);
	assert_int_equal(cow_snapshot_create(img, "s1"), 0);
	uint64_t st_off = img->hdr.snap_table_offset;
	assert_int_equal(cow_close(img), 0);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t x = 0x5a;
	assert_int_equal(pwrite(fd, &x, 1, (off_t)st_off + 10), 1);
	close(fd);
	size_t n1, n2;
	char *a = slurp(path, &n1);
	assert_int_equal(cow_repair(path, COW_FMT_UCOW, COW_REPAIR_ALL, done, sizeof(done), err,
				    COW_ERRLEN), -EUCLEAN);
	assert_non_null(strstr(err, "the snapshot table is damaged"));
	char *b = slurp(path, &n2);
	assert_true(n1 == n2 && !memcmp(a, b, n1));
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dirty_image),
		cmocka_unit_test(test_refusal_writes_nothing),
	};
	return UNIT_RUN(tests);
}
