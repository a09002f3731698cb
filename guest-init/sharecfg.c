/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sharecfg.h"

#include <errno.h>
#include <string.h>

static int parse_word(const char *w, size_t len, struct share_cfg *cfg, const char **why)
{
	static const char key[] = "agentvm.share=";
	const size_t klen = sizeof(key) - 1, plen = sizeof(SHARECFG_TAG_PREFIX) - 1;
	const char *v = w + klen, *end = w + len, *dir, *mode;
	struct share_ent *e;

	if (len < klen || memcmp(w, key, klen) != 0)
		return 0; /* not ours */
	if ((size_t)(end - v) < plen + 2 || memcmp(v, SHARECFG_TAG_PREFIX, plen) != 0 ||
	    v[plen] < '0' || v[plen] > '7' || v[plen + 1] != ':') {
		*why = "agentvm.share needs avm-share<0-7>:DIR:rw|ro";
		return -EINVAL;
	}
	dir = v + plen + 2;
	if (end - dir < 3 || (memcmp(end - 3, ":rw", 3) != 0 && memcmp(end - 3, ":ro", 3) != 0)) {
		*why = "agentvm.share must end in :rw or :ro";
		return -EINVAL;
	}
	mode = end - 2;
	if (!diskcfg_dir_ok(dir, (size_t)(mode - 1 - dir))) {
		*why = "agentvm.share: the directory is not an absolute, canonical, non-system path";
		return -EINVAL;
	}
	if (cfg->n >= SHARECFG_MAX) {
		*why = "more agentvm.share words than shares a VM can have";
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n; i++) {
		const struct share_ent *o = &cfg->share[i];
		if (o->tag[plen] == v[plen] ||
		    (strlen(o->dir) == (size_t)(mode - 1 - dir) &&
		     memcmp(o->dir, dir, (size_t)(mode - 1 - dir)) == 0)) {
			*why = "agentvm.share repeats a tag or a directory";
			return -EINVAL;
		}
	}
	e = &cfg->share[cfg->n++];
	memcpy(e->tag, v, plen + 1);
	e->tag[plen + 1] = '\0';
	memcpy(e->dir, dir, (size_t)(mode - 1 - dir));
	e->dir[mode - 1 - dir] = '\0';
	e->readonly = mode[1] == 'o';
	return 1;
}

int sharecfg_parse_cmdline(const char *cmdline, struct share_cfg *cfg, const char **why)
{
	const char *p = cmdline, *first_why = NULL;

	memset(cfg, 0, sizeof(*cfg));
	while (*p) {
		size_t len;

		p += strspn(p, " \t\n");
		len = strcspn(p, " \t\n");
		if (len == 0)
			break;
		if (parse_word(p, len, cfg, why) < 0) {
			if (!first_why)
				first_why = *why;
			cfg->rejected++;
		}
		p += len;
	}
	if (cfg->rejected) {
		*why = first_why;
		return -EINVAL;
	}
	return 0;
}
