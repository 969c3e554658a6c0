/*
 * replay-log: replay a dm-log-writes log onto a target (block device or file), stopping at
 * every FLUSH or FUA entry to run a check; for the test bed's whole-stack crash replay
 * (tests/vm/guest/60-replay-crash.sh). Written from the format description of the kernel's
 * Documentation/admin-guide/device-mapper/log-writes.rst:
 *
 *   block 0 of the log: the super (le64 magic, le64 version, le64 nr_entries,
 *   le32 sectorsize); from block 1 on, entries one after the other. An entry is one
 *   sectorsize block whose start is (le64 sector, le64 nr_sectors, le64 flags,
 *   le64 data_len); sector and nr_sectors count sectorsize blocks of the logged device.
 *   A write is followed by its nr_sectors blocks of data; a discard has no data; a mark
 *   has nr_sectors 0 and its text (data_len bytes) right after the entry in the same block.
 *   Entries are in the order the writes completed; a FLUSH entry comes after the writes
 *   that completed before the flush.
 *
 * The disk is modelled with a volatile write cache: a write (or discard) reaches TARGET
 * only at the next FLUSH entry (a FLUSH entry's own data and a FUA write go at once). So
 * at any point TARGET holds what a power cut would have left if the cache lost everything
 * not flushed: the pessimistic crash state.
 *
 *   replay-log [options] LOG TARGET
 *     --list            print the entries (no replay)
 *     --exec SCRIPT     at each replay point (every FLUSH or FUA entry and every mark),
 *                       run `/bin/sh SCRIPT` (environment: REPLAY_ENTRY,
 *                       the entry number; REPLAY_POINT, the count of points so far;
 *                       REPLAY_MARK, the last mark seen, empty if none); a non-zero exit
 *                       stops the replay with status 1
 *     --copy-to FILE    before each check, make FILE a copy of the target as it is (sparse:
 *                       all-zero 4 KiB blocks are skipped), for the check to change freely
 *                       (the target must then be a regular file)
 *     --clean DIR       before each check, remove the files in DIR (where the check puts
 *                       what it extracts: nothing stale is ever taken for this point's)
 *     --from-mark M     run CMD only at points after mark M (the entries before are replayed)
 *                       At a mark, TARGET is as at the last FLUSH before it: what a crash
 *                       right after the mark leaves (e.g. a file whose fsync returned
 *                       before the mark must be there)
 *     --marks           replay points are the marks only
 *     --skip-flush N    test of the test: the Nth FLUSH entry counted from --from-mark's
 *                       mark loses the cached writes instead of writing them (a device
 *                       that ignored that flush and then lost its cache)
 *
 * Before the first point the target is expected to hold what the logged device held when
 * the log began (zeros, for a log started on a zeroed device). Exit 0 when every check
 * passed, 1 on a failed check, 2 on a bad log or an I/O error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LW_MAGIC 0x6a736677736872ULL
#define LW_FLUSH (1u << 0)
#define LW_FUA (1u << 1)
#define LW_DISCARD (1u << 2)
#define LW_MARK (1u << 3)
#define LW_META (1u << 4)

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void die(const char *what)
{
	fprintf(stderr, "replay-log: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void bad(const char *fmt, uint64_t a, uint64_t b)
{
	fprintf(stderr, "replay-log: bad log: ");
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(2);
}

static void read_at(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("read log");
		if (n == 0) {
			errno = EIO;
			die("log ends inside an entry");
		}
		done += (size_t)n;
	}
}

static void write_at(int fd, const void *buf, size_t len, off_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("write target");
		done += (size_t)n;
	}
}

/* Remove the files of DIR (creating DIR if missing). */
static void clean_dir(const char *dir)
{
	if (mkdir(dir, 0755) && errno != EEXIST)
		die(dir);
	DIR *d = opendir(dir);
	if (!d)
		die(dir);
	int dfd = dirfd(d);
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    unlinkat(dfd, de->d_name, 0))
			die(de->d_name);
	closedir(d);
}

/* FILE := the target's content, without its all-zero 4 KiB blocks (tmpfs keeps holes). */
static void copy_target(int tgt, const char *file)
{
	static char *buf;
	static char zero[4096];
	const size_t chunk = 1 << 20;
	if (!buf && !(buf = malloc(chunk)))
		die("malloc");
	struct stat st;
	if (fstat(tgt, &st))
		die("stat target");
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(file);
	if (ftruncate(fd, st.st_size))
		die("truncate copy");
	for (off_t off = 0; off < st.st_size; off += (off_t)chunk) {
		size_t len = st.st_size - off < (off_t)chunk ? (size_t)(st.st_size - off) : chunk;
		read_at(tgt, buf, len, off);
		for (size_t b = 0; b < len; b += sizeof zero) {
			size_t n = len - b < sizeof zero ? len - b : sizeof zero;
			if (memcmp(buf + b, zero, n))
				write_at(fd, buf + b, n, off + (off_t)b);
		}
	}
	if (close(fd))
		die("close copy");
}

