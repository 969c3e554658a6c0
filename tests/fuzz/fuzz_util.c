/* SPDX-License-Identifier: MIT */
/* Helpers of the fuzz targets and the seed maker; see fuzz_util.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz_util.h"

/* ---- little endian, CRC32C ------------------------------------------------------------- */

uint32_t fz_le32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t fz_le64(const uint8_t *p) { return fz_le32(p) | (uint64_t)fz_le32(p + 4) << 32; }

void fz_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* CRC32C, reflected polynomial 0x82f63b78, initial and final inversion (format.md). */
uint32_t fz_crc32c(const void *buf, size_t len)
{
	static uint32_t table[256];
	const uint8_t *p = buf;
	uint32_t crc = ~0u;

	if (!table[1])
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = (c >> 1) ^ (0x82f63b78u & -(c & 1));
			table[i] = c;
		}
	while (len--)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* The CRC field at crc_off of the len bytes at p, recomputed with the field zero. */
static void fix_crc(uint8_t *p, size_t len, size_t crc_off)
{
	fz_put_le32(p + crc_off, 0);
	fz_put_le32(p + crc_off, fz_crc32c(p, len));
}

/* ---- the private folder ---------------------------------------------------------------- */

static char dir[256];

static void rm_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	if (!d)
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			unlink(p);
		}
	closedir(d);
	rmdir(dir);
}

const char *fz_dir(void)
{
	const char *base = getenv("UCOW_FUZZ_TMP");

	if (dir[0])
		return dir;
	if (!base || !*base)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(dir, sizeof(dir), "%s/ucow-fuzz-XXXXXX", base);
	if (!mkdtemp(dir)) {
		perror(dir);
		abort();
	}
	atexit(rm_dir);
	return dir;
}

const char *fz_path(const char *name)
{
	static char p[8][512];
	static unsigned next;
	char *o = p[next++ % 8];

	snprintf(o, sizeof(p[0]), "%s/%s", fz_dir(), name);
	return o;
}

void fz_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	const uint8_t *b = buf;

	if (fd < 0) {
		perror(path);
		abort();
	}
	while (len) {
		ssize_t r = write(fd, b, len);
		if (r <= 0) {
			perror(path);
			abort();
		}
		b += r;
		len -= (size_t)r;
	}
	close(fd);
}

uint8_t *fz_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *buf;
	size_t got = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(path);
		abort();
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf)
		abort();
	while (got < (size_t)st.st_size) {
		ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
		if (r <= 0) {
			perror(path);
			abort();
		}
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return buf;
}

/* ---- checksum repair ------------------------------------------------------------------- */

void fz_fix_journal(uint8_t *jnl, size_t len)
{
	for (size_t b = 0; b + FZ_JBLOCK <= len; b += FZ_JBLOCK)
		if (fz_le32(jnl + b) == FZ_JMAGIC)
			fix_crc(jnl + b, FZ_JBLOCK, 4);
}

void fz_fix_sidelog(uint8_t *log, size_t len, size_t rec)
{
	for (size_t o = 0; o + rec <= len; o += rec)
		if (fz_le32(log + o) == FZ_SLMAGIC)
			fix_crc(log + o, rec, 4);
}

static int has_magic(const uint8_t *p) { return !memcmp(p, "UCOW\r\n\x1a\n", 8); }

void fz_fix_image(uint8_t *img, size_t len)
{
	for (size_t s = 0; s < 2; s++) {
		uint8_t *h = img + s * FZ_HDR_SIZE;
		if ((s + 1) * FZ_HDR_SIZE > len || !has_magic(h))
			continue;
		/* journal region (offset 104, size 112) */
		uint64_t jo = fz_le64(h + 104), js = fz_le64(h + 112);
		if (jo < len && js <= len - jo)
			fz_fix_journal(img + jo, js);
		/* snapshot table (offset 128, size 136, count 144) */
		uint64_t so = fz_le64(h + 128), ss = fz_le64(h + 136);
		if (so && so < len && ss <= len - so)
			for (uint64_t e = 0; e + FZ_SNAP_ENTRY <= ss; e += FZ_SNAP_ENTRY)
				if (fz_le32(img + so + e))
					fix_crc(img + so + e, FZ_SNAP_ENTRY, 252);
	}
	/* the header CRC last: it covers nothing else, but the order keeps it obvious */
	for (size_t s = 0; s < 2; s++)
		if ((s + 1) * FZ_HDR_SIZE <= len && has_magic(img + s * FZ_HDR_SIZE))
			fix_crc(img + s * FZ_HDR_SIZE, FZ_HDR_SIZE, 44);
}

int fz_backing_escapes(const uint8_t *img, size_t len)
{
	for (size_t s = 0; s < 2; s++) {
		const uint8_t *h = img + s * FZ_HDR_SIZE;
		if ((s + 1) * FZ_HDR_SIZE > len)
			break;
		/* the whole name area, whatever the length field says */
		if (memchr(h + 512, '/', 1024))
			return 1;
	}
	return 0;
}

