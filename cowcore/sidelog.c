/* SPDX-License-Identifier: MIT */
/*
 * The side log, for servers that promise to survive their own death (ublk --recoverable).
 *
 * The engine journals a new mapping at the next flush, so a process that dies loses the
 * mappings of writes it acknowledged since, although their data is in the file (in the page
 * cache, or in the device). With a side log attached (COW_OPEN_SIDELOG), every journal
 * record is also written to it before the request it belongs to completes: one pwrite to a
 * file on tmpfs, no sync. The next process that opens the image with the same side log
 * folds those records in, as if the dead process had flushed just before it died. The log
 * survives the death of the process, not of the machine: after a power loss tmpfs is empty
 * (and the device is gone), and the image's own journal holds what the last flush made
 * durable, which is all a flush promised.
 *
 * DESIGN NOTES
 *   L1. Records (little endian) fill slots of one size: u32 magic "UCSL", u32 crc32c of the
 *       record with this field 0, u64 header generation, u64 seq, u64 chunk, u64 entry,
 *       then the chunk's bitmap (bm_words u64). Records are absolute, like the journal's
 *       (J3): replaying more of them, in order, over a state they lead from gives the state
 *       the last one left.
 *   L2. The log is a series of runs. Each header write of generation G first appends a run
 *       of G (seq 0, 1, ...) holding a copy of every record not committed yet, then writes
 *       the header; later records extend that run. Whether the header write lands or not,
 *       the run of the generation on disk holds every record that disk state lacks (a
 *       checkpoint writes only committed records into the table, J5). When the header
 *       write leaves nothing uncommitted, the log is emptied.
 *   L3. A fold applies the run whose generation is the one of the header on disk (records
 *       with seq 0, 1, ... in a row; the first damaged record ends it), and only if the
 *       image was left dirty. Anyone else who opened the image read-write since wrote a
 *       header, so a stale log never folds. Folded records are validated like the
 *       journal's, then the whole table is (meta.c), and a checkpoint makes them durable
 *       (data synced first, J5) before anything else happens to the image.
 *   L4. A record that cannot be written (the log's file system is full, say) turns the
 *       image write-through: every later write, and the one whose record failed, completes
 *       only after a flush (commit.c req_done). So does a header write that fails
 *       (journal.c jnl_write_header): the disk may then hold either generation, and later
 *       records would go to one run only.
 *   L5. The log is bounded (max_records below): the writer stops at the bound (write-through
 *       as L4) and a fold refuses a larger file, skipping holes while it looks for the run.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sidelog.h"

#define SIDELOG_MAGIC 0x4c534355u	/* "UCSL" */
#define SIDELOG_HDR 40
#define UCOW_BM_MAX_BYTES (UCOW_MAX_BPC / 8)

static uint32_t rec_bytes(struct cow_image *img) { return SIDELOG_HDR + img->bm_words * 8; }

/*
 * L5. A bound on the log, so a fold reads a bounded amount whatever the file holds: between
 *     two truncations the log holds the runs since the last header write that left nothing
 *     uncommitted, i.e. at most the records of a few journals plus the pending ones, each
 *     pending one for a chunk write. The writer never passes SIDELOG_MAX_RECORDS (it turns
 *     the image write-through instead, as L4), and a fold refuses a log larger than that:
 *     4 x (nr_chunks + the records a full journal holds) + 4096 records.
 */
static uint64_t max_records(struct cow_image *img)
{
	uint64_t per_block = (UCOW_JBLOCK - UCOW_JHDR) / (UCOW_JREC_HDR + img->bm_words * 8);
	uint64_t journal = img->hdr.journal_size / UCOW_JBLOCK * per_block;
	return 4 * (img->nr_chunks + journal) + 4096;
}

