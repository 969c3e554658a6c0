/* SPDX-License-Identifier: MIT */
/*
 * ucow io: run qemu-io style commands (read, write, discard, flush) on one open image.
 * Every command prints its result line as soon as it completes (stdout is flushed after
 * each), so a caller that kills us knows which commands finished.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowcore.h"
#include "cmds.h"
#include "util.h"

static const char io_help[] =
	"usage: ucow io [-f FMT] [-r] [-n] [-i uring|aio|sync] -c CMD [-c CMD]... FILE\n"
	"\n"
	"Open FILE once and run each CMD on it in order (like qemu-io -c). FILE is opened\n"
	"read-only when every CMD is a read (or with -r), read-write otherwise.\n"
	"\n"
	"  -c CMD          a command (repeat -c for several):\n"
	"                    read [-P PATTERN] [-v] OFF LEN   read; -P checks every byte is\n"
	"                                                     PATTERN, -v dumps the data in hex\n"
	"                    write [-P PATTERN | -z] OFF LEN  write bytes PATTERN (default 0xcd)\n"
	"                                                     or zeroes (-z)\n"
	"                    discard OFF LEN                  discard; reads back as zeroes\n"
	"                    flush                            make everything before it durable\n"
	"                  OFF and LEN: bytes or k, M, G, T; PATTERN: 0..255, decimal or 0x..\n"
	"  -f FMT          FILE's format: ucow (default; recognized by its magic) or raw\n"
	"  -r              open read-only\n"
	"  -n              no host cache: O_DIRECT on the image files (like qemu-io -n);\n"
	"                  use offsets and lengths in whole 512-byte sectors\n"
	"  -i BACKEND      I/O backend: uring (default), aio or sync\n"
	"  -h, --help      this help\n"
	"\n"
	"Exit status: 0 all commands succeeded, 1 an error (stops the run) or a read whose\n"
	"data did not match its pattern (the run goes on).\n";

enum io_op { IO_READ, IO_WRITE, IO_ZERO, IO_DISCARD, IO_FLUSH };

struct io_cmd {
	enum io_op op;
	int pattern;
	bool verify, dump;
	uint64_t off, len;
};

#define IO_PIECE (8u << 20)	/* largest single request the tool sends */

/* Split cmd into words (in place). Returns the count, or -1 when there are too many. */
static int split_words(char *s, char **w, int max)
{
	int n = 0;

	for (;;) {
		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			return n;
		if (n == max)
			return -1;
		w[n++] = s;
		while (*s && !isspace((unsigned char)*s))
			s++;
		if (*s)
			*s++ = 0;
	}
}

static int parse_cmd(const char *text, struct io_cmd *c)
{
	char *copy = strdup(text), *w[16];
	bool zero = false, pat = false;
	int n, i, rc = 1;
	const char *why;

	memset(c, 0, sizeof(*c));
	if (!copy)
		return usage_err("io", "out of memory");
	n = split_words(copy, w, 16);
	if (n <= 0) {
		rc = usage_err("io", n < 0 ? "command '%s' has too many words" :
			       "empty command '%s'", text);
		goto out;
	}
	if (!strcmp(w[0], "read") || !strcmp(w[0], "r")) {
		c->op = IO_READ;
	} else if (!strcmp(w[0], "write") || !strcmp(w[0], "w")) {
		c->op = IO_WRITE;
		c->pattern = 0xcd;
	} else if (!strcmp(w[0], "discard") || !strcmp(w[0], "d")) {
		c->op = IO_DISCARD;
	} else if (!strcmp(w[0], "flush") || !strcmp(w[0], "f")) {
		c->op = IO_FLUSH;
	} else {
		rc = usage_err("io", "unknown command '%s' in '%s' (read, write, discard, flush)",
			       w[0], text);
		goto out;
	}
	for (i = 1; i < n && w[i][0] == '-' && w[i][1]; i++) {
		const char *o = w[i];

		if (!strcmp(o, "-P") && (c->op == IO_READ || c->op == IO_WRITE)) {
			if (i + 1 >= n || parse_pattern(w[i + 1], &c->pattern) < 0) {
				rc = usage_err("io", "'%s': -P needs a byte value 0..255", text);
				goto out;
			}
			c->verify = c->op == IO_READ;
			pat = true;
			i++;
		} else if (!strcmp(o, "-v") && c->op == IO_READ) {
			c->dump = true;
		} else if (!strcmp(o, "-z") && c->op == IO_WRITE) {
			zero = true;
		} else {
			rc = usage_err("io", "'%s': unknown option '%s'", text, o);
			goto out;
		}
	}
	if (zero) {
		if (pat) {
			rc = usage_err("io", "'%s': -z and -P cannot go together", text);
			goto out;
		}
		c->op = IO_ZERO;
	}
	if (c->op == IO_FLUSH) {
		if (i != n) {
			rc = usage_err("io", "'%s': flush takes no arguments", text);
			goto out;
		}
		rc = 0;
		goto out;
	}
	if (n - i != 2) {
		rc = usage_err("io", "'%s': expected OFF LEN", text);
		goto out;
	}
	if (parse_bytes(w[i], &c->off, &why) < 0) {
		rc = usage_err("io", "'%s': bad offset '%s': %s", text, w[i], why);
		goto out;
	}
	if (parse_bytes(w[i + 1], &c->len, &why) < 0) {
		rc = usage_err("io", "'%s': bad length '%s': %s", text, w[i + 1], why);
		goto out;
	}
	if (c->off + c->len < c->off) {
		rc = usage_err("io", "'%s': offset + length overflows", text);
		goto out;
	}
	rc = 0;
out:
	free(copy);
	return rc;
}

