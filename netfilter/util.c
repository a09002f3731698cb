// SPDX-License-Identifier: MIT
/* util.c - error filling (the one-line rule on top of avm_error_vset) and the input checks every part of netfilter/ shares. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "nf_internal.h"

int nf_set_error(struct avm_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	char *nl;

	if (!err)
		return code;
	va_start(ap, fmt);
	avm_error_vset(err, code, fmt, ap);
	va_end(ap);
	/* One line, always: foreign text (nft errors) may carry newlines. */
	while ((nl = strchr(err->msg, '\n')))
		*nl = ' ';
	return code;
}

/*
 * Tap names end up unquoted in chain and counter names, so they are restricted to what nft accepts
 * in an identifier, and to IFNAMSIZ - 1 = 15 bytes.
 */
int nf_check_tap_name(const char *tap, struct avm_error *err)
{
	size_t n, plen = strlen(NF_TAP_PREFIX);

	if (!tap || strncmp(tap, NF_TAP_PREFIX, plen) != 0)
		return nf_set_error(err, -EINVAL, "tap name '%s' must start with '%s'",
				    tap ? tap : "(null)", NF_TAP_PREFIX);
	n = strlen(tap + plen);
	if (n < 1 || n > 15 - plen)
		return nf_set_error(err, -EINVAL, "tap name '%s' must have 1 to %zu characters after '%s'",
				    tap, 15 - plen, NF_TAP_PREFIX);
	for (const char *c = tap + plen; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_'))
			return nf_set_error(err, -EINVAL,
					    "tap name '%s': only letters, digits and '_' after '%s'",
					    tap, NF_TAP_PREFIX);
	return 0;
}

/* Owners become file contents and the log prefix (inside double quotes): no quotes, no spaces. */
int nf_check_owner(const char *owner, struct avm_error *err)
{
	size_t n = owner ? strlen(owner) : 0;

	if (n < 1 || n > NF_OWNER_MAX)
		return nf_set_error(err, -EINVAL, "VM name must have 1 to %d characters",
				    NF_OWNER_MAX);
	if (owner[0] == '.')
		return nf_set_error(err, -EINVAL, "VM name '%s' must not start with '.'", owner);
	for (const char *c = owner; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.'))
			return nf_set_error(err, -EINVAL,
					    "VM name '%s': only letters, digits, '.', '_' and '-'",
					    owner);
	return 0;
}
