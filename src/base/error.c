/* SPDX-License-Identifier: MIT */
#include "base/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int avm_error_vset(struct avm_error *err, int code, const char *fmt, va_list ap)
{
	if (!err)
		return code;
	err->code = code;
	err->kind = AVM_ERR_ERRNO;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	return code;
}

int avm_error_set(struct avm_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	avm_error_vset(err, code, fmt, ap);
	va_end(ap);
	return code;
}

int avm_error_setx(struct avm_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (!err)
		return code;
	va_start(ap, fmt);
	avm_error_vset(err, code, fmt, ap);
	va_end(ap);
	n = strlen(err->msg);
	snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(-code));
	return code;
}

int avm_error_wrap(struct avm_error *err, const char *fmt, ...)
{
	char prefix[256], old[sizeof(err->msg)];
	va_list ap;

	/* Without an error struct there is no code to return: a failure must never read as 0. */
	if (!err)
		return -EIO;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	/* Truncation is fine here: the message is for people and the prefix matters most. */
	size_t n = strlen(prefix);
	if (n > sizeof(err->msg) - 3)
		n = sizeof(err->msg) - 3;
	memcpy(err->msg, prefix, n);
	memcpy(err->msg + n, ": ", 2);
	n += 2;
	size_t m = strnlen(old, sizeof(err->msg) - 1 - n);
	memcpy(err->msg + n, old, m);
	err->msg[n + m] = '\0';
	return err->code;
}

int avm_error_kind(struct avm_error *err, enum avm_error_kind kind, int code)
{
	if (err)
		err->kind = kind;
	return code;
}

static avm_log_fn log_fn;
static void *log_ud;

void avm_log_set(avm_log_fn fn, void *userdata)
{
	log_fn = fn;
	log_ud = userdata;
}

static void vlog(const char *prefix, const char *fmt, va_list ap, const char *suffix)
{
	char *body = NULL, *text = NULL;

	if (!log_fn)
		return;
	if (vasprintf(&body, fmt, ap) >= 0 && asprintf(&text, "%s%s%s", prefix, body, suffix) >= 0)
		log_fn(log_ud, text);
	free(body);
	free(text);
}

void avm_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog("", fmt, ap, "");
	va_end(ap);
}

void avm_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog("agentvm: warning: ", fmt, ap, "\n");
	va_end(ap);
}
