/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the containerd shim's saved pod state (<state dir>/.pod-<vm>.json, podstate.h),
 * which a damaged disk or another local writer may have changed before a new shim process reads
 * it back. The input goes through the bounded reader (as a file of ours) and the parser.
 * Invariants: no crash or leak; a refusal has a reason; what is accepted is within its bounds (a
 * shim VM name, containers in distinct slots with valid ids and absolute paths, processes of
 * those containers only, a running one with a helper pid, an unstarted exec with its command).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim/podstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void check(const struct pod_state *s)
{
	if (strncmp(s->vm, "ctr-", 4) || strlen(s->vm) != 20 || s->n_ctrs > SHIM_MAX_CTRS ||
	    s->n_procs > SHIM_MAX_PROCS || (s->netns[0] && s->netns[0] != '/'))
		abort();
	for (size_t i = 0; i < s->n_ctrs; i++) {
		const struct pod_state_ctr *c = &s->ctrs[i];
		if (c->i < 0 || c->i >= SHIM_MAX_CTRS || !shim_id_ok(c->id) || c->bundle[0] != '/' ||
		    c->rootfs[0] != '/' || strlen(c->rootfs) >= SHIM_PATH_MAX)
			abort();
		for (size_t k = 0; k < i; k++)
			if (s->ctrs[k].i == c->i)
				abort();
	}
	for (size_t i = 0; i < s->n_procs; i++) {
		const struct pod_state_proc *p = &s->procs[i];
		bool known = false;
		for (size_t k = 0; k < s->n_ctrs; k++)
			known |= s->ctrs[k].i == p->c;
		if (!known || p->status < ST_CREATED || p->status > ST_STOPPED ||
		    p->exit_status > 255 || (p->status == ST_RUNNING && p->pid <= 0) ||
		    (p->exec_id && !shim_id_ok(p->exec_id)) ||
		    (p->has_spec && (!p->spec.argv || !p->spec.argv[0])) ||
		    (p->exec_id && p->status == ST_CREATED && !p->has_spec))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pod_state *s = calloc(1, sizeof(*s));
	const char *why = NULL;
	char *buf = NULL;
	size_t len = 0;
	int fd, r;

	if (!s)
		abort();
	if (!path[0])
		snprintf(path, sizeof(path), "/tmp/fuzz-podstate-%d.json", (int)getpid());
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	close(fd);
	r = shim_read_private(path, SHIM_POD_STATE_MAX_BYTES, &buf, &len, &why);
	unlink(path);
	if (r < 0 || len != size || memcmp(buf, data, size))
		abort(); /* our own small file is always read whole */
	r = shim_pod_state_parse(buf, len, s, &why);
	if (r < 0 && !why)
		abort();
	if (r == 0)
		check(s);
	shim_pod_state_release(s);
	free(s);
	free(buf);
	return 0;
}
