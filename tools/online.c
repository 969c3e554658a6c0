/* SPDX-License-Identifier: MIT */
/*
 * Online jobs of a served image (ublk/job.c): start one through the server's socket and
 * wait for it, showing its progress. Shared by rebase (flatten) and commit.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cowcore.h"
#include "ublk.h"
#include "util.h"

/* The job object of a reply, or NULL. */
static struct json_object *job_of(struct json_object *reply)
{
	struct json_object *j;
	return json_object_object_get_ex(reply, "job", &j) &&
	       json_object_is_type(j, json_type_object) ? j : NULL;
}

static int64_t job_int(struct json_object *j, const char *key)
{
	int64_t v = 0;
	char err[64];
	return ublk_json_get_int(j, key, 0, INT64_MAX - 1, &v, err, sizeof(err)) ? -1 : v;
}

int online_job(const char *file, int id, const char *sock, int op, struct progress *pr)
{
	struct json_object *resp = NULL, *j = NULL;
	const char *state = NULL, *what = ublk_sock_op_name(op);
	int rc;

	for (;;) {
		rc = ublk_sock_call(sock, op, NULL, 30, &resp);
		if (rc == -EPROTO && resp) {
			ucow_err("%s: %s", file, ublk_sock_reply_error(resp));
			ublk_sock_reply_free(resp);
			return 1;
		}
		if (rc < 0 || !(j = job_of(resp))) {
			ucow_err("%s: no answer from the server of /dev/ublkb%d: %s", file, id,
				 rc < 0 ? strerror(-rc) : "no job state");
			ublk_sock_reply_free(resp);
			return 1;
		}
		state = json_object_get_string(json_object_object_get(j, "state"));
		int64_t done = job_int(j, "done-bytes"), total = job_int(j, "total-bytes");
		if (done >= 0 && total > 0)
			progress_show(pr, (uint64_t)done, (uint64_t)total);
		if (!state || strcmp(state, "running"))
			break;
		ublk_sock_reply_free(resp);
		resp = NULL;
		op = UBLK_OP_JOB;
		nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL);
	}
	rc = 0;
	if (!state || strcmp(state, "done")) {
		struct json_object *e = json_object_object_get(j, "error");
		ucow_err("%s: %s on /dev/ublkb%d %s: %s", file, what, id,
			 state ? state : "ended", e ? json_object_get_string(e) : "no reason given");
		rc = 1;
	}
	ublk_sock_reply_free(resp);
	return rc;
}
