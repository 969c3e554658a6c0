/* SPDX-License-Identifier: MIT */
/*
 * JSON in and out of ublk/ (state files, the control socket, stats), through json-c.
 *
 * What we read is treated as hostile: a size limit before parsing, a nesting limit, strict
 * syntax, valid UTF-8 only, no NUL byte, nothing but white space after the one object;
 * every field is then fetched with its type and range checked (ublk_json_get_*).
 *
 * Byte strings (file paths, snapshot names) are not always UTF-8, and json-c neither checks
 * what it writes nor refuses to carry raw bytes. So a byte string S under KEY is written as
 * "KEY": S when S is valid UTF-8, and otherwise as "KEY-hex": its bytes in hex (lower case,
 * exact) plus "KEY": S with every invalid byte replaced by U+FFFD (for people; readers take
 * KEY-hex when it is there). Raw non-UTF-8 bytes never reach a JSON text we emit.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ublk.h"

static void seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
	unsigned char c = s[0];
	size_t n, i;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if (len < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;	/* overlong, beyond Unicode, or a surrogate */
	return n;
}

bool ublk_utf8_valid(const char *s, size_t len)
{
	size_t i = 0, n;

	while (i < len) {
		n = utf8_seq((const unsigned char *)s + i, len - i);
		if (!n)
			return false;
		i += n;
	}
	return true;
}

struct json_object *ublk_json_parse(const char *buf, size_t len, size_t max, char *err,
				    size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *o;
	enum json_tokener_error e;
	size_t end;

	if (len > max) {
		seterr(err, errlen, "too long (%zu bytes, at most %zu)", len, max);
		return NULL;
	}
	if (len > INT32_MAX || memchr(buf, 0, len)) {
		seterr(err, errlen, "not JSON text (a NUL byte)");
		return NULL;
	}
	if (!ublk_utf8_valid(buf, len)) {
		seterr(err, errlen, "not valid UTF-8");
		return NULL;
	}
	tok = json_tokener_new_ex(UBLK_JSON_DEPTH);
	if (!tok) {
		seterr(err, errlen, "out of memory");
		return NULL;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, buf, (int)len);
	e = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o || e != json_tokener_success) {
		json_object_put(o);
		if (e == json_tokener_continue || e == json_tokener_success)
			seterr(err, errlen, "malformed JSON (truncated)");
		else
			seterr(err, errlen, "malformed JSON at byte %zu: %s", end,
			       json_tokener_error_desc(e));
		return NULL;
	}
	for (; end < len; end++)
		if (!strchr(" \t\r\n", buf[end])) {
			json_object_put(o);
			seterr(err, errlen, "malformed JSON: data after the object (byte %zu)",
			       end);
			return NULL;
		}
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		seterr(err, errlen, "not a JSON object");
		return NULL;
	}
	return o;
}

const char *ublk_json_text(struct json_object *o, bool pretty)
{
	return json_object_to_json_string_ext(o, JSON_C_TO_STRING_SPACED |
					      JSON_C_TO_STRING_NOSLASHESCAPE |
					      (pretty ? JSON_C_TO_STRING_PRETTY : 0));
}

/* S with every byte that is not part of valid UTF-8 replaced by U+FFFD; malloc'd */
static char *utf8_display(const char *s, size_t len)
{
	char *disp = malloc(3 * len + 1);
	size_t i, n, off = 0;

	if (!disp)
		return NULL;
	for (i = 0; i < len; i += n) {
		n = utf8_seq((const unsigned char *)s + i, len - i);
		if (n) {
			memcpy(disp + off, s + i, n);
			off += n;
		} else {
			memcpy(disp + off, "\xef\xbf\xbd", 3);	/* U+FFFD */
			off += 3;
			n = 1;
		}
	}
	disp[off] = 0;
	return disp;
}

struct json_object *ublk_json_new_text(const char *s)
{
	char *d = utf8_display(s, strlen(s));
	struct json_object *o = d ? json_object_new_string(d) : NULL;

	free(d);
	return o;
}

