/*
 * The ublk control socket: its messages (requests, replies, snapshot lists, image info)
 * encoded and decoded, hostile requests and replies refused with a reason (malformed,
 * over-long, wrong types, unknown op or key, embedded NUL, names that are not UTF-8), and
 * the server itself (ublk_sock_serve) on a real unix socket in the scratch folder, with a
 * device that has no kernel side: ping, stats, errors, hostile bytes, and online snapshot
 * create/list of a real image with a name that is not UTF-8. Also the latency buckets.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "ublk.h"
#include "unit.h"

static char why[UBLK_ERRLEN];
static struct ublk_sock_req rq;

static int req_text(const char *t)
{
	why[0] = 0;
	return ublk_sock_req_decode(t, strlen(t), &rq, why, sizeof(why));
}

static void bad_req(const char *t, const char *msg)
{
	int r = req_text(t);

	if (r != -EINVAL || !strstr(why, msg) || rq.op != -1)
		fail_msg("%s: got %d op %d '%s', want -EINVAL '%s'", t, r, rq.op, why, msg);
}

/* ---- requests ---------------------------------------------------------------------------- */

static void test_req_roundtrip(void **state)
{
	static const char *const names[] = { "s1", "with space \"quoted\" \\ /", "caf\xc3\xa9",
					     "\xff\xfe raw", "x\x01y\x7f" };
	char *t;
	int op;

	for (op = 0; op < UBLK_OP_NR; op++) {
		bool named = op == UBLK_OP_SNAP_CREATE || op == UBLK_OP_SNAP_DELETE ||
			     op == UBLK_OP_SNAP_APPLY;

		if (op == UBLK_OP_RESIZE) {	/* takes a size, not a name */
			assert_null(ublk_sock_req_encode(op, NULL, why, sizeof(why)));
			assert_null(ublk_sock_req_encode(op, "n", why, sizeof(why)));
			continue;
		}
		/* a size where none belongs */
		assert_null(ublk_sock_req_encode_size(op, 4096, why, sizeof(why)));
		t = ublk_sock_req_encode(op, named ? "n" : NULL, why, sizeof(why));
		assert_non_null(t);
		assert_int_equal(t[strlen(t) - 1], '\n');
		assert_int_equal(req_text(t), 0);
		assert_int_equal(rq.op, op);
		assert_string_equal(rq.name, named ? "n" : "");
		free(t);
		/* a name where none belongs, none where one must be: refused before sending */
		assert_null(ublk_sock_req_encode(op, named ? NULL : "n", why, sizeof(why)));
	}
	assert_null(ublk_sock_req_encode(UBLK_OP_NR, NULL, why, sizeof(why)));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		t = ublk_sock_req_encode(UBLK_OP_SNAP_CREATE, names[i], why, sizeof(why));
		assert_non_null(t);
		assert_true(ublk_utf8_valid(t, strlen(t)));
		assert_int_equal(req_text(t), 0);
		assert_string_equal(rq.name, names[i]);
		free(t);
	}
	t = ublk_sock_req_encode(UBLK_OP_SNAP_DELETE, "\xff\xfe", why, sizeof(why));
	assert_string_equal(t, "{ \"op\": \"snapshot-delete\", \"name\": \"\xef\xbf\xbd\xef\xbf\xbd\", "
			    "\"name-hex\": \"fffe\" }\n");
	free(t);
	/* 127 bytes pass, 128 do not, nor an empty name */
	char n[200];
	memset(n, 'a', sizeof(n));
	n[127] = 0;
	t = ublk_sock_req_encode(UBLK_OP_SNAP_CREATE, n, why, sizeof(why));
	assert_non_null(t);
	free(t);
	n[127] = 'a';
	n[128] = 0;
	assert_null(ublk_sock_req_encode(UBLK_OP_SNAP_CREATE, n, why, sizeof(why)));
	assert_null(ublk_sock_req_encode(UBLK_OP_SNAP_CREATE, "", why, sizeof(why)));
}

static void test_req_resize(void **state)
{
	char *t;

	t = ublk_sock_req_encode_size(UBLK_OP_RESIZE, 1ull << 40, why, sizeof(why));
	assert_string_equal(t, "{ \"op\": \"resize\", \"size\": 1099511627776 }\n");
	assert_int_equal(req_text(t), 0);
	assert_int_equal(rq.op, UBLK_OP_RESIZE);
	assert_true(rq.size == 1ull << 40);
	free(t);
	t = ublk_sock_req_encode_size(UBLK_OP_RESIZE, INT64_MAX - 1, why, sizeof(why));
	assert_int_equal(req_text(t), 0);
	assert_true(rq.size == INT64_MAX - 1);
	free(t);
	/* 0 and what json-c would saturate are refused before sending */
	assert_null(ublk_sock_req_encode_size(UBLK_OP_RESIZE, 0, why, sizeof(why)));
	assert_null(ublk_sock_req_encode_size(UBLK_OP_RESIZE, INT64_MAX, why, sizeof(why)));
	assert_null(ublk_sock_req_encode_size(UBLK_OP_RESIZE, UINT64_MAX, why, sizeof(why)));
	/* and when they come anyway */
	bad_req("{\"op\": \"resize\"}", "\"size\" missing");
	bad_req("{\"op\": \"resize\", \"size\": 0}", "out of range");
	bad_req("{\"op\": \"resize\", \"size\": -4096}", "out of range");
	bad_req("{\"op\": \"resize\", \"size\": 9223372036854775807}", "out of range");
	bad_req("{\"op\": \"resize\", \"size\": 99999999999999999999999}", "out of range");
	bad_req("{\"op\": \"resize\", \"size\": \"1G\"}", "not an integer");
	bad_req("{\"op\": \"resize\", \"size\": 1.5}", "not an integer");
	bad_req("{\"op\": \"resize\", \"size\": 4096, \"name\": \"s\"}", "takes no name");
	bad_req("{\"op\": \"ping\", \"size\": 4096}", "takes no size");
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"s\", \"size\": 1}", "takes no size");
}

static void test_req_hostile(void **state)
{
	char big[UBLK_SOCK_REQ_MAX + 64], n[300];

	bad_req("", "truncated");
	bad_req("ping\n", "malformed");
	bad_req("{\"op\": \"ping\"", "truncated");
	bad_req("{\"op\": \"ping\"} {}", "malformed");
	bad_req("{\"op\": \"ping\"}\n\n x", "malformed");
	bad_req("[\"ping\"]", "not a JSON object");
	bad_req("{\"op\": 1}", "\"op\": not a string");
	bad_req("{\"op\": [\"ping\"]}", "not a string");
	bad_req("{\"op\": null}", "not a string");
	bad_req("{}", "\"op\" missing");
	bad_req("{\"op\": \"reboot\"}", "unknown op \"reboot\"");
	bad_req("{\"op\": \"snapshot-create-and-more-and-more-and-more\"}", "too long");
	bad_req("{\"op\": \"PING\"}", "unknown op");
	bad_req("{\"op\": \"ping\", \"force\": true}", "unknown key \"force\"");
	bad_req("{\"op\": \"ping\", \"name\": \"s\"}", "takes no name");
	bad_req("{\"op\": \"snapshot-create\"}", "\"name\" missing");
	bad_req("{\"op\": \"snapshot-create\", \"name\": 5}", "\"name\": not a string");
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"\"}", "empty");
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"a\\u0000b\"}", "NUL");
	bad_req("{\"op\": \"snapshot-create\", \"name-hex\": \"6100\"}", "NUL");
	bad_req("{\"op\": \"snapshot-create\", \"name-hex\": \"61g0\"}", "not hex");
	bad_req("{\"op\": \"snapshot-create\", \"name-hex\": \"\"}", "empty");
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"\xff\"}", "UTF-8");
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"\xc0\xaf\"}", "UTF-8");	/* overlong */
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"\xe0\x80\xaf\"}", "UTF-8");
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"\xf0\x80\x80\xaf\"}", "UTF-8");
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"\xf4\x90\x80\x80\"}", "UTF-8");
	bad_req("{\"op\": \"snapshot-create\", \"name\": \"\xed\xa0\x80\"}", "UTF-8"); /* surrogate */
	bad_req("{\"op\": \"ping\", \"x\": [[[[[[[[[[1]]]]]]]]]]}", "nesting");
	bad_req("{'op': 'ping'}", "malformed");
	/* a name over 127 bytes, both forms */
	memset(n, 'a', sizeof(n));
	snprintf(n, sizeof(n), "{\"op\": \"snapshot-create\", \"name\": \"%0128d\"}", 0);
	bad_req(n, "too long");
	snprintf(n, sizeof(n), "{\"op\": \"snapshot-create\", \"name-hex\": \"%0256d\"}", 0);
	bad_req(n, "too long");
	/* NUL bytes in the text itself */
	assert_int_equal(ublk_sock_req_decode("{\"op\": \"ping\"}\0", 15, &rq, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "NUL"));
	assert_int_equal(ublk_sock_req_decode("{\"op\": \"pi\0ng\"}", 15, &rq, why, sizeof(why)),
			 -EINVAL);
	/* over-long, even if valid */
	memset(big, ' ', sizeof(big));
	memcpy(big, "{\"op\": \"ping\"}", 14);
	assert_int_equal(ublk_sock_req_decode(big, UBLK_SOCK_REQ_MAX, &rq, why, sizeof(why)), 0);
	assert_int_equal(ublk_sock_req_decode(big, UBLK_SOCK_REQ_MAX + 1, &rq, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "too long"));
}

