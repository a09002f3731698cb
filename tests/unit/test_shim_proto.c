/* SPDX-License-Identifier: MIT */
/*
 * The containerd shim's wire code: protobuf encoding against known bytes, decoding of every
 * malformed input kind, ttrpc frames and requests, a real ttrpc server on a unix socket answering
 * a client (UNIMPLEMENTED included), OCI process specs, and the runtime's options and config
 * file (config.h).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "shim/config.h"
#include "shim/pb.h"
#include "shim/shim.h"
#include "shim/shim_vm.h"
#include "shim/ttrpc.h"

static void test_pb_known_bytes(void **state)
{
	struct pb_buf b = { 0 };
	/* The protobuf documentation's examples: 150 in field 1, "testing" in field 2. */
	static const uint8_t want[] = { 0x08, 0x96, 0x01, 0x12, 0x07, 't', 'e', 's', 't', 'i', 'n',
					'g' };

	pb_put_varint(&b, 1, 150);
	pb_put_varint(&b, 5, 0); /* proto3: zero values are not written */
	pb_put_str(&b, 2, "testing");
	pb_put_str(&b, 3, "");
	assert_int_equal(b.error, 0);
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	pb_buf_release(&b);
}

static void test_pb_roundtrip_nested_any_timestamp(void **state)
{
	struct pb_buf b = { 0 }, inner = { 0 };
	struct pb_reader r;
	struct pb_field f;
	char *s = NULL, *type = NULL;
	const uint8_t *val;
	size_t vlen;
	int64_t ns = 0;
	int n, seen = 0, repeated = 0;

	pb_put_str(&inner, 1, "c1");
	pb_put_varint(&inner, 4, 143);
	pb_put_any(&b, 7, "containerd.events.TaskExit", &inner);
	pb_put_timestamp(&b, 3, 1700000000123456789ll);
	pb_put_str(&b, 9, "a");
	pb_put_str(&b, 9, "b"); /* repeated */
	pb_put_varint(&b, 2, UINT64_MAX);
	assert_int_equal(b.error, 0);

	pb_reader_init(&r, b.data, b.len);
	while ((n = pb_next(&r, &f)) > 0) {
		if (f.num == 7) {
			assert_int_equal(pb_field_any(&f, &type, &val, &vlen), 0);
			assert_string_equal(type, "containerd.events.TaskExit");
			assert_int_equal(vlen, inner.len);
			assert_memory_equal(val, inner.data, vlen);
			seen |= 1;
		} else if (f.num == 3) {
			assert_int_equal(pb_field_timestamp(&f, &ns), 0);
			assert_true(ns == 1700000000123456789ll);
			seen |= 2;
		} else if (f.num == 9) {
			assert_int_equal(pb_field_str(&f, &s), 0);
			assert_string_equal(s, repeated++ ? "b" : "a");
		} else if (f.num == 2) {
			assert_int_equal(f.wire, PB_VARINT);
			assert_true(f.v == UINT64_MAX);
			seen |= 4;
		}
	}
	assert_int_equal(n, 0);
	assert_int_equal(seen, 7);
	assert_int_equal(repeated, 2);
	free(s);
	free(type);
	pb_buf_release(&b);
	pb_buf_release(&inner);
}

static int walk(const uint8_t *p, size_t len)
{
	struct pb_reader r;
	struct pb_field f;
	int n;

	pb_reader_init(&r, p, len);
	while ((n = pb_next(&r, &f)) > 0)
		;
	return n;
}

