/* SPDX-License-Identifier: MIT */
/* Helpers shared by the ucow image subcommands: messages, numbers, options, output. */
#ifndef UCOW_UTIL_H
#define UCOW_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#define UCOW_VERSION_STR "0.1.0"

/* "ucow: " + message + newline on stderr. Always one line. */
void ucow_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A usage error of subcommand cmd: one line with a hint at --help. Returns 1 (exit code). */
int usage_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Report what getopt_long() returned for a bad option (c is '?' or ':'). Returns 1. */
int opt_err(const char *cmd, int c, char **argv);

/* Option values every subcommand spells the same way: 0 with the value set, or the exit code
 * 1 after a usage error of cmd. --output=human|json; -f / -O ucow|raw (COW_FMT_*). */
int opt_output(const char *cmd, const char *arg, bool *json);
int opt_format(const char *cmd, const char *arg, int *fmt);
/*
 * --allow-network-backing (COW_OPEN_ALLOW_NETWORK: a chain may name an NBD URI) and
 * --nbd-timeout SEC (cow_open_opts.net_timeout_ms), spelled the same by every command that
 * opens images: NET_LONGOPTS in its long options, and opt_net() for c = OPT_ALLOW_NET or
 * OPT_NBD_TIMEOUT: 0 with n set, or the exit code 1 after a usage error of cmd.
 */
enum { OPT_ALLOW_NET = 0x4e00, OPT_NBD_TIMEOUT };
#define NET_LONGOPTS \
	{ "allow-network-backing", no_argument, NULL, OPT_ALLOW_NET }, \
	{ "nbd-timeout", required_argument, NULL, OPT_NBD_TIMEOUT }
struct net_opts {
	unsigned flags;		/* 0 or COW_OPEN_ALLOW_NETWORK */
	uint32_t timeout_ms;	/* 0: the engine's default */
};
int opt_net(const char *cmd, int c, const char *arg, struct net_opts *n);
/* "30", "2.5", "0.25": seconds with up to 3 decimals, 0.001 .. COW_NET_TIMEOUT_MAX_MS /
 * 1000, into milliseconds. 0, -EINVAL or -ERANGE (*ms untouched). */
int parse_seconds_ms(const char *s, uint32_t *ms);

/*
 * The host's settings for network backing images, read by dev add (an image given to a
 * server is often not the admin's own): UCOW_SETTINGS_FILE, or the file named by the
 * environment variable UCOW_SETTINGS when it is set (tests). Lines "key = value", "#"
 * comments, blank lines; keys: allow-network-backing = yes|no, nbd-timeout = SEC. Anything
 * else (an unknown or repeated key, a bad value, a NUL byte, more than 64 KiB) is an error.
 * net_conf_read: a missing file is no error (n untouched); 0, or -errno with err (errlen
 * bytes) one line "PATH[:LINE]: what is wrong". net_conf_parse: the same on the text buf
 * (len bytes, NUL-terminated, modified), path only for the messages.
 */
#define UCOW_SETTINGS_FILE "/etc/ucow/ucow.conf"
int net_conf_read(struct net_opts *n, char *err, size_t errlen);
int net_conf_parse(char *buf, size_t len, const char *path, struct net_opts *n, char *err,
		   size_t errlen);

/* An output format (create -f, convert -O, measure -O): ucow or raw; qcow2 is read-only. */
int opt_format_out(const char *cmd, const char *arg, int *fmt);

/*
 * The engine's text when it gave one, else strerror(-rc). The engine starts its texts with
 * the file's name: a leading "PATH: " (PATH = path, may be NULL) is left out.
 */
const char *err_text(int rc, const char *engine_err);
const char *err_text_for(int rc, const char *engine_err, const char *path);
/*
 * [off, off + len) of an image of size bytes (opened as img, read through ctx) into buf,
 * zeros past its end (a smaller base compared with a larger image). 0, or -errno with
 * "ucow: NAME: read failed at offset ..." said.
 */
struct cow_ctx;
struct cow_image;
int read_padded(struct cow_ctx *ctx, struct cow_image *img, const char *name, uint64_t size,
		void *buf, uint64_t off, uint64_t len);

/* "ucow: FILE: <err_text_for(rc, err, used)>" — used is the name the engine was given. */
void report(const char *file, const char *used, int rc, const char *err);
/* report() of a failed open by a command that has -f FMT: a file that is not a ucow image
 * (-EMEDIUMTYPE) gets "; use -f raw for a raw image". Commands without -f use report(). */
