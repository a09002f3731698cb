/* SPDX-License-Identifier: MIT */
/* restore and reset on top of restore.h (restore_vms.h). */
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "snapshot/restore_vms.h"
#include "snapshot/snapshot.h"
#include "base/util.h"
#include "control/vmctl.h"

static bool got_stop(int cancel_fd)
{
	struct pollfd p = { .fd = cancel_fd, .events = POLLIN };

	return cancel_fd >= 0 && poll(&p, 1, 0) > 0;
}

int restore_open(const char *snap, struct restore *rs, struct avm_error *err)
{
	int r = restore_prepare(snap, rs, err);
	enum avm_error_kind k;

	if (r == 0)
		return 0;
	switch (r) {
	case -ENOENT:
	case -EINVAL:
		k = AVM_ERR_USAGE; /* no such snapshot, a bad name */
		break;
	case -EBADMSG:
	case -ESTALE:
	case -EPROTO:
	case -EOPNOTSUPP:
		k = AVM_ERR_STATE; /* damaged, or its inputs changed */
		break;
	case -ECHILD:
	case -ETIMEDOUT:
	case -EIO:
		k = AVM_ERR_BOOT; /* the template build's VM failed */
		break;
	default:
		k = AVM_ERR_HOST;
	}
	return avm_error_kind(err, k, r);
}

/* A restore_one failure: a taken or bad name is the caller's, the rest a failed boot. */
static int one_kind(struct avm_error *err, int r)
{
	return avm_error_kind(err, r == -EEXIST || r == -EINVAL ? AVM_ERR_USAGE : AVM_ERR_BOOT, r);
}

int restore_vms(const struct restore *rs, char (*names)[STATEDIR_MAX_NAME + 1], size_t count,
		long boot_timeout_s, int cancel_fd, struct avm_error *errs, struct avm_error *err)
{
	struct avm_error *shared;
	pid_t *pids;
	bool failed = false;
	int r = 0;

	if (count == 1) {
		r = restore_one(rs, names[0], boot_timeout_s, err);
		if (got_stop(cancel_fd)) {
			if (r == 0)
				vm_remove(names[0], true, NULL);
			return avm_error_kind(err, AVM_ERR_INTERRUPTED,
					      avm_error_set(err, -EINTR,
							    "interrupted; no VM was restored from "
							    "'%s'",
							    rs->meta.name));
		}
		if (r < 0 && errs)
			errs[0] = *err;
		return r < 0 ? one_kind(err, r) : 0;
	}
	/* Several: one child each, concurrently; their errors come back through shared memory. */
	shared = mmap(NULL, count * sizeof(*shared), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pids = calloc(count, sizeof(*pids));
	if (shared == MAP_FAILED || !pids) {
		free(pids);
		if (shared != MAP_FAILED)
			munmap(shared, count * sizeof(*shared));
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	memset(shared, 0, count * sizeof(*shared));
	fflush(NULL);
	for (size_t i = 0; i < count; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			if (cancel_fd >= 0)
				close(cancel_fd);
			int cr = restore_one(rs, names[i], boot_timeout_s, &shared[i]);
			if (cr < 0)
				one_kind(&shared[i], cr);
			_exit(cr < 0 ? 1 : 0);
		}
	}
	for (size_t i = 0; i < count; i++) {
		int st = 0;
		if (pids[i] < 0 || waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) ||
		    WEXITSTATUS(st) != 0) {
			if (!shared[i].code)
				avm_error_kind(&shared[i], AVM_ERR_INTERNAL,
					       avm_error_set(&shared[i], -ECHILD,
							     "the restore died"));
			if (!failed)
				*err = shared[i];
			failed = true;
			pids[i] = -1;
		}
		if (errs)
			errs[i] = shared[i];
	}
	if (got_stop(cancel_fd)) {
		for (size_t i = 0; i < count; i++)
			if (pids[i] > 0) /* started it (a failed one may have met another's VM) */
				vm_remove(names[i], true, NULL);
		r = avm_error_kind(err, AVM_ERR_INTERRUPTED,
				   avm_error_set(err, -EINTR,
						 "interrupted; none of the %zu VMs restored from '%s' "
						 "was kept",
						 count, rs->meta.name));
	} else if (failed) {
		for (size_t i = 0; i < count; i++)
			if (pids[i] > 0)
				vm_remove(names[i], true, NULL);
		r = err->code;
	}
	munmap(shared, count * sizeof(*shared));
	free(pids);
	return r;
}

static bool has_file(const char *dir, const char *file)
{
	char path[PATH_MAX];

	return statedir_file(path, sizeof(path), dir, file) == 0 && access(path, F_OK) == 0;
}

static void mark(const char *dir, const char *file)
{
	char path[PATH_MAX];

	if (statedir_file(path, sizeof(path), dir, file) == 0)
		write_file_atomic(path, "", 0);
}

int restore_reset(const char *name, long boot_timeout_s, struct avm_error *err)
{
	struct restore rs;
	_cleanup_free_ char *dir = NULL, *snap = NULL;
	char path[PATH_MAX];
	int r;

	if ((r = statedir_find(name, &dir, err)) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE, r);
	statedir_file(path, sizeof(path), dir, RESTORE_ORIGIN_FILE);
	if (read_file(path, &snap, 4096) < 0)
		return avm_error_kind(err, AVM_ERR_STATE,
				      avm_error_set(err, -ENOENT,
						    "VM '%s' was not restored from a snapshot, so "
						    "there is nothing to reset it to; use 'agentvm "
						    "restore SNAPSHOT --name %s'",
						    name, name));
	/*
	 * A pool VM nobody acquired is serve's: its supervisor watches serve and goes with it; a
	 * reset one would not (and serve would count it twice). Acquire it first.
	 */
	bool pooled = has_file(dir, STATEDIR_POOL_VM), acquired = has_file(dir, STATEDIR_POOL_ACQUIRED);
	if (pooled && !acquired)
		return avm_error_kind(err, AVM_ERR_STATE,
				      avm_error_set(err, -EBUSY,
						    "VM '%s' belongs to the warm pool and is not "
						    "acquired; reset only VMs you acquired ('agentvm "
						    "pool acquire')",
						    name));
	/* Check the snapshot before destroying anything. */
	if ((r = restore_prepare(snap, &rs, err)) < 0)
		return avm_error_kind(err, AVM_ERR_STATE,
				      avm_error_wrap(err, "cannot reset VM '%s'", name));
	/* The same network policy as now (restore may have been given flags). */
	struct vm_spec *ov = vm_spec_new();
	_cleanup_json_ struct json_object *spec = NULL;
	vm_spec_read(dir, &spec, NULL);
	if (ov && spec && vm_spec_net_from_json(ov, spec) == 0) {
		rs.net_override = ov;
		rs.net_mode_given = rs.policy_given = true;
	}
	vm_remove(name, true, NULL);
	r = restore_one(&rs, name, boot_timeout_s, err);
	restore_release(&rs);
	vm_spec_free(ov);
	if (r < 0)
		return one_kind(err, avm_error_wrap(err, "cannot reset VM '%s' (it is gone now)",
						    name));
	/* A pool VM stays one, acquired or not, for the next serve to count or remove (pool.h). */
	_cleanup_free_ char *ndir = NULL;
	if (statedir_find(name, &ndir, NULL) == 0) {
		if (acquired)
			mark(ndir, STATEDIR_POOL_ACQUIRED);
		if (pooled)
			mark(ndir, STATEDIR_POOL_VM);
	}
	return 0;
}
