/* SPDX-License-Identifier: MIT */
/*
 * Error context for the host side (crun's libcrun_error_t is the model). A fallible function
 * returns -errno and fills the caller's struct avm_error with one human sentence: the cause and,
 * where there is one, the fix. Callers up the stack may prefix context with avm_error_wrap().
 */
#ifndef AGENTVM_ERROR_H
#define AGENTVM_ERROR_H

#include <stdarg.h>

/*
 * What kind of failure, where the errno alone does not say (the CLI maps kind, then errno, to
 * its exit code in one table: src/cli/exit.c). AVM_ERR_ERRNO: decide from code.
 */
enum avm_error_kind {
	AVM_ERR_ERRNO = 0,
	AVM_ERR_USAGE,       /* a bad name or argument, or a name that is taken */
	AVM_ERR_STATE,       /* the object exists but is in the wrong state for the call */
	AVM_ERR_HOST,        /* the host lacks something: QEMU, a kernel, an image, rights */
	AVM_ERR_BOOT,        /* the VM did not come up */
	AVM_ERR_VM_LOST,     /* the VM or its QMP/agent died or misbehaved during the call */
	AVM_ERR_INTERNAL,    /* anything else (out of memory, a full disk, ...) */
	AVM_ERR_INTERRUPTED, /* cancelled (a stop signal); the message says what was kept */
	AVM_ERR_OUTPUT,      /* a command's output could not be written (/dev/full, a full disk) */
};

struct avm_error {
	int code;       /* -errno, 0 when unset */
	char msg[1024]; /* one line, no trailing newline */
	enum avm_error_kind kind;
};

/* Set err (if not NULL) and return code (a -errno), so callers can `return avm_error_set(...)`. */
int avm_error_set(struct avm_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* avm_error_set with a va_list (for wrappers). */
int avm_error_vset(struct avm_error *err, int code, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
/* Like avm_error_set, appending ": strerror(-code)". */
int avm_error_setx(struct avm_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefix the existing message with context ("starting VM: ..."); returns err->code. */
int avm_error_wrap(struct avm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Set err->kind (if err is not NULL) and return code: `return avm_error_kind(err, K, r)`. */
int avm_error_kind(struct avm_error *err, enum avm_error_kind kind, int code);

/*
 * The library never prints: what it has to say beside an error (a warning, progress, a
 * daemon's log line) goes to the handler set here (process-wide; none: dropped). text is the
 * whole message as a program would print it, newline included where it ends a line.
 */
typedef void (*avm_log_fn)(void *userdata, const char *text);
void avm_log_set(avm_log_fn fn, void *userdata);
void avm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "agentvm: warning: " + message + newline, through avm_log. */
void avm_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
