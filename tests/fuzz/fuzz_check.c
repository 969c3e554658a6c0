/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target 3: cow_check of a damaged image, opened as tools/img_check.c does: read-only
 * with its chain, and when that says -EUCLEAN, with COW_OPEN_CHECK. The input is the image
 * file; checksums are repaired (fz_fix_image), so the damage is in what they cover.
 */
#include <errno.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_path("img");
	struct cow_check_result res;
	struct cow_image *img;
	struct cow_info in;
	uint8_t *buf = malloc(size ? size : 1);
	int r;

	if (!buf)
		abort();
	memcpy(buf, data, size);
	fz_fix_image(buf, size);
	fz_write_file(path, buf, size);
	r = fz_open(path, COW_OPEN_RDONLY, buf, size, &img);
	if (r == -EUCLEAN)
		r = fz_open(path, COW_OPEN_CHECK, buf, size, &img);
	if (!r) {
		cow_get_info(img, &in);
		memset(&res, 0, sizeof(res));
		cow_check(img, &res);
		cow_close(img);
	}
	free(buf);
	return 0;
}
