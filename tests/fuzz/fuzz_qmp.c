// SPDX-License-Identifier: MIT
/*
 * fuzz_qmp.c - libFuzzer target for the QMP client's input side: arbitrary bytes from "QEMU".
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iqmp qmp/qmp.c \
 *        tests/fuzz/fuzz_qmp.c $(pkg-config --cflags --libs json-c)
 * Run:   ./fuzz_qmp -max_total_time=60 tests/fuzz/corpus/qmp
 *
 * No fds: a detached client gets the bytes through qmp_client_feed(), the same path
 * qmp_client_process() uses after a read. The first input byte picks the shape of the run:
 *   bits 0-5  chunk size - 1 (1..64 bytes per feed: split messages, short reads)
 *   bit 6     prepend a valid greeting and negotiation reply (start in READY, ids known)
 *   bit 7     small message cap (80 bytes, set after the prelude) to reach the oversize path
 * Commands are pending throughout, so replies can match ids avm-1..avm-5; more are sent from
 * reply callbacks, as real users do. Ends with EOF or with qmp_client_free() (callbacks get
 * -EPIPE / -ECANCELED).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qmp/qmp.h"
#include "qmp/qmp_internal.h"

static const char prelude[] =
	"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
	"\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n"
	"{\"return\": {}, \"id\": \"avm-3\"}\r\n";

struct ctx {
	struct qmp_client *c;
	unsigned replies, sends;
};

/* Touch what the library hands out, so ASan sees any use of freed or bogus objects. */
static void touch(struct json_object *o)
{
	if (o)
		(void)strlen(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
}

static void on_reply(void *opaque, int status, struct json_object *ret, const struct qmp_error *e)
{
	struct ctx *x = opaque;

	x->replies++;
	if (status == 0) {
		touch(ret);
	} else {
		if (!e || e->code != status ||
		    strnlen(e->desc, sizeof(e->desc)) == sizeof(e->desc) ||
		    strnlen(e->klass, sizeof(e->klass)) == sizeof(e->klass))
			abort();
	}
	/* Chain a command now and then; refused once the client is dead or being freed. */
	if (status == 0 && x->sends < 16) {
		x->sends++;
		qmp_client_send(x->c, "query-status", NULL, NULL, 0, 0, on_reply, x, NULL);
	}
}

static void on_event(void *opaque, const char *event, struct json_object *data, int64_t s,
		     int64_t us)
{
	(void)opaque;
	(void)s;
	(void)us;
	if (!event)
		abort();
	(void)strlen(event);
	touch(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctx x = { 0 };
	struct qmp_error err;
	struct json_object *args;
	size_t chunk;
	uint8_t mode;
	int rc, maj;

	if (size < 1)
		return 0;
	mode = data[0];
	data++;
	size--;
	chunk = (size_t)(mode & 63) + 1;

	x.c = qmp_client_new_detached();
	if (!x.c)
		return 0;
	qmp_client_add_event_listener(x.c, on_event, &x);

	/* avm-1, avm-2 before the greeting (held); the negotiation is avm-3. */
	args = json_object_new_object();
	json_object_object_add(args, "fdname", json_object_new_string("f"));
	qmp_client_send(x.c, "getfd", args, NULL, 0, 0, on_reply, &x, NULL);
	json_object_put(args);
	qmp_client_send(x.c, "query-status", NULL, NULL, 0, 1000, on_reply, &x, NULL);
	if (mode & 64) {
		rc = qmp_client_feed(x.c, prelude, sizeof(prelude) - 1, &err);
		if (rc != 0)
			abort(); /* a valid prelude must be accepted */
		/* avm-4, avm-5 */
		qmp_client_send(x.c, "stop", NULL, NULL, 0, 0, on_reply, &x, NULL);
		qmp_client_send(x.c, "cont", NULL, NULL, 0, 0, on_reply, &x, NULL);
	}
	if (mode & 128)
		qmp_client_set_max_message(x.c, 80);

	for (size_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;

		memset(&err, 0, sizeof(err));
		rc = qmp_client_feed(x.c, data + off, n, &err);
		if (rc > 0 || (rc < 0 && err.code != rc))
			abort(); /* every error comes with its context */
		if (rc < 0 && rc != -EBADMSG && rc != -EMSGSIZE && rc != -EPROTO)
			abort(); /* nothing else can come from bytes alone */
	}
	(void)qmp_client_version(x.c, &maj, NULL, NULL);
	(void)qmp_client_next_timeout_ms(x.c);
	if (size && (data[size - 1] & 1))
		qmp_client_feed_eof(x.c, NULL);
	qmp_client_free(x.c);
	return 0;
}
