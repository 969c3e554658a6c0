/*
 * The command-line tools' pure helpers (tools/util.c, tools/json_out.c) with hostile input:
 * sizes, byte patterns, -o lists, human sizes, backing names, UTF-8 for JSON, JSON building
 * and printing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cowcore.h"
#include "json_out.h"
#include "util.h"

/* ---- parse_bytes ------------------------------------------------------------------------- */

/* parse_bytes(s) must fail with rc and a reason containing why. */
static void bytes_bad(const char *s, int rc, const char *why)
{
	uint64_t v = 12345;
	const char *w = NULL;

	assert_int_equal(parse_bytes(s, &v, &w), rc);
	assert_non_null(w);
	assert_non_null(strstr(w, why));
	assert_int_equal(v, 12345);	/* untouched on failure */
}

static uint64_t bytes_ok(const char *s)
{
	uint64_t v = 12345;
	const char *w;

	assert_int_equal(parse_bytes(s, &v, &w), 0);
	return v;
}

static void test_parse_bytes(void **state)
{
	assert_int_equal(bytes_ok("0"), 0);
	assert_int_equal(bytes_ok("512"), 512);
	assert_int_equal(bytes_ok("4k"), 4096);
	assert_int_equal(bytes_ok("4K"), 4096);
	assert_int_equal(bytes_ok("3b"), 3);
	assert_int_equal(bytes_ok("1M"), 1 << 20);
	assert_int_equal(bytes_ok("2g"), 2ull << 30);
	assert_int_equal(bytes_ok("5T"), 5ull << 40);
	assert_int_equal(bytes_ok("1P"), 1ull << 50);
	assert_int_equal(bytes_ok("007"), 7);		/* decimal, not octal */
	assert_int_equal(bytes_ok("18446744073709551615"), UINT64_MAX);
	assert_int_equal(bytes_ok("16777215T"), 16777215ull << 40);	/* the largest T */

	bytes_bad(NULL, -EINVAL, "empty");
	bytes_bad("", -EINVAL, "empty");
	bytes_bad("-1", -EINVAL, "negative");
	bytes_bad("-0", -EINVAL, "negative");
	bytes_bad("+1", -EINVAL, "not a valid size");
	bytes_bad(" 1", -EINVAL, "not a valid size");
	bytes_bad("\t1", -EINVAL, "not a valid size");
	bytes_bad("1 ", -EINVAL, "not a valid size");
	bytes_bad("k", -EINVAL, "not a valid size");
	bytes_bad("1Q", -EINVAL, "not a valid size");
	bytes_bad("1E", -EINVAL, "not a valid size");	/* exbibytes: not a suffix */
	bytes_bad("4kb", -EINVAL, "not a valid size");
	bytes_bad("4kk", -EINVAL, "not a valid size");
	bytes_bad("1.5G", -EINVAL, "not a valid size");
	bytes_bad("1,5G", -EINVAL, "not a valid size");
	bytes_bad("0x10", -EINVAL, "not a valid size");
	bytes_bad("1e9", -EINVAL, "not a valid size");
	bytes_bad("99999999999T", -ERANGE, "too large");
	bytes_bad("16777216T", -ERANGE, "too large");	/* 2^64 */
	bytes_bad("16384P", -ERANGE, "too large");
	bytes_bad("18446744073709551616", -ERANGE, "too large");
	bytes_bad("99999999999999999999999999999999999999999999999999", -ERANGE, "too large");
	bytes_bad("99999999999999999999999999999999999999999999999999k", -ERANGE, "too large");
}

/* ---- parse_offset ------------------------------------------------------------------------ */

static void offset_bad(const char *s, int rc, const char *why)
{
	uint64_t v = 12345;
	const char *w = NULL;

	assert_int_equal(parse_offset(s, &v, &w), rc);
	assert_non_null(w);
	if (!strstr(w, why))
		fail_msg("'%s': reason '%s', expected '%s'", s ? s : "(null)", w, why);
	assert_int_equal(v, 12345);
}

