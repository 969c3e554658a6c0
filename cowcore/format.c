/* SPDX-License-Identifier: MIT */
/* ucow v1 header encode / decode / validation, and CRC32C. See format.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cowcore.h"
#include "format.h"

/* CRC32C (Castagnoli), reflected polynomial 0x82f63b78; table built at first use. */
static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & -(c & 1));
		crc_table[i] = c;
	}
	__atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

uint32_t ucow_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE))
		crc_init();	/* idempotent: racing initializers write the same values */
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void ucow_hdr_encode(const struct ucow_hdr *h, uint8_t *b)
{
	memset(b, 0, UCOW_HDR_SIZE);
	memcpy(b, UCOW_MAGIC, 8);
	put_le32(b + 8, UCOW_VERSION);
	put_le32(b + 12, UCOW_HDR_SIZE);
	put_le64(b + 16, h->incompat);
	put_le64(b + 24, h->compat);
	put_le64(b + 32, h->autoclear);
	put_le32(b + 40, h->flags);
	put_le64(b + 48, h->virtual_size);
	put_le32(b + 56, h->chunk_size);
	put_le32(b + 60, h->block_size);
	put_le64(b + 64, h->nr_chunks);
	put_le64(b + 72, h->table_offset);
	put_le64(b + 80, h->table_size);
	put_le64(b + 88, h->bitmap_offset);
	put_le64(b + 96, h->bitmap_size);
	put_le64(b + 104, h->journal_offset);
	put_le64(b + 112, h->journal_size);
	put_le64(b + 120, h->journal_seq);
	put_le64(b + 128, h->snap_table_offset);
	put_le64(b + 136, h->snap_table_size);
	put_le32(b + 144, h->nb_snapshots);
	put_le32(b + 148, h->parent_snapshot);
	put_le64(b + 152, h->refcount_offset);
	put_le64(b + 160, h->refcount_size);
	put_le64(b + 168, h->data_offset);
	put_le32(b + 176, h->backing_fmt);
	put_le16(b + 180, h->backing_len);
	put_le64(b + 184, h->generation);
	memcpy(b + UCOW_BACKING_NAME_OFF, h->backing, h->backing_len);
	put_le32(b + 44, ucow_crc32c(0, b, UCOW_HDR_SIZE));
}

static int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

#define BAD(...) do { snprintf(why, whylen, __VA_ARGS__); return -EUCLEAN; } while (0)

/*
 * Overflow-safe extent tests: [off, off + size) is never computed, so an offset near 2^64
 * cannot wrap around to a small end. Sizes are compared first, then off against the room.
 */
static int fits(uint64_t off, uint64_t size, uint64_t end)
{
	return size <= end && off <= end - size;
}

static int overlaps(uint64_t a, uint64_t as, uint64_t b, uint64_t bs)
{
	if (!as || !bs)
		return 0;
	return a < b ? b - a < as : a - b < bs;
}

/*
 * A region [off, off+size) must be aligned, inside the file, and before the data area; only
 * the table and bitmap may instead form one extent of data chunks (moved by an apply).
 */
static int check_region(const char *name, uint64_t off, uint64_t size, uint64_t min_size,
			uint64_t max_size, int movable, const struct ucow_hdr *h,
			uint64_t file_size, char *why, size_t whylen)
{
	if (off % UCOW_META_ALIGN || size % UCOW_META_ALIGN)
		BAD("%s region at %llu size %llu is not 4 KiB aligned", name,
		    (unsigned long long)off, (unsigned long long)size);
	if (size < min_size || size > max_size)
		BAD("%s size %llu out of range (%llu..%llu)", name, (unsigned long long)size,
		    (unsigned long long)min_size, (unsigned long long)max_size);
	if (movable && off >= h->data_offset && (h->incompat & UCOW_INCOMPAT_SNAPSHOTS)) {
		/* table + bitmap moved into one extent of data chunks by a snapshot apply */
		if (h->table_offset % h->chunk_size || h->table_offset < h->data_offset ||
		    h->bitmap_offset < h->table_offset ||
		    h->bitmap_offset - h->table_offset != h->table_size)
			BAD("%s extent at %llu is not a valid table extent", name,
			    (unsigned long long)off);
	} else if (off < UCOW_HDR_SIZE * UCOW_HDR_SLOTS || !fits(off, size, h->data_offset)) {
		BAD("%s region [%llu, +%llu) overlaps the header or the data area", name,
		    (unsigned long long)off, (unsigned long long)size);
	}
	if (!fits(off, size, file_size))
		BAD("%s region [%llu, +%llu) ends past the end of the file (%llu bytes)", name,
		    (unsigned long long)off, (unsigned long long)size,
		    (unsigned long long)file_size);
	return 0;
}

