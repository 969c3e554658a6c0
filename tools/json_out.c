/* SPDX-License-Identifier: MIT */
/* JSON output of the image commands: json-c documents, printed like qemu-img's. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_out.h"
#include "util.h"

/* Length of the well-formed UTF-8 sequence at s (n > 0 bytes left), 0 when none starts there. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;	/* allowed range of the second byte */
	size_t len;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;	/* overlong below U+0800 */
		else if (c == 0xed)
			hi = 0x9f;	/* U+D800..U+DFFF: surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;	/* overlong below U+10000 */
		else if (c == 0xf4)
			hi = 0x8f;	/* above U+10FFFF */
	} else {
		return 0;	/* 0x80..0xc1 (continuation, overlong 2-byte), 0xf5..0xff */
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

bool utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, k;

	while (i < len) {
		k = utf8_seq(u + i, len - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

char *utf8_sanitize(const char *s, size_t len, size_t *outlen)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, o = 0, k;
	char *out;

	if (len > (SIZE_MAX - 1) / 3)
		return NULL;
	out = malloc(3 * len + 1);	/* every byte may become 3 */
	if (!out)
		return NULL;
	while (i < len) {
		k = utf8_seq(u + i, len - i);
		if (k) {
			memcpy(out + o, s + i, k);
			o += k;
			i += k;
		} else {
			memcpy(out + o, "\xef\xbf\xbd", 3);	/* U+FFFD REPLACEMENT CHARACTER */
			o += 3;
			i++;
		}
	}
	out[o] = 0;
	if (outlen)
		*outlen = o;
	return out;
}

json_object *jobj(bool *ok)
{
	json_object *o = json_object_new_object();

	if (!o)
		*ok = false;
	return o;
}

json_object *jarr(bool *ok)
{
	json_object *a = json_object_new_array();

	if (!a)
		*ok = false;
	return a;
}

json_object *jstr(const char *s, bool *ok)
{
	json_object *v = NULL;
	size_t len = s ? strlen(s) : 0, n;
	char *clean;

	if (!s)
		s = "";
	if (utf8_valid(s, len)) {
		if (len <= INT_MAX)
			v = json_object_new_string_len(s, (int)len);
	} else {
		clean = utf8_sanitize(s, len, &n);
		if (clean && n <= INT_MAX)
			v = json_object_new_string_len(clean, (int)n);
		free(clean);
	}
	if (!v)
		*ok = false;
	return v;
}

void jadd(json_object *o, const char *key, json_object *v, bool *ok)
{
	if (!o || !v || json_object_object_add(o, key, v) < 0) {
		json_object_put(v);
		*ok = false;
	}
}

void jadd_str(json_object *o, const char *key, const char *s, bool *ok)
{
	jadd(o, key, jstr(s, ok), ok);
}

void jadd_u64(json_object *o, const char *key, uint64_t v, bool *ok)
{
	jadd(o, key, json_object_new_uint64(v), ok);
}

void jadd_i64(json_object *o, const char *key, int64_t v, bool *ok)
{
	jadd(o, key, json_object_new_int64(v), ok);
}

void jadd_bool(json_object *o, const char *key, bool v, bool *ok)
{
	jadd(o, key, json_object_new_boolean(v), ok);
}

void jappend(json_object *a, json_object *v, bool *ok)
{
	if (!a || !v || json_object_array_add(a, v) < 0) {
		json_object_put(v);
		*ok = false;
	}
}

int json_write(FILE *f, json_object *v, const char *indent, bool nl)
{
	const int flags = JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
			  JSON_C_TO_STRING_NOSLASHESCAPE;
	bool in_str = false, esc = false;
	const char *s, *p, *q;

	if (!v)
		return -ENOMEM;
	s = json_object_to_json_string_ext(v, flags);
	if (!s)
		return -ENOMEM;
	/*
	 * json-c indents by 2 and prints an empty array as "[", newline, "]". Strings hold no
	 * raw newline (json-c escapes it), so outside strings a newline and the spaces after it
	 * are the layout.
	 */
	for (p = s; *p; p++) {
		if (in_str) {
			fputc(*p, f);
			if (esc)
				esc = false;
			else if (*p == '\\')
				esc = true;
			else if (*p == '"')
				in_str = false;
			continue;
		}
		if (*p == '"') {
			in_str = true;
		} else if (*p == '[' || *p == '{') {
			q = p + 1;
			if (*q == '\n')
				q += 1 + strspn(q + 1, " ");
			if (q > p + 1 && *q == (*p == '[' ? ']' : '}')) {
				fputc(*p, f);
				fputc(*q, f);
				p = q;
				continue;
			}
		} else if (*p == '\n') {
			size_t sp = strspn(p + 1, " ");

			fputc('\n', f);
			if (indent)
				fputs(indent, f);
			for (size_t i = 0; i < 2 * sp; i++)
				fputc(' ', f);
			p += sp;
			continue;
		}
		fputc(*p, f);
	}
	if (nl)
		fputc('\n', f);
	errno = 0;
	if (fflush(f) == EOF || ferror(f))
		return errno ? -errno : -EIO;
	return 0;
}

int json_emit(json_object *doc, bool ok, const char *file)
{
	int r = ok ? json_write(stdout, doc, NULL, true) : -ENOMEM;

	json_object_put(doc);
	if (r < 0) {
		ucow_err("%s: cannot print JSON: %s", file, strerror(-r));
		return 1;
	}
	return 0;
}