static uint64_t offset_ok(const char *s)
{
	uint64_t v = 12345;
	const char *w;

	assert_int_equal(parse_offset(s, &v, &w), 0);
	return v;
}

static void test_parse_offset(void **state)
{
	assert_int_equal(offset_ok("0"), 0);
	assert_int_equal(offset_ok("4k"), 4096);
	assert_int_equal(offset_ok("0x0"), 0);
	assert_int_equal(offset_ok("0x1000"), 4096);
	assert_int_equal(offset_ok("0X1f"), 31);
	assert_int_equal(offset_ok("0xABCdef"), 0xabcdef);
	assert_int_equal(offset_ok("0xffffffffffffffff"), UINT64_MAX);
	assert_int_equal(offset_ok("0x00000000000000000001"), 1);	/* leading zeros */
	assert_int_equal(offset_ok("010"), 10);		/* decimal, not octal */

	offset_bad(NULL, -EINVAL, "empty");
	offset_bad("", -EINVAL, "empty");
	offset_bad("-1", -EINVAL, "must not be negative");
	offset_bad("-0x10", -EINVAL, "must not be negative");
	offset_bad("0x", -EINVAL, "hex");
	offset_bad("0x1k", -EINVAL, "no suffix");	/* qemu warns it is deprecated */
	offset_bad("0x-1", -EINVAL, "hex");
	offset_bad("0x 1", -EINVAL, "hex");
	offset_bad("0xg", -EINVAL, "hex");
	offset_bad("0x10000000000000000", -ERANGE, "too large");	/* 2^64 */
	offset_bad("0x1ffffffffffffffff", -ERANGE, "too large");
	offset_bad("12x", -EINVAL, "not a number");
	offset_bad("x12", -EINVAL, "not a number");
	offset_bad("1.5k", -EINVAL, "not a number");
	offset_bad("18446744073709551616", -ERANGE, "too large");
	offset_bad("16777216T", -ERANGE, "too large");
}

/* ---- parse_pattern ----------------------------------------------------------------------- */

static int pattern(const char *s)
{
	int v = -7;
	int r = parse_pattern(s, &v);

	if (r < 0) {
		assert_int_equal(r, -EINVAL);
		assert_int_equal(v, -7);	/* untouched on failure */
		return -1;
	}
	return v;
}

static void test_parse_pattern(void **state)
{
	assert_int_equal(pattern("0"), 0);
	assert_int_equal(pattern("205"), 205);
	assert_int_equal(pattern("255"), 255);
	assert_int_equal(pattern("0xcd"), 0xcd);
	assert_int_equal(pattern("0XFF"), 255);
	assert_int_equal(pattern("010"), 8);		/* 0.. is octal, like qemu-io */
	assert_int_equal(pattern("0x00"), 0);

	assert_int_equal(pattern(NULL), -1);
	assert_int_equal(pattern(""), -1);
	assert_int_equal(pattern("-1"), -1);
	assert_int_equal(pattern("-0"), -1);
	assert_int_equal(pattern("+5"), -1);
	assert_int_equal(pattern(" 5"), -1);
	assert_int_equal(pattern(" -5"), -1);
	assert_int_equal(pattern("5 "), -1);
	assert_int_equal(pattern("256"), -1);
	assert_int_equal(pattern("0x100"), -1);
	assert_int_equal(pattern("08"), -1);		/* not octal */
	assert_int_equal(pattern("0x"), -1);
	assert_int_equal(pattern("x1"), -1);
	assert_int_equal(pattern("1k"), -1);
	assert_int_equal(pattern("99999999999999999999999"), -1);
	assert_int_equal(pattern("4294967297"), -1);	/* 2^32 + 1: no wrap to 1 */
}

/* ---- opt_next ---------------------------------------------------------------------------- */