int ublk_json_add_bytes(struct json_object *o, const char *key, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t len = strlen(s), i;
	char hkey[64], *h, *disp;

	if (ublk_utf8_valid(s, len))
		return json_object_object_add(o, key, json_object_new_string(s)) ? -ENOMEM : 0;
	h = malloc(2 * len + 1);
	disp = utf8_display(s, len);
	if (!h || !disp) {
		free(h);
		free(disp);
		return -ENOMEM;
	}
	for (i = 0; i < len; i++) {
		h[2 * i] = hex[(unsigned char)s[i] >> 4];
		h[2 * i + 1] = hex[(unsigned char)s[i] & 15];
	}
	h[2 * len] = 0;
	snprintf(hkey, sizeof(hkey), "%s-hex", key);
	i = json_object_object_add(o, key, json_object_new_string(disp)) ||
	    json_object_object_add(o, hkey, json_object_new_string(h));
	free(h);
	free(disp);
	return i ? -ENOMEM : 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ublk_json_get_bytes(struct json_object *o, const char *key, char *out, size_t len,
			char *err, size_t errlen)
{
	struct json_object *v;
	char hkey[64];
	const char *s;
	size_t n, i;

	snprintf(hkey, sizeof(hkey), "%s-hex", key);
	if (json_object_object_get_ex(o, hkey, &v)) {
		if (!json_object_is_type(v, json_type_string)) {
			seterr(err, errlen, "\"%s\": not a string", hkey);
			return -EINVAL;
		}
		s = json_object_get_string(v);
		n = (size_t)json_object_get_string_len(v);
		if (n % 2 || n / 2 >= len) {
			seterr(err, errlen, "\"%s\": %s", hkey, n % 2 ? "odd length" :
			       "too long");
			return -EINVAL;
		}
		for (i = 0; i < n / 2; i++) {
			int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				seterr(err, errlen, "\"%s\": %s", hkey, hi < 0 || lo < 0 ?
				       "not hex digits" : "a NUL byte");
				return -EINVAL;
			}
			out[i] = (char)(hi << 4 | lo);
		}
		out[n / 2] = 0;
		return 0;
	}
	if (!json_object_object_get_ex(o, key, &v)) {
		seterr(err, errlen, "\"%s\" missing", key);
		return -ENOENT;
	}
	if (!json_object_is_type(v, json_type_string)) {
		seterr(err, errlen, "\"%s\": not a string", key);
		return -EINVAL;
	}
	s = json_object_get_string(v);
	n = (size_t)json_object_get_string_len(v);
	if (strlen(s) != n) {
		seterr(err, errlen, "\"%s\": a NUL character", key);
		return -EINVAL;
	}
	if (n >= len) {
		seterr(err, errlen, "\"%s\": too long (%zu bytes, at most %zu)", key, n, len - 1);
		return -EINVAL;
	}
	if (!ublk_utf8_valid(s, n)) {	/* the tokener decodes \u escapes: check again */
		seterr(err, errlen, "\"%s\": not valid UTF-8", key);
		return -EINVAL;
	}
	memcpy(out, s, n + 1);
	return 0;
}

int ublk_json_get_int(struct json_object *o, const char *key, int64_t lo, int64_t hi,
		      int64_t *out, char *err, size_t errlen)
{
	struct json_object *v;
	int64_t x;

	if (!json_object_object_get_ex(o, key, &v)) {
		seterr(err, errlen, "\"%s\" missing", key);
		return -ENOENT;
	}
	if (!json_object_is_type(v, json_type_int)) {
		seterr(err, errlen, "\"%s\": not an integer", key);
		return -EINVAL;
	}
	/* json-c saturates what does not fit to INT64_MIN/MAX: callers keep lo and hi inside */
	x = json_object_get_int64(v);
	if (x < lo || x > hi) {
		seterr(err, errlen, "\"%s\": out of range (%" PRId64 "..%" PRId64 ")", key, lo,
		       hi);
		return -ERANGE;
	}
	*out = x;
	return 0;
}

int ublk_json_get_bool(struct json_object *o, const char *key, bool *out, char *err,
		       size_t errlen)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v)) {
		seterr(err, errlen, "\"%s\" missing", key);
		return -ENOENT;
	}
	if (!json_object_is_type(v, json_type_boolean)) {
		seterr(err, errlen, "\"%s\": not true or false", key);
		return -EINVAL;
	}
	*out = json_object_get_boolean(v);
	return 0;
}

int ublk_json_only_keys(struct json_object *o, const char *const *keys, char *err,
			size_t errlen)
{
	json_object_object_foreach(o, k, v) {
		size_t i;

		(void)v;
		for (i = 0; keys[i] && strcmp(k, keys[i]); i++)
			;
		if (!keys[i]) {
			seterr(err, errlen, "unknown key \"%.64s\"", k);
			return -EINVAL;
		}
	}
	return 0;
}
