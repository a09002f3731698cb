/* SPDX-License-Identifier: MIT */
/*
 * The public API (src/include/agentvm.h): thin wrappers over the modules, which the CLI uses
 * the same way. Only what this file defines with AGENTVM_EXPORT leaves libagentvm.so.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "include/agentvm.h"

#include "net/net_admin.h"
#include "netfilter/nf.h"
#include "report/stats.h"
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
	/* The directories live in the environment (agentvm.h: process-wide). */
	int netns_fd; /* +1 (0: none): the VMs' network namespace (agentvm_ctx_set_netns) */
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

static int usage(struct agentvm_error *err, int r);

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
	if (ctx && ctx->netns_fd)
		close(ctx->netns_fd - 1);
	free(ctx);
}

AGENTVM_EXPORT int agentvm_ctx_get_state_dir(struct agentvm_ctx *ctx, char **dir,
					     struct agentvm_error *err)
{
	*dir = strdup(statedir_root());
	return *dir ? 0 : oom(err);
}

AGENTVM_EXPORT int agentvm_ctx_set_netns(struct agentvm_ctx *ctx, const char *path,
					 struct agentvm_error *err)
{
	int fd = -1;

	if (path && (path[0] != '/' || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0))
		return usage(err, avm_error_set(E(err), path[0] != '/' ? -EINVAL : -errno,
						"network namespace %s: %s", path,
						path[0] != '/' ? "not an absolute path"
							       : strerror(errno)));
	if (ctx->netns_fd)
		close(ctx->netns_fd - 1);
	ctx->netns_fd = fd + 1;
	return 0;
}

/*
 * Into the context's network namespace for one call (the calling thread: setns); *back is the
 * way out for netns_leave(). Nothing to do without one.
 */
static int netns_enter(const struct agentvm_ctx *ctx, int *back, struct agentvm_error *err)
{
	*back = -1;
	if (!ctx || !ctx->netns_fd)
		return 0;
	*back = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (*back < 0 || setns(ctx->netns_fd - 1, CLONE_NEWNET) < 0) {
		int r = -errno;
		if (*back >= 0)
			close(*back);
		*back = -1;
		return avm_error_kind(E(err), AVM_ERR_HOST,
				      avm_error_setx(E(err), r, "cannot enter the context's "
								"network namespace"));
	}
	return 0;
}

