/* SPDX-License-Identifier: MIT */
/* A range of an image's content, looked for down its backing chain (chain.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "cowcore.h"
#include "chain.h"
#include "util.h"

int chain_extent(struct cow_image *top, uint64_t off, uint64_t len, struct chain_ext *e,
		 struct cow_image **failed)
{
	struct cow_image *img = top;
	unsigned depth = 0;

	memset(e, 0, sizeof(*e));
	e->start = off;
	for (;;) {
		struct cow_extent x;
		struct cow_image *b;
		struct cow_info bi;
		int r = cow_map_extent(img, off, len, &x);

		if (r < 0) {
			*failed = img;
			return r;
		}
		e->img = img;
		e->depth = depth;
		e->length = x.length;
		if (x.status != COW_MAP_BACKING) {
			e->present = x.allocated;
			e->zero = x.status == COW_MAP_ZERO;
			e->data = x.status == COW_MAP_DATA;
			e->has_offset = x.offset_valid;
			e->offset = x.offset;
			return 0;
		}
		b = cow_backing_image(img);
		if (!b)
			return 0;	/* a chain not opened: nothing known (not zero, not data) */
		cow_get_info(b, &bi);
		if (off >= bi.virtual_size) {
			e->zero = true;	/* past the backing image's end: zeros, img's doing */
			return 0;
		}
		len = x.length < bi.virtual_size - off ? x.length : bi.virtual_size - off;
		img = b;
		depth++;
	}
}

static void warn(const char *file, bool *warned)
{
	*warned = true;
	ucow_err("%s: warning: another process has the image open for writing (-U: opened "
		 "without a lock); what is shown may be inconsistent", file);
}

void share_warn(struct cow_image *img, const char *file, bool *warned)
{
	if (!*warned && cow_writer_active(img) > 0)
		warn(file, warned);
}

void share_warn_file(const char *file, bool *warned)
{
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
	int fd;

	if (*warned)
		return;
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return;
	/* as cow_writer_active: a read lock conflicts only with another's write lock */
	if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
		warn(file, warned);
	close(fd);
}