/* The volatile cache: writes not flushed yet, in completion order (NULL data: zeros). */
struct cached {
	off_t off;
	size_t len;
	char *data;
};
static struct cached *cache;
static size_t ncache, capcache;

static void cache_add(off_t off, size_t len, const char *data)
{
	if (ncache == capcache) {
		capcache = capcache ? 2 * capcache : 256;
		cache = realloc(cache, capcache * sizeof *cache);
		if (!cache)
			die("malloc");
	}
	cache[ncache].off = off;
	cache[ncache].len = len;
	cache[ncache].data = NULL;
	if (data) {
		if (!(cache[ncache].data = malloc(len)))
			die("malloc");
		memcpy(cache[ncache].data, data, len);
	}
	ncache++;
}

/* Write the cached writes to the target in order (or drop them), and empty the cache. */
static void cache_flush(int tgt, int drop)
{
	static char zero[1 << 16];
	for (size_t i = 0; i < ncache; i++) {
		if (!drop && cache[i].data)
			write_at(tgt, cache[i].data, cache[i].len, cache[i].off);
		else if (!drop)	/* a discarded range reads back as zeros here (loop on tmpfs does) */
			for (size_t done = 0; done < cache[i].len; done += sizeof zero) {
				size_t n = cache[i].len - done < sizeof zero ? cache[i].len - done : sizeof zero;
				write_at(tgt, zero, n, cache[i].off + (off_t)done);
			}
		free(cache[i].data);
	}
	ncache = 0;
}

int main(int argc, char **argv)
{
	const char *cmd = NULL, *from_mark = NULL, *copy_to = NULL, *clean = NULL;
	int list = 0, at_marks = 0;
	long skip_flush = 0;
	int i;
	for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
		if (!strcmp(argv[i], "--list"))
			list = 1;
		else if (!strcmp(argv[i], "--marks"))
			at_marks = 1;
		else if (!strcmp(argv[i], "--exec") && i + 1 < argc)
			cmd = argv[++i];
		else if (!strcmp(argv[i], "--clean") && i + 1 < argc)
			clean = argv[++i];
		else if (!strcmp(argv[i], "--copy-to") && i + 1 < argc)
			copy_to = argv[++i];
		else if (!strcmp(argv[i], "--from-mark") && i + 1 < argc)
			from_mark = argv[++i];
		else if (!strcmp(argv[i], "--skip-flush") && i + 1 < argc)
			skip_flush = atol(argv[++i]);
		else
			break;
	}
	if (argc - i != (list ? 1 : 2)) {
		fprintf(stderr, "usage: replay-log [--list] [--exec SCRIPT] [--copy-to FILE] [--clean DIR] [--from-mark M] [--marks] "
				"[--skip-flush N] LOG [TARGET]\n");
		return 2;
	}
	int log = open(argv[i], O_RDONLY);
	if (log < 0)
		die(argv[i]);
	int tgt = -1;
	if (!list) {
		tgt = open(argv[i + 1], copy_to ? O_RDWR : O_WRONLY);
		if (tgt < 0)
			die(argv[i + 1]);
	}

	unsigned char sb[512];
	read_at(log, sb, sizeof sb, 0);
	if (le64(sb) != LW_MAGIC)
		bad("magic %#" PRIx64 " (want %#" PRIx64 ")", le64(sb), LW_MAGIC);
	if (le64(sb + 8) != 1)
		bad("version %" PRIu64 "%.0" PRIu64, le64(sb + 8), 0);
	uint64_t nr = le64(sb + 16);
	uint32_t bs = le32(sb + 24);
	if (bs < 512 || bs > 65536 || (bs & (bs - 1)))
		bad("sector size %" PRIu64 "%.0" PRIu64, bs, 0);
	fprintf(stderr, "replay-log: %" PRIu64 " entries, sector size %u\n", nr, bs);

	unsigned char *ent = malloc(bs);
	size_t bufsz = 1 << 20;
	char *buf = malloc(bufsz);
	if (!ent || !buf)
		die("malloc");
	long cflushes = 0;	/* FLUSH entries since from_mark */
