/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target 6: the snapshot table, refcount table and frozen tables of an image with the
 * snapshot feature. Read-only: open, list, view each of the first snapshots (cow_open with
 * .snapshot, by name and by id) and read it, cow_check. Read-write: open, apply the first
 * snapshot, delete the last, create one, reclaim, grow past the table's room and shrink
 * (cow_resize), close. The input is the image file;
 * checksums are repaired (fz_fix_image).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"

#define FZ_VIEWS 3

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_setup_backing();
	return 0;
}

static void view(const char *path, const char *snap, unsigned chain)
{
	struct cow_image *img;
	char err[COW_ERRLEN];

	if (!cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_RDONLY | chain,
						    .snapshot = snap }, &img, err, sizeof(err))) {
		fz_read_all(img, 4u << 20);
		cow_close(img);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_path("img");
	uint8_t *buf = malloc(size ? size : 1);
	struct cow_check_result res = { 0 };
	struct cow_snap_info *v;
	struct cow_image *img;
	unsigned chain;
	char id[16];
	uint32_t n;

	if (!buf)
		abort();
	memcpy(buf, data, size);
	fz_fix_image(buf, size);
	fz_write_file(path, buf, size);
	chain = fz_backing_escapes(buf, size) ? COW_OPEN_NOCHAIN : 0;
	if (!fz_open(path, COW_OPEN_RDONLY, buf, size, &img)) {
		if (!cow_snapshot_list(img, &v, &n)) {
			for (uint32_t i = 0; i < n && i < FZ_VIEWS; i++) {
				view(path, v[i].name, chain);
				snprintf(id, sizeof(id), "%u", v[i].id);
				view(path, id, chain);
			}
			free(v);
		}
		cow_check(img, &res);
		cow_close(img);
	}
	if (!fz_open(path, 0, buf, size, &img)) {
		if (!cow_snapshot_list(img, &v, &n)) {
			if (n) {
				snprintf(id, sizeof(id), "%u", v[0].id);
				cow_snapshot_apply(img, id);
				snprintf(id, sizeof(id), "%u", v[n - 1].id);
				cow_snapshot_delete(img, id);
			}
			free(v);
			cow_snapshot_create(img, "fz");
			cow_reclaim(img, 0);
			/* a grow past the table's room (a new extent, the frozen copies again),
			 * over the old end's chunk, then a shrink below it */
			struct cow_info in;
			cow_get_info(img, &in);
			cow_resize(img, in.virtual_size + 600 * (uint64_t)in.chunk_size + 1000, 0);
			cow_resize(img, in.virtual_size / 2 + 1, COW_RESIZE_SHRINK);
			cow_reclaim(img, 0);
		}
		cow_close(img);
	}
	free(buf);
	return 0;
}
