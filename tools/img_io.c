/* SPDX-License-Identifier: MIT */
/*
 * ucow io: run qemu-io style commands (read, write, discard, flush, map, alloc, ...) on one
 * open image, given with -c or read from stdin (a prompt when it is a terminal).
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
#include <unistd.h>

#include "cowcore.h"
#include "cmds.h"
#include "util.h"

static const char io_help[] =
	"usage: ucow io [-f FMT] [-r] [-n] [-q] [-C] [-i uring|aio|sync] [-c CMD]... FILE\n"
	"\n"
	"Open FILE once and run each CMD on it in order (like qemu-io -c). Without -c, read\n"
	"the commands from stdin, one a line (a 'ucow> ' prompt when stdin is a terminal).\n"
	"With -c, FILE is opened read-only when no CMD writes (or with -r), read-write\n"
	"otherwise; from stdin, read-write unless -r.\n"
	"\n"
	"  -c CMD          a command (repeat -c for several); 'help' inside lists them:\n"
	"                    read [-P PATTERN] [-v] [-q] OFF LEN  read; -P checks every byte is\n"
	"                                                 PATTERN, -v dumps the data in hex\n"
	"                    write [-P PATTERN | -z] [-q] OFF LEN  write bytes PATTERN (default\n"
	"                                                 0xcd) or zeroes (-z)\n"
	"                    discard [-q] OFF LEN         discard; reads back as zeroes\n"
	"                    flush                        make everything before it durable\n"
	"                    map                          allocated and unallocated runs\n"
	"                    alloc OFF [LEN]              bytes of OFF..OFF+LEN (default 512) this\n"
	"                                                 image holds itself\n"
	"                    length                       the virtual size\n"
	"                    info                         format, sizes, chunk and block size\n"
	"                    truncate SIZE                resize to SIZE (a shrink drops what\n"
	"                                                 lies past it; raw files too)\n"
	"                    help [CMD]                   the commands, or one of them\n"
	"                    quit                         stop (the rest is not run)\n"
	"                  OFF, LEN: bytes, k, M, G, T suffixes or 0x hex; PATTERN: 0..255,\n"
	"                  decimal or 0x..; -q in a command: no result line for it\n"
	"  -f FMT          FILE's format: ucow or qcow2 (recognized by\n"
	"                  their magic) or raw\n"
	"  -r              open read-only\n"
	"  -C              copy on read: what a read takes from the backing chain is also\n"
	"                  written into the image, whole blocks (like qemu-io -C)\n"
	"  -n              no host cache: O_DIRECT on the image files (like qemu-io -n);\n"
	"                  use offsets and lengths in whole 512-byte sectors\n"
	"  -q              quiet: no result line for read, write, discard and flush (errors,\n"
	"                  pattern mismatches, -v dumps and the answers of map, alloc,\n"
	"                  length, info and help are still printed)\n"
	"  -i BACKEND      I/O backend: uring (default), aio or sync\n"
	"  --allow-network-backing\n"
	"                  follow a backing image on an NBD server (an\n"
	"                  nbd://, nbds:// or nbd+unix:// URI); refused otherwise\n"
	"  --nbd-timeout SEC\n"
	"                  a read that needs that server fails after SEC\n"
	"                  seconds without it (default 30)\n"
	"  -h, --help      this help\n"
	"\n"
	"Exit status: 0 all commands succeeded, 1 an error or a read whose data did not match\n"
	"its pattern. With -c an error stops the run; from stdin the next line is read.\n";

enum io_op { IO_READ, IO_WRITE, IO_ZERO, IO_DISCARD, IO_FLUSH, IO_MAP, IO_ALLOC, IO_LENGTH,
	     IO_INFO, IO_TRUNCATE, IO_HELP, IO_QUIT };

/* The commands, for parsing and for `help` (IO_ZERO is write -z). */
static const struct io_def {
	enum io_op op;
	const char *name, *alias, *args, *what;
} io_defs[] = {
	{ IO_READ, "read", "r", "[-P PATTERN] [-v] [-q] OFF LEN",
	  "read LEN bytes at OFF; -P checks that every byte is PATTERN, -v dumps them" },
	{ IO_WRITE, "write", "w", "[-P PATTERN | -z] [-q] OFF LEN",
	  "write LEN bytes PATTERN (default 0xcd), or zeroes with -z" },
	{ IO_DISCARD, "discard", "d", "[-q] OFF LEN", "discard LEN bytes; they read back as zeroes" },
	{ IO_FLUSH, "flush", "f", "", "make every write before it durable" },
	{ IO_MAP, "map", NULL, "", "the runs of the image it holds itself (allocated) or not" },
	{ IO_ALLOC, "alloc", NULL, "OFF [LEN]",
	  "how many of the LEN bytes (default 512) at OFF the image holds itself" },
	{ IO_LENGTH, "length", NULL, "", "the virtual size" },
	{ IO_INFO, "info", NULL, "", "format, virtual size, chunk and block size, backing file" },
	{ IO_TRUNCATE, "truncate", NULL, "SIZE", "change the virtual size (a shrink drops what lies past it)" },
	{ IO_HELP, "help", "?", "[CMD]", "the commands, or one command" },
	{ IO_QUIT, "quit", "q", "", "stop: later commands do not run" },
};
#define IO_NDEFS (sizeof(io_defs) / sizeof(io_defs[0]))

