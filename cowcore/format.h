/* SPDX-License-Identifier: MIT */
/*
 * The ucow v1 on-disk format. Documentation/format.md is the prose specification; this
 * comment mirrors it. All integers are little-endian. Offsets are bytes from file start.
 *
 * File layout (every region 4 KiB aligned; data chunk aligned):
 *   0      header slot A (4096 B)   \ two copies, written alternately; the valid one with
 *   4096   header slot B (4096 B)   / the higher generation wins (a torn write loses nothing)
 *   table_offset    lookup table: nr_chunks x u64 entry
 *   bitmap_offset   block bitmaps: nr_chunks x bm_bytes (bit i = block i holds data here)
 *   journal_offset  journal: journal_size / 4096 blocks
 *   data_offset     data chunks; physical chunk number p lives at p * chunk_size
 *
 * Header slot (4096 bytes):
 *   0    u8[8]  magic "UCOW\r\n\x1a\n"
 *   8    u32    version (1)
 *   12   u32    header_size (4096)
 *   16   u64    incompat_features   unknown bit set -> refuse to open
 *   24   u64    compat_features     unknown bit set -> ignore
 *   32   u64    autoclear_features  unknown bit set -> clear it on read-write open
 *   40   u32    flags: bit 0 DIRTY (journal may hold records), bit 1 CORRUPT
 *   44   u32    crc32c of the 4096-byte slot with this field zero
 *   48   u64    virtual_size
 *   56   u32    chunk_size (power of two, 64 KiB .. 64 MiB)
 *   60   u32    block_size (power of two, 512 .. chunk_size; chunk/block <= 1024)
 *   64   u64    nr_chunks = ceil(virtual_size / chunk_size)
 *   72   u64    table_offset      80  u64 table_size
 *   88   u64    bitmap_offset     96  u64 bitmap_size
 *   104  u64    journal_offset    112 u64 journal_size
 *   120  u64    journal_seq: sequence number of journal block 0 since the last checkpoint
 *   128  u64    snap_table_offset 136 u64 snap_table_size   (with INCOMPAT_SNAPSHOTS)
 *   144  u32    nb_snapshots      148 u32 parent_snapshot: id the current state descends from
 *   152  u64    refcount_offset   160 u64 refcount_size     (with INCOMPAT_SNAPSHOTS)
 *   168  u64    data_offset
 *   176  u32    backing_fmt: 0 none, 1 raw, 2 ucow, 3 qcow2
 *   180  u16    backing_name_len (<= 1023)
 *   182  u16    reserved (0)
 *   184  u64    generation (higher = newer slot)
 *   192  ..511  reserved (0)
 *   512  u8[1024] backing file name (backing_name_len bytes, rest 0)
 *   1536 ..4095 reserved (0)
 *
 * Table entry (u64):
 *   bits 0-47  physical chunk number p (0 = not allocated: the data comes from the backing
 *              image, or is zero without one)
 *   bit 62     ZERO: the whole chunk reads as zeros (p must be 0)
 *   bit 63     SHARED: a snapshot references p too (a write copies first, or takes an
 *              underlay)
 *   bit 59     UNDER (with INCOMPAT_UNDERLAY, current table only): blocks whose bit is clear
 *              read through the chunk the parent snapshot's frozen entry maps, where its
 *              frozen bitmap has the bit (format.md "Underlays"); p != 0
 *   bits 48-58, 60-61 reserved (0)
 * A COMPRESSED entry (bit 60, with INCOMPAT_COMPRESSED): the chunk's data is one raw deflate
 * stream of chunk_size bytes (blocks whose bit is set read from it):
 *   bits 0-47  the stream's first byte / 512      bits 48-59  its 512-byte sectors - 1
 *   bit 60     COMPRESSED   bit 63 SHARED   bits 61, 62 zero
 *   the sectors lie in one physical chunk (the "pack"), which is the entry's p for every
 *   rule (allocation, refcounts); several compressed entries may share a pack, never a
 *   normal entry or metadata.
 *
 * Journal block (4096 bytes):
 *   0  u32 magic "UCJB"   4 u32 crc32c (block with this field zero)   8 u64 seq
 *   16 u32 nr_records     20 u32 bytes used (header + records)
 *   24 records, each: u16 type (1 = MAP), u16 size (24 + bm_bytes), u32 reserved,
 *      u64 chunk (virtual), u64 entry, then bm_bytes of the chunk's bitmap.
 *
 * Metadata extents in the data area (with INCOMPAT_SNAPSHOTS): the snapshot table, the
 * refcount table, each snapshot's frozen table + bitmap, and (after an apply) the current
 * table + bitmap are chunk-aligned runs of data chunks; see Documentation/snapshots.md.
 *
 * Snapshot table entry (256 bytes): 0 u32 id, 4 u32 parent id (0 none), 8 u64 date (s),
 *   16 u32 date (ns), 20 u16 name_len, 22 u16 reserved, 24 u64 virtual_size,
 *   32 u64 table_offset (frozen table; its bitmap follows at table_offset + table_size),
 *   40 u64 extent_size, 48..63 reserved, 64 u8[128] name, 192..251 reserved,
 *   252 u32 crc32c of the entry with this field zero.
 * Refcount table: u32 per physical chunk: how many snapshots map it.
 *
 *   Replay starts at the block of journal_seq (block 0, or journal_seq mod the block count
 *   with INCOMPAT_JRING), wraps, and stops at the first block whose magic, crc or seq
 *   (journal_seq + blocks read) does not match. Records hold absolute values, so replaying
 *   one twice is harmless.
 */