/* Back out; r (the call's result) stays unless the way back failed. */
static int netns_leave(int back, int r, struct agentvm_error *err)
{
	if (back < 0)
		return r;
	if (setns(back, CLONE_NEWNET) < 0 && r >= 0)
		r = avm_error_kind(E(err), AVM_ERR_INTERNAL,
				   avm_error_setx(E(err), -errno, "cannot return to the caller's "
								  "network namespace"));
	close(back);
	return r;
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

AGENTVM_EXPORT int agentvm_spec_add_allow_cidr(struct agentvm_spec *spec, const char *value,
					       struct agentvm_error *err)
{
	return usage(err, vm_spec_add_allow_cidr(spec->s, value, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_add_allow_domain(struct agentvm_spec *spec, const char *domain,
						 struct agentvm_error *err)
{
	return usage(err, vm_spec_add_allow_domain(spec->s, domain, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_add_share(struct agentvm_spec *spec, const char *value,
					  struct agentvm_error *err)
{
	return usage(err, vm_spec_add_share(spec->s, value, E(err)));
}

AGENTVM_EXPORT int agentvm_spec_add_root_share(struct agentvm_spec *spec, const char *value,
					       struct agentvm_error *err)
{
	int r = vm_spec_add_share(spec->s, value, E(err));

	if (r == 0)
		spec->s->shares[spec->s->n_shares - 1].container_root = true;
	return usage(err, r);
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
	int back, lease = -1, r;

	if ((r = vm_spec_validate(spec->s, false, E(err))) < 0)
		return usage(err, r);
	if ((r = netns_enter(ctx, &back, err)) < 0)
		return r;
	/* A run pool's VMs are in the host's network namespace: not for a context with its own. */
	r = pool_run_vm(spec->s, !ctx || !ctx->netns_fd, spec->boot_timeout_s, spec->cold, false,
			-1, &vm, &lease, E(err));
	if (r == 0) {
		r = exec_in(vm, argv, spec->s->env, spec->s->workdir, spec->s->timeout_s, stdin_fd,
			    stdout_fd, stderr_fd, status, err);
		vm_destroy(vm); /* (its network too: still inside the namespace) */
	}
	if (lease >= 0)
		close(lease); /* the pool removes its VM */
	return netns_leave(back, r, err);
}

AGENTVM_EXPORT int agentvm_start(struct agentvm_ctx *ctx, const struct agentvm_spec *spec,
				 char *name, size_t len, struct agentvm_error *err)
{
	struct vm_spec *s = spec->s; /* the generated name is taken back out below */
	bool named = s->name != NULL;
	int back, r;

	if ((r = vm_spec_validate(s, false, E(err))) < 0)
		return usage(err, r);
	if ((r = netns_enter(ctx, &back, err)) < 0)
		return r;
	/* The supervisor forked in here stays in the namespace: its teardown happens there. */
	r = netns_leave(back, vm_start_detached(s, spec->boot_timeout_s, spec->cold, E(err)), err);
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
	int back, r = netns_enter(ctx, &back, err);

	return r < 0 ? r : netns_leave(back, vm_remove(name, force, E(err)), err);
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

AGENTVM_EXPORT int agentvm_stats(struct agentvm_ctx *ctx, const char *name,
				 struct agentvm_stats *stats, struct agentvm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	struct nf_nft *nft = NULL;
	struct vm_sample s;
	struct agentvm_stats a = { .size = sizeof(a) };
	size_t n = stats->size < sizeof(a) ? stats->size : sizeof(a);
	int back, r;

	if (stats->size < offsetof(struct agentvm_stats, cpu_ns))
		return usage(err, avm_error_set(E(err), -EINVAL,
						"struct agentvm_stats: size %zu is too small",
						stats->size));
	if ((r = vm_open(name, &dir, NULL, E(err))) < 0)
		return r;
	/* The VM's counters are in the context's namespace: the nft socket is bound there. */
	if (netns_enter(ctx, &back, NULL) == 0) {
		nf_nft_new(&nft, NULL); /* without CAP_NET_ADMIN: no network numbers */
		netns_leave(back, 0, NULL);
	}
	r = stats_sample(name, dir, nft, true, 2000, &s);
	nf_nft_free(nft);
	if (r < 0)
		return avm_error_kind(E(err), AVM_ERR_STATE,
				      avm_error_setx(E(err), r, "cannot read the state of VM '%s'",
						     name));
	if (s.live)
		a = (struct agentvm_stats){
			.size = sizeof(a), .live = true, .cpu_ns = s.cpu_ns,
			.rss_bytes = s.rss_bytes, .pss_bytes = s.pss_bytes,
			.have_guest = s.have_guest, .guest_mem_total = s.guest_mem_total,
			.guest_mem_available = s.guest_mem_available, .have_net = s.have_net,
			.rx_bytes = s.net.rx_ok_bytes, .rx_packets = s.net.rx_ok_packets,
			.rx_drop_packets = s.net.rx_drop_packets, .tx_bytes = s.net.tx_ok_bytes,
			.tx_packets = s.net.tx_ok_packets, .tx_drop_packets = s.net.tx_drop_packets,
			.uptime_s = s.uptime_s, .execs = s.execs,
		};
	a.size = n;
	memcpy(stats, &a, n);
	return 0;
}

AGENTVM_EXPORT int agentvm_open_ns(struct agentvm_ctx *ctx, const char *name, const char *type,
				   int *fd, struct agentvm_error *err)
{
	_cleanup_free_ char *dir = NULL;
	struct vm_state st;
	char path[64];
	int r;

	*fd = -1;
	if (!type || !type[0] || strchr(type, '/') || strlen(type) > 16)
		return usage(err, avm_error_set(E(err), -EINVAL, "bad namespace type '%s'",
						type ? type : "(null)"));
	if ((r = vm_open(name, &dir, NULL, E(err))) < 0)
		return r;
	if ((r = vmstate_read(dir, &st, E(err))) < 0)
		return usage(err, r);
	snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)st.qemu_pid, type);
	/* Opened first, checked after: the fd is that process's, not a later one's with its pid. */
	r = st.qemu_pid > 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (r < 0 || !proc_is(st.qemu_pid, st.qemu_start)) {
		int e = r < 0 && errno != ENOENT ? -errno : -ESRCH;
		if (r >= 0)
			close(r);
		return avm_error_kind(E(err), e == -ESRCH ? AVM_ERR_STATE : AVM_ERR_HOST,
				      avm_error_setx(E(err), e, "the %s namespace of VM '%s''s QEMU",
						     type, name));
	}
	*fd = r;
	return 0;
}

/* ---- commands ---- */

struct agentvm_cmd {
	struct vm_exec_request req;
	struct strv argv, env;
	char *cwd, *root;
	int start_errno;
};

AGENTVM_EXPORT int agentvm_cmd_new(struct agentvm_cmd **out, const char *const *argv,
				   struct agentvm_error *err)
{
	struct agentvm_cmd *c;

	*out = NULL;
	if (!argv || !argv[0])
		return usage(err, avm_error_set(E(err), -EINVAL, "no command to run"));
	if (!(c = calloc(1, sizeof(*c))))
		return oom(err);
	for (size_t i = 0; argv[i]; i++)
		strv_add(&c->argv, argv[i]);
	if (c->argv.failed) {
		agentvm_cmd_free(c);
		return oom(err);
	}
	c->req = (struct vm_exec_request){ .stdin_fd = -1, .stdout_fd = 1, .stderr_fd = 2,
					   .sig_fd = -1 };
	*out = c;
	return 0;
}

AGENTVM_EXPORT void agentvm_cmd_free(struct agentvm_cmd *cmd)
{
	if (!cmd)
		return;
	strv_release(&cmd->argv);
	strv_release(&cmd->env);
	free(cmd->cwd);
	free(cmd->root);
	free(cmd);
}

AGENTVM_EXPORT int agentvm_cmd_add_env(struct agentvm_cmd *cmd, const char *key_value,
				       struct agentvm_error *err)
{
	if (!key_value || !strchr(key_value, '=') || key_value[0] == '=')
		return usage(err, avm_error_set(E(err), -EINVAL,
						"environment entry '%s' is not KEY=VALUE",
						key_value ? key_value : "(null)"));
	strv_add(&cmd->env, key_value);
	return cmd->env.failed ? oom(err) : 0;
}

/* An absolute path option of a command (cwd, root) into *slot. */
static int cmd_path(char **slot, const char *what, const char *dir, struct agentvm_error *err)
{
	char *d;

	if (!dir || dir[0] != '/')
		return usage(err, avm_error_set(E(err), -EINVAL, "the %s '%s' is not absolute",
						what, dir ? dir : "(null)"));
	if (!(d = strdup(dir)))
		return oom(err);
	free(*slot);
	*slot = d;
	return 0;
}

AGENTVM_EXPORT int agentvm_cmd_set_cwd(struct agentvm_cmd *cmd, const char *dir,
				       struct agentvm_error *err)
{
	return cmd_path(&cmd->cwd, "working directory", dir, err);
}

AGENTVM_EXPORT int agentvm_cmd_set_root(struct agentvm_cmd *cmd, const char *dir,
					struct agentvm_error *err)
{
	return cmd_path(&cmd->root, "root", dir, err);
}

AGENTVM_EXPORT void agentvm_cmd_set_user(struct agentvm_cmd *cmd, unsigned uid, unsigned gid)
{
	cmd->req.set_ids = true;
	cmd->req.uid = uid;
	cmd->req.gid = gid;
}

AGENTVM_EXPORT void agentvm_cmd_set_timeout(struct agentvm_cmd *cmd, unsigned seconds)
{
	cmd->req.timeout_s = seconds;
}

AGENTVM_EXPORT void agentvm_cmd_set_stdio(struct agentvm_cmd *cmd, int stdin_fd, int stdout_fd,
					  int stderr_fd)
{
	cmd->req.stdin_fd = stdin_fd;
	cmd->req.stdout_fd = stdout_fd;
	cmd->req.stderr_fd = stderr_fd;
}

AGENTVM_EXPORT void agentvm_cmd_set_signal_fd(struct agentvm_cmd *cmd, int fd)
{
	cmd->req.sig_fd = fd;
}

/* The request's pointers into cmd's strings (they move as lists grow). */
static const struct vm_exec_request *cmd_req(const struct agentvm_cmd *cmd)
{
	struct vm_exec_request *r = (struct vm_exec_request *)&cmd->req;

	r->argv = cmd->argv.v;
	r->env = cmd->env.n ? cmd->env.v : NULL;
	r->cwd = cmd->cwd;
	r->root = cmd->root;
	return r;
}

AGENTVM_EXPORT int agentvm_cmd_check(const struct agentvm_cmd *cmd, struct agentvm_error *err)
{
	return usage(err, vm_exec_check(cmd_req(cmd), E(err)));
}

AGENTVM_EXPORT int agentvm_cmd_run(struct agentvm_ctx *ctx, const char *name,
				   struct agentvm_cmd *cmd, int *status, struct agentvm_error *err)
{
	const struct vm_exec_request *req = cmd_req(cmd);
	struct vm_exec_result res = { 0 };
	struct vm *vm = NULL;
	int r;

	cmd->start_errno = 0;
	if ((r = vm_exec_check(req, E(err))) < 0)
		return usage(err, r);
	if ((r = vm_connect(name, &vm, E(err))) < 0)
		return r;
	r = vm_exec(vm, req, &res, E(err));
	vm_destroy(vm); /* attached: only detaches */
	if (r < 0)
		return vm_exec_failed(r, &res, E(err));
	if ((*status = exit_status(&res)) < 0)
		return avm_error_kind(E(err), AVM_ERR_VM_LOST,
				      avm_error_set(E(err), -EPROTO,
						    "the guest reported an unknown exit kind %u",
						    res.info.kind));
	if (res.info.kind == AVM_EXIT_START_FAILED)
		cmd->start_errno = res.info.code > 0 ? res.info.code : EIO;
	return 0;
}

AGENTVM_EXPORT int agentvm_cmd_start_error(const struct agentvm_cmd *cmd)
{
	return cmd->start_errno;
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