/* Walk list with opt_next; the pairs come out as "key=val" or "key" (no '='), joined by '|'. */
static const char *walk(const char *list)
{
	static char res[512];
	char copy[256], *p = copy, *k, *v;
	size_t n = 0;
	int guard = 0;

	snprintf(copy, sizeof(copy), "%s", list);
	res[0] = 0;
	while (opt_next(&p, &k, &v)) {
		assert_true(++guard < 50);
		n += (size_t)snprintf(res + n, sizeof(res) - n, "%s%s%s%s", n ? "|" : "", k,
				      v ? "=" : "", v ? v : "");
	}
	/* finished lists stay finished */
	assert_int_equal(opt_next(&p, &k, &v), 0);
	return res;
}

static void test_opt_next(void **state)
{
	char *p = NULL, *k, *v;

	assert_int_equal(opt_next(&p, &k, &v), 0);	/* no list at all */
	assert_string_equal(walk(""), "");
	assert_string_equal(walk(","), "");
	assert_string_equal(walk(",,,"), "");
	assert_string_equal(walk("a=1"), "a=1");
	assert_string_equal(walk("a=1,b=2"), "a=1|b=2");
	assert_string_equal(walk("a=1,"), "a=1");		/* trailing comma */
	assert_string_equal(walk("a=1,,,b=2,,"), "a=1|b=2");	/* empty items skipped */
	assert_string_equal(walk(",a=1"), "a=1");		/* leading comma */
	assert_string_equal(walk("help"), "help");		/* missing '=': value NULL */
	assert_string_equal(walk("a,b=2"), "a|b=2");
	assert_string_equal(walk("a="), "a=");			/* empty value, not NULL */
	assert_string_equal(walk("=1"), "=1");			/* empty key */
	assert_string_equal(walk("="), "=");
	assert_string_equal(walk("a=b=c"), "a=b=c");		/* the first '=' splits */
	assert_string_equal(walk("a==1"), "a==1");

	/* the value of a key without '=' is NULL, of "a=" an empty string */
	char l1[] = "a,b=";
	p = l1;
	assert_int_equal(opt_next(&p, &k, &v), 1);
	assert_string_equal(k, "a");
	assert_null(v);
	assert_int_equal(opt_next(&p, &k, &v), 1);
	assert_string_equal(k, "b");
	assert_non_null(v);
	assert_string_equal(v, "");
	assert_int_equal(opt_next(&p, &k, &v), 0);
}

/* ---- human_size -------------------------------------------------------------------------- */

static const char *hs(uint64_t v)
{
	static char buf[32];

	human_size(v, buf, sizeof(buf));
	return buf;
}

/* The ucow -o options of convert and measure: known keys only, whole numbers that fit. */
static int ucow_opts(const char *list, struct cow_create_opts *co)
{
	char buf[256];

	memset(co, 0, sizeof(*co));
	snprintf(buf, sizeof(buf), "%s", list);
	return parse_ucow_opts("t", buf, co);
}

static void test_parse_ucow_opts(void **state)
{
	struct cow_create_opts co;

	assert_int_equal(ucow_opts("", &co), 0);
	assert_int_equal(co.chunk_size | co.block_size | co.journal_size, 0);
	assert_int_equal(ucow_opts("chunk_size=64k,block_size=512,journal_size=1M", &co), 0);
	assert_int_equal(co.chunk_size, 65536);
	assert_int_equal(co.block_size, 512);
	assert_int_equal(co.journal_size, 1 << 20);
	assert_int_equal(ucow_opts("cluster_size=2M,,chunk_size=128k", &co), 0);
	assert_int_equal(co.chunk_size, 128 << 10);	/* the last one counts */
	assert_int_equal(ucow_opts("size=1M", &co), -EINVAL);
	assert_int_equal(ucow_opts("chunk_size", &co), -EINVAL);	/* no value */
	assert_int_equal(ucow_opts("chunk_size=", &co), -EINVAL);
	assert_int_equal(ucow_opts("chunk_size=-1", &co), -EINVAL);
	assert_int_equal(ucow_opts("chunk_size=4G", &co), -EINVAL);	/* past 32 bits */
	assert_int_equal(ucow_opts("chunk_size=4294967295", &co), 0);	/* the engine judges it */
	assert_int_equal(co.chunk_size, UINT32_MAX);
	assert_int_equal(ucow_opts("block_size=1x", &co), -EINVAL);
}

