/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the guest's agentvm.disk cmdline parser. The bytes, NUL-terminated, stand in
 * for /proc/cmdline. Invariants: no crash; every refusal says why and points at a word of the
 * line; at most DISKCFG_MAX disks, each with a valid serial, an acceptable directory (checked
 * again on its own) and no serial or directory twice; a root serial that no disk shares.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guest-init/diskcfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_cfg(const struct disk_cfg *c, const char *line, size_t size)
{
	if (c->n > DISKCFG_MAX)
		abort();
	for (size_t i = 0; i < c->n; i++) {
		const struct disk_ent *e = &c->disk[i];

		if (strlen(e->serial) != DISKCFG_SERIAL_LEN ||
		    strncmp(e->serial, DISKCFG_SERIAL_PREFIX, 8) != 0 || e->serial[8] < '0' ||
		    e->serial[8] > '7')
			abort();
		if (strnlen(e->dir, sizeof(e->dir)) == sizeof(e->dir) ||
		    !diskcfg_dir_ok(e->dir, strlen(e->dir)) || strcmp(e->dir, "/") == 0)
			abort();
		for (size_t j = 0; j < i; j++)
			if (strcmp(e->serial, c->disk[j].serial) == 0 ||
			    strcmp(e->dir, c->disk[j].dir) == 0)
				abort();
	}
	if (c->rejected && (!c->bad || c->bad < line || c->bad_len <= 0 ||
			    c->bad + c->bad_len > line + size ||
			    (strncmp(c->bad, "agentvm.disk", 12) != 0 &&
			     strncmp(c->bad, "agentvm.root=", 13) != 0)))
		abort();
	/* The root image: none, or a valid serial that no workspace disk also has. */
	if (c->root[0]) {
		if (strlen(c->root) != DISKCFG_SERIAL_LEN ||
		    strncmp(c->root, DISKCFG_SERIAL_PREFIX, 8) != 0 || c->root[8] < '0' ||
		    c->root[8] > '7')
			abort();
		for (size_t i = 0; i < c->n; i++)
			if (strcmp(c->root, c->disk[i].serial) == 0)
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct disk_cfg c;
	const char *why = NULL;
	char *line;
	int r;

	/* /proc/cmdline is at most a few KiB of text: the NUL-terminated bytes stand in for it. */
	line = malloc(size + 1);
	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	r = diskcfg_parse_cmdline(line, &c, &why);
	if ((r < 0) != (c.rejected > 0) || (r < 0 && !why))
		abort();
	check_cfg(&c, line, size);
	free(line);
	return 0;
}
