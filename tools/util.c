/* SPDX-License-Identifier: MIT */
/* Helpers shared by the ucow image subcommands: messages, numbers, options, output. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cowcore.h"
#include "ublk.h"
#include "util.h"

void ucow_err(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* one line, whatever the engine's text holds */
	for (char *p = line; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	fflush(stdout);
	fprintf(stderr, "ucow: %s\n", line);
}

int usage_err(const char *cmd, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ucow_err("%s: %s (try 'ucow %s --help')", cmd, msg, cmd);
	return 1;
}

int opt_output(const char *cmd, const char *arg, bool *json)
{
	if (strcmp(arg, "json") && strcmp(arg, "human"))
		return usage_err(cmd, "unknown output format '%s' (human or json)", arg);
	*json = !strcmp(arg, "json");
	return 0;
}

int opt_format(const char *cmd, const char *arg, int *fmt)
{
	int f = cow_fmt_parse(arg);

	if (f <= 0)
		return usage_err(cmd, "unknown format '%s' (use ucow, raw or qcow2)", arg);
	*fmt = f;
	return 0;
}

int opt_format_out(const char *cmd, const char *arg, int *fmt)
{
	int f = cow_fmt_parse(arg);

	if (f == COW_FMT_QCOW2)
		return usage_err(cmd, "format 'qcow2' is read-only in ucow (write ucow or raw)");
	if (f <= 0)
		return usage_err(cmd, "unknown format '%s' (use ucow or raw)", arg);
	*fmt = f;
	return 0;
}

int opt_err(const char *cmd, int c, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "?";
	int n = (int)strcspn(arg, "=");

	if (!strncmp(arg, "--", 2) && arg[2]) {	/* a long option: name it as typed */
		if (c == ':')
			return usage_err(cmd, "option '%.*s' needs an argument", n, arg);
		if (arg[n] && optopt)	/* known, but it takes no value */
			return usage_err(cmd, "option '%.*s' takes no argument", n, arg);
		return usage_err(cmd, "unknown option '%.*s'", n, arg);
	}
	if (optopt > 0 && optopt < 128 && isgraph(optopt))
		return usage_err(cmd, c == ':' ? "option '-%c' needs an argument" :
				 "unknown option '-%c'", optopt);
	return usage_err(cmd, c == ':' ? "option '%s' needs an argument" : "unknown option '%s'",
			 arg);
}

const char *err_text(int rc, const char *engine_err)
{
	if (engine_err && engine_err[0])
		return engine_err;
	return strerror(rc < 0 ? -rc : rc);
}

const char *err_text_for(int rc, const char *engine_err, const char *path)
{
	const char *t = err_text(rc, engine_err);
	size_t n = path ? strlen(path) : 0;

	if (n && !strncmp(t, path, n) && t[n] == ':' && t[n + 1] == ' ')
		return t + n + 2;
	/* a backing image named from the overlay's folder: "./NAME: ..." */
	if (n && !strncmp(t, "./", 2) && !strncmp(t + 2, path, n) && t[n + 2] == ':' &&
	    t[n + 3] == ' ')
		return t + n + 4;
	return t;
}

static void report_hint(const char *file, const char *used, int rc, const char *err,
			const char *hint)
{
	const char *t = err_text_for(rc, err, used ? used : file);
	struct ublk_state st;
	int id;

	/* locked by a ublk server: say which device, and how to free the image */
	if (rc == -EBUSY && (id = ublk_server_of(used ? used : file, &st)) >= 0) {
		ucow_err("%s: in use by /dev/ublkb%d (ucow dev del %d first)", file, id, id);
		return;
	}

	if (used && t == err_text(rc, err))
		t = err_text_for(rc, err, file);
	if (rc == -EREMOTE)	/* the engine names no option: ours */
		hint = " (--allow-network-backing allows it)";
	ucow_err("%s: %s%s", file, t, hint);
}

int opt_net(const char *cmd, int c, const char *arg, struct net_opts *n)
{
	if (c == OPT_ALLOW_NET) {
		n->flags |= COW_OPEN_ALLOW_NETWORK;
		return 0;
	}
	if (parse_seconds_ms(arg, &n->timeout_ms))
		return usage_err(cmd, "invalid --nbd-timeout '%s' (seconds, 0.001 to %u, up to "
				 "3 decimals)", arg, COW_NET_TIMEOUT_MAX_MS / 1000);
	return 0;
}

#define SETTINGS_MAX (64 << 10)