static void test_human_size(void **state)
{
	char small[4];

	/* the same strings as qemu-img's "virtual size:" */
	assert_string_equal(hs(0), "0 B");
	assert_string_equal(hs(1), "1 B");
	assert_string_equal(hs(999), "999 B");
	assert_string_equal(hs(1000), "0.977 KiB");	/* the unit switches at 1000 */
	assert_string_equal(hs(1023), "0.999 KiB");
	assert_string_equal(hs(1024), "1 KiB");
	assert_string_equal(hs(1536), "1.5 KiB");
	assert_string_equal(hs(1024000), "0.977 MiB");
	assert_string_equal(hs(1ull << 30), "1 GiB");
	assert_string_equal(hs(3221225472ull + 536870912ull), "3.5 GiB");
	assert_string_equal(hs(5ull << 40), "5 TiB");
	assert_string_equal(hs(1ull << 60), "1 EiB");
	assert_string_equal(hs(UINT64_MAX), "16 EiB");	/* no unit past Ei */

	/* a short buffer is cut, never overrun */
	memset(small, 'x', sizeof(small));
	human_size(1536, small, sizeof(small));
	assert_int_equal(strlen(small), 3);
	assert_memory_equal(small, "1.5", 3);
}

/* ---- resolve_near ------------------------------------------------------------------------ */

static const char *near(const char *overlay, const char *name)
{
	static char out[256];

	assert_int_equal(resolve_near(overlay, name, out, sizeof(out)), 0);
	return out;
}