static void test_pb_rejects_malformed(void **state)
{
	static const uint8_t trunc_varint[] = { 0x08, 0x96 };
	static const uint8_t long_varint[] = { 0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
					       0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
	static const uint8_t past_end[] = { 0x12, 0x05, 'a', 'b' };
	static const uint8_t group[] = { 0x0b, 0x0c };
	static const uint8_t field0[] = { 0x00, 0x01 };
	static const uint8_t trunc_fixed[] = { 0x0d, 1, 2, 3 };
	static const uint8_t nul_str[] = { 0x0a, 0x02, 'a', 0 };
	struct pb_reader r;
	struct pb_field f;
	char *s = NULL;

	assert_int_equal(walk(trunc_varint, sizeof(trunc_varint)), -EBADMSG);
	assert_int_equal(walk(long_varint, sizeof(long_varint)), -EBADMSG);
	assert_int_equal(walk(past_end, sizeof(past_end)), -EBADMSG);
	assert_int_equal(walk(group, sizeof(group)), -EBADMSG);
	assert_int_equal(walk(field0, sizeof(field0)), -EBADMSG);
	assert_int_equal(walk(trunc_fixed, sizeof(trunc_fixed)), -EBADMSG);
	assert_int_equal(walk(NULL, 0), 0);
	pb_reader_init(&r, nul_str, sizeof(nul_str));
	assert_int_equal(pb_next(&r, &f), 1);
	assert_int_equal(pb_field_str(&f, &s), -EBADMSG); /* a string with a NUL in it */
	assert_null(s);
}

static void test_pb_size_limit(void **state)
{
	struct pb_buf b = { 0 };
	char *big = malloc(PB_MAX_MESSAGE);

	assert_non_null(big);
	memset(big, 'x', PB_MAX_MESSAGE);
	pb_put_bytes(&b, 1, big, PB_MAX_MESSAGE); /* key + length + 4 MiB > the limit */
	assert_int_equal(b.error, -EMSGSIZE);
	pb_put_str(&b, 2, "after"); /* ignored once failed */
	assert_int_equal(b.error, -EMSGSIZE);
	free(big);
	pb_buf_release(&b);
}

static void test_ttrpc_frame_parse(void **state)
{
	struct pb_buf out = { 0 }, payload = { 0 };
	struct ttrpc_frame f;
	struct ttrpc_request req;
	size_t used = 0;
	uint8_t hdr[TTRPC_HDR_SIZE] = { 0x00, 0x40, 0x00, 0x01, 0, 0, 0, 3, 1, 0 };

	pb_put_str(&payload, 1, "c1");
	assert_int_equal(ttrpc_request_encode(&out, 7, SHIM_TASK_SERVICE, "State", &payload), 0);
	/* Big-endian length and stream id, then type 1 (request) and flags 0. */
	assert_int_equal(out.data[0] << 24 | out.data[1] << 16 | out.data[2] << 8 | out.data[3],
			 (int)out.len - TTRPC_HDR_SIZE);
	assert_int_equal(out.data[7], 7);
	assert_int_equal(out.data[8], TTRPC_TYPE_REQUEST);
	for (size_t cut = 0; cut < out.len; cut++)
		assert_int_equal(ttrpc_frame_parse(out.data, cut, &f, &used), 0);
	assert_int_equal(ttrpc_frame_parse(out.data, out.len, &f, &used), 1);
	assert_int_equal(used, out.len);
	assert_int_equal(f.stream, 7);
	assert_int_equal(ttrpc_request_decode(f.payload, f.len, &req), 0);
	assert_string_equal(req.service, SHIM_TASK_SERVICE);
	assert_string_equal(req.method, "State");
	assert_int_equal(req.len, payload.len);
	assert_memory_equal(req.payload, payload.data, payload.len);
	ttrpc_request_release(&req);
	/* 4 MiB + 1: refused from the header alone, before any payload is buffered. */
	assert_int_equal(ttrpc_frame_parse(hdr, sizeof(hdr), &f, &used), -EMSGSIZE);
	/* A request without a method is malformed. */
	struct pb_buf bad = { 0 };
	pb_put_str(&bad, 1, SHIM_TASK_SERVICE);
	assert_int_equal(ttrpc_request_decode(bad.data, bad.len, &req), -EBADMSG);
	pb_buf_release(&bad);
	pb_buf_release(&out);
	pb_buf_release(&payload);
}

/* --- a real server ---------------------------------------------------------------------------- */

static int calls;

static void echo_handler(void *ctx, struct ttrpc_call call, const struct ttrpc_request *req)
{
	struct ttrpc_server *s = *(struct ttrpc_server **)ctx;

	if (!strcmp(req->method, "Echo")) {
		struct pb_buf b = { 0 };
		pb_put_bytes(&b, 1, req->payload, req->len);
		ttrpc_reply(s, call, TTRPC_OK, NULL, &b);
		pb_buf_release(&b);
	} else {
		ttrpc_reply(s, call, TTRPC_UNIMPLEMENTED, "no such method", NULL);
	}
	if (++calls == 2)
		ttrpc_server_stop(s);
}

/* Read one response frame; its status code (0 when absent) and payload field. */
static int read_response(int fd, uint32_t *stream, uint64_t *code, struct pb_buf *payload)
{
	/* Both answers may come in one read: what follows a frame stays for the next call. */
	static uint8_t buf[4096];
	static size_t have;
	size_t used;
	struct ttrpc_frame f;
	struct pb_reader r;
	struct pb_field fl;
	int n;

	while ((n = ttrpc_frame_parse(buf, have, &f, &used)) == 0) {
		ssize_t k = read(fd, buf + have, sizeof(buf) - have);
		if (k <= 0)
			return -1;
		have += (size_t)k;
	}
	if (n < 0 || f.type != TTRPC_TYPE_RESPONSE)
		return -1;
	uint8_t frame[4096];
	memcpy(frame, buf, used);
	memmove(buf, buf + used, have - used);
	have -= used;
	f.payload = frame + TTRPC_HDR_SIZE;
	*stream = f.stream;
	*code = 0;
	pb_reader_init(&r, f.payload, f.len);
	while (pb_next(&r, &fl) > 0) {
		if (fl.num == 1) {
			struct pb_reader sr;
			struct pb_field sf;
			pb_reader_init(&sr, fl.data, fl.len);
			while (pb_next(&sr, &sf) > 0)
				if (sf.num == 1)
					*code = sf.v;
		} else if (fl.num == 2) {
			pb_put_bytes(payload, 1, fl.data, fl.len);
		}
	}
	return 0;
}

static int client(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct pb_buf out = { 0 }, p = { 0 }, got = { 0 }, want = { 0 };
	uint32_t stream;
	uint64_t code;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sa.sun_path, path);
	for (int i = 0; i < 100 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0; i++)
		usleep(10000);
	pb_put_str(&p, 1, "ping");
	ttrpc_request_encode(&out, 1, SHIM_TASK_SERVICE, "Echo", &p);
	ttrpc_request_encode(&out, 3, SHIM_TASK_SERVICE, "Stats", NULL);
	/* Both requests in one write, the second split from the first only by the parser. */
	if (write(fd, out.data, out.len) != (ssize_t)out.len)
		return 1;
	if (read_response(fd, &stream, &code, &got) < 0 || stream != 1 || code != 0)
		return 2;
	pb_put_bytes(&want, 1, p.data, p.len);
	struct pb_buf echoed = { 0 };
	pb_put_bytes(&echoed, 1, want.data, want.len);
	if (got.len != echoed.len || memcmp(got.data, echoed.data, got.len))
		return 3;
	pb_buf_release(&got);
	if (read_response(fd, &stream, &code, &got) < 0 || stream != 3 ||
	    code != TTRPC_UNIMPLEMENTED)
		return 4;
	return 0;
}