int net_conf_parse(char *buf, size_t len, const char *path, struct net_opts *n, char *err,
		   size_t errlen)
{
	struct net_opts v = *n;
	bool seen_allow = false, seen_timeout = false;
	char *p, *nl, *eq, *key, *val, *end;
	int line = 0;

	if (strlen(buf) != len) {
		snprintf(err, errlen, "%s: a NUL byte in the file (not a text file)", path);
		return -EINVAL;
	}
	for (p = buf; p && *p; p = nl) {
		line++;
		nl = strchr(p, '\n');
		if (nl)
			*nl++ = 0;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '#' || !strcmp(p, "\r"))
			continue;
		if (!(eq = strchr(p, '='))) {
			snprintf(err, errlen, "%s:%d: not 'key = value'", path, line);
			return -EINVAL;
		}
		key = p;
		for (end = eq; end > key && (end[-1] == ' ' || end[-1] == '\t'); end--)
			;
		*end = 0;
		for (val = eq + 1; *val == ' ' || *val == '\t'; val++)
			;
		for (end = val + strlen(val); end > val && strchr(" \t\r", end[-1]); end--)
			;
		*end = 0;
		for (const char *c = val; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f) {
				snprintf(err, errlen, "%s:%d: a control character in the value", path,
					 line);
				return -EINVAL;
			}
		if (!strcmp(key, "allow-network-backing")) {
			if (seen_allow) {
				snprintf(err, errlen, "%s:%d: '%s' given twice", path, line, key);
				return -EINVAL;
			}
			seen_allow = true;
			if (!strcmp(val, "yes"))
				v.flags |= COW_OPEN_ALLOW_NETWORK;
			else if (!strcmp(val, "no"))
				v.flags &= ~COW_OPEN_ALLOW_NETWORK;
			else {
				snprintf(err, errlen, "%s:%d: allow-network-backing must be yes or no, "
					 "not '%.40s'", path, line, val);
				return -EINVAL;
			}
		} else if (!strcmp(key, "nbd-timeout")) {
			if (seen_timeout) {
				snprintf(err, errlen, "%s:%d: '%s' given twice", path, line, key);
				return -EINVAL;
			}
			seen_timeout = true;
			if (parse_seconds_ms(val, &v.timeout_ms)) {
				snprintf(err, errlen, "%s:%d: invalid nbd-timeout '%.40s' (seconds, "
					 "0.001 to %u, up to 3 decimals)", path, line, val,
					 COW_NET_TIMEOUT_MAX_MS / 1000);
				return -EINVAL;
			}
		} else {
			snprintf(err, errlen, "%s:%d: unknown key '%.40s' (allow-network-backing, "
				 "nbd-timeout)", path, line, key);
			return -EINVAL;
		}
	}
	*n = v;
	return 0;
}

int net_conf_read(struct net_opts *n, char *err, size_t errlen)
{
	const char *path = getenv("UCOW_SETTINGS");
	char *buf;
	size_t len = 0;
	ssize_t got;
	int fd, r;

	if (!path || !*path)
		path = UCOW_SETTINGS_FILE;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (!(buf = malloc(SETTINGS_MAX + 1))) {
		close(fd);
		return -ENOMEM;
	}
	while ((got = read(fd, buf + len, SETTINGS_MAX + 1 - len)) > 0 && len <= SETTINGS_MAX)
		len += (size_t)got;
	r = got < 0 ? -errno : 0;
	close(fd);
	if (r)
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	else if (len > SETTINGS_MAX) {
		snprintf(err, errlen, "%s: too large (at most %d bytes)", path, SETTINGS_MAX);
		r = -EFBIG;
	} else {
		buf[len] = 0;
		r = net_conf_parse(buf, len, path, n, err, errlen);
	}
	free(buf);
	return r;
}

int parse_seconds_ms(const char *s, uint32_t *ms)
{
	uint64_t v = 0, frac = 0;
	int digits = 0, fd = 0;
	const char *p = s;
	for (; *p >= '0' && *p <= '9' && digits < 8; p++, digits++)
		v = v * 10 + (uint64_t)(*p - '0');
	if (!digits)
		return -EINVAL;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9' && fd < 3; p++, fd++)
			frac = frac * 10 + (uint64_t)(*p - '0');
		if (!fd)
			return -EINVAL;
		for (; fd < 3; fd++)
			frac *= 10;
	}
	if (*p)
		return -EINVAL;
	v = v * 1000 + frac;
	if (!v || v > COW_NET_TIMEOUT_MAX_MS)
		return -ERANGE;
	*ms = (uint32_t)v;
	return 0;
}

