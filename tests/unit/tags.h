/*
 * Sector tags for the crash and fault tests (include after internal.h): every 512-byte
 * sector a test writes holds (tag, lba) pairs, so misplaced, stale or torn data is told
 * apart from the value expected.
 */
#ifndef UCOW_TAGS_H
#define UCOW_TAGS_H

/* n sectors from lba, written with tag. */
static inline void fill(uint8_t *b, uint32_t lba, uint32_t n, uint32_t tag)
{
	for (uint32_t i = 0; i < n; i++)
		for (unsigned k = 0; k < 512; k += 8) {
			put_le32(b + i * 512 + k, tag);
			put_le32(b + i * 512 + k + 4, lba + i);
		}
}

/* The tag sector lba holds: 0 for zeros, or -1 if it is neither zeros nor a whole
 * (tag, lba) sector. */
static inline int64_t tag_of(const uint8_t *b, uint32_t lba)
{
	uint32_t tag = get_le32(b);
	bool zero = true;
	for (unsigned k = 0; k < 512; k += 8)
		if (get_le64(b + k)) {
			zero = false;
			break;
		}
	if (zero)
		return 0;
	for (unsigned k = 0; k < 512; k += 8)
		if (get_le32(b + k) != tag || get_le32(b + k + 4) != lba)
			return -1;
	return tag;
}

#endif