#ifndef COWCORE_FORMAT_H
#define COWCORE_FORMAT_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

#define UCOW_MAGIC "UCOW\r\n\x1a\n"
#define UCOW_VERSION 1
#define UCOW_HDR_SIZE 4096u
#define UCOW_HDR_SLOTS 2
#define UCOW_META_ALIGN 4096u
#define UCOW_BACKING_NAME_OFF 512
#define UCOW_BACKING_NAME_MAX 1023

#define UCOW_FLAG_DIRTY   0x1u
#define UCOW_FLAG_CORRUPT 0x2u
#define UCOW_FLAGS_KNOWN  0x3u

/* feature bits */
#define UCOW_INCOMPAT_SNAPSHOTS 0x1ull	/* snapshot table + refcount table in use */
#define UCOW_INCOMPAT_COMPRESSED 0x2ull	/* table entries may be COMPRESSED */
#define UCOW_INCOMPAT_JRING 0x4ull	/* journal block of seq s at s mod the block count */
#define UCOW_INCOMPAT_UNDERLAY 0x8ull	/* current entries may be UNDER (underlays) */
#define UCOW_INCOMPAT_KNOWN (UCOW_INCOMPAT_SNAPSHOTS | UCOW_INCOMPAT_COMPRESSED | \
			     UCOW_INCOMPAT_JRING | UCOW_INCOMPAT_UNDERLAY)
#define UCOW_MAX_JSEQ (1ull << 62)	/* journal_seq: larger is corrupt (room to count on) */
#define UCOW_COMPAT_COPY_ON_READ 0x1ull	/* read-write opens copy on read */
#define UCOW_COMPAT_KNOWN UCOW_COMPAT_COPY_ON_READ
#define UCOW_AUTOCLEAR_KNOWN 0ull

#define UCOW_E_PCN_MASK ((1ull << 48) - 1)
#define UCOW_E_ZERO     (1ull << 62)
#define UCOW_E_SHARED   (1ull << 63)
#define UCOW_E_UNDER    (1ull << 59)	/* a plain entry's other blocks read through the parent
					 * snapshot's chunk (format.md "Underlays") */
#define UCOW_E_RESERVED (~(UCOW_E_PCN_MASK | UCOW_E_ZERO | UCOW_E_SHARED | UCOW_E_UNDER))
#define UCOW_E_BUSY     (1ull << 61)	/* in memory only: a chunk operation is under way */
#define UCOW_E_COMPRESSED (1ull << 60)
#define UCOW_E_CSECT_SHIFT 48
#define UCOW_E_CSECT_MASK (0xfffull << UCOW_E_CSECT_SHIFT)	/* sectors - 1 */
#define UCOW_E_CRESERVED (~(UCOW_E_PCN_MASK | UCOW_E_CSECT_MASK | UCOW_E_COMPRESSED | \
			    UCOW_E_SHARED))
#define UCOW_MAX_CSECTORS 4096u		/* a stream is at most 2 MiB */

#define UCOW_JBLOCK 4096u
#define UCOW_JMAGIC 0x424a4355u	/* "UCJB" */
#define UCOW_JHDR 24u
#define UCOW_JREC_MAP 1
#define UCOW_JREC_HDR 24u

/* hard limits: a hostile image cannot make us allocate or loop more than this */
#define UCOW_MIN_CHUNK (64u << 10)
#define UCOW_MAX_CHUNK (64u << 20)
#define UCOW_MIN_BLOCK 512u
#define UCOW_MAX_BPC 1024u		/* blocks per chunk */
#define UCOW_MAX_TABLE (128ull << 20)	/* 16 Mi entries: 16 TiB at 1 MiB chunks */
#define UCOW_MAX_BITMAP (512ull << 20)
#define UCOW_MIN_JOURNAL (16u << 10)
#define UCOW_MAX_JOURNAL (64u << 20)
#define UCOW_DEFAULT_JOURNAL (4u << 20)
#define UCOW_MAX_SNAPSHOTS 65535
#define UCOW_SNAP_ENTRY 256u
#define UCOW_SNAP_NAME_MAX 127
#define UCOW_MAX_VSIZE (UCOW_MAX_TABLE / 8 * (uint64_t)UCOW_MAX_CHUNK)
#define UCOW_MAX_SNAP_TABLE (64ull << 20)
#define UCOW_MAX_REFCOUNT (256ull << 20)
/* the fixed regions at their largest, rounded up to the largest chunk: 768 MiB */
#define UCOW_MAX_DATA_OFFSET 						\
	((UCOW_HDR_SIZE * UCOW_HDR_SLOTS + UCOW_MAX_TABLE + UCOW_MAX_BITMAP +	\
	  UCOW_MAX_JOURNAL + UCOW_MAX_CHUNK - 1) / UCOW_MAX_CHUNK * UCOW_MAX_CHUNK)