void report(const char *file, const char *used, int rc, const char *err)
{
	report_hint(file, used, rc, err, "");
}

void report_f(const char *file, const char *used, int rc, const char *err)
{
	report_fopt(file, used, rc, err, "-f");
}

void report_fopt(const char *file, const char *used, int rc, const char *err, const char *opt)
{
	char hint[64];

	snprintf(hint, sizeof(hint), "; use %s raw for a raw image", opt);
	report_hint(file, used, rc, err, rc == -EMEDIUMTYPE ? hint : "");
}

int read_padded(struct cow_ctx *ctx, struct cow_image *img, const char *name, uint64_t size,
		void *buf, uint64_t off, uint64_t len)
{
	uint64_t have = off >= size ? 0 : size - off < len ? size - off : len;
	int rc = have ? cow_rw(ctx, COW_READ, buf, have, off, 0) : 0;

	if (rc < 0)
		ucow_err("%s: read failed at offset %" PRIu64 ": %s", name, off,
			 err_text_for(rc, cow_errmsg(img), name));
	memset((uint8_t *)buf + have, 0, len - have);
	return rc;
}

int parse_bytes(const char *s, uint64_t *out, const char **why)
{
	int rc;

	*why = "not a valid size (a number with an optional k, M, G or T suffix)";
	if (!s || !*s) {
		*why = "empty size";
		return -EINVAL;
	}
	if (s[0] == '-') {
		*why = "size must not be negative";
		return -EINVAL;
	}
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	rc = cow_parse_size(s, out);
	if (rc == -ERANGE)
		*why = "size too large";
	return rc;
}

int parse_offset(const char *s, uint64_t *out, const char **why)
{
	uint64_t v = 0;
	int rc;

	if (s && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		*why = "not a hex number (0x and 1 to 16 hex digits, no suffix)";
		if (!s[2])
			return -EINVAL;
		for (const char *p = s + 2; *p; p++) {
			if (!isxdigit((unsigned char)*p))
				return -EINVAL;
			if (v >> 60) {
				*why = "too large";
				return -ERANGE;
			}
			v = v << 4 | (uint64_t)(isdigit((unsigned char)*p) ? *p - '0' :
						(tolower((unsigned char)*p) - 'a' + 10));
		}
		*out = v;
		return 0;
	}
	rc = parse_bytes(s, out, why);
	if (rc == -ERANGE)
		*why = "too large";
	else if (rc && s && s[0] == '-')
		*why = "must not be negative";
	else if (rc && s && s[0])
		*why = "not a number (digits with an optional k, M, G or T suffix, or 0x hex)";
	return rc;
}

int parse_pattern(const char *s, int *out)
{
	char *end;
	long v;

	/* digits only: strtol would also take leading blanks and a sign */
	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || *end || v < 0 || v > 255)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

int opt_next(char **p, char **key, char **val)
{
	char *s = *p, *comma, *eq;

	while (s && *s == ',')
		s++;
	if (!s || !*s)
		return 0;
	comma = strchr(s, ',');
	if (comma) {
		*comma = 0;
		*p = comma + 1;
	} else {
		*p = s + strlen(s);
	}
	eq = strchr(s, '=');
	if (eq)
		*eq++ = 0;
	*key = s;
	*val = eq;
	return 1;
}

int parse_ucow_opts(const char *who, char *opts, struct cow_create_opts *co)
{
	char *p = opts, *key, *val;
	const char *why;
	uint64_t v;

	while (opt_next(&p, &key, &val)) {
		if (!strcmp(key, "preallocation")) {
			int m = val ? cow_prealloc_parse(val) : -EINVAL;
			if (m < 0) {
				ucow_err("%s: invalid preallocation '%s' (off, metadata, falloc or "
					 "full)", who, val ? val : "");
				return -EINVAL;
			}
			co->prealloc = (uint32_t)m;
			continue;
		}
		uint32_t *to = !strcmp(key, "chunk_size") || !strcmp(key, "cluster_size") ?
			       &co->chunk_size : !strcmp(key, "block_size") ? &co->block_size :
			       !strcmp(key, "journal_size") ? &co->journal_size : NULL;

		if (!to) {
			ucow_err("%s: unknown option '%s' for format ucow (chunk_size, block_size, "
				 "journal_size, preallocation)", who, key);
			return -EINVAL;
		}
		if (!val || parse_bytes(val, &v, &why) < 0 || v > UINT32_MAX) {
			ucow_err("%s: invalid %s '%s'", who, key, val ? val : "");
			return -EINVAL;
		}
		*to = (uint32_t)v;
	}
	return 0;
}

