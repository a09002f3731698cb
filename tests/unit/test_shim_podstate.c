/* SPDX-License-Identifier: MIT */
/*
 * The containerd shim's saved pod state (podstate.h): the bounded reader's refusals (a symlink,
 * a file others may write, one too large), the parser's acceptance of what the shim writes (an
 * unstarted exec with its spec included) and its refusal of each kind of damage, and a process
 * spec's round trip through shim_proc_json.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "shim/podstate.h"
#include "shim/shim.h"

#define CTR0 "{\"i\":0,\"id\":\"c1\",\"bundle\":\"/b/c1\",\"rootfs\":\"/b/c1/rootfs\"," \
	     "\"mounted\":true,\"attached\":true}"
#define INIT0 "{\"c\":0,\"stdin\":\"\",\"stdout\":\"/f/out\",\"stderr\":\"\",\"pid\":42," \
	      "\"start\":7,\"status\":2,\"exit_status\":0,\"exited_ns\":0}"
#define EXEC0 "{\"c\":0,\"exec_id\":\"e1\",\"stdout\":\"/f/e1\",\"pid\":0,\"start\":0," \
	      "\"status\":1,\"spec\":{\"args\":[\"sh\",\"-c\",\"exit 5\"],\"env\":[\"A=b\"]," \
	      "\"cwd\":\"/w\",\"user\":{\"uid\":1000,\"gid\":100}}}"
#define STATE(ctrs, procs) "{\"vm\":\"ctr-0123456789abcdef\",\"paused\":true,\"netns\":" \
			   "\"/run/netns/p\",\"ctrs\":[" ctrs "],\"procs\":[" procs "]}"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/avm-podstate-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void put(const char *name, const char *text, mode_t mode)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

static int read_it(const char *name, size_t max, char **buf, const char **why)
{
	char path[128];
	size_t len;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return shim_read_private(path, max, buf, &len, why);
}

static void test_reader_refusals(void **state)
{
	char path[128], target[128], *buf = NULL;
	const char *why = NULL;

	put("ok.json", "{}", 0600);
	assert_int_equal(read_it("ok.json", 64, &buf, &why), 0);
	assert_string_equal(buf, "{}");
	free(buf);
	assert_int_equal(read_it("none.json", 64, &buf, &why), -ENOENT);
	/* Another's file planted as a symlink to ours is not followed. */
	snprintf(path, sizeof(path), "%s/link.json", dir);
	snprintf(target, sizeof(target), "%s/ok.json", dir);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(read_it("link.json", 64, &buf, &why), -ELOOP);
	assert_non_null(strstr(why, "symbolic link"));
	put("gw.json", "{}", 0620);
	assert_int_equal(read_it("gw.json", 64, &buf, &why), -EPERM);
	assert_non_null(strstr(why, "writable by group or others"));
	put("big.json", "{\"x\": \"0123456789\"}", 0600);
	assert_int_equal(read_it("big.json", 8, &buf, &why), -EFBIG);
	assert_null(buf);
	snprintf(path, sizeof(path), "%s/sub", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(read_it("sub", 64, &buf, &why), -EPERM);
	assert_non_null(strstr(why, "regular file"));
}

static void test_parse_accepts_what_is_saved(void **state)
{
	static const char text[] = STATE(CTR0, INIT0 "," EXEC0);
	struct pod_state *s = calloc(1, sizeof(*s));
	const char *why = NULL;

	assert_int_equal(shim_pod_state_parse(text, strlen(text), s, &why), 0);
	assert_string_equal(s->vm, "ctr-0123456789abcdef");
	assert_true(s->paused);
	assert_string_equal(s->netns, "/run/netns/p");
	assert_int_equal(s->n_ctrs, 1);
	assert_string_equal(s->ctrs[0].id, "c1");
	assert_string_equal(s->ctrs[0].rootfs, "/b/c1/rootfs");
	assert_true(s->ctrs[0].mounted && s->ctrs[0].attached);
	assert_int_equal(s->n_procs, 2);
	assert_null(s->procs[0].exec_id);
	assert_int_equal(s->procs[0].status, ST_RUNNING);
	assert_int_equal(s->procs[0].pid, 42);
	assert_int_equal(s->procs[0].start, 7);
	assert_string_equal(s->procs[0].stdio[1], "/f/out");
	assert_null(s->procs[0].stdio[0]);
	assert_string_equal(s->procs[1].exec_id, "e1");
	assert_true(s->procs[1].has_spec);
	assert_string_equal(s->procs[1].spec.argv[2], "exit 5");
	assert_string_equal(s->procs[1].spec.env[0], "A=b");
	assert_string_equal(s->procs[1].spec.cwd, "/w");
	assert_int_equal(s->procs[1].spec.uid, 1000);
	assert_int_equal(s->procs[1].spec.gid, 100);
	shim_pod_state_release(s);
	free(s);
}

