/* Format encode/decode and validation: every hostile header field is refused. */
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

#include <cmocka.h>

#include "cowcore.h"
#include "format.h"

static uint8_t buf[UCOW_HDR_SIZE];
static struct ucow_hdr good;
static char why[COW_ERRLEN];
#define FSIZE (1ull << 40)

static void make_good(void)
{
	char w[COW_ERRLEN];
	assert_int_equal(ucow_hdr_init(&good, 10ull << 30, 0, 0, 0, w, sizeof(w)), 0);
}

static int decode_mut(void (*mut)(struct ucow_hdr *h))
{
	struct ucow_hdr h = good, out;
	mut(&h);
	ucow_hdr_encode(&h, buf);
	return ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why));
}

static void test_roundtrip(void **state)
{
	struct ucow_hdr h = good, out;
	h.backing_fmt = COW_FMT_RAW;
	strcpy(h.backing, "base.raw");
	h.backing_len = 8;
	h.flags = UCOW_FLAG_DIRTY;
	ucow_hdr_encode(&h, buf);
	assert_int_equal(ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why)), 0);
	assert_int_equal(out.virtual_size, h.virtual_size);
	assert_int_equal(out.chunk_size, COW_DEFAULT_CHUNK);
	assert_int_equal(out.block_size, COW_DEFAULT_BLOCK);
	assert_int_equal(out.nr_chunks, 10240);
	assert_int_equal(out.data_offset % out.chunk_size, 0);
	assert_string_equal(out.backing, "base.raw");
	assert_int_equal(out.flags, UCOW_FLAG_DIRTY);
}

static void test_checksum(void **state)
{
	struct ucow_hdr out;
	ucow_hdr_encode(&good, buf);
	buf[100] ^= 1;
	assert_int_equal(ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "checksum"));
}

static void test_magic(void **state)
{
	struct ucow_hdr out;
	ucow_hdr_encode(&good, buf);
	buf[0] = 'X';
	assert_int_equal(ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why)), -EUCLEAN);
}

