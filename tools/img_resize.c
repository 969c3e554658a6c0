/* SPDX-License-Identifier: MIT */
/* ucow resize: change an image's virtual size (like qemu-img resize). */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cowcore.h"
#include "cmds.h"
#include "ublk.h"
#include "util.h"

static const char resize_help[] =
	"usage: ucow resize [-q] [-f FMT] [--shrink] FILE [+|-]SIZE\n"
	"\n"
	"Change FILE's virtual size (like qemu-img resize). SIZE is the new size, or with a\n"
	"sign the change of the current one: bytes or k, M, G, T (binary units). Any size of\n"
	"at least one byte will do (a ucow image's largest depends on its chunk size).\n"
	"\n"
	"  -f FMT          FILE's format: ucow or qcow2 (recognized by\n"
	"                their magic) or raw\n"
	"  --shrink        let a shrink drop data past the new end (a raw image: any shrink)\n"
	"  -q              quiet: no 'Image resized.' line\n"
	"  --allow-network-backing\n"
	"                  follow a backing image on an NBD server (an\n"
	"                  nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                  a read that needs that server fails after SEC\n"
	"                  seconds without it (default 30)\n"
	"  -h, --help      this help\n"
	"\n"
	"Growing: the new area reads as zeros, even over a larger backing image. Shrinking a\n"
	"ucow image is refused while data of the image lies past the new end, unless --shrink\n"
	"is given; its chunks are then freed, except those a snapshot holds. Snapshots keep\n"
	"their own size: applying one gives the image that size again. A power loss at any\n"
	"point leaves the image as it was or resized, never in between.\n"
	"\n"
	"A served image (ucow dev add) grows online, and its /dev/ublkbN with it, where the\n"
	"kernel can change a ublk disk's size (Linux 6.16 and later); shrinking it, or any\n"
	"resize on an older kernel, is refused: delete the device first.\n"
	"Exit status: 0 resized, 1 an error (the image is left as it was).\n";

/* "+N", "-N" or "N" with the size suffixes: *sign -1, 0 or +1. 0 or the exit code 1. */
static int parse_size_arg(const char *arg, int *sign, uint64_t *v)
{
	const char *s = arg, *why;

	*sign = 0;
	if (*s == '+' || *s == '-')
		*sign = *s++ == '+' ? 1 : -1;
	if (parse_bytes(s, v, &why) < 0)
		return usage_err("resize", "invalid size '%s': %s", arg, why);
	return 0;
}

/* The new size: SIZE, or the current size changed by it (sign). 0, or the exit code 1. */
static int new_size(const char *file, uint64_t cur, int sign, uint64_t v, uint64_t *size)
{
	if (sign > 0 && v > UINT64_MAX - cur) {
		ucow_err("%s: %" PRIu64 " + %" PRIu64 " bytes is too large", file, cur, v);
		return 1;
	}
	if (sign < 0 && v >= cur) {
		ucow_err("%s: the size must stay greater than zero (it is %" PRIu64 " bytes)", file,
			 cur);
		return 1;
	}
	*size = sign > 0 ? cur + v : sign < 0 ? cur - v : v;
	if (!*size) {
		ucow_err("%s: the size must be greater than zero", file);
		return 1;
	}
	return 0;
}

/*
 * FILE served by a ucow dev server: the server grows the image and then the disk
 * (UBLK_CMD_UPDATE_SIZE, Linux 6.16 and later; ublk/sock.c), or says why not (an older
 * kernel, a shrink, a read-only device...). Returns the exit status, or -1 when FILE is not
 * served.
 */
