/* SPDX-License-Identifier: MIT */
/*
 * The public API (src/include/agentvm.h): thin wrappers over the modules, which the CLI uses
 * the same way. Only what this file defines with AGENTVM_EXPORT leaves libagentvm.so.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "include/agentvm.h"

#include "net/net_admin.h"
#include "pool/pool.h"
#include "snapshot/restore_vms.h"
#include "snapshot/snapshot_save.h"
#include "spec/spec.h"
#include "state/statedir.h"
#include "base/strv.h"
#include "base/util.h"
#include "vm/vm.h"
#include "control/vm_start.h"
#include "control/vmctl.h"
#include "state/vmstate.h"

_Static_assert((int)AGENTVM_ERR_INTERRUPTED == (int)AVM_ERR_INTERRUPTED &&
		       (int)AGENTVM_ERR_USAGE == (int)AVM_ERR_USAGE &&
		       (int)AGENTVM_ERR_OUTPUT == (int)AVM_ERR_OUTPUT,
	       "agentvm_error_kind mirrors avm_error_kind");

struct agentvm_error {
	struct avm_error e;
};

struct agentvm_ctx {
	int unused; /* the directories live in the environment (agentvm.h: process-wide) */
};

struct agentvm_spec {
	struct vm_spec *s;
	long boot_timeout_s;
	bool cold;
};

/* The internal error object inside a public one (NULL stays NULL). */
static struct avm_error *E(struct agentvm_error *err)
{
	return err ? &err->e : NULL;
}

static int oom(struct agentvm_error *err)
{
	return avm_error_kind(E(err), AVM_ERR_INTERNAL,
			      avm_error_set(E(err), -ENOMEM, "out of memory"));
}

AGENTVM_EXPORT struct agentvm_error *agentvm_error_new(void)
{
	return calloc(1, sizeof(struct agentvm_error));
}

AGENTVM_EXPORT void agentvm_error_free(struct agentvm_error *err)
{
	free(err);
}

AGENTVM_EXPORT int agentvm_error_code(const struct agentvm_error *err)
{
	return err ? err->e.code : 0;
}

AGENTVM_EXPORT enum agentvm_error_kind agentvm_error_kind(const struct agentvm_error *err)
{
	return err ? (enum agentvm_error_kind)err->e.kind : AGENTVM_ERR_ERRNO;
}

AGENTVM_EXPORT const char *agentvm_error_message(const struct agentvm_error *err)
{
	return err ? err->e.msg : "";
}

AGENTVM_EXPORT void agentvm_set_log(agentvm_log_fn fn, void *userdata)
{
	avm_log_set(fn, userdata);
}

AGENTVM_EXPORT void agentvm_strv_free(char **v)
{
	strv_free(v);
}

/* ---- context ---- */

AGENTVM_EXPORT int agentvm_ctx_new(struct agentvm_ctx **out, struct agentvm_error *err)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : oom(err);
}

AGENTVM_EXPORT void agentvm_ctx_free(struct agentvm_ctx *ctx)
{
	free(ctx);
}

static int set_dir(const char *env, const char *dir, struct agentvm_error *err)
{
	if (!dir || dir[0] != '/')
		return avm_error_kind(E(err), AVM_ERR_USAGE,
				      avm_error_set(E(err), -EINVAL,
						    "%s must be an absolute path, not '%s'", env,
						    dir ? dir : "(null)"));
	if (setenv(env, dir, 1) < 0)
		return oom(err);
	return 0;
}

AGENTVM_EXPORT int agentvm_ctx_set_state_dir(struct agentvm_ctx *ctx, const char *dir,
					     struct agentvm_error *err)
{
	return set_dir("AGENTVM_STATE_DIR", dir, err);
}

AGENTVM_EXPORT int agentvm_ctx_set_cache_dir(struct agentvm_ctx *ctx, const char *dir,
					     struct agentvm_error *err)
{
	return set_dir("AGENTVM_CACHE_DIR", dir, err);
}

AGENTVM_EXPORT int agentvm_ctx_set_snapshot_dir(struct agentvm_ctx *ctx, const char *dir,
						struct agentvm_error *err)
{
	return set_dir("AGENTVM_SNAPSHOT_DIR", dir, err);
}

AGENTVM_EXPORT int agentvm_ctx_set_images_dir(struct agentvm_ctx *ctx, const char *dir,
					      struct agentvm_error *err)
{
	return set_dir("AGENTVM_IMAGES", dir, err);
}