/* qemu-io -v: "%08x:  " offset, 16 bytes in hex, then the printable ones. */
static void dump_hex(const uint8_t *p, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len; i += 16) {
		uint64_t j, n = len - i < 16 ? len - i : 16;

		printf("%08" PRIx64 ":  ", off + i);
		for (j = 0; j < n; j++)
			printf("%02x ", p[i + j]);
		printf(" ");
		for (j = 0; j < n; j++)
			putchar(isalnum(p[i + j]) ? p[i + j] : '.');
		printf("\n");
	}
}

struct io_run {
	const char *file;
	struct cow_image *img;
	struct cow_ctx *ctx;
	uint64_t size;
	bool read_only;
	uint8_t *buf;
};

static int io_fail(struct io_run *r, const char *what, const struct io_cmd *c, int rc)
{
	const char *t = rc == -EUCLEAN || rc == -EIO ? cow_errmsg(r->img) : NULL;

	t = err_text_for(rc, t, r->file);
	if (c->op == IO_FLUSH)
		ucow_err("%s: %s failed: %s", r->file, what, t);
	else
		ucow_err("%s: %s failed at offset %" PRIu64 " (%" PRIu64 " bytes): %s", r->file,
			 what, c->off, c->len, t);
	return rc;
}

/* 0 done, 1 done but the data did not match, <0 error (reported). */
static int run_cmd(struct io_run *r, const struct io_cmd *c)
{
	static const char *const names[] = { "read", "write", "write -z", "discard", "flush" };
	uint64_t done, bad = UINT64_MAX;
	int rc;

	if (c->op != IO_FLUSH && c->off + c->len > r->size) {
		ucow_err("%s: %s at offset %" PRIu64 " (%" PRIu64 " bytes) is past the end of "
			 "the image (%" PRIu64 " bytes)", r->file, names[c->op], c->off, c->len,
			 r->size);
		return -EINVAL;
	}
	switch (c->op) {
	case IO_FLUSH:
		if (!r->read_only) {
			rc = cow_rw(r->ctx, COW_FLUSH, NULL, 0, 0, 0);
			if (rc < 0)
				return io_fail(r, "flush", c, rc);
		}
		printf("flushed\n");
		break;
	case IO_ZERO:
	case IO_DISCARD:
		if (c->len) {
			rc = cow_rw(r->ctx, c->op == IO_ZERO ? COW_WRITE_ZEROES : COW_DISCARD, NULL,
				    c->len, c->off, 0);
			if (rc < 0)
				return io_fail(r, names[c->op], c, rc);
		}
		printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n",
		       c->op == IO_ZERO ? "wrote" : "discard", c->len, c->len, c->off);
		break;
	case IO_WRITE:
		memset(r->buf, c->pattern, c->len < IO_PIECE ? c->len : IO_PIECE);
		for (done = 0; done < c->len; done += IO_PIECE) {
			uint64_t n = c->len - done < IO_PIECE ? c->len - done : IO_PIECE;

			rc = cow_rw(r->ctx, COW_WRITE, r->buf, n, c->off + done, 0);
			if (rc < 0)
				return io_fail(r, "write", c, rc);
		}
		printf("wrote %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", c->len,
		       c->len, c->off);
		break;
	case IO_READ:
		for (done = 0; done < c->len; done += IO_PIECE) {
			uint64_t n = c->len - done < IO_PIECE ? c->len - done : IO_PIECE;

			rc = cow_rw(r->ctx, COW_READ, r->buf, n, c->off + done, 0);
			if (rc < 0)
				return io_fail(r, "read", c, rc);
			for (uint64_t i = 0; c->verify && bad == UINT64_MAX && i < n; i++)
				if (r->buf[i] != c->pattern)
					bad = c->off + done + i;
			if (c->dump)
				dump_hex(r->buf, c->off + done, n);
		}
		if (bad != UINT64_MAX)
			printf("Pattern verification failed at offset %" PRIu64 ", %" PRIu64
			       " bytes\n", bad, c->len);
		printf("read %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", c->len,
		       c->len, c->off);
		break;
	}
	fflush(stdout);
	return bad != UINT64_MAX ? 1 : 0;
}