static void m_chunk_npow2(struct ucow_hdr *h) { h->chunk_size = 3 << 20; }
static void m_chunk_small(struct ucow_hdr *h) { h->chunk_size = 4096; }
static void m_block_big(struct ucow_hdr *h) { h->block_size = h->chunk_size * 2; }
static void m_bpc(struct ucow_hdr *h) { h->block_size = 512; }
static void m_vsize0(struct ucow_hdr *h) { h->virtual_size = 0; }
static void m_vsize_huge(struct ucow_hdr *h) { h->virtual_size = UINT64_MAX; }
static void m_nr(struct ucow_hdr *h) { h->nr_chunks++; }
static void m_table_past_eof(struct ucow_hdr *h) { h->table_offset = FSIZE; }
static void m_table_small(struct ucow_hdr *h) { h->table_size = 4096; }
static void m_table_huge(struct ucow_hdr *h) { h->table_size = 1ull << 40; }
static void m_overlap(struct ucow_hdr *h) { h->bitmap_offset = h->table_offset; }
static void m_journal_unaligned(struct ucow_hdr *h) { h->journal_offset += 512; }
static void m_data_unaligned(struct ucow_hdr *h) { h->data_offset += 4096; }
static void m_backing_fmt(struct ucow_hdr *h) { h->backing_fmt = 7; strcpy(h->backing, "x"); h->backing_len = 1; }
static void m_backing_nofmt(struct ucow_hdr *h) { strcpy(h->backing, "x"); h->backing_len = 1; }
static void m_flags(struct ucow_hdr *h) { h->flags = 0x80; }
static void m_snap(struct ucow_hdr *h) { h->nb_snapshots = 3; }
static void m_table_in_header(struct ucow_hdr *h) { h->table_offset = 0; }
/* offset + size wraps past 2^64 to a small end (issue 11, defect 1) */
#define WRAP(size) (0ull - (uint64_t)(size))
static void m_table_wrap(struct ucow_hdr *h) { h->table_offset = WRAP(4096); }
static void m_bitmap_wrap(struct ucow_hdr *h) { h->bitmap_offset = WRAP(4096); }
static void m_journal_wrap(struct ucow_hdr *h) { h->journal_offset = WRAP(4096); }
static void m_data_wrap(struct ucow_hdr *h) { h->data_offset = WRAP(h->chunk_size); }
/* a valid snapshot section: one snapshot, its tables in the first data chunks */
static void with_snap(struct ucow_hdr *h)
{
	h->incompat |= UCOW_INCOMPAT_SNAPSHOTS;
	h->nb_snapshots = 1;
	h->snap_table_offset = h->data_offset;
	h->snap_table_size = h->chunk_size;
	h->refcount_offset = h->data_offset + h->chunk_size;
	h->refcount_size = h->chunk_size;
}
static void m_snap_wrap(struct ucow_hdr *h) { with_snap(h); h->snap_table_offset = WRAP(h->chunk_size); }
static void m_snap_past_eof(struct ucow_hdr *h) { with_snap(h); h->snap_table_offset = FSIZE; }
static void m_snap_huge(struct ucow_hdr *h) { with_snap(h); h->snap_table_size = 1ull << 40; }
static void m_rc_wrap(struct ucow_hdr *h) { with_snap(h); h->refcount_offset = WRAP(h->chunk_size); }
static void m_rc_past_eof(struct ucow_hdr *h) { with_snap(h); h->refcount_offset = FSIZE; }
static void m_rc_huge(struct ucow_hdr *h) { with_snap(h); h->refcount_size = 1ull << 40; }
/* a moved table (apply) lets the table and bitmap into the data area, never the journal */
static void with_moved_table(struct ucow_hdr *h)
{
	h->incompat |= UCOW_INCOMPAT_SNAPSHOTS;
	h->table_offset = h->data_offset;
	h->bitmap_offset = h->table_offset + h->table_size;
}
static void m_journal_in_data(struct ucow_hdr *h) { with_moved_table(h); h->journal_offset = h->data_offset + 4 * h->chunk_size; }
static void m_moved_bitmap_wrap(struct ucow_hdr *h) { with_moved_table(h); h->bitmap_offset = WRAP(4096); }
/* a generation that would wrap to 0 on the next header write (defect 3) */
static void m_gen_max(struct ucow_hdr *h) { h->generation = UINT64_MAX; }
static void m_gen_big(struct ucow_hdr *h) { h->generation = UCOW_MAX_GENERATION + 1; }