static void split_path(const char *path, char *dir, size_t dirlen, const char **base)
{
	const char *slash = strrchr(path, '/');

	if (!slash) {
		snprintf(dir, dirlen, ".");
		*base = path;
	} else if (slash == path) {
		snprintf(dir, dirlen, "/");
		*base = slash + 1;
	} else {
		snprintf(dir, dirlen, "%.*s", (int)(slash - path), path);
		*base = slash + 1;
	}
}

int resolve_near(const char *overlay, const char *name, char *out, size_t outlen)
{
	return cow_backing_path(overlay, name, out, outlen);	/* as the engine opens it */
}

int tmp_sibling(const char *path, char *out, size_t outlen)
{
	char dir[4096];
	const char *base;
	int fd, n;

	split_path(path, dir, sizeof(dir), &base);
	n = snprintf(out, outlen, "%s/.%.200s.ucow-XXXXXX", dir, base);
	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	fd = mkstemp(out);
	if (fd < 0)
		return -errno;
	close(fd);
	/* the engine creates the file itself (O_EXCL): hand it a free name */
	if (unlink(out) < 0)
		return -errno;
	return 0;
}

static const char *volatile guarded;

static void on_fatal_signal(int sig)
{
	const char *p = guarded;

	if (p)
		unlink(p);
	signal(sig, SIG_DFL);
	raise(sig);
}

void tmp_guard(const char *path)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa = { .sa_handler = on_fatal_signal };

	guarded = path;
	if (!path)
		return;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

int replace_file(const char *tmp, const char *path)
{
	char dir[4096];
	const char *base;
	int fd, rc;

	if (rename(tmp, path) < 0) {
		rc = -errno;
		unlink(tmp);
		return rc;
	}
	split_path(path, dir, sizeof(dir), &base);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

int check_replaceable(const char *path, const char **why)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	struct stat st;
	int fd;

	*why = NULL;
	if (stat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		return -EINVAL;
	}
	if (access(path, W_OK) < 0)
		return -errno;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
		close(fd);
		*why = "file is in use by another process (locked)";
		return -EBUSY;
	}
	close(fd);
	return 0;
}

void progress_show(struct progress *p, uint64_t done, uint64_t total)
{
	int pct;

	if (!p->on)
		return;
	pct = total ? (int)(done * 10000 / total) : 10000;
	if (pct / 100 == p->last / 100 && p->last >= 0 && pct != 10000)
		return;
	p->last = pct;
	fprintf(stderr, "    (%d.%02d/100%%)%s", pct / 100, pct % 100, pct == 10000 ? "\n" : "\r");
	fflush(stderr);
}

int chain_map(struct cow_image *const *v, size_t n, uint64_t off, uint64_t len, uint64_t *run,
	      size_t *idx)
{
	for (size_t i = 0;; i++) {
		struct cow_info bi;
		uint64_t phys;
		int st = cow_map(v[i], off, len, run, &phys);

		*idx = i;
		if (st >= 0 && (*run == 0 || *run > len))
			*run = len;	/* never loop forever on an odd answer */
		if (st < 0 || st != COW_MAP_BACKING || i + 1 == n)
			return st;
		cow_get_info(v[i + 1], &bi);
		if (off >= bi.virtual_size)
			return COW_MAP_ZERO;	/* past the backing image's end */
		len = *run < bi.virtual_size - off ? *run : bi.virtual_size - off;
	}
}

void human_size(uint64_t v, char *buf, size_t len)
{
	static const char *const sfx[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
	int i = 0;

	/* same unit choice as qemu-img: switch up once the number reaches 1000 */
	while (i < 6 && (double)v >= 1000.0 * (double)(1ull << (10 * i)))
		i++;
	snprintf(buf, len, "%0.3g %sB", (double)v / (double)(1ull << (10 * i)), sfx[i]);
}

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

void report_backing(const char *file, int rc, const char *err)
{
	if (rc == -EPERM && err && err[0])	/* COW_OPEN_CONFINE refused a backing file */
		ucow_err("%s; add --allow-backing-outside if it is trusted", err);
	else
		report_f(file, NULL, rc, err);
}