static void test_resolve_near(void **state)
{
	char out[8];
	char big[5000];

	assert_string_equal(near("ov.img", "base.raw"), "base.raw");
	assert_string_equal(near("vm/ov.img", "base.raw"), "vm/base.raw");
	assert_string_equal(near("a/b/ov.img", "../base.raw"), "a/b/../base.raw");
	assert_string_equal(near("vm/ov.img", "/abs/base.raw"), "/abs/base.raw");
	assert_string_equal(near("ov.img", "/abs/base.raw"), "/abs/base.raw");
	assert_string_equal(near("./ov.img", "b"), "./b");
	assert_string_equal(near("vm/", "b"), "vm/b");
	assert_string_equal(near("/ov.img", "b"), "/b");	/* the root folder */

	/* too long for out: -ENAMETOOLONG, never a cut name */
	assert_int_equal(resolve_near("vm/ov.img", "base.raw", out, sizeof(out)), -ENAMETOOLONG);
	assert_int_equal(resolve_near("ov.img", "12345678", out, sizeof(out)), -ENAMETOOLONG);
	assert_int_equal(resolve_near("ov.img", "1234567", out, sizeof(out)), 0);	/* fits */
	assert_string_equal(out, "1234567");
	assert_int_equal(resolve_near("d/ov.img", "12345", out, sizeof(out)), 0);
	assert_string_equal(out, "d/12345");
	assert_int_equal(resolve_near("d/ov.img", "123456", out, sizeof(out)), -ENAMETOOLONG);

	/* an overlay folder longer than resolve_near's own buffer */
	memset(big, 'd', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	big[4500] = '/';
	{
		char res[8192];
		int r = resolve_near(big, "b", res, sizeof(res));

		/* refused, or the whole folder: never a shortened path */
		if (r == 0)
			assert_int_equal(strlen(res), 4500 + 2);
		else
			assert_int_equal(r, -ENAMETOOLONG);
	}
}

/* ---- UTF-8 for JSON ---------------------------------------------------------------------- */

#define R "\xef\xbf\xbd"	/* U+FFFD */

/* utf8_sanitize of in[0..len) must give want; utf8_valid must say whether it is unchanged. */
static void san(const char *in, size_t len, const char *want)
{
	size_t n = 999;
	char *out = utf8_sanitize(in, len, &n);

	assert_non_null(out);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(out, want, n + 1);	/* with its NUL */
	assert_int_equal(utf8_valid(in, len), len == n && !memcmp(in, want, len));
	assert_true(utf8_valid(out, n));	/* the result is valid, always */
	free(out);
}
#define SAN(in, want) san(in, sizeof(in) - 1, want)

static void test_utf8(void **state)
{
	SAN("", "");
	SAN("plain ascii /\"\\\x01\x7f", "plain ascii /\"\\\x01\x7f");
	SAN("\xc3\xa9", "\xc3\xa9");				/* U+00E9 */
	SAN("\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac");	/* two 3-byte */
	SAN("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");		/* U+1F600 */
	SAN("\xc2\x80", "\xc2\x80");				/* U+0080, the lowest 2-byte */
	SAN("\xe0\xa0\x80", "\xe0\xa0\x80");			/* U+0800 */
	SAN("\xed\x9f\xbf", "\xed\x9f\xbf");			/* U+D7FF, below the surrogates */
	SAN("\xee\x80\x80", "\xee\x80\x80");			/* U+E000, above them */
	SAN("\xef\xbf\xbd", "\xef\xbf\xbd");			/* U+FFFD itself */
	SAN("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf");		/* U+10FFFF, the last */

	SAN("\xff", R);
	SAN("a\xffz", "a" R "z");
	SAN("\xfe\xff", R R);
	SAN("\x80", R);						/* lone continuation */
	SAN("\xbf\x80", R R);
	SAN("\xc0\xaf", R R);					/* overlong '/' */
	SAN("\xc1\xbf", R R);
	SAN("\xe0\x80\xaf", R R R);				/* overlong, 3 bytes */
	SAN("\xe0\x9f\xbf", R R R);
	SAN("\xf0\x80\x80\xaf", R R R R);			/* overlong, 4 bytes */
	SAN("\xf0\x8f\xbf\xbf", R R R R);
	SAN("\xed\xa0\x80", R R R);				/* U+D800, a surrogate */
	SAN("\xed\xbf\xbf", R R R);				/* U+DFFF */
	SAN("\xf4\x90\x80\x80", R R R R);			/* U+110000 */
	SAN("\xf5\x80\x80\x80", R R R R);
	SAN("\xf8\x88\x80\x80\x80", R R R R R);			/* old 5-byte form */
	SAN("\xe2\x82", R R);					/* cut at the end */
	SAN("\xe2\x82x", R R "x");				/* cut by an ASCII byte */
	SAN("\xf0\x9f\x98", R R R);
	SAN("\xc3", R);
	SAN("\xc3\xc3\xa9", R "\xc3\xa9");			/* a start byte, then a whole one */
	SAN("\xe6\x97\xa5\xff\xe6\x9c\xac", "\xe6\x97\xa5" R "\xe6\x9c\xac");
}

static void test_utf8_nul(void **state)
{
	size_t n;
	char *out = utf8_sanitize("a\0\xff", 3, &n);

	assert_non_null(out);
	assert_int_equal(n, 5);
	assert_memory_equal(out, "a\0" R, 6);
	free(out);
	assert_true(utf8_valid("a\0b", 3));
	out = utf8_sanitize("abc", 0, NULL);	/* outlen may be NULL */
	assert_non_null(out);
	assert_string_equal(out, "");
	free(out);
	/* a length no buffer can hold three times: refused, not overflowed */
	assert_null(utf8_sanitize("x", SIZE_MAX / 2, &n));
}

/* ---- building JSON ------------------------------------------------------------------------ */

static void test_json_build(void **state)
{
	bool ok = true;
	json_object *o = jobj(&ok), *a = jarr(&ok), *v;

	assert_true(ok);
	jadd_str(o, "name", "a\xff", &ok);
	jadd_str(o, "null", NULL, &ok);
	jadd_u64(o, "big", UINT64_MAX, &ok);
	jadd_i64(o, "neg", -5, &ok);
	jadd_bool(o, "yes", true, &ok);
	jappend(a, jstr("x", &ok), &ok);
	jadd(o, "list", a, &ok);
	assert_true(ok);
	assert_string_equal(json_object_get_string(json_object_object_get(o, "name")), "a" R);
	assert_string_equal(json_object_get_string(json_object_object_get(o, "null")), "");
	assert_int_equal(json_object_get_uint64(json_object_object_get(o, "big")), UINT64_MAX);
	assert_int_equal(json_object_get_int64(json_object_object_get(o, "neg")), -5);
	assert_true(json_object_get_boolean(json_object_object_get(o, "yes")));
	assert_int_equal(json_object_array_length(json_object_object_get(o, "list")), 1);

	/* a failed part marks ok false, frees what it was given, and leaves ok false */
	jadd(o, "missing", NULL, &ok);
	assert_false(ok);
	ok = true;
	v = json_object_new_string("orphan");
	jadd(NULL, "k", v, &ok);		/* freed (the leak checker of asan-check sees) */
	assert_false(ok);
	ok = true;
	jappend(NULL, json_object_new_int(1), &ok);
	assert_false(ok);
	ok = true;
	jappend(a, NULL, &ok);
	assert_false(ok);
	jadd_u64(o, "after", 1, &ok);		/* a later success does not clear it */
	assert_false(ok);
	json_object_put(o);
}

/* What json_write prints of v (indent, nl), from a memory stream. */
static char *written(json_object *v, const char *indent, bool nl, int *rc)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	*rc = json_write(f, v, indent, nl);
	fclose(f);
	return buf;
}