struct io_cmd {
	enum io_op op;
	int pattern;
	bool verify, dump, quiet;
	bool has_len;			/* alloc: LEN given */
	uint64_t off, len;
	const struct io_def *help;	/* help CMD: that command; NULL: all */
};

#define IO_PIECE (8u << 20)	/* largest single request the tool sends */
#define IO_MSGLEN 512

static bool op_writes(enum io_op op)
{
	return op == IO_WRITE || op == IO_ZERO || op == IO_DISCARD || op == IO_TRUNCATE;
}

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

static const struct io_def *find_def(const char *name)
{
	for (size_t i = 0; i < IO_NDEFS; i++)
		if (!strcmp(name, io_defs[i].name) ||
		    (io_defs[i].alias && !strcmp(name, io_defs[i].alias)))
			return &io_defs[i];
	return NULL;
}

/* An offset or length word: 0, or -1 with msg set. */
static int parse_num(const char *text, const char *what, const char *w, uint64_t *out,
		     char *msg)
{
	const char *why;

	if (parse_offset(w, out, &why) == 0)
		return 0;
	snprintf(msg, IO_MSGLEN, "'%s': invalid %s '%s': %s", text, what, w, why);
	return -1;
}

/*
 * Parse one command into c: 0, or -1 with msg (IO_MSGLEN bytes) saying what is wrong, one
 * line, without "ucow: " and without a hint: the caller adds where to find help.
 */