void report_f(const char *file, const char *used, int rc, const char *err);
/* report_f() for an image whose format option is opt (compare's second image: "-F"). */
void report_fopt(const char *file, const char *used, int rc, const char *err, const char *opt);
/* report_f() of an open with COW_OPEN_CONFINE: a refused backing file says how to allow it. */
void report_backing(const char *file, int rc, const char *err);

/*
 * A byte count: digits with an optional k, M, G, T suffix (cow_parse_size). Rejects signs
 * and empty strings. 0 or -EINVAL / -ERANGE; *why gets a short reason.
 */
int parse_bytes(const char *s, uint64_t *out, const char **why);

/*
 * An offset or length as qemu-io takes it: what parse_bytes() takes, or 0x (or 0X) and 1 to
 * 16 hex digits (no suffix). 0 or -EINVAL / -ERANGE, *why a short reason without the word
 * "size" ("must not be negative", "too large", ...). *out is untouched on failure.
 */
int parse_offset(const char *s, uint64_t *out, const char **why);

/* A byte value 0..255: decimal, 0x hex or 0 octal (qemu-io -P); no sign, no blanks. 0/-EINVAL */
int parse_pattern(const char *s, int *out);

/*
 * -o lists "key=value,key=value": call opt_next() until it returns 0. *p walks a writable
 * copy of the list. Returns 1 with *key and *val set (val NULL when there is no '='), 0 at the end.
 */
int opt_next(char **p, char **key, char **val);

/*
 * The ucow -o options of convert and measure (chunk_size or cluster_size, block_size,
 * journal_size) from the writable list opts into co. 0, or -EINVAL after one line naming
 * who (the file or command) and the option.
 */
struct cow_create_opts;
int parse_ucow_opts(const char *who, char *opts, struct cow_create_opts *co);

/*
 * A name in path's folder for building a file before it replaces path with rename(2):
 * "<dir>/.<base>.ucow-XXXXXX", guaranteed not to exist when this returns. 0 or -errno.
 */
int tmp_sibling(const char *path, char *out, size_t outlen);

/*
 * name as a backing file of overlay: relative names are taken from overlay's folder.
 * 0, or -ENAMETOOLONG when it does not fit in out (never a shortened path).
 */
int resolve_near(const char *overlay, const char *name, char *out, size_t outlen);

/*
 * Remove path if SIGINT, SIGTERM or SIGHUP ends the process (the file being built under a
 * temporary name); NULL stops that. The one piece of global state in the tools.
 */
void tmp_guard(const char *path);

/* Put tmp in place of path (rename + fsync of the folder); on failure remove tmp. 0/-errno */
int replace_file(const char *tmp, const char *path);

/* Refuse to replace path when it is a folder or in use (an OFD/POSIX lock is held on it). */
int check_replaceable(const char *path, const char **why);

/* -p: qemu-img's progress line on stderr, "    (12.34/100%)", redrawn at each whole percent
 * and ended with a newline at 100%. */
struct progress {
	bool on;
	int last;		/* hundredths of a percent last shown; -1: none yet */
};
void progress_show(struct progress *p, uint64_t done, uint64_t total);

/* online.c: start job op (UBLK_OP_FLATTEN, UBLK_OP_COMMIT) on the server of FILE (device
 * id, socket sock), wait for it with progress; the exit status (errors: one line). */
int online_job(const char *file, int id, const char *sock, int op, struct progress *pr);

/*
 * Where [off, off+len) of the content of a chain of images comes from: v[0] on top, v[i + 1]
 * the backing file of v[i] (each opened with or without its own chain). Returns COW_MAP_DATA
 * with *idx the image that holds the data, COW_MAP_ZERO (zeros, or past an image's end),
 * COW_MAP_BACKING when v[n - 1] leaves the run to its backing file, or -errno (*idx the image
 * whose map failed); *run gets the run's length (1 .. len).
 */
struct cow_image;
int chain_map(struct cow_image *const *v, size_t n, uint64_t off, uint64_t len, uint64_t *run,
	      size_t *idx);

/* qemu-img style human size: "1 GiB", "1.5 MiB", "0.977 GiB". */
void human_size(uint64_t v, char *buf, size_t len);

/* A JSON string literal (quotes and escapes). */
void json_str(FILE *f, const char *s);

#endif
