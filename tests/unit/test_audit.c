/* SPDX-License-Identifier: MIT */
/*
 * audit.c: concurrent writers never produce a broken line, rotation loses none, the log
 * directory's trust check, --since parsing, and long fields cut to one bounded line.
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "obs/audit.h"
#include "base/util.h"

static char dir[64];

struct tally {
	int lines, bad, per_writer[16];
	int64_t last_seq[16];
	bool out_of_order;
};

static int count_line(void *opaque, const char *line, struct json_object *ev)
{
	struct tally *t = opaque;
	struct json_object *w, *seq, *ts;

	t->lines++;
	if (!ev || !json_object_object_get_ex(ev, "writer", &w) ||
	    !json_object_object_get_ex(ev, "seq", &seq) ||
	    !json_object_object_get_ex(ev, "ts", &ts)) {
		t->bad++;
		return 0;
	}
	int i = json_object_get_int(w);
	if (i >= 0 && i < 16) {
		t->per_writer[i]++;
		if (json_object_get_int64(seq) <= t->last_seq[i] - 1)
			t->out_of_order = true;
		t->last_seq[i] = json_object_get_int64(seq) + 1;
	}
	return 0;
}

/* n writers x per lines of ~pad bytes each, at once. */
static void write_many(int n, int per, size_t pad)
{
	pid_t pids[16];
	char *big = malloc(pad + 1);

	memset(big, 'x', pad);
	big[pad] = 0;
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			for (int k = 0; k < per; k++) {
				struct json_object *f = json_object_new_object();
				json_object_object_add(f, "writer", json_object_new_int(i));
				json_object_object_add(f, "seq", json_object_new_int(k));
				json_object_object_add(f, "pad", json_object_new_string(big));
				audit_log("test.line", "vm-test", f);
			}
			_exit(0);
		}
	}
	for (int i = 0; i < n; i++) {
		int st;
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	free(big);
}

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/avm-audit-test.%d", getpid());
	setenv("AGENTVM_LOG_DIR", dir, 1);
	unsetenv("AGENTVM_AUDIT");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_concurrent_writers(void **state)
{
	struct audit_filter f = { 0 };
	struct tally t = { 0 };
	struct avm_error err = { 0 };

	unsetenv("AGENTVM_AUDIT_MAX_BYTES");
	write_many(8, 400, 190);
	assert_int_equal(audit_read(&f, false, -1, count_line, &t, &err), 0);
	assert_int_equal(t.lines, 8 * 400);
	assert_int_equal(t.bad, 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(t.per_writer[i], 400);
	assert_false(t.out_of_order);
	struct stat st;
	assert_int_equal(stat(audit_path(), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
}

/* Small files: many rotations while 6 writers append; every line is in some file. */
static void test_rotation_loses_nothing(void **state)
{
	struct audit_filter f = { 0 };
	struct tally t = { 0 };
	struct avm_error err = { 0 };
	char p[256];
	struct stat st;

	/* Enough room in AUDIT_KEEP files for all of it: 6 x 150 lines of ~300 bytes. */
	setenv("AGENTVM_AUDIT_MAX_BYTES", "80000", 1);
	write_many(6, 150, 190);
	assert_int_equal(audit_read(&f, false, -1, count_line, &t, &err), 0);
	assert_int_equal(t.bad, 0);
	assert_int_equal(t.lines, 6 * 150);
	snprintf(p, sizeof(p), "%s.1", audit_path());
	assert_int_equal(stat(p, &st), 0);
	assert_true(st.st_size >= 80000);
	snprintf(p, sizeof(p), "%s.%d", audit_path(), AUDIT_KEEP + 1);
	assert_int_equal(stat(p, &st), -1);
	unsetenv("AGENTVM_AUDIT_MAX_BYTES");
}

static int keep_first(void *opaque, const char *line, struct json_object *ev)
{
	struct json_object **out = opaque;

	if (!*out)
		*out = json_object_get(ev);
	return 0;
}

static void test_long_fields_are_cut(void **state)
{
	char *argv[100], big[3000];
	struct json_object *ev = NULL, *v;
	struct audit_filter f = { .vm = "vm-long" };
	struct avm_error err = { 0 };

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	for (int i = 0; i < 99; i++)
		argv[i] = big;
	argv[99] = NULL;
	audit_exec_start("vm-long", argv, big);
	assert_int_equal(audit_read(&f, false, -1, keep_first, &ev, &err), 0);
	assert_non_null(ev);
	assert_true(json_object_object_get_ex(ev, "truncated", &v));
	assert_true(json_object_object_get_ex(ev, "argv", &v));
	assert_int_equal(json_object_array_length(v), 32);
	assert_true(strlen(json_object_to_json_string(ev)) < AUDIT_MAX_LINE);
	json_object_put(ev);
}

static void test_trust(void **state)
{
	struct avm_error err = { 0 };
	char link[128];

	assert_int_equal(mkdir(dir, 0700) == 0 || errno == EEXIST, 1);
	assert_int_equal(audit_check_trust(&err), 0);
	chmod(dir, 0770);
	assert_int_equal(audit_check_trust(&err), -EPERM);
	assert_non_null(strstr(err.msg, "chmod go-w"));
	chmod(dir, 0700);
	snprintf(link, sizeof(link), "%s.link", dir);
	assert_int_equal(symlink(dir, link), 0);
	setenv("AGENTVM_LOG_DIR", link, 1);
	/* audit_dir() is fixed per process: check the link itself. */
	extern int statedir_check_trust(const char *, const char *, struct avm_error *);
	assert_int_equal(statedir_check_trust(link, "AGENTVM_LOG_DIR", &err), -EPERM);
	unlink(link);
	setenv("AGENTVM_LOG_DIR", dir, 1);
}

static void test_since(void **state)
{
	struct avm_error err = { 0 };
	int64_t now = 1784116800000LL, t;

	assert_int_equal(audit_parse_since("10m", now, &t, &err), 0);
	assert_int_equal(t, now - 600000);
	assert_int_equal(audit_parse_since("2026-07-15T08:00:00-04:00", now, &t, &err), 0);
	assert_int_equal(t, 1784116800000LL);
	assert_int_equal(audit_parse_since("2026-07-15T12:00:00.5Z", now, &t, &err), 0);
	assert_int_equal(t, 1784116800500LL);
	/* A bare date is midnight in New York: EDT in July, EST in January. */
	assert_int_equal(audit_parse_since("2026-07-15", now, &t, &err), 0);
	assert_int_equal(t, (1784116800LL - 8 * 3600) * 1000);
	assert_int_equal(audit_parse_since("2026-01-15", now, &t, &err), 0);
	assert_int_equal(t, (1768478400LL - 7 * 3600) * 1000);
	static const char *const bad[] = { "", "10", "10y", "-5m", "2026-13-01", "2026-07-15T25:00:00Z",
					   "2026-07-15T08:00:00+4", "2026-07-15Tx", "99999999999d" };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (audit_parse_since(bad[i], now, &t, &err) != -EINVAL)
			fail_msg("accepted '%s'", bad[i]);
}

/* On the first line it sees, the reader itself appends 100 lines: three rotations at once. */
static int rotate_under_reader(void *opaque, const char *line, struct json_object *ev)
{
	struct tally *t = opaque;

	count_line(opaque, line, ev);
	if (t->lines == 1) {
		for (int k = 0; k < 100; k++) {
			struct json_object *f = json_object_new_object();
			json_object_object_add(f, "writer", json_object_new_int(0));
			json_object_object_add(f, "seq", json_object_new_int(k));
			json_object_object_add(f, "pad", json_object_new_string(
				"0123456789012345678901234567890123456789012345678901234567890123456789"));
			audit_log("test.line", "vm-test", f);
		}
	}
	return 0;
}

/*
 * --follow goes through every rotated file in order, also when several rotations passed
 * between two looks (it used to jump to the current file and skip those between). stop_fd is
 * readable from the start: the reader returns once it has caught up.
 */
static void test_follow_through_rotation(void **state)
{
	struct audit_filter f = { 0 };
	struct tally t = { 0 };
	struct avm_error err = { 0 };
	int p[2];
	char path[256];
	struct stat st;

	setenv("AGENTVM_AUDIT_MAX_BYTES", "8192", 1);
	audit_vm("test.before", "vm-f");
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(audit_read(&f, true, p[0], rotate_under_reader, &t, &err), 0);
	snprintf(path, sizeof(path), "%s.2", audit_path());
	assert_int_equal(stat(path, &st), 0); /* it did rotate more than once */
	assert_int_equal(t.lines, 101);
	assert_int_equal(t.per_writer[0], 100);
	assert_int_equal(t.bad, 1); /* the test.before line (no writer field) */
	assert_false(t.out_of_order);
	close(p[0]);
	close(p[1]);
	unsetenv("AGENTVM_AUDIT_MAX_BYTES");
}

static void test_off(void **state)
{
	struct stat a, b;

	audit_vm("test.first", "vm-off");
	assert_int_equal(stat(audit_path(), &a), 0);
	setenv("AGENTVM_AUDIT", "off", 1);
	audit_vm("test.off", "vm-off");
	assert_int_equal(stat(audit_path(), &b), 0);
	assert_int_equal(a.st_size, b.st_size);
	unsetenv("AGENTVM_AUDIT");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_loses_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_fields_are_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trust, setup, teardown),
		cmocka_unit_test_setup_teardown(test_since, setup, teardown),
		cmocka_unit_test_setup_teardown(test_follow_through_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_off, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
