/* SPDX-License-Identifier: MIT */
/*
 * src/cli/exit.c: agentvm's exit code of a library error comes from one table, by the error's
 * kind first and its errno second (never by the words of its message).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cli/cli.h"

static int exit_of(enum avm_error_kind kind, int code)
{
	struct avm_error e = { .code = code, .kind = kind };

	return cli_exit_of(&e);
}

static void test_by_kind(void **state)
{
	assert_int_equal(exit_of(AVM_ERR_USAGE, -ENOENT), EXIT_USAGE);
	assert_int_equal(exit_of(AVM_ERR_STATE, -EBUSY), 1);
	assert_int_equal(exit_of(AVM_ERR_HOST, -EIO), EXIT_HOST_MISSING);
	assert_int_equal(exit_of(AVM_ERR_BOOT, -ENOENT), EXIT_BOOT_FAILED);
	assert_int_equal(exit_of(AVM_ERR_VM_LOST, -ECONNREFUSED), EXIT_VM_LOST);
	assert_int_equal(exit_of(AVM_ERR_INTERNAL, -EINVAL), EXIT_INTERNAL);
	assert_int_equal(exit_of(AVM_ERR_INTERRUPTED, -EINTR), EXIT_INTERRUPTED);
	assert_int_equal(exit_of(AVM_ERR_OUTPUT, -ENOSPC), 1); /* like cat(1) to /dev/full */
	/* The pool's "no VM in time" is a timeout, as --timeout is. */
	assert_int_equal(exit_of(AVM_ERR_STATE, -ETIMEDOUT), EXIT_TIMEOUT);
}

static void test_by_errno(void **state)
{
	/* An interrupt is one whatever the kind. */
	assert_int_equal(exit_of(AVM_ERR_BOOT, -EINTR), EXIT_INTERRUPTED);
	assert_int_equal(exit_of(AVM_ERR_ERRNO, -EINVAL), EXIT_USAGE);
	assert_int_equal(exit_of(AVM_ERR_ERRNO, -EEXIST), EXIT_USAGE);
	assert_int_equal(exit_of(AVM_ERR_ERRNO, -EACCES), EXIT_HOST_MISSING);
	assert_int_equal(exit_of(AVM_ERR_ERRNO, -EPERM), EXIT_HOST_MISSING);
	assert_int_equal(exit_of(AVM_ERR_ERRNO, -ENOMEM), EXIT_INTERNAL);
	assert_int_equal(exit_of(AVM_ERR_ERRNO, -ENOSPC), EXIT_INTERNAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_by_kind),
		cmocka_unit_test(test_by_errno),
	};
	return cmocka_run_group_tests_name("cli_exit", tests, NULL, NULL);
}
