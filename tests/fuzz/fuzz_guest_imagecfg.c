/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the guest's parser of a root image's /etc/agentvm/env and /etc/agentvm/exec
 * (an image is the user's; what it holds must never crash PID 1). The first byte picks the
 * file. Invariants: no crash; every env entry is a valid KEY=VALUE with no key twice and at most
 * IMAGECFG_ENV_MAX of them; a workdir is absolute; ids are never -1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guest-init/imagecfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct image_cfg c;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	memset(&c, 0, sizeof(c));
	if (data[0] & 1) {
		if (imagecfg_parse_exec(&c, (const char *)data + 1, size - 1) < 0)
			return size - 1 > IMAGECFG_FILE_MAX ? 0 : (abort(), 0);
		if (c.workdir[0] && c.workdir[0] != '/')
			abort();
		if (c.has_user && (c.uid == UINT32_MAX || c.gid == UINT32_MAX))
			abort();
		return 0;
	}
	if (imagecfg_parse_env(&c, (const char *)data + 1, size - 1) < 0)
		return size - 1 > IMAGECFG_FILE_MAX ? 0 : (abort(), 0);
	if (c.n_env > IMAGECFG_ENV_MAX)
		abort();
	for (size_t i = 0; i < c.n_env; i++) {
		size_t kl = strcspn(c.env[i], "=");

		if (!imagecfg_env_entry_ok(c.env[i], strlen(c.env[i])))
			abort();
		for (size_t j = 0; j < i; j++)
			if (strncmp(c.env[i], c.env[j], kl + 1) == 0)
				abort();
	}
	return 0;
}
