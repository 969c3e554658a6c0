/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target 2: reads at fuzzed offsets of an opened image (read-only, with its backing
 * chain), through cow_rw on the sync backend, and cow_map of the same ranges.
 *
 * Input: the image file, then a trailer of FZ_OPS x (u64 offset, u32 length). The first
 * op is used as it is (lengths capped at 1 MiB: the bounds checks see hostile values);
 * the others are folded into the image (offset modulo size + 1, length up to 256 KiB).
 * Checksums are repaired (fz_fix_image).
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"

#define FZ_OPS 4
#define FZ_TRAILER (FZ_OPS * 12)

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
	uint64_t off[FZ_OPS], len[FZ_OPS];
	struct cow_image *img;
	struct cow_info in;
	uint8_t *buf;

	if (size < FZ_TRAILER)
		return 0;
	size -= FZ_TRAILER;
	buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	memcpy(buf, data, size);
	fz_fix_image(buf, size);
	fz_write_file(path, buf, size);
	if (fz_open(path, COW_OPEN_RDONLY, buf, size, &img)) {
		free(buf);
		return 0;
	}
	cow_get_info(img, &in);
	for (int i = 0; i < FZ_OPS; i++) {
		const uint8_t *t = data + size + i * 12;
		uint64_t o = fz_le64(t), l = fz_le32(t + 8);
		if (i == 0) {
			off[i] = o;
			len[i] = l > (1u << 20) ? 1u << 20 : l;
			continue;
		}
		off[i] = o % (in.virtual_size + 1);
		uint64_t room = in.virtual_size - off[i];
		len[i] = l % ((room < (256u << 10) ? room : 256u << 10) + 1);
	}
	fz_reads(img, off, len, FZ_OPS);
	cow_close(img);
	free(buf);
	return 0;
}
