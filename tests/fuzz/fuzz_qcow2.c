/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target 7: a qcow2 image (issue 12: cowcore reads qcow2), opened read-only without its
 * backing chain (a hostile header may name any file), its info, cow_map over it and every
 * byte of it (at most 8 MiB) read through the engine: headers, L1/L2 tables, zero and
 * compressed (zlib, zstd) clusters; then its internal snapshot table listed, and the first
 * snapshot opened (its L1 table) and read. Input: the qcow2 file as it is (qcow2 has no
 * checksums to repair).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_path("img.qcow2");
	struct cow_image *img;
	struct cow_info in;
	char err[COW_ERRLEN];

	fz_write_file(path, data, size);
	if (cow_open(path, &(struct cow_open_opts){ .fmt = COW_FMT_QCOW2,
		     .flags = COW_OPEN_RDONLY | COW_OPEN_NOCHAIN }, &img, err, sizeof(err)))
		return 0;
	cow_get_info(img, &in);
	(void)cow_errmsg(img);
	uint64_t off = 0, run;
	for (int i = 0; i < 4096 && off < in.virtual_size; i++) {
		if (cow_map(img, off, in.virtual_size - off, &run, NULL) < 0 || !run)
			break;
		off += run;
	}
	fz_read_all(img, 8u << 20);
	struct cow_snap_info *v = NULL;
	uint32_t n = 0;
	char key[128] = "";
	if (cow_snapshot_list(img, &v, &n) == 0 && n)
		snprintf(key, sizeof(key), "%s", v[0].name[0] ? v[0].name : "1");
	free(v);
	cow_close(img);
	if (key[0] && cow_open(path, &(struct cow_open_opts){ .fmt = COW_FMT_QCOW2,
			       .flags = COW_OPEN_RDONLY | COW_OPEN_NOCHAIN, .snapshot = key },
			       &img, err, sizeof(err)) == 0) {
		fz_read_all(img, 8u << 20);
		cow_close(img);
	}
	return 0;
}
