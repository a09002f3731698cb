/* SPDX-License-Identifier: MIT */
/*
 * Error context for the host side (crun's libcrun_error_t is the model). A fallible function
 * returns -errno and fills the caller's struct avm_error with one human sentence: the cause and,
 * where there is one, the fix. Callers up the stack may prefix context with avm_error_wrap().
 */
#ifndef AGENTVM_ERROR_H
#define AGENTVM_ERROR_H

struct avm_error {
	int code;       /* -errno, 0 when unset */
	char msg[1024]; /* one line, no trailing newline */
};

/* Set err (if not NULL) and return code (a -errno), so callers can `return avm_error_set(...)`. */
int avm_error_set(struct avm_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Like avm_error_set, appending ": strerror(-code)". */
int avm_error_setx(struct avm_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefix the existing message with context ("starting VM: ..."); returns err->code. */
int avm_error_wrap(struct avm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
