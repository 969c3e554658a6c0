/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target 1: open a ucow image (read-only, then read-write), get its info and its
 * snapshot list, close it. The input is the image file; the harness repairs the checksums
 * of header slots, journal blocks and snapshot entries first (fz_fix_image).
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_setup_backing();
	return 0;
}

static void use(struct cow_image *img)
{
	struct cow_snap_info *v;
	struct cow_info in;
	uint32_t n;

	cow_get_info(img, &in);
	if (!cow_snapshot_list(img, &v, &n))
		free(v);
	(void)cow_errmsg(img);
	for (struct cow_image *b = cow_backing_image(img); b; b = cow_backing_image(b))
		cow_get_info(b, &in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	const char *path = fz_path("img");
	struct cow_image *img;

	if (!buf)
		abort();
	memcpy(buf, data, size);
	fz_fix_image(buf, size);
	fz_write_file(path, buf, size);
	if (!fz_open(path, COW_OPEN_RDONLY, buf, size, &img)) {
		use(img);
		cow_close(img);
	}
	if (!fz_open(path, 0, buf, size, &img)) {
		use(img);
		cow_close(img);
	}
	free(buf);
	return 0;
}
