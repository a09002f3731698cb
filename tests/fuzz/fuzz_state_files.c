/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the readers of the files in a state dir and a snapshot, which another local
 * user or a damaged disk may have written: state.json (vmstate_read), net.json (net_load),
 * meta.json (snap_meta_parse), the disks of spec.json (vm_spec_disks_from_json) and a boot
 * template's meta.json (boot_cache_list, which reads every template's). The first
 * byte picks the reader; the rest is the file. Invariants: no crash or leak; a refusal has a
 * message; what is accepted is within its bounds (a known state, an agentvm tap name
 * or none, at most VM_SPEC_MAX_DISKS disks).
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm/boot_cache.h"
#include "net/net.h"
#include "snapshot/snapshot.h"
#include "spec/spec.h"
#include "state/vmstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void put(const char *file, const uint8_t *p, size_t n)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		abort();
	if (n && write(fd, p, n) != (ssize_t)n)
		abort();
	close(fd);
}

static void cleanup(void)
{
	char path[128];

	for (const char *const *f = (const char *const[]){ "state.json", "state.json.spare",
							   "net.json", "templates/0123456789abcdef/meta.json",
							   "templates/0123456789abcdef", "templates", NULL };
	     *f; f++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *f);
		unlink(path);
		rmdir(path);
	}
	rmdir(dir);
}

static void check_err(int r, const struct avm_error *err)
{
	if (r < 0 && !err->msg[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct avm_error err = { 0 };
	int r;

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/avm-fuzz-state.%d", (int)getpid());
		if (mkdir(dir, 0700) < 0)
			abort();
		atexit(cleanup);
	}
	if (size < 1)
		return 0;
	uint8_t which = data[0] % 5;
	data++;
	size--;
	if (which == 0) {
		struct vm_state st;
		put("state.json", data, size);
		r = vmstate_read(dir, &st, &err);
		check_err(r, &err);
		if (r == 0 && ((unsigned)st.state > VMS_CRASHED ||
			       strnlen(st.error, sizeof(st.error)) == sizeof(st.error)))
			abort();
		if (r == 0)
			vmstate_effective(dir, &st);
	} else if (which == 1) {
		struct vm_net n;
		put("net.json", data, size);
		r = net_load(&n, dir, &err);
		if (r < 0 && r != -ENOENT)
			check_err(r, &err);
		if (r == 0 && n.tap[0] && !net_tap_name_is_ours(n.tap))
			abort();
	} else if (which == 4) {
		struct boot_cache_entry *v;
		size_t n;
		char p[128];
		setenv("AGENTVM_CACHE_DIR", dir, 1);
		snprintf(p, sizeof(p), "%s/templates/0123456789abcdef", dir);
		mkdir(boot_cache_dir(), 0700);
		mkdir(p, 0700);
		put("templates/0123456789abcdef/meta.json", data, size);
		r = boot_cache_list(&v, &n, &err);
		check_err(r, &err);
		if (r == 0 && (n != 1 || strnlen(v[0].summary, sizeof(v[0].summary)) ==
						  sizeof(v[0].summary)))
			abort();
		if (r == 0)
			free(v);
	} else {
		char *text = malloc(size + 1);
		if (!text)
			return 0;
		memcpy(text, data, size);
		text[size] = '\0';
		if (which == 2) {
			struct snap_meta m;
			r = snap_meta_parse(text, &m, &err);
			check_err(r, &err);
			if (r == 0) {
				if (m.n_disks > VM_SPEC_MAX_DISKS)
					abort();
				snap_meta_release(&m);
			}
		} else {
			struct json_object *o = json_tokener_parse(text);
			struct vm_spec *s = vm_spec_new();
			if (o && s && json_object_is_type(o, json_type_object)) {
				r = vm_spec_disks_from_json(s, o, &err);
				check_err(r, &err);
				if (r == 0 && s->n_disks > VM_SPEC_MAX_DISKS)
					abort();
			}
			vm_spec_free(s);
			json_object_put(o);
		}
		free(text);
	}
	return 0;
}
