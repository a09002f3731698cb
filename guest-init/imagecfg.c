/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "imagecfg.h"

#include <errno.h>
#include <string.h>

struct image_cfg imagecfg;

static bool name_char(char ch, bool first)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
	       (!first && ch >= '0' && ch <= '9');
}

bool imagecfg_env_entry_ok(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && s[i] != '=' && name_char(s[i], i == 0))
		i++;
	if (i == 0 || i == len || s[i] != '=')
		return false;
	/* A NUL inside would silently cut the value. */
	return memchr(s, '\0', len) == NULL;
}

/* The index of env entry with s's key, or c->n_env. */
static size_t env_find(const struct image_cfg *c, const char *s)
{
	size_t kl = strcspn(s, "=") + 1;

	for (size_t i = 0; i < c->n_env; i++)
		if (strncmp(c->env[i], s, kl) == 0)
			return i;
	return c->n_env;
}

int imagecfg_parse_env(struct image_cfg *c, const char *data, size_t len)
{
	char *line, *next;

	c->n_env = 0;
	if (len > IMAGECFG_FILE_MAX)
		return -E2BIG;
	memcpy(c->text, data, len);
	c->text[len] = '\0';
	for (line = c->text; line < c->text + len; line = next) {
		char *nl = memchr(line, '\n', (size_t)(c->text + len - line));
		size_t ll = nl ? (size_t)(nl - line) : (size_t)(c->text + len - line);
		size_t at;

		next = line + ll + 1;
		line[ll] = '\0';
		if (ll == 0)
			continue;
		if (!imagecfg_env_entry_ok(line, ll)) {
			c->rejected++;
			continue;
		}
		at = env_find(c, line);
		if (at == c->n_env) {
			if (c->n_env == IMAGECFG_ENV_MAX) {
				c->rejected++;
				continue;
			}
			c->n_env++;
		}
		c->env[at] = line;
	}
	return 0;
}

/* A decimal id below 2^32 - 1 (-1 is "no id" to the kernel). */
static bool parse_id(const char *s, size_t len, uint32_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 10)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v >= UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool exec_line(struct image_cfg *c, const char *s, size_t len)
{
	const char *colon;

	if (len > 8 && memcmp(s, "workdir=", 8) == 0) {
		s += 8;
		len -= 8;
		if (s[0] != '/' || len > IMAGECFG_DIR_MAX || memchr(s, '\0', len))
			return false;
		memcpy(c->workdir, s, len);
		c->workdir[len] = '\0';
		return true;
	}
	if (len > 5 && memcmp(s, "user=", 5) == 0) {
		uint32_t uid, gid;

		s += 5;
		len -= 5;
		colon = memchr(s, ':', len);
		if (!colon || !parse_id(s, (size_t)(colon - s), &uid) ||
		    !parse_id(colon + 1, len - (size_t)(colon - s) - 1, &gid))
			return false;
		c->uid = uid;
		c->gid = gid;
		c->has_user = true;
		return true;
	}
	return false;
}

int imagecfg_parse_exec(struct image_cfg *c, const char *data, size_t len)
{
	const char *line = data, *end = data + len;

	c->workdir[0] = '\0';
	c->has_user = false;
	if (len > IMAGECFG_FILE_MAX)
		return -E2BIG;
	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		size_t ll = nl ? (size_t)(nl - line) : (size_t)(end - line);

		if (ll && !exec_line(c, line, ll))
			c->rejected++;
		line += ll + 1;
	}
	return 0;
}
