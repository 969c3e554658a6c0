/*
 * ublk state files (/run/ucow/devN.json): encode and decode round trip, byte-string paths
 * that are not UTF-8, and hostile files: truncated, wrong types, huge numbers, missing or
 * unknown fields, over-size, NUL and non-UTF-8 bytes; ublk_state_read names the file.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "ublk.h"
#include "unit.h"

#define BAD_PATH "/img/caf\xe9-\xff\x01.ucow"	/* Latin-1 bytes, a control byte */

static struct ublk_state good;
static char why[UBLK_ERRLEN];

static void make_good(struct ublk_state *st)
{
	memset(st, 0, sizeof(*st));
	st->id = st->o.dev_id = 7;
	st->pid = 4321;
	strcpy(st->o.target, "cow");
	strcpy(st->o.file, "/images/disk \"one\".ucow");
	strcpy(st->o.snapshot, "s\xc3\xa9 1");
	st->nr_queues = st->o.nr_queues = 2;
	st->depth = st->o.depth = 128;
	st->o.block_size = 4096;
	st->size = 10ull << 30;
	st->o.direct = true;
	st->o.read_only = false;
	st->o.recoverable = true;
	st->o.allow_network = true;
	st->o.nbd_timeout_ms = 2500;
	st->o.copy_on_read = true;
	st->flags = 0x1feull;
	strcpy(st->sock, "/run/ucow/dev7.sock");
}

static int decode_text(const char *t)
{
	struct ublk_state st;

	why[0] = 0;
	return ublk_state_decode(t, strlen(t), &st, why, sizeof(why));
}

static void assert_same(const struct ublk_state *a, const struct ublk_state *b)
{
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->o.dev_id, b->id);
	assert_int_equal(a->pid, b->pid);
	assert_string_equal(a->o.target, b->o.target);
	assert_string_equal(a->o.file, b->o.file);
	assert_string_equal(a->o.snapshot, b->o.snapshot);
	assert_int_equal(a->nr_queues, b->nr_queues);
	assert_int_equal(a->o.nr_queues, b->nr_queues);
	assert_int_equal(a->depth, b->depth);
	assert_int_equal(a->o.depth, b->depth);
	assert_int_equal(a->o.block_size, b->o.block_size);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->o.direct, b->o.direct);
	assert_int_equal(a->o.read_only, b->o.read_only);
	assert_int_equal(a->o.recoverable, b->o.recoverable);
	assert_int_equal(a->o.allow_network, b->o.allow_network);
	assert_int_equal(a->o.nbd_timeout_ms, b->o.nbd_timeout_ms);
	assert_int_equal(a->o.copy_on_read, b->o.copy_on_read);
	assert_int_equal(a->flags, b->flags);
	assert_string_equal(a->sock, b->sock);
}

static void test_roundtrip(void **state)
{
	struct ublk_state out;
	char *t = ublk_state_encode(&good);

	assert_non_null(t);
	assert_non_null(strstr(t, "\"pid\": 4321"));	/* what the guest scripts sed for */
	assert_non_null(strstr(t, "\"block-size\": 4096"));
	assert_non_null(strstr(t, "\"socket\": \"/run/ucow/dev7.sock\""));
	assert_int_equal(ublk_state_decode(t, strlen(t), &out, why, sizeof(why)), 0);
	assert_same(&out, &good);
	free(t);
}

static void test_roundtrip_null(void **state)
{
	struct ublk_state st = good, out;
	char *t;

	strcpy(st.o.target, "null");
	st.o.file[0] = st.o.snapshot[0] = st.sock[0] = 0;
	st.o.size = st.size = 1ull << 30;
	st.o.recoverable = st.o.direct = false;
	t = ublk_state_encode(&st);
	assert_non_null(t);
	assert_null(strstr(t, "snapshot"));
	assert_int_equal(ublk_state_decode(t, strlen(t), &out, why, sizeof(why)), 0);
	assert_same(&out, &st);
	assert_int_equal(out.o.size, 1ull << 30);	/* dev recover serves the null size */
	free(t);
}

/* A path that is not UTF-8 goes out as hex (and a U+FFFD display form), never raw. */
static void test_non_utf8_path(void **state)
{
	struct ublk_state st = good, out;
	char *t;

	strcpy(st.o.file, BAD_PATH);
	strcpy(st.o.snapshot, "\xfe\xfd");
	t = ublk_state_encode(&st);
	assert_non_null(t);
	assert_true(ublk_utf8_valid(t, strlen(t)));
	assert_null(strchr(t, '\xe9'));
	assert_non_null(strstr(t, "\"file-hex\": \"2f696d672f636166e92dff012e75636f77\""));
	assert_non_null(strstr(t, "\"snapshot-hex\": \"fefd\""));
	assert_non_null(strstr(t, "caf\xef\xbf\xbd-"));	/* display form: U+FFFD */
	assert_int_equal(ublk_state_decode(t, strlen(t), &out, why, sizeof(why)), 0);
	assert_same(&out, &st);
	free(t);
}

