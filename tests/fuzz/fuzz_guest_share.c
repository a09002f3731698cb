/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the guest's agentvm.share cmdline parser. Invariants: no crash; at most
 * SHARECFG_MAX shares, each with a valid tag, an acceptable directory and no tag or directory
 * twice; a refusal always says why.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guest-init/sharecfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct share_cfg c;
	const char *why = NULL;
	char *line = malloc(size + 1);

	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	if (sharecfg_parse_cmdline(line, &c, &why) < 0 && (!why || !c.rejected))
		abort();
	if (c.n > SHARECFG_MAX)
		abort();
	for (size_t i = 0; i < c.n; i++) {
		const struct share_ent *e = &c.share[i];
		if (strlen(e->tag) != SHARECFG_TAG_LEN || strncmp(e->tag, "avm-share", 9) ||
		    e->tag[9] < '0' || e->tag[9] > '7' || !diskcfg_dir_ok(e->dir, strlen(e->dir)))
			abort();
		for (size_t j = 0; j < i; j++)
			if (!strcmp(e->tag, c.share[j].tag) || !strcmp(e->dir, c.share[j].dir))
				abort();
	}
	free(line);
	return 0;
}