static int run_all(struct io_run *r, const struct io_cmd *cmds, int n, const char *backend)
{
	struct cow_backend *be = NULL;
	struct cow_info info;
	int rc, status = 0;

	rc = cow_backend_new(backend, 32, &be);
	if (rc < 0) {
		ucow_err("%s: cannot set up the %s I/O backend: %s", r->file, backend,
			 strerror(-rc));
		return 1;
	}
	rc = cow_ctx_new(r->img, be, &r->ctx);
	if (rc < 0) {
		ucow_err("%s: %s", r->file, err_text_for(rc, cow_errmsg(r->img), r->file));
		cow_backend_free(be);
		return 1;
	}
	cow_get_info(r->img, &info);
	r->size = info.virtual_size;
	for (int i = 0; i < n; i++) {
		rc = run_cmd(r, &cmds[i]);
		if (rc < 0) {
			status = 1;
			break;
		}
		if (rc > 0)
			status = 1;
	}
	cow_ctx_free(r->ctx);
	cow_backend_free(be);
	return status;
}

int cmd_io(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "nocache", no_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	const char *backend = "uring";
	char err[COW_ERRLEN] = "";
	struct io_run r = { 0 };
	struct io_cmd *cmds;
	int c, rc, n = 0, fmt = COW_FMT_NONE, status;
	bool force_ro = false, all_reads = true;
	unsigned oflags = 0;
	uint64_t maxlen = 0;

	cmds = calloc((size_t)argc, sizeof(*cmds));
	if (!cmds)
		return 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:f:i:rnh", lopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_cmd(optarg, &cmds[n])) {
				free(cmds);
				return 1;
			}
			all_reads &= cmds[n].op == IO_READ;
			if (cmds[n].len > maxlen)
				maxlen = cmds[n].len;
			n++;
			break;
		case 'f':
			if (opt_format("io", optarg, &fmt)) {
				free(cmds);
				return 1;
			}
			break;
		case 'i':
			backend = optarg;
			if (strcmp(backend, "uring") && strcmp(backend, "aio") &&
			    strcmp(backend, "sync")) {
				free(cmds);
				return usage_err("io", "unknown I/O backend '%s' (uring, aio, sync)",
						 backend);
			}
			break;
		case 'r': force_ro = true; break;
		case 'n': oflags |= COW_OPEN_DIRECT; break;
		case 'h': free(cmds); fputs(io_help, stdout); return 0;
		default: free(cmds); return opt_err("io", c, argv);
		}
	}
	if (optind >= argc) {
		free(cmds);
		return usage_err("io", "no FILE given");
	}
	if (argc - optind > 1) {
		free(cmds);
		return usage_err("io", "too many arguments ('%s')", argv[optind + 1]);
	}
	r.file = argv[optind];
	if (!n) {
		free(cmds);
		return usage_err("io", "no command given (use -c CMD)");
	}
	r.read_only = force_ro || all_reads;
	if (force_ro && !all_reads) {
		for (int i = 0; i < n; i++)
			if (cmds[i].op != IO_READ && cmds[i].op != IO_FLUSH) {
				free(cmds);
				return usage_err("io", "-r (read-only) given with a write or discard");
			}
	}
	if (maxlen > IO_PIECE)
		maxlen = IO_PIECE;
	if (posix_memalign((void **)&r.buf, 4096, maxlen ? maxlen : 4096)) {
		ucow_err("%s: out of memory", r.file);
		free(cmds);
		return 1;
	}
	/* each result line must be out before the next command starts */
	setvbuf(stdout, NULL, _IOLBF, 0);

	rc = cow_open(r.file, &(struct cow_open_opts){ .fmt = fmt,
			.flags = oflags | (r.read_only ? COW_OPEN_RDONLY : 0) },
			&r.img, err, COW_ERRLEN);
	if (rc < 0) {
		report_f(r.file, NULL, rc, err);
		free(r.buf);
		free(cmds);
		return 1;
	}
	status = run_all(&r, cmds, n, backend);
	rc = cow_close(r.img);
	if (rc < 0) {
		ucow_err("%s: closing: %s", r.file, strerror(-rc));
		status = 1;
	}
	free(r.buf);
	free(cmds);
	return status;
}