static void test_ttrpc_server_roundtrip(void **state)
{
	char path[108];
	struct ttrpc_server *s = NULL;
	int ws;

	snprintf(path, sizeof(path), "/tmp/avm-ttrpc-test.%d.sock", (int)getpid());
	assert_int_equal(ttrpc_server_new(path, echo_handler, &s, &s), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(client(path));
	assert_int_equal(ttrpc_server_run(s), 0);
	ttrpc_server_free(s); /* closes the connection: a client waiting for more fails, not hangs */
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	assert_int_equal(calls, 2);
	unlink(path);
}

static void test_oci_process(void **state)
{
	struct shim_proc p;
	char *why = NULL;
	const char *ok = "{\"args\":[\"sh\",\"-c\",\"echo hi\"],\"env\":[\"A=1\"],\"cwd\":\"/opt\","
			 "\"user\":{\"uid\":1000,\"gid\":50},\"terminal\":false}";

	assert_int_equal(shim_oci_process(ok, strlen(ok), &p, &why), 0);
	assert_string_equal(p.argv[2], "echo hi");
	assert_null(p.argv[3]);
	assert_string_equal(p.env[0], "A=1");
	assert_string_equal(p.cwd, "/opt");
	assert_int_equal(p.uid, 1000);
	assert_int_equal(p.gid, 50);
	shim_proc_release(&p);

	static const char *const bad[] = {
		"{\"args\":[]}", "{\"env\":[\"A=1\"]}", "{\"args\":[1]}", "[1]", "{\"args\":[\"a\"",
		"{\"args\":[\"a\"],\"cwd\":\"rel\"}", "{\"args\":[\"a\"],\"env\":[null]}", "",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		assert_int_equal(shim_oci_process(bad[i], strlen(bad[i]), &p, &why), -EINVAL);
		assert_non_null(why);
		assert_null(p.argv);
	}
}

static void test_runtime_options_and_config(void **state)
{
	struct pb_buf b = { 0 };
	struct shim_config c;
	char *path = NULL, *why = NULL;

	/* runtimeoptions.v1.Options {type_url = 1, config_path = 2}, with and without a prefix. */
	pb_put_str(&b, 1, "x");
	pb_put_str(&b, 2, "/etc/agentvm/shim.json");
	assert_int_equal(shim_runtime_options("runtimeoptions.v1.Options", b.data, b.len, &path,
					      &why), 0);
	assert_string_equal(path, "/etc/agentvm/shim.json");
	free(path);
	assert_int_equal(shim_runtime_options("types.containerd.io/runtimeoptions.v1.Options",
					      b.data, b.len, &path, &why),
			 0);
	free(path);
	/* runc's options are not ours; a name that only ends the same neither. */
	assert_int_equal(shim_runtime_options("containerd.runc.v1.Options", b.data, b.len, &path,
					      &why), -EINVAL);
	assert_int_equal(shim_runtime_options("xruntimeoptions.v1.Options", b.data, b.len, &path,
					      &why), -EINVAL);
	assert_null(path);
	pb_buf_release(&b);
	/* No config_path: no file. A truncated message: refused. */
	assert_int_equal(shim_runtime_options(SHIM_RUNTIME_OPTIONS, NULL, 0, &path, &why), 0);
	assert_null(path);
	const uint8_t cut[] = { 0x12, 0x05, 'a' };
	assert_true(shim_runtime_options(SHIM_RUNTIME_OPTIONS, cut, sizeof(cut), &path, &why) < 0);
	assert_null(path);

	const char *ok = "{\"profile\":\"small\",\"cpus\":2,\"memory\":\"640\","
			 "\"network\":\"nat-filtered\",\"allow\":[\"tcp:443\"],"
			 "\"allow_domain\":[\"example.com\"],\"annotations\":false}\n";
	assert_int_equal(shim_config_parse(ok, strlen(ok), &c, &why), 0);
	assert_string_equal(c.profile, "small");
	assert_string_equal(c.cpus, "2");
	assert_string_equal(c.memory, "640");
	assert_string_equal(c.network, "nat-filtered");
	assert_int_equal(c.allow.n, 1);
	assert_string_equal(c.allow.v[0], "tcp:443");
	assert_int_equal(c.allow_cidr.n, 0);
	assert_string_equal(c.allow_domain.v[0], "example.com");
	assert_true(c.no_annotations);
	assert_false(c.pool);
	shim_config_release(&c);
	const char *pool = "{\"pool\":true}";
	assert_int_equal(shim_config_parse(pool, strlen(pool), &c, &why), 0);
	assert_true(c.pool);
	assert_null(c.image);
	shim_config_release(&c);
	const char *image = "{\"image\":\"agent\"}";
	assert_int_equal(shim_config_parse(image, strlen(image), &c, &why), 0);
	assert_string_equal(c.image, "agent");
	shim_config_release(&c);

	static const char *const bad[] = {
		"", "[]", "{\"memory\":640} x", "{\"colour\":\"red\"}", "{\"cpus\":1.5}",
		"{\"network\":1}", "{\"allow\":\"tcp:1\"}", "{\"allow\":[1]}",
		"{\"annotations\":\"no\"}", "{\"memory\":640", "{\"pool\":\"yes\"}",
		"{\"image\":1}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		assert_true(shim_config_parse(bad[i], strlen(bad[i]), &c, &why) < 0);
		assert_non_null(why);
		assert_null(c.memory);
	}
	/* More rules than fit, and a file too large. */
	char big[2048] = "{\"allow\":[";
	for (int i = 0; i <= SHIM_CONFIG_MAX_ALLOW; i++)
		strcat(big, i ? ",\"tcp:1\"" : "\"tcp:1\"");
	strcat(big, "]}");
	assert_int_equal(shim_config_parse(big, strlen(big), &c, &why), -E2BIG);
	assert_int_equal(shim_config_parse(big, SHIM_CONFIG_MAX_BYTES + 1, &c, &why), -E2BIG);
	assert_int_equal(shim_config_load("/nonexistent/shim.json", &c, &why), -ENOENT);
	assert_non_null(strstr(why, "/nonexistent/shim.json"));
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pb_known_bytes),
		cmocka_unit_test(test_pb_roundtrip_nested_any_timestamp),
		cmocka_unit_test(test_pb_rejects_malformed),
		cmocka_unit_test(test_pb_size_limit),
		cmocka_unit_test(test_ttrpc_frame_parse),
		cmocka_unit_test(test_ttrpc_server_roundtrip),
		cmocka_unit_test(test_oci_process),
		cmocka_unit_test(test_runtime_options_and_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