/* ---- replies ----------------------------------------------------------------------------- */

static int reply_text(const char *t, struct json_object **o)
{
	why[0] = 0;
	return ublk_sock_reply_decode(t, strlen(t), o, why, sizeof(why));
}

static void test_reply(void **state)
{
	struct json_object *o, *r;
	char *t;
	size_t n;

	o = ublk_sock_reply_ok();
	json_object_object_add(o, "pong", json_object_new_boolean(1));
	t = ublk_sock_reply_text(o);
	json_object_put(o);
	assert_string_equal(t, "{ \"ok\": true, \"pong\": true }\n");
	assert_int_equal(reply_text(t, &r), 0);
	assert_non_null(r);
	json_object_put(r);
	free(t);
	/* an error: its text, made valid UTF-8, comes back with -EPROTO */
	t = ublk_sock_error_text("snapshot 'x\xff' exists");
	assert_true(ublk_utf8_valid(t, strlen(t)));
	assert_int_equal(reply_text(t, &r), -EPROTO);
	assert_string_equal(ublk_sock_reply_error(r), "snapshot 'x\xef\xbf\xbd' exists");
	assert_string_equal(why, "snapshot 'x\xef\xbf\xbd' exists");
	json_object_put(r);
	free(t);
	/* hostile replies */
	assert_int_equal(reply_text("ok\npong\n", &r), -EBADMSG);
	assert_null(r);
	assert_int_equal(reply_text("{\"pong\": true}", &r), -EBADMSG);
	assert_non_null(strstr(why, "\"ok\" missing"));
	assert_int_equal(reply_text("{\"ok\": 1}", &r), -EBADMSG);
	assert_int_equal(reply_text("{\"ok\": \"true\"}", &r), -EBADMSG);
	assert_int_equal(reply_text("{\"ok\": false}", &r), -EBADMSG);
	assert_int_equal(reply_text("{\"ok\": false, \"error\": 3}", &r), -EBADMSG);
	assert_null(r);
	assert_int_equal(reply_text("{\"ok\": true", &r), -EBADMSG);
	assert_int_equal(reply_text("{\"ok\": true, \"x\": \"\xfe\"}", &r), -EBADMSG);
	/* the size limit */
	n = UBLK_SOCK_REPLY_MAX + 1;
	t = malloc(n);
	memset(t, ' ', n);
	memcpy(t, "{\"ok\": true}", 12);
	assert_int_equal(ublk_sock_reply_decode(t, n - 1, &r, why, sizeof(why)), 0);
	json_object_put(r);
	assert_int_equal(ublk_sock_reply_decode(t, n, &r, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "too long"));
	free(t);
}

/* ---- payloads ---------------------------------------------------------------------------- */

static struct json_object *wrap(const char *key, struct json_object *v)
{
	struct json_object *o = ublk_sock_reply_ok();

	json_object_object_add(o, key, v);
	return o;
}

/* A reply through its text and back, as the client gets it */
static struct json_object *through_text(struct json_object *o)
{
	struct json_object *r;
	char *t = ublk_sock_reply_text(o);

	json_object_put(o);
	assert_true(ublk_utf8_valid(t, strlen(t)));
	assert_int_equal(ublk_sock_reply_decode(t, strlen(t), &r, why, sizeof(why)), 0);
	free(t);
	return r;
}