static void test_parse_refuses_damage(void **state)
{
	static const char *const bad[] = {
		"",
		"[]",
		STATE(CTR0, INIT0) "x",
		"{\"vm\":\"../../etc\",\"ctrs\":[],\"procs\":[]}",
		"{\"vm\":\"ctr-0123456789abcdeg\",\"ctrs\":[],\"procs\":[]}",
		"{\"vm\":\"ctr-0123456789abcdef\",\"netns\":\"rel\",\"ctrs\":[],\"procs\":[]}",
		"{\"vm\":\"ctr-0123456789abcdef\",\"paused\":1,\"ctrs\":[],\"procs\":[]}",
		"{\"vm\":\"ctr-0123456789abcdef\",\"ctrs\":{},\"procs\":[]}",
		/* a container: bad slot, id, path; two in one slot */
		STATE("{\"i\":16,\"id\":\"c1\",\"bundle\":\"/b\",\"rootfs\":\"/r\"}", ""),
		STATE("{\"i\":0,\"id\":\"../x\",\"bundle\":\"/b\",\"rootfs\":\"/r\"}", ""),
		STATE("{\"i\":0,\"id\":\"c1\",\"bundle\":\"b\",\"rootfs\":\"/r\"}", ""),
		STATE("{\"i\":0,\"id\":\"c1\",\"bundle\":\"/b\"}", ""),
		STATE(CTR0 "," CTR0, ""),
		/* a process: of no container, running without a helper, a bad status or exit
		 * status, an unstarted exec without its spec, a spec on a started one, an exec id
		 * twice */
		STATE(CTR0, "{\"c\":1,\"pid\":42,\"start\":7,\"status\":2}"),
		STATE(CTR0, "{\"c\":0,\"pid\":0,\"start\":7,\"status\":2}"),
		STATE(CTR0, "{\"c\":0,\"pid\":42,\"start\":7,\"status\":4}"),
		STATE(CTR0, "{\"c\":0,\"pid\":42,\"start\":7,\"status\":3,\"exit_status\":256}"),
		STATE(CTR0, "{\"c\":0,\"pid\":-1,\"status\":3}"),
		STATE(CTR0, "{\"c\":0,\"exec_id\":\"e1\",\"status\":1}"),
		STATE(CTR0, "{\"c\":0,\"exec_id\":\"e1\",\"pid\":4,\"start\":7,\"status\":2,"
			    "\"spec\":{\"args\":[\"true\"]}}"),
		STATE(CTR0, "{\"c\":0,\"exec_id\":\"e1\",\"status\":1,\"spec\":{\"args\":[]}}"),
		STATE(CTR0, EXEC0 "," EXEC0),
		STATE(CTR0, INIT0 "," INIT0),
	};
	struct pod_state *s = calloc(1, sizeof(*s));

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;
		int r = shim_pod_state_parse(bad[i], strlen(bad[i]), s, &why);
		if (r != -EINVAL || !why)
			fail_msg("accepted (%d) #%zu: %s", r, i, bad[i]);
		shim_pod_state_release(s);
	}
	free(s);
}

static void test_proc_json_round_trip(void **state)
{
	char *argv[] = { "sh", "-c", "echo \"a b\"", NULL }, *env[] = { "K=v", NULL }, *why = NULL;
	struct shim_proc p = { .argv = argv, .env = env, .cwd = "/srv", .uid = 7, .gid = 8 }, q;
	struct json_object *o = shim_proc_json(&p);
	const char *js;

	assert_non_null(o);
	js = json_object_to_json_string(o);
	assert_int_equal(shim_oci_process(js, strlen(js), &q, &why), 0);
	assert_string_equal(q.argv[2], "echo \"a b\"");
	assert_null(q.argv[3]);
	assert_string_equal(q.env[0], "K=v");
	assert_string_equal(q.cwd, "/srv");
	assert_int_equal(q.uid, 7);
	assert_int_equal(q.gid, 8);
	shim_proc_release(&q);
	json_object_put(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reader_refusals, setup, teardown),
		cmocka_unit_test(test_parse_accepts_what_is_saved),
		cmocka_unit_test(test_parse_refuses_damage),
		cmocka_unit_test(test_proc_json_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