static int parse_cmd(const char *text, struct io_cmd *c, char *msg)
{
	char *copy = strdup(text), *w[16];
	const struct io_def *d;
	bool zero = false, pat = false;
	int n, i, rc = -1;

	memset(c, 0, sizeof(*c));
	if (!copy) {
		snprintf(msg, IO_MSGLEN, "out of memory");
		return -1;
	}
	n = split_words(copy, w, 16);
	if (n <= 0) {
		snprintf(msg, IO_MSGLEN, n < 0 ? "command '%s' has too many words" :
			 "empty command '%s'", text);
		goto out;
	}
	d = find_def(w[0]);
	if (!d) {
		snprintf(msg, IO_MSGLEN, "unknown command '%s' in '%s' (read, write, discard, "
			 "flush, map, alloc, length, info, help, quit)", w[0], text);
		goto out;
	}
	c->op = d->op;
	c->pattern = 0xcd;
	/* options; a word like -1 is a (negative, refused) number, not an option */
	for (i = 1; i < n && w[i][0] == '-' && w[i][1] && !isdigit((unsigned char)w[i][1]);
	     i++) {
		const char *o = w[i];
		bool io = c->op == IO_READ || c->op == IO_WRITE;

		if (!strcmp(o, "-P") && io) {
			if (i + 1 >= n || parse_pattern(w[i + 1], &c->pattern) < 0) {
				snprintf(msg, IO_MSGLEN, "'%s': -P needs a byte value 0..255", text);
				goto out;
			}
			c->verify = c->op == IO_READ;
			pat = true;
			i++;
		} else if (!strcmp(o, "-v") && c->op == IO_READ) {
			c->dump = true;
		} else if (!strcmp(o, "-z") && c->op == IO_WRITE) {
			zero = true;
		} else if (!strcmp(o, "-q") && (io || c->op == IO_DISCARD)) {
			c->quiet = true;
		} else {
			snprintf(msg, IO_MSGLEN, "'%s': unknown option '%s'", text, o);
			goto out;
		}
	}
	if (zero) {
		if (pat) {
			snprintf(msg, IO_MSGLEN, "'%s': -z and -P cannot go together", text);
			goto out;
		}
		c->op = IO_ZERO;
	}
	switch (c->op) {
	case IO_TRUNCATE:
		if (n - i != 1) {
			snprintf(msg, IO_MSGLEN, "'%s': expected SIZE", text);
			goto out;
		}
		if (parse_num(text, "size", w[i], &c->len, msg))
			goto out;
		break;
	case IO_HELP:
		if (n - i > 1) {
			snprintf(msg, IO_MSGLEN, "'%s': help takes at most one command", text);
			goto out;
		}
		if (n - i == 1 && !(c->help = find_def(w[i]))) {
			snprintf(msg, IO_MSGLEN, "'%s': no command '%s'", text, w[i]);
			goto out;
		}
		break;
	case IO_FLUSH:
	case IO_MAP:
	case IO_LENGTH:
	case IO_INFO:
	case IO_QUIT:
		if (i != n) {
			snprintf(msg, IO_MSGLEN, "'%s': %s takes no arguments", text, d->name);
			goto out;
		}
		break;
	case IO_ALLOC:
		if (n - i != 1 && n - i != 2) {
			snprintf(msg, IO_MSGLEN, "'%s': expected OFF [LEN]", text);
			goto out;
		}
		if (parse_num(text, "offset", w[i], &c->off, msg) ||
		    (n - i == 2 && parse_num(text, "length", w[i + 1], &c->len, msg)))
			goto out;
		c->has_len = n - i == 2;
		break;
	default:
		if (n - i != 2) {
			snprintf(msg, IO_MSGLEN, "'%s': expected OFF LEN", text);
			goto out;
		}
		if (parse_num(text, "offset", w[i], &c->off, msg) ||
		    parse_num(text, "length", w[i + 1], &c->len, msg))
			goto out;
		if (c->off + c->len < c->off) {
			snprintf(msg, IO_MSGLEN, "'%s': offset + length overflows", text);
			goto out;
		}
		break;
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

/*
 * A byte count the way qemu-io writes one (map, alloc, length): "512 bytes", "64 KiB",
 * "1.500 KiB" -- the largest binary unit the value reaches, three decimals unless they are
 * all zero.
 */
static void io_size(uint64_t v, char *buf, size_t len)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	int u = -1;
	size_t n;

	while (u < 5 && v >> (10 * (u + 2)))
		u++;
	if (u < 0) {
		snprintf(buf, len, "%" PRIu64 " bytes", v);
		return;
	}
	snprintf(buf, len, "%.3f", (double)v / (double)(1ull << (10 * (u + 1))));
	n = strlen(buf);
	if (n > 4 && !strcmp(buf + n - 4, ".000"))
		buf[n - 4] = 0;
	n = strlen(buf);
	snprintf(buf + n, len - n, " %s", unit[u]);
}

struct io_run {
	const char *file;
	struct cow_image *img;
	struct cow_ctx *ctx;
	struct cow_info info;
	bool read_only, quiet, cor;	/* cor: -C, copy on read */
	uint8_t *buf;
	uint64_t bufsz;
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

/* A buffer for len bytes (at most IO_PIECE). 0 or -ENOMEM (reported). */
static int want_buf(struct io_run *r, uint64_t len)
{
	uint64_t need = len < IO_PIECE ? len : IO_PIECE;
	void *p;

	if (need <= r->bufsz && r->buf)
		return 0;
	need = need < 4096 ? 4096 : need;
	if (posix_memalign(&p, 4096, need)) {
		ucow_err("%s: out of memory", r->file);
		return -ENOMEM;
	}
	free(r->buf);
	r->buf = p;
	r->bufsz = need;
	return 0;
}

/*
 * Does the image hold [off, off + *run) itself (qemu-io's "allocated": data written to this
 * image, or in an overlay a zeroed range that hides the backing file)? 1 or 0 for the run
 * starting at off (*run <= len), or -errno. A raw file holds every byte; a ucow image
 * without a backing file does not tell zeroed from never written: both are unallocated.
 */
static int alloc_run(struct io_run *r, uint64_t off, uint64_t len, uint64_t *run)
{
	int st;

	if (r->info.fmt == COW_FMT_RAW) {
		*run = len;
		return 1;
	}
	st = cow_map(r->img, off, len, run, NULL);
	if (st < 0)
		return st;
	if (!*run || *run > len)
		return -EIO;	/* never: keeps a loop over runs finite */
	return st == COW_MAP_DATA || (st == COW_MAP_ZERO && r->info.backing);
}

/* The longest run from off (up to len) with one allocation state: 1/0 with *run, or -errno. */
static int alloc_span(struct io_run *r, uint64_t off, uint64_t len, uint64_t *run)
{
	uint64_t n;
	int st = alloc_run(r, off, len, run), st2;

	while (st >= 0 && *run < len) {
		st2 = alloc_run(r, off + *run, len - *run, &n);
		if (st2 < 0)
			return st2;
		if (st2 != st)
			break;
		*run += n;
	}
	return st;
}

static int run_map(struct io_run *r, const struct io_cmd *c)
{
	uint64_t off = 0, run;
	char a[32], b[32];
	int st;

	while (off < r->info.virtual_size) {
		st = alloc_span(r, off, r->info.virtual_size - off, &run);
		if (st < 0)
			return io_fail(r, "map", c, st);
		io_size(run, a, sizeof(a));
		io_size(off, b, sizeof(b));
		printf("%s (0x%" PRIx64 ") bytes %s allocated at offset %s (0x%" PRIx64 ")\n", a,
		       run, st ? "   " : "not", b, off);
		off += run;
	}
	return 0;
}

static int run_alloc(struct io_run *r, const struct io_cmd *c)
{
	uint64_t len = c->has_len ? c->len : 512, done = 0, held = 0, run;
	char o[32];
	int st;

	/* like qemu-io: a range past the end is cut at the end; none left is 0/0 */
	if (c->off >= r->info.virtual_size)
		len = 0;
	else if (len > r->info.virtual_size - c->off)
		len = r->info.virtual_size - c->off;
	while (done < len) {
		st = alloc_run(r, c->off + done, len - done, &run);
		if (st < 0)
			return io_fail(r, "alloc", c, st);
		if (st)
			held += run;
		done += run;
	}
	io_size(c->off, o, sizeof(o));
	printf("%" PRIu64 "/%" PRIu64 " bytes allocated at offset %s\n", held, len, o);
	return 0;
}

static void run_info(struct io_run *r)
{
	const struct cow_info *in = &r->info;
	char s[32];

	printf("format name: %s\n", cow_fmt_name(in->fmt));
	io_size(in->virtual_size, s, sizeof(s));
	printf("virtual size: %s (%" PRIu64 " bytes)\n", s, in->virtual_size);
	if (in->fmt != COW_FMT_UCOW)
		return;
	io_size(in->chunk_size, s, sizeof(s));
	printf("chunk size: %s\n", s);
	io_size(in->block_size, s, sizeof(s));
	printf("block size: %s\n", s);
	if (in->backing)
		printf("backing file: %s (format %s)\n", in->backing,
		       cow_fmt_name(in->backing_fmt));
}

static void run_help(const struct io_cmd *c)
{
	for (size_t i = 0; i < IO_NDEFS; i++) {
		const struct io_def *d = &io_defs[i];

		if (c->help && c->help != d)
			continue;
		printf("%s%s%s -- %s%s%s%s\n", d->name, d->args[0] ? " " : "", d->args, d->what,
		       d->alias ? " (short: " : "", d->alias ? d->alias : "", d->alias ? ")" : "");
	}
}

/* 0 done, 1 done but the data did not match, <0 error (reported). */
static int run_cmd(struct io_run *r, const struct io_cmd *c)
{
	static const char *const names[] = { "read", "write", "write -z", "discard", "flush" };
	uint64_t done, bad = UINT64_MAX;
	bool say = !r->quiet && !c->quiet;
	char s[32];
	int rc;

	if (c->op <= IO_DISCARD && c->off + c->len > r->info.virtual_size) {
		ucow_err("%s: %s at offset %" PRIu64 " (%" PRIu64 " bytes) is past the end of "
			 "the image (%" PRIu64 " bytes)", r->file, names[c->op], c->off, c->len,
			 r->info.virtual_size);
		return -EINVAL;
	}
	if (op_writes(c->op) && r->read_only) {
		ucow_err("%s: %s at offset %" PRIu64 ": the image is open read-only", r->file,
			 names[c->op], c->off);
		return -EROFS;
	}
	if ((c->op == IO_READ || c->op == IO_WRITE) && want_buf(r, c->len))
		return -ENOMEM;
	switch (c->op) {
	case IO_FLUSH:
		if (!r->read_only) {
			rc = cow_rw(r->ctx, COW_FLUSH, NULL, 0, 0, 0);
			if (rc < 0)
				return io_fail(r, "flush", c, rc);
		}
		if (say)
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
		if (say)
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
		if (say)
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
		if (say)
			printf("read %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", c->len,
			       c->len, c->off);
		break;
	case IO_MAP:
		rc = run_map(r, c);
		if (rc < 0)
			return rc;
		break;
	case IO_ALLOC:
		rc = run_alloc(r, c);
		if (rc < 0)
			return rc;
		break;
	case IO_LENGTH:
		io_size(r->info.virtual_size, s, sizeof(s));
		printf("%s\n", s);
		break;
	case IO_INFO:
		run_info(r);
		break;
	case IO_HELP:
		run_help(c);
		break;
	case IO_TRUNCATE:
		rc = cow_resize(r->img, c->len, COW_RESIZE_SHRINK);
		if (rc < 0)
			return io_fail(r, "truncate", c, rc);
		cow_get_info(r->img, &r->info);
		break;
	case IO_QUIT:
		break;
	}
	fflush(stdout);
	return bad != UINT64_MAX ? 1 : 0;
}

/* Commands from stdin, one a line, until EOF or quit: 0, or 1 when one failed. */
static int run_stdin(struct io_run *r)
{
	bool tty = isatty(STDIN_FILENO);
	char *line = NULL, msg[IO_MSGLEN];
	size_t cap = 0;
	ssize_t n;
	int status = 0, rc;

	for (;;) {
		struct io_cmd c;
		char *s;

		if (tty) {
			fputs("ucow> ", stdout);
			fflush(stdout);
		}
		n = getline(&line, &cap, stdin);
		if (n < 0) {
			if (tty)
				putchar('\n');	/* Ctrl-D: end the prompt's line */
			break;
		}
		line[strcspn(line, "\r\n")] = 0;
		for (s = line; isspace((unsigned char)*s); s++)
			;
		if (!*s || *s == '#')
			continue;	/* blank lines and comments */
		if (parse_cmd(s, &c, msg)) {
			ucow_err("%s: %s (try 'help')", r->file, msg);
			status = 1;
			continue;
		}
		if (c.op == IO_QUIT)
			break;
		rc = run_cmd(r, &c);
		if (rc)
			status = 1;	/* reported; the next line is read all the same */
	}
	free(line);
	return status;
}

static int run_all(struct io_run *r, const struct io_cmd *cmds, int n, const char *backend)
{
	struct cow_backend *be = NULL;
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
	cow_get_info(r->img, &r->info);
	if (!n)
		status = run_stdin(r);
	for (int i = 0; i < n && cmds[i].op != IO_QUIT; i++) {
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
		NET_LONGOPTS,
		{ "read-only", no_argument, NULL, 'r' },
		{ "nocache", no_argument, NULL, 'n' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *backend = "uring";
	char err[COW_ERRLEN] = "", msg[IO_MSGLEN];
	struct io_run r = { 0 };
	struct io_cmd *cmds;
	int c, rc, n = 0, fmt = COW_FMT_NONE, status = 1;
	bool force_ro = false, no_writes = true;
	unsigned oflags = 0;
	struct net_opts net = { 0 };

	cmds = calloc((size_t)argc, sizeof(*cmds));
	if (!cmds) {
		ucow_err("io: out of memory");
		return 1;
	}
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:f:i:rnqCh", lopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_cmd(optarg, &cmds[n], msg)) {
				usage_err("io", "%s", msg);
				goto out;
			}
			no_writes &= !op_writes(cmds[n].op) && cmds[n].op != IO_FLUSH;
			n++;
			break;
		case 'f':
			if (opt_format("io", optarg, &fmt))
				goto out;
			break;
		case 'i':
			backend = optarg;
			if (strcmp(backend, "uring") && strcmp(backend, "aio") &&
			    strcmp(backend, "sync")) {
				usage_err("io", "unknown I/O backend '%s' (uring, aio, sync)", backend);
				goto out;
			}
			break;
		case 'r': force_ro = true; break;
		case 'n': oflags |= COW_OPEN_DIRECT; break;
		case 'q': r.quiet = true; break;
		case 'C': r.cor = true; break;
		case OPT_ALLOW_NET:
		case OPT_NBD_TIMEOUT:
			if (opt_net("io", c, optarg, &net))
				goto out;
			break;
		case 'h': fputs(io_help, stdout); status = 0; goto out;
		default: opt_err("io", c, argv); goto out;
		}
	}
	if (optind >= argc) {
		usage_err("io", "no FILE given");
		goto out;
	}
	if (argc - optind > 1) {
		usage_err("io", "too many arguments ('%s')", argv[optind + 1]);
		goto out;
	}
	r.file = argv[optind];
	/* -c: read-only unless a command writes; stdin: we cannot know, read-write */
	if (r.cor && force_ro) {
		usage_err("io", "-C writes what it reads into the image: not with -r");
		goto out;
	}
	r.read_only = force_ro || (n && no_writes && !r.cor);
	for (int i = 0; force_ro && i < n; i++)
		if (op_writes(cmds[i].op)) {
			usage_err("io", "-r (read-only) given with a write, discard or truncate");
			goto out;
		}
	/* each result line must be out before the next command starts */
	setvbuf(stdout, NULL, _IOLBF, 0);

	rc = cow_open(r.file, &(struct cow_open_opts){ .fmt = fmt,
			.flags = oflags | (r.read_only ? COW_OPEN_RDONLY : 0) | net.flags |
				 (r.cor ? COW_OPEN_COPY_ON_READ : 0),
			.net_timeout_ms = net.timeout_ms },
			&r.img, err, COW_ERRLEN);
	if (rc < 0) {
		report_f(r.file, NULL, rc, err);
		goto out;
	}
	status = run_all(&r, cmds, n, backend);
	rc = cow_close(r.img);
	if (rc < 0) {
		ucow_err("%s: closing: %s", r.file, strerror(-rc));
		status = 1;
	}
out:
	free(r.buf);
	free(cmds);
	return status;
}