/* ---- spec ---- */

AGENTVM_EXPORT int agentvm_spec_new(struct agentvm_spec **out, struct agentvm_error *err)
{
	struct agentvm_spec *s = calloc(1, sizeof(*s));

	if (!s || !(s->s = vm_spec_new())) {
		free(s);
		return oom(err);
	}
	s->boot_timeout_s = VM_BOOT_TIMEOUT_DEFAULT_S;
	*out = s;
	return 0;
}

AGENTVM_EXPORT void agentvm_spec_free(struct agentvm_spec *spec)
{
	if (!spec)
		return;
	vm_spec_free(spec->s);
	free(spec);
}

/* A setter's failure is the caller's: kind USAGE. */
static int usage(struct agentvm_error *err, int r)
{
	return r < 0 ? avm_error_kind(E(err), AVM_ERR_USAGE, r) : r;
}

AGENTVM_EXPORT int agentvm_spec_set_name(struct agentvm_spec *spec, const char *name,
					 struct agentvm_error *err)
{
	int r = statedir_validate_name(name, E(err));

	return usage(err, r < 0 ? r : vm_spec_set_path(&spec->s->name, "name", name, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_profile(struct agentvm_spec *spec, const char *profile,
					    struct agentvm_error *err)
{
	return usage(err, vm_spec_set_profile(spec->s, profile, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_cpus(struct agentvm_spec *spec, const char *cpus,
					 struct agentvm_error *err)
{
	return usage(err, vm_spec_set_cpus(spec->s, cpus, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_memory(struct agentvm_spec *spec, const char *mib,
					   struct agentvm_error *err)
{
	return usage(err, vm_spec_set_memory(spec->s, mib, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_accel(struct agentvm_spec *spec, const char *accel,
					  struct agentvm_error *err)
{
	return usage(err, vm_spec_set_accel(spec->s, accel, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_image(struct agentvm_spec *spec, const char *image,
					  struct agentvm_error *err)
{
	return usage(err, vm_spec_set_image(spec->s, image, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_kernel(struct agentvm_spec *spec, const char *path,
					   struct agentvm_error *err)
{
	return usage(err, vm_spec_set_path(&spec->s->kernel, "kernel", path, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_initrd(struct agentvm_spec *spec, const char *path,
					   struct agentvm_error *err)
{
	return usage(err, vm_spec_set_path(&spec->s->initrd, "initrd", path, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_network(struct agentvm_spec *spec, const char *mode,
					    struct agentvm_error *err)
{
	return usage(err, vm_spec_set_network(spec->s, mode, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_add_allow(struct agentvm_spec *spec, const char *proto_port,
					  struct agentvm_error *err)
{
	return usage(err, vm_spec_add_allow(spec->s, proto_port, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_add_disk(struct agentvm_spec *spec, const char *disk,
					 struct agentvm_error *err)
{
	return usage(err, vm_spec_add_disk(spec->s, disk, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_add_env(struct agentvm_spec *spec, const char *key_value,
					struct agentvm_error *err)
{
	return usage(err, vm_spec_add_env(spec->s, key_value, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_workdir(struct agentvm_spec *spec, const char *dir,
					    struct agentvm_error *err)
{
	return usage(err, vm_spec_set_workdir(spec->s, dir, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_timeout(struct agentvm_spec *spec, const char *seconds,
					    struct agentvm_error *err)
{
	return usage(err, vm_spec_set_timeout(spec->s, seconds, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_set_boot_timeout(struct agentvm_spec *spec, long seconds,
						 struct agentvm_error *err)
{
	if (seconds < 1 || seconds > 3600)
		return usage(err, avm_error_set(E(err), -EINVAL,
						"boot timeout %ld s is not from 1 to 3600", seconds));
	spec->boot_timeout_s = seconds;
	return 0;
}

AGENTVM_EXPORT void agentvm_spec_set_cold(struct agentvm_spec *spec, bool cold)
{
	spec->cold = cold;
}

/* ---- VMs ---- */

/* A finished command's exit status, as agentvm.h documents it. */
static int exit_status(const struct vm_exec_result *res)
{
	const struct avm_exit_info *x = &res->info;

	if (res->timed_out)
		return 124;
	switch (x->kind) {
	case AVM_EXIT_CODE:
		return x->code & 0xff;
	case AVM_EXIT_SIGNAL:
	case AVM_EXIT_OOM:
		return 128 + (x->code & 0x7f);
	case AVM_EXIT_START_FAILED:
		return x->code == ENOENT ? 127 : 126;
	default:
		return -1;
	}
}

static int exec_in(struct vm *vm, const char *const *argv, char *const *env, const char *cwd,
		   unsigned timeout_s, int in, int out, int errfd, int *status,
		   struct agentvm_error *err)
{
	struct vm_exec_request req = {
		.argv = (char *const *)argv, .env = env, .cwd = cwd, .timeout_s = timeout_s,
		.stdin_fd = in, .stdout_fd = out, .stderr_fd = errfd, .sig_fd = -1,
	};
	struct vm_exec_result res;
	int r;

	if (!argv || !argv[0])
		return usage(err, avm_error_set(E(err), -EINVAL, "no command to run"));
	if ((r = vm_exec_check(&req, E(err))) < 0)
		return usage(err, r);
	if ((r = vm_exec(vm, &req, &res, E(err))) < 0)
		return vm_exec_failed(r, &res, E(err));
	*status = exit_status(&res);
	if (*status < 0)
		return avm_error_kind(E(err), AVM_ERR_VM_LOST,
				      avm_error_set(E(err), -EPROTO,
						    "the guest reported an unknown exit kind %u",
						    res.info.kind));
	return 0;
}

AGENTVM_EXPORT int agentvm_run(struct agentvm_ctx *ctx, const struct agentvm_spec *spec,
			       const char *const *argv, int stdin_fd, int stdout_fd,
			       int stderr_fd, int *status, struct agentvm_error *err)
{
	struct vm *vm = NULL;
	int r;

	if ((r = vm_spec_validate(spec->s, false, E(err))) < 0)
		return usage(err, r);
	if ((r = vm_boot(spec->s, spec->boot_timeout_s, spec->cold, false, -1, &vm, E(err))) < 0)
		return r;
	r = exec_in(vm, argv, spec->s->env, spec->s->workdir, spec->s->timeout_s, stdin_fd,
		    stdout_fd, stderr_fd, status, err);
	vm_destroy(vm);
	return r;
}

AGENTVM_EXPORT int agentvm_start(struct agentvm_ctx *ctx, const struct agentvm_spec *spec,
				 char *name, size_t len, struct agentvm_error *err)
{
	struct vm_spec *s = spec->s; /* the generated name is taken back out below */
	bool named = s->name != NULL;
	int r;

	if ((r = vm_spec_validate(s, false, E(err))) < 0)
		return usage(err, r);
	r = vm_start_detached(s, spec->boot_timeout_s, spec->cold, E(err));
	if (r == 0 && name && snprintf(name, len, "%s", s->name) >= (int)len)
		r = usage(err, avm_error_set(E(err), -ENAMETOOLONG,
					     "VM '%s' started, but its name does not fit %zu bytes",
					     s->name, len));
	if (!named) {
		free(s->name);
		s->name = NULL;
	}
	return r;
}

AGENTVM_EXPORT int agentvm_exec(struct agentvm_ctx *ctx, const char *name,
				const char *const *argv, const char *const *env, const char *cwd,
				unsigned timeout_s, int stdin_fd, int stdout_fd, int stderr_fd,
				int *status, struct agentvm_error *err)
{
	struct vm *vm = NULL;
	int r = vm_connect(name, &vm, E(err));

	if (r < 0)
		return r;
	r = exec_in(vm, argv, (char *const *)env, cwd, timeout_s, stdin_fd, stdout_fd, stderr_fd,
		    status, err);
	vm_destroy(vm);
	return r;
}

AGENTVM_EXPORT int agentvm_pause(struct agentvm_ctx *ctx, const char *name,
				 struct agentvm_error *err)
{
	return vm_pause(name, true, E(err));
}

AGENTVM_EXPORT int agentvm_resume(struct agentvm_ctx *ctx, const char *name,
				  struct agentvm_error *err)
{
	return vm_pause(name, false, E(err));
}

AGENTVM_EXPORT int agentvm_stop(struct agentvm_ctx *ctx, const char *name, long grace_s,
				struct agentvm_error *err)
{
	return vm_stop(name, grace_s * 1000, E(err));
}

AGENTVM_EXPORT int agentvm_kill(struct agentvm_ctx *ctx, const char *name,
				struct agentvm_error *err)
{
	return vm_kill(name, E(err));
}

AGENTVM_EXPORT int agentvm_rm(struct agentvm_ctx *ctx, const char *name, bool force,
			      struct agentvm_error *err)
{
	return vm_remove(name, force, E(err));
}

AGENTVM_EXPORT int agentvm_list(struct agentvm_ctx *ctx, char ***names, struct agentvm_error *err)
{
	int n = statedir_list(names);

	return n < 0 ? avm_error_setx(E(err), n, "cannot list %s", statedir_root()) : n;
}

AGENTVM_EXPORT int agentvm_state(struct agentvm_ctx *ctx, const char *name, char **state,
				 struct agentvm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	struct vm_state st;
	int r;

	if ((r = vm_open(name, &dir, NULL, E(err))) < 0)
		return r;
	if ((r = vmstate_read(dir, &st, E(err))) < 0)
		return usage(err, r);
	vmstate_effective(dir, &st);
	*state = strdup(vmstate_name(st.state));
	return *state ? 0 : oom(err);
}

/* ---- snapshots ---- */

AGENTVM_EXPORT int agentvm_snapshot_save(struct agentvm_ctx *ctx, const char *vm,
					 const char *snap, const char *description,
					 struct agentvm_error *err)
{
	return snap_save(vm, snap, description, -1, E(err));
}

AGENTVM_EXPORT int agentvm_snapshot_list(struct agentvm_ctx *ctx, char ***names,
					 struct agentvm_error *err)
{
	int n = snap_list(names);

	return n < 0 ? oom(err) : n;
}

AGENTVM_EXPORT int agentvm_snapshot_rm(struct agentvm_ctx *ctx, const char *snap, bool force,
				       struct agentvm_error *err)
{
	return snap_remove(snap, force, E(err));
}

AGENTVM_EXPORT int agentvm_restore(struct agentvm_ctx *ctx, const char *snap, const char *name,
				   char *name_out, size_t len, struct agentvm_error *err)
{
	char names[1][STATEDIR_MAX_NAME + 1];
	struct restore rs;
	int r;

	if (name && snprintf(names[0], sizeof(names[0]), "%s", name) >= (int)sizeof(names[0]))
		return usage(err, avm_error_set(E(err), -ENAMETOOLONG, "VM name '%s' is too long",
						name));
	if (!name)
		statedir_random_name(names[0], sizeof(names[0]));
	if ((r = statedir_validate_name(names[0], E(err))) < 0)
		return usage(err, r);
	if ((r = restore_open(snap, &rs, E(err))) < 0)
		return r;
	r = restore_vms(&rs, names, 1, VM_BOOT_TIMEOUT_DEFAULT_S, -1, NULL, E(err));
	restore_release(&rs);
	if (r == 0 && name_out && snprintf(name_out, len, "%s", names[0]) >= (int)len)
		r = usage(err, avm_error_set(E(err), -ENAMETOOLONG,
					     "VM '%s' restored, but its name does not fit %zu bytes",
					     names[0], len));
	return r;
}

AGENTVM_EXPORT int agentvm_reset(struct agentvm_ctx *ctx, const char *name,
				 struct agentvm_error *err)
{
	return restore_reset(name, VM_BOOT_TIMEOUT_DEFAULT_S, E(err));
}

/* ---- pool ---- */

AGENTVM_EXPORT int agentvm_pool_acquire(struct agentvm_ctx *ctx, long timeout_s, char *name,
					size_t len, struct agentvm_error *err)
{
	return pool_acquire(timeout_s, name, len, E(err));
}

AGENTVM_EXPORT int agentvm_pool_release(struct agentvm_ctx *ctx, const char *name,
					struct agentvm_error *err)
{
	return pool_release(name, E(err));
}

/* ---- network ---- */

AGENTVM_EXPORT int agentvm_net_list_json(struct agentvm_ctx *ctx, char **json,
					 struct agentvm_error *err)
{
	_cleanup_json_ struct json_object *arr = net_vm_list_json();

	*json = arr ? strdup(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN |
									 JSON_C_TO_STRING_NOSLASHESCAPE))
		    : NULL;
	return *json ? 0 : oom(err);
}

AGENTVM_EXPORT int agentvm_net_gc(struct agentvm_ctx *ctx, struct agentvm_error *err)
{
	struct strv report = { 0 };
	int r = net_gc(&report, E(err));

	strv_release(&report);
	return r;
}
