/* Format encode/decode and validation: every hostile header field is refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static void test_hostile(void **state)
{
	void (*muts[])(struct ucow_hdr *) = {
		m_chunk_npow2, m_chunk_small, m_block_big, m_bpc, m_vsize0, m_vsize_huge, m_nr,
		m_table_past_eof, m_table_small, m_table_huge, m_overlap, m_journal_unaligned,
		m_data_unaligned, m_backing_fmt, m_backing_nofmt, m_flags, m_snap,
		m_table_in_header,
	};
	for (size_t i = 0; i < sizeof(muts) / sizeof(muts[0]); i++) {
		int r = decode_mut(muts[i]);
		if (r != -EUCLEAN)
			fail_msg("mutation %zu accepted (r=%d)", i, r);
		assert_true(strlen(why) > 0);
	}
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
		cmocka_unit_test(test_parse_size),
	};
	if (getenv("UNIT_FILTER"))	/* e.g. UNIT_FILTER=test_map: run one test */
		cmocka_set_test_filter(getenv("UNIT_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