static void test_json_write(void **state)
{
	bool ok = true;
	json_object *o = jobj(&ok), *in = jobj(&ok), *a = jarr(&ok), *parsed;
	char *s;
	int rc;
	/* layout characters inside strings must not be taken for layout */
	static const char tricky[] = "[\n  ]{\n}\"  \\ /x";

	jadd_str(o, "path", "d/e.img", &ok);
	jadd(o, "empty", jarr(&ok), &ok);
	jadd(o, "none", jobj(&ok), &ok);
	jadd_str(in, "s", tricky, &ok);
	jappend(a, in, &ok);
	jappend(a, json_object_new_int(7), &ok);
	jadd(o, "list", a, &ok);
	assert_true(ok);

	s = written(o, NULL, true, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(s,
		"{\n"
		"    \"path\": \"d/e.img\",\n"
		"    \"empty\": [],\n"
		"    \"none\": {},\n"
		"    \"list\": [\n"
		"        {\n"
		"            \"s\": \"[\\n  ]{\\n}\\\"  \\\\ /x\"\n"
		"        },\n"
		"        7\n"
		"    ]\n"
		"}\n");
	parsed = json_tokener_parse(s);
	assert_non_null(parsed);
	assert_string_equal(json_object_get_string(json_object_object_get(
		json_object_array_get_idx(json_object_object_get(parsed, "list"), 0), "s")), tricky);
	json_object_put(parsed);
	free(s);

	/* an indent for the lines after the first, no final newline */
	s = written(json_object_object_get(o, "list"), "> ", false, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(s, "[\n>     {\n>         \"s\": \"[\\n  ]{\\n}\\\"  \\\\ /x\"\n"
			       ">     },\n>     7\n> ]");
	free(s);
	s = written(json_object_object_get(o, "empty"), "> ", true, &rc);
	assert_string_equal(s, "[]\n");
	free(s);
	json_object_put(o);

	/* nothing to print, and a stream that cannot be written */
	s = written(NULL, NULL, true, &rc);
	assert_int_equal(rc, -ENOMEM);
	assert_string_equal(s, "");
	free(s);
	{
		FILE *full = fopen("/dev/full", "w");
		json_object *n = json_object_new_int(1);

		if (full) {
			assert_int_equal(json_write(full, n, NULL, true), -ENOSPC);
			fclose(full);
		}
		json_object_put(n);
	}
}

static void test_parse_seconds_ms(void **state)
{
	uint32_t ms = 7;
	(void)state;
	assert_int_equal(parse_seconds_ms("30", &ms), 0);
	assert_int_equal(ms, 30000);
	assert_int_equal(parse_seconds_ms("2.5", &ms), 0);
	assert_int_equal(ms, 2500);
	assert_int_equal(parse_seconds_ms("0.001", &ms), 0);
	assert_int_equal(ms, 1);
	assert_int_equal(parse_seconds_ms("3600", &ms), 0);
	assert_int_equal(ms, 3600000);
	ms = 7;
	static const char *const bad[] = { "", "0", "0.0", "-1", "+1", " 1", "1 ", "1.", ".5",
					   "1.2345", "1e3", "3600.001", "99999999999", "0x10",
					   "1s" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_true(parse_seconds_ms(bad[i], &ms) < 0);
	assert_int_equal(ms, 7);	/* untouched */
}

/* net_conf_parse on a copy of text: its result, n and err */
static int conf(const char *text, struct net_opts *n, char *e)
{
	char *b = strdup(text);
	int r = net_conf_parse(b, strlen(b), "x.conf", n, e, 256);
	free(b);
	return r;
}

static void test_net_conf(void **state)
{
	struct net_opts n = { 0 };
	char e[256];
	(void)state;
	assert_int_equal(conf("", &n, e), 0);
	assert_int_equal(n.flags, 0);
	assert_int_equal(conf("# c\n\n  allow-network-backing = yes\r\nnbd-timeout=2.5 \n", &n, e), 0);
	assert_int_equal(n.flags, COW_OPEN_ALLOW_NETWORK);
	assert_int_equal(n.timeout_ms, 2500);
	assert_int_equal(conf("allow-network-backing = no\n", &n, e), 0);
	assert_int_equal(n.flags, 0);
	/* every error leaves n as it was and names file and line */
	n = (struct net_opts){ .flags = COW_OPEN_ALLOW_NETWORK, .timeout_ms = 9 };
	static const struct { const char *text, *want; } bad[] = {
		{ "allow-network-backing = true\n", "x.conf:1: allow-network-backing must be yes" },
		{ "allow-network-backing = \n", "x.conf:1: allow-network-backing must be yes" },
		{ "nbd-timeout = 0\n", "x.conf:1: invalid nbd-timeout '0'" },
		{ "\nnbd-timeout = 1\nnbd-timeout = 1\n", "x.conf:3: 'nbd-timeout' given twice" },
		{ "allow-network-backing = no\nallow-network-backing = yes\n",
		  "x.conf:2: 'allow-network-backing' given twice" },
		{ "allow-network-backing\n", "x.conf:1: not 'key = value'" },
		{ "image = /x\n", "x.conf:1: unknown key 'image'" },
		{ "nbd-timeout = 1\x01\n", "x.conf:1: a control character" },
		{ "allow-network-backing = no # yes\n", "must be yes or no" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e[0] = 0;
		assert_int_equal(conf(bad[i].text, &n, e), -EINVAL);
		if (!strstr(e, bad[i].want))
			fail_msg("'%s': '%s' lacks '%s'", bad[i].text, e, bad[i].want);
		assert_int_equal(n.flags, COW_OPEN_ALLOW_NETWORK);
		assert_int_equal(n.timeout_ms, 9);
	}
	char nul[] = "nbd-timeout = 1\0x";
	assert_int_equal(net_conf_parse(nul, sizeof(nul) - 1, "x.conf", &n, e, sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "NUL byte"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_bytes), cmocka_unit_test(test_parse_offset),
		cmocka_unit_test(test_parse_pattern), cmocka_unit_test(test_parse_seconds_ms),
		cmocka_unit_test(test_net_conf),
		cmocka_unit_test(test_opt_next),    cmocka_unit_test(test_human_size),
		cmocka_unit_test(test_resolve_near), cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_utf8_nul),    cmocka_unit_test(test_json_build),
		cmocka_unit_test(test_json_write), cmocka_unit_test(test_parse_ucow_opts),
	};
	if (getenv("UNIT_FILTER"))	/* e.g. UNIT_FILTER=test_utf8: run one test */
		cmocka_set_test_filter(getenv("UNIT_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