/* a header generation above this is refused (a write never wraps the counter to 0) */
#define UCOW_MAX_GENERATION (1ull << 63)

struct ucow_hdr {
	uint32_t version;
	uint64_t incompat, compat, autoclear;
	uint32_t flags;
	uint64_t virtual_size;
	uint32_t chunk_size, block_size;
	uint64_t nr_chunks;
	uint64_t table_offset, table_size;
	uint64_t bitmap_offset, bitmap_size;
	uint64_t journal_offset, journal_size;
	uint64_t journal_seq;
	uint64_t snap_table_offset, snap_table_size;
	uint32_t nb_snapshots;
	uint32_t parent_snapshot;
	uint64_t refcount_offset, refcount_size;
	uint64_t data_offset;
	uint32_t backing_fmt;
	uint16_t backing_len;
	uint64_t generation;
	char backing[UCOW_BACKING_NAME_MAX + 1];
};

/* bytes of bitmap per chunk: a whole number of u64 words */
static inline uint32_t ucow_bm_bytes(uint32_t chunk_size, uint32_t block_size)
{
	uint32_t bpc = chunk_size / block_size;
	return ((bpc + 63) / 64) * 8;
}

/* CRC32C (Castagnoli), continuing from crc: every checksum of the format. */
uint32_t ucow_crc32c(uint32_t crc, const void *buf, size_t len);
void ucow_hdr_encode(const struct ucow_hdr *h, uint8_t *buf);
/* Decode and validate one slot against file_size. 0, or -EUCLEAN / -ENOTSUP with why. */
int ucow_hdr_decode(const uint8_t *buf, uint64_t file_size, struct ucow_hdr *h, char *why,
		    size_t whylen);
/* Fill a header for a new image (layout computed here). */
int ucow_hdr_init(struct ucow_hdr *h, uint64_t size, uint32_t chunk, uint32_t block,
		  uint32_t journal, char *why, size_t whylen);

/* A COMPRESSED entry's stream: byte offset in the file, and bytes (whole sectors). */
static inline uint64_t ucow_e_coff(uint64_t e) { return (e & UCOW_E_PCN_MASK) << 9; }
static inline uint32_t ucow_e_clen(uint64_t e)
{
	return (uint32_t)(((e & UCOW_E_CSECT_MASK) >> UCOW_E_CSECT_SHIFT) + 1) << 9;
}
static inline uint64_t ucow_e_compressed(uint64_t off, uint32_t len)	/* both sector multiples */
{
	return UCOW_E_COMPRESSED | (off >> 9) | ((uint64_t)((len >> 9) - 1) << UCOW_E_CSECT_SHIFT);
}
/* A plain entry with UNDER (bit 59 of a compressed entry is part of its sector count). */
static inline bool ucow_e_under(uint64_t e)
{
	return (e & (UCOW_E_COMPRESSED | UCOW_E_UNDER)) == UCOW_E_UNDER;
}
/* The physical chunk an entry uses (its pack, for a compressed one); 0: none. */
static inline uint64_t ucow_e_pcn(uint64_t e, uint32_t chunk_shift)
{
	return (e & UCOW_E_COMPRESSED) ? ucow_e_coff(e) >> chunk_shift : e & UCOW_E_PCN_MASK;
}
/* The entry's bits are a valid combination (nothing reserved; a compressed stream within
 * one chunk). Ranges against the file are the caller's. */
static inline bool ucow_e_wellformed(uint64_t e, uint32_t chunk_shift)
{
	if (!(e & UCOW_E_COMPRESSED))
		return !(e & UCOW_E_RESERVED) && !((e & UCOW_E_ZERO) && (e & UCOW_E_PCN_MASK)) &&
		       (!(e & UCOW_E_UNDER) || (e & UCOW_E_PCN_MASK));
	uint64_t o = ucow_e_coff(e), end = o + ucow_e_clen(e);
	return !(e & UCOW_E_CRESERVED) && (o >> chunk_shift) == ((end - 1) >> chunk_shift) &&
	       ucow_e_clen(e) < (1u << chunk_shift);
}

static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = v >> (8 * i);
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (8 * i);
}
static inline uint16_t get_le16(const uint8_t *p) { return p[0] | (uint16_t)p[1] << 8; }
static inline uint32_t get_le32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p)
{
	return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

#endif
