/* SPDX-License-Identifier: MIT */
#include "vm/migrate.h"

#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/util.h"

static int execute_fd(struct qmp_client *q, const char *cmd, const char *key, const char *val,
		      int *fd, int timeout_ms, struct avm_error *err)
{
	struct qmp_error qe = { 0 };
	struct json_object *args = json_object_new_object();
	int r;

	json_object_object_add(args, key, json_object_new_string(val));
	r = qmp_client_execute(q, cmd, args, fd, fd ? 1 : 0, NULL, timeout_ms, &qe);
	json_object_put(args);
	if (r < 0)
		return avm_error_set(err, r, "QMP %s failed: %s", cmd, qe.desc);
	return 0;
}

int migrate_set_fast(struct qmp_client *q, int timeout_ms, struct qmp_error *qe)
{
	struct json_object *args = json_object_new_object(), *caps = json_object_new_array();
	struct json_object *cap = json_object_new_object();
	int r;

	json_object_object_add(cap, "capability", json_object_new_string("events"));
	json_object_object_add(cap, "state", json_object_new_boolean(1));
	json_object_array_add(caps, cap);
	/*
	 * Off, explicitly: a copy-on-write clone still has it on from its own restore, and with it
	 * every RAM block header in the stream carries an extra field that a loader without the
	 * capability misreads ("load of migration failed: Invalid argument"). A snapshot is
	 * always an ordinary full stream.
	 */
	cap = json_object_new_object();
	json_object_object_add(cap, "capability", json_object_new_string("x-ignore-shared"));
	json_object_object_add(cap, "state", json_object_new_boolean(0));
	json_object_array_add(caps, cap);
	json_object_object_add(args, "capabilities", caps);
	r = qmp_client_execute(q, "migrate-set-capabilities", args, NULL, 0, NULL, timeout_ms, qe);
	json_object_put(args);
	if (r < 0)
		return r;
	/* The default cap is 32 MiB/s: a stopped VM should go at disk speed. */
	args = json_object_new_object();
	json_object_object_add(args, "max-bandwidth", json_object_new_int64(INT64_C(1) << 40));
	r = qmp_client_execute(q, "migrate-set-parameters", args, NULL, 0, NULL, timeout_ms, qe);
	json_object_put(args);
	return r;
}

/* A stop signal the caller blocked (to clean up after it) is waiting: give up at once. */
static bool stop_pending(void)
{
	sigset_t set;

	return sigpending(&set) == 0 &&
	       (sigismember(&set, SIGINT) == 1 || sigismember(&set, SIGTERM) == 1 ||
		sigismember(&set, SIGHUP) == 1);
}

/* Cancel the migration and wait (up to 5 s) until QEMU has left it, so a `cont` works. */
static void cancel_and_wait(struct qmp_client *q, int qmp_timeout_ms)
{
	struct json_object *ret = NULL, *v;

	qmp_client_execute(q, "migrate_cancel", NULL, NULL, 0, NULL, qmp_timeout_ms, NULL);
	for (uint64_t end = now_ms() + 5000; now_ms() < end; util_sleep_ms(5)) {
		if (qmp_client_execute(q, "query-migrate", NULL, NULL, 0, &ret, qmp_timeout_ms,
				       NULL) < 0)
			return;
		const char *st = json_object_object_get_ex(ret, "status", &v) &&
						 json_object_is_type(v, json_type_string) ?
					 json_object_get_string(v) :
					 "";
		bool over = strcmp(st, "active") && strcmp(st, "cancelling") &&
			    strcmp(st, "setup") && strcmp(st, "device") &&
			    strcmp(st, "pre-switchover");
		json_object_put(ret);
		ret = NULL;
		if (over)
			return;
	}
}

int migrate_to_fd(struct qmp_client *q, int fd, const struct migrate_req *rq,
		  struct migrate_end *end, struct avm_error *err)
{
	struct qmp_error qe = { 0 };
	struct json_object *ret = NULL, *v;
	char uri[128];
	int r;

	memset(end, 0, sizeof(*end));
	snprintf(uri, sizeof(uri), "fd:%s", rq->fdname);
	if (stop_pending())
		return avm_error_set(err, -EINTR, "interrupted");
	if ((r = execute_fd(q, "getfd", "fdname", rq->fdname, &fd, rq->qmp_timeout_ms, err)) < 0 ||
	    (r = execute_fd(q, "migrate", "uri", uri, NULL, rq->qmp_timeout_ms, err)) < 0)
		return r;
	for (uint64_t deadline = now_ms() + (uint64_t)rq->timeout_ms;; util_sleep_ms(rq->poll_ms)) {
		r = qmp_client_execute(q, "query-migrate", NULL, NULL, 0, &ret, rq->qmp_timeout_ms,
				       &qe);
		if (r < 0)
			return avm_error_set(err, r, "QMP query-migrate failed: %s", qe.desc);
		const char *st = json_object_object_get_ex(ret, "status", &v) &&
						 json_object_is_type(v, json_type_string) ?
					 json_object_get_string(v) :
					 "";
		if (!strcmp(st, "completed")) {
			json_object_put(ret);
			return 0;
		}
		if (stop_pending()) {
			json_object_put(ret);
			cancel_and_wait(q, rq->qmp_timeout_ms);
			return avm_error_set(err, -EINTR, "interrupted");
		}
		bool failed = !strcmp(st, "failed") || !strcmp(st, "cancelled");
		if (failed || now_ms() > deadline) {
			end->ended = true;
			snprintf(end->status, sizeof(end->status), "%s", st);
			end->has_desc = json_object_object_get_ex(ret, "error-desc", &v) &&
					json_object_is_type(v, json_type_string);
			snprintf(end->desc, sizeof(end->desc), "%s",
				 end->has_desc ? json_object_get_string(v) : "");
			json_object_put(ret);
			return failed ? -EIO : -ETIMEDOUT;
		}
		json_object_put(ret);
		ret = NULL;
	}
}
