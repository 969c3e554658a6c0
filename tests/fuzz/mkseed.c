/* SPDX-License-Identifier: MIT */
/*
 * The seeds the command-line tool cannot make (tests/fuzz/make-seeds.sh calls it):
 *   mkseed dirty OUT     an image left DIRTY by a process that died, journal full of records
 *                        (its all-zero tail cut off)
 *   mkseed journal OUT   that image's journal region: the seed of fuzz_journal
 *   mkseed sidelog OUT   the side log a dying process left: the seed of fuzz_sidelog
 *   mkseed fix IN OUT    IN with its checksums repaired as the image targets do
 *                        (fz_fix_image): a fuzzer's image input that ucow check can read
 * The images are the ones fuzz_journal and fuzz_sidelog build at start-up (same calls,
 * same bytes), so the seeds fit them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"

int main(int argc, char **argv)
{
	uint8_t *b;
	size_t len;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: mkseed dirty|journal|sidelog OUT | fix IN OUT\n");
		return 2;
	}
	if (!strcmp(argv[1], "dirty") || !strcmp(argv[1], "journal")) {
		const char *p = fz_path("dirty.ucow");
		uint64_t jo, js = 0;
		if (fz_make_dirty(p))
			return 1;
		b = fz_read_file(p, &len);
		if (!strcmp(argv[1], "dirty")) {
			/* without the file's all-zero tail (grown ahead of allocation): a
			 * seed of a few hundred KiB instead of more than a MiB */
			size_t end = fz_trim_zero_tail(b, len);

			fz_write_file(argv[2], b, end);
		} else {
			jo = fz_journal_offset(b, len, &js);
			if (!jo || jo + js > len)
				return 1;
			/* without the all-zero tail: replay stops at the first empty block */
			while (js > FZ_JBLOCK && !fz_le32(b + jo + js - FZ_JBLOCK))
				js -= FZ_JBLOCK;
			fz_write_file(argv[2], b + jo, js);
		}
	} else if (!strcmp(argv[1], "sidelog")) {
		if (fz_make_sidelog(fz_path("side.ucow"), fz_path("side.log")))
			return 1;
		b = fz_read_file(fz_path("side.log"), &len);
		fz_write_file(argv[2], b, len);
	} else if (!strcmp(argv[1], "fix") && argc == 4) {
		b = fz_read_file(argv[2], &len);
		fz_fix_image(b, len);
		fz_write_file(argv[3], b, len);
	} else {
		fprintf(stderr, "mkseed: unknown kind '%s'\n", argv[1]);
		return 2;
	}
	free(b);
	return 0;
}
