/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the guest's tar reader (what `agentvm cp` into a VM and `cp -` feed the
 * agent's tar-in). Invariants: no crash, no read past the input; every entry has a NUL-
 * terminated non-empty path shorter than TAR_PATH_MAX; data reads never return more than the
 * entry's size; an error always says why; tar_path_split never yields "..", "." or "".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "guest-init/tar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem {
	const uint8_t *p;
	size_t len, off;
};

static ssize_t mem_read(void *ctx, void *buf, size_t n)
{
	struct mem *m = ctx;
	/* Short reads on purpose: the reader must cope with any split. */
	size_t k = m->len - m->off < n ? m->len - m->off : n;

	if (k > 700)
		k = 700;
	memcpy(buf, m->p + m->off, k);
	m->off += k;
	return (ssize_t)k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tar_entry e;
	static char buf[TAR_PATH_MAX];
	const char *comps[TAR_MAX_DEPTH];
	struct mem m = { data, size, 0 };
	struct tar_reader r;
	const char *why = NULL;
	uint8_t chunk[1000];
	int x;

	tar_reader_init(&r, mem_read, &m);
	while ((x = tar_next(&r, &e, &why)) > 0) {
		size_t pl = strnlen(e.path, sizeof(e.path));
		uint64_t got = 0;
		ssize_t k;

		if (pl == 0 || pl >= sizeof(e.path) || strnlen(e.link, sizeof(e.link)) >= sizeof(e.link))
			abort();
		int n = tar_path_split(e.path, buf, comps);
		for (int i = 0; i < n; i++)
			if (!comps[i][0] || !strcmp(comps[i], "..") || !strcmp(comps[i], ".") ||
			    strchr(comps[i], '/'))
				abort();
		while ((k = tar_read_data(&r, chunk, sizeof(chunk), &why)) > 0)
			got += (uint64_t)k;
		if (k < 0 && !why)
			abort();
		if (got > e.size || (k == 0 && got != e.size))
			abort();
		if (k < 0)
			break;
	}
	if (x < 0 && !why)
		abort();
	if (m.off > size)
		abort();
	return 0;
}