static void test_hostile(void **state)
{
	static const struct {
		void (*mut)(struct ucow_hdr *);
		const char *why;	/* the reason must name the problem */
	} muts[] = {
		{ m_chunk_npow2, "invalid chunk size" },
		{ m_chunk_small, "invalid chunk size" },
		{ m_block_big, "invalid block size" },
		{ m_bpc, "invalid block size" },
		{ m_vsize0, "invalid virtual size" },
		{ m_vsize_huge, "invalid virtual size" },
		{ m_nr, "chunk count" },
		{ m_table_past_eof, "table region" },
		{ m_table_small, "table size" },
		{ m_table_huge, "table size" },
		{ m_overlap, "metadata regions overlap" },
		{ m_journal_unaligned, "journal region" },
		{ m_data_unaligned, "data offset" },
		{ m_backing_fmt, "invalid backing format" },
		{ m_backing_nofmt, "backing file name and format disagree" },
		{ m_flags, "unknown header flags" },
		{ m_snap, "snapshot fields set without the snapshot feature" },
		{ m_table_in_header, "table region [0, " },
		{ m_table_wrap, "table region" },
		{ m_bitmap_wrap, "bitmap region" },
		{ m_journal_wrap, "journal region" },
		{ m_data_wrap, "data offset" },
		{ m_snap_wrap, "invalid snapshot table extent" },
		{ m_snap_past_eof, "invalid snapshot table extent" },
		{ m_snap_huge, "invalid snapshot table extent" },
		{ m_rc_wrap, "invalid refcount table extent" },
		{ m_rc_past_eof, "invalid refcount table extent" },
		{ m_rc_huge, "invalid refcount table extent" },
		{ m_journal_in_data, "journal region" },
		{ m_moved_bitmap_wrap, "not a valid table extent" },
		{ m_gen_max, "generation" },
		{ m_gen_big, "generation" },
	};
	/* the base headers the mutations start from are valid */
	assert_int_equal(decode_mut(with_snap), 0);
	assert_int_equal(decode_mut(with_moved_table), 0);
	int bad = 0;
	for (size_t i = 0; i < sizeof(muts) / sizeof(muts[0]); i++) {
		why[0] = 0;
		int r = decode_mut(muts[i].mut);
		if (r != -EUCLEAN) {
			print_message("mutation %zu (%s) accepted (r=%d)\n", i, muts[i].why, r);
			bad++;
		} else if (!strstr(why, muts[i].why)) {
			print_message("mutation %zu: reason '%s' does not say '%s'\n", i, why,
				      muts[i].why);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

/* A region that ends past the end of the file is refused, naming the file's size. */
static void test_past_eof(void **state)
{
	struct ucow_hdr out;
	ucow_hdr_encode(&good, buf);
	assert_int_equal(ucow_hdr_decode(buf, good.journal_offset + 4096, &out, why, sizeof(why)),
			 -EUCLEAN);
	assert_non_null(strstr(why, "journal region"));
	assert_non_null(strstr(why, "past the end of the file"));
	/* the largest generation a header may hold still decodes */
	struct ucow_hdr h = good;
	h.generation = UCOW_MAX_GENERATION;
	ucow_hdr_encode(&h, buf);
	assert_int_equal(ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why)), 0);
}

/* Patch the header slot of generation 1 (slot 1) of an image file. */
static void patch_generation(const char *path, uint64_t gen)
{
	uint8_t b[UCOW_HDR_SIZE];
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, sizeof(b), UCOW_HDR_SIZE), (ssize_t)sizeof(b));
	put_le64(b + 184, gen);
	put_le32(b + 44, 0);
	put_le32(b + 44, ucow_crc32c(0, b, sizeof(b)));
	assert_int_equal(pwrite(fd, b, sizeof(b), UCOW_HDR_SIZE), (ssize_t)sizeof(b));
	close(fd);
}

/* A header write at the largest generation refuses to wrap the counter (defect 3). */
static void test_generation_wrap(void **state)
{
	char d[] = "/tmp/ucow-fmt-XXXXXX", path[64], e[COW_ERRLEN];
	struct cow_create_opts o = { .size = 1 << 20, .chunk_size = 64 << 10 };
	struct cow_image *img;
	assert_non_null(mkdtemp(d));
	snprintf(path, sizeof(path), "%s/g.img", d);
	assert_int_equal(cow_create(path, &o, e, sizeof(e)), 0);
	patch_generation(path, UCOW_MAX_GENERATION);
	/* a read-write open writes the header (DIRTY): it must fail, not wrap to 0 */
	int r = cow_open(path, &(struct cow_open_opts){ 0 }, &img, e, sizeof(e));
	if (!r)
		cow_close(img);
	assert_int_equal(r, -EOVERFLOW);
	assert_non_null(strstr(e, "generation"));
	/* read-only still works */
	assert_int_equal(cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img,
				  e, sizeof(e)), 0);
	cow_close(img);
	/* past the limit: the slot is refused as corrupt, naming the generation */
	patch_generation(path, UINT64_MAX);
	assert_int_equal(cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY }, &img,
				  e, sizeof(e)), -EUCLEAN);
	assert_non_null(strstr(e, "generation"));
	unlink(path);
	rmdir(d);
}

