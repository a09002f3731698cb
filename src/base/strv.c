/* SPDX-License-Identifier: MIT */
#include "base/strv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void strv_take(struct strv *sv, char *s)
{
	char **nv;

	if (!s) {
		sv->failed = -ENOMEM;
		return;
	}
	nv = realloc(sv->v, (sv->n + 2) * sizeof(char *));
	if (!nv) {
		free(s);
		sv->failed = -ENOMEM;
		return;
	}
	nv[sv->n++] = s;
	nv[sv->n] = NULL;
	sv->v = nv;
}

void strv_add(struct strv *sv, const char *s)
{
	strv_take(sv, strdup(s));
}

void strv_addf(struct strv *sv, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	strv_take(sv, s);
}

void strv_release(struct strv *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	sv->v = NULL;
	sv->n = 0;
	sv->failed = 0;
}

char *strv_join(char *const *v, const char *sep)
{
	size_t len = 1, seplen = strlen(sep);
	char *out, *p;

	for (char *const *s = v; s && *s; s++)
		len += strlen(*s) + seplen;
	out = malloc(len);
	if (!out)
		return NULL;
	p = out;
	for (char *const *s = v; s && *s; s++) {
		size_t l = strlen(*s);
		if (s != v) {
			memcpy(p, sep, seplen);
			p += seplen;
		}
		memcpy(p, *s, l);
		p += l;
	}
	*p = '\0';
	return out;
}

void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}