#define flush_now(entry)                                                                    \
	do {                                                                                \
		int drop_ = checking && ++cflushes == skip_flush;                           \
		if (drop_)                                                                  \
			fprintf(stderr, "replay-log: flush entry %" PRIu64 " loses %zu cached writes\n", \
				(uint64_t)(entry), ncache);                                 \
		cache_flush(tgt, drop_);                                                    \
	} while (0)
	off_t pos = bs;
	char mark[512] = "";
	int checking = from_mark == NULL;
	long points = 0, checked = 0, flushes = 0, writes = 0, discards = 0, nmarks = 0;

	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint64_t e = 1; e <= nr; e++) {
		read_at(log, ent, bs, pos);
		pos += bs;
		uint64_t sector = le64(ent), count = le64(ent + 8), flags = le64(ent + 16);
		uint64_t dlen = le64(ent + 24);
		if (flags & ~(uint64_t)(LW_FLUSH | LW_FUA | LW_DISCARD | LW_MARK | LW_META))
			bad("entry %" PRIu64 ": unknown flags %#" PRIx64, e, flags);
		if (flags & LW_MARK) {
			if (dlen >= bs - 32 || dlen >= sizeof mark)
				bad("entry %" PRIu64 ": mark of %" PRIu64 " bytes", e, dlen);
			memcpy(mark, ent + 32, dlen);
			mark[dlen] = 0;
			nmarks++;
			if (list)
				printf("%" PRIu64 " mark %s\n", e, mark);
			if (from_mark && !strcmp(mark, from_mark))
				checking = 1;
		} else if (flags & LW_DISCARD) {
			discards++;
			if (list)
				printf("%" PRIu64 " discard %" PRIu64 "+%" PRIu64 "\n", e, sector, count);
			else
				cache_add((off_t)(sector * bs), (size_t)(count * bs), NULL);
		} else if (count) {
			size_t len = (size_t)(count * bs);
			if (len > bufsz) {
				bufsz = len;
				buf = realloc(buf, bufsz);
				if (!buf)
					die("malloc");
			}
			read_at(log, buf, len, pos);
			writes++;
			if (list)
				printf("%" PRIu64 " write %" PRIu64 "+%" PRIu64 "%s%s%s\n", e, sector, count,
				       flags & LW_FLUSH ? " flush" : "", flags & LW_FUA ? " fua" : "",
				       flags & LW_META ? " meta" : "");
			else if (flags & (LW_FLUSH | LW_FUA)) {
				/* PREFLUSH: what completed before goes first; then this write, at once
				 * with FUA, else it waits in the cache like any other */
				if (flags & LW_FLUSH)
					flush_now(e);
				if (flags & LW_FUA)
					write_at(tgt, buf, len, (off_t)(sector * bs));
				else
					cache_add((off_t)(sector * bs), len, buf);
			} else
				cache_add((off_t)(sector * bs), len, buf);
			pos += (off_t)len;
		} else if (list)
			printf("%" PRIu64 " flush%s\n", e, flags & LW_FUA ? " fua" : "");

		if (flags & LW_FLUSH) {
			flushes++;
			if (!list && !count)
				flush_now(e);
		}
		if (list)
			continue;
		int point = at_marks ? !!(flags & LW_MARK) : !!(flags & (LW_FLUSH | LW_FUA | LW_MARK));
		if (!point)
			continue;
		points++;
		if (cmd && checking) {
			if (fdatasync(tgt) && errno != EINVAL)
				die("fdatasync target");
			char envbuf[64];
			snprintf(envbuf, sizeof envbuf, "%" PRIu64, e);
			setenv("REPLAY_ENTRY", envbuf, 1);
			snprintf(envbuf, sizeof envbuf, "%ld", points);
			setenv("REPLAY_POINT", envbuf, 1);
			setenv("REPLAY_MARK", mark, 1);
			if (clean)
				clean_dir(clean);
			if (copy_to)
				copy_target(tgt, copy_to);
			fflush(stdout);
			fflush(stderr);
			pid_t pid = fork();
			if (pid < 0)
				die("fork");
			if (pid == 0) {
				execl("/bin/sh", "sh", cmd, (char *)NULL);
				_exit(127);
			}
			int st;
			while (waitpid(pid, &st, 0) < 0)
				if (errno != EINTR)
					die("waitpid");
			checked++;
			if (checked % 25 == 0) {
				struct timespec now;
				clock_gettime(CLOCK_MONOTONIC, &now);
				fprintf(stderr, "replay-log: %ld points checked (entry %" PRIu64 " of %" PRIu64 ", %.0f s)\n",
					checked, e, nr, (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9);
			}
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				fprintf(stderr, "replay-log: check failed at entry %" PRIu64 " (point %ld, last mark '%s'): status %#x\n",
					e, points, mark, st);
				printf("checked %ld points\n", checked);
				return 1;
			}
		}
	}
	if (!list)
		cache_flush(tgt, 0);	/* the end of the log: the device was closed cleanly */
	if (!list)
		printf("replayed %" PRIu64 " entries (%ld writes, %ld discards, %ld flushes, %ld marks); "
		       "%ld points, checked %ld\n", nr, writes, discards, flushes, nmarks, points, checked);
	return 0;
}