/* good's encoding with KEY set to the JSON text VAL (NULL: removed). */
static char *mutate(const char *key, const char *val)
{
	char *t = ublk_state_encode(&good), *res;
	struct json_object *o = json_tokener_parse(t);

	assert_non_null(o);
	free(t);
	if (val) {
		struct json_object *v = json_tokener_parse(val);

		if (strcmp(val, "null"))	/* JSON null is a NULL object */
			assert_non_null(v);
		json_object_object_add(o, key, v);
	} else {
		json_object_object_del(o, key);
	}
	res = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return res;
}

static void expect_bad(const char *key, const char *val, const char *msg)
{
	char *t = mutate(key, val);
	int r = decode_text(t);

	if (r != -EINVAL || !strstr(why, msg))
		fail_msg("%s = %s: got %d '%s', want -EINVAL '%s' (%s)", key, val ? val : "(none)",
			 r, why, msg, t);
	free(t);
}

static void expect_good(const char *key, const char *val)
{
	char *t = mutate(key, val);

	if (decode_text(t))
		fail_msg("%s = %s refused: %s", key, val ? val : "(none)", why);
	free(t);
}

static void test_missing(void **state)
{
	static const char *const req[] = {
		"version", "id", "pid", "target", "file", "queues", "depth", "block-size", "size",
		"direct", "read-only", "recoverable", "features", "socket",
	};

	for (size_t i = 0; i < sizeof(req) / sizeof(req[0]); i++)
		expect_bad(req[i], NULL, "missing");
	expect_good("snapshot", NULL);
	/* optional: files from before network backing have neither */
	expect_good("allow-network-backing", NULL);
	expect_good("nbd-timeout-ms", NULL);
	expect_good("copy-on-read", NULL);
}

static void test_wrong_types(void **state)
{
	static const char *const ints[] = {
		"version", "id", "pid", "queues", "depth", "block-size", "size", "features",
	};
	static const char *const bools[] = { "direct", "read-only", "recoverable" };
	static const char *const strs[] = { "target", "file", "snapshot", "socket" };
	size_t i;

	for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		expect_bad(ints[i], "\"1\"", "not an integer");
		expect_bad(ints[i], "2.0", "not an integer");
		expect_bad(ints[i], "true", "not an integer");
		expect_bad(ints[i], "null", "not an integer");
		expect_bad(ints[i], "[1]", "not an integer");
	}
	for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		expect_bad(bools[i], "1", "not true or false");
		expect_bad(bools[i], "\"true\"", "not true or false");
	}
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		expect_bad(strs[i], "1", "not a string");
		expect_bad(strs[i], "{\"a\": \"b\"}", "not a string");
	}
	expect_bad("file-hex", "12", "not a string");
}

static void test_ranges(void **state)
{
	expect_bad("size", "18446744073709551616", "out of range");
	expect_bad("size", "99999999999999999999999999", "out of range");
	expect_bad("size", "9223372036854775807", "out of range");
	expect_bad("size", "-4096", "out of range");
	expect_bad("size", "0", "out of range");
	expect_bad("features", "-1", "out of range");
	expect_bad("id", "-1", "out of range");
	expect_bad("id", "1048576", "out of range");
	expect_bad("pid", "0", "out of range");
	expect_bad("pid", "4194305", "out of range");
	expect_bad("queues", "0", "out of range");
	expect_bad("queues", "4097", "out of range");
	expect_bad("depth", "0", "out of range");
	expect_bad("depth", "4294967424", "out of range");	/* 2^32 + 128: no wrap */
	expect_bad("block-size", "1024", "512 or 4096");
	expect_bad("version", "1", "\"version\"");
	expect_bad("nbd-timeout-ms", "0", "out of range");
	expect_bad("nbd-timeout-ms", "3600001", "out of range");
	expect_bad("allow-network-backing", "1", "not true or false");
	expect_bad("copy-on-read", "\"yes\"", "not true or false");
	expect_good("nbd-timeout-ms", "3600000");
	expect_good("size", "4611686018427387904");
	expect_good("queues", "4096");
}

static void test_strings(void **state)
{
	char big[5000];

	expect_bad("target", "\"loop\"", "unknown target");
	expect_bad("target", "\"cowcowcowcowcowcow\"", "too long");
	expect_bad("file", "\"relative.ucow\"", "absolute");
	expect_bad("file", "\"/a\\u0000b\"", "NUL");
	expect_bad("snapshot", "\"\"", "empty");
	expect_bad("snapshot", "\"s\\u0000\"", "NUL");
	expect_bad("socket", "\"dev7.sock\"", "absolute");
	memset(big, 'a', sizeof(big));
	big[0] = '"';
	big[1] = '/';
	snprintf(big + 4094, 6, "aa\"");
	expect_good("file", big);	/* 4095 bytes */
	snprintf(big + 4095, 6, "aa\"");
	expect_bad("file", big, "too long");
	/* the hex form: exact bytes, checked */
	expect_bad("file-hex", "\"2f6\"", "odd length");
	expect_bad("file-hex", "\"2fzz\"", "not hex");
	expect_bad("file-hex", "\"2f00\"", "NUL");
	expect_bad("file-hex", "\"6162\"", "absolute");
	expect_good("file-hex", "\"2fFF\"");
	expect_bad("color", "1", "unknown key");
}

