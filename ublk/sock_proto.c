/* SPDX-License-Identifier: MIT */
/*
 * The control socket's messages, both ways (no I/O here: sock.c serves, sock_client.c
 * asks). One JSON object per request and per reply, each ended by a newline:
 *
 *   request  {"op": "snapshot-create", "name": "s1"}
 *   reply    {"ok": true, "pause-us": 8421}
 *            {"ok": false, "error": "snapshot 's1' already exists"}
 *
 * A request is at most UBLK_SOCK_REQ_MAX bytes, a reply at most UBLK_SOCK_REPLY_MAX; both
 * are parsed as hostile input (json.c). Snapshot names are byte strings: "name" when valid
 * UTF-8, else "name-hex" (json.c), 1..127 bytes, no NUL. The ops, what they take and answer
 * (besides "ok"):
 *
 *   ping                          "pong": true
 *   stats                         "stats": {...} (stats.c), "text": the table dev stats prints
 *   info                          "info": the engine's view of the image (tgt_image.c)
 *   image-info                    "image": {format, sizes, counts, flags, backing},
 *                                 "snapshots": [...], "pause-us": 0
 *   snapshot-list                 "snapshots": [{id, parent, date-sec, date-nsec,
 *                                 virtual-size, disk-usage, current-parent, name}], "pause-us"
 *   snapshot-create, -delete      take "name"; "pause-us": the pause of the queues
 *   snapshot-apply                takes "name"; "pause-us". The client has proved that nobody
 *                                 holds the device open and drops its page cache after
 *                                 (tools/img_snapshot.c); the server refuses a snapshot whose
 *                                 size is not the device's
 *   flatten                       starts the flatten job (job.c): the backing chain's data
 *                                 copied in, then no backing file; "job": its state
 *   commit                        starts the commit job (job.c): the overlay's data written
 *                                 into its backing file, then the overlay emptied; "job"
 *   job                           "job": {kind, state (running, done, failed, or none),
 *                                 done-bytes, total-bytes, copied-bytes, steps,
 *                                 max-pause-us, total-pause-us, error}
 *   resize                        takes "size" (bytes, 1..2^63-2): the image grows to it and
 *                                 then the disk (UBLK_CMD_UPDATE_SIZE); "virtual-size": the
 *                                 size now, "pause-us". A smaller size is refused (sock.c)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ublk.h"

static const char *const op_names[UBLK_OP_NR] = {
	[UBLK_OP_PING] = "ping",
	[UBLK_OP_STATS] = "stats",
	[UBLK_OP_INFO] = "info",
	[UBLK_OP_IMAGE_INFO] = "image-info",
	[UBLK_OP_SNAP_LIST] = "snapshot-list",
	[UBLK_OP_SNAP_CREATE] = "snapshot-create",
	[UBLK_OP_SNAP_DELETE] = "snapshot-delete",
	[UBLK_OP_SNAP_APPLY] = "snapshot-apply",
	[UBLK_OP_FLATTEN] = "flatten",
	[UBLK_OP_JOB] = "job",
	[UBLK_OP_COMMIT] = "commit",
	[UBLK_OP_RESIZE] = "resize",
};

const char *ublk_sock_op_name(int op)
{
	return op >= 0 && op < UBLK_OP_NR ? op_names[op] : NULL;
}

static bool op_takes_name(int op)
{
	return op == UBLK_OP_SNAP_CREATE || op == UBLK_OP_SNAP_DELETE || op == UBLK_OP_SNAP_APPLY;
}

static bool op_takes_size(int op)
{
	return op == UBLK_OP_RESIZE;
}

/* O as one line of text, newline-terminated, malloc'd (NULL: out of memory) */
static char *to_line(struct json_object *o)
{
	const char *t = o ? ublk_json_text(o, false) : NULL;
	char *line = t ? malloc(strlen(t) + 2) : NULL;

	if (line)
		sprintf(line, "%s\n", t);
	return line;
}