static void test_snaps(void **state)
{
	struct cow_snap_info in[3] = {
		{ .id = 1, .parent = 0, .name = "s1", .date_sec = 1700000000, .date_nsec = 5,
		  .virtual_size = 1 << 30, .disk_usage = 65536, .current_parent = true },
		{ .id = 2, .parent = 1, .name = "caf\xe9\x01", .date_sec = 1,
		  .date_nsec = 999999999, .virtual_size = 4096, .disk_usage = 0 },
		{ .id = 4294967295u, .parent = 2, .name = "\"q\"\\", .date_sec = 4611686018427387904ull },
	};
	struct cow_snap_info *out;
	struct json_object *r;
	uint32_t n;

	r = through_text(wrap("snapshots", ublk_snaps_encode(in, 3)));
	assert_int_equal(ublk_parse_snaps(r, &out, &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(out, in, sizeof(in));
	free(out);
	json_object_put(r);
	/* none */
	r = ublk_sock_reply_ok();
	assert_int_equal(ublk_parse_snaps(r, &out, &n), 0);
	assert_int_equal(n, 0);
	free(out);
	json_object_put(r);
	/* hostile entries */
	static const char *const bad[] = {
		"{\"ok\": true, \"snapshots\": {}}",
		"{\"ok\": true, \"snapshots\": [1]}",
		"{\"ok\": true, \"snapshots\": [{\"id\": 1}]}",
		"{\"ok\": true, \"snapshots\": [{\"id\": -1, \"parent\": 0, \"name\": \"a\", "
		"\"date-sec\": 0, \"date-nsec\": 0, \"virtual-size\": 0, \"disk-usage\": 0, "
		"\"current-parent\": false}]}",
		"{\"ok\": true, \"snapshots\": [{\"id\": 4294967296, \"parent\": 0, \"name\": \"a\", "
		"\"date-sec\": 0, \"date-nsec\": 0, \"virtual-size\": 0, \"disk-usage\": 0, "
		"\"current-parent\": false}]}",
		"{\"ok\": true, \"snapshots\": [{\"id\": 1, \"parent\": 0, \"name\": \"a\", "
		"\"date-sec\": 0, \"date-nsec\": 1000000000, \"virtual-size\": 0, \"disk-usage\": 0, "
		"\"current-parent\": false}]}",
		"{\"ok\": true, \"snapshots\": [{\"id\": 1, \"parent\": 0, \"name\": \"\", "
		"\"date-sec\": 0, \"date-nsec\": 0, \"virtual-size\": 0, \"disk-usage\": 0, "
		"\"current-parent\": false}]}",
		"{\"ok\": true, \"snapshots\": [{\"id\": 1, \"parent\": 0, \"name-hex\": \"zz\", "
		"\"date-sec\": 0, \"date-nsec\": 0, \"virtual-size\": 0, \"disk-usage\": 0, "
		"\"current-parent\": false}]}",
		"{\"ok\": true, \"snapshots\": [{\"id\": 1, \"parent\": 0, \"name\": \"a\", "
		"\"date-sec\": 0, \"date-nsec\": 0, \"virtual-size\": 1e3, \"disk-usage\": 0, "
		"\"current-parent\": false}]}",
		"{\"ok\": true, \"snapshots\": [{\"id\": 1, \"parent\": 0, \"name\": \"a\", "
		"\"date-sec\": 0, \"date-nsec\": 0, \"virtual-size\": 0, \"disk-usage\": 0, "
		"\"current-parent\": 0}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(reply_text(bad[i], &r), 0);
		if (ublk_parse_snaps(r, &out, &n) != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
		json_object_put(r);
	}
}

static void test_info(void **state)
{
	struct cow_info in = {
		.fmt = COW_FMT_UCOW, .virtual_size = 10ull << 30, .file_size = 3 << 20,
		.disk_usage = 2 << 20, .chunk_size = 1 << 20, .block_size = 4096,
		.nr_chunks = 10240, .allocated_chunks = 2, .zero_chunks = 1,
		.journal_size = 1 << 20, .journal_used = 512, .nb_snapshots = 3, .dirty = true,
		.corrupt = false, .read_only = true, .backing = "../base\xff.raw",
		.backing_fmt = COW_FMT_RAW,
	}, out;
	struct json_object *r, *o;
	char backing[64];

	r = through_text(wrap("image", ublk_info_encode(&in)));
	assert_int_equal(ublk_parse_info(r, &out, backing, sizeof(backing)), 0);
	assert_string_equal(out.backing, in.backing);
	assert_ptr_equal(out.backing, backing);
	out.backing = in.backing;
	assert_memory_equal(&out, &in, sizeof(in));
	/* a backing name longer than the caller's buffer is refused, not cut */
	assert_int_equal(ublk_parse_info(r, &out, backing, 8), -EBADMSG);
	json_object_put(r);
	/* no backing */
	in.backing = NULL;
	in.backing_fmt = 0;
	r = through_text(wrap("image", ublk_info_encode(&in)));
	assert_int_equal(ublk_parse_info(r, &out, backing, sizeof(backing)), 0);
	assert_null(out.backing);
	/* wrong types and unknown formats */
	json_object_object_get_ex(r, "image", &o);
	json_object_object_add(o, "format", json_object_new_string("vmdk"));
	assert_int_equal(ublk_parse_info(r, &out, backing, sizeof(backing)), -EBADMSG);
	json_object_object_add(o, "format", json_object_new_string("raw"));
	assert_int_equal(ublk_parse_info(r, &out, backing, sizeof(backing)), 0);
	json_object_object_add(o, "chunk-size", json_object_new_int64(1ll << 32));
	assert_int_equal(ublk_parse_info(r, &out, backing, sizeof(backing)), -EBADMSG);
	json_object_object_add(o, "chunk-size", json_object_new_string("1M"));
	assert_int_equal(ublk_parse_info(r, &out, backing, sizeof(backing)), -EBADMSG);
	json_object_put(r);
	assert_int_equal(reply_text("{\"ok\": true, \"image\": 1}", &r), 0);
	assert_int_equal(ublk_parse_info(r, &out, backing, sizeof(backing)), -EBADMSG);
	json_object_put(r);
	/* pause-us */
	uint64_t us;
	assert_int_equal(reply_text("{\"ok\": true, \"pause-us\": 1234}", &r), 0);
	assert_int_equal(ublk_parse_pause_us(r, &us), 0);
	assert_int_equal(us, 1234);
	json_object_put(r);
	assert_int_equal(reply_text("{\"ok\": true, \"pause-us\": -1}", &r), 0);
	assert_int_equal(ublk_parse_pause_us(r, &us), -EBADMSG);
	json_object_put(r);
}

/* ---- latency buckets --------------------------------------------------------------------- */

static void test_lat_buckets(void **state)
{
	uint64_t lat[UBLK_LAT_BUCKETS], ns;
	unsigned b, prev = 0;

	/* every latency lands in the bucket whose bound is the first one >= it */
	for (ns = 0; ns < 100000; ns++) {
		b = ublk_lat_bucket(ns);
		assert_true(b >= prev);
		assert_true(ublk_lat_value(b) >= ns);
		if (b)
			assert_true(ublk_lat_value(b - 1) < ns);
		prev = b;
	}
	for (b = 0; b < 64; b++) {	/* powers of two, and around them, up to the last */
		ns = 1ull << b;
		assert_true(ublk_lat_bucket(ns) < UBLK_LAT_BUCKETS);
		if (ublk_lat_bucket(ns) < UBLK_LAT_BUCKETS - 1) {
			assert_true(ublk_lat_value(ublk_lat_bucket(ns)) >= ns);
			assert_true(ublk_lat_value(ublk_lat_bucket(ns - 1)) >= ns - 1);
			assert_true(ublk_lat_value(ublk_lat_bucket(ns) - 1) < ns);
		}
	}
	/* precision: a bound is within 1/8 of what it holds */
	for (ns = 8; ns < (1ull << 34); ns = ns * 3 / 2 + 1)
		assert_true(ublk_lat_value(ublk_lat_bucket(ns)) - ns <= ns / 8);
	/* the last bucket holds everything from ~2 min up */
	assert_int_equal(ublk_lat_bucket(UINT64_MAX), UBLK_LAT_BUCKETS - 1);
	assert_int_equal(ublk_lat_bucket(130ull * 1000000000), UBLK_LAT_BUCKETS - 1);
	assert_true(ublk_lat_bucket(120ull * 1000000000) < UBLK_LAT_BUCKETS - 1);
	/* percentiles */
	memset(lat, 0, sizeof(lat));
	assert_int_equal(ublk_lat_percentile(lat, 0.5), 0);
	lat[ublk_lat_bucket(1000)] = 90;	/* 90 at ~1 us, 9 at ~1 ms, 1 at ~1 s */
	lat[ublk_lat_bucket(1000000)] = 9;
	lat[ublk_lat_bucket(1000000000)] = 1;
	assert_int_equal(ublk_lat_percentile(lat, 0.5), ublk_lat_value(ublk_lat_bucket(1000)));
	assert_int_equal(ublk_lat_percentile(lat, 0.9), ublk_lat_value(ublk_lat_bucket(1000)));
	assert_int_equal(ublk_lat_percentile(lat, 0.91),
			 ublk_lat_value(ublk_lat_bucket(1000000)));
	assert_int_equal(ublk_lat_percentile(lat, 0.99),
			 ublk_lat_value(ublk_lat_bucket(1000000)));
	assert_int_equal(ublk_lat_percentile(lat, 0.999),
			 ublk_lat_value(ublk_lat_bucket(1000000000)));
	assert_int_equal(ublk_lat_percentile(lat, 0.0), ublk_lat_value(ublk_lat_bucket(1000)));
	assert_int_equal(ublk_lat_percentile(lat, 1.0),
			 ublk_lat_value(ublk_lat_bucket(1000000000)));
}

/* ---- the server, on a real socket -------------------------------------------------------- */

static struct ublk_dev *dev;
static int lfd = -1;
static char sock_path[300];

static struct ublk_dev *fake_dev(const struct ublk_tgt_ops *tgt, unsigned nq)
{
	struct ublk_dev *d = malloc(sizeof(*d));

	ublk_dev_init(d);
	d->tgt = tgt;
	d->info.dev_id = 5;
	d->info.nr_hw_queues = (uint16_t)nq;
	d->queues = calloc(nq ? nq : 1, sizeof(*d->queues));
	d->pause_ack_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return d;
}

static void free_dev(struct ublk_dev *d)
{
	close(d->pause_ack_fd);
	free(d->queues);
	free(d);
}

static void listen_dev(void)
{
	setenv("UCOW_RUN_DIR", dir, 1);
	lfd = ublk_sock_listen(dev, sock_path, sizeof(sock_path));
	assert_true(lfd >= 0);
	assert_string_equal(sock_path, P("dev5.sock"));
}

static void unlisten(void)
{
	close(lfd);
	unlink(sock_path);
	lfd = -1;
}

/* Send LEN raw bytes (then shut the write side if shut), serve once, return the reply. */
static char *raw_exchange(const void *buf, size_t len, bool shut)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	static char reply[1 << 16];
	size_t off = 0;
	ssize_t n;

	strcpy(sa.sun_path, sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (len)
		assert_int_equal(write(fd, buf, len), (ssize_t)len);
	if (shut)
		shutdown(fd, SHUT_WR);
	ublk_sock_serve(dev, lfd);	/* the request is in the socket's buffer already */
	while ((n = read(fd, reply + off, sizeof(reply) - 1 - off)) > 0)
		off += (size_t)n;
	reply[off] = 0;
	close(fd);
	return reply;
}

static void *serve_once(void *arg)
{
	ublk_sock_serve(dev, lfd);
	return arg;
}

/* ublk_sock_call, with the server on a thread */
static int call(int op, const char *name, struct json_object **reply)
{
	pthread_t t;
	int r;

	assert_int_equal(pthread_create(&t, NULL, serve_once, NULL), 0);
	r = ublk_sock_call(sock_path, op, name, 5, reply);
	pthread_join(t, NULL);
	return r;
}

static void test_server_hostile(void **state)
{
	char *big = malloc(3 * UBLK_SOCK_REQ_MAX);
	const char *rep;

	dev = fake_dev(&ublk_tgt_null, 1);
	listen_dev();
	rep = raw_exchange("{\"op\": \"ping\"}\n", 15, false);
	assert_string_equal(rep, "{ \"ok\": true, \"pong\": true }\n");
	rep = raw_exchange("{\"op\": \"ping\"}", 14, true);	/* no newline: the end counts */
	assert_string_equal(rep, "{ \"ok\": true, \"pong\": true }\n");
	rep = raw_exchange("ping\n", 5, false);
	assert_non_null(strstr(rep, "\"ok\": false"));
	assert_non_null(strstr(rep, "bad request: malformed JSON"));
	rep = raw_exchange("{\"op\": \"halt\"}\n", 15, false);
	assert_non_null(strstr(rep, "\"error\": \"bad request: unknown op \\\"halt\\\"\""));
	rep = raw_exchange("{\"op\": \"ping\"}\n{\"op\": \"ping\"}\n", 30, false);
	assert_non_null(strstr(rep, "data after the first line"));
	rep = raw_exchange("{\"op\": \"ping\"}\0\n", 16, false);
	assert_non_null(strstr(rep, "NUL"));
	rep = "{\"op\": \"snapshot-create\", \"name\": \"\xff\"}\n";
	rep = raw_exchange(rep, strlen(rep), false);
	assert_non_null(strstr(rep, "UTF-8"));
	assert_true(ublk_utf8_valid(rep, strlen(rep)));
	/* over-long: refused after the limit, the rest never read */
	memset(big, 'x', 3 * UBLK_SOCK_REQ_MAX);
	big[3 * UBLK_SOCK_REQ_MAX - 1] = '\n';
	rep = raw_exchange(big, 3 * UBLK_SOCK_REQ_MAX, false);
	assert_non_null(strstr(rep, "request too long (more than 4096 bytes)"));
	/* exactly at the limit is read whole */
	memset(big, ' ', UBLK_SOCK_REQ_MAX);
	memcpy(big, "{\"op\": \"ping\"}", 14);
	big[UBLK_SOCK_REQ_MAX - 1] = '\n';
	rep = raw_exchange(big, UBLK_SOCK_REQ_MAX, false);
	assert_non_null(strstr(rep, "\"pong\": true"));
	/* a client that says nothing gets nothing, and the server goes on */
	rep = raw_exchange("", 0, true);
	assert_string_equal(rep, "");
	rep = raw_exchange("{\"op\": \"ping\"}\n", 15, false);
	assert_non_null(strstr(rep, "\"pong\": true"));
	free(big);
	unlisten();
	free_dev(dev);
}

static void *trickle(void *arg)
{
	int fd = *(int *)arg;

	for (int i = 0; i < 8; i++) {
		if (send(fd, " ", 1, MSG_NOSIGNAL) != 1)
			break;
		usleep(700000);
	}
	return NULL;
}

/* A client sending a byte now and then is dropped after 3 s in all, unanswered. */
static void test_server_slow(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	pthread_t t;
	uint64_t t0;
	char buf[64];
	int fd;

	dev = fake_dev(&ublk_tgt_null, 1);
	listen_dev();
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(sa.sun_path, sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(pthread_create(&t, NULL, trickle, &fd), 0);
	t0 = ublk_now_ns();
	ublk_sock_serve(dev, lfd);
	t0 = ublk_now_ns() - t0;
	assert_true(t0 >= 2900000000ull && t0 < 4500000000ull);
	assert_int_equal(read(fd, buf, sizeof(buf)), 0);	/* closed, no answer */
	pthread_join(t, NULL);
	close(fd);
	unlisten();
	free_dev(dev);
}

static void test_server_stats(void **state)
{
	struct json_object *r, *s, *v;
	struct ublk_queue *q;

	dev = fake_dev(&ublk_tgt_null, 2);
	q = dev->queues;
	q[0].stats[UBLK_ST_READ].ios = 3;
	q[0].stats[UBLK_ST_READ].bytes = 12288;
	q[0].stats[UBLK_ST_READ].lat[ublk_lat_bucket(2000)] = 3;
	q[1].stats[UBLK_ST_READ].ios = 1;
	q[1].stats[UBLK_ST_READ].bytes = 4096;
	q[1].stats[UBLK_ST_READ].lat[ublk_lat_bucket(500000)] = 1;
	q[1].stats[UBLK_ST_WZEROES].ios = 3;
	q[1].stats[UBLK_ST_WZEROES].errors = 1;
	dev->pause_st[UBLK_PAUSE_DELETE] = (struct ublk_pause_stats){ 2, 7000, 9000, 16000 };
	listen_dev();
	assert_int_equal(call(UBLK_OP_PING, NULL, &r), 0);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_STATS, NULL, &r), 0);
	assert_true(json_object_object_get_ex(r, "stats", &s));
	/* the JSON: kebab-case keys, sums over the queues */
	const char *t = ublk_json_text(s, false);
	assert_non_null(strstr(t, "\"id\": 5, \"ops\": { \"read\": { \"ios\": 4, \"bytes\": 16384, "
			       "\"errors\": 0, \"lat-ns\": { \"p50\": "));
	assert_non_null(strstr(t, "\"write-zeroes\": { \"ios\": 3, \"bytes\": 0, \"errors\": 1"));
	assert_non_null(strstr(t, "\"queue-ios\": [ 3, 4 ]"));
	assert_non_null(strstr(t, "\"pauses\": { \"delete\": { \"count\": 2, \"last-us\": 7, "
			       "\"max-us\": 9, \"total-us\": 16 } }"));
	assert_null(strstr(t, "\"create\""));
	json_object_object_get_ex(s, "ops", &v);
	json_object_object_get_ex(v, "read", &v);
	json_object_object_get_ex(v, "lat-ns", &v);
	json_object_object_get_ex(v, "p50", &s);
	assert_int_equal(json_object_get_int64(s), ublk_lat_value(ublk_lat_bucket(2000)));
	json_object_object_get_ex(v, "p99", &s);
	assert_int_equal(json_object_get_int64(s), ublk_lat_value(ublk_lat_bucket(500000)));
	/* the table */
	assert_true(json_object_object_get_ex(r, "text", &v));
	t = json_object_get_string(v);
	assert_non_null(strstr(t, "\nread                     4          16384        0       2.0"));
	assert_non_null(strstr(t, "\nwrite_zeroes             3              0        1"));
	assert_non_null(strstr(t, "per queue: q0=3 q1=4\n"));
	assert_non_null(strstr(t, "pauses: delete 2 (last 0.0 ms, max 0.0 ms, mean 0.0 ms)\n"));
	json_object_put(r);
	/* the null target has no image */
	assert_int_equal(call(UBLK_OP_IMAGE_INFO, NULL, &r), -EPROTO);
	assert_string_equal(ublk_sock_reply_error(r), "the null target has no snapshots");
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_INFO, NULL, &r), -EPROTO);
	assert_string_equal(ublk_sock_reply_error(r), "the null target has no image");
	json_object_put(r);
	/* a name the protocol refuses is never sent */
	assert_int_equal(ublk_sock_call(sock_path, UBLK_OP_SNAP_CREATE, "", 5, &r), -EINVAL);
	assert_null(r);
	unlisten();
	/* nobody listening */
	assert_int_equal(ublk_sock_call(sock_path, UBLK_OP_PING, NULL, 5, &r), -ENOENT);
	free_dev(dev);
}