/* L1, L4. Under img->lock. */
void sidelog_append(struct cow_image *img, uint64_t chunk, uint64_t entry, const uint64_t *bm)
{
	uint32_t size = rec_bytes(img);
	uint8_t buf[SIDELOG_HDR + UCOW_BM_MAX_BYTES];
	if (img->sidelog_fd < 0 || __atomic_load_n(&img->sidelog_failed, __ATOMIC_RELAXED))
		return;
	if (size > sizeof(buf)) {	/* cannot happen: the header limits blocks per chunk */
		__atomic_store_n(&img->sidelog_failed, true, __ATOMIC_RELAXED);
		return;
	}
	if (img->sidelog_slot >= max_records(img)) {	/* L5 */
		__atomic_store_n(&img->sidelog_failed, true, __ATOMIC_RELAXED);
		img_set_err(img, "%s: the side log is full (%llu records): writes are "
			    "write-through from now on", img->path,
			    (unsigned long long)img->sidelog_slot);
		return;
	}
	memset(buf, 0, size);
	put_le32(buf, SIDELOG_MAGIC);
	put_le64(buf + 8, img->sidelog_gen);
	put_le64(buf + 16, img->sidelog_seq);
	put_le64(buf + 24, chunk);
	put_le64(buf + 32, entry);
	for (uint32_t w = 0; w < img->bm_words; w++)
		put_le64(buf + SIDELOG_HDR + w * 8, bm[w]);
	put_le32(buf + 4, ucow_crc32c(0, buf, size));
	if (io_pwrite_all(img->sidelog_fd, buf, size, img->sidelog_slot * size)) {
		__atomic_store_n(&img->sidelog_failed, true, __ATOMIC_RELAXED);
		img_set_err(img, "%s: the side log cannot be written: writes are write-through "
			    "from now on", img->path);
		return;
	}
	img->sidelog_slot++;
	img->sidelog_seq++;
}

/* L2: a header of generation gen is about to be written. */
void sidelog_new_run(struct cow_image *img, uint64_t gen, const struct jrec *pending, size_t n)
{
	if (img->sidelog_fd < 0)
		return;
	img->sidelog_gen = gen;
	img->sidelog_seq = 0;
	for (size_t i = 0; i < n; i++)
		sidelog_append(img, pending[i].chunk, pending[i].entry, pending[i].bm);
}

/* L2: the header is written; with nothing left uncommitted the log starts again. */
void sidelog_header_written(struct cow_image *img, bool uncommitted_left)
{
	if (img->sidelog_fd < 0 || uncommitted_left)
		return;
	img->sidelog_slot = 0;
	img->sidelog_seq = 0;
	if (ftruncate(img->sidelog_fd, 0) < 0) {
		/* harmless: the next records overwrite from slot 0, a fold stops at the end of
		 * their run (seq), and older runs carry other generations */
	}
}

/* L3: at open, after the journal's replay, before the table is validated. */
int sidelog_fold(struct cow_image *img, uint64_t generation, uint64_t *nrec)
{
	uint32_t size = rec_bytes(img);
	uint8_t buf[SIDELOG_HDR + UCOW_BM_MAX_BYTES];
	int r = 0;

	if (size > sizeof(buf))
		return -EUCLEAN;
	/* L5: never read more than a log of this image can hold */
	struct stat st;
	if (fstat(img->sidelog_fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size / size > max_records(img)) {
		img_set_err(img, "%s: the side log is %llu bytes, more than the %llu records a "
			    "side log of this image can hold", img->path,
			    (unsigned long long)st.st_size, (unsigned long long)max_records(img));
		return -EUCLEAN;
	}

	uint64_t seq = 0;
	for (uint64_t i = 0; i < max_records(img); i++) {
		if (!seq) {
			/* before the run: skip holes (a sparse log reads as no records) */
			off_t d = lseek(img->sidelog_fd, (off_t)(i * size), SEEK_DATA);
			if (d < 0 && errno == ENXIO)
				break;	/* no data after i (other errors: pread decides) */
			if (d > 0 && (uint64_t)d / size > i)
				i = (uint64_t)d / size;
		}
		ssize_t got = pread(img->sidelog_fd, buf, size, (off_t)(i * size));
		if (got != (ssize_t)size)
			break;
		uint32_t crc = get_le32(buf + 4);
		memset(buf + 4, 0, 4);
		bool ok = get_le32(buf) == SIDELOG_MAGIC && ucow_crc32c(0, buf, size) == crc;
		if (!ok && seq)
			break;		/* a damaged record ends the run */
		if (!ok || get_le64(buf + 8) != generation) {
			if (seq)
				break;	/* past the run */
			continue;	/* a run of another generation */
		}
		if (get_le64(buf + 16) != seq)
			break;
		seq++;
		uint64_t c = get_le64(buf + 24), e = get_le64(buf + 32);
		if (c >= img->nr_chunks || !ent_ok(img, e)) {
			img_set_err(img, "%s: side log record %llu is invalid", img->path,
				    (unsigned long long)i);
			return -EUCLEAN;
		}
		r = meta_apply(img, c, e, buf + SIDELOG_HDR);
		if (r)
			return r;
		(*nrec)++;
	}
	return 0;
}