/* The request line: OP, its name (NULL: none), its size (has_size) */
static char *req_encode(int op, const char *name, bool has_size, uint64_t size, char *err,
			size_t errlen)
{
	struct json_object *o;
	char *line = NULL;

	if (!ublk_sock_op_name(op) || op_takes_name(op) != (name != NULL) ||
	    op_takes_size(op) != has_size || (has_size && (!size || size > INT64_MAX - 1)) ||
	    (name && (!*name || strlen(name) >= UBLK_SNAP_NAME_MAX))) {
		snprintf(err, errlen, name && op_takes_name(op) ? "invalid snapshot name (1 to %d "
			 "bytes)" : "invalid request", UBLK_SNAP_NAME_MAX - 1);
		return NULL;
	}
	o = json_object_new_object();
	if (o && !json_object_object_add(o, "op", json_object_new_string(op_names[op])) &&
	    (!name || !ublk_json_add_bytes(o, "name", name)) &&
	    (!has_size || !json_object_object_add(o, "size", json_object_new_int64((int64_t)size))))
		line = to_line(o);
	json_object_put(o);
	if (!line)
		snprintf(err, errlen, "out of memory");
	else if (strlen(line) > UBLK_SOCK_REQ_MAX) {	/* cannot happen with 127-byte names */
		free(line);
		line = NULL;
		snprintf(err, errlen, "request too long");
	}
	return line;
}

char *ublk_sock_req_encode(int op, const char *name, char *err, size_t errlen)
{
	return req_encode(op, name, false, 0, err, errlen);
}

char *ublk_sock_req_encode_size(int op, uint64_t size, char *err, size_t errlen)
{
	return req_encode(op, NULL, true, size, err, errlen);
}

int ublk_sock_req_decode(const char *buf, size_t len, struct ublk_sock_req *r, char *err,
			 size_t errlen)
{
	static const char *const keys[] = { "op", "name", "name-hex", "size", NULL };
	struct json_object *o;
	char op[32];
	int ret, i;

	memset(r, 0, sizeof(*r));
	r->op = -1;
	o = ublk_json_parse(buf, len, UBLK_SOCK_REQ_MAX, err, errlen);
	if (!o)
		return -EINVAL;
	ret = ublk_json_only_keys(o, keys, err, errlen);
	if (ret)
		goto out;
	ret = ublk_json_get_bytes(o, "op", op, sizeof(op), err, errlen);
	if (ret)
		goto out;
	for (i = 0; i < UBLK_OP_NR && strcmp(op, op_names[i]); i++)
		;
	if (i == UBLK_OP_NR) {
		snprintf(err, errlen, "unknown op \"%s\"", op);
		ret = -EINVAL;
		goto out;
	}
	r->op = i;
	ret = ublk_json_get_bytes(o, "name", r->name, sizeof(r->name), err, errlen);
	if (!op_takes_name(i)) {
		if (ret != -ENOENT) {
			snprintf(err, errlen, "op \"%s\" takes no name", op);
			ret = -EINVAL;
		} else {
			ret = 0;
		}
	} else if (!ret && !r->name[0]) {
		snprintf(err, errlen, "\"name\": empty");
		ret = -EINVAL;
	}
	if (!ret) {
		int64_t v = 0;

		ret = ublk_json_get_int(o, "size", 1, INT64_MAX - 1, &v, err, errlen);
		if (!op_takes_size(i) && ret != -ENOENT) {
			snprintf(err, errlen, "op \"%s\" takes no size", op);
			ret = -EINVAL;
		} else if (!op_takes_size(i)) {
			ret = 0;
		}
		r->size = (uint64_t)v;
	}
out:
	json_object_put(o);
	if (ret)
		r->op = -1;
	return ret ? -EINVAL : 0;
}

struct json_object *ublk_sock_reply_ok(void)
{
	struct json_object *o = json_object_new_object();

	if (o && json_object_object_add(o, "ok", json_object_new_boolean(1))) {
		json_object_put(o);
		o = NULL;
	}
	return o;
}

char *ublk_sock_reply_text(struct json_object *reply)
{
	return to_line(reply);
}

char *ublk_sock_error_text(const char *msg)
{
	struct json_object *o = json_object_new_object();
	char *line = NULL;

	if (o && !json_object_object_add(o, "ok", json_object_new_boolean(0)) &&
	    !json_object_object_add(o, "error", ublk_json_new_text(msg)))
		line = to_line(o);
	json_object_put(o);
	return line;
}