/*
 * The prefetch job (job.c) on an overlay over a local raw base, the device's queues faked:
 * while their request counts move it backs off and copies nothing; still, it walks the
 * image at the rate and copies everything the base gives; dev stats shows it and the
 * copy-on-read counters; the overlay then reads as the base with the base file gone.
 */
static void test_prefetch(void **state)
{
	(void)state;
	static uint8_t base[4 << 20], got[4 << 20];
	struct json_object *r, *s, *v;
	const char *t;
	char jwhy[UBLK_ERRLEN] = "";
	int fd = open(P("pf.raw"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	for (size_t i = 0; i < sizeof(base); i++)
		base[i] = (uint8_t)(i * 7 / 4096 + 1);
	memset(base + (1 << 20), 0, 1 << 20);	/* a hole in the middle: nothing to copy */
	assert_int_equal(pwrite(fd, base, 1 << 20, 0), 1 << 20);
	assert_int_equal(pwrite(fd, base + (2 << 20), 2 << 20, 2 << 20), 2 << 20);
	close(fd);
	unlink(P("pf.ucow"));
	assert_int_equal(cow_create(P("pf.ucow"), &(struct cow_create_opts){ .backing = "pf.raw",
				    .backing_fmt = COW_FMT_RAW, .chunk_size = 64 << 10 }, err,
				    COW_ERRLEN), 0);
	dev = fake_dev(&ublk_tgt_cow, 2);
	strcpy(dev->o.file, P("pf.ucow"));
	/* without copy-on-read there is no prefetch */
	assert_int_equal(cow_open(dev->o.file, &(struct cow_open_opts){ .fmt = COW_FMT_UCOW },
				  (struct cow_image **)&dev->tgt_data, err, COW_ERRLEN), 0);
	assert_int_equal(ublk_job_start(dev, UBLK_JOB_PREFETCH, jwhy, sizeof(jwhy)), -EINVAL);
	assert_string_equal(jwhy, "the device does not copy on read");
	assert_int_equal(cow_close(dev->tgt_data), 0);
	assert_int_equal(cow_open(dev->o.file, &(struct cow_open_opts){ .fmt = COW_FMT_UCOW,
				  .flags = COW_OPEN_COPY_ON_READ },
				  (struct cow_image **)&dev->tgt_data, err, COW_ERRLEN), 0);
	dev->o.prefetch_rate = 16 << 20;
	assert_int_equal(ublk_job_start(dev, UBLK_JOB_PREFETCH, jwhy, sizeof(jwhy)), 0);
	/* busy: the request count moves at every look */
	for (int i = 0; i < 20; i++) {
		dev->queues[i % 2].stats[UBLK_ST_READ].ios++;
		assert_int_equal(ublk_job_step(dev), 1);
		usleep(20000);
	}
	assert_int_equal(dev->job->copied, 0);
	assert_true(dev->job->backoffs >= 19);
	/* idle: to the end, no faster than the rate (3 MiB at 16 MiB/s, after 200 ms idle) */
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int more = 1;
	for (int i = 0; more && i < 1000; i++) {
		more = ublk_job_step(dev);
		if (more)
			usleep(ublk_job_delay_ms(dev) * 1000);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_int_equal(more, 0);
	assert_int_equal(dev->job->state, UBLK_JOB_DONE);
	assert_int_equal(dev->job->copied, 3 << 20);
	/* ~0.18 s of idleness left, then two waits of 1 MiB at 16 MiB/s */
	if (secs < 0.25)
		fail_msg("the prefetch took %.3f s: faster than its rate", secs);
	listen_dev();
	assert_int_equal(call(UBLK_OP_STATS, NULL, &r), 0);
	assert_true(json_object_object_get_ex(r, "stats", &s));
	t = ublk_json_text(s, false);
	assert_non_null(strstr(t, "\"prefetch\": { \"kind\": \"prefetch\", \"state\": \"done\", "
			       "\"done-bytes\": 4194304, \"total-bytes\": 4194304, "
			       "\"copied-bytes\": 3145728"));
	assert_non_null(strstr(t, "\"rate\": 16777216"));
	assert_non_null(strstr(t, "\"copy-on-read\": { \"copies\": "));
	json_object_object_get_ex(r, "text", &v);
	t = json_object_get_string(v);
	assert_non_null(strstr(t, "\nprefetch: done, 100% (4194304 of 4194304 bytes walked), "
			       "3145728 bytes copied, rate 16777216 bytes/s, "));
	assert_non_null(strstr(t, "\ncopy-on-read: "));
	json_object_put(r);
	unlisten();
	ublk_job_free_io(dev->job);
	free(dev->job);
	dev->job = NULL;
	assert_int_equal(cow_close(dev->tgt_data), 0);
	free_dev(dev);
	/* everything is the overlay's: the base gone, it reads the same */
	unlink(P("pf.raw"));
	struct cow_image *img;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	assert_int_equal(cow_open(P("pf.ucow"), &(struct cow_open_opts){ .fmt = COW_FMT_UCOW,
				  .flags = COW_OPEN_RDONLY | COW_OPEN_NOCHAIN }, &img, err,
				  COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("sync", 4, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, got, 1 << 20, 0, 0), 0);
	assert_memory_equal(got, base, 1 << 20);
	assert_int_equal(cow_rw(ctx, COW_READ, got + (2 << 20), 2 << 20, 2 << 20, 0), 0);
	assert_memory_equal(got + (2 << 20), base + (2 << 20), 2 << 20);
	uint64_t run;
	assert_int_equal(cow_map(img, 0, 1 << 20, &run, NULL), COW_MAP_DATA);
	cow_ctx_free(ctx);
	cow_backend_free(be);
	cow_close(img);
}

/* dev stats of a device whose base is on an NBD server (nbdkit, its memory plugin): the
 * connection's state and counters, in the JSON and the table, before and after the server
 * is gone. */
static void test_server_stats_network(void **state)
{
	char uri[600];
	struct json_object *r, *s, *n, *v;
	struct cow_backend *be;
	struct cow_ctx *ctx;
	char *buf = malloc(8192);
	const char *t;
	pid_t pid;

	if (system("command -v nbdkit >/dev/null 2>&1") != 0) {
		free(buf);
		skip();
	}
	unlink(P("net.sock"));
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		execlp("nbdkit", "nbdkit", "-f", "-U", P("net.sock"), "memory", "1M", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && access(P("net.sock"), F_OK); i++)
		usleep(20000);
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", P("net.sock"));
	unlink(P("net.ucow"));
	assert_int_equal(cow_create(P("net.ucow"), &(struct cow_create_opts){ .backing = uri,
				    .backing_fmt = COW_FMT_RAW, .open_flags = COW_OPEN_ALLOW_NETWORK },
				    err, COW_ERRLEN), 0);
	dev = fake_dev(&ublk_tgt_cow, 0);
	strcpy(dev->o.file, P("net.ucow"));
	assert_int_equal(cow_open(dev->o.file, &(struct cow_open_opts){ .fmt = COW_FMT_UCOW,
			.flags = COW_OPEN_ALLOW_NETWORK, .net_timeout_ms = 400 },
			(struct cow_image **)&dev->tgt_data, err, COW_ERRLEN), 0);
	assert_int_equal(cow_backend_new("uring", 4, &be), 0);
	assert_int_equal(cow_ctx_new(dev->tgt_data, be, &ctx), 0);
	assert_int_equal(cow_rw(ctx, COW_READ, buf, 8192, 0, 0), 0);
	listen_dev();
	assert_int_equal(call(UBLK_OP_STATS, NULL, &r), 0);
	assert_true(json_object_object_get_ex(r, "stats", &s));
	assert_true(json_object_object_get_ex(s, "network-backing", &n));
	json_object_object_get_ex(n, "uri", &v);
	assert_string_equal(json_object_get_string(v), uri);
	t = ublk_json_text(n, false);
	assert_non_null(strstr(t, "\"state\": \"connected\", \"connections\": 1, "
			       "\"timeout-ms\": 400, \"reads\": 1, \"read-bytes\": 8192, "
			       "\"read-errors\": 0"));
	assert_null(strstr(t, "failed-since-ms"));
	json_object_object_get_ex(r, "text", &v);
	assert_non_null(strstr(json_object_get_string(v), ": connected (1 connection), reads 1 "
			       "(8192 bytes), read errors 0 (timeouts 0), connects 1 (failed 0), "
			       "disconnects 0\n"));
	json_object_put(r);
	/* the server gone: a read of the base fails; the state says so */
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	assert_int_equal(cow_rw(ctx, COW_READ, buf, 4096, 65536, 0), -EIO);
	assert_int_equal(call(UBLK_OP_STATS, NULL, &r), 0);
	assert_true(json_object_object_get_ex(r, "stats", &s));
	assert_true(json_object_object_get_ex(s, "network-backing", &n));
	t = ublk_json_text(n, false);
	assert_non_null(strstr(t, "\"state\": \"failed\", \"connections\": 0"));
	assert_non_null(strstr(t, "\"disconnects\": 1, \"failed-since-ms\": "));
	assert_non_null(strstr(t, "\"last-error\": \"nbd+unix:"));
	json_object_object_get_ex(r, "text", &v);
	t = json_object_get_string(v);
	assert_non_null(strstr(t, ": failed (0 connections)"));
	assert_non_null(strstr(t, "\n  failing since 2"));
	assert_non_null(strstr(t, "\n  last error: nbd+unix:"));
	json_object_put(r);
	unlisten();
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_close(dev->tgt_data), 0);
	free_dev(dev);
	free(buf);
}

/* A fake server: reads the request line, sends fake_reply (fake_len bytes, or up to 96 MiB of
 * spaces when fake_len is 0), closes. */
static const char *fake_reply;
static size_t fake_len, fake_sent;

static void *fake_server(void *arg)
{
	int fd = accept(lfd, NULL, NULL), chunk = 1 << 20;
	char req[UBLK_SOCK_REQ_MAX + 1], *sp;
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, req, sizeof(req) - 1);
	assert_true(n > 0 && req[n - 1] == '\n');
	fake_sent = 0;
	if (fake_len) {
		fake_sent = (size_t)send(fd, fake_reply, fake_len, MSG_NOSIGNAL);
	} else {
		sp = malloc(chunk);
		memset(sp, ' ', chunk);
		while (fake_sent < (96u << 20) && (n = send(fd, sp, chunk, MSG_NOSIGNAL)) > 0)
			fake_sent += (size_t)n;
		free(sp);
	}
	close(fd);
	return arg;
}

static int fake_call(const char *reply, size_t len, struct json_object **r)
{
	pthread_t t;
	int ret;

	fake_reply = reply;
	fake_len = len;
	assert_int_equal(pthread_create(&t, NULL, fake_server, NULL), 0);
	ret = ublk_sock_call(sock_path, UBLK_OP_PING, NULL, 5, r);
	pthread_join(t, NULL);
	return ret;
}

/* The client against servers that answer badly: refused, never read without bound. */
static void test_client_hostile(void **state)
{
	struct json_object *r;

	dev = fake_dev(&ublk_tgt_null, 0);
	listen_dev();
	assert_int_equal(fake_call("{\"ok\": true}", 12, &r), 0);	/* no newline, closed */
	json_object_put(r);
	assert_int_equal(fake_call("", 0, &r), -EBADMSG);	/* 96 MiB of white space */
	assert_null(r);
	assert_true(fake_sent < (80u << 20));	/* the client stopped reading */
	assert_int_equal(fake_call("ok\npong\n", 8, &r), -EBADMSG);
	assert_null(r);
	assert_int_equal(fake_call("{\"ok\": false}\n", 15, &r), -EBADMSG);
	assert_int_equal(fake_call("{\"ok\": true}\0\n", 14, &r), -EBADMSG);
	assert_int_equal(fake_call("{\"ok\": true}\n{\"ok\": false}\n", 28, &r), 0);
	json_object_put(r);	/* the first line is the answer; the rest is not read */
	assert_int_equal(fake_call("\n", 1, &r), -EBADMSG);
	fake_reply = NULL;
	unlisten();
	free_dev(dev);
}

/* Online snapshot create and list of a real image, with names that are not UTF-8. */
static void test_server_snapshots(void **state)
{
	struct cow_create_opts o = { .size = 16 << 20 };
	struct cow_snap_info *v;
	struct json_object *r;
	struct cow_info in;
	char backing[64];
	uint32_t n;
	uint64_t us;

	assert_int_equal(cow_create(P("img.ucow"), &o, err, COW_ERRLEN), 0);
	dev = fake_dev(&ublk_tgt_cow, 0);	/* no queues: the pause is immediate */
	strcpy(dev->o.file, P("img.ucow"));
	assert_int_equal(cow_open(dev->o.file, &(struct cow_open_opts){ .fmt = COW_FMT_UCOW },
			(struct cow_image **)&dev->tgt_data, err, COW_ERRLEN), 0);
	listen_dev();
	assert_int_equal(call(UBLK_OP_SNAP_CREATE, "s\xff\x01", &r), 0);
	assert_int_equal(ublk_parse_pause_us(r, &us), 0);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_CREATE, "plain", &r), 0);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_CREATE, "plain", &r), -EPROTO);	/* duplicate */
	assert_non_null(strstr(ublk_sock_reply_error(r), "plain"));
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_LIST, NULL, &r), 0);
	assert_int_equal(ublk_parse_snaps(r, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "s\xff\x01");
	assert_string_equal(v[1].name, "plain");
	assert_int_equal(ublk_parse_pause_us(r, &us), 0);
	assert_int_equal(us, 0);
	free(v);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_IMAGE_INFO, NULL, &r), 0);
	assert_int_equal(ublk_parse_info(r, &in, backing, sizeof(backing)), 0);
	assert_int_equal(in.nb_snapshots, 2);
	assert_int_equal(in.virtual_size, 16 << 20);
	assert_int_equal(in.fmt, COW_FMT_UCOW);
	assert_int_equal(ublk_parse_snaps(r, &v, &n), 0);
	assert_int_equal(n, 2);
	free(v);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_DELETE, "s\xff\x01", &r), 0);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_INFO, NULL, &r), 0);
	json_object_put(r);
	/* apply: an unknown name is refused before any pause; "plain" (taken before "x" was
	 * written) applies, by name and by its id */
	assert_int_equal(call(UBLK_OP_SNAP_APPLY, "nope", &r), -EPROTO);
	assert_string_equal(ublk_sock_reply_error(r), "no snapshot 'nope'");
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_CREATE, "x", &r), 0);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_APPLY, "plain", &r), 0);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_LIST, NULL, &r), 0);
	assert_int_equal(ublk_parse_snaps(r, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "plain");
	assert_true(v[0].current_parent);
	char id[16];
	snprintf(id, sizeof(id), "%u", v[1].id);
	free(v);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_APPLY, id, &r), 0);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_LIST, NULL, &r), 0);
	assert_int_equal(ublk_parse_snaps(r, &v, &n), 0);
	assert_true(!v[0].current_parent && v[1].current_parent);
	free(v);
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_DELETE, "x", &r), 0);
	json_object_put(r);
	assert_int_equal(dev->pause_st[UBLK_PAUSE_CREATE].count, 4);
	assert_int_equal(dev->pause_st[UBLK_PAUSE_DELETE].count, 2);
	assert_int_equal(dev->pause_st[UBLK_PAUSE_APPLY].count, 2);
	/* read-only servers refuse changes */
	dev->o.read_only = true;
	assert_int_equal(call(UBLK_OP_SNAP_DELETE, "plain", &r), -EPROTO);
	assert_string_equal(ublk_sock_reply_error(r),
			    "served read-only by /dev/ublkb5 (ucow dev del 5 first)");
	json_object_put(r);
	assert_int_equal(call(UBLK_OP_SNAP_APPLY, "plain", &r), -EPROTO);
	assert_string_equal(ublk_sock_reply_error(r),
			    "served read-only by /dev/ublkb5 (ucow dev del 5 first)");
	json_object_put(r);
	unlisten();
	assert_int_equal(cow_close(dev->tgt_data), 0);
	free_dev(dev);
}