static void test_syntax(void **state)
{
	char *t = ublk_state_encode(&good), *big;
	size_t len = strlen(t), i;

	/* every truncation is refused */
	for (i = 0; i + 1 < len; i++)
		assert_int_equal(ublk_state_decode(t, i, &(struct ublk_state){0}, why,
						   sizeof(why)), -EINVAL);
	assert_int_equal(decode_text("[1, 2]"), -EINVAL);
	assert_non_null(strstr(why, "not a JSON object"));
	assert_int_equal(decode_text("{\"id\": 1} {}"), -EINVAL);
	assert_non_null(strstr(why, "malformed"));
	assert_int_equal(decode_text("{'id': 1}"), -EINVAL);
	assert_int_equal(decode_text("{\"id\": 1,}"), -EINVAL);
	assert_int_equal(decode_text("{\"a\": [[[[[[[[[[[[1]]]]]]]]]]]]}"), -EINVAL);
	assert_int_equal(decode_text("{\"file\": \"/\xff\"}"), -EINVAL);
	assert_non_null(strstr(why, "UTF-8"));
	assert_int_equal(decode_text(""), -EINVAL);
	/* a NUL byte inside the text */
	t[10] = 0;
	assert_int_equal(ublk_state_decode(t, len, &(struct ublk_state){0}, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "NUL"));
	free(t);
	/* over-size, even if it is only white space */
	t = ublk_state_encode(&good);
	len = strlen(t);
	big = malloc(UBLK_STATE_MAX + 2);
	memset(big, ' ', UBLK_STATE_MAX + 1);
	memcpy(big, t, len);
	assert_int_equal(ublk_state_decode(big, UBLK_STATE_MAX, &(struct ublk_state){0}, why,
					   sizeof(why)), 0);
	assert_int_equal(ublk_state_decode(big, UBLK_STATE_MAX + 1, &(struct ublk_state){0},
					   why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "too long"));
	free(big);
	free(t);
}

static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	fclose(f);
}

/* ublk_state_write / ublk_state_read through $UCOW_RUN_DIR; errors name the file. */
static void test_files(void **state)
{
	struct ublk_state st = good, out;
	char e[UBLK_ERRLEN], path[600], *big;
	size_t n = UBLK_STATE_MAX + 100;

	setenv("UCOW_RUN_DIR", dir, 1);
	strcpy(st.o.file, BAD_PATH);
	assert_int_equal(ublk_state_write(&st), 0);
	assert_int_equal(ublk_state_read(7, &out, e), 0);
	assert_same(&out, &st);
	assert_int_equal(ublk_state_read(8, &out, e), -ENOENT);
	assert_non_null(strstr(e, P("dev8.json")));
	/* a file whose id is not its name's */
	snprintf(path, sizeof(path), "%s", P("dev7.json"));
	assert_int_equal(rename(path, P("dev9.json")), 0);
	assert_int_equal(ublk_state_read(9, &out, e), -EINVAL);
	assert_non_null(strstr(e, P("dev9.json")));
	assert_non_null(strstr(e, "\"id\" is 7, not 9"));
	assert_int_equal(out.pid, 0);	/* nothing half-read is handed out */
	/* over-size on disk: refused before reading */
	big = malloc(n);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	write_file(P("dev3.json"), big, n);
	free(big);
	assert_int_equal(ublk_state_read(3, &out, e), -EINVAL);
	assert_non_null(strstr(e, P("dev3.json")));
	assert_non_null(strstr(e, "too long"));
	/* truncated on disk */
	write_file(P("dev4.json"), "{\"version\": 2, \"id\": 4", 22);
	assert_int_equal(ublk_state_read(4, &out, e), -EINVAL);
	assert_non_null(strstr(e, "truncated"));
	/* not a regular file */
	assert_int_equal(mkdir(P("dev5.json"), 0700), 0);
	assert_int_equal(ublk_state_read(5, &out, e), -EINVAL);
	assert_non_null(strstr(e, "not a regular file"));
	/* the ids of the folder, sorted */
	int ids[8];
	assert_int_equal(ublk_state_ids(ids, 8), 4);
	assert_int_equal(ids[0], 3);
	assert_int_equal(ids[3], 9);
	unsetenv("UCOW_RUN_DIR");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_roundtrip_null),
		cmocka_unit_test(test_non_utf8_path),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_files),
	};

	(void)err, (void)pass_queue, (void)pass_submit_wait;	/* unit.h's, for image tests */
	make_good(&good);
	return UNIT_RUN(tests);
}