/* The fields of a header slot whose magic, version, size and checksum are right. */
static void decode_fields(const uint8_t *b, struct ucow_hdr *h)
{
	h->incompat = get_le64(b + 16);
	h->compat = get_le64(b + 24);
	h->autoclear = get_le64(b + 32);
	h->flags = get_le32(b + 40);
	h->virtual_size = get_le64(b + 48);
	h->chunk_size = get_le32(b + 56);
	h->block_size = get_le32(b + 60);
	h->nr_chunks = get_le64(b + 64);
	h->table_offset = get_le64(b + 72);
	h->table_size = get_le64(b + 80);
	h->bitmap_offset = get_le64(b + 88);
	h->bitmap_size = get_le64(b + 96);
	h->journal_offset = get_le64(b + 104);
	h->journal_size = get_le64(b + 112);
	h->journal_seq = get_le64(b + 120);
	h->snap_table_offset = get_le64(b + 128);
	h->snap_table_size = get_le64(b + 136);
	h->nb_snapshots = get_le32(b + 144);
	h->parent_snapshot = get_le32(b + 148);
	h->refcount_offset = get_le64(b + 152);
	h->refcount_size = get_le64(b + 160);
	h->data_offset = get_le64(b + 168);
	h->backing_fmt = get_le32(b + 176);
	h->backing_len = get_le16(b + 180);
	h->generation = get_le64(b + 184);
}

/* Feature bits, flags and reserved bytes. */
static int check_features(const uint8_t *b, const struct ucow_hdr *h, char *why, size_t whylen)
{
	if (h->incompat & ~UCOW_INCOMPAT_KNOWN) {
		snprintf(why, whylen, "unsupported incompatible features 0x%llx",
			 (unsigned long long)(h->incompat & ~UCOW_INCOMPAT_KNOWN));
		return -ENOTSUP;
	}
	if (h->flags & ~UCOW_FLAGS_KNOWN)
		BAD("unknown header flags 0x%x", h->flags);
	if (get_le16(b + 182))
		BAD("reserved header fields are not zero");
	for (unsigned i = 192; i < UCOW_BACKING_NAME_OFF; i++)
		if (b[i])
			BAD("reserved header bytes are not zero");
	for (unsigned i = UCOW_BACKING_NAME_OFF + UCOW_BACKING_NAME_MAX + 1; i < UCOW_HDR_SIZE; i++)
		if (b[i])
			BAD("reserved header bytes are not zero");
	return 0;
}

/* Chunk and block sizes, virtual size, chunk count, data offset. */
static int check_geometry(const struct ucow_hdr *h, char *why, size_t whylen)
{
	if (!is_pow2(h->chunk_size) || h->chunk_size < UCOW_MIN_CHUNK ||
	    h->chunk_size > UCOW_MAX_CHUNK)
		BAD("invalid chunk size %u", h->chunk_size);
	if (!is_pow2(h->block_size) || h->block_size < UCOW_MIN_BLOCK ||
	    h->block_size > h->chunk_size || h->chunk_size / h->block_size > UCOW_MAX_BPC)
		BAD("invalid block size %u for chunk size %u", h->block_size, h->chunk_size);
	if (!h->virtual_size || h->virtual_size > UCOW_MAX_VSIZE)
		BAD("invalid virtual size %llu", (unsigned long long)h->virtual_size);
	if (h->nr_chunks != (h->virtual_size + h->chunk_size - 1) / h->chunk_size)
		BAD("chunk count %llu does not match the virtual size",
		    (unsigned long long)h->nr_chunks);
	if (h->data_offset % h->chunk_size || h->data_offset < h->chunk_size)
		BAD("data offset %llu is not a multiple of the chunk size",
		    (unsigned long long)h->data_offset);
	if (h->data_offset > UCOW_MAX_DATA_OFFSET)
		BAD("data offset %llu is past the largest metadata layout (%llu)",
		    (unsigned long long)h->data_offset, (unsigned long long)UCOW_MAX_DATA_OFFSET);
	if (h->generation > UCOW_MAX_GENERATION)
		BAD("header generation %llu is impossibly large",
		    (unsigned long long)h->generation);
	if (h->journal_seq > UCOW_MAX_JSEQ)
		BAD("journal_seq %llu is impossibly large", (unsigned long long)h->journal_seq);
	return 0;
}