size_t fz_trim_zero_tail(const uint8_t *buf, size_t len)
{
	size_t end = len - len % FZ_JBLOCK;

	if (end != len)
		return len;	/* not whole blocks: leave it */
	while (end > 2 * FZ_HDR_SIZE) {
		size_t i = end - FZ_JBLOCK;
		while (i < end && !buf[i])
			i++;
		if (i < end)
			break;
		end -= FZ_JBLOCK;
	}
	return end;
}

uint64_t fz_journal_offset(const uint8_t *img, size_t len, uint64_t *size)
{
	int best = -1;
	uint64_t gen = 0;

	for (int s = 0; s < 2; s++) {
		const uint8_t *h = img + s * FZ_HDR_SIZE;
		if ((size_t)(s + 1) * FZ_HDR_SIZE > len || !has_magic(h))
			continue;
		if (best < 0 || fz_le64(h + 184) > gen) {
			best = s;
			gen = fz_le64(h + 184);
		}
	}
	if (best < 0)
		return 0;
	*size = fz_le64(img + best * FZ_HDR_SIZE + 112);
	return fz_le64(img + best * FZ_HDR_SIZE + 104);
}

/* ---- I/O through the public API -------------------------------------------------------- */

int fz_reads(struct cow_image *img, const uint64_t *off, const uint64_t *len, int n)
{
	struct cow_backend *be;
	struct cow_ctx *ctx;
	int failed = 0;

	if (cow_backend_new("sync", 8, &be))
		return n;
	if (cow_ctx_new(img, be, &ctx)) {
		cow_backend_free(be);
		return n;
	}
	for (int i = 0; i < n; i++) {
		uint64_t run = 0, phys = 0;
		uint8_t *buf = malloc(len[i] ? len[i] : 1);
		if (!buf)
			abort();
		if (cow_rw(ctx, COW_READ, buf, len[i], off[i], 0) < 0)
			failed++;
		if (len[i])
			cow_map(img, off[i], len[i], &run, &phys);
		free(buf);
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
	return failed;
}

int fz_read_all(struct cow_image *img, uint64_t max)
{
	struct cow_info in;
	uint64_t off[64], len[64];
	int n = 0;

	cow_get_info(img, &in);
	uint64_t step = in.chunk_size ? in.chunk_size : 65536, end = in.virtual_size;
	if (end > max)
		end = max;
	for (uint64_t o = 0; o < end && n < 64; o += step, n++) {
		off[n] = o;
		len[n] = end - o < step ? end - o : step;
	}
	return fz_reads(img, off, len, n);
}

/* ---- images made by the engine --------------------------------------------------------- */

struct step { int op; uint64_t off, len; uint8_t pat; };

static int run_steps(struct cow_image *img, const struct step *s, int n)
{
	struct cow_backend *be;
	struct cow_ctx *ctx;
	uint8_t *buf = malloc(FZ_CHUNK * 2);
	int r;

	if (!buf)
		return -ENOMEM;
	if ((r = cow_backend_new("sync", 8, &be))) {
		free(buf);
		return r;
	}
	if ((r = cow_ctx_new(img, be, &ctx))) {
		cow_backend_free(be);
		free(buf);
		return r;
	}
	for (int i = 0; i < n && !r; i++) {
		memset(buf, s[i].pat, s[i].len <= FZ_CHUNK * 2 ? s[i].len : FZ_CHUNK * 2);
		r = cow_rw(ctx, s[i].op, buf, s[i].len, s[i].off, 0);
	}
	cow_ctx_free(ctx);
	cow_backend_free(be);
	free(buf);
	return r;
}

/* Run fn in a child that dies (_exit) instead of closing: 0 or -errno (or -EIO). */
static int in_child(int (*fn)(const char *, const char *), const char *a, const char *b)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(fn(a, b) ? 1 : 0);
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static int create_img(const char *path)
{
	struct cow_create_opts o = { .size = FZ_VSIZE, .chunk_size = FZ_CHUNK,
				     .block_size = FZ_BLOCK, .journal_size = FZ_JOURNAL };
	char err[COW_ERRLEN];

	unlink(path);
	int r = cow_create(path, &o, err, sizeof(err));
	if (r)
		fprintf(stderr, "fuzz: %s\n", err);
	return r;
}

static int dirty_child(const char *path, const char *unused)
{
	static const struct step before[] = {
		{ COW_WRITE, 0, 8192, 0x11 },
		{ COW_WRITE, 3 * FZ_CHUNK + 4096, 4096, 0x22 },
		{ COW_FLUSH, 0, 0, 0 },
	};
	static const struct step after[] = {
		{ COW_WRITE, 4096, 4096, 0x33 },		/* copy of a shared chunk */
		{ COW_FLUSH, 0, 0, 0 },
		{ COW_WRITE, 5 * FZ_CHUNK, FZ_CHUNK, 0x44 },	/* a whole new chunk */
		{ COW_WRITE, 7 * FZ_CHUNK + 512, 1024, 0x55 },	/* partial blocks */
		{ COW_FLUSH, 0, 0, 0 },
		{ COW_DISCARD, 3 * FZ_CHUNK, FZ_CHUNK, 0 },
		{ COW_WRITE_ZEROES, 9 * FZ_CHUNK, FZ_CHUNK, 0 },
		{ COW_WRITE, 12 * FZ_CHUNK, 3 * 4096, 0x66 },
		{ COW_FLUSH, 0, 0, 0 },
		{ COW_WRITE, 15 * FZ_CHUNK, 4096, 0x77 },	/* never flushed */
	};
	struct cow_image *img;
	char err[COW_ERRLEN];
	int r;

	(void)unused;
	if ((r = create_img(path)))
		return r;
	if ((r = cow_open(path, NULL, &img, err, sizeof(err)))) {
		fprintf(stderr, "fuzz: %s\n", err);
		return r;
	}
	if ((r = run_steps(img, before, sizeof(before) / sizeof(before[0]))) ||
	    (r = cow_snapshot_create(img, "base")) ||
	    (r = run_steps(img, after, sizeof(after) / sizeof(after[0]))))
		return r;
	return 0;	/* no cow_close: the child dies with the image dirty */
}

int fz_make_dirty(const char *path) { return in_child(dirty_child, path, NULL); }

static int sidelog_child(const char *path, const char *log)
{
	static const struct step steps[] = {
		{ COW_WRITE, 0, 4096, 0x11 },
		{ COW_FLUSH, 0, 0, 0 },
		{ COW_WRITE, 8192, 4096, 0x22 },		/* from here: only in the side log */
		{ COW_WRITE, 2 * FZ_CHUNK, FZ_CHUNK, 0x33 },
		{ COW_WRITE, 4 * FZ_CHUNK + 1000, 3000, 0x44 },
		{ COW_DISCARD, 0, FZ_CHUNK, 0 },
		{ COW_WRITE_ZEROES, 6 * FZ_CHUNK, 8192, 0 },
		{ COW_WRITE, 10 * FZ_CHUNK, 4096, 0x55 },
	};
	struct cow_image *img;
	char err[COW_ERRLEN];
	int r, fd;

	if ((r = create_img(path)))
		return r;
	fd = open(log, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = cow_open(path, &(struct cow_open_opts){ .flags = COW_OPEN_SIDELOG, .sidelog_fd = fd },
		     &img, err, sizeof(err));
	if (r) {
		fprintf(stderr, "fuzz: %s\n", err);
		return r;
	}
	return run_steps(img, steps, sizeof(steps) / sizeof(steps[0]));
}

int fz_make_sidelog(const char *path, const char *log)
{
	return in_child(sidelog_child, path, log);
}

/* ---- backing files and opening ---------------------------------------------------------- */

static int base_ucow_child(const char *path, const char *unused)
{
	static const struct step steps[] = {
		{ COW_WRITE, FZ_CHUNK, 4096, 0xb1 },
		{ COW_WRITE, 4 * FZ_CHUNK + 8192, FZ_CHUNK, 0xb2 },
	};
	struct cow_image *img;
	char err[COW_ERRLEN];
	int r;

	(void)unused;
	if ((r = create_img(path)))
		return r;
	if ((r = cow_open(path, NULL, &img, err, sizeof(err)))) {
		fprintf(stderr, "fuzz: %s\n", err);
		return r;
	}
	r = run_steps(img, steps, sizeof(steps) / sizeof(steps[0]));
	int c = cow_close(img);
	return r ? r : c;
}

void fz_setup_backing(void)
{
	static int done;
	uint8_t *raw;

	if (done)
		return;
	raw = malloc(FZ_VSIZE);
	if (!raw)
		abort();
	for (size_t i = 0; i < FZ_VSIZE; i++)
		raw[i] = (uint8_t)(i / 512 * 7 + 1);
	fz_write_file(fz_path("base.raw"), raw, FZ_VSIZE);
	free(raw);
	/* in a child as well: it leaves nothing open in this process */
	if (in_child(base_ucow_child, fz_path("base.ucow"), NULL)) {
		fprintf(stderr, "fuzz: cannot make base.ucow\n");
		abort();
	}
	done = 1;
}

int fz_open(const char *path, unsigned flags, const uint8_t *img, size_t len,
	    struct cow_image **out)
{
	char err[COW_ERRLEN];

	if (fz_backing_escapes(img, len))
		flags |= COW_OPEN_NOCHAIN;
	return cow_open(path, &(struct cow_open_opts){ .flags = flags }, out, err, sizeof(err));
}
