/* SPDX-License-Identifier: MIT */
/* Booting a VM from a spec (vm_start.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vm/boot_cache.h"
#include "vm/host.h"
#include "state/statedir.h"
#include "vm/supervisor.h"
#include "base/util.h"
#include "vm/vm.h"
#include "control/vm_start.h"

int vm_host_prepare(struct vm_spec *spec, enum vm_accel *accel, char **qemu, char **kernel,
		    char **initrd, struct avm_error *err)
{
	bool fell_back;
	int r = host_resolve_accel(spec->accel, accel, &fell_back, err);

	if (r < 0)
		return avm_error_kind(err, AVM_ERR_HOST, r);
	if (fell_back)
		avm_warn("%s, using TCG software emulation (much slower); pass --accel tcg to "
			 "silence this",
			 host_kvm_problem() ? host_kvm_problem() : "KVM is not usable");
	if ((r = host_find_qemu(qemu, err)) < 0 ||
	    (r = host_guest_images(spec->kernel, spec->initrd, kernel, initrd, err)) < 0)
		return avm_error_kind(err, AVM_ERR_HOST, r);
	if (access(*kernel, R_OK) < 0)
		return avm_error_kind(err, AVM_ERR_HOST,
				      avm_error_setx(err, -errno,
						     "guest kernel %s is not readable (build it with "
						     "'make images' or pass --kernel PATH)",
						     *kernel));
	if (access(*initrd, R_OK) < 0)
		return avm_error_kind(err, AVM_ERR_HOST,
				      avm_error_setx(err, -errno,
						     "guest initramfs %s is not readable (build it "
						     "with 'make images' or pass --initrd PATH)",
						     *initrd));
	return 0;
}

/* The checks and paths both kinds of launch need, into lo (the strings are the caller's). */
static int prepare(struct vm_spec *spec, struct vm_launch_opts *lo, char **qemu, char **kernel,
		   char **initrd, struct avm_error *err)
{
	int r;

	if ((spec->name && (r = statedir_validate_name(spec->name, err)) < 0) ||
	    (r = statedir_check_paths(spec->name, err)) < 0)
		return avm_error_kind(err, AVM_ERR_USAGE, r);
	if ((r = vm_host_prepare(spec, &lo->accel, qemu, kernel, initrd, err)) < 0)
		return r;
	lo->spec = spec;
	lo->qemu = *qemu;
	lo->kernel = *kernel;
	lo->initrd = *initrd;
	return 0;
}

/* A failed launch: what the host lacks (a file, a right, a device: KVM, a bridge; nf_tables), a
   name that is taken, an interrupt, or a VM that did not come up. */
static int launch_kind(struct avm_error *err, int r)
{
	enum avm_error_kind k = AVM_ERR_BOOT;

	if (r == -EINTR)
		k = AVM_ERR_INTERRUPTED;
	else if (r == -EEXIST)
		k = AVM_ERR_USAGE;
	else if (r == -ENOENT || r == -EACCES || r == -EPERM || r == -ENODEV ||
		 r == -EPROTONOSUPPORT)
		k = AVM_ERR_HOST;
	return avm_error_kind(err, k, r);
}

/* boot_cache_start()'s way of starting a detached VM: its supervisor, until READY. */
static int start_supervised(const struct vm_launch_opts *o, int timeout_ms, void *ctx,
			    struct avm_error *err)
{
	pid_t *sup = ctx;

	return supervisor_start(o, timeout_ms, sup, err);
}

int vm_start_detached(struct vm_spec *spec, long boot_timeout_s, bool cold,
		      struct avm_error *err)
{
	return vm_start_pooled(spec, boot_timeout_s, cold, 0, err);
}

int vm_start_pooled(struct vm_spec *spec, long boot_timeout_s, bool cold, int pool_pidfd,
		    struct avm_error *err)
{
	_cleanup_free_ char *qemu = NULL, *kernel = NULL, *initrd = NULL;
	char namebuf[32];
	pid_t sup = 0;
	int r;

	if (!spec->name) {
		statedir_random_name(namebuf, sizeof(namebuf));
		if (!(spec->name = strdup(namebuf)))
			return avm_error_set(err, -ENOMEM, "out of memory");
	}
	struct vm_launch_opts lo = { .detached = true, .pool_pidfd = pool_pidfd };
	if ((r = prepare(spec, &lo, &qemu, &kernel, &initrd, err)) < 0)
		return r;
	struct boot_cache_opts bo = { .cold = cold, .boot_timeout_ms = (int)boot_timeout_s * 1000,
				      .sig_fd = -1, .warn = avm_warn };
	r = boot_cache_start(&lo, &bo, start_supervised, &sup, err);
	return r < 0 ? launch_kind(err, r) : 0;
}

struct boot_ctx {
	struct vm *vm;
	int sig_fd;
};

/* boot_cache_start()'s way of starting run's VM: launch, then wait for the guest. */
static int launch_and_wait(const struct vm_launch_opts *o, int timeout_ms, void *ctx,
			   struct avm_error *err)
{
	struct boot_ctx *bc = ctx;
	int r = vm_launch(o, &bc->vm, err);

	if (r == 0 && (r = vm_wait_ready(bc->vm, timeout_ms, bc->sig_fd, err)) < 0) {
		vm_destroy(bc->vm);
		bc->vm = NULL;
	}
	return r;
}

int vm_boot(struct vm_spec *spec, long boot_timeout_s, bool cold, bool keep_state, int sig_fd,
	    struct vm **out, struct avm_error *err)
{
	_cleanup_free_ char *qemu = NULL, *kernel = NULL, *initrd = NULL;
	int r;

	*out = NULL;
	struct vm_launch_opts lo = { .keep_state = keep_state };
	if ((r = prepare(spec, &lo, &qemu, &kernel, &initrd, err)) < 0)
		return r;
	struct boot_ctx bc = { .sig_fd = sig_fd };
	struct boot_cache_opts bo = { .cold = cold, .boot_timeout_ms = (int)boot_timeout_s * 1000,
				      .sig_fd = sig_fd, .warn = avm_warn };
	r = boot_cache_start(&lo, &bo, launch_and_wait, &bc, err);
	if (r < 0) {
		vm_destroy(bc.vm);
		return launch_kind(err, r);
	}
	*out = bc.vm;
	return 0;
}