/* Table, bitmap and journal: each in its place, none over another. */
static int check_regions(const struct ucow_hdr *h, uint64_t file_size, char *why, size_t whylen)
{
	int r;
	r = check_region("table", h->table_offset, h->table_size,
			 align_up(h->nr_chunks * 8, UCOW_META_ALIGN), UCOW_MAX_TABLE, 1, h,
			 file_size, why, whylen);
	if (r)
		return r;
	r = check_region("bitmap", h->bitmap_offset, h->bitmap_size,
			 align_up(h->nr_chunks * ucow_bm_bytes(h->chunk_size, h->block_size),
				  UCOW_META_ALIGN),
			 UCOW_MAX_BITMAP, 1, h, file_size, why, whylen);
	if (r)
		return r;
	/* the journal never moves: it lies before the data area even with snapshots */
	r = check_region("journal", h->journal_offset, h->journal_size, UCOW_MIN_JOURNAL,
			 UCOW_MAX_JOURNAL, 0, h, file_size, why, whylen);
	if (r)
		return r;
	if (overlaps(h->table_offset, h->table_size, h->bitmap_offset, h->bitmap_size) ||
	    overlaps(h->table_offset, h->table_size, h->journal_offset, h->journal_size) ||
	    overlaps(h->bitmap_offset, h->bitmap_size, h->journal_offset, h->journal_size))
		BAD("metadata regions overlap");
	return 0;
}

/* The snapshot and refcount tables, present exactly when the feature says so. */
static int check_snapshots(const struct ucow_hdr *h, uint64_t file_size, char *why,
			   size_t whylen)
{
	if (!(h->incompat & UCOW_INCOMPAT_SNAPSHOTS)) {
		if (h->snap_table_offset || h->snap_table_size || h->nb_snapshots ||
		    h->refcount_offset || h->refcount_size || h->parent_snapshot)
			BAD("snapshot fields set without the snapshot feature");
	} else if (!h->nb_snapshots) {
		/* the feature stays on after the last delete when an apply moved the table */
		if (h->snap_table_offset || h->snap_table_size || h->refcount_offset ||
		    h->refcount_size || h->parent_snapshot)
			BAD("snapshot fields set but no snapshots");
		if (h->table_offset < h->data_offset)
			BAD("snapshot feature set without snapshots or a moved table");
	} else {
		if (h->nb_snapshots > UCOW_MAX_SNAPSHOTS)
			BAD("invalid snapshot count %u", h->nb_snapshots);
		if (h->snap_table_size < (uint64_t)h->nb_snapshots * UCOW_SNAP_ENTRY ||
		    h->snap_table_size > UCOW_MAX_SNAP_TABLE ||
		    h->snap_table_offset < h->data_offset || h->snap_table_offset % h->chunk_size ||
		    !fits(h->snap_table_offset, h->snap_table_size, file_size))
			BAD("invalid snapshot table extent at %llu size %llu",
			    (unsigned long long)h->snap_table_offset,
			    (unsigned long long)h->snap_table_size);
		if (h->refcount_size % 4 || !h->refcount_size ||
		    h->refcount_size > UCOW_MAX_REFCOUNT ||
		    h->refcount_offset < h->data_offset || h->refcount_offset % h->chunk_size ||
		    !fits(h->refcount_offset, h->refcount_size, file_size))
			BAD("invalid refcount table extent at %llu size %llu",
			    (unsigned long long)h->refcount_offset,
			    (unsigned long long)h->refcount_size);
	}
	return 0;
}

/* The backing file's format and name (a plain name, NUL-free, zero-padded). */
static int check_backing(const uint8_t *b, struct ucow_hdr *h, char *why, size_t whylen)
{
	if (h->backing_fmt > COW_FMT_QCOW2)
		BAD("invalid backing format %u", h->backing_fmt);
	if (h->backing_len > UCOW_BACKING_NAME_MAX)
		BAD("backing file name too long (%u bytes)", h->backing_len);
	if (!h->backing_len != !h->backing_fmt)
		BAD("backing file name and format disagree");
	memcpy(h->backing, b + UCOW_BACKING_NAME_OFF, h->backing_len);
	h->backing[h->backing_len] = 0;
	if (strlen(h->backing) != h->backing_len)
		BAD("backing file name contains a NUL byte");
	for (unsigned i = UCOW_BACKING_NAME_OFF + h->backing_len;
	     i <= UCOW_BACKING_NAME_OFF + UCOW_BACKING_NAME_MAX; i++)
		if (b[i])
			BAD("bytes after the backing file name are not zero");
	return 0;
}

