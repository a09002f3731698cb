/* SPDX-License-Identifier: MIT */
/*
 * How agentvm reports a failure: one line on stderr, and the exit code from the one table
 * below (a library error's kind, then its errno).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "cli.h"

static void say(const char *prefix, const char *fmt, va_list ap)
{
	fputs(prefix, stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say("agentvm: ", fmt, ap);
	va_end(ap);
}

void cli_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say("agentvm: warning: ", fmt, ap);
	va_end(ap);
}

#define ANY_KIND (-1)

static const struct {
	int kind;  /* enum avm_error_kind, or ANY_KIND */
	int code;  /* -errno, or 0 for any */
	int exit;
} exit_table[] = {
	/* First match wins. An interrupt is one whatever else went on. */
	{ ANY_KIND, -EINTR, EXIT_INTERRUPTED },
	{ AVM_ERR_INTERRUPTED, 0, EXIT_INTERRUPTED },
	{ AVM_ERR_USAGE, 0, EXIT_USAGE },
	{ AVM_ERR_STATE, -ETIMEDOUT, EXIT_TIMEOUT }, /* e.g. no pool VM in time */
	{ AVM_ERR_STATE, 0, 1 },
	{ AVM_ERR_HOST, 0, EXIT_HOST_MISSING },
	{ AVM_ERR_BOOT, 0, EXIT_BOOT_FAILED },
	{ AVM_ERR_VM_LOST, 0, EXIT_VM_LOST },
	{ AVM_ERR_INTERNAL, 0, EXIT_INTERNAL },
	{ AVM_ERR_OUTPUT, 0, 1 }, /* like cat(1) to /dev/full */
	/* No kind: the errno says it. */
	{ AVM_ERR_ERRNO, -EINVAL, EXIT_USAGE },
	{ AVM_ERR_ERRNO, -EEXIST, EXIT_USAGE },
	{ AVM_ERR_ERRNO, -EPERM, EXIT_HOST_MISSING },
	{ AVM_ERR_ERRNO, -EACCES, EXIT_HOST_MISSING },
	{ AVM_ERR_ERRNO, 0, EXIT_INTERNAL },
};

int cli_exit_of(const struct avm_error *err)
{
	for (size_t i = 0; i < sizeof(exit_table) / sizeof(exit_table[0]); i++)
		if ((exit_table[i].kind == ANY_KIND || exit_table[i].kind == (int)err->kind) &&
		    (!exit_table[i].code || exit_table[i].code == err->code))
			return exit_table[i].exit;
	return EXIT_INTERNAL;
}

int cli_fail(const struct avm_error *err)
{
	cli_error("%s", err->msg);
	return cli_exit_of(err);
}