static int resize_online(const char *file, int sign, uint64_t v, bool quiet)
{
	struct json_object *resp = NULL;
	struct ublk_state st;
	struct cow_info in;
	char backing[4096];
	uint64_t size;
	int id = ublk_server_of(file, &st), r;

	if (id < 0)
		return -1;
	if (!st.sock[0]) {
		ucow_err("%s: in use by /dev/ublkb%d, whose server has no control socket (ucow dev "
			 "del %d, resize, dev add)", file, id, id);
		return 1;
	}
	r = ublk_sock_call(st.sock, UBLK_OP_IMAGE_INFO, NULL, 300, &resp);
	if (r == 0 && ublk_parse_info(resp, &in, backing, sizeof(backing)) < 0)
		r = -EBADMSG;
	ublk_sock_reply_free(resp);
	resp = NULL;
	if (r == 0 && new_size(file, in.virtual_size, sign, v, &size))
		return 1;
	if (r == 0)
		r = ublk_sock_call_size(st.sock, UBLK_OP_RESIZE, size, 300, &resp);
	if (r == -EPROTO && resp) {
		ucow_err("%s: %s", file, ublk_sock_reply_error(resp));
		ublk_sock_reply_free(resp);
		return 1;
	}
	ublk_sock_reply_free(resp);
	if (r < 0) {
		ucow_err("%s: no answer from the server of /dev/ublkb%d: %s", file, id,
			 strerror(-r));
		return 1;
	}
	if (!quiet)
		printf("Image resized.\n");
	return 0;
}

int cmd_resize(int argc, char **argv)
{
	enum { OPT_SHRINK = 256 };
	static const struct option opts[] = {
		{ "shrink", no_argument, NULL, OPT_SHRINK },
		{ "help", no_argument, NULL, 'h' },
		NET_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	char err[COW_ERRLEN] = "";
	const char *file, *size_arg = NULL;
	struct cow_image *img;
	bool quiet = false;
	unsigned flags = 0;
	struct net_opts net = { 0 };
	int c, r, sign, fmt = COW_FMT_NONE;
	uint64_t v, size;

	/* "-1G" is a size, not an option: take it out before getopt sees it (qemu-img does) */
	if (argc > 2 && argv[argc - 1][0] == '-' && isdigit((unsigned char)argv[argc - 1][1])) {
		size_arg = argv[argc - 1];
		argc--;
	}
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":qf:h", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			quiet = true;
			break;
		case 'f':
			if (opt_format(argv[0], optarg, &fmt))
				return 1;
			break;
		case OPT_SHRINK:
			flags |= COW_RESIZE_SHRINK;
			break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("resize", c, optarg, &net))
				return 1;
			break;
		case 'h':
			fputs(resize_help, stdout);
			return 0;
		default:
			return opt_err(argv[0], c, argv);
		}
	}
	if (!size_arg && optind < argc - 1)
		size_arg = argv[--argc];
	if (optind >= argc)
		return usage_err(argv[0], "missing FILE");
	if (!size_arg)
		return usage_err(argv[0], "missing SIZE");
	if (optind != argc - 1)
		return usage_err(argv[0], "too many arguments");
	file = argv[optind];
	if (parse_size_arg(size_arg, &sign, &v))
		return 1;

	r = resize_online(file, sign, v, quiet);
	if (r >= 0)
		return r;
	r = cow_open(file, &(struct cow_open_opts){ .fmt = fmt, .flags = net.flags,
			.net_timeout_ms = net.timeout_ms }, &img, err, COW_ERRLEN);
	if (r) {
		report(file, file, r, err);
		return 1;
	}
	struct cow_info in;
	cow_get_info(img, &in);
	if (new_size(file, in.virtual_size, sign, v, &size)) {
		cow_close(img);
		return 1;
	}
	r = cow_resize(img, size, flags);
	if (r) {
		if (r == -ENOTEMPTY)
			ucow_err("%s: %s; --shrink %s", file, err_text_for(r, cow_errmsg(img), file),
				 in.fmt == COW_FMT_RAW ? "allows it" : "drops it");
		else
			report(file, file, r, cow_errmsg(img));
		cow_close(img);
		return 1;
	}
	r = cow_close(img);
	if (r) {
		report(file, file, r, "");
		return 1;
	}
	if (!quiet)
		printf("Image resized.\n");
	return 0;
}