int ucow_hdr_decode(const uint8_t *b, uint64_t file_size, struct ucow_hdr *h, char *why,
		    size_t whylen)
{
	uint8_t tmp[UCOW_HDR_SIZE];
	int r;

	memset(h, 0, sizeof(*h));
	if (memcmp(b, UCOW_MAGIC, 8))
		BAD("bad magic");
	h->version = get_le32(b + 8);
	if (h->version != UCOW_VERSION) {
		snprintf(why, whylen, "unsupported format version %u", h->version);
		return -ENOTSUP;
	}
	if (get_le32(b + 12) != UCOW_HDR_SIZE)
		BAD("bad header size %u", get_le32(b + 12));
	memcpy(tmp, b, UCOW_HDR_SIZE);
	memset(tmp + 44, 0, 4);
	if (ucow_crc32c(0, tmp, UCOW_HDR_SIZE) != get_le32(b + 44))
		BAD("header checksum mismatch");
	decode_fields(b, h);
	if ((r = check_features(b, h, why, whylen)) || (r = check_geometry(h, why, whylen)) ||
	    (r = check_regions(h, file_size, why, whylen)) ||
	    (r = check_snapshots(h, file_size, why, whylen)))
		return r;
	return check_backing(b, h, why, whylen);
}

int ucow_hdr_init(struct ucow_hdr *h, uint64_t size, uint32_t chunk, uint32_t block,
		  uint32_t journal, char *why, size_t whylen)
{
	memset(h, 0, sizeof(*h));
	if (!chunk)
		chunk = COW_DEFAULT_CHUNK;
	if (!block)
		block = chunk < COW_DEFAULT_BLOCK ? chunk : COW_DEFAULT_BLOCK;
	if (!journal)
		journal = UCOW_DEFAULT_JOURNAL;
	if (!is_pow2(chunk) || chunk < UCOW_MIN_CHUNK || chunk > UCOW_MAX_CHUNK) {
		snprintf(why, whylen, "chunk_size must be a power of two from 64k to 64M");
		return -EINVAL;
	}
	if (!is_pow2(block) || block < UCOW_MIN_BLOCK || block > chunk ||
	    chunk / block > UCOW_MAX_BPC) {
		snprintf(why, whylen,
			 "block_size must be a power of two from 512 to chunk_size, "
			 "at most %u blocks per chunk", UCOW_MAX_BPC);
		return -EINVAL;
	}
	if (journal % UCOW_JBLOCK || journal < UCOW_MIN_JOURNAL || journal > UCOW_MAX_JOURNAL) {
		snprintf(why, whylen, "journal size must be a multiple of 4k from 16k to 64M");
		return -EINVAL;
	}
	if (!size) {
		snprintf(why, whylen, "image size must be greater than zero");
		return -EINVAL;
	}
	h->version = UCOW_VERSION;
	h->virtual_size = size;
	h->chunk_size = chunk;
	h->block_size = block;
	h->nr_chunks = (size + chunk - 1) / chunk;
	h->table_offset = UCOW_HDR_SIZE * UCOW_HDR_SLOTS;
	h->table_size = align_up(h->nr_chunks * 8, UCOW_META_ALIGN);
	if (size > UCOW_MAX_VSIZE || h->table_size > UCOW_MAX_TABLE) {
		snprintf(why, whylen, "image size too large for chunk size %u (at most %llu bytes)",
			 chunk, (unsigned long long)(UCOW_MAX_TABLE / 8 * chunk));
		return -ERANGE;
	}
	h->bitmap_offset = h->table_offset + h->table_size;
	h->bitmap_size = align_up(h->nr_chunks * ucow_bm_bytes(chunk, block), UCOW_META_ALIGN);
	if (h->bitmap_size > UCOW_MAX_BITMAP) {
		snprintf(why, whylen, "image too large for block size %u", block);
		return -ERANGE;
	}
	h->journal_offset = h->bitmap_offset + h->bitmap_size;
	h->journal_size = journal;
	h->data_offset = align_up(h->journal_offset + h->journal_size, chunk);
	h->journal_seq = 1;
	h->generation = 1;
	return 0;
}