int ublk_sock_reply_decode(const char *buf, size_t len, struct json_object **reply, char *err,
			   size_t errlen)
{
	struct json_object *o, *v;
	bool ok;
	int r;

	*reply = NULL;
	o = ublk_json_parse(buf, len, UBLK_SOCK_REPLY_MAX, err, errlen);
	if (!o)
		return -EBADMSG;
	r = ublk_json_get_bool(o, "ok", &ok, err, errlen);
	if (!r && !ok) {
		if (!json_object_object_get_ex(o, "error", &v) ||
		    !json_object_is_type(v, json_type_string)) {
			snprintf(err, errlen, "an error reply without \"error\"");
			r = -EINVAL;
		} else {
			snprintf(err, errlen, "%s", json_object_get_string(v));
			*reply = o;
			return -EPROTO;
		}
	}
	if (r) {
		json_object_put(o);
		return -EBADMSG;
	}
	*reply = o;
	return 0;
}

const char *ublk_sock_reply_error(struct json_object *reply)
{
	struct json_object *v;

	if (reply && json_object_object_get_ex(reply, "error", &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return "bad reply";
}

void ublk_sock_reply_free(struct json_object *reply)
{
	json_object_put(reply);
}

/* ---- payloads ---------------------------------------------------------------------------- */

#define ADD(o, k, v) (json_object_object_add((o), (k), (v)) != 0)
#define U64(x) json_object_new_int64((int64_t)(x))

struct json_object *ublk_snaps_encode(const struct cow_snap_info *v, uint32_t n)
{
	struct json_object *a = json_object_new_array_ext((int)n);
	uint32_t i;

	if (!a)
		return NULL;
	for (i = 0; i < n; i++) {
		struct json_object *s = json_object_new_object();

		if (!s || ADD(s, "id", U64(v[i].id)) || ADD(s, "parent", U64(v[i].parent)) ||
		    ublk_json_add_bytes(s, "name", v[i].name) ||
		    ADD(s, "date-sec", U64(v[i].date_sec)) ||
		    ADD(s, "date-nsec", U64(v[i].date_nsec)) ||
		    ADD(s, "virtual-size", U64(v[i].virtual_size)) ||
		    ADD(s, "disk-usage", U64(v[i].disk_usage)) ||
		    ADD(s, "current-parent", json_object_new_boolean(v[i].current_parent)) ||
		    json_object_array_add(a, s)) {
			json_object_put(s);
			json_object_put(a);
			return NULL;
		}
	}
	return a;
}

#define MAX_U63 (INT64_MAX - 1)

static int get_u32(struct json_object *o, const char *k, uint32_t *out)
{
	int64_t v;
	int r = ublk_json_get_int(o, k, 0, UINT32_MAX, &v, NULL, 0);

	if (!r)
		*out = (uint32_t)v;
	return r;
}

static int get_u64(struct json_object *o, const char *k, uint64_t *out)
{
	int64_t v;
	int r = ublk_json_get_int(o, k, 0, MAX_U63, &v, NULL, 0);

	if (!r)
		*out = (uint64_t)v;
	return r;
}

int ublk_parse_snaps(struct json_object *reply, struct cow_snap_info **out, uint32_t *nout)
{
	struct json_object *a;
	struct cow_snap_info *v;
	size_t n, i;

	*out = NULL;
	*nout = 0;
	if (!json_object_object_get_ex(reply, "snapshots", &a))
		return 0;	/* image-info of an image without snapshots */
	if (!json_object_is_type(a, json_type_array))
		return -EBADMSG;
	n = json_object_array_length(a);
	if (n > UINT32_MAX)
		return -EBADMSG;
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct json_object *s = json_object_array_get_idx(a, i);
		bool cur;

		if (!json_object_is_type(s, json_type_object) || get_u32(s, "id", &v[i].id) ||
		    get_u32(s, "parent", &v[i].parent) ||
		    get_u64(s, "date-sec", &v[i].date_sec) ||
		    get_u32(s, "date-nsec", &v[i].date_nsec) || v[i].date_nsec >= 1000000000 ||
		    get_u64(s, "virtual-size", &v[i].virtual_size) ||
		    get_u64(s, "disk-usage", &v[i].disk_usage) ||
		    ublk_json_get_bool(s, "current-parent", &cur, NULL, 0) ||
		    ublk_json_get_bytes(s, "name", v[i].name, sizeof(v[i].name), NULL, 0) ||
		    !v[i].name[0]) {
			free(v);
			return -EBADMSG;
		}
		v[i].current_parent = cur;
	}
	*out = v;
	*nout = (uint32_t)n;
	return 0;
}

struct json_object *ublk_info_encode(const struct cow_info *in)
{
	struct json_object *o = json_object_new_object();

	if (!o || ADD(o, "format", json_object_new_string(cow_fmt_name(in->fmt))) ||
	    ADD(o, "virtual-size", U64(in->virtual_size)) ||
	    ADD(o, "file-size", U64(in->file_size)) ||
	    ADD(o, "disk-usage", U64(in->disk_usage)) ||
	    ADD(o, "chunk-size", U64(in->chunk_size)) ||
	    ADD(o, "block-size", U64(in->block_size)) ||
	    ADD(o, "nr-chunks", U64(in->nr_chunks)) ||
	    ADD(o, "allocated-chunks", U64(in->allocated_chunks)) ||
	    ADD(o, "zero-chunks", U64(in->zero_chunks)) ||
	    ADD(o, "journal-size", U64(in->journal_size)) ||
	    ADD(o, "journal-used", U64(in->journal_used)) ||
	    ADD(o, "snapshots", U64(in->nb_snapshots)) ||
	    ADD(o, "dirty", json_object_new_boolean(in->dirty)) ||
	    ADD(o, "corrupt", json_object_new_boolean(in->corrupt)) ||
	    ADD(o, "read-only", json_object_new_boolean(in->read_only)) ||
	    (in->backing && (ublk_json_add_bytes(o, "backing", in->backing) ||
			     ADD(o, "backing-format",
				 json_object_new_string(cow_fmt_name(in->backing_fmt)))))) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

int ublk_parse_info(struct json_object *reply, struct cow_info *in, char *backing, size_t blen)
{
	struct json_object *o;
	char fmt[16];
	bool b;
	int r;

	memset(in, 0, sizeof(*in));
	if (!json_object_object_get_ex(reply, "image", &o) ||
	    !json_object_is_type(o, json_type_object) ||
	    ublk_json_get_bytes(o, "format", fmt, sizeof(fmt), NULL, 0) ||
	    (in->fmt = cow_fmt_parse(fmt)) < 0 ||
	    get_u64(o, "virtual-size", &in->virtual_size) ||
	    get_u64(o, "file-size", &in->file_size) ||
	    get_u64(o, "disk-usage", &in->disk_usage) ||
	    get_u32(o, "chunk-size", &in->chunk_size) ||
	    get_u32(o, "block-size", &in->block_size) ||
	    get_u64(o, "nr-chunks", &in->nr_chunks) ||
	    get_u64(o, "allocated-chunks", &in->allocated_chunks) ||
	    get_u64(o, "zero-chunks", &in->zero_chunks) ||
	    get_u64(o, "journal-size", &in->journal_size) ||
	    get_u64(o, "journal-used", &in->journal_used) ||
	    get_u32(o, "snapshots", &in->nb_snapshots))
		return -EBADMSG;
	if (ublk_json_get_bool(o, "dirty", &b, NULL, 0))
		return -EBADMSG;
	in->dirty = b;
	if (ublk_json_get_bool(o, "corrupt", &b, NULL, 0))
		return -EBADMSG;
	in->corrupt = b;
	if (ublk_json_get_bool(o, "read-only", &b, NULL, 0))
		return -EBADMSG;
	in->read_only = b;
	r = ublk_json_get_bytes(o, "backing", backing, blen, NULL, 0);
	if (r == -ENOENT)
		return 0;
	if (r || !backing[0] || ublk_json_get_bytes(o, "backing-format", fmt, sizeof(fmt), NULL,
						    0) || (in->backing_fmt = cow_fmt_parse(fmt)) < 0)
		return -EBADMSG;
	in->backing = backing;
	return 0;
}

int ublk_parse_pause_us(struct json_object *reply, uint64_t *us)
{
	int r = get_u64(reply, "pause-us", us);

	return r == -ENOENT ? r : r ? -EBADMSG : 0;
}