static void test_incompat(void **state)
{
	struct ucow_hdr h = good, out;
	h.incompat = 1ull << 40;
	ucow_hdr_encode(&h, buf);
	assert_int_equal(ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why)), -ENOTSUP);
	assert_non_null(strstr(why, "incompatible"));
	h = good;
	h.compat = 1ull << 5;	/* unknown compatible bits are fine */
	ucow_hdr_encode(&h, buf);
	assert_int_equal(ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why)), 0);
}

static void test_backing_nul(void **state)
{
	struct ucow_hdr h = good, out;
	h.backing_fmt = COW_FMT_RAW;
	h.backing_len = 5;
	memcpy(h.backing, "ab\0cd", 5);
	ucow_hdr_encode(&h, buf);
	assert_int_equal(ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why)), -EUCLEAN);
	/* reserved bytes after the name */
	h = good;
	ucow_hdr_encode(&h, buf);
	buf[2000] = 1;
	put_le32(buf + 44, 0);
	put_le32(buf + 44, ucow_crc32c(0, buf, UCOW_HDR_SIZE));
	assert_int_equal(ucow_hdr_decode(buf, FSIZE, &out, why, sizeof(why)), -EUCLEAN);
}

static void test_init_limits(void **state)
{
	struct ucow_hdr h;
	assert_int_equal(ucow_hdr_init(&h, 0, 0, 0, 0, why, sizeof(why)), -EINVAL);
	assert_int_equal(ucow_hdr_init(&h, 1 << 20, 100000, 0, 0, why, sizeof(why)), -EINVAL);
	assert_int_equal(ucow_hdr_init(&h, 1 << 20, 0, 1 << 21, 0, why, sizeof(why)), -EINVAL);
	assert_int_equal(ucow_hdr_init(&h, 1ull << 60, 0, 0, 0, why, sizeof(why)), -ERANGE);
	assert_int_equal(ucow_hdr_init(&h, 1 << 20, 65536, 4096, 0, why, sizeof(why)), 0);
	assert_int_equal(ucow_bm_bytes(65536, 4096), 8);
	assert_int_equal(ucow_bm_bytes(1 << 20, 4096), 32);
	assert_int_equal(ucow_bm_bytes(1 << 20, 1 << 20), 8);
}

static void test_crc32c(void **state)
{
	/* the standard check value of CRC-32C */
	assert_int_equal(ucow_crc32c(0, "123456789", 9), 0xe3069283);
	assert_int_equal(ucow_crc32c(ucow_crc32c(0, "1234", 4), "56789", 5), 0xe3069283);
}

static void test_parse_size(void **state)
{
	uint64_t v;
	assert_int_equal(cow_parse_size("512", &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(cow_parse_size("4k", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(cow_parse_size("1M", &v), 0);
	assert_int_equal(v, 1 << 20);
	assert_int_equal(cow_parse_size("2G", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(cow_parse_size("1T", &v), 0);
	assert_int_equal(v, 1ull << 40);
	assert_int_equal(cow_parse_size("-1", &v), -EINVAL);
	assert_int_equal(cow_parse_size("1Q", &v), -EINVAL);
	assert_int_equal(cow_parse_size("", &v), -EINVAL);
	assert_int_equal(cow_parse_size("k", &v), -EINVAL);
	assert_int_equal(cow_parse_size("99999999999T", &v), -ERANGE);
	assert_int_equal(cow_parse_size("99999999999999999999999", &v), -ERANGE);
}

int main(void)
{
	make_good();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_checksum),
		cmocka_unit_test(test_magic),	    cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_incompat),    cmocka_unit_test(test_backing_nul),
		cmocka_unit_test(test_init_limits), cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_parse_size),  cmocka_unit_test(test_past_eof),
		cmocka_unit_test(test_generation_wrap),
	};
	if (getenv("UNIT_FILTER"))	/* e.g. UNIT_FILTER=test_map: run one test */
		cmocka_set_test_filter(getenv("UNIT_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
