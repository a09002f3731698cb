/* SPDX-License-Identifier: MIT */
/* A growable NULL-terminated string vector (argv-like). */
#ifndef AGENTVM_STRV_H
#define AGENTVM_STRV_H

#include <stddef.h>

struct strv {
	char **v; /* NULL-terminated once anything was added */
	size_t n;
	int failed; /* sticky -ENOMEM, so builders can check once at the end */
};

/* Append a copy of s / a formatted string. Failures are sticky in sv->failed. */
void strv_add(struct strv *sv, const char *s);
void strv_addf(struct strv *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Free every string and the vector. */
void strv_release(struct strv *sv);
/* Free a NULL-terminated vector of malloc'ed strings (NULL is fine). */
void strv_free(char **v);
/* Join with spaces into a new string (for logs; no quoting). */
char *strv_join(char *const *v, const char *sep);

#endif
