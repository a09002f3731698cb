/* SPDX-License-Identifier: MIT */
/*
 * The base layer under libagentvm: one error type (a kind beside the errno, and netfilter's
 * setter keeps its one-line rule on the same struct), the log handler that replaces printing,
 * the VM state words state.json keeps, and the snapshot listing and removal errors.
 */
#include <errno.h>
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

#include "base/error.h"
#include "netfilter/nf_internal.h"
#include "snapshot/snapshot_save.h"
#include "base/strv.h"
#include "base/util.h"
#include "state/vmstate.h"

static void test_error_kind(void **state)
{
	struct avm_error e = { 0 };

	assert_int_equal(avm_error_kind(&e, AVM_ERR_STATE,
					avm_error_set(&e, -EBUSY, "VM '%s' is %s", "a", "paused")),
			 -EBUSY);
	assert_int_equal(e.kind, AVM_ERR_STATE);
	assert_string_equal(e.msg, "VM 'a' is paused");
	/* A new error starts without a kind: one left from before must not stick. */
	avm_error_setx(&e, -ENOENT, "cannot open %s", "x");
	assert_int_equal(e.kind, AVM_ERR_ERRNO);
	assert_string_equal(e.msg, "cannot open x: No such file or directory");
	assert_int_equal(avm_error_kind(NULL, AVM_ERR_USAGE, -EINVAL), -EINVAL);
}

static void test_nf_error_is_one_line(void **state)
{
	struct avm_error e = { .kind = AVM_ERR_HOST };

	assert_int_equal(nf_set_error(&e, -EPERM, "nft said:\n%s\n", "no\nway"), -EPERM);
	assert_string_equal(e.msg, "nft said: no way ");
	assert_int_equal(e.code, -EPERM);
	assert_int_equal(e.kind, AVM_ERR_ERRNO);
}

static char logged[4096];

static void collect(void *userdata, const char *text)
{
	(*(int *)userdata)++;
	strncat(logged, text, sizeof(logged) - strlen(logged) - 1);
}

static void test_log_handler(void **state)
{
	int calls = 0;

	logged[0] = '\0';
	avm_log("dropped: no handler\n");
	avm_log_set(collect, &calls);
	avm_warn("disk %d is %s", 2, "full");
	avm_log("progress %d%%\n", 50);
	avm_log_set(NULL, NULL);
	avm_warn("dropped again");
	assert_int_equal(calls, 2);
	assert_string_equal(logged, "agentvm: warning: disk 2 is full\nprogress 50%\n");
}

static void test_state_words(void **state)
{
	/* The words state.json has always had: tests and scripts read them. */
	static const char *const words[] = { "created", "starting", "running", "paused",
					     "stopping", "stopped", "crashed" };

	for (size_t i = 0; i < ARRAY_SIZE(words); i++) {
		enum vm_run_state s = vmstate_parse(words[i]);
		assert_int_not_equal(s, VMS_UNKNOWN);
		assert_string_equal(vmstate_name(s), words[i]);
	}
	assert_int_equal(vmstate_parse("Running"), VMS_UNKNOWN);
	assert_int_equal(vmstate_parse(""), VMS_UNKNOWN);
	assert_string_equal(vmstate_name(VMS_UNKNOWN), "unknown");
	assert_string_equal(vmstate_name((enum vm_run_state)99), "unknown");
	assert_true(vmstate_is_live(VMS_CREATED) && vmstate_is_live(VMS_STOPPING));
	assert_false(vmstate_is_live(VMS_STOPPED) || vmstate_is_live(VMS_CRASHED) ||
		     vmstate_is_live(VMS_UNKNOWN));
	assert_true(vmstate_is_up(VMS_RUNNING) && vmstate_is_up(VMS_PAUSED));
	assert_false(vmstate_is_up(VMS_STARTING));
}

static void test_snapshot_list_and_rm(void **state)
{
	char dir[] = "/tmp/avm-test-snaps.XXXXXX", path[256];
	struct avm_error e = { 0 };
	char **names = NULL;

	assert_non_null(mkdtemp(dir));
	setenv("AGENTVM_SNAPSHOT_DIR", dir, 1);
	setenv("AGENTVM_STATE_DIR", dir, 1); /* no VMs: nothing uses a snapshot */
	setenv("AGENTVM_AUDIT", "off", 1);     /* not the machine's audit log */
	for (const char *const *n = (const char *const[]){ "b", "a", ".hidden", NULL }; *n; n++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *n);
		assert_int_equal(mkdir(path, 0700), 0);
	}
	assert_int_equal(snap_list(&names), 2);
	assert_string_equal(names[0], "a");
	assert_string_equal(names[1], "b");
	assert_null(names[2]);
	strv_free(names);

	assert_int_equal(snap_remove("../x", false, &e), -EINVAL);
	assert_int_equal(e.kind, AVM_ERR_USAGE);
	assert_int_equal(snap_remove("c", false, &e), -ENOENT);
	assert_int_equal(e.kind, AVM_ERR_USAGE);
	assert_non_null(strstr(e.msg, "no snapshot named 'c'"));
	assert_int_equal(snap_remove("a", false, &e), 0);
	assert_int_equal(snap_list(&names), 1);
	strv_free(names);
	snprintf(path, sizeof(path), "%s/b", dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/.hidden", dir);
	rmdir(path);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_kind),
		cmocka_unit_test(test_nf_error_is_one_line),
		cmocka_unit_test(test_log_handler),
		cmocka_unit_test(test_state_words),
		cmocka_unit_test(test_snapshot_list_and_rm),
	};
	return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}