/* The background fold (fold.c), its steps run by hand: nothing while the guest is busy (the
 * request count moves at every look), then, idle, steps of 4 chunks in pauses of their own
 * until the pass ends, counted in dev stats; at rest until first writes make underlays
 * again; an online create folds those in a pass before its own pause. */
static void fold_until_rest(int want_steps)
{
	int ms, i;
	for (i = 0; i < 100; i++) {
		ms = ublk_fold_step(dev);
		assert_true(ms != -1);
		if (ms == 1000 && !dev->fold.cursor && dev->fold.passes)
			break;
		usleep((useconds_t)(ms > 200 ? 200 : ms) * 1000);
	}
	assert_true(i < 100);
	assert_int_equal(dev->pause_st[UBLK_PAUSE_FOLD].count, want_steps);
}

static void test_server_fold(void **state)
{
	static uint8_t model[4 << 20], got[4 << 20];
	struct cow_backend *be;
	struct cow_ctx *ctx;
	struct cow_image *img;
	struct json_object *r, *s, *v;
	uint64_t cursor = 0;
	bool done;
	const char *t, *rep;
	struct cow_info in;
	(void)state;
	unlink(P("fold.ucow"));
	assert_int_equal(cow_create(P("fold.ucow"), &(struct cow_create_opts){ .size = 4 << 20,
				    .chunk_size = 64 << 10 }, err, COW_ERRLEN), 0);
	dev = fake_dev(&ublk_tgt_cow, 1);
	strcpy(dev->o.file, P("fold.ucow"));
	assert_int_equal(cow_open(dev->o.file, &(struct cow_open_opts){ .fmt = COW_FMT_UCOW },
				  &img, err, COW_ERRLEN), 0);
	dev->tgt_data = img;
	assert_int_equal(cow_backend_new("sync", 4, &be), 0);
	assert_int_equal(cow_ctx_new(img, be, &ctx), 0);
	for (size_t i = 0; i < sizeof(model); i++)
		model[i] = (uint8_t)(i / 4096 * 3 + 1);
	assert_int_equal(cow_rw(ctx, COW_WRITE, model, sizeof(model), 0, 0), 0);
	assert_int_equal(ublk_fold_step(dev), -1);	/* no snapshot: nothing to look for */
	assert_int_equal(cow_snapshot_create(img, "s1"), 0);
	/* first writes into 10 chunks: 10 underlays */
	for (unsigned c = 0; c < 10; c++) {
		uint64_t off = (uint64_t)c * 5 * (64 << 10) + 4096 * c;
		memset(model + off, 0xa0 + c, 4096);
		assert_int_equal(cow_rw(ctx, COW_WRITE, model + off, 4096, off, 0), 0);
	}
	assert_int_equal(cow_underlays_made(img), 10);
	/* busy (a request between any two looks, for longer than the idle time): no step */
	for (int i = 0; i < 6; i++) {
		dev->queues[0].stats[UBLK_ST_WRITE].ios++;
		assert_int_equal(ublk_fold_step(dev), 200);
		usleep(60000);
	}
	assert_int_equal(dev->fold.steps, 0);
	/* idle (no queue left to pause: each pause is immediate): three steps, 4 + 4 + 2 */
	dev->info.nr_hw_queues = 0;
	listen_dev();
	fold_until_rest(3);
	assert_int_equal(dev->fold.chunks, 10);
	assert_int_equal(dev->fold.passes, 1);
	assert_int_equal(cow_fold(img, &cursor, 0, &done), 0);	/* none left */
	assert_true(done);
	assert_int_equal(ublk_fold_step(dev), 1000);		/* at rest */
	assert_int_equal(call(UBLK_OP_STATS, NULL, &r), 0);
	assert_true(json_object_object_get_ex(r, "stats", &s));
	t = ublk_json_text(s, false);
	assert_non_null(strstr(t, "\"fold\": { \"chunks\": 10, \"steps\": 3, \"passes\": 1, "
			       "\"failed\": false }"));
	assert_non_null(strstr(t, "\"fold\": { \"count\": 3, "));	/* the pauses */
	json_object_object_get_ex(r, "text", &v);
	t = json_object_get_string(v);
	assert_non_null(strstr(t, "\nunderlays folded: 10 chunks in 3 steps, 1 passes\n"));
	assert_non_null(strstr(t, "fold 3 (last "));
	json_object_put(r);
	/* two more underlays: folded by the create's pass, before its pause */
	for (unsigned c = 0; c < 2; c++) {
		uint64_t off = (uint64_t)(c * 5 + 1) * (64 << 10);
		memset(model + off, 0xc0 + c, 8192);
		assert_int_equal(cow_rw(ctx, COW_WRITE, model + off, 8192, off, 0), 0);
	}
	assert_int_equal(call(UBLK_OP_SNAP_CREATE, "s2", &r), 0);
	json_object_put(r);
	assert_int_equal(dev->fold.chunks, 12);
	assert_int_equal(dev->fold.passes, 2);
	assert_int_equal(dev->pause_st[UBLK_PAUSE_FOLD].count, 4);
	assert_int_equal(dev->pause_st[UBLK_PAUSE_CREATE].count, 1);
	/* two more: a grow folds them first (a pass, before the driver is asked anything; this
	 * fake device has no driver, so the grow itself then fails), a refused grow or a
	 * resize to the same size does not */
	for (unsigned c = 0; c < 2; c++) {
		uint64_t off = (uint64_t)(c * 5 + 2) * (64 << 10);
		memset(model + off, 0xd0 + c, 4096);
		assert_int_equal(cow_rw(ctx, COW_WRITE, model + off, 4096, off, 0), 0);
	}
	rep = "{\"op\": \"resize\", \"size\": 8388608}\n";
	rep = raw_exchange(rep, strlen(rep), false);
	assert_non_null(strstr(rep, "this kernel is "));	/* no UBLK_F_UPDATE_SIZE */
	dev->info.flags |= UK_F_UPDATE_SIZE;
	dev->o.block_size = 4096;
	rep = "{\"op\": \"resize\", \"size\": 4194304}\n";
	rep = raw_exchange(rep, strlen(rep), false);
	assert_non_null(strstr(rep, "\"error\": \"GET_PARAMS: No such device\""));
	assert_int_equal(dev->fold.passes, 2);			/* not a grow: no pass */
	rep = "{\"op\": \"resize\", \"size\": 8388608}\n";
	rep = raw_exchange(rep, strlen(rep), false);
	assert_non_null(strstr(rep, "\"error\": \"GET_PARAMS: No such device\""));
	assert_int_equal(dev->fold.chunks, 14);
	assert_int_equal(dev->fold.passes, 3);
	assert_int_equal(cow_fold(img, &cursor, 0, &done), 0);	/* none left */
	dev->info.flags &= ~(uint64_t)UK_F_UPDATE_SIZE;
	/* a stop signal waiting: the pass before a create ends after its first step and the
	 * create fails (the device stops at once); without it, the next create folds the rest */
	for (unsigned c = 0; c < 6; c++) {
		uint64_t off = (uint64_t)(c * 10 + 3) * (64 << 10) / 2;
		memset(model + off, 0xe0 + c, 4096);
		assert_int_equal(cow_rw(ctx, COW_WRITE, model + off, 4096, off, 0), 0);
	}
	dev->sig_fd = eventfd(1, EFD_CLOEXEC);
	assert_int_equal(call(UBLK_OP_SNAP_CREATE, "s3", &r), -EPROTO);
	assert_string_equal(ublk_sock_reply_error(r),
			    "folding underlays before the snapshot: the device is stopping");
	json_object_put(r);
	assert_int_equal(dev->fold.chunks, 18);			/* one step of 4 */
	cow_get_info(img, &in);
	assert_int_equal(in.nb_snapshots, 2);			/* s3 not made */
	close(dev->sig_fd);
	dev->sig_fd = -1;
	assert_int_equal(call(UBLK_OP_SNAP_CREATE, "s3", &r), 0);
	json_object_put(r);
	assert_int_equal(dev->fold.chunks, 20);
	assert_int_equal(dev->fold.passes, 4);
	/* read-only devices do not fold */
	dev->o.read_only = true;
	assert_int_equal(ublk_fold_step(dev), -1);
	dev->o.read_only = false;
	assert_int_equal(cow_rw(ctx, COW_READ, got, sizeof(got), 0, 0), 0);
	assert_memory_equal(got, model, sizeof(got));
	unlisten();
	cow_ctx_free(ctx);
	cow_backend_free(be);
	assert_int_equal(cow_close(img), 0);
	dev->info.nr_hw_queues = 1;
	free_dev(dev);
}

