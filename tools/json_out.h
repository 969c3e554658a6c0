/* SPDX-License-Identifier: MIT */
/*
 * JSON output of the image commands (--output=json): documents are built with json-c and
 * printed the way qemu-img prints its JSON (4-space indents, "key": value, '/' unescaped).
 *
 * Building: every helper takes a bool *ok that it sets to false when something could not be
 * done (json-c out of memory, or a NULL object or value passed on); it never sets it back to
 * true. A caller builds the whole document, then checks ok once (json_emit does that).
 */
#ifndef UCOW_JSON_OUT_H
#define UCOW_JSON_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

/*
 * s[0..len) as valid UTF-8, for JSON strings (json-c copies bytes >= 0x80 as they are):
 * every byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no overlong forms,
 * no UTF-16 surrogates, nothing above U+10FFFF, no truncated sequences) becomes U+FFFD
 * (bytes EF BF BD), one U+FFFD per such byte; everything else is copied unchanged.
 * Returns a malloc'd NUL-terminated string (its length in *outlen when outlen is not NULL),
 * or NULL when out of memory.
 */
char *utf8_sanitize(const char *s, size_t len, size_t *outlen);

/* Whether s[0..len) is valid UTF-8 as above (utf8_sanitize would change nothing). */
bool utf8_valid(const char *s, size_t len);

/* A new object / array, or NULL with *ok = false. */
json_object *jobj(bool *ok);
json_object *jarr(bool *ok);

/* A JSON string holding s (NULL: "") made valid UTF-8 (utf8_sanitize), or NULL with *ok = false. */
json_object *jstr(const char *s, bool *ok);

/*
 * o[key] = v. v belongs to o afterwards; when it cannot be added (o or v NULL, out of memory)
 * it is freed and *ok set to false.
 */
void jadd(json_object *o, const char *key, json_object *v, bool *ok);
void jadd_str(json_object *o, const char *key, const char *s, bool *ok);
void jadd_u64(json_object *o, const char *key, uint64_t v, bool *ok);
void jadd_i64(json_object *o, const char *key, int64_t v, bool *ok);
void jadd_bool(json_object *o, const char *key, bool v, bool *ok);

/* Append v to array a; like jadd. */
void jappend(json_object *a, json_object *v, bool *ok);

/*
 * Print v on f: pretty, 4 spaces per level, empty arrays and objects as [] and {}. Lines after
 * the first get indent in front (NULL: none); nl adds a final newline. Flushes f.
 * 0, -ENOMEM (v NULL, or json-c out of memory) or -errno of the write.
 */
int json_write(FILE *f, json_object *v, const char *indent, bool nl);

/*
 * A command's JSON document: print doc and a newline on stdout when ok, then free doc.
 * Returns 0, or 1 (the exit status) after "ucow: FILE: cannot print JSON: <why>" on stderr.
 */
int json_emit(json_object *doc, bool ok, const char *file);

#endif
