/* SPDX-License-Identifier: MIT */
/* What the host offers: KVM or not, the TSC rate, the QEMU binary, where the guest images are. */
#ifndef AGENTVM_HOST_H
#define AGENTVM_HOST_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"
#include "spec/spec.h"

/*
 * NULL when KVM can run guests here, else why not: /dev/kvm cannot be opened read-write, or it
 * can but the CPU has no vmx/svm (a nested hypervisor that crashes guests).
 */
const char *host_kvm_problem(void);
bool host_kvm_usable(void);

/*
 * Decide the accelerator for `wanted`. AUTO picks KVM when usable, else TCG and sets
 * *fell_back so the caller can print its one-line warning. KVM without /dev/kvm is an error.
 */
int host_resolve_accel(enum vm_accel wanted, enum vm_accel *out, bool *fell_back,
		       struct avm_error *err);

/* The host TSC rate in kHz (for tsc_early_khz= under TCG), or 0 when unknown. */
unsigned long host_tsc_khz(void);

/*
 * Path of the executable name: $env_var when set (it must be executable), else the first one on
 * $PATH; the error names the Debian package to install. Caller frees.
 */
int host_find_tool(const char *name, const char *env_var, const char *package, char **out,
		   struct avm_error *err);
/* Path of qemu-system-x86_64: $AGENTVM_QEMU, else the first one on $PATH. Caller frees. */
int host_find_qemu(char **out, struct avm_error *err);

/*
 * The directory holding the default guest images (vmlinux, initramfs.cpio), searched in order:
 * $AGENTVM_IMAGES; <dir of the running binary>/images (the build tree: build/agentvm next to
 * build/images); <dir of the binary>/../share/agentvm (an install prefix); AVM_DATADIR.
 * The first that holds a vmlinux wins. Caller frees.
 */
int host_find_images(char **out, struct avm_error *err);

/*
 * The guest kernel and initramfs to use: kernel/initrd when given (NULL: not given), else
 * vmlinux / initramfs.cpio in host_find_images(). Caller frees both (NULL when not set).
 */
int host_guest_images(const char *kernel, const char *initrd, char **kernel_out,
		      char **initrd_out, struct avm_error *err);

#endif