/* Online jobs through the socket, the control thread's steps run by hand (a fake device
 * without queues: each pause is immediate): flatten, then commit of an overlay over a raw
 * base; the content never changes, the base holds it after the commit, the overlay none. */
static void run_job(int op, const char *want_kind)
{
	struct json_object *r;
	int steps = 0;
	assert_int_equal(call(op, NULL, &r), 0);
	json_object_put(r);
	while (ublk_job_step(dev))
		assert_true(++steps < 10000);
	assert_int_equal(call(UBLK_OP_JOB, NULL, &r), 0);
	struct json_object *j = json_object_object_get(r, "job");
	assert_non_null(j);
	const char *state = json_object_get_string(json_object_object_get(j, "state"));
	if (strcmp(state, "done"))
		fail_msg("%s job: %s (%s)", want_kind, state,
			 json_object_get_string(json_object_object_get(j, "error")));
	assert_string_equal(json_object_get_string(json_object_object_get(j, "kind")), want_kind);
	json_object_put(r);
}

static void test_server_jobs(void **state)
{
	const uint64_t sz = 8 << 20;
	uint8_t *want = malloc(sz), *got = malloc(sz);
	struct cow_backend *be;
	struct cow_ctx *ctx;
	struct cow_info in;
	struct json_object *r;
	int fd;

	assert_non_null(want);
	assert_non_null(got);
	for (uint64_t i = 0; i < sz; i++)
		want[i] = (uint8_t)(i * 2654435761u >> 15);
	for (int k = 0; k < 2; k++) {
		const char *b = k ? "jb2.raw" : "jb.raw";
		fd = open(P(b), O_RDWR | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, want, sz, 0), (ssize_t)sz);
		close(fd);
	}
	struct cow_create_opts o = { .size = sz, .chunk_size = 64 << 10, .backing = "jb.raw",
				     .backing_fmt = COW_FMT_RAW };
	unlink(P("jo.ucow"));
	assert_int_equal(cow_create(P("jo.ucow"), &o, err, COW_ERRLEN), 0);
	dev = fake_dev(&ublk_tgt_cow, 0);
	strcpy(dev->o.file, P("jo.ucow"));
	assert_int_equal(cow_open(dev->o.file, &(struct cow_open_opts){ .fmt = COW_FMT_UCOW },
			(struct cow_image **)&dev->tgt_data, err, COW_ERRLEN), 0);
	listen_dev();
	assert_int_equal(cow_backend_new("sync", 4, &be), 0);
	assert_int_equal(cow_ctx_new(dev->tgt_data, be, &ctx), 0);
	/* the overlay's own data and zeros */
	memset(want + (1 << 20), 0x5a, 100 << 10);
	memset(want + (3 << 20), 0, 256 << 10);
	assert_int_equal(cow_rw(ctx, COW_WRITE, want + (1 << 20), 100 << 10, 1 << 20, 0), 0);
	assert_int_equal(cow_rw(ctx, COW_WRITE_ZEROES, NULL, 256 << 10, 3 << 20, 0), 0);

	/* refused while another open holds the base: at once, and no step runs after it */
	struct cow_image *other;
	assert_int_equal(cow_open(P("jb.raw"), &(struct cow_open_opts){ .fmt = COW_FMT_RAW,
				  .flags = COW_OPEN_RDONLY }, &other, err, COW_ERRLEN), 0);
	assert_int_equal(call(UBLK_OP_COMMIT, NULL, &r), -EPROTO);
	assert_non_null(strstr(ublk_sock_reply_error(r), "in use by another process"));
	json_object_put(r);
	assert_true(dev->pause_st[UBLK_PAUSE_JOB].max_ns < 1000000000ull);
	assert_int_equal(ublk_job_step(dev), 0);
	cow_close(other);

	/* commit: into jb.raw, the overlay emptied; the same content */
	run_job(UBLK_OP_COMMIT, "commit");
	assert_int_equal(cow_rw(ctx, COW_READ, got, sz, 0, 0), 0);
	assert_memory_equal(got, want, sz);
	uint64_t run;
	assert_int_equal(cow_map(dev->tgt_data, 0, sz, &run, NULL), COW_MAP_BACKING);
	assert_int_equal(run, sz);			/* nothing of its own */
	fd = open(P("jb.raw"), O_RDONLY);
	assert_int_equal(pread(fd, got, sz, 0), (ssize_t)sz);
	close(fd);
	assert_memory_equal(got, want, sz);		/* the base holds it */

	/* flatten: the overlay holds everything, no backing file */
	run_job(UBLK_OP_FLATTEN, "flatten");
	cow_get_info(dev->tgt_data, &in);
	assert_null(in.backing);
	assert_int_equal(cow_rw(ctx, COW_READ, got, sz, 0, 0), 0);
	assert_memory_equal(got, want, sz);
	/* nothing left to commit or flatten */
	assert_int_equal(call(UBLK_OP_COMMIT, NULL, &r), -EPROTO);
	assert_string_equal(ublk_sock_reply_error(r), "the image has no backing file");
	json_object_put(r);
	assert_int_equal(dev->pause_st[UBLK_PAUSE_JOB].count > 2, 1);

	cow_ctx_free(ctx);
	cow_backend_free(be);
	unlisten();
	ublk_job_free_io(dev->job);
	free(dev->job->dirty);
	free(dev->job);
	assert_int_equal(cow_close(dev->tgt_data), 0);
	free_dev(dev);
	free(want);
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_req_roundtrip),
		cmocka_unit_test(test_req_resize),
		cmocka_unit_test(test_req_hostile),
		cmocka_unit_test(test_reply),
		cmocka_unit_test(test_snaps),
		cmocka_unit_test(test_info),
		cmocka_unit_test(test_lat_buckets),
		cmocka_unit_test(test_server_hostile),
		cmocka_unit_test(test_server_slow),
		cmocka_unit_test(test_server_stats),
		cmocka_unit_test(test_server_stats_network),
		cmocka_unit_test(test_prefetch),
		cmocka_unit_test(test_server_snapshots),
		cmocka_unit_test(test_server_fold),
		cmocka_unit_test(test_client_hostile),
		cmocka_unit_test(test_server_jobs),
	};

	(void)pass_queue, (void)pass_submit_wait;	/* unit.h's, for image tests */
	return UNIT_RUN(tests);
}
